"""Re-ranking benchmark at the DA-Campus test shape (DESIGN §8, issue 3).

Run from the repository root (after ``make develop``)::

    python benches/bench_rerank.py            # DA-Campus shape, both tasks, NumPy baselines
    python benches/bench_rerank.py --large    # also 1,000 queries + 99,000 gallery from embeddings

Embeddings are clustered like real data: 300 buildings in 30 neighbourhoods,
one satellite tile and 60 drone views per building, d = 512, float32.
Sat→Drone has 300 queries and 18,000 gallery items, Drone→Sat the reverse.
Everything is timed in one run on this machine and printed next to its
target and a NumPy figure: one float32 GEMM of the N×512 data (the
k-reciprocal target), and ``dycl.reference`` (the slow NumPy definition)
at sizes where its N×N matrices fit. Peak memory of the embedding entry
points is measured in a fresh subprocess (``VmHWM``, the high-water mark of
its resident memory, which includes the interpreter and the input embeddings;
``ru_maxrss`` would inherit the parent's peak across fork + exec).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from dycl import reference, rerank

DIM = 512
VIEWS = 60
KS = (20, 62, 292)


def campus(
    n_buildings: int, views: int = VIEWS, dim: int = DIM, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(satellite, drone) float32 embeddings; drone rows grouped by building."""
    rng = np.random.default_rng(seed)
    n_regions = max(1, n_buildings // 10)
    region = rng.standard_normal((n_regions, dim), dtype=np.float32)
    building = region[np.arange(n_buildings) % n_regions] + 0.8 * rng.standard_normal(
        (n_buildings, dim), dtype=np.float32
    )
    satellite = building + rng.standard_normal((n_buildings, dim), dtype=np.float32)
    drone = np.repeat(building, views, axis=0)
    drone += rng.standard_normal(drone.shape, dtype=np.float32)
    return satellite, drone


def cosine_blocks(query: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 (q_g, q_q, g_g) cosine distances of L2-normalised rows."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q_g = q @ g.T
    np.subtract(1, q_g, out=q_g)
    q_q = q @ q.T
    np.subtract(1, q_q, out=q_q)
    g_g = g @ g.T
    np.subtract(1, g_g, out=g_g)
    return q_g, q_q, g_g


def memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def best_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def row(what: str, seconds: float, target: str = "", note: str = "") -> None:
    print(f"{what:<58} {seconds:9.3f} s   {target:<22} {note}", flush=True)


# --------------------------------------------------------------------------- subprocess measurements


def child(kind: str, direction: str, n_buildings: int, n_queries: int | None) -> None:
    """Run one embedding entry point and print time and peak memory as JSON."""
    satellite, drone = campus(n_buildings)
    if n_queries is not None:  # large mode: the first n_queries satellite tiles against all drone views
        satellite = satellite[:n_queries].copy()
    query, gallery = (satellite, drone) if direction == "sat2drone" else (drone, satellite)
    base = memory_mb("VmRSS")
    start = time.perf_counter()
    if kind == "k_reciprocal":
        out = rerank.k_reciprocal_embeddings(query, gallery)
    else:
        out = rerank.msrerank_embeddings(query, gallery, ks=KS)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "peak_mb": memory_mb("VmHWM"), "base_mb": base, "rows": out.shape[0]}
    print(json.dumps(result))


def in_subprocess(kind: str, direction: str, n_buildings: int, n_queries: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, direction, str(n_buildings)]
    if n_queries is not None:
        cmd.append(str(n_queries))
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--large", action="store_true", help="also run 1,000 + 99,000 items from embeddings")
    parser.add_argument("--repeat", type=int, default=2, help="timed repetitions (best is reported)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, direction, n_buildings, *rest = args.child
        child(kind, direction, int(n_buildings), int(rest[0]) if rest else None)
        return

    satellite, drone = campus(300)
    n = len(satellite) + len(drone)
    print(f"DA-Campus test shape: {len(satellite)} satellite + {len(drone)} drone embeddings, d = {DIM}")
    joint = np.concatenate([satellite, drone])
    gemm = best_time(lambda: joint @ joint.T, args.repeat)
    joint = None  # free it before the distance blocks are built
    row(f"NumPy float32 GEMM ({n}x{DIM}) @ ({DIM}x{n})", gemm, "", "yardstick for k_reciprocal")

    tasks = (("Sat->Drone", (satellite, drone)), ("Drone->Sat", (drone, satellite)))
    for direction, (query, gallery) in tasks:
        blocks = cosine_blocks(query, gallery)
        t = best_time(lambda b=blocks: rerank.k_reciprocal(*b), args.repeat)
        row(f"k_reciprocal from blocks, {direction}", t, "<= 1.5 s, <= GEMM", f"= {t / gemm:.2f} GEMM")
        for variant in rerank.VARIANTS:
            t = best_time(lambda b=blocks, v=variant: rerank.msrerank(*b, ks=KS, variant=v), args.repeat)
            row(f"msrerank ks={KS} {variant}, {direction}", t, "<= 10 s, <= 5 GEMM", f"= {t / gemm:.2f} GEMM")
        del blocks

    for kind in ("k_reciprocal", "msrerank"):
        for direction in ("sat2drone", "drone2sat"):
            m = in_subprocess(kind, direction, 300)
            row(
                f"{kind}_embeddings, {direction}",
                m["seconds"],
                "peak <= 2 GB",
                f"peak RSS {m['peak_mb']:.0f} MB (before the call {m['base_mb']:.0f} MB)",
            )

    # NumPy baseline: the readable reference (dense N×N matrices) where it fits.
    for n_buildings, what in ((50, "k_reciprocal"), (20, "msrerank")):
        sat_s, drone_s = campus(n_buildings, seed=1)
        small_tasks = (("Sat->Drone", (sat_s, drone_s)), ("Drone->Sat", (drone_s, sat_s)))
        for direction, (query, gallery) in small_tasks:
            blocks = cosine_blocks(query, gallery)
            size = len(query) + len(gallery)
            if what == "k_reciprocal":
                ours = best_time(lambda b=blocks: rerank.k_reciprocal(*b), args.repeat)
                base = best_time(lambda b=blocks: reference.k_reciprocal(*b), 1)
            else:
                ours = best_time(lambda b=blocks: rerank.msrerank(*b, ks=KS), args.repeat)
                base = best_time(lambda b=blocks: reference.msrerank(*b, ks=KS), 1)
            row(f"dycl.reference.{what} (NumPy), N={size}, {direction}", base, "baseline")
            row(f"dycl.rerank.{what}, N={size}, {direction}", ours, "", f"speed-up {base / ours:.0f}x")

    if args.large:
        for direction in ("sat2drone",):
            m = in_subprocess("k_reciprocal", direction, 1650, n_queries=1000)
            row(
                "k_reciprocal_embeddings, 1,000 + 99,000 items, d = 512",
                m["seconds"],
                "<= 300 s, <= 12 GB",
                f"peak RSS {m['peak_mb']:.0f} MB (N x N float32 would be 40 GB)",
            )


if __name__ == "__main__":
    main()
