"""torchrun / DistributedDataParallel helpers.

The batch losses (DyCL, HAPPIER, InfoNCE, …) must see the *global* batch. The
recipe, exact for every loss in :mod:`dycl.losses`:

1. each rank embeds its local batch with the DDP-wrapped model;
2. ``emb = all_gather_with_grad(local_emb)`` (gradients flow back to every
   rank's own rows), building labels with :func:`all_gather_no_grad`, then the
   global ``levels`` from the gathered labels with
   :func:`dycl.losses.batch_levels` (a level matrix cannot be gathered by rows);
3. every rank computes the **same** loss on the global batch and calls
   ``backward()`` without rescaling.

Why this gives the single-process gradients: the backward of the all-gather
sums, over ranks, the gradient each rank computed for a rank's rows, i.e.
``world_size × dL/d(rows)``; DDP then averages parameter gradients over ranks,
dividing by ``world_size``. Parameters outside DDP that see only gathered
tensors — the clustering loss's proxies — get the identical full-batch gradient
on every rank, so they stay in sync without communication.

Outside a distributed run every helper degrades to the single-process
behaviour (rank 0, world size 1, gathers return their input).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(device: str = "auto", backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the default process group from torchrun's environment.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``
    through the ``env://`` init method). With ``WORLD_SIZE`` unset or 1 nothing
    is initialised and a single-process :class:`DistInfo` is returned.

    ``device``: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``. On CUDA,
    each process uses ``cuda:LOCAL_RANK``. ``backend`` defaults to NCCL on CUDA
    and gloo on CPU. Idempotent: a second call returns the current state.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but no CUDA device is available")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not (0 <= rank < world_size):
        raise ValueError(f"RANK/WORLD_SIZE: inconsistent values {rank}/{world_size}")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend=backend or ("nccl" if use_cuda else "gloo"),
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    return DistInfo(rank=get_rank(), world_size=get_world_size(), local_rank=local_rank, device=dev)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and outside distributed runs): the process that writes files and logs."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one was initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _gathered_sizes(tensor: torch.Tensor) -> list[int]:
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    if tensor.shape[0] == rows:
        return tensor
    pad = tensor.new_zeros((rows - tensor.shape[0],) + tuple(tensor.shape[1:]))
    return torch.cat([tensor, pad], dim=0)


def all_gather_with_grad(tensor: torch.Tensor, equal_sizes: bool = False) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, keeping the autograd graph.

    Uses ``torch.distributed.nn.functional.all_gather``, whose backward sums the
    gradients from all ranks for each rank's rows (see the module docstring for
    why no rescaling is needed under DDP). Ranks may hold different numbers of
    rows (rows are padded for the collective and trimmed after); pass
    ``equal_sizes=True`` to skip the size exchange when they are known equal.
    Returns ``tensor`` itself outside a distributed run.
    """
    if not is_distributed():
        return tensor
    import torch.distributed.nn.functional as dist_fn

    sizes = [tensor.shape[0]] * get_world_size() if equal_sizes else _gathered_sizes(tensor)
    padded = _pad_rows(tensor, max(sizes))
    with warnings.catch_warnings():
        # Deprecated in favour of a private functional-collectives API; still the public autograd path.
        warnings.filterwarnings("ignore", message=r".*all_gather is deprecated.*", category=FutureWarning)
        parts = dist_fn.all_gather(padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)], dim=0)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor, equal_sizes: bool = False) -> torch.Tensor:
    """Concatenate ``tensor`` (labels, ids) from all ranks along dim 0, without autograd."""
    if not is_distributed():
        return tensor
    sizes = [tensor.shape[0]] * get_world_size() if equal_sizes else _gathered_sizes(tensor)
    padded = _pad_rows(tensor.contiguous(), max(sizes))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)], dim=0)


__all__ = [
    "DistInfo",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "barrier",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
]
