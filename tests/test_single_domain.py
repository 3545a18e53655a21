"""Single-domain retrieval: metrics with exclude_self and single-set re-ranking, against dycl.reference."""

from __future__ import annotations

import numpy as np
import pytest

from dycl import levels as hierarchy
from dycl import metrics, reference, rerank, rerank_single

TOL = 2e-6


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _hierarchy(rng: np.random.Generator, n: int, n_fine: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Image ids and levels of a random three-depth tree (fine -> middle -> coarse)."""
    fine_of_image = rng.integers(0, n_fine, size=n)
    middle_of_fine = rng.integers(0, 4, size=n_fine)
    coarse_of_middle = np.array([0, 0, 1, 1])
    fine = fine_of_image
    middle = middle_of_fine[fine]
    return hierarchy.from_hierarchy(fine, middle, coarse_of_middle[middle])


def _clustered(rng: np.random.Generator, ids: np.ndarray, dim: int = 8, noise: float = 0.8) -> np.ndarray:
    centres = rng.normal(size=(int(ids.max()) + 1, dim))
    return (centres[ids] + noise * rng.normal(size=(len(ids), dim))).astype(np.float32)


def _assert_same_values(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(np.asarray(got[key], dtype=np.float64),
                                   np.asarray(want[key], dtype=np.float64), atol=1e-12, rtol=0, err_msg=key)


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("case", ["random", "ties", "duplicates", "f32"])
def test_exclude_self_matches_the_reference(case: str) -> None:
    rng = np.random.default_rng(["random", "ties", "duplicates", "f32"].index(case))
    n = 40
    ids, lv = _hierarchy(rng, n)
    if case == "ties":
        dist = rng.integers(0, 4, size=(n, n)).astype(np.float64)  # many exact ties, ordered by index
    elif case == "duplicates":
        x = _normalise(_clustered(rng, ids).astype(np.float64))
        x[1::2] = x[::2]  # pairs of identical items: a twin at distance 0
        dist = 1 - x @ x.T
    else:
        dist = rng.random((n, n))
    if case == "f32":
        dist = dist.astype(np.float32)
    got = metrics.per_query(dist, ids, ids, lv, recall_at=(1, 3), exclude_self=True)
    want = reference.metrics_per_query_single(np.asarray(dist, dtype=np.float64), ids, lv, recall_at=(1, 3))
    _assert_same_values(got, want)
    # the diagonal matters: a query is never its own top-1
    assert (got["top1"] != np.arange(n)).all()


def test_exclude_self_differs_from_keeping_self() -> None:
    rng = np.random.default_rng(11)
    ids, lv = _hierarchy(rng, 30)
    dist = rng.random((30, 30))
    np.fill_diagonal(dist, 0)
    kept = metrics.evaluate(dist, ids, ids, lv)
    excluded = metrics.evaluate(dist, ids, ids, lv, exclude_self=True)
    assert kept["R@1_0"] == 1.0 and excluded["R@1_0"] < 1.0


def test_exclude_self_embeddings_equal_the_distance_path() -> None:
    rng = np.random.default_rng(12)
    ids, lv = _hierarchy(rng, 60)
    x = _clustered(rng, ids)
    got = metrics.per_query_embeddings(x, x, ids, ids, lv, exclude_self=True)
    xn = _normalise(x.astype(np.float64))
    want = reference.metrics_per_query_single(1 - xn @ xn.T, ids, lv)
    # float32 cosines may reorder near-ties, so compare the summaries loosely and ranks of clear cases
    for key in ("H-AP", "ASI", "NDCG", "AP_0", "AP_2"):
        assert abs(np.nanmean(got[key]) - np.nanmean(want[key])) < 1e-3, key
    assert (got["top1"] != np.arange(60)).all()
    summary = metrics.evaluate_embeddings(x, x, ids, ids, lv, exclude_self=True)
    assert summary["n_queries"] == 60


def test_exclude_self_refuses_what_is_not_a_single_set() -> None:
    rng = np.random.default_rng(13)
    ids, lv = _hierarchy(rng, 10)
    dist = rng.random((10, 10))
    with pytest.raises(ValueError, match="^distances: .*square"):
        metrics.per_query(dist[:, :9], ids, ids[:9], lv, exclude_self=True)
    other = ids.copy()
    other[4] = (other[4] + 1) % lv.shape[0]
    with pytest.raises(ValueError, match="^gallery_ids: .*position 4"):
        metrics.per_query(dist, ids, other, lv, exclude_self=True)
    with pytest.raises(ValueError, match="^distances: .*at least 2"):
        metrics.per_query(dist[:1, :1], ids[:1], ids[:1], lv, exclude_self=True)
    with pytest.raises(ValueError, match="^exclude_self: "):
        metrics.per_query(dist, ids, ids, lv, exclude_self="yes")
    x = rng.normal(size=(10, 4)).astype(np.float32)
    y = x.copy()
    y[3, 1] += 1
    with pytest.raises(ValueError, match="^gallery_emb: .*equal query_emb"):
        metrics.per_query_embeddings(x, y, ids, ids, lv, exclude_self=True)
    bad = dist.copy()
    bad[5, 5] = np.nan  # the skipped diagonal is still checked
    with pytest.raises(ValueError, match="^distances: .*NaN"):
        metrics.per_query(bad, ids, ids, lv, exclude_self=True)


# --------------------------------------------------------------------------- re-ranking

RERANK_CASES = {
    # name: (n, k1, k2, lambda)
    "random": (50, 10, 4, 0.3),
    "k2_1": (40, 7, 1, 0.3),
    "lambda_0": (40, 10, 6, 0.0),
    "k_at_least_n": (12, 30, 6, 0.3),
}


@pytest.mark.parametrize("name", sorted(RERANK_CASES))
def test_k_reciprocal_single_matches_the_reference(name: str) -> None:
    n, k1, k2, lam = RERANK_CASES[name]
    rng = np.random.default_rng(sorted(RERANK_CASES).index(name) + 20)
    ids, _ = _hierarchy(rng, n)
    xn = _normalise(_clustered(rng, ids).astype(np.float64))
    dist = 1 - xn @ xn.T
    got = rerank_single.k_reciprocal_single(dist, k1=k1, k2=k2, lambda_value=lam)
    want = reference.k_reciprocal_single(dist, k1=min(k1, n - 1), k2=k2, lambda_value=lam)
    assert got.shape == (n, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("variant", rerank.VARIANTS)
@pytest.mark.parametrize("case", ["clustered", "asymmetric", "duplicates"])
def test_msrerank_single_matches_the_reference(variant: str, case: str) -> None:
    rng = np.random.default_rng(hash((variant, case)) % 2**32)
    n = 45
    ids, _ = _hierarchy(rng, n)
    if case == "asymmetric":
        dist = rng.random((n, n))
        np.fill_diagonal(dist, 0)
    else:
        x = _clustered(rng, ids).astype(np.float64)
        if case == "duplicates":
            x[15:30] = x[:15]  # exact twins: ties broken by index everywhere
        xn = _normalise(x)
        dist = 1 - xn @ xn.T
    ks = (5, 9, 20)
    got = rerank_single.msrerank_single(dist, ks=ks, k2=4, variant=variant)
    want = reference.msrerank_single(dist, ks=ks, k2=4, variant=variant)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    if case == "asymmetric":  # the transpose convention has teeth
        other = rerank_single.msrerank_single(dist.T.copy(), ks=ks, k2=4, variant=variant)
        assert np.abs(other - got).max() > 1e-3


def test_single_set_is_not_the_duplicated_joint_set() -> None:
    # Feeding the two-set entry point [X; X] gives every item a distance-0 twin; the single set does not.
    rng = np.random.default_rng(30)
    ids, _ = _hierarchy(rng, 40)
    xn = _normalise(_clustered(rng, ids).astype(np.float64))
    dist = 1 - xn @ xn.T
    single = rerank_single.k_reciprocal_single(dist, k1=8, k2=3)
    doubled = rerank.k_reciprocal(dist, dist, dist, k1=8, k2=3)
    assert np.abs(single - doubled).max() > 1e-3


def test_single_embeddings_equal_the_distance_entry() -> None:
    rng = np.random.default_rng(31)
    ids, _ = _hierarchy(rng, 120)
    x = _clustered(rng, ids, dim=16)
    xn = _normalise(x.astype(np.float32))
    dist = (1 - xn @ xn.T).astype(np.float32)
    np.testing.assert_allclose(rerank_single.k_reciprocal_single_embeddings(x, k1=10, k2=4),
                               rerank_single.k_reciprocal_single(dist, k1=10, k2=4), atol=1e-5, rtol=0)
    for variant in rerank.VARIANTS:
        np.testing.assert_allclose(
            rerank_single.msrerank_single_embeddings(x, ks=(6, 12, 30), variant=variant),
            rerank_single.msrerank_single(dist, ks=(6, 12, 30), variant=variant),
            atol=1e-5, rtol=0,
        )


def test_single_rerank_refuses_bad_input() -> None:
    rng = np.random.default_rng(32)
    with pytest.raises(ValueError, match="^dist: .*square"):
        rerank_single.k_reciprocal_single(rng.random((5, 6)))
    with pytest.raises(ValueError, match="^dist: .*at least 2"):
        rerank_single.msrerank_single(np.zeros((1, 1)))
    bad = rng.random((6, 6))
    bad[2, 3] = np.inf
    with pytest.raises(ValueError, match="^dist: .*NaN or inf"):
        rerank_single.k_reciprocal_single(bad, k1=3, k2=2)
    emb = rng.normal(size=(6, 3)).astype(np.float32)
    emb[1, 1] = np.nan
    with pytest.raises(ValueError, match="^embeddings: "):
        rerank_single.k_reciprocal_single_embeddings(emb, k1=3, k2=2)
    with pytest.raises(ValueError, match="^k2: "):
        rerank_single.msrerank_single(rng.random((6, 6)), ks=(2, 3), k2=7)
    with pytest.raises(ValueError, match="^ks: "):
        rerank_single.msrerank_single_embeddings(rng.normal(size=(6, 3)), ks=(3, 2))


def test_reranked_single_set_evaluates_end_to_end() -> None:
    rng = np.random.default_rng(33)
    ids, lv = _hierarchy(rng, 80)
    x = _clustered(rng, ids, noise=0.6)
    plain = metrics.evaluate_embeddings(x, x, ids, ids, lv, exclude_self=True)
    reranked = rerank_single.msrerank_single_embeddings(x, ks=(5, 10, 25))
    scores = metrics.evaluate(reranked, ids, ids, lv, exclude_self=True)
    for key in ("H-AP", "mAP_0", "R@1_0"):
        assert 0.0 <= scores[key] <= 1.0 and 0.0 <= plain[key] <= 1.0


# --------------------------------------------------------------------------- tasks and dycl-eval


def test_single_domain_task_round_trip_and_dycl_eval(tmp_path, capsys) -> None:
    import json

    from dycl.cli import eval_main
    from dycl.task_files import load_embeddings
    from dycl.tasks import RerankConfig, evaluate_tasks, single_domain_task

    rng = np.random.default_rng(40)
    ids, lv = _hierarchy(rng, 70)
    x = _clustered(rng, ids, noise=0.6)
    task = single_domain_task("toy", x, ids, lv)
    path = task.save(tmp_path / "toy.npz")
    loaded = load_embeddings(path)["toy"]
    assert loaded.exclude_self and load_embeddings(path, exclude_self=False)["toy"].exclude_self is False
    config = RerankConfig(method="msrerank", ks=(5, 10, 25))
    evaluation = evaluate_tasks({"toy": loaded}, config, progress=False)
    want = metrics.evaluate(rerank_single.msrerank_single_embeddings(x, ks=(5, 10, 25)), ids, ids, lv,
                            exclude_self=True)
    assert evaluation.results["toy"]["H-AP"] == pytest.approx(want["H-AP"], abs=1e-12)
    assert evaluation.baseline["toy"]["mAP_0"] == pytest.approx(
        metrics.evaluate_embeddings(x, x, ids, ids, lv, exclude_self=True)["mAP_0"], abs=1e-12)
    # dycl-eval reads the flag from the file; --exclude-self forces it on a plain file of the same images
    plain = tmp_path / "plain.npz"
    np.savez(plain, query=x, gallery=x, query_ids=ids, gallery_ids=ids, levels=lv)
    for name, args in (("toy", ["--embeddings", str(path)]),
                       ("plain", ["--embeddings", str(plain), "--exclude-self"])):
        out = tmp_path / f"{name}.json"
        rerank_flags = ["--rerank", "msrerank", "--ks", "5,10,25"]
        rc = eval_main([*args, *rerank_flags, "--output", str(out), "--no-progress"])
        assert rc == 0
        assert json.loads(out.read_text())[name]["H-AP"] == pytest.approx(want["H-AP"], abs=1e-9)
    not_single = tmp_path / "other.npz"
    np.savez(not_single, query=x[:10], gallery=x, query_ids=ids[:10], gallery_ids=ids, levels=lv)
    assert eval_main(["--embeddings", str(not_single), "--exclude-self"]) == 2
    assert "error: " in capsys.readouterr().err
    assert eval_main(["--embeddings", str(path), "--plots", str(tmp_path / "fig")]) == 2
    assert "plots: " in capsys.readouterr().err


def test_table4_miniature_compares_the_rerankings() -> None:
    from dycl.experiment.table4 import miniature_ks, shapes_task, table4_miniature

    rows = table4_miniature(images_per_class=4, size=16, seed=2)
    assert list(rows) == ["none", "k-reciprocal", "MSRerank (paper)"]
    task = shapes_task(4, 16, seed=2)
    ks = miniature_ks(task)
    assert ks == (5, 16, 48)  # images per colour within a family, per family; min_k 5 above 4 per class
    direct = metrics.evaluate(rerank_single.msrerank_single_embeddings(task.query, ks=ks), task.query_ids,
                              task.query_ids, task.levels, exclude_self=True)
    assert rows["MSRerank (paper)"]["H-AP"] == pytest.approx(direct["H-AP"], abs=1e-12)
    plain = metrics.evaluate_embeddings(task.query, task.query, task.query_ids, task.query_ids, task.levels,
                                        exclude_self=True)
    assert rows["none"]["mAP_overall"] == pytest.approx(plain["mAP_overall"], abs=1e-12)


@pytest.mark.slow
def test_training_on_the_hierarchy_lowers_the_loss_and_feeds_the_single_domain_path() -> None:
    from dycl.data.shapes import shapes_dataset
    from dycl.train.hierarchy import HierarchyTraining, embed_images, train_on_hierarchy

    data = shapes_dataset(1, 16, seed=3)  # kept tiny: a ResNet-18 step is slow on a shared CPU
    settings = HierarchyTraining(epochs=3, batch_size=18, embedding_dim=16, lr=3e-3, seed=1)
    model, losses = train_on_hierarchy(data.images, data.labels(), settings)
    assert len(losses) == 3 and np.isfinite(losses).all() and losses[-1] < losses[0], losses
    emb = embed_images(model, data.images)
    assert emb.shape == (36, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    ids, lv = hierarchy.from_hierarchy(*data.labels())
    scores = metrics.evaluate(rerank_single.msrerank_single_embeddings(emb, ks=(2, 4, 12)), ids, ids, lv,
                              exclude_self=True)
    assert 0 < scores["H-AP"] <= 1 and 0 < scores["mAP_1"] <= 1  # one image per class: no scale-0 positives
    with pytest.raises(ValueError, match="^images: "):
        train_on_hierarchy(data.images.astype(np.float32), data.labels(), settings)
    with pytest.raises(ValueError, match="^epochs: "):
        HierarchyTraining(epochs=0)


def test_dycl_experiment_table4_prints_our_rows_beside_the_papers(capsys):
    from dycl.cli import experiment_main
    from dycl.experiment.table4 import TABLE4_RERANKINGS

    assert experiment_main(["table4"]) == 0
    out = capsys.readouterr().out
    for label in TABLE4_RERANKINGS:
        row = next(line for line in out.splitlines() if line.startswith(f"| {label} |"))
        values = [float(v) for v in row.strip("|").split("|")[1:]]
        assert len(values) == 4 and all(0 < v <= 100 for v in values)
    assert "| DyML-Product | 41.21 | 46.54 |" in out
    assert experiment_main(["table4", "--seed", "-1"]) == 2
    assert "error: --seed: must be >= 0" in capsys.readouterr().err
