"""Figures of ``dycl-eval`` (matplotlib, drawn off-screen; no pyplot state is touched).

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` whose
size in inches is fixed by its content, and :func:`save_figure` writes it as a
PNG of exactly ``figure size × dpi`` pixels (no tight cropping):

* :func:`ranked_lists_figure` — the paper's Fig. 1: for sample queries, the
  top retrieved images, each framed in the colour of its relevance level;
* :func:`building_map_figure` — the paper's Fig. 3: the buildings around a
  chosen one with the threshold circles (200 m and 500 m by default), drawn in
  the azimuthal equidistant projection centred on that building, where a
  geodesic circle around the centre is an exact circle;
* :func:`rank_shift_figure` — the paper's Fig. 7: where the items of the
  initial top ranks end up after k-reciprocal re-ranking with several ``k``,
  with the Kendall tau between the two rankings;
* :func:`scale_bars_figure` — per-scale mAP bars comparing several metrics
  files (runs, methods, re-ranking options).

Levels follow DESIGN §3: with ``L = len(thresholds) + 1``, level ``L`` is the
same building, ``L - 1`` within ``thresholds[0]`` metres, ..., 0 farther.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Patch

from ._files import atomic_open
from .geo import DEFAULT_THRESHOLDS, level_matrix, validate_thresholds
from .metrics import scale_count, scale_names  # the tables' scale naming
from .tasks import TASKS

#: Colours of the levels for the paper's three thresholds-free cases: exact, near, far.
EXACT_COLOR = "#2ca02c"  # green: the same building
FAR_COLOR = "#d62728"  # red: a pure negative (level 0)
_INTERMEDIATE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
PLACEHOLDER_COLOR = "#e6e6e6"


def level_colors(n_levels: int) -> list[str]:
    """Colour of each level ``0..n_levels`` (index = level): red for 0, green for the top."""
    if isinstance(n_levels, bool) or not isinstance(n_levels, (int, np.integer)) or n_levels < 1:
        raise ValueError(f"n_levels: expected a positive integer, got {n_levels!r}")
    middle = [_INTERMEDIATE[i % len(_INTERMEDIATE)] for i in range(n_levels - 1)]
    # Level L-1 (the nearest ring) gets the first intermediate colour.
    return [FAR_COLOR, *reversed(middle), EXACT_COLOR]


def level_labels(thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[str]:
    """Legend text of each level ``0..L`` (index = level).

    E.g. ``["> 500 m", "≤ 500 m", "≤ 200 m", "same building"]`` for 200 m / 500 m.
    """
    ts = validate_thresholds(thresholds)
    n = len(ts) + 1
    labels = [f"> {ts[-1]:g} m" if ts else "other building"]
    labels += [f"≤ {ts[n - 1 - v]:g} m" for v in range(1, n)]
    labels.append("same building")
    return labels


def _level_legend(fig: Figure, thresholds: Sequence[float], levels_present: Sequence[int] | None = None,
                  y: float = 0.0) -> None:
    labels = level_labels(thresholds)
    colors = level_colors(len(labels) - 1)
    order = range(len(labels) - 1, -1, -1)  # same building first
    shown = [v for v in order if levels_present is None or v in set(levels_present)]
    handles = [Patch(facecolor=colors[v], edgecolor=colors[v], label=labels[v]) for v in shown]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
                   bbox_to_anchor=(0.5, y), fontsize=9)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG of ``size_inches × dpi`` pixels; written to a temporary name, then renamed."""
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 10:
        raise ValueError(f"dpi: expected an integer >= 10, got {dpi!r}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    return out


def png_size(fig: Figure, dpi: int = 100) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``fig`` saved by :func:`save_figure` at ``dpi``.

    As matplotlib sizes its canvas: truncated, except within 1e-8 px of the next integer.
    """
    width, height = fig.get_size_inches()
    return int(width * dpi + 1e-8), int(height * dpi + 1e-8)


# --------------------------------------------------------------------------- Fig. 1: ranked lists


@dataclass
class RankedList:
    """One row of :func:`ranked_lists_figure`: a query and its retrieved items in rank order.

    Images are ``(H, W, 3)`` uint8 arrays (or None: a grey placeholder with the caption).
    """

    query_label: str
    levels: Sequence[int]
    labels: Sequence[str]
    query_image: np.ndarray | None = None
    images: Sequence[np.ndarray | None] = field(default_factory=list)


def _image_cell(ax, image: np.ndarray | None, caption: str, color: str, width: float) -> None:
    if image is None:
        ax.set_facecolor(PLACEHOLDER_COLOR)
        ax.text(0.5, 0.5, caption, ha="center", va="center", fontsize=8, transform=ax.transAxes, wrap=True)
    else:
        ax.imshow(image, interpolation="antialiased")
        ax.set_xlabel(caption, fontsize=7, labelpad=2)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def ranked_lists_figure(
    rows: Sequence[RankedList],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    title: str = "",
    cell_inches: float = 1.25,
) -> Figure:
    """The paper's Fig. 1: each query with its top retrieved items, framed by level colour.

    Args:
        rows: one :class:`RankedList` per query (all with the same number of items).
        thresholds: the level thresholds (legend text and number of levels).
        title: figure title.
        cell_inches: side of one image cell.
    """
    if not rows:
        raise ValueError("rows: no query to draw")
    k = len(rows[0].levels)
    if k == 0 or any(len(r.levels) != k or len(r.labels) != k for r in rows):
        raise ValueError("rows: every query needs the same, non-zero number of levels and labels")
    ts = validate_thresholds(thresholds)
    top = len(ts) + 1
    colors = level_colors(top)
    for r in rows:
        bad = [v for v in r.levels if not 0 <= int(v) <= top]
        if bad:
            raise ValueError(f"rows: level {bad[0]} is outside 0..{top} for thresholds {ts}")
    n = len(rows)
    header, footer = (0.45 if title else 0.25), 0.45
    row_h = cell_inches * 1.18
    width = cell_inches * (k + 1.35) + 0.2
    height = header + n * row_h + footer
    fig = Figure(figsize=(width, height))
    grid = fig.add_gridspec(n, k + 2, width_ratios=[1.0, 0.35] + [1.0] * k,
                            left=0.1 / width, right=1 - 0.1 / width,
                            top=1 - header / height, bottom=footer / height, wspace=0.08, hspace=0.3)
    present: set[int] = set()
    for i, r in enumerate(rows):
        ax = fig.add_subplot(grid[i, 0])
        _image_cell(ax, r.query_image, r.query_label, "black", 2.5)
        if i == 0:
            ax.set_title("query", fontsize=9)
        images = list(r.images) + [None] * (k - len(r.images))
        for j in range(k):
            level = int(r.levels[j])
            present.add(level)
            ax = fig.add_subplot(grid[i, j + 2])
            _image_cell(ax, images[j], r.labels[j], colors[level], 4.0)
            if i == 0:
                ax.set_title(f"{j + 1}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.08 / height)
    _level_legend(fig, ts, sorted(present), y=0.0)
    return fig


# --------------------------------------------------------------------------- Fig. 3: map


def local_east_north(coords: np.ndarray, center: int) -> np.ndarray:
    """``(B, 2)`` east/north metres of each building in the azimuthal equidistant projection at ``center``.

    Distances and azimuths from the centre are ellipsoidal geodesics
    (GeographicLib), so a building's distance from the centre is exactly its
    distance on the map and the threshold circles are exact.
    """
    from geographiclib.geodesic import Geodesic

    c = np.asarray(coords, dtype=np.float64)
    lat0, lon0 = c[center]
    out = np.zeros((c.shape[0], 2))
    for i, (lat, lon) in enumerate(c):
        g = Geodesic.WGS84.Inverse(lat0, lon0, lat, lon, Geodesic.DISTANCE | Geodesic.AZIMUTH)
        azimuth = math.radians(g["azi1"])
        out[i] = g["s12"] * math.sin(azimuth), g["s12"] * math.cos(azimuth)
    return out


def building_map_figure(
    coords: object,
    center: int,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    labels: Sequence[str] | None = None,
    title: str = "",
    size_inches: float = 7.0,
    margin_m: float | None = None,
) -> Figure:
    """The paper's Fig. 3: buildings around ``center`` with a circle at each threshold.

    Args:
        coords: ``(B, 2)`` latitude, longitude of the buildings (degrees).
        center: index of the chosen building.
        thresholds: circle radii in metres (and the levels of the colours).
        labels: optional building names; the chosen one is written next to it.
        title: figure title.
        size_inches: side of the (square) map.
        margin_m: half-width of the view; default 1.6 × the largest threshold,
            or the whole campus when it is smaller.
    """
    ts = validate_thresholds(thresholds)
    if not ts:
        raise ValueError("thresholds: the map needs at least one threshold circle")
    lv = level_matrix(coords, ts)
    b = lv.shape[0]
    if isinstance(center, bool) or not isinstance(center, (int, np.integer)) or not 0 <= center < b:
        raise ValueError(f"center: expected a building index in 0..{b - 1}, got {center!r}")
    if labels is not None and len(labels) != b:
        raise ValueError(f"labels: expected {b} labels, got {len(labels)}")
    xy = local_east_north(np.asarray(coords, dtype=np.float64), int(center))
    row = lv[int(center)]
    top = len(ts) + 1
    colors = level_colors(top)
    extent = float(np.abs(xy).max()) if b > 1 else ts[-1]
    half = margin_m if margin_m is not None else min(1.6 * ts[-1], max(extent * 1.05, 1.15 * ts[-1]))

    legend_h = 0.5
    fig = Figure(figsize=(size_inches, size_inches + legend_h))
    ax = fig.add_axes((0.12, (legend_h + 0.45) / (size_inches + legend_h), 0.83,
                       (size_inches - 0.95) / (size_inches + legend_h)))
    order = np.argsort(row, kind="stable")  # far buildings first, the centre drawn last
    ax.scatter(xy[order, 0], xy[order, 1], s=28, c=[colors[int(row[i])] for i in order],
               edgecolors="black", linewidths=0.4, zorder=3)
    ax.scatter([0.0], [0.0], s=160, marker="*", c=colors[top], edgecolors="black", linewidths=0.8, zorder=4)
    for i, t in enumerate(ts):
        ax.add_patch(Circle((0.0, 0.0), t, fill=False, linestyle="--", linewidth=1.2,
                            edgecolor=colors[top - 1 - i], zorder=2))
        ax.annotate(f"{t:g} m", (t * math.cos(math.radians(45)), t * math.sin(math.radians(45))),
                    fontsize=9, color=colors[top - 1 - i], xytext=(3, 3), textcoords="offset points")
    if labels is not None:
        ax.annotate(str(labels[int(center)]), (0.0, 0.0), xytext=(6, -12), textcoords="offset points",
                    fontsize=9, fontweight="bold")
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_aspect("equal")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    # Level top - 1 - i = within ts[i]; the chosen building itself (level top) is not counted.
    within = ", ".join(f"{int(np.count_nonzero(row >= top - 1 - i)) - 1} within {t:g} m"
                       for i, t in enumerate(ts))
    ax.set_title(f"{title + chr(10) if title else ''}{b} buildings; around the ★: {within}", fontsize=10)
    _level_legend(fig, ts, sorted({int(v) for v in row}), y=0.0)
    return fig


# --------------------------------------------------------------------------- Fig. 7: rank shifts


def _ranks(distances: np.ndarray) -> np.ndarray:
    """1-based rank of each gallery item in each row (ascending distance, ties by index)."""
    order = np.argsort(distances, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(distances.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, distances.shape[1] + 1)[None, :]
    return ranks


def kendall_tau_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b (:func:`scipy.stats.kendalltau`) between matching rows of two ``(n, g)`` matrices."""
    from scipy.stats import kendalltau

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"b: expected the shape of a {a.shape}, got {b.shape}")
    return np.asarray([kendalltau(x, y).statistic for x, y in zip(a, b, strict=True)], dtype=np.float64)


def rank_shift_figure(
    base_distances: object,
    reranked: Mapping[int, object],
    item_levels: object,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    top_n: int = 50,
    title: str = "",
) -> Figure:
    """The paper's Fig. 7: rank after re-ranking of the initially top-ranked items, one panel per ``k``.

    Args:
        base_distances: ``(n, g)`` distances of ``n`` sample queries before re-ranking.
        reranked: ``{k: (n, g) distances after k-reciprocal re-ranking with k1 = k}``.
        item_levels: ``(n, g)`` level of each gallery item for each query (colours).
        thresholds: level thresholds (legend).
        top_n: the initial ranks shown on the x axis (capped at the gallery size).
        title: figure title.

    Each panel plots, for every sample query, initial rank (x) against rank
    after re-ranking (y, log scale) and gives the mean Kendall tau between the
    two complete rankings of a query and the mean absolute shift of the shown items.
    """
    base = np.asarray(base_distances, dtype=np.float64)
    lv = np.asarray(item_levels)
    if base.ndim != 2 or base.size == 0:
        raise ValueError(f"base_distances: expected a non-empty (n, g) matrix, got shape {base.shape}")
    if lv.shape != base.shape:
        raise ValueError(f"item_levels: expected shape {base.shape}, got {lv.shape}")
    if not reranked:
        raise ValueError("reranked: no re-ranked distances to compare")
    ts = validate_thresholds(thresholds)
    colors = level_colors(len(ts) + 1)
    n, g = base.shape
    shown = max(1, min(int(top_n), g))
    base_order = np.argsort(base, axis=1, kind="stable")[:, :shown]
    rows = np.arange(n)[:, None]
    panels = sorted(reranked)
    width = 3.2 * len(panels) + 0.6
    height = 4.0 if not title else 4.35
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.85 / height,
                        top=1 - (0.75 if title else 0.45) / height, wspace=0.08)
    x = np.tile(np.arange(1, shown + 1), (n, 1))
    item_lv = lv[rows, base_order]
    for ax, k in zip(axes, panels, strict=True):
        after = np.asarray(reranked[k], dtype=np.float64)
        if after.shape != base.shape:
            raise ValueError(f"reranked[{k}]: expected shape {base.shape}, got {after.shape}")
        new_rank = _ranks(after)[rows, base_order]
        tau = float(np.nanmean(kendall_tau_rows(base, after)))
        shift = float(np.mean(np.abs(new_rank - x)))
        ax.plot([1, shown], [1, shown], color="0.6", linewidth=0.8, zorder=1)
        ax.scatter(x.ravel(), new_rank.ravel(), s=10, c=[colors[int(v)] for v in item_lv.ravel()],
                   alpha=0.8, linewidths=0, zorder=2)
        ax.set_yscale("log")
        ax.set_xlim(0, shown + 1)
        ax.set_title(f"k = {k}: Kendall τ = {tau:.3f}\nmean |shift| = {shift:.1f}", fontsize=9)
        ax.set_xlabel("initial rank")
        ax.grid(True, linewidth=0.3, alpha=0.5)
    axes[0].set_ylabel("rank after re-ranking")
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.1 / height)
    _level_legend(fig, ts, sorted({int(v) for v in item_lv.ravel()}), y=0.0)
    return fig


# --------------------------------------------------------------------------- per-scale bars


def scale_bars_figure(
    runs: Mapping[str, Mapping[str, Mapping[str, object]]],
    metric: str = "mAP",
    title: str = "",
) -> Figure:
    """Grouped bars of ``metric`` (``"mAP"`` or ``"R@1"``) per scale and overall, one panel per task.

    Args:
        runs: ``{label: {task: metrics}}``, e.g. several ``metrics.json`` files.
        metric: ``"mAP"`` (default) or ``"R@1"``: keys ``f"{metric}_{s}"`` and ``f"{metric}_overall"``.
        title: figure title.
    """
    if metric not in ("mAP", "R@1"):
        raise ValueError(f"metric: expected 'mAP' or 'R@1', got {metric!r}")
    if not runs:
        raise ValueError("runs: nothing to compare")
    seen = {task for results in runs.values() for task in results}
    tasks = [t for t in TASKS if t in seen] + sorted(seen - set(TASKS))
    if not tasks:
        raise ValueError("runs: no task in the metrics")
    n_scales = max(scale_count(m) for results in runs.values() for m in results.values())
    if n_scales == 0:
        raise ValueError(f"runs: no {metric}_0 value in the metrics")
    groups = [*scale_names(n_scales), "overall"]
    keys = [f"{metric}_{s}" for s in range(n_scales)] + [f"{metric}_overall"]
    labels = list(runs)
    width = max(4.5, 0.45 * len(groups) * max(len(labels), 1) + 1.5) * len(tasks) + 0.5
    legend_h = 0.25 * math.ceil(len(labels) / 4)  # one legend row per 4 labels
    height = 3.6 + legend_h + (0.3 if title else 0.0)
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, len(tasks), sharey=True, squeeze=False)[0]
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=(0.5 + legend_h) / height,
                        top=1 - (0.75 if title else 0.45) / height, wspace=0.06)
    bar_w = 0.8 / len(labels)
    cmap = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
    handles = []
    for ax, task in zip(axes, tasks, strict=True):
        for i, label in enumerate(labels):
            m = runs[label].get(task, {})
            values = []
            for key in keys:
                v = m.get(key)
                values.append(float("nan") if v is None else 100.0 * float(v))  # type: ignore[arg-type]
            pos = np.arange(len(groups)) - 0.4 + bar_w * (i + 0.5)
            bars = ax.bar(pos, np.nan_to_num(values, nan=0.0), bar_w * 0.92, color=cmap[i % len(cmap)],
                          label=label)
            for rect, v in zip(bars, values, strict=True):
                text = "n/a" if math.isnan(v) else f"{v:.1f}"
                ax.annotate(text, (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center",
                            va="bottom", fontsize=7, rotation=90 if len(labels) > 2 else 0,
                            xytext=(0, 1), textcoords="offset points")
            if ax is axes[0]:
                handles.append(bars)
        ax.set_xticks(np.arange(len(groups)))
        ax.set_xticklabels(groups)
        ax.set_title(task, fontsize=10)
        ax.set_ylim(0, 110)
        ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    axes[0].set_ylabel(f"{metric} (%)")
    fig.legend(handles=handles, labels=labels, loc="lower center", ncol=min(4, len(labels)), frameon=False,
               bbox_to_anchor=(0.5, 0.0), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.1 / height)
    return fig


__all__ = [
    "EXACT_COLOR",
    "FAR_COLOR",
    "RankedList",
    "building_map_figure",
    "kendall_tau_rows",
    "level_colors",
    "level_labels",
    "local_east_north",
    "png_size",
    "rank_shift_figure",
    "ranked_lists_figure",
    "save_figure",
    "scale_bars_figure",
]
