"""dycl.scale: the re-ranking neighbour graph on a Dask LocalCluster (2 worker processes, 1 thread each).

* the graph's lists are the one-process exact search's, bit for bit, for uneven row blocks and
  inputs with ties (duplicated rows), and re-ranking from it gives the one-process re-ranked
  distances exactly (k-reciprocal and MSRerank);
* a block that fails once is retried; a worker that dies is replaced and its block re-run; a block
  that always fails, or comes back malformed, is an error naming its rows, never part of a graph;
* bad options are refused before anything is sent, and a missing Dask names the extra to install.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from dycl import scale
from dycl.knn import NeighbourGraph, neighbours
from dycl.rerank import k_reciprocal_embeddings, k_reciprocal_graph, msrerank_embeddings

distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    dask_client = distributed.Client(cluster)
    yield dask_client
    dask_client.close()
    cluster.close()


def embeddings_with_ties(seed: int = 0, queries: int = 45, gallery: int = 110, dim: int = 12):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(queries, dim)).astype(np.float32)
    g = rng.normal(size=(gallery, dim)).astype(np.float32)
    g[10:20] = g[0]  # ten equal gallery items: ties broken by index
    q[5] = g[3]  # a query equal to a gallery item
    g[30] *= 3.0  # the same direction at another length: the same cosine distances
    return q, g


def assert_same_graph(got: NeighbourGraph, expected: NeighbourGraph) -> None:
    np.testing.assert_array_equal(got.index, expected.index)
    np.testing.assert_array_equal(got.distance, expected.distance)
    np.testing.assert_array_equal(got.max_distance, expected.max_distance)


def test_dask_graph_is_the_exact_graph_and_reranks_identically(client, monkeypatch):
    q, g = embeddings_with_ties()
    k1, k2, ks = 9, 4, (5, 9, 14)
    k = max(k1 + 1, k2, max(ks) + 1) - 1
    scatters = []
    real_scatter = client.scatter

    def counted_scatter(data, **kwargs):
        scatters.append((len(data), kwargs.get("broadcast")))
        return real_scatter(data, **kwargs)

    monkeypatch.setattr(client, "scatter", counted_scatter)
    got = scale.neighbour_graph(q, g, k, client=client, block_rows=37)  # 155 rows: 5 blocks, the last short
    assert scatters == [(2, True)]  # the embeddings went to every worker once, not with each task
    assert (got.backend, got.exact, got.params["blocks"], got.params["workers"]) == ("dask", True, 5, 2)
    expected = neighbours(q, g, k, "exact")
    assert got.index.shape == (len(q) + len(g), k + 1)
    assert_same_graph(got, expected)

    # Re-ranking from the Dask graph: the one-process re-ranked distances, exactly.
    reranked = k_reciprocal_graph(q, g, k1, k2, 0.3, knn=got)
    assert (reranked.backend, reranked.exact) == ("dask", True)
    np.testing.assert_array_equal(reranked.distances, k_reciprocal_embeddings(q, g, k1, k2, 0.3))
    for variant in ("paper", "reference"):
        np.testing.assert_array_equal(msrerank_embeddings(q, g, ks, k2, 0.3, variant, knn=got),
                                      msrerank_embeddings(q, g, ks, k2, 0.3, variant))

    # No client: the default one (the fixture's), with blocks sized for its 2 workers.
    default = scale.neighbour_graph(q, g, 4)
    assert default.params["workers"] == 2 and default.params["block_rows"] == 20  # 155 rows / (2 x 4)
    assert_same_graph(default, neighbours(q, g, 4, "exact"))

    # One block per row, k above N - 1 (all items), the scheduler's address instead of the client.
    small_q, small_g = q[:3], g[:4]
    by_address = scale.neighbour_graph(small_q, small_g, 50, client=client.scheduler.address, block_rows=1)
    assert by_address.params["blocks"] == 7 and by_address.width == 7
    assert_same_graph(by_address, neighbours(small_q, small_g, 50, "exact"))


def test_a_failing_block_is_retried_then_named(client, tmp_path):
    q, g = embeddings_with_ties(seed=1)
    expected = neighbours(q, g, 6, "exact")
    marker = str(tmp_path / "failed-once")

    def fails_once(query, gallery, k, rows):
        if rows[0] == 40 and not os.path.exists(marker):
            Path(marker).touch()
            raise OSError("a transient failure")
        return scale.neighbour_block(query, gallery, k, rows)

    assert_same_graph(scale.neighbour_graph(q, g, 6, client=client, block_rows=20, retries=1,
                                            block_function=fails_once), expected)

    def always_fails(query, gallery, k, rows):
        if rows[0] == 40:
            raise ValueError("this block cannot be done")
        return scale.neighbour_block(query, gallery, k, rows)

    with pytest.raises(scale.BlockFailed, match=r"row block 40\.\.60 of 155 failed .* after 2 retries: "
                                                r"ValueError: this block cannot be done") as failed:
        scale.neighbour_graph(q, g, 6, client=client, block_rows=20, block_function=always_fails)
    assert (failed.value.start, failed.value.stop) == (40, 60)
    assert isinstance(failed.value.__cause__, ValueError)

    def malformed(query, gallery, k, rows):
        index, distance, max_distance = scale.neighbour_block(query, gallery, k, rows)
        return (index[:-1], distance[:-1], max_distance[:-1]) if rows[0] == 100 else (index, distance,
                                                                                       max_distance)

    with pytest.raises(scale.BlockFailed, match=r"row block 100\.\.120 returned index of shape \(19, 7\)"):
        scale.neighbour_graph(q, g, 6, client=client, block_rows=20, block_function=malformed)


def test_a_lost_worker_is_replaced_and_its_block_rerun(client, tmp_path):
    q, g = embeddings_with_ties(seed=2)
    marker = str(tmp_path / "died-once")

    def dies_once(query, gallery, k, rows):
        if rows[0] == 0 and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)  # the worker process dies in the middle of the task
        return scale.neighbour_block(query, gallery, k, rows)

    got = scale.neighbour_graph(q, g, 5, client=client, block_rows=50, block_function=dies_once)
    assert os.path.exists(marker)
    assert_same_graph(got, neighbours(q, g, 5, "exact"))


def test_bad_options_are_refused_before_anything_is_sent(monkeypatch):
    q, g = embeddings_with_ties()
    for kwargs, name in (({"k": 0}, "k"), ({"k": 3, "block_rows": 0}, "block_rows"),
                         ({"k": 3, "retries": -1}, "retries"), ({"k": 3, "client": 42}, "client")):
        with pytest.raises(ValueError, match=name):
            scale.neighbour_graph(q, g, **kwargs)
    with pytest.raises(ValueError, match="gallery_emb"):
        scale.neighbour_graph(q, g[:, :5], 3)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # as if Dask were not installed
    with pytest.raises(ImportError, match=r"pip install dycl\[dask\]"):
        scale.neighbour_graph(q, g, 3)
