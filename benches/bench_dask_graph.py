"""Benchmark: the re-ranking neighbour graph on Dask (dycl.scale) against the one-process exact search.

Random ``d``-dimensional embeddings, ``--queries`` + ``--gallery`` items; the
graph of ``k`` neighbours is computed by ``dycl.knn.neighbours(backend="exact")``
in this process, then by ``dycl.scale.neighbour_graph`` on a
``LocalCluster(n_workers=--workers, threads_per_worker=1, processes=True)``
(or on ``--scheduler ADDRESS``). Printed: the wall time of each (the Dask one
with and without starting the cluster), the blocks, and whether the two graphs
are equal (they must be, bit for bit).

On one machine the Dask path only adds the scatter and the task overhead; the
point of it is many machines (docs/scale.md). Set ``RAYON_NUM_THREADS`` so that
workers × threads fits the cores.

Usage: ``python benches/bench_dask_graph.py [--queries 20000] [--gallery 80000] [--dim 64] [--k 30]
[--workers 2] [--block-rows N] [--scheduler tcp://host:8786]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dycl import knn, scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--gallery", type=int, default=80_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--block-rows", type=int, default=None, help="rows per task (default: dycl's)")
    parser.add_argument("--scheduler", default=None, help="an existing scheduler instead of a LocalCluster")
    args = parser.parse_args()

    from dask.distributed import Client, LocalCluster

    rng = np.random.default_rng(0)
    query = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    gallery = rng.standard_normal((args.gallery, args.dim), dtype=np.float32)

    start = time.perf_counter()
    exact = knn.neighbours(query, gallery, args.k, "exact")
    one_process = time.perf_counter() - start

    start = time.perf_counter()
    cluster = None
    if args.scheduler is None:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    client = Client(args.scheduler or cluster)
    started = time.perf_counter() - start
    try:
        start = time.perf_counter()
        graph = scale.neighbour_graph(query, gallery, args.k, client=client, block_rows=args.block_rows)
        on_dask = time.perf_counter() - start
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    same = all(np.array_equal(getattr(graph, name), getattr(exact, name))
               for name in ("index", "distance", "max_distance"))
    n = args.queries + args.gallery
    print(f"N = {n} items, d = {args.dim}, k = {args.k}")
    print(f"one process (exact):  {one_process:8.2f} s")
    print(f"dask ({graph.params['workers']} workers, {graph.params['blocks']} blocks of "
          f"{graph.params['block_rows']} rows): {on_dask:8.2f} s (+ {started:.2f} s to start the cluster)")
    print(f"graphs equal: {same}")
    if not same:
        raise SystemExit("the Dask graph differs from the exact one")


if __name__ == "__main__":
    main()
