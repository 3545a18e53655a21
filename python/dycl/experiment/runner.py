"""Running a suite: every unfinished run is trained (or resumed), scored with each re-ranking, reported.

Resuming: ``run`` looks at every planned run folder. Finished runs (metrics,
embeddings and every re-ranking file present) are skipped; a trained run with
missing re-rankings is only re-scored; a run with a ``last.pt`` but no final
metrics continues with the trainer's ``--resume`` semantics (same weights and
metrics as an uninterrupted run on CPU); a folder without a checkpoint (killed
during its first epoch) is started again. A finished run whose configuration
differs from the plan is refused (one line naming the run and the setting), so
results of different plans never mix. The runs are ordered seed by seed, so an
interrupted suite already has every configuration at the first seed.
"""

from __future__ import annotations

import gc
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .._files import FolderLock, write_json_atomic
from ..data import open_train_test
from ..runs import EMBEDDINGS_DIR, epochs_logged, read_json
from ..tables import write_results
from ..task_files import load_embeddings
from ..tasks import evaluate_tasks
from .report import write_report
from .sections import TABLE4_DIR
from .state import (
    DATA_DIR,
    EVAL_DIR,
    RECORD_FILE,
    RunState,
    estimate_progress,
    planned_overrides,
    rerankings_to_score,
    resolve_data_dir,
    run_state,
    write_gitignore,
)
from .suites import RERANKINGS, Suite

# --------------------------------------------------------------------------- progress and the plan


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
        setting = c.sampler + "".join(f", {k} {v}" for k, v in (c.training or {}).items())
        rows.append((run.name, loss, setting, state))
    head = ("run", "loss", "sampler, settings", "state" if states is not None else "")
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
    for sweep in suite.sweeps.values():
        points = ", ".join(f"{value:g} ({key})" for key, value in sweep.points)
        lines.append(f"Fig. 8 sweep of {sweep.parameter}: {points}")
    if states is not None:
        lines += ["", progress_line(suite, states)]
    return "\n".join(lines)


_GROUP_TITLES = {
    "methods": "Tables II/III (methods)",
    "scales": "Fig. 6 (single-scale Triplet vs Σ-Triplet)",
    "scales_dycl": "extra (not Fig. 6): single-scale DyCL terms vs DyCL",
    "sampler": "batch sampler (random vs geo)",
}


# --------------------------------------------------------------------------- the runner


def _update_record(folder: Path, **values: Any) -> None:
    path = folder / RECORD_FILE
    record = read_json(path) or {}
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
    from ..train import run_training  # imports torch: only when a run is trained

    overrides = planned_overrides(suite, state.run, output, data_dir, device, workers)
    resume = state.state == "partial"
    before = state.epochs_done if resume else 0
    how = f"resuming after epoch {before}" if resume else "training"
    print(f"[{suite.name}] {state.run.name}: {how} ({state.run.config.label}, seed {state.run.seed})",
          file=log, flush=True)
    load_start = _load()
    start = time.perf_counter()
    try:
        run_training(overrides, resume=resume, overwrite=state.state in ("started", "failed"),
                           out=io.StringIO())
    except ValueError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"[{suite.name}] {state.run.name}: FAILED: {message}", file=log, flush=True)
        _update_record(state.folder, failed=message)
        return False
    finally:
        gc.collect()
    seconds = time.perf_counter() - start
    epochs = epochs_logged(state.folder) - before
    _update_record(state.folder, config=state.run.config.key, seed=state.run.seed, train_seconds=seconds,
                   epochs_trained=epochs, failed=None, load_at_start=load_start, load_at_end=_load(),
                   finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    print(f"[{suite.name}] {state.run.name}: trained {epochs} epochs in {seconds / 60:.1f} min",
          file=log, flush=True)
    return True


def score_run(suite: Suite, state: RunState, train_split, log: TextIO) -> None:
    """Score the run's saved embeddings with every re-ranking that has no result file yet (or one whose
    Eq. 6 ks were read another way than the suite plans, see :func:`~.state.rerankings_to_score`)."""
    missing = rerankings_to_score(suite, state.folder)
    if not missing:
        return
    start = time.perf_counter()
    tasks = load_embeddings(state.folder / EMBEDDINGS_DIR)
    record = read_json(state.folder / RECORD_FILE) or {}
    ks_used: dict[str, dict[str, list[int]]] = dict(record.get("ks") or {})
    readings: dict[str, str] = dict(record.get("ks_from") or {})
    for name in missing:
        label, rerank = RERANKINGS[name]
        evaluation = evaluate_tasks(tasks, rerank, train_split, progress=False)
        settings = {"run": str(state.folder), "re-ranking": rerank.describe()}
        for task, ks in evaluation.ks.items():
            settings[f"ks {task}"] = f"{','.join(map(str, ks))} ({evaluation.notes[task]})"
            ks_used.setdefault(name, {})[task] = list(ks)
        if rerank.method == "msrerank" and rerank.ks is None:
            readings[name] = rerank.ks_from
        write_results(state.folder / EVAL_DIR / f"{name}.json", evaluation.results, settings)
    seconds = time.perf_counter() - start
    eq6 = {"ks": ks_used, "ks_from": readings} if ks_used else {}
    _update_record(state.folder, eval_seconds=seconds, **eq6)
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
    with FolderLock(out, "output"):  # one suite runner per folder; each run also locks its own folder
        write_gitignore(out)
        states = _run_unfinished(suite, out, data_dir, device, workers, max_runs, progress, log)
        if report:
            written = write_report(suite, out, data_dir=data_dir, docs=docs)
            print(f"[{suite.name}] report: {written['markdown']}", file=log, flush=True)
    return states


def run_table4(suite: Suite, out: Path, log: TextIO) -> None:
    """The suite's Table IV seeds without a result file (seconds each on a CPU)."""
    missing = [s for s in suite.table4_seeds if not (out / TABLE4_DIR / f"seed{s}.json").is_file()]
    if not missing:
        return
    from .table4 import run_table4_seed  # imports torch: only when there is something to run

    for seed in missing:
        record = run_table4_seed(out, seed)
        rows = record["rows"]
        print(f"[{suite.name}] table4/seed{seed}: mAP " + ", ".join(
            f"{label} {100 * rows[label]['mAP_overall']:.2f}" for label in rows)
            + f" in {record['seconds']:.0f} s", file=log, flush=True)


def _run_unfinished(suite: Suite, out: Path, data_dir: str | os.PathLike | None, device: str,
                    workers: int | None, max_runs: int | None, progress: bool, log: TextIO) -> list[RunState]:
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
    run_table4(suite, out, log)
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
            train_split = open_train_test(data)[0]
        score_run(suite, states[i], train_split, log)
        states[i] = run_state(suite, state.run, out, data)
        print(progress_line(suite, states), file=log, flush=True)
    return states


def report_suite(suite: Suite, output: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 docs: str | os.PathLike | None = None) -> dict[str, Path]:
    """:func:`write_report` while holding the suite folder's lock (never while ``run`` writes there)."""
    out = Path(output)
    if not out.is_dir():
        raise ValueError(f"output: {out} does not exist (run the suite first)")
    with FolderLock(out, "output"):
        return write_report(suite, out, data_dir=data_dir, docs=docs)


__all__ = [
    "format_plan",
    "report_suite",
    "progress_line",
    "run_suite",
    "score_run",
    "train_run",
]
