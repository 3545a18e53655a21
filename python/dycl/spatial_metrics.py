"""Geo metrics of a ranking beyond the top-1: ``err@k`` and DenseUAV's SDM@K (docs/localize.md).

Both are computed from the rankings the Rust core returns
(:func:`dycl.metrics.ranked_gallery`) and from where the query and the
retrieved items are:

* **err@k** — the localization error of the top ``k``: geodesic metres
  (:func:`dycl.geo.geodesic_distances`) from the query's true position to
  the *nearest* of its ``k`` first results, so ``err@1`` is the error of the
  top-1 result and ``err@k`` says how far the best of ``k`` candidates is
  (what a verification step after retrieval could reach).
  Summaries ``err@{k}_mean_m`` and ``err@{k}_median_m``.
* **SDM@K** — the Spatial Distance Metric of DenseUAV (Dai et al., "Vision-based
  UAV self-positioning in low-altitude urban environments", IEEE TIP 2024,
  arXiv:2201.09201; ``evaluateDistance.py`` of their release):
  ``SDM@K = Σ_{i=1..K} w_i · exp(-s · d_i) / Σ_{i=1..K} w_i`` with
  ``w_i = (K - i + 1) / K``, ``s = 5000`` and ``d_i`` the Euclidean distance
  between the (longitude, latitude) *degrees* of the query and of its
  ``i``-th result, as they define it (so values compare with their papers),
  averaged over the queries. 1 means every top-K result at the query's place.

When ``k`` exceeds the gallery, the whole gallery is used (the key keeps ``k``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _core
from ._validate import positive_ints
from .geo import _coords, geodesic_distances
from .metrics import ranked_gallery

#: DenseUAV's scale factor ``s`` of SDM@K (per degree).
SDM_SCALE = 5000.0


def sdm_weights(k: int) -> np.ndarray:
    """DenseUAV's rank weights ``w_i = (K - i + 1) / K`` for ranks ``i = 1..K``."""
    return (k - np.arange(k, dtype=np.float64)) / k


def sdm_values(query_coords: np.ndarray, result_coords: np.ndarray, k: int) -> np.ndarray:
    """SDM@K of each query: ``query_coords`` (q, 2), ``result_coords`` (q, >=k, 2), lat/lon degrees."""
    delta = result_coords[:, :k, :] - query_coords[:, None, :]
    degrees = np.sqrt((delta**2).sum(axis=2))  # DenseUAV: plain distance of (lon, lat) in degrees
    w = sdm_weights(k)
    return (np.exp(-SDM_SCALE * degrees) * w).sum(axis=1) / w.sum()


def paired_geodesics(origins: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``(q, k)`` geodesic metres from ``origins[i]`` ``(q, 2)`` to each ``targets[i, j]`` ``(q, k, 2)``."""
    out = np.empty(targets.shape[:2], dtype=np.float64)
    for i in range(origins.shape[0]):
        out[i] = _core.geodesic_distances(origins[i : i + 1], np.ascontiguousarray(targets[i]))[0]
    return out


def summarize_spatial(
    errors: np.ndarray,
    query_coords: np.ndarray,
    result_coords: np.ndarray,
    ks: Sequence[int],
    skip_err: Sequence[int] = (),
) -> dict[str, float]:
    """``err@{k}_mean_m``, ``err@{k}_median_m`` (nearest of the top k) and ``SDM@{k}``, means over queries.

    ``errors`` ``(q, K)`` are the metres from each query to its ranked results,
    ``query_coords`` ``(q, 2)`` and ``result_coords`` ``(q, K, 2)`` their
    latitude/longitude; ``k`` larger than ``K`` uses all ``K``. ``skip_err``
    names ks whose ``err@k`` keys are reported elsewhere (``err@1`` by
    :func:`dycl.metrics.evaluate`).
    """
    out: dict[str, float] = {}
    available = errors.shape[1]
    for k in ks:
        if k not in skip_err:
            best = errors[:, : min(k, available)].min(axis=1)
            out[f"err@{k}_mean_m"] = float(best.mean())
            out[f"err@{k}_median_m"] = float(np.median(best))
    for k in ks:
        out[f"SDM@{k}"] = float(sdm_values(query_coords, result_coords, min(k, available)).mean())
    return out


def _rankings(query_emb: np.ndarray, gallery_emb: np.ndarray, k: int, block: int) -> np.ndarray:
    """``(q, k)`` gallery indices by cosine distance, ranked by the core, ``block`` queries at a time."""
    qn = query_emb / np.maximum(np.linalg.norm(query_emb, axis=1, keepdims=True), 1e-12)
    gn = gallery_emb / np.maximum(np.linalg.norm(gallery_emb, axis=1, keepdims=True), 1e-12)
    parts = [
        ranked_gallery(1.0 - (qn[s : s + block] @ gn.T).astype(np.float64), k)
        for s in range(0, qn.shape[0], block)
    ]
    return np.concatenate(parts, axis=0)


def spatial_scores(
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    coords: object,
    ks: Sequence[int],
    query_emb: np.ndarray | None = None,
    gallery_emb: np.ndarray | None = None,
    distances: np.ndarray | None = None,
    block: int = 1024,
) -> dict[str, float]:
    """``err@{k}`` (for ``k > 1``) and ``SDM@{k}`` of a retrieval task with building coordinates.

    Rankings come from ``distances`` ``(q, g)`` when given, else from the
    cosine distances of the embeddings (``block`` queries at a time, so no
    ``(q, g)`` matrix is held whole). ``query_ids``/``gallery_ids`` index the
    rows of ``coords`` ``(B, 2)`` latitude, longitude.
    """
    kk = positive_ints("recall_at", ks)
    c = _coords("coords", coords, building_coords=True)
    q_ids, g_ids = np.asarray(query_ids, dtype=np.int64), np.asarray(gallery_ids, dtype=np.int64)
    k_max = min(max(kk), len(g_ids))
    if distances is not None:
        ranked = ranked_gallery(distances, k_max)
    else:
        ranked = _rankings(
            np.asarray(query_emb, dtype=np.float32), np.asarray(gallery_emb, dtype=np.float32), k_max, block
        )
    result_buildings = g_ids[ranked]  # (q, k_max)
    errors = geodesic_distances(c)[q_ids[:, None], result_buildings]
    return summarize_spatial(errors, c[q_ids], c[result_buildings], kk, skip_err=(1,))


__all__ = [
    "SDM_SCALE",
    "paired_geodesics",
    "sdm_values",
    "sdm_weights",
    "spatial_scores",
    "summarize_spatial",
]
