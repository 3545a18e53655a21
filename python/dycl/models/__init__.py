"""Networks (DESIGN §6): the siamese embedding network, its weights policy and checkpoints.

Typical use::

    from dycl.models import build_model, freeze_batchnorm, load_checkpoint

    model = build_model("resnet50", embedding_dim=512)          # ImageNet weights
    model = build_model("resnet18", pretrained=False)            # random init
    model = build_model("resnet50", weights="resnet50.pth")      # local backbone weights
    model = build_model("resnet50", weights="net.pt", pretrained=False)  # full checkpoint
    freeze_batchnorm(model)                                      # the recipe's frozen BN
    emb_sat, emb_drone = model(satellite_images, drone_images)   # (B, 512) each, unit norm
    report = load_checkpoint(model, "run/last.pt")               # strict by default
    model, info = load_model("run/last.pt")                      # architecture from the checkpoint

The building proxies of the clustering loss live in
:class:`dycl.losses.ClusterLoss`, not here.
"""

from .backbones import BACKBONES, BackboneSpec, PretrainedWeightsUnavailable, build_backbone
from .batchnorm import freeze_batchnorm, is_batchnorm_frozen
from .checkpoint import CheckpointLoadReport, load_checkpoint, read_state_dict, unwrap_state_dict
from .determinism import DeterministicMaxPool2d, deterministic_max_pools
from .net import VIT_POOLINGS, EmbeddingNet, build_model, load_model

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "CheckpointLoadReport",
    "DeterministicMaxPool2d",
    "EmbeddingNet",
    "PretrainedWeightsUnavailable",
    "VIT_POOLINGS",
    "build_backbone",
    "build_model",
    "deterministic_max_pools",
    "freeze_batchnorm",
    "is_batchnorm_frozen",
    "load_checkpoint",
    "load_model",
    "read_state_dict",
    "unwrap_state_dict",
]
