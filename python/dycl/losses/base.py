"""The one calling convention shared by every loss, and small helpers.

Every loss is an ``nn.Module`` configured by its constructor and called as::

    loss(emb_a, emb_b, levels, labels_a=None, labels_b=None) -> scalar tensor

* ``emb_a`` (n, d): view-a embeddings (satellite), ``emb_b`` (m, d): view-b
  embeddings (drone). Any float dtype; bf16/fp16 are computed in float32.
  Losses work with cosine similarities and normalise the rows themselves.
* ``levels`` (n, m) integer tensor: ``levels[i, j]`` is the relevance level
  between item i of view a and item j of view b: ``L`` = same building,
  ``L-1`` … ``1`` = nearer to farther scales, ``0`` = pure negative (DESIGN §3).
  :func:`batch_levels` builds it from building labels and the B×B level table.
* ``labels_a`` (n,), ``labels_b`` (m,): building indices (long), required by
  label- and proxy-based losses, ignored by the others. They must agree with
  ``levels`` (``levels[i, j] == L`` exactly when ``labels_a[i] == labels_b[j]``).

Symmetric losses average the a→b and b→a directions.
"""

from __future__ import annotations

import torch
from torch import nn


def batch_levels(level_table: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """``levels[i, j] = level_table[labels_a[i], labels_b[j]]`` as a long tensor (n, m)."""
    table = torch.as_tensor(level_table)
    return table[labels_a.long()[:, None], labels_b.long()[None, :]].long()


def as_compute_dtype(x: torch.Tensor) -> torch.Tensor:
    """float32 for half/bfloat16 inputs; float32/float64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def cosine_similarity_matrix(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """(n, m) cosine similarities, in the promoted compute dtype of the two inputs."""
    a = as_compute_dtype(emb_a)
    b = as_compute_dtype(emb_b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    a = nn.functional.normalize(a.to(dtype), dim=1)
    b = nn.functional.normalize(b.to(dtype), dim=1)
    return a @ b.t()


class PairLoss(nn.Module):
    """Base class: input checks for the shared calling convention.

    Subclasses set ``needs_labels`` / ``needs_levels`` and implement
    :meth:`compute`. Checks are shape/dtype checks (no device sync) plus, when
    ``max_level`` is known, one range check of ``levels`` (a device sync).
    A training loop that has checked its level table and labels once sets
    :attr:`check_values` to False (``CombinedLoss.set_value_checks(False)``):
    the value checks, and with them every host-device sync, leave the step.
    """

    needs_labels: bool = False
    needs_levels: bool = True
    #: Range checks of ``levels`` (and of proxy losses' labels), each a host-device sync.
    check_values: bool = True

    def max_level(self) -> int | None:
        """The largest level this loss accepts (``L``), or None when any level works."""
        return None

    def forward(
        self,
        emb_a: torch.Tensor,
        emb_b: torch.Tensor,
        levels: torch.Tensor | None = None,
        labels_a: torch.Tensor | None = None,
        labels_b: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check(emb_a, emb_b, levels, labels_a, labels_b)
        return self.compute(emb_a, emb_b, levels, labels_a, labels_b)

    def compute(self, emb_a, emb_b, levels, labels_a, labels_b) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check(self, emb_a, emb_b, levels, labels_a, labels_b) -> None:
        name = type(self).__name__
        for arg, emb in (("emb_a", emb_a), ("emb_b", emb_b)):
            if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or not emb.is_floating_point():
                shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
                raise ValueError(f"{name}: {arg} must be a 2-D float tensor (rows = items), got {shape}")
            if emb.shape[0] == 0:
                raise ValueError(f"{name}: {arg} is empty")
        if emb_a.shape[1] != emb_b.shape[1]:
            raise ValueError(
                f"{name}: emb_a and emb_b have different widths ({emb_a.shape[1]} vs {emb_b.shape[1]})"
            )
        n, m = emb_a.shape[0], emb_b.shape[0]
        if self.needs_levels:
            if levels is None:
                raise ValueError(f"{name}: levels (n, m) is required")
            if not isinstance(levels, torch.Tensor) or tuple(levels.shape) != (n, m):
                shape = tuple(levels.shape) if isinstance(levels, torch.Tensor) else type(levels).__name__
                raise ValueError(f"{name}: levels must have shape ({n}, {m}), got {shape}")
            if levels.is_floating_point() or levels.is_complex():
                raise ValueError(f"{name}: levels must be an integer tensor, got {levels.dtype}")
            top = self.max_level()
            if top is not None and self.check_values:
                lo, hi = (int(v) for v in torch.aminmax(levels.long()))
                if lo < 0 or hi > top:
                    raise ValueError(
                        f"{name}: levels must lie in [0, {top}] (L = {top} positive levels), got [{lo}, {hi}]"
                    )
        if self.needs_labels:
            for arg, labels, size in (("labels_a", labels_a, n), ("labels_b", labels_b, m)):
                if labels is None:
                    raise ValueError(f"{name}: {arg} (building indices) is required")
                if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (size,):
                    shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
                    raise ValueError(f"{name}: {arg} must have shape ({size},), got {shape}")
                if labels.is_floating_point() or labels.is_complex():
                    raise ValueError(f"{name}: {arg} must be an integer tensor, got {labels.dtype}")


class PMLCrossViewLoss(PairLoss):
    """Adapter for a pytorch-metric-learning loss applied across views with building labels.

    Direction a→b calls ``pml(emb_a, labels_a, ref_emb=emb_b, ref_labels=labels_b)``
    (anchors from a, positives/negatives from b: positive = same building);
    the symmetric loss averages it with b→a. Subclasses set ``self.pml``.
    """

    needs_labels = True
    needs_levels = False

    def __init__(self, symmetric: bool = True):
        super().__init__()
        self.symmetric = bool(symmetric)

    def compute(self, emb_a, emb_b, levels=None, labels_a=None, labels_b=None) -> torch.Tensor:
        a, b = as_compute_dtype(emb_a), as_compute_dtype(emb_b)
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
        la, lb = labels_a.long(), labels_b.long()
        if lb is la:
            # pml drops the diagonal when ``ref_labels is labels`` (same-set mining); across
            # views the diagonal is the true pair, so hand it a distinct tensor.
            lb = lb.clone()
        forward = self.pml(a, la, ref_emb=b, ref_labels=lb)
        if not self.symmetric:
            return forward
        backward = self.pml(b, lb, ref_emb=a, ref_labels=la)
        return 0.5 * (forward + backward)
