"""Counting host-device synchronisations on the CPU (a helper of the tests, not a test module).

A CUDA sync happens where the host needs a value computed on the device:
``.item()``/``float()``/``int()``/``bool()`` of a tensor (``aten::_local_scalar_dense``),
``torch.equal``, and operations whose output size depends on the values
(``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``). The same
operations dispatch on CPU tensors, so a ``TorchDispatchMode`` that counts
them finds, on this machine, every sync a training step would make on a GPU
(backward included: the autograd engine keeps the mode).

One exception: ``torch.optim`` keeps each parameter's step count as a CPU
tensor also when training on CUDA (``capturable=False``, the default) and
reads it with ``.item()``; that reads host memory, no device sync, so reads
from inside ``torch/optim/`` are not counted.
"""

from __future__ import annotations

import traceback
from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

#: aten operations that make the host wait for the device.
SYNC_OPS = frozenset({
    "aten::_local_scalar_dense",  # .item(), float(t), int(t), bool(t)
    "aten::equal",
    "aten::is_nonzero",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::repeat_interleave",
})


def _from_optimizer_step_counts() -> bool:
    frames = traceback.extract_stack(limit=12)
    return any("/torch/optim/" in frame.filename.replace("\\", "/") for frame in frames)


class SyncCounter(TorchDispatchMode):
    """``with SyncCounter() as syncs: ...``; then ``syncs.total`` and ``syncs.ops`` (name -> count)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in SYNC_OPS and not _from_optimizer_step_counts():
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())
