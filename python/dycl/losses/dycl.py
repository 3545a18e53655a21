"""Dynamic Contrastive Learning loss (paper Eq. 4, DESIGN §6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import PairLoss, cosine_similarity_matrix

PAPER_MARGINS = (0.45, 0.35, 0.25)


def default_margins(num_levels: int) -> tuple[float, ...]:
    """The paper's margins for L = 3; for other L, evenly spaced from 0.45 down to 0.25."""
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"levels: expected a positive number of levels, got {num_levels!r}")
    if num_levels == 1:
        return (PAPER_MARGINS[0],)
    step = (PAPER_MARGINS[0] - PAPER_MARGINS[-1]) / (num_levels - 1)
    return tuple(round(PAPER_MARGINS[0] - step * i, 10) for i in range(num_levels))


def _masked_logsumexp(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise log Σ_{mask} exp(x) and whether the row has any entry.

    Empty rows return 0 (to be masked by the caller) with a zero, finite gradient:
    their entries are replaced by constants before ``logsumexp`` so no NaN can leak.
    """
    nonempty = mask.any(dim=1)
    filled = x.masked_fill(~mask, float("-inf"))
    filled = torch.where(nonempty[:, None], filled, torch.zeros((), dtype=x.dtype, device=x.device))
    return torch.logsumexp(filled, dim=1), nonempty


def _active_scales(scales: Sequence[int] | None, num_levels: int) -> tuple[int, ...]:
    """The sorted scale indices of the summed terms; all ``0..L-1`` when ``scales`` is None."""
    if scales is None:
        return tuple(range(num_levels))
    items = list(scales) if isinstance(scales, (list, tuple)) else []
    in_range = all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < num_levels for s in items)
    if not items or not in_range or len(set(items)) != len(items):
        raise ValueError(
            f"scales: expected a list of distinct scale indices in [0, {num_levels - 1}], got {scales!r}"
        )
    return tuple(sorted(items))


class DyCLLoss(PairLoss):
    """Multi-margin contrastive loss over spatial scales.

    For anchor ``i`` of view a against the batch of view b (cosine similarities ``r``)::

        ℓ_i = Σ_{l<L} log(1 + Σ_{j: lv(i,j) ≥ L−l} Σ_{k: lv(i,k) = 0} exp(τ (r_ik − r_ij + m^l)))

    computed as ``softplus(LSE_j(−τ r_ij) + LSE_k(τ r_ik) + τ m^l)`` (the double sum
    factorises), which is stable in float32 and float64. The direction a→b is the
    mean of ``ℓ_i`` over **all** n anchors; the loss is the average of a→b and b→a
    (``levels.T``). A term whose positive set (level ≥ L−l) or negative set
    (level 0) is empty in the batch contributes 0 (log 1) — an anchor without
    any pure negative contributes 0 altogether, but still counts in the mean.

    Args:
        margins: ``(m^0, …, m^{L−1})``, one per positive level, scale 0 (same
            building) first; ``L = len(margins)``. Paper: (0.45, 0.35, 0.25).
        scale: the temperature-like factor τ (paper: 32).
        symmetric: average both directions (default, as in the paper) or use a→b only.
        scales: the scale terms ``l`` that are summed (default ``None``: all of them, Eq. 4).
            ``scales=(s,)`` trains at the single scale ``s`` with its margin ``m^s``
            (the single-scale runs of the paper's Fig. 6); the other terms are left out.
    """

    needs_levels = True

    def __init__(self, margins: Sequence[float] = PAPER_MARGINS, scale: float = 32.0, symmetric: bool = True,
                 scales: Sequence[int] | None = None):
        super().__init__()
        try:
            margins = tuple(float(m) for m in margins)
        except (TypeError, ValueError):
            raise ValueError(f"margins: expected a sequence of numbers, got {margins!r}") from None
        if not margins:
            raise ValueError("margins: need one margin per positive level, got none")
        if not all(torch.isfinite(torch.tensor(margins))):
            raise ValueError(f"margins: must be finite, got {margins}")
        if not (isinstance(scale, (int, float)) and scale > 0 and scale != float("inf")):
            raise ValueError(f"scale: expected a positive finite number, got {scale!r}")
        self.margins = margins
        self.scale = float(scale)
        self.symmetric = bool(symmetric)
        self.scales = _active_scales(scales, len(margins))

    @property
    def num_levels(self) -> int:
        return len(self.margins)

    def max_level(self) -> int:
        return self.num_levels

    def extra_repr(self) -> str:
        active = "" if self.scales == tuple(range(self.num_levels)) else f", scales={self.scales}"
        return f"margins={self.margins}, scale={self.scale}, symmetric={self.symmetric}{active}"

    def per_anchor(self, sim: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """ℓ_i for every row of ``sim`` (anchors) against its columns, shape (n,)."""
        L = self.num_levels
        tau = self.scale
        negatives = levels == 0
        lse_neg, has_neg = _masked_logsumexp(tau * sim, negatives)
        total = torch.zeros(sim.shape[0], dtype=sim.dtype, device=sim.device)
        for scale_index in self.scales:
            margin = self.margins[scale_index]
            positives = levels >= L - scale_index
            lse_pos, has_pos = _masked_logsumexp(-tau * sim, positives)
            term = F.softplus(lse_pos + lse_neg + tau * margin)
            total = total + torch.where(has_pos & has_neg, term, torch.zeros_like(term))
        return total

    def compute(self, emb_a, emb_b, levels, labels_a=None, labels_b=None) -> torch.Tensor:
        sim = cosine_similarity_matrix(emb_a, emb_b)
        levels = levels.long()
        forward = self.per_anchor(sim, levels).mean()
        if not self.symmetric:
            return forward
        backward = self.per_anchor(sim.t(), levels.t()).mean()
        return 0.5 * (forward + backward)
