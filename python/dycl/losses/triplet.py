"""Triplet loss across views (Table II baseline), via pytorch-metric-learning's ``TripletMarginLoss``.

Direction a→b: all triplets (anchor i in view a, positive p and negative n in
view b; positive = same building), ``relu(d_ip − d_in + margin)`` with
Euclidean distances of L2-normalised embeddings, averaged over the triplets
with a non-zero loss (pml's ``AvgNonZeroReducer``); symmetric over views.
"""

from __future__ import annotations

from pytorch_metric_learning import losses as pml_losses

from .base import PMLCrossViewLoss


class TripletLoss(PMLCrossViewLoss):
    """Cross-view triplet loss over all triplets. Args: ``margin`` (0.05, pml's default), ``symmetric``."""

    def __init__(self, margin: float = 0.05, symmetric: bool = True):
        super().__init__(symmetric=symmetric)
        if not (isinstance(margin, (int, float)) and margin >= 0):
            raise ValueError(f"margin: expected a non-negative number, got {margin!r}")
        self.margin = float(margin)
        self.pml = pml_losses.TripletMarginLoss(margin=self.margin, triplets_per_anchor="all")
