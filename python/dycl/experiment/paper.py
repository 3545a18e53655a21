"""The paper's own numbers, shown by the report beside ours for the same rows.

Zhang, Wang, Wu, Zhou, Hu: "Dynamic Contrastive Learning for Hierarchical Retrieval: A Case Study of
Distance-Aware Cross-View Geo-Localization", arXiv:2506.23077 (2025). Only numbers with a source are
filled in; every other cell is None and printed ``n/a``:

* Fig. 6 (Σ-Triplet against single-scale Triplet) and Table IV (DyML, HAPPIER with k-reciprocal
  re-ranking → with MSRerank): the values quoted in issue 14 of this project, read from the paper by
  the reviewer who filed it. Fig. 6's task is not stated there.
* Tables II and III (DA-Campus, per method): not available to the session that wrote this module
  (the stored copies of the paper it could search hold its first page only). Fill them in from the
  paper as ``{(config key, task, metric): value in %}``; the report picks them up.
"""

from __future__ import annotations

import math

PAPER = "Zhang et al., arXiv:2506.23077"

#: Fig. 6: Σ-Triplet minus the single-scale Triplet trained at S^s, overall mAP in points (task not stated).
FIG6_SIGMA_TRIPLET_GAIN: dict[str, float] = {"triplet": 12.28, "triplet-scale1": 4.43, "triplet-scale2": 1.43}

#: Table IV, single-domain hierarchical retrieval: mAP (%) of HAPPIER + k-reciprocal re-ranking, + MSRerank.
TABLE_IV: dict[str, tuple[float, float]] = {
    "DyML-Vehicle": (38.55, 40.70),
    "DyML-Animal": (44.53, 46.44),
    "DyML-Product": (41.21, 46.54),
}

#: Tables II (H-AP, ASI, NDCG) and III (mAP_s, R@1_s, overall) on DA-Campus, no re-ranking:
#: ``{(config key, task, metric): value in %}``. Empty: see the module docstring.
TABLES_II_III: dict[tuple[str, str, str], float] = {}


def paper_value(key: str, task: str, metric: str) -> float | None:
    """The paper's value (%) of ``metric`` for configuration ``key`` on ``task``, or None when unknown."""
    value = TABLES_II_III.get((key, task, metric))
    return None if value is None or not math.isfinite(value) else float(value)


def paper_cell(value: float | None, signed: bool = False) -> str:
    """A number as the paper prints it (two decimals), or ``n/a``."""
    if value is None:
        return "n/a"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


__all__ = ["FIG6_SIGMA_TRIPLET_GAIN", "PAPER", "TABLES_II_III", "TABLE_IV", "paper_cell", "paper_value"]
