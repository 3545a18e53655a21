"""Finishing a painted campus ground: grain and dirt, the shadows of buildings and trees baked in,
and the orthophoto (the ground with tree crowns and roofs, seen from straight above)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from .buildings import Box, Building
from .land import Trees
from .painting import Painter, convex_hull, shift_rgb


def textured(painted: Image.Image, tile: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The painted ground with fine grain (``tile`` repeated) and low-frequency dirt on every surface;
    PIL operations on 8-bit images keep this fast and small for rasters of tens of megapixels."""
    width, height = size = painted.size
    grain = tiled(Image.fromarray(np.clip(128.5 + 5.0 * tile, 0, 255).astype(np.uint8)), size)
    dirt_small = rng.normal(128.5, 3.0, size=(height // 32 + 2, width // 32 + 2))
    dirt_small = dirt_small.clip(0, 255).astype(np.uint8)
    dirt = Image.fromarray(dirt_small).resize(size, Image.BILINEAR)
    texture = ImageChops.add(grain, dirt, 1.0, -128)
    return ImageChops.add(painted, Image.merge("RGB", (texture, texture, texture)), 1.0, -128)


def shadowed(
    ground_img: Image.Image, paint: Painter, buildings: Iterable[Building], trees: Trees, sun: np.ndarray
) -> Image.Image:
    """Shadows of buildings and trees, from the campus sun: multiply by a bluish shade."""
    x0, y1, res = paint.x0, paint.y1, paint.res
    shadow = Image.new("L", ground_img.size, 0)
    sdraw = ImageDraw.Draw(shadow)
    for b in buildings:
        for box in b.boxes:
            sdraw.polygon(paint.px(box_shadow(box, sun)), fill=255)
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


def orthophoto(
    ground_img: Image.Image,
    paint: Painter,
    buildings: Iterable[Building],
    trees: Trees,
    sun: np.ndarray,
    tile: np.ndarray,
) -> np.ndarray:
    """Orthophoto: ground + tree crowns (low to high, lit on the sun's side) + roofs + fine grain."""
    x0, y1, res = paint.x0, paint.y1, paint.res
    ortho_img = ground_img.copy()
    odraw = ImageDraw.Draw(ortho_img)
    sun_dx, sun_dy = sun[0], -sun[1]  # image axes: rows grow southwards
    for i in np.argsort(trees.height, kind="stable"):
        r = trees.radius[i] / res
        pc, pr = (trees.x[i] - x0) / res, (y1 - trees.y[i]) / res
        rgb = tuple(int(v) for v in trees.rgb[i])
        odraw.ellipse((pc - r, pr - r, pc + r, pr + r), fill=shift_rgb(rgb, 0.72))
        hr = r * 0.62
        hc, hrow = pc + sun_dx * r * 0.3, pr + sun_dy * r * 0.3
        odraw.ellipse((hc - hr, hrow - hr, hc + hr, hrow + hr), fill=shift_rgb(rgb, 1.12))
    for b in sorted(buildings, key=lambda b: b.index):
        draw_roofs_ortho(odraw, paint.px, b, sun, res)
    size = ground_img.size
    fine = tiled(Image.fromarray(np.clip(128.5 + 3.0 * tile, 0, 255).astype(np.uint8)), size)
    return np.asarray(ImageChops.add(ortho_img, Image.merge("RGB", (fine, fine, fine)), 1.0, -128))


def box_shadow(box: Box, sun: np.ndarray) -> np.ndarray:
    """Ground polygon of the shadow of a box (hull of its footprint moved by its base and top heights)."""
    corners = box.corners()
    horizontal = -sun[:2] / max(sun[2], 1e-3)  # ground displacement per metre of height
    top = box.ridge if box.gable else box.height
    pts = np.concatenate([corners + horizontal * box.base, corners + horizontal * top, corners])
    return convex_hull(pts)


def tiled(tile: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``tile`` repeated over an image of ``size``."""
    out = Image.new(tile.mode, size)
    for top in range(0, size[1], tile.height):
        for left in range(0, size[0], tile.width):
            out.paste(tile, (left, top))
    return out


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
                fill=shift_rgb(building.roof_rgb, 2.0 - lit),
            )
            draw.polygon(
                to_px(np.array([mid_a, mid_b, corners[2], corners[3]])),
                fill=shift_rgb(building.roof_rgb, lit),
            )
            draw.line(to_px(np.array([mid_a, mid_b])), fill=shift_rgb(building.roof_rgb, 0.7), width=1)
        else:
            draw.polygon(to_px(corners), fill=building.roof_rgb, outline=shift_rgb(building.roof_rgb, 0.8))
    horizontal = -sun[:2] / sun[2]
    for detail in building.details:
        if detail.raised > 0:
            draw.polygon(
                to_px(detail.polygon + horizontal * detail.raised), fill=shift_rgb(building.roof_rgb, 0.6)
            )
        draw.polygon(to_px(detail.polygon), fill=detail.rgb)
