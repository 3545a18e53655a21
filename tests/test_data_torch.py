"""Torch side of the data layer: datasets, image decoding errors, transforms, loader seeding."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dycl.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptImageError,
    DatasetError,
    ImageSet,
    PairDataset,
    drone_set,
    eval_transforms,
    load_image,
    loader_generator,
    make_batch_sampler,
    read_dacampus,
    satellite_set,
    seed_worker,
    train_transforms,
)
from dycl.data.synth import generate_campus
from dycl.data.transforms import RandomQuarterTurn


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("torchset")
    generate_campus(
        path,
        train_buildings=6,
        test_buildings=4,
        drone_views=3,
        image_size=48,
        seed=1,
        workers=1,
        progress=False,
    )
    return path


def test_pair_dataset_items_and_collation(root):
    split = read_dacampus(root, "train")
    dataset = PairDataset(split, train_transforms("satellite", 32), train_transforms("drone", 32))
    assert len(dataset) == split.num_pairs == 18
    item = dataset[7]
    assert item.satellite.shape == item.drone.shape == (3, 32, 32)
    assert item.satellite.dtype == torch.float32
    assert item.building == int(split.drone_buildings[7])
    assert torch.equal(item.coords, torch.tensor(split.coords[item.building], dtype=torch.float64))
    with pytest.raises(IndexError):
        dataset[18]
    sampler = make_batch_sampler("geo", split, batch_size=6, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    seen = []
    for batch in loader:
        assert batch.satellite.shape == (6, 3, 32, 32) and batch.drone.shape == (6, 3, 32, 32)
        assert batch.building.dtype == torch.int64 and batch.coords.shape == (6, 2)
        seen.extend(batch.building.tolist())
    assert set(seen) == set(range(6))


def test_pair_without_transform_returns_the_raw_images(root):
    split = read_dacampus(root, "train")
    pair = PairDataset(split)[4]
    building = int(split.drone_buildings[4])
    assert pair.satellite.dtype == torch.uint8 and pair.satellite.shape == (3, 48, 48)
    assert torch.equal(pair.satellite, load_image(split.satellite_paths[building]))
    assert torch.equal(pair.drone, load_image(split.drone_paths[4]))


def test_evaluation_sets(root):
    split = read_dacampus(root, "test")
    sats = satellite_set(split, eval_transforms(40))
    drones = drone_set(split, eval_transforms(40))
    assert len(sats) == 4 and len(drones) == 12
    image, building = sats[2]
    assert image.shape == (3, 40, 40) and building == 2
    assert [drones[i][1] for i in range(len(drones))] == split.drone_buildings.tolist()
    with pytest.raises(ValueError, match="buildings"):
        ImageSet(split.satellite_paths, [0, 1])


def test_corrupt_and_missing_images_name_their_path(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    split = read_dacampus(copy, "train")
    victim = split.drone_paths[5]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    dataset = PairDataset(split)
    with pytest.raises(CorruptImageError) as info:
        dataset[5]
    assert str(victim) in str(info.value) and isinstance(info.value, ValueError)
    garbage = split.satellite_paths[0]
    garbage.write_bytes(b"not an image" * 20)
    with pytest.raises(CorruptImageError, match=str(garbage)):
        load_image(garbage)
    # errors in DataLoader workers reach the caller with the path in the message
    loader = DataLoader(dataset, batch_size=4, num_workers=1)
    with pytest.raises(Exception, match=str(garbage.name)):
        list(loader)
    victim.unlink()
    with pytest.raises(DatasetError, match="does not exist"):
        load_image(victim)


def test_other_formats_decode(tmp_path):
    from PIL import Image

    array = np.random.default_rng(0).integers(0, 255, size=(9, 11, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.bmp")
    image = load_image(tmp_path / "x.bmp")
    assert image.shape == (3, 9, 11) and torch.equal(image, torch.from_numpy(array).permute(2, 0, 1))


def test_transforms_shapes_and_normalisation():
    image = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8)
    for view in ("satellite", "drone"):
        out = train_transforms(view, 24)(image)
        assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    out = eval_transforms(24)(image)
    assert out.shape == (3, 24, 24)
    # a uniform image of the ImageNet mean normalises to zero; evaluation is deterministic
    mean_image = torch.stack([torch.full((20, 20), round(255 * m), dtype=torch.uint8) for m in IMAGENET_MEAN])
    assert eval_transforms(16)(mean_image).abs().max() < 0.01
    assert torch.equal(eval_transforms(16)(image), eval_transforms(16)(image))
    white = torch.full((3, 8, 8), 255, dtype=torch.uint8)
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    torch.testing.assert_close(eval_transforms(8)(white)[:, 0, 0], expected)
    with pytest.raises(ValueError, match="view"):
        train_transforms("ground")
    with pytest.raises(ValueError, match="rotation"):
        train_transforms("satellite", rotation="sometimes")
    with pytest.raises(ValueError, match="image_size"):
        eval_transforms(0)


def test_satellite_rotation_is_an_exact_quarter_turn_and_drone_is_not_rotated():
    image = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(3, 8, 8)
    variants = {
        tuple(torch.rot90(f, k, dims=(-2, -1)).flatten().tolist())
        for f in (image, image.flip(-1))
        for k in range(4)
    }
    turn = RandomQuarterTurn()
    outs = set()
    torch.manual_seed(0)
    for _ in range(200):
        out = train_transforms("satellite", 8)(image)
        restored = (
            out * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
        )
        key = tuple(torch.round(restored * 255).to(torch.uint8).flatten().tolist())
        assert key in variants
        outs.add(key)
        assert tuple(turn(image).flatten().tolist()) in variants
    assert len(outs) == 8  # all eight orientations occur
    drone_outs = set()
    for _ in range(20):
        out = train_transforms("drone", 8)(image)
        restored = (
            out * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
        )
        drone_outs.add(tuple(torch.round(restored * 255).to(torch.uint8).flatten().tolist()))
    assert drone_outs == {tuple(image.flatten().tolist()), tuple(image.flip(-1).flatten().tolist())}
    any_angle = train_transforms("satellite", 8, rotation="any")(image)
    assert any_angle.shape == (3, 8, 8)


def test_loader_seeding_is_reproducible(root):
    split = read_dacampus(root, "train")
    dataset = PairDataset(split, train_transforms("satellite", 16), train_transforms("drone", 16))

    def run(epoch: int) -> torch.Tensor:
        sampler = make_batch_sampler("random", split, batch_size=6, seed=2)
        sampler.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=1,
            worker_init_fn=seed_worker,
            generator=loader_generator(2, epoch),
        )
        return torch.cat([b.satellite for b in loader])

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    assert loader_generator(1, 2, 0).initial_seed() == loader_generator(1, 2, 0).initial_seed()
    assert loader_generator(1, 2, 0).initial_seed() != loader_generator(1, 2, 1).initial_seed()
    with pytest.raises(ValueError, match="epoch"):
        loader_generator(1, -1)
