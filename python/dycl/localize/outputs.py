"""What ``dycl-localize`` writes: results.csv, topk.csv, results.geojson, summary.json, map.png.

* ``results.csv`` — one row per photo: the estimate, the top-1 tile, the truth
  and the errors (empty cells where unknown; ``status`` says ``ok`` or why the
  photo was skipped);
* ``topk.csv`` — one row per photo and rank: tile, latitude, longitude, similarity;
* ``results.geojson`` — RFC 7946 (WGS84, positions ``[longitude, latitude]``,
  exterior rings counter-clockwise and closed): per photo the estimated
  point, the true point, the line between them and the top-k footprints,
  each a Feature whose ``kind`` property says which;
* ``summary.json`` — :func:`dycl.localize.estimate.summarize` plus the settings and timings;
* ``map.png`` — the points over the orthophoto (:mod:`dycl.localize.mapfig`).

Every file is written to a temporary name and renamed (nothing half-written).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._files import json_safe, write_json_atomic, write_text_atomic
from .estimate import Location
from .index import MapIndex

RESULT_FILES = ("results.csv", "topk.csv", "results.geojson", "summary.json", "map.png")
_DIGITS = 7  # about 1 cm: RFC 7946 §11.2 asks for no more precision than the data has


def _cell(value: object, digits: int = 8) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def results_csv(locations: Sequence[Location]) -> str:
    """``results.csv``: one row per photo (see the module docs)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "image",
            "status",
            "method",
            "latitude",
            "longitude",
            "tiles_used",
            "top1_tile",
            "top1_latitude",
            "top1_longitude",
            "top1_similarity",
            "true_latitude",
            "true_longitude",
            "truth_source",
            "error_m",
            "top1_error_m",
        ]
    )
    for loc in locations:
        if not loc.ok:
            writer.writerow([loc.image, f"skipped: {loc.reason}"] + [""] * 13)
            continue
        best = loc.matches[0]
        truth = loc.truth or (None, None)
        writer.writerow(
            [
                loc.image,
                "ok",
                loc.method,
                _cell(loc.latitude),
                _cell(loc.longitude),
                loc.tiles_used,
                best.name,
                _cell(best.latitude),
                _cell(best.longitude),
                _cell(best.similarity, 6),
                _cell(truth[0]),
                _cell(truth[1]),
                loc.truth_source,
                _cell(loc.error_m, 2),
                _cell(loc.top1_error_m, 2),
            ]
        )
    return buffer.getvalue()


def topk_csv(locations: Sequence[Location]) -> str:
    """``topk.csv``: one row per photo and rank."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "rank", "tile", "latitude", "longitude", "similarity"])
    for loc in locations:
        for m in loc.matches:
            writer.writerow(
                [loc.image, m.rank, m.name, _cell(m.latitude), _cell(m.longitude), _cell(m.similarity, 6)]
            )
    return buffer.getvalue()


def _position(lat: float, lon: float) -> list[float]:
    return [round(float(lon), _DIGITS), round(float(lat), _DIGITS)]


def _ring(footprint: np.ndarray) -> list[list[float]]:
    """A closed, counter-clockwise (RFC 7946 §3.1.6) ``[lon, lat]`` ring of ``(4, 2)`` lat/lon corners."""
    points = [_position(lat, lon) for lat, lon in footprint]
    area = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(points, points[1:] + points[:1], strict=True))
    if area < 0:
        points.reverse()
    return points + [points[0]]


def _feature(geometry: dict, properties: dict) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def geojson(locations: Sequence[Location], index: MapIndex) -> dict[str, Any]:
    """The ``results.geojson`` FeatureCollection (see the module docs)."""
    features = []
    for loc in locations:
        if not loc.ok:
            continue
        estimate = _position(loc.latitude, loc.longitude)
        features.append(
            _feature(
                {"type": "Point", "coordinates": estimate},
                {
                    "kind": "estimate",
                    "image": loc.image,
                    "method": loc.method,
                    "error_m": loc.error_m,
                    "tiles_used": loc.tiles_used,
                },
            )
        )
        if loc.truth is not None:
            truth = _position(*loc.truth)
            features.append(
                _feature(
                    {"type": "Point", "coordinates": truth},
                    {"kind": "truth", "image": loc.image, "source": loc.truth_source},
                )
            )
            features.append(
                _feature(
                    {"type": "LineString", "coordinates": [estimate, truth]},
                    {"kind": "error", "image": loc.image, "error_m": loc.error_m},
                )
            )
        for m in loc.matches:
            features.append(
                _feature(
                    {"type": "Polygon", "coordinates": [_ring(index.footprints[m.tile])]},
                    {
                        "kind": "tile",
                        "image": loc.image,
                        "rank": m.rank,
                        "tile": m.name,
                        "similarity": round(m.similarity, 6),
                    },
                )
            )
    return {"type": "FeatureCollection", "features": json_safe(features)}


def write_outputs(
    out_dir: str | Path,
    locations: Sequence[Location],
    index: MapIndex,
    summary: Mapping[str, Any],
    draw_map: bool = True,
) -> list[Path]:
    """Write every result file into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("results.csv", results_csv(locations)),
        ("topk.csv", topk_csv(locations)),
        ("results.geojson", json.dumps(geojson(locations, index)) + "\n"),
    ):
        write_text_atomic(out / name, text)
        written.append(out / name)
    write_json_atomic(out / "summary.json", summary)
    written.append(out / "summary.json")
    if draw_map:
        from .mapfig import write_map

        written.append(write_map(out / "map.png", locations, index, summary))
    return written


__all__ = ["RESULT_FILES", "geojson", "results_csv", "topk_csv", "write_outputs"]
