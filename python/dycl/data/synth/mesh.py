"""Building meshes: every face of a building (walls, window bands, flat or gabled roofs, roof details)
in flat arrays, built once and drawn in every drone view of its campus."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .buildings import FLOOR_HEIGHT_M, Box, Building

WALL, BAND, ROOF, SLOPE, DETAIL = range(5)


@dataclass
class Mesh:
    """A building's faces, precomputed once: all vertices in one array so that a view transforms
    them with one matrix product. Faces of one box are stored in drawing order (walls, window
    bands, roof, roof details); front-facing walls of a box never overlap each other, so only the
    order of the boxes depends on the camera."""

    verts: np.ndarray  # (V, 3)
    start: np.ndarray  # (F,) first vertex of each face
    count: np.ndarray  # (F,) vertices of each face
    kind: np.ndarray  # (F,) WALL / BAND / ROOF / SLOPE / DETAIL
    normal: np.ndarray  # (F, 3) outward normal (walls, slopes)
    centre: np.ndarray  # (F, 3)
    rgb: np.ndarray  # (F, 3) base colour
    parent: np.ndarray  # (F,) for bands: the wall face; else the face itself
    box_faces: list[np.ndarray]  # per box: face indices in drawing order
    box_key: np.ndarray  # (boxes, 3): base, centre x, centre y
    top: float
    radius: float
    x: float
    y: float


def building_mesh(building: Building) -> Mesh:
    faces = _Faces()
    box_faces: list[np.ndarray] = []
    for box_index, box in enumerate(building.boxes):
        corners = box.corners()
        walls = _add_walls(faces, box, corners, building.facade_rgb)
        mine = [w[0] for w in walls]  # this box's faces in drawing order
        mine += _add_window_bands(faces, box, walls, building)
        if box.gable:
            mine += _add_gable_slopes(faces, box, corners, building.roof_rgb)
        else:
            mine += _add_flat_roof(faces, box, box_index, corners, building)
        box_faces.append(np.asarray(mine, dtype=np.int64))
    rows = faces.rows
    all_verts = np.concatenate(faces.verts)
    start = np.array([f[0] for f in rows], dtype=np.int64)
    count = np.array([f[1] for f in rows], dtype=np.int64)
    centre = np.array([all_verts[s : s + c].mean(axis=0) for s, c in zip(start, count, strict=True)])
    return Mesh(
        all_verts,
        start,
        count,
        np.array([f[2] for f in rows], dtype=np.int8),
        np.array([f[3] for f in rows]),
        centre,
        np.array([f[5] for f in rows], dtype=np.float64),
        np.array([f[4] for f in rows], dtype=np.int64),
        box_faces,
        np.array([[b.base, b.cx, b.cy] for b in building.boxes]),
        building.top,
        building.radius,
        building.x,
        building.y,
    )


class _Faces:
    """The faces of a mesh being built: their vertex arrays, and one row per face
    ``(start, count, kind, normal, parent, rgb)``."""

    def __init__(self) -> None:
        self.verts: list[np.ndarray] = []
        self.rows: list[tuple[int, int, int, np.ndarray, int, tuple[int, int, int]]] = []
        self.nv = 0

    def add(self, poly: np.ndarray, kind: int, normal: np.ndarray, rgb, parent: int | None = None) -> int:
        """Append a face; returns its index."""
        self.verts.append(poly)
        index = len(self.rows)
        self.rows.append((self.nv, len(poly), kind, normal, index if parent is None else parent, tuple(rgb)))
        self.nv += len(poly)
        return index


_UP = np.array([0.0, 0.0, 1.0])


def _add_walls(
    faces: _Faces, box: Box, corners: np.ndarray, rgb: tuple[int, int, int]
) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
    """The four walls of a box; returns (face, start corner, end corner, length) per wall."""
    walls = []
    for k in range(4):
        p, q = corners[k], corners[(k + 1) % 4]
        edge = q - p
        length = float(np.linalg.norm(edge))
        normal = np.array([edge[1] / length, -edge[0] / length, 0.0])
        if box.gable and k in (1, 3):  # short ends carry the gable triangle
            ridge_pt = (p + q) / 2
            poly = np.array(
                [
                    [*p, box.base],
                    [*q, box.base],
                    [*q, box.height],
                    [*ridge_pt, box.ridge],
                    [*p, box.height],
                ]
            )
        else:
            poly = np.array([[*p, box.base], [*q, box.base], [*q, box.height], [*p, box.height]])
        walls.append((faces.add(poly, WALL, normal, rgb), p, q, length))
    return walls


def _add_window_bands(
    faces: _Faces, box: Box, walls: list[tuple[int, np.ndarray, np.ndarray, float]], building: Building
) -> list[int]:
    """One window band per floor on every wall (drawn after, and only with, their wall)."""
    added = []
    floors = max(1, int(round((box.height - box.base) / FLOOR_HEIGHT_M)))
    band = FLOOR_HEIGHT_M * building.window_ratio * 0.85
    for wall, p, q, length in walls:
        inset = min(1.5, length * 0.1)
        a = p + (q - p) * (inset / length)
        b = q - (q - p) * (inset / length)
        for f in range(floors):
            z0 = box.base + f * FLOOR_HEIGHT_M + (FLOOR_HEIGHT_M - band) * 0.55
            added.append(
                faces.add(
                    np.array([[*a, z0], [*b, z0], [*b, z0 + band], [*a, z0 + band]]),
                    BAND,
                    faces.rows[wall][3],
                    building.window_rgb,
                    parent=wall,
                )
            )
    return added


def _add_gable_slopes(faces: _Faces, box: Box, corners: np.ndarray, rgb: tuple[int, int, int]) -> list[int]:
    """The two roof slopes of a gabled box, meeting at the ridge along the box axis."""
    c, s = math.cos(box.angle), math.sin(box.angle)
    axis_n = np.array([-s, c])
    mid_a, mid_b = (corners[0] + corners[3]) / 2, (corners[1] + corners[2]) / 2
    rise = (box.ridge - box.height) / max(box.half_v, 1e-6)
    added = []
    for poly, n_h in (
        (
            np.array(
                [
                    [*corners[0], box.height],
                    [*corners[1], box.height],
                    [*mid_b, box.ridge],
                    [*mid_a, box.ridge],
                ]
            ),
            -axis_n,
        ),
        (
            np.array(
                [
                    [*mid_a, box.ridge],
                    [*mid_b, box.ridge],
                    [*corners[2], box.height],
                    [*corners[3], box.height],
                ]
            ),
            axis_n,
        ),
    ):
        normal = np.array([n_h[0] * rise, n_h[1] * rise, 1.0])
        added.append(faces.add(poly, SLOPE, normal / np.linalg.norm(normal), rgb))
    return added


def _add_flat_roof(
    faces: _Faces, box: Box, box_index: int, corners: np.ndarray, building: Building
) -> list[int]:
    """A flat roof and the roof details the box carries (just above it, drawn after it)."""
    added = [faces.add(np.column_stack([corners, np.full(4, box.height)]), ROOF, _UP, building.roof_rgb)]
    for detail in building.details:
        if detail.box == box_index:
            poly = np.column_stack([detail.polygon, np.full(len(detail.polygon), detail.z + 0.05)])
            added.append(faces.add(poly, DETAIL, _UP, detail.rgb))
    return added
