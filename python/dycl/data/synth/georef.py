"""Where the synthetic pictures are on Earth: the orthophoto as a GeoTIFF, the drone camera's GPS.

The world frame (x east, y north, metres) is an azimuthal-equidistant
projection around :data:`~dycl.data.synth.world.ORIGIN_LATLON` (see
:func:`~dycl.data.synth.geodesy.enu_to_latlon`). Each campus's orthophoto is
warped from that frame (rasterio/GDAL, bilinear) into the campus's UTM zone,
the projected CRS a survey would deliver, at the raster's resolution, with
an internal mask for the corners the warp leaves empty. It is written as
``<root>/orthophoto/{split}-{n:02d}.tif`` (``n`` = 1, 2, ... the campuses of
the split in campus order). The bytes depend only on the seed and parameters.

A drone view's true position is the camera's: the view's ``target`` minus
``distance`` along the viewing direction, at the camera's height above the
ground (z = 0 is sea level in this world).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .camera import ViewParams, look_camera
from .geodesy import enu_to_latlon
from .raster import CampusRaster
from .world import ORIGIN_LATLON, CampusLayout

ORTHOPHOTO_DIR = "orthophoto"


def world_crs_proj4() -> str:
    """The world frame as a PROJ string (azimuthal equidistant around the world origin, WGS84)."""
    lat0, lon0 = ORIGIN_LATLON
    return f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"


def utm_epsg(latitude: float, longitude: float) -> int:
    """EPSG code of the WGS84 UTM zone of a point (326zz north, 327zz south; no Norway/Svalbard zones)."""
    zone = min(60, int(math.floor((longitude + 180.0) / 6.0)) + 1)
    return (32600 if latitude >= 0 else 32700) + zone


def orthophoto_paths(layout: CampusLayout) -> dict[int, str]:
    """``{campus index: path relative to the dataset root}`` of every campus's orthophoto GeoTIFF."""
    paths: dict[int, str] = {}
    for split in ("train", "test"):
        campuses = [c for c in layout.campuses if c.split == split]
        for number, campus in enumerate(campuses, start=1):
            paths[campus.index] = f"{ORTHOPHOTO_DIR}/{split}-{number:02d}.tif"
    return paths


def camera_position(params: ViewParams) -> tuple[float, float, float]:
    """World x, y, z (metres) of the camera of a drone view."""
    camera = look_camera(
        np.array(params.target), params.heading, params.pitch, params.distance, params.fov, params.roll, 2
    )
    x, y, z = camera.position
    return float(x), float(y), float(z)


def camera_gps(params: ViewParams) -> tuple[float, float, float, float]:
    """``(latitude, longitude, altitude_m, heading_deg)`` of the camera of a drone view (WGS84)."""
    x, y, z = camera_position(params)
    lat, lon = enu_to_latlon(np.array(x), np.array(y), *ORIGIN_LATLON)
    return float(lat), float(lon), z, float(params.heading % 360.0)


def orthophoto_geotiff(raster: CampusRaster) -> bytes:
    """The campus orthophoto as GeoTIFF bytes in the campus's UTM zone (RGB, internal mask, deflate)."""
    import rasterio
    from affine import Affine
    from rasterio.io import MemoryFile
    from rasterio.warp import Resampling, reproject, transform_bounds

    ortho = np.ascontiguousarray(np.moveaxis(raster.ortho, 2, 0))
    _, height, width = ortho.shape
    res = raster.res
    src_crs = rasterio.crs.CRS.from_proj4(world_crs_proj4())
    src_transform = Affine(res, 0.0, raster.x0, 0.0, -res, raster.y1)
    x1, y0 = raster.x0 + width * res, raster.y1 - height * res
    centre_lat, centre_lon = enu_to_latlon(
        np.array((raster.x0 + x1) / 2), np.array((raster.y1 + y0) / 2), *ORIGIN_LATLON
    )
    dst_crs = rasterio.crs.CRS.from_epsg(utm_epsg(float(centre_lat), float(centre_lon)))
    left, bottom, right, top = transform_bounds(
        src_crs, dst_crs, raster.x0, y0, x1, raster.y1, densify_pts=21
    )
    left, top = math.floor(left / res) * res, math.ceil(top / res) * res
    dst_width, dst_height = int(math.ceil((right - left) / res)), int(math.ceil((top - bottom) / res))
    dst_transform = Affine(res, 0.0, left, 0.0, -res, top)
    image = np.zeros((3, dst_height, dst_width), dtype=np.uint8)
    covered = np.zeros((dst_height, dst_width), dtype=np.uint8)
    common = {
        "src_transform": src_transform,
        "src_crs": src_crs,
        "dst_transform": dst_transform,
        "dst_crs": dst_crs,
        "num_threads": 1,
    }
    reproject(ortho, image, resampling=Resampling.bilinear, **common)
    reproject(
        np.full((height, width), 255, dtype=np.uint8),
        covered,
        resampling=Resampling.nearest,
        dst_nodata=0,
        **common,
    )
    profile = {
        "driver": "GTiff",
        "width": dst_width,
        "height": dst_height,
        "count": 3,
        "dtype": "uint8",
        "crs": dst_crs,
        "transform": dst_transform,
        "photometric": "RGB",
        "compress": "deflate",
        "predictor": 2,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(image)
            dst.write_mask(covered)
            dst.update_tags(AREA_OR_POINT="Area", SOURCE="dycl synthetic campus orthophoto")
        return bytes(memory.read())


def write_orthophoto(raster: CampusRaster, path: Path, write_atomic) -> None:
    """Write :func:`orthophoto_geotiff` of ``raster`` to ``path`` with ``write_atomic(path, data)``."""
    write_atomic(path, orthophoto_geotiff(raster))


__all__ = [
    "ORTHOPHOTO_DIR",
    "camera_gps",
    "camera_position",
    "orthophoto_geotiff",
    "orthophoto_paths",
    "utm_epsg",
    "world_crs_proj4",
    "write_orthophoto",
]
