"""The DyML release layout (Sun et al., "Dynamic Metric Learning", CVPR 2021).

Layout, as the authors' release loader and HAPPIER's DyML loader read it
(the data itself is not redistributed here)::

    <root>/train/label.csv                  fname, coarse_id, middle_id, fine_id
    <root>/train/imgs/<fname>
    DyML-Vehicle and DyML-Animal: one retrieval benchmark per granularity
    <root>/bmk_{fine,middle,coarse}/{query,gallery}.csv      fname, label
    <root>/bmk_{fine,middle,coarse}/{query,gallery}/<fname>
    DyML-Product: one single-domain test set with all three labels
    <root>/mini-bmk_all_in_one/label.csv    fname, coarse_id, middle_id, fine_id
    <root>/mini-bmk_all_in_one/imgs/<fname>

Fields are separated by ``", "``. In the released files the header line is
followed by the first data row without a line break
(``fname, coarse_id, middle_id, fine_id0.jpg, 3, 12, 345``): the authors'
loader cuts the line at its last ``_id``, HAPPIER's gets a column named
``" fine_id0.jpg"``. This reader accepts both that and a header on its own
line: a first line with more fields than the header names is split after the
last header name (a known name such as ``fine_id`` or ``labels``).
Assumptions (not stated by the release): label ids are integers, unique per
depth across the whole file (so the three columns form a tree; checked), and
the order is coarse, middle, fine when the header does not name them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .hierarchy import HierarchicalSet, checked_set
from .splits import DatasetError, _read_text

GRANULARITIES: tuple[str, ...] = ("fine", "middle", "coarse")
ROLES: tuple[str, ...] = ("query", "gallery")
PRODUCT_TEST = "mini-bmk_all_in_one"

#: Header names the release uses (and plausible spellings), longest first for prefix matching.
_HEADER_NAMES: tuple[str, ...] = tuple(sorted(
    ("fname", "coarse_id", "middle_id", "fine_id", "coarse", "middle", "fine", "labels", "label_id", "label"),
    key=len, reverse=True,
))


def dyml_layout(root: str | Path) -> str:
    """``"product"`` (a ``mini-bmk_all_in_one`` test set) or ``"benchmarks"`` (``bmk_<granularity>``
    folders, Vehicle and Animal); DatasetError when ``root`` has neither or no ``train`` folder."""
    root = Path(root)
    if not (root / "train" / "label.csv").is_file():
        raise DatasetError(f"{root}: not a DyML folder (no train/label.csv)")
    if (root / PRODUCT_TEST).is_dir():
        return "product"
    if any((root / f"bmk_{g}").is_dir() for g in GRANULARITIES):
        return "benchmarks"
    raise DatasetError(f"{root}: DyML folder without a test set ({PRODUCT_TEST}/ or bmk_<granularity>/)")


def _split_glued(name_part: str) -> tuple[str, str] | None:
    """``"fine_id0.jpg"`` -> ``("fine_id", "0.jpg")``: a header name glued to the first file name."""
    low = name_part.lower()
    for name in _HEADER_NAMES:
        if low.startswith(name) and len(low) > len(name):
            return name, name_part[len(name):]
    return None


def _rows(path: Path, width: int) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header names and ``(line, fields)`` data rows of a DyML list file of ``width`` columns."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing file")
    lines = [(n, [f.strip() for f in raw.split(",")]) for n, raw in
             enumerate(io.StringIO(_read_text(path), newline=None), start=1) if raw.strip()]
    if not lines:
        raise DatasetError(f"{path}:1: empty file (expected a header of {width} names)")
    first_line, first = lines[0]
    rows = lines[1:]
    if len(first) == 2 * width - 1:  # the header with the first row glued on
        glued = _split_glued(first[width - 1])
        if glued is None:
            raise DatasetError(f"{path}:{first_line}: cannot split the header from the first row: {first!r}")
        header = [f.lower() for f in first[: width - 1]] + [glued[0]]
        rows = [(first_line, [glued[1], *first[width:]])] + rows
    elif len(first) == width:
        header = [f.lower() for f in first]
    else:
        raise DatasetError(f"{path}:{first_line}: expected a header of {width} names, got {first!r}")
    for line_no, fields in rows:
        if len(fields) != width or not all(fields):
            raise DatasetError(
                f"{path}:{line_no}: expected {width} non-empty comma-separated fields, got {fields!r}"
            )
    return header, rows


def _label_order(header: list[str]) -> list[int]:
    """Column of the fine, middle and coarse label in a four-column file."""
    names = [h.removesuffix("_id") for h in header]
    if all(g in names for g in GRANULARITIES):
        return [names.index(g) for g in GRANULARITIES]
    return [3, 2, 1]  # fname, coarse, middle, fine (the release's order)


def _integer_labels(path: Path, rows: list[tuple[int, list[str]]], column: int) -> np.ndarray:
    out = np.empty(len(rows), dtype=np.int64)
    for i, (line_no, fields) in enumerate(rows):
        try:
            out[i] = int(fields[column])
        except ValueError:
            raise DatasetError(f"{path}:{line_no}: label {fields[column]!r} is not an integer") from None
    return out


def _images(
    path: Path, folder: Path, rows: list[tuple[int, list[str]]], check_images: bool
) -> tuple[Path, ...]:
    paths = tuple(folder / fields[0] for _, fields in rows)
    if check_images:
        for (line_no, fields), image in zip(rows, paths, strict=True):
            if not image.is_file():
                raise DatasetError(f"{path}:{line_no}: image {fields[0]} does not exist ({image})")
    return paths


def _three_level_set(name: str, csv_path: Path, images: Path, check_images: bool) -> HierarchicalSet:
    header, rows = _rows(csv_path, 4)
    labels = tuple(_integer_labels(csv_path, rows, c) for c in _label_order(header))
    paths = _images(csv_path, images, rows, check_images)
    return checked_set(HierarchicalSet(name, paths, labels, GRANULARITIES, str(csv_path)), str(csv_path))


def read_dyml(root: str | Path, part: str = "train", check_images: bool = True) -> HierarchicalSet:
    """A three-level part of a DyML dataset: ``"train"`` (every dataset) or ``"test"`` (DyML-Product's
    single-domain test set: evaluate it with ``exclude_self=True``).

    Returns:
        A :class:`HierarchicalSet` (depths fine, middle, coarse) in file order.
    """
    root = Path(root)
    if part == "train":
        return _three_level_set("train", root / "train" / "label.csv", root / "train" / "imgs", check_images)
    if part == "test":
        folder = root / PRODUCT_TEST
        if not folder.is_dir():
            raise DatasetError(f"{root}: no {PRODUCT_TEST}/ (DyML-Vehicle and -Animal test with "
                               "read_dyml_benchmark(root, granularity, role))")
        return _three_level_set("test", folder / "label.csv", folder / "imgs", check_images)
    raise ValueError(f"part: expected 'train' or 'test', got {part!r}")


def read_dyml_benchmark(root: str | Path, granularity: str, role: str,
                        check_images: bool = True) -> HierarchicalSet:
    """One side of a DyML-Vehicle / -Animal benchmark: the ``role`` (``"query"`` or ``"gallery"``)
    images of ``bmk_<granularity>`` with their single label (a one-depth set: level 1 = same label).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity: expected one of {GRANULARITIES}, got {granularity!r}")
    if role not in ROLES:
        raise ValueError(f"role: expected one of {ROLES}, got {role!r}")
    folder = Path(root) / f"bmk_{granularity}"
    csv_path = folder / f"{role}.csv"
    _, rows = _rows(csv_path, 2)
    labels = (_integer_labels(csv_path, rows, 1),)
    paths = _images(csv_path, folder / role, rows, check_images)
    return HierarchicalSet(f"{granularity} {role}", paths, labels, (granularity,), str(csv_path))
