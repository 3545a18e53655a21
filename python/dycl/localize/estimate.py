"""From query embeddings to positions: the search (Rust core), the estimates, the errors, the summary.

* :func:`search` — cosine similarities against the index, ``block`` queries
  at a time (a NumPy GEMM), ranked by the core (:func:`dycl.metrics.ranked_gallery`:
  top-k selection, ties by tile index).
* The **estimate** of a position (``method``):

  - ``"top1"`` — the centre of the best tile;
  - ``"weighted"`` — the mean of the centres of the top-k tiles that lie
    within ``radius_m`` of the best one, weighted by ``exp((s_i - s_1) / temperature)``
    (``s`` = cosine similarity): tiles that agree with the best one and look
    nearly as good pull the estimate towards them; a stray tile far away does not.

  :data:`DEFAULT_METHOD` is the one measured better on the synthetic campus (docs/localize.md).
* The **error** is the geodesic distance in metres (DESIGN §3) from the estimate to the truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..geo import geodesic_distances
from ..metrics import ranked_gallery
from ..spatial_metrics import paired_geodesics, summarize_spatial
from .index import MapIndex, normalized

METHODS = ("weighted", "top1")
#: Measured on the demo campus (docs/localize.md): with a 200 m radius the weighted estimate has a lower
#: median and mean error than the top-1 centre for every k and temperature tried (with 50-100 m it is the
#: top-1 centre to within 0.5 m); 10 tiles within 200 m is the default.
DEFAULT_METHOD = "weighted"
DEFAULT_TOP_K = 10
DEFAULT_RADIUS_M = 200.0
DEFAULT_TEMPERATURE = 0.05
#: Shares of queries within these errors (metres) in every summary.
ERROR_THRESHOLDS_M = (25.0, 50.0, 100.0, 200.0, 500.0)
SUMMARY_KS = (1, 5, 10)


@dataclass(frozen=True)
class Match:
    """One of a query's top-k tiles."""

    rank: int
    tile: int
    name: str
    latitude: float
    longitude: float
    similarity: float


@dataclass
class Location:
    """Where one photo was taken, by the model; ``ok`` is False for a photo that could not be used."""

    image: str
    ok: bool = True
    reason: str = ""
    matches: list[Match] = field(default_factory=list)
    latitude: float = math.nan
    longitude: float = math.nan
    method: str = ""
    tiles_used: int = 0
    truth: tuple[float, float] | None = None
    truth_source: str = ""
    error_m: float | None = None
    top1_error_m: float | None = None

    @property
    def top1(self) -> tuple[float, float]:
        """Latitude, longitude of the best tile's centre."""
        return (self.matches[0].latitude, self.matches[0].longitude) if self.matches else (math.nan, math.nan)


def check_options(method: str, top_k: int, radius_m: float, temperature: float) -> None:
    """``ValueError`` naming the option for an unknown method or a non-positive number."""
    if method not in METHODS:
        raise ValueError(f"estimate: expected one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k: expected a positive integer, got {top_k!r}")
    for name, value in (("radius_m", radius_m), ("temperature", temperature)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{name}: expected a positive number, got {value!r}")


def search(query_emb: np.ndarray, index: MapIndex, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(ranked (q, k) tile indices, similarities (q, k))`` of each query, best first."""
    k = min(int(k), len(index))
    q = normalized(query_emb)
    if q.shape[1] != index.embeddings.shape[1]:
        raise ValueError(
            f"query embeddings have {q.shape[1]} dimensions, the index {index.embeddings.shape[1]}"
        )
    gallery = index.embeddings
    ranked, sims = [], []
    for start in range(0, q.shape[0], block):
        distances = 1.0 - (q[start : start + block] @ gallery.T).astype(np.float64)
        order = ranked_gallery(distances, k)
        ranked.append(order)
        sims.append(1.0 - np.take_along_axis(distances, order, axis=1))
    return np.concatenate(ranked), np.concatenate(sims)


def estimate_positions(
    ranked: np.ndarray, sims: np.ndarray, index: MapIndex, method: str, radius_m: float, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(positions (q, 2) latitude/longitude, tiles used (q,))`` by ``method`` (module docs)."""
    centres = index.coords[ranked]  # (q, k, 2)
    if method == "top1":
        return centres[:, 0, :].copy(), np.ones(len(ranked), dtype=np.int64)
    spread = paired_geodesics(centres[:, 0, :], centres)  # metres from the best tile's centre
    weights = np.exp((sims - sims[:, :1]) / temperature) * (spread <= radius_m)
    lat = centres[:, :, 0]
    lon = centres[:, 0:1, 1] + (centres[:, :, 1] - centres[:, 0:1, 1] + 180.0) % 360.0 - 180.0
    total = weights.sum(axis=1)
    out = np.stack([(weights * lat).sum(axis=1) / total, (weights * lon).sum(axis=1) / total], axis=1)
    out[:, 1] = (out[:, 1] + 180.0) % 360.0 - 180.0
    return out, (weights > 0).sum(axis=1)


def build_locations(
    images: Sequence[str],
    ranked: np.ndarray,
    sims: np.ndarray,
    index: MapIndex,
    positions: np.ndarray,
    used: np.ndarray,
    method: str,
    truths: Sequence[tuple[tuple[float, float] | None, str]],
) -> list[Location]:
    """One :class:`Location` per query row, with errors where the truth is known."""
    out = []
    for i, image in enumerate(images):
        matches = [
            Match(
                r + 1,
                int(t),
                str(index.names[t]),
                float(index.coords[t, 0]),
                float(index.coords[t, 1]),
                float(sims[i, r]),
            )
            for r, t in enumerate(ranked[i])
        ]
        truth, source = truths[i]
        loc = Location(
            image=image,
            matches=matches,
            latitude=float(positions[i, 0]),
            longitude=float(positions[i, 1]),
            method=method,
            tiles_used=int(used[i]),
            truth=truth,
            truth_source=source,
        )
        if truth is not None:
            d = geodesic_distances(np.array([truth]), np.array([loc.top1, (loc.latitude, loc.longitude)]))[0]
            loc.top1_error_m, loc.error_m = float(d[0]), float(d[1])
        out.append(loc)
    return out


def _contains(footprint: np.ndarray, point: tuple[float, float]) -> bool:
    """Whether ``point`` (lat, lon) lies in the quadrilateral ``footprint`` (4, 2) (local plane, rays)."""
    lat0 = point[0]
    scale = math.cos(math.radians(lat0))
    xs = ((footprint[:, 1] - point[1] + 180.0) % 360.0 - 180.0) * scale
    ys = footprint[:, 0] - lat0
    inside = False
    for j in range(4):
        x1, y1, x2, y2 = xs[j], ys[j], xs[(j + 1) % 4], ys[(j + 1) % 4]
        if (y1 > 0) != (y2 > 0) and 0 < x1 + (0 - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _error_stats(errors: np.ndarray, prefix: str) -> dict[str, float]:
    out = {f"{prefix}mean_m": float(errors.mean()), f"{prefix}median_m": float(np.median(errors))}
    return out


def summarize(locations: Sequence[Location], index: MapIndex, ks: Sequence[int] = SUMMARY_KS) -> dict:
    """Counts, error statistics of the estimate and of the top-1, shares within
    :data:`ERROR_THRESHOLDS_M`, and the retrieval metrics over the photos with a known position:
    ``R@k`` (the true position lies in one of the top-k tiles' footprints), ``err@k`` and ``SDM@k``."""
    located = [loc for loc in locations if loc.ok]
    known = [loc for loc in located if loc.truth is not None]
    out: dict = {
        "images": len(locations),
        "located": len(located),
        "skipped": len(locations) - len(located),
        "skipped_images": [f"{loc.image}: {loc.reason}" for loc in locations if not loc.ok],
        "with_truth": len(known),
        "without_truth": len(located) - len(known),
        "method": located[0].method if located else "",
    }
    if not known:
        return out
    errors = np.array([loc.error_m for loc in known], dtype=np.float64)
    out.update(_error_stats(errors, "error_"))
    out.update(_error_stats(np.array([loc.top1_error_m for loc in known], dtype=np.float64), "top1_error_"))
    for t in ERROR_THRESHOLDS_M:
        out[f"within@{t:g}m"] = float(np.mean(errors <= t))
    truth = np.array([loc.truth for loc in known], dtype=np.float64)
    tiles = np.array([[m.tile for m in loc.matches] for loc in known], dtype=np.int64)
    kk = [k for k in ks if k <= tiles.shape[1]] or [tiles.shape[1]]
    for k in kk:
        out[f"R@{k}"] = float(
            np.mean(
                [
                    any(_contains(index.footprints[t], tuple(p)) for t in row[:k])
                    for row, p in zip(tiles, truth, strict=True)
                ]
            )
        )
    result_coords = index.coords[tiles]
    out.update(summarize_spatial(paired_geodesics(truth, result_coords), truth, result_coords, kk))
    return out


__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_RADIUS_M",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_K",
    "ERROR_THRESHOLDS_M",
    "METHODS",
    "Location",
    "Match",
    "build_locations",
    "check_options",
    "estimate_positions",
    "search",
    "summarize",
]
