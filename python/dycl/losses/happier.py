"""HAPPIER: smooth-rank surrogate of 1 − H-AP (Ramzi et al., ECCV 2022), across views.

For an anchor (query) of view a, the references are the items of view b with
similarities ``s_j`` and levels ``lv_j``. With the per-item relevance of
DESIGN §4, ``rel_j = (lv_j / (L−1)) / n_{lv_j}`` for ``lv_j > 0`` (``n_v`` =
items at level v for this anchor in the batch) and 0 for pure negatives, and
``t = s_j − s_k`` (positive when j is ranked above k):

* ``rank_k  = 1 + Σ_{j≠k} R(s_j − s_k)`` where ``R`` is the smooth step
  ``H̃`` below for references of **lower level** than k (the ones that should
  be ranked after k) and the exact Heaviside step otherwise;
* ``Hrank_k = rel_k + Σ_{j≠k} H(s_j − s_k) · min(rel_j, rel_k)`` (exact step);
* ``H-AP = Σ_{k: lv_k > 0} Hrank_k / rank_k / Σ_k rel_k``.

``H(t) = 1`` for ``t ≥ 0`` and 0 otherwise. The smooth step (HAPPIER's
``step_rank`` with ``delta`` given) is::

    H̃(t) = σ(t/τ)                    t ≤ 0
           start + σ(t/τ)            0 < t ≤ δ
           ρ (t − δ) + offset        t > δ

an upper bound of ``H``, so the loss upper-bounds 1 − H-AP; with ``rho=None``
it is the plain sigmoid ``σ(t/τ)`` everywhere, which tends to the exact
1 − H-AP as τ → 0. Gradients flow only through ``rank_k`` (through ``H̃``),
as in the authors' code. The factor ``1/(L−1)`` of the relevance cancels in
the H-AP ratio, so this loss needs no level count and works for any ``L``.

The loss of one direction is the mean of ``1 − H-AP`` over anchors that have
at least one positive (level > 0) reference; the loss is the average of the
two directions (a→b and b→a). Memory is O(n·m²) per direction: fine for
batches of a few hundred pairs, chunked over anchors to bound temporaries.
"""

from __future__ import annotations

import torch

from .base import PairLoss, cosine_similarity_matrix

# Elements of the (anchors × m × m) temporaries per chunk; keeps peak memory bounded.
_CHUNK_ELEMENTS = 1 << 24


def smooth_step(t: torch.Tensor, tau: float, rho: float | None, delta: float, offset: float,
                start: float) -> torch.Tensor:
    """HAPPIER's smooth upper bound of the Heaviside step (see the module docstring)."""
    sig = torch.sigmoid(t / tau)
    if rho is None:
        return sig
    linear = rho * (t - delta) + offset
    return torch.where(t <= 0, sig, torch.where(t <= delta, start + sig, linear))


class HAPPIERLoss(PairLoss):
    """1 − H-AP smooth-rank surrogate, symmetric across views.

    Args:
        tau: sigmoid temperature (0.01).
        rho: slope of the linear part beyond ``delta`` (100); ``None`` = plain sigmoid.
        delta: where the linear part starts (0.05).
        offset: value of the linear part at ``delta`` (1.44).
        start: added to the sigmoid on ``(0, δ]`` (0.5).
        symmetric: average both directions (default) or use a→b only.
    """

    needs_levels = True

    def __init__(self, tau: float = 0.01, rho: float | None = 100.0, delta: float = 0.05,
                 offset: float = 1.44, start: float = 0.5, symmetric: bool = True):
        super().__init__()
        for name, value in (("tau", tau), ("delta", delta)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name}: expected a positive number, got {value!r}")
        if rho is not None and not (isinstance(rho, (int, float)) and rho >= 0):
            raise ValueError(f"rho: expected a non-negative number or None, got {rho!r}")
        self.tau = float(tau)
        self.rho = None if rho is None else float(rho)
        self.delta = float(delta)
        self.offset = float(offset)
        self.start = float(start)
        self.symmetric = bool(symmetric)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, rho={self.rho}, delta={self.delta}, offset={self.offset}, "
                f"start={self.start}, symmetric={self.symmetric}")

    def per_anchor_hap(self, sim: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Smooth H-AP of every row of ``sim`` and the mask of rows that have a positive."""
        levels = levels.long()
        n, m = sim.shape
        has_positive = (levels > 0).any(dim=1)
        not_self = ~torch.eye(m, dtype=torch.bool, device=sim.device)
        chunk = max(1, _CHUNK_ELEMENTS // max(1, m * m))
        haps = []
        for lo in range(0, n, chunk):
            s = sim[lo:lo + chunk]
            lv = levels[lo:lo + chunk]
            pos = lv > 0
            # n_v per item: references sharing its level, for its anchor.
            counts = (lv[:, :, None] == lv[:, None, :]).sum(dim=2).to(s.dtype)
            r = torch.where(pos, lv.to(s.dtype) / counts, torch.zeros_like(s))
            # diff[i, k, j] = s_j − s_k: > 0 when reference j is ranked above k.
            diff = s[:, None, :] - s[:, :, None]
            step = (diff >= 0).to(s.dtype) * not_self
            lower = lv[:, None, :] < lv[:, :, None]  # j has a lower level than k
            smooth = smooth_step(diff, self.tau, self.rho, self.delta, self.offset, self.start)
            rank = 1.0 + (torch.where(lower, smooth, step) * not_self).sum(dim=2)
            min_rel = torch.minimum(r[:, None, :], r[:, :, None])
            hrank = r + (step * min_rel).sum(dim=2)
            ratio = torch.where(pos, hrank / rank, torch.zeros_like(rank))
            total_rel = r.sum(dim=1)
            safe_total = torch.where(total_rel > 0, total_rel, torch.ones_like(total_rel))
            haps.append(ratio.sum(dim=1) / safe_total)
        return torch.cat(haps), has_positive

    def _direction(self, sim: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        # Mean over anchors with a positive; 0 (still on the graph) when there is none. No device sync.
        hap, valid = self.per_anchor_hap(sim, levels)
        count = valid.sum().clamp(min=1).to(sim.dtype)
        return torch.where(valid, 1.0 - hap, torch.zeros_like(hap)).sum() / count

    def compute(self, emb_a, emb_b, levels, labels_a=None, labels_b=None) -> torch.Tensor:
        sim = cosine_similarity_matrix(emb_a, emb_b)
        forward = self._direction(sim, levels)
        if not self.symmetric:
            return forward
        # An anchor of a with a positive j makes j an anchor of b with a positive: both
        # directions are empty or non-empty together.
        return 0.5 * (forward + self._direction(sim.t(), levels.t()))
