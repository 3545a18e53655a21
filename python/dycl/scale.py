"""The re-ranking neighbour graph on a Dask cluster: row blocks of the joint set, one task each.

Re-ranking (:mod:`dycl.rerank`) starts from every item's exact nearest
neighbours in the joint set ``[queries; gallery]`` (``N`` items); the search
is ``O(N² d)`` and is the part worth spreading over machines::

    from dask.distributed import Client
    from dycl import scale

    graph = scale.neighbour_graph(query_emb, gallery_emb, k=30, client=Client("tcp://scheduler:8786"))
    # graph: a dycl.knn.NeighbourGraph (backend "dask", exact); re-ranking takes it as knn=graph

How: the embeddings are scattered to every worker once (``client.scatter(...,
broadcast=True)``); each task takes one block of rows ``start..stop`` and
computes those rows' exact top-``k`` against all ``N`` columns with the Rust
core (``dycl._core.neighbour_lists(..., rows=(start, stop))``, which streams
the columns in blocks); the client puts the blocks together in row order.
The lists are those of the one-process exact search, bit for bit (the same
kernel on the same rows).

Failures: a block whose task raises is retried (``retries``, Dask's own
mechanism, which also re-runs the tasks of a lost worker); a block that
still fails raises :class:`BlockFailed` naming its rows, and the other
blocks are cancelled. Every block's result is checked (shapes, dtypes,
index range) before it is placed: nothing partial is returned.

Dask is optional (``pip install dycl[dask]``) and imported only here, when
:func:`neighbour_graph` is called.
"""

from __future__ import annotations

import importlib
import math
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _core
from ._validate import embedding_pair, int_at_least
from .knn import NeighbourGraph

#: The most rows of the joint set per task when ``block_rows`` is not given (see :func:`default_block_rows`).
DEFAULT_BLOCK_ROWS = 4096
#: How often a failing block is re-run before the graph fails.
DEFAULT_RETRIES = 2

#: ``progress(stage, done, total)`` as in :mod:`dycl.rerank`.
ProgressCallback = Callable[[str, int, int], object]
#: What a task runs on a block: ``(query, gallery, k, (start, stop)) -> (index, distance, max_distance)``.
BlockFunction = Callable[[np.ndarray, np.ndarray, int, tuple[int, int]],
                         tuple[np.ndarray, np.ndarray, np.ndarray]]


class BlockFailed(RuntimeError):
    """A row block of the neighbour graph failed on the Dask workers (after its retries).

    ``start``/``stop``: the block's rows of the joint set. The worker's
    exception is the ``__cause__``.
    """

    def __init__(self, message: str, start: int, stop: int) -> None:
        super().__init__(message)
        self.start, self.stop = start, stop


def neighbour_block(query: np.ndarray, gallery: np.ndarray, k: int,
                    rows: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One task: rows ``start..stop`` of the joint set against all its items, with the Rust core.

    Returns ``(index (r, L), distance (r, L), max_distance (r,))`` as
    :func:`dycl._core.neighbour_lists`; runs on a worker.
    """
    return _core.neighbour_lists(query, gallery, int(k), (int(rows[0]), int(rows[1])), None)


def _import_distributed() -> Any:
    try:
        return importlib.import_module("dask.distributed")
    except ImportError:
        raise ImportError("dycl.scale needs Dask: pip install dycl[dask] (dask[distributed])") from None


def _connect(distributed: Any, client: object) -> tuple[Any, Callable[[], None]]:
    """The client to use and what closes what was opened here (nothing for a caller's client)."""
    if isinstance(client, distributed.Client):
        return client, lambda: None
    if isinstance(client, str):
        try:
            own = distributed.Client(client, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"client: cannot reach the Dask scheduler at {client!r} ({exc})") from None
        return own, own.close
    if client is not None:
        raise ValueError(f"client: expected None, a dask.distributed.Client or a scheduler address, "
                         f"got {type(client).__name__}")
    try:
        return distributed.default_client(), lambda: None
    except ValueError:  # no client yet: a local cluster for this call
        cluster = distributed.LocalCluster(threads_per_worker=1, processes=True)
        own = distributed.Client(cluster, set_as_default=False)
        return own, lambda: (own.close(), cluster.close())


def _row_blocks(n: int, block_rows: int) -> list[tuple[int, int]]:
    return [(start, min(start + block_rows, n)) for start in range(0, n, block_rows)]


def _checked_block(result: object, rows: tuple[int, int], width: int, n: int) -> tuple[np.ndarray, ...]:
    """A block's result as three arrays of the expected shapes, or ``BlockFailed`` saying what is wrong."""
    start, stop = rows
    expected = ((stop - start, width), (stop - start, width), (stop - start,))
    kinds = ("i", "f", "f")
    if not isinstance(result, tuple) or len(result) != 3:
        raise BlockFailed(f"neighbour_graph: row block {start}..{stop} came back as {type(result).__name__}, "
                          "not (index, distance, max_distance)", start, stop)
    arrays = tuple(np.asarray(a) for a in result)
    for name, arr, shape, kind in zip(("index", "distance", "max_distance"), arrays, expected, kinds,
                                      strict=True):
        if arr.shape != shape or arr.dtype.kind != kind:
            raise BlockFailed(f"neighbour_graph: row block {start}..{stop} returned {name} of shape "
                              f"{arr.shape} ({arr.dtype}), expected {shape}", start, stop)
    if arrays[0].size and (arrays[0].min() < 0 or arrays[0].max() >= n):
        raise BlockFailed(f"neighbour_graph: row block {start}..{stop} lists items outside 0..{n - 1}",
                          start, stop)
    return arrays


def _gather_blocks(distributed: Any, client: Any, futures: dict[Any, tuple[int, int]], width: int, n: int,
                   retries: int, progress: ProgressCallback | None) -> dict[tuple[int, int], tuple]:
    """Each block's checked result as it completes; the first failure cancels the rest and raises."""
    results: dict[tuple[int, int], tuple] = {}
    try:
        for future in distributed.as_completed(list(futures)):
            start, stop = futures[future]
            if future.status != "finished":
                try:
                    exc = future.exception()
                except Exception as cancelled:  # a cancelled future has no exception of its own
                    exc = cancelled
                raise BlockFailed(f"neighbour_graph: row block {start}..{stop} of {n} failed on the Dask "
                                  f"workers after {retries} retries: {type(exc).__name__}: {exc}",
                                  start, stop) from exc
            results[(start, stop)] = _checked_block(future.result(), (start, stop), width, n)
            if progress is not None:
                progress("dask row blocks", len(results), len(futures))
    finally:
        if len(results) < len(futures):
            client.cancel(list(futures))
    return results


def neighbour_graph(
    query_emb: object,
    gallery_emb: object,
    k: int,
    client: object = None,
    block_rows: int | None = None,
    *,
    retries: int = DEFAULT_RETRIES,
    progress: ProgressCallback | None = None,
    block_function: BlockFunction = neighbour_block,
) -> NeighbourGraph:
    """The exact ``min(k + 1, N)`` nearest neighbours of every item of ``[queries; gallery]``, on Dask.

    Args:
        query_emb: ``(q, d)`` query embeddings.
        gallery_emb: ``(g, d)`` gallery embeddings (cosine distance; normalised by the core).
        k: neighbours besides the item itself (>= 1); above ``N − 1`` it means all items,
            as in :func:`dycl.knn.neighbours`.
        client: a ``dask.distributed.Client`` (kept open), a scheduler address such as
            ``"tcp://host:8786"`` (connected to and closed again), or None: the current
            default client, else a local cluster for this call.
        block_rows: rows of the joint set per task (default: :func:`default_block_rows` for
            the workers connected now).
        retries: re-runs of a failing block before the graph fails.
        progress: optional ``callable(stage, done, total)``, called as blocks complete.
        block_function: what each task runs on its block (default :func:`neighbour_block`);
            it must be picklable and give that function's result for its rows.

    Returns:
        A :class:`~dycl.knn.NeighbourGraph` with ``backend="dask"``, ``exact=True``; its
        ``params`` record the blocks, the retries and the workers.

    Raises:
        ValueError: bad embeddings or options (before anything is sent).
        ImportError: Dask is not installed (``pip install dycl[dask]``).
        BlockFailed: a block still failed after its retries, or came back malformed.
    """
    query, gallery = embedding_pair(query_emb, gallery_emb)
    n = query.shape[0] + gallery.shape[0]
    k = min(int_at_least("k", k, 1), max(n - 1, 1))
    width = min(k + 1, n)
    if block_rows is not None:
        block_rows = int_at_least("block_rows", block_rows, 1)
    retries = int_at_least("retries", retries, 0)
    distributed = _import_distributed()
    client, close = _connect(distributed, client)
    scattered: list[Any] = []
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        block_rows = block_rows or default_block_rows(n, max(workers, 1))
        # Once to every worker, not once per task: the tasks refer to these futures.
        scattered = client.scatter([query, gallery], broadcast=True, hash=False)
        blocks = _row_blocks(n, block_rows)
        token = uuid.uuid4().hex[:8]
        futures = {client.submit(block_function, scattered[0], scattered[1], k, rows, retries=retries,
                                 pure=False, key=f"dycl-neighbour-block-{token}-{rows[0]}-{rows[1]}"): rows
                   for rows in blocks}
        results = _gather_blocks(distributed, client, futures, width, n, retries, progress)
    finally:
        if scattered:
            client.cancel(scattered)
        close()
    if sorted(results) != blocks:  # cannot happen unless a future went missing: never return part of a graph
        raise BlockFailed(f"neighbour_graph: {len(blocks) - len(results)} of {len(blocks)} row blocks did "
                          "not come back", 0, n)
    index, distance, max_distance = (np.concatenate([results[rows][i] for rows in blocks]) for i in range(3))
    params = {"block_rows": block_rows, "blocks": len(blocks), "retries": retries, "workers": workers,
              "max_distance": "exact"}
    return NeighbourGraph(index, distance, max_distance, "dask", True, params)


def default_block_rows(n_items: int, n_workers: int, tasks_per_worker: int = 4) -> int:
    """Rows per task so that each of ``n_workers`` gets about ``tasks_per_worker`` blocks (a retried
    block then costs a fraction of a worker's share); at least 1 row, at most :data:`DEFAULT_BLOCK_ROWS`."""
    n_items = int_at_least("n_items", n_items, 1)
    n_workers = int_at_least("n_workers", n_workers, 1)
    tasks = n_workers * int_at_least("tasks_per_worker", tasks_per_worker, 1)
    return max(1, min(DEFAULT_BLOCK_ROWS, math.ceil(n_items / tasks)))


__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "DEFAULT_RETRIES",
    "BlockFailed",
    "default_block_rows",
    "neighbour_block",
    "neighbour_graph",
]
