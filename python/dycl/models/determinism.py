"""A deterministic max-pool backward, for bit-exact reruns on CUDA (``dycl-train --deterministic``).

``nn.MaxPool2d``'s backward on CUDA adds the gradients of overlapping windows
with atomic additions, in an order that changes from run to run (ResNet's
3×3, stride-2 stem pool overlaps), and PyTorch has no deterministic kernel for
it. :class:`DeterministicMaxPool2d` computes the same forward (the same
kernel, the same indices) and scatters the gradient with
``index_put_(accumulate=True)``, which has a deterministic CUDA implementation
under ``torch.use_deterministic_algorithms(True)``. It is slower, so only the
deterministic switch uses it. Max-pooling has no parameters: swapping the
module changes no state-dict key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


class _MaxPool2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):  # type: ignore[override]
        out, indices = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
        ctx.save_for_backward(indices)
        ctx.input_shape = tuple(x.shape)
        channels_last = (x.dim() == 4 and not x.is_contiguous()
                         and x.is_contiguous(memory_format=torch.channels_last))
        ctx.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        (indices,) = ctx.saved_tensors
        *lead, height, width = ctx.input_shape
        planes = int(torch.Size(lead).numel())
        # indices address the (height * width) plane of their (sample, channel): make them global.
        offsets = torch.arange(planes, device=grad.device).view(*lead, 1, 1) * (height * width)
        flat = torch.zeros(planes * height * width, dtype=grad.dtype, device=grad.device)
        flat.index_put_(((indices + offsets).reshape(-1),), grad.reshape(-1), accumulate=True)
        grad_input = flat.view(ctx.input_shape).contiguous(memory_format=ctx.memory_format)
        return grad_input, None, None, None, None, None


class DeterministicMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with the same forward and a backward that is deterministic on CUDA.

    Without gradients (evaluation) it is ``nn.MaxPool2d`` itself; with
    ``return_indices=True`` too (nothing to make deterministic then).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices or not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        return _MaxPool2dFunction.apply(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                        self.ceil_mode)


def deterministic_max_pools(model: nn.Module) -> int:
    """Replace every ``nn.MaxPool2d`` of ``model`` by a :class:`DeterministicMaxPool2d`; returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.MaxPool2d:
                swap = DeterministicMaxPool2d(child.kernel_size, child.stride, child.padding, child.dilation,
                                              return_indices=child.return_indices, ceil_mode=child.ceil_mode)
                setattr(parent, name, swap)
                replaced += 1
    return replaced


__all__ = ["DeterministicMaxPool2d", "deterministic_max_pools"]
