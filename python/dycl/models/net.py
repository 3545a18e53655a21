"""The siamese embedding network (DESIGN §6).

One network, shared by both views: backbone → global pooling → LayerNorm
without affine → Linear(feature_dim → embedding_dim) → L2 normalisation.
State-dict keys: ``backbone.*`` and ``fc.weight``/``fc.bias`` only (pooling and
the LayerNorm have no parameters), exactly as in the authors' release.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONES, backbone_spec, build_backbone, is_full_model_state, read_backbone_weights
from .batchnorm import keep_frozen_in_eval
from .checkpoint import load_checkpoint, read_weights_object, unwrap_state_dict

VIT_POOLINGS = ("cls", "mean")


class EmbeddingNet(nn.Module):
    """Backbone + head producing unit-norm embeddings.

    ``forward(x)`` embeds one batch; ``forward(x, y)`` embeds the two views of a
    batch of pairs with one backbone pass when their shapes agree (one call,
    so it goes through DDP's forward hooks) and returns ``(emb_x, emb_y)``.
    Embeddings are float32 (float64 for a float64 model), also under autocast:
    only :meth:`trunk` (the backbone) runs in the autocast dtype; :meth:`head`
    (pooling, LayerNorm, the linear layer and the L2 normalisation) always runs
    in float32, because bf16 there costs cosine errors of up to 1e-3 and flips
    pairwise orders in evaluation.
    """

    def __init__(
        self,
        backbone: nn.Module,
        backbone_name: str,
        feature_dim: int,
        embedding_dim: int = 512,
        vit_pooling: str = "cls",
    ) -> None:
        super().__init__()
        spec = backbone_spec(backbone_name)
        if vit_pooling not in VIT_POOLINGS:
            raise ValueError(f"vit_pooling: expected one of {VIT_POOLINGS}, got {vit_pooling!r}")
        self.backbone_name = backbone_name
        self.family = spec.family
        self.feature_dim = int(feature_dim)
        self.embedding_dim = int(embedding_dim)
        self.vit_pooling = vit_pooling
        self.backbone = backbone
        self.pooling = nn.AdaptiveAvgPool2d(1) if self.family == "resnet" else nn.Identity()
        self.standardize = nn.LayerNorm(self.feature_dim, elementwise_affine=False)
        self.fc = nn.Linear(self.feature_dim, self.embedding_dim)

    def train(self, mode: bool = True) -> EmbeddingNet:
        """Like ``nn.Module.train``; BatchNorm layers frozen by :func:`freeze_batchnorm` stay in eval mode."""
        super().train(mode)
        keep_frozen_in_eval(self)
        return self

    @property
    def config(self) -> dict[str, Any]:
        """Arguments that rebuild this architecture with :func:`build_model` (weights aside)."""
        return {"backbone": self.backbone_name, "embedding_dim": self.embedding_dim,
                "vit_pooling": self.vit_pooling}

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output, in the caller's autocast dtype: ``(B, C, h, w)`` feature maps for
        ResNets, ``(B, prefix + patches, D)`` tokens (after the final norm) for ViTs."""
        if self.family == "resnet":
            return self.backbone(x)
        return self.backbone.forward_features(x)

    def _standardized(self, trunk_out: torch.Tensor) -> torch.Tensor:
        out = trunk_out.to(torch.promote_types(trunk_out.dtype, torch.float32))
        if self.family == "resnet":
            pooled = torch.flatten(self.pooling(out), 1)
        elif self.vit_pooling == "cls":
            pooled = out[:, 0]
        else:
            pooled = out[:, self.backbone.num_prefix_tokens:].mean(dim=1)
        return self.standardize(pooled)

    def head(self, trunk_out: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``(B, embedding_dim)`` from :meth:`trunk`'s output.

        Pooling, LayerNorm, the linear layer and the L2 normalisation run in
        float32 (float64 for a float64 model) with autocast switched off, so
        the result does not depend on the autocast dtype of the backbone.
        """
        with torch.autocast(device_type=trunk_out.device.type, enabled=False):
            features = self._standardized(trunk_out)
            weight, bias = self.fc.weight, self.fc.bias
            if weight.dtype != features.dtype:  # a half-precision model: its head still computes in float32
                weight, bias = weight.to(features.dtype), bias.to(features.dtype)
            return F.normalize(F.linear(features, weight, bias), p=2, dim=-1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, standardised backbone features, shape (B, feature_dim), in float32 (see :meth:`head`)."""
        trunk_out = self.trunk(x)
        with torch.autocast(device_type=trunk_out.device.type, enabled=False):
            return self._standardized(trunk_out)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images: expected a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        return self.head(self.trunk(x))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        if y is None:
            return self.embed(x)
        if x.shape[1:] == y.shape[1:] and x.dtype == y.dtype:
            both = self.embed(torch.cat([x, y], dim=0))
            return both[: x.shape[0]], both[x.shape[0]:]
        return self.embed(x), self.embed(y)


def build_model(
    backbone: str = "resnet50",
    embedding_dim: int = 512,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    vit_pooling: str = "cls",
    trusted: bool = False,
) -> EmbeddingNet:
    """Build the embedding network.

    Args:
        backbone: one of :data:`dycl.models.BACKBONES` (``resnet50`` default,
            ``resnet18``, ``resnet34``, ``vit_small_patch14_dinov2``,
            ``vit_base_patch14_dinov2``).
        embedding_dim: output dimension (512 in the paper).
        pretrained: download/reuse the default pretrained backbone weights
            (ImageNet for ResNets, DINOv2 for ViTs); ignored when ``weights`` is given.
        weights: a local file. Backbone-only weights (torchvision/timm layout)
            initialise the backbone and leave the head random; a full-model
            checkpoint (``backbone.*`` + ``fc.*``: our ``last.pt``, the authors'
            ``net_state``) is loaded strictly into the whole network.
        vit_pooling: ``"cls"`` (class token) or ``"mean"`` (mean patch token), ViTs only.
        trusted: allow weights files that pickle arbitrary objects (see
            :func:`dycl.models.read_state_dict`).

    Raises:
        ValueError: unknown backbone, bad ``embedding_dim``, unreadable or
            mismatching weights file.
        PretrainedWeightsUnavailable: ``pretrained=True`` and the download failed.
    """
    spec = backbone_spec(backbone)
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(f"embedding_dim: expected a positive integer, got {embedding_dim!r}")
    full_state = None
    backbone_state = None
    if weights is not None:
        state = read_backbone_weights(weights, trusted=trusted)
        if is_full_model_state(state):
            full_state = state
        else:
            backbone_state = state
    net = build_backbone(
        backbone,
        pretrained=pretrained and weights is None,
        weights_state=backbone_state,
        weights_path=weights,
    )
    model = EmbeddingNet(net, backbone, spec.feature_dim, embedding_dim, vit_pooling=vit_pooling)
    if full_state is not None:
        try:
            load_checkpoint(model, full_state, strict=True)
        except ValueError as exc:
            raise ValueError(f"weights: {weights}: {exc}") from exc
    return model


def _checkpoint_info(obj: object, state: Mapping[str, torch.Tensor], backbone: str | None,
                     image_size: int | None) -> dict[str, Any]:
    """Layout, architecture and saved settings of a checkpoint object (see :func:`load_model`)."""
    saved = obj.get("config") if isinstance(obj, Mapping) else None
    saved = saved if isinstance(saved, Mapping) else {}
    if isinstance(obj, Mapping) and str(obj.get("format", "")).startswith("dycl-train-checkpoint"):
        layout = "dycl-train"
    elif isinstance(obj, Mapping) and "net_state" in obj:
        layout = "net_state"
    else:
        layout = "state dict"
    fc = state.get("fc.weight")
    info: dict[str, Any] = {
        "layout": layout,
        "backbone": backbone or saved.get("backbone") or "resnet50",
        "embedding_dim": int(saved.get("embedding_dim") or (fc.shape[0] if fc is not None else 512)),
        "image_size": int(image_size or saved.get("image_size") or 256),
    }
    for key in ("thresholds", "eval_batch_size"):
        if saved.get(key) is not None:
            info[key] = saved[key]
    if isinstance(obj, Mapping) and isinstance(obj.get("epoch"), int):
        info["epoch"] = obj["epoch"]
    return info


def load_model(
    checkpoint: str | os.PathLike,
    backbone: str | None = None,
    image_size: int | None = None,
    trusted: bool = False,
) -> tuple[EmbeddingNet, dict[str, Any]]:
    """Build the network of a checkpoint and load its weights (strictly); returns ``(model, info)``.

    Accepted: our ``last.pt`` (architecture from its saved configuration) and
    the authors' release (``{"net_state": state_dict}`` with ``backbone.<i>.*``
    and ``fc.*``: ResNet-50 unless ``backbone`` says otherwise, embedding size
    from ``fc.weight``, 256 px) or any plain state dict of that layout. Nothing
    is downloaded and none of the authors' packages is needed.

    ``info`` has ``layout``, ``backbone``, ``embedding_dim``, ``image_size``
    and, from our checkpoints, ``thresholds``, ``eval_batch_size``, ``epoch``.

    Raises:
        ValueError: missing/unreadable file, or weights that do not fit the
            model (listing the missing and unexpected keys).
    """
    path = Path(checkpoint)
    obj = read_weights_object(path, trusted=trusted, name="checkpoint")
    state = unwrap_state_dict(obj, name=f"checkpoint: {path}")
    info = _checkpoint_info(obj, state, backbone, image_size)
    model = build_model(info["backbone"], embedding_dim=info["embedding_dim"], pretrained=False)
    try:
        load_checkpoint(model, state, strict=True)
    except ValueError as exc:
        hint = "" if backbone else "; pass --backbone if it was trained with another backbone"
        raise ValueError(
            f"checkpoint: {path} does not fit {info['backbone']} with a {info['embedding_dim']}-d head: "
            f"{str(exc).removeprefix('checkpoint does not match the model: ')}{hint}"
        ) from None
    model.eval()
    return model, info


__all__ = ["BACKBONES", "EmbeddingNet", "build_model", "load_model", "VIT_POOLINGS"]
