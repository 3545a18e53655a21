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

Here: :func:`campus_layout` and :class:`CampusLayout`. The parts, all
importable from here as well:

* :mod:`.style` — colours, style fields, campus styles and district palettes;
* :mod:`.campus` — one campus: its street grid, blocks, lots and districts;
* :mod:`.buildings` — buildings: parts, colours, roof details;
* :mod:`.geodesy` — world metres to latitude/longitude;
* :mod:`.streams` — the RNG stream tags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .buildings import FLOOR_HEIGHT_M, Box, Building, RoofDetail, make_building
from .campus import Block, Campus, plan_blocks, plan_districts
from .geodesy import enu_to_latlon
from .streams import TAG_CAMPUS, TAG_FIELDS, TAG_IDS, TAG_RASTER, TAG_VIEWS
from .style import (
    DISTRICT_SIGMA_M,
    FACADES,
    FIELD_NAMES,
    GABLE_MATERIALS,
    ROOF_MATERIALS,
    SHAPES,
    CampusStyle,
    District,
    LocalStyle,
    StyleFields,
    campus_style,
    hsv,
)

# A real place: Cambridge, Massachusetts (a city of campuses). The synthetic
# campuses are laid out around it a few kilometres apart.
ORIGIN_LATLON = (42.3736, -71.1097)
CAMPUS_SPACING_M = 4500.0
MAX_BUILDINGS_PER_CAMPUS = 160

# The world's parts live in their own modules (above) and stay importable from here.
__all__ = [
    "CAMPUS_SPACING_M",
    "DISTRICT_SIGMA_M",
    "FACADES",
    "FIELD_NAMES",
    "FLOOR_HEIGHT_M",
    "GABLE_MATERIALS",
    "MAX_BUILDINGS_PER_CAMPUS",
    "ORIGIN_LATLON",
    "ROOF_MATERIALS",
    "SHAPES",
    "TAG_CAMPUS",
    "TAG_FIELDS",
    "TAG_IDS",
    "TAG_RASTER",
    "TAG_VIEWS",
    "Block",
    "Box",
    "Building",
    "Campus",
    "CampusLayout",
    "CampusStyle",
    "District",
    "LocalStyle",
    "RoofDetail",
    "StyleFields",
    "campus_layout",
    "enu_to_latlon",
    "hsv",
]


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
        blocks = plan_blocks(rng, n, pitch, road)
        angle = float(rng.uniform(0, math.pi / 2))
        districts = plan_districts(rng, blocks, x, y, angle, n)
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
            campus_style(rng),
            tuple(blocks),
            districts,
        )
        members = []
        for block in blocks:
            for lot in block.lots:
                if lot[0] == "building":
                    building = make_building(rng, campus, lot, layout.fields, len(layout.buildings))
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
