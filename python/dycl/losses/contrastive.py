"""Contrastive (pair) loss across views (Table II baseline), via pml's ``ContrastiveLoss``.

Direction a→b: positive pairs (same building) ``relu(d − pos_margin)``,
negative pairs ``relu(neg_margin − d)``, Euclidean distances of L2-normalised
embeddings; each part averaged over its non-zero terms and summed (pml's
``AvgNonZeroReducer``); symmetric over views.
"""

from __future__ import annotations

from pytorch_metric_learning import losses as pml_losses

from .base import PMLCrossViewLoss


class ContrastiveLoss(PMLCrossViewLoss):
    """Cross-view contrastive loss. Args: ``pos_margin`` (0), ``neg_margin`` (1) — pml's defaults."""

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0, symmetric: bool = True):
        super().__init__(symmetric=symmetric)
        if not (isinstance(pos_margin, (int, float)) and isinstance(neg_margin, (int, float))):
            raise ValueError(f"pos_margin/neg_margin: expected numbers, got {pos_margin!r}, {neg_margin!r}")
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.pml = pml_losses.ContrastiveLoss(pos_margin=self.pos_margin, neg_margin=self.neg_margin)
