"""The CUDA path in one run: environment, GPU ceiling, loader, end-to-end training, syncs, numerics,
forced fp16, resume and embedding the test-set shape (issue 15). Results: JSON + Markdown in ``--out``.

Run it through ``benches/gpu_check.sh`` (which installs the carried wheel when ``dycl`` is not
importable, see docs/benchmarks.md "GPU path")::

    benches/gpu_check.sh                 # on a CUDA machine, <= 8 minutes on one GPU, into $OUT
    benches/gpu_check.sh --dry-run       # the same code on the CPU at tiny sizes (CI, < 60 s)

Every section runs even when an earlier one failed (its error is recorded), and a section is
skipped when too little of the time budget is left for it. Images are synthetic JPEGs in a
manifest (written first, 512 px like DA-Campus); the network is ResNet-50 from random
initialisation (no download), 256 px, batch 128 pairs: the paper's shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Sizes:
    """The shapes of one run: the paper's on a GPU, tiny ones for ``--dry-run``."""

    device: str
    backbone: str
    image_size: int
    batch: int  # pairs per step
    file_size: int  # pixels of the synthetic JPEGs
    train_buildings: int
    test_buildings: int
    views: int
    ceiling_steps: int
    warmup_steps: int
    loader_workers: tuple[int, ...]
    loader_batches: int
    e2e_steps: int
    numerics_images: int
    fp16_steps: int
    resume_size: int
    resume_steps: int
    resume_workers: int
    embed_buildings: int
    embed_views: int
    budget_s: float | None  # None: run every section (the dry run exercises them all)


def gpu_sizes(cpus: int) -> Sizes:
    workers = tuple(sorted({min(8, max(1, cpus - 1)), max(1, cpus - 1)}))  # 8 and 15 on 16 cores
    return Sizes(device="cuda", backbone="resnet50", image_size=256, batch=128, file_size=512,
                 train_buildings=100, test_buildings=40, views=30, ceiling_steps=30, warmup_steps=5,
                 loader_workers=workers, loader_batches=20, e2e_steps=30, numerics_images=2000, fp16_steps=20,
                 resume_size=128, resume_steps=4, resume_workers=4, embed_buildings=300, embed_views=60,
                 budget_s=450.0)


def dry_sizes() -> Sizes:
    return Sizes(device="cpu", backbone="resnet18", image_size=16, batch=4, file_size=32, train_buildings=6,
                 test_buildings=4, views=3, ceiling_steps=1, warmup_steps=0, loader_workers=(1,),
                 loader_batches=1, e2e_steps=1, numerics_images=8, fp16_steps=2, resume_size=16,
                 resume_steps=1, resume_workers=0, embed_buildings=4, embed_views=2, budget_s=None)


# --------------------------------------------------------------------------- synthetic data


def _write_image(job: tuple[str, int, int]) -> None:
    from PIL import Image

    path, size, seed = job
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, size // 16), max(2, size // 16), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
    noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, size=(size, size, 3))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_data(root: Path, sizes: Sizes) -> Path:
    """A manifest (train + test) of synthetic JPEGs; buildings scattered over 1.5 km, so all levels occur."""
    rng = np.random.default_rng(0)
    rows, jobs = ["path,view,building,latitude,longitude,split"], []
    total = sizes.train_buildings + sizes.test_buildings
    lat = 30.0 + rng.uniform(0, 1500 / 111_000, total)
    lon = 120.0 + rng.uniform(0, 1500 / 96_000, total)
    (root / "img").mkdir(parents=True, exist_ok=True)
    for b in range(total):
        split = "train" if b < sizes.train_buildings else "test"
        for view, count in (("satellite", 1), ("drone", sizes.views)):
            for v in range(count):
                name = f"img/{b:04d}_{view}_{v:02d}.jpg"
                rows.append(f"{name},{view},{b},{lat[b]:.7f},{lon[b]:.7f},{split}")
                jobs.append((str(root / name), sizes.file_size, len(jobs)))
    with ProcessPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(_write_image, jobs, chunksize=32))
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


# --------------------------------------------------------------------------- environment


def environment() -> dict[str, Any]:
    import torch

    import dycl
    from dycl.data.loading import SHARED_MEMORY, available_cpus, default_workers

    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "dycl": dycl.__version__,
        "dycl_from": str(Path(dycl.__file__).parent), "cpu_count": os.cpu_count(),
        "cpus_available": available_cpus(), "default_workers": default_workers(),
        "cuda": torch.cuda.is_available(),
    }
    if os.path.isdir(SHARED_MEMORY):
        usage = shutil.disk_usage(SHARED_MEMORY)
        env["dev_shm_gib"] = {"total": usage.total / 2**30, "free": usage.free / 2**30}
    if torch.cuda.is_available():
        from dycl.embed import native_bf16

        props = torch.cuda.get_device_properties(0)
        env.update({
            "gpu": props.name, "gpu_memory_gib": props.total_memory / 2**30,
            "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
            "bf16_native": native_bf16("cuda"), "bf16_with_emulation": torch.cuda.is_bf16_supported(),
            "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "gpus": torch.cuda.device_count(),
        })
    return env


# --------------------------------------------------------------------------- the run


def run_sections(sizes: Sizes, manifest: Path, work: Path, deadline: float) -> dict[str, Any]:
    """Every section in turn; ``work`` holds their run folders (not ``$OUT``: checkpoints stay behind)."""
    import gpu_sections as sections

    results: dict[str, Any] = {}
    plan = [
        ("ceiling", 45, lambda: sections.ceiling(sizes, manifest, work)),
        ("loader", 60, lambda: sections.loader(sizes, manifest, work)),
        ("end_to_end", 45, lambda: sections.end_to_end(sizes, manifest, work)),
        ("syncs", 15, lambda: sections.syncs(sizes, manifest, work)),
        ("numerics", 30, lambda: sections.numerics(sizes, manifest, work)),
        ("fp16", 20, lambda: sections.fp16(sizes, manifest, work)),
        ("resume", 60, lambda: sections.resume(sizes, manifest, work)),
        ("embedding", 45, lambda: sections.embedding(sizes, manifest, work)),
    ]
    for name, needs_s, run in plan:
        left = deadline - time.monotonic()
        if sizes.budget_s is not None and left < needs_s:
            results[name] = {"skipped": f"{left:.0f} s of the budget left, the section needs ~{needs_s} s"}
            continue
        start = time.monotonic()
        try:
            results[name] = run()
        except Exception as exc:  # noqa: BLE001 - one failing section must not hide the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        results[name]["seconds"] = round(time.monotonic() - start, 2)
        failure = f" ({results[name]['error']})" if "error" in results[name] else ""
        print(f"gpu_check: {name}: {results[name]['seconds']:.1f} s{failure}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="run on the CPU at tiny sizes")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-check-out",
                        help="results folder (default $OUT, else ./gpu-check-out)")
    parser.add_argument("--data", help="where to write the synthetic images and the runs (default: a "
                                           "temporary folder, removed at the end)")
    parser.add_argument("--resume-worker", help=argparse.SUPPRESS)  # internal: one resume pair, fresh process
    args = parser.parse_args(argv)
    if args.resume_worker:
        import gpu_sections

        return gpu_sections.resume_worker(json.loads(args.resume_worker))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device (use --dry-run for the CPU check)", file=sys.stderr)
        return 2
    sizes = dry_sizes() if args.dry_run else gpu_sizes(os.cpu_count() or 1)
    start = time.monotonic()
    data_root = Path(args.data) if args.data else Path(__import__("tempfile").mkdtemp(prefix="gpu-check-"))
    report: dict[str, Any] = {"dry_run": args.dry_run, "sizes": asdict(sizes), "environment": environment()}
    try:
        manifest = make_data(data_root, sizes)
        report["data_seconds"] = round(time.monotonic() - start, 2)
        report["sections"] = run_sections(sizes, manifest, data_root, start + (sizes.budget_s or 0.0))
    finally:
        if not args.data:
            shutil.rmtree(data_root, ignore_errors=True)
    report["seconds"] = round(time.monotonic() - start, 2)
    import gpu_report

    gpu_report.write(report, out)
    failed = [name for name, section in report["sections"].items() if "error" in section]
    print(f"gpu_check: {report['seconds']:.0f} s; results in {out}/gpu_check.json and gpu_check.md"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
