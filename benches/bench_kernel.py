"""Similarity-kernel benchmark: re-ranking from embeddings against one BLAS GEMM.

Run from the repository root (after ``make develop``), with the OpenBLAS
pins of the environment lifted for this command only, so that NumPy runs
its best kernels for this CPU::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/bench_kernel.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/bench_kernel.py --sizes 700+17600
    python benches/bench_kernel.py --quick     # a tiny smoke run

For each size ``q+g`` (queries + gallery, clustered float32 embeddings,
d = 512) it times :func:`dycl.rerank.k_reciprocal_embeddings` and, in the
same run, the yardstick: a NumPy float32 GEMM of the same ``(N×d)·(d×N)``
(``N = q + g``), whole where the N×N result fits comfortably, otherwise in
row blocks with the same flops and no N×N array. The target is a ratio of
at most 1.0: the whole re-ranking no slower than the bare similarity
product done by BLAS. The BLAS NumPy uses (threadpoolctl) is printed with
the figures, since the ratio means little against a slow BLAS kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import numpy as np

from dycl import rerank

DIM = 512
DEFAULT_SIZES = "700+17600,1000+99000"
QUICK_SIZES = "30+570"
TARGET_RATIO = 1.0
# Above this many bytes the N×N yardstick is computed in row blocks.
WHOLE_GEMM_BYTES = 4 << 30
YARDSTICK_BLOCK_ROWS = 2048
PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def clustered(q: int, g: int, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(query, gallery) float32 embeddings: one query per place, the gallery's
    views spread over the places, places grouped in neighbourhoods."""
    rng = np.random.default_rng(seed)
    n_regions = max(1, q // 10)
    region = rng.standard_normal((n_regions, dim), dtype=np.float32)
    place = region[np.arange(q) % n_regions] + 0.8 * rng.standard_normal((q, dim), dtype=np.float32)
    query = place + rng.standard_normal((q, dim), dtype=np.float32)
    gallery = place[np.arange(g) % q] + rng.standard_normal((g, dim), dtype=np.float32)
    return query, gallery


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"700+17600,1000+99000"`` -> ``[(700, 17600), (1000, 99000)]``."""
    sizes = []
    for part in text.split(","):
        try:
            q, g = (int(v) for v in part.split("+"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {part!r} is not QUERIES+GALLERY") from None
        if q < 1 or g < 1:
            raise argparse.ArgumentTypeError(f"size {part!r} needs at least one query and one gallery item")
        sizes.append((q, g))
    return sizes


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` wall-clock runs of ``fn``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def yardstick(joint: np.ndarray) -> Callable[[], object]:
    """The NumPy GEMM ``joint · jointᵀ``: whole, or in row blocks when N×N is large."""
    n = joint.shape[0]
    # A separate right operand: NumPy sends ``x @ x.T`` to SYRK, which OpenBLAS runs about 2x
    # slower than GEMM here, and the yardstick is GEMM.
    right = joint.copy().T
    if n * n * 4 <= WHOLE_GEMM_BYTES:
        return lambda: joint @ right
    block = np.empty((YARDSTICK_BLOCK_ROWS, n), dtype=np.float32)

    def blocked() -> None:
        for r0 in range(0, n, YARDSTICK_BLOCK_ROWS):
            rows = joint[r0 : r0 + YARDSTICK_BLOCK_ROWS]
            np.matmul(rows, right, out=block[: rows.shape[0]])

    return blocked


def blas_info() -> list[dict]:
    """NumPy's BLAS as threadpoolctl reports it (kernel architecture, threads)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"internal_api": "unknown (pip install threadpoolctl)"}]
    keys = ("internal_api", "version", "architecture", "num_threads")
    return [{k: pool.get(k) for k in keys} for pool in threadpool_info() if pool.get("user_api") == "blas"]


def measure(q: int, g: int, repeat: int) -> dict:
    """Time re-ranking and the yardstick GEMM at one size."""
    query, gallery = clustered(q, g)
    joint = np.concatenate([query, gallery])
    joint /= np.linalg.norm(joint, axis=1, keepdims=True)
    n = q + g
    gemm_s = best_time(yardstick(joint), repeat)
    rerank_s = best_time(lambda: rerank.k_reciprocal_embeddings(query, gallery), repeat)
    return {
        "queries": q,
        "gallery": g,
        "gemm_gflops": 2.0 * n * n * DIM / gemm_s / 1e9,
        "gemm_s": gemm_s,
        "rerank_s": rerank_s,
        "ratio": rerank_s / gemm_s,
        "blocked_yardstick": n * n * 4 > WHOLE_GEMM_BYTES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=parse_sizes, default=None, help=f"QUERIES+GALLERY,... (default {DEFAULT_SIZES})"
    )
    parser.add_argument("--quick", action="store_true", help=f"tiny smoke run ({QUICK_SIZES})")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per figure, the fastest kept (default 1; 3 with --quick)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    sizes = args.sizes or parse_sizes(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    repeat = args.repeat or (3 if args.quick else 1)
    pinned = [name for name in PINS if name in os.environ]
    if pinned:
        print(
            f"warning: {', '.join(pinned)} set: NumPy's OpenBLAS may run slower kernels than "
            "this CPU allows; run with "
            "`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/bench_kernel.py`"
        )
    blas = blas_info()
    print(
        "NumPy BLAS:",
        "; ".join(", ".join(f"{k}={v}" for k, v in pool.items()) for pool in blas) or "none found",
    )
    results = []
    for q, g in sizes:
        r = measure(q, g, repeat)
        results.append(r)
        kind = "row-blocked" if r["blocked_yardstick"] else "whole"
        verdict = "ok" if r["ratio"] <= TARGET_RATIO else "over target"
        print(
            f"{q:>6} + {g:<7} k_reciprocal_embeddings {r['rerank_s']:8.3f} s | "
            f"NumPy GEMM ({kind}) {r['gemm_s']:7.3f} s, {r['gemm_gflops']:6.1f} GFLOP/s | "
            f"ratio {r['ratio']:5.2f} (target <= {TARGET_RATIO:.1f}: {verdict})"
        )
    if args.json:
        print(json.dumps({"blas": blas, "pinned": pinned, "results": results}, indent=2))


if __name__ == "__main__":
    main()
