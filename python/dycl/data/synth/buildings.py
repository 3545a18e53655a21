"""The buildings of the world: their parts (extruded boxes, flat or gabled), colours and roof
details, and how one is drawn for a lot of a campus."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .campus import Campus
from .geodesy import enu_to_latlon
from .style import (
    FACADES,
    GABLE_MATERIALS,
    ROOF_MATERIALS,
    SHAPES,
    CampusStyle,
    LocalStyle,
    StyleFields,
    hsv,
)

FLOOR_HEIGHT_M = 3.8


@dataclass(frozen=True)
class Box:
    """An extruded oriented rectangle: one part of a building."""

    cx: float
    cy: float
    half_u: float  # half extent along the box axis
    half_v: float
    angle: float  # axis direction, radians counter-clockwise from east
    base: float  # z of the floor (metres)
    height: float  # z of the eaves / flat roof
    gable: bool = False
    ridge: float = 0.0  # z of the ridge when gabled

    def corners(self) -> np.ndarray:
        """(4, 2) world x, y of the footprint corners, counter-clockwise."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * (self.half_u, self.half_v)
        return np.stack(
            [self.cx + local[:, 0] * c - local[:, 1] * s, self.cy + local[:, 0] * s + local[:, 1] * c], axis=1
        )

    @property
    def top(self) -> float:
        return self.ridge if self.gable else self.height


@dataclass(frozen=True)
class RoofDetail:
    """A flat polygon on a roof (AC unit, solar panel, skylight), seen from above and from the drone."""

    polygon: np.ndarray  # (n, 2) world x, y
    z: float
    rgb: tuple[int, int, int]
    raised: float = 0.0  # > 0: casts a small shadow in the orthophoto
    box: int = 0  # index of the building part whose roof carries it


@dataclass(frozen=True)
class Building:
    """A building of the world: geometry, colours and where it is."""

    index: int  # position in CampusLayout.buildings
    split: str
    campus: int
    x: float  # world metres of the reference point (area-weighted footprint centroid)
    y: float
    lat: float
    lon: float
    boxes: tuple[Box, ...]
    roof_rgb: tuple[int, int, int]
    facade_rgb: tuple[int, int, int]
    window_rgb: tuple[int, int, int]
    window_ratio: float
    details: tuple[RoofDetail, ...]
    class_id: int = 0  # assigned per split after layout (1-based, train first)

    @property
    def top(self) -> float:
        return max(b.top for b in self.boxes)

    @property
    def radius(self) -> float:
        """Horizontal radius of the footprint around the reference point."""
        pts = np.concatenate([b.corners() for b in self.boxes])
        return float(np.hypot(pts[:, 0] - self.x, pts[:, 1] - self.y).max())


def _shape_boxes(
    rng: np.random.Generator, shape: str, half_a: float, half_b: float, floors: int
) -> list[tuple[float, float, float, float, int, int]]:
    """Footprint parts (cu, cv, hu, hv, base_floors, floors) inside [-half_a, half_a] x [-half_b, half_b]."""
    u = rng.uniform
    if shape == "slab":
        return [(0.0, 0.0, u(0.55, 0.95) * half_a, u(0.3, 0.6) * half_b, 0, floors)]
    if shape == "L":
        hu, t = u(0.6, 0.95) * half_a, u(0.22, 0.35) * half_b
        arm = (0.0, -half_b * 0.9 + t, hu, t, 0, floors)
        hv = u(0.5, 0.9) * half_b
        wing_t = u(0.22, 0.35) * half_a
        wing = (-hu + wing_t, -half_b * 0.9 + hv, wing_t, hv, 0, max(1, floors + int(rng.integers(-1, 2))))
        return [arm, wing]
    if shape == "U":
        hu, t = u(0.6, 0.95) * half_a, u(0.2, 0.3) * half_b
        hv = u(0.55, 0.9) * half_b
        wt = u(0.18, 0.28) * half_a
        return [
            (0.0, -half_b * 0.9 + t, hu, t, 0, floors),
            (-hu + wt, -half_b * 0.9 + hv, wt, hv, 0, floors),
            (hu - wt, -half_b * 0.9 + hv, wt, hv, 0, floors),
        ]
    if shape == "courtyard":
        hu, hv = u(0.6, 0.9) * half_a, u(0.6, 0.9) * half_b
        t = u(0.22, 0.3) * min(hu, hv)
        return [
            (0.0, -hv + t, hu, t, 0, floors),
            (0.0, hv - t, hu, t, 0, floors),
            (-hu + t, 0.0, t, hv - 2 * t, 0, floors),
            (hu - t, 0.0, t, hv - 2 * t, 0, floors),
        ]
    if shape == "tower":
        hu, hv = u(0.6, 0.9) * half_a, u(0.5, 0.85) * half_b
        podium = int(rng.integers(1, 4))
        tower = podium + max(4, int(floors * u(1.3, 2.2)))
        return [
            (0.0, 0.0, hu, hv, 0, podium),
            (u(-0.2, 0.2) * hu, u(-0.2, 0.2) * hv, hu * u(0.3, 0.5), hv * u(0.35, 0.6), podium, tower),
        ]
    if shape == "twin":
        hu, t = u(0.6, 0.95) * half_a, u(0.15, 0.25) * half_b
        off = u(0.55, 0.8) * half_b
        return [
            (0.0, -off, hu, t, 0, floors),
            (0.0, off, hu, t, 0, floors + int(rng.integers(0, 3))),
            (u(-0.3, 0.3) * hu, 0.0, u(0.08, 0.15) * half_a, off - t, 0, max(1, floors // 2)),
        ]
    raise ValueError(f"unknown shape {shape}")


def _choose(rng: np.random.Generator, names: list[str], weights: np.ndarray) -> str:
    w = np.asarray(weights, dtype=np.float64)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def make_building(
    rng: np.random.Generator, campus: Campus, lot: tuple, fields: StyleFields, index: int
) -> Building:
    """The building of one lot. Its random draws come in a fixed order (footprint, colours, roof
    details) from the campus stream: changing them changes every later building of the campus."""
    _, u0, v0, u1, v1 = lot
    lx, ly = campus.to_world((u0 + u1) / 2, (v0 + v1) / 2)
    f = fields.at(float(lx), float(ly))
    local = campus.local_style(float(lx), float(ly))
    boxes, gable = _building_boxes(rng, campus, lot, float(lx), float(ly), f, local)
    areas = np.array([4 * b.half_u * b.half_v for b in boxes])
    bx = float(np.dot(areas, [b.cx for b in boxes]) / areas.sum())
    by = float(np.dot(areas, [b.cy for b in boxes]) / areas.sum())
    roof_rgb, facade_rgb, window_rgb, window_ratio = _building_colours(rng, campus.style, local, f, gable)
    details = _roof_details(rng, campus.style, boxes)
    lat, lon = enu_to_latlon(np.array(bx - campus.x), np.array(by - campus.y), campus.lat, campus.lon)
    return Building(
        index,
        campus.split,
        campus.index,
        bx,
        by,
        float(lat),
        float(lon),
        tuple(boxes),
        roof_rgb,
        facade_rgb,
        window_rgb,
        window_ratio,
        tuple(details),
    )


def _building_boxes(
    rng: np.random.Generator,
    campus: Campus,
    lot: tuple,
    lx: float,
    ly: float,
    f: dict[str, float],
    local: LocalStyle,
) -> tuple[list[Box], bool]:
    """The parts of a building centred at (lx, ly) in its lot: floors from the height field, a shape,
    its orientation, gabled or flat roofs. Returns (boxes, gable)."""
    style = campus.style
    _, u0, v0, u1, v1 = lot
    setback = 7.0
    half_a, half_b = (u1 - u0) / 2 - setback, (v1 - v0) / 2 - setback
    floors = int(
        np.clip(
            round(style.floors_mean * local.floors * math.exp(0.35 * f["height"] + rng.normal(0, 0.25))),
            1,
            14,
        )
    )
    shape = _choose(rng, list(SHAPES), np.asarray(style.shape_weights) + 0.02)
    swap = rng.random() < 0.5
    parts = _shape_boxes(rng, shape, half_b if swap else half_a, half_a if swap else half_b, floors)
    rotation = campus.angle + (math.pi / 2 if swap else 0.0)
    if rng.random() < 0.2:
        rotation += float(rng.uniform(-0.3, 0.3))
        shrink = 0.8  # keep a rotated footprint inside its lot
    else:
        shrink = 1.0
    gable = (  # the last draw happens only for low slabs, L and U shapes
        floors <= 4
        and shape in ("slab", "L", "U")
        and rng.random() < style.gable_share * (1 + 0.5 * f["material"])
    )
    c, s = math.cos(rotation), math.sin(rotation)
    boxes = []
    for pu, pv, hu, hv, base_floors, top_floors in parts:
        pu, pv, hu, hv = pu * shrink, pv * shrink, hu * shrink, hv * shrink
        x = lx + pu * c - pv * s
        y = ly + pu * s + pv * c
        base, height = base_floors * FLOOR_HEIGHT_M, top_floors * FLOOR_HEIGHT_M
        if gable:
            along = hu >= hv
            box_angle = rotation if along else rotation + math.pi / 2
            hu2, hv2 = (hu, hv) if along else (hv, hu)
            boxes.append(Box(x, y, hu2, hv2, box_angle, base, height, True, height + 0.6 * hv2))
        else:
            boxes.append(Box(x, y, hu, hv, rotation, base, height))
    return boxes, bool(gable)


def _building_colours(
    rng: np.random.Generator, style: CampusStyle, local: LocalStyle, f: dict[str, float], gable: bool
) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int], float]:
    """Colours: campus base + smooth field shift + per-building jitter.
    Returns (roof, facade, window colours, window ratio)."""
    if gable:
        name = _choose(rng, list(GABLE_MATERIALS), np.ones(len(GABLE_MATERIALS)))
        h, sat, val = GABLE_MATERIALS[name]
    else:
        bias = np.exp(0.8 * f["material"] * np.array([1.0, -1.0, 0.5, -0.5, 0.0]))
        name = _choose(rng, list(ROOF_MATERIALS), (local.roof_weights + 0.03) * bias)
        h, sat, val = ROOF_MATERIALS[name]
    hue = (style.roof_hue if h is None else h) + local.roof_hue + 35.0 * f["roof"] + rng.normal(0, 8)
    roof_rgb = hsv(
        hue, sat * (1 + 0.2 * f["roof"]) + rng.normal(0, 0.04), val + 0.06 * f["roof"] + rng.normal(0, 0.05)
    )
    facade_name = _choose(rng, list(FACADES), local.facade_weights + 0.03)
    fh, fs, fv, window_ratio = FACADES[facade_name]
    facade_rgb = hsv(
        fh + 15.0 * f["facade"] + rng.normal(0, 5),
        fs + rng.normal(0, 0.05),
        fv + 0.07 * f["facade"] + rng.normal(0, 0.04),
    )
    window_rgb = hsv(rng.uniform(195, 225), rng.uniform(0.15, 0.4), rng.uniform(0.22, 0.42))
    return roof_rgb, facade_rgb, window_rgb, window_ratio


def _roof_details(rng: np.random.Generator, style: CampusStyle, boxes: list[Box]) -> list[RoofDetail]:
    """Solar panel rows and rooftop units on the flat roofs large enough to carry them."""
    details: list[RoofDetail] = []
    for box_index, box in enumerate(boxes):
        if box.gable or box.half_u < 6 or box.half_v < 6:
            continue
        bc, bs = math.cos(box.angle), math.sin(box.angle)

        def rect(du: float, dv: float, hu: float, hv: float, box=box, bc=bc, bs=bs) -> np.ndarray:
            loc = np.array([[-hu, -hv], [hu, -hv], [hu, hv], [-hu, hv]]) + (du, dv)
            return np.stack(
                [box.cx + loc[:, 0] * bc - loc[:, 1] * bs, box.cy + loc[:, 0] * bs + loc[:, 1] * bc], 1
            )

        if rng.random() < style.solar_share:
            rows = int(rng.integers(2, 6))
            width = box.half_u * rng.uniform(0.4, 0.8)
            for r in range(rows):
                dv = -box.half_v * 0.7 + r * (1.4 * box.half_v / max(rows - 1, 1))
                details.append(
                    RoofDetail(
                        rect(rng.uniform(-0.1, 0.1) * box.half_u, dv, width, 1.0),
                        box.height,
                        hsv(225, 0.45, 0.28),
                        0.0,
                        box_index,
                    )
                )
        for _ in range(int(rng.integers(0, 5))):
            hu, hv = rng.uniform(1.0, 3.0), rng.uniform(1.0, 2.5)
            du = rng.uniform(-box.half_u + hu + 1.5, box.half_u - hu - 1.5)
            dv = rng.uniform(-box.half_v + hv + 1.5, box.half_v - hv - 1.5)
            details.append(
                RoofDetail(
                    rect(du, dv, hu, hv), box.height, hsv(0, 0, rng.uniform(0.72, 0.86)), 1.5, box_index
                )
            )
    return details
