"""Sections of the report for the paper's analyses: Fig. 6 (single- vs multi-scale), Fig. 7 (rank shifts
on the training set), Fig. 8 (τ and λ₁ sweeps) and Table IV (the paper's numbers; not run here yet)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..metrics import PAPER_SCALE_NAMES
from ..tables import markdown_table
from ..tasks import TASKS
from .paper import FIG6_SIGMA_TRIPLET_GAIN, PAPER, TABLE_IV, paper_cell
from .stats import Stat, SuiteResults, paired_interval, welch_interval


def metric_label(metric: str) -> str:
    """``"mAP_1"`` → ``"mAP middle"``; ``"mAP_overall"`` → ``"mAP overall"``."""
    name, _, scale = metric.partition("_")
    if scale.isdigit():
        names = list(PAPER_SCALE_NAMES)
        return f"{name} {names[int(scale)] if int(scale) < len(names) else scale}"
    return metric.replace("_", " ")


def embed(figures: Mapping[str, Any], name: str, caption: str) -> list[str]:
    lines: list[str] = []
    for path in figures.get(name) or []:
        lines += [f"![{caption}]({path})", ""]
    return lines


def _per_scale_table(results: SuiteResults, keys: Sequence[str], scales: Sequence[int],
                     first: str = "training") -> list[str]:
    metric_keys = [f"mAP_{s}" for s in scales] + ["mAP_overall"]
    header = [first] + [f"{t} {metric_label(m)}" for t in TASKS for m in metric_keys]
    rows = [[results.suite.config(k).label]
            + [results.stat(k, t, m).cell() for t in TASKS for m in metric_keys] for k in keys]
    return markdown_table(header, rows)


def scale_section(results: SuiteResults, figures: Mapping[str, Any], scales: Sequence[int]) -> list[str]:
    """Fig. 6 (single-scale Triplet at S⁰, S¹, S² against Σ-Triplet) and the extra DyCL variant."""
    suite = results.suite
    lines: list[str] = []
    keys = [k for k in suite.groups.get("scales", ()) if results.has(k)]
    if keys:
        lines += ["### Fig. 6 analogue: single-scale Triplet at S⁰, S¹, S² vs Σ-Triplet, mAP per scale", ""]
        lines += _per_scale_table(results, keys, scales)
        multi = suite.groups["scales"][-1]
        if results.has(multi):
            lines += [f"Gain of the multi-scale model ({suite.config(multi).label}) in overall mAP, "
                      "points, with Welch 95 % intervals over seeds; the paper's gain from its Fig. 6 "
                      f"({PAPER}; task not stated where it is quoted):", ""]
            header = ["single-scale model"] + [f"{t} Δ mAP overall" for t in TASKS] + ["paper Δ"]
            rows = []
            for single in suite.groups["scales"][:-1]:
                if not results.has(single):
                    continue
                cells = []
                for task in TASKS:
                    a = results.stat(multi, task, "mAP_overall")
                    b = results.stat(single, task, "mAP_overall")
                    interval = welch_interval(a, b)
                    cells.append(interval.cell() if interval is not None
                                 else f"{100.0 * (a.mean - b.mean):+.1f} (no interval: < 2 seeds)")
                rows.append([suite.config(single).label, *cells,
                             paper_cell(FIG6_SIGMA_TRIPLET_GAIN.get(single), signed=True)])
            lines += markdown_table(header, rows)
        lines += embed(figures, "scales", "Fig. 6 analogue: single-scale Triplet vs Σ-Triplet, mAP per scale")
    extra = [k for k in suite.groups.get("scales_dycl", ()) if results.has(k)]
    if extra:
        lines += ["### Extra (not the paper's Fig. 6): single DyCL terms vs DyCL, mAP at every scale", "",
                  "Each single-scale run keeps one term of Eq. 4 (its positives against the level-0 items) "
                  "plus the clustering loss; buildings nearer than the level-0 ones but outside the term's "
                  "scale are then neither positives nor negatives. A different experiment from Fig. 6.", ""]
        lines += _per_scale_table(results, extra, scales)
        lines += embed(figures, "scales_dycl", "Extra: single DyCL terms vs DyCL, mAP per scale")
    return lines


def sweep_section(results: SuiteResults, figures: Mapping[str, Any]) -> list[str]:
    """Fig. 8: each sweep as a table (H-AP and overall mAP per value) and its figure."""
    lines: list[str] = []
    for name, sweep in results.suite.sweeps.items():
        points = [(k, v) for k, v in sweep.points if results.has(k)]
        if len(points) < 2:
            continue
        lines += [f"### Fig. 8 analogue: {sweep.parameter}", ""]
        metrics = ("H-AP", "mAP_overall", "R@1_overall")
        header = [sweep.parameter, "run"] + [f"{t} {metric_label(m)}" for t in TASKS for m in metrics]
        rows = [[f"{v:g}", results.suite.config(k).label]
                + [results.stat(k, t, m).cell() for t in TASKS for m in metrics] for k, v in points]
        lines += markdown_table(header, rows)
        lines += embed(figures, f"sweep_{name}",
                       f"Fig. 8 analogue: {sweep.parameter}, mean ± 95 % t interval")
    return lines


#: (a, b, text): the paper's comparisons under each of the authors' release's training choices.
RELEASE_COMPARISONS = (
    ("dycl-happier", "happier", "paper's choices: DyCL+HAPPIER − HAPPIER"),
    ("dycl-happier-normbatch", "happier", "release normalisation: DyCL+HAPPIER − HAPPIER"),
    ("dycl-happier-release", "happier-release", "release schedule: DyCL+HAPPIER − HAPPIER"),
    ("dycl-normbatch", "dycl", "DyCL: release − paper normalisation"),
    ("dycl-happier-normbatch", "dycl-happier", "DyCL+HAPPIER: release − paper normalisation"),
    ("dycl-happier-release", "dycl-happier", "DyCL+HAPPIER: release − paper schedule"),
)


def release_section(results: SuiteResults, scales: Sequence[int]) -> list[str]:
    """The runs with the release's DyCL normalisation and schedule beside the paper's choices."""
    keys = [k for k in results.suite.groups.get("release", ()) if results.has(k)]
    if len(keys) < 2:
        return []
    lines = ["### The authors' release's training choices", "",
             "The release normalises DyCL's features over the batch (`normalize=batch`) and steps a long "
             "cosine once per epoch with the backbone held at first (`--schedule release`, shrunk with the "
             "run). Does either change the paper's comparisons? Differences with intervals are under "
             "*Differences behind the paper's claims*.", ""]
    return lines + _per_scale_table(results, keys, scales, first="configuration")


def rank_shift_section(figures: Mapping[str, Any]) -> list[str]:
    """Fig. 7 in the paper's form (training set, every sample a query) and the sampled extra."""
    entries = figures.get("rank_profile") or []
    if not entries:
        return []
    lines = ["### Fig. 7 analogue: position shifts after re-ranking, training set, every sample a query", "",
             "For every initial rank r, the mean over all queries of (rank after k-reciprocal re-ranking "
             "− r) and of its absolute value; Kendall's τ between the two complete rankings of a query, "
             "averaged over the queries. The sampled scatter of test queries further down is an extra.", ""]
    for caption, path in entries:
        lines += [f"*{caption}*", "", f"![{caption}]({path})", ""]
    return lines


#: Where a suite keeps its Table IV runs: ``<output>/table4/seed<k>.json``.
TABLE4_DIR = "table4"
#: The two Table IV rows compared: (row label in a table4 file, header).
_TABLE4_ROWS = (("k-reciprocal", "+ Rerank"), ("MSRerank (paper)", "+ MSRerank"))


def read_table4(output: Path) -> list[dict[str, Any]]:
    """The finished Table IV seeds of a suite folder (see :func:`dycl.experiment.table4.run_table4_seed`)."""
    records = []
    for path in sorted((output / TABLE4_DIR).glob("seed*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # an unreadable file is scored again by the next run
    return records


def paper_table_iv(records: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Table IV: the paper's DyML numbers, then ours on the synthetic shapes (one row per seed set)."""
    lines = ["### Table IV analogue: single-domain hierarchical retrieval", "",
             f"The paper's mAP (%) of HAPPIER embeddings with k-reciprocal re-ranking and with MSRerank "
             f"({PAPER}) on DyML, beside ours on the synthetic shapes (family > colour > pattern, every "
             "image a query, itself excluded from its gallery).", ""]
    header = ["dataset", "no re-ranking", "+ Rerank", "+ MSRerank", "Δ MSRerank − Rerank"]
    rows = [[name, "n/a", paper_cell(a), paper_cell(b), paper_cell(b - a, signed=True)]
            for name, (a, b) in TABLE_IV.items()]
    if records:
        values = {label: [float(r["rows"][label]["mAP_overall"]) for r in records]
                  for label, _ in _TABLE4_ROWS}
        stats = [Stat(tuple(values[label])) for label, _ in _TABLE4_ROWS]
        differences = [b - a for a, b in zip(*(values[label] for label, _ in _TABLE4_ROWS), strict=True)]
        interval = paired_interval(differences)
        delta = interval.cell(digits=2) if interval is not None else f"{100 * differences[0]:+.2f}"
        seeds = ", ".join(str(r["seed"]) for r in records)
        plain = Stat(tuple(float(r["rows"]["none"]["mAP_overall"]) for r in records))
        rows.append([f"ours: synthetic shapes, trained ResNet-18 (seeds {seeds})", plain.cell(digits=2),
                     stats[0].cell(digits=2), stats[1].cell(digits=2), f"{delta} (paired 95 % CI)"])
        lines = lines[:-1] + [f"Ours: {records[0]['source']}; Eq. 6 ks with μ = 1 "
                              f"({', '.join(map(str, records[0]['ks']))}); mean ± sd over seeds.", ""]
    else:
        rows.append(["ours", "n/a", "n/a", "n/a", "not run yet (`dycl-experiment run` scores it first)"])
    return lines + markdown_table(header, rows)


__all__ = [
    "RELEASE_COMPARISONS",
    "TABLE4_DIR",
    "embed",
    "metric_label",
    "paper_table_iv",
    "rank_shift_section",
    "read_table4",
    "release_section",
    "scale_section",
    "sweep_section",
]
