"""GPS positions in the EXIF of photos (Pillow), as drone cameras write them.

The GPS IFD (EXIF 2.3 §4.6.6) holds latitude and longitude as three
rationals (degrees, minutes, seconds) with a reference letter (N/S, E/W),
optionally an altitude (metres, reference 0 = above sea level) and the
direction the camera looked (degrees from true north)::

    from dycl.data.exif import gps_exif, read_gps

    image.save("view.jpg", "JPEG", exif=gps_exif(42.3736, -71.1097, altitude=61.5, direction=270.0))
    fix = read_gps("view.jpg")          # GpsFix(latitude=42.3736, longitude=-71.1097, altitude=61.5)
    fix = read_gps("no_gps.jpg")        # None

Seconds are stored with a denominator of 10^6 (about 0.03 mm), so a written
position reads back to better than 1e-9 degrees.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from PIL import ExifTags, Image, TiffImagePlugin, UnidentifiedImageError

_GPS = ExifTags.GPS
_SECONDS_DENOMINATOR = 1_000_000


@dataclass(frozen=True)
class GpsFix:
    """A position read from a photo's EXIF: WGS84 degrees, altitude in metres when recorded."""

    latitude: float
    longitude: float
    altitude: float | None = None


def _dms(value: float) -> tuple[TiffImagePlugin.IFDRational, ...]:
    """Degrees, minutes, seconds of ``|value|`` as EXIF rationals (integer seconds * 10^6 / 10^6)."""
    micro = round(abs(value) * 3600 * _SECONDS_DENOMINATOR)
    degrees, rest = divmod(micro, 3600 * _SECONDS_DENOMINATOR)
    minutes, seconds = divmod(rest, 60 * _SECONDS_DENOMINATOR)
    return (
        TiffImagePlugin.IFDRational(int(degrees), 1),
        TiffImagePlugin.IFDRational(int(minutes), 1),
        TiffImagePlugin.IFDRational(int(seconds), _SECONDS_DENOMINATOR),
    )


def _rational(value: float, denominator: int = 1000) -> TiffImagePlugin.IFDRational:
    return TiffImagePlugin.IFDRational(round(value * denominator), denominator)


def gps_exif(
    latitude: float, longitude: float, altitude: float | None = None, direction: float | None = None
) -> Image.Exif:
    """An :class:`PIL.Image.Exif` with a GPS IFD for ``image.save(..., exif=...)``.

    Args:
        latitude, longitude: WGS84 degrees.
        altitude: metres above sea level (negative: below), or None.
        direction: the camera's heading in degrees clockwise from true north, or None.
    """
    lat, lon = float(latitude), float(longitude)
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise ValueError(f"latitude: expected degrees in [-90, 90], got {latitude!r}")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise ValueError(f"longitude: expected degrees in [-180, 180], got {longitude!r}")
    exif = Image.Exif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[_GPS.GPSVersionID] = b"\x02\x03\x00\x00"
    gps[_GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
    gps[_GPS.GPSLatitude] = _dms(lat)
    gps[_GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
    gps[_GPS.GPSLongitude] = _dms(lon)
    if altitude is not None:
        gps[_GPS.GPSAltitudeRef] = b"\x00" if altitude >= 0 else b"\x01"
        gps[_GPS.GPSAltitude] = _rational(abs(float(altitude)))
    if direction is not None:
        gps[_GPS.GPSImgDirectionRef] = "T"
        gps[_GPS.GPSImgDirection] = _rational(float(direction) % 360.0, 100)
    gps[_GPS.GPSMapDatum] = "WGS-84"
    return exif


def _degrees(parts: object, ref: object, positive: str) -> float:
    values = [
        float(Fraction(p.numerator, p.denominator)) if hasattr(p, "numerator") else float(p) for p in parts
    ]  # type: ignore[union-attr]
    if len(values) != 3:
        raise ValueError("expected degrees, minutes, seconds")
    value = values[0] + values[1] / 60.0 + values[2] / 3600.0
    letter = ref.decode() if isinstance(ref, bytes) else str(ref)
    return value if letter.strip().upper() == positive else -value


def gps_of_exif(exif: Image.Exif) -> GpsFix | None:
    """The position in an opened image's EXIF, or None when it has no (complete, valid) GPS position."""
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    needed = (_GPS.GPSLatitude, _GPS.GPSLatitudeRef, _GPS.GPSLongitude, _GPS.GPSLongitudeRef)
    if not gps or any(tag not in gps for tag in needed):
        return None
    try:
        lat = _degrees(gps[_GPS.GPSLatitude], gps[_GPS.GPSLatitudeRef], "N")
        lon = _degrees(gps[_GPS.GPSLongitude], gps[_GPS.GPSLongitudeRef], "E")
        altitude = None
        if _GPS.GPSAltitude in gps:
            altitude = float(gps[_GPS.GPSAltitude])
            if gps.get(_GPS.GPSAltitudeRef) in (b"\x01", 1):
                altitude = -altitude
    except (TypeError, ValueError, ZeroDivisionError, AttributeError):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        return None
    return GpsFix(lat, lon, altitude)


def read_gps(path: str | os.PathLike) -> GpsFix | None:
    """The GPS position in the EXIF of the image at ``path``; None when there is none.

    Raises:
        ValueError: the file does not exist or is not an image Pillow can open.
    """
    p = Path(path)
    try:
        with Image.open(p) as image:
            return gps_of_exif(image.getexif())
    except FileNotFoundError:
        raise ValueError(f"{p}: no such image file") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise ValueError(f"{p}: cannot read its EXIF ({exc})") from None


__all__ = ["GpsFix", "gps_exif", "gps_of_exif", "read_gps"]
