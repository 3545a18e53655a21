"""The run folder: what a training run writes, and the one reader and writer of each file.

A run folder (``dycl-train --output RUN``) holds:

* ``config.json`` — the fully resolved configuration, the package version and
  a fingerprint of the data;
* ``last.pt`` — after every epoch, written atomically (temporary file, fsync,
  rename): model, losses, optimisers, schedulers, RNG and sampler states, so a
  run resumes exactly. Plain tensors and Python values only, so
  ``torch.load(weights_only=True)`` reads it;
* ``metrics.json`` — the final evaluation, ``{task: {DESIGN §4 key: value}}``;
* ``embeddings/satellite_to_drone.npz``, ``embeddings/drone_to_satellite.npz`` —
  the final test embeddings (DESIGN §7), for re-scoring without the network;
* ``log.jsonl`` — one JSON object per epoch (``"event": "epoch"``) and per
  evaluation (``"event": "eval"``);
* ``tensorboard/`` — TensorBoard scalars.

The training engine, the evaluation engine and the experiment suite all go
through this module for these names and files. Torch is imported only to read
or write a checkpoint or TensorBoard events.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._files import LOCK_FILE, atomic_open, json_safe, write_text_atomic
from .tasks import TASK_FILES

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "last.pt"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"
EMBEDDINGS_DIR = "embeddings"
#: Everything a run writes into its output folder (what ``--overwrite`` removes).
RUN_ARTIFACTS = (CONFIG_FILE, CHECKPOINT_FILE, METRICS_FILE, LOG_FILE, TENSORBOARD_DIR, EMBEDDINGS_DIR)
CHECKPOINT_FORMAT = "dycl-train-checkpoint/1"
#: What a finished run has, in the order the trainer writes it: ``metrics.json`` last, as the
#: completion marker (a run killed in between is resumed and writes what is missing).
FINAL_FILES = (*(f"{EMBEDDINGS_DIR}/{name}" for name in TASK_FILES.values()), METRICS_FILE)


def run_complete(folder: str | Path) -> bool:
    """Whether a run folder holds every final file (:data:`FINAL_FILES`)."""
    return all((Path(folder) / name).is_file() for name in FINAL_FILES)


# --------------------------------------------------------------------------- checkpoints


def plain(value: Any) -> Any:
    """Checkpoint-safe copy: NumPy values become lists and Python scalars (for ``weights_only`` loading)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class _WriteErrors:
    """A file handle that remembers the ``OSError`` of a failed write.

    ``torch.save`` turns an error of the file's ``write`` (a full disk) into a
    ``RuntimeError`` about zip positions; this keeps the real reason.
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def save_checkpoint_atomic(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file, flushed to disk, then renamed over ``path``.

    A failed write (a full disk) raises its ``OSError`` and leaves ``path`` as it was.
    """
    import torch

    with atomic_open(path, "wb", fsync=True) as handle:
        writer = _WriteErrors(handle)
        try:
            torch.save(dict(state), writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a ``last.pt`` written by the trainer (tensors and primitives only)."""
    import torch

    if not path.is_file():
        raise ValueError(f"resume: no checkpoint at {path} (drop --resume to start a new run)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"resume: cannot read the checkpoint {path} ({first})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"resume: {path} is not a dycl-train checkpoint")
    return state


# --------------------------------------------------------------------------- the training log


def _log_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, record)`` of every complete JSON object line of a log (a line cut by a crash is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append((line, record))
    return out


def epoch_records(folder: Path) -> list[dict[str, Any]]:
    """The ``"epoch"`` records of a run's training log (none if there is no log)."""
    return [r for _, r in _log_records(Path(folder) / LOG_FILE) if r.get("event") == "epoch"]


def epochs_logged(folder: Path) -> int:
    """The last epoch a run's log records (0 without a log)."""
    return max((int(r.get("epoch", 0)) for r in epoch_records(folder)), default=0)


def truncate_log(path: Path, epoch: int) -> None:
    """Drop the records of epochs after ``epoch`` (logged by a run that died before checkpointing them)."""
    if not path.is_file():
        return
    kept = [line for line, record in _log_records(path) if int(record.get("epoch", 0)) <= epoch]
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON file of a run folder, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


class RunLog:
    """``log.jsonl`` and TensorBoard of a run (main process only); every scalar on the global step."""

    def __init__(self, output: Path, global_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a crashed run logged after its last checkpoint.
        self.writer = SummaryWriter(str(output / TENSORBOARD_DIR), purge_step=global_step or None)
        self.file = open(output / LOG_FILE, "a", encoding="utf-8")

    def _write(self, record: Mapping[str, Any]) -> None:
        self.file.write(json.dumps(json_safe(record)) + "\n")
        self.file.flush()

    def epoch(self, stats: Any, step: int) -> None:
        """One ``"epoch"`` record (``stats``: the trainer's EpochStats) and its scalars."""
        self._write({"event": "epoch", "epoch": stats.epoch, "step": step, "loss": stats.loss,
                     "terms": stats.terms, "lr": stats.lr, "images_per_s": stats.images_per_s,
                     "seconds": stats.seconds, "time": time.time()})
        w = self.writer
        w.add_scalar("train/loss_epoch", stats.loss, step)
        w.add_scalar("train/epoch", stats.epoch, step)
        for name, value in stats.terms.items():
            w.add_scalar(f"train/loss_{name}", value, step)
        for name, value in stats.lr.items():
            w.add_scalar(f"lr/{name}", value, step)
        w.add_scalar("train/images_per_s", stats.images_per_s, step)
        w.flush()

    def evaluation(self, results: Mapping[str, Mapping[str, Any]], epoch: int, step: int) -> None:
        self._write({"event": "eval", "epoch": epoch, "step": step, **results})
        for task, metrics in results.items():
            tag = task.replace("->", "_to_")
            for key in ("H-AP", "ASI", "NDCG", "mAP_overall", "R@1_overall", "err@1_mean_m"):
                if key in metrics and metrics[key] is not None and math.isfinite(float(metrics[key])):
                    self.writer.add_scalar(f"eval_{tag}/{key}", float(metrics[key]), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        self.file.close()


# --------------------------------------------------------------------------- the folder


def check_output(output: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to touch an existing run unless asked; read-only (nothing is created here)."""
    if resume and overwrite:
        raise ValueError("resume: --resume and --overwrite contradict each other; pass one of them")
    if output.exists() and not output.is_dir():
        raise ValueError(f"output: {output} exists and is not a folder")
    if resume:
        if not (output / CHECKPOINT_FILE).is_file():
            raise ValueError(
                f"resume: no checkpoint at {output / CHECKPOINT_FILE} (drop --resume to start a new run)"
            )
        return
    if output.is_dir() and any(p.name != LOCK_FILE for p in output.iterdir()) and not overwrite:
        raise ValueError(
            f"output: {output} is not empty; pass --resume to continue the run there "
            "or --overwrite to replace it"
        )


def clear_run(output: Path) -> None:
    """Remove a previous run's files before ``--overwrite``: only what a run writes, nothing of the user's.

    In ``embeddings/`` only the task files go (and the folder, if that empties it).
    """
    for name in RUN_ARTIFACTS:
        path = output / name
        if name == EMBEDDINGS_DIR and path.is_dir():
            for file in TASK_FILES.values():
                (path / file).unlink(missing_ok=True)
            if not any(path.iterdir()):
                path.rmdir()
        elif path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "CONFIG_FILE",
    "EMBEDDINGS_DIR",
    "FINAL_FILES",
    "LOG_FILE",
    "METRICS_FILE",
    "RUN_ARTIFACTS",
    "RunLog",
    "TENSORBOARD_DIR",
    "check_output",
    "clear_run",
    "epoch_records",
    "epochs_logged",
    "plain",
    "read_checkpoint",
    "read_json",
    "run_complete",
    "save_checkpoint_atomic",
    "truncate_log",
]
