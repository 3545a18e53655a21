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
tensors — the clustering loss's proxies — get the same full-batch gradient on
every rank in exact arithmetic, but nothing guarantees the same *bits* (other
kernels, other reduction orders on other GPUs); :func:`average_gradients`
all-reduces their gradients so they cannot drift apart, and
:func:`check_same_on_all_ranks` verifies it before a checkpoint is written.

Failing together: a rank that raises while the others enter a collective
leaves them waiting for the process-group timeout (30 minutes).
:func:`all_ranks` runs a step everywhere and shares one error flag, so every
rank fails at once; :func:`local_main_first` runs a step (a download) on one
process per node before the others.

Outside a distributed run every helper degrades to the single-process
behaviour (rank 0, world size 1, gathers return their input).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


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


def launched() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from torchrun's environment, read before any process group exists.

    ``(0, 1)`` outside torchrun.
    """
    return _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)


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


# --------------------------------------------------------------------------- failing together


def _collective_device() -> torch.device:
    """Where small tensors for a collective live: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _any_rank(flag: int) -> int:
    """The largest ``flag`` over all ranks (a barrier, too)."""
    value = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


class PeerFailed(RuntimeError):
    """Another process of the run failed in a step that every process runs (see its message)."""


def all_ranks(step: Callable[[], T], errors: tuple[type[BaseException], ...] = (Exception,),
              peer_error: Callable[[], BaseException] | None = None) -> T:
    """Run ``step()`` on every rank; if it raises one of ``errors`` on any rank, raise on all of them.

    The rank that failed re-raises its own exception; the others raise
    ``peer_error()`` (default: :class:`PeerFailed`) at once instead of waiting
    in their next collective until the timeout. ``step`` must not itself run
    collectives that a failing rank would skip. Outside a distributed run this
    is ``step()``.
    """
    if not is_distributed():
        return step()
    error: BaseException | None = None
    result = None
    try:
        result = step()
    except errors as exc:
        error = exc
    if _any_rank(error is not None):
        if error is not None:
            raise error
        raise (peer_error() if peer_error is not None
               else PeerFailed("another process of this run failed (see its message)"))
    return result  # type: ignore[return-value]


def local_main_first(step: Callable[[], T], local_rank: int,
                     errors: tuple[type[BaseException], ...] = (Exception,)) -> T:
    """Run ``step()`` on the first process of each node, then, once every one of them succeeded, on the rest.

    For work that fills a node-local cache, such as downloading pretrained
    weights: one process per node downloads, the others then read the cache. A
    failure of a first process raises on every rank (the others raise
    ``ValueError`` naming it, without running ``step``).
    """
    if not is_distributed():
        return step()
    first = local_rank == 0
    result = None
    error: BaseException | None = None
    if first:
        try:
            result = step()
        except errors as exc:
            error = exc
    if _any_rank(error is not None):
        if error is not None:
            raise error
        raise ValueError("the first process of a node failed in a step the others wait for (see its message)")
    return result if first else step()  # type: ignore[return-value]


def main_decides(value: bool) -> bool:
    """Rank 0's ``value`` on every rank (a barrier, too), for decisions only rank 0 can make."""
    if not is_distributed():
        return bool(value)
    flag = torch.tensor([int(bool(value))], device=_collective_device())
    dist.broadcast(flag, src=0)
    return bool(flag.item())


# --------------------------------------------------------------------------- parameters outside DDP


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce-average the gradients of ``params`` in place (one collective for all of them).

    For parameters that live outside DDP (the proxies): every rank then steps
    with the same gradient, bit for bit. Parameters without a gradient are
    skipped (the same ones on every rank, as every rank runs the same loss).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not is_distributed() or not grads:
        return
    flat = _flat(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(get_world_size())
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def check_same_on_all_ranks(tensors: Iterable[torch.Tensor], what: str) -> None:
    """Raise ``RuntimeError`` on every rank when ``tensors`` differ from rank 0's (bit for bit)."""
    tensors = list(tensors)
    if not is_distributed() or not tensors:
        return
    mine = _flat(tensors)
    reference = mine.clone()
    dist.broadcast(reference, src=0)
    gap = (mine.double() - reference.double()).abs().max().reshape(1)
    unequal = torch.tensor([float(not torch.equal(mine, reference))], dtype=torch.float64, device=mine.device)
    summary = torch.cat([unequal, gap])
    dist.all_reduce(summary, op=dist.ReduceOp.MAX)
    if summary[0].item():
        raise RuntimeError(f"{what}: differ between processes (largest difference from rank 0: "
                           f"{summary[1].item():.3g}); the checkpoint is not written")


__all__ = [
    "DistInfo",
    "PeerFailed",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "all_ranks",
    "average_gradients",
    "barrier",
    "check_same_on_all_ranks",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "launched",
    "local_main_first",
    "main_decides",
]
