"""Slow, readable NumPy versions of the metrics and the re-ranking.

These follow DESIGN.md §4 (metrics) and §5 (re-ranking) line by line, with
loops where loops make the definition obvious. They are the yardstick the
Rust core is tested against and the NumPy baseline of the Python
benchmarks; do not use them for real evaluation.
"""

from __future__ import annotations

import numpy as np

# =========================================================================== metrics (DESIGN §4)


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
    dist = _joint_distance(q_g_dist, q_q_dist, g_g_dist)
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
    q, g = q_g_dist.shape
    levels = [k_reciprocal_all_columns(q_g_dist, q_q_dist, g_g_dist, k, k2, lambda_value) for k in ks]
    if variant == "paper":
        out = np.zeros((q, g), dtype=np.float32)
        for i in range(q):
            fixed = np.zeros(g, dtype=bool)
            for k, d in zip(ks, levels, strict=True):
                free = ~fixed
                out[i, free] = out[i, free] + d[i, q:][free]
                fixed = np.zeros(g, dtype=bool)
                fixed[_smallest(out[i], k)] = True
        return out
    if variant == "reference":
        final = levels[0].copy()
        for i in range(q):
            protected = np.zeros(q + g, dtype=bool)
            protected[_smallest(final[i], ks[0] + 1)] = True
            for level in range(1, len(ks)):
                free = ~protected
                final[i, free] = levels[level][i, free] + np.float32(level)
                protected[_smallest(final[i], ks[level] + 1)] = True
        return final[:, q:]
    raise ValueError(f"variant: unknown {variant!r}")
