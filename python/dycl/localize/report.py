"""The localization summary as a text table, one column per estimate or model (e.g. random embeddings)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .estimate import ERROR_THRESHOLDS_M


def _metres(value: object) -> str:
    return "-" if value is None else f"{float(value):.1f}"  # type: ignore[arg-type]


def _share(value: object) -> str:
    return "-" if value is None else f"{100.0 * float(value):.1f}"  # type: ignore[arg-type]


def _rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    keys: list[tuple[str, str, Any]] = [
        ("median error (m)", "error_median_m", _metres),
        ("mean error (m)", "error_mean_m", _metres),
        ("top-1 tile: median error (m)", "top1_error_median_m", _metres),
        ("top-1 tile: mean error (m)", "top1_error_mean_m", _metres),
    ]
    keys += [(f"within {t:g} m (%)", f"within@{t:g}m", _share) for t in ERROR_THRESHOLDS_M]
    ks = sorted({int(k[2:]) for s in summaries.values() for k in s if k.startswith("R@")})
    keys += [(f"R@{k}: truth in a top-{k} tile (%)", f"R@{k}", _share) for k in ks]
    keys += [(f"err@{k}: nearest of top {k}, median (m)", f"err@{k}_median_m", _metres) for k in ks if k > 1]
    keys += [(f"SDM@{k} (%)", f"SDM@{k}", _share) for k in ks]
    return [
        (label, [fmt(s.get(key)) for s in summaries.values()])
        for label, key, fmt in keys
        if any(key in s for s in summaries.values())
    ]


def format_summary(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Counts, then errors and retrieval metrics of each summary (:func:`.estimate.summarize`)."""
    first = next(iter(summaries.values()))
    lines = [
        f"{first['images']} photos: {first['located']} located, {first['skipped']} skipped, "
        f"{first['with_truth']} with a known true position"
    ]
    lines += [f"  skipped {item}" for item in first.get("skipped_images", [])]
    rows = _rows(summaries)
    if not rows:
        return "\n".join(lines + ["(no true position known: no errors)"])
    header = ["", *summaries]
    widths = [max(len(header[0]), *(len(r[0]) for r in rows))]
    widths += [max(len(h), *(len(r[1][c]) for r in rows)) for c, h in enumerate(header[1:])]

    def line(cells: list[str]) -> str:
        return "  ".join(
            [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        ).rstrip()

    table = [line(header), "-" * len(line(header))] + [line([label, *cells]) for label, cells in rows]
    return "\n".join(lines + [""] + table)


__all__ = ["format_summary"]
