"""Training on a label hierarchy (single domain), in memory: the miniature of Table IV's models.

``dycl-train`` is cross-view (a satellite tile and drone views per building).
A single-domain hierarchical set has one view, so this loop embeds two random
augmentations of each batch and hands them to the project's losses as the two
sides, with ``levels[i, j]`` from :func:`dycl.levels.from_hierarchy` (the
finest classes play the buildings). It is deliberately small — images as one
uint8 array, one process, no checkpoints or resume — for miniatures and
tests; a DyML-scale trainer would reuse ``dycl.train`` with a single-view
dataset (not built yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._validate import int_at_least
from ..levels import from_hierarchy
from ..losses import batch_levels, build_loss
from ..models import EmbeddingNet, build_model


@dataclass(frozen=True)
class HierarchyTraining:
    """Settings of :func:`train_on_hierarchy` (the loss spec as in ``dycl-train --loss``)."""

    loss: str = "dycl:0.2,cluster:0.1,happier:0.9"
    backbone: str = "resnet18"
    embedding_dim: int = 64
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        int_at_least("embedding_dim", self.embedding_dim, 2)
        int_at_least("epochs", self.epochs, 1)
        int_at_least("batch_size", self.batch_size, 2)
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr!r}")


def _as_batch(images: np.ndarray) -> torch.Tensor:
    """``(n, S, S, 3)`` uint8 -> ``(n, 3, S, S)`` float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to an eighth of the side (wrapping)."""
    n, size = x.shape[0], x.shape[-1]
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    most = max(1, size // 8)
    dy, dx = (int(v) for v in torch.randint(-most, most + 1, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def _images(images: object) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"images: expected (n, S, S, 3) uint8, got {arr.dtype} {arr.shape}")
    return arr


def train_on_hierarchy(images: object, labels: list[np.ndarray],
                       settings: HierarchyTraining = HierarchyTraining()) -> tuple[EmbeddingNet, list[float]]:
    """Train an embedding network on ``images`` labelled with ``labels`` (finest first).

    Each step embeds two augmentations of a random batch and applies the loss
    with the batch's level matrix; CPU or the current CUDA device.

    Returns:
        The network (in eval mode) and the mean loss of each epoch.
    """
    arr = _images(images)
    ids, table = from_hierarchy(*labels)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(settings.backbone, embedding_dim=settings.embedding_dim, pretrained=False).to(device)
    loss = build_loss(settings.loss, num_buildings=table.shape[0], embedding_dim=settings.embedding_dim,
                      levels=int(table.max()), level_table=table).to(device)
    params = list(model.parameters()) + list(loss.parameters())
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    x_all, y_all = _as_batch(arr), torch.from_numpy(ids)
    level_table = torch.from_numpy(table.astype(np.int64))
    model.train()
    epoch_losses: list[float] = []
    for _ in range(settings.epochs):
        total, steps = 0.0, 0
        order = torch.randperm(len(ids), generator=generator)
        for start in range(0, len(ids) - 1, settings.batch_size):
            batch = order[start:start + settings.batch_size]
            if len(batch) < 2:
                continue
            x, y = x_all[batch], y_all[batch]
            a, b = _augment(x, generator).to(device), _augment(x, generator).to(device)
            emb_a, emb_b = model(a, b)
            y = y.to(device)
            value = loss(emb_a, emb_b, batch_levels(level_table, y, y).to(device), y, y)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total, steps = total + float(value.detach()), steps + 1
        epoch_losses.append(total / max(steps, 1))
    return model.eval(), epoch_losses


@torch.no_grad()
def embed_images(model: EmbeddingNet, images: object, batch_size: int = 256) -> np.ndarray:
    """``(n, d)`` float32 embeddings of ``(n, S, S, 3)`` uint8 images (no augmentation)."""
    arr = _images(images)
    device = next(model.parameters()).device
    model.eval()
    out = [model(_as_batch(arr[i:i + batch_size]).to(device)).float().cpu()
           for i in range(0, len(arr), batch_size)]
    return torch.cat(out).numpy()
