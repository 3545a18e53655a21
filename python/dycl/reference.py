"""Slow, readable NumPy versions of the metrics and the re-ranking.

These follow DESIGN.md §4 (metrics) and §5 (re-ranking) line by line, with
loops where loops make the definition obvious. They are the yardstick the
Rust core is tested against and the NumPy baseline of the Python
benchmarks; do not use them for real evaluation. ``compat="authors"`` gives
the twin of :mod:`dycl.metrics_authors` (the authors' released evaluation:
H-AP by value, each query's last-ranked gallery item dropped).
"""

from __future__ import annotations

import numpy as np

# =========================================================================== metrics (DESIGN §4)
# One query at a time; ``lv`` is the array of gallery levels in ranked order.


def ranked_levels(distance_row: np.ndarray, gallery_levels: np.ndarray) -> np.ndarray:
    """Levels of the gallery sorted by ascending distance, ties by gallery index."""
    return gallery_levels[np.argsort(distance_row, kind="stable")]


def h_ap(lv: np.ndarray, n_levels: int) -> float:
    """Per-item H-AP: ``rel = (v / (L-1)) / n_v``; with ``L = 1`` the weight is 1 (H-AP = AP)."""
    rel = np.zeros(len(lv))
    for v in range(1, n_levels + 1):
        n_v = np.count_nonzero(lv == v)
        if n_v:
            weight = v / (n_levels - 1) if n_levels > 1 else 1.0
            rel[lv == v] = weight / n_v
    if rel.sum() == 0:
        return float("nan")
    total = 0.0
    for k in np.flatnonzero(rel > 0):  # k is 0-based, the rank is k + 1
        h_rank = rel[k] + np.minimum(rel[k], rel[:k]).sum()
        total += h_rank / (k + 1)
    return float(total / rel.sum())


def h_ap_value_matching(lv: np.ndarray, n_levels: int, counted: np.ndarray | None = None) -> float:
    """H-AP counted as the authors' release does: by matching relevance *values*.

    For a positive at rank k, H-rank sums ``min(rel(k), r) · #{j <= k: rel(j) == r}``
    over the relevance value ``r`` of every level present. When two levels
    share a value, their items are counted once per level: double counting.
    With ``L = 1`` the only level gets weight 1, as in :func:`h_ap`.
    ``counted``: the levels the per-item relevance ``weight / n_v`` counts
    ``n_v`` over (default ``lv``; the release counts the whole gallery, also
    the item it never retrieves).
    """
    counted = lv if counted is None else counted
    rel = np.zeros(len(lv))
    values = []
    for v in range(1, n_levels + 1):
        n_v = np.count_nonzero(counted == v)
        if n_v:
            weight = v / (n_levels - 1) if n_levels > 1 else 1.0
            rel[lv == v] = weight / n_v
            values.append(weight / n_v)
    if rel.sum() == 0:
        return float("nan")
    total = 0.0
    for k in np.flatnonzero(rel > 0):
        h_rank = sum(min(rel[k], r) * np.count_nonzero(rel[: k + 1] == r) for r in values)
        total += h_rank / (k + 1)
    return float(total / rel.sum())


def asi(lv: np.ndarray, n_levels: int) -> float:
    """ASI: mean over ``k = 1..R`` of ``Σ_v min(#{rank<=k, level v}, #{ideal rank<=k, level v}) / k``."""
    n_positive = int(np.count_nonzero(lv > 0))
    if n_positive == 0:
        return float("nan")
    ideal = np.sort(lv)[::-1]
    si = []
    for k in range(1, n_positive + 1):
        overlap = sum(
            min(np.count_nonzero(lv[:k] == v), np.count_nonzero(ideal[:k] == v))
            for v in range(1, n_levels + 1)
        )
        si.append(overlap / k)
    return float(np.mean(si))


def ndcg(lv: np.ndarray) -> float:
    """NDCG over the whole ranking, gains ``2^level - 1``, discount ``1/log2(1+k)``."""
    if not (lv > 0).any():
        return float("nan")
    discount = 1.0 / np.log2(1.0 + np.arange(1, len(lv) + 1))
    dcg = np.sum((2.0 ** lv.astype(np.float64) - 1.0) * discount)
    ideal = np.sum((2.0 ** np.sort(lv)[::-1].astype(np.float64) - 1.0) * discount)
    return float(dcg / ideal)


def average_precision(relevant: np.ndarray) -> float:
    """Binary AP over the whole ranking; NaN without relevant items."""
    ranks = np.flatnonzero(relevant) + 1
    if ranks.size == 0:
        return float("nan")
    return float(np.mean(np.arange(1, ranks.size + 1) / ranks))


def recall_at_k(relevant: np.ndarray, k: int) -> float:
    """1.0 if a relevant item is in the top ``k``, NaN without relevant items."""
    if not relevant.any():
        return float("nan")
    return float(relevant[:k].any())


def metrics_per_query(
    distances: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    levels: np.ndarray,
    recall_at: tuple[int, ...] = (1, 5, 10),
    coords: np.ndarray | None = None,
    compat: str = "definitions",
) -> dict[str, np.ndarray]:
    """Per-query values with the keys of :func:`dycl.metrics.per_query`.

    ``compat="authors"``: the ranking stops before its last item (the release
    retrieves the top g - 1) and H-AP is :func:`h_ap_value_matching`; a
    one-item gallery, with nothing left to retrieve, is refused.
    """
    levels = np.asarray(levels)
    authors = compat == "authors"
    if authors and distances.shape[1] < 2:
        raise ValueError("distances: compat='authors' needs at least 2 gallery items")
    n_levels = int(levels.max())
    rows: dict[str, list[float]] = {}

    def put(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    for i in range(distances.shape[0]):
        order = np.argsort(distances[i], kind="stable")
        whole = levels[query_ids[i], gallery_ids[order]]
        lv = whole[:-1] if authors else whole
        put("H-AP", h_ap_value_matching(lv, n_levels, whole) if authors else h_ap(lv, n_levels))
        put("ASI", asi(lv, n_levels))
        put("NDCG", ndcg(lv))
        for s in range(n_levels):
            relevant = lv >= n_levels - s
            put(f"AP_{s}", average_precision(relevant))
            for k in recall_at:
                put(f"R@{k}_{s}", recall_at_k(relevant, k))
            put(f"first_rank_{s}", float(np.argmax(relevant) + 1) if relevant.any() else float("nan"))
            put(f"n_relevant_{s}", int(relevant.sum()))
        put("top1", int(order[0]))
        if coords is not None:
            put("err@1_m", _top1_error(coords, int(query_ids[i]), int(gallery_ids[order[0]])))
    return {key: np.asarray(v) for key, v in rows.items()}


def _top1_error(coords: np.ndarray, building: int, found: int) -> float:
    if building == found:
        return 0.0
    from geographiclib.geodesic import Geodesic  # dev dependency; the yardstick is GeographicLib itself

    a, b = coords[building], coords[found]
    return float(Geodesic.WGS84.Inverse(a[0], a[1], b[0], b[1])["s12"])


def evaluate_metrics(
    distances: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    levels: np.ndarray,
    recall_at: tuple[int, ...] = (1, 5, 10),
    coords: np.ndarray | None = None,
    thresholds: tuple[float, ...] = (200.0, 500.0),
    compat: str = "definitions",
) -> dict[str, float]:
    """All metrics with the keys of :func:`dycl.metrics.evaluate`, query by query."""
    v = metrics_per_query(distances, query_ids, gallery_ids, levels, recall_at, coords, compat)
    n_levels = int(np.asarray(levels).max())
    n_queries = distances.shape[0]

    def mean_defined(x: np.ndarray) -> float:
        kept = [e for e in x if not np.isnan(e)]
        return float(np.mean(kept)) if kept else float("nan")

    out: dict[str, float] = {name: mean_defined(v[name]) for name in ("H-AP", "ASI", "NDCG")}
    for s in range(n_levels):
        out[f"mAP_{s}"] = mean_defined(v[f"AP_{s}"])
        for k in recall_at:
            out[f"R@{k}_{s}"] = mean_defined(v[f"R@{k}_{s}"])
        scored = sum(1 for e in v[f"AP_{s}"] if not np.isnan(e))
        out[f"n_queries_{s}"] = scored
        out[f"n_left_out_{s}"] = n_queries - scored
    out["mAP_overall"] = float(np.mean([out[f"mAP_{s}"] for s in range(n_levels)]))
    out["R@1_overall"] = float(
        np.mean([mean_defined(np.asarray([recall_at_k_from(f, 1) for f in v[f"first_rank_{s}"]]))
                 for s in range(n_levels)])
    )
    out["n_queries"] = n_queries
    if coords is not None:
        err = v["err@1_m"]
        out["err@1_mean_m"] = float(np.mean(err))
        out["err@1_median_m"] = float(np.median(err))
        for t in thresholds:
            out[f"within@{t:g}m"] = float(np.mean(err <= t))
    return out


def recall_at_k_from(first_rank: float, k: int) -> float:
    """Recall@k of one query from the rank of its first relevant item (NaN: none)."""
    return float("nan") if np.isnan(first_rank) else float(first_rank <= k)



# =========================================================================== re-ranking (DESIGN §5)


def _stable_rank(dist: np.ndarray) -> np.ndarray:
    """Column indices of each row sorted by value, ties by index (a stable sort)."""
    return np.argsort(dist, axis=1, kind="stable")


def _joint_distance(q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray) -> np.ndarray:
    """The N×N matrix D of DESIGN §5 step 1.

    ``A = [[q_q, q_g], [q_gᵀ, g_g]]`` is squared in the input precision, cast
    to float32, each column is divided by its maximum and the result is
    transposed, so row ``i`` of ``D`` is column ``i`` of ``A²`` scaled. A
    column whose maximum is 0 stays 0 (the widely used code would produce NaN).
    """
    a = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0
    )
    a = np.power(a, 2).astype(np.float32)
    col_max = a.max(axis=0)
    safe = np.where(col_max > 0, col_max, np.float32(1))
    return np.transpose(a / safe)


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): the items j among the first k+1 of i such that i is among the first k+1 of j."""
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[np.any(backward == i, axis=1)].astype(np.int64)


def _sparse_weights(dist: np.ndarray, rank: np.ndarray, k1: int) -> np.ndarray:
    """Dense V of DESIGN §5 steps 2-4 (expanded k-reciprocal sets, exp-weighted)."""
    n = dist.shape[0]
    half = int(np.around(k1 / 2.0))  # NumPy rounds half to even: 20 -> 10, 5 -> 2, 7 -> 4
    weights = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        recip = _reciprocal(rank, i, k1)
        expanded = list(recip)
        for c in recip:
            cand = _reciprocal(rank, int(c), half)
            # compared with the original R(i, k1), not with the growing set
            if len(np.intersect1d(cand, recip)) > 2.0 / 3 * len(cand):
                expanded.extend(cand)
        members = np.unique(np.array(expanded, dtype=np.int64))
        w = np.exp(-dist[i, members])
        weights[i, members] = w / np.sum(w, dtype=np.float64).astype(np.float32)
    return weights


def k_reciprocal_all_columns(
    q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranked distances of the queries to all N joint items, ``(q, q + g)`` float32."""
    q = q_g_dist.shape[0]
    return _k_reciprocal_rows(_joint_distance(q_g_dist, q_q_dist, g_g_dist), q, k1, k2, lambda_value)


def _k_reciprocal_rows(dist: np.ndarray, q: int, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    """Rows ``0..q`` of the k-reciprocal re-ranked distances over the joint matrix ``D``, ``(q, N)``."""
    n = dist.shape[0]
    rank = _stable_rank(dist)
    weights = _sparse_weights(dist, rank, k1)
    if k2 != 1:
        weights = np.stack([weights[rank[i, :k2]].mean(axis=0) for i in range(n)]).astype(np.float32)
    # Jaccard through an inverted index: S[i, j] = sum over shared columns c of min(V[i, c], V[j, c]),
    # accumulated over c in ascending order.
    holders = [np.flatnonzero(weights[:, c]) for c in range(n)]
    jaccard = np.empty((q, n), dtype=np.float32)
    for i in range(q):
        shared = np.zeros(n, dtype=np.float32)
        for c in np.flatnonzero(weights[i]):
            rows = holders[c]
            shared[rows] = shared[rows] + np.minimum(weights[i, c], weights[rows, c])
        jaccard[i] = np.float32(1) - shared / (np.float32(2) - shared)
    lam = np.float32(lambda_value)
    return jaccard * np.float32(1 - lambda_value) + dist[:q] * lam


def k_reciprocal(
    q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, k1: int = 20, k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking (DESIGN §5), ``(q, g)`` float32."""
    q = q_g_dist.shape[0]
    return k_reciprocal_all_columns(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)[:, q:]


def _smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` smallest values, ties by index."""
    return np.argsort(values, kind="stable")[:count]


def msrerank(
    q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray, ks: tuple[int, ...] = (20, 62, 292),
    k2: int = 6, lambda_value: float = 0.3, variant: str = "paper",
) -> np.ndarray:
    """MSRerank (DESIGN §5): ``variant="paper"`` is Algorithm 1, ``"reference"`` the authors' code."""
    q = q_g_dist.shape[0]
    levels = [k_reciprocal_all_columns(q_g_dist, q_q_dist, g_g_dist, k, k2, lambda_value) for k in ks]
    return _combine_levels(levels, ks, q, variant)


def _combine_levels(
    levels: list[np.ndarray], ks: tuple[int, ...], gallery_col0: int, variant: str
) -> np.ndarray:
    """MSRerank's combination of the per-level ``(q, N)`` distances; the gallery is the joint
    columns ``gallery_col0..N`` (``q`` for two sets, 0 for a single set)."""
    q, n = levels[0].shape
    g = n - gallery_col0
    if variant == "paper":
        out = np.zeros((q, g), dtype=np.float32)
        for i in range(q):
            fixed = np.zeros(g, dtype=bool)
            for k, d in zip(ks, levels, strict=True):
                free = ~fixed
                out[i, free] = out[i, free] + d[i, gallery_col0:][free]
                fixed = np.zeros(g, dtype=bool)
                fixed[_smallest(out[i], k)] = True
        return out
    if variant == "reference":
        final = levels[0].copy()
        for i in range(q):
            protected = np.zeros(n, dtype=bool)
            protected[_smallest(final[i], ks[0] + 1)] = True
            for level in range(1, len(ks)):
                free = ~protected
                final[i, free] = levels[level][i, free] + np.float32(level)
                protected[_smallest(final[i], ks[level] + 1)] = True
        return final[:, gallery_col0:]
    raise ValueError(f"variant: unknown {variant!r}")


# --------------------------------------------------------------------------- single-set retrieval
# The query set is the gallery: metrics rank each query against the others (its own
# column left out); re-ranking works on the N items once, not on [X; X].


def metrics_per_query_single(
    distances: np.ndarray, ids: np.ndarray, levels: np.ndarray, recall_at: tuple[int, ...] = (1, 5, 10)
) -> dict[str, np.ndarray]:
    """:func:`metrics_per_query` of every item against the others: query ``i`` on the
    gallery without item ``i``, its ``top1`` mapped back to an index of all ``N`` items."""
    n = distances.shape[0]
    rows: dict[str, list[float]] = {}
    for i in range(n):
        others = np.delete(np.arange(n), i)
        one = metrics_per_query(distances[i : i + 1, others], ids[i : i + 1], ids[others], levels, recall_at)
        one["top1"] = others[one["top1"]]
        for key, value in one.items():
            rows.setdefault(key, []).append(value[0])
    return {key: np.asarray(v) for key, v in rows.items()}


def _single_distance(dist: np.ndarray) -> np.ndarray:
    """``D`` of a single set: :func:`_joint_distance` with ``A`` the ``(N, N)`` matrix itself."""
    a = np.power(dist, 2).astype(np.float32)
    col_max = a.max(axis=0)
    safe = np.where(col_max > 0, col_max, np.float32(1))
    return np.transpose(a / safe)


def k_reciprocal_single(dist: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranking of ``N`` items among themselves, ``(N, N)`` float32."""
    return _k_reciprocal_rows(_single_distance(dist), dist.shape[0], k1, k2, lambda_value)


def msrerank_single(
    dist: np.ndarray, ks: tuple[int, ...] = (20, 62, 292), k2: int = 6, lambda_value: float = 0.3,
    variant: str = "paper",
) -> np.ndarray:
    """MSRerank of ``N`` items among themselves, ``(N, N)`` float32 (every row a query, every column
    a gallery item)."""
    joint = _single_distance(dist)
    levels = [_k_reciprocal_rows(joint, dist.shape[0], k, k2, lambda_value) for k in ks]
    return _combine_levels(levels, ks, 0, variant)
