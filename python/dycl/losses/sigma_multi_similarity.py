"""Σ-Multi-Similarity (Table II, multi-scale): a Multi-Similarity loss at every spatial scale, summed.

The paper lists Multi-Similarity among the multi-scale methods; this is that
variant, built like Σ-Triplet. At scale ``s`` (0 … L−1) the positive pairs of an
anchor are the references with ``level ≥ L − s`` and its negative pairs those
with ``level < L − s``; the scale's term is pytorch-metric-learning's
``MultiSimilarityLoss`` on those pairs, per anchor i (cosine similarities ``S``)::

    (1/α) log(1 + Σ_{p ∈ P_s(i)} exp(−α (S_ip − base))) + (1/β) log(1 + Σ_{n ∈ N_s(i)} exp(β (S_in − base)))

averaged over all anchors (an anchor without positives or negatives at a scale
contributes the parts it has; no pair mining). The loss sums the scales and
averages the two view directions. The single-scale baseline (same-building
positives only) is :class:`~dycl.losses.MultiSimilarityLoss`; ``scales=(0,)``
gives the same value.

As in pml, a scale whose batch holds at most one positive and one negative pair
contributes 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pytorch_metric_learning import losses as pml_losses

from .base import PairLoss
from .multiscale import active_scales, both_directions, relevant_at_scale, scales_repr


def scale_pairs(levels: torch.Tensor, num_levels: int, scale: int) -> tuple[torch.Tensor, ...]:
    """``(a1, p, a2, n)``: the positive and negative (anchor, reference) pairs at ``scale``."""
    positive = relevant_at_scale(levels, num_levels, scale)
    a1, p = torch.where(positive)
    a2, n = torch.where(~positive)
    return a1, p, a2, n


class SigmaMultiSimilarityLoss(PairLoss):
    """Multi-Similarity loss summed over scales.

    Args:
        num_levels: ``L`` (3).
        alpha, beta, base: the MS paper's 2, 50, 0.5, the same at every scale.
        symmetric: average both view directions (default) or use a→b only.
        scales: the scale terms that are summed (default ``None``: all ``L`` of them).
    """

    needs_levels = True

    def __init__(self, num_levels: int = 3, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                 symmetric: bool = True, scales: Sequence[int] | None = None):
        super().__init__()
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f"num_levels: expected a positive integer, got {num_levels!r}")
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name}: expected a positive number, got {value!r}")
        if not isinstance(base, (int, float)):
            raise ValueError(f"base: expected a number, got {base!r}")
        self.num_levels = num_levels
        self.alpha, self.beta, self.base = float(alpha), float(beta), float(base)
        self.symmetric = bool(symmetric)
        self.scales = active_scales(scales, num_levels)
        self.pml = pml_losses.MultiSimilarityLoss(alpha=self.alpha, beta=self.beta, base=self.base)

    def max_level(self) -> int:
        return self.num_levels

    def extra_repr(self) -> str:
        return (f"num_levels={self.num_levels}, alpha={self.alpha}, beta={self.beta}, base={self.base}, "
                f"symmetric={self.symmetric}{scales_repr(self.scales, self.num_levels)}")

    def _direction(self, anchors: torch.Tensor, refs: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        total = None
        for scale in self.scales:
            term = self.pml(anchors, indices_tuple=scale_pairs(levels, self.num_levels, scale), ref_emb=refs)
            total = term if total is None else total + term
        return total

    def compute(self, emb_a, emb_b, levels, labels_a=None, labels_b=None) -> torch.Tensor:
        return both_directions(self._direction, emb_a, emb_b, levels, self.symmetric)
