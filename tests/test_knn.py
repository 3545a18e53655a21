"""Pluggable neighbour search (dycl.knn) and re-ranking from given neighbour lists.

References: a NumPy argsort of the dense ``D`` (DESIGN §5 step 1) for the exact lists, the core's own
embedding entry points for the re-ranked distances.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from dycl import _core, knn, rerank
from dycl.cli import eval_main
from dycl.geo import level_matrix
from dycl.tasks import RerankConfig


def clustered(rng: np.random.Generator, n: int, dim: int = 32, clusters: int = 25, noise: float = 0.35):
    """Embeddings around cluster centres (continuous values: no near-ties in practice)."""
    centres = rng.standard_normal((clusters, dim))
    labels = rng.integers(0, clusters, n)
    return (centres[labels] + noise * rng.standard_normal((n, dim))).astype(np.float32), labels


def split(x: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
    return x[:q], x[q:]


def tied_embeddings(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    """Unit vectors with four entries of ±0.5: every dot product is a multiple of 0.25, exact in any
    summation order, so ``D`` has massive exact ties (and duplicate items) with no rounding ambiguity."""
    x = np.zeros((n, dim), dtype=np.float32)
    for row in x:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    x[5] = x[17]  # exact duplicates
    x[40] = x[17]
    return x


def reference_lists(joint: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First ``width`` of each row of ``D`` by a stable argsort (ties by index), float32 as the core."""
    unit = joint / np.linalg.norm(joint, axis=1, keepdims=True)
    cos = (1.0 - unit @ unit.T).astype(np.float32)
    sq = cos * cos
    d = sq / sq.max(axis=1, keepdims=True)
    order = np.argsort(d, axis=1, kind="stable")[:, :width]
    return order, np.take_along_axis(cos, order, axis=1), np.abs(cos).max(axis=1)


# --------------------------------------------------------------------------- exact lists


def test_exact_lists_equal_a_stable_argsort_with_ties_and_duplicates():
    rng = np.random.default_rng(0)
    x = tied_embeddings(rng, 300)
    query, gallery = split(x, 60)
    graph = knn.neighbours(query, gallery, 20)
    order, cos, largest = reference_lists(x.astype(np.float64), 21)
    assert graph.backend == "exact" and graph.exact and graph.index.shape == (300, 21)
    np.testing.assert_array_equal(graph.index, order)
    np.testing.assert_array_equal(graph.distance, cos)
    np.testing.assert_array_equal(graph.max_distance, largest)
    assert graph.index[5, :3].tolist() == [5, 17, 40]  # duplicates of one item, by index


def test_exact_lists_of_row_ranges_concatenate_to_the_whole():
    rng = np.random.default_rng(1)
    x, _ = clustered(rng, 700)
    query, gallery = split(x, 100)
    whole = _core.neighbour_lists(query, gallery, 12)
    parts = [_core.neighbour_lists(query, gallery, 12, rows) for rows in ((0, 257), (257, 300), (300, 700))]
    for got, expected in zip(zip(*parts, strict=True), whole, strict=True):
        np.testing.assert_array_equal(np.concatenate(got), expected)
    order, cos, largest = reference_lists(x.astype(np.float64), 13)
    np.testing.assert_allclose(whole[1], cos, atol=2e-6)
    np.testing.assert_allclose(whole[2], largest, atol=2e-6)


def test_k_beyond_n_minus_1_is_clamped_to_all_items():
    rng = np.random.default_rng(2)
    x, _ = clustered(rng, 40)
    graph = knn.neighbours(x[:10], x[10:], 500)
    assert graph.index.shape == (40, 40)
    assert (np.sort(graph.index, axis=1) == np.arange(40)).all()
    torch_graph = knn.neighbours(x[:10], x[10:], 500, "torch", device="cpu")
    assert torch_graph.index.shape == (40, 40)


def test_joint_rows_are_the_normalised_joint_set_in_blocks():
    rng = np.random.default_rng(10)
    x, _ = clustered(rng, 230)
    x[7] = 0.0  # a zero row stays zero
    rows = knn.JointRows(x[:50], x[50:], block=33)
    starts, blocks = zip(*rows.blocks(), strict=True)
    assert starts == tuple(range(0, 230, 33))
    joint = np.concatenate(blocks)
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(joint, np.divide(x, norms, out=np.zeros_like(x), where=norms > 0), atol=1e-6)
    sample = rows.sample(40)
    assert sample.shape == (40, 32) and np.isin(sample.view([("", sample.dtype)] * 32),
                                                 joint.view([("", joint.dtype)] * 32)).all()
    np.testing.assert_array_equal(rows.sample(500), joint)


# --------------------------------------------------------------------------- re-ranking from given lists


def test_given_exact_lists_reproduce_the_embedding_entry_points_exactly():
    rng = np.random.default_rng(3)
    x = tied_embeddings(rng, 320)
    query, gallery = split(x, 70)
    index, distance, largest = _core.neighbour_lists(query, gallery, 20)
    expected = _core.k_reciprocal_embeddings(query, gallery, 20, 6, 0.3, None)
    got = _core.k_reciprocal_neighbours(query, gallery, index, distance, largest, 20, 6, 0.3, None)
    np.testing.assert_array_equal(got, expected)
    # Wider lists, columns shuffled: the core re-sorts by (distance, index) and keeps what it needs.
    wide = _core.neighbour_lists(query, gallery, 45)
    perm = rng.permutation(46)
    shuffled = [wide[0][:, perm], wide[1][:, perm], wide[2]]
    np.testing.assert_array_equal(
        _core.k_reciprocal_neighbours(query, gallery, *shuffled, 20, 6, 0.3, None), expected)
    ks = [5, 12, 30]
    for variant in ("paper", "reference"):
        expected = _core.msrerank_embeddings(query, gallery, ks, 6, 0.3, variant, None)
        got = _core.msrerank_neighbours(query, gallery, *shuffled, ks, 6, 0.3, variant, None)
        np.testing.assert_array_equal(got, expected)


def test_rerank_accepts_a_precomputed_graph_and_reports_it():
    rng = np.random.default_rng(4)
    x, _ = clustered(rng, 400)
    query, gallery = split(x, 50)
    graph = knn.neighbours(query, gallery, 30)
    named = knn.NeighbourGraph(graph.index, graph.distance, graph.max_distance, "mine", False, {"a": 1})
    result = rerank.k_reciprocal_graph(query, gallery, 20, 6, knn=named)
    assert (result.backend, result.exact, result.params) == ("mine", False, {"a": 1})
    np.testing.assert_array_equal(result.distances, rerank.k_reciprocal_embeddings(query, gallery, 20, 6))
    np.testing.assert_array_equal(rerank.msrerank_embeddings(query, gallery, (5, 10, 25), knn=graph),
                                  rerank.msrerank_embeddings(query, gallery, (5, 10, 25)))
    default = rerank.k_reciprocal_graph(query, gallery)
    assert (default.backend, default.exact) == ("exact", True)


@pytest.mark.parametrize("backend, params", [("faiss", {"index": "flat"}), ("torch", {"device": "cpu"})])
def test_exact_faiss_and_torch_give_the_exact_re_ranking(backend, params, monkeypatch):
    monkeypatch.setattr(knn, "_SEARCH_ROWS", 97)  # blocks that straddle the query/gallery boundary
    rng = np.random.default_rng(5)
    x, _ = clustered(rng, 900)
    query, gallery = split(x, 150)
    exact = knn.neighbours(query, gallery, 30)
    graph = knn.neighbours(query, gallery, 30, backend, **params)
    assert graph.exact and graph.backend == backend
    np.testing.assert_array_equal(graph.index, exact.index)  # continuous data: no ties to break
    np.testing.assert_allclose(graph.distance, exact.distance, atol=1e-5)
    np.testing.assert_allclose(graph.max_distance, exact.max_distance, atol=1e-5)
    np.testing.assert_allclose(rerank.k_reciprocal_embeddings(query, gallery, 20, 6, knn=graph),
                               rerank.k_reciprocal_embeddings(query, gallery, 20, 6), atol=1e-5)
    np.testing.assert_allclose(rerank.msrerank_embeddings(query, gallery, (5, 12, 30), knn=graph),
                               rerank.msrerank_embeddings(query, gallery, (5, 12, 30)), atol=1e-5)


@pytest.mark.parametrize("preset, params", [("faiss-ivf", {"nlist": 16, "nprobe": 4}),
                                            ("faiss-ivf-sq8", {"nlist": 16, "nprobe": 4}),
                                            ("faiss-hnsw", {"M": 16, "ef_search": 40})])
def test_approximate_faiss_runs_and_says_it_is_approximate(preset, params):
    rng = np.random.default_rng(6)
    x, _ = clustered(rng, 1200)
    query, gallery = split(x, 200)
    result = rerank.k_reciprocal_graph(query, gallery, 20, 6, knn=preset, knn_params=params)
    assert result.backend == "faiss" and result.exact is False
    assert result.params["max_distance"] == "approximate"
    assert result.distances.shape == (200, 1000) and np.isfinite(result.distances).all()
    exact = rerank.k_reciprocal_embeddings(query, gallery, 20, 6)
    top = np.argsort(result.distances, axis=1)[:, 0] == np.argsort(exact, axis=1)[:, 0]
    assert top.mean() > 0.8  # approximate, but close on well-clustered data


# --------------------------------------------------------------------------- bad input


def test_bad_search_options_name_the_argument(monkeypatch):
    rng = np.random.default_rng(7)
    x, _ = clustered(rng, 300)
    query, gallery = split(x, 50)
    with pytest.raises(ValueError, match="^backend: unknown 'annoy'"):
        knn.neighbours(query, gallery, 10, "annoy")
    with pytest.raises(ValueError, match="^knn: unknown neighbour search"):
        rerank.k_reciprocal_graph(query, gallery, knn="scann")
    with pytest.raises(ValueError, match="^nlist: 301 inverted lists"):
        knn.neighbours(query, gallery, 10, "faiss", index="ivf", nlist=301)
    with pytest.raises(ValueError, match="^k_factor: applies to index='ivf-sq8'"):
        knn.neighbours(query, gallery, 10, "faiss", index="ivf", nlist=8, k_factor=2)
    with pytest.raises(ValueError, match="^k_factor: expected an integer >= 1"):
        knn.neighbours(query, gallery, 10, "faiss", index="ivf-sq8", nlist=8, k_factor=0)
    with pytest.raises(ValueError, match="^index: unknown FAISS index"):
        knn.neighbours(query, gallery, 10, "faiss", index="lsh")
    with pytest.raises(ValueError, match="^params: unknown FAISS option"):
        knn.neighbours(query, gallery, 10, "faiss", nprob=3)
    with pytest.raises(ValueError, match="^k: expected an integer >= 1"):
        knn.neighbours(query, gallery, 0)
    with pytest.raises(ValueError, match="^device: 'cuda' needs faiss-gpu"):
        knn.neighbours(query, gallery, 10, "faiss", device="cuda")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="^device: CUDA is not available.*device='cpu'"):
        knn.neighbours(query, gallery, 10, "torch")
    with pytest.raises(ValueError, match="^device: CUDA is not available"):
        RerankConfig(method="k-reciprocal", knn="torch")  # before any embedding
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ImportError, match=r"pip install dycl\[faiss\]"):
        knn.neighbours(query, gallery, 10, "faiss")


def test_bad_lists_raise_value_error_naming_the_argument():
    rng = np.random.default_rng(8)
    x, _ = clustered(rng, 300)
    query, gallery = split(x, 50)
    good = _core.neighbour_lists(query, gallery, 20)

    def call(index=good[0], distance=good[1], largest=good[2], k1=20):
        return _core.k_reciprocal_neighbours(query, gallery, index, distance, largest, k1, 6, 0.3, None)

    def edited(arr, at, value):
        out = arr.copy()
        out[at] = value
        return out

    cases = [
        ({"index": good[0][:-1]}, "index: expected shape"),
        ({"distance": good[1][:, :-1]}, "distance: expected the shape of index"),
        ({"largest": good[2][:-1]}, "max_distance: expected shape"),
        ({"index": edited(good[0], (3, 4), 300)}, r"index: value 300 at \(3, 4\) is outside"),
        ({"index": edited(good[0], (3, 4), -1)}, "index: value -1"),
        ({"index": edited(good[0], (3, 4), good[0][3, 5])}, "index: row 3 lists item"),
        ({"distance": edited(good[1], (7, 2), np.nan)}, r"distance: contains NaN or inf \(first at \(7, 2\)"),
        ({"distance": edited(good[1], (7, 2), -0.6)}, "distance: value -0.6 .* similarities"),
        ({"largest": edited(good[2], 9, np.inf)}, "max_distance: contains NaN or inf"),
        ({"k1": 30}, "index: holds 21 neighbours per item, but k = 30"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=f"^{message}"):
            call(**kwargs)
    for rows in ((5, 5), (0, 301)):
        with pytest.raises(ValueError, match="^rows: must be a non-empty range"):
            _core.neighbour_lists(query, gallery, 5, rows)
    with pytest.raises(ValueError, match="^index: expected a 2-D"):
        knn.NeighbourGraph(good[0][0], good[1], good[2], "x", True)
    with pytest.raises(ValueError, match="^knn_params: a precomputed NeighbourGraph"):
        rerank.k_reciprocal_graph(query, gallery, knn=knn.NeighbourGraph(*good, "x", True),
                                  knn_params={"nprobe": 3})


# --------------------------------------------------------------------------- task layer and CLI


def test_rerank_config_and_dycl_eval_record_the_search(tmp_path, capsys):
    with pytest.raises(ValueError, match="^knn: unknown"):
        RerankConfig(method="k-reciprocal", knn="nope")
    assert "knn faiss-ivf, nprobe=8" in RerankConfig(method="k-reciprocal", knn="faiss-ivf",
                                                     knn_params={"nprobe": 8}).describe()
    with pytest.raises(ValueError, match="^nprobe: expected an integer >= 1"):
        RerankConfig(method="k-reciprocal", knn="faiss-ivf", knn_params={"nprobe": 0})
    with pytest.raises(ValueError, match="^params: unknown torch option"):
        RerankConfig(method="msrerank", knn="torch", knn_params={"nprobe": 3})
    rng = np.random.default_rng(9)
    x, labels = clustered(rng, 72, dim=24, clusters=12)
    coords = np.column_stack([30.0 + rng.uniform(0, 0.006, 12), 120.0 + rng.uniform(0, 0.006, 12)])
    path = tmp_path / "satellite_to_drone.npz"
    np.savez(path, query=x[:12], gallery=x[12:], query_ids=np.arange(12), gallery_ids=labels[12:],
             coords=coords, levels=level_matrix(coords))
    outputs = {}
    for search in ("exact", "faiss"):
        out = tmp_path / search / "metrics.json"
        assert eval_main(["--embeddings", str(path), "--output", str(out), "--no-progress", "--rerank",
                          "k-reciprocal", "--k1", "5", "--knn", search]) == 0
        outputs[search] = json.loads(out.read_text())["satellite->drone"]
        assert f"neighbour search satellite->drone**: {search}" in out.with_suffix(".md").read_text()
        assert ", exact" in out.with_suffix(".md").read_text()
    for key, value in outputs["exact"].items():
        assert outputs["faiss"][key] == pytest.approx(value, abs=1e-6), key
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        eval_main(["--embeddings", str(path), "--rerank", "k-reciprocal", "--knn-param", "nprobe"])
    assert exit_info.value.code == 2 and "--knn-param: expected KEY=VALUE" in capsys.readouterr().err
    assert eval_main(["--embeddings", str(path), "--rerank", "k-reciprocal", "--no-progress", "--knn",
                      "faiss-ivf", "--knn-param", "nlist=1000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dycl-eval: error: nlist: 1000 inverted lists"), err
    cases = ((["--rerank", "k-reciprocal", "--knn", "faiss-ivf", "--knn-param", "nprobe=0"],
              "--knn-param nprobe: expected"),
             (["--knn", "faiss"], "--knn/--knn-param: only used with --rerank"))
    for options, message in cases:
        assert eval_main(["--embeddings", str(path), "--no-progress", *options]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"dycl-eval: error: {message}")
    with pytest.raises(SystemExit):
        eval_main(["--help"])
    assert "faiss-ivf" in capsys.readouterr().out


def test_refined_ivf_sq8_lists_carry_exact_distances():
    # The 8-bit codes only pick candidates; the listed distances are re-scored exactly, so every
    # listed (item, neighbour) distance equals the exact cosine distance.
    rng = np.random.default_rng(12)
    x, _ = clustered(rng, 900)
    query, gallery = split(x, 100)
    graph = knn.neighbours(query, gallery, 15, "faiss", index="ivf-sq8", nlist=12, nprobe=3)
    assert graph.exact is False and graph.params["k_factor"] == 4
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    rows = np.arange(len(x))[:, None]
    exact = 1.0 - np.einsum("nd,nkd->nk", unit, unit[graph.index])
    np.testing.assert_allclose(graph.distance, exact, atol=1e-5)
    assert (np.diff(graph.distance, axis=1) >= -1e-6).all()  # ranked
    assert (graph.index[:, 0] == rows[:, 0]).mean() > 0.95  # an item finds itself


@pytest.mark.parametrize("knn_name", ["exact", "faiss"])
def test_top_answers_are_the_best_columns_of_the_full_answer(knn_name):
    rng = np.random.default_rng(14)
    x, _ = clustered(rng, 700)
    query, gallery = split(x, 60)
    full = rerank.k_reciprocal_graph(query, gallery, 20, 6, knn=knn_name)
    ms_full = rerank.msrerank_graph(query, gallery, (5, 12, 30), knn=knn_name)
    for top in (1, 25, 640, 5000):
        kept = min(top, 640)
        for answer, got in ((full, rerank.k_reciprocal_graph(query, gallery, 20, 6, knn=knn_name, top=top)),
                            (ms_full, rerank.msrerank_graph(query, gallery, (5, 12, 30), knn=knn_name,
                                                            top=top))):
            order = np.argsort(answer.distances, axis=1, kind="stable")[:, :kept]
            assert got.indices.dtype == np.int64 and got.indices.shape == (60, kept)
            np.testing.assert_array_equal(got.indices, order)
            np.testing.assert_array_equal(got.distances, np.take_along_axis(answer.distances, order, 1))
            assert got.backend == answer.backend and got.exact is True
    assert full.indices is None
    with pytest.raises(ValueError, match="^top: expected an integer >= 1"):
        rerank.k_reciprocal_graph(query, gallery, top=0)
