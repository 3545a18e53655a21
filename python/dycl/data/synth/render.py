"""Images of one building: the satellite tile (a north-up crop of the orthophoto) and the
drone views (perspective renderings of the 3-D campus from an oblique camera).

A drone view is rendered in three passes at ``supersample`` times the output
resolution and then box-filtered down:

1. the ground plane by inverse perspective mapping: every pixel's ray is cut
   with ``z = 0`` and the ground raster (with its baked shadows) is sampled
   from a mip level matching the pixel's footprint, with distance haze;
2. buildings (extruded boxes with window bands, flat or gabled roofs and the
   same roof details as the orthophoto) and trees (crowns), far to near
   (painter's algorithm), clipped against the camera's near plane;
3. a per-view light change (exposure, colour temperature, contrast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .raster import CampusRaster, Trees
from .world import FLOOR_HEIGHT_M, Box, Building, CampusLayout

SATELLITE_EXTENT_M = 160.0
NEAR_M = 0.5
SKY_RGB = np.array([176.0, 196.0, 220.0])


@dataclass(frozen=True)
class Camera:
    position: np.ndarray  # (3,) world x east, y north, z up
    rotation: np.ndarray  # (3, 3) rows: camera right, down, forward in world coordinates
    focal: float  # pixels
    size: int  # square image, pixels

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return (points - self.position) @ self.rotation.T

    def project(self, cam: np.ndarray) -> np.ndarray:
        """(n, 2) pixel coordinates of camera-frame points (z > 0)."""
        c = self.size / 2.0
        return cam[:, :2] * (self.focal / cam[:, 2:3]) + c


def look_camera(
    target: np.ndarray,
    heading_deg: float,
    pitch_deg: float,
    distance: float,
    fov_deg: float,
    roll_deg: float,
    size: int,
) -> Camera:
    """A camera ``distance`` metres from ``target``, looking along ``heading`` (clockwise from north),
    ``pitch`` degrees below the horizon."""
    psi, phi, rho = math.radians(heading_deg), math.radians(pitch_deg), math.radians(roll_deg)
    forward = np.array([math.sin(psi) * math.cos(phi), math.cos(psi) * math.cos(phi), -math.sin(phi)])
    right = np.array([math.cos(psi), -math.sin(psi), 0.0])
    down = np.cross(forward, right)
    right, down = right * math.cos(rho) + down * math.sin(rho), down * math.cos(rho) - right * math.sin(rho)
    focal = size / 2.0 / math.tan(math.radians(fov_deg) / 2.0)
    return Camera(target - distance * forward, np.stack([right, down, forward]), focal, size)


@dataclass(frozen=True)
class ViewParams:
    """Everything random about one drone view (drawn from the building's RNG)."""

    heading: float
    pitch: float
    distance: float
    fov: float
    roll: float
    target: tuple[float, float, float]
    gain: float
    warmth: float
    contrast: float
    haze_m: float
    sun_azimuth: float
    sun_elevation: float


def view_params(
    rng: np.random.Generator, building: Building, views: int, sun_azimuth: float, sun_elevation: float
) -> list[ViewParams]:
    """Camera and light of ``views`` drone views circling ``building`` at evenly spaced headings."""
    radius = max(building.radius, 12.0)
    top = building.top
    start = float(rng.uniform(0.0, 360.0))
    spacing = 360.0 / views
    out = []
    for k in range(views):
        pitch = float(rng.uniform(30.0, 52.0))
        fov = float(rng.uniform(50.0, 70.0))
        distance = radius * float(rng.uniform(3.0, 5.0)) + 25.0
        tz = top * float(rng.uniform(0.2, 0.5))
        min_alt = top + 18.0  # stay above the roofs
        distance = max(distance, (min_alt - tz) / math.sin(math.radians(pitch)))
        jitter = rng.uniform(-0.12, 0.12, 2) * radius
        out.append(
            ViewParams(
                heading=(start + k * spacing + float(rng.uniform(-0.25, 0.25)) * spacing) % 360.0,
                pitch=pitch,
                distance=distance,
                fov=fov,
                roll=float(rng.normal(0.0, 1.5)),
                target=(building.x + float(jitter[0]), building.y + float(jitter[1]), tz),
                gain=float(rng.uniform(0.78, 1.18)),
                warmth=float(rng.uniform(-0.08, 0.08)),
                contrast=float(rng.uniform(0.85, 1.12)),
                haze_m=float(rng.uniform(1500.0, 5000.0)),
                sun_azimuth=sun_azimuth + float(rng.uniform(-35.0, 35.0)),
                sun_elevation=float(np.clip(sun_elevation + rng.uniform(-12.0, 8.0), 20.0, 75.0)),
            )
        )
    return out


# --------------------------------------------------------------------------- satellite


def satellite_tile(raster: CampusRaster, building: Building, size: int) -> Image.Image:
    """North-up orthophoto crop of :data:`SATELLITE_EXTENT_M` metres centred on the building."""
    col, row = raster.to_pixels(np.array(building.x), np.array(building.y))
    half = SATELLITE_EXTENT_M / 2.0 / raster.res
    box = (float(col - half), float(row - half), float(col + half), float(row + half))
    image = Image.fromarray(raster.ortho)
    return image.resize((size, size), Image.BILINEAR, box=box, reducing_gap=2.0)


# --------------------------------------------------------------------------- drone


def _clip_near(cam: np.ndarray) -> np.ndarray:
    """Clip a polygon (camera frame) against ``z >= NEAR_M`` (Sutherland-Hodgman, one plane)."""
    inside = cam[:, 2] >= NEAR_M
    if inside.all():
        return cam
    if not inside.any():
        return cam[:0]
    out = []
    n = len(cam)
    for i in range(n):
        a, b = cam[i], cam[(i + 1) % n]
        ia, ib = a[2] >= NEAR_M, b[2] >= NEAR_M
        if ia:
            out.append(a)
        if ia != ib:
            t = (NEAR_M - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out)


class _Scene:
    """Draws world polygons into one drone view."""

    def __init__(self, camera: Camera, image: Image.Image, haze_m: float, sun: np.ndarray):
        self.camera = camera
        self.draw = ImageDraw.Draw(image)
        self.haze_m = haze_m
        self.sun = sun
        self.limit = camera.size * 4.0  # PIL copes badly with huge coordinates

    def haze(self, rgb: np.ndarray, distance: float) -> tuple[int, int, int]:
        h = 1.0 - math.exp(-distance / self.haze_m)
        c = np.asarray(rgb, dtype=np.float64) * (1.0 - h) + SKY_RGB * h
        return int(min(255, c[0])), int(min(255, c[1])), int(min(255, c[2]))

    def polygon(
        self, world: np.ndarray, rgb: tuple[int, int, int], outline: tuple[int, int, int] | None = None
    ) -> None:
        cam = _clip_near(self.camera.to_camera(world))
        if len(cam) < 3:
            return
        px = self.camera.project(cam)
        if (px < -self.limit).all(axis=0).any() or (px > self.camera.size + self.limit).all(axis=0).any():
            return
        px = np.clip(px, -self.limit, self.camera.size + self.limit)
        self.draw.polygon([tuple(p) for p in px.tolist()], fill=rgb, outline=outline)


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


def _render_ground(camera: Camera, raster: CampusRaster, haze_m: float) -> np.ndarray:
    """The ground plane seen by ``camera``: (size, size, 3) uint8 (sky where rays miss the ground)."""
    size = camera.size
    coords = ((np.arange(size, dtype=np.float32) + 0.5 - size / 2.0) / camera.focal).astype(np.float32)
    rot = camera.rotation.astype(np.float32)
    u, v = coords[None, :], coords[:, None]
    dx = u * rot[0, 0] + v * rot[1, 0] + rot[2, 0]
    dy = u * rot[0, 1] + v * rot[1, 1] + rot[2, 1]
    dz = u * rot[0, 2] + v * rot[1, 2] + rot[2, 2]
    norm = np.sqrt(dx * dx + dy * dy + dz * dz)
    ground = dz < -1e-4
    t = np.float32(-camera.position[2]) / np.where(ground, dz, np.float32(-1.0))
    t[~ground] = 0.0
    distance = t * norm
    col = (np.float32(camera.position[0] - raster.x0) + t * dx) / np.float32(raster.res)
    row = (np.float32(raster.y1 - camera.position[1]) - t * dy) / np.float32(raster.res)
    # Footprint of a pixel on the ground (in raster pixels): grows with distance and grazing angle.
    footprint = distance / np.float32(camera.focal * raster.res) / np.maximum(-dz / norm, np.float32(0.25))
    level = np.clip(
        np.floor(np.log2(np.maximum(footprint, np.float32(1e-6))) + np.float32(0.3)),
        0,
        len(raster.pyramid) - 1,
    ).astype(np.int8)
    # One gather from all pyramid levels at once (index -1 of ``flat`` is the outskirts colour).
    scale = np.exp2(-level.astype(np.float32))
    c = np.floor(col * scale).astype(np.int64)
    r = np.floor(row * scale).astype(np.int64)
    heights = np.array([img.shape[0] for img in raster.pyramid], dtype=np.int64)[level]
    widths = np.array([img.shape[1] for img in raster.pyramid], dtype=np.int64)[level]
    index = raster.offsets[level] + r * widths + c
    outside = ~ground | (c < 0) | (r < 0) | (c >= widths) | (r >= heights)
    index[outside] = len(raster.flat) - 1
    out = raster.flat[index].astype(np.float32)
    h = np.where(ground, 1.0 - np.exp(-distance / np.float32(haze_m)), np.float32(1.0))[..., None]
    out = out * (1.0 - h) + SKY_RGB.astype(np.float32) * h
    return np.clip(out, 0, 255).astype(np.uint8)


class CampusScene:
    """What drone views of one campus share: its raster and all building faces in flat arrays
    (one matrix product per view transforms every vertex of the campus)."""

    def __init__(self, layout: CampusLayout, raster: CampusRaster):
        self.layout = layout
        self.raster = raster
        campus = layout.campuses[raster.campus]
        meshes = [building_mesh(layout.buildings[i]) for i in campus.buildings]
        self.centres = np.array([[m.x, m.y, m.top / 2] for m in meshes]).reshape(-1, 3)
        self.reach = np.array([m.radius + m.top for m in meshes])
        vert_offset = np.cumsum([0] + [len(m.verts) for m in meshes])
        face_offset = np.cumsum([0] + [len(m.kind) for m in meshes])

        def cat(arrays: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
            return np.concatenate(arrays) if arrays else empty

        self.verts = cat([m.verts for m in meshes], np.zeros((0, 3)))
        self.start = cat(
            [m.start + vo for m, vo in zip(meshes, vert_offset[:-1], strict=True)], np.zeros(0, np.int64)
        )
        self.count = cat([m.count for m in meshes], np.zeros(0, np.int64))
        self.kind = cat([m.kind for m in meshes], np.zeros(0, np.int8))
        self.normal = cat([m.normal for m in meshes], np.zeros((0, 3)))
        self.centre = cat([m.centre for m in meshes], np.zeros((0, 3)))
        self.rgb = cat([m.rgb for m in meshes], np.zeros((0, 3)))
        self.parent = cat(
            [m.parent + fo for m, fo in zip(meshes, face_offset[:-1], strict=True)], np.zeros(0, np.int64)
        )
        self.face_building = cat(
            [np.full(len(m.kind), i) for i, m in enumerate(meshes)], np.zeros(0, np.int64)
        )
        self.box_key = [m.box_key for m in meshes]
        self.box_faces = [
            [(f + fo).tolist() for f in m.box_faces] for m, fo in zip(meshes, face_offset[:-1], strict=True)
        ]
        self.face_offset = face_offset.tolist()
        self.vert_offset = vert_offset.tolist()
        self.start_list = self.start.tolist()
        self.count_list = self.count.tolist()
        self.roof_list = (self.kind == ROOF).tolist()

    def prepare_view(self, scene: _Scene, order: list[tuple[int, float]]):
        """Per-view face data (projection, visibility, colour) of every building, computed at once;
        returns ``draw(index)`` which draws one building (boxes in painter's order)."""
        camera = scene.camera
        cam = camera.to_camera(self.verts)
        position = camera.position
        sun = scene.sun
        sun_h = sun[:2] / max(float(np.linalg.norm(sun[:2])), 1e-9)
        kind = self.kind
        distance = np.zeros(len(self.reach))
        for b, d in order:
            distance[b] = d
        face_distance = distance[self.face_building]

        facing = np.einsum("ij,ij->i", self.normal, position - self.centre) > 0
        visible = np.where((kind == WALL) | (kind == SLOPE), facing, True)
        visible &= visible[self.parent]  # a band shows only on a visible wall
        visible &= (kind != BAND) | (FLOOR_HEIGHT_M * camera.focal / np.maximum(face_distance, 1.0) >= 2.5)
        in_front = cam[:, 2] >= NEAR_M
        front_count = (
            np.add.reduceat(in_front.astype(np.int64), self.start) if len(self.start) else self.start
        )
        visible &= front_count > 0

        wall_light = 0.58 + 0.40 * np.maximum(0.0, self.normal[:, :2] @ sun_h)
        light = np.ones(len(kind))
        light = np.where(kind == WALL, wall_light, light)
        light = np.where(kind == BAND, 0.8 + 0.5 * wall_light[self.parent], light)
        light = np.where(kind == SLOPE, 0.55 + 0.5 * np.maximum(0.0, self.normal @ sun), light)
        light = np.where(kind == ROOF, 0.85 + 0.2 * sun[2], light)
        h = (1.0 - np.exp(-face_distance / scene.haze_m))[:, None]
        rgb = np.clip(np.minimum(self.rgb * light[:, None], 255.0) * (1.0 - h) + SKY_RGB * h, 0, 255)
        rgb_int = rgb.astype(np.int64)
        outline_int = (rgb * 0.8).astype(np.int64)
        whole = front_count == self.count

        lim = scene.limit
        px = np.clip(
            camera.project(np.where(in_front[:, None], cam, np.array([0.0, 0.0, 1.0]))),
            -lim,
            camera.size + lim,
        )
        draw = scene.draw
        starts, counts, roofs = self.start_list, self.count_list, self.roof_list
        face_offset, vert_offset = self.face_offset, self.vert_offset

        def draw_building(b: int) -> None:
            f0, f1 = face_offset[b], face_offset[b + 1]
            v0 = vert_offset[b]
            flat = px[v0 : vert_offset[b + 1]].ravel().tolist()
            colours = rgb_int[f0:f1].tolist()
            outlines = outline_int[f0:f1].tolist()
            vis = visible[f0:f1].tolist()
            complete = whole[f0:f1].tolist()
            key = self.box_key[b]
            dist = np.hypot(key[:, 1] - position[0], key[:, 2] - position[1])
            for box in np.lexsort((-dist, key[:, 0])).tolist():
                for f in self.box_faces[b][box]:
                    i = f - f0
                    if not vis[i]:
                        continue
                    s, c = starts[f] - v0, counts[f]
                    outline = tuple(outlines[i]) if roofs[f] else None
                    if complete[i]:
                        draw.polygon(flat[2 * s : 2 * (s + c)], fill=tuple(colours[i]), outline=outline)
                    else:
                        clipped = _clip_near(cam[v0 + s : v0 + s + c])
                        if len(clipped) >= 3:
                            pts = np.clip(camera.project(clipped), -lim, camera.size + lim)
                            draw.polygon(pts.ravel().tolist(), fill=tuple(colours[i]), outline=outline)

        return draw_building


def drone_view(
    scene_data: CampusScene,
    building: Building,
    params: ViewParams,
    size: int,
    supersample: int = 2,
    max_distance: float = 900.0,
) -> Image.Image:
    """One oblique perspective view of ``building`` with its neighbours, as an RGB image of ``size``."""
    raster = scene_data.raster
    big = size * supersample
    camera = look_camera(
        np.array(params.target), params.heading, params.pitch, params.distance, params.fov, params.roll, big
    )
    az, el = math.radians(params.sun_azimuth), math.radians(params.sun_elevation)
    sun = np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])
    image = _ground_view(raster, params, size, supersample)
    scene = _Scene(camera, image, params.haze_m, sun)
    cam = camera.position

    # (distance, kind 0 building / 1 tree, index), drawn far to near (painter's algorithm)
    items = _visible_buildings(scene_data, camera, max_distance)
    trees = raster.trees
    tree_items, radius_px, px = _visible_trees(trees, camera, max_distance)
    items.extend(tree_items)
    sun_screen = camera.rotation @ sun
    items.sort(key=lambda it: (-it[0], it[1], it[2]))
    draw_building = scene_data.prepare_view(scene, [(i, d) for d, k, i in items if k == 0])
    tree_ids = np.array([i for _, k, i in items if k == 1], dtype=np.int64)
    shade_of, light_of = _crown_colours(trees, tree_ids, cam, params.haze_m)
    draw = scene.draw
    for _, kind, index in items:
        if kind == 0:
            draw_building(index)
        else:
            r = radius_px[index]
            cx, cy = px[index]
            draw.ellipse((cx - r, cy - r * 0.95, cx + r, cy + r * 0.95), fill=shade_of[index])
            hr = r * 0.62
            hx, hy = cx + sun_screen[0] * r * 0.3, cy + sun_screen[1] * r * 0.3 - r * 0.15
            draw.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), fill=light_of[index])
    return _light_change(image, params, supersample)


def _ground_view(raster: CampusRaster, params: ViewParams, size: int, supersample: int) -> Image.Image:
    """The ground of a view, at ``size * supersample`` pixels. The ground is mip-mapped (already
    filtered), so it is rendered at the output resolution and only enlarged for the polygons, which
    need the supersampling for smooth edges."""
    ground_camera = look_camera(
        np.array(params.target), params.heading, params.pitch, params.distance, params.fov, params.roll, size
    )
    image = Image.fromarray(_render_ground(ground_camera, raster, params.haze_m))
    if supersample > 1:
        big = size * supersample
        image = image.resize((big, big), Image.BILINEAR)
    return image


def _visible_buildings(
    scene_data: CampusScene, camera: Camera, max_distance: float
) -> list[tuple[float, int, int]]:
    """(distance, 0, building) of the campus buildings that may show in the view."""
    if not len(scene_data.reach):
        return []
    big = camera.size
    centres = scene_data.centres
    dist = np.linalg.norm(centres - camera.position, axis=1)
    ccam = camera.to_camera(centres)
    depth = np.maximum(ccam[:, 2], 1.0)
    px = ccam[:, :2] * (camera.focal / depth[:, None]) + big / 2.0
    margin = camera.focal * scene_data.reach / depth + big * 0.1
    inside = ((px > -margin[:, None]) & (px < big + margin[:, None])).all(axis=1) | (ccam[:, 2] <= 1.0)
    keep = (dist <= max_distance) & (ccam[:, 2] > -scene_data.reach) & inside
    return [(float(dist[i]), 0, int(i)) for i in np.flatnonzero(keep)]


def _visible_trees(
    trees: Trees, camera: Camera, max_distance: float
) -> tuple[list[tuple[float, int, int]], np.ndarray | None, np.ndarray | None]:
    """(distance, 1, tree) of the trees whose crowns show in the view (in front, near enough, larger
    than a pixel, on screen), and every tree's crown radius and centre in pixels (None without trees)."""
    if not len(trees):
        return [], None, None
    big = camera.size
    centres = np.column_stack([trees.x, trees.y, trees.height - trees.radius])
    tcam = camera.to_camera(centres)
    dist = np.linalg.norm(centres - camera.position, axis=1)
    visible = (tcam[:, 2] > NEAR_M + trees.radius) & (dist < max_distance * 0.6)
    radius_px = np.zeros(len(trees))
    radius_px[visible] = camera.focal * trees.radius[visible] / tcam[visible, 2]
    px = np.zeros((len(trees), 2))
    px[visible] = camera.project(tcam[visible])
    visible &= (
        (radius_px > 0.6)
        & (px[:, 0] > -radius_px)
        & (px[:, 0] < big + radius_px)
        & (px[:, 1] > -radius_px)
        & (px[:, 1] < big + radius_px)
    )
    return [(float(dist[i]), 1, int(i)) for i in np.flatnonzero(visible)], radius_px, px


def _crown_colours(
    trees: Trees, tree_ids: np.ndarray, position: np.ndarray, haze_m: float
) -> tuple[dict[int, tuple], dict[int, tuple]]:
    """Crown colours (shaded body, lit top) of the trees ``tree_ids``, hazed by distance, for all
    trees at once."""
    if not len(tree_ids):
        return {}, {}
    dist = np.linalg.norm(np.column_stack([trees.x, trees.y, trees.height])[tree_ids] - position, axis=1)
    h = (1.0 - np.exp(-dist / haze_m))[:, None]
    base = trees.rgb[tree_ids].astype(np.float64)
    dark = np.clip(base * 0.62 * (1 - h) + SKY_RGB * h, 0, 255).astype(np.int64).tolist()
    lit = np.clip(np.minimum(base * 1.05, 255) * (1 - h) + SKY_RGB * h, 0, 255).astype(np.int64).tolist()
    shade_of = dict(zip(tree_ids.tolist(), map(tuple, dark), strict=True))
    light_of = dict(zip(tree_ids.tolist(), map(tuple, lit), strict=True))
    return shade_of, light_of


def _light_change(image: Image.Image, params: ViewParams, supersample: int) -> Image.Image:
    """Down to the output size, then the view's light change (contrast, exposure, colour temperature)."""
    small = image.reduce(supersample) if supersample > 1 else image
    arr = np.asarray(small, dtype=np.float32)
    mean = arr.mean()
    arr = (arr - mean) * params.contrast + mean
    arr = arr * params.gain * np.array([1.0 + params.warmth, 1.0, 1.0 - params.warmth], dtype=np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
