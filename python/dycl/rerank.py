"""k-reciprocal re-ranking and MSRerank (DESIGN §5), computed by the Rust core.

* :func:`k_reciprocal` — Zhong et al. (CVPR 2017) with the exact semantics of
  the widely used NumPy implementation (squared distances, per-column max
  normalisation, k-reciprocal sets, 2/3 expansion with ``k1/2`` rounded half
  to even, exp-weighted sparse rows, query expansion over the ``k2`` nearest,
  Jaccard distance, λ mixing), float32. Ranks break ties by index (a stable
  argsort), so duplicate items give deterministic results.
* :func:`k_reciprocal_embeddings` — the same on cosine distances ``1 − a·b``
  of L2-normalised embeddings, without ever building an N×N matrix (memory
  grows as N·k): the entry point for large galleries.
* :func:`msrerank` / :func:`msrerank_embeddings` — multi-scale re-ranking,
  ``variant="paper"`` (Algorithm 1) or ``"reference"`` (the authors' code).
* :func:`msrerank_ks` — Eq. 6, the neighbourhood size of each scale.
* :func:`k_reciprocal_graph` / :func:`msrerank_graph` — with a chosen neighbour
  search (:mod:`dycl.knn`: exact Rust, FAISS, torch, or a precomputed graph) and
  optionally only each query's ``top`` best items, returning a :class:`Reranked`
  that says which search ran and whether it was exact (``*_embeddings`` take
  the same ``knn=`` and return the bare array).

Distance blocks are read in place, float32 or float64 (nothing is copied
unless another dtype forces a conversion); NaN or inf raise ``ValueError``
naming the block. Long calls release the GIL, report progress through an
optional callback and can be interrupted with Ctrl-C.

Semantic notes:

* ``D`` is built like the reference even for asymmetric blocks: row ``i`` is
  column ``i`` of ``[[q_q, q_g], [q_gᵀ, g_g]]²`` divided by its maximum. A
  column whose maximum is 0 (all distances 0) stays 0 where the reference
  would produce NaN.
* ``variant="reference"`` follows DESIGN §5 literally (every level over all
  ``N`` joint columns, ``final = d_l + l`` outside the earlier levels' best).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from . import _core
from . import knn as _knn
from ._progress import StageProgress
from ._validate import embedding_pair, int_at_least, positive_ints, relevance_levels

DEFAULT_KS: tuple[int, ...] = (20, 62, 292)
VARIANTS: tuple[str, ...] = ("paper", "reference")

#: ``progress(stage, done, total)``, called from the calling thread a few times a second.
ProgressCallback = Callable[[str, int, int], object]
Progress = ProgressCallback | bool | None

__all__ = [
    "DEFAULT_KS",
    "VARIANTS",
    "Reranked",
    "check_options",
    "k_reciprocal",
    "k_reciprocal_embeddings",
    "k_reciprocal_graph",
    "msrerank",
    "msrerank_embeddings",
    "msrerank_graph",
    "msrerank_ks",
]


# --------------------------------------------------------------------------- validation


def _lambda(value: object) -> float:
    try:
        lam = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"lambda_value: expected a number in [0, 1], got {value!r}") from None
    if not math.isfinite(lam) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda_value: must be in [0, 1], got {value!r}")
    return lam


def _ks(value: object) -> list[int]:
    ks = list(positive_ints("ks", value))  # type: ignore[arg-type]
    if any(b < a for a, b in zip(ks, ks[1:], strict=False)):
        raise ValueError(f"ks: must be non-decreasing, got {tuple(ks)}")
    return ks


def _variant(value: object) -> str:
    if value not in VARIANTS:
        raise ValueError(f"variant: unknown {value!r}; expected one of {VARIANTS}")
    return str(value)


def check_options(k1: int = 20, k2: int = 6, lambda_value: float = 0.3, ks: Sequence[int] | None = None,
                  variant: str = "paper") -> None:
    """Check re-ranking options before any work (the same checks the entry points apply).

    For callers that collect options first and re-rank later, e.g. after
    embedding a dataset: a bad option then fails in seconds, not after the
    embedding. Raises ``ValueError`` naming the argument.
    """
    int_at_least("k1", k1, 1)
    int_at_least("k2", k2, 1)
    _lambda(lambda_value)
    if ks is not None:
        _ks(ks)
    _variant(variant)


def _available_memory() -> int | None:
    """Bytes this process can still get (the host's, capped by its cgroup's limit): the core's figure."""
    return _core.available_memory()


#: What to do when a distance block cannot even be converted, or when the result is too large.
_USE_EMBEDDINGS = ("use dycl.rerank.k_reciprocal_embeddings / msrerank_embeddings, which never build an "
                   "N×N matrix")
_SPLIT_QUERIES = ("the (q, g) result itself does not fit: re-rank the queries in parts (their results "
                  "are rows of the whole), on a machine with more memory")


def _check_fits(nbytes: int, what: str, hint: str = _USE_EMBEDDINGS) -> None:
    available = _available_memory()
    if available is not None and nbytes > available:
        raise MemoryError(f"{what} needs {nbytes / 1e9:.1f} GB but only {available / 1e9:.1f} GB is "
                          f"available; {hint}")


def _k2(k2: int, n: int) -> int:
    """The query-expansion size: 1..N (it averages over that many items, so more than N is an error)."""
    k2 = int_at_least("k2", k2, 1)
    if k2 > n:
        raise ValueError(f"k2: must be in [1, N] = [1, {n}] (N = q + g items), got {k2}")
    return k2


def _clamped(name: str, k: int, limit: int) -> int:
    """``k`` checked and capped at ``limit - 1``: for ``n`` joint items a neighbourhood holds at most
    ``n - 1`` others (any larger size means "all of them", and must not overflow the core's integers)."""
    return min(int_at_least(name, k, 1), limit - 1)


def _distance_block(name: str, value: object) -> np.ndarray:
    """A 2-D float32/float64 array, the caller's own memory whenever possible."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: cannot be read as an array ({exc})") from None
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got {arr.ndim}-D with shape {arr.shape}")
    if arr.dtype in (np.float32, np.float64):
        return arr  # read in place by the core, whatever its strides; NaN/inf are checked there
    numeric = np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    if not (numeric or arr.dtype == np.bool_):
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    _check_fits(arr.size * 8, f"{name}: converting {arr.shape} {arr.dtype} to float64")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _distance_blocks(q_g_dist: object, q_q_dist: object, g_g_dist: object) -> tuple[np.ndarray, ...]:
    q_g = _distance_block("q_g_dist", q_g_dist)
    q, g = q_g.shape
    if q == 0 or g == 0:
        raise ValueError(f"q_g_dist: is empty, shape {q_g.shape}")
    q_q = _distance_block("q_q_dist", q_q_dist)
    if q_q.shape != (q, q):
        raise ValueError(
            f"q_q_dist: expected shape (q, q) = ({q}, {q}) to match q_g_dist {q_g.shape}, got {q_q.shape}"
        )
    g_g = _distance_block("g_g_dist", g_g_dist)
    if g_g.shape != (g, g):
        raise ValueError(
            f"g_g_dist: expected shape (g, g) = ({g}, {g}) to match q_g_dist {q_g.shape}, got {g_g.shape}"
        )
    _check_fits(q * g * 4, f"the ({q}, {g}) float32 result", _SPLIT_QUERIES)
    return q_g, q_q, g_g


def _embeddings(query_emb: object, gallery_emb: object) -> tuple[np.ndarray, np.ndarray]:
    # NaN/inf are reported by the core ("query_emb"/"gallery_emb") while it copies the embeddings.
    query, gallery = embedding_pair(query_emb, gallery_emb, check_finite=False)
    q, g = query.shape[0], gallery.shape[0]
    _check_fits(q * g * 4, f"the ({q}, {g}) float32 result", _SPLIT_QUERIES)
    return query, gallery


# --------------------------------------------------------------------------- progress


def _call_core(function: Callable[..., np.ndarray], *args: object, progress: Progress) -> np.ndarray:
    if progress is None or progress is False:
        return function(*args, None)
    if progress is True:
        bars = StageProgress()  # one delayed bar (terminal) or line (log) per stage of the core
        try:
            return function(*args, bars)
        finally:
            bars.close()
    if not callable(progress):
        raise ValueError(f"progress: expected None, a bool or callable(stage, done, total), got {progress!r}")
    return function(*args, progress)


# --------------------------------------------------------------------------- public API


def k_reciprocal(
    q_g_dist: object,
    q_q_dist: object,
    g_g_dist: object,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    progress: Progress = None,
) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) from distance blocks.

    Args:
        q_g_dist: ``(q, g)`` query-to-gallery distances.
        q_q_dist: ``(q, q)`` query-to-query distances.
        g_g_dist: ``(g, g)`` gallery-to-gallery distances; float32 or float64
            blocks are read in place (an 18k×18k float32 block is not copied).
        k1: size of the k-reciprocal neighbourhoods (>= 1).
        k2: query expansion over the ``k2`` nearest items (1 disables it).
        lambda_value: weight of the original distance, in [0, 1].
        progress: ``True`` for tqdm bars, or ``callable(stage, done, total)``.

    Returns:
        ``(q, g)`` float32 re-ranked distances (smaller is closer).
    """
    blocks = _distance_blocks(q_g_dist, q_q_dist, g_g_dist)
    n = sum(blocks[0].shape)
    k1, k2 = _clamped("k1", k1, n), _k2(k2, n)
    return _call_core(_core.k_reciprocal, *blocks, k1, k2, _lambda(lambda_value), progress=progress)


def k_reciprocal_embeddings(
    query_emb: object,
    gallery_emb: object,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    progress: Progress = None,
    knn: str | _knn.NeighbourGraph = "exact",
    knn_params: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """k-reciprocal re-ranking on cosine distances ``1 − a·b`` of L2-normalised embeddings.

    Gives the result of :func:`k_reciprocal` fed with those distances, but
    computes them in blocks and keeps only each item's nearest neighbours:
    memory grows as ``N·k``, not ``N²`` (``N = q + g``).

    Args:
        query_emb: ``(q, d)`` query embeddings (converted to float32).
        gallery_emb: ``(g, d)`` gallery embeddings.
        k1, k2, lambda_value, progress: as in :func:`k_reciprocal`.
        knn, knn_params: the neighbour search, as in :func:`k_reciprocal_graph`.

    Returns:
        ``(q, g)`` float32 re-ranked distances.
    """
    if not _is_default(knn, knn_params):
        return k_reciprocal_graph(query_emb, gallery_emb, k1, k2, lambda_value, progress=progress, knn=knn,
                                  knn_params=knn_params).distances
    query, gallery = _embeddings(query_emb, gallery_emb)
    n = query.shape[0] + gallery.shape[0]
    k1, k2 = _clamped("k1", k1, n), _k2(k2, n)
    return _call_core(
        _core.k_reciprocal_embeddings, query, gallery, k1, k2, _lambda(lambda_value), progress=progress
    )


def msrerank(
    q_g_dist: object,
    q_q_dist: object,
    g_g_dist: object,
    ks: Sequence[int] = DEFAULT_KS,
    k2: int = 6,
    lambda_value: float = 0.3,
    variant: str = "paper",
    *,
    progress: Progress = None,
) -> np.ndarray:
    """Multi-scale k-reciprocal re-ranking (MSRerank, DESIGN §5).

    ``variant="paper"`` (Algorithm 1): ``d* = 0``; for each level ``l`` with
    ``k = ks[l]``, ``d*[j] += d_l[j]`` for every gallery item ``j`` not fixed,
    where ``d_l`` is :func:`k_reciprocal` with ``k1 = k``; then the ``k``
    gallery items with the smallest ``d*`` (ties by index) become the fixed
    set. So the best ``ks[l]`` items of level ``l`` stay in front.

    ``variant="reference"``: the authors' released code, see the module notes.

    The neighbour lists are computed once for ``max(ks)`` and shared by all levels.

    Args:
        q_g_dist, q_q_dist, g_g_dist: distance blocks as in :func:`k_reciprocal`.
        ks: non-decreasing neighbourhood sizes, one per scale (see :func:`msrerank_ks`).
        k2, lambda_value, progress: as in :func:`k_reciprocal`.
        variant: ``"paper"`` or ``"reference"``.

    Returns:
        ``(q, g)`` float32 distances.
    """
    blocks = _distance_blocks(q_g_dist, q_q_dist, g_g_dist)
    n = sum(blocks[0].shape)
    ks_list = [min(k, n - 1) for k in _ks(ks)]
    k2 = _k2(k2, n)
    return _call_core(
        _core.msrerank, *blocks, ks_list, k2, _lambda(lambda_value), _variant(variant), progress=progress
    )


def msrerank_embeddings(
    query_emb: object,
    gallery_emb: object,
    ks: Sequence[int] = DEFAULT_KS,
    k2: int = 6,
    lambda_value: float = 0.3,
    variant: str = "paper",
    *,
    progress: Progress = None,
    knn: str | _knn.NeighbourGraph = "exact",
    knn_params: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """:func:`msrerank` on cosine distances of embeddings, with ``N·k`` memory.

    ``knn`` / ``knn_params`` choose the neighbour search, as in :func:`k_reciprocal_graph`.

    Returns:
        ``(q, g)`` float32 distances, those of :func:`msrerank` fed with
        ``1 − a·b`` of the L2-normalised embeddings.
    """
    if not _is_default(knn, knn_params):
        return msrerank_graph(query_emb, gallery_emb, ks, k2, lambda_value, variant, progress=progress,
                              knn=knn, knn_params=knn_params).distances
    query, gallery = _embeddings(query_emb, gallery_emb)
    n = query.shape[0] + gallery.shape[0]
    ks_list = [min(k, n - 1) for k in _ks(ks)]
    k2 = _k2(k2, n)
    return _call_core(
        _core.msrerank_embeddings,
        query,
        gallery,
        ks_list,
        k2,
        _lambda(lambda_value),
        _variant(variant),
        progress=progress,
    )


@dataclass(frozen=True, eq=False)  # arrays: compared by identity, not element-wise
class Reranked:
    """Re-ranked distances and the neighbour search they started from.

    Attributes:
        distances: ``(q, g)`` float32 re-ranked distances; with ``top``, ``(q, top)`` of the best.
        backend: the search (``"exact"``, ``"faiss"``, ``"torch"``, or a precomputed graph's name).
        exact: whether its neighbour lists were exact (up to float rounding).
        params: the search's parameters (FAISS index, nlist, device…).
        indices: with ``top``: ``(q, top)`` int64 gallery indices of ``distances``, ranked (ties by
            index, as a stable argsort of the full answer); None otherwise.
    """

    distances: np.ndarray
    backend: str
    exact: bool
    params: dict[str, Any] = field(default_factory=dict)
    indices: np.ndarray | None = None


def _is_default(knn: object, knn_params: Mapping[str, Any] | None) -> bool:
    return isinstance(knn, str) and knn == "exact" and not knn_params


def _graph_answer(functions: tuple[Callable[..., Any], Callable[..., Any]], query: np.ndarray,
                  gallery: np.ndarray, width: int, search: tuple, *options: object, top: object) -> Reranked:
    """The core's given-neighbours call (``functions = (full answer, top answer)``) on the graph of
    ``search = (knn, knn_params, progress)``; ``top`` is checked before any search."""
    kept = None if top is None else int_at_least("top", top, 1)
    knn, knn_params, progress = search
    graph = _knn.graph_for(query, gallery, width, knn, knn_params, progress if callable(progress) else None)
    args = (query, gallery, graph.index, graph.distance, graph.max_distance, *options)
    if kept is None:
        distances = _call_core(functions[0], *args, progress=progress)
        return Reranked(distances, graph.backend, graph.exact, graph.params)
    index, distances = _call_core(functions[1], *args, kept, progress=progress)
    return Reranked(distances, graph.backend, graph.exact, graph.params, indices=index)


def k_reciprocal_graph(
    query_emb: object,
    gallery_emb: object,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    progress: Progress = None,
    knn: str | _knn.NeighbourGraph = "exact",
    knn_params: Mapping[str, Any] | None = None,
    top: int | None = None,
) -> Reranked:
    """:func:`k_reciprocal_embeddings` with a chosen neighbour search, and what that search was.

    Args:
        query_emb, gallery_emb, k1, k2, lambda_value, progress: as in :func:`k_reciprocal_embeddings`.
        knn: a backend or preset of :mod:`dycl.knn` (``"exact"``, ``"faiss"``, ``"faiss-ivf"``,
            ``"faiss-hnsw"``, ``"torch"``, ``"torch-cpu"``), or a precomputed
            :class:`~dycl.knn.NeighbourGraph` of the joint set (queries then gallery) with at least
            ``min(max(k1 + 1, k2), N)`` neighbours per item.
        knn_params: options of the search (e.g. ``{"nprobe": 64}``), over the preset's.
        top: keep only each query's best ``top`` gallery items (``Reranked.indices``): memory
            ``q × top`` instead of the ``q × g`` answer (4 GB at 1,000 × 10⁶).

    Returns:
        A :class:`Reranked`. With ``knn="exact"`` its distances equal :func:`k_reciprocal_embeddings`'s.
    """
    query, gallery = _embeddings(query_emb, gallery_emb)
    n = query.shape[0] + gallery.shape[0]
    k1, k2, lam = _clamped("k1", k1, n), _k2(k2, n), _lambda(lambda_value)
    if top is None and _is_default(knn, knn_params):  # the core's own lists: one call, the historical path
        distances = _call_core(_core.k_reciprocal_embeddings, query, gallery, k1, k2, lam, progress=progress)
        return Reranked(distances, "exact", True, {})
    functions = (_core.k_reciprocal_neighbours, _core.k_reciprocal_neighbours_top)
    return _graph_answer(functions, query, gallery, min(max(k1 + 1, k2), n), (knn, knn_params, progress),
                         k1, k2, lam, top=top)


def msrerank_graph(
    query_emb: object,
    gallery_emb: object,
    ks: Sequence[int] = DEFAULT_KS,
    k2: int = 6,
    lambda_value: float = 0.3,
    variant: str = "paper",
    *,
    progress: Progress = None,
    knn: str | _knn.NeighbourGraph = "exact",
    knn_params: Mapping[str, Any] | None = None,
    top: int | None = None,
) -> Reranked:
    """:func:`msrerank_embeddings` with ``knn`` and ``top`` as in :func:`k_reciprocal_graph`; a
    precomputed graph needs ``min(max(max(ks) + 1, k2), N)`` neighbours per item."""
    query, gallery = _embeddings(query_emb, gallery_emb)
    n = query.shape[0] + gallery.shape[0]
    ks_list = [min(k, n - 1) for k in _ks(ks)]
    k2, lam, var = _k2(k2, n), _lambda(lambda_value), _variant(variant)
    if top is None and _is_default(knn, knn_params):
        distances = _call_core(_core.msrerank_embeddings, query, gallery, ks_list, k2, lam, var,
                               progress=progress)
        return Reranked(distances, "exact", True, {})
    functions = (_core.msrerank_neighbours, _core.msrerank_neighbours_top)
    return _graph_answer(functions, query, gallery, min(max(max(ks_list) + 1, k2), n),
                         (knn, knn_params, progress), ks_list, k2, lam, var, top=top)


def msrerank_ks(
    levels: object, images_per_building: int | Sequence[int] | np.ndarray, mu: float = 0.1, min_k: int = 20
) -> tuple[int, ...]:
    """Neighbourhood size of each scale, Eq. 6 of the paper.

    ``k^l = max(min_k, μ / C · Σ_c |S_c^{≤l}|)`` where ``|S_c^{≤l}|`` counts
    the gallery images whose building is within scale ``l`` of building ``c``
    (relevance level ``>= L − l``, its own building included), over the ``C``
    buildings; rounded to the nearest integer with halves rounded up.

    Args:
        levels: ``(C, C)`` relevance levels between the gallery's buildings
            (:func:`dycl.geo.level_matrix`); the diagonal holds ``L``.
        images_per_building: gallery images per building, one int for all or
            one per building.
        mu: the fraction μ (> 0).
        min_k: the lower bound (>= 1).

    Returns:
        ``(k^0, …, k^{L−1})``, non-decreasing. On DA-Campus's drone gallery
        (60 views per building) this is about ``(20, 62, 292)``.
    """
    lv = relevance_levels("levels", levels)
    n_buildings = lv.shape[0]
    top = int(lv[0, 0])
    if isinstance(images_per_building, (int, np.integer)) and not isinstance(images_per_building, bool):
        if images_per_building < 0:
            raise ValueError(f"images_per_building: must be >= 0, got {images_per_building}")
        counts = np.full(n_buildings, int(images_per_building), dtype=object)  # any size: exact sums below
    else:
        counts = np.asarray(images_per_building)
        if counts.shape != (n_buildings,):
            raise ValueError(
                f"images_per_building: expected an int or {n_buildings} counts (one per building), "
                f"got shape {counts.shape}"
            )
        if counts.size and not np.issubdtype(counts.dtype, np.integer):
            raise ValueError(f"images_per_building: expected integer counts, got dtype {counts.dtype}")
        if counts.size and counts.min() < 0:
            raise ValueError("images_per_building: counts must be >= 0")
        counts = counts.astype(object)
    try:
        mu = float(mu)
    except (TypeError, ValueError):
        raise ValueError(f"mu: expected a positive number, got {mu!r}") from None
    if not math.isfinite(mu) or mu <= 0:
        raise ValueError(f"mu: must be a positive finite number, got {mu}")
    min_k = int_at_least("min_k", min_k, 1)
    ks = []
    # int64 products are exact while counts × buildings² stay below 2**63; beyond, Python integers.
    small = not counts.size or max(counts) * n_buildings * n_buildings < 2**62
    exact_counts = counts.astype(np.int64) if small else counts
    for scale in range(top):
        within = (lv >= top - scale).astype(np.int64 if small else object)
        total = int((within @ exact_counts).sum())
        if total < 2**53:  # as always: float arithmetic, halves rounded up
            ks.append(max(min_k, math.floor(mu / n_buildings * total + 0.5)))
        else:  # beyond float's integers: exact rational arithmetic, same rounding
            ks.append(max(min_k, math.floor(Fraction(mu) * total / n_buildings + Fraction(1, 2))))
    return tuple(ks)
