"""Where each planned run of a suite stands, read from its folder (small files only, never a checkpoint).

Layout of a suite's ``--output``::

    data/<campus>/                 the synthetic campus (rendered once; resumable)
    <config>/seed<k>/              a dycl-train run (see dycl.runs)
    <config>/seed<k>/eval/<r>.json the run's metrics with re-ranking <r> (+ .md, .csv)
    <config>/seed<k>/experiment.json   time spent on the run, machine load, MSRerank ks
    report/                        results.md, results.csv, mean/*.json, img/results_*.png
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._files import LOCK_FILE, write_text_atomic
from ..runs import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, epochs_logged, read_json, run_complete
from .suites import RERANKINGS, RunSpec, Suite

# --------------------------------------------------------------------------- run folders and their state

EVAL_DIR = "eval"
RECORD_FILE = "experiment.json"
REPORT_DIR = "report"
DATA_DIR = "data"


def _plain(value: Any) -> Any:
    """JSON round trip: tuples become lists, so planned and saved settings compare equal."""
    return json.loads(json.dumps(value))


def planned_overrides(suite: Suite, run: RunSpec, output: Path, data_dir: Path, device: str = "auto",
                      workers: int | None = None) -> dict[str, Any]:
    """The ``run_training`` options of one run (experiment settings + where and how it runs)."""
    options = {**_plain(dict(suite.training)), **run.config.overrides(), "seed": run.seed,
               "data_dir": str(data_dir), "output": str(run.folder(output)), "device": device,
               "progress": False}
    if workers is not None:
        options["workers"] = workers
    if "thresholds" in options:
        options["thresholds"] = tuple(float(t) for t in options["thresholds"])
    return options


def config_mismatch(saved: Mapping[str, Any], planned: Mapping[str, Any]) -> str | None:
    """The first experiment setting of ``planned`` that ``saved`` (a run's config.json) does not match."""
    from ..train.config import RUNTIME_FIELDS as runtime  # imports torch: only when a run folder is read

    for name, value in planned.items():
        if name in runtime:
            continue
        if _plain(saved.get(name)) != _plain(value):
            return f"{name}={saved.get(name)!r} (the suite plans {value!r})"
    return None


def rerankings_to_score(suite: Suite, folder: Path) -> list[str]:
    """The re-rankings of a run without a result file, or whose Eq. 6 ks were read another way.

    ``experiment.json`` records, per MSRerank re-ranking, which images per building Eq. 6 counted
    (``ks_from``); a file scored before that was recorded used the gallery reading, so a suite that
    now plans the drone reading scores it again instead of mixing the two.
    """
    record = read_json(folder / RECORD_FILE) or {}
    readings = record.get("ks_from") or {}
    todo = []
    for name in suite.rerankings:
        rerank = RERANKINGS[name][1]
        if not (folder / EVAL_DIR / f"{name}.json").is_file():
            todo.append(name)
        elif (rerank.method == "msrerank" and rerank.ks is None
              and readings.get(name, "gallery") != rerank.ks_from):
            todo.append(name)
    return todo


@dataclass
class RunState:
    """Where one planned run stands: ``pending``, ``started`` (no checkpoint yet), ``partial``
    (checkpoint after ``epochs_done`` epochs), ``trained`` (final metrics, some re-rankings missing),
    ``done``, ``failed`` (the trainer refused or diverged: ``message``) or ``stale`` (another plan)."""

    run: RunSpec
    folder: Path
    state: str
    epochs_done: int = 0
    message: str = ""


def run_state(suite: Suite, run: RunSpec, output: Path, data_dir: Path) -> RunState:
    """Inspect a run folder (reads small files only, never the checkpoint)."""
    folder = run.folder(output)
    if not folder.is_dir() or not any(p.name != LOCK_FILE for p in folder.iterdir()):
        return RunState(run, folder, "pending")
    saved = read_json(folder / CONFIG_FILE)
    if saved is not None:
        why = config_mismatch(saved, planned_overrides(suite, run, output, data_dir))
        if why is not None:
            return RunState(run, folder, "stale", message=why)
    record = read_json(folder / RECORD_FILE) or {}
    epochs = epochs_logged(folder)
    scored = (folder / METRICS_FILE).is_file() and not rerankings_to_score(suite, folder)
    if scored:  # every result is there; the embeddings may have been pruned (see results_only)
        return RunState(run, folder, "done", epochs_done=epochs)
    if run_complete(folder):
        return RunState(run, folder, "trained", epochs_done=epochs)
    if record.get("failed"):
        return RunState(run, folder, "failed", epochs_done=epochs, message=str(record["failed"]))
    if (folder / CHECKPOINT_FILE).is_file():
        return RunState(run, folder, "partial", epochs_done=epochs)
    return RunState(run, folder, "started")


def suite_states(suite: Suite, output: str | os.PathLike, data_dir: str | os.PathLike | None = None
                 ) -> list[RunState]:
    out = Path(output)
    return [run_state(suite, r, out, resolve_data_dir(suite, out, data_dir, create=False))
            for r in suite.runs()]


#: What a suite folder's ``.gitignore`` leaves out, so that its results can be committed: the
#: campus (re-rendered from its seed), checkpoints, embeddings, TensorBoard, locks. A run with its
#: results but without embeddings counts as done; re-scoring it with a new re-ranking needs it
#: trained again.
IGNORED_IN_GIT = (f"{DATA_DIR}/", CHECKPOINT_FILE, "embeddings/", "tensorboard/", LOCK_FILE, "*.tmp")


def write_gitignore(output: Path) -> None:
    """Write ``output/.gitignore`` (:data:`IGNORED_IN_GIT`) unless the folder already has one."""
    path = output / ".gitignore"
    if not path.exists():
        output.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, "# written by dycl-experiment: commit the results, not the heavy files\n"
                          + "".join(f"{pattern}\n" for pattern in IGNORED_IN_GIT))


# --------------------------------------------------------------------------- data


def resolve_data_dir(suite: Suite, output: Path, data_dir: str | os.PathLike | None, create: bool = True,
                     progress: bool = False) -> Path:
    """The suite's dataset: ``data_dir`` if given, else its synthetic campus under ``output/data``.

    With ``create``, the campus is rendered (or an interrupted rendering completed).
    """
    if data_dir is not None:
        path = Path(data_dir)
        if not path.exists():
            raise ValueError(f"data_dir: {path} does not exist")
        return path
    if suite.campus is None:
        raise ValueError(f"data_dir: suite {suite.name} has no synthetic campus; pass --data-dir (DA-Campus)")
    path = output / DATA_DIR / suite.campus.folder_name
    lists = [path / view / f"{s}.txt" for view in ("satellite", "drone") for s in ("train", "test")]
    if create and not all(p.is_file() for p in lists):
        from ..data.synth import generate_campus

        c = suite.campus
        generate_campus(path, c.train_buildings, c.test_buildings, c.drone_views, c.image_size, c.seed,
                        progress=progress)
    return path


# --------------------------------------------------------------------------- progress and ETA


@dataclass
class Progress:
    """Counts of run states and an estimate of the remaining time."""

    counts: dict[str, int]
    remaining_epochs: int
    remaining_evals: int
    epoch_seconds: float | None
    eval_seconds: float
    basis: str

    @property
    def eta_seconds(self) -> float | None:
        if self.remaining_epochs == 0:
            return self.remaining_evals * self.eval_seconds
        if self.epoch_seconds is None:
            return None
        return self.remaining_epochs * self.epoch_seconds + self.remaining_evals * self.eval_seconds


def estimate_progress(suite: Suite, states: Sequence[RunState]) -> Progress:
    """Run counts by state and the ETA from the time per epoch measured so far in this suite's runs."""
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    train_s = epochs = 0.0
    eval_s: list[float] = []
    for s in states:
        record = read_json(s.folder / RECORD_FILE) or {}
        if record.get("epochs_trained"):
            train_s += float(record.get("train_seconds", 0.0))
            epochs += int(record["epochs_trained"])
        if record.get("eval_seconds"):
            eval_s.append(float(record["eval_seconds"]))
    if epochs:
        per_epoch: float | None = train_s / epochs
        basis = f"{per_epoch:.0f} s per epoch measured over {int(epochs)} epochs"
    elif suite.expected_epoch_s:
        per_epoch = suite.expected_epoch_s
        basis = f"{per_epoch:.0f} s per epoch (pilot estimate)"
    else:
        per_epoch, basis = None, "no epoch timed yet"
    remaining_epochs = sum(suite.epochs - min(s.epochs_done, suite.epochs)
                           for s in states if s.state in ("pending", "started", "partial"))
    remaining_evals = sum(1 for s in states if s.state not in ("done", "stale", "failed"))
    return Progress(counts, remaining_epochs, remaining_evals, per_epoch,
                    float(np.mean(eval_s)) if eval_s else 5.0, basis)


__all__ = [
    "DATA_DIR",
    "EVAL_DIR",
    "IGNORED_IN_GIT",
    "RECORD_FILE",
    "REPORT_DIR",
    "Progress",
    "RunState",
    "config_mismatch",
    "estimate_progress",
    "planned_overrides",
    "rerankings_to_score",
    "resolve_data_dir",
    "run_state",
    "suite_states",
    "write_gitignore",
]
