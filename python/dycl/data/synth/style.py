"""How the synthetic world looks: colours, the smooth style fields, per-campus base styles and
district palettes (the material, facade and shape tables they weight)."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

from .streams import TAG_FIELDS


def hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    """RGB bytes of a colour given as hue in degrees, saturation and value in [0, 1]."""
    r, g, b = colorsys.hsv_to_rgb((h % 360.0) / 360.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


# --------------------------------------------------------------------------- style fields

FIELD_NAMES = ("roof", "facade", "height", "green", "pave", "material")


@dataclass(frozen=True)
class StyleFields:
    """Smooth random fields over the world plane, one per :data:`FIELD_NAMES` entry.

    Each is a sum of cosines with random directions, wavelengths of 0.9-2 km
    and random phases, scaled to unit variance.
    """

    wavevectors: np.ndarray  # (F, K, 2) radians per metre
    phases: np.ndarray  # (F, K)

    @classmethod
    def create(cls, seed: int, components: int = 6) -> StyleFields:
        rng = np.random.default_rng([seed, TAG_FIELDS])
        n = len(FIELD_NAMES)
        angles = rng.uniform(0.0, 2.0 * math.pi, size=(n, components))
        wavelengths = rng.uniform(900.0, 2000.0, size=(n, components))
        k = 2.0 * math.pi / wavelengths
        wavevectors = np.stack([k * np.cos(angles), k * np.sin(angles)], axis=-1)
        return cls(wavevectors, rng.uniform(0.0, 2.0 * math.pi, size=(n, components)))

    def at(self, x: float, y: float) -> dict[str, float]:
        arg = self.wavevectors[..., 0] * x + self.wavevectors[..., 1] * y + self.phases
        values = np.cos(arg).sum(axis=1) * math.sqrt(2.0 / self.phases.shape[1])
        return {name: float(np.clip(v, -2.0, 2.0)) for name, v in zip(FIELD_NAMES, values, strict=True)}


@dataclass(frozen=True)
class CampusStyle:
    """Base appearance of one campus; style fields and jitter vary it locally."""

    roof_hue: float
    lawn_hsv: tuple[float, float, float]
    road_value: float
    pave_hsv: tuple[float, float, float]
    facade_weights: tuple[float, ...]  # over FACADES
    roof_weights: tuple[float, ...]  # over ROOF_MATERIALS
    shape_weights: tuple[float, ...]  # over SHAPES
    floors_mean: float
    gable_share: float
    solar_share: float
    tree_density: float
    tree_hsv: tuple[float, float, float]
    sun_azimuth: float  # degrees clockwise from north, the satellite capture
    sun_elevation: float  # degrees


FACADES = {  # name: (h, s, v, window ratio)
    "brick": (12.0, 0.55, 0.55, 0.35),
    "sandstone": (38.0, 0.32, 0.80, 0.35),
    "concrete": (30.0, 0.05, 0.68, 0.45),
    "white": (45.0, 0.04, 0.90, 0.45),
    "glass": (205.0, 0.22, 0.55, 0.85),
    "ochre": (28.0, 0.50, 0.72, 0.35),
}
ROOF_MATERIALS = {  # name: (h, s, v, gable?) ; h None = campus roof hue
    "gravel": (40.0, 0.12, 0.62),
    "membrane": (220.0, 0.05, 0.33),
    "white": (50.0, 0.03, 0.88),
    "green": (95.0, 0.45, 0.45),
    "painted": (None, 0.38, 0.60),
}
GABLE_MATERIALS = {
    "tile": (12.0, 0.62, 0.55),
    "slate": (215.0, 0.18, 0.36),
    "metal": (None, 0.40, 0.52),
}
SHAPES = ("slab", "L", "U", "courtyard", "tower", "twin")


@dataclass(frozen=True)
class District:
    """A neighbourhood of a campus with its own palette; styles blend smoothly between districts."""

    x: float
    y: float
    roof_weights: tuple[float, ...]
    facade_weights: tuple[float, ...]
    roof_hue: float  # degrees added to roof hues
    lawn_hue: float  # degrees added to the lawn hue
    pave_hue: float
    pave_value: float
    floors: float  # factor on the campus floors


DISTRICT_SIGMA_M = 220.0


@dataclass(frozen=True)
class LocalStyle:
    roof_weights: np.ndarray
    facade_weights: np.ndarray
    roof_hue: float
    lawn_hue: float
    pave_hue: float
    pave_value: float
    floors: float


def random_weights(rng: np.random.Generator, n: int, concentration: float = 0.7) -> tuple[float, ...]:
    w = rng.dirichlet(np.full(n, concentration))
    return tuple(float(v) for v in w)


def campus_style(rng: np.random.Generator) -> CampusStyle:
    return CampusStyle(
        roof_hue=float(rng.uniform(0, 360)),
        lawn_hsv=(
            float(rng.uniform(70, 115)),
            float(rng.uniform(0.22, 0.50)),
            float(rng.uniform(0.36, 0.55)),
        ),
        road_value=float(rng.uniform(0.28, 0.45)),
        pave_hsv=(
            float(rng.choice([25.0, 35.0, 10.0, 200.0])),
            float(rng.uniform(0.03, 0.30)),
            float(rng.uniform(0.60, 0.82)),
        ),
        facade_weights=random_weights(rng, len(FACADES)),
        roof_weights=random_weights(rng, len(ROOF_MATERIALS)),
        shape_weights=random_weights(rng, len(SHAPES), 1.5),
        floors_mean=float(rng.uniform(2.5, 6.5)),
        gable_share=float(rng.choice([0.0, 0.15, 0.4])),
        solar_share=float(rng.uniform(0.0, 0.4)),
        tree_density=float(rng.uniform(0.6, 1.4)),
        tree_hsv=(
            float(rng.uniform(75, 130)),
            float(rng.uniform(0.35, 0.65)),
            float(rng.uniform(0.28, 0.45)),
        ),
        sun_azimuth=float(rng.uniform(120, 240)),
        sun_elevation=float(rng.uniform(45, 65)),
    )
