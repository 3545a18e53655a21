"""Instance loss (Table II baseline): one building classifier shared by both views.

The instance loss of Zheng et al. (“Dual-path convolutional image-text
embeddings with instance loss”, ACM TOMM 2020), as University-1652 (Zheng et al.,
ACM MM 2020) applies it to cross-view geo-localization: every training building
is a class, one linear classifier ``W, b`` is shared by the satellite and the drone
branch, and each image is classified into its building with a softmax
cross-entropy. Sharing the classifier is what pulls the two views of a building
together::

    CE_v = mean over the items x of view v of  −log softmax(W x̂ + b)[y(x)]
    loss = ½ (CE_a + CE_b)

with ``x̂`` the L2-normalised embedding (the calling convention's cosine
geometry). University-1652 sums the per-view terms; weight 2 in the loss spec
reproduces that scale.

Unlike the building proxies of the clustering loss (normalised, temperature,
their own Adam at lr 10), the classifier is an ordinary linear layer: it trains
with the network's head (:meth:`classifier_parameters`, the trainer puts it in
the head's optimiser group).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import PairLoss
from .cluster import check_building_labels


class InstanceLoss(PairLoss):
    """Shared-classifier cross-entropy over buildings, on both views.

    Args:
        num_buildings: number of training buildings (classes).
        embedding_dim: embedding width.
        bias: give the classifier a bias (default, as ``nn.Linear``).
        symmetric: classify both views (default) or view a only.
    """

    needs_labels = True
    needs_levels = False

    def __init__(self, num_buildings: int, embedding_dim: int, bias: bool = True, symmetric: bool = True):
        super().__init__()
        for name, value in (("num_buildings", num_buildings), ("embedding_dim", embedding_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.num_buildings = num_buildings
        self.embedding_dim = embedding_dim
        self.symmetric = bool(symmetric)
        self.classifier = nn.Linear(embedding_dim, num_buildings, bias=bool(bias))

    def classifier_parameters(self) -> list[nn.Parameter]:
        """The classifier's weight (and bias): trained with the network's head, not as proxies."""
        return list(self.classifier.parameters())

    def extra_repr(self) -> str:
        return (f"num_buildings={self.num_buildings}, embedding_dim={self.embedding_dim}, "
                f"symmetric={self.symmetric}")

    def view_loss(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of one view's embeddings against their building labels."""
        if emb.shape[1] != self.embedding_dim:
            raise ValueError(
                f"{type(self).__name__}: embeddings have width {emb.shape[1]}, "
                f"the classifier {self.embedding_dim}"
            )
        weight = self.classifier.weight
        logits = self.classifier(F.normalize(emb.to(weight.dtype), dim=1))
        return F.cross_entropy(logits, labels.long())

    def compute(self, emb_a, emb_b, levels=None, labels_a=None, labels_b=None) -> torch.Tensor:
        check_building_labels("labels_a/labels_b", torch.cat([labels_a, labels_b]), self.num_buildings)
        forward = self.view_loss(emb_a, labels_a)
        if not self.symmetric:
            return forward
        return 0.5 * (forward + self.view_loss(emb_b, labels_b))
