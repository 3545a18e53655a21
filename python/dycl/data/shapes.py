"""A tiny synthetic hierarchical dataset: shape family > colour > pattern.

The single-domain counterpart of the synthetic campus, for tests and
miniature experiments (Table IV's setting: DyML-like three-level labels).
Each fine class is one ``family/colour/pattern`` path, e.g.
``disc/red/stripes``:

* coarse: the shape family (``disc``, ``square``, ``triangle``);
* middle: the colour of the shape within its family (``disc/red``);
* fine: the pattern painted inside it (``disc/red/stripes``).

Images are drawn with NumPy: a jittered shape (position, size, brightness)
on a noisy grey background. Everything is a pure function of the arguments
and ``seed`` (each image has its own generator, seeded by (seed, class,
instance)), so the same call writes byte-identical PNG files.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np

from ..levels import split_label_paths

FAMILIES: tuple[str, ...] = ("disc", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 45, 40), "green": (40, 165, 60), "blue": (45, 70, 205), "yellow": (225, 200, 40),
}
PATTERNS: tuple[str, ...] = ("solid", "stripes", "checks", "dots")
MANIFEST = "shapes.csv"


def _mask(family: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``(size, size)`` mask of a jittered shape of ``family``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.uniform(-size / 10, size / 10, size=2)
    half = size * rng.uniform(0.28, 0.38)
    if family == "disc":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= half ** 2
    if family == "square":
        return (np.abs(yy - cy) <= half * 0.85) & (np.abs(xx - cx) <= half * 0.85)
    if family == "triangle":
        top, bottom = cy - half, cy + half
        width = (yy - top) / (bottom - top) * half  # half-width grows from the apex down
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= width)
    raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")


def _pattern(pattern: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(size, size)`` brightness factors of ``pattern`` (1 = the plain colour)."""
    yy, xx = np.mgrid[0:size, 0:size]
    phase = int(rng.integers(0, 4))
    if pattern == "solid":
        return np.ones((size, size))
    if pattern == "stripes":
        return np.where(((yy + phase) // 2) % 2 == 0, 1.0, 0.45)
    if pattern == "checks":
        return np.where((((yy + phase) // 3) + ((xx + phase) // 3)) % 2 == 0, 1.0, 0.45)
    if pattern == "dots":
        return np.where(((yy + phase) % 4 == 0) & ((xx + phase) % 4 == 0), 2.2, 1.0)
    raise ValueError(f"pattern: expected one of {PATTERNS}, got {pattern!r}")


def shape_image(
    family: str, colour: str, pattern: str, size: int = 32, seed: int | list[int] = 0
) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 image of a ``family`` shape in ``colour`` with ``pattern``."""
    if colour not in COLOURS:
        raise ValueError(f"colour: expected one of {tuple(COLOURS)}, got {colour!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size: expected an integer >= 8, got {size!r}")
    rng = np.random.default_rng(seed)
    image = 150.0 + rng.normal(0.0, 6.0, size=(size, size, 3))
    mask = _mask(family, size, rng)
    shade = _pattern(pattern, size, rng) * rng.uniform(0.9, 1.1)
    paint = np.asarray(COLOURS[colour], dtype=np.float64)[None, None, :] * shade[:, :, None]
    image[mask] = paint[mask] + rng.normal(0.0, 6.0, size=(int(mask.sum()), 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class ShapesData:
    """Images and their label paths (coarsest first): ``images[i]`` is ``label_paths[i]``."""

    images: np.ndarray
    label_paths: tuple[str, ...]
    instance: np.ndarray

    def labels(self) -> list[np.ndarray]:
        """Label arrays finest first (for :func:`dycl.levels.from_hierarchy`)."""
        return split_label_paths(self.label_paths)


def _classes(families: tuple[str, ...], colours: tuple[str, ...],
             patterns: tuple[str, ...]) -> list[tuple[str, str, str]]:
    for name, given, known in (("families", families, FAMILIES), ("colours", colours, tuple(COLOURS)),
                               ("patterns", patterns, PATTERNS)):
        if not given or any(v not in known for v in given) or len(set(given)) != len(given):
            raise ValueError(f"{name}: expected distinct values among {known}, got {given!r}")
    return list(product(families, colours, patterns))


def shapes_dataset(
    images_per_class: int = 4, size: int = 32, seed: int = 0, families: tuple[str, ...] = FAMILIES,
    colours: tuple[str, ...] = ("red", "green", "blue"), patterns: tuple[str, ...] = PATTERNS,
) -> ShapesData:
    """Every ``family × colour × pattern`` class with ``images_per_class`` jittered images, class by class."""
    if isinstance(images_per_class, bool) or not isinstance(images_per_class, int) or images_per_class < 1:
        raise ValueError(f"images_per_class: expected an integer >= 1, got {images_per_class!r}")
    images, paths, instance = [], [], []
    for c, (family, colour, pattern) in enumerate(_classes(families, colours, patterns)):
        for k in range(images_per_class):
            images.append(shape_image(family, colour, pattern, size, seed=[seed, c, k]))
            paths.append(f"{family}/{colour}/{pattern}")
            instance.append(k)
    return ShapesData(np.stack(images), tuple(paths), np.asarray(instance, dtype=np.int64))


def write_shapes(out_dir: str | Path, images_per_class: int = 4, size: int = 32, seed: int = 0,
                 test_per_class: int = 2, **classes: tuple[str, ...]) -> Path:
    """Write :func:`shapes_dataset` as PNG files and a manifest; returns the manifest's path.

    ``out_dir/images/<n>.png`` and ``out_dir/shapes.csv`` with columns
    ``path,label_path,split``: the last ``test_per_class`` images of each
    class are ``test``, the others ``train``. Read it back with
    :func:`dycl.data.hierarchy.read_hierarchy_manifest` (``split="test"``).
    """
    from PIL import Image

    data = shapes_dataset(images_per_class, size, seed, **classes)
    if isinstance(test_per_class, bool) or not isinstance(test_per_class, int) \
            or not 0 <= test_per_class <= images_per_class:
        raise ValueError(
            f"test_per_class: expected an integer in [0, {images_per_class}], got {test_per_class!r}"
        )
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = ["path,label_path,split"]
    for i, (image, label) in enumerate(zip(data.images, data.label_paths, strict=True)):
        rel = f"images/{i}.png"
        Image.fromarray(image).save(out / rel, optimize=False)
        split = "test" if data.instance[i] >= images_per_class - test_per_class else "train"
        rows.append(f"{rel},{label},{split}")
    manifest = out / MANIFEST
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def pixel_embeddings(images: np.ndarray, grid: int = 4) -> np.ndarray:
    """A fixed feature map of ``(n, S, S, 3)`` uint8 images: per-cell mean colour and
    high-frequency energy on a ``grid × grid`` grid, centred and L2-normalised, ``(n, 6·grid²)``."""
    x = np.asarray(images, dtype=np.float64) / 255.0
    n, size = x.shape[0], x.shape[1]
    cell = size // grid
    x = x[:, : cell * grid, : cell * grid]
    blocks = x.reshape(n, grid, cell, grid, cell, 3)
    colour = blocks.mean(axis=(2, 4))
    detail = np.abs(np.diff(x, axis=1, append=x[:, -1:])) + np.abs(np.diff(x, axis=2, append=x[:, :, -1:]))
    energy = detail.reshape(n, grid, cell, grid, cell, 3).mean(axis=(2, 4))
    features = np.concatenate([colour.reshape(n, -1), 2.0 * energy.reshape(n, -1)], axis=1)
    features -= features.mean(axis=0, keepdims=True)
    return (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32)
