"""Backbones and the weights policy.

CNNs come from torchvision and are kept as ``nn.Sequential(*children[:-2])``
(everything but avgpool and fc), the layout of the authors' release:
``backbone.0`` = conv1, ``backbone.1`` = bn1, ``backbone.4`` … ``backbone.7`` =
layer1 … layer4. ViTs (DINOv2) come from timm with ``dynamic_img_size`` so any
input size works (the patch grid is padded up to a multiple of 14 and the
position embeddings are interpolated).

Weights policy, in order of precedence:

1. ``weights=PATH``: a local file. A *backbone* file (a torchvision ResNet or
   timm/DINOv2 ViT state dict, classifier keys ignored) initialises the
   backbone; a *full-model* file (keys ``backbone.*``/``fc.*``, e.g. our
   ``last.pt`` or the authors' ``net_state``) is loaded into the whole network
   by :func:`dycl.models.build_model`. Nothing is downloaded.
2. ``pretrained=True`` (default): ImageNet weights from torchvision
   (ResNet ``IMAGENET1K_V1``, what ``pretrained=True`` gave the authors) or the
   DINOv2 weights from timm; a cached download is reused. When they cannot be
   fetched, :class:`PretrainedWeightsUnavailable` names the two ways out.
3. ``pretrained=False``: random initialisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .checkpoint import read_state_dict


class PretrainedWeightsUnavailable(ValueError):
    """The default pretrained weights could not be downloaded (or read from the cache).

    A ``ValueError`` so that ``dycl.cli.run_cli`` reports it as a one-line error (exit code 2).
    """


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str  # "resnet" or "vit"
    feature_dim: int


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec("resnet18", "resnet", 512),
    "resnet34": BackboneSpec("resnet34", "resnet", 512),
    "resnet50": BackboneSpec("resnet50", "resnet", 2048),
    "vit_small_patch14_dinov2": BackboneSpec("vit_small_patch14_dinov2", "vit", 384),
    "vit_base_patch14_dinov2": BackboneSpec("vit_base_patch14_dinov2", "vit", 768),
}


def backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(BACKBONES)
        raise ValueError(f"backbone: unknown backbone {name!r}; choose one of {known}") from None


def _unavailable(what: str, exc: BaseException) -> PretrainedWeightsUnavailable:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PretrainedWeightsUnavailable(
        f"could not obtain the pretrained {what} weights ({type(exc).__name__}: {reason}); "
        "pass a local weights file (weights=PATH, CLI --weights PATH) or train from random "
        "initialisation (pretrained=False, CLI --no-pretrained)"
    )


# --------------------------------------------------------------------------- ResNet


def _torchvision_resnet(name: str, pretrained: bool) -> nn.Module:
    import torchvision

    builder = getattr(torchvision.models, name)
    if not pretrained:
        return builder(weights=None)
    weights_enum = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    try:
        state = weights_enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, HTTP errors, hash mismatch, read-only cache, ...
        raise _unavailable(f"ImageNet {name}", exc) from exc
    net = builder(weights=None)
    net.load_state_dict(state)
    return net


def _resnet_trunk(net: nn.Module) -> nn.Sequential:
    # Drop avgpool and fc: keeps the authors' key layout backbone.<i>.*
    return nn.Sequential(*list(net.children())[:-2])


def _load_resnet_file(name: str, state: dict[str, torch.Tensor], path: str) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    own = net.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = [k for k in own if not k.startswith("fc.") and k not in body]
    unexpected = [k for k in body if k not in own]
    mismatched = [k for k, v in body.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        details = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                details.append(f"{len(keys)} {title} (e.g. {', '.join(keys[:4])})")
        raise ValueError(f"weights: {path} is not a torchvision {name} state dict: {'; '.join(details)}")
    net.load_state_dict(body, strict=False)
    return net


# --------------------------------------------------------------------------- ViT


def _timm_vit(name: str, pretrained: bool) -> nn.Module:
    import timm

    kwargs = dict(num_classes=0, dynamic_img_size=True, dynamic_img_pad=True)
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # hub/network/cache failures surface as many types
        raise _unavailable(f"DINOv2 {name}", exc) from exc


def _load_vit_file(name: str, state: dict[str, torch.Tensor], path: str) -> nn.Module:
    from timm.models.vision_transformer import checkpoint_filter_fn

    net = _timm_vit(name, pretrained=False)
    # Converts the original DINOv2 release layout and resamples position embeddings.
    converted = checkpoint_filter_fn(dict(state), net)
    converted = {k: v for k, v in converted.items() if not k.startswith("head.")}
    result = net.load_state_dict(converted, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"weights: {path} is not a {name} state dict: missing {result.missing_keys[:4]}, "
            f"unexpected {result.unexpected_keys[:4]}"
        )
    return net


# --------------------------------------------------------------------------- entry point


def is_full_model_state(state: dict[str, torch.Tensor]) -> bool:
    """True for a whole-network state dict (``backbone.*`` keys), False for backbone-only weights."""
    return any(k.startswith("backbone.") for k in state)


def build_backbone(
    name: str,
    pretrained: bool = True,
    weights_state: dict[str, torch.Tensor] | None = None,
    weights_path: str | os.PathLike | None = None,
) -> nn.Module:
    """The backbone module for ``name``; see the module docstring for the weights policy.

    ``weights_state`` is an already read backbone-only state dict (``weights_path``
    only labels error messages); when given, nothing is downloaded.
    """
    spec = backbone_spec(name)
    label = str(weights_path) if weights_path is not None else "weights"
    if spec.family == "resnet":
        if weights_state is not None:
            return _resnet_trunk(_load_resnet_file(name, weights_state, label))
        return _resnet_trunk(_torchvision_resnet(name, pretrained))
    if weights_state is not None:
        return _load_vit_file(name, weights_state, label)
    return _timm_vit(name, pretrained)


def read_backbone_weights(path: str | os.PathLike, trusted: bool = False) -> dict[str, torch.Tensor]:
    return read_state_dict(path, trusted=trusted, name="weights")
