"""Evaluation engine behind ``dycl-eval``: score a checkpoint or an embeddings file; results, figures.

The pieces live one floor down: embedding in :mod:`dycl.embed`, the retrieval
task, re-ranking and scoring in :mod:`dycl.tasks`, tables and result files in
:mod:`dycl.tables`, the figures in :mod:`dycl.plots`. This module puts them
together for the command::

    from dycl.evaluate import EvalOptions, run_eval
    from dycl.tasks import RerankConfig

    run_eval(EvalOptions(checkpoint="run/last.pt", data_dir="DA-Campus", output="run/eval/metrics.json",
                         rerank=RerankConfig(method="msrerank")))

With ``output="x/metrics.json"`` and a checkpoint, the embeddings are saved in
``x/metrics.embeddings/`` (named after the output, so two evaluations into
one folder never collide), or in ``save_embeddings`` when given.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ._files import FolderLock, check_writable
from ._validate import int_at_least, positive_ints
from .figures import write_plots
from .geo import DEFAULT_THRESHOLDS, validate_thresholds
from .metrics import DEFAULT_RECALL_AT
from .metrics_authors import AUTHORS, DEFINITIONS, check_compat
from .shards import SHARDS_DIR, remove_shards, shard_source, sharded_embed_split
from .tables import format_tables, percent, read_metrics, result_paths, write_results
from .task_files import load_embeddings
from .tasks import (
    TASK_FILES,
    Evaluation,
    RerankConfig,
    RetrievalTask,
    evaluate_tasks,
    tasks_from_split,
)

if TYPE_CHECKING:  # pragma: no cover
    from .data import Split
    from .distributed import DistInfo


@dataclass
class EvalOptions:
    """Everything ``dycl-eval`` can be asked to do (the CLI builds one, :func:`run_eval` reads it).

    Exactly one of ``checkpoint`` (embed ``split`` of ``data_dir``) and
    ``embeddings`` (a DESIGN §7 file or folder) is given. ``None`` for
    ``backbone``, ``image_size``, ``batch_size`` and ``thresholds`` means "from
    the checkpoint's training configuration" (else the paper's defaults).
    ``compat="authors"`` scores as the authors' release does (:mod:`dycl.metrics_authors`),
    and says so in the result files.
    """

    checkpoint: str | os.PathLike | None = None
    embeddings: str | os.PathLike | None = None
    data_dir: str | os.PathLike | None = None
    dataset_format: str = "auto"
    split: str = "test"
    backbone: str | None = None
    image_size: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    workers: int | None = None
    amp: bool = True
    trust_checkpoint: bool = False
    thresholds: Sequence[float] | None = None
    rerank: RerankConfig = field(default_factory=RerankConfig)
    recall_at: Sequence[int] = DEFAULT_RECALL_AT
    output: str | os.PathLike | None = None
    save_embeddings: str | os.PathLike | None = None
    overwrite: bool = False
    plots: str | os.PathLike | None = None
    plot_queries: int = 4
    plot_top_k: int = 10
    map_building: str | None = None
    shift_ks: Sequence[int] | None = None
    progress: bool = True
    compat: str = DEFINITIONS
    exclude_self: bool = False

    def __post_init__(self) -> None:
        # Checked here, before any work: a bad option must not fail after minutes of embedding.
        # (The re-ranking options are checked when the RerankConfig is made.)
        if (self.checkpoint is None) == (self.embeddings is None):
            raise ValueError("checkpoint: pass exactly one of checkpoint and embeddings")
        if self.exclude_self and self.checkpoint is not None:
            raise ValueError("exclude_self: only with embeddings (a checkpoint is scored on the cross-view "
                             "tasks; save a single-domain task with dycl.tasks.single_domain_task)")
        if self.checkpoint is not None and self.data_dir is None:
            raise ValueError("data_dir: --checkpoint needs --data-dir (the images to embed)")
        for name, minimum in (("batch_size", 1), ("image_size", 16), ("workers", 0)):
            if getattr(self, name) is not None:
                int_at_least(name, getattr(self, name), minimum)
        int_at_least("plot_queries", self.plot_queries, 1)
        int_at_least("plot_top_k", self.plot_top_k, 1)
        self.recall_at = positive_ints("recall_at", self.recall_at)
        check_compat(self.compat, warn=False)


def embeddings_dir(options: EvalOptions) -> Path | None:
    """Where a checkpoint evaluation saves its embeddings: ``save_embeddings``, else beside the output.

    ``runs/x/b.json`` -> ``runs/x/b.embeddings/``; None without either (nothing is saved).
    """
    if options.save_embeddings is not None:
        return Path(options.save_embeddings)
    if options.output is None:
        return None
    return result_paths(options.output)["json"].with_suffix(".embeddings")


def _refuse_existing(options: EvalOptions) -> None:
    """Stop before any work if a result file would be replaced without ``overwrite``."""
    if options.overwrite:
        return
    taken = [p for p in result_paths(options.output).values() if p.exists()] if options.output else []
    folder = embeddings_dir(options) if options.checkpoint is not None else None
    if folder is not None:
        taken += [folder / f for f in TASK_FILES.values() if (folder / f).exists()]
    if taken:
        raise ValueError(f"output: {taken[0]} exists; pass --overwrite to replace it")


def _training_split(data_dir: str | os.PathLike, dataset_format: str, evaluated: str
                    ) -> tuple[Split | None, str]:
    """The training split for Eq. 6, or None and the reason (no such split, or it cannot be read)."""
    from .data import DatasetError, open_split

    name = "train" if evaluated != "train" else "test"
    try:
        return open_split(data_dir, name, dataset_format, check_images=False), ""
    except DatasetError as exc:
        return None, str(exc).splitlines()[0]


def _checkpoint_tasks(options: EvalOptions, settings: dict[str, Any], log: TextIO, dist: DistInfo | None
                      ) -> tuple[dict[str, RetrievalTask] | None, Split, float]:
    """Embed the split with the checkpoint's network; returns the tasks, the split and the seconds.

    Under torchrun (``dist``) every process embeds its shard and the tasks are
    the main process's (None elsewhere).
    """
    from .data import open_split
    from .embed import resolve_device
    from .models import load_model

    start = time.perf_counter()
    model, info = load_model(options.checkpoint, backbone=options.backbone, image_size=options.image_size,
                             trusted=options.trust_checkpoint)
    ts = validate_thresholds(options.thresholds or info.get("thresholds") or DEFAULT_THRESHOLDS)
    split = open_split(options.data_dir, options.split, options.dataset_format)
    dev = str(dist.device) if dist is not None else resolve_device(options.device)
    model.to(dev)
    if dev.startswith("cuda"):
        import torch

        model.to(memory_format=torch.channels_last)  # as in training; extract_embeddings feeds NHWC
    processes = f", {dist.world_size} processes" if dist is not None else ""
    if dist is None or dist.is_main:
        print(f"dycl-eval: {options.checkpoint} ({info['layout']}, {info['backbone']}, "
              f"{info['embedding_dim']}-d, "
              f"{info['image_size']} px) on {split.num_buildings} satellite + {split.num_drone} "
              f"drone images of {options.data_dir} [{options.split}], {dev}{processes}", file=log)
    folder = embeddings_dir(options)
    embedded = _embed(options, model, info, split, dev, dist, folder, log)
    if embedded is None:
        return None, split, 0.0
    seconds = time.perf_counter() - start
    tasks = tasks_from_split(*embedded, split, ts)
    settings.update({"checkpoint": f"{options.checkpoint} ({info['layout']})", "backbone": info["backbone"],
                     "embedding dim": info["embedding_dim"], "image size": info["image_size"],
                     "data": f"{options.data_dir} [{options.split}]"})
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        saved = [task.save(folder / TASK_FILES[name]) for name, task in tasks.items()]
        settings["embeddings"] = ", ".join(str(p) for p in saved)
        if dist is not None:
            remove_shards(folder / SHARDS_DIR)  # merged and saved: the shards have served
    return tasks, split, seconds


def _embed(options: EvalOptions, model: Any, info: dict[str, Any], split: Split, dev: str,
           dist: DistInfo | None, folder: Path | None, log: TextIO) -> tuple[Any, Any] | None:
    """Satellite and drone embeddings: in this process, or sharded over torchrun's (None off the main one)."""
    from .embed import embed_split

    batch = int(options.batch_size or info.get("eval_batch_size") or 128)
    workers = min(8, os.cpu_count() or 1) if options.workers is None else int(options.workers)
    kwargs: dict[str, Any] = {"batch_size": batch, "device": dev, "amp": options.amp, "workers": workers,
                              "progress": options.progress}
    if dist is None:
        return embed_split(model, split, info["image_size"], **kwargs)
    source = shard_source(model, split, info["image_size"], dev, options.amp,
                          description=f"{options.checkpoint} on {options.data_dir} [{options.split}]")
    assert folder is not None  # checked by _run_eval_launched
    return sharded_embed_split(model, split, folder / SHARDS_DIR, source, overwrite=options.overwrite,
                               log=log, **kwargs)


def _print_results(evaluation: Evaluation, rerank: RerankConfig, out: TextIO) -> None:
    print(format_tables(evaluation.results), file=out)
    if rerank.method == "none":
        return
    print(f"\nRe-ranking against plain cosine distances (%, {rerank.describe()}):", file=out)
    for name, after in evaluation.results.items():
        before = evaluation.baseline[name]
        changes = [f"{key} {percent(before.get(key))} -> {percent(after.get(key))}"
                   for key in ("H-AP", "mAP_overall", "R@1_overall")]
        print(f"  {name}: {', '.join(changes)}", file=out)


#: What a result file scored with ``compat="authors"`` says about its numbers (``metrics.md``).
AUTHORS_SETTING = ("compat=authors: the authors' released evaluation, not the definitions (H-AP counted by "
                   "relevance value, can exceed 1; each query's last-ranked gallery item dropped)")


def _marked(results: dict[str, dict[str, Any]], compat: str) -> dict[str, dict[str, Any]]:
    """The results to write: with ``compat="authors"`` every task's metrics carry ``"compat": "authors"``."""
    if compat != AUTHORS:
        return results
    return {task: {"compat": AUTHORS, **metrics} for task, metrics in results.items()}


def _settings_after(evaluation: Evaluation, tasks: dict[str, RetrievalTask],
                    settings: dict[str, Any]) -> None:
    first = next(iter(tasks.values()))
    settings["thresholds"] = ", ".join(f"{t:g} m" for t in first.thresholds)
    settings["re-ranking"] = evaluation.rerank.describe()
    for name, search in evaluation.knn.items():
        settings[f"neighbour search {name}"] = search
    for name, ks in evaluation.ks.items():
        settings[f"ks {name}"] = f"{','.join(map(str, ks))} ({evaluation.notes[name]})"


def run_eval(options: EvalOptions, out: TextIO | None = None, log: TextIO | None = None) -> Evaluation | None:
    """``dycl-eval``: score a checkpoint (both tasks of ``data_dir``'s split) or an embeddings file.

    Prints the tables to ``out`` and progress/timings to ``log``; writes
    ``output`` (+ ``.md``, ``.csv``), the embeddings (see :func:`embeddings_dir`)
    and the figures under ``plots``. Existing result files are only replaced
    with ``overwrite``; that is checked before any work.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) a checkpoint's images are embedded
    in shards, one per process, through files in the embeddings folder
    (:mod:`dycl.shards`; rerun after a crash, the finished shards are kept);
    the main process merges them and does the rest, and returns the
    evaluation; the other processes return None.
    """
    out = out if out is not None else sys.stdout
    log = log if log is not None else sys.stderr
    rank, world = _launched()
    if world > 1 and options.checkpoint is not None:
        return _run_eval_launched(options, out, log)
    if rank != 0:
        return None  # scoring saved embeddings is one process's work
    with contextlib.ExitStack() as held:
        _claim_outputs(options, held)
        return _run_eval(options, out, log)


#: How long a torchrun process of dycl-eval may wait for the others (the process group's timeout).
_SHARD_WAIT_S = 7 * 24 * 3600.0


def _launched() -> tuple[int, int]:
    """torchrun's ``(RANK, WORLD_SIZE)``; ``(0, 1)`` outside it, without importing torch."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    from .distributed import launched

    return launched()


def _run_eval_launched(options: EvalOptions, out: TextIO, log: TextIO) -> Evaluation | None:
    """:func:`run_eval` on every process of a torchrun launch: the outputs claimed by the main one."""
    from .distributed import all_ranks, cleanup, init_distributed

    if embeddings_dir(options) is None:
        raise ValueError("output: under torchrun the processes hand their embeddings over in files: "
                         "pass --output or --save-embeddings")
    # A process whose shards are already there waits in a collective for the slowest one, which may
    # embed for hours; a process that dies outright is caught by torchrun, which stops the others.
    dist = init_distributed(options.device, timeout_s=_SHARD_WAIT_S)
    try:
        with contextlib.ExitStack() as held:
            all_ranks(lambda: _claim_outputs(options, held) if dist.is_main else None,
                      peer_error=lambda: ValueError("output: the main process refused the outputs "
                                                    "(see its message)"))
            return _run_eval(options, out, log, dist)
    finally:
        cleanup()


def _claim_outputs(o: EvalOptions, held: contextlib.ExitStack) -> None:
    """Before any work: every output folder is writable and locked for this process, nothing is in the way."""
    if o.output is not None:
        json_path = result_paths(o.output)["json"]
        check_writable(json_path.parent, "output")
        # One lock per result file, so that evaluations into one folder with different names coexist.
        held.enter_context(FolderLock(json_path.parent, "output", lock_file=f".{json_path.name}.lock"))
    folder = embeddings_dir(o) if o.checkpoint is not None else None
    if folder is not None:
        check_writable(folder, "save_embeddings" if o.save_embeddings is not None else "output")
    if o.plots is not None:
        check_writable(o.plots, "plots")  # figures are written atomically; no lock file among them
    _refuse_existing(o)


def _run_eval(o: EvalOptions, out: TextIO, log: TextIO, dist: DistInfo | None = None) -> Evaluation | None:
    settings: dict[str, Any] = {}
    test_split = train_split = None
    timings: dict[str, float] = {}
    if o.checkpoint is not None:
        embedded, test_split, timings["embedding"] = _checkpoint_tasks(o, settings, log, dist)
        if embedded is None:
            return None  # a torchrun process other than the main one: its shard is written
        tasks = embedded
    else:
        given = None if o.thresholds is None else validate_thresholds(o.thresholds)
        tasks = load_embeddings(o.embeddings, given, exclude_self=True if o.exclude_self else None)
        if o.plots is not None and any(t.exclude_self for t in tasks.values()):
            raise ValueError("plots: the figures are drawn for cross-view tasks; a single-domain task "
                             "(exclude_self) has none yet")
        settings["embeddings"] = ", ".join(t.source for t in tasks.values())
        if o.data_dir is not None and o.plots is not None:
            from .data import open_split

            test_split = open_split(o.data_dir, o.split, o.dataset_format)
    if o.rerank.method == "msrerank" and o.rerank.ks is None and o.data_dir is not None:
        train_split, why = _training_split(o.data_dir, o.dataset_format, o.split)
        if train_split is None:
            print(f"dycl-eval: no training split for Eq. 6 ({why}); ks from the evaluated images", file=log)
    evaluation = evaluate_tasks(tasks, o.rerank, train_split, o.recall_at, progress=o.progress, log=log,
                                compat=o.compat)
    evaluation.seconds.update(timings)
    _settings_after(evaluation, tasks, settings)
    if o.compat == AUTHORS:
        settings["metrics"] = AUTHORS_SETTING
        print(f"Scored with {AUTHORS_SETTING}\n", file=out)  # the tables alone must not pass for ours
    _print_results(evaluation, o.rerank, out)
    if o.output is not None:
        paths = write_results(o.output, _marked(evaluation.results, o.compat), settings)
        print(f"\nwrote {paths['json']}, {paths['md'].name}, {paths['csv'].name}", file=out)
    if o.plots is not None:
        start = time.perf_counter()
        files = write_plots(o.plots, tasks, evaluation, split=test_split, n_queries=o.plot_queries,
                            top_k=o.plot_top_k, map_building=o.map_building, shift_ks=o.shift_ks,
                            progress=o.progress)
        evaluation.seconds["figures"] = time.perf_counter() - start
        print(f"wrote {len(files)} figures to {o.plots}: {', '.join(f.name for f in files)}", file=out)
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in evaluation.seconds.items())
    print(f"dycl-eval: times: {timing}", file=log)
    return evaluation


# --------------------------------------------------------------------------- dycl-eval --compare


def _default_labels(files: Sequence[Path]) -> list[str]:
    labels = [f.parent.name if f.stem == "metrics" and f.parent.name else f.stem for f in files]
    if len(set(labels)) < len(labels):
        labels = [str(f) for f in files]
    return labels


def run_compare(
    files: Sequence[str | os.PathLike],
    labels: Sequence[str] | None = None,
    out_png: str | os.PathLike | None = None,
    plots: str | os.PathLike | None = None,
    metric: str = "mAP",
    out: TextIO | None = None,
) -> Path:
    """``dycl-eval --compare``: per-scale bars of several ``metrics.json`` files; returns the PNG.

    The PNG is ``out_png``, or ``plots/map_by_scale.png`` (``r1_by_scale.png``
    for ``metric="R@1"``). The compared numbers are also printed as a table.
    """
    from .plots import save_figure, scale_bars_figure

    out = out if out is not None else sys.stdout
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("compare: no metrics file given")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"labels: {len(labels)} labels for {len(paths)} metrics files")
    if out_png is None and plots is None:
        raise ValueError("out: --compare needs --out PNG or --plots DIR")
    names = list(labels) if labels is not None else _default_labels(paths)
    runs = {name: read_metrics(p) for name, p in zip(names, paths, strict=True)}
    # a file scored with compat=authors keeps saying so next to its numbers
    runs = {name + (" [compat=authors]" if any(m.get("compat") == AUTHORS for m in results.values()) else ""):
            results for name, results in runs.items()}
    if len(runs) != len(names):
        raise ValueError("labels: every compared file needs its own label")
    for name, results in runs.items():
        print(f"== {name}\n{format_tables(results)}\n", file=out)
    fig = scale_bars_figure(runs, metric=metric, title=f"{metric} per scale")
    target = Path(out_png) if out_png is not None else Path(plots) / (  # type: ignore[arg-type]
        "map_by_scale.png" if metric == "mAP" else "r1_by_scale.png")
    written = save_figure(fig, target)
    print(f"wrote {written}", file=out)
    return written


__all__ = ["EvalOptions", "embeddings_dir", "run_compare", "run_eval", "write_plots"]
