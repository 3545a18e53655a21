"""Frozen BatchNorm, as in the training recipe (DESIGN §6).

"Frozen" means two things: the layers normalise with their running
statistics and never update them (eval mode), and their affine parameters
receive no gradient. ``model.train()`` must not undo it, because every
training loop calls it at the start of each epoch.
"""

from __future__ import annotations

from torch import nn

_FROZEN_FLAG = "_dycl_batchnorm_frozen"


def _keep_in_eval(module: nn.Module, _inputs: object) -> None:
    # A forward pre-hook rather than an overridden ``train()``: it works for any
    # module tree (including ones wrapped later by DDP), survives deepcopy and
    # pickling, and costs one attribute write per BN layer per forward.
    if module.training:
        module.train(False)


def freeze_batchnorm(model: nn.Module) -> int:
    """Freeze every BatchNorm layer of ``model`` (any ``_BatchNorm``, SyncBatchNorm included).

    Puts the layers in eval mode, turns off ``requires_grad`` on their weight
    and bias, and registers a forward pre-hook that puts a layer back in eval
    mode whenever ``model.train()`` switched it on. Idempotent. Returns the
    number of BatchNorm layers found (0 for a ViT: nothing to do).

    Build optimisers from parameters that require grad after calling this,
    e.g. ``[p for p in model.parameters() if p.requires_grad]``.
    """
    count = 0
    for module in model.modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        count += 1
        module.train(False)
        for param in module.parameters(recurse=False):
            param.requires_grad_(False)
        if not getattr(module, _FROZEN_FLAG, False):
            module.register_forward_pre_hook(_keep_in_eval)
            setattr(module, _FROZEN_FLAG, True)
    return count


def keep_frozen_in_eval(model: nn.Module) -> None:
    """Put the layers frozen by :func:`freeze_batchnorm` back in eval mode (after ``train()``)."""
    for module in model.modules():
        if getattr(module, _FROZEN_FLAG, False) and module.training:
            module.train(False)


def is_batchnorm_frozen(model: nn.Module) -> bool:
    """True when ``model`` has BatchNorm layers and all of them are frozen by :func:`freeze_batchnorm`."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return bool(layers) and all(getattr(m, _FROZEN_FLAG, False) for m in layers)
