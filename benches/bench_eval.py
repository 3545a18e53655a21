"""End-to-end ``dycl-eval --embeddings`` at the DA-Campus test shape (issue 6).

Run from the repository root (after ``make develop``)::

    python benches/bench_eval.py                 # none, k-reciprocal, msrerank paper/reference
    python benches/bench_eval.py --rerank msrerank

Writes the two DESIGN §7 files of a clustered synthetic test set (300
buildings placed like the synthetic campus, one satellite tile and 60 drone
views each, d = 512; Sat→Drone is 300 × 18,000, Drone→Sat 18,000 × 300) and
runs ``dycl-eval --embeddings DIR`` in a fresh process per re-ranking option,
printing the phase times it reports (loading, scoring, re-ranking), its wall
time and its peak resident memory (``VmHWM``). For scale, the same run prints
a NumPy floor: one float32 GEMM of the cosine distances plus a full argsort of
every query's row, the least that a NumPy scorer of one task has to do.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_rerank import campus

from dycl.data.synth import campus_layout
from dycl.evaluate import TASK_FILES
from dycl.geo import level_matrix

CHILD = """
import sys
from dycl.cli import eval_main
code = eval_main(sys.argv[1:])
with open("/proc/self/status") as fh:
    peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
print(f"peak_mb {peak / 1024:.0f}", file=sys.stderr)
raise SystemExit(code)
"""

OPTIONS = {
    "none": [],
    "k-reciprocal": ["--rerank", "k-reciprocal"],
    "msrerank": ["--rerank", "msrerank", "--ks", "20,62,292"],
    "msrerank-reference": ["--rerank", "msrerank", "--ks", "20,62,292", "--msrerank-variant", "reference"],
}


def write_files(folder: Path, n_buildings: int = 300, views: int = 60) -> None:
    satellite, drone = campus(n_buildings, views)
    coords = campus_layout(450, n_buildings, seed=0).coords("test")
    levels = level_matrix(coords)
    sat_ids = np.arange(n_buildings, dtype=np.int64)
    drone_ids = np.repeat(sat_ids, views)
    common = {"levels": levels, "coords": coords, "thresholds": np.asarray([200.0, 500.0])}
    np.savez(folder / TASK_FILES["satellite->drone"], query=satellite, gallery=drone, query_ids=sat_ids,
             gallery_ids=drone_ids, **common)
    np.savez(folder / TASK_FILES["drone->satellite"], query=drone, gallery=satellite, query_ids=drone_ids,
             gallery_ids=sat_ids, **common)


def numpy_floor(query: np.ndarray, gallery: np.ndarray) -> float:
    start = time.perf_counter()
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    dist = 1.0 - q @ g.T
    np.argsort(dist, axis=1, kind="stable")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rerank", choices=tuple(OPTIONS), nargs="+", default=list(OPTIONS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_files(folder)
        with np.load(folder / TASK_FILES["satellite->drone"]) as f:
            sat, drone = f["query"], f["gallery"]
        floor = {"satellite->drone": numpy_floor(sat, drone), "drone->satellite": numpy_floor(drone, sat)}
        print(f"NumPy floor (GEMM + argsort): satellite->drone {floor['satellite->drone']:.2f} s, "
              f"drone->satellite {floor['drone->satellite']:.2f} s")
        for name in args.rerank:
            argv = ["--embeddings", str(folder), "--no-progress", "--output", str(folder / f"{name}.json"),
                    *OPTIONS[name]]
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"dycl-eval {' '.join(argv)} failed:\n{proc.stderr}")
            times = re.search(r"times: (.*)", proc.stderr)
            peak = re.search(r"peak_mb (\d+)", proc.stderr)
            scoring = sum(float(s) for s in re.findall(r"scoring(?: re-ranked)? ([\d.]+) s", proc.stderr))
            print(f"\n== dycl-eval {' '.join(OPTIONS[name]) or '(no re-ranking)'}: wall {wall:.1f} s "
                  f"(process start and file loading included), peak {peak.group(1) if peak else '?'} MB")
            print(f"   phases: {times.group(1) if times else '?'}")
            print(f"   all scoring of both tasks: {scoring:.2f} s "
                  f"({scoring / sum(floor.values()):.2f}x the NumPy floor of both tasks)")


if __name__ == "__main__":
    main()
