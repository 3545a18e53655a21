"""Progress output: nothing for short stages, one line per lasting stage in a log, no carriage returns."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

from dycl import _progress
from dycl.cli import main


class _Log(io.StringIO):
    def isatty(self) -> bool:  # a log file, not a terminal
        return False


@pytest.fixture
def log(monkeypatch):
    """stderr replaced by a log file (set in the test itself: pytest's capture resets it after fixtures)."""
    stream = _Log()

    def install() -> _Log:
        monkeypatch.setattr(sys, "stderr", stream)
        return stream

    return install


def test_short_stages_print_nothing_and_lasting_ones_one_line(log, monkeypatch):
    log = log()
    clock = iter([0.0, 0.01, 10.0, 12.5])  # stage "a" lasts 10 ms, stage "b" 2.5 s
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: next(clock))
    bars = _progress.StageProgress()
    for done in range(0, 101, 10):
        bars("a", done, 100)
    for done in range(0, 51, 5):
        bars("b", done, 50)
    bars.close()
    lines = log.getvalue().splitlines()
    assert lines == ["b: 50 steps in 2.5 s"], lines
    assert "\r" not in log.getvalue()


def test_iteration_bar_in_a_log(log, monkeypatch):
    log = log()
    clock = iter([0.0, 3.0, 0.0, 0.2])
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: next(clock))
    assert list(_progress.bar(range(4), desc="embedding drone", unit="batch")) == [0, 1, 2, 3]
    assert list(_progress.bar(range(2), desc="quick", unit="batch")) == [0, 1]
    assert log.getvalue() == "embedding drone: 4 batch in 3.0 s\n"


def test_rerank_progress_into_a_log_is_quiet_for_small_inputs(log):
    from dycl.rerank import msrerank_embeddings

    log = log()
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((20, 8)), rng.standard_normal((200, 8))
    msrerank_embeddings(q, g, (5, 10, 20), progress=True)
    assert log.getvalue() == ""  # a few milliseconds per stage: no lines, no bars


def test_python_m_dycl_dispatches_to_the_commands(capsys):
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "dycl", "train", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "usage: dycl-train" in done.stdout
    done = subprocess.run([sys.executable, "-m", "dycl"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "torchrun" in done.stdout
