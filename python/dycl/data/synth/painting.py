"""Painting a campus raster: the painter that draws world-frame shapes into the RGB raster and the
land-cover label map, and the shapes it is given (campus-frame rectangles and blobs, hulls, aprons)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .buildings import Box
from .campus import Campus

LAWN, PAVED, ROAD, BUILDING, WATER, PARKING, SPORTS = range(7)
_LABEL_RES = 2.0  # metres per pixel of the land-cover map used to place trees


class Painter:
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

    def px(self, pts: np.ndarray, scale: float = 1.0) -> list[tuple[float, float]]:
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
            self.draw.polygon(self.px(pts), fill=rgb, outline=outline)
        if label is not None:
            self.label_draw.polygon(self.px(pts, self.label_scale), fill=label)

    def line(
        self, pts: np.ndarray, width_m: float, rgb: tuple[int, int, int], label: int | None = None
    ) -> None:
        self.draw.line(self.px(pts), fill=rgb, width=max(1, int(round(width_m / self.res))))
        if label is not None:
            self.label_draw.line(
                self.px(pts, self.label_scale), fill=label, width=max(1, int(round(width_m / _LABEL_RES)))
            )

    def label_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        lab = np.asarray(self.labels)
        cols = np.clip(((x - self.x0) / _LABEL_RES).astype(int), 0, lab.shape[1] - 1)
        rows = np.clip(((self.y1 - y) / _LABEL_RES).astype(int), 0, lab.shape[0] - 1)
        return lab[rows, cols]


def uv_poly(campus: Campus, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
    x, y = campus.to_world(us, vs)
    return np.stack([x, y], axis=1)


def uv_rect(campus: Campus, u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return uv_poly(campus, np.array([u0, u1, u1, u0]), np.array([v0, v0, v1, v1]))


def uv_blob(
    campus: Campus, rng: np.random.Generator, cu: float, cv: float, ru: float, rv: float
) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    wobble = 1 + sum(rng.uniform(0, 0.12) * np.cos(k * t + rng.uniform(0, 6.3)) for k in (2, 3, 5))
    return uv_poly(campus, cu + ru * wobble * np.cos(t), cv + rv * wobble * np.sin(t))


def convex_hull(points: np.ndarray) -> np.ndarray:
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


def shift_rgb(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in rgb)  # type: ignore[return-value]


def box_apron(box: Box, margin: float) -> np.ndarray:
    grown = Box(box.cx, box.cy, box.half_u + margin, box.half_v + margin, box.angle, 0.0, 0.0)
    return grown.corners()
