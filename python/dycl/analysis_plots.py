"""Figures of the paper's analyses (matplotlib, off-screen; sizes fixed by content, as in :mod:`dycl.plots`):

* :func:`rank_shift_profile_figure` — the paper's Fig. 7: over every query of a set (the training set
  there), the mean position shift of the item at each initial rank after k-reciprocal re-ranking, one
  line per ``k``, with the mean Kendall τ between the two complete rankings;
* :func:`sweep_figure` — the paper's Fig. 8: a metric against a swept parameter (τ, λ₁), mean over
  seeds with its t interval, one line per task.

What goes into them is computed by :func:`dycl.figures.rank_shift_profile` and the experiment report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator


@dataclass(frozen=True)
class RankShiftProfile:
    """Position shifts after re-ranking, averaged over queries, for each initial rank ``1..g``.

    ``mean_shift[r - 1]`` is the mean over queries of (rank after − r) of the item initially at rank
    ``r`` (negative: moved up); ``mean_abs_shift`` the mean of its absolute value; ``tau`` the mean
    Kendall τ-b between each query's initial and re-ranked complete rankings; ``queries`` their number.
    """

    mean_shift: np.ndarray
    mean_abs_shift: np.ndarray
    tau: float
    queries: int


_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def rank_shift_profile_figure(profiles: Mapping[int, RankShiftProfile], title: str = "") -> Figure:
    """Two panels against the initial rank (log axis): mean signed shift, and mean absolute shift.

    Args:
        profiles: ``{k: profile}`` for k-reciprocal re-ranking with ``k1 = k``.
        title: figure title.
    """
    if not profiles:
        raise ValueError("profiles: nothing to draw")
    width, height = 9.0, 3.9 + (0.3 if title else 0.0)
    fig = Figure(figsize=(width, height))
    left, right = fig.subplots(1, 2, squeeze=True)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=1 - (0.75 if title else 0.4) / height,
                        wspace=0.25)
    for i, (k, p) in enumerate(sorted(profiles.items())):
        ranks = np.arange(1, p.mean_shift.size + 1)
        color = _COLORS[i % len(_COLORS)]
        label = f"k = {k} (Kendall τ {p.tau:.3f})"
        left.plot(ranks, p.mean_shift, color=color, linewidth=1.2, label=label)
        right.plot(ranks, p.mean_abs_shift, color=color, linewidth=1.2, label=label)
    for ax, ylabel in ((left, "mean shift (rank after − initial)"), (right, "mean |shift|")):
        ax.set_xscale("log")
        ax.set_xlabel("initial rank")
        ax.set_ylabel(ylabel)
        ax.grid(True, linewidth=0.3, alpha=0.5)
    left.axhline(0.0, color="0.5", linewidth=0.8)
    right.legend(fontsize=8, frameon=False)
    queries = next(iter(profiles.values())).queries
    left.set_title(f"{queries} queries", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.1 / height)
    return fig


def sweep_figure(series: Mapping[str, Sequence[tuple[float, float, float, float]]], parameter: str,
                 metric: str, title: str = "") -> Figure:
    """``metric`` (%, mean and interval over seeds) against ``parameter``, one line per series (task).

    Args:
        series: ``{name: [(value, mean, lo, hi), ...]}`` in fractions; ``lo``/``hi`` may equal the mean
            (a single seed).
        parameter: the x axis label (e.g. ``"τ (DyCL scale)"``); the values are spaced as given (log axis
            when they span a factor of 4 or more).
        metric: the y axis label.
        title: figure title.
    """
    if not series or not any(series.values()):
        raise ValueError("series: nothing to draw")
    width, height = 5.2, 3.8 + (0.3 if title else 0.0)
    fig = Figure(figsize=(width, height))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.14, top=1 - (0.75 if title else 0.4) / height)
    values: list[float] = []
    for i, (name, points) in enumerate(series.items()):
        pts = sorted(points)
        x = np.asarray([p[0] for p in pts], dtype=np.float64)
        mean = 100.0 * np.asarray([p[1] for p in pts])
        err = np.vstack([mean - 100.0 * np.asarray([p[2] for p in pts]),
                         100.0 * np.asarray([p[3] for p in pts]) - mean])
        ax.errorbar(x, mean, yerr=err, color=_COLORS[i % len(_COLORS)], marker="o", capsize=3, linewidth=1.2,
                    label=name)
        values += x.tolist()
    if values and min(values) > 0 and max(values) / min(values) >= 4:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())  # only the swept values are labelled
    ax.set_xticks(sorted(set(values)))
    ax.set_xticklabels([f"{v:g}" for v in sorted(set(values))])
    ax.set_xlabel(parameter)
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.1 / height)
    return fig


__all__ = ["RankShiftProfile", "rank_shift_profile_figure", "sweep_figure"]
