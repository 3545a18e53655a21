"""Sizing the DataLoaders: worker processes per training process, and the shared memory they need.

DataLoader workers hand their batches to the training process through shared
memory (``/dev/shm`` on Linux). Each worker keeps up to ``prefetch_factor``
batches in flight, so a node needs about ``processes × workers ×
prefetch_factor`` batches of room there; container runtimes often mount a
small ``/dev/shm`` (64 MB by default for Docker), and running out shows up as a
bus error deep inside a worker. :func:`check_shared_memory` says so at the
start instead, in one line. The standard library only.
"""

from __future__ import annotations

import os
import shutil

from .._validate import int_at_least

#: Where DataLoader workers put their batches (Linux).
SHARED_MEMORY = "/dev/shm"
#: torch.utils.data.DataLoader's default number of batches each worker prepares ahead.
PREFETCH_FACTOR = 2


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def local_world_size() -> int:
    """Training processes on this node: torchrun's ``LOCAL_WORLD_SIZE`` (1 outside torchrun)."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "")
    try:
        return max(1, int(value)) if value else 1
    except ValueError:
        raise ValueError(f"environment variable LOCAL_WORLD_SIZE must be an integer, got {value!r}") from None


def default_workers(processes: int | None = None, cpus: int | None = None) -> int:
    """DataLoader workers per training process: the node's CPUs shared by its processes, one kept each.

    ``cpus // processes - 1`` (at least 1): 15 on a 16-core machine with one
    GPU, 1 on a 2-core one. ``processes`` defaults to :func:`local_world_size`,
    ``cpus`` to :func:`available_cpus`.
    """
    processes = local_world_size() if processes is None else int_at_least("processes", processes, 1)
    cpus = available_cpus() if cpus is None else int_at_least("cpus", cpus, 1)
    return max(1, cpus // processes - 1)


def batch_bytes(pairs: int, image_size: int, views: int = 2, bytes_per_value: int = 1) -> int:
    """Bytes of the images of one batch: ``pairs × views × 3 × image_size²`` values (uint8: 1 byte)."""
    return int(pairs) * int(views) * 3 * int(image_size) ** 2 * int(bytes_per_value)


def check_shared_memory(workers: int, bytes_per_batch: int, processes: int = 1,
                        prefetch_factor: int = PREFETCH_FACTOR, path: str = SHARED_MEMORY) -> int:
    """Raise ``ValueError`` (naming ``workers``) when ``path`` cannot hold the batches in flight.

    Needed: ``processes × workers × prefetch_factor × bytes_per_batch``.
    Nothing is checked without workers or where ``path`` does not exist (not
    Linux). Returns the bytes needed (0 when nothing was checked).
    """
    if workers <= 0 or not os.path.isdir(path):
        return 0
    needed = int(processes) * int(workers) * int(prefetch_factor) * int(bytes_per_batch)
    free = shutil.disk_usage(path).free
    if free < needed:
        mib = 2**20
        raise ValueError(
            f"workers: {path} has {free / mib:.0f} MiB free, but {processes} process(es) × {workers} loader "
            f"workers × {prefetch_factor} batches of {bytes_per_batch / mib:.0f} MiB need about "
            f"{needed / mib:.0f} MiB; enlarge it (e.g. docker run --shm-size={_suggest_gib(needed)}g) "
            "or pass fewer --workers"
        )
    return needed


def _suggest_gib(needed: int) -> int:
    return max(1, -(-2 * needed // 2**30))  # twice the need, whole GiB


__all__ = [
    "PREFETCH_FACTOR",
    "SHARED_MEMORY",
    "available_cpus",
    "batch_bytes",
    "check_shared_memory",
    "default_workers",
    "local_world_size",
]
