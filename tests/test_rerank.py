"""dycl.rerank (Rust core) against the slow NumPy definitions in dycl.reference."""

from __future__ import annotations

import numpy as np
import pytest

from dycl import reference, rerank

TOL = 2e-6


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _embeddings(rng: np.random.Generator, n: int, dim: int = 16, clusters: int | None = None,
                noise: float = 0.3) -> np.ndarray:
    if clusters is None:
        return rng.normal(size=(n, dim)).astype(np.float32)
    centres = rng.normal(size=(clusters, dim))
    return (centres[np.arange(n) % clusters] + noise * rng.normal(size=(n, dim))).astype(np.float32)


def _blocks(query: np.ndarray, gallery: np.ndarray, dtype: type = np.float64) -> tuple[np.ndarray, ...]:
    """Cosine distance blocks (q_g, q_q, g_g) of L2-normalised embeddings."""
    q = _normalise(query.astype(dtype))
    g = _normalise(gallery.astype(dtype))
    return (1 - q @ g.T).astype(dtype), (1 - q @ q.T).astype(dtype), (1 - g @ g.T).astype(dtype)


CASES = {
    # name: (q, g, clusters, k1, k2, lambda)
    "random": (20, 100, None, 20, 6, 0.3),
    "clustered": (30, 170, 20, 20, 6, 0.3),
    "odd_k1_7": (15, 90, 10, 7, 6, 0.3),
    "odd_k1_5": (15, 90, 10, 5, 3, 0.3),
    "k2_1": (15, 90, 10, 20, 1, 0.3),
    "lambda_0": (15, 90, 10, 20, 6, 0.0),
    "lambda_1": (15, 90, 10, 20, 6, 1.0),
    "single_query": (1, 80, 8, 20, 6, 0.3),
    "k1_at_least_n": (4, 20, 3, 30, 6, 0.3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_k_reciprocal_matches_reference(name: str) -> None:
    q, g, clusters, k1, k2, lam = CASES[name]
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x = _embeddings(rng, q + g, clusters=clusters)
    blocks = _blocks(x[:q], x[q:])
    got = rerank.k_reciprocal(*blocks, k1=k1, k2=k2, lambda_value=lam)
    want = reference.k_reciprocal(*blocks, k1=k1, k2=k2, lambda_value=lam)
    assert got.dtype == np.float32 and got.shape == (q, g)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_duplicates_break_ties_by_index() -> None:
    rng = np.random.default_rng(3)
    base = _embeddings(rng, 15, dim=8)
    x = np.concatenate([base, base, base, base])  # every item four times: exact ties
    blocks = _blocks(x[:10], x[10:])
    got = rerank.k_reciprocal(*blocks, k1=6, k2=4)
    want = reference.k_reciprocal(*blocks, k1=6, k2=4)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_asymmetric_blocks_follow_the_reference_transpose() -> None:
    rng = np.random.default_rng(4)
    q, g = 8, 40
    q_g = rng.random((q, g))
    q_q = rng.random((q, q))
    g_g = rng.random((g, g))
    np.fill_diagonal(q_q, 0)
    np.fill_diagonal(g_g, 0)
    got = rerank.k_reciprocal(q_g, q_q, g_g, k1=6, k2=3)
    np.testing.assert_allclose(got, reference.k_reciprocal(q_g, q_q, g_g, k1=6, k2=3), atol=TOL, rtol=0)
    # transposing the square blocks changes the answer, so the check above has teeth
    other = rerank.k_reciprocal(q_g, q_q.T.copy(), g_g.T.copy(), k1=6, k2=3)
    assert np.abs(other - got).max() > 1e-3


def test_dtypes_and_layouts_are_read_in_place_with_the_same_result() -> None:
    rng = np.random.default_rng(5)
    x = _embeddings(rng, 90, clusters=9)
    q_g, q_q, g_g = _blocks(x[:10], x[10:], dtype=np.float32)
    base = rerank.k_reciprocal(q_g, q_q, g_g, k1=8)
    # float64 copies of float32 values square to the same float32 numbers
    np.testing.assert_array_equal(base, rerank.k_reciprocal(q_g.astype(np.float64), q_q, g_g, k1=8))
    # non-contiguous and Fortran-ordered views, ints converted
    wide = np.zeros((80, 160), dtype=np.float32)
    wide[:, ::2] = g_g
    np.testing.assert_array_equal(base, rerank.k_reciprocal(q_g, np.asfortranarray(q_q), wide[:, ::2], k1=8))
    ints = rerank.k_reciprocal((q_g * 100).astype(np.int64), (q_q * 100).astype(np.int64), g_g * 100, k1=8)
    assert ints.shape == base.shape and np.isfinite(ints).all()


def test_embeddings_entry_equals_distance_entry() -> None:
    rng = np.random.default_rng(6)
    x = _embeddings(rng, 400, dim=32, clusters=25, noise=0.5)
    query, gallery = x[:50], x[50:]
    blocks = _blocks(query, gallery, dtype=np.float32)
    np.testing.assert_allclose(
        rerank.k_reciprocal_embeddings(query, gallery), rerank.k_reciprocal(*blocks), atol=1e-5, rtol=0
    )
    for variant in rerank.VARIANTS:
        np.testing.assert_allclose(
            rerank.msrerank_embeddings(query, gallery, ks=(10, 20, 45), variant=variant),
            rerank.msrerank(*blocks, ks=(10, 20, 45), variant=variant),
            atol=1e-5,
            rtol=0,
        )
    # float64 embeddings are converted, the result is unchanged
    np.testing.assert_allclose(
        rerank.k_reciprocal_embeddings(query.astype(np.float64), gallery), rerank.k_reciprocal(*blocks),
        atol=1e-5, rtol=0,
    )


@pytest.mark.parametrize("variant", rerank.VARIANTS)
@pytest.mark.parametrize("ks", [(4, 9, 20), (6, 6, 15), (12,)])
@pytest.mark.parametrize("n_query", [20, 110])  # fewer queries than gallery items, and more
def test_msrerank_matches_reference(variant: str, ks: tuple[int, ...], n_query: int) -> None:
    rng = np.random.default_rng(7)
    x = _embeddings(rng, 150, clusters=15, noise=0.5)
    blocks = _blocks(x[:n_query], x[n_query:])
    got = rerank.msrerank(*blocks, ks=ks, variant=variant)
    want = reference.msrerank(*blocks, ks=ks, variant=variant)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_msrerank_single_level_paper_is_k_reciprocal() -> None:
    rng = np.random.default_rng(8)
    x = _embeddings(rng, 120, clusters=12)
    blocks = _blocks(x[:15], x[15:])
    np.testing.assert_array_equal(rerank.msrerank(*blocks, ks=(11,)), rerank.k_reciprocal(*blocks, k1=11))


def test_paper_variant_keeps_earlier_levels_in_front() -> None:
    rng = np.random.default_rng(9)
    x = _embeddings(rng, 300, clusters=30, noise=0.6)
    blocks = _blocks(x[:25], x[25:])
    ks = (5, 12, 30)
    full = rerank.msrerank(*blocks, ks=ks)
    full_order = np.argsort(full, axis=1, kind="stable")
    for level in range(len(ks) - 1):
        partial = rerank.msrerank(*blocks, ks=ks[: level + 1])
        fixed = np.argsort(partial, axis=1, kind="stable")[:, : ks[level]]
        np.testing.assert_array_equal(full_order[:, : ks[level]], fixed)
    # the reference variant has no such guarantee from the first level alone; it differs
    assert not np.allclose(rerank.msrerank(*blocks, ks=ks, variant="reference"), full)


def test_msrerank_ks_hand_computed() -> None:
    levels = np.array([[3, 2, 0], [2, 3, 1], [0, 1, 3]])
    # scale 0: own building: 2 + 3 + 5 = 10; scale 1 (level >= 2): 5 + 5 + 5 = 15;
    # scale 2 (level >= 1): 5 + 10 + 8 = 23; times mu / C = 1/3 -> 3.33, 5, 7.67
    assert rerank.msrerank_ks(levels, [2, 3, 5], mu=1.0, min_k=1) == (3, 5, 8)
    assert rerank.msrerank_ks(levels, [2, 3, 5], mu=1.0, min_k=4) == (4, 5, 8)
    # halves round up: 1 * 5 / 2 = 2.5 -> 3 (half-to-even would give 2); 1.5 -> 2
    assert rerank.msrerank_ks(np.array([[2, 1], [1, 2]]), [2, 3], mu=1.0, min_k=1) == (3, 5)
    assert rerank.msrerank_ks(np.array([[2, 0], [0, 2]]), [1, 2], mu=1.0, min_k=1) == (2, 2)
    # one count for all buildings; DA-Campus-like default floor
    assert rerank.msrerank_ks(levels, 60) == (20, 20, 20)
    # 60 per building, mu / C = 0.5 / 3: 180 -> 30; 120 + 120 + 60 -> 50; 120 + 180 + 120 -> 70
    assert rerank.msrerank_ks(levels, 60, mu=0.5) == (30, 50, 70)


def test_progress_callback_and_errors_from_it() -> None:
    rng = np.random.default_rng(10)
    x = _embeddings(rng, 120, clusters=12)
    blocks = _blocks(x[:10], x[10:])
    calls: list[tuple[str, int, int]] = []
    rerank.msrerank(*blocks, ks=(5, 10), progress=lambda s, d, t: calls.append((s, d, t)))
    stages = [c[0] for c in calls]
    assert stages[0] == "neighbour lists" and stages[-1] == "re-ranking queries"
    assert any("k = 10" in s for s in stages)
    assert all(0 <= d <= t for _, d, t in calls)
    assert calls[-1][1] == calls[-1][2] == 10

    def stop(stage: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rerank.k_reciprocal(*blocks, progress=stop)
    np.testing.assert_array_equal(rerank.k_reciprocal(*blocks, progress=True), rerank.k_reciprocal(*blocks))


def _good_blocks() -> tuple[np.ndarray, ...]:
    x = _embeddings(np.random.default_rng(11), 30, dim=4)
    return _blocks(x[:5], x[5:])


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_distances_name_the_block(which: int, bad: float, dtype: type) -> None:
    blocks = [b.astype(dtype) for b in _good_blocks()]
    with np.errstate(over="ignore"):
        blocks[which][1, 1] = bad
    name = ("q_g_dist", "q_q_dist", "g_g_dist")[which]
    with pytest.raises(ValueError, match=name):
        rerank.k_reciprocal(*blocks)


def test_bad_shapes_and_parameters() -> None:
    q_g, q_q, g_g = _good_blocks()
    cases = [
        (lambda: rerank.k_reciprocal(q_g, g_g, g_g), "q_q_dist"),
        (lambda: rerank.k_reciprocal(q_g, q_q, q_q), "g_g_dist"),
        (lambda: rerank.k_reciprocal(q_g.T, q_q, g_g), "q_q_dist"),
        (lambda: rerank.k_reciprocal(q_g[:0], q_q[:0, :0], g_g), "q_g_dist"),
        (lambda: rerank.k_reciprocal(q_g[0], q_q, g_g), "q_g_dist"),
        (lambda: rerank.k_reciprocal(q_g.astype(str), q_q, g_g), "q_g_dist"),
        (lambda: rerank.k_reciprocal(q_g, q_q, g_g, k1=0), "k1"),
        (lambda: rerank.k_reciprocal(q_g, q_q, g_g, k1=-3), "k1"),
        (lambda: rerank.k_reciprocal(q_g, q_q, g_g, k1=2.5), "k1"),
        (lambda: rerank.k_reciprocal(q_g, q_q, g_g, k1=True), "k1"),
        (lambda: rerank.k_reciprocal(q_g, q_q, g_g, k2=0), "k2"),
        (lambda: rerank.k_reciprocal(q_g, q_q, g_g, k2=31), "k2"),
        (lambda: rerank.k_reciprocal(q_g, q_q, g_g, lambda_value=-0.1), "lambda_value"),
        (lambda: rerank.k_reciprocal(q_g, q_q, g_g, lambda_value=float("nan")), "lambda_value"),
        (lambda: rerank.k_reciprocal(q_g, q_q, g_g, lambda_value="x"), "lambda_value"),
        (lambda: rerank.k_reciprocal(q_g, q_q, g_g, progress=3), "progress"),
        (lambda: rerank.msrerank(q_g, q_q, g_g, ks=()), "ks"),
        (lambda: rerank.msrerank(q_g, q_q, g_g, ks=(0, 5)), "ks"),
        (lambda: rerank.msrerank(q_g, q_q, g_g, ks=(5, 3)), "ks"),
        (lambda: rerank.msrerank(q_g, q_q, g_g, ks="abc"), "ks"),
        (lambda: rerank.msrerank(q_g, q_q, g_g, variant="authors"), "variant"),
        (lambda: rerank.msrerank_embeddings(np.ones((3, 4)), np.ones((5, 3))), "gallery_emb"),
        (lambda: rerank.k_reciprocal_embeddings(np.full((3, 4), np.nan), np.ones((5, 4))), "query_emb"),
        (lambda: rerank.k_reciprocal_embeddings(np.ones((3, 4)), np.ones((0, 4))), "gallery_emb"),
        (lambda: rerank.k_reciprocal_embeddings(np.ones((3, 4)), np.ones((5, 4)), k2=9), "k2"),
        (lambda: rerank.msrerank_embeddings(np.ones((3, 4)), np.ones((5, 4)), variant="x"), "variant"),
        (lambda: rerank.msrerank_ks(np.array([[3, 1], [1, 2]]), 5), "levels"),
        (lambda: rerank.msrerank_ks(np.array([[0, 0], [0, 0]]), 5), "levels"),
        (lambda: rerank.msrerank_ks(np.array([[2, 1], [1, 2]]), [1, 2, 3]), "images_per_building"),
        (lambda: rerank.msrerank_ks(np.array([[2, 1], [1, 2]]), -1), "images_per_building"),
        (lambda: rerank.msrerank_ks(np.array([[2, 1], [1, 2]]), [1.5, 2]), "images_per_building"),
        (lambda: rerank.msrerank_ks(np.array([[2, 1], [1, 2]]), 5, mu=0), "mu"),
        (lambda: rerank.msrerank_ks(np.array([[2, 1], [1, 2]]), 5, min_k=0), "min_k"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


def test_memory_estimate_points_to_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    q_g, q_q, g_g = _good_blocks()
    monkeypatch.setattr(rerank, "_available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match="k_reciprocal_embeddings"):
        rerank.k_reciprocal(q_g, q_q, (g_g * 10).astype(np.int32))
