"""Batch samplers: coverage of the epoch, DDP shards, determinism/resume, in-batch positives per scale."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from dycl.data.samplers import GeoPairBatchSampler, RandomPairBatchSampler, in_batch_positives
from dycl.data.synth import campus_layout
from dycl.geo import level_matrix


@pytest.fixture(scope="module")
def world():
    """Pairs of a 90-building synthetic layout (no images needed): 5 drone views per building."""
    layout = campus_layout(90, 10, seed=4)
    levels = level_matrix(layout.coords("train"))
    pair_buildings = np.repeat(np.arange(len(levels)), 5)
    return pair_buildings, levels


def _flat(batches) -> list[int]:
    return [int(i) for batch in batches for i in batch]


# --------------------------------------------------------------------------- random


@pytest.mark.parametrize("num_pairs,batch_size", [(450, 32), (450, 450), (7, 3), (1, 4)])
def test_random_every_pair_once_per_epoch(num_pairs, batch_size):
    sampler = RandomPairBatchSampler(num_pairs, batch_size, seed=5)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(_flat(batches)) == list(range(num_pairs))
        assert len(batches) == len(sampler) == -(-num_pairs // batch_size)
        assert all(len(b) == batch_size for b in batches[:-1])
    sampler.set_epoch(0)
    first = _flat(sampler)
    sampler.set_epoch(1)
    assert num_pairs < 3 or _flat(sampler) != first  # a new order each epoch


def test_random_drop_last():
    sampler = RandomPairBatchSampler(100, 32, seed=0, drop_last=True)
    batches = list(sampler)
    assert len(batches) == 3 and all(len(b) == 32 for b in batches)
    assert len(set(_flat(batches))) == 96


@pytest.mark.parametrize(
    "world_size,num_pairs,batch_size", [(2, 450, 32), (3, 450, 32), (4, 10, 4), (3, 2, 4)]
)
def test_random_ddp_shards_are_disjoint_and_cover_the_epoch(world_size, num_pairs, batch_size):
    shards = []
    for rank in range(world_size):
        sampler = RandomPairBatchSampler(num_pairs, batch_size, seed=9, rank=rank, world_size=world_size)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    assert len({len(s) for s in shards}) == 1  # same number of batches on every rank
    flat = [_flat(s) for s in shards]
    union = set().union(*map(set, flat))
    assert union == set(range(num_pairs))
    if num_pairs >= world_size:
        for a, b in itertools.combinations(flat, 2):
            assert not set(a) & set(b)
        assert sum(map(len, flat)) == num_pairs
    for step in zip(*shards, strict=True):  # batch sizes per step differ by at most one
        assert max(map(len, step)) - min(map(len, step)) <= 1 and min(map(len, step)) >= 1


def test_random_order_is_a_function_of_seed_and_epoch_and_resumes():
    a = RandomPairBatchSampler(300, 16, seed=1)
    a.set_epoch(4)
    state = a.state_dict()
    b = RandomPairBatchSampler(300, 16, seed=1)
    b.load_state_dict(state)
    assert b.epoch == 4 and list(a) == list(b)
    c = RandomPairBatchSampler(300, 16, seed=2)
    c.set_epoch(4)
    assert list(c) != list(a)
    with pytest.raises(ValueError, match="seed"):
        c.load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        RandomPairBatchSampler(300, 8, seed=1).load_state_dict(state)


def test_random_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        RandomPairBatchSampler(10, 0)
    with pytest.raises(ValueError, match="rank"):
        RandomPairBatchSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="num_pairs"):
        RandomPairBatchSampler(0, 2)
    with pytest.raises(ValueError, match="epoch"):
        RandomPairBatchSampler(10, 2).set_epoch(-1)


# --------------------------------------------------------------------------- geo


def test_geo_every_anchor_has_positives_at_every_scale_and_negatives(world):
    pair_buildings, levels = world
    sampler = GeoPairBatchSampler(pair_buildings, levels, batch_size=32, seed=3)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert all(len(b) == 32 for b in batches)
        assert all(len(set(b)) == len(b) for b in batches)  # no pair twice in a batch
        for batch in batches:
            b = pair_buildings[batch]
            lv = levels[np.ix_(b, b)]
            for row, anchor in zip(lv, b, strict=True):
                for level in range(3):
                    exists = ((levels[anchor] == level) & (np.arange(len(levels)) != anchor)).any()
                    assert not exists or (row == level).any(), (anchor, level)
        stats = in_batch_positives(batches, pair_buildings, levels)
        assert stats["coverage"] == 1.0
        assert stats["share_at_level"][0] == 1.0  # pure negatives for everybody


def test_geo_epoch_length_is_fixed_and_nearly_every_pair_is_used(world):
    pair_buildings, levels = world
    sampler = GeoPairBatchSampler(pair_buildings, levels, batch_size=32, seed=3)
    lengths = set()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        counts = Counter(_flat(sampler))
        lengths.add(len(sampler))
        summary = sampler.epoch_summary()
        assert summary["pairs"] == sum(counts.values()) == len(sampler) * 32
        assert summary["unused"] == len(pair_buildings) - len(counts)
        assert summary["repeats"] == sum(counts.values()) - len(counts)
        assert summary["unused"] <= 0.05 * len(pair_buildings)
        assert max(counts.values()) <= 2
    assert lengths == {-(-len(pair_buildings) // 32)}


def test_geo_has_more_in_batch_positives_than_random(world):
    pair_buildings, levels = world
    geo = in_batch_positives(GeoPairBatchSampler(pair_buildings, levels, 32, seed=1), pair_buildings, levels)
    rnd = in_batch_positives(RandomPairBatchSampler(len(pair_buildings), 32, seed=1), pair_buildings, levels)
    assert geo["mean_positives"][1] > 1.5 * rnd["mean_positives"][1]
    assert geo["mean_at_level"][1] > rnd["mean_at_level"][1]
    assert geo["coverage"] > rnd["coverage"]


@pytest.mark.parametrize("world_size", [2, 3])
def test_geo_ddp_shards(world, world_size):
    pair_buildings, levels = world
    shards = []
    for rank in range(world_size):
        sampler = GeoPairBatchSampler(pair_buildings, levels, 16, seed=8, rank=rank, world_size=world_size)
        sampler.set_epoch(1)
        shards.append(list(sampler))
    assert len({len(s) for s in shards}) == 1
    flat = [_flat(s) for s in shards]
    summary = sampler.epoch_summary(1)
    assert len(set().union(*map(set, flat))) == len(pair_buildings) - summary["unused"]
    overlap = sum(len(set(a) & set(b)) for a, b in itertools.combinations(flat, 2))
    assert overlap <= summary["repeats"]  # shards share only pairs the epoch had to repeat
    assert summary["batches"] == len(shards[0])


def test_geo_order_is_a_function_of_seed_and_epoch_and_resumes(world):
    pair_buildings, levels = world
    a = GeoPairBatchSampler(pair_buildings, levels, 24, seed=6)
    a.set_epoch(3)
    b = GeoPairBatchSampler(pair_buildings, levels, 24, seed=6)
    b.load_state_dict(a.state_dict())
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    with pytest.raises(ValueError, match="pairs_per_building"):
        GeoPairBatchSampler(pair_buildings, levels, 24, seed=6, pairs_per_building=3).load_state_dict(
            a.state_dict()
        )
    with pytest.raises(ValueError, match="kind"):
        RandomPairBatchSampler(len(pair_buildings), 24, seed=6).load_state_dict(a.state_dict())


def test_geo_edge_cases():
    # one building with fewer pairs than a batch: one batch of all its pairs
    one = GeoPairBatchSampler(np.zeros(3, dtype=np.int64), np.full((1, 1), 3, dtype=np.uint8), 4)
    assert [sorted(b) for b in one] == [[0, 1, 2]]
    # two buildings far apart, a building without pairs
    levels = np.array([[3, 0, 0], [0, 3, 2], [0, 2, 3]], dtype=np.uint8)
    sampler = GeoPairBatchSampler(np.array([0, 0, 1, 1]), levels, 2)
    assert set(_flat(sampler)) == {0, 1, 2, 3}
    stats = in_batch_positives(sampler, np.array([0, 0, 1, 1]), levels)
    assert stats["coverage"] == 1.0  # building 2 has no pairs, so nobody needs a level-2 partner
    with pytest.raises(ValueError, match="levels"):
        GeoPairBatchSampler(np.array([0]), np.array([[1, 0]]), 2)
    with pytest.raises(ValueError, match="pair_buildings"):
        GeoPairBatchSampler(np.array([0, 5]), levels, 2)
    with pytest.raises(ValueError, match="diagonal"):
        GeoPairBatchSampler(np.array([0, 1]), np.array([[3, 0], [0, 2]]), 2)


# --------------------------------------------------------------------------- in-batch statistics


def _reference_positives(batches, pair_buildings, levels):
    """Obvious loops over anchors and references (DESIGN §3 scales)."""
    top = int(levels.max())
    per_level = np.zeros(top + 1)
    present = np.zeros(top + 1)
    anchors = 0
    covered = 0
    for batch in batches:
        for i in batch:
            anchors += 1
            seen = Counter(int(levels[pair_buildings[i], pair_buildings[j]]) for j in batch if j != i)
            for level in range(top + 1):
                per_level[level] += seen[level]
                present[level] += seen[level] > 0
            needed = {
                int(levels[pair_buildings[i], b])
                for b in set(pair_buildings.tolist())
                if b != pair_buildings[i]
            }
            covered += all(seen[level] > 0 for level in needed if level < top)
    mean = per_level / anchors
    return mean, present / anchors, [mean[top - s :].sum() for s in range(top)], covered / anchors


def test_in_batch_positives_matches_reference(world):
    pair_buildings, levels = world
    rng = np.random.default_rng(0)
    batches = [
        rng.choice(len(pair_buildings), size=int(rng.integers(1, 30)), replace=False) for _ in range(12)
    ]
    got = in_batch_positives(batches, pair_buildings, levels)
    mean, share, positives, coverage = _reference_positives(batches, pair_buildings, levels)
    np.testing.assert_allclose(got["mean_at_level"], mean)
    np.testing.assert_allclose(got["share_at_level"], share)
    np.testing.assert_allclose(got["mean_positives"], positives)
    assert got["coverage"] == pytest.approx(coverage)
    assert got["anchors"] == sum(map(len, batches))
    with pytest.raises(ValueError, match="anchors"):
        in_batch_positives([], pair_buildings, levels)
