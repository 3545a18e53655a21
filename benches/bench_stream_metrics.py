"""Benchmark: metrics from embeddings at 100k queries × 100k gallery items, streamed.

``dycl.metrics.evaluate_embeddings`` scores the queries in blocks (one GEMM
per block against the gallery, then ranking and scoring), so it never holds
the ``(q, g)`` distance matrix: 40 GB of float32 here. The data: 1,000
buildings placed uniformly on a square campus with DA-Campus's density (about
50 others within 500 m), the level matrix from their coordinates, random
building ids for the queries and the gallery, random ``d``-dimensional
embeddings.

Printed: the wall time and CPU time of the call, the peak resident memory of
the process (``resource.getrusage``) before and after it, and H-AP / R@1 as a
sanity check.

Usage: ``python benches/bench_stream_metrics.py [--n 100000] [--dim 16] [--buildings 1000]``
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from dycl import geo, metrics

#: DA-Campus: 300 buildings on about 1.9 km × 1.9 km.
BUILDINGS_PER_KM2 = 300 / 1.9**2
ORIGIN = (22.3364, 114.2655)


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def data(n: int, dim: int, buildings: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    side_m = 1000.0 * np.sqrt(buildings / BUILDINGS_PER_KM2)
    xy = rng.uniform(0, side_m, (buildings, 2))
    lat = ORIGIN[0] + xy[:, 1] / 111_320.0
    lon = ORIGIN[1] + xy[:, 0] / (111_320.0 * np.cos(np.radians(ORIGIN[0])))
    return {
        "query_emb": rng.standard_normal((n, dim), dtype=np.float32),
        "gallery_emb": rng.standard_normal((n, dim), dtype=np.float32),
        "query_ids": rng.integers(0, buildings, n),
        "gallery_ids": rng.integers(0, buildings, n),
        "levels": geo.level_matrix(np.stack([lat, lon], axis=1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="queries, and gallery items")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--buildings", type=int, default=1000)
    args = parser.parse_args()

    inputs = data(args.n, args.dim, args.buildings)
    lv = inputs["levels"]
    others = (lv[~np.eye(lv.shape[0], dtype=bool)] > 0).sum() / lv.shape[0]
    print(f"{args.n:,} queries x {args.n:,} gallery items, d = {args.dim}, {args.buildings} buildings "
          f"({others:.1f} others within {geo.DEFAULT_THRESHOLDS[-1]:g} m on average)")
    print(f"a (q, g) float32 distance matrix would be {args.n * args.n * 4 / 1e9:.1f} GB")
    before = peak_rss_gb()
    wall, cpu = time.perf_counter(), time.process_time()
    scores = metrics.evaluate_embeddings(**inputs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"evaluate_embeddings: {wall:.1f} s wall, {cpu:.1f} s CPU (all threads)")
    print(f"peak RSS: {before:.2f} GB with the inputs, {peak_rss_gb():.2f} GB after the call")
    print(f"H-AP {scores['H-AP']:.4f}, R@1_0 {scores['R@1_0']:.4f}, mAP_overall {scores['mAP_overall']:.4f}")


if __name__ == "__main__":
    main()
