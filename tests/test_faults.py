"""Fault injection: what a skeptical user does to the commands, and what must happen.

Each case asserts the exit code, a one-line message naming the file or the
argument, no traceback, and that nothing written before is lost or changed
(file hashes before and after). The cases follow docs/reliability.md.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import dycl.rerank as rerank_module
import dycl.runs as runs_module
from dycl import metrics
from dycl._files import LOCK_FILE, FolderLock, FolderLocked, atomic_open
from dycl.cli import eval_main, train_main
from dycl.data import DatasetError, read_dacampus, read_manifest
from dycl.geo import level_matrix
from dycl.rerank import k_reciprocal_embeddings, msrerank_ks
from dycl.tasks import TASK_FILES

TINY = ["--backbone", "resnet18", "--no-pretrained", "--image-size", "32", "--embedding-dim", "16",
        "--batch-size", "8", "--thresholds", "100", "200", "--workers", "0", "--no-progress",
        "--epochs", "1", "--max-steps-per-epoch", "1"]


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (the lock file aside: it records who last held it)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def one_line_error(capsys, main, *args: object, code: int = 2) -> str:
    """Run a command in-process; it must exit ``code`` with one ``error:`` line and no traceback."""
    capsys.readouterr()
    assert main([str(a) for a in args]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if "error:" in line or "interrupted" in line]
    assert len(lines) == 1, err
    return lines[0]


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


@pytest.fixture(scope="module")
def finished(campus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "run"
    assert train_main(["--data-dir", str(campus), "--output", str(run), *TINY]) == 0
    return run


@pytest.fixture(scope="module")
def partial(campus, tmp_path_factory) -> Path:
    """A run of 2 epochs stopped after the first (its next checkpoint write is the second epoch's)."""
    run = tmp_path_factory.mktemp("faults") / "partial"
    args = list(TINY)
    args[args.index("--epochs") + 1] = "2"
    assert train_main(["--data-dir", str(campus), "--output", str(run), *args,
                       "--stop-after-epoch", "1"]) == 0
    return run


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


# --------------------------------------------------------------------------- 1. memory


def test_too_large_rerank_is_a_memory_error_not_an_abort(monkeypatch, tmp_path, capsys):
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((100, 8)).astype(np.float32), rng.standard_normal((120, 8)).astype(np.float32)
    monkeypatch.setattr(rerank_module, "_available_memory", lambda: 10_000)  # a tiny machine
    with pytest.raises(MemoryError, match="result itself does not fit") as info:
        k_reciprocal_embeddings(q, g)
    assert "k_reciprocal_embeddings" not in str(info.value)  # not "use the function you just called"
    # The same from the command line: one line, exit 2.
    path = tmp_path / "t.npz"
    coords = np.c_[42.37 + rng.uniform(0, 0.01, 10), -71.1 + rng.uniform(0, 0.01, 10)]
    np.savez(path, query=q, gallery=g, query_ids=rng.integers(0, 10, 100),
             gallery_ids=rng.integers(0, 10, 120), coords=coords)
    line = one_line_error(capsys, eval_main, "--embeddings", path, "--rerank", "k-reciprocal",
                          "--no-progress")
    assert "MemoryError" not in line and "GB" in line


def test_huge_k1_at_the_cli_means_everything(tmp_path, capsys):
    rng = np.random.default_rng(1)
    q, g = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((20, 4)).astype(np.float32)
    coords = np.c_[42.37 + rng.uniform(0, 0.01, 5), -71.1 + rng.uniform(0, 0.01, 5)]
    path = tmp_path / "t.npz"
    np.savez(path, query=q, gallery=g, query_ids=rng.integers(0, 5, 6), gallery_ids=rng.integers(0, 5, 20),
             coords=coords)
    outs = {}
    for k1 in ("25", "10000000", "18446744073709551616"):
        out = tmp_path / f"k{k1}.json"
        assert eval_main(["--embeddings", str(path), "--rerank", "k-reciprocal", "--k1", k1, "--output",
                          str(out), "--no-progress"]) == 0
        outs[k1] = out.read_text()
    assert outs["25"] == outs["10000000"] == outs["18446744073709551616"]  # N - 1 = 25 is "all of them"


# --------------------------------------------------------------------------- 2. the end of a run is atomic


def test_resume_redoes_missing_final_files(run_copy, capsys):
    metrics_before = (run_copy / "metrics.json").read_text()
    (run_copy / "embeddings" / TASK_FILES["drone->satellite"]).unlink()
    assert train_main(["--output", str(run_copy), "--resume", "--no-progress"]) == 0
    assert (run_copy / "embeddings" / TASK_FILES["drone->satellite"]).is_file()
    assert (run_copy / "metrics.json").read_text() == metrics_before


def test_a_run_killed_before_its_last_file_is_not_complete(run_copy, monkeypatch):
    """metrics.json is written last: a run killed before it is resumed, not reported complete."""
    import dycl.train.trainer as trainer_module

    (run_copy / "metrics.json").unlink()
    for name in TASK_FILES.values():
        (run_copy / "embeddings" / name).unlink()
    assert not runs_module.run_complete(run_copy)
    order = []

    def recorded(name, function):
        def call(*args, **kwargs):
            order.append(name)
            return function(*args, **kwargs)
        return call

    monkeypatch.setattr(trainer_module, "save_task_embeddings",
                        recorded("embeddings", trainer_module.save_task_embeddings))
    monkeypatch.setattr(trainer_module, "write_json_atomic",
                        recorded("metrics", trainer_module.write_json_atomic))
    assert train_main(["--output", str(run_copy), "--resume", "--no-progress"]) == 0
    assert order == ["embeddings", "metrics"] and runs_module.run_complete(run_copy)


# --------------------------------------------------------------------------- 3. one writer per folder


def _hold_lock(folder: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from dycl._files import FolderLock
        with FolderLock({str(folder)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_second_writer_is_refused_and_a_dead_holder_leaves_no_lock(tmp_path, campus, capsys):
    out = tmp_path / "busy"
    holder = _hold_lock(out)
    try:
        with pytest.raises(FolderLocked, match=f"process {holder.pid}"):
            FolderLock(out).acquire()
        line = one_line_error(capsys, train_main, "--data-dir", campus, "--output", out, *TINY)
        assert "is being written by process" in line and str(out) in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing else written
    finally:
        holder.kill()  # like kill -9: the system releases the lock
        holder.wait()
    with FolderLock(out):  # the stale lock file is simply taken over
        pass
    assert train_main(["--data-dir", str(campus), "--output", str(out), *TINY]) == 0


def test_two_evaluations_into_one_output_file(finished, tmp_path, capsys):
    out = tmp_path / "eval" / "metrics.json"
    out.parent.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from dycl._files import FolderLock
        with FolderLock({str(out.parent)!r}, lock_file=".metrics.json.lock"):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    try:
        line = one_line_error(capsys, eval_main, "--embeddings", finished / "embeddings", "--output", out,
                              "--no-progress")
        assert "is being written by process" in line
        # Another name in the same folder is another lock: that evaluation goes ahead.
        assert eval_main(["--embeddings", str(finished / "embeddings"), "--output",
                          str(out.parent / "other.json"), "--no-progress"]) == 0
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- 4. one-line errors for I/O


def _failing_save(error: BaseException, written: int = 1 << 16):
    def save(obj, handle, *args, **kwargs):
        handle.write(b"\0" * written)  # part of the file, then the failure
        raise error
    return save


@pytest.mark.parametrize("error, code, expected", [
    (OSError(errno.ENOSPC, "No space left on device"), 2, "No space left on device"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_failed_checkpoint_write_keeps_the_old_one(partial, tmp_path, monkeypatch, capsys, error, code,
                                                   expected):
    run_copy = tmp_path / "run"
    shutil.copytree(partial, run_copy)
    before = hashes(run_copy)
    monkeypatch.setattr(torch, "save", _failing_save(error))
    line = one_line_error(capsys, train_main, "--output", run_copy, "--resume", "--no-progress", code=code)
    assert expected in line
    assert temporaries(run_copy) == []  # no 64 kB last.pt.tmp left behind
    after = hashes(run_copy)
    assert after["last.pt"] == before["last.pt"]  # the checkpoint of epoch 1 is intact

    def kept(files: dict[str, str]) -> dict[str, str]:  # the logs of the resumed attempt may grow
        return {k: v for k, v in files.items() if k not in ("config.json", "log.jsonl")
                and not k.startswith("tensorboard/")}

    assert kept(after) == kept(before)


def test_full_disk_on_a_real_tmpfs(campus, tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the ENOSPC injection test covers the writer")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode}); the "
                    "ENOSPC injection test covers the writer")
    try:
        line = one_line_error(capsys, train_main, "--data-dir", campus, "--output", mount / "run", *TINY)
        assert "No space left on device" in line
        assert temporaries(mount) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot write into (root ignores permission bits: /proc is never writable)."""
    if os.geteuid() == 0:
        return Path("/proc/dycl-test-output")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "out"


def test_unwritable_outputs_fail_before_any_work(finished, campus, tmp_path, capsys):
    bad = _unwritable(tmp_path)
    line = one_line_error(capsys, train_main, "--data-dir", campus, "--output", bad, *TINY)
    assert line.startswith("dycl-train: error: --output: cannot write")
    start = time.perf_counter()
    line = one_line_error(capsys, eval_main, "--checkpoint", finished / "last.pt", "--data-dir", campus,
                          "--output", bad / "metrics.json", "--workers", "0", "--no-progress")
    assert "output: cannot write" in line and time.perf_counter() - start < 20  # before embedding
    line = one_line_error(capsys, eval_main, "--embeddings", finished / "embeddings", "--plots", bad,
                          "--no-progress")
    assert "plots: cannot write" in line


# --------------------------------------------------------------------------- 5. context in messages


def _damaged_campus(campus: Path, tmp_path: Path, split: str) -> tuple[Path, Path]:
    copy = tmp_path / "campus"
    shutil.copytree(campus, copy)
    victim = read_dacampus(copy, split).drone_paths[-1]
    victim.write_bytes(b"not a jpeg at all")
    return copy, victim


def test_corrupt_image_in_a_worker_names_the_file(finished, campus, tmp_path, capsys):
    copy, victim = _damaged_campus(campus, tmp_path, "test")
    line = one_line_error(capsys, eval_main, "--checkpoint", finished / "last.pt", "--data-dir", copy,
                          "--workers", "1", "--no-progress")
    assert str(victim) in line and "DataLoader worker" not in line


def test_corrupt_training_image_in_a_worker_names_the_file(campus, tmp_path, capsys):
    copy, victim = _damaged_campus(campus, tmp_path, "train")
    args = list(TINY)
    args[args.index("--workers") + 1] = "1"
    args[args.index("--max-steps-per-epoch") + 1] = "100"  # the whole epoch: every image is read
    line = one_line_error(capsys, train_main, "--data-dir", copy, "--output", tmp_path / "run", *args)
    assert str(victim) in line and "DataLoader worker" not in line


def test_latin1_and_bom_list_files(campus, tmp_path):
    copy = tmp_path / "campus"
    shutil.copytree(campus, copy)
    listing = copy / "satellite" / "test.txt"
    lines = listing.read_text(encoding="utf-8").splitlines()
    # Excel's "CSV UTF-8" starts with a byte-order mark: still a valid header.
    listing.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    assert read_dacampus(copy, "test").num_buildings == len(lines) - 1
    # A Latin-1 byte on line 3: the file and the line are named.
    lines[2] = lines[2] + " caf\xe9"
    listing.write_bytes("\n".join(lines[:2]).encode() + b"\n" + lines[2].encode("latin-1") + b"\n")
    with pytest.raises(DatasetError, match=rf"{listing}:3: not UTF-8"):
        read_dacampus(copy, "test", check_images=False)
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,view,building,latitude,longitude,split\n" + "x\xe9.jpg".encode("latin-1"))
    with pytest.raises(DatasetError, match=rf"{manifest}:2: not UTF-8"):
        read_manifest(manifest, "test", check_images=False)


# --------------------------------------------------------------------------- 6. no silently wrong numbers


def test_levels_above_the_diagonal_are_refused():
    levels = np.array([[3, 6], [6, 3]], dtype=np.uint8)
    with pytest.raises(ValueError, match="levels: off-diagonal levels must not exceed"):
        metrics.evaluate(np.zeros((2, 2)), [0, 1], [0, 1], levels)


def test_longitude_outside_the_globe_and_uint64_ids():
    levels = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    with pytest.raises(ValueError, match="coords: longitude 500"):
        metrics.evaluate(np.zeros((2, 2)), [0, 1], [0, 1], levels, coords=[[42.0, 500.0], [42.0, 1.0]])
    big = np.array([0, 2**63 + 5], dtype=np.uint64)
    with pytest.raises(ValueError, match=f"id {2**63 + 5} is outside"):
        metrics.evaluate(np.zeros((2, 2)), big, [0, 1], levels)


def test_eq6_ks_stay_exact_for_huge_image_counts():
    rng = np.random.default_rng(2)
    lv = level_matrix(np.c_[42.37 + rng.uniform(0, 0.02, 50), -71.1 + rng.uniform(0, 0.02, 50)])
    small = msrerank_ks(lv, 60, min_k=1)
    huge = msrerank_ks(lv, 60 * 2**40, min_k=1)
    assert all(abs(h / 2**40 - s) <= 1 for s, h in zip(small, huge, strict=True))
    assert all(h > 0 for h in msrerank_ks(lv, 2**70))  # no int64 wrap-around to negative sizes


def test_huge_k1_is_not_a_false_memory_error():
    rng = np.random.default_rng(3)
    q, g = rng.standard_normal((5, 4)), rng.standard_normal((30, 4))
    exact = k_reciprocal_embeddings(q, g, 34)
    for k1 in (10**6, 10**7, 2**60, 2**64 - 1, 2**70):
        np.testing.assert_array_equal(k_reciprocal_embeddings(q, g, k1), exact)


# --------------------------------------------------------------------------- 7. leftovers


def test_overwrite_keeps_the_users_own_files(run_copy, campus):
    mine = run_copy / "embeddings" / "my_notes.txt"
    mine.write_text("keep me")
    assert train_main(["--data-dir", str(campus), "--output", str(run_copy), "--overwrite", *TINY]) == 0
    assert mine.read_text() == "keep me"
    assert all((run_copy / "embeddings" / f).is_file() for f in TASK_FILES.values())


def test_stale_temporaries_of_a_killed_run_are_removed_on_resume(run_copy):
    for stale in (run_copy / "last.pt.tmp", run_copy / "config.json.tmp",
                  run_copy / "embeddings" / "satellite_to_drone.npz.tmp"):
        stale.write_bytes(b"half a file")
    assert train_main(["--output", str(run_copy), "--resume", "--no-progress"]) == 0
    assert temporaries(run_copy) == []


def test_atomic_write_removes_its_temporary_on_any_error(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    for error in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt(), ValueError("x")):
        with pytest.raises(type(error)), atomic_open(target) as handle:
            handle.write("new, half written")
            raise error
        assert target.read_text() == "old" and temporaries(tmp_path) == []
