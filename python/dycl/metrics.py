"""Hierarchical retrieval metrics (DESIGN §4), computed by the Rust core.

Definitions, with ``L`` the number of positive levels (the largest entry of
the level matrix, i.e. the level of "same building") and scale ``s`` in
``0..L`` counting a gallery item as relevant when its level is ``>= L - s``:

* **H-AP** per item, ``rel = (v / (L-1)) / n_v``, so it never exceeds 1 even
  when two levels get the same per-item relevance. With ``L = 1`` the only
  level gets weight 1 and H-AP equals the binary AP of the exact building.
* **ASI**, **NDCG** (gains ``2^level - 1`` over the whole ranking).
* **mAP_s**, **R@K_s**: binary AP and "a relevant item in the top K" per scale.
  Queries without any relevant item at a scale are left out of that scale's
  means and counted (``n_left_out_{s}``). H-AP, ASI and NDCG are averaged over
  the queries with at least one positive item (those of scale ``L - 1``).
* **Localization error** (with ``coords``): geodesic metres from the query's
  building to the building of its top-1 result (0 for the same building).

The ranking sorts the gallery by ascending distance, ties by gallery index.
Distances stay float64 (float32 is widened, never the other way).

``compat="authors"`` (every entry point) reproduces the authors' released
evaluation instead, to compare with the paper's numbers: H-AP counted by
relevance value (can exceed 1) and each query's last-ranked gallery item
dropped (:mod:`dycl.metrics_authors`; it warns). The default,
``compat="definitions"``, is the definitions above.

Example::

    from dycl.geo import level_matrix
    from dycl.metrics import evaluate

    levels = level_matrix(building_coords)  # (B, B) uint8
    scores = evaluate(dist, query_ids, gallery_ids, levels, coords=building_coords)
    scores["H-AP"], scores["R@1_0"], scores["mAP_overall"], scores["within@200m"]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from . import _core
from ._validate import embedding_pair, float_matrix, id_vector, positive_ints, relevance_levels
from .geo import DEFAULT_THRESHOLDS, _coords, validate_thresholds
from .metrics_authors import AUTHORS, DEFINITIONS, check_compat, cosine_blocks, per_query_blocks

DEFAULT_RECALL_AT: tuple[int, ...] = (1, 5, 10)

#: Names of the scales in the paper's Table III when there are three of them.
PAPER_SCALE_NAMES: tuple[str, ...] = ("small", "middle", "large")


# --------------------------------------------------------------------------- scales of a result


def scale_count(metrics: Mapping[str, object]) -> int:
    """The number of scales of a metrics dict of :func:`evaluate`: how many ``mAP_{s}`` keys it has."""
    count = 0
    while f"mAP_{count}" in metrics:
        count += 1
    return count


def scale_names(count: int) -> list[str]:
    """Display names of ``count`` scales: the paper's small/middle/large for three, else ``scale s``."""
    if count == len(PAPER_SCALE_NAMES):
        return list(PAPER_SCALE_NAMES)
    return [f"scale {s}" for s in range(count)]


# --------------------------------------------------------------------------- input checks


def _relevance_inputs(
    n_queries: int,
    n_gallery: int,
    query_ids: object,
    gallery_ids: object,
    levels: object,
    coords: object | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    lv = relevance_levels("levels", levels)
    n_buildings = lv.shape[0]
    q_ids = id_vector("query_ids", query_ids, n_buildings, n_queries)
    g_ids = id_vector("gallery_ids", gallery_ids, n_buildings, n_gallery)
    c = None
    if coords is not None:
        c = _coords("coords", coords, building_coords=True)
        if c.shape[0] != n_buildings:
            raise ValueError(
                f"coords: expected one row per building of the level matrix ({n_buildings}), got {c.shape[0]}"
            )
    return q_ids, g_ids, lv, c


def _distances(distances: object) -> np.ndarray:
    # Finiteness is checked by the core in its ranking pass (one read of the matrix, not two).
    d = float_matrix("distances", distances, dtype=np.float64, check_finite=False)
    if d.shape[0] == 0:
        raise ValueError("distances: has no rows: the query set is empty")
    if d.shape[1] == 0:
        raise ValueError("distances: has no columns: the gallery is empty")
    return d


# --------------------------------------------------------------------------- per-query values


def _name_per_query(raw: Mapping[str, object], recall_at: tuple[int, ...]) -> dict[str, np.ndarray]:
    n_levels = int(raw["n_levels"])  # type: ignore[arg-type]
    first = np.asarray(raw["first_relevant_rank"]).astype(np.float64)
    first[first == 0] = np.nan  # no relevant item at that scale
    ap = np.asarray(raw["average_precision"])
    n_rel = np.asarray(raw["n_relevant"]).astype(np.int64)
    out: dict[str, np.ndarray] = {
        "H-AP": np.asarray(raw["h_ap"]),
        "ASI": np.asarray(raw["asi"]),
        "NDCG": np.asarray(raw["ndcg"]),
    }
    for s in range(n_levels):
        out[f"AP_{s}"] = ap[:, s]
        for k in recall_at:
            hit = (first[:, s] <= k).astype(np.float64)
            hit[np.isnan(first[:, s])] = np.nan
            out[f"R@{k}_{s}"] = hit
        out[f"first_rank_{s}"] = first[:, s]
        out[f"n_relevant_{s}"] = n_rel[:, s]
    out["top1"] = np.asarray(raw["top1"]).astype(np.int64)
    if "top1_error_m" in raw:
        out["err@1_m"] = np.asarray(raw["top1_error_m"])
    return out


def per_query(
    distances: object,
    query_ids: object,
    gallery_ids: object,
    levels: object,
    recall_at: Sequence[int] | int = DEFAULT_RECALL_AT,
    coords: object | None = None,
    exclude_self: bool = False,
    compat: str = DEFINITIONS,
) -> dict[str, np.ndarray]:
    """Metric values of every query, for plots and significance tests.

    Args:
        distances: ``(q, g)`` distances, lower = closer (float64; other
            numeric dtypes are converted).
        query_ids: ``(q,)`` building id of each query (row of ``levels``).
        gallery_ids: ``(g,)`` building id of each gallery item.
        levels: ``(B, B)`` integer relevance levels (see :func:`dycl.geo.level_matrix`).
        recall_at: the ``K`` of Recall@K.
        coords: optional ``(B, 2)`` building latitude, longitude in degrees.
        compat: ``"definitions"`` (default: DESIGN §4, in the Rust core) or
            ``"authors"`` (the authors' release, see :mod:`dycl.metrics_authors`;
            warns with :class:`~dycl.metrics_authors.AuthorsCompatWarning`).
        exclude_self: single-domain retrieval, the query set is the gallery:
            ``distances`` square, ``gallery_ids`` equal to ``query_ids``, and
            query ``i`` is ranked against the other items only (column ``i``
            is left out of every value below; ranks and ``top1`` count the
            others, ``top1`` is still a gallery index).

    Returns:
        ``(q,)`` arrays: ``"H-AP"``, ``"ASI"``, ``"NDCG"`` (NaN for a query
        without any positive item); for each scale ``s``: ``f"AP_{s}"``,
        ``f"R@{k}_{s}"`` (1.0 / 0.0), ``f"first_rank_{s}"`` (1-based rank of the
        first relevant item), all NaN where the query has no relevant item at
        that scale, and ``f"n_relevant_{s}"`` (int64); ``"top1"`` (int64
        gallery index of the rank-1 item); with ``coords``, ``"err@1_m"``.
    """
    authors = check_compat(compat) == AUTHORS
    d = _distances(distances)
    ks = positive_ints("recall_at", recall_at)
    q_ids, g_ids, lv, c = _relevance_inputs(d.shape[0], d.shape[1], query_ids, gallery_ids, levels, coords)
    if authors:
        _no_authors_single_domain(exclude_self)
        return per_query_blocks(*d.shape, lambda a, b: d[a:b], q_ids, g_ids, lv, ks, c)
    return _name_per_query(_core.per_query(d, q_ids, g_ids, lv, c, _flag("exclude_self", exclude_self)), ks)


def per_query_embeddings(
    query_emb: object,
    gallery_emb: object,
    query_ids: object,
    gallery_ids: object,
    levels: object,
    recall_at: Sequence[int] | int = DEFAULT_RECALL_AT,
    coords: object | None = None,
    exclude_self: bool = False,
    compat: str = DEFINITIONS,
) -> dict[str, np.ndarray]:
    """:func:`per_query` with cosine distances of ``(q, d)`` / ``(g, d)`` embeddings.

    The distances are computed in the core (float32, rows L2-normalised) one
    block of queries at a time and never leave it: memory grows as
    ``block × g``, not ``q × g``. NaN/inf embeddings are reported by the core
    (``query_emb``/``gallery_emb``), in the pass that normalises them.
    With ``compat="authors"`` the distances are computed in NumPy, block by block (float32, like
    the core's, but not bit for bit: items within float32 rounding of each other may swap ranks).
    With ``exclude_self`` (see :func:`per_query`) ``gallery_emb`` must equal
    ``query_emb`` (pass the same array twice).
    """
    authors = check_compat(compat) == AUTHORS
    qe, ge = embedding_pair(query_emb, gallery_emb, check_finite=False)
    ks = positive_ints("recall_at", recall_at)
    q_ids, g_ids, lv, c = _relevance_inputs(qe.shape[0], ge.shape[0], query_ids, gallery_ids, levels, coords)
    if authors:
        _no_authors_single_domain(exclude_self)
        blocks = cosine_blocks(qe, ge)
        return per_query_blocks(qe.shape[0], ge.shape[0], blocks, q_ids, g_ids, lv, ks, c, name="gallery_emb")
    flag = _flag("exclude_self", exclude_self)
    return _name_per_query(_core.per_query_embeddings(qe, ge, q_ids, g_ids, lv, c, flag), ks)


# --------------------------------------------------------------------------- summaries


def _no_authors_single_domain(exclude_self: object) -> None:
    """The authors' evaluation is only reproduced for two sets (its single-domain path was not checked)."""
    if exclude_self is True:
        raise ValueError("compat: 'authors' reproduces the release's two-set evaluation only; "
                         "use the definitions with exclude_self=True")


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _mean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN when there are none."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def summarize(
    values: Mapping[str, np.ndarray], thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[str, float]:
    """Means of the per-query values returned by :func:`per_query`.

    Returns the keys of DESIGN §4: ``"H-AP"``, ``"ASI"``, ``"NDCG"``,
    ``f"mAP_{s}"``, ``f"R@{k}_{s}"``, ``"mAP_overall"`` and ``"R@1_overall"``
    (means over the scales), the counts ``"n_queries"``, ``f"n_queries_{s}"``
    (queries scored at scale ``s``) and ``f"n_left_out_{s}"``; when the values
    carry ``"err@1_m"``: ``"err@1_mean_m"``, ``"err@1_median_m"`` and, for each
    threshold ``t``, ``f"within@{t:g}m"`` (share of queries whose top-1 building
    is at most ``t`` metres away).
    """
    ts = validate_thresholds(thresholds)
    n_levels = sum(1 for key in values if re.fullmatch(r"AP_\d+", key))
    if n_levels == 0 or "H-AP" not in values:
        raise ValueError("values: expected the dict returned by dycl.metrics.per_query")
    recall_at = sorted(int(m.group(1)) for key in values if (m := re.fullmatch(r"R@(\d+)_0", key)))
    n_queries = int(np.asarray(values["H-AP"]).shape[0])
    out: dict[str, float] = {
        "H-AP": _mean(values["H-AP"]),
        "ASI": _mean(values["ASI"]),
        "NDCG": _mean(values["NDCG"]),
    }
    map_by_scale, r1_by_scale = [], []
    for s in range(n_levels):
        out[f"mAP_{s}"] = _mean(values[f"AP_{s}"])
        for k in recall_at:
            out[f"R@{k}_{s}"] = _mean(values[f"R@{k}_{s}"])
        first = np.asarray(values[f"first_rank_{s}"])
        scored = int(np.count_nonzero(~np.isnan(first)))
        out[f"n_queries_{s}"] = scored
        out[f"n_left_out_{s}"] = n_queries - scored
        map_by_scale.append(out[f"mAP_{s}"])
        r1_by_scale.append(_mean(np.where(np.isnan(first), np.nan, (first == 1).astype(np.float64))))
    # Paper Table III: plain mean over the scales (NaN if a scale scored no query).
    out["mAP_overall"] = float(np.mean(map_by_scale))
    out["R@1_overall"] = float(np.mean(r1_by_scale))
    out["n_queries"] = n_queries
    if "err@1_m" in values:
        err = np.asarray(values["err@1_m"], dtype=np.float64)
        out["err@1_mean_m"] = float(err.mean())
        out["err@1_median_m"] = float(np.median(err))
        for t in ts:
            out[f"within@{t:g}m"] = float(np.mean(err <= t))
    return out


def evaluate(
    distances: object,
    query_ids: object,
    gallery_ids: object,
    levels: object,
    recall_at: Sequence[int] | int = DEFAULT_RECALL_AT,
    coords: object | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    exclude_self: bool = False,
    compat: str = DEFINITIONS,
) -> dict[str, float]:
    """All metrics of DESIGN §4 for a ``(q, g)`` distance matrix (lower = closer).

    Arguments as in :func:`per_query` (``exclude_self=True``: single-domain
    retrieval, each query ranked against the others); ``thresholds`` (metres)
    only name the ``within@{t}m`` shares reported when ``coords`` is given.
    Returns the dict of :func:`summarize`; values other than counts and
    metres lie in [0, 1] (except H-AP with ``compat="authors"``, which can
    exceed 1).
    """
    ts = validate_thresholds(thresholds)
    values = per_query(distances, query_ids, gallery_ids, levels, recall_at, coords, exclude_self,
                       compat=compat)
    return summarize(values, ts)


def evaluate_embeddings(
    query_emb: object,
    gallery_emb: object,
    query_ids: object,
    gallery_ids: object,
    levels: object,
    recall_at: Sequence[int] | int = DEFAULT_RECALL_AT,
    coords: object | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    exclude_self: bool = False,
    compat: str = DEFINITIONS,
) -> dict[str, float]:
    """:func:`evaluate` on cosine distances of embeddings computed in the core."""
    ts = validate_thresholds(thresholds)
    values = per_query_embeddings(
        query_emb, gallery_emb, query_ids, gallery_ids, levels, recall_at, coords, exclude_self, compat=compat
    )
    return summarize(values, ts)


# --------------------------------------------------------------------------- rankings


def ranked_gallery(distances: object, k: int) -> np.ndarray:
    """``(q, k)`` int64 indices of each query's ``k`` nearest gallery items.

    Nearest first, ties by gallery index (the order every metric uses).
    """
    d = _distances(distances)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k: expected an integer, got {k!r}")
    if not 1 <= k <= d.shape[1]:
        raise ValueError(f"k: must be between 1 and the gallery size {d.shape[1]}, got {k}")
    return _core.ranked_gallery(d, int(k)).astype(np.int64)
