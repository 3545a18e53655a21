"""dycl.geo against GeographicLib (the Python package), thresholds and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from geographiclib.geodesic import Geodesic

from dycl import geo

WGS84 = Geodesic.WGS84


def _random_coords(rng: np.random.Generator, n: int) -> np.ndarray:
    # uniform on the sphere, plus a few poles and the date line
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lon = rng.uniform(-180, 180, n)
    coords = np.stack([lat, lon], axis=1)
    coords[:3] = [[90.0, 0.0], [-90.0, 10.0], [0.0, 180.0]]
    return coords


def _place(origin: tuple[float, float], azimuth: float, metres: float) -> tuple[float, float]:
    p = WGS84.Direct(origin[0], origin[1], azimuth, metres)
    return p["lat2"], p["lon2"]


def test_geodesic_distances_match_geographiclib_within_a_millimetre():
    rng = np.random.default_rng(0)
    a, b = _random_coords(rng, 30), _random_coords(rng, 25)
    # near-antipodal pairs are the hard case of the inverse problem
    b[5] = [-a[5, 0], a[5, 1] + 179.9]
    b[6] = [-a[6, 0] + 1e-3, a[6, 1] - 180.0]
    got = geo.geodesic_distances(a, b)
    assert got.shape == (30, 25) and got.dtype == np.float64
    expect = np.array([[WGS84.Inverse(*p, *r)["s12"] for r in b] for p in a])
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-3)


def test_short_campus_distances_match_geographiclib():
    rng = np.random.default_rng(1)
    coords = np.array([22.3364, 114.2655]) + rng.uniform(-0.01, 0.01, (40, 2))
    got = geo.geodesic_distances(coords)
    expect = np.array([[WGS84.Inverse(*p, *r)["s12"] for r in coords] for p in coords])
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(got, got.T)
    assert np.all(np.diag(got) == 0)
    np.testing.assert_allclose(geo.geodesic_distances(coords, coords), got, rtol=0, atol=1e-6)


def test_level_matrix_follows_thresholds_at_placed_distances():
    origin = (22.3364, 114.2655)
    metres = [0.0, 150.0, 199.0, 201.0, 499.0, 501.0, 3000.0]
    coords = np.array([origin] + [_place(origin, 37.0 * i, m) for i, m in enumerate(metres[1:])])
    lv = geo.level_matrix(coords)
    assert lv.dtype == np.uint8 and lv.shape == (7, 7)
    assert lv[0].tolist() == [3, 2, 2, 1, 1, 0, 0]
    assert np.all(np.diag(lv) == 3)
    np.testing.assert_array_equal(lv, lv.T)


@pytest.mark.parametrize("thresholds", [(), (300.0,), (200.0, 500.0), (50.0, 100.0, 400.0, 900.0)])
def test_level_matrix_matches_direct_definition(thresholds):
    rng = np.random.default_rng(2)
    coords = np.array([22.3364, 114.2655]) + rng.uniform(-0.006, 0.006, (25, 2))
    lv = geo.level_matrix(coords, thresholds)
    top = len(thresholds) + 1
    for i in range(25):
        for j in range(25):
            if i == j:
                expect = top
            else:
                d = WGS84.Inverse(*coords[i], *coords[j])["s12"]
                expect = next((top - 1 - n for n, t in enumerate(thresholds) if d <= t), 0)
            assert lv[i, j] == expect, (i, j, thresholds)


def test_same_location_distinct_buildings_are_not_the_same_building():
    coords = np.array([[10.0, 20.0], [10.0, 20.0]])
    assert geo.level_matrix(coords).tolist() == [[3, 2], [2, 3]]


def test_other_dtypes_and_lists_are_converted():
    coords64 = np.array([[22.0, 114.0], [22.5, 114.25]])
    expect = geo.geodesic_distances(coords64)
    np.testing.assert_array_equal(geo.geodesic_distances(coords64.tolist()), expect)
    ints = np.array([[22, 114], [23, 115]], dtype=np.int16)
    np.testing.assert_array_equal(geo.geodesic_distances(ints), geo.geodesic_distances(ints.astype(float)))
    f32 = coords64.astype(np.float32)
    np.testing.assert_array_equal(geo.geodesic_distances(f32), geo.geodesic_distances(f32.astype(np.float64)))
    np.testing.assert_array_equal(geo.level_matrix(coords64, [100000]), geo.level_matrix(coords64, (1e5,)))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: geo.level_matrix([[0, 0], [0, 1]], (500.0, 200.0)), "thresholds"),
        (lambda: geo.level_matrix([[0, 0], [0, 1]], (200.0, 200.0)), "thresholds"),
        (lambda: geo.level_matrix([[0, 0]], (-1.0,)), "thresholds"),
        (lambda: geo.level_matrix([[0, 0]], (float("nan"),)), "thresholds"),
        (lambda: geo.level_matrix([[0, 0]], "abc"), "thresholds"),
        (lambda: geo.level_matrix([[91.0, 0.0]]), "coords"),
        (lambda: geo.level_matrix([[-90.5, 0.0]]), "coords"),
        (lambda: geo.level_matrix([[0.0, 0.0, 0.0]]), "coords"),
        (lambda: geo.level_matrix([0.0, 0.0]), "coords"),
        (lambda: geo.level_matrix([[np.nan, 0.0]]), "coords"),
        (lambda: geo.level_matrix([["a", "b"]]), "coords"),
        (lambda: geo.geodesic_distances([[95.0, 0.0]]), "coords_a"),
        (lambda: geo.geodesic_distances([[0.0, 0.0]], [[0.0, 0.0], [-95.0, 0.0]]), "coords_b"),
        (lambda: geo.geodesic_distances([[0.0, 0.0]], [[0.0, np.inf]]), "coords_b"),
        (lambda: geo.geodesic_distances([[0.0, 0.0]], [[[0.0, 0.0]]]), "coords_b"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
