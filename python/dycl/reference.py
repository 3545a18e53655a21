"""Slow, readable NumPy versions of the metrics and the re-ranking.

These follow DESIGN.md §4 (metrics) and §5 (re-ranking) line by line, with
loops where loops make the definition obvious. They are the yardstick the
Rust core is tested against and the NumPy baseline of the Python
benchmarks; do not use them for real evaluation.
"""

from __future__ import annotations

import numpy as np

# =========================================================================== metrics (DESIGN §4)


# =========================================================================== re-ranking (DESIGN §5)
