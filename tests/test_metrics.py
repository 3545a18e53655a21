"""dycl.metrics (Rust core) against dycl.reference (DESIGN §4 written out) and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from geographiclib.geodesic import Geodesic

from dycl import geo, metrics, reference

ATOL = 1e-12


def random_problem(
    seed: int, n_levels: int, n_buildings: int = 12, q: int = 15, g: int = 60, ties: bool = True
):
    """Random symmetric level matrix (diagonal L), ids and distances; ties on a coarse grid."""
    rng = np.random.default_rng(seed)
    lv = rng.integers(0, n_levels, (n_buildings, n_buildings))
    lv = np.triu(lv, 1)
    lv = (lv + lv.T).astype(np.uint8)
    np.fill_diagonal(lv, n_levels)
    query_ids = rng.integers(0, n_buildings, q)
    gallery_ids = rng.integers(0, n_buildings, g)
    dist = rng.integers(0, 8, (q, g)).astype(np.float64) if ties else rng.random((q, g))
    return dist, query_ids, gallery_ids, lv


def assert_same_values(fast: dict, slow: dict) -> None:
    assert fast.keys() == slow.keys()
    for key in slow:
        np.testing.assert_allclose(
            np.asarray(fast[key], dtype=np.float64), np.asarray(slow[key], dtype=np.float64),
            rtol=0, atol=ATOL, equal_nan=True, err_msg=key,
        )


# --------------------------------------------------------------------------- agreement with reference.py


@pytest.mark.parametrize("n_levels", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [True, False])
def test_per_query_and_evaluate_match_reference(seed, n_levels, ties):
    dist, q_ids, g_ids, lv = random_problem(seed, n_levels, ties=ties)
    fast = metrics.per_query(dist, q_ids, g_ids, lv, recall_at=(1, 3, 10))
    slow = reference.metrics_per_query(dist, q_ids, g_ids, lv, recall_at=(1, 3, 10))
    assert_same_values(fast, slow)
    summary = metrics.evaluate(dist, q_ids, g_ids, lv, recall_at=(1, 3, 10))
    assert_same_values(summary, reference.evaluate_metrics(dist, q_ids, g_ids, lv, recall_at=(1, 3, 10)))
    for key, value in summary.items():
        if not key.startswith("n_"):
            assert 0.0 <= value <= 1.0 + ATOL, (key, value)


def test_keys_follow_the_design_contract():
    dist, q_ids, g_ids, lv = random_problem(3, 3)
    out = metrics.evaluate(dist, q_ids, g_ids, lv)
    expect = {"H-AP", "ASI", "NDCG", "mAP_overall", "R@1_overall", "n_queries"}
    for s in range(3):
        expect |= {f"mAP_{s}", f"n_queries_{s}", f"n_left_out_{s}"} | {f"R@{k}_{s}" for k in (1, 5, 10)}
    assert set(out) == expect
    assert out["mAP_overall"] == pytest.approx(np.mean([out[f"mAP_{s}"] for s in range(3)]))
    assert out["R@1_overall"] == pytest.approx(np.mean([out[f"R@1_{s}"] for s in range(3)]))


def test_four_levels_from_thresholds():
    rng = np.random.default_rng(4)
    coords = np.array([22.3364, 114.2655]) + rng.uniform(-0.004, 0.004, (10, 2))
    lv = geo.level_matrix(coords, (100.0, 250.0, 400.0))
    assert lv.max() == 4
    q_ids, g_ids = np.arange(10), np.repeat(np.arange(10), 4)
    dist = rng.random((10, 40))
    out = metrics.evaluate(dist, q_ids, g_ids, lv, coords=coords, thresholds=(100.0, 250.0, 400.0))
    ref = reference.evaluate_metrics(dist, q_ids, g_ids, lv, coords=coords, thresholds=(100.0, 250.0, 400.0))
    assert_same_values(out, ref)
    assert {"mAP_3", "R@1_3", "within@100m", "within@250m", "within@400m"} <= set(out)


# --------------------------------------------------------------------------- adversarial cases


def test_all_distances_tied_rank_by_gallery_index():
    lv = np.array([[2, 1, 0], [1, 2, 0], [0, 0, 2]], dtype=np.uint8)
    g_ids = np.array([2, 1, 0, 0, 2])
    dist = np.zeros((1, 5))
    out = metrics.per_query(dist, [0], g_ids, lv)
    # ranked levels by index: [0, 1, 2, 2, 0]
    assert out["top1"][0] == 0
    assert out["first_rank_0"][0] == 3 and out["first_rank_1"][0] == 2
    assert_same_values(out, reference.metrics_per_query(dist, np.array([0]), g_ids, lv))
    np.testing.assert_array_equal(metrics.ranked_gallery(dist, 5), [[0, 1, 2, 3, 4]])
    # negative zero is the same distance as zero
    dist_nz = np.array([[0.0, -0.0, 0.0, -0.0, 0.0]])
    np.testing.assert_array_equal(metrics.ranked_gallery(dist_nz, 5), [[0, 1, 2, 3, 4]])


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_one_gallery_item(level):
    lv = np.array([[3, level if level < 3 else 2], [level if level < 3 else 2, 3]], dtype=np.uint8)
    g_building = 0 if level == 3 else 1
    dist = np.array([[0.7], [0.2]])
    q_ids, g_ids = np.array([0, 0]), np.array([g_building])
    fast = metrics.per_query(dist, q_ids, g_ids, lv)
    assert_same_values(fast, reference.metrics_per_query(dist, q_ids, g_ids, lv))
    if level == 0:
        assert np.isnan(fast["H-AP"]).all() and np.isnan(fast["AP_2"]).all()
    else:
        # a single positive at rank 1 is a perfect ranking
        for key in ("H-AP", "ASI", "NDCG"):
            np.testing.assert_allclose(fast[key], 1.0, rtol=0, atol=ATOL)


def test_a_level_absent_for_a_query():
    # building 0 has a level-1 neighbour (2) but no level-2 one in the gallery
    lv = np.array([[3, 2, 1, 0], [2, 3, 0, 0], [1, 0, 3, 0], [0, 0, 0, 3]], dtype=np.uint8)
    g_ids = np.array([3, 2, 0, 3, 2, 0, 3])
    rng = np.random.default_rng(5)
    dist = rng.random((3, 7))
    q_ids = np.array([0, 0, 0])
    fast = metrics.per_query(dist, q_ids, g_ids, lv)
    assert_same_values(fast, reference.metrics_per_query(dist, q_ids, g_ids, lv))
    assert np.all(fast["n_relevant_1"] == fast["n_relevant_0"])
    assert np.all(np.isfinite(fast["H-AP"])) and np.all(fast["H-AP"] <= 1 + ATOL)


def test_queries_without_positive_at_some_scale_are_left_out_and_counted():
    lv = np.array([[3, 2, 0], [2, 3, 0], [0, 0, 3]], dtype=np.uint8)
    g_ids = np.array([1, 1, 2, 2])  # building 0 itself is not in the gallery
    q_ids = np.array([0, 1, 2, 0])
    dist = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.1, 0.2, 0.3], [0.3, 0.2, 0.1, 0.0], [0.9, 0.8, 0.7, 0.6]])
    per_q = metrics.per_query(dist, q_ids, g_ids, lv)
    assert np.isnan(per_q["AP_0"][[0, 3]]).all() and np.isfinite(per_q["AP_0"][[1, 2]]).all()
    assert np.isnan(per_q["R@1_0"][0]) and per_q["n_relevant_0"][0] == 0
    out = metrics.evaluate(dist, q_ids, g_ids, lv)
    assert out["n_queries"] == 4
    assert (out["n_queries_0"], out["n_left_out_0"]) == (2, 2)
    assert (out["n_queries_1"], out["n_left_out_1"]) == (4, 0)
    assert out["mAP_0"] == pytest.approx(np.mean(per_q["AP_0"][[1, 2]]))
    assert_same_values(out, reference.evaluate_metrics(dist, q_ids, g_ids, lv))


def test_query_without_any_positive_is_left_out_of_hierarchical_means():
    lv = np.array([[2, 0], [0, 2]], dtype=np.uint8)
    dist = np.array([[0.1, 0.2], [0.5, 0.6]])
    q_ids, g_ids = np.array([0, 1]), np.array([0, 0])
    per_q = metrics.per_query(dist, q_ids, g_ids, lv)
    assert np.isnan(per_q["H-AP"][1]) and np.isnan(per_q["ASI"][1]) and np.isnan(per_q["NDCG"][1])
    out = metrics.evaluate(dist, q_ids, g_ids, lv)
    assert out["H-AP"] == 1.0 and out["n_left_out_1"] == 1


def equal_relevance_campus():
    """The query building, 4 buildings within 200 m and 2 within 500 m, 60 images each, plus far ones.

    Per-item relevances: level 2 is 1.0 / 240 and level 1 is 0.5 / 120, the same value.
    """
    origin = (22.3364, 114.2655)
    place = [(0.0, 0.0)] + [(90.0 * i, 150.0) for i in range(4)] + [(45.0, 400.0), (225.0, 450.0)]
    place += [(10.0 * i, 2000.0 + 100 * i) for i in range(5)]
    coords = np.array(
        [origin if m == 0 else (lambda p: (p["lat2"], p["lon2"]))(Geodesic.WGS84.Direct(*origin, az, m))
         for az, m in place]
    )
    levels = geo.level_matrix(coords)
    gallery_ids = np.repeat(np.arange(len(coords)), 60)
    return coords, levels, gallery_ids


def test_equal_per_level_relevance_keeps_h_ap_at_most_one():
    coords, lv, g_ids = equal_relevance_campus()
    assert lv[0].tolist() == [3, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0]
    n_levels = 3
    gallery_levels = lv[0, g_ids]
    # the level-sorted ranking is ideal here (rel 1.5/60 > 1/240 = 0.5/120)
    order_ideal = np.argsort(-gallery_levels.astype(int), kind="stable")
    rng = np.random.default_rng(6)
    rankings = [order_ideal, rng.permutation(len(g_ids)), order_ideal[::-1]]
    dist = np.empty((len(rankings), len(g_ids)))
    for i, order in enumerate(rankings):
        dist[i, order] = np.arange(len(g_ids), dtype=np.float64)
    q_ids = np.zeros(len(rankings), dtype=np.int64)
    fast = metrics.per_query(dist, q_ids, g_ids, lv)
    for i, order in enumerate(rankings):
        ranked = gallery_levels[order]
        assert fast["H-AP"][i] == pytest.approx(reference.h_ap(ranked, n_levels), abs=ATOL)
        assert fast["H-AP"][i] <= 1.0 + ATOL
    assert fast["H-AP"][0] == pytest.approx(1.0, abs=ATOL)
    # the value-matching count exceeds 1 on the very same ideal ranking
    assert reference.h_ap_value_matching(gallery_levels[order_ideal], n_levels) > 1.3
    assert metrics.evaluate(dist, q_ids, g_ids, lv)["H-AP"] <= 1.0 + ATOL


def test_single_level_h_ap_is_binary_ap():
    dist, q_ids, g_ids, lv = random_problem(7, 1)
    per_q = metrics.per_query(dist, q_ids, g_ids, lv)
    np.testing.assert_allclose(per_q["H-AP"], per_q["AP_0"], rtol=0, atol=ATOL, equal_nan=True)


# --------------------------------------------------------------------------- coordinates, rankings, embe


def test_localization_error_matches_geographiclib():
    rng = np.random.default_rng(8)
    coords = np.array([22.3364, 114.2655]) + rng.uniform(-0.005, 0.005, (15, 2))
    lv = geo.level_matrix(coords)
    q_ids, g_ids = np.arange(15), np.repeat(np.arange(15), 3)
    dist = rng.random((15, 45))
    per_q = metrics.per_query(dist, q_ids, g_ids, lv, coords=coords)
    for i in range(15):
        found = g_ids[per_q["top1"][i]]
        expect = 0.0 if found == i else Geodesic.WGS84.Inverse(*coords[i], *coords[found])["s12"]
        assert per_q["err@1_m"][i] == pytest.approx(expect, abs=1e-3)
    out = metrics.evaluate(dist, q_ids, g_ids, lv, coords=coords, thresholds=(150.0, 1000.0))
    assert out["err@1_median_m"] == pytest.approx(np.median(per_q["err@1_m"]))
    assert out["within@150m"] == pytest.approx(np.mean(per_q["err@1_m"] <= 150))
    assert out["within@1000m"] == pytest.approx(np.mean(per_q["err@1_m"] <= 1000))
    ref = reference.evaluate_metrics(dist, q_ids, g_ids, lv, coords=coords, thresholds=(150.0, 1000.0))
    for key in ("err@1_mean_m", "err@1_median_m", "within@150m", "within@1000m"):
        assert out[key] == pytest.approx(ref[key], abs=1e-3), key


@pytest.mark.parametrize("k", [1, 7, 60])
def test_ranked_gallery_is_a_stable_argsort(k):
    dist, *_ = random_problem(9, 3, ties=True)
    got = metrics.ranked_gallery(dist, k)
    assert got.dtype == np.int64 and got.shape == (dist.shape[0], k)
    np.testing.assert_array_equal(got, np.argsort(dist, axis=1, kind="stable")[:, :k])


def test_embeddings_entry_point_matches_cosine_distances():
    rng = np.random.default_rng(10)
    q_emb, g_emb = rng.standard_normal((12, 16)), rng.standard_normal((50, 16))
    _, q_ids, g_ids, lv = random_problem(10, 3, q=12, g=50)
    qn = q_emb / np.linalg.norm(q_emb, axis=1, keepdims=True)
    gn = g_emb / np.linalg.norm(g_emb, axis=1, keepdims=True)
    dist = 1.0 - qn @ gn.T
    a = metrics.evaluate_embeddings(q_emb, g_emb, q_ids, g_ids, lv)
    b = metrics.evaluate(dist, q_ids, g_ids, lv)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    pa = metrics.per_query_embeddings(q_emb.astype(np.float32), g_emb, q_ids, g_ids, lv)
    np.testing.assert_array_equal(pa["top1"], metrics.ranked_gallery(dist, 1)[:, 0])


def test_other_dtypes_are_converted_not_rejected():
    dist, q_ids, g_ids, lv = random_problem(11, 3)
    base = metrics.evaluate(dist, q_ids, g_ids, lv)
    variants = [
        (dist.astype(np.float32), q_ids.astype(np.int32), g_ids.astype(np.uint16), lv.astype(np.int64)),
        (dist.astype(np.int16), q_ids.astype(np.float64), g_ids.astype(np.int8), lv.astype(np.float32)),
        (dist.tolist(), q_ids.tolist(), g_ids.tolist(), lv.tolist()),
    ]
    for d, q, g, levels in variants:
        assert metrics.evaluate(d, q, g, levels) == base
    # float32 distances are widened, not rounded: values that differ only in
    # float32's last bit still rank apart
    d32 = np.array([[1.0, np.nextafter(np.float32(1.0), np.float32(0.0))]], dtype=np.float32)
    assert metrics.ranked_gallery(d32, 2).tolist() == [[1, 0]]
    # a float64 difference below float32 resolution is kept too
    d64 = np.array([[1.0 + 1e-12, 1.0]])
    assert metrics.ranked_gallery(d64, 2).tolist() == [[1, 0]]


def test_summarize_of_per_query_equals_evaluate():
    dist, q_ids, g_ids, lv = random_problem(12, 2)
    summary = metrics.summarize(metrics.per_query(dist, q_ids, g_ids, lv))
    assert summary == metrics.evaluate(dist, q_ids, g_ids, lv)


# --------------------------------------------------------------------------- bad input


def _ok():
    dist, q_ids, g_ids, lv = random_problem(13, 3, n_buildings=4, q=3, g=5)
    return dict(distances=dist, query_ids=q_ids, gallery_ids=g_ids, levels=lv)


def _with(**changes):
    args = _ok()
    args.update(changes)
    return args


BAD_EVALUATE = [
    (_with(distances=np.array([[0.1, np.nan, 0.2, 0.3, 0.4]] * 3)), "distances"),
    (_with(distances=np.array([[0.1, np.inf, 0.2, 0.3, 0.4]] * 3)), "distances"),
    (_with(distances=np.zeros(5)), "distances"),
    (_with(distances=np.zeros((3, 5, 1))), "distances"),
    (_with(distances=np.zeros((3, 4))), "gallery_ids"),
    (_with(distances=np.zeros((0, 5)), query_ids=np.zeros(0, dtype=int)), "distances"),
    (_with(distances=np.zeros((3, 0)), gallery_ids=np.zeros(0, dtype=int)), "distances"),
    (_with(distances=np.full((3, 5), "x")), "distances"),
    (_with(query_ids=np.array([0, 1])), "query_ids"),
    (_with(query_ids=np.array([0, 1, 4])), "query_ids"),
    (_with(query_ids=np.array([0, -1, 2])), "query_ids"),
    (_with(query_ids=np.array([0.5, 1, 2])), "query_ids"),
    (_with(query_ids=np.zeros((3, 1), dtype=int)), "query_ids"),
    (_with(gallery_ids=np.array([0, 1, 2, 3, 9])), "gallery_ids"),
    (_with(gallery_ids=np.array([0, 1, 2, 3])), "gallery_ids"),
    (_with(levels=np.ones((4, 3), dtype=np.uint8)), "levels"),
    (_with(levels=np.full((4, 4), 1.5)), "levels"),
    (_with(levels=-np.ones((4, 4), dtype=int)), "levels"),
    (_with(levels=np.full((4, 4), 300)), "levels"),
    (_with(levels=np.zeros((4, 4), dtype=np.uint8)), "levels"),
    (_with(levels=np.zeros((0, 0), dtype=np.uint8)), "levels"),
    (_with(levels=np.ones(4, dtype=np.uint8)), "levels"),
    (_with(recall_at=(0, 5)), "recall_at"),
    (_with(recall_at=(1.5,)), "recall_at"),
    (_with(recall_at=()), "recall_at"),
    (_with(coords=np.zeros((4, 3))), "coords"),
    (_with(coords=np.zeros((3, 2))), "coords"),
    (_with(coords=np.array([[91.0, 0.0]] * 4)), "coords"),
    (_with(coords=np.array([[np.nan, 0.0]] * 4)), "coords"),
    (_with(coords=np.zeros((4, 2)), thresholds=(500.0, 200.0)), "thresholds"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_EVALUATE)
def test_evaluate_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        metrics.evaluate(**kwargs)
    if "thresholds" not in kwargs:
        with pytest.raises(ValueError, match=name):
            metrics.per_query(**kwargs)


@pytest.mark.parametrize(
    ("query_emb", "gallery_emb", "name"),
    [
        (np.ones((3, 4)), np.ones((5, 3)), "gallery_emb"),
        (np.full((3, 4), np.nan), np.ones((5, 4)), "query_emb"),
        (np.ones((3, 4)), np.full((5, 4), np.inf), "gallery_emb"),
        (np.ones((0, 4)), np.ones((5, 4)), "query_emb"),
        (np.ones((3, 4)), np.ones((0, 4)), "gallery_emb"),
        (np.ones((3, 0)), np.ones((5, 0)), "query_emb"),
        (np.ones(4), np.ones((5, 4)), "query_emb"),
        (np.ones((2, 4)), np.ones((5, 4)), "query_ids"),
        (np.ones((3, 4)), np.ones((6, 4)), "gallery_ids"),
    ],
)
def test_evaluate_embeddings_bad_input_names_the_argument(query_emb, gallery_emb, name):
    args = _ok()
    del args["distances"]
    with pytest.raises(ValueError, match=name):
        metrics.evaluate_embeddings(query_emb, gallery_emb, **args)


@pytest.mark.parametrize(("distances", "k", "name"), [
    (np.zeros((2, 3)), 0, "k"),
    (np.zeros((2, 3)), 4, "k"),
    (np.zeros((2, 3)), 1.0, "k"),
    (np.zeros((2, 3)), True, "k"),
    (np.array([[0.0, np.nan]]), 1, "distances"),
    (np.zeros((2, 0)), 1, "distances"),
])
def test_ranked_gallery_bad_input_names_the_argument(distances, k, name):
    with pytest.raises(ValueError, match=name):
        metrics.ranked_gallery(distances, k)


def test_summarize_rejects_other_dicts():
    with pytest.raises(ValueError, match="values"):
        metrics.summarize({"H-AP": np.zeros(3)})


def test_core_validates_on_its_own():
    """The compiled module checks its inputs too (a wrapper bug must not turn into a panic)."""
    from dycl import _core

    lv = np.array([[2, 1], [1, 2]], dtype=np.uint8)
    ids = np.array([0, 1], dtype=np.int64)
    with pytest.raises(ValueError, match="query_ids"):
        _core.per_query(np.zeros((2, 2)), np.array([0, 5], dtype=np.int64), ids, lv, None)
    with pytest.raises(ValueError, match="distances"):
        _core.per_query(np.array([[0.0, np.nan], [0.0, 0.0]]), ids, ids, lv, None)
    with pytest.raises(ValueError, match="levels"):
        _core.per_query(np.zeros((2, 2)), ids, ids, np.zeros((2, 2), dtype=np.uint8), None)
    with pytest.raises(ValueError, match="k"):
        _core.ranked_gallery(np.zeros((2, 2)), 3)
