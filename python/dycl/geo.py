"""Geodesic distances and relevance levels between buildings (DESIGN §3).

Distances are ellipsoidal (WGS84) geodesics computed with Karney's algorithm
in the Rust core; they agree with GeographicLib to well under a millimetre.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _core
from ._validate import float_matrix

DEFAULT_THRESHOLDS: tuple[float, ...] = (200.0, 500.0)


def _coords(name: str, value: object, building_coords: bool = False) -> np.ndarray:
    """``(n, 2)`` latitude/longitude. Latitude is always within [-90, 90]; building coordinates (the
    data, as the dataset readers accept them) also need longitude within [-180, 180], while distances
    accept any longitude (it wraps)."""
    arr = float_matrix(name, value, shape=(None, 2))
    if arr.shape[0] and (np.abs(arr[:, 0]) > 90).any():
        row = int(np.argmax(np.abs(arr[:, 0]) > 90))
        raise ValueError(f"{name}: latitude {arr[row, 0]} at row {row} is outside [-90, 90]")
    if building_coords and arr.shape[0] and (np.abs(arr[:, 1]) > 180).any():
        row = int(np.argmax(np.abs(arr[:, 1]) > 180))
        raise ValueError(f"{name}: longitude {arr[row, 1]} at row {row} is outside [-180, 180]")
    return arr


def geodesic_distances(coords_a: object, coords_b: object | None = None) -> np.ndarray:
    """Geodesic distance in metres between every row of ``coords_a`` and ``coords_b``.

    Args:
        coords_a: ``(n, 2)`` latitude, longitude in degrees.
        coords_b: ``(m, 2)`` latitude, longitude in degrees; ``None`` means
            ``coords_a`` against itself (computed once per pair).

    Returns:
        ``(n, m)`` float64 distances in metres.
    """
    a = _coords("coords_a", coords_a)
    if coords_b is None:
        return _core.geodesic_distances(a, None)
    return _core.geodesic_distances(a, _coords("coords_b", coords_b))


def validate_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Thresholds as a tuple of floats, checked to be finite and strictly increasing."""
    try:
        values = tuple(float(t) for t in thresholds)
    except (TypeError, ValueError):
        raise ValueError(f"thresholds: expected a sequence of numbers, got {thresholds!r}") from None
    for i, t in enumerate(values):
        if not np.isfinite(t) or t < 0:
            raise ValueError(f"thresholds: threshold {i} ({t}) must be finite and >= 0")
        if i and t <= values[i - 1]:
            raise ValueError(f"thresholds: must be strictly increasing, got {values}")
    return values


def level_matrix(coords: object, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Relevance levels between buildings.

    With ``L = len(thresholds) + 1``: the same building is level ``L``, a
    building within ``thresholds[0]`` metres is ``L - 1``, within
    ``thresholds[1]`` is ``L - 2``, ..., farther than the last threshold is 0.

    Args:
        coords: ``(B, 2)`` latitude, longitude in degrees, one row per building id.
        thresholds: strictly increasing distances in metres.

    Returns:
        ``(B, B)`` uint8 level matrix.
    """
    return _core.level_matrix(_coords("coords", coords), list(validate_thresholds(thresholds)))
