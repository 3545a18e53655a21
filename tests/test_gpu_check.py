"""benches/gpu_check.sh --dry-run: the prepared GPU check runs end to end on the CPU, so it cannot rot.

Every section of the check must run without error at tiny sizes and land in the JSON and the
Markdown report; the numbers themselves only mean something on a GPU (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("ceiling", "loader", "end_to_end", "syncs", "numerics", "fp16", "resume", "embedding")


def test_the_gpu_check_dry_run_writes_every_section(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(ROOT / "benches" / "gpu_check.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["dry_run"] and report["sizes"]["device"] == "cpu"
    assert report["environment"]["cpu_count"] == os.cpu_count()
    for name in SECTIONS:
        section = report["sections"][name]
        assert "error" not in section and "skipped" not in section, (name, section)
    sections = report["sections"]
    assert sections["ceiling"]["images_per_s"] > 0 and sections["ceiling"]["loss_finite"]
    assert {r["batch_dtype"] for r in sections["loader"]["runs"]} == {"float32", "uint8"}
    assert sections["numerics"]["embedding_dtype"] == "torch.float32"
    assert sections["fp16"]["losses_finite"] and len(sections["fp16"]["scales"]) == 2
    resumed = sections["resume"]["default"]
    assert resumed["bit_exact_weights"] and resumed["same_metrics"]  # on the CPU a resume is exact
    assert sections["embedding"]["images"] == 4 * 3 and sections["embedding"]["bound"] in ("loader", "GPU")
    assert "end_to_end_share_of_ceiling" in report["derived"]
    text = (tmp_path / "out" / "gpu_check.md").read_text()
    assert text.startswith("# GPU check (dry run on the CPU, tiny sizes)")
    for name in SECTIONS:
        assert f"**{name}**" in text, name


def test_the_gpu_check_refuses_to_run_without_a_gpu_unless_dry(tmp_path):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - a GPU machine runs the real check instead
        return
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(ROOT / "benches" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr
