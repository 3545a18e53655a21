"""Statistics over seeds: the metrics of every finished run, their means, spreads and comparisons.

Significance: with a few seeds per configuration, a difference between two
configurations is called *larger than the spread* when their ranges over seeds
do not overlap (every seed of one beats every seed of the other). Re-rankings
of the same run are compared per run (paired): *consistent* when the
difference has the same sign in every run.
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
    "Stat",
    "SuiteResults",
    "beyond_spread",
    "collect_results",
    "consistent_sign",
]
