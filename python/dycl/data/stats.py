"""Dataset statistics (``dycl-data stats``), the appearance checks of DESIGN §9, and contact sheets
(``dycl-data show``)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..geo import DEFAULT_THRESHOLDS, validate_thresholds
from .splits import DatasetError, Split, check_disjoint, read_dacampus

SPLITS = ("train", "test")


def _summary(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def split_stats(split: Split, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """Counts, level histogram, neighbours per scale and Eq. 6 neighbourhood sizes of one split."""
    from ..rerank import msrerank_ks

    thresholds = validate_thresholds(thresholds)
    levels = split.levels(thresholds)
    top = len(thresholds) + 1
    b = split.num_buildings
    upper = levels[np.triu_indices(b, k=1)]
    histogram = np.bincount(upper, minlength=top)[:top]
    neighbours = {}
    for s in range(1, top):
        count = (levels >= top - s).sum(axis=1) - 1  # other buildings within scale s
        neighbours[f"within_{thresholds[s - 1]:g}m"] = _summary(count)
    drone_counts = split.drone_counts()
    return {
        "buildings": b,
        "images": {"satellite": b, "drone": split.num_drone},
        "drone_per_building": _summary(drone_counts),
        "buildings_without_drone": int((drone_counts == 0).sum()),
        "thresholds_m": list(thresholds),
        "level_histogram": {f"level_{lv}": int(n) for lv, n in enumerate(histogram)},
        "building_pairs": int(len(upper)),
        "neighbours": neighbours,
        "eq6_ks": {
            # Satellite -> Drone: the gallery is the drone views; Drone -> Satellite: one tile per building
            "satellite_to_drone": list(msrerank_ks(levels, drone_counts)),
            "drone_to_satellite": list(msrerank_ks(levels, 1)),
        },
    }


def dataset_stats(
    root: str | os.PathLike, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, appearance: bool = False
) -> dict:
    """Statistics of a dataset in the DA-Campus layout (both splits; they must not share a building).

    With ``appearance``, each split also gets the DESIGN §9 measurements of
    :func:`appearance_similarity` (decodes every image: seconds per thousand).
    """
    splits = {name: read_dacampus(root, name) for name in SPLITS}
    check_disjoint(splits["train"], splits["test"])
    out = {
        "root": str(Path(root)),
        "splits": {name: split_stats(s, thresholds) for name, s in splits.items()},
    }
    if appearance:
        for name, s in splits.items():
            out["splits"][name]["appearance"] = appearance_similarity(s, thresholds)
    return out


def format_stats(stats: dict) -> str:
    """Human-readable report of :func:`dataset_stats`."""
    lines = [f"dataset {stats['root']} (DA-Campus layout)"]
    lines.append(f"{'split':<6} {'buildings':>9} {'satellite':>9} {'drone':>7}  drone/building")
    for name, s in stats["splits"].items():
        d = s["drone_per_building"]
        lines.append(
            f"{name:<6} {s['buildings']:>9} {s['images']['satellite']:>9} {s['images']['drone']:>7}  "
            f"{d['mean']:.1f} (min {d['min']:.0f}, max {d['max']:.0f})"
        )
    for name, s in stats["splits"].items():
        t = ", ".join(f"{v:g} m" for v in s["thresholds_m"])
        hist = ", ".join(
            f"{k.replace('level_', 'L')}: {v} ({100 * v / max(s['building_pairs'], 1):.1f}%)"
            for k, v in s["level_histogram"].items()
        )
        lines.append(f"{name}: building pairs by level (thresholds {t}): {hist}")
        for key, v in s["neighbours"].items():
            lines.append(
                f"{name}: other buildings {key.replace('_', ' ')}: mean {v['mean']:.1f}, "
                f"median {v['median']:.0f}, min {v['min']:.0f}, max {v['max']:.0f}"
            )
        ks = s["eq6_ks"]
        lines.append(
            f"{name}: Eq. 6 ks (mu 0.1, min 20): Satellite->Drone {tuple(ks['satellite_to_drone'])}, "
            f"Drone->Satellite {tuple(ks['drone_to_satellite'])}"
        )
        if "appearance" in s:
            a = s["appearance"]
            by_level = ", ".join(f"L{lv}: {v:.3f}" for lv, v in enumerate(a["satellite_by_level"]))
            lines.append(f"{name}: satellite colour-histogram similarity by level: {by_level}")
            if "drone_to_own_satellite" in a:
                lines.append(
                    f"{name}: drone vs own satellite tile {a['drone_to_own_satellite']:.3f} "
                    f"(vs other tiles {a['drone_to_other_satellite']:.3f}); histogram Drone->Satellite "
                    f"R@1 {100 * a['histogram_recall_at_1']:.1f}% (chance {100 * a['chance']:.1f}%)"
                )
    return "\n".join(lines)


# --------------------------------------------------------------------------- DESIGN §9 checks


def colour_histogram(path: str | os.PathLike, bins: int = 8) -> np.ndarray:
    """Joint RGB histogram with ``bins`` per channel, as a unit vector of square roots of frequencies.

    The dot product of two such vectors is the Bhattacharyya coefficient of
    the histograms: 1 for identical colour distributions, 0 for disjoint ones.
    """
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int64).reshape(-1, 3)
    q = pixels * bins // 256
    counts = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins**3).astype(np.float64)
    return np.sqrt(counts / counts.sum())


def appearance_similarity(
    split: Split, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, bins: int = 8, drone_stride: int = 1
) -> dict:
    """The two measurable properties of DESIGN §9 with a fixed descriptor (:func:`colour_histogram`).

    Returns:
        ``satellite_by_level``: mean satellite-satellite similarity of building
        pairs at each level 0..L-1 (spatial correlation: it should increase
        with the level); ``pairs_by_level``: how many pairs each mean is over;
        ``drone_to_own_satellite`` / ``drone_to_other_satellite``: mean
        similarity of a drone view to its own building's tile and to the
        others; ``histogram_recall_at_1``: share of drone views whose most
        similar tile is their own building's (``chance`` = 1/B).
    """
    thresholds = validate_thresholds(thresholds)
    top = len(thresholds) + 1
    sat = np.stack([colour_histogram(p, bins) for p in split.satellite_paths])
    sim = sat @ sat.T
    levels = split.levels(thresholds)
    iu = np.triu_indices(split.num_buildings, k=1)
    pair_levels, pair_sim = levels[iu], sim[iu]
    by_level = [
        float(pair_sim[pair_levels == lv].mean()) if (pair_levels == lv).any() else float("nan")
        for lv in range(top)
    ]
    chosen = np.arange(0, split.num_drone, max(1, int(drone_stride)))
    result = {
        "descriptor": f"sqrt-normalised joint RGB histogram, {bins}^3 bins (Bhattacharyya coefficient)",
        "satellite_by_level": by_level,
        "pairs_by_level": [int((pair_levels == lv).sum()) for lv in range(top)],
        "drone_views": int(len(chosen)),
    }
    if len(chosen):
        drone = np.stack([colour_histogram(split.drone_paths[i], bins) for i in chosen])
        cross = drone @ sat.T
        own = split.drone_buildings[chosen]
        own_sim = cross[np.arange(len(chosen)), own]
        other = (cross.sum(axis=1) - own_sim) / max(split.num_buildings - 1, 1)
        result.update(
            {
                "drone_to_own_satellite": float(own_sim.mean()),
                "drone_to_other_satellite": float(other.mean()),
                "histogram_recall_at_1": float((cross.argmax(axis=1) == own).mean()),
                "chance": 1.0 / split.num_buildings,
            }
        )
    return result


# --------------------------------------------------------------------------- contact sheet


def contact_sheet(split: Split, building_id: object, out_png: str | os.PathLike, columns: int = 8) -> Path:
    """Save the satellite tile of a building next to a grid of its drone views (for eyeballing)."""
    index = split.index_of(building_id)
    drone = [split.drone_paths[i] for i in np.flatnonzero(split.drone_buildings == index)]
    with Image.open(split.satellite_paths[index]) as image:
        cell = max(32, min(256, max(image.size)))
        sat = image.convert("RGB").resize((2 * cell, 2 * cell), Image.BILINEAR)
    cols = max(1, min(columns, len(drone))) if drone else 1
    rows = max(2, math.ceil(len(drone) / cols)) if drone else 2
    header = 22
    gap = 6
    sheet = Image.new("RGB", (2 * cell + gap + cols * cell, header + rows * cell), (255, 255, 255))
    sheet.paste(sat, (0, header))
    for k, path in enumerate(drone):
        with Image.open(path) as image:
            thumb = image.convert("RGB").resize((cell, cell), Image.BILINEAR)
        sheet.paste(thumb, (2 * cell + gap + (k % cols) * cell, header + (k // cols) * cell))
    lat, lon = split.coords[index]
    ImageDraw.Draw(sheet).text(
        (4, 4),
        f"building {building_id} ({split.name}), {lat:.6f}, {lon:.6f}: satellite tile | "
        f"{len(drone)} drone views",
        fill=(0, 0, 0),
    )
    out = Path(out_png)
    if out.parent and not out.parent.is_dir():
        raise DatasetError(f"{out.parent}: output folder does not exist")
    sheet.save(out, format="PNG")
    return out


def find_building(root: str | os.PathLike, building_id: object) -> Split:
    """The split (train or test) of a DA-Campus dataset that holds ``building_id``."""
    for name in SPLITS:
        split = read_dacampus(root, name)
        try:
            split.index_of(building_id)
        except ValueError:
            continue
        return split
    raise DatasetError(f"{root}: no building {building_id} in the train or test split")
