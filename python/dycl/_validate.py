"""Input checks shared by the wrappers around the Rust core (and by the engines' option checks).

The wrappers are the only place that converts arrays: other widths of
integers and floats are converted, not rejected; everything that cannot be
converted meaningfully raises a ``ValueError`` naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_array(name: str, value: object) -> np.ndarray:
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: cannot be read as an array ({exc})") from None


def float_matrix(
    name: str,
    value: object,
    dtype: type = np.float64,
    shape: tuple[int | None, int | None] | None = None,
    check_finite: bool = True,
) -> np.ndarray:
    """A C-contiguous 2-D float array of ``dtype``, with finite values unless ``check_finite=False``.

    Pass ``check_finite=False`` where the core reads every value anyway and
    reports NaN/inf itself (one owner per check, no second pass over the data).
    """
    arr = _as_array(name, value)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got {arr.ndim}-D with shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == np.bool_):
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if shape is not None:
        for axis, want in enumerate(shape):
            if want is not None and arr.shape[axis] != want:
                raise ValueError(f"{name}: expected shape {_fmt_shape(shape)}, got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if check_finite and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name}: contains NaN or inf (first at index {tuple(int(i) for i in bad)})")
    return arr


def id_vector(name: str, value: object, upper: int, length: int | None = None) -> np.ndarray:
    """A C-contiguous int64 vector with values in ``[0, upper)``."""
    arr = _as_array(name, value)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if _is_integral_float(arr):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name}: expected integer ids, got dtype {arr.dtype}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name}: expected {length} ids, got {arr.shape[0]}")
    if arr.size and int(arr.max()) >= upper:  # before the int64 conversion: a uint64 id keeps its value
        raise ValueError(
            f"{name}: id {int(arr.max())} is outside the level matrix (valid ids are 0..{upper - 1})")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= upper:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: id {bad} is outside the level matrix (valid ids are 0..{upper - 1})")
    return arr


def checked_levels(name: str, value: object) -> np.ndarray:
    """A square, C-contiguous uint8 matrix of non-negative integer levels."""
    arr = _as_array(name, value)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name}: expected a square (B, B) matrix, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        elif not _is_integral_float(arr):
            raise ValueError(f"{name}: expected integer levels, got non-integer values of dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"{name}: levels must lie in [0, 255], got [{arr.min()}, {arr.max()}]")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def relevance_levels(name: str, value: object) -> np.ndarray:
    """:func:`checked_levels` that are a relevance hierarchy: one top level ``L >= 1`` on the whole
    diagonal (the same building) and no off-diagonal level above it."""
    lv = checked_levels(name, value)
    top = int(lv[0, 0])
    if top < 1 or not np.all(np.diagonal(lv) == top):
        if int(lv.max()) == 0:
            raise ValueError(f"{name}: has no positive level (the same building should be level L >= 1)")
        raise ValueError(f"{name}: the diagonal (same building) must hold one top level L >= 1 everywhere")
    if int(lv.max()) > top:
        raise ValueError(f"{name}: off-diagonal levels must not exceed the same-building level {top}")
    return lv


def embedding_pair(query_emb: object, gallery_emb: object,
                   check_finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Query and gallery embeddings as C-contiguous float32 ``(q, d)`` and ``(g, d)``, neither empty.

    ``check_finite=False`` where the core scans the values itself (see :func:`float_matrix`).
    """
    q = float_matrix("query_emb", query_emb, dtype=np.float32, check_finite=check_finite)
    g = float_matrix("gallery_emb", gallery_emb, dtype=np.float32, check_finite=check_finite)
    for name, arr, what in (("query_emb", q, "query set"), ("gallery_emb", g, "gallery")):
        if arr.shape[0] == 0:
            raise ValueError(f"{name}: has no rows: the {what} is empty")
        if arr.shape[1] == 0:
            raise ValueError(f"{name}: has zero columns")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"gallery_emb: embedding width {g.shape[1]} differs from query_emb's {q.shape[1]}")
    return q, g


def int_at_least(name: str, value: object, minimum: int) -> int:
    """An integer (not a bool) of at least ``minimum``, as a Python ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def positive_ints(name: str, value: Sequence[int] | int, minimum: int = 1) -> tuple[int, ...]:
    """A tuple of integers, each at least ``minimum``."""
    values = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name}: expected integers, got {v!r}")
        if v < minimum:
            raise ValueError(f"{name}: values must be >= {minimum}, got {v}")
        out.append(int(v))
    if not out:
        raise ValueError(f"{name}: must not be empty")
    return tuple(out)


def _is_integral_float(arr: np.ndarray) -> bool:
    """Whether a float array holds only finite whole numbers (safe to cast to integers)."""
    if not np.issubdtype(arr.dtype, np.floating):
        return False
    return bool(np.isfinite(arr).all() and (arr == np.round(arr)).all())


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
