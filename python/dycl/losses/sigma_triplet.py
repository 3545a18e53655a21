"""Σ-Triplet (Table II baseline): a triplet loss at every spatial scale, summed.

At scale ``s`` (0 … L−1) the positives of an anchor are the references with
``level ≥ L − s`` and its negatives those with ``level < L − s``; the scale's
loss is pytorch-metric-learning's ``TripletMarginLoss`` over all such
(anchor, positive, negative) triplets across views (Euclidean distances of
normalised embeddings, mean over non-zero triplets). The loss sums the scales
and averages the two view directions. A scale without any triplet contributes 0.

``scales=(s,)`` keeps the term of scale ``s`` alone: the **single-scale Triplet**
model trained at ``S^s`` of the paper's Fig. 6 (``scales=(0,)`` is the plain
same-building triplet loss; at scale 1 every building within the first threshold
is a positive and every farther one a negative).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pytorch_metric_learning import losses as pml_losses

from .base import PairLoss
from .multiscale import active_scales, both_directions, scales_repr


def scale_triplets(levels: torch.Tensor, threshold: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All (anchor, positive, negative) index triplets with level ≥ threshold vs level < threshold."""
    positive = levels >= threshold
    negative = ~positive
    return torch.where(positive[:, :, None] & negative[:, None, :])


class SigmaTripletLoss(PairLoss):
    """Triplet loss summed over scales.

    Args:
        num_levels: ``L`` (3).
        margin: the triplet margin (0.05, pml's default), the same at every scale.
        symmetric: average both view directions (default) or use a→b only.
        scales: the scale terms that are summed (default ``None``: all ``L`` of them);
            ``[s]`` is the single-scale triplet loss at scale ``s`` (Fig. 6).
    """

    needs_levels = True

    def __init__(self, num_levels: int = 3, margin: float = 0.05, symmetric: bool = True,
                 scales: Sequence[int] | None = None):
        super().__init__()
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f"num_levels: expected a positive integer, got {num_levels!r}")
        if not (isinstance(margin, (int, float)) and margin >= 0):
            raise ValueError(f"margin: expected a non-negative number, got {margin!r}")
        self.num_levels = num_levels
        self.margin = float(margin)
        self.symmetric = bool(symmetric)
        self.scales = active_scales(scales, num_levels)
        self.pml = pml_losses.TripletMarginLoss(margin=self.margin)

    def max_level(self) -> int:
        return self.num_levels

    def extra_repr(self) -> str:
        return (f"num_levels={self.num_levels}, margin={self.margin}, symmetric={self.symmetric}"
                f"{scales_repr(self.scales, self.num_levels)}")

    def _direction(self, anchors: torch.Tensor, refs: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        total = None
        for scale in self.scales:
            triplets = scale_triplets(levels, self.num_levels - scale)
            term = self.pml(anchors, indices_tuple=triplets, ref_emb=refs)
            total = term if total is None else total + term
        return total

    def compute(self, emb_a, emb_b, levels, labels_a=None, labels_b=None) -> torch.Tensor:
        return both_directions(self._direction, emb_a, emb_b, levels, self.symmetric)
