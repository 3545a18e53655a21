"""Losses against slow, explicit implementations of their formulas (values and gradients).

Each reference below loops over anchors / pairs / triplets with Python control
flow, straight from the formula in the loss's docstring, in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from dycl.losses import (
    PAPER_LOSS,
    ClusterLoss,
    CombinedLoss,
    ContrastiveLoss,
    DyCLLoss,
    HAPPIERLoss,
    InfoNCELoss,
    MultiSimilarityLoss,
    NormalizedSoftmaxLoss,
    SigmaTripletLoss,
    TripletLoss,
    batch_levels,
    build_loss,
    default_margins,
    make_proxy_optimizer,
    parse_loss_spec,
)

# --------------------------------------------------------------------------- data


def make_batch(n=6, m=7, d=8, L=3, buildings=6, dtype=torch.float32, seed=0, a_in_b=True):
    """Random embeddings and a consistent (labels, level table, levels) triple.

    The level table is symmetric with L on the diagonal (same building) and
    random levels in [0, L-1] elsewhere, so every level occurs.
    """
    g = torch.Generator().manual_seed(seed)
    for _attempt in range(1000):  # redraw until every level 0..L occurs in the batch
        table = torch.randint(0, L, (buildings, buildings), generator=g)
        table = torch.triu(table, 1)
        table = table + table.t()
        table.fill_diagonal_(L)
        labels_b = torch.randint(0, buildings, (m,), generator=g)
        if a_in_b:  # every anchor of view a has its own building in view b
            labels_a = labels_b[torch.randint(0, m, (n,), generator=g)]
        else:
            labels_a = torch.randint(0, buildings, (n,), generator=g)
        if set(batch_levels(table, labels_a, labels_b).unique().tolist()) == set(range(L + 1)):
            break
    else:
        raise AssertionError("could not draw a batch with every level")
    emb_a = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    emb_b = torch.randn(m, d, generator=g, dtype=torch.float64).to(dtype)
    levels = batch_levels(table, labels_a, labels_b)
    return emb_a, emb_b, levels, labels_a, labels_b, table


def leaf(x, dtype=None):
    return x.detach().to(dtype or x.dtype).clone().requires_grad_(True)


def value_and_grads(fn, *tensors, dtype=None):
    leaves = [leaf(t, dtype) for t in tensors]
    value = fn(*leaves)
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True)]
    return value.detach(), grads


def assert_close_loss(fast, slow, emb_a, emb_b, rtol=1e-5, atol=1e-6, dtype=None):
    """Compare value and gradients of ``fast(a, b)`` (in ``dtype``) with ``slow(a, b)`` (float64)."""
    v_fast, g_fast = value_and_grads(fast, emb_a, emb_b, dtype=dtype)
    v_slow, g_slow = value_and_grads(slow, emb_a, emb_b, dtype=torch.float64)
    assert torch.isfinite(v_fast)
    torch.testing.assert_close(v_fast.double(), v_slow, rtol=rtol, atol=atol)
    for gf, gs in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(gf.double(), gs, rtol=rtol, atol=atol)
    return v_fast


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


def cos(x, y, i, j):
    return torch.dot(unit(x)[i], unit(y)[j])


def euclid(x, y, i, j):
    return torch.linalg.vector_norm(unit(x)[i] - unit(y)[j])


def symmetric(direction):
    """Average of direction(a, b, levels, la, lb) and direction(b, a, levels.T, lb, la)."""
    def loss(a, b, levels, la, lb):
        return 0.5 * (direction(a, b, levels, la, lb) + direction(b, a, levels.t(), lb, la))
    return loss


# --------------------------------------------------------------------------- references


def ref_dycl_direction(margins, tau):
    def direction(x, y, levels, _la=None, _lb=None):
        L = len(margins)
        n, m = levels.shape
        total = (x.sum() * 0)
        for i in range(n):
            for scale, margin in enumerate(margins):
                inner = (x.sum() * 0)
                for j in range(m):
                    if levels[i, j] < L - scale:
                        continue
                    for k in range(m):
                        if levels[i, k] == 0:
                            inner = inner + torch.exp(tau * (cos(x, y, i, k) - cos(x, y, i, j) + margin))
                total = total + torch.log(1 + inner)
        return total / n
    return direction


def smooth_step_ref(t, tau, rho, delta, offset, start):
    if rho is None or float(t.detach()) <= 0:
        base = torch.sigmoid(t / tau)
        return base
    if float(t.detach()) <= delta:
        return start + torch.sigmoid(t / tau)
    return rho * (t - delta) + offset


def ref_happier_direction(tau=0.01, rho=100.0, delta=0.05, offset=1.44, start=0.5):
    def direction(x, y, levels, _la=None, _lb=None):
        n, m = levels.shape
        losses = []
        for i in range(n):
            lv = [int(v) for v in levels[i]]
            if not any(v > 0 for v in lv):
                continue
            counts = {v: lv.count(v) for v in set(lv)}
            rel = [v / counts[v] if v > 0 else 0.0 for v in lv]
            s = [cos(x, y, i, j) for j in range(m)]
            hap = (x.sum() * 0)
            for k in range(m):
                if lv[k] == 0:
                    continue
                rank = x.new_ones(())
                hrank = x.new_tensor(rel[k])
                for j in range(m):
                    if j == k:
                        continue
                    t = s[j] - s[k]
                    above = 1.0 if float(t.detach()) >= 0 else 0.0
                    if lv[j] < lv[k]:
                        rank = rank + smooth_step_ref(t, tau, rho, delta, offset, start)
                    else:
                        rank = rank + above
                    hrank = hrank + above * min(rel[j], rel[k])
                hap = hap + hrank / rank
            losses.append(1 - hap / sum(rel))
        if not losses:
            return x.sum() * 0
        return sum(losses) / len(losses)
    return direction


def exact_hap_loss(sim, levels, L):
    """1 − H-AP exactly as DESIGN §4 (sort, per-item relevance), mean over anchors with a positive."""
    values = []
    for i in range(sim.shape[0]):
        lv = [int(v) for v in levels[i]]
        if not any(v > 0 for v in lv):
            continue
        order = sorted(range(len(lv)), key=lambda j: (-float(sim[i, j]), j))
        counts = {v: lv.count(v) for v in set(lv)}
        rel = [((v / (L - 1)) / counts[v]) if v > 0 else 0.0 for v in lv]
        ranked = [rel[j] for j in order]
        num = 0.0
        for k, rk in enumerate(ranked):
            if rk > 0:
                hrank = rk + sum(min(rk, rj) for rj in ranked[:k])
                num += hrank / (k + 1)
        values.append(1 - num / sum(rel))
    return sum(values) / len(values)


def ref_cluster(proxies_w, temperature):
    """CE over cos(e, proxy)/T for both views, mean over the 2-view union."""
    def loss(a, b, levels, la, lb):
        emb = torch.cat([a, b])
        labels = torch.cat([la, lb])
        w = proxies_w / proxies_w.norm(dim=0, keepdim=True)
        total = emb.new_zeros(())
        for e, y in zip(unit(emb), labels, strict=True):
            logits = [torch.dot(e, w[:, c].to(e.dtype)) / temperature for c in range(w.shape[1])]
            total = total - logits[int(y)] + torch.log(sum(torch.exp(z) for z in logits))
        return total / emb.shape[0]
    return loss


def ref_infonce_direction(temperature):
    def direction(x, y, _levels, la, lb):
        terms = []
        for i in range(x.shape[0]):
            for p in range(y.shape[0]):
                if la[i] != lb[p]:
                    continue
                pos = torch.exp(cos(x, y, i, p) / temperature)
                neg = sum(torch.exp(cos(x, y, i, k) / temperature)
                          for k in range(y.shape[0]) if lb[k] != la[i])
                terms.append(-torch.log(pos / (pos + neg)))
        return sum(terms) / len(terms)
    return direction


def mean_nonzero(terms, like):
    nonzero = [t for t in terms if float(t.detach()) > 0]
    return sum(nonzero) / len(nonzero) if nonzero else like.sum() * 0


def ref_triplet_direction(margin, positive_fn):
    """Triplets (i, p, k) with positive_fn(i, p) and not positive_fn(i, k)."""
    def direction(x, y, levels, la, lb):
        terms = []
        for i in range(x.shape[0]):
            for p in range(y.shape[0]):
                if not positive_fn(levels, la, lb, i, p):
                    continue
                for k in range(y.shape[0]):
                    if positive_fn(levels, la, lb, i, k):
                        continue
                    terms.append(torch.relu(euclid(x, y, i, p) - euclid(x, y, i, k) + margin))
        return mean_nonzero(terms, x)
    return direction


def same_building(levels, la, lb, i, j):
    return bool(la[i] == lb[j])


def ref_contrastive_direction(pos_margin, neg_margin):
    def direction(x, y, _levels, la, lb):
        pos, neg = [], []
        for i in range(x.shape[0]):
            for j in range(y.shape[0]):
                d = euclid(x, y, i, j)
                if la[i] == lb[j]:
                    pos.append(torch.relu(d - pos_margin))
                else:
                    neg.append(torch.relu(neg_margin - d))
        return mean_nonzero(pos, x) + mean_nonzero(neg, x)
    return direction


def ref_ms_direction(alpha, beta, base):
    def direction(x, y, _levels, la, lb):
        total = (x.sum() * 0)
        for i in range(x.shape[0]):
            pos = sum((torch.exp(-alpha * (cos(x, y, i, j) - base))
                       for j in range(y.shape[0]) if la[i] == lb[j]), x.sum() * 0)
            neg = sum((torch.exp(beta * (cos(x, y, i, j) - base))
                       for j in range(y.shape[0]) if la[i] != lb[j]), x.sum() * 0)
            total = total + torch.log(1 + pos) / alpha + torch.log(1 + neg) / beta
        return total / x.shape[0]
    return direction


def ref_sigma_triplet_direction(L, margin):
    def direction(x, y, levels, la, lb):
        total = (x.sum() * 0)
        for scale in range(L):
            threshold = L - scale
            total = total + ref_triplet_direction(
                margin, lambda lv, _a, _b, i, j, t=threshold: int(lv[i, j]) >= t
            )(x, y, levels, la, lb)
        return total
    return direction


# --------------------------------------------------------------------------- DyCL


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_dycl_matches_explicit_formula(dtype, L):
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, L=L, seed=L, dtype=dtype)
    margins = default_margins(L)
    loss = DyCLLoss(margins=margins, scale=32.0)
    slow = symmetric(ref_dycl_direction(margins, 32.0))
    value = assert_close_loss(lambda a, b: loss(a, b, levels), lambda a, b: slow(a, b, levels, la, lb),
                              emb_a, emb_b, dtype=dtype, rtol=1e-4 if dtype == torch.float32 else 1e-9)
    assert value.dtype == dtype
    assert float(value) > 0


def test_dycl_paper_defaults_and_one_direction():
    assert DyCLLoss().margins == (0.45, 0.35, 0.25) and DyCLLoss().scale == 32.0
    assert default_margins(3) == (0.45, 0.35, 0.25)
    emb_a, emb_b, levels, la, lb, _ = make_batch(seed=11, dtype=torch.float64)
    one_way = DyCLLoss(symmetric=False)
    slow = ref_dycl_direction((0.45, 0.35, 0.25), 32.0)
    assert_close_loss(lambda a, b: one_way(a, b, levels), lambda a, b: slow(a, b, levels), emb_a, emb_b,
                      rtol=1e-9)


def test_dycl_edge_cases_contribute_zero():
    emb_a, emb_b, _, _, _, _ = make_batch(n=4, m=4, seed=3)
    loss = DyCLLoss()
    # No pure negative anywhere: every term is log(1 + empty sum) = 0, gradients 0.
    value, grads = value_and_grads(lambda a, b: loss(a, b, torch.full((4, 4), 2)), emb_a, emb_b)
    assert float(value) == 0.0 and all(float(g.abs().max()) == 0.0 for g in grads)
    # All the same building: same.
    value, grads = value_and_grads(lambda a, b: loss(a, b, torch.full((4, 4), 3)), emb_a, emb_b)
    assert float(value) == 0.0 and all(torch.isfinite(g).all() for g in grads)
    # Only negatives (no positive at any scale): 0 as well.
    value, grads = value_and_grads(lambda a, b: loss(a, b, torch.zeros(4, 4, dtype=torch.long)), emb_a, emb_b)
    assert float(value) == 0.0 and all(torch.isfinite(g).all() for g in grads)


def test_dycl_single_pair_closed_form_and_stability():
    # One anchor, one positive (same building), one negative: Σ_l softplus(τ (r_k − r_j + m_l)).
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    levels = torch.tensor([[3, 0]])
    r_j, r_k = 0.6, 0.0
    expected_ab = sum(math.log1p(math.exp(32 * (r_k - r_j + m))) for m in (0.45,))  # only scale 0 has j
    expected_ab += sum(math.log1p(math.exp(32 * (r_k - r_j + m))) for m in (0.35, 0.25))  # lv 3 >= 2, 1
    loss = DyCLLoss(symmetric=False)
    assert float(loss(a, b, levels)) == pytest.approx(expected_ab, rel=1e-12)
    # Huge scale in float32: finite value and gradients (softplus/logsumexp form), equal to the float64 value.
    big = DyCLLoss(scale=1000.0)
    emb_a, emb_b, levels, *_ = make_batch(seed=5)
    v32, g32 = value_and_grads(lambda x, y: big(x, y, levels), emb_a, emb_b)
    v64, g64 = value_and_grads(lambda x, y: big(x, y, levels), emb_a, emb_b, dtype=torch.float64)
    assert torch.isfinite(v32) and all(torch.isfinite(g).all() for g in g32)
    torch.testing.assert_close(v32.double(), v64, rtol=1e-4, atol=1e-3)


def test_dycl_rejects_bad_configuration_and_levels():
    emb_a, emb_b, levels, *_ = make_batch(L=4, seed=2)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 3\]"):
        DyCLLoss()(emb_a, emb_b, levels)  # L = 4 levels with 3 margins
    with pytest.raises(ValueError, match="margins"):
        DyCLLoss(margins=())
    with pytest.raises(ValueError, match="scale"):
        DyCLLoss(scale=0)
    with pytest.raises(ValueError, match="levels must have shape"):
        DyCLLoss()(emb_a, emb_b, levels[:, :-1])
    with pytest.raises(ValueError, match="integer"):
        DyCLLoss(margins=default_margins(4))(emb_a, emb_b, levels.float())
    with pytest.raises(ValueError, match="widths"):
        DyCLLoss()(emb_a, emb_b[:, :-1], levels)


def ref_dycl_single_scale_direction(margin, scale, L, tau):
    """One direction of the DyCL term of scale ``scale`` alone, as an explicit loop."""
    def direction(x, y, levels, _la=None, _lb=None):
        n, m = levels.shape
        total = x.sum() * 0
        for i in range(n):
            inner = x.sum() * 0
            for j in range(m):
                if levels[i, j] >= L - scale:
                    for k in range(m):
                        if levels[i, k] == 0:
                            inner = inner + torch.exp(tau * (cos(x, y, i, k) - cos(x, y, i, j) + margin))
            total = total + torch.log(1 + inner)
        return total / n
    return direction


@pytest.mark.parametrize("scale_index", [0, 1, 2])
def test_dycl_single_scale_term_matches_explicit_formula(scale_index):
    # scales=(s,) keeps only the term of scale s with its margin m^s (Fig. 6 single-scale training).
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, L=3, seed=20 + scale_index, dtype=torch.float64)
    margins = (0.45, 0.35, 0.25)
    loss = DyCLLoss(margins=margins, scales=(scale_index,))
    slow = symmetric(ref_dycl_single_scale_direction(margins[scale_index], scale_index, 3, 32.0))
    value = assert_close_loss(lambda a, b: loss(a, b, levels), lambda a, b: slow(a, b, levels, la, lb),
                              emb_a, emb_b, rtol=1e-9)
    assert float(value) > 0
    # The single-scale losses add up to the multi-scale loss.
    parts = sum(DyCLLoss(scales=(s,))(emb_a, emb_b, levels) for s in range(3))
    torch.testing.assert_close(parts, DyCLLoss()(emb_a, emb_b, levels), rtol=1e-12, atol=0)


def test_dycl_scales_option_is_validated_and_reaches_build_loss():
    for bad in ([], [3], [1, 1], 1, [True], [0.5]):
        with pytest.raises(ValueError, match="scales"):
            DyCLLoss(scales=bad)
    combined = build_loss("dycl:0.2,cluster:0.1", num_buildings=4, embedding_dim=8,
                          options={"dycl": {"scales": [2]}})
    assert combined.losses["dycl"].scales == (2,)
    assert DyCLLoss().scales == (0, 1, 2)


# --------------------------------------------------------------------------- HAPPIER


@pytest.mark.parametrize("L", [1, 3, 4])
def test_happier_matches_explicit_formula(L):
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, L=L, seed=20 + L, a_in_b=False)
    loss = HAPPIERLoss()
    slow = symmetric(ref_happier_direction())
    for dtype, rtol in ((torch.float32, 1e-4), (torch.float64, 1e-9)):
        assert_close_loss(lambda a, b: loss(a, b, levels), lambda a, b: slow(a, b, levels, la, lb),
                          emb_a, emb_b, dtype=dtype, rtol=rtol, atol=1e-6)


def test_happier_smooth_region_is_exercised():
    # Similarities within δ of each other make (0, δ] and beyond-δ both occur; temperature large
    # enough that the sigmoid is not saturated, so gradients are informative.
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=4, m=8, L=3, seed=31)
    emb_b = emb_b * 1.5 + emb_a[:1] * 3  # references clustered around anchor 0 (cosines 0.85-0.96)
    loss = HAPPIERLoss(tau=0.05, delta=0.02, offset=1.2)
    slow = symmetric(ref_happier_direction(tau=0.05, delta=0.02, offset=1.2))
    sim = unit(emb_a[:1]) @ unit(emb_b).t()
    gaps = (sim[0][:, None] - sim[0][None, :]).abs()
    assert ((gaps > 0) & (gaps <= 0.02)).any() and (gaps > 0.02).any()
    assert_close_loss(lambda a, b: loss(a, b, levels), lambda a, b: slow(a, b, levels, la, lb),
                      emb_a, emb_b, dtype=torch.float64, rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_happier_tends_to_exact_hap_and_bounds_it(seed):
    L = 3
    emb_a, emb_b, levels, *_ = make_batch(n=6, m=9, L=L, seed=40 + seed, dtype=torch.float64)
    sim = unit(emb_a) @ unit(emb_b).t()
    exact = 0.5 * (exact_hap_loss(sim, levels, L) + exact_hap_loss(sim.t(), levels.t(), L))
    # Plain sigmoid, τ → 0: the surrogate converges to the exact 1 − H-AP.
    errors = [abs(float(HAPPIERLoss(tau=tau, rho=None)(emb_a, emb_b, levels)) - exact)
              for tau in (1e-2, 1e-4, 1e-7)]
    assert errors[-1] < 1e-9
    assert errors[0] > errors[-1]
    # The paper's piecewise step is an upper bound of the Heaviside: the loss bounds 1 − H-AP from above.
    assert float(HAPPIERLoss()(emb_a, emb_b, levels)) >= exact - 1e-12
    assert float(HAPPIERLoss(tau=1e-7)(emb_a, emb_b, levels)) > exact  # the linear part never vanishes


def test_happier_agrees_with_project_metric_when_available():
    metrics = pytest.importorskip("dycl.metrics")
    if not hasattr(metrics, "evaluate"):
        pytest.skip("dycl.metrics.evaluate not available yet")
    emb_a, emb_b, levels, la, lb, table = make_batch(n=6, m=9, L=3, seed=50, dtype=torch.float64)
    sim = unit(emb_a) @ unit(emb_b).t()
    result = metrics.evaluate((1.0 - sim).numpy(), la.numpy(), lb.numpy(), table.numpy().astype("uint8"))
    surrogate_one_way = float(HAPPIERLoss(tau=1e-7, rho=None, symmetric=False)(emb_a, emb_b, levels))
    assert surrogate_one_way == pytest.approx(1.0 - result["H-AP"], abs=1e-9)


def test_happier_edge_cases():
    emb_a, emb_b, *_ = make_batch(n=4, m=5, seed=60)
    loss = HAPPIERLoss()
    # Every reference relevant at the same level: the ranking is perfect, H-AP = 1.
    value, grads = value_and_grads(lambda a, b: loss(a, b, torch.full((4, 5), 3)), emb_a, emb_b)
    assert float(value) == pytest.approx(0.0, abs=1e-7)
    # Nothing relevant: no anchor counts; 0 with zero gradients, no NaN.
    value, grads = value_and_grads(lambda a, b: loss(a, b, torch.zeros(4, 5, dtype=torch.long)), emb_a, emb_b)
    assert float(value) == 0.0 and all(float(g.abs().max()) == 0.0 for g in grads)
    # A single reference.
    single = loss(emb_a, emb_b[:1], torch.tensor([[3], [0], [1], [0]]))
    assert torch.isfinite(single)


def test_happier_chunking_matches_unchunked(monkeypatch):
    import dycl.losses.happier as happier_module

    emb_a, emb_b, levels, *_ = make_batch(n=9, m=6, seed=70, dtype=torch.float64)
    whole = HAPPIERLoss()(emb_a, emb_b, levels)
    monkeypatch.setattr(happier_module, "_CHUNK_ELEMENTS", 2 * 36)  # two anchors per chunk
    chunked = HAPPIERLoss()(emb_a, emb_b, levels)
    torch.testing.assert_close(whole, chunked, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- proxies


@pytest.mark.parametrize("cls", [ClusterLoss, NormalizedSoftmaxLoss])
def test_proxy_losses_match_explicit_formula(cls):
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, d=8, buildings=6, seed=80, a_in_b=False)
    loss = cls(num_buildings=6, embedding_dim=8)
    assert loss.temperature == 0.05
    w = loss.proxy_parameters()[0]
    value = loss(emb_a, emb_b, levels, la, lb)
    proxies_grad, = torch.autograd.grad(value, [w])
    w64 = w.detach().double().requires_grad_(True)
    slow = ref_cluster(w64, 0.05)(emb_a.double(), emb_b.double(), levels, la, lb)
    slow_grad, = torch.autograd.grad(slow, [w64])
    torch.testing.assert_close(value.double(), slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(proxies_grad.double(), slow_grad, rtol=1e-4, atol=1e-6)
    # Embedding gradients too.
    assert_close_loss(lambda a, b: loss(a, b, levels, la, lb),
                      lambda a, b: ref_cluster(w.detach().double(), 0.05)(a, b, levels, la, lb),
                      emb_a, emb_b, rtol=1e-4, atol=1e-6)
    assert loss.proxies.shape == (6, 8)
    assert w.dtype == torch.float32  # float64 inputs must not convert the proxies


def test_proxy_loss_checks_labels():
    emb_a, emb_b, levels, la, lb, _ = make_batch(buildings=6, seed=81)
    loss = ClusterLoss(num_buildings=3, embedding_dim=8)
    with pytest.raises(ValueError, match=r"building labels must lie in \[0, 2\]"):
        loss(emb_a, emb_b, levels, la + 3, lb + 3)
    with pytest.raises(ValueError, match="labels_a"):
        loss(emb_a, emb_b, levels)


def test_proxy_optimizer_schedule():
    loss = ClusterLoss(num_buildings=4, embedding_dim=3)
    optimizer, scheduler = make_proxy_optimizer(loss.proxy_parameters(), total_steps=10)
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 10.0
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="total_steps"):
        make_proxy_optimizer(loss.proxy_parameters(), total_steps=0)


# --------------------------------------------------------------------------- label-based baselines

BASELINES = [
    (lambda: InfoNCELoss(temperature=0.1), ref_infonce_direction(0.1)),
    (lambda: TripletLoss(margin=0.2), ref_triplet_direction(0.2, same_building)),
    (lambda: ContrastiveLoss(pos_margin=0.1, neg_margin=1.2), ref_contrastive_direction(0.1, 1.2)),
    (lambda: MultiSimilarityLoss(alpha=2.0, beta=10.0, base=0.5), ref_ms_direction(2.0, 10.0, 0.5)),
]


@pytest.mark.parametrize("make, direction", BASELINES, ids=["infonce", "triplet", "contrastive", "ms"])
def test_label_baselines_match_explicit_formula(make, direction):
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, seed=90, buildings=4)
    loss = make()
    slow = symmetric(direction)
    value = assert_close_loss(lambda a, b: loss(a, b, levels, la, lb),
                              lambda a, b: slow(a, b, levels, la, lb), emb_a, emb_b, rtol=1e-4, atol=1e-6)
    assert float(value) > 0


def test_label_baselines_keep_the_diagonal_when_labels_are_one_tensor():
    # A batch of pairs passes the same label tensor for both views; the diagonal pairs are positives.
    emb_a, emb_b, *_ = make_batch(n=4, m=4, seed=91)
    labels = torch.arange(4)
    levels = torch.where(labels[:, None] == labels[None, :], 3, 0)
    for make, direction in BASELINES:
        loss = make()
        same = loss(emb_a, emb_b, levels, labels, labels)
        expected = symmetric(direction)(emb_a.double(), emb_b.double(), levels, labels, labels)
        torch.testing.assert_close(same.double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("L", [1, 3, 4])
def test_sigma_triplet_matches_explicit_formula(L):
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=4, m=6, L=L, seed=100 + L)
    loss = SigmaTripletLoss(num_levels=L, margin=0.3)
    slow = symmetric(ref_sigma_triplet_direction(L, 0.3))
    assert_close_loss(lambda a, b: loss(a, b, levels), lambda a, b: slow(a, b, levels, la, lb),
                      emb_a, emb_b, rtol=1e-4, atol=1e-6)


def test_sigma_triplet_without_triplets_is_zero():
    emb_a, emb_b, *_ = make_batch(n=3, m=3, seed=110)
    value, grads = value_and_grads(lambda a, b: SigmaTripletLoss()(a, b, torch.full((3, 3), 3)), emb_a, emb_b)
    assert float(value) == 0.0 and all(float(g.abs().max()) == 0.0 for g in grads)


def test_half_precision_inputs_are_computed_in_float32():
    emb_a, emb_b, levels, la, lb, _ = make_batch(seed=120)
    for spec in ("dycl", "happier", "infonce", "sigmatriplet", "cluster"):
        loss = build_loss(spec, num_buildings=6, embedding_dim=8)
        value = loss(emb_a.bfloat16(), emb_b.bfloat16(), levels, la, lb)
        assert value.dtype == torch.float32 and torch.isfinite(value)


# --------------------------------------------------------------------------- registry


def test_build_loss_paper_default_is_the_weighted_sum():
    emb_a, emb_b, levels, la, lb, _ = make_batch(seed=130, buildings=6)
    combined = build_loss(num_buildings=6, embedding_dim=8, levels=3)
    assert combined.spec == PAPER_LOSS
    assert isinstance(combined, CombinedLoss)
    total = combined(emb_a, emb_b, levels, la, lb)
    terms = combined.last_terms
    assert set(terms) == {"dycl", "cluster", "happier"}
    expected = 0.2 * terms["dycl"] + 0.1 * terms["cluster"] + 0.9 * terms["happier"]
    torch.testing.assert_close(total.detach(), expected)
    torch.testing.assert_close(terms["dycl"], DyCLLoss()(emb_a, emb_b, levels))
    torch.testing.assert_close(terms["happier"], HAPPIERLoss()(emb_a, emb_b, levels))
    assert len(combined.proxy_parameters()) == 1
    assert any(k.startswith("losses.cluster.") for k in combined.state_dict())
    assert all(not t.requires_grad for t in terms.values())


def test_parse_loss_spec_accepts_aliases_and_default_weight():
    assert parse_loss_spec("DyCL:0.5, MS ,sigma_triplet:2") == [
        ("dycl", 0.5), ("multisimilarity", 1.0), ("sigmatriplet", 2.0)]
    combined = build_loss("triplet,normalised_softmax:0.3", num_buildings=5, embedding_dim=4)
    assert combined.spec == "triplet:1,normsoftmax:0.3"


@pytest.mark.parametrize("spec, message", [
    ("dycl:0.2,foo:1", "unknown loss 'foo'"),
    ("dycl:abc", "not a number"),
    ("dycl:-1", "positive finite"),
    ("dycl:0", "positive finite"),
    ("dycl:nan", "positive finite"),
    ("dycl:inf", "positive finite"),
    ("dycl,dycl:2", "more than once"),
    ("dycl,,happier", "empty term"),
    ("", "expected a spec"),
])
def test_build_loss_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        build_loss(spec, num_buildings=4, embedding_dim=8)


def test_build_loss_levels_and_options():
    with pytest.raises(ValueError, match="num_buildings and embedding_dim"):
        build_loss("cluster")
    with pytest.raises(ValueError, match="one margin per positive level"):
        build_loss("dycl", levels=4, options={"dycl": {"margins": (0.4, 0.3, 0.2)}})
    with pytest.raises(ValueError, match="not in the spec"):
        build_loss("dycl", options={"happier": {"tau": 0.1}})
    with pytest.raises(ValueError, match="bad options"):
        build_loss("dycl", options={"dycl": {"temperature": 0.1}})
    four = build_loss("dycl:1,sigmatriplet:1", levels=4, options={"DyCL": {"scale": 16.0}})
    assert four.losses["dycl"].margins == default_margins(4) and four.losses["dycl"].scale == 16.0
    assert four.losses["sigmatriplet"].num_levels == 4
    assert default_margins(4)[0] == 0.45 and default_margins(4)[-1] == 0.25
