"""Loose image files: photos to localize and satellite tiles listed in a CSV (no dataset layout).

* :func:`collect_images` — the image files of a list of files and folders;
* :func:`decode_images` — decode many files, *skipping* those that cannot be
  decoded (their reasons come back, nothing is raised: one bad photo must
  not stop a batch);
* :func:`read_tile_list` — a CSV ``path,latitude,longitude`` of satellite tiles
  (paths relative to the CSV's folder), checked line by line.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .splits import DatasetError

#: Suffixes taken as images when a folder is given (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def collect_images(inputs: Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders searched (sorted) for image suffixes.

    Raises:
        ValueError: an input does not exist, or nothing is found.
    """
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(
                sorted(f for f in p.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            )
        elif p.is_file():
            found.append(p)
        else:
            raise ValueError(f"images: no such file or folder: {p}")
    if not found:
        raise ValueError("images: no image file found (suffixes " + ", ".join(IMAGE_SUFFIXES) + ")")
    return found


def decode_images(paths: Sequence[Path], transform=None) -> tuple[list, list[tuple[int, str]]]:
    """Decode ``paths`` with Pillow (then ``transform``); returns ``(tensors, failures)``.

    ``tensors[i]`` is None for a file that could not be decoded and
    ``failures`` lists ``(i, reason)`` for those, in order.
    """
    from .datasets import load_image

    tensors: list = []
    failures: list[tuple[int, str]] = []
    for i, path in enumerate(paths):
        try:
            image = load_image(path)
            tensors.append(transform(image) if transform is not None else image)
        except (DatasetError, OSError) as exc:
            tensors.append(None)
            failures.append((i, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    return tensors, failures


def _number(text: str, where: str, name: str, limit: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{where}: {name} {text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > limit:
        raise DatasetError(f"{where}: {name} {value} is outside [-{limit:g}, {limit:g}]")
    return value


def read_tile_list(csv_path: str | os.PathLike) -> tuple[list[Path], np.ndarray]:
    """Tiles of a CSV with columns ``path, latitude, longitude`` (header required, any column order).

    Relative paths are taken from the CSV's folder. Returns ``(paths, coords)``
    with ``coords`` ``(n, 2)`` latitude, longitude. Missing files are not an
    error here (they are skipped, with a warning, when decoded).

    Raises:
        DatasetError: unreadable file, missing columns, a bad number (``file:line: ...``).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise DatasetError(f"tiles: no such file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"tiles: cannot read {path} ({exc})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise DatasetError(f"{path}: is empty; expected a header path,latitude,longitude")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("path", "latitude", "longitude") if c not in header]
    if missing:
        raise DatasetError(f"{path}:1: missing column(s) {', '.join(missing)} (header: {', '.join(header)})")
    col = {name: header.index(name) for name in ("path", "latitude", "longitude")}
    paths: list[Path] = []
    coords: list[tuple[float, float]] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        if len(row) < len(header):
            raise DatasetError(f"{where}: expected {len(header)} columns, got {len(row)}")
        name = row[col["path"]].strip()
        if not name:
            raise DatasetError(f"{where}: empty path")
        lat = _number(row[col["latitude"]].strip(), where, "latitude", 90.0)
        lon = _number(row[col["longitude"]].strip(), where, "longitude", 180.0)
        tile = Path(name)
        paths.append(tile if tile.is_absolute() else path.parent / tile)
        coords.append((lat, lon))
    if not paths:
        raise DatasetError(f"{path}: lists no tile")
    return paths, np.array(coords, dtype=np.float64)


def read_truth_csv(csv_path: str | os.PathLike) -> dict[str, tuple[float, float]]:
    """True positions from a CSV ``path,latitude,longitude``: ``{key: (lat, lon)}``.

    Keys are the resolved path (relative paths from the CSV's folder) and the
    bare file name, so a photo is found by either (see :func:`truth_for`).
    """
    paths, coords = read_tile_list(csv_path)
    table: dict[str, tuple[float, float]] = {}
    names: dict[str, int] = {}
    for p, (lat, lon) in zip(paths, coords, strict=True):
        table[str(p.resolve())] = (float(lat), float(lon))
        names[p.name] = names.get(p.name, 0) + 1
        table.setdefault(f"name:{p.name}", (float(lat), float(lon)))
    for name, count in names.items():  # an ambiguous bare name matches nothing
        if count > 1:
            table.pop(f"name:{name}", None)
    return table


def truth_for(table: dict[str, tuple[float, float]], path: Path) -> tuple[float, float] | None:
    """The entry of :func:`read_truth_csv` for ``path``: by resolved path, else by (unique) file name."""
    return table.get(str(Path(path).resolve())) or table.get(f"name:{Path(path).name}")


__all__ = [
    "IMAGE_SUFFIXES",
    "collect_images",
    "decode_images",
    "read_tile_list",
    "read_truth_csv",
    "truth_for",
]
