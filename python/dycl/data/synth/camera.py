"""Drone cameras: the pinhole camera, how it is placed around a building, everything random about
one view (camera and light), and clipping against the near plane."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .buildings import Building

NEAR_M = 0.5


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


def clip_near(cam: np.ndarray) -> np.ndarray:
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
