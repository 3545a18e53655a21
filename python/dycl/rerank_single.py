"""Single-set re-ranking: the query set is the gallery (single-domain retrieval, e.g. DyML).

The functions of :mod:`dycl.rerank` take a query set and a gallery; feeding
them the same ``N`` items twice would build a joint set ``[X; X]`` in which
every item has a distance-0 twin that crowds its neighbourhoods. Here the
joint set is the ``N`` items once (DESIGN §5 with ``A`` the ``(N, N)``
distance matrix, every item a query and a gallery item), and the answer is
``(N, N)`` including each item's distance to itself; evaluate it with
``dycl.metrics.evaluate(..., exclude_self=True)``, which leaves the diagonal
out of every ranking.

Example::

    ids, levels = dycl.levels.from_hierarchy(fine, middle, coarse)
    reranked = msrerank_single_embeddings(emb, ks=(20, 40, 80))
    dycl.metrics.evaluate(reranked, ids, ids, levels, exclude_self=True)

``variant="paper"`` fixes, at each level, the ``k`` best columns of the row
among all ``N`` (the item itself, nearest to itself, is one of them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _core
from ._validate import float_matrix
from .rerank import (
    _SPLIT_QUERIES,
    DEFAULT_KS,
    Progress,
    _call_core,
    _check_fits,
    _clamped,
    _distance_block,
    _k2,
    _ks,
    _lambda,
    _variant,
)

__all__ = [
    "k_reciprocal_single",
    "k_reciprocal_single_embeddings",
    "msrerank_single",
    "msrerank_single_embeddings",
]


def _square(dist: object) -> np.ndarray:
    d = _distance_block("dist", dist)
    n, m = d.shape
    if n != m:
        raise ValueError(f"dist: expected a square (N, N) matrix of the items to each other, got {d.shape}")
    if n < 2:
        raise ValueError(f"dist: needs at least 2 items (each is re-ranked against the others), got {n}")
    _check_fits(n * n * 4, f"the ({n}, {n}) float32 result", _SPLIT_QUERIES)
    return d


def _items(embeddings: object) -> np.ndarray:
    # NaN/inf are reported by the core ("embeddings") in the pass that copies them.
    e = float_matrix("embeddings", embeddings, dtype=np.float32, check_finite=False)
    n, width = e.shape
    if n < 2:
        raise ValueError(f"embeddings: needs at least 2 items (each is re-ranked against the others), "
                         f"got {n}")
    if width == 0:
        raise ValueError("embeddings: has zero columns")
    _check_fits(n * n * 4, f"the ({n}, {n}) float32 result", _SPLIT_QUERIES)
    return e


def k_reciprocal_single(
    dist: object, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, *, progress: Progress = None
) -> np.ndarray:
    """k-reciprocal re-ranking of ``N`` items among themselves.

    Args:
        dist: ``(N, N)`` distances of the items to each other, float32 or
            float64 read in place (row ``i`` is what item ``i`` sees).
        k1, k2, lambda_value, progress: as in :func:`dycl.rerank.k_reciprocal`.

    Returns:
        ``(N, N)`` float32 re-ranked distances, the diagonal included.
    """
    d = _square(dist)
    n = d.shape[0]
    k1, k2 = _clamped("k1", k1, n), _k2(k2, n)
    return _call_core(_core.k_reciprocal_single, d, k1, k2, _lambda(lambda_value), progress=progress)


def k_reciprocal_single_embeddings(
    embeddings: object, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, *, progress: Progress = None
) -> np.ndarray:
    """:func:`k_reciprocal_single` on cosine distances ``1 − a·b`` of the L2-normalised
    ``(N, d)`` embeddings, computed in blocks (memory ``N·k`` besides the answer)."""
    e = _items(embeddings)
    n = e.shape[0]
    k1, k2 = _clamped("k1", k1, n), _k2(k2, n)
    return _call_core(
        _core.k_reciprocal_single_embeddings, e, k1, k2, _lambda(lambda_value), progress=progress
    )


def msrerank_single(
    dist: object,
    ks: Sequence[int] = DEFAULT_KS,
    k2: int = 6,
    lambda_value: float = 0.3,
    variant: str = "paper",
    *,
    progress: Progress = None,
) -> np.ndarray:
    """MSRerank (DESIGN §5) of ``N`` items among themselves.

    Args:
        dist: ``(N, N)`` distances, as in :func:`k_reciprocal_single`.
        ks, k2, lambda_value, variant, progress: as in :func:`dycl.rerank.msrerank`.

    Returns:
        ``(N, N)`` float32 distances, the diagonal included.
    """
    d = _square(dist)
    n = d.shape[0]
    ks_list = [min(k, n - 1) for k in _ks(ks)]
    lam, var = _lambda(lambda_value), _variant(variant)
    return _call_core(_core.msrerank_single, d, ks_list, _k2(k2, n), lam, var, progress=progress)


def msrerank_single_embeddings(
    embeddings: object,
    ks: Sequence[int] = DEFAULT_KS,
    k2: int = 6,
    lambda_value: float = 0.3,
    variant: str = "paper",
    *,
    progress: Progress = None,
) -> np.ndarray:
    """:func:`msrerank_single` on cosine distances of ``(N, d)`` embeddings; ``(N, N)`` float32."""
    e = _items(embeddings)
    n = e.shape[0]
    ks_list = [min(k, n - 1) for k in _ks(ks)]
    return _call_core(
        _core.msrerank_single_embeddings,
        e,
        ks_list,
        _k2(k2, n),
        _lambda(lambda_value),
        _variant(variant),
        progress=progress,
    )
