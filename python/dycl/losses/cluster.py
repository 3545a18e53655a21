"""Clustering loss (paper Eq. 5): normalised softmax over learnable building proxies.

``loss = CE(cos(e, p_y) / T)`` over the embeddings of **both** views (one
cross-entropy over the 2-view union of the batch), with one proxy per training
building and temperature ``T = 0.05``. The computation is
pytorch-metric-learning's ``NormalizedSoftmaxLoss``; this class adapts it to
the shared calling convention and owns the proxies.

The proxies train on their own optimiser (DESIGN §6: Adam, lr 10, cosine decay
to 0.1): build it with :func:`make_proxy_optimizer` from
:meth:`ClusterLoss.proxy_parameters` (or ``CombinedLoss.proxy_parameters()``),
and keep these parameters out of the network's optimiser. Move the loss to the
training device (``loss.to(device)``) *before* building that optimiser:
pytorch-metric-learning moves the proxies to the embeddings' device on the
fly, which would leave an optimiser built earlier holding stale tensors.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pytorch_metric_learning import losses as pml_losses
from torch import nn

from .base import PairLoss

#: Recommended proxy optimiser (Adam): initial lr, final lr of the cosine decay, weight decay.
#: Weight decay is 0 because proxies are L2-normalised before use: decay would only
#: change their effective step size.
PROXY_OPTIMIZER = {"lr": 10.0, "lr_min": 0.1, "weight_decay": 0.0}


def make_proxy_optimizer(
    params: Iterable[nn.Parameter],
    total_steps: int,
    lr: float = PROXY_OPTIMIZER["lr"],
    lr_min: float = PROXY_OPTIMIZER["lr_min"],
    weight_decay: float = PROXY_OPTIMIZER["weight_decay"],
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """Adam over the proxies; cosine schedule from ``lr`` to ``lr_min`` over ``total_steps`` steps."""
    params = list(params)
    if not params:
        raise ValueError("params: no proxy parameters (the loss has no proxy-based term)")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps: expected a positive integer, got {total_steps!r}")
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=lr_min)
    return optimizer, scheduler


def check_building_labels(name: str, labels: torch.Tensor, num_buildings: int) -> None:
    lo, hi = (int(v) for v in torch.aminmax(labels.long()))
    if lo < 0 or hi >= num_buildings:
        raise ValueError(
            f"{name}: building labels must lie in [0, {num_buildings - 1}] "
            f"(num_buildings = {num_buildings}), "
            f"got [{lo}, {hi}]"
        )


class ClusterLoss(PairLoss):
    """Normalised softmax over building proxies, applied to both views.

    Args:
        num_buildings: number of training buildings (proxies).
        embedding_dim: embedding width.
        temperature: softmax temperature (0.05).

    The proxies are ``self.pml.W`` with shape (embedding_dim, num_buildings)
    (pytorch-metric-learning's layout); :attr:`proxies` gives the
    (num_buildings, embedding_dim) view. Inputs are computed in the proxies'
    dtype (float32 unless the module was converted).
    """

    needs_labels = True
    needs_levels = False

    def __init__(self, num_buildings: int, embedding_dim: int, temperature: float = 0.05):
        super().__init__()
        for name, value in (("num_buildings", num_buildings), ("embedding_dim", embedding_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
        self.num_buildings = num_buildings
        self.embedding_dim = embedding_dim
        self.temperature = float(temperature)
        self.pml = pml_losses.NormalizedSoftmaxLoss(
            num_classes=num_buildings, embedding_size=embedding_dim, temperature=self.temperature
        )

    @property
    def proxies(self) -> torch.Tensor:
        return self.pml.W.t()

    def proxy_parameters(self) -> list[nn.Parameter]:
        return [self.pml.W]

    def extra_repr(self) -> str:
        return (f"num_buildings={self.num_buildings}, embedding_dim={self.embedding_dim}, "
                f"temperature={self.temperature}")

    def compute(self, emb_a, emb_b, levels=None, labels_a=None, labels_b=None) -> torch.Tensor:
        if emb_a.shape[1] != self.embedding_dim:
            raise ValueError(
                f"{type(self).__name__}: embeddings have width {emb_a.shape[1]}, proxies {self.embedding_dim}"
            )
        labels = torch.cat([labels_a, labels_b]).long()
        if self.check_values:
            check_building_labels("labels_a/labels_b", labels, self.num_buildings)
        # Keep the proxies' dtype: pml casts W to the embeddings' dtype otherwise.
        embeddings = torch.cat([emb_a, emb_b]).to(self.pml.W.dtype)
        return self.pml(embeddings, labels)
