"""Torch datasets over a :class:`~dycl.data.splits.Split`: training pairs and evaluation image sets."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .splits import DatasetError, Split

Transform = Callable[[torch.Tensor], torch.Tensor]


class CorruptImageError(DatasetError):
    """An image file that exists but cannot be decoded; the message starts with its path."""


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file (any format Pillow reads) to a uint8 RGB tensor ``(3, H, W)``.

    Raises:
        DatasetError: the file does not exist.
        CorruptImageError: the file cannot be decoded (truncated, not an image, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file does not exist")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))  # convert() decodes fully: truncation surfaces here
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(f"{path}: cannot decode image ({exc})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class Pair(NamedTuple):
    """One training pair; ``default_collate`` stacks a list of them field by field."""

    satellite: torch.Tensor
    drone: torch.Tensor
    building: int  # building index (0..B-1), the row/column of split.levels()
    coords: torch.Tensor  # (2,) float64 latitude, longitude of the building


class PairDataset(Dataset):
    """Training pairs of a split: item ``i`` is drone image ``i`` with its building's satellite tile.

    ``len(dataset) == split.num_pairs``. Use with a batch sampler from
    :mod:`dycl.data.samplers` (``DataLoader(dataset, batch_sampler=...)``).

    ``satellite_prepare``: a *deterministic* transform (one that draws no random
    numbers, e.g. :func:`dycl.data.transforms.resize_transform`) applied once per
    building; its result is kept and ``satellite_transform`` (the random part)
    runs on the kept tile. A building's tile is then decoded and resized once
    per process (each DataLoader worker keeps its own copy: ``B`` tiles of
    ``3 × S × S`` bytes, 88 MB for DA-Campus at 256 px) instead of once per
    pair, and the items are exactly those of ``satellite_transform`` =
    prepare-then-augment without the cache.
    """

    def __init__(
        self,
        split: Split,
        satellite_transform: Transform | None = None,
        drone_transform: Transform | None = None,
        satellite_prepare: Transform | None = None,
    ):
        if not isinstance(split, Split):
            raise ValueError(f"split: expected a dycl.data.Split, got {type(split).__name__}")
        self.split = split
        self.satellite_transform = satellite_transform
        self.drone_transform = drone_transform
        self.satellite_prepare = satellite_prepare
        self._tiles: dict[int, torch.Tensor] = {}
        self._coords = torch.from_numpy(np.array(split.coords, dtype=np.float64))

    def satellite_tile(self, building: int) -> torch.Tensor:
        """Building ``building``'s tile, decoded (and prepared, then kept, with ``satellite_prepare``)."""
        if self.satellite_prepare is None:
            return load_image(self.split.satellite_paths[building])
        tile = self._tiles.get(building)
        if tile is None:
            tile = self.satellite_prepare(load_image(self.split.satellite_paths[building]))
            self._tiles[building] = tile
        return tile

    def __len__(self) -> int:
        return self.split.num_pairs

    def __getitem__(self, index: int) -> Pair:
        if not 0 <= index < len(self):
            raise IndexError(f"pair index {index} is outside 0..{len(self) - 1}")
        building = int(self.split.drone_buildings[index])
        satellite = self.satellite_tile(building)
        drone = load_image(self.split.drone_paths[index])
        if self.satellite_transform is not None:
            satellite = self.satellite_transform(satellite)
        if self.drone_transform is not None:
            drone = self.drone_transform(drone)
        return Pair(satellite, drone, building, self._coords[building])


class ImageSet(Dataset):
    """A list of images with their building indices; item ``i`` is ``(image, building)``."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        buildings: Sequence[int] | np.ndarray,
        transform: Transform | None = None,
    ):
        buildings = np.asarray(buildings)
        if buildings.ndim != 1 or len(buildings) != len(paths):
            raise ValueError(
                f"buildings: expected one building index per path ({len(paths)}), got shape {buildings.shape}"
            )
        if len(buildings) and not np.issubdtype(buildings.dtype, np.integer):
            raise ValueError(f"buildings: expected integer building indices, got dtype {buildings.dtype}")
        self.paths = [Path(p) for p in paths]
        self.buildings = buildings.astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_image(self.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.buildings[index])


def satellite_set(split: Split, transform: Transform | None = None) -> ImageSet:
    """The split's satellite tiles; item ``b`` is building ``b``'s tile."""
    return ImageSet(split.satellite_paths, np.arange(split.num_buildings), transform)


def drone_set(split: Split, transform: Transform | None = None) -> ImageSet:
    """The split's drone views with their building indices."""
    return ImageSet(split.drone_paths, split.drone_buildings, transform)
