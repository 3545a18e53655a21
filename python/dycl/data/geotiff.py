"""Satellite tiles cut from a georeferenced orthophoto (GeoTIFF, any CRS): rasterio + pyproj.

A map is cut into square tiles of a given *ground* size and stride in metres.
The raster's ground resolution is measured where it matters, at the raster's
centre: the geodesic length (WGS84) of one pixel step along each axis, after
converting the pixel corners from the file's CRS to WGS84 with pyproj. So
the same code serves a UTM orthophoto (metres), Web Mercator (grid metres
that are not ground metres) and a geographic CRS (degrees). Tile and stride
are whole pixels (rounded; the ground sizes actually used are recorded).
Each tile has its centre's latitude/longitude and its footprint (the four
corners of its pixel window in WGS84)::

    from dycl.data.geotiff import plan_tiles, GeoTiffTiles

    grid = plan_tiles("map.tif", tile_m=160.0, stride_m=40.0)
    grid.centres          # (n, 2) latitude, longitude
    grid.footprints       # (n, 4, 2) latitude, longitude of the corners (top-left, top-right, ...)
    tiles = GeoTiffTiles(grid, image_size=64)   # tiles[i] -> uint8 (3, S, S) tensor

Tiles more than ``1 - min_valid`` empty (outside the file's mask or nodata)
are left out. A GeoTIFF without a CRS or a geotransform, one that is not
8-bit, or a tile size below a pixel or above the map is refused with a
``ValueError`` naming the file and the option.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The ground size of the training tiles of the synthetic campus (its ``SATELLITE_EXTENT_M``).
DEFAULT_TILE_M = 160.0
#: A quarter of a tile: every point of the map is within 28 m of some tile's centre.
DEFAULT_STRIDE_M = 40.0
#: A tile is kept when at least this share of its pixels holds data.
DEFAULT_MIN_VALID = 0.5


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one GeoTIFF: pixel windows, centres and footprints (WGS84), and how they were cut."""

    path: Path
    crs: str
    width: int
    height: int
    tile_px: tuple[int, int]
    stride_px: tuple[int, int]
    ground_resolution_m: tuple[float, float]
    tile_m: float
    stride_m: float
    windows: np.ndarray  # (n, 4) int64 col, row, width, height
    centres: np.ndarray  # (n, 2) float64 latitude, longitude
    footprints: (
        np.ndarray
    )  # (n, 4, 2) float64 latitude, longitude: top-left, top-right, bottom-right, bottom-left
    skipped_empty: int = 0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def describe(self) -> dict:
        """How the grid was cut, as JSON values (stored in an index)."""
        return {
            "kind": "geotiff",
            "path": str(self.path),
            "crs": self.crs,
            "width": self.width,
            "height": self.height,
            "tile_px": list(self.tile_px),
            "stride_px": list(self.stride_px),
            "ground_resolution_m": list(self.ground_resolution_m),
            "tile_m": self.tile_m,
            "stride_m": self.stride_m,
            "tiles": len(self),
            "skipped_empty": self.skipped_empty,
        }


def open_geotiff(path: str | os.PathLike):
    """Open a GeoTIFF with rasterio, checked: it exists, has a CRS and a geotransform, 1/3/4 8-bit bands.

    Returns the open dataset (the caller closes it). Raises ``ValueError`` naming the file.
    """
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"geotiff: no such file: {p}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # said below, in one line
            src = rasterio.open(p)
    except RasterioIOError as exc:
        raise ValueError(f"geotiff: cannot read {p} as a raster ({str(exc).splitlines()[0]})") from None
    try:
        if src.transform.is_identity and not src.gcps[0]:
            raise ValueError(
                f"geotiff: {p} has no geotransform (pixel-to-map coordinates); georeference it "
                "first (e.g. gdal_translate -a_ullr ...)"
            )
        if src.transform.is_identity:
            raise ValueError(
                f"geotiff: {p} is georeferenced by ground control points only; warp it to a "
                "geotransform first (gdalwarp)"
            )
        if src.crs is None:
            raise ValueError(
                f"geotiff: {p} has no coordinate reference system (CRS); georeference it first "
                "(e.g. gdal_translate -a_srs EPSG:...)"
            )
        if src.count not in (1, 3, 4) or any(dtype != "uint8" for dtype in src.dtypes):
            raise ValueError(
                f"geotiff: {p} has {src.count} band(s) of {src.dtypes[0]}; expected an 8-bit "
                "RGB (or grey, or RGBA) orthophoto"
            )
    except BaseException:
        src.close()
        raise
    return src


def _to_wgs84(src):
    from pyproj import Transformer

    return Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)


def _pixels_to_latlon(src, transformer, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``(..., 2)`` latitude/longitude of fractional pixel positions (col, row: 0 = left/top edge)."""
    a = src.transform
    x = a.a * cols + a.b * rows + a.c
    y = a.d * cols + a.e * rows + a.f
    lon, lat = transformer.transform(x, y)
    return np.stack([np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)], axis=-1)


def ground_resolution(src, transformer=None) -> tuple[float, float]:
    """Metres on the ground of one pixel step along columns and along rows, at the raster's centre."""
    from pyproj import Geod

    transformer = transformer or _to_wgs84(src)
    c, r = src.width / 2.0, src.height / 2.0
    pts = _pixels_to_latlon(src, transformer, np.array([c, c + 1.0, c]), np.array([r, r, r + 1.0]))
    geod = Geod(ellps="WGS84")
    _, _, dx = geod.inv(pts[0, 1], pts[0, 0], pts[1, 1], pts[1, 0])
    _, _, dy = geod.inv(pts[0, 1], pts[0, 0], pts[2, 1], pts[2, 0])
    if not (math.isfinite(dx) and math.isfinite(dy)) or dx <= 0 or dy <= 0:
        raise ValueError(f"geotiff: {src.name}: cannot measure its pixel size on the ground")
    return float(dx), float(dy)


def _pixels(name: str, metres: float, res: tuple[float, float], src, what: str) -> tuple[int, int]:
    if (
        isinstance(metres, bool)
        or not isinstance(metres, (int, float))
        or not math.isfinite(metres)
        or metres <= 0
    ):
        raise ValueError(f"{name}: expected a positive number of metres, got {metres!r}")
    if metres < max(res):
        raise ValueError(
            f"{name}: {metres:g} m is smaller than a pixel of {src.name} ({res[0]:.3g} x {res[1]:.3g} m)"
        )
    px = (max(1, round(metres / res[0])), max(1, round(metres / res[1])))
    if what == "tile" and (px[0] > src.width or px[1] > src.height):
        raise ValueError(
            f"{name}: {metres:g} m is larger than the map {src.name} "
            f"({src.width * res[0]:.0f} x {src.height * res[1]:.0f} m)"
        )
    return px


def _valid_share(src, windows: np.ndarray) -> np.ndarray:
    """Share of each window's pixels that hold data, from the dataset mask read at most ~1024 px wide."""
    factor = max(1, math.ceil(max(src.width, src.height) / 1024))
    shape = (max(1, src.height // factor), max(1, src.width // factor))
    mask = (src.dataset_mask(out_shape=shape) > 0).astype(np.float64)
    integral = np.zeros((shape[0] + 1, shape[1] + 1))
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    sy, sx = shape[0] / src.height, shape[1] / src.width
    c0 = np.clip(np.floor(windows[:, 0] * sx).astype(int), 0, shape[1] - 1)
    r0 = np.clip(np.floor(windows[:, 1] * sy).astype(int), 0, shape[0] - 1)
    c1 = np.clip(np.ceil((windows[:, 0] + windows[:, 2]) * sx).astype(int), c0 + 1, shape[1])
    r1 = np.clip(np.ceil((windows[:, 1] + windows[:, 3]) * sy).astype(int), r0 + 1, shape[0])
    total = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return total / ((r1 - r0) * (c1 - c0))


def plan_tiles(
    path: str | os.PathLike,
    tile_m: float = DEFAULT_TILE_M,
    stride_m: float = DEFAULT_STRIDE_M,
    min_valid: float = DEFAULT_MIN_VALID,
) -> TileGrid:
    """Cut the GeoTIFF at ``path`` into tiles of ``tile_m`` metres every ``stride_m`` metres.

    Tiles lie wholly inside the raster, left to right and top to bottom in
    pixel space (north-up for the usual orthophoto). See the module docs.
    """
    if isinstance(min_valid, bool) or not isinstance(min_valid, (int, float)) or not 0 < min_valid <= 1:
        raise ValueError(f"min_valid: expected a share in (0, 1], got {min_valid!r}")
    with open_geotiff(path) as src:
        transformer = _to_wgs84(src)
        res = ground_resolution(src, transformer)
        tile = _pixels("tile_m", tile_m, res, src, "tile")
        stride = _pixels("stride_m", stride_m, res, src, "stride")
        cols = np.arange(0, src.width - tile[0] + 1, stride[0], dtype=np.int64)
        rows = np.arange(0, src.height - tile[1] + 1, stride[1], dtype=np.int64)
        grid_rows, grid_cols = np.meshgrid(rows, cols, indexing="ij")
        windows = np.stack(
            [
                grid_cols.ravel(),
                grid_rows.ravel(),
                np.full(grid_cols.size, tile[0]),
                np.full(grid_cols.size, tile[1]),
            ],
            axis=1,
        )
        keep = _valid_share(src, windows) >= min_valid
        skipped = int((~keep).sum())
        windows = windows[keep]
        if not len(windows):
            raise ValueError(
                f"geotiff: {src.name}: no tile of {tile_m:g} m holds at least {min_valid:.0%} "
                "valid pixels (is the map empty?)"
            )
        c0, r0 = windows[:, 0].astype(np.float64), windows[:, 1].astype(np.float64)
        c1, r1 = c0 + windows[:, 2], r0 + windows[:, 3]
        centres = _pixels_to_latlon(src, transformer, (c0 + c1) / 2.0, (r0 + r1) / 2.0)
        corner_cols = np.stack([c0, c1, c1, c0], axis=1)
        corner_rows = np.stack([r0, r0, r1, r1], axis=1)
        footprints = _pixels_to_latlon(src, transformer, corner_cols, corner_rows)
        return TileGrid(
            path=Path(path),
            crs=src.crs.to_string(),
            width=src.width,
            height=src.height,
            tile_px=tile,
            stride_px=stride,
            ground_resolution_m=res,
            tile_m=float(tile[0] * res[0]),
            stride_m=float(stride[0] * res[0]),
            windows=windows,
            centres=centres,
            footprints=footprints,
            skipped_empty=skipped,
        )


def read_window(src, window: np.ndarray, out_size: int | None = None) -> np.ndarray:
    """``(3, h, w)`` uint8 pixels of a pixel window ``(col, row, width, height)``.

    With ``out_size`` the window is read (GDAL, area average) at ``out_size``
    pixels square, else at full resolution. Grey is repeated to RGB; alpha dropped.
    """
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    col, row, w, h = (int(v) for v in window)
    bands = [1, 2, 3] if src.count >= 3 else [1]
    shape = None if out_size is None else (len(bands), int(out_size), int(out_size))
    data = src.read(bands, window=Window(col, row, w, h), out_shape=shape, resampling=Resampling.average)
    if data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    return data


class GeoTiffTiles:
    """The tiles of a :class:`TileGrid` as uint8 ``(3, S, S)`` tensors (a map-style torch dataset).

    The file is opened on first use in each process (rasterio handles are
    not shared across processes). Pixels are read at full resolution and
    box-averaged (Pillow) to twice the image size; the network's transform
    brings them to its size.
    """

    def __init__(self, grid: TileGrid, image_size: int) -> None:
        self.grid = grid
        self.image_size = int(image_size)
        self._src = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.grid)

    def _open(self):
        if self._src is None or self._pid != os.getpid():
            self._src = open_geotiff(self.grid.path)
            self._pid = os.getpid()
        return self._src

    def __getitem__(self, index: int):
        import torch
        from PIL import Image

        window = self.grid.windows[index]
        data = read_window(self._open(), window)  # full resolution: GDAL's own averaging is ~30x slower
        size = 2 * self.image_size
        if max(data.shape[1:]) > size:
            box = Image.fromarray(np.moveaxis(data, 0, 2)).resize((size, size), Image.BOX)
            data = np.moveaxis(np.asarray(box), 2, 0)
        return torch.from_numpy(np.ascontiguousarray(data))

    def close(self) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_src": None, "_pid": None}


def overview(path: str | os.PathLike, max_pixels: int = 1600) -> tuple[np.ndarray, tuple, str]:
    """A reduced RGB copy of the map for drawing: ``(image (h, w, 3) uint8, extent, crs)``.

    ``extent`` is ``(left, right, bottom, top)`` in the file's CRS (for
    ``matplotlib.imshow(extent=...)``); masked pixels are white.
    """
    with open_geotiff(path) as src:
        factor = max(1, math.ceil(max(src.width, src.height) / max_pixels))
        shape = (max(1, src.height // factor), max(1, src.width // factor))
        data = read_window(src, np.array([0, 0, src.width, src.height]), None) if factor == 1 else None
        if data is None:
            from rasterio.enums import Resampling

            bands = [1, 2, 3] if src.count >= 3 else [1]
            data = src.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.average)
            if data.shape[0] == 1:
                data = np.repeat(data, 3, axis=0)
        mask = src.dataset_mask(out_shape=data.shape[1:]) > 0
        image = np.moveaxis(data, 0, 2).copy()
        image[~mask] = 255
        b = src.bounds
        return image, (b.left, b.right, b.bottom, b.top), src.crs.to_string()


__all__ = [
    "DEFAULT_MIN_VALID",
    "DEFAULT_STRIDE_M",
    "DEFAULT_TILE_M",
    "GeoTiffTiles",
    "TileGrid",
    "ground_resolution",
    "open_geotiff",
    "overview",
    "plan_tiles",
    "read_window",
]
