"""Image transforms (torchvision.transforms.v2) and reproducible DataLoader seeding.

Training (paper §V): resize to ``image_size`` x ``image_size``, random
horizontal flip, and for satellite tiles a random rotation; then float32 in
[0, 1] and ImageNet normalisation. Evaluation: resize and normalisation only.

The engines stop before the last two steps (``normalize=False``): loader
workers hand over uint8 images (a quarter of the bytes to collate, pin and
copy), and :class:`BatchNormalizer` converts and normalises the whole batch
where it lives (on the GPU), with the very same operations, so the numbers do
not change. The training satellite tile can also skip the resize
(``resize=False``) when the dataset caches resized tiles (:func:`resize_transform`,
:class:`~dycl.data.datasets.PairDataset`): Resize draws no random numbers.

Satellite rotation defaults to quarter turns (k x 90 degrees): on a square,
north-up tile they are lossless (no interpolation, no empty corners whose
fill colour would tell the network which view it is looking at) and, with
the flip, give all eight orientations of the tile, which is what a drone
circling the building at arbitrary headings asks the satellite branch to be
invariant to. ``rotation="any"`` draws a uniform angle instead (corners
filled with the ImageNet mean, i.e. zero after normalisation).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VIEWS = ("satellite", "drone")
ROTATIONS = ("quarter", "any", "none")


class RandomQuarterTurn(v2.Transform):
    """Rotate by a uniformly random multiple of 90 degrees (exact, via ``torch.rot90``)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(4, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["k"] == 0 or not isinstance(inpt, torch.Tensor):
            return inpt
        out = torch.rot90(inpt, params["k"], dims=(-2, -1))
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def _image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"image_size: expected an integer >= 8, got {image_size!r}")
    return int(image_size)


def _to_normalised(normalize: bool = True) -> list[v2.Transform]:
    if not normalize:
        return []
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def _resize(size: int) -> v2.Resize:
    return v2.Resize((size, size), interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_transform(image_size: int = 256) -> v2.Compose:
    """The deterministic first step of :func:`train_transforms`: the image resized, still uint8.

    What :class:`~dycl.data.datasets.PairDataset` caches per satellite tile
    (``satellite_prepare``) when the tile's own transform is built with ``resize=False``.
    """
    return v2.Compose([v2.ToImage(), _resize(_image_size(image_size))])


def train_transforms(view: str, image_size: int = 256, rotation: str = "quarter", normalize: bool = True,
                     resize: bool = True) -> v2.Compose:
    """Training augmentation for one view (``"satellite"`` or ``"drone"``).

    Takes a uint8 image tensor ``(3, H, W)`` (as :func:`dycl.data.datasets.load_image`
    returns) or a PIL image; returns a float32 ``(3, image_size, image_size)``
    tensor normalised with the ImageNet mean and std. With ``normalize=False``
    the result stays uint8 (normalise the batch with :class:`BatchNormalizer`);
    with ``resize=False`` the input must already be ``image_size`` square
    (:func:`resize_transform`).
    """
    if view not in VIEWS:
        raise ValueError(f"view: expected one of {VIEWS}, got {view!r}")
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")
    size = _image_size(image_size)
    steps: list[v2.Transform] = [v2.ToImage(), *([_resize(size)] if resize else [])]
    steps.append(v2.RandomHorizontalFlip())
    if view == "satellite" and rotation == "quarter":
        steps.append(RandomQuarterTurn())
    elif view == "satellite" and rotation == "any":
        fill = [round(255 * m) for m in IMAGENET_MEAN]
        steps.append(v2.RandomRotation(180.0, interpolation=InterpolationMode.BILINEAR, fill=fill))
    return v2.Compose(steps + _to_normalised(normalize))


def eval_transforms(image_size: int = 256, normalize: bool = True) -> v2.Compose:
    """Evaluation: resize to ``image_size`` x ``image_size`` and normalise (no augmentation).

    ``normalize=False`` stops at the resized uint8 image (see :class:`BatchNormalizer`).
    """
    return v2.Compose([v2.ToImage(), _resize(_image_size(image_size))] + _to_normalised(normalize))


class BatchNormalizer:
    """uint8 ``(B, 3, H, W)`` batches to float32 in [0, 1], normalised with the ImageNet statistics.

    The last two steps of :func:`train_transforms` / :func:`eval_transforms`
    (``ToDtype(float32, scale=True)``, ``Normalize``) as the same tensor
    operations, applied to a whole batch on ``device``: results are bit for bit
    those of the per-image transforms. The mean and std are copied to the
    device once, here, so a call never waits for the host. The memory format
    of the input (``channels_last``) is kept.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(-1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError(f"images: expected a uint8 batch, got {images.dtype}")
        # torchvision's to_dtype_image (uint8 -> float: multiply by 1/255), then normalize_image.
        return images.to(torch.float32).mul_(1.0 / 255).sub_(self.mean).div_(self.std)


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=seed_worker)``: seed NumPy and ``random`` from the worker's torch seed.

    PyTorch already seeds each worker's torch RNG with ``base_seed + worker_id``
    (``base_seed`` drawn from the loader's ``generator``); this makes the
    other two RNGs follow it, so augmentation is reproducible.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def loader_generator(seed: int, epoch: int = 0, rank: int = 0) -> torch.Generator:
    """A ``torch.Generator`` for ``DataLoader(generator=...)``, a pure function of (seed, epoch, rank).

    Create one per epoch (or re-seed with the same value) so that a run
    resumed at an epoch boundary draws the same worker seeds, and hence the
    same augmentations, as an uninterrupted one. With ``num_workers=0`` the
    transforms draw from the global torch RNG instead: seed it per epoch.
    """
    for name, value in (("seed", seed), ("epoch", epoch), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    state = np.random.SeedSequence([int(seed), int(epoch), int(rank), 0x5EED]).generate_state(
        1, dtype=np.uint64
    )
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) & (2**63 - 1))
    return generator
