"""Neighbour search for re-ranking: the first stage of :mod:`dycl.rerank`, made pluggable.

k-reciprocal re-ranking and MSRerank start from each item's nearest
neighbours in the joint set (queries, then gallery; ``N`` items). This module
finds them with one of three backends and returns a :class:`NeighbourGraph`
that :func:`dycl.rerank.k_reciprocal_embeddings` / ``msrerank_embeddings``
accept as ``knn=``:

* ``"exact"`` — the Rust core (blocked GEMM + exact top-k, ties by index);
  the lists the re-ranking would compute itself, so results are identical.
* ``"faiss"`` — `FAISS <https://github.com/facebookresearch/faiss>`_
  (``pip install dycl[faiss]``) on inner products of the L2-normalised
  embeddings: ``index="flat"`` is exact (up to float rounding), ``"ivf"``
  (``nlist``, ``nprobe``), ``"ivf-sq8"`` (IVF on 8-bit codes, the
  ``k_factor``·k best re-scored exactly: the fast one at 10^6 items) and
  ``"hnsw"`` (``M``, ``ef_search``, ``ef_construction``) are approximate. ``device="cuda"`` uses faiss-gpu.
* ``"torch"`` — blocked top-k with PyTorch (``device="cuda"`` by default,
  ``device="cpu"`` also works), exact up to float rounding, never N×N.

Every graph also holds each item's largest cosine distance to any item (the
divisor of DESIGN §5's ``D``): exact for ``exact``, ``torch`` and FAISS
``flat``; for ``ivf``/``hnsw`` it comes from an approximate search for the
farthest item (with the negated vectors), and ``params["max_distance"]``
says ``"approximate"``. The core raises it to at least the largest listed
distance, and re-sorts each list by (distance, index).

A list need not contain the item itself (an approximate search may miss it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core
from ._validate import embedding_pair, int_at_least

BACKENDS: tuple[str, ...] = ("exact", "faiss", "torch")
FAISS_INDEXES: tuple[str, ...] = ("flat", "ivf", "ivf-sq8", "hnsw")
DEVICES: tuple[str, ...] = ("cpu", "cuda")

#: Named searches (``dycl-eval --knn``, ``RerankConfig.knn``): ``(backend, params)``.
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "exact": ("exact", {}),
    "faiss": ("faiss", {"index": "flat"}),
    "faiss-ivf": ("faiss", {"index": "ivf"}),
    "faiss-ivf-sq8": ("faiss", {"index": "ivf-sq8"}),
    "faiss-hnsw": ("faiss", {"index": "hnsw"}),
    "torch": ("torch", {"device": "cuda"}),
    "torch-cpu": ("torch", {"device": "cpu"}),
}
PRESETS: tuple[str, ...] = tuple(_PRESETS)

#: ``progress(stage, done, total)`` as in :mod:`dycl.rerank`.
ProgressCallback = Callable[[str, int, int], object]

#: Rows searched per FAISS call (bounds the result buffers, lets progress move).
_SEARCH_ROWS = 65536
#: Bytes of one torch similarity block (rows × N float32).
_TORCH_BLOCK_BYTES = 1 << 28

__all__ = ["BACKENDS", "FAISS_INDEXES", "PRESETS", "JointRows", "NeighbourGraph", "check_search", "graph_for",
           "neighbours", "preset"]


def preset(name: str, overrides: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``(backend, params)`` of a named search of :data:`PRESETS`, ``overrides`` applied over its params.

    ``"faiss-ivf"`` is ``("faiss", {"index": "ivf"})``; ``preset("faiss-ivf", {"nprobe": 64})`` adds nprobe.
    """
    if name not in _PRESETS:
        raise ValueError(f"knn: unknown neighbour search {name!r}; expected one of {PRESETS}")
    backend, params = _PRESETS[name]
    return backend, {**params, **dict(overrides or {})}


@dataclass(frozen=True, eq=False)  # arrays: compared by identity, not element-wise
class NeighbourGraph:
    """Each item's nearest neighbours in the joint set (queries, then gallery).

    Attributes:
        index: ``(N, L)`` int64 neighbour indices into the joint set.
        distance: ``(N, L)`` float32 cosine distances ``1 − a·b`` at those indices.
        max_distance: ``(N,)`` float32, each item's largest cosine distance to any item.
        backend: what found them (``"exact"``, ``"faiss"``, ``"torch"``, or a caller's name).
        exact: whether the lists are the exact nearest neighbours (up to float rounding).
        params: the backend's parameters (``index``, ``nlist``, ``device``…), for the record.
    """

    index: np.ndarray
    distance: np.ndarray
    max_distance: np.ndarray
    backend: str
    exact: bool
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        index = np.ascontiguousarray(self.index, dtype=np.int64)
        distance = np.ascontiguousarray(self.distance, dtype=np.float32)
        max_distance = np.ascontiguousarray(self.max_distance, dtype=np.float32)
        if index.ndim != 2 or index.shape[1] == 0:
            raise ValueError(f"index: expected a 2-D (N, L) array with L >= 1, got shape {index.shape}")
        if distance.shape != index.shape:
            raise ValueError(f"distance: expected the shape of index {index.shape}, got {distance.shape}")
        if max_distance.shape != (index.shape[0],):
            raise ValueError(f"max_distance: expected shape ({index.shape[0]},), got {max_distance.shape}")
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "distance", distance)
        object.__setattr__(self, "max_distance", max_distance)
        object.__setattr__(self, "params", dict(self.params))

    @property
    def n_items(self) -> int:
        """``N``, the number of items of the joint set."""
        return int(self.index.shape[0])

    @property
    def width(self) -> int:
        """``L``, neighbours per item."""
        return int(self.index.shape[1])

    def describe(self) -> dict[str, Any]:
        """What a result file records: backend, exactness, width and parameters."""
        return {"backend": self.backend, "exact": self.exact, "width": self.width,
                "params": dict(self.params)}


def neighbours(
    query_emb: object,
    gallery_emb: object,
    k: int,
    backend: str = "exact",
    *,
    progress: ProgressCallback | None = None,
    **params: Any,
) -> NeighbourGraph:
    """The ``min(k + 1, N)`` nearest neighbours of every item of the joint set.

    Args:
        query_emb: ``(q, d)`` query embeddings.
        gallery_emb: ``(g, d)`` gallery embeddings (both L2-normalised here; cosine distance).
        k: neighbours besides the item itself (>= 1); above ``N − 1`` it means all items,
            as in :mod:`dycl.rerank`.
        backend: ``"exact"``, ``"faiss"`` or ``"torch"`` (see the module docs).
        progress: optional ``callable(stage, done, total)``.
        **params: the backend's options — faiss: ``index`` (``"flat"``, ``"ivf"``,
            ``"ivf-sq8"``, ``"hnsw"``), ``nlist``, ``nprobe``, ``k_factor``, ``M``, ``ef_search``,
            ``ef_construction``, ``device`` (``"cpu"``/``"cuda"``); torch: ``device``
            (default ``"cuda"``), ``block_rows``.

    Returns:
        A :class:`NeighbourGraph` with ``L = min(k + 1, N)`` columns.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown {backend!r}; expected one of {BACKENDS}")
    query, gallery = embedding_pair(query_emb, gallery_emb)
    n = query.shape[0] + gallery.shape[0]
    k = min(int_at_least("k", k, 1), max(n - 1, 1))
    if backend == "exact":
        if params:
            raise ValueError(f"params: the exact backend takes none, got {sorted(params)}")
        index, distance, max_distance = _core.neighbour_lists(query, gallery, k, None, progress)
        return NeighbourGraph(index, distance, max_distance, "exact", True, {})
    rows = JointRows(query, gallery, _SEARCH_ROWS)
    if backend == "faiss":
        return _faiss_graph(rows, min(k + 1, n), progress, **params)
    return _torch_graph(rows, min(k + 1, n), progress, **params)


def graph_for(query_emb: object, gallery_emb: object, width: int, knn: object,
              knn_params: Mapping[str, Any] | None = None,
              progress: ProgressCallback | None = None) -> NeighbourGraph:
    """The graph a re-ranking needing ``width`` neighbours per item starts from: ``knn`` itself when it
    is a :class:`NeighbourGraph` (the core checks its shape), else a search by the preset ``knn``."""
    if isinstance(knn, NeighbourGraph):
        if knn_params:
            raise ValueError("knn_params: a precomputed NeighbourGraph takes no search parameters")
        return knn
    if not isinstance(knn, str):
        raise ValueError(f"knn: expected a backend or preset name {PRESETS} or a NeighbourGraph, "
                         f"got {type(knn).__name__}")
    backend, params = preset(knn, knn_params)
    return neighbours(query_emb, gallery_emb, width - 1, backend, progress=progress, **params)


def check_search(name: str, params: Mapping[str, Any] | None = None) -> None:
    """Check a preset and its options before any data exists (what needs ``N``, such as
    ``nlist <= N``, is checked by :func:`neighbours`); raises ``ValueError`` naming the option."""
    backend, merged = preset(name, params)
    if backend == "exact" and merged:
        raise ValueError(f"params: the exact backend takes none, got {sorted(merged)}")
    if backend == "faiss":
        _faiss_params(2**62, 2, merged)
    elif backend == "torch":
        device, _ = _torch_params(2**20, merged)
        _torch_device(device)


def _torch_device(device: str) -> Any:
    """torch, once ``device`` is known to be usable."""
    torch = importlib.import_module("torch")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA is not available to torch; pass device='cpu' to search on the CPU")
    return torch


class JointRows:
    """The joint set (queries, then gallery) read in blocks of rows, each L2-normalised as the core
    does (norm summed in float64, scale applied in float32; zero rows stay zero). No copy of the whole
    set is made: at a million 512-d items that copy alone would be 2 GB."""

    def __init__(self, query: np.ndarray, gallery: np.ndarray, block: int = _SEARCH_ROWS):
        self.query, self.gallery, self.block = query, gallery, block
        self.n, self.dim = query.shape[0] + gallery.shape[0], query.shape[1]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Normalised float32 copy of joint rows ``start..stop``."""
        q = self.query.shape[0]
        parts = [self.query[start:min(stop, q)], self.gallery[max(start - q, 0):max(stop - q, 0)]]
        return _normalised(np.concatenate([p for p in parts if len(p)]))

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` for consecutive blocks of :attr:`block` rows."""
        for start in range(0, self.n, self.block):
            yield start, self.rows(start, min(start + self.block, self.n))

    def sample(self, count: int, seed: int = 0) -> np.ndarray:
        """``count`` normalised rows drawn without replacement (all of them if fewer)."""
        if count >= self.n:
            return self.rows(0, self.n)
        picked = np.sort(np.random.default_rng(seed).choice(self.n, count, replace=False))
        q = self.query.shape[0]
        return _normalised(np.concatenate([self.query[picked[picked < q]],
                                           self.gallery[picked[picked >= q] - q]]))


def _normalised(rows: np.ndarray) -> np.ndarray:
    out = rows.astype(np.float32, copy=True)
    norm = np.sqrt(np.einsum("ij,ij->i", out, out, dtype=np.float64))
    scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0).astype(np.float32)
    out *= scale[:, None]
    return out


def _report(progress: ProgressCallback | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


# --------------------------------------------------------------------------- faiss


def _import_faiss() -> Any:
    try:
        return importlib.import_module("faiss")
    except ImportError:
        raise ImportError("backend='faiss' needs FAISS: pip install dycl[faiss] (faiss-cpu), "
                          "or faiss-gpu for device='cuda'") from None


def _device(value: object, default: str) -> str:
    device = default if value is None else value
    if device not in DEVICES:
        raise ValueError(f"device: unknown {device!r}; expected one of {DEVICES}")
    return str(device)


def _faiss_params(n: int, width: int, params: dict[str, Any]) -> dict[str, Any]:
    """The FAISS options checked, with their defaults filled in."""
    known = {"index", "nlist", "nprobe", "k_factor", "M", "ef_search", "ef_construction", "device"}
    if unknown := sorted(set(params) - known):
        raise ValueError(f"params: unknown FAISS option(s) {unknown}; expected some of {sorted(known)}")
    kind = params.get("index", "flat")
    if kind not in FAISS_INDEXES:
        raise ValueError(f"index: unknown FAISS index {kind!r}; expected one of {FAISS_INDEXES}")
    out: dict[str, Any] = {"index": kind, "device": _device(params.get("device"), "cpu")}
    if kind in ("ivf", "ivf-sq8"):
        # IVF-SQ8: fewer, longer lists: k-means and the coarse assignment cost N·nlist·d each.
        per_root = 4 if kind == "ivf" else 2
        nlist = int_at_least("nlist", params.get("nlist", max(1, round(per_root * n ** 0.5))), 1)
        if nlist > n:
            raise ValueError(f"nlist: {nlist} inverted lists for N = {n} items; use nlist <= N "
                             "(about 4·sqrt(N) is usual)")
        probes = 32 if kind == "ivf" else 8
        out.update(nlist=nlist, nprobe=min(int_at_least("nprobe", params.get("nprobe", probes), 1), nlist))
        if kind == "ivf-sq8":
            if out["device"] == "cuda":
                raise ValueError("device: the refined IVF-SQ8 index runs on the CPU; use index='ivf' on cuda")
            out["k_factor"] = int_at_least("k_factor", params.get("k_factor", 4), 1)
        elif "k_factor" in params:
            raise ValueError("k_factor: applies to index='ivf-sq8' (its exact refinement), not 'ivf'")
    elif kind == "hnsw":
        if out["device"] == "cuda":
            raise ValueError("device: FAISS has no GPU HNSW index; use index='flat' or 'ivf' on cuda")
        out.update(M=int_at_least("M", params.get("M", 32), 2),
                   ef_construction=int_at_least("ef_construction", params.get("ef_construction", 200), 1),
                   ef_search=int_at_least("ef_search", params.get("ef_search", max(64, 2 * width)), 1))
    else:
        extra = sorted(set(params) - {"index", "device"})
        if extra:
            raise ValueError(f"params: {extra} apply to index='ivf' or 'hnsw', not 'flat'")
    out["max_distance"] = "exact" if kind == "flat" else "approximate"
    return out


def _faiss_index(faiss: Any, joint: JointRows, p: dict[str, Any]) -> Any:
    """The trained, filled index of ``p["index"]`` (on the GPU when asked)."""
    d = joint.dim
    metric = faiss.METRIC_INNER_PRODUCT
    if p["index"] == "flat":
        index = faiss.IndexFlatIP(d)
    elif p["index"] == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, p["nlist"], metric)
    elif p["index"] == "ivf-sq8":
        # 8-bit codes scan a quarter of IVF-Flat's memory per probed list (every item is a query, so
        # the search is bound by that traffic); the k_factor·k best are re-scored exactly.
        coarse = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, p["nlist"],
                                               faiss.ScalarQuantizer.QT_8bit, metric)
        index = faiss.IndexRefineFlat(coarse)
        index.k_factor = p["k_factor"]
    else:
        index = faiss.IndexHNSWFlat(d, p["M"], metric)
        index.hnsw.efConstruction = p["ef_construction"]
    if p["device"] == "cuda":
        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
            raise ValueError("device: 'cuda' needs faiss-gpu and a CUDA GPU; none found "
                             "(install faiss-gpu, or use device='cpu')")
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    if p["index"] in ("ivf", "ivf-sq8"):
        # k-means on a sample of 64 points per list (FAISS would subsample the whole set the same way).
        index.train(joint.sample(min(joint.n, 64 * p["nlist"])))
        faiss.extract_index_ivf(index).nprobe = p["nprobe"]
    for _, rows in joint.blocks():
        index.add(rows)
    if p["index"] == "hnsw":
        index.hnsw.efSearch = p["ef_search"]
    return index


def _farthest(faiss: Any, index: Any, rows: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Each row's largest cosine distance: the nearest item by inner product to the negated vector.

    An IVF index probes one list for it (the list farthest from the row): the value only bounds the
    normaliser from below, the core takes the larger of it and the listed distances, and a full
    second search would double the search time. Nothing found (an empty list) gives 0, so the core
    falls back to the largest listed distance."""
    ivf = faiss.extract_index_ivf(index) if p["index"] in ("ivf", "ivf-sq8") else None
    if ivf is not None:
        ivf.nprobe = 1
    try:
        far, far_id = index.search(np.negative(rows), 1)
    finally:
        if ivf is not None:
            ivf.nprobe = p["nprobe"]
    return np.where(far_id[:, 0] >= 0, 1.0 + far[:, 0], 0.0)


def _faiss_graph(joint: JointRows, width: int, progress: ProgressCallback | None,
                 **params: Any) -> NeighbourGraph:
    n = joint.n
    p = _faiss_params(n, width, params)
    faiss = _import_faiss()
    _report(progress, "building the FAISS index", 0, 1)
    index = _faiss_index(faiss, joint, p)
    _report(progress, "building the FAISS index", 1, 1)
    ids = np.empty((n, width), dtype=np.int64)
    distance = np.empty((n, width), dtype=np.float32)
    max_distance = np.empty(n, dtype=np.float32)
    _report(progress, "FAISS search", 0, n)
    for start, rows in joint.blocks():
        stop = start + len(rows)
        scores, found = index.search(rows, width)
        ids[start:stop], distance[start:stop] = found, 1.0 - scores
        max_distance[start:stop] = _farthest(faiss, index, rows, p)
        _report(progress, "FAISS search", stop, n)
    if (ids < 0).any():
        knob = "ef_search" if p["index"] == "hnsw" else "nprobe"
        raise ValueError(f"{knob}: the FAISS search found fewer than {width} neighbours for "
                         f"{int((ids < 0).any(axis=1).sum())} items; raise {knob}")
    return NeighbourGraph(ids, distance, max_distance, "faiss", p["index"] == "flat", p)


# --------------------------------------------------------------------------- torch


def _torch_params(n: int, params: dict[str, Any]) -> tuple[str, int]:
    """``(device, block_rows)`` of the torch search, checked."""
    known = {"device", "block_rows"}
    if unknown := sorted(set(params) - known):
        raise ValueError(f"params: unknown torch option(s) {unknown}; expected some of {sorted(known)}")
    device = _device(params.get("device"), "cuda")
    block = int_at_least("block_rows", params.get("block_rows", max(1, _TORCH_BLOCK_BYTES // (4 * n))), 1)
    return device, block


def _torch_graph(joint: JointRows, width: int, progress: ProgressCallback | None,
                 **params: Any) -> NeighbourGraph:
    n = joint.n
    device, block = _torch_params(n, params)
    torch = _torch_device(device)
    x = torch.cat([torch.from_numpy(rows).to(device) for _, rows in joint.blocks()])
    ids = np.empty((n, width), dtype=np.int64)
    distance = np.empty((n, width), dtype=np.float32)
    max_distance = np.empty(n, dtype=np.float32)
    _report(progress, "torch top-k", 0, n)
    with torch.no_grad():
        for start in range(0, n, block):
            sim = x[start:start + block] @ x.T  # (rows, N): one block, never N × N
            top, found = torch.topk(sim, width, dim=1, largest=True, sorted=True)
            ids[start:start + len(found)] = found.cpu().numpy()
            distance[start:start + len(found)] = (1.0 - top).cpu().numpy()
            max_distance[start:start + len(found)] = (1.0 - sim.min(dim=1).values).cpu().numpy()
            _report(progress, "torch top-k", start + len(found), n)
    return NeighbourGraph(ids, distance, max_distance, "torch", True,
                          {"device": device, "block_rows": block, "max_distance": "exact"})
