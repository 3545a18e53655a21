"""The suite's report: Markdown tables shaped like the paper's, the comparisons behind its claims, figures.

:func:`write_report` regenerates ``<output>/report/`` from the evaluation files
of the finished runs (and, with ``docs``, the generated block of
``docs/results.md``). It works on partial suites and says so.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._files import write_json_atomic, write_text_atomic
from ..data import Split, open_train_test
from ..metrics import scale_count
from ..runs import CONFIG_FILE, epoch_records, read_json
from ..tables import markdown_table, write_results
from ..tasks import TASKS, random_embedding_baseline
from .figures import write_figures
from .paper import paper_cell, paper_value
from .sections import (
    RELEASE_COMPARISONS,
    paper_table_iv,
    rank_shift_section,
    read_table4,
    release_section,
    scale_section,
    sweep_section,
)
from .sections import embed as _embed
from .sections import metric_label as _metric_label
from .state import RECORD_FILE, REPORT_DIR, estimate_progress, resolve_data_dir
from .stats import (
    TIE,
    Stat,
    SuiteResults,
    beyond_spread,
    collect_results,
    consistent_sign,
    paired_interval,
    welch_interval,
)
from .suites import RERANKINGS, Suite


def _yes_no(flag: bool | None) -> str:
    return "n/a" if flag is None else ("**yes**" if flag else "no")


def _pp(value: float, digits: int = 1) -> str:
    if not math.isfinite(value):
        return "–"
    if abs(100.0 * value) < 0.5 * 10.0 ** -digits:
        return f"{0.0:.{digits}f}"  # no "-0.0" for a rounding-level difference
    return f"{100.0 * value:+.{digits}f}"


#: The random-embedding row, kept so that a suite folder without its campus (a fresh clone) still shows it.
RANDOM_BASELINE_FILE = "random_baseline.json"


def _runs_data_fingerprint(results: SuiteResults) -> str | None:
    """The dataset fingerprint the finished runs saved in their config.json, if any."""
    for state in results.states:
        saved = read_json(state.folder / CONFIG_FILE)
        if saved is not None and saved.get("data", {}).get("sha256"):
            return str(saved["data"]["sha256"])
    return None


def _test_split(data_dir: Path | None) -> Split | None:
    """The dataset's test split, or None where the data is absent or unreadable (a fresh clone)."""
    if data_dir is None or not data_dir.exists():
        return None
    try:
        return open_train_test(data_dir)[1]
    except ValueError:
        return None


def _random_baseline(results: SuiteResults, data_dir: Path | None, cache: Path, seeds: int = 3
                     ) -> dict[str, dict[str, Stat]] | None:
    """Scores of random unit embeddings on the test split (mean over ``seeds`` draws), or None.

    Computed when the data is there and saved in ``cache``; without the data, the saved scores are
    used if they were computed on the dataset the runs were trained on."""
    dim = int(results.suite.training.get("embedding_dim", 512))
    thresholds = [float(t) for t in results.suite.training.get("thresholds", (200.0, 500.0))]
    key = {"data_sha256": _runs_data_fingerprint(results), "dim": dim, "thresholds": thresholds,
           "draws": seeds}
    if (test := _test_split(data_dir)) is not None:
        draws = [random_embedding_baseline(test, dim, thresholds, seed=s) for s in range(seeds)]
        values = {task: {k: [float(d[task][k]) for d in draws] for k in draws[0][task]} for task in TASKS}
        if key["data_sha256"] is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(cache, {**key, "values": values})
    else:
        kept = read_json(cache) or {}
        if key["data_sha256"] is None or {k: kept.get(k) for k in key} != key:
            return None
        values = kept["values"]
    return {task: {k: Stat(tuple(math.nan if x is None else float(x) for x in v))  # JSON null = NaN
                   for k, v in values[task].items()} for task in TASKS}


def _unpaired_rows(results: SuiteResults, pairs: Sequence[tuple[str, str, str]], metrics: Sequence[str],
                   rerank: str = "none") -> list[list[str]]:
    """Rows ``claim | metric | task: Δ [Welch 95 % CI], beyond spread`` for configuration pairs (a − b)."""
    rows = []
    for a, b, text in pairs:
        if not (results.has(a, rerank) and results.has(b, rerank)):
            continue
        for metric in metrics:
            row = [text, _metric_label(metric)]
            for task in TASKS:
                sa, sb = results.stat(a, task, metric, rerank), results.stat(b, task, metric, rerank)
                interval = welch_interval(sa, sb)
                row += [interval.cell() if interval is not None else _pp(sa.mean - sb.mean),
                        _yes_no(beyond_spread(sa, sb))]
            rows.append(row)
    return rows


def _paired_rows(results: SuiteResults, keys: Sequence[str], a: str, b: str, metrics: Sequence[str]
                 ) -> list[list[str]]:
    """Rows ``configuration | metric | task: mean Δ [paired t 95 % CI], consistent`` for re-ranking a − b on
    the same runs, then one row per metric over all runs (``k/n > 0``: in how many runs Δ is positive)."""
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
                row += [_paired_cell(diffs, 2), _yes_no(consistent_sign(diffs))]
            rows.append(row)
    for metric in metrics:
        if not any((metric, task) in pooled for task in TASKS):
            continue
        row = ["*all runs*", _metric_label(metric)]
        for task in TASKS:
            diffs = [d for d in pooled.get((metric, task), []) if math.isfinite(d)]
            positive = sum(1 for d in diffs if d > TIE)
            row += [_paired_cell(diffs, 2) if diffs else "–", f"{positive}/{len(diffs)} > 0"]
        rows.append(row)
    return rows


def _paired_cell(diffs: Sequence[float], digits: int) -> str:
    """Mean paired difference with its t interval (just the mean with fewer than two runs)."""
    interval = paired_interval(diffs)
    if interval is None:
        finite = [d for d in diffs if math.isfinite(d)]
        return _pp(float(np.mean(finite)), digits) if finite else "–"
    if max(abs(interval.lo), abs(interval.hi)) < TIE:  # float32 rounding only: a tie, not an interval
        return _pp(0.0, digits)
    return interval.cell(digits=digits)


def _compute_summary(results: SuiteResults) -> list[str]:
    """Data, settings and measured compute of the finished runs."""
    lines = []
    configs, epoch_s, run_s, loads, eval_s = [], [], [], [], []
    for state in results.states:
        saved = read_json(state.folder / CONFIG_FILE)
        if saved is not None:
            configs.append(saved)
        if state.state == "done" and (records := epoch_records(state.folder)):
            seconds = [r["seconds"] for r in records]
            epoch_s += seconds
            run_s.append(sum(seconds))
        record = read_json(state.folder / RECORD_FILE) or {}
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
                     f"{c.get('weight_decay'):g}, {_schedule_text(c)}, thresholds "
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


def _schedule_text(config: Mapping[str, Any]) -> str:
    if config.get("schedule", "paper") == "paper":
        held = config.get("warmup_epochs") or 0
        return "cosine schedule per step" + (f", backbone held {held} epochs" if held else "")
    return (f"the release's schedule (cosine per epoch over {config.get('schedule_epochs')} epochs, backbone "
            f"held {config.get('warmup_epochs')} epochs)")


def _ks_lines(results: SuiteResults) -> list[str]:
    seen: dict[tuple[str, str], set[str]] = {}
    for state in results.states:
        record = read_json(state.folder / RECORD_FILE) or {}
        readings = record.get("ks_from") or {}
        for rerank, per_task in (record.get("ks") or {}).items():
            for task, ks in per_task.items():
                reading = readings.get(rerank, "gallery")
                seen.setdefault((task, reading), set()).add(",".join(map(str, ks)))
    return [f"- MSRerank ks (Eq. 6 on the training split, images per building of the {reading} view"
            f"{' of each task' if reading == 'gallery' else ''}) for {task}: {' / '.join(sorted(v))}"
            for (task, reading), v in seen.items()]


def _method_tables(results: SuiteResults, figures: Mapping[str, Any],
                   random_baseline: Mapping[str, Mapping[str, Stat]] | None,
                   scales: Sequence[int]) -> list[str]:
    """Tables II/III analogues (one row per method) and the re-ranking tables, with their figures."""
    suite = results.suite
    methods = [k for k in suite.groups.get("methods", ()) if results.has(k)]
    if not methods:
        return []
    lines: list[str] = []
    lines += ["### Table II analogue: hierarchical metrics, no re-ranking", "",
              "The *paper* columns are the paper's DA-Campus values for the same method (n/a: not sourced, "
              "see `dycl/experiment/paper.py`); they are ResNet-50 at 256 px on DA-Campus, not this suite's "
              "setting, so compare orderings, not values.", ""]
    hier = ("H-AP", "ASI", "NDCG")
    header = (["method"] + [f"{t} {m}" for t in TASKS for m in hier]
              + [f"paper {t} H-AP" for t in TASKS])
    rows = [[suite.config(k).label] + [results.stat(k, t, m).cell() for t in TASKS for m in hier]
            + [paper_cell(paper_value(k, t, "H-AP")) for t in TASKS] for k in methods]
    if random_baseline is not None:
        rows.append(["*random embeddings*"] + [random_baseline[t][m].cell() for t in TASKS for m in hier]
                    + ["", ""])
    lines += markdown_table(header, rows)
    for task in TASKS:
        lines += [f"### Table III analogue: {task}, mAP and R@1 per scale, no re-ranking", ""]
        metric_keys = ([f"mAP_{s}" for s in scales] + ["mAP_overall"] + [f"R@1_{s}" for s in scales]
                       + ["R@1_overall"])
        paper_keys = ("mAP_overall", "R@1_overall")
        header = ["method"] + [_metric_label(m) for m in metric_keys] + [f"paper {_metric_label(m)}"
                                                                         for m in paper_keys]
        rows = [[suite.config(k).label] + [results.stat(k, task, m).cell() for m in metric_keys]
                + [paper_cell(paper_value(k, task, m)) for m in paper_keys] for k in methods]
        if random_baseline is not None:
            rows.append(["*random embeddings*"] + [random_baseline[task][m].cell() for m in metric_keys]
                        + ["", ""])
        lines += markdown_table(header, rows)
    lines += _embed(figures, "methods", "mAP per scale of every method, no re-ranking")

    reranks = [r for r in suite.rerankings if any(results.has(k, r) for k in methods)]
    for metric in ("mAP_overall", "H-AP", "R@1_overall"):
        lines += [f"### Re-ranking: {_metric_label(metric)} (both tasks)", ""]
        header = ["method"] + [f"{t} {RERANKINGS[r][0]}" for t in TASKS for r in reranks]
        rows = [[suite.config(k).label] + [results.stat(k, t, metric, r).cell() for t in TASKS
                                           for r in reranks] for k in methods]
        lines += markdown_table(header, rows)
    lines += _embed(figures, "rerank", "mAP per scale with each re-ranking")
    return lines


def _missing_text(results: SuiteResults) -> str:
    """The unfinished runs, seed by seed (``seed 2: all 27 configurations``)."""
    parts = []
    for seed in results.suite.seeds:
        keys = [s.run.config.key for s in results.states if s.run.seed == seed and s.state != "done"]
        if len(keys) == len(results.suite.configs):
            parts.append(f"seed {seed}: all {len(keys)} configurations")
        elif keys:
            parts.append(f"seed {seed}: {', '.join(keys)}")
    return "; ".join(parts)


def report_markdown(results: SuiteResults, figures: Mapping[str, Any], command: str,
                    random_baseline: Mapping[str, Mapping[str, Stat]] | None) -> str:
    """The generated part of the report: status, settings, tables, comparisons, figure links."""
    suite = results.suite
    n_scales = next((scale_count(m) for metrics in results.metrics.values() for m in metrics.values()), 0)
    scales = list(range(n_scales))
    lines: list[str] = []
    counts = estimate_progress(suite, results.states).counts
    total = len(results.states)
    complete = counts.get("done", 0) == total
    lines.append(f"Suite **{suite.name}**: {suite.description}. Command: `{command}`.")
    lines.append("")
    if not complete:
        lines.append(f"**Partial results**: {counts.get('done', 0)} of {total} runs finished; missing: "
                     f"{_missing_text(results)}. Continue with the same command (finished runs are "
                     "skipped, an interrupted training resumes from its last epoch).")
        lines.append("")
    lines += _compute_summary(results)
    lines += _ks_lines(results)
    lines.append(f"- **seeds**: {', '.join(map(str, suite.seeds))}; cells are mean ± sample standard "
                 "deviation over seeds, in %.")
    lines.append("- **intervals**: a difference between two *configurations* (different runs) is the "
                 "difference of their seed means with **Welch's t interval** (95 %, unequal variances); a "
                 "difference between two *re-rankings of the same runs* is the mean per-run difference with "
                 "a **paired t interval** (95 %). Bold: the interval excludes 0. *Beyond spread*: the seed "
                 "ranges of the two configurations do not overlap; *consistent*: the paired difference has "
                 "the same sign in every run.")
    lines.append("")

    lines += _method_tables(results, figures, random_baseline, scales)

    lines += scale_section(results, figures, scales)

    sampler_keys = [k for k in suite.groups.get("sampler", ()) if results.has(k)]
    if len(sampler_keys) > 1:
        lines += ["### Batch composition: random vs geo sampler (DyCL)", ""]
        metric_keys = ["H-AP"] + [f"mAP_{s}" for s in scales] + ["mAP_overall", "R@1_0"]
        header = ["sampler"] + [f"{t} {_metric_label(m)}" for t in TASKS for m in metric_keys]
        rows = [[suite.config(k).label] + [results.stat(k, t, m).cell() for t in TASKS for m in metric_keys]
                for k in sampler_keys]
        lines += markdown_table(header, rows)
        lines += _embed(figures, "sampler", "DyCL with the random and the geo sampler, mAP per scale")

    lines += sweep_section(results, figures)
    lines += release_section(results, scales)
    lines += _comparisons(results, scales)
    lines += rank_shift_section(figures)
    lines += paper_table_iv(read_table4(results.output))
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
    header = ["comparison", "metric"] + [f"{t} {h}" for t in TASKS for h in ("Δ [95 % CI]", "beyond spread")]
    per_scale = [f"mAP_{s}" for s in scales] + ["mAP_overall"]
    rows: list[list[str]] = []
    baselines = [k for k in ("infonce", "triplet", "softmargintriplet", "contrastive", "multisimilarity",
                             "normsoftmax", "instance", "sigmatriplet", "sigmams", "csl") if k in cfg]
    for base in baselines:
        if "dycl" in cfg:
            rows += _unpaired_rows(results, [("dycl", base, f"DyCL − {suite.config(base).label}")], per_scale)
    if {"sigmams", "multisimilarity"} <= cfg:
        rows += _unpaired_rows(results, [("sigmams", "multisimilarity", "Σ-MS − Multi-Similarity")],
                               per_scale)
    if {"dycl-happier", "dycl", "happier"} <= cfg:
        rows += _unpaired_rows(results, [("dycl-happier", "dycl", "DyCL+HAPPIER − DyCL"),
                                         ("dycl-happier", "happier", "DyCL+HAPPIER − HAPPIER")],
                               ["H-AP", "mAP_overall"])
    for group, name in (("scales", "Fig. 6"), ("scales_dycl", "extra")):
        multi = suite.groups.get(group, ())
        for single in multi[:-1]:
            rows += _unpaired_rows(results, [(multi[-1], single, f"{name}: {suite.config(multi[-1]).label} − "
                                              f"{suite.config(single).label}")], per_scale)
    release = [(a, b, text) for a, b, text in RELEASE_COMPARISONS if {a, b} <= cfg]
    rows += _unpaired_rows(results, release, ["H-AP", "mAP_overall"])
    sampler = suite.groups.get("sampler", ())
    if len(sampler) == 2:
        rows += _unpaired_rows(results, [(sampler[1], sampler[0], "geo − random sampler")],
                               ["H-AP"] + per_scale)
    if rows:
        lines += ["Configurations (different runs): Δ of the seed means [Welch 95 % interval].", ""]
        lines += markdown_table(header, rows)
    methods = list(suite.groups.get("methods", ()))
    paired_header = ["method", "metric"] + [f"{t} {h}" for t in TASKS
                                            for h in ("mean Δ [paired 95 % CI]", "consistent")]
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
                lines += markdown_table(paired_header, prow)
    return lines


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
    figures = write_figures(results, img, data)
    baseline = _random_baseline(results, data, report / RANDOM_BASELINE_FILE)
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
    "default_command",
    "report_markdown",
    "splice_generated",
    "write_report",
]
