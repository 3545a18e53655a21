"""Result tables and result files: the paper's Tables II/III as text, Markdown and CSV.

``results`` everywhere is ``{task: metrics}``, the shape of ``metrics.json``
(metrics as returned by :func:`dycl.metrics.evaluate`)::

    from dycl.tables import format_tables, write_results

    print(format_tables(results))                     # plain text, values in %
    write_results("eval/metrics.json", results, {"re-ranking": "none"})   # + metrics.md, metrics.csv

The experiment report builds its Markdown tables with :func:`markdown_table`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._files import json_safe, write_json_atomic, write_text_atomic
from .metrics import scale_count, scale_names

Block = tuple[str, list[str], list[list[str]]]


def percent(value: object) -> str:
    """A fraction as a percentage with two decimals; ``-`` when missing, ``n/a`` for NaN."""
    if value is None:
        return "-"
    v = float(value)  # type: ignore[arg-type]
    return "n/a" if math.isnan(v) else f"{100.0 * v:.2f}"


def _render(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[c]), *(len(r[c]) for r in rows)) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *(line(r) for r in rows)])


def format_tables(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain-text tables shaped like the paper's Table II and Table III (values in %).

    Blocks:

    * hierarchical metrics — H-AP, ASI, NDCG per task (Table II);
    * per-scale retrieval — mAP and R@1 at each scale and their mean
      ("overall"), per task (Table III);
    * localization error of the top-1 result, when the metrics carry it.
    """
    return "\n\n".join(_render(title, header, rows) for title, header, rows in table_blocks(results))


def _localization_block(results: Mapping[str, Mapping[str, Any]]) -> Block:
    within = sorted({key for m in results.values() for key in m if key.startswith("within@")},
                    key=lambda k: float(k[len("within@"):-1]))
    header = ["task", "mean m", "median m", *(f"{k} %" for k in within)]
    rows = []
    for task, m in results.items():
        mean, median = m.get("err@1_mean_m"), m.get("err@1_median_m")
        rows.append([
            task,
            "-" if mean is None else f"{float(mean):.1f}",
            "-" if median is None else f"{float(median):.1f}",
            *(percent(m.get(k)) for k in within),
        ])
    return "Localization error of the top-1 result", header, rows


def table_blocks(results: Mapping[str, Mapping[str, Any]]) -> list[Block]:
    """``(title, header, rows)`` of each block of :func:`format_tables` (also rendered as Markdown)."""
    if not results:
        raise ValueError("results: no task to format")
    hier_keys = ("H-AP", "ASI", "NDCG")
    hier_rows = [[task, *(percent(m.get(key)) for key in hier_keys)] for task, m in results.items()]
    blocks: list[Block] = [("Hierarchical retrieval (Table II, %)", ["task", *hier_keys], hier_rows)]

    n_scales = max(scale_count(m) for m in results.values())
    names = scale_names(n_scales) + ["overall"]
    header = ["task"] + [f"mAP {n}" for n in names] + [f"R@1 {n}" for n in names]
    scale_rows = []
    for task, m in results.items():
        maps = [percent(m.get(f"mAP_{s}")) for s in range(n_scales)] + [percent(m.get("mAP_overall"))]
        r1s = [percent(m.get(f"R@1_{s}")) for s in range(n_scales)] + [percent(m.get("R@1_overall"))]
        scale_rows.append([task, *maps, *r1s])
    blocks.append(("Retrieval per scale (Table III, %)", header, scale_rows))

    if any("err@1_mean_m" in m for m in results.values()):
        blocks.append(_localization_block(results))
    return blocks


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a Markdown table (first column left-aligned, the others right-aligned), then a blank line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def format_markdown(
    results: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any] | None = None, title: str = ""
) -> str:
    """The tables of :func:`format_tables` as Markdown (values in %), after a list of ``settings``."""
    lines = [f"# {title or 'dycl-eval results'}", ""]
    for key, value in (settings or {}).items():
        lines.append(f"- **{key}**: {value}")
    if settings:
        lines.append("")
    for block_title, header, rows in table_blocks(results):
        lines += [f"## {block_title}", ""] + markdown_table(header, rows)
    return "\n".join(lines)


def _metric_keys(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for metrics in results.values():
        keys += [k for k in metrics if k not in keys]
    return keys


def format_csv(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per task, one column per metric (fractions as stored in ``metrics.json``; empty = NaN)."""
    keys = _metric_keys(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", *keys])
    for task, metrics in results.items():
        cells = []
        for key in keys:
            value = json_safe(metrics.get(key))
            cells.append("" if value is None else repr(value) if isinstance(value, float) else str(value))
        writer.writerow([task, *cells])
    return buffer.getvalue()


# --------------------------------------------------------------------------- result files


def result_paths(output: str | os.PathLike) -> dict[str, Path]:
    """The ``json``, ``md`` and ``csv`` files of ``--output`` (``metrics.json``, ``metrics.md``, ...)."""
    json_path = Path(output)
    if json_path.suffix.lower() != ".json":
        json_path = json_path.with_name(json_path.name + ".json")
    return {"json": json_path, "md": json_path.with_suffix(".md"), "csv": json_path.with_suffix(".csv")}


def write_results(
    output: str | os.PathLike,
    results: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json`` (``{task: {DESIGN §4 key: value}}``, NaN as null) and its ``.md``/``.csv``.

    Files are written to temporary names and renamed. Returns :func:`result_paths`.
    """
    paths = result_paths(output)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths["json"], results)
    write_text_atomic(paths["md"], format_markdown(results, settings))
    write_text_atomic(paths["csv"], format_csv(results))
    return paths


def read_metrics(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a ``metrics.json`` (of ``dycl-train`` or ``dycl-eval``): ``{task: metrics}``, null read as NaN."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"compare: no such file: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"compare: cannot read {p} as JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data or not all(
            isinstance(m, dict) and "mAP_0" in m for m in data.values()):
        raise ValueError(f"compare: {p} is not a metrics file ({{task: {{'mAP_0': ..., ...}}}} as dycl-eval "
                         "or dycl-train write it)")
    return {task: {k: float("nan") if v is None else v for k, v in m.items()} for task, m in data.items()}


__all__ = [
    "format_csv",
    "format_markdown",
    "format_tables",
    "markdown_table",
    "percent",
    "read_metrics",
    "result_paths",
    "table_blocks",
    "write_results",
]
