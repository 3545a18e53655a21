"""Top-down rasters of a campus: the ground (what the drone camera sees under the buildings)
and the orthophoto (the satellite view: ground + tree crowns + roofs).

Both are north-up RGB images in the world frame: pixel (row, col) covers
``x = x0 + (col + 0.5) * res`` east and ``y = y1 - (row + 0.5) * res`` north.
Shadows of buildings and trees are baked into the ground (one sun per campus,
the satellite capture). Trees are kept as a list, because the drone renderer
draws them as 3-D crowns.

Here: :func:`build_campus_raster` and :class:`CampusRaster`. The steps, all
importable from here as well: :mod:`.land` (base land, streets, blocks,
trees), :mod:`.painting` (the painter and its shapes), :mod:`.shading`
(textures, shadows, the orthophoto).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .land import MARGIN_M, CampusLand, Trees, base_land
from .painting import BUILDING, LAWN, PARKING, PAVED, ROAD, SPORTS, WATER, Painter, box_apron
from .shading import box_shadow, draw_roofs_ortho, orthophoto, shadowed, textured
from .streams import TAG_RASTER
from .world import CampusLayout

__all__ = [
    "BUILDING",
    "LAWN",
    "MARGIN_M",
    "PARKING",
    "PAVED",
    "ROAD",
    "SPORTS",
    "WATER",
    "CampusRaster",
    "Trees",
    "box_apron",
    "box_shadow",
    "build_campus_raster",
    "draw_roofs_ortho",
    "raster_resolution",
    "sun_vector",
]


@dataclass
class CampusRaster:
    campus: int
    x0: float
    y1: float
    res: float
    pyramid: list[np.ndarray]  # the ground at res * 2**k (views into ``flat``); level 0 is full resolution
    flat: np.ndarray  # (P + 1, 3) uint8: every pyramid level's pixels, then the outskirts colour
    offsets: np.ndarray  # (levels,) int64 start of each level in ``flat``
    ortho: np.ndarray  # (H, W, 3) uint8, the satellite view
    trees: Trees
    outskirts_rgb: tuple[int, int, int]  # colour of the land beyond the raster
    sun: np.ndarray  # unit vector towards the sun (x east, y north, z up)

    @classmethod
    def create(
        cls,
        campus: int,
        x0: float,
        y1: float,
        res: float,
        levels: list[np.ndarray],
        ortho: np.ndarray,
        trees: Trees,
        outskirts: tuple[int, int, int],
        sun: np.ndarray,
    ) -> CampusRaster:
        sizes = [lv.shape[0] * lv.shape[1] for lv in levels]
        offsets = np.cumsum([0] + sizes)
        flat = np.empty((offsets[-1] + 1, 3), dtype=np.uint8)
        pyramid = []
        for lv, start, stop in zip(levels, offsets[:-1], offsets[1:], strict=True):
            flat[start:stop] = lv.reshape(-1, 3)
            pyramid.append(flat[start:stop].reshape(lv.shape))
        flat[-1] = outskirts
        return cls(
            campus, x0, y1, res, pyramid, flat, offsets[:-1].astype(np.int64), ortho, trees, outskirts, sun
        )

    @property
    def ground(self) -> np.ndarray:
        return self.pyramid[0]

    def to_pixels(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (col, row) of world points."""
        return (x - self.x0) / self.res, (self.y1 - y) / self.res


def raster_resolution(image_size: int) -> float:
    """Metres per raster pixel for a given output image size (finer for larger images)."""
    return float(min(1.0, max(0.3, 64.0 / image_size)))


def sun_vector(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])


def build_campus_raster(layout: CampusLayout, campus_index: int, res: float) -> CampusRaster:
    """Render the ground and the orthophoto of one campus (deterministic per seed and campus)."""
    return _RasterBuilder(layout, campus_index, res).build()


class _RasterBuilder:
    """The steps of :func:`build_campus_raster`, sharing one campus, one painter and one random stream.

    Every step draws from ``self.rng``, so :meth:`build` must run them in this order, and a step must
    keep its draws (their number, order and arguments): any change alters every campus generated later.
    """

    def __init__(self, layout: CampusLayout, campus_index: int, res: float):
        self.campus_index = campus_index
        self.campus = campus = layout.campuses[campus_index]
        self.style = campus.style
        self.res = res
        self.rng = np.random.default_rng([layout.seed, TAG_RASTER, campus_index])
        self.x0, y0, x1, self.y1 = campus.bounds(MARGIN_M)
        self.width = int(math.ceil((x1 - self.x0) / res))
        self.height = int(math.ceil((self.y1 - y0) / res))
        assert layout.fields is not None
        self.fields = layout.fields
        self.buildings = {b.index: b for b in layout.buildings if b.campus == campus_index}

    def build(self) -> CampusRaster:
        size = (self.width, self.height)
        base = base_land(self.campus, self.fields, self.rng, self.x0, self.y1, size, self.res)
        paint = Painter(self.x0, self.y1, self.res, size, base)
        land = CampusLand(self.campus, self.fields, self.rng, paint, self.buildings.values())
        woods = land.outskirts()
        land.streets()
        for block in self.campus.blocks:
            land.paint_block(block)
        land.plant_woods(woods)
        trees = land.trees()
        # one noise tile for the ground's grain and (fainter) the orthophoto's
        tile = self.rng.normal(0.0, 1.0, size=(256, 256))
        ground_img = textured(paint.image, tile, self.rng)
        sun = sun_vector(self.style.sun_azimuth, self.style.sun_elevation)
        ground_img = shadowed(ground_img, paint, self.buildings.values(), trees, sun)
        ortho = orthophoto(ground_img, paint, self.buildings.values(), trees, sun, tile)

        levels = [np.asarray(ground_img, dtype=np.uint8)]
        level_img = ground_img
        while min(level_img.size) > 64 and len(levels) < 6:
            level_img = level_img.reduce(2)  # 2 x 2 box average
            levels.append(np.asarray(level_img, dtype=np.uint8))
        outskirts = tuple(int(v) for v in np.asarray(base.resize((1, 1), Image.BOX)).reshape(3))
        return CampusRaster.create(
            self.campus_index,
            self.x0,
            self.y1,
            self.res,
            levels,
            ortho,
            trees,
            outskirts,  # type: ignore[arg-type]
            sun,
        )
