"""Batch samplers over training pairs: ``random`` and ``geo``, both DDP-aware.

A sampler yields lists of pair indices (pair ``i`` = drone image ``i`` and its
building's satellite tile); use it as ``DataLoader(..., batch_sampler=s)``
and call ``s.set_epoch(epoch)`` before each epoch. The batches of an epoch are
a pure function of (seed, epoch, configuration): every rank computes the same
global schedule and takes its own share, so shards are disjoint, all ranks
get the same number of batches, and a run resumed at an epoch boundary sees
exactly the batches an uninterrupted run would.

``random`` (the authors' sampling): shuffled pairs, every pair once per
epoch. ``geo``: batches assembled from geographic neighbourhoods so that
every anchor has in-batch positives at every scale and pure negatives (see
:class:`GeoPairBatchSampler`).

* :mod:`.epoch_sampler` — :class:`EpochBatchSampler`, epochs, rank shards and state for both;
* :mod:`.random_sampler` — :class:`RandomPairBatchSampler`;
* :mod:`.geo_sampler` — :class:`GeoPairBatchSampler` and its batch builder;
* here — :func:`make_batch_sampler` and :func:`in_batch_positives` (what anchors find in their batch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..geo import DEFAULT_THRESHOLDS
from .epoch_sampler import EpochBatchSampler
from .geo_sampler import GeoPairBatchSampler
from .random_sampler import RandomPairBatchSampler
from .splits import Split

__all__ = [
    "EpochBatchSampler",
    "GeoPairBatchSampler",
    "RandomPairBatchSampler",
    "in_batch_positives",
    "make_batch_sampler",
]


def make_batch_sampler(
    kind: str,
    split: Split,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    **options,
) -> EpochBatchSampler:
    """A batch sampler over ``split``'s pairs: ``kind`` is ``"random"`` or ``"geo"``.

    ``options`` go to the sampler (``drop_last`` for random;
    ``pairs_per_building``, ``blocks_per_batch`` for geo).
    """
    if kind == "random":
        return RandomPairBatchSampler(split.num_pairs, batch_size, seed, rank, world_size, **options)
    if kind == "geo":
        return GeoPairBatchSampler(
            split.drone_buildings, split.levels(thresholds), batch_size, seed, rank, world_size, **options
        )
    raise ValueError(f"kind: expected 'random' or 'geo', got {kind!r}")


def in_batch_positives(
    batches: Iterable[Sequence[int]] | EpochBatchSampler, pair_buildings: np.ndarray, levels: np.ndarray
) -> dict:
    """What each anchor finds in its batch, averaged over the anchors of one epoch.

    For anchor pair ``i`` the references are the other pairs ``j != i`` of its
    batch (their satellite tiles), at level ``levels[b_i, b_j]``.

    Returns:
        ``{"anchors": n, "levels": L, "mean_at_level": [L+1 means, level 0..L],
        "share_at_level": [L+1 shares of anchors with at least one],
        "mean_positives": [L means, scale s: references at level >= L - s],
        "mean_negatives": mean pure negatives (level 0),
        "coverage": share of anchors having every level 0..L-1 that exists for their building}``.
    """
    pair_buildings = np.asarray(pair_buildings, dtype=np.int64)
    levels = np.asarray(levels)
    top = int(levels.max())
    active = np.zeros(levels.shape[0], dtype=bool)
    active[np.unique(pair_buildings)] = True
    has_level = np.stack([((levels == lv) & active[None, :]).any(axis=1) for lv in range(top)], axis=1)
    counts_sum = np.zeros(top + 1)
    present_sum = np.zeros(top + 1)
    covered = 0
    anchors = 0
    for batch in batches:
        b = pair_buildings[np.asarray(batch, dtype=np.int64)]
        if len(b) == 0:
            continue
        lv = levels[np.ix_(b, b)].astype(np.int64)
        counts = np.stack([(lv == level).sum(axis=1) for level in range(top + 1)], axis=1)
        counts[:, top] -= 1  # the anchor's own pair
        counts_sum += counts.sum(axis=0)
        present_sum += (counts > 0).sum(axis=0)
        covered += int(((counts[:, :top] > 0) | ~has_level[b]).all(axis=1).sum())
        anchors += len(b)
    if anchors == 0:
        raise ValueError("batches: no anchors")
    mean_at_level = counts_sum / anchors
    return {
        "anchors": anchors,
        "levels": top,
        "mean_at_level": mean_at_level.tolist(),
        "share_at_level": (present_sum / anchors).tolist(),
        "mean_positives": [float(mean_at_level[top - s :].sum()) for s in range(top)],
        "mean_negatives": float(mean_at_level[0]),
        "coverage": covered / anchors,
    }
