"""Multi-scale and Table II baseline losses against explicit loops over their definitions.

Same pattern as tests/test_losses.py (whose helpers are reused): each reference
loops over anchors / pairs / triplets / proxies in float64, straight from the
definition in the loss's docstring, and values *and* gradients are compared.
"""

from __future__ import annotations

import pytest
import torch
from test_losses import (
    assert_close_loss,
    make_batch,
    ref_triplet_direction,
    symmetric,
    value_and_grads,
)

from dycl.losses import SigmaTripletLoss, TripletLoss, build_loss


def at_scale(scale, L):
    """positive_fn of ref_triplet_direction: relevant at ``scale`` means level >= L - scale."""
    return lambda lv, _a, _b, i, j: int(lv[i, j]) >= L - scale


# --------------------------------------------------------------------------- Σ-Triplet, single scale (Fig. 6)


@pytest.mark.parametrize("scale", [0, 1, 2])
def test_single_scale_triplet_matches_explicit_formula(scale):
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, L=3, seed=200 + scale)
    loss = SigmaTripletLoss(num_levels=3, margin=0.3, scales=[scale])
    slow = symmetric(ref_triplet_direction(0.3, at_scale(scale, 3)))
    value = assert_close_loss(lambda a, b: loss(a, b, levels), lambda a, b: slow(a, b, levels, la, lb),
                              emb_a, emb_b, rtol=1e-4, atol=1e-6)
    assert float(value) > 0


def test_single_scale_triplets_add_up_and_scale0_is_the_triplet_loss():
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, L=3, seed=210, dtype=torch.float64)
    parts = sum(SigmaTripletLoss(margin=0.2, scales=[s])(emb_a, emb_b, levels) for s in range(3))
    torch.testing.assert_close(parts, SigmaTripletLoss(margin=0.2)(emb_a, emb_b, levels), rtol=1e-12, atol=0)
    # At scale 0 the positives are the same building and every other building is a negative.
    torch.testing.assert_close(SigmaTripletLoss(margin=0.2, scales=[0])(emb_a, emb_b, levels),
                               TripletLoss(margin=0.2)(emb_a, emb_b, levels, la, lb), rtol=1e-12, atol=0)
    # Scale 1 is not scale 0: the 200 m neighbours move from the negatives to the positives.
    assert not torch.allclose(SigmaTripletLoss(margin=0.2, scales=[1])(emb_a, emb_b, levels),
                              SigmaTripletLoss(margin=0.2, scales=[0])(emb_a, emb_b, levels))


def test_sigma_triplet_scales_option_is_validated_and_reaches_build_loss():
    for bad in ([], [3], [1, 1], 1, [True]):
        with pytest.raises(ValueError, match="scales"):
            SigmaTripletLoss(scales=bad)
    combined = build_loss("sigmatriplet", options={"sigmatriplet": {"scales": [2]}})
    assert combined.losses["sigmatriplet"].scales == (2,)
    assert "scales=(2,)" in repr(combined.losses["sigmatriplet"])
    assert SigmaTripletLoss().scales == (0, 1, 2)


def test_single_scale_without_a_negative_is_zero():
    a = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    value, grads = value_and_grads(lambda x, y: SigmaTripletLoss(scales=[0])(x, y, torch.tensor([[3]])), a, b)
    assert float(value) == 0.0 and all(float(g.abs().max()) == 0.0 for g in grads)  # no negative: no triplet
