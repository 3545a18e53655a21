"""Embedding extraction sharded over the processes of a ``torchrun`` launch, through shard files.

For galleries too large for one process: each process embeds its rows of
both image sets of a split and writes them as one shard file per view; the
main process then reads every shard back and concatenates them in rank
order, which is the one-process result::

    torchrun --nproc-per-node 4 -m dycl eval --checkpoint last.pt --data-dir DA-Campus --output x/metrics.json

(:mod:`dycl.evaluate` does this when it finds itself under ``torchrun``.)
The shards live in ``<embeddings folder>/shards/``, one file per view and
process, ``satellite.rank0-of-4.npz``, ``drone.rank0-of-4.npz``, ..., each
written atomically (``dycl._files.atomic_open``), so a file that exists is
complete. Rows are handed out in whole batches (:func:`dycl.embed.shard_rows`
with ``block`` = the batch size): every forward pass sees the images of a
one-process pass's batch, so the numbers are the same.

Resuming: a shard that exists and was made by the same model (its
fingerprint), the same images, the same input size and precision and the
same rows is used as it is, so the same command run again after a crash
embeds only what is missing. A shard made by another model or other images
is an error naming it (``overwrite=True`` recomputes it). A shard that the
main process cannot find is an error naming the process that should have
written it (usually: the folder is not on a filesystem that every node sees).
The shards are removed once the merged embeddings files are written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from ._files import TMP_SUFFIX, atomic_open
from .embed import autocast_dtype, embed_rows, eval_image_sets, shard_rows

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .data import Split

#: The sub-folder of an embeddings folder that holds the shards.
SHARDS_DIR = "shards"
SHARD_FORMAT = "dycl-embedding-shard/1"
#: The views of a split, in the order they are embedded (the rows of ``tasks_from_split``'s arguments).
VIEWS: tuple[str, str] = ("satellite", "drone")


@dataclass(frozen=True)
class ShardSource:
    """What a shard's numbers depend on; a shard is reused only when all of it matches.

    ``model``: the fingerprint of the weights and input size
    (:func:`dycl.models.deploy.model_fingerprint`); ``data``: ``{view: hash of
    the image names}`` (:func:`image_fingerprints`); ``precision``: the
    autocast dtype (``"float32"`` without); ``description``: the checkpoint
    and dataset in words, for messages only.
    """

    model: str
    data: Mapping[str, str]
    image_size: int
    precision: str
    description: str = ""

    def fields(self, view: str) -> dict[str, Any]:
        """The identity of ``view``'s shards, as stored in each of them."""
        return {"model": self.model, "data": self.data[view], "image_size": int(self.image_size),
                "precision": self.precision}


def image_fingerprints(split: Split) -> dict[str, str]:
    """``{view: 16 hex digits}``: SHA-256 over the view's image names (relative to their common folder).

    Names and order, not the pixels: a dataset moved elsewhere keeps its
    fingerprint; another split or another list of images does not.
    """
    paths = [*split.satellite_paths, *split.drone_paths]
    root = os.path.commonpath([str(p) for p in paths]) if paths else ""
    out = {}
    for view, files, buildings in (("satellite", split.satellite_paths, range(split.num_buildings)),
                                   ("drone", split.drone_paths, split.drone_buildings.tolist())):
        digest = hashlib.sha256(f"{split.name}|{view}|{len(files)}".encode())
        for path, building in zip(files, buildings, strict=True):
            digest.update(f"\x1f{os.path.relpath(path, root)}\x1e{building}".encode())
        out[view] = digest.hexdigest()[:16]
    return out


def shard_source(model: torch.nn.Module, split: Split, image_size: int, device: torch.device | str,
                 amp: bool, description: str = "") -> ShardSource:
    """The :class:`ShardSource` of embedding ``split`` with ``model`` on ``device``."""
    from .models.deploy import model_fingerprint

    dtype = autocast_dtype(device, amp)
    return ShardSource(model=model_fingerprint(model, image_size), data=image_fingerprints(split),
                       image_size=int(image_size), precision=str(dtype).replace("torch.", "") if dtype
                       else "float32", description=description)


def shard_path(folder: str | os.PathLike, view: str, rank: int, world_size: int) -> Path:
    """The shard file of ``view`` written by process ``rank`` of ``world_size``."""
    return Path(folder) / f"{view}.rank{int(rank)}-of-{int(world_size)}.npz"


def _read_shard(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            rows = np.asarray(npz["embeddings"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"embeddings: cannot read the shard {path} ({first}); remove it") from None
    if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT:
        raise ValueError(f"embeddings: {path} is not a dycl embedding shard; remove it")
    return meta, rows


def _mismatch(meta: Mapping[str, Any], source: ShardSource, view: str) -> str | None:
    """What differs between a shard's identity and ``source`` (None when nothing does)."""
    wanted = source.fields(view)
    names = {"model": "another model", "data": "other images", "image_size": "another input size",
             "precision": "another precision"}
    for key, what in names.items():
        if meta.get(key) != wanted[key]:
            return f"{what} ({key} {meta.get(key)!r}, this run {wanted[key]!r})"
    return None


def _same_rows(meta: Mapping[str, Any], rows: np.ndarray, expected: range, count: int) -> bool:
    return (meta.get("start") == expected.start and meta.get("stop") == expected.stop
            and meta.get("count") == count and rows.ndim == 2 and rows.shape[0] == len(expected))


def _reusable(path: Path, view: str, source: ShardSource, rows: range, count: int, overwrite: bool) -> bool:
    """Whether this process's existing shard ``path`` already holds its rows (see the module docstring)."""
    if not path.is_file():
        return False
    try:
        meta, stored = _read_shard(path)
    except ValueError:
        if overwrite:
            return False
        raise
    differs = _mismatch(meta, source, view)
    if differs is not None:
        if overwrite:
            return False
        raise ValueError(f"embeddings: the shard {path} was made by {differs}; pass --overwrite to "
                         f"recompute it, or remove {path.parent}")
    return _same_rows(meta, stored, rows, count)  # other rows: another batch size; recomputed


def write_shard(path: Path, view: str, rows: range, count: int, embeddings: np.ndarray,
                source: ShardSource) -> Path:
    """Write one shard atomically: its rows' embeddings and what they depend on."""
    meta = {"format": SHARD_FORMAT, "view": view, "start": rows.start, "stop": rows.stop, "count": int(count),
            **source.fields(view), "source": source.description}
    with atomic_open(path, "wb") as handle:
        np.savez(handle, embeddings=np.ascontiguousarray(embeddings, dtype=np.float32),
                 meta=np.asarray(json.dumps(meta)))
    return path


def embed_shards(
    model: torch.nn.Module,
    split: Split,
    folder: str | os.PathLike,
    source: ShardSource,
    rank: int,
    world_size: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    amp: bool = True,
    workers: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    log: TextIO | None = None,
) -> dict[str, Path]:
    """Embed process ``rank``'s rows of both views of ``split`` into shard files; ``{view: path}``.

    A view whose shard is already there (same :class:`ShardSource`, same
    rows) is not embedded again (a line on ``log`` says so). Collective-free:
    every process calls it on its own; :func:`merge_shards` reads the result.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for view, images in eval_image_sets(split, source.image_size).items():
        path = shard_path(out, view, rank, world_size)
        rows = shard_rows(len(images), rank, world_size, block=batch_size)
        if _reusable(path, view, source, rows, len(images), overwrite):
            if log is not None:
                print(f"embeddings: process {rank}: {view} rows {rows.start}..{rows.stop} from {path}, "
                      "embedded before", file=log)
        else:
            emb = embed_rows(model, images, rows, f"embedding {view} (rank {rank})", batch_size=batch_size,
                             device=device, amp=amp, workers=workers, progress=progress)
            write_shard(path, view, rows, len(images), emb, source)
        written[view] = path
    return written


def _merged_view(folder: str | os.PathLike, view: str, count: int, source: ShardSource, world_size: int,
                 batch_size: int) -> np.ndarray:
    parts = []
    for rank in range(world_size):
        path = shard_path(folder, view, rank, world_size)
        rows = shard_rows(count, rank, world_size, block=batch_size)
        if not path.is_file():
            raise ValueError(
                f"embeddings: the shard {path} of process {rank} of {world_size} ({view} rows "
                f"{rows.start}..{rows.stop}) is missing; every process must write into the same folder "
                "(on a filesystem that all nodes see)")
        meta, emb = _read_shard(path)
        differs = _mismatch(meta, source, view)
        if differs is not None:
            raise ValueError(f"embeddings: the shard {path} was made by {differs}")
        if not _same_rows(meta, emb, rows, count):
            held = f"{meta.get('start')}..{meta.get('stop')} of {meta.get('count')}"
            raise ValueError(f"embeddings: the shard {path} holds rows {held}, expected "
                             f"{rows.start}..{rows.stop} of {count}")
        parts.append(emb)
    widths = sorted({part.shape[1] for part in parts})
    if len(widths) != 1:
        raise ValueError(f"embeddings: the {view} shards in {folder} have different widths {widths}")
    return np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)


def merge_shards(folder: str | os.PathLike, split: Split, source: ShardSource, world_size: int,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Satellite ``(B, d)`` and drone ``(N, d)`` embeddings from the ``world_size`` shards of each view.

    Every shard must be there, come from ``source`` and hold exactly the rows
    :func:`dycl.embed.shard_rows` gives its process; anything else raises
    ``ValueError`` naming the shard (nothing partial is returned).
    """
    sat = _merged_view(folder, "satellite", split.num_buildings, source, world_size, batch_size)
    drone = _merged_view(folder, "drone", split.num_drone, source, world_size, batch_size)
    return sat, drone


def remove_shards(folder: str | os.PathLike) -> None:
    """Delete the shard files (and their temporaries) in ``folder``, and the folder once it is empty."""
    path = Path(folder)
    if not path.is_dir():
        return
    for view in VIEWS:
        for file in (*path.glob(f"{view}.rank*-of-*.npz"), *path.glob(f"{view}.rank*-of-*.npz{TMP_SUFFIX}")):
            with contextlib.suppress(OSError):
                file.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()  # only when empty: anything else in it is not ours


def sharded_embed_split(
    model: torch.nn.Module,
    split: Split,
    folder: str | os.PathLike,
    source: ShardSource,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    amp: bool = True,
    workers: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    log: TextIO | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`dycl.embed.embed_split` over the processes of a launch; call on every rank.

    Each rank writes its shards (:func:`embed_shards`); once every rank has,
    the main process merges them (:func:`merge_shards`) and gets the
    embeddings, the others get None. An error on one rank (an unreadable
    image, a foreign shard) is raised on every rank at once.
    """
    from .distributed import all_ranks, get_rank, get_world_size

    rank, world = get_rank(), get_world_size()
    kwargs = {"batch_size": batch_size, "device": device, "amp": amp, "workers": workers,
              "progress": progress and rank == 0, "overwrite": overwrite, "log": log}
    all_ranks(lambda: embed_shards(model, split, folder, source, rank, world, **kwargs),
              peer_error=lambda: ValueError("embeddings: another process failed while embedding its shard "
                                            "(see its message); the finished shards are kept for a rerun"))
    if rank != 0:
        return None
    return merge_shards(folder, split, source, world, batch_size)


__all__ = [
    "SHARDS_DIR",
    "SHARD_FORMAT",
    "VIEWS",
    "ShardSource",
    "embed_shards",
    "image_fingerprints",
    "merge_shards",
    "remove_shards",
    "shard_path",
    "shard_source",
    "sharded_embed_split",
    "write_shard",
]
