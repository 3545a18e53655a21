"""The training loop of one run: model, losses, optimisers, data, checkpoints, evaluation.

Reproducibility: every random choice is a pure function of the seed — the
network and proxies are initialised after ``torch.manual_seed(seed)``, the
batches of epoch ``e`` are a function of ``(seed, e)`` (the batch sampler),
and the augmentation of pair ``i`` in epoch ``e`` is drawn from a generator
seeded with ``(seed, e, i)``, independently of workers and ranks. A CPU run
stopped after any epoch and resumed therefore ends with exactly the weights
and metrics of an uninterrupted run.

Multi-GPU / multi-node (``torchrun``): each rank embeds its share of the global
batch, the embeddings are gathered with gradients
(:func:`dycl.distributed.all_gather_with_grad`) so every loss sees the global
batch, and DistributedDataParallel averages the gradients. Evaluation runs on
rank 0 while the other ranks wait.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import __version__
from .._files import json_safe, write_json_atomic
from .._progress import stderr_is_terminal
from ..distributed import DistInfo, all_gather_no_grad, all_gather_with_grad, barrier
from ..embed import autocast_dtype, embed_split
from ..losses import batch_levels, build_loss, make_proxy_optimizer
from ..models import build_model, freeze_batchnorm
from ..runs import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    EMBEDDINGS_DIR,
    METRICS_FILE,
    RunLog,
    plain,
    run_complete,
    save_checkpoint_atomic,
)
from ..tasks import TASKS, save_task_embeddings, score_tasks
from .config import TrainConfig, data_fingerprint


class SeededAugmentation(Dataset):
    """Wraps a dataset so that item ``i`` of epoch ``e`` is drawn with a generator seeded by ``(seed, e, i)``.

    The random transforms (torchvision v2 draws from the global torch
    generator) then do not depend on the order in which items are loaded,
    the number of DataLoader workers or the number of ranks. The caller's RNG
    state is restored after each item. Set :attr:`epoch` before creating the
    epoch's DataLoader iterator (workers receive a copy of the dataset then).
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def item_seed(self, index: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1, np.uint64)[0]
                   & 0x7FFF_FFFF_FFFF_FFFF)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.item_seed(index))
            return self.base[index]


def _capture_rng(cuda: bool) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": plain(np.random.get_state()),
             "torch": torch.get_rng_state()}
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _mean_h_ap(results: Mapping[str, Mapping[str, Any]]) -> float:
    values = [float(results[t]["H-AP"]) for t in TASKS if t in results]
    return float(np.mean(values)) if values else float("nan")


@dataclass
class EpochStats:
    epoch: int
    steps: int
    loss: float
    terms: dict[str, float]
    images_per_s: float
    seconds: float
    lr: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Model, losses, optimisers, data and the loops of one run.

    Build it with a validated :class:`TrainConfig`, the two splits and the
    process's :class:`~dycl.distributed.DistInfo`. :meth:`fit` runs the
    remaining epochs; :meth:`train_step` and :meth:`epoch_loader` are public
    for tests and custom loops.
    """

    def __init__(self, config: TrainConfig, train_split, test_split, dist: DistInfo,
                 resume_state: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.train_split = train_split
        self.test_split = test_split
        self.dist = dist
        self.device = dist.device
        self.on_cuda = self.device.type == "cuda"
        self.amp_dtype = autocast_dtype(self.device, config.amp)
        self.n_levels = len(config.thresholds) + 1
        self.output = Path(config.output)
        # The order of these steps is part of reproducibility: model, then loss, draw from the seed.
        self._build_data()
        self._build_model_and_loss(fresh=resume_state is None)
        self._build_optimizers()
        self.train_model: nn.Module = self.model
        if dist.distributed:
            # Frozen BatchNorm changes no buffers, so there is nothing to broadcast; trained
            # BatchNorm normalises with per-rank batch statistics (DDP's usual behaviour) and
            # takes rank 0's running statistics. The proxies stay outside DDP.
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.on_cuda else None,
                broadcast_buffers=not config.freeze_batchnorm,
            )
        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.last_metrics: dict[str, Any] | None = None
        self.best_metrics: dict[str, Any] | None = None
        self.best_epoch: int | None = None
        if resume_state is not None:
            self.load_state(resume_state)

    def _build_data(self) -> None:
        """Batches are a function of (seed, epoch), augmentations of (seed, epoch, pair)."""
        from ..data import PairDataset, make_batch_sampler, train_transforms

        config, split, world = self.config, self.train_split, self.dist.world_size
        if config.batch_size % world:
            raise ValueError(f"batch_size: the global batch ({config.batch_size} pairs) must divide by the "
                             f"number of processes ({world})")
        if config.batch_size > split.num_pairs:
            raise ValueError(f"batch_size: {config.batch_size} pairs is larger than the training set "
                             f"({split.num_pairs} pairs in {config.data_dir})")
        # The samplers take the per-rank batch; rank r gets the r-th slice of each global batch.
        options = {"drop_last": True} if config.sampler == "random" else {}
        self.sampler = make_batch_sampler(config.sampler, split, config.batch_size // world, seed=config.seed,
                                          rank=self.dist.rank, world_size=world, thresholds=config.thresholds,
                                          **options)
        base = PairDataset(
            split,
            satellite_transform=train_transforms("satellite", config.image_size, rotation=config.rotation),
            drone_transform=train_transforms("drone", config.image_size, rotation=config.rotation),
        )
        self.dataset = SeededAugmentation(base, config.seed)
        self.steps_per_epoch = len(self.sampler)
        if config.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch_size: {config.batch_size} pairs leaves no full batch in an epoch")
        self.total_steps = self.steps_per_epoch * config.epochs

    def _build_model_and_loss(self, fresh: bool) -> None:
        """Initialised from the seed, identically on every rank."""
        config = self.config
        torch.manual_seed(config.seed)
        self.model = build_model(config.backbone, embedding_dim=config.embedding_dim,
                                 pretrained=config.pretrained and fresh,
                                 weights=config.weights if fresh else None,
                                 trusted=config.trust_checkpoint)
        if config.freeze_batchnorm:
            freeze_batchnorm(self.model)
        self.model.to(self.device)
        if self.on_cuda:
            self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        self.loss = build_loss(
            config.loss, num_buildings=self.train_split.num_buildings, embedding_dim=config.embedding_dim,
            levels=self.n_levels, options=config.loss_options,
        ).to(self.device)  # before the proxy optimiser (see dycl.losses.cluster)
        self.level_table = torch.as_tensor(self.train_split.levels(config.thresholds), dtype=torch.long,
                                           device=self.device)

    def _build_optimizers(self) -> None:
        config = self.config
        head = list(self.model.fc.parameters())
        head_ids = {id(p) for p in head}
        backbone = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        self.optimizer = torch.optim.Adam(
            [{"params": backbone, "lr": config.lr, "name": "backbone"},
             {"params": head, "lr": config.head_lr, "name": "head"}],
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total_steps)
        proxies = self.loss.proxy_parameters()
        self.proxy_optimizer = self.proxy_scheduler = None
        if proxies:
            self.proxy_optimizer, self.proxy_scheduler = make_proxy_optimizer(
                proxies, self.total_steps, lr=config.proxy_lr, lr_min=config.proxy_lr_min)
        # fp16 needs loss scaling; bf16 and float32 do not.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # ----------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "config": self.config.to_dict(),
            "data": data_fingerprint(self.train_split, self.test_split),
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "proxy_optimizer": self.proxy_optimizer.state_dict() if self.proxy_optimizer else None,
            "proxy_scheduler": self.proxy_scheduler.state_dict() if self.proxy_scheduler else None,
            "scaler": self.scaler.state_dict(),
            "sampler": plain(self.sampler.state_dict()),
            "rng": _capture_rng(self.on_cuda),
            "metrics": {"last": json_safe(self.last_metrics), "best": json_safe(self.best_metrics),
                        "best_epoch": self.best_epoch},
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.proxy_optimizer is not None:
            self.proxy_optimizer.load_state_dict(state["proxy_optimizer"])
            self.proxy_scheduler.load_state_dict(state["proxy_scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        saved_sampler = state["sampler"]
        if saved_sampler.get("world_size") == self.dist.world_size:
            self.sampler.load_state_dict(saved_sampler)
        # else: resumed on another number of processes; the schedule is a function of (seed, epoch).
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        metrics = state.get("metrics") or {}
        self.last_metrics = metrics.get("last")
        self.best_metrics = metrics.get("best")
        self.best_epoch = metrics.get("best_epoch")
        _restore_rng(state["rng"])

    # ----------------------------------------------------------------- training

    def epoch_loader(self, epoch: int) -> DataLoader:
        """The DataLoader of ``epoch`` (0-based): this rank's share of the epoch's global batches."""
        from ..data import loader_generator, seed_worker

        self.sampler.set_epoch(epoch)
        self.dataset.epoch = epoch
        workers = self.config.workers or 0
        return DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=workers,
                          pin_memory=self.on_cuda,
                          worker_init_fn=seed_worker if workers else None,
                          generator=loader_generator(self.config.seed, epoch, self.dist.rank),
                          persistent_workers=False)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=self.on_cuda)
        if self.on_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def batch_loss(self, batch) -> torch.Tensor:
        """The loss of the global batch that this rank's share ``batch`` belongs to (with its graph).

        Every rank embeds its share; the embeddings are gathered with gradients
        and every rank computes the same loss on the global batch (see
        :mod:`dycl.distributed`).
        """
        satellite, drone, labels = batch[0], batch[1], batch[2]
        satellite, drone = self._to_device(satellite), self._to_device(drone)
        labels = labels.to(self.device, non_blocking=self.on_cuda).long()
        self.train_model.train()
        amp = self.amp_dtype is not None
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=amp):
            emb_sat, emb_drone = self.train_model(satellite, drone)
        emb_sat = all_gather_with_grad(emb_sat.float())
        emb_drone = all_gather_with_grad(emb_drone.float())
        labels = all_gather_no_grad(labels)
        levels = batch_levels(self.level_table, labels, labels)
        return self.loss(emb_sat, emb_drone, levels, labels, labels)

    def train_step(self, batch) -> torch.Tensor:
        """One optimisation step on this rank's share of a global batch; returns the global loss, detached."""
        loss = self.batch_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.proxy_optimizer is not None:
            self.proxy_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        if self.proxy_optimizer is not None:
            self.scaler.step(self.proxy_optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.proxy_scheduler is not None:
            self.proxy_scheduler.step()
        self.global_step += 1
        return loss.detach()

    def current_lrs(self) -> dict[str, float]:
        groups = self.optimizer.param_groups
        lrs = {group.get("name", str(i)): float(group["lr"]) for i, group in enumerate(groups)}
        if self.proxy_optimizer is not None:
            lrs["proxies"] = float(self.proxy_optimizer.param_groups[0]["lr"])
        return lrs

    def train_epoch(self, epoch: int, writer=None) -> EpochStats:
        """Train one epoch (0-based ``epoch``) and return its statistics (global batch).

        A bar on a terminal; in a log file, one line per epoch instead of ``\\r`` updates.
        """
        from tqdm.auto import tqdm

        cfg = self.config
        show = cfg.progress and self.dist.is_main
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not (show and stderr_is_terminal()), dynamic_ncols=True, file=sys.stderr)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        term_sums: dict[str, torch.Tensor] = {}
        images_per_step = 2 * cfg.batch_size  # a satellite and a drone image per pair, all ranks
        start = time.perf_counter()
        steps = 0
        iterator: Iterator = iter(self.epoch_loader(epoch))
        try:
            for batch in iterator:
                loss = self.train_step(batch)
                steps += 1
                loss_sum += loss.double()
                for name, value in self.loss.last_terms.items():
                    term_sums[name] = term_sums.get(name, torch.zeros_like(loss_sum)) + value.double()
                if not bar.disable and (steps % 5 == 0 or steps == self.steps_per_epoch or steps == 1):
                    rate = steps * images_per_step / (time.perf_counter() - start)
                    bar.set_postfix(loss=f"{float(loss):.4f}", img_s=f"{rate:.1f}")
                if writer is not None and (steps % 10 == 0 or steps == 1):
                    writer.add_scalar("train/loss_step", float(loss), self.global_step)
                bar.update(1)
                if steps >= self.steps_per_epoch:
                    break
        finally:
            del iterator
            bar.close()
        seconds = time.perf_counter() - start
        mean_loss = float(loss_sum) / max(steps, 1)
        if not math.isfinite(mean_loss):
            raise ValueError(f"training diverged in epoch {epoch + 1}: the loss is {mean_loss}; lower --lr "
                             "(the checkpoint of the previous epoch is kept)")
        stats = EpochStats(epoch=epoch + 1, steps=steps, loss=mean_loss,
                           terms={k: float(v) / max(steps, 1) for k, v in term_sums.items()},
                           images_per_s=steps * images_per_step / seconds if seconds > 0 else float("nan"),
                           seconds=seconds, lr=self.current_lrs())
        if show and bar.disable:
            print(f"dycl-train: epoch {stats.epoch}/{cfg.epochs}: {steps} steps, loss {mean_loss:.4f}, "
                  f"{stats.images_per_s:.1f} img/s, {seconds:.1f} s", file=sys.stderr, flush=True)
        return stats

    # ----------------------------------------------------------------- evaluation

    def embed_test_split(self) -> tuple[np.ndarray, np.ndarray]:
        """Satellite ``(B, d)`` and drone ``(N, d)`` embeddings of the test split (this process only)."""
        cfg = self.config
        return embed_split(self.model, self.test_split, cfg.image_size, batch_size=cfg.eval_batch_size,
                           device=self.device, amp=cfg.amp, workers=cfg.workers or 0,
                           progress=cfg.progress and self.dist.is_main)

    def evaluate(self) -> tuple[dict[str, dict[str, float]], np.ndarray, np.ndarray]:
        """Embed the test split and score both tasks (call on the main process)."""
        sat, drone = self.embed_test_split()
        return score_tasks(sat, drone, self.test_split, self.config.thresholds, geo_metrics=True), sat, drone

    def _record_eval(self, results: dict[str, dict[str, float]]) -> None:
        self.last_metrics = results
        if self.best_metrics is None or _mean_h_ap(results) > _mean_h_ap(self.best_metrics):
            self.best_metrics = results
            self.best_epoch = self.epoch

    # ----------------------------------------------------------------- the loop

    def fit(self) -> dict[str, dict[str, float]] | None:
        """Train the remaining epochs, checkpointing after each; evaluate at the end.

        Returns the final metrics on the main process (None on other ranks,
        and when ``stop_after_epoch`` ends the run early).
        """
        cfg = self.config
        main = self.dist.is_main
        log = RunLog(self.output, self.global_step) if main else None
        try:
            while self.epoch < cfg.epochs:
                if cfg.stop_after_epoch is not None and self.epoch >= cfg.stop_after_epoch:
                    if main:
                        print(f"dycl-train: stopped after epoch {self.epoch} as asked; "
                              "continue with --resume", file=sys.stderr)
                    return None
                self._fit_epoch(log)
                barrier()
            if main and not run_complete(self.output):
                # Resumed after the last checkpoint but before every final file was written.
                results, sat, drone = self.evaluate()
                self._record_eval(results)
                self._write_final(results, sat, drone)
            barrier()
            return self.last_metrics if main else None
        finally:
            if log is not None:
                log.close()

    def _fit_epoch(self, log: RunLog | None) -> None:
        """One epoch, its evaluation when due, the log lines and the checkpoint (in that order)."""
        cfg = self.config
        stats = self.train_epoch(self.epoch, log.writer if log is not None else None)
        self.epoch += 1
        if log is None:
            return
        final = self.epoch == cfg.epochs
        results = None
        if final or (cfg.eval_every and self.epoch % cfg.eval_every == 0):
            results, sat, drone = self.evaluate()
            self._record_eval(results)
        # Log, then checkpoint: lines of an epoch whose checkpoint never landed are dropped on
        # resume (see dycl.runs.truncate_log), so no epoch is logged twice.
        log.epoch(stats, self.global_step)
        if results is not None:
            log.evaluation(results, self.epoch, self.global_step)
        save_checkpoint_atomic(self.output / CHECKPOINT_FILE, self.state_dict())
        if results is not None and not final:
            summary = ", ".join(f"{t} H-AP {100 * results[t]['H-AP']:.2f}" for t in TASKS)
            print(f"dycl-train: epoch {self.epoch}: {summary}", file=sys.stderr)
        if final:
            self._write_final(results, sat, drone)

    def _write_final(self, results, sat: np.ndarray, drone: np.ndarray) -> None:
        """The embeddings, then ``metrics.json``: the completion marker comes last (see dycl.runs)."""
        save_task_embeddings(self.output / EMBEDDINGS_DIR, sat, drone, self.test_split,
                             self.config.thresholds)
        write_json_atomic(self.output / METRICS_FILE, {task: results[task] for task in TASKS})


__all__ = ["EpochStats", "SeededAugmentation", "Trainer"]
