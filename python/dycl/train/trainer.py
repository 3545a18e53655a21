"""The training loop of one run: model, losses, optimisers, data, checkpoints, evaluation.

Reproducibility: every random choice is a pure function of the seed — the
network and proxies are initialised after ``torch.manual_seed(seed)``, the
batches of epoch ``e`` are a function of ``(seed, e)`` (the batch sampler),
and the augmentation of pair ``i`` in epoch ``e`` is drawn from a generator
seeded with ``(seed, e, i)``, independently of workers and ranks (see
:mod:`dycl.train.data`). A CPU run stopped after any epoch and resumed
therefore ends with exactly the weights and metrics of an uninterrupted run.

On CUDA a resumed run is statistically equivalent, not bit-exact, unless
``deterministic`` is set (see :mod:`dycl.train.reproducibility`).

Multi-GPU / multi-node (``torchrun``): the batch sampler builds the global
batch of each step and every rank embeds its slice; the embeddings are
gathered with gradients (:func:`dycl.distributed.all_gather_with_grad`) so
every loss sees the global batch; DistributedDataParallel averages the
network's gradients and the proxies' gradients are all-reduced too
(:func:`dycl.distributed.average_gradients`), then checked equal on every rank
before each checkpoint. Evaluation is sharded: each rank embeds its share of
the test images, rank 0 gathers and scores them; an error on any rank is
raised on all of them at once.

No host-device synchronisation happens inside a training step: the losses'
value checks run once, on the level table, when the trainer is built; the
gathers know their sizes; what an epoch logs stays on the device until the
epoch ends (:mod:`dycl.train.meter`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import __version__
from .._files import json_safe, write_json_atomic
from .._progress import stderr_is_terminal
from ..distributed import (
    DistInfo,
    PeerFailed,
    all_gather_no_grad,
    all_gather_with_grad,
    all_ranks,
    average_gradients,
    barrier,
    check_same_on_all_ranks,
    local_main_first,
    main_decides,
)
from ..embed import autocast_dtype, embed_split
from ..losses import batch_levels, build_loss, make_proxy_optimizer
from ..models import build_model, deterministic_max_pools, freeze_batchnorm
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
from .data import SeededAugmentation, TrainData
from .meter import EpochMeter
from .reproducibility import capture_rng, restore_rng, use_deterministic_algorithms
from .schedule import schedule_of


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
        if config.deterministic:
            use_deterministic_algorithms()
        # The order of these steps is part of reproducibility: model, then loss, draw from the seed.
        self.data = TrainData(config, train_split, dist)
        self.sampler, self.dataset = self.data.sampler, self.data.dataset
        self.steps_per_epoch = len(self.sampler)
        if config.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch_size: {config.batch_size} pairs leaves no full batch in an epoch")
        self.total_steps = self.steps_per_epoch * config.epochs
        self._build_model_and_loss(fresh=resume_state is None)
        self._build_optimizers()
        self.train_model: nn.Module = self.model
        if dist.distributed:
            # Frozen BatchNorm changes no buffers, so there is nothing to broadcast; trained
            # BatchNorm normalises with per-rank batch statistics (DDP's usual behaviour) and
            # takes rank 0's running statistics. The proxies stay outside DDP (see train_step).
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

    def _build_model_and_loss(self, fresh: bool) -> None:
        """Initialised from the seed, identically on every rank."""
        config = self.config
        torch.manual_seed(config.seed)

        def build() -> nn.Module:
            return build_model(config.backbone, embedding_dim=config.embedding_dim,
                               pretrained=config.pretrained and fresh,
                               weights=config.weights if fresh else None, trusted=config.trust_checkpoint)

        # One process per node downloads pretrained weights into the cache; the others then read it.
        self.model = local_main_first(build, self.dist.local_rank)
        if config.freeze_batchnorm:
            freeze_batchnorm(self.model)
        if config.deterministic:
            deterministic_max_pools(self.model)
        self.model.to(self.device)
        if self.on_cuda:
            self.model.to(memory_format=torch.channels_last)
            # fixed input sizes: let cuDNN pick its fastest kernels (by timing them: not reproducible)
            torch.backends.cudnn.benchmark = not config.deterministic
        self.loss = build_loss(
            config.loss, num_buildings=self.train_split.num_buildings, embedding_dim=config.embedding_dim,
            levels=self.n_levels, options=config.loss_options,
            level_table=self.train_split.levels(config.thresholds),  # CSL compares proxies scale by scale
        ).to(self.device)  # before the proxy optimiser (see dycl.losses.cluster)
        table = np.asarray(self.train_split.levels(config.thresholds))
        if table.size and (table.min() < 0 or table.max() > self.n_levels):
            raise ValueError(f"thresholds: the level table holds levels outside 0..{self.n_levels}")
        # The table holds every level a batch can have and labels are building indices of the split:
        # checked once here, so the losses skip their per-step range checks (a device sync each).
        self.loss.set_value_checks(False)
        self.level_table = torch.as_tensor(table, dtype=torch.long, device=self.device)

    def _build_optimizers(self) -> None:
        config = self.config
        head = list(self.model.fc.parameters()) + self.loss.classifier_parameters()  # + instance classifier
        head_ids = {id(p) for p in head}
        backbone = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        self.optimizer = torch.optim.Adam(
            [{"params": backbone, "lr": config.lr, "name": "backbone"},
             {"params": head, "lr": config.head_lr, "name": "head"}],
            weight_decay=config.weight_decay,
        )
        self.schedule = schedule_of(config, self.steps_per_epoch)  # paper (per step) or release (per epoch)
        self.scheduler = self.schedule.lr_scheduler(self.optimizer)
        self.proxies = self.loss.proxy_parameters()
        self.proxy_optimizer = self.proxy_scheduler = None
        if self.proxies:
            self.proxy_optimizer, self.proxy_scheduler = make_proxy_optimizer(
                self.proxies, self.schedule.horizon, lr=config.proxy_lr, lr_min=config.proxy_lr_min)
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
            "rng": capture_rng(self.on_cuda),
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
        restore_rng(state["rng"])

    def check_replicas(self) -> None:
        """Raise on every rank if the proxies (kept outside DDP) differ between ranks (no-op alone)."""
        check_same_on_all_ranks([p.detach() for p in self.proxies], "the clustering loss's proxies")

    # ----------------------------------------------------------------- training

    def epoch_loader(self, epoch: int) -> DataLoader:
        """The DataLoader set to ``epoch`` (0-based): this rank's share of the epoch's global batches.

        The same loader serves every epoch (its workers persist); batches hold uint8 images.
        """
        return self.data.loader(epoch)

    def close(self) -> None:
        """Stop the training loader's workers."""
        self.data.close()

    def batch_loss(self, batch) -> torch.Tensor:
        """The loss of the global batch that this rank's share ``batch`` belongs to (with its graph).

        Every rank embeds its share; the embeddings are gathered with gradients
        and every rank computes the same loss on the global batch (see
        :mod:`dycl.distributed`). Every rank's share has the same size (the
        samplers' contract), so the gathers exchange no sizes.
        """
        satellite, drone = self.data.images(batch[0]), self.data.images(batch[1])
        labels = self.data.labels(batch[2])
        self.train_model.train()
        amp = self.amp_dtype is not None
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=amp):
            emb_sat, emb_drone = self.train_model(satellite, drone)
        emb_sat = all_gather_with_grad(emb_sat.float(), equal_sizes=True)
        emb_drone = all_gather_with_grad(emb_drone.float(), equal_sizes=True)
        labels = all_gather_no_grad(labels, equal_sizes=True)
        levels = batch_levels(self.level_table, labels, labels)
        return self.loss(emb_sat, emb_drone, levels, labels, labels)

    def train_step(self, batch) -> torch.Tensor:
        """One optimisation step on this rank's share of a global batch; returns the global loss, detached.

        No host-device sync, except the loss scaler's inf check when training in fp16.
        """
        loss = self.batch_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.proxy_optimizer is not None:
            self.proxy_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.schedule.hold_backbone(self.optimizer, self.epoch)  # warm-up: the backbone's step is skipped
        # The proxies live outside DDP: average their gradients too, so every rank takes the same step.
        average_gradients(self.proxies)
        self.scaler.step(self.optimizer)
        if self.proxy_optimizer is not None:
            self.scaler.step(self.proxy_optimizer)
        self.scaler.update()
        self.schedule.after_step((self.scheduler, self.proxy_scheduler))
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
        The losses are read on the host once, after the last step.
        """
        from tqdm.auto import tqdm

        cfg = self.config
        show = cfg.progress and self.dist.is_main
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not (show and stderr_is_terminal()), dynamic_ncols=True, file=sys.stderr)
        meter = EpochMeter(self.steps_per_epoch, self.device)
        first_step = self.global_step
        start = time.perf_counter()
        iterator: Iterator = iter(self.epoch_loader(epoch))
        try:
            for batch in iterator:
                meter.add(self.train_step(batch), self.loss.last_terms)
                steps = meter.count
                if not bar.disable and (steps % 5 == 0 or steps == self.steps_per_epoch or steps == 1):
                    rate = steps * 2 * cfg.batch_size / (time.perf_counter() - start)
                    latest = meter.latest()
                    bar.set_postfix(loss="…" if latest is None else f"{latest:.4f}", img_s=f"{rate:.1f}")
                bar.update(1)
                if steps >= self.steps_per_epoch:
                    break
        finally:
            del iterator
            bar.close()
        if self.on_cuda:
            torch.cuda.synchronize(self.device)  # the queued steps belong to this epoch's time
        seconds = time.perf_counter() - start
        return self._epoch_stats(epoch, meter, seconds, first_step, writer)

    def _epoch_stats(self, epoch: int, meter: EpochMeter, seconds: float, first_step: int,
                     writer) -> EpochStats:
        """The epoch's numbers from the meter (one transfer); step scalars to TensorBoard."""
        cfg = self.config
        record = meter.finish()
        steps, mean_loss = record.steps, record.mean_loss
        if not math.isfinite(mean_loss):
            raise ValueError(f"training diverged in epoch {epoch + 1}: the loss is {mean_loss}; lower --lr "
                             "(the checkpoint of the previous epoch is kept)")
        if writer is not None:
            for i, value in enumerate(record.losses):
                if (i + 1) % 10 == 0 or i == 0:
                    writer.add_scalar("train/loss_step", value, first_step + i + 1)
        images = steps * 2 * cfg.batch_size  # a satellite and a drone image per pair, all ranks
        stats = EpochStats(epoch=epoch + 1, steps=steps, loss=mean_loss, terms=record.mean_terms(),
                           images_per_s=images / seconds if seconds > 0 else float("nan"),
                           seconds=seconds, lr=self.current_lrs())
        if cfg.progress and self.dist.is_main and not stderr_is_terminal():
            print(f"dycl-train: epoch {stats.epoch}/{cfg.epochs}: {steps} steps, loss {mean_loss:.4f}, "
                  f"{stats.images_per_s:.1f} img/s, {seconds:.1f} s", file=sys.stderr, flush=True)
        return stats

    # ----------------------------------------------------------------- evaluation

    def embed_test_split(self) -> tuple[np.ndarray, np.ndarray]:
        """Satellite ``(B, d)`` and drone ``(N, d)`` embeddings of the test split; call on every rank.

        Under DDP each rank embeds its share of both image sets and every rank
        gets the gathered result; an error on one rank (an unreadable image)
        is raised on every rank at once.
        """
        cfg = self.config
        rank, world = self.dist.rank, self.dist.world_size

        def shard() -> tuple[np.ndarray, np.ndarray]:
            return embed_split(self.model, self.test_split, cfg.image_size, batch_size=cfg.eval_batch_size,
                               device=self.device, amp=cfg.amp, workers=cfg.workers or 0,
                               progress=cfg.progress and self.dist.is_main, rank=rank, world_size=world)

        sat, drone = all_ranks(shard, peer_error=lambda: PeerFailed(
            "evaluation: another process failed while embedding the test split (see its message)"))
        if world == 1:
            return sat, drone
        return tuple(all_gather_no_grad(torch.from_numpy(part).to(self.device)).cpu().numpy()
                     for part in (sat, drone))  # type: ignore[return-value]

    def evaluate(self) -> tuple[dict[str, dict[str, float]] | None, np.ndarray, np.ndarray]:
        """Embed the test split (sharded) and score both tasks; call on every rank.

        Returns ``(results, satellite, drone)``; ``results`` on the main process
        only (None elsewhere). A scoring error on rank 0 is raised on every rank.
        """
        sat, drone = self.embed_test_split()

        def score() -> dict[str, dict[str, float]] | None:
            if not self.dist.is_main:
                return None
            return score_tasks(sat, drone, self.test_split, self.config.thresholds, geo_metrics=True)

        results = all_ranks(score, peer_error=lambda: PeerFailed(
            "evaluation: the main process failed while scoring (see its message)"))
        return results, sat, drone

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
            # Resumed after the last checkpoint but before every final file was written?
            if main_decides(main and not run_complete(self.output)):
                results, sat, drone = self.evaluate()
                if main:
                    self._record_eval(results)
                    self._write_final(results, sat, drone)
            barrier()
            return self.last_metrics if main else None
        finally:
            self.close()
            if log is not None:
                log.close()

    def _fit_epoch(self, log: RunLog | None) -> None:
        """One epoch, its evaluation when due, the log lines and the checkpoint (in that order)."""
        cfg = self.config
        stats = self.train_epoch(self.epoch, log.writer if log is not None else None)
        self.epoch += 1
        self.schedule.after_epoch((self.scheduler, self.proxy_scheduler), self.epoch)
        final = self.epoch == cfg.epochs
        results = sat = drone = None
        if final or (cfg.eval_every and self.epoch % cfg.eval_every == 0):
            results, sat, drone = self.evaluate()  # every rank embeds its share
        self.check_replicas()  # every rank: a checkpoint of drifted proxies would not resume
        if log is None:
            return
        if results is not None:
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
