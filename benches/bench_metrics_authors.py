"""Benchmark: ``compat="authors"`` (NumPy, dycl.metrics_authors) against the definitions (Rust core).

Both DA-Campus-like tasks: ``--images`` drone views spread over ``--buildings``
buildings on a campus as dense as DA-Campus (about 10 buildings within 200 m
and 50 within 500 m of each other), so Drone→Satellite is images × buildings
and Satellite→Drone the reverse (18,000 × 700 and 700 × 18,000 by default).
Distances are random, lower for the query's own building, so rankings are
neither perfect nor random. Printed per task: the time of
``metrics.evaluate(..., compat="authors")``, of the default, and the peak
memory NumPy allocated in the compatible path (tracemalloc), which the query
blocks bound to a few ``block × g`` arrays whatever the number of queries.

Usage: ``python benches/bench_metrics_authors.py [--buildings 700] [--images 18000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
import warnings

import numpy as np

from dycl import geo, metrics
from dycl.metrics_authors import AuthorsCompatWarning

ORIGIN = (22.3364, 114.2655)
#: Campus side for 300 buildings (DA-Campus' density); scaled with the square root of the count.
SIDE_300_M = 1900.0
TARGET_S = 5.0


def campus(n_buildings: int, n_images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level matrix, drone image buildings and drone->satellite distances."""
    rng = np.random.default_rng(seed)
    side = SIDE_300_M * np.sqrt(n_buildings / 300)
    xy = rng.uniform(0, side, (n_buildings, 2))
    coords = np.stack([ORIGIN[0] + xy[:, 1] / 111_320.0,
                       ORIGIN[1] + xy[:, 0] / (111_320.0 * np.cos(np.radians(ORIGIN[0])))], axis=1)
    drone_ids = np.arange(n_images) % n_buildings
    dist = rng.random((n_images, n_buildings))
    dist[np.arange(n_images), drone_ids] -= 0.5
    return geo.level_matrix(coords), drone_ids, dist


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildings", type=int, default=700)
    parser.add_argument("--images", type=int, default=18_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", AuthorsCompatWarning)
    levels, drone_ids, d2s = campus(args.buildings, args.images)
    sat_ids = np.arange(args.buildings)
    tasks = {"Drone->Sat": (d2s, drone_ids, sat_ids),
             "Sat->Drone": (np.ascontiguousarray(d2s.T), sat_ids, drone_ids)}
    met = True
    for name, task in tasks.items():
        dist = task[0]

        def score(compat: str, task: tuple = task) -> dict[str, float]:
            return metrics.evaluate(*task, levels, compat=compat)

        t_authors = best_time(lambda score=score: score("authors"), args.repeats)
        t_default = best_time(lambda score=score: score("definitions"), args.repeats)
        tracemalloc.start()
        authors = score("authors")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        default = score("definitions")
        met &= t_authors <= TARGET_S
        print(f"{name} {dist.shape[0]} x {dist.shape[1]}: compat=authors {t_authors:.2f} s "
              f"(peak {peak / 2**20:.0f} MiB of NumPy arrays), definitions {t_default:.2f} s; "
              f"H-AP {authors['H-AP']:.4f} vs {default['H-AP']:.4f}, "
              f"mAP_overall {authors['mAP_overall']:.4f} vs {default['mAP_overall']:.4f}")
    print(f"target: compat=authors <= {TARGET_S:g} s per task -> {'met' if met else 'MISSED'} "
          f"(best of {args.repeats}; load average after the run: "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + ")")


if __name__ == "__main__":
    main()
