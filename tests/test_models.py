"""The embedding network: shapes, key layout, weights policy, frozen BatchNorm, checkpoints."""

from __future__ import annotations

import argparse
import urllib.error

import pytest
import torch
import torchvision

from dycl.models import (
    BACKBONES,
    EmbeddingNet,
    PretrainedWeightsUnavailable,
    build_model,
    freeze_batchnorm,
    is_batchnorm_frozen,
    load_checkpoint,
    read_state_dict,
)


def images(n=2, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_model("resnet18", embedding_dim=16, pretrained=False)


def authors_layout_state(name: str, embedding_dim: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """A state dict built the way the authors' release builds its network (HAPPIER's RetrievalNet)."""
    torch.manual_seed(seed)
    resnet = getattr(torchvision.models, name)(weights=None)
    trunk = torch.nn.Sequential(*list(resnet.children())[:-2])
    feature_dim = resnet.fc.in_features
    fc = torch.nn.Linear(feature_dim, embedding_dim)
    state = {f"backbone.{k}": v for k, v in trunk.state_dict().items()}
    state.update({f"fc.{k}": v for k, v in fc.state_dict().items()})
    return state


# --------------------------------------------------------------------------- shape and layout


def test_output_shape_and_unit_norm(small_model):
    small_model.eval()
    emb = small_model(images(3))
    assert emb.shape == (3, 16) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_pair_forward_matches_separate_calls(small_model):
    small_model.eval()
    x, y = images(2, seed=1), images(3, seed=2)
    with torch.no_grad():
        ex, ey = small_model(x, y)
        torch.testing.assert_close(ex, small_model(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ey, small_model(y), rtol=1e-5, atol=1e-6)
        ez, ew = small_model(x, images(2, size=40, seed=3))  # different sizes: two passes
    assert ez.shape == (2, 16) and ew.shape == (2, 16)


def test_head_is_layernorm_without_affine_then_linear(small_model):
    small_model.eval()
    x = images(2, seed=4)
    with torch.no_grad():
        pooled = small_model.backbone(x).mean(dim=(2, 3))
        standardized = (pooled - pooled.mean(1, keepdim=True)) / torch.sqrt(pooled.var(1, unbiased=False,
                                                                                    keepdim=True) + 1e-5)
        expected = torch.nn.functional.normalize(small_model.fc(standardized), dim=1)
        torch.testing.assert_close(small_model(x), expected, rtol=1e-4, atol=1e-5)
    assert not small_model.standardize.elementwise_affine


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_state_dict_layout_matches_authors_release(name):
    model = build_model(name, embedding_dim=512, pretrained=False)
    keys = set(model.state_dict())
    authors = authors_layout_state(name, 512)
    assert keys == set(authors)
    assert {"backbone.0.weight", "backbone.1.running_mean", "backbone.4.0.conv1.weight",
            "backbone.7.1.conv1.weight", "fc.weight", "fc.bias"} <= keys
    assert not any(k.startswith(("standardize", "pooling", "backbone.8", "backbone.9")) for k in keys)
    assert model.fc.weight.shape == (512, BACKBONES[name].feature_dim)


def test_authors_checkpoint_loads_strictly(tmp_path, small_model):
    state = authors_layout_state("resnet18", 16, seed=7)
    path = tmp_path / "authors.pth"
    torch.save({"net_state": {f"module.{k}": v for k, v in state.items()}, "epoch": 20}, path)
    model = build_model("resnet18", embedding_dim=16, pretrained=False)
    report = load_checkpoint(model, path)
    assert report.ok and report.loaded == len(state)
    for key, value in state.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    # The same file as build_model(weights=...) loads the whole network.
    again = build_model("resnet18", embedding_dim=16, weights=path)
    torch.testing.assert_close(again.fc.weight, state["fc.weight"])


def test_load_checkpoint_reports_missing_unexpected_and_mismatched(small_model):
    state = {k: v.clone() for k, v in small_model.state_dict().items()}
    del state["backbone.7.1.bn2.running_var"]
    state["extra.weight"] = torch.zeros(1)
    state["fc.bias"] = torch.zeros(99)
    model = build_model("resnet18", embedding_dim=16, pretrained=False)
    before = model.fc.weight.detach().clone()
    with pytest.raises(ValueError) as err:
        load_checkpoint(model, state)
    message = str(err.value)
    assert "backbone.7.1.bn2.running_var" in message and "extra.weight" in message and "fc.bias" in message
    torch.testing.assert_close(model.fc.weight, before)  # strict failure changes nothing
    report = load_checkpoint(model, state, strict=False)
    assert report.missing == ["backbone.7.1.bn2.running_var"] and report.unexpected == ["extra.weight"]
    assert report.mismatched == ["fc.bias: (99,) vs (16,)"]
    torch.testing.assert_close(model.fc.weight, small_model.fc.weight)


def test_checkpoint_with_pickled_objects_needs_trust(tmp_path, small_model):
    path = tmp_path / "last.pt"

    # An arbitrary pickled object (a training config): weights_only loading refuses it.
    torch.save({"model": small_model.state_dict(), "config": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError, match="trusted=True"):
        read_state_dict(path)
    assert set(read_state_dict(path, trusted=True)) == set(small_model.state_dict())
    with pytest.raises(ValueError, match="no such file"):
        read_state_dict(tmp_path / "missing.pt")


# --------------------------------------------------------------------------- weights policy


def test_local_torchvision_weights_initialise_the_backbone(tmp_path):
    torch.manual_seed(3)
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)  # includes the 1000-class fc, which is ignored
    model = build_model("resnet18", embedding_dim=8, weights=path)
    torch.testing.assert_close(model.backbone[0].weight, resnet.conv1.weight)
    torch.testing.assert_close(model.backbone[7][1].bn2.running_var, resnet.layer4[1].bn2.running_var)
    with pytest.raises(ValueError, match="not a torchvision resnet34 state dict"):
        build_model("resnet34", weights=path)


def test_download_failure_names_the_options(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache: a download is needed

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        build_model("resnet18", pretrained=True)
    message = str(err.value)
    assert "--weights PATH" in message and "--no-pretrained" in message
    assert "network is unreachable" in message
    assert isinstance(err.value, ValueError)  # the CLI maps it to a one-line error, exit code 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown backbone 'resnet101'"):
        build_model("resnet101", pretrained=False)
    with pytest.raises(ValueError, match="embedding_dim"):
        build_model("resnet18", embedding_dim=0, pretrained=False)
    with pytest.raises(ValueError, match="vit_pooling"):
        build_model("resnet18", pretrained=False, vit_pooling="max")
    model = build_model("resnet18", embedding_dim=4, pretrained=False)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(2, 1, 32, 32))


# --------------------------------------------------------------------------- BatchNorm, memory format


def test_freeze_batchnorm_survives_train_and_keeps_statistics():
    torch.manual_seed(5)
    model = build_model("resnet18", embedding_dim=8, pretrained=False)
    assert freeze_batchnorm(model) == 20 and freeze_batchnorm(model) == 20  # idempotent
    assert is_batchnorm_frozen(model)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    bn_weights = [bn.weight.detach().clone() for bn in bns]
    conv_before = model.backbone[0].weight.detach().clone()
    model.train()  # what every epoch starts with
    assert model.training and all(not bn.training for bn in bns)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    emb_a, emb_b = model(images(2, seed=6), images(2, seed=7))
    loss = -(emb_a * emb_b).sum()
    loss.backward()
    optimizer.step()
    assert all(not bn.training for bn in bns)
    assert all(bn.weight.grad is None and not bn.weight.requires_grad for bn in bns)
    for key, value in stats.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    for bn, weight in zip(bns, bn_weights, strict=True):
        torch.testing.assert_close(bn.weight, weight)
    assert not torch.equal(model.backbone[0].weight, conv_before)  # the rest did train
    # Without freezing, the same step moves the running statistics (the test can fail).
    free = build_model("resnet18", embedding_dim=8, pretrained=False).train()
    before = free.backbone[1].running_mean.clone()
    free(images(2, seed=6))
    assert not torch.equal(free.backbone[1].running_mean, before)


def test_channels_last_gives_the_same_embeddings(small_model):
    small_model.eval()
    x = images(2, size=40, seed=8)
    with torch.no_grad():
        reference = small_model(x)
        model = small_model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    small_model.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- ViT (timm)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_vit_builds_offline_and_handles_any_size(pooling):
    timm = pytest.importorskip("timm")
    assert timm is not None
    model = build_model("vit_small_patch14_dinov2", embedding_dim=12, pretrained=False, vit_pooling=pooling)
    model.eval()
    assert isinstance(model, EmbeddingNet) and model.feature_dim == 384
    with torch.no_grad():
        for shape in ((2, 3, 28, 28), (1, 3, 30, 44)):  # 30 and 44 are not multiples of 14
            emb = model(torch.randn(shape))
            assert emb.shape == (shape[0], 12)
            torch.testing.assert_close(emb.norm(dim=1), torch.ones(shape[0]))
    assert {"fc.weight", "fc.bias", "backbone.cls_token", "backbone.pos_embed"} <= set(model.state_dict())
    assert freeze_batchnorm(model) == 0


def test_vit_pooling_reads_the_right_tokens():
    model = build_model("vit_small_patch14_dinov2", embedding_dim=4, pretrained=False).eval()
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        tokens = model.backbone.forward_features(x)
        torch.testing.assert_close(model.features(x), model.standardize(tokens[:, 0]))
        model.vit_pooling = "mean"
        torch.testing.assert_close(model.features(x), model.standardize(tokens[:, 1:].mean(1)))


def test_vit_local_weights_and_download_failure(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    torch.manual_seed(9)
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    path = tmp_path / "dinov2_s.pth"
    torch.save(source.state_dict(), path)
    model = build_model("vit_small_patch14_dinov2", embedding_dim=4, weights=path)
    torch.testing.assert_close(model.backbone.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)

    def offline(*args, **kwargs):
        raise OSError("couldn't connect to huggingface.co")

    import timm.models._builder as builder

    monkeypatch.setattr(builder, "load_pretrained", offline)
    with pytest.raises(PretrainedWeightsUnavailable, match="--no-pretrained"):
        build_model("vit_small_patch14_dinov2", pretrained=True)
