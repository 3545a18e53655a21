"""Reading weight files and loading them into an :class:`~dycl.models.EmbeddingNet`.

Accepted containers (first match wins):

* a plain state dict (``{"backbone.0.weight": tensor, ...}``);
* a dict holding the state dict under ``"model"`` (our ``last.pt``),
  ``"net_state"`` (the authors' release), ``"state_dict"`` or ``"model_state"``.

Keys saved from a ``DistributedDataParallel``/``DataParallel`` module
(``module.`` prefix) or from ``torch.compile`` (``_orig_mod.`` prefix) are
accepted too. Files are read with ``torch.load(weights_only=True)``; a file
that also pickles arbitrary Python objects (e.g. a training config) is only
read with ``trusted=True``, because unpickling it can run code.
``.safetensors`` files are read with safetensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

CONTAINER_KEYS = ("model", "net_state", "state_dict", "model_state")
_STRIPPED_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class CheckpointLoadReport:
    """What :func:`load_checkpoint` did: the keys it could not match."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint shape vs model shape"
    loaded: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 8) -> str:
        parts = []
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("shape mismatch", self.mismatched)):
            if keys:
                more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
                shown = ", ".join(keys[:limit]) + more
                parts.append(f"{len(keys)} {title}: {shown}")
        return "; ".join(parts) if parts else f"all {self.loaded} tensors loaded"


def read_state_dict(
    path: str | os.PathLike, trusted: bool = False, name: str = "weights"
) -> dict[str, torch.Tensor]:
    """Read a weights file and return its (unwrapped, prefix-stripped) state dict.

    ``name`` is the argument name used in error messages. Raises ``ValueError``
    for a missing file, an unreadable file, or a file that needs ``trusted=True``.
    """
    return unwrap_state_dict(read_weights_object(path, trusted=trusted, name=name), name=name)


def read_weights_object(path: str | os.PathLike, trusted: bool = False, name: str = "weights") -> object:
    """What a weights file holds, as stored (a state dict or a checkpoint container), on the CPU.

    The reading half of :func:`read_state_dict`, for callers that also want the
    container's other entries (a training config, the epoch). Errors as there.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{name}: no such file: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(p), device="cpu")
        except Exception as exc:
            raise ValueError(f"{name}: cannot read {p} as safetensors ({exc})") from exc
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            if not trusted:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(
                    f"{name}: {p} is not a plain tensor file ({first}); if you trust its source, "
                    "load it with trusted=True (CLI: --trust-checkpoint), which unpickles arbitrary objects"
                ) from exc
            try:
                obj = torch.load(p, map_location="cpu", weights_only=False)
            except Exception as exc2:
                raise ValueError(f"{name}: cannot read {p} ({exc2})") from exc2
    return obj


def unwrap_state_dict(obj: object, name: str = "weights") -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint container and strip wrapper prefixes."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ValueError(f"{name}: expected a state dict or a checkpoint dict, got {type(obj).__name__}")
    for key in CONTAINER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors or not all(isinstance(k, str) for k in tensors):
        keys = ", ".join(map(str, list(obj.keys())[:8]))
        raise ValueError(
            f"{name}: no state dict found (top-level keys: {keys}); expected tensors, "
            f"or one of {', '.join(CONTAINER_KEYS)} holding them"
        )
    return {_strip_prefixes(k): v for k, v in tensors.items()}


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                changed = True
    return key


def load_checkpoint(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, object],
    strict: bool = True,
    trusted: bool = False,
) -> CheckpointLoadReport:
    """Load a full-model checkpoint (our ``last.pt``, the authors' ``net_state``) into ``model``.

    ``source`` is a path or an already loaded dict/state dict. Every tensor whose
    key and shape match is copied. With ``strict=True`` (default) any missing,
    unexpected or shape-mismatched key raises a ``ValueError`` listing them and
    nothing is changed; with ``strict=False`` the matching tensors are loaded
    and the returned report lists the rest. ``model`` may be wrapped in DDP.
    """
    wrapped = isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel))
    target = model.module if wrapped else model
    state = (read_state_dict(source, trusted=trusted, name="checkpoint")
             if isinstance(source, (str, os.PathLike)) else unwrap_state_dict(source, name="checkpoint"))
    own = target.state_dict()
    report = CheckpointLoadReport()
    report.missing = [k for k in own if k not in state]
    report.unexpected = [k for k in state if k not in own]
    compatible = {}
    for key, value in state.items():
        if key not in own:
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(own[key].shape)}")
        else:
            compatible[key] = value
    report.loaded = len(compatible)
    if strict and not report.ok:
        hint = ""
        if report.unexpected and not any(k.startswith("backbone.") for k in state):
            hint = " (this looks like backbone-only weights: pass it as build_model(weights=PATH) instead)"
        raise ValueError(f"checkpoint does not match the model: {report.describe()}{hint}")
    target.load_state_dict(compatible, strict=False)
    return report
