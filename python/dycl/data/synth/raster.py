"""Top-down rasters of a campus: the ground (what the drone camera sees under the buildings)
and the orthophoto (the satellite view: ground + tree crowns + roofs).

Both are north-up RGB images in the world frame: pixel (row, col) covers
``x = x0 + (col + 0.5) * res`` east and ``y = y1 - (row + 0.5) * res`` north.
Shadows of buildings and trees are baked into the ground (one sun per campus,
the satellite capture). Trees are kept as a list, because the drone renderer
draws them as 3-D crowns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from .world import TAG_RASTER, Block, Box, Building, Campus, CampusLayout, hsv

LAWN, PAVED, ROAD, BUILDING, WATER, PARKING, SPORTS = range(7)
_LABEL_RES = 2.0  # metres per pixel of the land-cover map used to place trees
MARGIN_M = 260.0


@dataclass
class Trees:
    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray  # crown radius, metres
    height: np.ndarray  # crown top, metres
    rgb: np.ndarray  # (T, 3) uint8

    def __len__(self) -> int:
        return len(self.x)


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


class _Painter:
    """Draws world-frame shapes into the RGB raster and the land-cover label map."""

    def __init__(self, x0: float, y1: float, res: float, size: tuple[int, int], base: Image.Image):
        self.x0, self.y1, self.res = x0, y1, res
        self.image = base
        self.draw = ImageDraw.Draw(self.image)
        self.label_scale = res / _LABEL_RES
        label_size = (
            max(1, int(size[0] * self.label_scale) + 1),
            max(1, int(size[1] * self.label_scale) + 1),
        )
        self.labels = Image.new("L", label_size, LAWN)
        self.label_draw = ImageDraw.Draw(self.labels)

    def _px(self, pts: np.ndarray, scale: float = 1.0) -> list[tuple[float, float]]:
        cols = (pts[:, 0] - self.x0) / self.res * scale
        rows = (self.y1 - pts[:, 1]) / self.res * scale
        return list(zip(cols.tolist(), rows.tolist(), strict=True))

    def polygon(
        self,
        pts: np.ndarray,
        rgb: tuple[int, int, int] | None,
        label: int | None = None,
        outline: tuple[int, int, int] | None = None,
    ) -> None:
        if rgb is not None or outline is not None:
            self.draw.polygon(self._px(pts), fill=rgb, outline=outline)
        if label is not None:
            self.label_draw.polygon(self._px(pts, self.label_scale), fill=label)

    def line(
        self, pts: np.ndarray, width_m: float, rgb: tuple[int, int, int], label: int | None = None
    ) -> None:
        self.draw.line(self._px(pts), fill=rgb, width=max(1, int(round(width_m / self.res))))
        if label is not None:
            self.label_draw.line(
                self._px(pts, self.label_scale), fill=label, width=max(1, int(round(width_m / _LABEL_RES)))
            )

    def label_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        lab = np.asarray(self.labels)
        cols = np.clip(((x - self.x0) / _LABEL_RES).astype(int), 0, lab.shape[1] - 1)
        rows = np.clip(((self.y1 - y) / _LABEL_RES).astype(int), 0, lab.shape[0] - 1)
        return lab[rows, cols]


def _uv_poly(campus: Campus, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
    x, y = campus.to_world(us, vs)
    return np.stack([x, y], axis=1)


def _rect(campus: Campus, u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return _uv_poly(campus, np.array([u0, u1, u1, u0]), np.array([v0, v0, v1, v1]))


def _blob(campus: Campus, rng: np.random.Generator, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    wobble = 1 + sum(rng.uniform(0, 0.12) * np.cos(k * t + rng.uniform(0, 6.3)) for k in (2, 3, 5))
    return _uv_poly(campus, cu + ru * wobble * np.cos(t), cv + rv * wobble * np.sin(t))


def _convex_hull(points: np.ndarray) -> np.ndarray:
    pts = sorted(set(map(tuple, np.round(points, 6).tolist())))
    if len(pts) <= 2:
        return np.array(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def box_shadow(box: Box, sun: np.ndarray) -> np.ndarray:
    """Ground polygon of the shadow of a box (hull of its footprint moved by its base and top heights)."""
    corners = box.corners()
    horizontal = -sun[:2] / max(sun[2], 1e-3)  # ground displacement per metre of height
    top = box.ridge if box.gable else box.height
    pts = np.concatenate([corners + horizontal * box.base, corners + horizontal * top, corners])
    return _convex_hull(pts)


def _shift_rgb(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in rgb)  # type: ignore[return-value]


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
        self.style = style = campus.style
        self.res = res
        self.rng = np.random.default_rng([layout.seed, TAG_RASTER, campus_index])
        self.x0, y0, x1, self.y1 = campus.bounds(MARGIN_M)
        self.width = int(math.ceil((x1 - self.x0) / res))
        self.height = int(math.ceil((self.y1 - y0) / res))
        assert layout.fields is not None
        self.fields = layout.fields
        self.road = hsv(220, 0.04, style.road_value)
        self.marking = hsv(50, 0.05, min(0.95, style.road_value + 0.35))
        self.buildings = {b.index: b for b in layout.buildings if b.campus == campus_index}
        # each building by its lot centre in campus (u, v) coordinates, to match lots to buildings
        self.by_lot: dict[tuple[float, float], Building] = {}
        for b in self.buildings.values():
            c, s = math.cos(campus.angle), math.sin(campus.angle)
            du, dv = b.x - campus.x, b.y - campus.y
            self.by_lot[(du * c + dv * s, -du * s + dv * c)] = b
        self.tree_spots: list[tuple[float, float, float]] = []  # (x, y, cluster scale)

    def build(self) -> CampusRaster:
        base = self._base_land()
        self.paint = _Painter(self.x0, self.y1, self.res, (self.width, self.height), base)
        woods = self._outskirts()
        self._streets()
        for block in self.campus.blocks:
            self._block(block)
        for cu, cv in woods:
            k = int(self.rng.integers(15, 50))
            self._add_trees(cu + self.rng.normal(0, 25, k), cv + self.rng.normal(0, 25, k), 1.2)
        trees = self._trees()
        # one noise tile for the ground's grain and (fainter) the orthophoto's
        tile = self.rng.normal(0.0, 1.0, size=(256, 256))
        ground_img = self._textured(tile)
        sun = sun_vector(self.style.sun_azimuth, self.style.sun_elevation)
        ground_img = self._shadowed(ground_img, trees, sun)
        ortho = self._orthophoto(ground_img, trees, sun, tile)

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

    # -- helpers
    def _pave_at(self, x: float, y: float) -> tuple[int, int, int]:
        pave_h, pave_s, pave_v = self.style.pave_hsv
        p = self.fields.at(x, y)["pave"]
        local = self.campus.local_style(x, y)
        return hsv(pave_h + local.pave_hue + 12 * p, pave_s + 0.06 * p, pave_v + local.pave_value + 0.06 * p)

    def _add_trees(self, us: np.ndarray, vs: np.ndarray, scale: float = 1.0) -> None:
        x, y = self.campus.to_world(us, vs)
        self.tree_spots.extend(
            (float(a), float(b), scale) for a, b in zip(np.atleast_1d(x), np.atleast_1d(y), strict=True)
        )

    # -- steps
    def _base_land(self) -> Image.Image:
        """Base land: lawn tinted by the green field, with patchy low-frequency variation."""
        campus, fields, res = self.campus, self.fields, self.res
        step = 16.0
        gw = int(math.ceil(self.width * res / step)) + 1
        gh = int(math.ceil(self.height * res / step)) + 1
        gx = self.x0 + np.arange(gw) * step
        gy = self.y1 - np.arange(gh) * step
        lh, ls, lv = self.style.lawn_hsv
        coarse = np.zeros((gh, gw, 3), dtype=np.uint8)
        patch = self.rng.normal(0.0, 1.0, size=(gh, gw))
        for r in range(gh):
            for c in range(0, gw, 8):  # the field changes slowly: evaluate every 8th cell, hold in between
                green = fields.at(float(gx[c]), float(gy[r]))["green"]
                district_hue = campus.local_style(float(gx[c]), float(gy[r])).lawn_hue
                for cc in range(c, min(c + 8, gw)):
                    p = patch[r, cc]
                    coarse[r, cc] = hsv(
                        lh + district_hue + 10 * green + 3 * p,
                        ls + 0.08 * green + 0.03 * p,
                        lv + 0.05 * green + 0.03 * p,
                    )
        return Image.fromarray(coarse).resize((self.width, self.height), Image.BILINEAR)

    def _outskirts(self) -> list[tuple[float, float]]:
        """Outskirts: fields around the campus (outside the blocks' extent); returns the woods' centres
        (their trees are planted after the blocks')."""
        campus, rng = self.campus, self.rng
        umin = min(b.u0 for b in campus.blocks) - 40
        umax = max(b.u1 for b in campus.blocks) + 40
        vmin = min(b.v0 for b in campus.blocks) - 40
        vmax = max(b.v1 for b in campus.blocks) + 40
        ext = max(umax - umin, vmax - vmin) / 2 + MARGIN_M * 1.5
        woods: list[tuple[float, float]] = []
        for _ in range(int(rng.integers(25, 45))):
            cu, cv = rng.uniform(-ext, ext, 2)
            hu, hv = rng.uniform(40, 140, 2)
            if cu + hu > umin and cu - hu < umax and cv + hv > vmin and cv - hv < vmax:
                continue
            if rng.random() < 0.35:
                woods.append((float(cu), float(cv)))
                continue
            self.paint.polygon(
                _rect(campus, cu - hu, cv - hv, cu + hu, cv + hv),
                hsv(rng.uniform(40, 100), rng.uniform(0.25, 0.5), rng.uniform(0.35, 0.6)),
            )
        return woods

    def _streets(self) -> None:
        """Streets: a strip of road around every block (neighbours share theirs), a few leading out of
        town, and dashed centre lines."""
        campus, paint, rng, road = self.campus, self.paint, self.rng, self.road
        road_w = campus.road_width
        half_road = road_w / 2
        for block in campus.blocks:
            u0, v0, u1, v1 = block.u0, block.v0, block.u1, block.v1
            for strip in (
                (u0 - road_w, v0 - road_w, u1 + road_w, v0),
                (u0 - road_w, v1, u1 + road_w, v1 + road_w),
                (u0 - road_w, v0, u0, v1),
                (u1, v0, u1 + road_w, v1),
            ):
                paint.polygon(_rect(campus, *strip), road, ROAD)
        far = 3000.0
        for _ in range(int(rng.integers(2, 5))):
            block = campus.blocks[int(rng.integers(len(campus.blocks)))]
            if rng.random() < 0.5:
                line = np.array([-far, far]), np.full(2, block.v0 - half_road)
            else:
                line = np.full(2, block.u0 - half_road), np.array([-far, far])
            paint.line(_uv_poly(campus, *line), road_w, road, ROAD)
        for block in campus.blocks:  # dashed centre lines
            for (ua, va), (ub, vb) in (
                ((block.u0 - half_road, block.v0 - half_road), (block.u1 + half_road, block.v0 - half_road)),
                ((block.u0 - half_road, block.v0 - half_road), (block.u0 - half_road, block.v1 + half_road)),
            ):
                n = int(math.hypot(ub - ua, vb - va) // 9)
                for k in range(n):
                    t0, t1 = k / n, (k + 0.4) / n
                    paint.line(
                        _uv_poly(
                            campus,
                            np.array([ua + (ub - ua) * t0, ua + (ub - ua) * t1]),
                            np.array([va + (vb - va) * t0, va + (vb - va) * t1]),
                        ),
                        0.3,
                        self.marking,
                    )

    def _block(self, block: Block) -> None:
        """One block: lawn and sidewalks, maybe street trees along its edge, then what it holds."""
        campus, paint = self.campus, self.paint
        u0, v0, u1, v1 = block.u0, block.v0, block.u1, block.v1
        cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
        bx, by = campus.to_world(cu, cv)
        pave = self._pave_at(float(bx), float(by))
        paint.polygon(_rect(campus, u0, v0, u1, v1), None, LAWN)
        for strip in ((u0, v0, u0 + 3, v1), (u1 - 3, v0, u1, v1), (u0, v0, u1, v0 + 3), (u0, v1 - 3, u1, v1)):
            paint.polygon(_rect(campus, *strip), pave, PAVED)  # sidewalks
        if self.rng.random() < 0.5 * self.style.tree_density:  # street trees along the block edge
            n = int((u1 - u0) // 12)
            t = np.linspace(u0 + 7, u1 - 7, n)
            self._add_trees(t, np.full(n, v0 + 6.0))
            self._add_trees(t, np.full(n, v1 - 6.0))
            m = int((v1 - v0) // 12)
            t = np.linspace(v0 + 7, v1 - 7, m)
            self._add_trees(np.full(m, u0 + 6.0), t)
            self._add_trees(np.full(m, u1 - 6.0), t)
        if block.kind == "park":
            self._park(block, pave)
        elif block.kind == "parking":
            self._parking(u0 + 5, v0 + 5, u1 - 5, v1 - 5)
        elif block.kind == "sports":
            self._sports(block)
        elif block.kind == "water":
            self._water(block)
        else:  # building lots
            for lot in block.lots:
                self._lot(block, lot, pave)

    def _park(self, block: Block, pave: tuple[int, int, int]) -> None:
        """Paths (diagonals, a ring), maybe a pond, clusters of trees."""
        campus, paint, rng = self.campus, self.paint, self.rng
        u0, v0, u1, v1 = block.u0, block.v0, block.u1, block.v1
        cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
        if rng.random() < 0.7:
            for ua, va, ub, vb in ((u0, v0, u1, v1), (u0, v1, u1, v0)):
                paint.line(_uv_poly(campus, np.array([ua, ub]), np.array([va, vb])), 4.0, pave, PAVED)
        if rng.random() < 0.5:
            ring = _blob(campus, rng, cu, cv, (u1 - u0) * 0.33, (v1 - v0) * 0.33)
            paint.line(np.concatenate([ring, ring[:1]]), 3.0, pave, PAVED)
        if rng.random() < 0.4:
            pond = _blob(
                campus,
                rng,
                cu + rng.uniform(-20, 20),
                cv + rng.uniform(-20, 20),
                rng.uniform(15, 35),
                rng.uniform(12, 30),
            )
            paint.polygon(pond, hsv(195, 0.45, 0.42), WATER)
        for _ in range(int(rng.integers(3, 8) * self.style.tree_density)):
            ccu, ccv = rng.uniform(u0 + 10, u1 - 10), rng.uniform(v0 + 10, v1 - 10)
            k = int(rng.integers(3, 12))
            self._add_trees(ccu + rng.normal(0, 9, k), ccv + rng.normal(0, 9, k), 1.15)

    def _parking(self, u0: float, v0: float, u1: float, v1: float) -> None:
        """A car park (a whole block or a lot): stall markings, about two thirds of the stalls taken."""
        campus, paint, rng, marking = self.campus, self.paint, self.rng, self.marking
        paint.polygon(_rect(campus, u0, v0, u1, v1), self.road, PARKING)
        along_u = (u1 - u0) >= (v1 - v0)
        span0, span1 = (u0 + 3, u1 - 3) if along_u else (v0 + 3, v1 - 3)
        cross0, cross1 = (v0 + 3, v1 - 3) if along_u else (u0 + 3, u1 - 3)
        for r0 in np.arange(cross0, cross1 - 10.0, 16.0):  # back-to-back stall rows, 6 m aisles
            for r in (r0, r0 + 5.0):
                for s in np.arange(span0, span1 - 2.6, 2.6):
                    seg = np.array([s, s]), np.array([r, r + 5.0])
                    paint.line(_uv_poly(campus, *(seg if along_u else seg[::-1])), 0.15, marking)
                    if rng.random() < 0.65:
                        colour = hsv(
                            rng.uniform(0, 360),
                            rng.uniform(0, 0.7) * (rng.random() < 0.4),
                            rng.choice([0.15, 0.5, 0.75, 0.9]),
                        )
                        cu, cv = (s + 1.3, r + 2.5) if along_u else (r + 2.5, s + 1.3)
                        hu, hv = (0.9, 2.2) if along_u else (2.2, 0.9)
                        paint.polygon(_rect(campus, cu - hu, cv - hv, cu + hu, cv + hv), colour)

    def _sports(self, block: Block) -> None:
        """A running track around a pitch, with its centre line and a penalty-box outline."""
        campus, paint = self.campus, self.paint
        u0, v0, u1, v1 = block.u0, block.v0, block.u1, block.v1
        cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
        length, width_ = (u1 - u0) * 0.42, (v1 - v0) * 0.30
        t = np.linspace(-math.pi / 2, math.pi / 2, 16)
        us = np.concatenate([length - width_ + width_ * np.cos(t), -(length - width_) - width_ * np.cos(t)])
        vs = np.concatenate([width_ * np.sin(t), -width_ * np.sin(t)])
        paint.polygon(_uv_poly(campus, cu + us, cv + vs), hsv(10, 0.55, 0.55), SPORTS)
        paint.polygon(_uv_poly(campus, cu + us * 0.82, cv + vs * 0.75), hsv(105, 0.55, 0.50), SPORTS)
        paint.line(
            _uv_poly(campus, np.array([cu, cu]), cv + np.array([-0.7, 0.7]) * width_),
            0.4,
            (235, 235, 235),
        )
        paint.polygon(
            _rect(campus, cu - length * 0.6, cv - width_ * 0.7, cu + length * 0.6, cv + width_ * 0.7),
            None,
            outline=(235, 235, 235),
        )

    def _water(self, block: Block) -> None:
        """A lake with a darker centre, trees around its shore."""
        campus, paint, rng = self.campus, self.paint, self.rng
        u0, v0, u1, v1 = block.u0, block.v0, block.u1, block.v1
        cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
        lake = _blob(campus, rng, cu, cv, (u1 - u0) * 0.4, (v1 - v0) * 0.37)
        paint.polygon(lake, hsv(200, 0.5, 0.30), WATER)
        paint.polygon(_blob(campus, rng, cu, cv, (u1 - u0) * 0.3, (v1 - v0) * 0.27), hsv(205, 0.55, 0.25))
        k = int(30 * self.style.tree_density)
        ang = rng.uniform(0, 2 * math.pi, k)
        self._add_trees(cu + np.cos(ang) * (u1 - u0) * 0.46, cv + np.sin(ang) * (v1 - v0) * 0.44)

    def _lot(self, block: Block, lot: tuple, pave: tuple[int, int, int]) -> None:
        """One lot of a building block: a car park, a lawn with trees, or a building's surroundings
        (its footprint is painted too, for the land-cover labels)."""
        rng, density = self.rng, self.style.tree_density
        kind, a0, b0, a1, b1 = lot
        lc_u, lc_v = (a0 + a1) / 2, (b0 + b1) / 2
        if kind == "parking":
            self._parking(a0 + 6, b0 + 6, a1 - 6, b1 - 6)
            return
        if kind == "lawn":
            k = int(rng.integers(2, 10) * density)
            self._add_trees(rng.uniform(a0 + 6, a1 - 6, k), rng.uniform(b0 + 6, b1 - 6, k))
            return
        campus, paint = self.campus, self.paint
        u0, v0, u1, v1 = block.u0, block.v0, block.u1, block.v1
        building = min(self.by_lot.items(), key=lambda kv: (kv[0][0] - lc_u) ** 2 + (kv[0][1] - lc_v) ** 2)[1]
        # footpath to the nearest block edge, a paved apron, a few trees
        bu, bv = lc_u, lc_v
        edges = [
            (abs(bu - u0), (u0, bv)),
            (abs(bu - u1), (u1, bv)),
            (abs(bv - v0), (bu, v0)),
            (abs(bv - v1), (bu, v1)),
        ]
        end = min(edges)[1]
        path = _uv_poly(campus, np.array([bu, end[0]]), np.array([bv, end[1]]))
        paint.line(path, 3.0, pave, PAVED)
        if rng.random() < 0.4 + 0.2 * self.fields.at(building.x, building.y)["pave"]:
            apron = np.concatenate([box_apron(box, 5.0) for box in building.boxes])
            paint.polygon(_convex_hull(apron), pave, PAVED)
        for box in building.boxes:
            paint.polygon(box.corners(), hsv(0, 0, 0.5), BUILDING)
        k = int(rng.integers(0, 8) * density)
        self._add_trees(rng.uniform(a0 + 5, a1 - 5, k), rng.uniform(b0 + 5, b1 - 5, k))

    def _trees(self) -> Trees:
        """Trees: keep the spots on lawn, jitter, size and colour them."""
        rng, fields = self.rng, self.fields
        if self.tree_spots:
            spots = np.array(self.tree_spots)
            spots[:, :2] += rng.normal(0, 1.2, size=(len(spots), 2))
            keep = self.paint.label_at(spots[:, 0], spots[:, 1]) == LAWN
            spots = spots[keep]
        else:
            spots = np.zeros((0, 3))
        n = len(spots)
        th, ts, tv = self.style.tree_hsv
        radius = rng.uniform(2.2, 4.8, n) * spots[:, 2] if n else np.zeros(0)
        tree_rgb = np.array(
            [
                hsv(
                    th + 10 * fields.at(x, y)["green"] + rng.normal(0, 6),
                    ts + rng.normal(0, 0.06),
                    tv + rng.normal(0, 0.04),
                )
                for x, y in spots[:, :2]
            ],
            dtype=np.uint8,
        ).reshape(n, 3)
        return Trees(
            spots[:, 0].copy(), spots[:, 1].copy(), radius, radius * rng.uniform(1.6, 2.6, n) + 2.0, tree_rgb
        )

    def _textured(self, tile: np.ndarray) -> Image.Image:
        """The painted ground with fine grain (``tile`` repeated) and low-frequency dirt on every surface;
        PIL operations on 8-bit images keep this fast and small for rasters of tens of megapixels."""
        size = (self.width, self.height)
        grain = _tiled(Image.fromarray(np.clip(128.5 + 5.0 * tile, 0, 255).astype(np.uint8)), size)
        dirt_small = self.rng.normal(128.5, 3.0, size=(self.height // 32 + 2, self.width // 32 + 2))
        dirt_small = dirt_small.clip(0, 255).astype(np.uint8)
        dirt = Image.fromarray(dirt_small).resize(size, Image.BILINEAR)
        texture = ImageChops.add(grain, dirt, 1.0, -128)
        return ImageChops.add(self.paint.image, Image.merge("RGB", (texture, texture, texture)), 1.0, -128)

    def _shadowed(self, ground_img: Image.Image, trees: Trees, sun: np.ndarray) -> Image.Image:
        """Shadows of buildings and trees, from the campus sun: multiply by a bluish shade."""
        x0, y1, res = self.x0, self.y1, self.res
        shadow = Image.new("L", (self.width, self.height), 0)
        sdraw = ImageDraw.Draw(shadow)
        for b in self.buildings.values():
            for box in b.boxes:
                sdraw.polygon(self.paint._px(box_shadow(box, sun)), fill=255)
        horizontal = -sun[:2] / sun[2]
        for i in range(len(trees)):
            cx = trees.x[i] + horizontal[0] * trees.height[i] * 0.7
            cy = trees.y[i] + horizontal[1] * trees.height[i] * 0.7
            r = trees.radius[i] / res
            pc, pr = (cx - x0) / res, (y1 - cy) / res
            sdraw.ellipse((pc - r, pr - r * 0.9, pc + r, pr + r * 0.9), fill=200)
        shadow = shadow.filter(ImageFilter.BoxBlur(1))
        shade = [shadow.point([round(255 - v * (1.0 - t)) for v in range(256)]) for t in (0.50, 0.52, 0.62)]
        return ImageChops.multiply(ground_img, Image.merge("RGB", shade))

    def _orthophoto(
        self, ground_img: Image.Image, trees: Trees, sun: np.ndarray, tile: np.ndarray
    ) -> np.ndarray:
        """Orthophoto: ground + tree crowns (low to high, lit on the sun's side) + roofs + fine grain."""
        x0, y1, res = self.x0, self.y1, self.res
        ortho_img = ground_img.copy()
        odraw = ImageDraw.Draw(ortho_img)
        sun_dx, sun_dy = sun[0], -sun[1]  # image axes: rows grow southwards
        for i in np.argsort(trees.height, kind="stable"):
            r = trees.radius[i] / res
            pc, pr = (trees.x[i] - x0) / res, (y1 - trees.y[i]) / res
            rgb = tuple(int(v) for v in trees.rgb[i])
            odraw.ellipse((pc - r, pr - r, pc + r, pr + r), fill=_shift_rgb(rgb, 0.72))
            hr = r * 0.62
            hc, hrow = pc + sun_dx * r * 0.3, pr + sun_dy * r * 0.3
            odraw.ellipse((hc - hr, hrow - hr, hc + hr, hrow + hr), fill=_shift_rgb(rgb, 1.12))
        for b in sorted(self.buildings.values(), key=lambda b: b.index):
            draw_roofs_ortho(odraw, self.paint._px, b, sun, res)
        size = (self.width, self.height)
        fine = _tiled(Image.fromarray(np.clip(128.5 + 3.0 * tile, 0, 255).astype(np.uint8)), size)
        return np.asarray(ImageChops.add(ortho_img, Image.merge("RGB", (fine, fine, fine)), 1.0, -128))


def _tiled(tile: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``tile`` repeated over an image of ``size``."""
    out = Image.new(tile.mode, size)
    for top in range(0, size[1], tile.height):
        for left in range(0, size[0], tile.width):
            out.paste(tile, (left, top))
    return out


def box_apron(box: Box, margin: float) -> np.ndarray:
    grown = Box(box.cx, box.cy, box.half_u + margin, box.half_v + margin, box.angle, 0.0, 0.0)
    return grown.corners()


def draw_roofs_ortho(
    draw: ImageDraw.ImageDraw, to_px, building: Building, sun: np.ndarray, res: float
) -> None:
    """Roofs of one building seen from straight above (taller parts drawn last)."""
    for box in sorted(building.boxes, key=lambda b: b.top):
        corners = box.corners()
        if box.gable:
            # two slopes split along the ridge (the box axis); the one facing the sun is brighter
            c, s = math.cos(box.angle), math.sin(box.angle)
            normal = np.array([-s, c])  # from the ridge towards corners 2, 3
            lit = 1.0 + 0.25 * float(np.dot(normal, sun[:2]))
            mid_a, mid_b = (corners[0] + corners[3]) / 2, (corners[1] + corners[2]) / 2
            draw.polygon(
                to_px(np.array([corners[0], corners[1], mid_b, mid_a])),
                fill=_shift_rgb(building.roof_rgb, 2.0 - lit),
            )
            draw.polygon(
                to_px(np.array([mid_a, mid_b, corners[2], corners[3]])),
                fill=_shift_rgb(building.roof_rgb, lit),
            )
            draw.line(to_px(np.array([mid_a, mid_b])), fill=_shift_rgb(building.roof_rgb, 0.7), width=1)
        else:
            draw.polygon(to_px(corners), fill=building.roof_rgb, outline=_shift_rgb(building.roof_rgb, 0.8))
    horizontal = -sun[:2] / sun[2]
    for detail in building.details:
        if detail.raised > 0:
            draw.polygon(
                to_px(detail.polygon + horizontal * detail.raised), fill=_shift_rgb(building.roof_rgb, 0.6)
            )
        draw.polygon(to_px(detail.polygon), fill=detail.rgb)
