"""``random`` batches (the authors' sampling): shuffled pairs, every pair once per epoch."""

from __future__ import annotations

import numpy as np

from .epoch_sampler import EpochBatchSampler

_TAG_RANDOM = 0x52414E44


class RandomPairBatchSampler(EpochBatchSampler):
    """Shuffled pairs (the authors' sampling): each pair once per epoch.

    The epoch's permutation is cut into global batches of ``batch_size *
    world_size`` pairs; rank ``r`` takes the ``r``-th slice of each. The last,
    shorter global batch is dropped with ``drop_last``; otherwise it is split
    evenly over the ranks (padded with the epoch's first pairs only if it
    holds fewer pairs than there are ranks).
    """

    kind = "random"

    def __init__(
        self,
        num_pairs: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        super().__init__(num_pairs, batch_size, seed, rank, world_size)
        self.drop_last = bool(drop_last)

    def _config(self) -> dict:
        return {**super()._config(), "drop_last": self.drop_last}

    def _global_batches(self, epoch: int) -> list[list[np.ndarray]]:
        perm = np.random.default_rng([self.seed, epoch, _TAG_RANDOM]).permutation(self.num_pairs)
        step = self.batch_size * self.world_size
        steps = []
        for start in range(0, self.num_pairs, step):
            chunk = perm[start : start + step]
            if len(chunk) == step:
                steps.append(
                    [chunk[r * self.batch_size : (r + 1) * self.batch_size] for r in range(self.world_size)]
                )
            elif not self.drop_last:
                if len(chunk) < self.world_size:
                    chunk = np.concatenate([chunk, perm[: self.world_size - len(chunk)]])
                steps.append(list(np.array_split(chunk, self.world_size)))
        return steps
