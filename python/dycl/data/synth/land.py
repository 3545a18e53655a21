"""The land of a campus raster: base lawn, outskirts, streets and blocks (parks, car parks, sports
fields, water, building lots), painted with their land-cover labels, and the trees on them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .buildings import Building
from .campus import Block, Campus
from .painting import (
    BUILDING,
    LAWN,
    PARKING,
    PAVED,
    ROAD,
    SPORTS,
    WATER,
    Painter,
    box_apron,
    convex_hull,
    uv_blob,
    uv_poly,
    uv_rect,
)
from .style import StyleFields, hsv

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


def base_land(
    campus: Campus,
    fields: StyleFields,
    rng: np.random.Generator,
    x0: float,
    y1: float,
    size: tuple[int, int],
    res: float,
) -> Image.Image:
    """Base land: lawn tinted by the green field, with patchy low-frequency variation."""
    width, height = size
    step = 16.0
    gw = int(math.ceil(width * res / step)) + 1
    gh = int(math.ceil(height * res / step)) + 1
    gx = x0 + np.arange(gw) * step
    gy = y1 - np.arange(gh) * step
    lh, ls, lv = campus.style.lawn_hsv
    coarse = np.zeros((gh, gw, 3), dtype=np.uint8)
    patch = rng.normal(0.0, 1.0, size=(gh, gw))
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
    return Image.fromarray(coarse).resize((width, height), Image.BILINEAR)


class CampusLand:
    """The land steps of :func:`~.raster.build_campus_raster`: outskirts, streets, blocks and what they
    hold (parks, car parks, sports fields, water, building lots), and the trees planted on them.

    Every step draws from ``rng``, the campus raster's one random stream: the raster builder runs them
    in a fixed order, and a step must keep its draws (their number, order and arguments), or every
    campus generated later changes.
    """

    def __init__(
        self,
        campus: Campus,
        fields: StyleFields,
        rng: np.random.Generator,
        paint: Painter,
        buildings: Iterable[Building],
    ):
        self.campus = campus
        self.style = style = campus.style
        self.fields = fields
        self.rng = rng
        self.paint = paint
        self.road = hsv(220, 0.04, style.road_value)
        self.marking = hsv(50, 0.05, min(0.95, style.road_value + 0.35))
        # each building by its lot centre in campus (u, v) coordinates, to match lots to buildings
        self.by_lot: dict[tuple[float, float], Building] = {}
        for b in buildings:
            c, s = math.cos(campus.angle), math.sin(campus.angle)
            du, dv = b.x - campus.x, b.y - campus.y
            self.by_lot[(du * c + dv * s, -du * s + dv * c)] = b
        self.tree_spots: list[tuple[float, float, float]] = []  # (x, y, cluster scale)

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
    def outskirts(self) -> list[tuple[float, float]]:
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
                uv_rect(campus, cu - hu, cv - hv, cu + hu, cv + hv),
                hsv(rng.uniform(40, 100), rng.uniform(0.25, 0.5), rng.uniform(0.35, 0.6)),
            )
        return woods

    def streets(self) -> None:
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
                paint.polygon(uv_rect(campus, *strip), road, ROAD)
        far = 3000.0
        for _ in range(int(rng.integers(2, 5))):
            block = campus.blocks[int(rng.integers(len(campus.blocks)))]
            if rng.random() < 0.5:
                line = np.array([-far, far]), np.full(2, block.v0 - half_road)
            else:
                line = np.full(2, block.u0 - half_road), np.array([-far, far])
            paint.line(uv_poly(campus, *line), road_w, road, ROAD)
        for block in campus.blocks:  # dashed centre lines
            for (ua, va), (ub, vb) in (
                ((block.u0 - half_road, block.v0 - half_road), (block.u1 + half_road, block.v0 - half_road)),
                ((block.u0 - half_road, block.v0 - half_road), (block.u0 - half_road, block.v1 + half_road)),
            ):
                n = int(math.hypot(ub - ua, vb - va) // 9)
                for k in range(n):
                    t0, t1 = k / n, (k + 0.4) / n
                    paint.line(
                        uv_poly(
                            campus,
                            np.array([ua + (ub - ua) * t0, ua + (ub - ua) * t1]),
                            np.array([va + (vb - va) * t0, va + (vb - va) * t1]),
                        ),
                        0.3,
                        self.marking,
                    )

    def paint_block(self, block: Block) -> None:
        """One block: lawn and sidewalks, maybe street trees along its edge, then what it holds."""
        campus, paint = self.campus, self.paint
        u0, v0, u1, v1 = block.u0, block.v0, block.u1, block.v1
        cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
        bx, by = campus.to_world(cu, cv)
        pave = self._pave_at(float(bx), float(by))
        paint.polygon(uv_rect(campus, u0, v0, u1, v1), None, LAWN)
        for strip in ((u0, v0, u0 + 3, v1), (u1 - 3, v0, u1, v1), (u0, v0, u1, v0 + 3), (u0, v1 - 3, u1, v1)):
            paint.polygon(uv_rect(campus, *strip), pave, PAVED)  # sidewalks
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

    def plant_woods(self, woods: list[tuple[float, float]]) -> None:
        """The woods of the outskirts (planted after the blocks' trees)."""
        for cu, cv in woods:
            k = int(self.rng.integers(15, 50))
            self._add_trees(cu + self.rng.normal(0, 25, k), cv + self.rng.normal(0, 25, k), 1.2)

    def _park(self, block: Block, pave: tuple[int, int, int]) -> None:
        """Paths (diagonals, a ring), maybe a pond, clusters of trees."""
        campus, paint, rng = self.campus, self.paint, self.rng
        u0, v0, u1, v1 = block.u0, block.v0, block.u1, block.v1
        cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
        if rng.random() < 0.7:
            for ua, va, ub, vb in ((u0, v0, u1, v1), (u0, v1, u1, v0)):
                paint.line(uv_poly(campus, np.array([ua, ub]), np.array([va, vb])), 4.0, pave, PAVED)
        if rng.random() < 0.5:
            ring = uv_blob(campus, rng, cu, cv, (u1 - u0) * 0.33, (v1 - v0) * 0.33)
            paint.line(np.concatenate([ring, ring[:1]]), 3.0, pave, PAVED)
        if rng.random() < 0.4:
            pond = uv_blob(
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
        paint.polygon(uv_rect(campus, u0, v0, u1, v1), self.road, PARKING)
        along_u = (u1 - u0) >= (v1 - v0)
        span0, span1 = (u0 + 3, u1 - 3) if along_u else (v0 + 3, v1 - 3)
        cross0, cross1 = (v0 + 3, v1 - 3) if along_u else (u0 + 3, u1 - 3)
        for r0 in np.arange(cross0, cross1 - 10.0, 16.0):  # back-to-back stall rows, 6 m aisles
            for r in (r0, r0 + 5.0):
                for s in np.arange(span0, span1 - 2.6, 2.6):
                    seg = np.array([s, s]), np.array([r, r + 5.0])
                    paint.line(uv_poly(campus, *(seg if along_u else seg[::-1])), 0.15, marking)
                    if rng.random() < 0.65:
                        colour = hsv(
                            rng.uniform(0, 360),
                            rng.uniform(0, 0.7) * (rng.random() < 0.4),
                            rng.choice([0.15, 0.5, 0.75, 0.9]),
                        )
                        cu, cv = (s + 1.3, r + 2.5) if along_u else (r + 2.5, s + 1.3)
                        hu, hv = (0.9, 2.2) if along_u else (2.2, 0.9)
                        paint.polygon(uv_rect(campus, cu - hu, cv - hv, cu + hu, cv + hv), colour)

    def _sports(self, block: Block) -> None:
        """A running track around a pitch, with its centre line and a penalty-box outline."""
        campus, paint = self.campus, self.paint
        u0, v0, u1, v1 = block.u0, block.v0, block.u1, block.v1
        cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
        length, width_ = (u1 - u0) * 0.42, (v1 - v0) * 0.30
        t = np.linspace(-math.pi / 2, math.pi / 2, 16)
        us = np.concatenate([length - width_ + width_ * np.cos(t), -(length - width_) - width_ * np.cos(t)])
        vs = np.concatenate([width_ * np.sin(t), -width_ * np.sin(t)])
        paint.polygon(uv_poly(campus, cu + us, cv + vs), hsv(10, 0.55, 0.55), SPORTS)
        paint.polygon(uv_poly(campus, cu + us * 0.82, cv + vs * 0.75), hsv(105, 0.55, 0.50), SPORTS)
        paint.line(
            uv_poly(campus, np.array([cu, cu]), cv + np.array([-0.7, 0.7]) * width_),
            0.4,
            (235, 235, 235),
        )
        paint.polygon(
            uv_rect(campus, cu - length * 0.6, cv - width_ * 0.7, cu + length * 0.6, cv + width_ * 0.7),
            None,
            outline=(235, 235, 235),
        )

    def _water(self, block: Block) -> None:
        """A lake with a darker centre, trees around its shore."""
        campus, paint, rng = self.campus, self.paint, self.rng
        u0, v0, u1, v1 = block.u0, block.v0, block.u1, block.v1
        cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
        lake = uv_blob(campus, rng, cu, cv, (u1 - u0) * 0.4, (v1 - v0) * 0.37)
        paint.polygon(lake, hsv(200, 0.5, 0.30), WATER)
        paint.polygon(uv_blob(campus, rng, cu, cv, (u1 - u0) * 0.3, (v1 - v0) * 0.27), hsv(205, 0.55, 0.25))
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
        path = uv_poly(campus, np.array([bu, end[0]]), np.array([bv, end[1]]))
        paint.line(path, 3.0, pave, PAVED)
        if rng.random() < 0.4 + 0.2 * self.fields.at(building.x, building.y)["pave"]:
            apron = np.concatenate([box_apron(box, 5.0) for box in building.boxes])
            paint.polygon(convex_hull(apron), pave, PAVED)
        for box in building.boxes:
            paint.polygon(box.corners(), hsv(0, 0, 0.5), BUILDING)
        k = int(rng.integers(0, 8) * density)
        self._add_trees(rng.uniform(a0 + 5, a1 - 5, k), rng.uniform(b0 + 5, b1 - 5, k))

    def trees(self) -> Trees:
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
