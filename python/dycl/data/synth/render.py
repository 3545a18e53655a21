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

Here: :func:`satellite_tile`, :func:`drone_view` and the ground pass. The
parts, all importable from here as well: :mod:`.camera` (cameras, view
parameters, near-plane clipping), :mod:`.mesh` (building faces),
:mod:`.scene` (a view's canvas, a campus's faces lit and projected per view).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .buildings import Building
from .camera import NEAR_M, Camera, ViewParams, look_camera, view_params
from .land import Trees
from .mesh import BAND, DETAIL, ROOF, SLOPE, WALL, Mesh, building_mesh
from .raster import CampusRaster
from .scene import SKY_RGB, CampusScene, ViewCanvas

SATELLITE_EXTENT_M = 160.0

__all__ = [
    "BAND",
    "DETAIL",
    "NEAR_M",
    "ROOF",
    "SATELLITE_EXTENT_M",
    "SKY_RGB",
    "SLOPE",
    "WALL",
    "Camera",
    "CampusScene",
    "Mesh",
    "ViewParams",
    "building_mesh",
    "drone_view",
    "look_camera",
    "satellite_tile",
    "view_params",
]


# --------------------------------------------------------------------------- satellite


def satellite_tile(raster: CampusRaster, building: Building, size: int) -> Image.Image:
    """North-up orthophoto crop of :data:`SATELLITE_EXTENT_M` metres centred on the building."""
    col, row = raster.to_pixels(np.array(building.x), np.array(building.y))
    half = SATELLITE_EXTENT_M / 2.0 / raster.res
    box = (float(col - half), float(row - half), float(col + half), float(row + half))
    image = Image.fromarray(raster.ortho)
    return image.resize((size, size), Image.BILINEAR, box=box, reducing_gap=2.0)


# --------------------------------------------------------------------------- drone


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
    scene = ViewCanvas(camera, image, params.haze_m, sun)
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
