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
    cos,
    make_batch,
    ref_triplet_direction,
    symmetric,
    value_and_grads,
)

from dycl.losses import (
    MultiSimilarityLoss,
    SigmaMultiSimilarityLoss,
    SigmaTripletLoss,
    TripletLoss,
    build_loss,
)


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


# --------------------------------------------------------------------------- Σ-Multi-Similarity


def ref_sigma_ms_direction(L, alpha, beta, base, scales=None):
    """Σ_s of the per-anchor MS loss with positives level >= L - s and negatives level < L - s."""
    def direction(x, y, levels, _la=None, _lb=None):
        total = x.sum() * 0
        for scale in (range(L) if scales is None else scales):
            term = x.sum() * 0
            for i in range(x.shape[0]):
                pos = neg = x.sum() * 0
                for j in range(y.shape[0]):
                    if int(levels[i, j]) >= L - scale:
                        pos = pos + torch.exp(-alpha * (cos(x, y, i, j) - base))
                    else:
                        neg = neg + torch.exp(beta * (cos(x, y, i, j) - base))
                term = term + torch.log(1 + pos) / alpha + torch.log(1 + neg) / beta
            total = total + term / x.shape[0]
        return total
    return direction


@pytest.mark.parametrize("L", [1, 3, 4])
def test_sigma_ms_matches_explicit_formula(L):
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, L=L, seed=220 + L)
    loss = SigmaMultiSimilarityLoss(num_levels=L, alpha=2.0, beta=10.0, base=0.5)
    slow = symmetric(ref_sigma_ms_direction(L, 2.0, 10.0, 0.5))
    value = assert_close_loss(lambda a, b: loss(a, b, levels), lambda a, b: slow(a, b, levels, la, lb),
                              emb_a, emb_b, rtol=1e-4, atol=1e-6)
    assert float(value) > 0


@pytest.mark.parametrize("scale", [0, 2])
def test_sigma_ms_single_scale_and_the_single_scale_baseline(scale):
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, L=3, seed=230 + scale, dtype=torch.float64)
    loss = SigmaMultiSimilarityLoss(beta=10.0, scales=[scale])
    slow = symmetric(ref_sigma_ms_direction(3, 2.0, 10.0, 0.5, scales=[scale]))
    assert_close_loss(lambda a, b: loss(a, b, levels), lambda a, b: slow(a, b, levels, la, lb),
                      emb_a, emb_b, rtol=1e-9)
    if scale == 0:  # the same-building Multi-Similarity baseline is the scale-0 term
        torch.testing.assert_close(loss(emb_a, emb_b, levels),
                                   MultiSimilarityLoss(beta=10.0)(emb_a, emb_b, levels, la, lb), rtol=1e-12,
                                   atol=0)


def test_sigma_ms_is_registered_with_one_scale_per_level():
    four = build_loss("sigmams", levels=4, options={"sigma_ms": {"beta": 20.0}})
    assert four.spec == "sigmams:1" and four.losses["sigmams"].num_levels == 4
    assert four.losses["sigmams"].beta == 20.0
    with pytest.raises(ValueError, match="scales"):
        SigmaMultiSimilarityLoss(scales=[3])
