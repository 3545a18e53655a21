"""Helpers of the multi-scale losses: which scale terms are summed, who is relevant at a scale, and a
masked log-sum-exp.

At scale ``s`` (0 = the exact building, …, L−1 = the largest neighbourhood) a
reference is relevant to an anchor when their level is at least ``L − s``
(DESIGN §3). Multi-scale losses (DyCL, Σ-Triplet, Σ-Multi-Similarity) sum one
term per scale; their ``scales`` option keeps only some of the terms, e.g.
``scales=(1,)`` trains at the middle scale alone (the single-scale runs of the
paper's Fig. 6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .base import as_compute_dtype


def active_scales(scales: Sequence[int] | None, num_levels: int) -> tuple[int, ...]:
    """The sorted scale indices of the summed terms; all ``0..L-1`` when ``scales`` is None.

    Raises:
        ValueError: ``scales`` is not a non-empty list of distinct integers in ``[0, L-1]``.
    """
    if scales is None:
        return tuple(range(num_levels))
    items = list(scales) if isinstance(scales, (list, tuple)) else []
    in_range = all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < num_levels for s in items)
    if not items or not in_range or len(set(items)) != len(items):
        raise ValueError(
            f"scales: expected a list of distinct scale indices in [0, {num_levels - 1}], got {scales!r}"
        )
    return tuple(sorted(items))


def relevant_at_scale(levels: torch.Tensor, num_levels: int, scale: int) -> torch.Tensor:
    """Boolean mask of the references relevant at ``scale``: ``levels >= L − scale``."""
    return levels >= num_levels - scale


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise log Σ_{mask} exp(x) and whether the row has any entry.

    Empty rows return 0 (to be masked by the caller) with a zero, finite gradient:
    their entries are replaced by constants before ``logsumexp`` so no NaN can leak.
    """
    nonempty = mask.any(dim=1)
    filled = x.masked_fill(~mask, float("-inf"))
    filled = torch.where(nonempty[:, None], filled, torch.zeros((), dtype=x.dtype, device=x.device))
    return torch.logsumexp(filled, dim=1), nonempty


def both_directions(direction: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                    emb_a: torch.Tensor, emb_b: torch.Tensor, levels: torch.Tensor,
                    symmetric: bool) -> torch.Tensor:
    """``direction(a, b, levels)`` in the compute dtype, averaged with ``direction(b, a, levelsᵀ)``
    when ``symmetric``.

    The per-scale losses (Σ-Triplet, Σ-Multi-Similarity) are defined for one
    view querying the other; the symmetric form averages both directions.
    """
    a, b = as_compute_dtype(emb_a), as_compute_dtype(emb_b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    levels = levels.long()
    forward = direction(a, b, levels)
    if not symmetric:
        return forward
    return 0.5 * (forward + direction(b, a, levels.t()))


def scales_repr(scales: tuple[int, ...], num_levels: int) -> str:
    """``", scales=(1,)"`` when only some scales are summed, ``""`` when all are (for ``extra_repr``)."""
    return "" if scales == tuple(range(num_levels)) else f", scales={scales}"


__all__ = ["active_scales", "masked_logsumexp", "relevant_at_scale", "scales_repr"]
