"""Relevance levels from a label hierarchy, for retrieval beyond geography.

:func:`dycl.geo.level_matrix` derives levels from GPS distances between
buildings. Single-domain hierarchical benchmarks (DyML-Vehicle / Animal /
Product, Sun et al., CVPR 2021) give each image a path of labels instead,
e.g. ``vehicle / suv / model_17``. :func:`from_hierarchy` turns such labels
into the two inputs every metric and MSRerank helper takes:

* ``ids``: per image, the index of its finest class (the role of a building id);
* ``levels``: ``(C, C)`` uint8 over the ``C`` finest classes, oriented like
  ``geo.level_matrix``: the diagonal (the same fine class) is ``L``, the
  number of depths; two classes that agree on the ``j`` coarsest depths and
  differ below are level ``j``; different coarsest labels are level 0.

Example::

    ids, levels = from_hierarchy(fine, middle, coarse)
    scores = dycl.metrics.evaluate(dist, ids, ids, levels, exclude_self=True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Argument names of the usual three-depth hierarchy, finest first.
THREE_DEPTHS: tuple[str, ...] = ("fine", "middle", "coarse")


def _depth_names(count: int, names: Sequence[str] | None) -> tuple[str, ...]:
    if names is None:
        return THREE_DEPTHS if count == len(THREE_DEPTHS) else tuple(f"labels[{d}]" for d in range(count))
    out = tuple(str(n) for n in names)
    if len(out) != count:
        raise ValueError(f"names: expected {count} names (one per label array), got {len(out)}")
    return out


def _label_array(name: str, value: object, length: int | None) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: cannot be read as an array ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected one label per image (1-D), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: has no labels (no images)")
    if length is not None and arr.shape[0] != length:
        raise ValueError(
            f"{name}: expected {length} labels (one per image, like the finest), got {arr.shape[0]}"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    if arr.dtype.kind not in "iubfUSO":
        raise ValueError(f"{name}: expected integer or string labels, got dtype {arr.dtype}")
    if arr.dtype.kind == "O":
        arr = arr.astype(str)
    return arr


def _parents(child_codes: np.ndarray, n_children: int, parent_codes: np.ndarray) -> np.ndarray:
    """The parent code of each child code; -1 where a child has two parents."""
    parent = np.full(n_children, -1, dtype=np.int64)
    parent[child_codes] = parent_codes  # one of the parents seen, whichever was written last
    clash = parent[child_codes] != parent_codes
    if clash.any():
        parent[np.unique(child_codes[clash])] = -1
    return parent


def _check_tree(labels: list[np.ndarray], codes: list[np.ndarray], uniques: list[np.ndarray],
                names: tuple[str, ...]) -> None:
    """Every label at one depth has a single label at the next coarser depth."""
    for d in range(len(labels) - 1):
        parent = _parents(codes[d], len(uniques[d]), codes[d + 1])
        bad = np.flatnonzero(parent < 0)
        if bad.size:
            label = uniques[d][bad[0]].item()
            images = np.flatnonzero(codes[d] == bad[0])
            found = np.unique(labels[d + 1][images])
            raise ValueError(
                f"{names[d + 1]}: {names[d]} label {label!r} is under {len(found)} different "
                f"{names[d + 1]} labels ({', '.join(repr(x) for x in found[:3].tolist())}); "
                "a hierarchy must be a tree (make labels unique per parent, e.g. full label paths)"
            )


def from_hierarchy(*labels: object, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image ids and the level matrix over fine classes of a label hierarchy.

    Args:
        *labels: one array per depth, finest first (e.g. ``fine, middle, coarse``),
            each with one label (integer or string) per image. Labels must
            identify a node of their depth globally: the same middle label
            under two coarse labels is one node with two parents (an error).
        names: the argument names used in error messages; by default
            ``fine, middle, coarse`` for three depths, else ``labels[d]``.

    Returns:
        ``(ids, levels)``: ``(n,)`` int64 index of each image's fine class in
        ``np.unique(fine)`` order, and the ``(C, C)`` uint8 level matrix (see
        the module notes; ``L = len(labels)``).

    Raises:
        ValueError: naming the argument, for mismatched lengths, empty input,
            more than 255 depths, or a label with two parents (not a tree).
    """
    if not labels:
        raise ValueError("labels: expected at least one label array (the finest classes)")
    if len(labels) > 255:
        raise ValueError(f"labels: at most 255 depths fit the uint8 levels, got {len(labels)}")
    depth_names = _depth_names(len(labels), names)
    arrays: list[np.ndarray] = []
    for name, value in zip(depth_names, labels, strict=True):
        arrays.append(_label_array(name, value, arrays[0].shape[0] if arrays else None))
    uniques, codes = [], []
    for arr in arrays:
        unique, code = np.unique(arr, return_inverse=True)
        uniques.append(unique)
        codes.append(code.reshape(-1).astype(np.int64))
    _check_tree(arrays, codes, uniques, depth_names)
    n_classes = len(uniques[0])
    levels = np.zeros((n_classes, n_classes), dtype=np.uint8)
    agree = np.ones((n_classes, n_classes), dtype=bool)
    # From the coarsest depth down: a pair scores one more level for each depth it still agrees on.
    for d in range(len(arrays) - 1, -1, -1):
        node = np.arange(n_classes) if d == 0 else _ancestor(codes, d, n_classes)
        agree &= node[:, None] == node[None, :]
        levels += agree
    return codes[0], levels


def _ancestor(codes: list[np.ndarray], depth: int, n_classes: int) -> np.ndarray:
    """The node code at ``depth`` of each fine class (the tree was checked)."""
    node = np.empty(n_classes, dtype=np.int64)
    node[codes[0]] = codes[depth]
    return node


def split_label_paths(
    paths: Sequence[str], separator: str = "/", name: str = "label_path"
) -> list[np.ndarray]:
    """Label arrays, finest first, from label paths written coarsest first (``vehicle/suv/model_17``).

    The label of depth ``d`` is the path's prefix down to that depth
    (``vehicle/suv`` for the middle depth), so equal names under different
    parents stay different nodes and the result is a tree by construction.
    Every path must have the same number of parts, none empty.
    """
    parts = [str(p).strip().split(separator) for p in paths]
    if not parts:
        raise ValueError(f"{name}: has no label paths (no images)")
    depth = len(parts[0])
    for i, p in enumerate(parts):
        if len(p) != depth:
            raise ValueError(
                f"{name}: path {i} ({paths[i]!r}) has {len(p)} parts, the first has {depth}"
            )
        if any(not x.strip() for x in p):
            raise ValueError(f"{name}: path {i} ({paths[i]!r}) has an empty part")
    prefixes = [[separator.join(x.strip() for x in p[: d + 1]) for p in parts] for d in range(depth)]
    return [np.asarray(prefixes[d]) for d in range(depth - 1, -1, -1)]
