"""CSL, Cross-Scale Learning (Sun et al., “Dynamic Metric Learning”, CVPR 2021), across views.

A proxy-based loss over a hierarchy of scales: every training building has a
proxy ``p_c``; an embedding of building ``y`` must be closer to its own proxy
than to the proxies that are *not* relevant at each scale, with a margin that
grows with the scale. With cosine similarities ``S_c = cos(x, p_c)``, ``τ`` the
scale factor and ``N_s(y) = {c : level(y, c) < L − s}`` (the buildings outside
scale ``s`` of ``y``)::

    ℓ(x) = Σ_{s<L} log(1 + Σ_{c ∈ N_s(y)} exp(τ (S_c − S_y + m_s)))
         = Σ_s softplus(LSE_{c ∈ N_s(y)}(τ S_c) − τ S_y + τ m_s)

Margins ``m = (0.25, 0.35, 0.45)`` and ``τ = 32`` for L = 3 (the definition and
defaults of the CSL loss in the HAPPIER release, ``happier/losses/csl_loss.py``,
which the DyCL release ships unchanged): scale 0 separates a building from
every other one by 0.25, scale 2 from the buildings beyond the largest
threshold by 0.45. The hierarchy's "label differs at level s" is our "level
below ``L − s``" (DESIGN §3), so geographic levels need no label tree. A scale
with no building outside it contributes 0.

Across views the loss is ``½ (mean_a ℓ + mean_b ℓ)`` over the embeddings of both
views (one set of proxies). It needs the training buildings' level table
(``build_loss(level_table=...)``); the proxies train on the proxy optimiser of
the clustering loss (:func:`~dycl.losses.make_proxy_optimizer`). Proxies start
as in the release: ``uniform(−1/√d, 1/√d)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import PairLoss
from .cluster import check_building_labels
from .multiscale import masked_logsumexp

CSL_MARGINS = (0.25, 0.35, 0.45)


def csl_margins(num_levels: int) -> tuple[float, ...]:
    """The release's margins for L = 3; for other L, evenly spaced from 0.25 up to 0.45."""
    if num_levels == 1:
        return (CSL_MARGINS[0],)
    step = (CSL_MARGINS[-1] - CSL_MARGINS[0]) / (num_levels - 1)
    return tuple(round(CSL_MARGINS[0] + step * i, 10) for i in range(num_levels))


def _level_table(level_table: object) -> torch.Tensor:
    table = torch.as_tensor(np.asarray(level_table))
    if table.ndim != 2 or table.shape[0] != table.shape[1] or table.shape[0] == 0:
        raise ValueError(f"level_table: expected a square (B, B) matrix, got shape {tuple(table.shape)}")
    if table.is_floating_point() or table.is_complex() or table.dtype == torch.bool:
        raise ValueError(f"level_table: expected integer levels, got {table.dtype}")
    return table.long()


class CSLLoss(PairLoss):
    """Cross-Scale Learning over building proxies, on both views.

    Args:
        level_table: ``(B, B)`` levels between the training buildings (``L`` on the diagonal).
        embedding_dim: embedding width.
        margins: ``(m_0, …, m_{L−1})``, one per scale (default :func:`csl_margins`); ``L = len(margins)``.
        scale: τ (32).
        symmetric: both views (default) or view a only.
    """

    needs_labels = True
    needs_levels = False

    def __init__(self, level_table: object, embedding_dim: int, margins: Sequence[float] | None = None,
                 scale: float = 32.0, symmetric: bool = True):
        super().__init__()
        table = _level_table(level_table)
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim: expected a positive integer, got {embedding_dim!r}")
        if not (isinstance(scale, (int, float)) and 0 < scale < math.inf):
            raise ValueError(f"scale: expected a positive finite number, got {scale!r}")
        top = int(table.max())
        margins = csl_margins(max(top, 1)) if margins is None else tuple(float(m) for m in margins)
        if len(margins) != top or not all(math.isfinite(m) for m in margins):
            raise ValueError(f"margins: need one finite margin per scale (L = {top}), got {margins}")
        self.margins = margins
        self.scale = float(scale)
        self.symmetric = bool(symmetric)
        self.num_buildings, self.embedding_dim = table.shape[0], embedding_dim
        self.register_buffer("level_table", table, persistent=False)  # data, not state: not in checkpoints
        bound = 1.0 / math.sqrt(embedding_dim)
        self.proxies = nn.Parameter(torch.empty(self.num_buildings, embedding_dim).uniform_(-bound, bound))

    def proxy_parameters(self) -> list[nn.Parameter]:
        return [self.proxies]

    def extra_repr(self) -> str:
        return (f"num_buildings={self.num_buildings}, embedding_dim={self.embedding_dim}, "
                f"margins={self.margins}, scale={self.scale}, symmetric={self.symmetric}")

    def per_sample(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ℓ(x) of every row of ``emb`` with building ``labels``, shape (n,)."""
        labels = labels.long()
        proxies = F.normalize(self.proxies, dim=1)
        sim = F.normalize(emb.to(proxies.dtype), dim=1) @ proxies.t()  # (n, B)
        own = sim.gather(1, labels[:, None])[:, 0]
        levels = self.level_table[labels]  # (n, B): level of each proxy's building to the item's
        L, tau = len(self.margins), self.scale
        total = torch.zeros_like(own)
        for s, margin in enumerate(self.margins):
            lse_neg, has_neg = masked_logsumexp(tau * sim, levels < L - s)
            term = F.softplus(lse_neg - tau * own + tau * margin)
            total = total + torch.where(has_neg, term, torch.zeros_like(term))
        return total

    def compute(self, emb_a, emb_b, levels=None, labels_a=None, labels_b=None) -> torch.Tensor:
        check_building_labels("labels_a/labels_b", torch.cat([labels_a, labels_b]), self.num_buildings)
        forward = self.per_sample(emb_a, labels_a).mean()
        if not self.symmetric:
            return forward
        return 0.5 * (forward + self.per_sample(emb_b, labels_b).mean())
