"""InfoNCE across views (Table II baseline), via pytorch-metric-learning's ``NTXentLoss``.

Direction a→b: for every positive pair (i, p) (same building, i in view a, p in
view b), ``−log(exp(s_ip/T) / (exp(s_ip/T) + Σ_{n: other building} exp(s_in/T)))``
with cosine similarities ``s``, averaged over positive pairs; the loss
averages a→b and b→a (CLIP-style symmetric InfoNCE).
"""

from __future__ import annotations

from pytorch_metric_learning import losses as pml_losses

from .base import PMLCrossViewLoss


class InfoNCELoss(PMLCrossViewLoss):
    """Symmetric cross-view InfoNCE. Args: ``temperature`` (0.07, pml's default), ``symmetric``."""

    def __init__(self, temperature: float = 0.07, symmetric: bool = True):
        super().__init__(symmetric=symmetric)
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        self.pml = pml_losses.NTXentLoss(temperature=self.temperature)
