"""k-reciprocal re-ranking of a million items with FAISS IVF neighbour lists (dycl.knn).

Run from the repository root (after ``make develop``; FAISS from ``pip install dycl[faiss]``)::

    python benches/bench_million.py                          # 1,000 queries + 999,000 gallery, IVF
    python benches/bench_million.py --agreement-n 100000     # also: IVF vs exact at N = 100k
    python benches/bench_million.py --sizes 10000,30000,100000,300000,1000000 --csv scaling.csv \\
        --png docs/figures/knn_scaling.png                   # time and peak memory per N and backend
    python benches/bench_million.py --n 5000 --agreement-n 5000 --sizes 3000,5000   # smoke run

Data: clustered like ``benches/bench_rerank.py`` (buildings in neighbourhoods, one query tile and
drone-like gallery views per building), d = 512, generated in float32 blocks so that the input is
the only large array. Each measured run is a fresh subprocess, so its peak memory (``ru_maxrss`` of
``resource.getrusage``, and ``VmHWM``) is its own: the input embeddings, the FAISS index, the
neighbour graph, the core's copy of the embeddings and the ``(q, g)`` float32 result.

Agreement (``--agreement-n``): at a size where the exact path is affordable, the re-ranked mAP and
R@1 of IVF and exact neighbours (positives: gallery items of the query's building; a binary AP
computed here) and the share of queries whose re-ranked top-10 lists are identical.

Targets for the full run (the integrator's machine): N = 1M in <= 15 min and <= 8 GB peak.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 512
QUERIES = 1000
VIEWS = 60
BLOCK = 65536
#: The presets of dycl.knn whose cost does not grow as N².
APPROXIMATE = ("faiss-ivf", "faiss-ivf-sq8", "faiss-hnsw")


def clustered(n_query: int, n_gallery: int, dim: int = DIM, seed: int = 0,
              noise: float = 1.0) -> tuple[np.ndarray, ...]:
    """(query, gallery, query building, gallery building): ``VIEWS`` gallery views per building, queries
    spread over the buildings, buildings in neighbourhoods of ten; float32, written block by block."""
    rng = np.random.default_rng(seed)
    n_buildings = -(-n_gallery // VIEWS)
    n_regions = max(1, n_buildings // 10)
    region = rng.standard_normal((n_regions, dim), dtype=np.float32)
    building = region[np.arange(n_buildings) % n_regions]
    building += 0.8 * rng.standard_normal((n_buildings, dim), dtype=np.float32)
    query_ids = np.arange(n_query) * n_buildings // n_query  # spread over the gallery's buildings
    query = building[query_ids] + noise * rng.standard_normal((n_query, dim), dtype=np.float32)
    gallery_ids = np.arange(n_gallery) // VIEWS
    gallery = np.empty((n_gallery, dim), dtype=np.float32)
    for start in range(0, n_gallery, BLOCK):
        stop = min(start + BLOCK, n_gallery)
        gallery[start:stop] = building[gallery_ids[start:stop]]
        gallery[start:stop] += noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
    return query, gallery, query_ids, gallery_ids


def binary_scores(distances: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray,
                  top: int = 10) -> tuple[float, float, np.ndarray]:
    """(mAP, R@1, top-``top`` lists) with positives = same building; ranks ties by index."""
    aps, hits, tops = [], [], []
    for row, qid in zip(distances, query_ids, strict=True):
        order = np.argsort(row, kind="stable")
        positive = gallery_ids[order] == qid
        ranks = np.flatnonzero(positive) + 1
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)) if len(ranks) else 0.0)
        hits.append(bool(positive[0]))
        tops.append(order[:top])
    return float(np.mean(aps)), float(np.mean(hits)), np.array(tops)


def peak_memory_mb() -> dict[str, float]:
    """This process's peak resident memory: ``ru_maxrss`` and ``VmHWM`` (MB)."""
    out = {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                out["vmhwm_mb"] = int(line.split()[1]) / 1024
    return out


class StageClock:
    """A progress callback that times each stage the core or the search reports (first to last report)."""

    def __init__(self) -> None:
        self.spans: dict[str, list[float]] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.spans.setdefault(stage, [now, now])[1] = now

    def seconds(self) -> dict[str, float]:
        return {stage: round(end - begin, 3) for stage, (begin, end) in self.spans.items()}


def run_one(n: int, backend: str, k1: int, k2: int, save: str | None, noise: float = 1.0,
            top: int = 0) -> dict:
    """One measured re-ranking (in this process): stage times, peak memory, optionally the result."""
    from dycl import knn, rerank

    times: dict[str, float] = {}
    start = time.perf_counter()
    q = min(QUERIES, n // 2)
    query, gallery, query_ids, gallery_ids = clustered(q, n - q, noise=noise)
    times["data"] = time.perf_counter() - start
    start = time.perf_counter()
    name, params = knn.preset(backend)
    clock = StageClock()
    if backend == "exact":
        # The core's own path: its neighbour pass (one triangle of the similarity) inside the call.
        result = rerank.k_reciprocal_graph(query, gallery, k1, k2, progress=clock, top=top or None)
        total = time.perf_counter() - start
        times["neighbours"] = clock.seconds().get("neighbour lists", 0.0)
        times["re-ranking"] = total - times["neighbours"]
    else:
        graph = knn.neighbours(query, gallery, max(k1, k2 - 1), name, progress=clock, **params)
        times["neighbours"] = time.perf_counter() - start
        start = time.perf_counter()
        result = rerank.k_reciprocal_graph(query, gallery, k1, k2, knn=graph, progress=clock, top=top or None)
        times["re-ranking"] = time.perf_counter() - start
    if save:
        np.savez(save, distances=result.distances, query_ids=query_ids, gallery_ids=gallery_ids)
    return {"n": n, "backend": backend, "exact": result.exact, "params": result.params, "seconds": times,
            "total_s": sum(times.values()) - times["data"], "stages": clock.seconds(), **peak_memory_mb()}


#: Noise of the generated embeddings (``--noise``) and the kept answer per query (``--top``, 0 = all),
#: passed on to the measured subprocesses.
NOISE = [1.0]
TOP = [0]


def in_subprocess(n: int, backend: str, k1: int, k2: int, save: str | None = None,
                  top: int | None = None) -> dict:
    """:func:`run_one` in a fresh interpreter, so that peak memory is that run's alone."""
    cmd = [sys.executable, __file__, "--child", str(n), backend, str(k1), str(k2), save or "", str(NOISE[0]),
           str(TOP[0] if top is None else top)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_million: the run N={n} {backend} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(run: dict) -> None:
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in run["seconds"].items())
    print(f"N = {run['n']:>9,} {run['backend']:<10} exact={run['exact']!s:<5} {stages}; "
          f"peak {run['ru_maxrss_mb'] / 1024:.2f} GB (ru_maxrss)", flush=True)
    print("    stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in run["stages"].items()), flush=True)


def agreement(n: int, k1: int, k2: int, folder: Path, approximate: str) -> None:
    """IVF (or ``approximate``) against exact at ``n`` items: re-ranked mAP, R@1, identical top-10."""
    scores = {}
    for backend in ("exact", approximate):
        path = folder / f"agreement_{backend}.npz"
        report(in_subprocess(n, backend, k1, k2, str(path), top=0))  # the scores need every column
        with np.load(path) as data:
            scores[backend] = binary_scores(data["distances"], data["query_ids"], data["gallery_ids"])
    (map_e, r1_e, top_e), (map_a, r1_a, top_a) = scores["exact"], scores[approximate]
    same = float(np.mean([np.array_equal(a, b) for a, b in zip(top_e, top_a, strict=True)]))
    print(f"agreement at N = {n:,}: mAP exact {100 * map_e:.2f} / {approximate} {100 * map_a:.2f}, "
          f"R@1 {100 * r1_e:.2f} / {100 * r1_a:.2f}, identical top-10 lists {100 * same:.1f}%")


def scaling(sizes: list[int], backends: list[str], k1: int, k2: int, csv_path: Path,
            png: Path | None, exact_up_to: int) -> None:
    rows = []
    for n in sizes:
        for backend in backends:
            if backend not in APPROXIMATE and n > exact_up_to:
                print(f"N = {n:>9,} {backend:<10} skipped (exact search above --exact-up-to)")
                continue
            run = in_subprocess(n, backend, k1, k2)
            report(run)
            rows.append({"N": n, "backend": backend, "exact": run["exact"],
                         "time_s": round(run["total_s"], 3), "peak_mb": round(run["ru_maxrss_mb"], 1)})
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {csv_path}")
    if png is not None:
        plot(rows, png)


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == backend]
        ns = [r["N"] for r in mine]
        ax_t.loglog(ns, [r["time_s"] for r in mine], "o-", label=backend)
        ax_m.loglog(ns, [r["peak_mb"] / 1024 for r in mine], "o-", label=backend)
    ax_t.set(xlabel="N = q + g items", ylabel="neighbours + re-ranking (s)", title="time")
    ax_m.set(xlabel="N = q + g items", ylabel="peak RSS (GB)", title="peak memory")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        n, backend, k1, k2, save, noise, top = sys.argv[2:9]
        print(json.dumps(run_one(int(n), backend, int(k1), int(k2), save or None, float(noise), int(top))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="items of the main run (default 1,000,000)")
    p.add_argument("--backend", default="faiss-ivf-sq8",
                   help="dycl.knn preset of the main run (default faiss-ivf)")
    p.add_argument("--k1", type=int, default=20)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--agreement-n", type=int, default=0, metavar="N",
                   help="also compare with exact neighbours at N items (e.g. 100000); 0 = skip")
    p.add_argument("--sizes", default="", metavar="N,N,...", help="scaling mode: these sizes, no main run")
    p.add_argument("--backends", default="faiss-ivf-sq8,exact",
                   help="scaling mode: presets (default faiss-ivf-sq8,exact)")
    p.add_argument("--exact-up-to", type=int, default=100_000, metavar="N",
                   help="scaling mode: run exact searches (exact, faiss, torch) only up to N items "
                        "(default 100000; the N² work beyond takes hours on a CPU)")
    p.add_argument("--noise", type=float, default=1.0,
                   help="per-view noise of the generated embeddings (default 1.0, as bench_rerank.py); "
                        "larger makes retrieval harder and the agreement more telling")
    p.add_argument("--top", type=int, default=0, metavar="K",
                   help="main run and scaling: keep each query's best K gallery items (rerank's top=) "
                        "instead of the q x g answer (4 GB at 1M); 0 = the full answer (default)")
    p.add_argument("--csv", type=Path, default=Path("knn_scaling.csv"))
    p.add_argument("--png", type=Path, default=None)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_million"), help="scratch folder")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    NOISE[0] = args.noise
    TOP[0] = max(0, args.top)
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
        scaling(sizes, args.backends.split(","), args.k1, args.k2, args.csv, args.png, args.exact_up_to)
    else:
        report(in_subprocess(args.n, args.backend, args.k1, args.k2))
    if args.agreement_n:
        agreement(args.agreement_n, args.k1, args.k2, args.work, args.backend)


if __name__ == "__main__":
    main()
