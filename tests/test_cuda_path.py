"""The CUDA path's fixes (issue 15), each checked on the CPU; the two-process ones are in
test_distributed_training.py.

* the loader: uint8 batches normalised on the device (the same numbers), resized satellite tiles
  cached (the same items), persistent workers that still augment every epoch afresh, worker
  counts from the CPUs per process, a clear error when /dev/shm is too small;
* geo batches that do not depend on the number of processes;
* bf16 only where it is native; the embedding head in float32 under autocast;
* no host-device sync inside a training step, and none per step in the epoch loop;
* the deterministic switch (max-pool with a deterministic backward, global flags).
"""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import numpy as np
import pytest
import torch
from sync_counter import SyncCounter
from torch import nn

from dycl.data import GeoPairBatchSampler, in_batch_positives, loading, open_train_test
from dycl.data import datasets as datasets_module
from dycl.data.datasets import PairDataset
from dycl.data.transforms import BatchNormalizer, eval_transforms, resize_transform, train_transforms
from dycl.distributed import DistInfo
from dycl.embed import autocast_dtype, shard_rows
from dycl.losses import batch_levels, build_loss
from dycl.models import DeterministicMaxPool2d, build_model, deterministic_max_pools
from dycl.train import SeededAugmentation, TrainConfig, Trainer, validate_config
from dycl.train.meter import EpochMeter

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def tiny_config(campus, tmp_path, **overrides) -> TrainConfig:
    values = {"data_dir": str(campus), "output": str(tmp_path / "run"), "backbone": "resnet18",
              "pretrained": False, "image_size": 32, "embedding_dim": 16, "batch_size": 8,
              "thresholds": (100.0, 200.0), "workers": 0, "progress": False, "epochs": 2}
    return validate_config(TrainConfig(**{**values, **overrides}))


def tiny_trainer(campus, tmp_path, **overrides) -> Trainer:
    config = tiny_config(campus, tmp_path, **overrides)
    train, test = open_train_test(config.data_dir, config.dataset_format)
    return Trainer(config, train, test, CPU)


# --------------------------------------------------------------------------- fix 1: the loader


def test_uint8_batches_normalised_on_the_device_equal_the_float_transforms():
    image = torch.randint(0, 256, (3, 45, 61), dtype=torch.uint8)
    normalize = BatchNormalizer("cpu")
    for view, rotation in (("satellite", "quarter"), ("satellite", "any"), ("drone", "quarter")):
        for seed in range(4):
            torch.manual_seed(seed)
            before = train_transforms(view, 32, rotation=rotation)(image)
            torch.manual_seed(seed)
            prepared = resize_transform(32)(image) if view == "satellite" else image
            raw = train_transforms(view, 32, rotation=rotation, normalize=False,
                                   resize=view == "drone")(prepared)
            assert raw.dtype == torch.uint8
            batch = torch.stack([raw, raw]).contiguous(memory_format=torch.channels_last)
            after = normalize(batch)
            assert after.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(after[1], before), (view, rotation, seed)  # bit for bit
    assert torch.equal(normalize(eval_transforms(32, normalize=False)(image)[None])[0],
                       eval_transforms(32)(image))
    with pytest.raises(ValueError, match="uint8"):
        normalize(torch.zeros(1, 3, 4, 4))


def test_cached_satellite_tiles_are_decoded_once_and_give_the_same_items(campus, monkeypatch):
    train, _ = open_train_test(str(campus))
    calls = []
    real = datasets_module.load_image
    monkeypatch.setattr(datasets_module, "load_image", lambda path: calls.append(str(path)) or real(path))
    before = SeededAugmentation(PairDataset(
        train, satellite_transform=train_transforms("satellite", 24),
        drone_transform=train_transforms("drone", 24),
    ), seed=5)
    after = SeededAugmentation(PairDataset(
        train, satellite_transform=train_transforms("satellite", 24, normalize=False, resize=False),
        drone_transform=train_transforms("drone", 24, normalize=False),
        satellite_prepare=resize_transform(24),
    ), seed=5)
    normalize = BatchNormalizer("cpu")
    for epoch in (0, 1):
        for i in range(len(before)):
            a, b = before[(epoch, i)], after[(epoch, i)]
            assert torch.equal(a.satellite, normalize(b.satellite[None])[0])
            assert torch.equal(a.drone, normalize(b.drone[None])[0]) and a.building == b.building
    satellite_reads = [p for p in calls if "/satellite/" in p]
    pairs = len(before)
    assert len(satellite_reads) == 2 * pairs + train.num_buildings  # uncached: every pair; cached: once each


def test_persistent_workers_still_draw_each_epoch_afresh(campus, tmp_path):
    in_process = tiny_trainer(campus, tmp_path / "a", workers=0)
    pooled = tiny_trainer(campus, tmp_path / "b", workers=1)
    try:
        loader = pooled.epoch_loader(0)
        assert loader.persistent_workers and pooled.epoch_loader(1) is loader  # one loader, workers kept
        firsts = []
        for epoch in (0, 1, 0):
            a = next(iter(in_process.epoch_loader(epoch)))
            b = next(iter(pooled.epoch_loader(epoch)))
            assert a[0].dtype == torch.uint8 and a[0].shape == (8, 3, 32, 32)
            for x, y in zip(a[:3], b[:3], strict=True):
                assert torch.equal(x, y), epoch  # the epoch reaches the persistent worker
            firsts.append(b[1])
        assert not torch.equal(firsts[0], firsts[1]) and torch.equal(firsts[0], firsts[2])
    finally:
        pooled.close()


def test_default_workers_share_the_cpus_of_the_node(monkeypatch):
    assert loading.default_workers(processes=1, cpus=16) == 15
    assert loading.default_workers(processes=8, cpus=128) == 15
    assert loading.default_workers(processes=4, cpus=4) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert loading.default_workers(cpus=16) == 7
    monkeypatch.setattr(loading, "available_cpus", lambda: 32)
    assert validate_config(TrainConfig(data_dir="d", output="o")).workers == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="LOCAL_WORLD_SIZE"):
        loading.local_world_size()


def test_a_small_dev_shm_is_a_one_line_error_at_the_start(campus, tmp_path, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(loading.shutil, "disk_usage", lambda path: Usage(64 << 20, 0, 64 << 20))
    monkeypatch.setattr(loading.os.path, "isdir", lambda path: True)
    needed = 2 * 4 * 2 * loading.batch_bytes(64, 256)  # 2 processes, 4 workers, 2 batches in flight
    with pytest.raises(ValueError, match=r"^workers: /dev/shm has 64 MiB free, but 2 process\(es\) × 4 "):
        loading.check_shared_memory(4, loading.batch_bytes(64, 256), processes=2)
    assert needed == 2 * 4 * 2 * 64 * 2 * 3 * 256 * 256
    assert loading.check_shared_memory(0, 1 << 40) == 0  # no workers: nothing to check
    monkeypatch.setattr(loading.shutil, "disk_usage", lambda path: Usage(1 << 20, 0, 1 << 10))
    with pytest.raises(ValueError, match="--shm-size"):
        tiny_trainer(campus, tmp_path, workers=2)  # before any model is built
    monkeypatch.setattr(loading.os.path, "isdir", lambda path: False)
    tiny_trainer(campus, tmp_path / "no-shm", workers=2).close()  # not Linux: nothing to check


# --------------------------------------------------------------------------- fix 2: geo batches


def _world(buildings=40, views=6, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1500, size=(buildings, 2))
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    levels = np.where(dist <= 200, 2, np.where(dist <= 500, 1, 0)).astype(np.uint8)
    np.fill_diagonal(levels, 3)
    return np.repeat(np.arange(buildings), views), levels


@pytest.mark.parametrize("world_size", [2, 4])
def test_geo_global_batches_do_not_depend_on_the_number_of_processes(world_size):
    pair_buildings, levels = _world()
    single = GeoPairBatchSampler(pair_buildings, levels, 32, seed=4)
    ranks = [GeoPairBatchSampler(pair_buildings, levels, 32 // world_size, seed=4, rank=r,
                                 world_size=world_size) for r in range(world_size)]
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for sampler in ranks:
            sampler.set_epoch(epoch)
        shards = [list(sampler) for sampler in ranks]
        assert all(len(b) == 32 // world_size for shard in shards for b in shard)
        joined = [np.concatenate(step) for step in zip(*shards, strict=True)]
        assert [b.tolist() for b in joined] == list(single)
        assert in_batch_positives(joined, pair_buildings, levels) == in_batch_positives(
            single, pair_buildings, levels)


# --------------------------------------------------------------------------- fixes 4 and 5: precision


def test_bf16_only_where_it_is_native(monkeypatch):
    asked = []

    def emulating(including_emulation=True):  # a V100 / T4: bf16 only emulated
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulating)
    assert autocast_dtype("cuda") is torch.float16 and asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert autocast_dtype("cuda") is torch.bfloat16
    assert autocast_dtype("cuda", amp=False) is None and autocast_dtype("cpu") is None

    def old_torch():  # no including_emulation keyword: the compute capability decides
        return True

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", old_torch)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert autocast_dtype("cuda") is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert autocast_dtype("cuda") is torch.bfloat16


def test_the_embedding_head_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = build_model("resnet18", embedding_dim=32, pretrained=False).eval()
    images = torch.randn(6, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        trunk = model.trunk(images)
        head = model.head(trunk)
        full = model(images)
    assert trunk.dtype == torch.bfloat16 and head.dtype == torch.float32
    with torch.no_grad():
        reference = model.head(trunk)  # the same backbone output, no autocast at all
    torch.testing.assert_close(head, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(full, head, rtol=0, atol=1e-6)
    # What the head in bf16 would have given: errors far above float32 rounding.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = model.standardize(trunk.flatten(2).mean(2))
        bf16_head = nn.functional.normalize(model.fc(pooled).float(), dim=1)
    assert (bf16_head - reference).abs().max() > 1e-4
    with torch.no_grad():  # float32 throughout: head(trunk(x)) is the network
        assert torch.equal(model.head(model.trunk(images)), model(images))


# --------------------------------------------------------------------------- fix 6: no syncs per step


def test_value_checks_can_leave_the_loss(campus):
    loss = build_loss(num_buildings=6, embedding_dim=16, levels=3)
    table = torch.randint(0, 3, (6, 6))
    table.fill_diagonal_(3)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    emb = nn.functional.normalize(torch.randn(8, 16), dim=1)
    levels = batch_levels(table, labels, labels)
    with SyncCounter() as checked:
        loss(emb, emb, levels, labels, labels)
    loss.set_value_checks(False)
    with SyncCounter() as unchecked:
        loss(emb, emb, levels, labels, labels)
    assert checked.total > 0 and unchecked.total == 0, (checked.ops, unchecked.ops)
    loss.set_value_checks(True)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 3\]"):
        loss(emb, emb, levels + 1, labels, labels)


def test_a_training_step_never_waits_for_the_device(campus, tmp_path):
    trainer = tiny_trainer(campus, tmp_path)
    batch = next(iter(trainer.epoch_loader(0)))
    trainer.train_step(batch)  # the optimisers' lazy state is created outside the count
    with SyncCounter() as syncs:
        trainer.train_step(batch)
    assert syncs.total == 0, syncs.ops


def test_the_epoch_loop_reads_the_device_once_not_per_step(campus, tmp_path):
    counts = []
    for steps in (1, 3):
        trainer = tiny_trainer(campus, tmp_path / str(steps), workers=1, max_steps_per_epoch=steps)
        try:  # the images are decoded in the worker process, outside the count
            with SyncCounter() as syncs:
                stats = trainer.train_epoch(0)
        finally:
            trainer.close()
        assert stats.steps == steps and np.isfinite(stats.loss)
        counts.append(syncs.total)
    assert counts[0] == counts[1], counts


def test_the_epoch_meter_keeps_the_running_sums():
    meter = EpochMeter(4, torch.device("cpu"))
    values = [0.1, 0.7, 1e-3, 2.5]
    with SyncCounter() as syncs:
        for v in values:
            meter.add(torch.tensor(v), {"a": torch.tensor(2 * v)})
    assert syncs.total == 0
    record = meter.finish()
    running = torch.zeros((), dtype=torch.float64)
    for v in values:
        running += torch.tensor(v).double()
    assert record.mean_loss == float(running) / 4 and record.steps == 4
    assert record.losses == [float(torch.tensor(v)) for v in values]
    assert record.mean_terms()["a"] == pytest.approx(2 * float(running) / 4)
    with pytest.raises(ValueError, match="more than 4 steps"):
        meter.add(torch.tensor(1.0), {})


# --------------------------------------------------------------------------- fix 7: shards


def test_shards_cover_the_rows_in_order():
    for count in (0, 1, 5, 6, 7, 300):
        for world in (1, 2, 3, 8):
            rows = [list(shard_rows(count, r, world)) for r in range(world)]
            assert sum(rows, []) == list(range(count))
            assert max(map(len, rows)) - min(map(len, rows)) <= 1
    with pytest.raises(ValueError, match="rank"):
        shard_rows(4, 2, 2)


# --------------------------------------------------------------------------- fix 8: determinism


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_deterministic_max_pool_equals_max_pool(channels_last):
    x = torch.randint(0, 3, (2, 4, 17, 14)).float()  # many ties
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    reference, ours = nn.MaxPool2d(3, 2, 1), DeterministicMaxPool2d(3, 2, 1)
    out_a, out_b = reference(a), ours(b)
    assert torch.equal(out_a, out_b)
    grad = torch.randn_like(out_a)
    out_a.backward(grad)
    out_b.backward(grad)
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-6)
    assert b.grad.is_contiguous(memory_format=torch.channels_last) == channels_last
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_the_deterministic_switch(campus, tmp_path):
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        plain_model = tiny_trainer(campus, tmp_path / "plain").model
        assert not any(isinstance(m, DeterministicMaxPool2d) for m in plain_model.modules())
        trainer = tiny_trainer(campus, tmp_path / "det", deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.deterministic
        assert isinstance(trainer.model.backbone[3], DeterministicMaxPool2d)
        assert trainer.model.state_dict().keys() == plain_model.state_dict().keys()
        batch = next(iter(trainer.epoch_loader(0)))
        assert np.isfinite(float(trainer.train_step(batch)))
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
    assert deterministic_max_pools(nn.Sequential(nn.Conv2d(1, 1, 1))) == 0
    assert dataclasses.replace(tiny_config(campus, tmp_path), deterministic=True).deterministic
