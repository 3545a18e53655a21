"""Multi-scale and Table II baseline losses against explicit loops over their definitions.

Same pattern as tests/test_losses.py (whose helpers are reused): each reference
loops over anchors / pairs / triplets / proxies in float64, straight from the
definition in the loss's docstring, and values *and* gradients are compared.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_losses import (
    assert_close_loss,
    cos,
    make_batch,
    ref_triplet_direction,
    symmetric,
    unit,
    value_and_grads,
)

from dycl.losses import (
    CSLLoss,
    InstanceLoss,
    MultiSimilarityLoss,
    SigmaMultiSimilarityLoss,
    SigmaTripletLoss,
    SoftMarginTripletLoss,
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


# --------------------------------------------------------------------------- soft-margin triplet


def ref_soft_margin_direction(alpha):
    """Mean over all (i, p, n), p same building, n another: log(1 + exp(α (|x_i-y_p|² - |x_i-y_n|²)))."""
    def direction(x, y, _levels, la, lb):
        terms = []
        ux, uy = unit(x), unit(y)
        for i in range(x.shape[0]):
            for p in range(y.shape[0]):
                if la[i] != lb[p]:
                    continue
                for k in range(y.shape[0]):
                    if la[i] == lb[k]:
                        continue
                    d_p = ((ux[i] - uy[p]) ** 2).sum()
                    d_n = ((ux[i] - uy[k]) ** 2).sum()
                    terms.append(torch.log(1 + torch.exp(alpha * (d_p - d_n))))
        return sum(terms) / len(terms)
    return direction


@pytest.mark.parametrize("alpha", [1.0, 10.0])
def test_soft_margin_triplet_matches_explicit_formula(alpha):
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, seed=240, buildings=4)
    loss = SoftMarginTripletLoss(alpha=alpha)
    slow = symmetric(ref_soft_margin_direction(alpha))
    value = assert_close_loss(lambda a, b: loss(a, b, levels, la, lb),
                              lambda a, b: slow(a, b, levels, la, lb), emb_a, emb_b, rtol=1e-4, atol=1e-6)
    assert float(value) > 0
    # Unlike the hinge, the soft margin never stops pulling: an easy triplet still has a gradient.
    easy = SoftMarginTripletLoss(alpha=alpha)
    a = torch.tensor([[1.0, 0.0]], requires_grad=True)
    b = torch.tensor([[1.0, 0.1], [-1.0, 0.0]])
    easy(a, b, None, torch.tensor([0]), torch.tensor([0, 1])).backward()
    assert float(a.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="alpha"):
        SoftMarginTripletLoss(alpha=0)


# --------------------------------------------------------------------------- instance loss


def ref_instance(weight, bias):
    """½ (CE over view a + CE over view b) of the shared classifier on L2-normalised embeddings."""
    def view(x, labels):
        total = x.new_zeros(())
        for e, y in zip(unit(x), labels, strict=True):
            logits = [torch.dot(e, weight[c]) + bias[c] for c in range(weight.shape[0])]
            total = total - logits[int(y)] + torch.log(sum(torch.exp(z) for z in logits))
        return total / x.shape[0]

    def loss(a, b, _levels, la, lb):
        return 0.5 * (view(a, la) + view(b, lb))
    return loss


def test_instance_loss_matches_explicit_formula():
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, d=8, buildings=6, seed=250, a_in_b=False)
    torch.manual_seed(0)
    loss = InstanceLoss(num_buildings=6, embedding_dim=8)
    with torch.no_grad():  # a classifier that separates something, so the gradients are not tiny
        loss.classifier.weight.mul_(8.0)
    w, b = loss.classifier.weight, loss.classifier.bias
    value = loss(emb_a, emb_b, levels, la, lb)
    grad_w, grad_b = torch.autograd.grad(value, [w, b])
    w64 = w.detach().double().requires_grad_(True)
    b64 = b.detach().double().requires_grad_(True)
    slow = ref_instance(w64, b64)(emb_a.double(), emb_b.double(), levels, la, lb)
    slow_w, slow_b = torch.autograd.grad(slow, [w64, b64])
    torch.testing.assert_close(value.double(), slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_w.double(), slow_w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_b.double(), slow_b, rtol=1e-4, atol=1e-6)
    assert_close_loss(lambda x, y: loss(x, y, levels, la, lb),
                      lambda x, y: ref_instance(w.detach().double(), b.detach().double())(x, y, levels, la,
                                                                                          lb),
                      emb_a, emb_b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"building labels must lie in \[0, 5\]"):
        loss(emb_a, emb_b, levels, la + 6, lb)


def test_instance_classifier_trains_with_the_head_not_as_proxies():
    combined = build_loss("instance:1,cluster:0.1", num_buildings=5, embedding_dim=4)
    assert [p.shape for p in combined.classifier_parameters()] == [(5, 4), (5,)]
    assert [p.shape for p in combined.proxy_parameters()] == [(4, 5)]  # only the clustering proxies
    with pytest.raises(ValueError, match="num_buildings and embedding_dim"):
        build_loss("instance")


# --------------------------------------------------------------------------- CSL


def ref_csl(proxies, table, margins, tau):
    """½ (mean_a + mean_b) of Σ_s log(1 + Σ_{c: level(y, c) < L - s} exp(τ (S_c − S_y + m_s)))."""
    L = len(margins)

    def view(x, labels):
        total = x.new_zeros(())
        pn = unit(proxies)
        for e, y in zip(unit(x), labels, strict=True):
            y = int(y)
            own = torch.dot(e, pn[y])
            for s, m in enumerate(margins):
                inner = x.new_zeros(())
                for c in range(pn.shape[0]):
                    if int(table[y, c]) < L - s:
                        inner = inner + torch.exp(tau * (torch.dot(e, pn[c]) - own + m))
                total = total + torch.log(1 + inner)
        return total / x.shape[0]

    def loss(a, b, _levels, la, lb):
        return 0.5 * (view(a, la) + view(b, lb))
    return loss


@pytest.mark.parametrize("L", [2, 3])
def test_csl_matches_explicit_formula(L):
    emb_a, emb_b, levels, la, lb, table = make_batch(n=5, m=6, d=8, L=L, buildings=6, seed=260 + L,
                                                     a_in_b=False)
    loss = CSLLoss(level_table=table, embedding_dim=8, scale=4.0,  # τ = 4: gradients of every scale count
                   margins=(0.25, 0.45) if L == 2 else None)
    margins = loss.margins
    assert margins == ((0.25, 0.45) if L == 2 else (0.25, 0.35, 0.45))
    p = loss.proxies
    value = loss(emb_a, emb_b, levels, la, lb)
    grad_p, = torch.autograd.grad(value, [p])
    p64 = p.detach().double().requires_grad_(True)
    slow = ref_csl(p64, table, margins, 4.0)(emb_a.double(), emb_b.double(), levels, la, lb)
    slow_p, = torch.autograd.grad(slow, [p64])
    torch.testing.assert_close(value.double(), slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_p.double(), slow_p, rtol=1e-4, atol=1e-6)
    assert_close_loss(lambda x, y: loss(x, y, levels, la, lb),
                      lambda x, y: ref_csl(p.detach().double(), table, margins, 4.0)(x, y, levels, la, lb),
                      emb_a, emb_b, rtol=1e-4, atol=1e-6)


def test_csl_needs_the_level_table_and_keeps_it_out_of_checkpoints():
    _, _, _, _, _, table = make_batch(buildings=6, seed=270)
    with pytest.raises(ValueError, match="needs level_table"):
        build_loss("csl", num_buildings=6, embedding_dim=8)
    with pytest.raises(ValueError, match=r"level_table: expected shape \(5, 5\)"):
        build_loss("csl", num_buildings=5, embedding_dim=8, level_table=table)
    with pytest.raises(ValueError, match="one finite margin per scale"):
        CSLLoss(level_table=table, embedding_dim=8, margins=(0.1, 0.2))
    combined = build_loss("csl,dycl:0.2", num_buildings=6, embedding_dim=8, level_table=table)
    assert list(combined.state_dict()) == ["losses.csl.proxies"]  # the table is data, not state
    assert combined.proxy_parameters() == [combined.losses["csl"].proxies]
    # A scale with no building outside it contributes 0: the two buildings are within the largest
    # threshold of each other (level 1), so only scales 0 and 1 have negatives.
    near = torch.tensor([[3, 1], [1, 3]])
    csl = CSLLoss(level_table=near, embedding_dim=2, scale=4.0)
    with torch.no_grad():
        csl.proxies.copy_(torch.eye(2))
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    value = csl(a, b, None, torch.tensor([0]), torch.tensor([1]))
    expected = sum(math.log1p(math.exp(4.0 * (0.0 - 1.0 + m))) for m in (0.25, 0.35))
    assert float(value.detach()) == pytest.approx(expected, rel=1e-6)
