"""Sharded embedding extraction (dycl.shards) and ``torchrun -m dycl eval`` on two gloo CPU processes.

* whole-batch shards cover the rows in order; the shards of 2 or 3 processes, merged, are the
  one-process embeddings bit for bit (an empty shard included);
* a finished shard is used as it is (its images may even be unreadable by now), a shard of other
  rows is recomputed, a shard of another model or other images is an error unless overwriting,
  a missing shard is an error naming its process;
* one torchrun launch of ``dycl eval`` whose first process finds its shards from an earlier,
  interrupted launch gives the one-process metrics and embeddings files exactly.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dycl.cli import eval_main
from dycl.data import read_dacampus
from dycl.embed import embed_split, shard_rows
from dycl.models import build_model, load_model
from dycl.shards import (
    SHARDS_DIR,
    embed_shards,
    merge_shards,
    remove_shards,
    shard_path,
    shard_source,
)
from dycl.tasks import TASK_FILES

IMAGE_SIZE = 32
BATCH = 4
EVAL_ARGS = ("--backbone", "resnet18", "--image-size", str(IMAGE_SIZE), "--batch-size", str(BATCH),
             "--workers", "0", "--device", "cpu", "--thresholds", "100", "200", "--no-progress")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = build_model("resnet18", embedding_dim=16, pretrained=False)
    path = tmp_path_factory.mktemp("shards") / "net.pth"
    torch.save({"net_state": model.state_dict()}, path)  # the authors' layout: no configuration
    return path


def loaded(checkpoint: Path) -> torch.nn.Module:
    model, _ = load_model(checkpoint, backbone="resnet18", image_size=IMAGE_SIZE)
    return model


def stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def test_whole_batch_shards_cover_the_rows_in_order():
    for count in (0, 1, 5, 6, 7, 24, 301):
        for world in (1, 2, 3, 8):
            for block in (1, 4, 7):
                rows = [shard_rows(count, r, world, block=block) for r in range(world)]
                assert sum((list(r) for r in rows), []) == list(range(count))
                assert all(r.start % block == 0 for r in rows if len(r))
                blocks = [-(-len(r) // block) for r in rows]
                assert max(blocks) - min(blocks) <= 1
            # block 1: numpy.array_split's sizes
            assert [len(shard_rows(count, r, world)) for r in range(world)] == \
                [len(part) for part in np.array_split(np.arange(count), world)]
    with pytest.raises(ValueError, match="block"):
        shard_rows(4, 0, 2, block=0)


def test_merged_shards_are_the_one_process_embeddings(campus, checkpoint, tmp_path):
    world = 3  # 2 satellite batches: the third process's satellite shard is empty
    model = loaded(checkpoint)
    split = read_dacampus(campus, "test")
    source = shard_source(model, split, IMAGE_SIZE, "cpu", amp=True)
    for rank in reversed(range(world)):  # the order the processes finish in does not matter
        embed_shards(model, split, tmp_path, source, rank, world, batch_size=BATCH, progress=False)
    sat, drone = merge_shards(tmp_path, split, source, world, BATCH)
    whole_sat, whole_drone = embed_split(model, split, IMAGE_SIZE, batch_size=BATCH, progress=False)
    assert sat.shape == (split.num_buildings, 16) and drone.shape == (split.num_drone, 16)
    np.testing.assert_array_equal(sat, whole_sat)
    np.testing.assert_array_equal(drone, whole_drone)
    remove_shards(tmp_path)
    assert not list(tmp_path.glob("*.npz"))


def test_shards_are_reused_recomputed_or_refused(campus, checkpoint, tmp_path):
    data = tmp_path / "campus"
    shutil.copytree(campus, data)
    split = read_dacampus(data, "test")
    model = loaded(checkpoint)
    source = shard_source(model, split, IMAGE_SIZE, "cpu", amp=True)
    folder = tmp_path / "shards"
    embed_shards(model, split, folder, source, 0, 2, batch_size=BATCH, progress=False)
    paths = {view: shard_path(folder, view, 0, 2) for view in ("satellite", "drone")}
    before = {view: stamp(p) for view, p in paths.items()}

    # Finished shards are not embedded again: their images may be unreadable by now.
    split.satellite_paths[0].write_bytes(b"\x00not an image")
    log = io.StringIO()
    embed_shards(model, split, folder, source, 0, 2, batch_size=BATCH, progress=False, log=log)
    assert {view: stamp(p) for view, p in paths.items()} == before
    assert log.getvalue().count("embedded before") == 2

    # The process that never wrote its shards: named by the merge.
    with pytest.raises(ValueError, match=r"drone\.rank1-of-2\.npz|satellite\.rank1-of-2\.npz") as missing:
        merge_shards(folder, split, source, 2, BATCH)
    assert "process 1 of 2" in str(missing.value) and "missing" in str(missing.value)

    # Another model, other images: refused (named), unless overwriting.
    other_model = dataclasses.replace(source, model="0" * 16)
    with pytest.raises(ValueError, match="another model") as foreign:
        embed_shards(model, split, folder, other_model, 0, 2, batch_size=BATCH, progress=False)
    assert str(paths["satellite"]) in str(foreign.value) and "--overwrite" in str(foreign.value)
    other_images = dataclasses.replace(source, data={**source.data, "drone": "f" * 16})
    with pytest.raises(ValueError, match="other images"):
        embed_shards(model, split, folder, other_images, 0, 2, batch_size=BATCH, progress=False)
    with pytest.raises(ValueError, match="unreadable|cannot|image"):  # overwriting re-embeds: the bad image
        embed_shards(model, split, folder, other_model, 0, 2, batch_size=BATCH, progress=False,
                     overwrite=True)

    # Other rows (another batch size) are recomputed; a merge expecting other rows refuses them.
    shutil.copy(campus / split.satellite_paths[0].relative_to(data), split.satellite_paths[0])
    embed_shards(model, split, folder, source, 0, 2, batch_size=5, progress=False)  # rows 0..5 and 0..15
    assert all(stamp(p) != before[view] for view, p in paths.items())
    embed_shards(model, split, folder, source, 1, 2, batch_size=5, progress=False)
    assert merge_shards(folder, split, source, 2, 5)[1].shape == (split.num_drone, 16)
    with pytest.raises(ValueError, match="holds rows"):
        merge_shards(folder, split, source, 2, BATCH)


def test_torchrun_eval_resumes_and_equals_one_process(campus, checkpoint, tmp_path, capsys):
    reference = tmp_path / "one" / "metrics.json"
    assert eval_main(["--checkpoint", str(checkpoint), "--data-dir", str(campus), "--output", str(reference),
                      *EVAL_ARGS]) == 0

    # An earlier launch got as far as process 0's shards; since then, one of its images broke.
    data = tmp_path / "campus"
    shutil.copytree(campus, data)
    split = read_dacampus(data, "test")
    out = tmp_path / "two" / "metrics.json"
    model = loaded(checkpoint)
    embed_shards(model, split, out.with_suffix(".embeddings") / SHARDS_DIR,
                 shard_source(model, split, IMAGE_SIZE, "cpu", amp=True), 0, 2, batch_size=BATCH,
                 progress=False)
    split.drone_paths[1].write_bytes(b"\x00not an image")

    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "python"),
                                          os.environ.get("PYTHONPATH", "")])}
    launch = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dycl",
         "eval", "--checkpoint", str(checkpoint), "--data-dir", str(data), "--output", str(out), *EVAL_ARGS],
        env=env, capture_output=True, text=True, timeout=240)
    assert launch.returncode == 0, launch.stderr[-3000:]
    assert launch.stderr.count("embedded before") == 2, launch.stderr[-3000:]
    assert json.loads(out.read_text()) == json.loads(reference.read_text())
    for file in TASK_FILES.values():
        with np.load(out.with_suffix(".embeddings") / file) as got, \
                np.load(reference.with_suffix(".embeddings") / file) as expected:
            assert sorted(got.files) == sorted(expected.files)
            for key in expected.files:
                np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{file}: {key}")
    assert not (out.with_suffix(".embeddings") / SHARDS_DIR).exists()  # merged: the shards are gone
