"""Statistics over seeds: the metrics of every finished run, their means, spreads and comparisons.

Two kinds of comparison, two kinds of interval:

* **Configurations** (two losses, two samplers, ...) are trained on different runs, so their
  difference is *unpaired*: :func:`welch_interval` gives Welch's t interval for the difference of
  the seed means (unequal variances, Welch–Satterthwaite degrees of freedom). A difference is also
  called *larger than the spread* when the seed ranges do not overlap (:func:`beyond_spread`).
* **Re-rankings of the same run** are *paired*: :func:`paired_interval` is the one-sample t
  interval of the per-run differences. *Consistent* (:func:`consistent_sign`): the difference has
  the same sign in every run.

Intervals need at least two values on each side (three seeds are planned: with two, a t interval
has one degree of freedom and is very wide).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..tables import read_metrics
from ..tasks import TASKS
from .state import EVAL_DIR, RunState, suite_states
from .suites import Suite


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


@dataclass(frozen=True)
class Interval:
    """A difference and its confidence interval; ``method`` says which (``"Welch t"``, ``"paired t"``)."""

    estimate: float
    lo: float
    hi: float
    n: int
    method: str
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def cell(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"+2.4 [+1.1, +3.7]"`` (bold estimate when the interval excludes 0)."""
        def signed(v: float) -> str:
            x = round(scale * v, digits)
            return f"{0.0:.{digits}f}" if x == 0 else f"{x:+.{digits}f}"  # no "-0.0"
        head = f"**{signed(self.estimate)}**" if self.excludes_zero else signed(self.estimate)
        return f"{head} [{signed(self.lo)}, {signed(self.hi)}]"


def _t_quantile(level: float, df: float) -> float:
    from scipy.stats import t  # a dependency of the report only

    return float(t.ppf(0.5 + level / 2.0, df))


def welch_interval(a: Stat, b: Stat, level: float = 0.95) -> Interval | None:
    """Welch's t interval of ``mean(a) − mean(b)`` for two independent samples; None below 2 values each."""
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.sd ** 2 / a.n, b.sd ** 2 / b.n
    diff = a.mean - b.mean
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(diff, diff, diff, a.n + b.n, "Welch t", level)
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    half = _t_quantile(level, df) * se
    return Interval(diff, diff - half, diff + half, a.n + b.n, "Welch t", level)


def mean_interval(values: Sequence[float], level: float = 0.95, method: str = "t") -> Interval | None:
    """The one-sample t interval of the mean of ``values``; None below 2 finite values."""
    d = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if d.size < 2:
        return None
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    half = _t_quantile(level, d.size - 1) * se if se > 0 else 0.0
    return Interval(mean, mean - half, mean + half, int(d.size), method, level)


def paired_interval(differences: Sequence[float], level: float = 0.95) -> Interval | None:
    """The t interval of the mean of paired differences (same runs); None below 2 finite differences."""
    return mean_interval(differences, level, method="paired t")


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


__all__ = [
    "TIE",
    "Interval",
    "Stat",
    "SuiteResults",
    "beyond_spread",
    "collect_results",
    "consistent_sign",
    "mean_interval",
    "paired_interval",
    "welch_interval",
]
