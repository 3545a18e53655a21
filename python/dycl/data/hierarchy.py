"""Single-domain hierarchical datasets: images with a path of labels (coarse … fine).

A :class:`HierarchicalSet` is what the DyML benchmarks (and the synthetic
shapes of :mod:`dycl.data.shapes`) provide: one image list, each image with a
label per depth. Its :meth:`HierarchicalSet.ids_and_levels` gives the ids and
the level matrix of :func:`dycl.levels.from_hierarchy`, which the metrics
(``exclude_self=True``) and :mod:`dycl.rerank_single` take unchanged.

:func:`read_hierarchy_manifest` reads one CSV with a ``path`` column and the
labels either as one column per depth (``coarse, middle, fine`` by default,
coarsest first) or as one ``label_path`` column (``vehicle/suv/model_17``);
an optional ``split`` column selects rows. Errors are :class:`DatasetError`
naming the file and line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..levels import from_hierarchy, split_label_paths
from .splits import DatasetError, _read_text, _table

#: Label columns of a manifest when none are named, coarsest first.
DEFAULT_LABEL_COLUMNS: tuple[str, ...] = ("coarse", "middle", "fine")
LABEL_PATH_COLUMN = "label_path"


@dataclass(frozen=True, eq=False)
class HierarchicalSet:
    """Images with one label per depth of a hierarchy.

    ``labels[d]`` is the ``(n,)`` array of depth ``d``, finest first (the
    order of :func:`dycl.levels.from_hierarchy`); ``depth_names`` name them
    (``("fine", "middle", "coarse")``).
    """

    name: str
    paths: tuple[Path, ...]
    labels: tuple[np.ndarray, ...]
    depth_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        labels = tuple(np.array(a) for a in self.labels)
        if not labels or len(labels) != len(self.depth_names):
            raise ValueError("HierarchicalSet: expected one label array per depth name")
        if any(a.shape != (len(self.paths),) for a in labels):
            raise ValueError("HierarchicalSet: every label array needs one label per path")
        for a in labels:
            a.setflags(write=False)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))
        object.__setattr__(self, "depth_names", tuple(self.depth_names))

    @property
    def num_images(self) -> int:
        return len(self.paths)

    @property
    def depth(self) -> int:
        return len(self.labels)

    def ids_and_levels(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, levels)`` of :func:`dycl.levels.from_hierarchy` (ValueError if not a tree)."""
        return from_hierarchy(*self.labels, names=self.depth_names)

    def __repr__(self) -> str:
        return f"HierarchicalSet({self.name!r}, images={self.num_images}, depths={self.depth_names})"


def checked_set(set_: HierarchicalSet, where: str) -> HierarchicalSet:
    """``set_`` once its labels are known to form a tree; else a DatasetError naming ``where``."""
    try:
        set_.ids_and_levels()
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    return set_


def _first_row(text: str) -> list[str]:
    for row in csv.reader(io.StringIO(text, newline="")):
        if row and any(f.strip() for f in row):
            return [f.strip().lower() for f in row]
    return []


def _label_columns(header: list[str], columns: Sequence[str] | None, where: str) -> tuple[str, ...]:
    if columns is not None:
        return tuple(c.strip().lower() for c in columns)
    if not header:
        raise DatasetError(f"{where}: empty file (expected a header with path and the label columns)")
    if LABEL_PATH_COLUMN in header:
        return (LABEL_PATH_COLUMN,)
    if all(c in header for c in DEFAULT_LABEL_COLUMNS):
        return DEFAULT_LABEL_COLUMNS
    raise DatasetError(
        f"{where}: no label columns: expected {LABEL_PATH_COLUMN} or {', '.join(DEFAULT_LABEL_COLUMNS)} "
        f"(header has {', '.join(header) or 'nothing'}); name others with columns=..."
    )


def read_hierarchy_manifest(
    csv_path: str | Path,
    split: str | None = None,
    columns: Sequence[str] | None = None,
    check_images: bool = True,
    separator: str = "/",
) -> HierarchicalSet:
    """Read a hierarchical image manifest (CSV, header first).

    Args:
        csv_path: the CSV; relative image paths are resolved against its folder.
        split: keep only rows whose ``split`` column equals it (the column is then required).
        columns: label columns, coarsest first; by default ``label_path`` when
            present, else ``coarse, middle, fine``. With one ``label_path``
            column the labels of depth ``d`` are the path prefixes (see
            :func:`dycl.levels.split_label_paths`).
        check_images: every image must exist.
        separator: the separator of ``label_path``.

    Returns:
        A :class:`HierarchicalSet` in file order, its labels checked to form a tree.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise DatasetError(f"{path}: missing file")
    text = _read_text(path)
    label_cols = _label_columns(_first_row(text), columns, f"{path}:1")
    required = ("path", *label_cols) + (("split",) if split is not None else ())
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, seen = [], {}
    numbered = ((reader.line_num, r) for r in reader)
    for line_no, where, fields, cols in _table(numbered, path, required, "comma"):
        fields = [f.strip() for f in fields]
        if split is not None and fields[cols["split"]] != split:
            continue
        rel = fields[cols["path"]]
        values = [fields[cols[c]] for c in label_cols]
        if not rel or not all(values):
            raise DatasetError(f"{where}: empty path or label")
        if rel in seen:
            raise DatasetError(f"{where}: duplicate row for {rel} (first on line {seen[rel]})")
        seen[rel] = line_no
        image = Path(rel) if Path(rel).is_absolute() else path.parent / rel
        if check_images and not image.is_file():
            raise DatasetError(f"{where}: image {rel} does not exist ({image})")
        rows.append((image, values))
    if not rows:
        raise DatasetError(f"{path}: no images" + (f" in split {split!r}" if split is not None else ""))
    return checked_set(_from_rows(path, split, label_cols, rows, separator), str(path))


def _from_rows(path: Path, split: str | None, label_cols: tuple[str, ...],
               rows: list[tuple[Path, list[str]]], separator: str) -> HierarchicalSet:
    if label_cols == (LABEL_PATH_COLUMN,):
        try:
            labels = split_label_paths([v[0] for _, v in rows], separator)
        except ValueError as exc:
            raise DatasetError(f"{path}: {exc}") from None
        depth = len(labels)
        names = DEFAULT_LABEL_COLUMNS[::-1] if depth == 3 else tuple(f"depth {d}" for d in range(depth))
    else:
        labels = [np.asarray([v[d] for _, v in rows]) for d in range(len(label_cols) - 1, -1, -1)]
        names = label_cols[::-1]
    return HierarchicalSet(split or "all", tuple(p for p, _ in rows), tuple(labels), tuple(names), str(path))
