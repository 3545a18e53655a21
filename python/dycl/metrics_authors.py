"""The authors'-compatibility metrics (``compat="authors"``, DESIGN §13), in vectorised NumPy.

The DyCL authors' released evaluation differs from the definitions of
DESIGN §4 (which :mod:`dycl.metrics` and the Rust core follow) in two ways,
and this module reproduces both, so that numbers can be compared with the
paper's:

* **H-AP by value.** For a positive at rank ``k`` the release sums
  ``min(rel(k), r) · #{j <= k : rel(j) == r}`` over the relevance value ``r``
  of every level present. When two levels get the same per-item relevance
  (``(v / (L-1)) / n_v``; e.g. 4 buildings at 200 m and 2 at 500 m with 60
  images each), each of their items is counted once per level, and H-AP
  can exceed 1.
* **Top g − 1.** Only the ``g − 1`` nearest gallery items are retrieved, so
  each query's last-ranked item is dropped from every metric: the metrics
  are those of the ranking without it, as if it were not in the gallery
  (relevance counts ``n_v``, ``n_relevant``, the ideal ranking of ASI and NDCG
  included). A gallery of one item would retrieve nothing and is refused.

Everything else is as defined: ranking by ascending distance, ties by gallery
index; ``L = 1`` gives the only level weight 1. Queries are processed in
blocks (memory grows as ``block × g``), and the embedding entry point computes
the cosine distances one block at a time. Not for real evaluation: use the
default ``compat="definitions"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from . import _core

#: The default: the definitions of DESIGN §4, computed by the Rust core.
DEFINITIONS = "definitions"
#: The authors' released evaluation (this module).
AUTHORS = "authors"
#: Accepted values of ``compat``.
COMPAT_MODES: tuple[str, ...] = (DEFINITIONS, AUTHORS)

#: What ``compat="authors"`` changes, in one line (the text of :class:`AuthorsCompatWarning`).
AUTHORS_COMPAT_MESSAGE = (
    "compat='authors' reproduces the authors' released evaluation, not the metric definitions: "
    "H-AP counts relevance by value and can exceed 1 (when two levels get equal per-item relevance), "
    "and each query's last-ranked gallery item is dropped from every metric "
    "(only the top g - 1 are retrieved)"
)

#: Elements of one ``(block, g)`` array of a query block (about 16 MB of float64).
BLOCK_ELEMENTS = 1 << 21


class AuthorsCompatWarning(UserWarning):
    """Emitted whenever metrics are computed with ``compat="authors"``."""


def check_compat(compat: object, warn: bool = True) -> str:
    """``compat`` checked to be one of :data:`COMPAT_MODES`; warns (once per call site) for ``"authors"``."""
    if not isinstance(compat, str) or compat not in COMPAT_MODES:
        raise ValueError(f"compat: expected one of {', '.join(map(repr, COMPAT_MODES))}, got {compat!r}")
    if compat == AUTHORS and warn:
        warnings.warn(AUTHORS_COMPAT_MESSAGE, AuthorsCompatWarning, stacklevel=3)
    return compat


# --------------------------------------------------------------------------- one block of ranked levels


def _cumulative_counts(ranked: np.ndarray, n_levels: int) -> list[np.ndarray]:
    """``counts[v - 1][i, k]``: items of level ``v`` among the first ``k + 1`` of query ``i``."""
    return [np.cumsum(ranked == v, axis=1, dtype=np.int32) for v in range(1, n_levels + 1)]


def _h_ap_by_value(ranked: np.ndarray, counts: list[np.ndarray], n_levels: int,
                   inverse_ranks: np.ndarray, totals: list[np.ndarray]) -> np.ndarray:
    """H-AP counted by relevance value, per query (NaN without positives).

    ``totals[v - 1]``: the items of level ``v`` the per-item relevance divides
    by. The release counts them over the whole set (its relevance table is
    computed before retrieval), the never-retrieved last item included, while
    the normaliser sums the relevance of the retrieved items only.

    Summing ``min(rel(k), r) · #{j <= k : rel(j) == r}`` over the value ``r`` of
    each level present equals ``Σ_w m_w · min(rel(k), r_w) · count_w(k)`` over the
    levels ``w``, with ``m_w`` the number of levels whose value equals ``r_w``:
    one pass per level instead of one per pair of levels.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        # the definition's expression, so that equal values compare equal bit for bit
        values = [np.where(t > 0, (v / (n_levels - 1) if n_levels > 1 else 1.0) / t, 0.0)
                  for v, t in zip(range(1, n_levels + 1), totals, strict=True)]
    table = np.stack([np.zeros_like(values[0]), *values], axis=1)  # (q, L + 1), level 0 -> 0
    rel = np.take_along_axis(table, ranked.astype(np.intp), axis=1)
    total = np.zeros(rel.shape[0])
    term = np.empty(rel.shape)
    for value, count in zip(values, counts, strict=True):
        multiplicity = sum(((other == value) & (other > 0)).astype(np.float64) for other in values)
        np.minimum(rel, value[:, None], out=term)
        term *= count  # zero where rel(k) = 0: only positives contribute
        total += multiplicity * (term @ inverse_ranks)
    rel_sum = rel.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rel_sum > 0, total / rel_sum, np.nan)


def _ideal_starts(totals: list[np.ndarray]) -> list[np.ndarray]:
    """Where level ``v``'s items start in the ideal (level-descending) ranking, per query."""
    starts, above = [np.empty(0)] * len(totals), np.zeros_like(totals[0])
    for v in range(len(totals), 0, -1):
        starts[v - 1] = above
        above = above + totals[v - 1]
    return starts


def _asi(counts: list[np.ndarray], starts: list[np.ndarray], n_positive: np.ndarray,
         inverse_ranks: np.ndarray) -> np.ndarray:
    """ASI per query (NaN without positives)."""
    width = int(n_positive.max(initial=0))  # SI(k) is averaged over k = 1..R only: no column beyond max R
    k = np.arange(1, width + 1, dtype=np.int32)
    overlap = np.zeros((counts[0].shape[0], width), dtype=np.int32)
    ideal = np.empty_like(overlap)
    for c, start in zip(counts, starts, strict=True):
        np.subtract(k[None, :], start[:, None], out=ideal)
        np.maximum(ideal, 0, out=ideal)
        np.minimum(ideal, c[:, -1:], out=ideal)
        np.minimum(ideal, c[:, :width], out=ideal)
        overlap += ideal
    overlap[k[None, :] > n_positive[:, None]] = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_positive > 0, (overlap @ inverse_ranks[:width]) / n_positive, np.nan)


def _ndcg(ranked: np.ndarray, totals: list[np.ndarray], starts: list[np.ndarray]) -> np.ndarray:
    """NDCG per query over the whole (truncated) ranking (NaN without positives)."""
    n = ranked.shape[1]
    discount = 1.0 / np.log2(1.0 + np.arange(1, n + 1))
    gains = 2.0 ** np.arange(int(ranked.max(initial=0)) + 1, dtype=np.float64) - 1.0
    dcg = gains[ranked] @ discount
    prefix = np.concatenate([[0.0], np.cumsum(discount)])
    ideal = np.zeros(ranked.shape[0])
    for v, (total, start) in enumerate(zip(totals, starts, strict=True), start=1):
        ideal += (2.0**v - 1.0) * (prefix[start + total] - prefix[start])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ideal > 0, dcg / ideal, np.nan)


def _scale_values(ranked: np.ndarray, counts: list[np.ndarray], recall_at: tuple[int, ...],
                  inverse_ranks: np.ndarray, out: dict[str, list[np.ndarray]]) -> None:
    """Binary AP, R@K, first relevant rank and relevant count of every scale, appended to ``out``."""
    n_levels = len(counts)
    hits = np.zeros(ranked.shape, dtype=np.int32)
    for s in range(n_levels):
        relevant = ranked >= n_levels - s
        hits += counts[n_levels - s - 1]  # relevant items so far: the levels >= L - s
        n_rel = hits[:, -1].astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ap = ((relevant * hits) @ inverse_ranks) / n_rel
        first = np.where(n_rel > 0, np.argmax(relevant, axis=1) + 1.0, np.nan)
        out.setdefault(f"AP_{s}", []).append(np.where(n_rel > 0, ap, np.nan))
        for k in recall_at:
            hit = np.where(n_rel > 0, (first <= k).astype(np.float64), np.nan)
            out.setdefault(f"R@{k}_{s}", []).append(hit)
        out.setdefault(f"first_rank_{s}", []).append(first)
        out.setdefault(f"n_relevant_{s}", []).append(n_rel)


def _block_values(ranked_all: np.ndarray, n_levels: int, recall_at: tuple[int, ...],
                  out: dict[str, list[np.ndarray]]) -> None:
    """The metrics of one block; ``ranked_all`` is every gallery item's level in ranked order, of which
    only the first g - 1 are retrieved."""
    ranked, last = ranked_all[:, :-1], ranked_all[:, -1]
    counts = _cumulative_counts(ranked, n_levels)
    totals = [c[:, -1] for c in counts]
    whole_set = [t + (last == v) for v, t in zip(range(1, n_levels + 1), totals, strict=True)]
    starts = _ideal_starts(totals)
    n_positive = np.sum(totals, axis=0)
    inverse_ranks = 1.0 / np.arange(1, ranked.shape[1] + 1, dtype=np.float64)
    out.setdefault("H-AP", []).append(_h_ap_by_value(ranked, counts, n_levels, inverse_ranks, whole_set))
    out.setdefault("ASI", []).append(_asi(counts, starts, n_positive, inverse_ranks))
    out.setdefault("NDCG", []).append(_ndcg(ranked, totals, starts))
    _scale_values(ranked, counts, recall_at, inverse_ranks, out)


# --------------------------------------------------------------------------- the whole query set


def _top1_errors(query_ids: np.ndarray, found: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Geodesic metres from each query's building to its top-1 building (0 for the same building)."""
    err = np.zeros(query_ids.shape[0])
    other = found != query_ids
    for building in np.unique(query_ids[other]):
        rows = np.flatnonzero(other & (query_ids == building))
        targets, back = np.unique(found[rows], return_inverse=True)
        here = coords[building : building + 1]
        metres = _core.geodesic_distances(here, np.ascontiguousarray(coords[targets]))
        err[rows] = metres[0][back]
    return err


def per_query_blocks(
    n_queries: int,
    n_gallery: int,
    distance_block: Callable[[int, int], np.ndarray],
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    levels: np.ndarray,
    recall_at: tuple[int, ...],
    coords: np.ndarray | None,
    name: str = "distances",
) -> dict[str, np.ndarray]:
    """Authors'-compatible per-query values (the keys of :func:`dycl.metrics.per_query`).

    ``distance_block(start, stop)`` returns the ``(stop - start, g)`` float64
    distances of those queries; the inputs are already checked (ids in range,
    levels a hierarchy). ``name`` is the argument blamed for NaN/inf values
    and for a gallery of one item.
    """
    if n_gallery < 2:
        raise ValueError(f"{name}: compat='authors' retrieves the top g - 1 gallery items, so it needs "
                         f"at least 2 gallery items, got {n_gallery}")
    n_levels = int(levels.max())
    block = max(1, BLOCK_ELEMENTS // n_gallery)
    parts: dict[str, list[np.ndarray]] = {}
    top1 = []
    for start in range(0, n_queries, block):
        d = distance_block(start, min(start + block, n_queries))
        # The core's ranking (ties by index, NaN/inf refused); the last item is never retrieved but
        # still counts in the relevance table.
        order = _core.ranked_gallery(d, n_gallery).astype(np.intp)
        ranked = levels[query_ids[start : start + d.shape[0], None], gallery_ids[order]]
        _block_values(ranked, n_levels, recall_at, parts)
        top1.append(order[:, 0].astype(np.int64))
    out = {key: np.concatenate(values) for key, values in parts.items()}
    out["top1"] = np.concatenate(top1)
    if coords is not None:
        out["err@1_m"] = _top1_errors(query_ids, gallery_ids[out["top1"]], coords)
    return out


def cosine_blocks(query_emb: np.ndarray, gallery_emb: np.ndarray) -> Callable[[int, int], np.ndarray]:
    """``distance_block`` of :func:`per_query_blocks` for cosine distances of float32 embeddings.

    Rows are L2-normalised and multiplied in float32, as the core does, then widened to float64.
    Embeddings with NaN/inf are refused here, naming the argument.
    """
    for name, emb in (("query_emb", query_emb), ("gallery_emb", gallery_emb)):
        if not np.isfinite(emb).all():
            row = int(np.argwhere(~np.isfinite(emb))[0, 0])
            raise ValueError(f"{name}: contains NaN or inf (first in row {row})")
    qn = query_emb / np.maximum(np.linalg.norm(query_emb, axis=1, keepdims=True), np.float32(1e-12))
    gn = gallery_emb / np.maximum(np.linalg.norm(gallery_emb, axis=1, keepdims=True), np.float32(1e-12))

    def block(start: int, stop: int) -> np.ndarray:
        return (np.float32(1) - qn[start:stop] @ gn.T).astype(np.float64)

    return block


__all__ = [
    "AUTHORS",
    "AUTHORS_COMPAT_MESSAGE",
    "COMPAT_MODES",
    "DEFINITIONS",
    "AuthorsCompatWarning",
    "check_compat",
    "cosine_blocks",
    "per_query_blocks",
]
