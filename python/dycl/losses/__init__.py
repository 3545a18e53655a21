"""Losses (DESIGN §6): one loss per module, one calling convention.

Every loss is an ``nn.Module`` configured by constructor arguments and called as::

    loss(emb_a, emb_b, levels, labels_a, labels_b) -> scalar tensor

with ``emb_a`` (n, d) satellite embeddings, ``emb_b`` (m, d) drone embeddings,
``levels`` (n, m) integer relevance levels (``L`` = same building, 0 = pure
negative; build it with :func:`batch_levels`), and ``labels_a``/``labels_b``
building indices (needed by label/proxy-based losses). See
:mod:`dycl.losses.base` for the details.

* :class:`DyCLLoss` — paper Eq. 4, multi-margin contrastive over scales.
* :class:`ClusterLoss` — paper Eq. 5, normalised softmax over building proxies.
* :class:`HAPPIERLoss` — smooth-rank 1 − H-AP surrogate.
* Table II baselines: :class:`InfoNCELoss`, :class:`TripletLoss`,
  :class:`ContrastiveLoss`, :class:`MultiSimilarityLoss`,
  :class:`NormalizedSoftmaxLoss`, :class:`SigmaTripletLoss`,
  :class:`SigmaMultiSimilarityLoss` (multi-scale MS), :class:`SoftMarginTripletLoss`,
  :class:`InstanceLoss` (shared building classifier), :class:`CSLLoss` (cross-scale learning).
* :func:`build_loss` — ``"dycl:0.2,cluster:0.1,happier:0.9"`` → :class:`CombinedLoss`.

Proxy parameters (``CombinedLoss.proxy_parameters()``) go on their own
optimiser: :func:`make_proxy_optimizer` (Adam, lr 10, cosine decay to 0.1);
classifier parameters (``CombinedLoss.classifier_parameters()``, the instance
loss) train with the network's head.
"""

from .base import PairLoss, batch_levels
from .cluster import PROXY_OPTIMIZER, ClusterLoss, make_proxy_optimizer
from .combined import (
    ALIASES,
    LOSSES,
    PAPER_LOSS,
    CombinedLoss,
    build_loss,
    canonical_loss_name,
    parse_loss_spec,
)
from .contrastive import ContrastiveLoss
from .csl import CSL_MARGINS, CSLLoss
from .dycl import PAPER_MARGINS, DyCLLoss, default_margins
from .happier import HAPPIERLoss, smooth_step
from .infonce import InfoNCELoss
from .instance import InstanceLoss
from .multi_similarity import MultiSimilarityLoss
from .normalized_softmax import NormalizedSoftmaxLoss
from .sigma_multi_similarity import SigmaMultiSimilarityLoss
from .sigma_triplet import SigmaTripletLoss
from .soft_margin_triplet import SoftMarginTripletLoss
from .triplet import TripletLoss

__all__ = [
    "ALIASES",
    "CSL_MARGINS",
    "CSLLoss",
    "LOSSES",
    "PAPER_LOSS",
    "PAPER_MARGINS",
    "PROXY_OPTIMIZER",
    "ClusterLoss",
    "CombinedLoss",
    "ContrastiveLoss",
    "DyCLLoss",
    "HAPPIERLoss",
    "InfoNCELoss",
    "InstanceLoss",
    "MultiSimilarityLoss",
    "NormalizedSoftmaxLoss",
    "PairLoss",
    "SigmaMultiSimilarityLoss",
    "SigmaTripletLoss",
    "SoftMarginTripletLoss",
    "TripletLoss",
    "batch_levels",
    "build_loss",
    "canonical_loss_name",
    "default_margins",
    "make_proxy_optimizer",
    "parse_loss_spec",
    "smooth_step",
]
