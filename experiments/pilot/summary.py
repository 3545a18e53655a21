"""Print the pilot's table: per learning rate and loss, mean ± sd over seeds, and the gap between the two
losses in units of their pooled seed sd (how far apart the methods are, against the noise of a seed).

    python experiments/pilot/summary.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
METRICS = ("H-AP", "mAP_0", "mAP_2", "mAP_overall", "R@1_0")
TASKS = ("satellite->drone", "drone->satellite")


def main() -> None:
    for rate in sorted(p for p in HERE.glob("lr*") if p.is_dir()):
        values: dict[str, dict[tuple[str, str], list[float]]] = {}
        for metrics_file in sorted(rate.glob("*/seed*/metrics.json")):
            loss = metrics_file.parent.parent.name
            scores = json.loads(metrics_file.read_text())
            for task in TASKS:
                for m in METRICS:
                    values.setdefault(loss, {}).setdefault((task, m), []).append(100 * scores[task][m])
        print(f"## {rate.name}")
        header = ["loss", *(f"{t} {m}" for t in TASKS for m in METRICS)]
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for loss, cells in values.items():
            row = [f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
                   for v in cells.values()]
            print(f"| {loss} (n={len(next(iter(cells.values())))}) | " + " | ".join(row) + " |")
        if len(values) == 2:
            a, b = values.values()
            gaps = []
            for key in a:
                if len(a[key]) > 1 and len(b[key]) > 1:
                    pooled = ((statistics.variance(a[key]) + statistics.variance(b[key])) / 2) ** 0.5
                    gap = abs(statistics.mean(a[key]) - statistics.mean(b[key]))
                    gaps.append(f"{gap / pooled:.1f}" if pooled > 0 else "inf")
                else:
                    gaps.append("–")
            print("| gap / pooled sd | " + " | ".join(gaps) + " |")
        print()


if __name__ == "__main__":
    main()
