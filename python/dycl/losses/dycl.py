"""Dynamic Contrastive Learning loss (paper Eq. 4, DESIGN §6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import PairLoss, as_compute_dtype, cosine_similarity_matrix
from .multiscale import active_scales, masked_logsumexp, relevant_at_scale, scales_repr

PAPER_MARGINS = (0.45, 0.35, 0.25)

#: ``normalize`` choices: per embedding (the paper's cosine) or per feature over the batch (the release).
NORMALIZATIONS = ("embedding", "batch")


def default_margins(num_levels: int) -> tuple[float, ...]:
    """The paper's margins for L = 3; for other L, evenly spaced from 0.45 down to 0.25."""
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"levels: expected a positive number of levels, got {num_levels!r}")
    if num_levels == 1:
        return (PAPER_MARGINS[0],)
    step = (PAPER_MARGINS[0] - PAPER_MARGINS[-1]) / (num_levels - 1)
    return tuple(round(PAPER_MARGINS[0] - step * i, 10) for i in range(num_levels))


def batch_normalized_similarity(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """The release's similarities: ``F.normalize(a, dim=0) @ F.normalize(b, dim=0).T``."""
    a = as_compute_dtype(emb_a)
    b = as_compute_dtype(emb_b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return F.normalize(a.to(dtype), dim=0) @ F.normalize(b.to(dtype), dim=0).t()


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
            ``scales=(s,)`` trains at the single scale ``s`` with its margin ``m^s``; the other
            terms are left out.
        normalize: ``"embedding"`` (default, the paper): ``r`` are cosine similarities, each
            embedding L2-normalised. ``"batch"``: the authors' release, which calls
            ``F.normalize(x, dim=0)`` on each view's batch, i.e. normalises every *feature* over
            the batch, and takes ``r = x̃_a · x̃_b``. On unit-norm embeddings that scales the
            similarities by about ``d / n`` (≈ 4 at d 512, batch 128), so the effective τ and
            margins change with the batch size; offered only to reproduce the release.
    """

    needs_levels = True

    def __init__(self, margins: Sequence[float] = PAPER_MARGINS, scale: float = 32.0, symmetric: bool = True,
                 scales: Sequence[int] | None = None, normalize: str = "embedding"):
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
        self.scales = active_scales(scales, len(margins))
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize: expected one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
        self.normalize = normalize

    @property
    def num_levels(self) -> int:
        return len(self.margins)

    def max_level(self) -> int:
        return self.num_levels

    def extra_repr(self) -> str:
        batch = ", normalize='batch'" if self.normalize == "batch" else ""
        return (f"margins={self.margins}, scale={self.scale}, symmetric={self.symmetric}"
                f"{scales_repr(self.scales, self.num_levels)}{batch}")

    def per_anchor(self, sim: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """ℓ_i for every row of ``sim`` (anchors) against its columns, shape (n,)."""
        L = self.num_levels
        tau = self.scale
        negatives = levels == 0
        lse_neg, has_neg = masked_logsumexp(tau * sim, negatives)
        total = torch.zeros(sim.shape[0], dtype=sim.dtype, device=sim.device)
        for scale_index in self.scales:
            margin = self.margins[scale_index]
            positives = relevant_at_scale(levels, L, scale_index)
            lse_pos, has_pos = masked_logsumexp(-tau * sim, positives)
            term = F.softplus(lse_pos + lse_neg + tau * margin)
            total = total + torch.where(has_pos & has_neg, term, torch.zeros_like(term))
        return total

    def compute(self, emb_a, emb_b, levels, labels_a=None, labels_b=None) -> torch.Tensor:
        if self.normalize == "batch":
            sim = batch_normalized_similarity(emb_a, emb_b)
        else:
            sim = cosine_similarity_matrix(emb_a, emb_b)
        levels = levels.long()
        forward = self.per_anchor(sim, levels).mean()
        if not self.symmetric:
            return forward
        backward = self.per_anchor(sim.t(), levels.t()).mean()
        return 0.5 * (forward + backward)
