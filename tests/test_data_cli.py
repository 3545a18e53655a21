"""``dycl-data``: synth, stats, show, and its error paths (exit code 2, one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dycl.cli import data_main


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "set"
    code = data_main(
        [
            "synth",
            str(path),
            "--train-buildings",
            "7",
            "--test-buildings",
            "5",
            "--drone-views",
            "3",
            "--image-size",
            "32",
            "--seed",
            "2",
            "--workers",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    return path


def _one_line_error(capsys, argv: list[str], needle: str) -> None:
    assert data_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dycl-data: error:") and "\n" not in err and "Traceback" not in err, err
    assert needle in err, err


def test_synth_writes_the_layout(root):
    for name in ("satellite/train.txt", "satellite/test.txt", "drone/train.txt", "drone/test.txt"):
        assert (root / name).is_file()
    assert len(list(root.rglob("*.jpg"))) == 12 * 4


def test_stats_report_and_json(root, capsys):
    assert data_main(["stats", str(root)]) == 0
    report = capsys.readouterr().out
    assert "train" in report and "Eq. 6 ks" in report and "within 200m" in report
    assert data_main(["stats", str(root), "--json", "--thresholds", "100", "300", "900"]) == 0
    stats = json.loads(capsys.readouterr().out)
    train = stats["splits"]["train"]
    assert train["buildings"] == 7 and train["images"] == {"satellite": 7, "drone": 21}
    assert sum(train["level_histogram"].values()) == train["building_pairs"] == 21
    assert set(train["level_histogram"]) == {"level_0", "level_1", "level_2", "level_3"}
    assert len(train["eq6_ks"]["satellite_to_drone"]) == 4
    assert set(train["neighbours"]) == {"within_100m", "within_300m", "within_900m"}


def test_show_writes_a_contact_sheet(root, tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert data_main(["show", str(root), "--building", "9", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.width > 3 * 32 and image.height >= 2 * 32
    assert "sheet.png" in capsys.readouterr().out


def test_error_paths(root, tmp_path, capsys):
    _one_line_error(capsys, ["stats", str(tmp_path / "missing")], "not a dataset folder")
    broken = tmp_path / "broken"
    (broken / "satellite").mkdir(parents=True)
    (broken / "drone").mkdir()
    _one_line_error(capsys, ["stats", str(broken)], "missing file")
    (broken / "satellite" / "train.txt").write_text("path class_id latitude\nx.jpg 1 40\n")
    (broken / "drone" / "train.txt").write_text("path class_id latitude longitude\n")
    _one_line_error(capsys, ["stats", str(broken)], "train.txt:1: missing column(s) longitude")
    _one_line_error(
        capsys, ["show", str(root), "--building", "999", "--out", str(tmp_path / "x.png")], "no building 999"
    )
    _one_line_error(
        capsys,
        ["show", str(root), "--building", "2", "--out", str(tmp_path / "no" / "x.png")],
        "does not exist",
    )
    _one_line_error(capsys, ["synth", str(root), "--seed", "9", "--quiet"], "other parameters")
    _one_line_error(capsys, ["synth", str(tmp_path / "new"), "--drone-views", "0", "--quiet"], "drone_views")
    _one_line_error(capsys, ["stats", str(root), "--thresholds", "500", "200"], "thresholds")


def test_console_script_has_no_traceback(tmp_path):
    """The installed entry point, end to end, on a missing folder."""
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from dycl.cli import data_main; sys.exit(data_main(sys.argv[1:]))",
            "stats",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
    assert "nowhere" in run.stderr
