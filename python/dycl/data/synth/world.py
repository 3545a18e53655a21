"""The synthetic world: campuses, their street grids and buildings, and the style fields.

Everything here is geometry and colour, decided from the seed alone (no
images): :func:`campus_layout` is cheap and gives the coordinates of every
building, so density statistics can be measured for large sets without
rendering. Units are metres in a local world frame (x east, y north) whose
origin is a real place; :func:`enu_to_latlon` turns metric offsets into WGS84
latitude/longitude.

Appearance varies smoothly in space: a few low-frequency *style fields*
(sums of long-wavelength cosines, 0.9-2 km) shift roof and facade colours,
building heights, greenery and paving, on top of a per-campus base style and
per-building jitter. Buildings 100-200 m apart therefore share context,
buildings 200-500 m apart share less, and buildings on different campuses
differ most — the signal distance-aware retrieval is meant to learn.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

# A real place: Cambridge, Massachusetts (a city of campuses). The synthetic
# campuses are laid out around it a few kilometres apart.
ORIGIN_LATLON = (42.3736, -71.1097)
CAMPUS_SPACING_M = 4500.0
MAX_BUILDINGS_PER_CAMPUS = 160
FLOOR_HEIGHT_M = 3.8

_WGS84_A = 6378137.0
_WGS84_F = 1.0 / 298.257223563
_WGS84_E2 = _WGS84_F * (2.0 - _WGS84_F)

# RNG stream tags: every random decision draws from np.random.default_rng([seed, TAG, ...]).
TAG_CAMPUS = 1
TAG_FIELDS = 2
TAG_RASTER = 3
TAG_VIEWS = 4
TAG_IDS = 5


def enu_to_latlon(
    east: np.ndarray, north: np.ndarray, lat0: float, lon0: float
) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 latitude/longitude of points ``east``/``north`` metres from (lat0, lon0).

    The local offsets are azimuthal-equidistant coordinates around (lat0,
    lon0), mapped with the second-order expansion of the geodesic direct
    problem (radii of curvature M, N of the WGS84 ellipsoid at ``lat0``, the
    convergence of meridians and the change of M with latitude). Within a
    campus (offsets up to ~2 km) geodesic distances between the results match
    the metric distances to about a millimetre.
    """
    phi = math.radians(lat0)
    sin_phi, cos_phi = math.sin(phi), math.cos(phi)
    w2 = 1.0 - _WGS84_E2 * sin_phi**2
    meridional = _WGS84_A * (1.0 - _WGS84_E2) / w2**1.5
    prime_vertical = _WGS84_A / math.sqrt(w2)
    d_meridional = 3.0 * _WGS84_A * (1.0 - _WGS84_E2) * _WGS84_E2 * sin_phi * cos_phi / w2**2.5
    e = np.asarray(east, dtype=np.float64)
    n = np.asarray(north, dtype=np.float64)
    tan_phi = sin_phi / cos_phi
    dphi = (
        n / meridional
        - n * n * d_meridional / (2.0 * meridional**3)
        - e * e * tan_phi / (2.0 * meridional * prime_vertical)
    )
    dlam = e / (prime_vertical * cos_phi) + e * n * tan_phi / (meridional * prime_vertical * cos_phi)
    return lat0 + np.degrees(dphi), lon0 + np.degrees(dlam)


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


# --------------------------------------------------------------------------- campus plan


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


@dataclass
class CampusLayout:
    """Every campus and building of a synthetic world (no images)."""

    seed: int
    campuses: list[Campus] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)
    fields: StyleFields | None = None

    def split_buildings(self, split: str) -> list[Building]:
        """The buildings of one split in class_id order."""
        return sorted((b for b in self.buildings if b.split == split), key=lambda b: b.class_id)

    def coords(self, split: str) -> np.ndarray:
        """(B, 2) latitude, longitude of one split's buildings, class_id order."""
        return np.array([[b.lat, b.lon] for b in self.split_buildings(split)], dtype=np.float64)


def _weights(rng: np.random.Generator, n: int, concentration: float = 0.7) -> tuple[float, ...]:
    w = rng.dirichlet(np.full(n, concentration))
    return tuple(float(v) for v in w)


def _campus_style(rng: np.random.Generator) -> CampusStyle:
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
        facade_weights=_weights(rng, len(FACADES)),
        roof_weights=_weights(rng, len(ROOF_MATERIALS)),
        shape_weights=_weights(rng, len(SHAPES), 1.5),
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


def _plan_blocks(rng: np.random.Generator, n_buildings: int, pitch: float, road: float) -> list[Block]:
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


def _make_building(
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


def _districts(
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
            _weights(rng, len(ROOF_MATERIALS), 0.5),
            _weights(rng, len(FACADES), 0.5),
            float(rng.uniform(-45, 45)),
            float(rng.uniform(-14, 14)),
            float(rng.uniform(-20, 20)),
            float(rng.uniform(-0.1, 0.1)),
            float(np.exp(rng.normal(0, 0.3))),
        )
        for u, v in chosen
    )


def _campus_sizes(n: int) -> list[int]:
    if n <= 0:
        return []
    count = max(1, math.ceil(n / MAX_BUILDINGS_PER_CAMPUS))
    return [n // count + (1 if i < n % count else 0) for i in range(count)]


def campus_layout(train_buildings: int, test_buildings: int, seed: int = 0) -> CampusLayout:
    """The whole synthetic world for a seed: campuses, streets, buildings and their coordinates.

    Train and test buildings lie on different campuses (at most
    :data:`MAX_BUILDINGS_PER_CAMPUS` buildings each, a few kilometres apart).
    Class ids are 1..N for train and N+1..N+M for test (as in DA-Campus),
    assigned in a seeded random order so that ids do not encode location.
    """
    for name, value in (("train_buildings", train_buildings), ("test_buildings", test_buildings)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    layout = CampusLayout(seed=int(seed), fields=StyleFields.create(int(seed)))
    plan = [("train", n) for n in _campus_sizes(int(train_buildings))] + [
        ("test", n) for n in _campus_sizes(int(test_buildings))
    ]
    grid_rng = np.random.default_rng([seed, TAG_CAMPUS])
    order = grid_rng.permutation(len(plan))  # which grid slot each campus gets
    for index, (split, n) in enumerate(plan):
        rng = np.random.default_rng([seed, TAG_CAMPUS, index + 1])
        slot = int(order[index])
        side = max(2, math.ceil(math.sqrt(len(plan))))
        x = (slot % side) * CAMPUS_SPACING_M + float(rng.uniform(-600, 600))
        y = (slot // side) * CAMPUS_SPACING_M + float(rng.uniform(-600, 600))
        lat, lon = enu_to_latlon(np.array(x), np.array(y), *ORIGIN_LATLON)
        pitch, road = float(rng.uniform(175, 200)), float(rng.uniform(10, 14))
        blocks = _plan_blocks(rng, n, pitch, road)
        angle = float(rng.uniform(0, math.pi / 2))
        districts = _districts(rng, blocks, x, y, angle, n)
        campus = Campus(
            index,
            split,
            x,
            y,
            float(lat),
            float(lon),
            angle,
            pitch,
            road,
            _campus_style(rng),
            tuple(blocks),
            districts,
        )
        members = []
        for block in blocks:
            for lot in block.lots:
                if lot[0] == "building":
                    building = _make_building(rng, campus, lot, layout.fields, len(layout.buildings))
                    layout.buildings.append(building)
                    members.append(building.index)
        layout.campuses.append(_replace(campus, buildings=tuple(members)))
    for split in ("train", "test"):
        members = [b.index for b in layout.buildings if b.split == split]
        first = 1 if split == "train" else int(train_buildings) + 1
        ids = np.random.default_rng([seed, TAG_IDS, 0 if split == "train" else 1]).permutation(len(members))
        for member, offset in zip(members, ids, strict=True):
            layout.buildings[member] = _replace(layout.buildings[member], class_id=first + int(offset))
    return layout


def _replace(obj, **changes):
    from dataclasses import replace

    return replace(obj, **changes)
