"""The map index (``.dyclidx``): tile embeddings with where each tile is, and which model made them.

A ``.dyclidx`` file is a NumPy ``.npz`` archive (read with ``allow_pickle=False``)::

    embeddings   (n, d) float32, unit rows
    coords       (n, 2) float64 latitude, longitude of each tile's centre (WGS84 degrees)
    footprints   (n, 4, 2) float64 latitude, longitude of the tile's corners (a ring, not closed)
    names        (n,) str        tile name: "<file>#c<col>_r<row>" for GeoTIFF tiles, else the image path
    source       (n,) int32      which entry of meta["sources"] the tile comes from
    windows      (n, 4) int64    pixel window (col, row, width, height) in its GeoTIFF, -1 otherwise
    meta         () str          JSON: format, version, model (fingerprint, ...), sources, image_size

It is written to a temporary name and renamed (:func:`dycl._files.atomic_open`).
:meth:`MapIndex.check_model` refuses a model whose fingerprint differs from
the one that built the index: its embeddings would not be comparable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_open

INDEX_FORMAT = "dyclidx"
INDEX_VERSION = 1
INDEX_SUFFIX = ".dyclidx"
_ARRAYS = ("embeddings", "coords", "footprints", "names", "source", "windows", "meta")


@dataclass
class MapIndex:
    """The tiles of a map, their embeddings and their places; see the module docs for the arrays."""

    embeddings: np.ndarray
    coords: np.ndarray
    footprints: np.ndarray
    names: np.ndarray
    source: np.ndarray
    windows: np.ndarray
    model: dict[str, Any]
    sources: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None

    def __post_init__(self) -> None:
        n = self.embeddings.shape[0]
        if self.embeddings.ndim != 2 or n == 0:
            raise ValueError(
                f"index: expected (n, d) embeddings with n > 0, got shape {self.embeddings.shape}"
            )
        for name, arr, shape in (
            ("coords", self.coords, (n, 2)),
            ("footprints", self.footprints, (n, 4, 2)),
            ("names", self.names, (n,)),
            ("source", self.source, (n,)),
            ("windows", self.windows, (n, 4)),
        ):
            if arr.shape != shape:
                raise ValueError(f"index: {name} has shape {arr.shape}, expected {shape}")
        if not np.isfinite(self.embeddings).all() or not np.isfinite(self.coords).all():
            raise ValueError("index: embeddings or coordinates hold NaN or infinite values")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the model that made the embeddings."""
        return str(self.model.get("fingerprint", ""))

    @property
    def geotiffs(self) -> list[Path]:
        """The GeoTIFF files the tiles were cut from (none for tile folders and splits)."""
        return [Path(s["path"]) for s in self.sources if s.get("kind") == "geotiff"]

    def check_model(self, fingerprint: str, description: str = "this model") -> None:
        """Raise ``ValueError`` unless ``fingerprint`` is the one of the model that built the index."""
        if fingerprint != self.fingerprint:
            built = self.model.get("description") or "another model"
            where = f" {self.path}" if self.path is not None else ""
            raise ValueError(
                f"index:{where} was built with another model ({built}, fingerprint {self.fingerprint}); "
                f"{description} has fingerprint {fingerprint}: its embeddings are not comparable. Rebuild "
                "the index with dycl-index and this model, or localize with the index's model"
            )

    def meta(self) -> dict[str, Any]:
        """The JSON ``meta`` entry of the file."""
        return {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "model": self.model,
            "sources": self.sources,
            "tiles": len(self),
            "embedding_dim": int(self.embeddings.shape[1]),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to ``path`` atomically; returns the path."""
        target = Path(path)
        with atomic_open(target, "wb") as handle:
            np.savez(
                handle,
                embeddings=np.ascontiguousarray(self.embeddings, dtype=np.float32),
                coords=np.asarray(self.coords, dtype=np.float64),
                footprints=np.asarray(self.footprints, dtype=np.float64),
                names=np.asarray(self.names, dtype=str),
                source=np.asarray(self.source, dtype=np.int32),
                windows=np.asarray(self.windows, dtype=np.int64),
                meta=np.array(json.dumps(self.meta())),
            )
        self.path = target
        return target


def read_index(path: str | os.PathLike) -> MapIndex:
    """Read a ``.dyclidx`` file. Raises ``ValueError`` (one line, naming the file) when it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"index: no such file: {p}")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:  # np.load raises many types for a file that is not an archive
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"index: cannot read {p} as a .dyclidx file ({first})") from None
    missing = [key for key in _ARRAYS if key not in arrays]
    if missing:
        raise ValueError(f"index: {p} is not a .dyclidx file (it lacks {', '.join(missing)})")
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError:
        raise ValueError(f"index: {p}: its meta entry is not JSON") from None
    if meta.get("format") != INDEX_FORMAT or int(meta.get("version", 0)) > INDEX_VERSION:
        raise ValueError(
            f"index: {p} is format {meta.get('format')!r} version {meta.get('version')}; this "
            f"dycl reads {INDEX_FORMAT} up to version {INDEX_VERSION}"
        )
    try:
        return MapIndex(
            embeddings=arrays["embeddings"].astype(np.float32),
            coords=arrays["coords"],
            footprints=arrays["footprints"],
            names=arrays["names"],
            source=arrays["source"],
            windows=arrays["windows"],
            model=dict(meta.get("model") or {}),
            sources=list(meta.get("sources") or []),
            path=p,
        )
    except ValueError as exc:
        raise ValueError(f"index: {p}: {str(exc).removeprefix('index: ')}") from None


def square_footprints(coords: np.ndarray, side_m: float) -> np.ndarray:
    """``(n, 4, 2)`` latitude/longitude corners (NW, NE, SE, SW) of north-up squares of ``side_m`` metres."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    n = coords.shape[0]
    out = np.empty((n, 4, 2), dtype=np.float64)
    half_diagonal = side_m / np.sqrt(2.0)
    for j, azimuth in enumerate((-45.0, 45.0, 135.0, -135.0)):
        lon, lat, _ = geod.fwd(coords[:, 1], coords[:, 0], np.full(n, azimuth), np.full(n, half_diagonal))
        out[:, j, 0], out[:, j, 1] = lat, lon
    return out


def normalized(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a zero row stays zero."""
    e = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return np.ascontiguousarray(e / np.maximum(norms, 1e-12), dtype=np.float32)


__all__ = [
    "INDEX_FORMAT",
    "INDEX_SUFFIX",
    "INDEX_VERSION",
    "MapIndex",
    "normalized",
    "read_index",
    "square_footprints",
]
