"""Multi-Similarity loss across views (Table II baseline), via pml's ``MultiSimilarityLoss``.

Direction a→b, per anchor i (cosine similarities ``s``, positives = same building)::

    (1/α) log(1 + Σ_p exp(−α (s_ip − base))) + (1/β) log(1 + Σ_n exp(β (s_in − base)))

averaged over anchors (no pair mining); symmetric over views.
"""

from __future__ import annotations

from pytorch_metric_learning import losses as pml_losses

from .base import PMLCrossViewLoss


class MultiSimilarityLoss(PMLCrossViewLoss):
    """Cross-view Multi-Similarity loss.

    Args: ``alpha`` (2), ``beta`` (50), ``base`` (0.5) — the MS paper's values.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, symmetric: bool = True):
        super().__init__(symmetric=symmetric)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name}: expected a positive number, got {value!r}")
        self.alpha, self.beta, self.base = float(alpha), float(beta), float(base)
        self.pml = pml_losses.MultiSimilarityLoss(alpha=self.alpha, beta=self.beta, base=self.base)
