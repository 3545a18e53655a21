"""The training data of a run: batches, augmentation, the persistent loader, batches on the device.

* Batches are a function of ``(seed, epoch)`` (the batch sampler); the
  augmentation of pair ``i`` in epoch ``e`` is drawn from a generator seeded
  with ``(seed, e, i)`` (:class:`SeededAugmentation`), independently of
  workers and ranks. The epoch travels with every index
  (:class:`EpochBatches`), so the loader's workers can persist across epochs
  and still augment each epoch afresh.
* Workers decode, resize (satellite tiles once per worker, see
  :class:`~dycl.data.datasets.PairDataset`) and augment, and hand over uint8
  batches; :class:`TrainData` moves them to the device, converts them to
  ``channels_last`` there on CUDA and normalises them (bit for bit what the
  per-image float32 transforms gave).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import make_batch_sampler
from ..data.datasets import PairDataset
from ..data.loading import batch_bytes, check_shared_memory, local_world_size
from ..data.transforms import (
    BatchNormalizer,
    loader_generator,
    resize_transform,
    seed_worker,
    train_transforms,
)
from ..distributed import DistInfo
from .config import TrainConfig


class SeededAugmentation(Dataset):
    """Wraps a dataset so that item ``i`` of epoch ``e`` is drawn with a generator seeded by ``(seed, e, i)``.

    The random transforms (torchvision v2 draws from the global torch
    generator) then do not depend on the order in which items are loaded,
    the number of DataLoader workers or the number of ranks. The caller's RNG
    state is restored after each item. An index is either ``i`` (drawn for
    :attr:`epoch`) or an ``(e, i)`` pair (from :class:`EpochBatches`: what
    persistent workers, which keep their copy of the dataset, receive).
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def item_seed(self, index: int, epoch: int | None = None) -> int:
        epoch = self.epoch if epoch is None else int(epoch)
        return int(np.random.SeedSequence([self.seed, epoch, int(index)]).generate_state(1, np.uint64)[0]
                   & 0x7FFF_FFFF_FFFF_FFFF)

    def __getitem__(self, index: int | tuple[int, int]):
        epoch, item = index if isinstance(index, tuple) else (self.epoch, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.item_seed(item, epoch))
            return self.base[item]


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """A batch sampler's batches with the epoch attached to every index: ``[(epoch, i), ...]``.

    The epoch is the wrapped sampler's at the time a batch is drawn (in the
    training process), so one DataLoader with persistent workers serves every
    epoch.
    """

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler.epoch
        for batch in self.sampler:
            yield [(epoch, int(i)) for i in batch]

    def __len__(self) -> int:
        return len(self.sampler)


class TrainData:
    """The sampler, the augmented pair dataset, one persistent DataLoader, and batches on the device."""

    def __init__(self, config: TrainConfig, split, dist: DistInfo) -> None:
        world = dist.world_size
        if config.batch_size % world:
            raise ValueError(f"batch_size: the global batch ({config.batch_size} pairs) must divide by the "
                             f"number of processes ({world})")
        if config.batch_size > split.num_pairs:
            raise ValueError(f"batch_size: {config.batch_size} pairs is larger than the training set "
                             f"({split.num_pairs} pairs in {config.data_dir})")
        self.config, self.dist = config, dist
        self.device = dist.device
        self.on_cuda = self.device.type == "cuda"
        # The samplers take the per-rank batch and build the global one; rank r gets its r-th slice.
        options = {"drop_last": True} if config.sampler == "random" else {}
        self.sampler = make_batch_sampler(config.sampler, split, config.batch_size // world, seed=config.seed,
                                          rank=dist.rank, world_size=world, thresholds=config.thresholds,
                                          **options)
        size, rotation = config.image_size, config.rotation
        base = PairDataset(
            split,
            satellite_transform=train_transforms("satellite", size, rotation=rotation, normalize=False,
                                                 resize=False),
            drone_transform=train_transforms("drone", size, rotation=rotation, normalize=False),
            satellite_prepare=resize_transform(size),
        )
        self.dataset = SeededAugmentation(base, config.seed)
        self.workers = config.workers or 0
        # Every process of the node keeps its workers' batches in /dev/shm: fail now, not with a bus error.
        check_shared_memory(self.workers, batch_bytes(config.batch_size // world, size),
                            processes=local_world_size())
        self.normalize = BatchNormalizer(self.device)
        self._loader: DataLoader | None = None

    def loader(self, epoch: int) -> DataLoader:
        """The run's DataLoader, set to ``epoch`` (0-based): this rank's share of the epoch's global batches.

        One loader for the whole run; its workers persist from epoch to epoch.
        """
        self.sampler.set_epoch(epoch)
        self.dataset.epoch = epoch
        if self._loader is None:
            self._loader = DataLoader(
                self.dataset, batch_sampler=EpochBatches(self.sampler), num_workers=self.workers,
                pin_memory=self.on_cuda, worker_init_fn=seed_worker if self.workers else None,
                generator=loader_generator(self.config.seed, 0, self.dist.rank),
                persistent_workers=self.workers > 0,
            )
        return self._loader

    def close(self) -> None:
        """Stop the loader's workers (the next :meth:`loader` starts new ones)."""
        self._loader = None

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, float32 and normalised (``channels_last`` on CUDA)."""
        images = images.to(self.device, non_blocking=self.on_cuda)
        if self.on_cuda:
            images = images.contiguous(memory_format=torch.channels_last)  # on the uint8 bytes: cheap
        return self.normalize(images) if images.dtype == torch.uint8 else images

    def labels(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.to(self.device, non_blocking=self.on_cuda).long()


__all__ = ["EpochBatches", "SeededAugmentation", "TrainData"]
