"""The measurements of benches/gpu_check.py, one function per section (each returns a JSON-able dict).

Every section builds what it measures from the project's own pieces (``TrainConfig``,
``Trainer``, ``TrainData``, ``extract_embeddings``, ``run_training``), so the numbers are those
of ``dycl-train`` / ``dycl-eval`` and a change there shows here.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dycl.data import open_split, open_train_test
from dycl.data.datasets import ImageSet, PairDataset
from dycl.data.loading import default_workers
from dycl.data.transforms import BatchNormalizer, eval_transforms, loader_generator, train_transforms
from dycl.distributed import DistInfo
from dycl.embed import autocast_dtype, extract_embeddings
from dycl.models import build_model
from dycl.train import SeededAugmentation, TrainConfig, Trainer, validate_config
from dycl.train.data import EpochBatches, TrainData


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dist(sizes) -> DistInfo:
    device = torch.device(sizes.device, 0) if sizes.device == "cuda" else torch.device("cpu")
    return DistInfo(0, 1, 0, device)


def _config(sizes, manifest: Path, work: Path, name: str, **overrides) -> TrainConfig:
    values = {"data_dir": str(manifest), "output": str(work / "runs" / name), "backbone": sizes.backbone,
              "pretrained": False, "image_size": sizes.image_size, "batch_size": sizes.batch, "epochs": 2,
              "device": sizes.device, "progress": False, "workers": 0}
    return validate_config(TrainConfig(**{**values, **overrides}))


def _trainer(sizes, manifest: Path, work: Path, name: str, **overrides) -> Trainer:
    config = _config(sizes, manifest, work, name, **overrides)
    train, test = open_train_test(config.data_dir)
    return Trainer(config, train, test, _dist(sizes))


def _device_batch(trainer: Trainer, sizes, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A uint8 batch of pairs already on the device, as the loader would deliver it."""
    g = torch.Generator().manual_seed(seed)
    shape = (sizes.batch, 3, sizes.image_size, sizes.image_size)
    sat, drone = (torch.randint(0, 256, shape, dtype=torch.uint8, generator=g) for _ in range(2))
    labels = torch.randint(0, trainer.train_split.num_buildings, (sizes.batch,), generator=g)
    return tuple(t.to(trainer.device) for t in (sat, drone, labels))


# --------------------------------------------------------------------------- the GPU alone


def ceiling(sizes, manifest: Path, work: Path) -> dict[str, Any]:
    """Training steps on batches already on the GPU: what the loader has to keep up with."""
    trainer = _trainer(sizes, manifest, work, "ceiling")
    batch = _device_batch(trainer, sizes)
    for _ in range(sizes.warmup_steps):  # cuDNN benchmarking, allocator warm-up
        trainer.train_step(batch)
    _sync(trainer.device)
    if trainer.on_cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    start = time.perf_counter()
    for _ in range(sizes.ceiling_steps):
        loss = trainer.train_step(batch)
    _sync(trainer.device)
    seconds = time.perf_counter() - start
    images = sizes.ceiling_steps * 2 * sizes.batch
    result = {"steps": sizes.ceiling_steps, "images_per_s": images / seconds,
              "step_ms": 1000 * seconds / sizes.ceiling_steps, "amp_dtype": str(trainer.amp_dtype),
              "channels_last": trainer.on_cuda, "loss_finite": bool(torch.isfinite(loss))}
    if trainer.on_cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(trainer.device) / 2**30
    return result


# --------------------------------------------------------------------------- the loader alone


def _float32_loader(trainer_data: TrainData, config: TrainConfig, workers: int, pin: bool):
    """The pipeline before issue 15: float32 normalised in the workers, tiles decoded for every pair."""
    from torch.utils.data import DataLoader

    split = trainer_data.dataset.base.split
    size, rotation = config.image_size, config.rotation
    base = PairDataset(split, satellite_transform=train_transforms("satellite", size, rotation=rotation),
                       drone_transform=train_transforms("drone", size, rotation=rotation))
    return DataLoader(SeededAugmentation(base, config.seed), batch_sampler=EpochBatches(trainer_data.sampler),
                      num_workers=workers, pin_memory=pin, generator=loader_generator(config.seed))


def _loader_rate(sizes, manifest: Path, work: Path, workers: int, kind: str) -> dict[str, Any]:
    config = _config(sizes, manifest, work, "loader", workers=workers)
    dist = _dist(sizes)
    train, _ = open_train_test(config.data_dir)
    data = TrainData(config, train, dist)
    on_cuda = dist.device.type == "cuda"
    loader = data.loader(0) if kind == "uint8" else _float32_loader(data, config, workers, on_cuda)
    start = time.perf_counter()
    iterator = iter(loader)
    first = None
    count = 0
    for batch in iterator:
        images = [data.images(batch[0]), data.images(batch[1])]  # to the device, normalised there
        if first is None:
            _sync(dist.device)
            first = time.perf_counter()
        else:
            count += 1
        if count >= sizes.loader_batches:
            break
    _sync(dist.device)
    seconds = time.perf_counter() - first
    del iterator, images
    data.close()
    return {"workers": workers, "batch_dtype": kind, "batches": count,
            "images_per_s": count * 2 * sizes.batch / seconds, "first_batch_s": first - start,
            "batch_mib": 2 * sizes.batch * 3 * sizes.image_size**2 * (1 if kind == "uint8" else 4) / 2**20}


def loader(sizes, manifest: Path, work: Path) -> dict[str, Any]:
    """Images per second the training loader delivers to the device, float32 (old) vs uint8 (new)."""
    runs = [_loader_rate(sizes, manifest, work, w, kind) for w in sizes.loader_workers
            for kind in ("float32", "uint8")]
    return {"runs": runs}


# --------------------------------------------------------------------------- the real thing


def end_to_end(sizes, manifest: Path, work: Path) -> dict[str, Any]:
    """Two epochs of the real loop with the default workers; the second is the steady state."""
    trainer = _trainer(sizes, manifest, work, "e2e", workers=None, max_steps_per_epoch=sizes.e2e_steps)
    try:
        first = trainer.train_epoch(0)
        second = trainer.train_epoch(1)
    finally:
        trainer.close()
    return {"workers": trainer.config.workers, "steps": second.steps,
            "first_epoch_images_per_s": first.images_per_s, "images_per_s": second.images_per_s,
            "loss": second.loss}


def syncs(sizes, manifest: Path, work: Path) -> dict[str, Any]:
    """Synchronising CUDA calls of one training step (``torch.cuda.set_sync_debug_mode("warn")``)."""
    trainer = _trainer(sizes, manifest, work, "syncs", workers=1)
    try:
        batch = next(iter(trainer.epoch_loader(0)))
        trainer.train_step(batch)
        if not trainer.on_cuda:
            trainer.train_step(batch)
            return {"method": "none on the CPU (tests/sync_counter.py counts them there)", "syncs": None}
        _sync(trainer.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                trainer.train_step(batch)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        messages = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
        return {"method": "torch.cuda.set_sync_debug_mode('warn')", "syncs": len(messages),
                "amp_dtype": str(trainer.amp_dtype), "messages": messages[:10]}
    finally:
        trainer.close()


def numerics(sizes, manifest: Path, work: Path) -> dict[str, Any]:
    """fp32 embeddings and loss under autocast; autocast vs fp32 evaluation: top-1 agreement, errors."""
    trainer = _trainer(sizes, manifest, work, "numerics")
    batch = _device_batch(trainer, sizes)
    with torch.no_grad(), torch.autocast(trainer.device.type, dtype=trainer.amp_dtype,
                                         enabled=trainer.amp_dtype is not None):
        emb = trainer.model(trainer.data.images(batch[1]))
    with torch.no_grad():
        loss = trainer.batch_loss(batch)
    split = trainer.train_split
    count = min(sizes.numerics_images, split.num_drone)
    transform = eval_transforms(sizes.image_size, normalize=False)
    queries = ImageSet(split.drone_paths[:count], split.drone_buildings[:count], transform)
    gallery = ImageSet(split.satellite_paths, np.arange(split.num_buildings), transform)
    kw = {"batch_size": 2 * sizes.batch, "device": trainer.device, "workers": default_workers(),
          "progress": False}
    full = [extract_embeddings(trainer.model, s, amp=False, **kw) for s in (queries, gallery)]
    mixed = [extract_embeddings(trainer.model, s, amp=True, **kw) for s in (queries, gallery)]
    sim_full, sim_mixed = full[0] @ full[1].T, mixed[0] @ mixed[1].T
    rng = np.random.default_rng(0)
    j, k = rng.integers(0, sim_full.shape[1], (2, 200))
    flips = (np.sign(sim_full[:, j] - sim_full[:, k]) != np.sign(sim_mixed[:, j] - sim_mixed[:, k])).mean()
    return {"embedding_dtype": str(emb.dtype), "loss_dtype": str(loss.dtype),
            "loss_finite": bool(torch.isfinite(loss)), "eval_amp_dtype": str(trainer.amp_dtype),
            "images": count + split.num_buildings,
            "top1_agreement": float((sim_full.argmax(1) == sim_mixed.argmax(1)).mean()),
            "max_cosine_error": float(np.abs(sim_full - sim_mixed).max()),
            "pairwise_order_flips": float(flips)}


def fp16(sizes, manifest: Path, work: Path) -> dict[str, Any]:
    """Training forced to fp16 with loss scaling (the pre-Ampere path): scale, skipped steps, loss."""
    trainer = _trainer(sizes, manifest, work, "fp16")
    # Forced, as autocast_dtype chooses on a card without native bf16. (The dry run keeps float32 with
    # the scaler on: CPU fp16 convolutions are emulated and far too slow; the scaler's path is the same.)
    trainer.amp_dtype = torch.float16 if trainer.on_cuda else None
    trainer.scaler = torch.amp.GradScaler(trainer.device.type)
    scales, losses, skipped = [], [], 0
    for step in range(sizes.fp16_steps):
        before = trainer.scaler.get_scale()
        with warnings.catch_warnings():  # a skipped first step makes the scheduler warn; expected here
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            loss = float(trainer.train_step(_device_batch(trainer, sizes, seed=step)))
        after = trainer.scaler.get_scale()
        skipped += after < before  # the scaler halves its scale when it skips a step (inf/nan gradients)
        scales.append(after)
        losses.append(loss)
    return {"dtype": str(trainer.amp_dtype), "steps": sizes.fp16_steps, "scales": scales,
            "skipped_steps": int(skipped),
            "losses_finite": all(map(math.isfinite, losses)), "first_loss": losses[0],
            "last_loss": losses[-1]}


# --------------------------------------------------------------------------- resume and embedding


def resume(sizes, manifest: Path, work: Path) -> dict[str, Any]:
    """An uninterrupted run vs stopped after epoch 1 and resumed: default, then ``--deterministic``.

    Each variant runs in a fresh process (the deterministic cuBLAS workspace must be set before
    cuBLAS starts, and the deterministic flags are process-wide).
    """
    script = Path(__file__).with_name("gpu_check.py")
    variants = {}
    # The dry run takes the default variant only (tests/test_cuda_path.py covers the switch on the CPU).
    for deterministic in ((False,) if sizes.device == "cpu" else (False, True)):
        name = "deterministic" if deterministic else "default"
        spec = {"manifest": str(manifest), "out": str(work / "runs" / f"resume-{name}"),
                "sizes": asdict(sizes), "deterministic": deterministic}
        done = subprocess.run([sys.executable, str(script), "--resume-worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"resume worker ({name}) failed: {done.stderr.strip().splitlines()[-1:]}")
        variants[name] = json.loads(Path(spec["out"], "resume.json").read_text())
    return variants


def resume_worker(spec: dict[str, Any]) -> int:
    """One variant of :func:`resume` (in its own process): three ``run_training`` calls, then compare."""
    from dycl.train import run_training

    sizes, out = spec["sizes"], Path(spec["out"])
    common = {"data_dir": spec["manifest"], "backbone": "resnet18", "pretrained": False,
              "image_size": sizes["resume_size"], "batch_size": sizes["batch"], "epochs": 2,
              "max_steps_per_epoch": sizes["resume_steps"], "device": sizes["device"],
              "workers": sizes["resume_workers"],
              "eval_batch_size": 2 * sizes["batch"], "progress": False,
              "deterministic": spec["deterministic"]}
    whole, split = out / "whole", out / "split"
    run_training({**common, "output": str(whole)}, out=io.StringIO())
    run_training({**common, "output": str(split), "stop_after_epoch": 1}, out=io.StringIO())
    run_training({"output": str(split), "device": sizes["device"], "progress": False}, resume=True,
                 out=io.StringIO())
    a = torch.load(whole / "last.pt", map_location="cpu", weights_only=True)["model"]
    b = torch.load(split / "last.pt", map_location="cpu", weights_only=True)["model"]
    gaps = [float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()]
    result = {"bit_exact_weights": all(torch.equal(a[k], b[k]) for k in a),
              "max_weight_difference": max(gaps),
              "same_metrics": (whole / "metrics.json").read_bytes() == (split / "metrics.json").read_bytes(),
              "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    (out / "resume.json").write_text(json.dumps(result))
    return 0


def embedding(sizes, manifest: Path, work: Path) -> dict[str, Any]:
    """Embedding the test-set shape (B satellite tiles + B × views drone images) as dycl-eval does."""
    device = _dist(sizes).device
    model = build_model(sizes.backbone, pretrained=False).to(device).eval()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    split = open_split(str(manifest), "test")
    count = sizes.embed_buildings * (1 + sizes.embed_views)
    pool = list(split.drone_paths) + list(split.satellite_paths)
    paths = [pool[i % len(pool)] for i in range(count)]  # the shape of the test set, files reused
    transform = eval_transforms(sizes.image_size, normalize=False)
    images = ImageSet(paths, np.zeros(count, dtype=np.int64), transform)
    batch, workers = 2 * sizes.batch, default_workers()
    start = time.perf_counter()
    extract_embeddings(model, images, batch_size=batch, device=device, workers=workers, progress=False)
    _sync(device)
    total = time.perf_counter() - start
    normalize = BatchNormalizer(device)
    shape = (batch, 3, sizes.image_size, sizes.image_size)
    x = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    amp = autocast_dtype(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        model(normalize(x))  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(-(-count // batch)):
            model(normalize(x.contiguous(memory_format=torch.channels_last)))
        _sync(device)
    gpu = time.perf_counter() - start
    return {"images": count, "workers": workers, "embed_seconds": total, "gpu_only_seconds": gpu,
            "images_per_s": count / total, "bound": "loader" if total > 1.25 * gpu else "GPU"}
