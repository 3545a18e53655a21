"""The engines of ``dycl-index``, ``dycl-localize`` and ``dycl-export``: options checked first, then the work.

Each command's options are a dataclass whose ``__post_init__`` checks every
value before anything is read or written; :func:`run_index`,
:func:`run_localize` and :func:`run_export` lock their outputs, refuse to
replace existing results without ``overwrite`` and write atomically, so a
failure never loses what was there.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .._files import FolderLock, check_writable
from .._validate import int_at_least
from ..data.geotiff import DEFAULT_MIN_VALID, DEFAULT_STRIDE_M, DEFAULT_TILE_M
from .estimate import (
    DEFAULT_METHOD,
    DEFAULT_RADIUS_M,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    check_options,
    summarize,
)
from .localizer import Localizer
from .outputs import RESULT_FILES, write_outputs
from .report import format_summary
from .truth import check_truth


@dataclass
class ModelOptions:
    """Which network embeds the images: a checkpoint (torch) or an ONNX file (ONNX Runtime)."""

    checkpoint: str | os.PathLike | None = None
    model: str | os.PathLike | None = None
    backbone: str | None = None
    image_size: int | None = None
    batch_size: int = 64
    device: str = "auto"
    amp: bool = True
    trust_checkpoint: bool = False
    progress: bool = True

    def check_model(self) -> None:
        if (self.checkpoint is None) == (self.model is None):
            raise ValueError("checkpoint: pass exactly one of checkpoint (a .pt) and model (an .onnx file)")
        self.batch_size = int_at_least("batch_size", self.batch_size, 1)
        if self.image_size is not None:
            self.image_size = int_at_least("image_size", self.image_size, 16)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: expected auto, cpu or cuda, got {self.device!r}")

    def localizer(self, warn) -> Localizer:
        """Load the model (a one-line ``ValueError`` for a bad file)."""
        common = {"batch_size": self.batch_size, "amp": self.amp, "progress": self.progress, "warn": warn}
        if self.model is not None:
            return Localizer.from_onnx(self.model, image_size=self.image_size, **common)
        return Localizer.from_checkpoint(
            self.checkpoint,
            device=self.device,
            backbone=self.backbone,
            image_size=self.image_size,
            trusted=self.trust_checkpoint,
            **common,
        )


def _positive(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


@dataclass
class IndexOptions(ModelOptions):
    """``dycl-index``: one source (GeoTIFFs, a tile CSV, or a dataset split) into the ``out`` file."""

    out: str | os.PathLike = ""
    geotiff: Sequence[str | os.PathLike] = ()
    tiles: str | os.PathLike | None = None
    data_dir: str | os.PathLike | None = None
    split: str = "test"
    dataset_format: str = "auto"
    tile_m: float = DEFAULT_TILE_M
    stride_m: float = DEFAULT_STRIDE_M
    min_valid: float = DEFAULT_MIN_VALID
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.check_model()
        given = [bool(self.geotiff), self.tiles is not None, self.data_dir is not None]
        if sum(given) != 1:
            raise ValueError("geotiff: pass exactly one source: geotiff files, a tiles CSV, or a data_dir")
        if not self.out:
            raise ValueError("out: no index file given (e.g. --out map.dyclidx)")
        self.tile_m = _positive("tile_m", self.tile_m)
        self.stride_m = _positive("stride_m", self.stride_m)
        if not 0 < float(self.min_valid) <= 1:
            raise ValueError(f"min_valid: expected a share in (0, 1], got {self.min_valid!r}")
        if Path(self.out).exists() and not self.overwrite:
            raise ValueError(f"out: {self.out} exists; pass --overwrite to replace it")


def _warner(log: TextIO, prog: str):
    def warn(line: str) -> None:
        print(f"{prog}: warning: {line}", file=log)

    return warn


def _lock_file(path: Path, held: contextlib.ExitStack, name: str) -> None:
    check_writable(path.parent if str(path.parent) else Path("."), name)
    held.enter_context(FolderLock(path.parent, name, lock_file=f".{path.name}.lock"))


def build_index(o: IndexOptions, loc: Localizer):
    """The index of ``o``'s source, embedded by ``loc``."""
    if o.geotiff:
        return loc.index_geotiff(list(o.geotiff), o.tile_m, o.stride_m, o.min_valid)
    if o.tiles is not None:
        return loc.index_tiles(o.tiles, o.tile_m)
    return loc.index_split(o.data_dir, o.split, o.dataset_format, o.tile_m)


def run_index(o: IndexOptions, out: TextIO | None = None, log: TextIO | None = None):
    """``dycl-index``: build and write the index; returns it."""
    out, log = out or sys.stdout, log or sys.stderr
    target = Path(o.out)
    with contextlib.ExitStack() as held:
        _lock_file(target, held, "out")
        loc = o.localizer(_warner(log, "dycl-index"))
        index = build_index(o, loc)
        index.save(target)
    for source in index.sources:
        if source["kind"] == "geotiff":
            print(
                f"dycl-index: {source['tiles']} tiles of {source['path']} ({source['crs']}, "
                f"{source['tile_m']:.1f} m every {source['stride_m']:.1f} m = "
                f"{source['tile_px'][0]} px every "
                f"{source['stride_px'][0]} px; {source['skipped_empty']} mostly empty tiles left out)",
                file=out,
            )
        else:
            skipped = len(source.get("skipped", []))
            print(f"dycl-index: {source['tiles']} tiles of {source['path']} ({skipped} skipped)", file=out)
    print(
        f"dycl-index: wrote {target} ({len(index)} tiles, {index.embeddings.shape[1]}-d, {loc.description}; "
        f"reading {loc.seconds['reading']:.1f} s, network {loc.seconds['network']:.1f} s)",
        file=out,
    )
    return index


@dataclass
class LocalizeOptions(ModelOptions):
    """``dycl-localize``: where were ``images`` taken, on the map of ``index``; results into ``out``."""

    index: str | os.PathLike = ""
    images: Sequence[str | os.PathLike] = field(default_factory=list)
    out: str | os.PathLike = ""
    top_k: int = DEFAULT_TOP_K
    method: str = DEFAULT_METHOD
    radius_m: float = DEFAULT_RADIUS_M
    temperature: float = DEFAULT_TEMPERATURE
    truth: str | os.PathLike | None = "auto"
    draw_map: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.check_model()
        if not self.index:
            raise ValueError("index: no index given (build one with dycl-index)")
        if not self.images:
            raise ValueError("images: no photo or folder given")
        if not self.out:
            raise ValueError("out: no output folder given (e.g. --out results/)")
        check_options(self.method, self.top_k, self.radius_m, self.temperature)
        check_truth(self.truth)
        taken = [Path(self.out) / f for f in RESULT_FILES if (Path(self.out) / f).exists()]
        if taken and not self.overwrite:
            raise ValueError(f"out: {taken[0]} exists; pass --overwrite to replace the results")


def settings_of(o: LocalizeOptions, loc: Localizer) -> dict[str, Any]:
    return {
        "index": str(o.index),
        "model": loc.description,
        "method": o.method,
        "top_k": o.top_k,
        "radius_m": o.radius_m,
        "temperature": o.temperature,
        "truth": str(o.truth),
    }


def run_localize(o: LocalizeOptions, out: TextIO | None = None, log: TextIO | None = None) -> dict[str, Any]:
    """``dycl-localize``: locate the photos, write the results, print the summary; returns the summary."""
    out, log = out or sys.stdout, log or sys.stderr
    folder = Path(o.out)
    with contextlib.ExitStack() as held:
        check_writable(folder, "out")
        held.enter_context(FolderLock(folder, "out"))
        loc = o.localizer(_warner(log, "dycl-localize"))
        index = loc.use_index(o.index)  # another model's index is refused before any photo is read
        locations = loc.locate(
            o.images,
            truth=o.truth,
            top_k=o.top_k,
            method=o.method,
            radius_m=o.radius_m,
            temperature=o.temperature,
        )
        if not any(x.ok for x in locations):
            raise ValueError(f"images: none of the {len(locations)} images could be decoded")
        summary = summarize(locations, index)
        summary.update({"settings": settings_of(o, loc), "seconds": dict(loc.seconds)})
        written = write_outputs(folder, locations, index, summary, draw_map=o.draw_map)
    print(format_summary({f"{o.method} estimate": summary}), file=out)
    print(f"\nwrote {', '.join(str(p) for p in written)}", file=out)
    return summary


def run_export(
    checkpoint: str | os.PathLike,
    onnx_path: str | os.PathLike,
    image_size: int | None = None,
    backbone: str | None = None,
    trusted: bool = False,
    overwrite: bool = False,
    out: TextIO | None = None,
) -> Path:
    """``dycl-export``: the checkpoint's network as ONNX (dynamic batch), checked against torch on a batch."""
    import numpy as np
    import torch

    from ..models import load_model
    from ..models.deploy import ONNX_OPSET, OnnxEmbeddingNet, export_onnx

    out = out or sys.stdout
    target = Path(onnx_path)
    if target.exists() and not overwrite:
        raise ValueError(f"onnx: {target} exists; pass --overwrite to replace it")
    check_writable(target.parent if str(target.parent) else Path("."), "onnx")
    model, info = load_model(checkpoint, backbone=backbone, image_size=image_size, trusted=trusted)
    size = int(info["image_size"])
    meta = {
        "backbone": info["backbone"],
        "embedding_dim": info["embedding_dim"],
        "checkpoint": Path(checkpoint).name,
    }
    export_onnx(model, target, size, meta)
    batch = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(batch).numpy()
    got = OnnxEmbeddingNet(target)(batch).numpy()
    diff = float(np.abs(got - expected).max())
    print(
        f"dycl-export: wrote {target} (opset {ONNX_OPSET}, input 'images' (batch, 3, {size}, {size}) with a "
        f"dynamic batch axis, output 'embeddings' (batch, {info['embedding_dim']})); ONNX Runtime matches "
        f"torch to {diff:.1e} on a batch of 4",
        file=out,
    )
    if diff > 1e-4:
        raise ValueError(f"onnx: the exported model differs from the checkpoint by {diff:.1e} (> 1e-4)")
    return target


__all__ = [
    "IndexOptions",
    "LocalizeOptions",
    "ModelOptions",
    "build_index",
    "run_export",
    "run_index",
    "run_localize",
]
