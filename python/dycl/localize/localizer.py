"""The Python API of localization: one object that embeds maps and photos and says where photos were taken.

::

    from dycl.localize import Localizer

    loc = Localizer.from_checkpoint("dycl-demo/last.pt")          # or Localizer.from_onnx("model.onnx")
    index = loc.index_geotiff("orthophoto.tif", tile_m=160, stride_m=40)
    index.save("map.dyclidx")                                     # later: loc.use_index("map.dyclidx")
    for where in loc.locate(["photo1.jpg", "photos/"]):
        print(where.image, where.latitude, where.longitude, where.error_m)

``dycl-index`` and ``dycl-localize`` call exactly these methods. Images go
through the network with :func:`dycl.embed.extract_embeddings` (batched, AMP
on CUDA, a progress bar); they are read in chunks first, so that a photo that
cannot be decoded is skipped and named instead of stopping the batch, and so
that reading, network and search times are measured apart (``seconds``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.geotiff import DEFAULT_MIN_VALID, DEFAULT_STRIDE_M, DEFAULT_TILE_M
from .estimate import (
    DEFAULT_METHOD,
    DEFAULT_RADIUS_M,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    Location,
    build_locations,
    check_options,
    estimate_positions,
    search,
)
from .index import MapIndex, normalized, read_index, square_footprints
from .truth import truths_for

Warn = Callable[[str], None]


class _Labelled:
    """``(transform(item), 0)`` items, the shape :func:`dycl.embed.extract_embeddings` reads."""

    def __init__(self, items: Sequence, transform=None) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        return (self.transform(item) if self.transform is not None else item), 0


class Localizer:
    """A model plus (once built or loaded) a map index. See the module docs.

    Args:
        model: maps ``(b, 3, S, S)`` normalised images to ``(b, d)`` embeddings
            (a torch :class:`~dycl.models.EmbeddingNet` or an :class:`~dycl.models.deploy.OnnxEmbeddingNet`).
        image_size: the network's input size ``S``.
        fingerprint: identifies the weights (an index remembers it).
        description: how the model is named in messages and in an index.
        device, batch_size, amp, progress: as for :func:`dycl.embed.extract_embeddings`.
        warn: called with one line per skipped file (default: ignore).
    """

    def __init__(
        self,
        model: Any,
        image_size: int,
        fingerprint: str,
        description: str = "",
        device: str = "cpu",
        batch_size: int = 64,
        amp: bool = True,
        progress: bool = True,
        warn: Warn | None = None,
    ) -> None:
        from ..data import eval_transforms

        self.model, self.image_size, self.fingerprint = model, int(image_size), str(fingerprint)
        self.description = description or f"model {fingerprint}"
        self.device, self.batch_size, self.amp, self.progress = device, int(batch_size), amp, progress
        self.warn: Warn = warn or (lambda line: None)
        self.transform = eval_transforms(self.image_size)
        self.index: MapIndex | None = None
        self.seconds: dict[str, float] = {"reading": 0.0, "network": 0.0, "search": 0.0, "estimate": 0.0}
        self.images_embedded = 0

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        device: str = "auto",
        backbone: str | None = None,
        image_size: int | None = None,
        trusted: bool = False,
        **kwargs: Any,
    ) -> Localizer:
        """A localizer with the network of a ``dycl-train`` checkpoint (or the authors' ``net_state``)."""
        from ..embed import resolve_device
        from ..models import load_model
        from ..models.deploy import model_fingerprint

        model, info = load_model(checkpoint, backbone=backbone, image_size=image_size, trusted=trusted)
        dev = resolve_device(device)
        model.to(dev)
        size = int(info["image_size"])
        text = f"{Path(checkpoint).name}: {info['backbone']}, {info['embedding_dim']}-d, {size} px"
        return cls(model, size, model_fingerprint(model, size), text, device=dev, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, image_size: int | None = None, **kwargs: Any) -> Localizer:
        """A localizer running an ONNX embedding model with ONNX Runtime (CPU)."""
        from ..models.deploy import OnnxEmbeddingNet

        model = OnnxEmbeddingNet(path, image_size=image_size)
        text = f"{Path(path).name}: ONNX, {model.embedding_dim}-d, {model.image_size} px"
        kwargs.pop("device", None)
        return cls(model, model.image_size, model.fingerprint, text, device="cpu", **kwargs)

    # ------------------------------------------------------------------ embedding

    def _network(self, tensors: list, desc: str) -> np.ndarray:
        from ..embed import extract_embeddings

        start = time.perf_counter()
        emb = extract_embeddings(
            self.model,
            _Labelled(tensors),
            batch_size=self.batch_size,
            device=self.device,
            amp=self.amp,
            workers=0,
            progress=self.progress,
            desc=desc,
        )
        self.seconds["network"] += time.perf_counter() - start
        self.images_embedded += len(tensors)
        return emb

    def _chunk(self) -> int:
        """Images read at a time: about 256 MB of network input."""
        return max(self.batch_size, int(256e6 // (3 * self.image_size**2 * 4)))

    def embed_files(self, paths: Sequence[Path], desc: str = "embedding") -> tuple[np.ndarray, list[str]]:
        """Embeddings of the files that decode (rows in order) and, per file, ``""`` or why it was skipped."""
        from ..data.images import decode_images

        rows: list[np.ndarray] = []
        reasons = [""] * len(paths)
        step = self._chunk()
        for start in range(0, len(paths), step):
            begin = time.perf_counter()
            tensors, failures = decode_images(paths[start : start + step], self.transform)
            self.seconds["reading"] += time.perf_counter() - begin
            for i, reason in failures:
                reasons[start + i] = reason
                self.warn(f"{reason}; skipped")
            kept = [t for t in tensors if t is not None]
            if kept:
                rows.append(self._network(kept, desc))
        dim = rows[0].shape[1] if rows else 0
        return (np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)), reasons

    # ------------------------------------------------------------------ indexing

    def _finish_index(self, emb, coords, footprints, names, source, windows, sources) -> MapIndex:
        model = {
            "fingerprint": self.fingerprint,
            "description": self.description,
            "image_size": self.image_size,
        }
        self.index = MapIndex(
            normalized(emb),
            np.asarray(coords, np.float64),
            np.asarray(footprints, np.float64),
            np.asarray(names, dtype=str),
            np.asarray(source, np.int32),
            np.asarray(windows, np.int64),
            model,
            sources,
        )
        return self.index

    def index_geotiff(
        self,
        geotiffs: str | os.PathLike | Sequence[str | os.PathLike],
        tile_m: float = DEFAULT_TILE_M,
        stride_m: float = DEFAULT_STRIDE_M,
        min_valid: float = DEFAULT_MIN_VALID,
    ) -> MapIndex:
        """Cut GeoTIFFs into tiles (:func:`dycl.data.geotiff.plan_tiles`), embed them; returns the index."""
        from ..data.geotiff import GeoTiffTiles, plan_tiles

        files = [geotiffs] if isinstance(geotiffs, (str, os.PathLike)) else list(geotiffs)
        if not files:
            raise ValueError("geotiff: no GeoTIFF given")
        grids = [plan_tiles(f, tile_m, stride_m, min_valid) for f in files]  # every file checked first
        parts: dict[str, list] = {k: [] for k in ("emb", "coords", "foot", "names", "source", "windows")}
        for number, grid in enumerate(grids):
            tiles = GeoTiffTiles(grid, self.image_size)
            step = self._chunk()
            try:
                for start in range(0, len(grid), step):
                    begin = time.perf_counter()
                    tensors = [self.transform(tiles[i]) for i in range(start, min(start + step, len(grid)))]
                    self.seconds["reading"] += time.perf_counter() - begin
                    parts["emb"].append(self._network(tensors, f"embedding tiles of {grid.path.name}"))
            finally:
                tiles.close()
            parts["coords"].append(grid.centres)
            parts["foot"].append(grid.footprints)
            parts["names"] += [f"{grid.path.name}#c{c}_r{r}" for c, r, _, _ in grid.windows]
            parts["source"].append(np.full(len(grid), number))
            parts["windows"].append(grid.windows)
        return self._finish_index(
            np.concatenate(parts["emb"]),
            np.concatenate(parts["coords"]),
            np.concatenate(parts["foot"]),
            parts["names"],
            np.concatenate(parts["source"]),
            np.concatenate(parts["windows"]),
            [g.describe() for g in grids],
        )

    def index_images(
        self,
        paths: Sequence[Path],
        coords: np.ndarray,
        source: dict[str, Any],
        tile_m: float = DEFAULT_TILE_M,
    ) -> MapIndex:
        """Embed tile images with known centres; footprints are north-up squares of ``tile_m`` (nominal)."""
        emb, reasons = self.embed_files(list(paths), "embedding tiles")
        keep = np.array([not r for r in reasons], dtype=bool)
        if not keep.any():
            raise ValueError(f"tiles: none of the {len(paths)} tiles could be decoded")
        kept = np.asarray(coords, np.float64)[keep]
        source = {
            **source,
            "tiles": int(keep.sum()),
            "skipped": [r for r in reasons if r],
            "tile_m": float(tile_m),
            "footprints": "nominal",
        }
        names = [str(p) for p, k in zip(paths, keep, strict=True) if k]
        return self._finish_index(
            emb,
            kept,
            square_footprints(kept, tile_m),
            names,
            np.zeros(len(kept)),
            np.full((len(kept), 4), -1),
            [source],
        )

    def index_tiles(self, csv_path: str | os.PathLike, tile_m: float = DEFAULT_TILE_M) -> MapIndex:
        """Index a folder of tiles listed in a CSV ``path,latitude,longitude``."""
        from ..data.images import read_tile_list

        paths, coords = read_tile_list(csv_path)
        return self.index_images(paths, coords, {"kind": "tiles", "path": str(csv_path)}, tile_m)

    def index_split(
        self,
        data_dir: str | os.PathLike,
        split: str = "test",
        dataset_format: str = "auto",
        tile_m: float = DEFAULT_TILE_M,
    ) -> MapIndex:
        """Index the satellite view of a DA-Campus folder or manifest split (one tile per building)."""
        from ..data import open_split

        s = open_split(data_dir, split, dataset_format)
        source = {"kind": "split", "path": str(data_dir), "split": split}
        return self.index_images(list(s.satellite_paths), np.asarray(s.coords), source, tile_m)

    def use_index(self, index: MapIndex | str | os.PathLike) -> MapIndex:
        """Use an index (or read one), refusing it when another model built it."""
        idx = index if isinstance(index, MapIndex) else read_index(index)
        idx.check_model(self.fingerprint, self.description)
        self.index = idx
        return idx

    # ------------------------------------------------------------------ localizing

    def locate(
        self,
        images: Sequence[str | os.PathLike],
        truth: str | os.PathLike | None = "auto",
        top_k: int = DEFAULT_TOP_K,
        method: str = DEFAULT_METHOD,
        radius_m: float = DEFAULT_RADIUS_M,
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> list[Location]:
        """Where each photo (files, or folders of them) was taken: one :class:`Location` per file.

        ``truth``: ``"auto"`` (GPS EXIF where present), ``"exif"`` (and say so
        per photo without it), ``"none"``, or a CSV ``path,latitude,longitude``.
        Files that cannot be decoded come back with ``ok=False`` and a reason.
        """
        from ..data.images import collect_images

        if self.index is None:
            raise ValueError("index: no map index; build one (index_geotiff, ...) or use_index(path) first")
        check_options(method, top_k, radius_m, temperature)
        paths = collect_images(images)
        emb, reasons = self.embed_files(paths, "embedding photos")
        ok = [not r for r in reasons]
        located = [str(p) for p, good in zip(paths, ok, strict=True) if good]
        truths = truths_for([p for p, good in zip(paths, ok, strict=True) if good], truth, self.warn)
        found = (
            locate_embeddings(
                emb, located, truths, self.index, top_k, method, radius_m, temperature, self.seconds
            )
            if located
            else []
        )
        it = iter(found)
        return [
            next(it) if good else Location(str(p), ok=False, reason=reason)
            for p, good, reason in zip(paths, ok, reasons, strict=True)
        ]


def locate_embeddings(
    query_emb: np.ndarray,
    images: Sequence[str],
    truths: Sequence,
    index: MapIndex,
    top_k: int = DEFAULT_TOP_K,
    method: str = DEFAULT_METHOD,
    radius_m: float = DEFAULT_RADIUS_M,
    temperature: float = DEFAULT_TEMPERATURE,
    seconds: dict[str, float] | None = None,
) -> list[Location]:
    """:meth:`Localizer.locate` from embeddings: search, estimate, errors (also for baselines)."""
    check_options(method, top_k, radius_m, temperature)
    seconds = seconds if seconds is not None else {}
    start = time.perf_counter()
    ranked, sims = search(query_emb, index, top_k)
    middle = time.perf_counter()
    positions, used = estimate_positions(ranked, sims, index, method, radius_m, temperature)
    out = build_locations(images, ranked, sims, index, positions, used, method, truths)
    seconds["search"] = seconds.get("search", 0.0) + middle - start
    seconds["estimate"] = seconds.get("estimate", 0.0) + time.perf_counter() - middle
    return out


def random_index(index: MapIndex, seed: int = 0) -> MapIndex:
    """``index`` with random unit embeddings: the chance level of a map."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal(index.embeddings.shape).astype(np.float32)
    model = {"fingerprint": f"random-{seed}", "description": "random embeddings"}
    return MapIndex(
        normalized(emb),
        index.coords,
        index.footprints,
        index.names,
        index.source,
        index.windows,
        model,
        index.sources,
    )


__all__ = ["Localizer", "locate_embeddings", "random_index"]
