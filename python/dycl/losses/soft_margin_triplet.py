"""Weighted soft-margin triplet loss across views (Table II baseline), via pml's ``TripletMarginLoss``.

The soft-margin triplet loss of cross-view geo-localization (Hu et al., CVM-Net,
CVPR 2018; used by SAFA and its successors): the hinge of the triplet loss is
replaced by a softplus, so every triplet keeps pulling, scaled by ``α``::

    ℓ(i, p, n) = log(1 + exp(α (d_ip − d_in)))

with ``d`` the squared Euclidean distance of L2-normalised embeddings
(``2 − 2 cos``), ``p`` the same building as anchor ``i`` and ``n`` any other
building, in the other view. Direction a→b averages ℓ over **all** such triplets
(pml's ``MeanReducer``; no mining); the loss averages a→b and b→a. ``alpha=1``
is the unweighted soft margin of Hermans et al. (2017).

pml computes it with ``smooth_loss=True`` (its softplus form), ``margin=0`` and a
squared Euclidean distance on the embeddings scaled by ``√α`` (which multiplies
the squared distances by ``α``).
"""

from __future__ import annotations

import math

import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers as pml_reducers
from torch.nn import functional as F

from .base import PMLCrossViewLoss, as_compute_dtype


class SoftMarginTripletLoss(PMLCrossViewLoss):
    """Cross-view weighted soft-margin triplet loss. Args: ``alpha`` (10, CVM-Net's weight), ``symmetric``."""

    def __init__(self, alpha: float = 10.0, symmetric: bool = True):
        super().__init__(symmetric=symmetric)
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < math.inf):
            raise ValueError(f"alpha: expected a positive finite number, got {alpha!r}")
        self.alpha = float(alpha)
        self.pml = pml_losses.TripletMarginLoss(
            margin=0.0, smooth_loss=True, triplets_per_anchor="all",
            distance=pml_distances.LpDistance(normalize_embeddings=False, p=2, power=2),
            reducer=pml_reducers.MeanReducer(),
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, symmetric={self.symmetric}"

    def _scaled(self, emb: torch.Tensor) -> torch.Tensor:
        return math.sqrt(self.alpha) * F.normalize(as_compute_dtype(emb), dim=1)

    def compute(self, emb_a, emb_b, levels=None, labels_a=None, labels_b=None) -> torch.Tensor:
        return super().compute(self._scaled(emb_a), self._scaled(emb_b), levels, labels_a, labels_b)
