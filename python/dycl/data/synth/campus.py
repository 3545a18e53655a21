"""The plan of one campus: its street grid frame, street blocks and their lots, and districts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .style import (
    DISTRICT_SIGMA_M,
    FACADES,
    ROOF_MATERIALS,
    CampusStyle,
    District,
    LocalStyle,
    random_weights,
)


@dataclass(frozen=True)
class Block:
    """One street block of a campus, in the campus frame (u, v metres around the centre)."""

    kind: str  # "buildings" | "park" | "parking" | "sports" | "water"
    u0: float
    v0: float
    u1: float
    v1: float
    lots: tuple[tuple[str, float, float, float, float], ...] = ()  # (kind, u0, v0, u1, v1)


@dataclass(frozen=True)
class Campus:
    index: int
    split: str
    x: float  # world metres of the centre
    y: float
    lat: float
    lon: float
    angle: float  # street grid direction, radians from east
    pitch: float  # street block pitch, metres
    road_width: float
    style: CampusStyle
    blocks: tuple[Block, ...]
    districts: tuple[District, ...] = ()
    buildings: tuple[int, ...] = ()  # indices into CampusLayout.buildings

    def local_style(self, x: float, y: float) -> LocalStyle:
        """District palette at a point: districts blended with Gaussian weights (sigma 220 m)."""
        if not self.districts:
            return LocalStyle(
                np.asarray(self.style.roof_weights),
                np.asarray(self.style.facade_weights),
                0.0,
                0.0,
                0.0,
                0.0,
                1.0,
            )
        d2 = np.array([(d.x - x) ** 2 + (d.y - y) ** 2 for d in self.districts])
        w = np.exp(-(d2 - d2.min()) / (2 * DISTRICT_SIGMA_M**2))
        w /= w.sum()

        def mix(attr: str) -> float:
            return float(sum(wk * getattr(d, attr) for wk, d in zip(w, self.districts, strict=True)))

        roof = sum(wk * np.asarray(d.roof_weights) for wk, d in zip(w, self.districts, strict=True))
        facade = sum(wk * np.asarray(d.facade_weights) for wk, d in zip(w, self.districts, strict=True))
        return LocalStyle(
            0.3 * np.asarray(self.style.roof_weights) + 0.7 * roof,
            0.3 * np.asarray(self.style.facade_weights) + 0.7 * facade,
            mix("roof_hue"),
            mix("lawn_hue"),
            mix("pave_hue"),
            mix("pave_value"),
            mix("floors"),
        )

    def to_world(self, u: np.ndarray | float, v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
        return self.x + u * c - v * s, self.y + u * s + v * c

    def bounds(self, margin: float) -> tuple[float, float, float, float]:
        """World bounding box (x0, y0, x1, y1) of all blocks plus ``margin`` metres."""
        us = np.array([[b.u0, b.u1] for b in self.blocks]).ravel()
        vs = np.array([[b.v0, b.v1] for b in self.blocks]).ravel()
        corners_u = np.array([us.min(), us.max(), us.max(), us.min()])
        corners_v = np.array([vs.min(), vs.min(), vs.max(), vs.max()])
        x, y = self.to_world(corners_u, corners_v)
        return x.min() - margin, y.min() - margin, x.max() + margin, y.max() + margin


def plan_blocks(rng: np.random.Generator, n_buildings: int, pitch: float, road: float) -> list[Block]:
    """Street blocks around the campus centre, enough building lots for ``n_buildings``."""
    radius = int(math.ceil(math.sqrt(n_buildings / 3.0))) + 3
    cells = [(i, j) for i in range(-radius, radius + 1) for j in range(-radius, radius + 1)]
    lobes = rng.uniform(0.0, 0.35, size=3)
    phases = rng.uniform(0, 2 * math.pi, size=3)

    def score(cell: tuple[int, int]) -> float:
        theta = math.atan2(cell[1], cell[0])
        shape = 1.0 + sum(
            a * math.cos((k + 2) * theta + p) for k, (a, p) in enumerate(zip(lobes, phases, strict=True))
        )
        return math.hypot(*cell) / shape + float(rng.uniform(0.0, 0.8))

    ordered = sorted(cells, key=score)
    blocks: list[Block] = []
    placed = 0
    kinds = ["park", "parking", "sports", "water"]
    for n, (i, j) in enumerate(ordered):
        if placed >= n_buildings:
            break
        u0, v0 = (i - 0.5) * pitch + road / 2, (j - 0.5) * pitch + road / 2
        u1, v1 = (i + 0.5) * pitch - road / 2, (j + 0.5) * pitch - road / 2
        if n == 0 and rng.random() < 0.6:
            blocks.append(Block("park", u0, v0, u1, v1))  # the campus quad
            continue
        if n > 2 and rng.random() < 0.13:
            blocks.append(Block(kinds[int(rng.integers(len(kinds)))], u0, v0, u1, v1))
            continue
        layout = [(2, 2), (3, 2), (2, 3), (2, 1), (1, 2), (1, 1)][
            int(rng.choice(6, p=[0.5, 0.15, 0.15, 0.08, 0.08, 0.04]))
        ]
        lots = []
        du, dv = (u1 - u0) / layout[0], (v1 - v0) / layout[1]
        for a in range(layout[0]):
            for b in range(layout[1]):
                r = rng.random()
                kind = "parking" if r < 0.07 else "lawn" if r < 0.12 else "building"
                if kind == "building":
                    if placed >= n_buildings:
                        kind = "lawn"
                    else:
                        placed += 1
                lots.append((kind, u0 + a * du, v0 + b * dv, u0 + (a + 1) * du, v0 + (b + 1) * dv))
        blocks.append(Block("buildings", u0, v0, u1, v1, tuple(lots)))
    if placed < n_buildings:  # cannot happen with the radius above; a guard against silent short sets
        raise RuntimeError(f"campus plan placed {placed} of {n_buildings} buildings")
    return blocks


def plan_districts(
    rng: np.random.Generator, blocks: list[Block], x: float, y: float, angle: float, n_buildings: int
) -> tuple[District, ...]:
    """District centres spread over the building blocks (about one per 25 buildings, >= 250 m apart)."""
    centres = [((b.u0 + b.u1) / 2, (b.v0 + b.v1) / 2) for b in blocks if b.kind == "buildings"]
    wanted = max(1, round(n_buildings / 25))
    chosen: list[tuple[float, float]] = []
    for k in rng.permutation(len(centres)):
        u, v = centres[int(k)]
        if all(math.hypot(u - a, v - b) >= 250.0 for a, b in chosen):
            chosen.append((u, v))
        if len(chosen) == wanted:
            break
    c, s = math.cos(angle), math.sin(angle)
    return tuple(
        District(
            x + u * c - v * s,
            y + u * s + v * c,
            random_weights(rng, len(ROOF_MATERIALS), 0.5),
            random_weights(rng, len(FACADES), 0.5),
            float(rng.uniform(-45, 45)),
            float(rng.uniform(-14, 14)),
            float(rng.uniform(-20, 20)),
            float(rng.uniform(-0.1, 0.1)),
            float(np.exp(rng.normal(0, 0.3))),
        )
        for u, v in chosen
    )
