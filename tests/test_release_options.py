"""Training options of the authors' release, off by default: DyCL's per-feature batch normalisation and
the release's schedule (cosine stepped per epoch over ``max_iter`` epochs, backbone held while warming up).

Each is checked against an explicit computation: the loss against a loop over the release's formula, the
schedule against the learning rate the release would use at every step and epoch.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_losses import assert_close_loss, make_batch, symmetric

from dycl.losses import DyCLLoss, build_loss


def batch_normalised(x):
    """Every feature (column) divided by its norm over the batch, with explicit loops."""
    out = torch.zeros_like(x)
    for j in range(x.shape[1]):
        norm = torch.sqrt(sum(x[i, j] ** 2 for i in range(x.shape[0])))
        for i in range(x.shape[0]):
            out[i, j] = x[i, j] / norm
    return out


def ref_release_dycl_direction(margins, tau):
    """Eq. 4 on the release's similarities r_ij = x̃_i · ỹ_j (x̃, ỹ normalised per feature over the batch)."""
    def direction(x, y, levels, _la=None, _lb=None):
        L = len(margins)
        xn, yn = batch_normalised(x), batch_normalised(y)
        total = x.sum() * 0
        for i in range(levels.shape[0]):
            for scale, margin in enumerate(margins):
                inner = x.sum() * 0
                for j in range(levels.shape[1]):
                    if levels[i, j] < L - scale:
                        continue
                    for k in range(levels.shape[1]):
                        if levels[i, k] == 0:
                            r_ij, r_ik = torch.dot(xn[i], yn[j]), torch.dot(xn[i], yn[k])
                            inner = inner + torch.exp(tau * (r_ik - r_ij + margin))
                total = total + torch.log(1 + inner)
        return total / levels.shape[0]
    return direction


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dycl_batch_normalisation_matches_the_release_formula(dtype):
    emb_a, emb_b, levels, la, lb, _ = make_batch(n=5, m=6, d=4, L=3, seed=300, dtype=dtype)
    loss = DyCLLoss(scale=8.0, normalize="batch")
    slow = symmetric(ref_release_dycl_direction((0.45, 0.35, 0.25), 8.0))
    assert_close_loss(lambda a, b: loss(a, b, levels), lambda a, b: slow(a, b, levels, la, lb), emb_a, emb_b,
                      dtype=dtype, rtol=1e-4 if dtype == torch.float32 else 1e-9)
    # It is a different loss from the paper's cosine form, which stays the default.
    assert DyCLLoss().normalize == "embedding"
    assert not torch.allclose(loss(emb_a, emb_b, levels), DyCLLoss(scale=8.0)(emb_a, emb_b, levels))


def test_batch_normalisation_scales_similarities_by_about_d_over_n():
    g = torch.Generator().manual_seed(0)
    n, d = 32, 128
    a = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    b = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    from dycl.losses.dycl import batch_normalized_similarity

    ratio = (batch_normalized_similarity(a, b).abs().mean() / (a @ b.t()).abs().mean()).item()
    assert ratio == pytest.approx(d / n, rel=0.15)  # the "effective τ ≈ 4 τ" at d 512, batch 128


def test_normalize_option_is_checked_and_reaches_build_loss():
    with pytest.raises(ValueError, match="normalize: expected one of embedding, batch"):
        DyCLLoss(normalize="rows")
    combined = build_loss("dycl:0.2", options={"dycl": {"normalize": "batch"}})
    assert combined.losses["dycl"].normalize == "batch" and "normalize='batch'" in repr(combined)
    assert math.isfinite(float(combined(*make_batch(seed=301)[:3])))
