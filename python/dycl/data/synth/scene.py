"""What a drone view draws into: the view's canvas (with distance haze towards the sky colour) and the
campus scene, every building face of a campus in flat arrays, lit and projected once per view."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .buildings import FLOOR_HEIGHT_M
from .camera import NEAR_M, Camera, clip_near
from .mesh import BAND, ROOF, SLOPE, WALL, building_mesh
from .raster import CampusRaster
from .world import CampusLayout

SKY_RGB = np.array([176.0, 196.0, 220.0])


class ViewCanvas:
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
        cam = clip_near(self.camera.to_camera(world))
        if len(cam) < 3:
            return
        px = self.camera.project(cam)
        if (px < -self.limit).all(axis=0).any() or (px > self.camera.size + self.limit).all(axis=0).any():
            return
        px = np.clip(px, -self.limit, self.camera.size + self.limit)
        self.draw.polygon([tuple(p) for p in px.tolist()], fill=rgb, outline=outline)


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

    def prepare_view(self, scene: ViewCanvas, order: list[tuple[int, float]]):
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
                        clipped = clip_near(cam[v0 + s : v0 + s + c])
                        if len(clipped) >= 3:
                            pts = np.clip(camera.project(clipped), -lim, camera.size + lim)
                            draw.polygon(pts.ravel().tolist(), fill=tuple(colours[i]), outline=outline)

        return draw_building
