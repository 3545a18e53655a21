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

from dycl.data import open_train_test
from dycl.distributed import DistInfo
from dycl.losses import DyCLLoss, build_loss
from dycl.train import Trainer, prepare_run


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


# --------------------------------------------------------------------------- schedules

TINY = {"backbone": "resnet18", "pretrained": False, "image_size": 32, "embedding_dim": 16, "batch_size": 8,
        "thresholds": (100.0, 200.0), "workers": 0, "lr": 1e-4, "max_steps_per_epoch": 1, "progress": False,
        "loss": "dycl:0.2,cluster:0.1"}


def trainer_for(campus, tmp_path, **options) -> Trainer:
    config, _ = prepare_run({"data_dir": str(campus), "output": str(tmp_path / "run"), **TINY, **options})
    train, test = open_train_test(config.data_dir, config.dataset_format)
    return Trainer(config, train, test, DistInfo(0, 1, 0, torch.device("cpu")))


def half_cosine(base, t, horizon, minimum=0.0):
    return minimum + (base - minimum) * 0.5 * (1.0 + math.cos(math.pi * t / horizon))


def backbone_and_head(trainer):
    trained = [p.detach().flatten() for p in trainer.model.backbone.parameters() if p.requires_grad]
    backbone = torch.cat(trained)
    return backbone.clone(), trainer.model.fc.weight.detach().clone()


def test_release_schedule_steps_per_epoch_after_the_warm_up_and_holds_the_backbone(campus, tmp_path):
    trainer = trainer_for(campus, tmp_path, epochs=6, schedule="release", schedule_epochs=4, warmup_epochs=2)
    assert (trainer.config.schedule_epochs, trainer.config.warmup_epochs) == (4, 2)
    backbone_group = next(g for g in trainer.optimizer.param_groups if g["name"] == "backbone")
    for epoch in range(6):
        lrs = trainer.current_lrs()  # the rates this epoch's steps use
        t = max(0, epoch - 2)  # the release steps its cosine after every epoch past the warm-up
        assert lrs["backbone"] == pytest.approx(half_cosine(1e-4, t, 4), rel=1e-9, abs=1e-15), epoch
        assert lrs["head"] == pytest.approx(half_cosine(2e-4, t, 4), rel=1e-9, abs=1e-15), epoch
        assert lrs["proxies"] == pytest.approx(half_cosine(10.0, t, 4, minimum=0.1), rel=1e-9), epoch
        before_backbone, before_head = backbone_and_head(trainer)
        trainer._fit_epoch(None)  # one epoch of one step, as on a non-main rank (no files)
        after_backbone, after_head = backbone_and_head(trainer)
        assert not torch.equal(before_head, after_head), epoch  # the head trains in every epoch
        if epoch < 2:  # warm-up: the backbone does not move and its Adam state does not start
            assert torch.equal(before_backbone, after_backbone), epoch
            assert all(p not in trainer.optimizer.state for p in backbone_group["params"])
        else:
            assert not torch.equal(before_backbone, after_backbone), epoch
    first = backbone_group["params"][0]
    assert int(trainer.optimizer.state[first]["step"]) == 4  # 6 epochs of one step, 2 of them held


def test_paper_schedule_anneals_every_step_to_zero_and_never_holds(campus, tmp_path):
    trainer = trainer_for(campus, tmp_path, epochs=3, max_steps_per_epoch=2)
    assert (trainer.config.schedule, trainer.config.schedule_epochs, trainer.config.warmup_epochs) == (
        "paper", None, 0)
    batch = next(iter(trainer.epoch_loader(0)))
    for step in range(6):
        lrs = trainer.current_lrs()
        assert lrs["backbone"] == pytest.approx(half_cosine(1e-4, step, 6), rel=1e-9, abs=1e-15)
        assert lrs["proxies"] == pytest.approx(half_cosine(10.0, step, 6, minimum=0.1), rel=1e-9)
        before, _ = backbone_and_head(trainer)
        trainer.train_step(batch)
        trainer.schedule.after_epoch((trainer.scheduler, trainer.proxy_scheduler), step + 1)  # no-op here
        if step < 5:  # the last step runs at lr 0
            assert not torch.equal(before, backbone_and_head(trainer)[0]), step
    assert trainer.current_lrs()["backbone"] == pytest.approx(0.0, abs=1e-15)


def test_schedule_options_are_checked(campus, tmp_path):
    base = {"data_dir": str(campus), **TINY}
    with pytest.raises(ValueError, match="schedule: expected one of paper, release"):
        prepare_run({**base, "output": str(tmp_path / "a"), "schedule": "step"})
    with pytest.raises(ValueError, match="schedule_epochs: only used with schedule 'release'"):
        prepare_run({**base, "output": str(tmp_path / "b"), "schedule_epochs": 300})
    with pytest.raises(ValueError, match="warmup_epochs"):
        prepare_run({**base, "output": str(tmp_path / "c"), "warmup_epochs": -1})
    config, _ = prepare_run({**base, "output": str(tmp_path / "d"), "schedule": "release"})
    assert (config.schedule_epochs, config.warmup_epochs) == (300, 5)  # the release's README command
    assert not any((tmp_path / x).exists() for x in "abcd")
