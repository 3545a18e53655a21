"""What the batch samplers share: epochs, rank sharding, caching and state.

The batches of an epoch are a pure function of (seed, epoch, configuration):
every rank computes the same global schedule (:meth:`EpochBatchSampler._global_batches`)
and takes its own share (see :mod:`dycl.data.samplers`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from .._validate import int_at_least


class EpochBatchSampler(Sampler[list[int]]):
    """Shared machinery: epoch handling, rank sharding, caching and state."""

    kind = ""

    def __init__(self, num_pairs: int, batch_size: int, seed: int, rank: int, world_size: int):
        self.num_pairs = int_at_least("num_pairs", num_pairs, 1)
        self.batch_size = int_at_least("batch_size", batch_size, 1)
        self.seed = int_at_least("seed", seed, 0)
        self.world_size = int_at_least("world_size", world_size, 1)
        self.rank = int_at_least("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank: must be < world_size ({self.world_size}), got {rank}")
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    # subclasses: the global schedule, a list of rank-batch groups (one list of world_size batches each)
    def _global_batches(self, epoch: int) -> list[list[np.ndarray]]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = int_at_least("epoch", epoch, 0)

    def global_batches(self, epoch: int | None = None) -> list[list[np.ndarray]]:
        """Every rank's batches of an epoch: ``[step][rank] -> pair indices``."""
        return self._global_batches(self.epoch if epoch is None else int_at_least("epoch", epoch, 0))

    def _batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            steps = self._global_batches(self.epoch)
            self._cache = (self.epoch, [step[self.rank].tolist() for step in steps])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())

    def _config(self) -> dict:
        return {
            "kind": self.kind,
            "seed": self.seed,
            "num_pairs": self.num_pairs,
            "batch_size": self.batch_size,
        }

    def state_dict(self) -> dict:
        """Configuration and epoch; with the same dataset, :meth:`load_state_dict` restores the schedule."""
        return {**self._config(), "epoch": self.epoch, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        """Restore the epoch after checking that the configuration matches (rank/world size may change)."""
        if not isinstance(state, dict):
            raise ValueError(f"state: expected a dict from state_dict(), got {type(state).__name__}")
        for key, value in self._config().items():
            if state.get(key) != value:
                raise ValueError(
                    f"state: {key} is {state.get(key)!r} in the saved state but {value!r} here; "
                    "the sampler would not reproduce the saved run"
                )
        self.set_epoch(state.get("epoch", 0))
