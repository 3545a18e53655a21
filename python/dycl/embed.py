"""Running a network over images: device choice, mixed precision, batched embedding.

Everything that puts images through a model lives here, so the training
engine, the evaluation engine and the experiment suite embed the same way::

    from dycl.embed import embed_split, resolve_device

    device = resolve_device("auto")                      # "cuda" when available, else "cpu"
    sat, drone = embed_split(model.to(device), split, image_size=256, device=device)

Torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import error_line
from ._validate import int_at_least

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .data import Split


def native_bf16(device: torch.device | str = "cuda") -> bool:
    """Whether the CUDA device computes bf16 natively (compute capability 8.0 or later: A100, H100, ...).

    ``torch.cuda.is_bf16_supported()`` alone also answers True where bf16 is only
    *emulated* (V100, T4: no bf16 convolutions in cuDNN), so emulation is not counted here.
    """
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.4 has no including_emulation: ask the hardware
        return torch.cuda.get_device_capability(torch.device(device)) >= (8, 0)


def autocast_dtype(device: torch.device | str, amp: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 on CUDA when native (:func:`native_bf16`), else fp16
    (with loss scaling in training); None = full precision.

    Mixed precision is only used on CUDA: on CPU the engines stay in float32,
    which keeps CPU runs bit-reproducible.
    """
    import torch

    dev = torch.device(device)
    if not amp or dev.type != "cuda":
        return None
    return torch.bfloat16 if native_bf16(dev) else torch.float16


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when CUDA is available, else ``"cpu"``; a CUDA device must exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device} was asked for but CUDA is not available")
    return device


def extract_embeddings(
    model: torch.nn.Module,
    image_set: torch.utils.data.Dataset,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    amp: bool = True,
    workers: int = 0,
    progress: bool = True,
    desc: str = "embedding",
) -> np.ndarray:
    """Embed every image of ``image_set`` with ``model``; returns ``(len(image_set), d)`` float32.

    Args:
        model: maps a ``(b, 3, H, W)`` batch to ``(b, d)`` embeddings (an
            :class:`~dycl.models.EmbeddingNet`, not a DDP wrapper). It is put in
            eval mode for the pass and its previous mode is restored after.
        image_set: yields ``(image, building)`` items in a fixed order, e.g.
            :func:`dycl.data.satellite_set` / :func:`dycl.data.drone_set` with
            :func:`dycl.data.eval_transforms`. Rows of the result follow it.
            uint8 images (``eval_transforms(normalize=False)``) are converted and
            normalised on ``device``, batch by batch (:class:`dycl.data.transforms.BatchNormalizer`);
            float images are used as they are.
        batch_size: images per forward pass.
        device: where the model lives.
        amp: autocast on CUDA (see :func:`autocast_dtype`); ignored on CPU.
        workers: DataLoader worker processes (0 = load in this process).
        progress: show a progress bar (only once the pass lasts, see :func:`dycl._progress.bar`).
        desc: label of the progress bar.
    """
    import torch
    from torch.utils.data import DataLoader

    from ._progress import bar
    from .data.transforms import BatchNormalizer

    batch_size = int_at_least("batch_size", batch_size, 1)
    workers = int_at_least("workers", workers, 0)
    if len(image_set) == 0:
        raise ValueError("image_set: is empty")
    dev = torch.device(device)
    on_cuda = dev.type == "cuda"
    dtype = autocast_dtype(dev, amp)
    loader = DataLoader(image_set, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=on_cuda, persistent_workers=False)
    normalize = BatchNormalizer(dev)
    was_training = model.training
    model.eval()
    rows: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for images, _ in bar(loader, desc=desc, unit="batch", disable=not progress):
                images = images.to(dev, non_blocking=on_cuda)
                if on_cuda:
                    images = images.contiguous(memory_format=torch.channels_last)
                if images.dtype == torch.uint8:
                    images = normalize(images)
                with torch.autocast(device_type=dev.type, dtype=dtype, enabled=dtype is not None):
                    emb = model(images)
                rows.append(emb.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.float32)


def shard_rows(count: int, rank: int = 0, world_size: int = 1, block: int = 1) -> range:
    """The contiguous rows of ``count`` that process ``rank`` of ``world_size`` handles.

    The sizes of ``numpy.array_split`` (the first shards one unit longer), in
    units of ``block`` rows: with ``block`` = the batch size, every batch of a
    shard is a batch of the one-process pass (the same images together, so
    the same numbers). Concatenated in rank order, the shards are ``range(count)``.
    """
    world_size = int_at_least("world_size", world_size, 1)
    rank = int_at_least("rank", rank, 0)
    block = int_at_least("block", block, 1)
    if rank >= world_size:
        raise ValueError(f"rank: must be < world_size ({world_size}), got {rank}")
    base, extra = divmod(-(-int(count) // block), world_size)
    start = rank * base + min(rank, extra)
    stop = start + base + (rank < extra)
    return range(min(start * block, count), min(stop * block, count))


def eval_image_sets(split: Split, image_size: int) -> dict[str, torch.utils.data.Dataset]:
    """``{"satellite": ..., "drone": ...}``: the split's two image sets with the evaluation transforms.

    Images travel as uint8 (normalised on the device by :func:`extract_embeddings`).
    """
    from .data import drone_set, eval_transforms, satellite_set

    transform = eval_transforms(image_size, normalize=False)
    return {"satellite": satellite_set(split, transform), "drone": drone_set(split, transform)}


def embed_rows(model: torch.nn.Module, images: torch.utils.data.Dataset, rows: range | None = None,
               desc: str = "embedding", **kwargs: Any) -> np.ndarray:
    """:func:`extract_embeddings` of the ``rows`` of ``images`` (all when None); ``(len(rows), d)``.

    No rows give a ``(0, d)`` array (a shard of a set smaller than the number
    of processes). An unreadable image raises ``ValueError`` with its path (also
    from DataLoader workers), as one line. ``kwargs`` go to :func:`extract_embeddings`.
    """
    from torch.utils.data import Subset

    if rows is not None:
        images = Subset(images, rows)
    if len(images) == 0:
        return np.zeros((0, int(model.embedding_dim)), dtype=np.float32)
    try:
        return extract_embeddings(model, images, desc=desc, **kwargs)
    except ValueError as exc:
        message = error_line(exc)
        # Drop the frames' references to the DataLoader iterator now, so that its workers are shut
        # down at once; left to the garbage collector, the shutdown waits for timeouts (~10 s).
        traceback.clear_frames(exc.__traceback__)
        raise ValueError(message) from None


def embed_split(
    model: torch.nn.Module,
    split: Split,
    image_size: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    amp: bool = True,
    workers: int = 0,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Satellite ``(B, d)`` and drone ``(N, d)`` embeddings of ``split`` (each image set once).

    Evaluation transforms at ``image_size``; images travel as uint8 and are
    normalised on ``device``; batched, AMP on CUDA. With ``world_size > 1``
    only this ``rank``'s rows of each set (:func:`shard_rows`) are embedded;
    concatenating the ranks' results in rank order gives the whole sets. An
    unreadable image raises ``ValueError`` with its path (also from workers).
    """
    kwargs: dict[str, Any] = {"batch_size": batch_size, "device": device, "amp": amp, "workers": workers,
                              "progress": progress}
    sets = eval_image_sets(split, image_size)
    sat, drone = (embed_rows(model, images, shard_rows(len(images), rank, world_size) if world_size > 1
                             else None, f"embedding {view}", **kwargs)
                  for view, images in sets.items())
    return sat, drone


__all__ = [
    "autocast_dtype",
    "embed_rows",
    "embed_split",
    "eval_image_sets",
    "extract_embeddings",
    "native_bf16",
    "resolve_device",
    "shard_rows",
]
