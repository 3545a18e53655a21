//! The fast pipeline against a naive dense implementation written straight
//! from DESIGN §5 (full N×N matrices, full stable sorts, set scans).

use ndarray::{s, Array2, ArrayView2};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;

/// Row `i` of D: column `i` of A² scaled by its maximum, as the reference builds it.
fn naive_d(a: &Array2<f64>) -> Array2<f32> {
    let n = a.nrows();
    let sq = a.mapv(|v| (v * v) as f32);
    let mut d = Array2::<f32>::zeros((n, n));
    for i in 0..n {
        let max = sq.column(i).iter().cloned().fold(0f32, f32::max);
        for j in 0..n {
            d[[i, j]] = if max > 0.0 { sq[[j, i]] / max } else { 0.0 };
        }
    }
    d
}

fn naive_rank(d: &Array2<f32>) -> Vec<Vec<usize>> {
    d.rows()
        .into_iter()
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[a].partial_cmp(&row[b]).unwrap()); // stable: ties by index
            idx
        })
        .collect()
}

fn naive_recip(rank: &[Vec<usize>], i: usize, k: usize) -> Vec<usize> {
    let top = |j: usize| &rank[j][..(k + 1).min(rank[j].len())];
    top(i)
        .iter()
        .copied()
        .filter(|&j| top(j).contains(&i))
        .collect()
}

/// Re-ranked distances of the q queries to all N items, `(q, N)`.
fn naive_all_columns(a: &Array2<f64>, q: usize, k1: usize, k2: usize, lambda: f64) -> Array2<f32> {
    let n = a.nrows();
    let d = naive_d(a);
    let rank = naive_rank(&d);
    let h = half_to_even(k1);
    let mut v = Array2::<f32>::zeros((n, n));
    for i in 0..n {
        let r = naive_recip(&rank, i, k1);
        let mut set = r.clone();
        for &c in &r {
            let cand = naive_recip(&rank, c, h);
            let shared = cand.iter().filter(|x| r.contains(x)).count();
            if shared as f64 > 2.0 / 3.0 * cand.len() as f64 {
                set.extend(cand);
            }
        }
        set.sort();
        set.dedup();
        let w: Vec<f32> = set.iter().map(|&j| (-d[[i, j]]).exp()).collect();
        let sum = w.iter().map(|&x| x as f64).sum::<f64>() as f32;
        for (&j, &x) in set.iter().zip(&w) {
            v[[i, j]] = x / sum;
        }
    }
    if k2 != 1 {
        let mut qe = Array2::<f32>::zeros((n, n));
        for i in 0..n {
            for c in 0..n {
                let mut acc = 0f32;
                for &m in &rank[i][..k2] {
                    acc += v[[m, c]];
                }
                qe[[i, c]] = acc / k2 as f32;
            }
        }
        v = qe;
    }
    let mut out = Array2::<f32>::zeros((q, n));
    for i in 0..q {
        for j in 0..n {
            let mut s = 0f32;
            for c in 0..n {
                if v[[i, c]] != 0.0 && v[[j, c]] != 0.0 {
                    s += v[[i, c]].min(v[[j, c]]);
                }
            }
            let jac = 1.0 - s / (2.0 - s);
            out[[i, j]] = jac * (1.0 - lambda) as f32 + d[[i, j]] * lambda as f32;
        }
    }
    out
}

fn smallest(values: &[f32], count: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].partial_cmp(&values[b]).unwrap());
    idx.truncate(count);
    idx
}

fn naive_msrerank(
    a: &Array2<f64>,
    q: usize,
    ks: &[usize],
    k2: usize,
    lambda: f64,
    variant: Variant,
) -> Array2<f32> {
    let n = a.nrows();
    let g = n - q;
    let levels: Vec<Array2<f32>> = ks
        .iter()
        .map(|&k| naive_all_columns(a, q, k, k2, lambda))
        .collect();
    let mut out = Array2::<f32>::zeros((q, g));
    for i in 0..q {
        match variant {
            Variant::Paper => {
                let mut dstar = vec![0f32; g];
                let mut fixed = vec![false; g];
                for (&k, d) in ks.iter().zip(&levels) {
                    for j in 0..g {
                        if !fixed[j] {
                            dstar[j] += d[[i, q + j]];
                        }
                    }
                    fixed = vec![false; g];
                    for j in smallest(&dstar, k) {
                        fixed[j] = true;
                    }
                }
                out.row_mut(i).assign(&ndarray::ArrayView1::from(&dstar));
            }
            Variant::Reference => {
                let mut fin: Vec<f32> = levels[0].row(i).to_vec();
                let mut protected = vec![false; n];
                for j in smallest(&fin, ks[0] + 1) {
                    protected[j] = true;
                }
                for l in 1..ks.len() {
                    for c in 0..n {
                        if !protected[c] {
                            fin[c] = levels[l][[i, c]] + l as f32;
                        }
                    }
                    for j in smallest(&fin, ks[l] + 1) {
                        protected[j] = true;
                    }
                }
                out.row_mut(i).assign(&ndarray::ArrayView1::from(&fin[q..]));
            }
        }
    }
    out
}

/// Points in `clusters` tight groups (ties broken by noise) on the unit sphere.
fn embeddings(rng: &mut StdRng, n: usize, dim: usize, clusters: usize, noise: f32) -> Array2<f32> {
    let centres = Array2::from_shape_fn((clusters.max(1), dim), |_| rng.random::<f32>() - 0.5);
    Array2::from_shape_fn((n, dim), |(i, j)| {
        centres[[i % clusters.max(1), j]] + noise * (rng.random::<f32>() - 0.5)
    })
}

fn cosine_matrix(x: &Array2<f32>) -> Array2<f64> {
    let xn = crate::distance::l2_normalized(x.view()).unwrap();
    let s = xn.dot(&xn.t());
    s.mapv(|v| (1.0 - v) as f64)
}

fn blocks_of(a: &Array2<f64>, q: usize) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    (
        a.slice(s![..q, q..]).to_owned(),
        a.slice(s![..q, ..q]).to_owned(),
        a.slice(s![q.., q..]).to_owned(),
    )
}

fn fast(
    a: &Array2<f64>,
    q: usize,
    ks: &[usize],
    k2: usize,
    lambda: f64,
    variant: Variant,
) -> Result<Array2<f32>> {
    let (qg, qq, gg) = blocks_of(a, q);
    let blocks = DistanceBlocks {
        q_g: DistanceBlock::F64(qg.view()),
        q_q: DistanceBlock::F64(qq.view()),
        g_g: DistanceBlock::F64(gg.view()),
    };
    msrerank(blocks, ks, k2, lambda, variant, None)
}

fn mk<'a>(
    qg: ArrayView2<'a, f64>,
    qq: ArrayView2<'a, f64>,
    gg: ArrayView2<'a, f64>,
) -> DistanceBlocks<'a> {
    DistanceBlocks {
        q_g: DistanceBlock::F64(qg),
        q_q: DistanceBlock::F64(qq),
        g_g: DistanceBlock::F64(gg),
    }
}

fn assert_close(a: ArrayView2<f32>, b: ArrayView2<f32>, tol: f32, what: &str) {
    assert_eq!(a.dim(), b.dim(), "{what}: shapes");
    for ((idx, &x), &y) in a.indexed_iter().zip(b.iter()) {
        assert!(
            (x - y).abs() <= tol,
            "{what}: at {idx:?} fast {x} vs naive {y}"
        );
    }
}

#[test]
fn k_reciprocal_matches_naive_on_random_and_clustered_data() {
    let mut rng = StdRng::seed_from_u64(1);
    for (n, q, clusters, noise, k1, k2, lambda) in [
        (60, 10, 60, 1.0, 20, 6, 0.3), // random
        (80, 12, 8, 0.3, 20, 6, 0.3),  // clustered
        (50, 5, 5, 0.5, 7, 1, 0.0),    // odd k1, k2 = 1, λ = 0
        (45, 1, 9, 0.4, 5, 3, 1.0),    // q = 1, λ = 1, k1/2 = 2.5 -> 2
        (30, 6, 3, 0.5, 40, 6, 0.3),   // k1 >= N - 1
    ] {
        let x = embeddings(&mut rng, n, 8, clusters, noise);
        let a = cosine_matrix(&x);
        let want = naive_all_columns(&a, q, k1, k2, lambda)
            .slice(s![.., q..])
            .to_owned();
        let (qg, qq, gg) = blocks_of(&a, q);
        let blocks = DistanceBlocks {
            q_g: DistanceBlock::F64(qg.view()),
            q_q: DistanceBlock::F64(qq.view()),
            g_g: DistanceBlock::F64(gg.view()),
        };
        let got = k_reciprocal(blocks, k1, k2, lambda, None).unwrap();
        assert_close(
            got.view(),
            want.view(),
            1e-6,
            &format!("n={n} q={q} k1={k1} k2={k2}"),
        );
    }
}

#[test]
fn asymmetric_blocks_use_columns_of_a() {
    // Non-symmetric distances: row i of D must come from column i of A.
    let mut rng = StdRng::seed_from_u64(2);
    let (n, q) = (40, 7);
    let mut a = Array2::from_shape_fn((n, n), |(i, j)| {
        if i == j {
            0.0
        } else {
            rng.random::<f64>() + 0.1
        }
    });
    // The assembled A has q_gᵀ below q_g; q_q and g_g stay asymmetric.
    let upper = a.slice(s![..q, q..]).t().to_owned();
    a.slice_mut(s![q.., ..q]).assign(&upper);
    for variant in [Variant::Paper, Variant::Reference] {
        let want = naive_msrerank(&a, q, &[4, 9], 3, 0.3, variant);
        let got = fast(&a, q, &[4, 9], 3, 0.3, variant).unwrap();
        assert_close(got.view(), want.view(), 1e-6, "asymmetric");
    }
    // ... and the transposed input gives a different answer, so the test can fail.
    let at = a.t().to_owned();
    let other = fast(&at, q, &[4], 3, 0.3, Variant::Paper).unwrap();
    let mine = fast(&a, q, &[4], 3, 0.3, Variant::Paper).unwrap();
    assert!(other
        .iter()
        .zip(mine.iter())
        .any(|(x, y)| (x - y).abs() > 1e-4));
}

#[test]
fn duplicates_tie_by_index() {
    let mut rng = StdRng::seed_from_u64(3);
    // exact duplicate embeddings: many exactly equal distances
    let base = embeddings(&mut rng, 12, 6, 12, 1.0);
    let x = Array2::from_shape_fn((48, 6), |(i, j)| base[[i % 12, j]]);
    let a = cosine_matrix(&x);
    let want = naive_all_columns(&a, 8, 6, 4, 0.3)
        .slice(s![.., 8..])
        .to_owned();
    let got = fast(&a, 8, &[6], 4, 0.3, Variant::Paper).unwrap();
    assert_close(got.view(), want.view(), 1e-6, "duplicates");
}

#[test]
fn msrerank_matches_naive_both_variants() {
    let mut rng = StdRng::seed_from_u64(4);
    let x = embeddings(&mut rng, 90, 8, 9, 0.5);
    let a = cosine_matrix(&x);
    for variant in [Variant::Paper, Variant::Reference] {
        for ks in [&[3usize, 7, 15][..], &[5, 5, 12][..], &[20][..]] {
            let want = naive_msrerank(&a, 15, ks, 6, 0.3, variant);
            let got = fast(&a, 15, ks, 6, 0.3, variant).unwrap();
            assert_close(
                got.view(),
                want.view(),
                1e-6,
                &format!("{variant:?} {ks:?}"),
            );
        }
    }
}

#[test]
fn embeddings_entry_matches_distance_entry() {
    let mut rng = StdRng::seed_from_u64(5);
    let x = embeddings(&mut rng, 300, 16, 20, 0.6);
    let (q, g) = (x.slice(s![..40, ..]), x.slice(s![40.., ..]));
    // float32 cosine distances fed to the distance entry point
    let dq = crate::distance::cosine_distances(q, g).unwrap();
    let dqq = crate::distance::cosine_distances(q, q).unwrap();
    let dgg = crate::distance::cosine_distances(g, g).unwrap();
    let blocks = DistanceBlocks {
        q_g: DistanceBlock::F32(dq.view()),
        q_q: DistanceBlock::F32(dqq.view()),
        g_g: DistanceBlock::F32(dgg.view()),
    };
    let from_dist = k_reciprocal(blocks, 20, 6, 0.3, None).unwrap();
    let from_emb = k_reciprocal_embeddings(q, g, 20, 6, 0.3, None).unwrap();
    assert_close(
        from_emb.view(),
        from_dist.view(),
        1e-5,
        "embeddings vs distances",
    );
    for variant in [Variant::Paper, Variant::Reference] {
        let a = msrerank(blocks, &[10, 20, 40], 6, 0.3, variant, None).unwrap();
        let b = msrerank_embeddings(q, g, &[10, 20, 40], 6, 0.3, variant, None).unwrap();
        assert_close(b.view(), a.view(), 1e-5, "msrerank embeddings vs distances");
    }
}

#[test]
fn float32_and_float64_blocks_agree() {
    let mut rng = StdRng::seed_from_u64(6);
    let a64 = cosine_matrix(&embeddings(&mut rng, 50, 8, 5, 0.5)).mapv(|v| v as f32 as f64);
    let a32 = a64.mapv(|v| v as f32);
    let q = 9;
    let b64 = fast(&a64, q, &[8], 6, 0.3, Variant::Paper).unwrap();
    let (qg, qq, gg) = (
        a32.slice(s![..q, q..]),
        a32.slice(s![..q, ..q]),
        a32.slice(s![q.., q..]),
    );
    // mixed precisions, non-contiguous views
    let blocks = DistanceBlocks {
        q_g: DistanceBlock::F32(qg),
        q_q: DistanceBlock::F64(a64.slice(s![..q, ..q])),
        g_g: DistanceBlock::F32(gg),
    };
    let _ = qq;
    let b32 = k_reciprocal(blocks, 8, 6, 0.3, None).unwrap();
    // squares of float32 values are exact in float64, so both round identically
    assert_eq!(b64, b32);
}

#[test]
fn bad_input_names_the_argument() {
    let a = cosine_matrix(&embeddings(&mut StdRng::seed_from_u64(7), 20, 4, 4, 0.5));
    let arg = |r: Result<Array2<f32>>| match r.unwrap_err() {
        DyclError::InvalidArgument { arg, .. } => arg,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(arg(fast(&a, 5, &[0], 6, 0.3, Variant::Paper)), "ks");
    assert_eq!(arg(fast(&a, 5, &[], 6, 0.3, Variant::Paper)), "ks");
    assert_eq!(arg(fast(&a, 5, &[5, 3], 6, 0.3, Variant::Paper)), "ks");
    assert_eq!(arg(fast(&a, 5, &[5], 0, 0.3, Variant::Paper)), "k2");
    assert_eq!(arg(fast(&a, 5, &[5], 21, 0.3, Variant::Paper)), "k2");
    assert_eq!(
        arg(fast(&a, 5, &[5], 6, 1.5, Variant::Paper)),
        "lambda_value"
    );
    assert_eq!(
        arg(fast(&a, 5, &[5], 6, f64::NAN, Variant::Paper)),
        "lambda_value"
    );
    let (qg, qq, gg) = blocks_of(&a, 5);
    assert_eq!(
        arg(k_reciprocal(
            mk(qg.view(), qq.view(), gg.view()),
            0,
            6,
            0.3,
            None
        )),
        "k1"
    );
    assert_eq!(
        arg(k_reciprocal(
            mk(qg.view(), gg.view(), gg.view()),
            5,
            6,
            0.3,
            None
        )),
        "q_q_dist"
    );
    assert_eq!(
        arg(k_reciprocal(
            mk(qg.view(), qq.view(), qq.view()),
            5,
            6,
            0.3,
            None
        )),
        "g_g_dist"
    );
    for (which, name) in [(0, "q_g_dist"), (1, "q_q_dist"), (2, "g_g_dist")] {
        let (mut qg2, mut qq2, mut gg2) = (qg.clone(), qq.clone(), gg.clone());
        match which {
            0 => qg2[[1, 2]] = f64::NAN,
            1 => qq2[[2, 1]] = f64::INFINITY,
            _ => gg2[[3, 3]] = 1e300,
        }
        assert_eq!(
            arg(k_reciprocal(
                mk(qg2.view(), qq2.view(), gg2.view()),
                5,
                6,
                0.3,
                None
            )),
            name
        );
    }
    let q = Array2::<f32>::ones((3, 4));
    let g = Array2::<f32>::ones((5, 3));
    assert_eq!(
        arg(k_reciprocal_embeddings(q.view(), g.view(), 2, 1, 0.3, None)),
        "gallery_emb"
    );
    let mut qn = Array2::<f32>::ones((3, 4));
    qn[[0, 0]] = f32::NAN;
    assert_eq!(
        arg(k_reciprocal_embeddings(
            qn.view(),
            q.view(),
            2,
            1,
            0.3,
            None
        )),
        "query_emb"
    );
    assert_eq!(
        "nope".parse::<Variant>().unwrap_err(),
        DyclError::invalid(
            "variant",
            "unknown variant \"nope\"; expected \"paper\" or \"reference\""
        )
    );
}

#[test]
fn all_zero_distances_do_not_produce_nan() {
    let a = Array2::<f64>::zeros((10, 10));
    let got = fast(&a, 3, &[4], 2, 0.3, Variant::Paper).unwrap();
    assert!(got.iter().all(|v| v.is_finite()));
    let want = naive_all_columns(&a, 3, 4, 2, 0.3)
        .slice(s![.., 3..])
        .to_owned();
    assert_close(got.view(), want.view(), 1e-6, "zeros");
}

/// A source that claims 2^40 items: every buffer sized by N is impossible.
struct Enormous;

impl SquaredDistances for Enormous {
    fn n_items(&self) -> usize {
        1 << 40
    }
    fn tile_rows(&self) -> usize {
        64
    }
    fn fill(&self, _: std::ops::Range<usize>, _: std::ops::Range<usize>, _: &mut [f32]) {
        unreachable!("no tile can be allocated")
    }
    fn get(&self, _: usize, _: usize) -> f32 {
        0.0
    }
    fn non_finite_error(&self) -> DyclError {
        DyclError::invalid("q_g_dist", "unused")
    }
}

#[test]
fn buffers_beyond_memory_are_errors_not_aborts() {
    let tracker = crate::progress::Tracker::default();
    match NeighbourLists::build(&Enormous, 21, &tracker) {
        Err(DyclError::OutOfMemory(msg)) => {
            assert!(msg.starts_with("re-ranking: the neighbour lists"), "{msg}")
        }
        Err(other) => panic!("expected OutOfMemory, got {other:?}"),
        Ok(_) => panic!("expected OutOfMemory"),
    }
    assert!(matches!(
        kreciprocal::Marks::new(1 << 60),
        Err(DyclError::OutOfMemory(_))
    ));
}

#[test]
fn neighbourhoods_beyond_n_minus_1_act_as_n_minus_1() {
    let mut rng = StdRng::seed_from_u64(8);
    let a = cosine_matrix(&embeddings(&mut rng, 40, 6, 5, 0.5));
    let (q, n) = (7, 40);
    let (qg, qq, gg) = blocks_of(&a, q);
    let blocks = mk(qg.view(), qq.view(), gg.view());
    let at_most = k_reciprocal(blocks, n - 1, 6, 0.3, None).unwrap();
    // 10^7 used to be refused by the memory estimate; usize::MAX wrapped to k + 1 = 0.
    for k1 in [n, n + 5, 10_000_000, 1 << 60, usize::MAX] {
        let got = k_reciprocal(blocks, k1, 6, 0.3, None).unwrap();
        assert_eq!(got, at_most, "k1 = {k1}");
    }
    let x = embeddings(&mut rng, 40, 6, 5, 0.5);
    let (qe, ge) = (x.slice(s![..q, ..]), x.slice(s![q.., ..]));
    let emb_at_most = k_reciprocal_embeddings(qe, ge, n - 1, 6, 0.3, None).unwrap();
    let emb_huge = k_reciprocal_embeddings(qe, ge, usize::MAX, 6, 0.3, None).unwrap();
    assert_eq!(emb_huge, emb_at_most);
    for variant in [Variant::Paper, Variant::Reference] {
        let want = msrerank(blocks, &[3, n - 1], 6, 0.3, variant, None).unwrap();
        for big in [n, 10_000_000, usize::MAX] {
            let got = msrerank(blocks, &[3, big], 6, 0.3, variant, None).unwrap();
            assert_eq!(got, want, "{variant:?} k = {big}");
            let got = msrerank_embeddings(qe, ge, &[3, big, big], 6, 0.3, variant, None).unwrap();
            let want = msrerank_embeddings(qe, ge, &[3, n - 1, n - 1], 6, 0.3, variant, None);
            assert_eq!(got, want.unwrap(), "{variant:?} embeddings k = {big}");
        }
    }
}

#[test]
fn memory_estimate_saturates_instead_of_wrapping() {
    let n = u32::MAX as usize - 1;
    assert_eq!(
        estimated_bytes((n, 1, n), &[usize::MAX], usize::MAX, 0),
        u64::MAX
    );
    assert_eq!(
        estimated_bytes((10, 2, 5), &[4], 64 * 10, u64::MAX),
        u64::MAX
    );
    // repeated ks hold one V, and the estimate grows with k
    let one = estimated_bytes((1000, 10, 30), &[29], 64_000, 0);
    assert_eq!(
        estimated_bytes((1000, 10, 30), &[29, 29, 29], 64_000, 0),
        one
    );
    assert!(estimated_bytes((1000, 10, 30), &[5, 29], 64_000, 0) > one);
}
