"""compat="authors" (dycl.metrics_authors) against its slow twin in dycl.reference, and what it changes.

The authors' release counts H-AP by relevance value and retrieves only the
top g - 1 gallery items; every entry point's default (``"definitions"``) must
stay exactly what it was.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from test_evaluate import clustered_task, cosine
from test_metrics import ATOL, assert_same_values, equal_relevance_campus, random_problem

from dycl import metrics, metrics_authors, reference
from dycl.cli import eval_main
from dycl.evaluate import EvalOptions
from dycl.geo import level_matrix
from dycl.metrics_authors import AUTHORS_COMPAT_MESSAGE, AuthorsCompatWarning
from dycl.tasks import RetrievalTask, evaluate_tasks, score_task


def authors_per_query(*args, **kwargs) -> dict:
    with pytest.warns(AuthorsCompatWarning):
        return metrics.per_query(*args, compat="authors", **kwargs)


def authors_evaluate(*args, **kwargs) -> dict:
    with pytest.warns(AuthorsCompatWarning):
        return metrics.evaluate(*args, compat="authors", **kwargs)


# --------------------------------------------------------------------------- agreement with the twin


@pytest.mark.parametrize("n_levels", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [True, False])
def test_compat_matches_reference_twin(seed, n_levels, ties):
    dist, q_ids, g_ids, lv = random_problem(seed + 20, n_levels, ties=ties)
    fast = authors_per_query(dist, q_ids, g_ids, lv, recall_at=(1, 3, 10))
    slow = reference.metrics_per_query(dist, q_ids, g_ids, lv, recall_at=(1, 3, 10), compat="authors")
    assert_same_values(fast, slow)
    summary = authors_evaluate(dist, q_ids, g_ids, lv, recall_at=(1, 3, 10))
    slow_summary = reference.evaluate_metrics(dist, q_ids, g_ids, lv, (1, 3, 10), compat="authors")
    assert_same_values(summary, slow_summary)


def test_streamed_query_blocks_give_the_same_values(monkeypatch):
    dist, q_ids, g_ids, lv = random_problem(30, 3, q=23, g=17)
    whole = authors_per_query(dist, q_ids, g_ids, lv)
    monkeypatch.setattr(metrics_authors, "BLOCK_ELEMENTS", 40)  # two queries per block, the last one alone
    assert_same_values(authors_per_query(dist, q_ids, g_ids, lv), whole)


def test_all_ties_and_a_two_item_gallery():
    lv = np.array([[2, 1, 0], [1, 2, 0], [0, 0, 2]], dtype=np.uint8)
    g_ids = np.array([2, 1, 0, 0, 2])
    dist = np.zeros((2, 5))
    fast = authors_per_query(dist, [0, 2], g_ids, lv)
    # ranked by index; the last item (index 4, building 2) is never retrieved: building 2 keeps one of its two
    assert fast["n_relevant_0"].tolist() == [2, 1] and fast["top1"].tolist() == [0, 0]
    assert_same_values(fast, reference.metrics_per_query(dist, np.array([0, 2]), g_ids, lv, compat="authors"))
    two = np.array([[0.3, 0.1], [0.1, 0.3]])
    fast = authors_per_query(two, [0, 0], [0, 1], lv)
    assert fast["n_relevant_1"].tolist() == [1, 1] and np.isnan(fast["AP_0"][0]) and fast["AP_0"][1] == 1.0
    assert_same_values(fast, reference.metrics_per_query(two, np.array([0, 0]), np.array([0, 1]), lv,
                                                         compat="authors"))


def test_one_item_gallery_is_refused_retrieving_nothing():
    lv = np.array([[2, 1], [1, 2]], dtype=np.uint8)
    with pytest.raises(ValueError, match="distances.*at least 2 gallery items"):
        authors_per_query(np.array([[0.5]]), [0], [1], lv)
    with pytest.raises(ValueError, match="distances"):
        reference.metrics_per_query(np.array([[0.5]]), np.array([0]), np.array([1]), lv, compat="authors")
    with pytest.raises(ValueError, match="gallery_emb.*at least 2"), pytest.warns(AuthorsCompatWarning):
        metrics.evaluate_embeddings(np.ones((1, 3)), np.ones((1, 3)), [0], [1], lv, compat="authors")
    # the definitions score a one-item gallery as before
    assert metrics.evaluate(np.array([[0.5]]), [0], [1], lv)["H-AP"] == 1.0


def test_equal_relevance_campus_h_ap_exceeds_one_only_in_compat():
    coords, lv, g_ids = equal_relevance_campus()
    gallery_levels = lv[0, g_ids]
    ideal = np.argsort(-gallery_levels.astype(int), kind="stable")
    rankings = [ideal, np.random.default_rng(31).permutation(len(g_ids)), ideal[::-1]]
    dist = np.empty((len(rankings), len(g_ids)))
    for i, order in enumerate(rankings):
        dist[i, order] = np.arange(len(g_ids), dtype=np.float64)
    q_ids = np.zeros(len(rankings), dtype=np.int64)
    fast = authors_per_query(dist, q_ids, g_ids, lv, coords=coords)
    slow = reference.metrics_per_query(dist, q_ids, g_ids, lv, coords=coords, compat="authors")
    np.testing.assert_allclose(fast.pop("err@1_m"), slow.pop("err@1_m"), rtol=0, atol=1e-3)  # GeographicLib
    assert_same_values(fast, slow)
    for i, order in enumerate(rankings):
        expected = reference.h_ap_value_matching(gallery_levels[order[:-1]], 3, gallery_levels[order])
        assert fast["H-AP"][i] == pytest.approx(expected, abs=ATOL)
    assert fast["H-AP"][0] > 1.3  # the ideal ranking
    default = metrics.per_query(dist, q_ids, g_ids, lv)
    assert np.all(default["H-AP"] <= 1.0 + ATOL) and default["H-AP"][0] == pytest.approx(1.0, abs=ATOL)
    assert authors_evaluate(dist[:1], q_ids[:1], g_ids, lv)["H-AP"] > 1.3  # also as a summary
    assert metrics.evaluate(dist[:1], q_ids[:1], g_ids, lv)["H-AP"] == pytest.approx(1.0, abs=ATOL)


# --------------------------------------------------------------------------- what compat changes and keeps


def last_item_matters():
    """Building 0 ranks its gallery ideally; building 4 (no relative in the gallery) ranks itself last."""
    lv = np.array([[3, 2, 1, 0, 0], [2, 3, 0, 0, 0], [1, 0, 3, 0, 0], [0, 0, 0, 3, 0], [0, 0, 0, 0, 3]],
                  dtype=np.uint8)
    g_ids = np.array([0, 1, 2, 3, 3, 4])
    dist = np.array([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
    return dist, np.array([0, 4]), g_ids, lv


def test_every_metric_differs_where_the_last_ranked_item_matters():
    dist, q_ids, g_ids, lv = last_item_matters()
    default = metrics.evaluate(dist, q_ids, g_ids, lv, recall_at=(1, 5))
    compat = authors_evaluate(dist, q_ids, g_ids, lv, recall_at=(1, 5))
    assert_same_values(compat, reference.evaluate_metrics(dist, q_ids, g_ids, lv, (1, 5), compat="authors"))
    assert default.keys() == compat.keys()
    same = {key for key in default if default[key] == compat[key]}
    assert same == {"n_queries"}, same
    # the second query's only relative is dropped: it is left out of every mean in compat
    assert compat["n_left_out_0"] == 1 and compat["H-AP"] == 1.0 and default["H-AP"] < 1.0


def test_default_is_unchanged_and_silent():
    dist, q_ids, g_ids, lv = random_problem(32, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = metrics.evaluate(dist, q_ids, g_ids, lv)
        named = metrics.evaluate(dist, q_ids, g_ids, lv, compat="definitions")
        per_q = metrics.per_query(dist, q_ids, g_ids, lv, compat="definitions")
    assert plain == named
    assert_same_values(plain, reference.evaluate_metrics(dist, q_ids, g_ids, lv))
    assert_same_values(per_q, reference.metrics_per_query(dist, q_ids, g_ids, lv))


def test_warning_names_both_effects_once_per_call():
    dist, q_ids, g_ids, lv = random_problem(33, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics.evaluate(dist, q_ids, g_ids, lv, compat="authors")
    assert [type(w.message) for w in caught] == [AuthorsCompatWarning]
    assert issubclass(AuthorsCompatWarning, UserWarning)
    text = str(caught[0].message)
    assert "H-AP" in text and "can exceed 1" in text and "last-ranked gallery item" in text
    assert "\n" not in text


def test_embeddings_entry_point_matches_cosine_distances():
    rng = np.random.default_rng(34)
    q_emb, g_emb = rng.standard_normal((12, 16)), rng.standard_normal((50, 16))
    _, q_ids, g_ids, lv = random_problem(34, 3, q=12, g=50)
    coords = np.array([22.3, 114.2]) + rng.uniform(0, 0.01, (lv.shape[0], 2))
    with pytest.warns(AuthorsCompatWarning):
        got = metrics.evaluate_embeddings(q_emb, g_emb, q_ids, g_ids, lv, coords=coords, compat="authors")
    expected = authors_evaluate(cosine(q_emb, g_emb), q_ids, g_ids, lv, coords=coords)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key
    # top-1 and its error do not depend on the dropped last item
    default = metrics.evaluate_embeddings(q_emb, g_emb, q_ids, g_ids, lv, coords=coords)
    assert got["err@1_mean_m"] == pytest.approx(default["err@1_mean_m"], abs=1e-6)


@pytest.mark.parametrize("call", ["per_query", "evaluate", "evaluate_embeddings", "score_task", "options",
                                  "evaluate_tasks"])
def test_unknown_compat_is_refused_naming_it(call, tmp_path):
    dist, q_ids, g_ids, lv = random_problem(35, 2, q=3, g=5)
    emb = np.ones((3, 4)), np.ones((5, 4))
    task = RetrievalTask("t", *emb, q_ids, g_ids, lv)
    calls = {
        "per_query": lambda: metrics.per_query(dist, q_ids, g_ids, lv, compat="paper"),
        "evaluate": lambda: metrics.evaluate(dist, q_ids, g_ids, lv, compat=None),
        "evaluate_embeddings": lambda: metrics.evaluate_embeddings(*emb, q_ids, g_ids, lv, compat="Authors"),
        "score_task": lambda: score_task(task, compat="authors "),
        "options": lambda: EvalOptions(embeddings=tmp_path, compat="release"),
        "evaluate_tasks": lambda: evaluate_tasks({"t": task}, compat="x", progress=False),
    }
    with pytest.raises(ValueError, match="compat"):
        calls[call]()


def test_nan_input_is_refused_in_compat():
    dist, q_ids, g_ids, lv = random_problem(36, 2, q=3, g=5)
    dist[1, 2] = np.nan
    with pytest.raises(ValueError, match="distances"):
        authors_per_query(dist, q_ids, g_ids, lv)
    bad = np.ones((3, 4))
    bad[2, 1] = np.inf
    for args, name in (((bad, np.ones((5, 4))), "query_emb"), ((np.ones((3, 4)), bad[[0, 1, 2, 2, 2]]),
                                                                "gallery_emb")):
        with pytest.raises(ValueError, match=name), pytest.warns(AuthorsCompatWarning):
            metrics.per_query_embeddings(*args, q_ids, g_ids, lv, compat="authors")


# --------------------------------------------------------------------------- tasks and dycl-eval


def test_score_task_in_compat_scores_the_authors_way_and_keeps_geo_metrics(tmp_path):
    arrays = clustered_task(np.random.default_rng(37))
    lv = level_matrix(arrays["coords"])
    task = RetrievalTask("satellite->drone", arrays["query"], arrays["gallery"], arrays["query_ids"],
                         arrays["gallery_ids"], lv, coords=arrays["coords"])
    with pytest.warns(AuthorsCompatWarning):
        compat = score_task(task, geo_metrics=True, compat="authors")
    default = score_task(task, geo_metrics=True)
    expected = authors_evaluate(cosine(arrays["query"], arrays["gallery"]), arrays["query_ids"],
                                arrays["gallery_ids"], lv, coords=arrays["coords"])
    for key in expected:
        assert compat[key] == pytest.approx(expected[key], abs=1e-9), key
    for key in (k for k in default if k.startswith("SDM@") or (k.startswith("err@") and "err@1_" not in k)):
        assert compat[key] == default[key], key


def test_dycl_eval_compat_authors(tmp_path, capsys):
    arrays = clustered_task(np.random.default_rng(38))
    path = tmp_path / "satellite_to_drone.npz"
    np.savez(path, **arrays)
    common = ["--embeddings", str(path), "--no-progress"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert eval_main([*common, "--compat", "authors", "--output", str(tmp_path / "a.json")]) == 0
    assert not [w for w in caught if issubclass(w.category, AuthorsCompatWarning)]
    captured = capsys.readouterr()
    assert captured.out.startswith("Scored with compat=authors: the authors' released evaluation")
    err = captured.err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert warned == [f"dycl-eval: warning: {AUTHORS_COMPAT_MESSAGE}"], err
    assert eval_main([*common, "--output", str(tmp_path / "d.json")]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "compat=authors" not in captured.out

    authors = json.loads((tmp_path / "a.json").read_text())["satellite->drone"]
    default = json.loads((tmp_path / "d.json").read_text())["satellite->drone"]
    assert authors["compat"] == "authors" and "compat" not in default
    assert "compat=authors" in (tmp_path / "a.md").read_text()
    lv = level_matrix(arrays["coords"])
    expected = authors_evaluate(cosine(arrays["query"], arrays["gallery"]), arrays["query_ids"],
                                arrays["gallery_ids"], lv, coords=arrays["coords"])
    for key, value in expected.items():
        assert authors[key] == pytest.approx(value, abs=1e-6), key
    assert authors["mAP_overall"] != default["mAP_overall"]

    assert eval_main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "d.json"), "--labels", "A", "D",
                      "--out", str(tmp_path / "bars.png")]) == 0
    assert "== A [compat=authors]" in capsys.readouterr().out
    assert eval_main(["--compare", str(tmp_path / "a.json"), "--compat", "authors", "--out",
                      str(tmp_path / "bars.png")]) == 2
    assert capsys.readouterr().err.strip().startswith("dycl-eval: error: --compat: not used with --compare")


def test_dycl_eval_help_explains_compat(capsys):
    with pytest.raises(SystemExit):
        eval_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--compat {definitions,authors}" in text
    assert "can exceed 1" in text and "last-ranked" in text and "not the default" in text


def test_compat_equals_the_definitions_where_neither_effect_applies():
    """An irrelevant item ranked last for every query, and no two levels with equal relevance: no change."""
    dist, q_ids, g_ids, lv = random_problem(39, 3, ties=False)
    b = lv.shape[0]
    far = np.zeros((b + 1, b + 1), dtype=np.uint8)  # building b: level 0 to every other building
    far[:b, :b] = lv
    far[b, b] = 3
    dist = np.concatenate([dist, np.full((dist.shape[0], 1), 2.0)], axis=1)
    g_ids = np.append(g_ids, b)
    default = metrics.per_query(dist, q_ids, g_ids, far)
    compat = authors_per_query(dist, q_ids, g_ids, far)
    equal_values = np.zeros(len(q_ids), dtype=bool)
    for i, q in enumerate(q_ids):
        n_v = np.array([np.count_nonzero(far[q, g_ids] == v) for v in (1, 2, 3)])
        rel = np.array([0.5, 1.0, 1.5])[n_v > 0] / n_v[n_v > 0]
        equal_values[i] = len(np.unique(rel)) < len(rel)
    for key in default:
        if key == "H-AP":
            np.testing.assert_allclose(compat[key][~equal_values], default[key][~equal_values], atol=ATOL)
            assert np.all(compat[key][equal_values] > default[key][equal_values])
        else:
            np.testing.assert_allclose(compat[key], default[key], atol=ATOL, equal_nan=True, err_msg=key)


def test_the_never_retrieved_item_still_counts_in_the_relevance_table():
    # Ranked levels 1, 2 | 1 (the last never retrieved). The release's relevance table counts n_1 = 2
    # over the whole gallery: rel = 0.5, 2; H-ranks 0.5 and 2.5 give (0.5 / 1 + 2.5 / 2) / 2.5 = 0.7.
    # Counting only the retrieved items (n_1 = 1) would give 2.5 / 3 instead.
    lv = np.array([[2, 1, 1], [1, 2, 0], [1, 0, 2]], dtype=np.uint8)
    dist = np.array([[0.0, 1.0, 2.0]])
    g_ids = np.array([1, 0, 2])
    assert reference.h_ap_value_matching(np.array([1, 2]), 2, np.array([1, 2, 1])) == pytest.approx(0.7)
    assert reference.h_ap_value_matching(np.array([1, 2]), 2) == pytest.approx(2.5 / 3)
    fast = authors_per_query(dist, np.array([0]), g_ids, lv)
    assert fast["H-AP"][0] == pytest.approx(0.7, abs=ATOL)
