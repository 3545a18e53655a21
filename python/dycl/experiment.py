"""The paper in miniature (issue 7): experiment suites, a resumable runner, and the report.

A **suite** is a plan: the data (a synthetic campus rendered on first use, or a
dataset folder given with ``--data-dir``), the training settings shared by every
run (backbone, image size, epochs, batch, learning rate, thresholds), the
**configurations** (loss spec, loss options, sampler), the **seeds**, and the
**re-rankings** every run is scored with. Each (configuration, seed) is one
``dycl-train`` run (:func:`dycl.train.run_training`); its saved test embeddings
are then re-scored with each re-ranking (:func:`dycl.evaluate.evaluate_tasks`),
without running the network again. The report aggregates the seeds (mean,
standard deviation, range) into the paper's tables and figures.

Layout of ``--output``::

    data/<campus>/                 the synthetic campus (rendered once; resumable)
    <config>/seed<k>/              a dycl-train run: config.json, last.pt, metrics.json,
                                   embeddings/*.npz, log.jsonl, tensorboard/
    <config>/seed<k>/eval/<r>.json the run's metrics with re-ranking <r> (+ .md, .csv)
    <config>/seed<k>/experiment.json   time spent on the run, machine load, MSRerank ks
    report/results.md, report/results.csv, report/mean/*.json, report/img/results_*.png

Resuming: ``run`` looks at every planned run folder. Finished runs (metrics,
embeddings and every re-ranking file present) are skipped; a trained run with
missing re-rankings is only re-scored; a run with a ``last.pt`` but no final
metrics continues with the trainer's ``--resume`` semantics (same weights and
metrics as an uninterrupted run on CPU); a folder without a checkpoint (killed
during its first epoch) is started again. A finished run whose configuration
differs from the plan is refused (one line naming the run and the setting), so
results of different plans never mix. The runs are ordered seed by seed, so an
interrupted suite already has every configuration at the first seed.

Significance: with a few seeds per configuration, a difference between two
configurations is called *larger than the spread* when their ranges over seeds
do not overlap (every seed of one beats every seed of the other). Re-rankings
of the same run are compared per run (paired): *consistent* when the
difference has the same sign in every run.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ._files import write_json_atomic, write_text_atomic
from .evaluate import (
    PAPER_SCALE_NAMES,
    TASK_FILES,
    TASKS,
    RerankConfig,
    evaluate_tasks,
    load_embeddings,
    read_metrics,
    write_results,
)
from .losses import PAPER_LOSS

# --------------------------------------------------------------------------- suite definitions


@dataclass(frozen=True)
class CampusSpec:
    """A synthetic campus (:func:`dycl.data.synth.generate_campus` parameters)."""

    train_buildings: int
    test_buildings: int
    drone_views: int
    image_size: int
    seed: int = 0

    @property
    def folder_name(self) -> str:
        return (f"campus-{self.train_buildings}-{self.test_buildings}-{self.drone_views}v-"
                f"{self.image_size}px-seed{self.seed}")


@dataclass(frozen=True)
class RunConfig:
    """One trained configuration: what differs between the runs of a suite.

    ``key`` names the run folders; ``label`` is the name in tables and figures.
    """

    key: str
    label: str
    loss: str
    loss_options: Mapping[str, Mapping[str, Any]] | None = None
    sampler: str = "random"
    note: str = ""

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loss": self.loss, "sampler": self.sampler}
        if self.loss_options:
            out["loss_options"] = json.loads(json.dumps(self.loss_options))  # plain dicts and lists
        return out


#: Re-rankings every run is scored with: file stem -> (table label, configuration).
#: ``ks=None``: Eq. 6 from the training split (``--ks auto``).
RERANKINGS: dict[str, tuple[str, RerankConfig]] = {
    "none": ("none", RerankConfig()),
    "k-reciprocal": ("k-reciprocal", RerankConfig(method="k-reciprocal")),
    "msrerank-paper": ("MSRerank (paper)", RerankConfig(method="msrerank", variant="paper")),
    "msrerank-reference": ("MSRerank (reference)", RerankConfig(method="msrerank", variant="reference")),
}


@dataclass(frozen=True)
class Suite:
    """An experiment plan. ``groups`` name the comparisons of the report (keys of ``configs``):

    * ``"methods"`` — Tables II/III: one row per method;
    * ``"scales"`` — Fig. 6: single-scale runs, then the multi-scale run (last);
    * ``"sampler"`` — batch composition: the ``random`` run, then the ``geo`` run.
    """

    name: str
    description: str
    campus: CampusSpec | None  # None: the data comes from --data-dir
    training: Mapping[str, Any]
    configs: tuple[RunConfig, ...]
    seeds: tuple[int, ...]
    groups: Mapping[str, tuple[str, ...]]
    rerankings: tuple[str, ...] = tuple(RERANKINGS)
    #: Seconds per training epoch measured in the pilot (for the ETA before any run has finished).
    expected_epoch_s: float | None = None

    def config(self, key: str) -> RunConfig:
        for c in self.configs:
            if c.key == key:
                return c
        raise ValueError(f"suite {self.name}: no configuration {key!r}")

    def runs(self) -> list[RunSpec]:
        """Every (configuration, seed), seed by seed: an interrupted suite has all configurations early."""
        return [RunSpec(config=c, seed=s) for s in self.seeds for c in self.configs]

    @property
    def epochs(self) -> int:
        return int(self.training.get("epochs", 20))


@dataclass(frozen=True)
class RunSpec:
    config: RunConfig
    seed: int

    @property
    def name(self) -> str:
        return f"{self.config.key}/seed{self.seed}"

    def folder(self, output: Path) -> Path:
        return output / self.config.key / f"seed{self.seed}"


_DYCL = "dycl:0.2,cluster:0.1"  # the paper's recipe without HAPPIER


def _paper_configs() -> tuple[RunConfig, ...]:
    methods = (
        RunConfig("infonce", "InfoNCE", "infonce"),
        RunConfig("triplet", "Triplet", "triplet"),
        RunConfig("multisimilarity", "Multi-Similarity", "multisimilarity"),
        RunConfig("normsoftmax", "Normalised Softmax", "normsoftmax"),
        RunConfig("sigmatriplet", "Σ-Triplet", "sigmatriplet"),
        RunConfig("happier", "HAPPIER", "happier"),
        RunConfig("dycl", "DyCL", _DYCL, note="DyCL (Eq. 4) + clustering (Eq. 5), the paper's weights"),
        RunConfig("dycl-happier", "DyCL+HAPPIER", PAPER_LOSS, note="the paper's full loss"),
    )
    single = tuple(
        RunConfig(f"dycl-scale{s}", f"single-scale {name}", _DYCL, loss_options={"dycl": {"scales": [s]}},
                  note=f"only the DyCL term of scale {s} (margin m^{s})")
        for s, name in enumerate(PAPER_SCALE_NAMES)
    )
    geo = (RunConfig("dycl-geo", "DyCL, geo sampler", _DYCL, sampler="geo"),)
    return methods + single + geo


_PAPER_GROUPS = {
    "methods": ("infonce", "triplet", "multisimilarity", "normsoftmax", "sigmatriplet", "happier", "dycl",
                "dycl-happier"),
    "scales": ("dycl-scale0", "dycl-scale1", "dycl-scale2", "dycl"),
    "sampler": ("dycl", "dycl-geo"),
}

#: The paper in miniature on a 2-core CPU (measured: docs/results.md).
PAPER_MINI = Suite(
    name="paper-mini",
    description="Tables II/III, Fig. 6 and the sampler question on a synthetic campus, ResNet-18 from "
                "scratch at 48 px on a CPU",
    # 440 buildings on 4 campuses: the test campus is large enough that the 500 m scale is not most
    # of it (about 49 of 200 buildings), 16 views keep an epoch at 120 steps.
    campus=CampusSpec(train_buildings=240, test_buildings=200, drone_views=16, image_size=96, seed=0),
    # Pilot (docs/results.md): 48 px learns as fast per epoch as 64 px at 2.2x less compute
    # (about 24 s per epoch on two free cores); 5 epochs of the cosine schedule fit the budget.
    training={
        "backbone": "resnet18", "pretrained": False, "embedding_dim": 128, "image_size": 48, "epochs": 5,
        "batch_size": 32, "lr": 1e-4, "thresholds": [200.0, 500.0], "workers": 1,
    },
    configs=_paper_configs(),
    seeds=(0, 1),
    groups=_PAPER_GROUPS,
    expected_epoch_s=30.0,
)

#: The same comparisons at the paper's scale (DA-Campus, GPU): pass --data-dir.
PAPER_FULL = Suite(
    name="paper-full",
    description="the same comparisons on DA-Campus with the paper's hyper-parameters (ResNet-50 ImageNet, "
                "256 px, batch 128, 20 epochs); needs --data-dir and a GPU",
    campus=None,
    training={
        "backbone": "resnet50", "pretrained": True, "embedding_dim": 512, "image_size": 256, "epochs": 20,
        "batch_size": 128, "lr": 5e-5, "thresholds": [200.0, 500.0],
    },
    configs=_paper_configs(),
    seeds=(0, 1),
    groups=_PAPER_GROUPS,
)

#: Two one-step runs on a tiny campus: checks the whole pipeline in under a minute.
SMOKE = Suite(
    name="smoke",
    description="two one-step runs on a tiny campus (pipeline check)",
    campus=CampusSpec(train_buildings=8, test_buildings=6, drone_views=4, image_size=32, seed=0),
    training={
        "backbone": "resnet18", "pretrained": False, "embedding_dim": 16, "image_size": 32, "epochs": 1,
        "batch_size": 8, "lr": 1e-4, "thresholds": [100.0, 200.0], "max_steps_per_epoch": 1, "workers": 0,
    },
    configs=(RunConfig("infonce", "InfoNCE", "infonce"),
             RunConfig("dycl-happier", "DyCL+HAPPIER", PAPER_LOSS)),
    seeds=(0,),
    groups={"methods": ("infonce", "dycl-happier")},
)

SUITES: dict[str, Suite] = {s.name: s for s in (PAPER_MINI, PAPER_FULL, SMOKE)}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"suite: unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    return SUITES[name]


# --------------------------------------------------------------------------- run folders and their state

EVAL_DIR = "eval"
RECORD_FILE = "experiment.json"
REPORT_DIR = "report"
DATA_DIR = "data"


def _train_module():
    from . import train  # imports torch: only when training or reading run states

    return train


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
    runtime = _train_module().RUNTIME_FIELDS
    for name, value in planned.items():
        if name in runtime:
            continue
        if _plain(saved.get(name)) != _plain(value):
            return f"{name}={saved.get(name)!r} (the suite plans {value!r})"
    return None


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


def _epoch_records(folder: Path) -> list[dict[str, Any]]:
    """The ``"epoch"`` records of a run's training log (none if there is no log)."""
    log = folder / _train_module().LOG_FILE
    if not log.is_file():
        return []
    records = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(record, dict) and record.get("event") == "epoch":
            records.append(record)
    return records


def _epochs_logged(folder: Path) -> int:
    return max((int(r.get("epoch", 0)) for r in _epoch_records(folder)), default=0)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def run_state(suite: Suite, run: RunSpec, output: Path, data_dir: Path) -> RunState:
    """Inspect a run folder (reads small files only, never the checkpoint)."""
    train = _train_module()
    folder = run.folder(output)
    if not folder.is_dir() or not any(folder.iterdir()):
        return RunState(run, folder, "pending")
    saved = _read_json(folder / train.CONFIG_FILE)
    if saved is not None:
        why = config_mismatch(saved, planned_overrides(suite, run, output, data_dir))
        if why is not None:
            return RunState(run, folder, "stale", message=why)
    record = _read_json(folder / RECORD_FILE) or {}
    trained = (folder / train.METRICS_FILE).is_file() and all(
        (folder / train.EMBEDDINGS_DIR / TASK_FILES[t]).is_file() for t in TASKS)
    epochs = _epochs_logged(folder)
    if trained:
        scored = all((folder / EVAL_DIR / f"{r}.json").is_file() for r in suite.rerankings)
        return RunState(run, folder, "done" if scored else "trained", epochs_done=epochs)
    if record.get("failed"):
        return RunState(run, folder, "failed", epochs_done=epochs, message=str(record["failed"]))
    if (folder / train.CHECKPOINT_FILE).is_file():
        return RunState(run, folder, "partial", epochs_done=epochs)
    return RunState(run, folder, "started")


def suite_states(suite: Suite, output: str | os.PathLike, data_dir: str | os.PathLike | None = None
                 ) -> list[RunState]:
    out = Path(output)
    return [run_state(suite, r, out, resolve_data_dir(suite, out, data_dir, create=False))
            for r in suite.runs()]


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
        from .data.synth import generate_campus

        c = suite.campus
        generate_campus(path, c.train_buildings, c.test_buildings, c.drone_views, c.image_size, c.seed,
                        progress=progress)
    return path


def _read_splits(data_dir: Path):
    train = _train_module()
    return train.read_splits(train.TrainConfig(data_dir=str(data_dir), output="-"))


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
        record = _read_json(s.folder / RECORD_FILE) or {}
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


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    minutes = int(round(seconds / 60.0))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def progress_line(suite: Suite, states: Sequence[RunState]) -> str:
    p = estimate_progress(suite, states)
    order = ("done", "trained", "partial", "started", "pending", "failed", "stale")
    parts = [f"{p.counts[k]} {k}" for k in order if p.counts.get(k)]
    eta = p.eta_seconds
    finish = "" if eta is None else time.strftime(" (about %H:%M)", time.localtime(time.time() + eta))
    now = time.strftime("%H:%M:%S")
    return (f"[{suite.name}] {now} {len(states)} runs: {', '.join(parts)}; remaining "
            f"{p.remaining_epochs} epochs + {p.remaining_evals} evaluations, "
            f"ETA {_duration(eta)}{finish} [{p.basis}]")


def format_plan(suite: Suite, states: Sequence[RunState] | None = None, output: str | None = None) -> str:
    """The plan of ``dycl-experiment list``: data, shared settings, runs (and their state)."""
    lines = [f"suite {suite.name}: {suite.description}"]
    if suite.campus is not None:
        c = suite.campus
        lines.append(f"data: synthetic campus, {c.train_buildings} train + {c.test_buildings} test "
                     f"buildings, {c.drone_views} drone views each, {c.image_size} px, seed {c.seed}"
                     + (f" ({output}/{DATA_DIR}/{c.folder_name})" if output else ""))
    else:
        lines.append("data: --data-dir (DA-Campus layout)")
    shared = ", ".join(f"{k} {v}" for k, v in suite.training.items())
    lines.append(f"every run: {shared}")
    lines.append(f"seeds: {', '.join(map(str, suite.seeds))}; re-rankings scored from the saved embeddings: "
                 + ", ".join(RERANKINGS[r][0] for r in suite.rerankings))
    lines.append("")
    by_run = {s.run.name: s for s in states or []}
    rows = []
    for run in suite.runs():
        c = run.config
        loss = c.loss + (f" {json.dumps(c.loss_options)}" if c.loss_options else "")
        st = by_run.get(run.name)
        state = ""
        if st is not None:
            state = st.state
            if st.state == "partial":
                state += f" ({st.epochs_done}/{suite.epochs} epochs)"
            if st.message:
                state += f": {st.message}"
        rows.append((run.name, loss, c.sampler, state))
    head = ("run", "loss", "sampler", "state" if states is not None else "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    for row in [head, None, *rows]:
        if row is None:
            lines.append("-" * (sum(widths) + 6 + (len("state") + 2 if states is not None else 0)))
            continue
        cells = [cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)]
        lines.append("  ".join([*cells, row[3]]).rstrip())
    lines.append("")
    for group, keys in suite.groups.items():
        lines.append(f"{_GROUP_TITLES.get(group, group)}: " + ", ".join(suite.config(k).label for k in keys))
    if states is not None:
        lines += ["", progress_line(suite, states)]
    return "\n".join(lines)


_GROUP_TITLES = {
    "methods": "Tables II/III (methods)",
    "scales": "Fig. 6 (single- vs multi-scale)",
    "sampler": "batch sampler (random vs geo)",
}


# --------------------------------------------------------------------------- the runner


def _update_record(folder: Path, **values: Any) -> None:
    path = folder / RECORD_FILE
    record = _read_json(path) or {}
    for key, value in values.items():
        if key in ("train_seconds", "eval_seconds", "epochs_trained") and key in record:
            record[key] = record[key] + value
        else:
            record[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def _load() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def train_run(suite: Suite, state: RunState, output: Path, data_dir: Path, device: str,
              workers: int | None, log: TextIO) -> bool:
    """Train (or resume) one run; returns False when the trainer refused or the loss diverged."""
    train = _train_module()
    overrides = planned_overrides(suite, state.run, output, data_dir, device, workers)
    resume = state.state == "partial"
    before = state.epochs_done if resume else 0
    how = f"resuming after epoch {before}" if resume else "training"
    print(f"[{suite.name}] {state.run.name}: {how} ({state.run.config.label}, seed {state.run.seed})",
          file=log, flush=True)
    load_start = _load()
    start = time.perf_counter()
    try:
        train.run_training(overrides, resume=resume, overwrite=state.state in ("started", "failed"),
                           out=io.StringIO())
    except ValueError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"[{suite.name}] {state.run.name}: FAILED: {message}", file=log, flush=True)
        _update_record(state.folder, failed=message)
        return False
    finally:
        gc.collect()
    seconds = time.perf_counter() - start
    epochs = _epochs_logged(state.folder) - before
    _update_record(state.folder, config=state.run.config.key, seed=state.run.seed, train_seconds=seconds,
                   epochs_trained=epochs, failed=None, load_at_start=load_start, load_at_end=_load(),
                   finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    print(f"[{suite.name}] {state.run.name}: trained {epochs} epochs in {seconds / 60:.1f} min",
          file=log, flush=True)
    return True


def score_run(suite: Suite, state: RunState, train_split, log: TextIO) -> None:
    """Score the run's saved embeddings with every re-ranking that has no result file yet."""
    train = _train_module()
    missing = [r for r in suite.rerankings if not (state.folder / EVAL_DIR / f"{r}.json").is_file()]
    if not missing:
        return
    start = time.perf_counter()
    tasks = load_embeddings(state.folder / train.EMBEDDINGS_DIR)
    ks_used: dict[str, dict[str, list[int]]] = {}
    for name in missing:
        label, rerank = RERANKINGS[name]
        evaluation = evaluate_tasks(tasks, rerank, train_split, progress=False)
        settings = {"run": str(state.folder), "re-ranking": rerank.describe()}
        for task, ks in evaluation.ks.items():
            settings[f"ks {task}"] = f"{','.join(map(str, ks))} ({evaluation.notes[task]})"
            ks_used.setdefault(name, {})[task] = list(ks)
        write_results(state.folder / EVAL_DIR / f"{name}.json", evaluation.results, settings)
    seconds = time.perf_counter() - start
    _update_record(state.folder, eval_seconds=seconds, **({"ks": ks_used} if ks_used else {}))
    print(f"[{suite.name}] {state.run.name}: scored {', '.join(missing)} in {seconds:.1f} s",
          file=log, flush=True)


def run_suite(suite: Suite, output: str | os.PathLike, data_dir: str | os.PathLike | None = None,
              device: str = "auto", workers: int | None = None, max_runs: int | None = None,
              report: bool = True, docs: str | os.PathLike | None = None, progress: bool = False,
              log: TextIO | None = None) -> list[RunState]:
    """Run every planned run that is not finished, score it, and regenerate the report.

    Args:
        suite: the plan.
        output: the suite folder (created).
        data_dir: a dataset folder instead of the suite's synthetic campus.
        device: passed to the trainer (``auto``, ``cpu``, ``cuda``).
        workers: DataLoader workers (default: the suite's setting).
        max_runs: train at most this many runs in this call, then stop (the rest stays pending).
        report: regenerate the report at the end (:func:`write_report`).
        docs: also update ``<docs>/results.md`` and ``<docs>/img`` (see :func:`write_report`).
        progress: show the campus rendering progress bar.
        log: where progress lines go (default stdout).

    Returns the final states. Raises ``ValueError`` for a finished run of another plan.
    """
    log = log if log is not None else sys.stdout
    out = Path(output)
    if max_runs is not None and max_runs < 0:
        raise ValueError(f"max_runs: expected a non-negative integer, got {max_runs}")
    out.mkdir(parents=True, exist_ok=True)
    data = resolve_data_dir(suite, out, data_dir, create=True, progress=progress)
    states = [run_state(suite, r, out, data) for r in suite.runs()]
    stale = [s for s in states if s.state == "stale"]
    if stale:
        s = stale[0]
        raise ValueError(f"output: {s.folder} was trained with {s.message}; move it away or use another "
                         "--output")
    train_split = None
    trained_here = 0
    print(progress_line(suite, states), file=log, flush=True)
    for i, state in enumerate(states):
        if state.state == "done":
            continue
        if state.state != "trained":
            if max_runs is not None and trained_here >= max_runs:
                break
            if state.state == "failed":
                print(f"[{suite.name}] {state.run.name}: retrying after a failure ({state.message})",
                      file=log, flush=True)
            ok = train_run(suite, state, out, data, device, workers, log)
            trained_here += 1
            states[i] = run_state(suite, state.run, out, data)
            if not ok:
                continue
        if train_split is None:
            train_split = _read_splits(data)[0]
        score_run(suite, states[i], train_split, log)
        states[i] = run_state(suite, state.run, out, data)
        print(progress_line(suite, states), file=log, flush=True)
    if report:
        written = write_report(suite, out, data_dir=data_dir, docs=docs)
        print(f"[{suite.name}] report: {written['markdown']}", file=log, flush=True)
    return states


# --------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class Stat:
    """A metric over seeds: mean, sample standard deviation, range and the values."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else float("nan")

    @property
    def sd(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else float("nan")

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else float("nan")

    def cell(self, scale: float = 100.0, digits: int = 1) -> str:
        if not self.values or not math.isfinite(self.mean):
            return "–"
        text = f"{scale * self.mean:.{digits}f}"
        if self.n > 1:
            text += f" ± {scale * self.sd:.{digits}f}"
        return text


def beyond_spread(a: Stat, b: Stat) -> bool | None:
    """True when the seed ranges of ``a`` and ``b`` do not overlap; None with fewer than 2 seeds each."""
    if a.n < 2 or b.n < 2:
        return None
    return a.lo > b.hi or a.hi < b.lo


#: Differences of metrics (fractions) below this are ties: float32 re-ranking of the same neighbourhoods
#: (e.g. MSRerank with ks 20,20,20 against k-reciprocal with k1 20) differs only by rounding.
TIE = 1e-6


def consistent_sign(differences: Sequence[float], tie: float = TIE) -> bool | None:
    """True when every paired difference is beyond ``±tie`` with the same sign; None with fewer than 2."""
    d = [x for x in differences if math.isfinite(x)]
    if len(d) < 2:
        return None
    return all(x > tie for x in d) or all(x < -tie for x in d)


@dataclass
class SuiteResults:
    """Every metric of every finished run: ``metrics[(config, seed, reranking)] = {task: {key: value}}``."""

    suite: Suite
    output: Path
    metrics: dict[tuple[str, int, str], dict[str, dict[str, float]]] = field(default_factory=dict)
    states: list[RunState] = field(default_factory=list)

    def seeds_of(self, key: str, rerank: str = "none") -> list[int]:
        return sorted(s for (k, s, r) in self.metrics if k == key and r == rerank)

    def stat(self, key: str, task: str, metric: str, rerank: str = "none") -> Stat:
        values = []
        for seed in self.seeds_of(key, rerank):
            v = self.metrics[(key, seed, rerank)].get(task, {}).get(metric)
            if v is not None and math.isfinite(float(v)):
                values.append(float(v))
        return Stat(tuple(values))

    def mean_results(self, key: str, rerank: str = "none") -> dict[str, dict[str, float]]:
        """Seed-mean metrics of a configuration, in the ``metrics.json`` shape."""
        seeds = self.seeds_of(key, rerank)
        out: dict[str, dict[str, float]] = {}
        for task in TASKS:
            keys: list[str] = []
            for seed in seeds:
                keys += [k for k in self.metrics[(key, seed, rerank)].get(task, {}) if k not in keys]
            if keys:
                out[task] = {k: self.stat(key, task, k, rerank).mean for k in keys}
        return out

    def has(self, key: str, rerank: str = "none") -> bool:
        return bool(self.seeds_of(key, rerank))


def collect_results(suite: Suite, output: str | os.PathLike, data_dir: str | os.PathLike | None = None
                    ) -> SuiteResults:
    """Read the evaluation files of every run of the suite that has them (finished or not)."""
    out = Path(output)
    results = SuiteResults(suite=suite, output=out, states=suite_states(suite, out, data_dir))
    for state in results.states:
        if state.state == "stale":
            continue
        for rerank in suite.rerankings:
            path = state.folder / EVAL_DIR / f"{rerank}.json"
            if path.is_file():
                results.metrics[(state.run.config.key, state.run.seed, rerank)] = read_metrics(path)
    return results


# --------------------------------------------------------------------------- the report


def _n_scales(results: SuiteResults) -> int:
    for metrics in results.metrics.values():
        for task_metrics in metrics.values():
            n = 0
            while f"mAP_{n}" in task_metrics:
                n += 1
            return n
    return 0


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _yes_no(flag: bool | None) -> str:
    return "n/a" if flag is None else ("**yes**" if flag else "no")


def _pp(value: float, digits: int = 1) -> str:
    if not math.isfinite(value):
        return "–"
    if abs(100.0 * value) < 0.5 * 10.0 ** -digits:
        return f"{0.0:.{digits}f}"  # no "-0.0" for a rounding-level difference
    return f"{100.0 * value:+.{digits}f}"


def _random_baseline(results: SuiteResults, data_dir: Path | None, seeds: int = 3
                     ) -> dict[str, dict[str, Stat]] | None:
    """Scores of random unit embeddings on the test split (mean over ``seeds`` draws), or None."""
    if data_dir is None or not data_dir.exists():
        return None
    train = _train_module()
    try:
        test = _read_splits(data_dir)[1]
    except ValueError:
        return None
    dim = int(results.suite.training.get("embedding_dim", 512))
    thresholds = tuple(results.suite.training.get("thresholds", (200.0, 500.0)))
    draws = [train.random_embedding_baseline(test, dim, thresholds, seed=s) for s in range(seeds)]
    return {task: {k: Stat(tuple(float(d[task][k]) for d in draws)) for k in draws[0][task]}
            for task in TASKS}


def _unpaired_rows(results: SuiteResults, pairs: Sequence[tuple[str, str, str]], metrics: Sequence[str],
                   rerank: str = "none") -> list[list[str]]:
    """Rows ``claim | metric | task: Δ, beyond spread`` for configuration pairs (a − b)."""
    rows = []
    for a, b, text in pairs:
        if not (results.has(a, rerank) and results.has(b, rerank)):
            continue
        for metric in metrics:
            row = [text, _metric_label(metric)]
            for task in TASKS:
                sa, sb = results.stat(a, task, metric, rerank), results.stat(b, task, metric, rerank)
                row += [_pp(sa.mean - sb.mean), _yes_no(beyond_spread(sa, sb))]
            rows.append(row)
    return rows


def _metric_label(metric: str) -> str:
    name, _, scale = metric.partition("_")
    if scale.isdigit():
        names = list(PAPER_SCALE_NAMES)
        return f"{name} {names[int(scale)] if int(scale) < len(names) else scale}"
    return metric.replace("_", " ")


def _paired_rows(results: SuiteResults, keys: Sequence[str], a: str, b: str, metrics: Sequence[str]
                 ) -> list[list[str]]:
    """Rows ``configuration | metric | task: mean Δ, consistent`` for re-ranking a − b on the same runs,
    then one row per metric over all runs (``k/n > 0``: in how many runs the difference is positive)."""
    rows = []
    pooled: dict[tuple[str, str], list[float]] = {}
    for key in keys:
        seeds = [s for s in results.seeds_of(key, a) if (key, s, b) in results.metrics]
        if not seeds:
            continue
        for metric in metrics:
            row = [results.suite.config(key).label, _metric_label(metric)]
            for task in TASKS:
                diffs = [float(results.metrics[(key, s, a)][task].get(metric, float("nan")))
                         - float(results.metrics[(key, s, b)][task].get(metric, float("nan"))) for s in seeds]
                pooled.setdefault((metric, task), []).extend(diffs)
                row += [_pp(float(np.mean(diffs)), 2), _yes_no(consistent_sign(diffs))]
            rows.append(row)
    for metric in metrics:
        if not any((metric, task) in pooled for task in TASKS):
            continue
        row = ["*all runs*", _metric_label(metric)]
        for task in TASKS:
            diffs = [d for d in pooled.get((metric, task), []) if math.isfinite(d)]
            positive = sum(1 for d in diffs if d > TIE)
            row += [_pp(float(np.mean(diffs)), 2) if diffs else "–", f"{positive}/{len(diffs)} > 0"]
        rows.append(row)
    return rows


def _compute_summary(results: SuiteResults) -> list[str]:
    """Data, settings and measured compute of the finished runs."""
    train = _train_module()
    lines = []
    configs, epoch_s, run_s, loads, eval_s = [], [], [], [], []
    for state in results.states:
        saved = _read_json(state.folder / train.CONFIG_FILE)
        if saved is not None:
            configs.append(saved)
        if state.state == "done" and (records := _epoch_records(state.folder)):
            seconds = [r["seconds"] for r in records]
            epoch_s += seconds
            run_s.append(sum(seconds))
        record = _read_json(state.folder / RECORD_FILE) or {}
        loads += [v for v in (record.get("load_at_start"), record.get("load_at_end")) if v is not None]
        if record.get("eval_seconds"):
            eval_s.append(float(record["eval_seconds"]))
    if configs:
        c = configs[0]
        data = c.get("data", {})
        lines.append(f"- **data**: `{c.get('data_dir')}` — {data.get('train_buildings')} train buildings / "
                     f"{data.get('train_drone_images')} drone images, {data.get('test_buildings')} test "
                     f"buildings / {data.get('test_drone_images')} drone images (fingerprint "
                     f"{data.get('sha256')})")
        init = "ImageNet" if c.get("pretrained") else "random"
        lines.append(f"- **every run**: {c.get('backbone')} ({init} initialisation), "
                     f"{c.get('embedding_dim')}-d embeddings, {c.get('image_size')} px, "
                     f"{c.get('epochs')} epochs × {c.get('steps_per_epoch')} steps of {c.get('batch_size')} "
                     f"pairs, Adam lr {c.get('lr'):g} (head {c.get('head_lr'):g}), weight decay "
                     f"{c.get('weight_decay'):g}, cosine schedule, thresholds "
                     f"{', '.join(f'{t:g} m' for t in c.get('thresholds', []))}, frozen BatchNorm "
                     f"{c.get('freeze_batchnorm', True)}, device {c.get('device_used')}, "
                     f"{c.get('workers')} loader worker(s), package {c.get('version')}")
    threads = ""
    try:
        import torch

        threads = f", torch {torch.__version__} with {torch.get_num_threads()} threads"
    except ImportError:  # pragma: no cover
        pass
    lines.append(f"- **machine**: {os.cpu_count()} CPU cores ({platform.machine()}, "
                 f"{platform.system()}){threads}")
    if run_s:
        lines.append(f"- **measured**: {len(run_s)} finished runs, training {np.mean(run_s) / 60:.1f} min "
                     f"per run on average (min {min(run_s) / 60:.1f}, max {max(run_s) / 60:.1f}; "
                     f"{np.mean(epoch_s):.0f} s per epoch), {sum(run_s) / 3600:.2f} h of training in all"
                     + (f"; scoring the four re-rankings {np.mean(eval_s):.1f} s per run" if eval_s else "")
                     + (f"; 1-minute load average {min(loads):.1f}–{max(loads):.1f} at run starts/ends "
                        f"(2 = both cores busy)" if loads else ""))
    return lines


def _ks_lines(results: SuiteResults) -> list[str]:
    seen: dict[str, set[str]] = {}
    for state in results.states:
        record = _read_json(state.folder / RECORD_FILE) or {}
        for per_task in (record.get("ks") or {}).values():
            for task, ks in per_task.items():
                seen.setdefault(task, set()).add(",".join(map(str, ks)))
    return [f"- MSRerank ks (Eq. 6 on the training split) for {task}: {' / '.join(sorted(v))}"
            for task, v in seen.items()]


def _embed(figures: Mapping[str, Any], name: str, caption: str) -> list[str]:
    lines: list[str] = []
    for path in figures.get(name) or []:
        lines += [f"![{caption}]({path})", ""]
    return lines


def report_markdown(results: SuiteResults, figures: Mapping[str, Any], command: str,
                    random_baseline: Mapping[str, Mapping[str, Stat]] | None) -> str:
    """The generated part of the report: status, settings, tables, comparisons, figure links."""
    suite = results.suite
    n_scales = _n_scales(results)
    scales = list(range(n_scales))
    lines: list[str] = []
    counts = estimate_progress(suite, results.states).counts
    total = len(results.states)
    complete = counts.get("done", 0) == total
    lines.append(f"Suite **{suite.name}**: {suite.description}. Command: `{command}`.")
    lines.append("")
    if not complete:
        missing = [s.run.name for s in results.states if s.state != "done"]
        lines.append(f"**Partial results**: {counts.get('done', 0)} of {total} runs finished; missing: "
                     f"{', '.join(missing)}. Continue with the same command (finished runs are skipped, "
                     "an interrupted training resumes from its last epoch).")
        lines.append("")
    lines += _compute_summary(results)
    lines += _ks_lines(results)
    lines.append(f"- **seeds**: {', '.join(map(str, suite.seeds))}; cells are mean ± sample standard "
                 "deviation over seeds, in %. *Beyond spread* = the seed ranges of the two configurations "
                 "do not overlap; for re-rankings of the same runs, *consistent* = same sign in every run.")
    lines.append("")

    methods = [k for k in suite.groups.get("methods", ()) if results.has(k)]
    if methods:
        lines += ["### Table II analogue: hierarchical metrics, no re-ranking", ""]
        header = ["method"] + [f"{t} {m}" for t in TASKS for m in ("H-AP", "ASI", "NDCG")]
        rows = [[suite.config(k).label] + [results.stat(k, t, m).cell() for t in TASKS
                                           for m in ("H-AP", "ASI", "NDCG")] for k in methods]
        if random_baseline is not None:
            rows.append(["*random embeddings*"] + [random_baseline[t][m].cell() for t in TASKS
                                                   for m in ("H-AP", "ASI", "NDCG")])
        lines += _md_table(header, rows)
        for task in TASKS:
            lines += [f"### Table III analogue: {task}, mAP and R@1 per scale, no re-ranking", ""]
            metric_keys = ([f"mAP_{s}" for s in scales] + ["mAP_overall"] + [f"R@1_{s}" for s in scales]
                           + ["R@1_overall"])
            header = ["method"] + [_metric_label(m) for m in metric_keys]
            rows = [[suite.config(k).label] + [results.stat(k, task, m).cell() for m in metric_keys]
                    for k in methods]
            if random_baseline is not None:
                rows.append(["*random embeddings*"] + [random_baseline[task][m].cell() for m in metric_keys])
            lines += _md_table(header, rows)
        lines += _embed(figures, "methods", "mAP per scale of every method, no re-ranking")

        reranks = [r for r in suite.rerankings if any(results.has(k, r) for k in methods)]
        for metric in ("mAP_overall", "H-AP", "R@1_overall"):
            lines += [f"### Re-ranking: {_metric_label(metric)} (both tasks)", ""]
            header = ["method"] + [f"{t} {RERANKINGS[r][0]}" for t in TASKS for r in reranks]
            rows = [[suite.config(k).label] + [results.stat(k, t, metric, r).cell() for t in TASKS
                                               for r in reranks] for k in methods]
            lines += _md_table(header, rows)
        lines += _embed(figures, "rerank", "mAP per scale with each re-ranking")

    scale_keys = [k for k in suite.groups.get("scales", ()) if results.has(k)]
    if scale_keys:
        lines += ["### Fig. 6 analogue: single-scale vs multi-scale training, mAP at every scale", ""]
        metric_keys = [f"mAP_{s}" for s in scales] + ["mAP_overall"]
        header = ["training"] + [f"{t} {_metric_label(m)}" for t in TASKS for m in metric_keys]
        rows = [[suite.config(k).label] + [results.stat(k, t, m).cell() for t in TASKS for m in metric_keys]
                for k in scale_keys]
        lines += _md_table(header, rows)
        lines += _embed(figures, "scales", "Single-scale vs multi-scale DyCL, mAP per scale")

    sampler_keys = [k for k in suite.groups.get("sampler", ()) if results.has(k)]
    if len(sampler_keys) > 1:
        lines += ["### Batch composition: random vs geo sampler (DyCL)", ""]
        metric_keys = ["H-AP"] + [f"mAP_{s}" for s in scales] + ["mAP_overall", "R@1_0"]
        header = ["sampler"] + [f"{t} {_metric_label(m)}" for t in TASKS for m in metric_keys]
        rows = [[suite.config(k).label] + [results.stat(k, t, m).cell() for t in TASKS for m in metric_keys]
                for k in sampler_keys]
        lines += _md_table(header, rows)
        lines += _embed(figures, "sampler", "DyCL with the random and the geo sampler, mAP per scale")

    lines += _comparisons(results, scales)
    examples = figures.get("examples") or []
    if examples:
        lines += ["### Examples", ""]
    for caption, path in examples:
        lines += [f"*{caption}*", "", f"![{caption}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _comparisons(results: SuiteResults, scales: Sequence[int]) -> list[str]:
    """The differences behind the paper's claims, each with whether it exceeds the spread over seeds."""
    suite = results.suite
    cfg = {c.key for c in suite.configs}
    lines = ["### Differences behind the paper's claims (percentage points, no re-ranking unless stated)", ""]
    header = ["comparison", "metric"] + [f"{t} {h}" for t in TASKS for h in ("Δ", "beyond spread")]
    per_scale = [f"mAP_{s}" for s in scales] + ["mAP_overall"]
    rows: list[list[str]] = []
    baselines = [k for k in ("infonce", "triplet", "multisimilarity", "normsoftmax") if k in cfg]
    for base in baselines:
        if "dycl" in cfg:
            rows += _unpaired_rows(results, [("dycl", base, f"DyCL − {suite.config(base).label}")], per_scale)
    if {"dycl", "sigmatriplet"} <= cfg:
        rows += _unpaired_rows(results, [("dycl", "sigmatriplet", "DyCL − Σ-Triplet")], per_scale)
    if {"dycl-happier", "dycl", "happier"} <= cfg:
        rows += _unpaired_rows(results, [("dycl-happier", "dycl", "DyCL+HAPPIER − DyCL"),
                                         ("dycl-happier", "happier", "DyCL+HAPPIER − HAPPIER")],
                               ["H-AP", "mAP_overall"])
    multi = suite.groups.get("scales", ())
    if multi:
        for single in multi[:-1]:
            rows += _unpaired_rows(results, [(multi[-1], single,
                                              f"multi-scale − {suite.config(single).label}")], per_scale)
    sampler = suite.groups.get("sampler", ())
    if len(sampler) == 2:
        rows += _unpaired_rows(results, [(sampler[1], sampler[0], "geo − random sampler")],
                               ["H-AP"] + per_scale)
    if rows:
        lines += _md_table(header, rows)
    methods = list(suite.groups.get("methods", ()))
    paired_header = ["method", "metric"] + [f"{t} {h}" for t in TASKS for h in ("mean Δ", "consistent")]
    for a, b, title in (("msrerank-paper", "k-reciprocal", "MSRerank (paper) − k-reciprocal"),
                        ("msrerank-paper", "none", "MSRerank (paper) − no re-ranking"),
                        ("k-reciprocal", "none", "k-reciprocal − no re-ranking"),
                        ("msrerank-reference", "msrerank-paper", "MSRerank reference − paper variant")):
        if a in suite.rerankings and b in suite.rerankings:
            prow = _paired_rows(results, methods, a, b, ["mAP_overall"])
            scale_maps = [f"mAP_{s}" for s in scales]  # pooled over all runs only
            prow += [r for r in _paired_rows(results, methods, a, b, scale_maps) if r[0] == "*all runs*"]
            if prow:
                lines += [f"**{title}** (same runs, paired):", ""]
                lines += _md_table(paired_header, prow)
    return lines


def _write_figures(results: SuiteResults, img: Path, data_dir: Path | None) -> dict[str, Any]:
    """The report's figures (PNG, into ``img``); returns their names relative to the report."""
    from .plots import save_figure, scale_bars_figure

    suite = results.suite
    img.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}

    def bars(name: str, runs: dict[str, dict], title: str) -> None:
        """One figure per task (both tasks side by side get too wide with many bars)."""
        if not runs:
            return
        figures[name] = []
        for task in TASKS:
            per_task = {label: {task: r[task]} for label, r in runs.items() if task in r}
            if per_task:
                file = f"results_{name}_{TASK_FILES[task].removesuffix('.npz')}.png"
                save_figure(scale_bars_figure(per_task, metric="mAP", title=f"{title}, {task}"), img / file)
                figures[name].append(f"img/{file}")

    methods = [k for k in suite.groups.get("methods", ()) if results.has(k)]
    bars("methods", {suite.config(k).label: results.mean_results(k) for k in methods},
         f"{suite.name}: mAP per scale, no re-ranking (mean over seeds)")
    best = "dycl-happier" if results.has("dycl-happier") else (methods[-1] if methods else None)
    if best is not None:
        bars("rerank", {RERANKINGS[r][0]: results.mean_results(best, r) for r in suite.rerankings
                        if results.has(best, r)},
             f"{suite.config(best).label}: mAP per scale with each re-ranking")
    scale_keys = [k for k in suite.groups.get("scales", ()) if results.has(k)]
    if len(scale_keys) > 1:
        labels = {k: suite.config(k).label for k in scale_keys}
        labels[scale_keys[-1]] = "multi-scale (" + labels[scale_keys[-1]] + ")"
        bars("scales", {labels[k]: results.mean_results(k) for k in scale_keys},
             "Fig. 6 analogue: single- vs multi-scale DyCL, mAP per scale")
    sampler_keys = [k for k in suite.groups.get("sampler", ()) if results.has(k)]
    if len(sampler_keys) > 1:
        bars("sampler", {suite.config(k).label: results.mean_results(k) for k in sampler_keys},
             "DyCL: random vs geo batch sampler, mAP per scale")
    figures.update(_example_figures(results, img, data_dir))
    return figures


def _example_figures(results: SuiteResults, img: Path, data_dir: Path | None) -> dict[str, list]:
    """Ranked lists (Fig. 1) of the first seed of two methods, a rank-shift (Fig. 7) and a map (Fig. 3)."""
    from .evaluate import write_plots

    suite = results.suite
    train = _train_module()
    candidates = [k for k in ("infonce", "dycl-happier") if results.has(k)]
    if not candidates or data_dir is None:
        return {}
    try:
        train_split, test_split = _read_splits(data_dir)
    except ValueError:
        return {}
    out: dict[str, list] = {"ranked_lists": [], "rank_shifts": [], "map": []}
    for key in candidates:
        seed = results.seeds_of(key)[0]
        folder = RunSpec(suite.config(key), seed).folder(results.output)
        tasks = load_embeddings(folder / train.EMBEDDINGS_DIR)
        evaluation = evaluate_tasks(tasks, RerankConfig(), train_split, progress=False)
        scratch = img / f".plots-{key}"
        files = write_plots(scratch, tasks, evaluation, split=test_split, n_queries=3, top_k=8,
                            progress=False)
        for file in files:
            stem = file.stem
            if stem.startswith("ranked_lists_"):
                target = img / f"results_ranked_lists_{key}_{stem.removeprefix('ranked_lists_')}.png"
                out["ranked_lists"].append((f"{suite.config(key).label} (seed {seed}): "
                                            f"{stem.removeprefix('ranked_lists_').replace('_to_', ' → ')}, "
                                            "top 8, frames coloured by level", target))
            elif stem.startswith("rank_shifts_") and key == candidates[-1]:
                target = img / f"results_{stem}_{key}.png"
                out["rank_shifts"].append((f"{suite.config(key).label}: where the initial top results "
                                           "move after k-reciprocal re-ranking (Fig. 7 analogue)", target))
            elif stem == "map" and key == candidates[-1]:
                target = img / "results_test_map.png"
                out["map"].append(("The test buildings around the densest one, 200 m and 500 m circles "
                                   "(Fig. 3 analogue)", target))
            else:
                continue
            shutil.copyfile(file, target)
        shutil.rmtree(scratch, ignore_errors=True)
    ordered = out["ranked_lists"] + out["rank_shifts"] + out["map"]
    return {"examples": [(caption, f"img/{path.name}") for caption, path in ordered]}


def _write_csv(results: SuiteResults, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["suite", "config", "label", "seed", "reranking", "task", "metric", "value"])
    for (key, seed, rerank), metrics in sorted(results.metrics.items()):
        label = results.suite.config(key).label
        for task, values in metrics.items():
            for metric, value in values.items():
                text = "" if value is None or not math.isfinite(float(value)) else repr(value)
                writer.writerow([results.suite.name, key, label, seed, rerank, task, metric, text])
    write_text_atomic(path, buffer.getvalue())


BEGIN_MARK = "<!-- BEGIN dycl-experiment report: generated, edit outside these markers -->"
END_MARK = "<!-- END dycl-experiment report -->"


def splice_generated(document: str, block: str) -> str:
    """``document`` with the text between the markers replaced by ``block`` (appended when absent)."""
    wrapped = f"{BEGIN_MARK}\n\n{block.rstrip()}\n\n{END_MARK}"
    start, end = document.find(BEGIN_MARK), document.find(END_MARK)
    if start >= 0 and end > start:
        return document[:start] + wrapped + document[end + len(END_MARK):]
    return document.rstrip() + ("\n\n" if document.strip() else "") + wrapped + "\n"


def default_command(suite: Suite, output: str | os.PathLike,
                    data_dir: str | os.PathLike | None = None) -> str:
    data = f" --data-dir {data_dir}" if data_dir is not None else ""
    return f"dycl-experiment run --suite {suite.name} --output {output}{data}"


def write_report(suite: Suite, output: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 docs: str | os.PathLike | None = None, command: str | None = None) -> dict[str, Path]:
    """Regenerate the report from the evaluation files under ``output``.

    Writes ``output/report/results.md`` (tables, comparisons, figure links),
    ``results.csv`` (every metric of every run, long form), ``mean/<config>__<reranking>.json``
    (seed means, readable by ``dycl-eval --compare``) and ``img/results_*.png``. With ``docs``,
    the figures are also copied into ``<docs>/img/`` and the generated block of
    ``<docs>/results.md`` (between :data:`BEGIN_MARK` and :data:`END_MARK`) is replaced, keeping
    the hand-written text around it. Works on partial suites (marked as such).
    """
    out = Path(output)
    if not out.is_dir():
        raise ValueError(f"output: {out} does not exist (run the suite first)")
    results = collect_results(suite, out, data_dir)
    if not results.metrics:
        raise ValueError(f"output: {out} holds no finished run of suite {suite.name} yet")
    report = out / REPORT_DIR
    img = report / "img"
    try:
        data = resolve_data_dir(suite, out, data_dir, create=False)
    except ValueError:
        data = None
    figures = _write_figures(results, img, data)
    baseline = _random_baseline(results, data)
    block = report_markdown(results, figures, command or default_command(suite, output, data_dir), baseline)
    means = report / "mean"
    means.mkdir(parents=True, exist_ok=True)
    for c in suite.configs:
        for r in suite.rerankings:
            if results.has(c.key, r):
                write_results(means / f"{c.key}__{r}.json", results.mean_results(c.key, r),
                              {"configuration": c.label, "re-ranking": RERANKINGS[r][0],
                               "seeds": ", ".join(map(str, results.seeds_of(c.key, r)))})
    _write_csv(results, report / "results.csv")
    markdown = report / "results.md"
    write_text_atomic(markdown, f"# Results of suite {suite.name}\n\n{block}")
    written = {"markdown": markdown, "csv": report / "results.csv", "img": img}
    if docs is not None:
        docs_dir = Path(docs)
        (docs_dir / "img").mkdir(parents=True, exist_ok=True)
        for png in sorted(img.glob("results_*.png")):
            shutil.copyfile(png, docs_dir / "img" / png.name)
        target = docs_dir / "results.md"
        existing = target.read_text(encoding="utf-8") if target.is_file() else f"# Results: {suite.name}\n"
        write_text_atomic(target, splice_generated(existing, block))
        written["docs"] = target
    return written


__all__ = [
    "BEGIN_MARK",
    "END_MARK",
    "PAPER_FULL",
    "PAPER_MINI",
    "RERANKINGS",
    "SMOKE",
    "SUITES",
    "CampusSpec",
    "RunConfig",
    "RunSpec",
    "RunState",
    "Stat",
    "Suite",
    "SuiteResults",
    "TIE",
    "beyond_spread",
    "collect_results",
    "config_mismatch",
    "consistent_sign",
    "estimate_progress",
    "format_plan",
    "get_suite",
    "planned_overrides",
    "progress_line",
    "report_markdown",
    "run_state",
    "run_suite",
    "splice_generated",
    "suite_states",
    "write_report",
]
