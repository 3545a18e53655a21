//! Single-set mode (`exclude_self`) against the two-set path on the gallery
//! without the query's own column.

use super::*;
use crate::distance::cosine_distances;
use ndarray::{s, Array1, Array2};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// `n` items with ids among `b` classes, their `(n, n)` distances (few
/// distinct values when `ties`) and a three-level matrix over the classes.
fn case(n: usize, b: usize, ties: bool, seed: u64) -> (Array2<f64>, Array1<i64>, Array2<u8>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids = Array1::from_shape_fn(n, |_| rng.random_range(0..b as i64));
    let d = Array2::from_shape_fn((n, n), |_| {
        if ties {
            rng.random_range(0..4) as f64
        } else {
            rng.random::<f64>()
        }
    });
    let levels = Array2::from_shape_fn((b, b), |(x, y)| {
        if x == y {
            3
        } else if x / 2 == y / 2 {
            2
        } else {
            (x / 4 == y / 4) as u8
        }
    });
    (d, ids, levels)
}

/// Query `i` scored by the two-set path on the gallery without item `i`.
fn without_self(d: &Array2<f64>, ids: &Array1<i64>, levels: &Array2<u8>, i: usize) -> PerQuery {
    let n = d.nrows();
    let others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
    let row = Array2::from_shape_fn((1, n - 1), |(_, j)| d[[i, others[j]]]);
    let g = Array1::from_iter(others.iter().map(|&j| ids[j]));
    let q = ids.slice(s![i..i + 1]);
    per_query(row.view(), q, g.view(), levels.view(), None).unwrap()
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

#[test]
fn every_query_equals_the_two_set_path_without_its_own_column() {
    for (ties, seed) in [(false, 1), (true, 2)] {
        let (d, ids, levels) = case(37, 9, ties, seed);
        let got = per_query_excluding_self_with(
            d.view(),
            ids.view(),
            ids.view(),
            levels.view(),
            None,
            None,
        )
        .unwrap();
        for i in 0..d.nrows() {
            let want = without_self(&d, &ids, &levels, i);
            assert!(same(got.h_ap[i], want.h_ap[0]), "H-AP of {i}");
            assert!(same(got.asi[i], want.asi[0]), "ASI of {i}");
            assert!(same(got.ndcg[i], want.ndcg[0]), "NDCG of {i}");
            for s in 0..got.n_levels {
                assert!(same(
                    got.average_precision[[i, s]],
                    want.average_precision[[0, s]]
                ));
                assert_eq!(
                    got.first_relevant_rank[[i, s]],
                    want.first_relevant_rank[[0, s]]
                );
                assert_eq!(got.n_relevant[[i, s]], want.n_relevant[[0, s]]);
            }
            let top1 = want.top1[0] as usize;
            let mapped = if top1 < i { top1 } else { top1 + 1 };
            assert_eq!(got.top1[i] as usize, mapped, "top-1 of {i}");
        }
    }
}

#[test]
fn embeddings_in_single_set_mode_are_bit_identical_to_the_distance_path() {
    let mut rng = StdRng::seed_from_u64(3);
    let x = Array2::from_shape_fn((90, 6), |_| rng.random::<f32>() - 0.5);
    let (_, ids, levels) = case(90, 11, false, 4);
    let d = cosine_distances(x.view(), x.view()).unwrap();
    let want =
        per_query_excluding_self_with(d.view(), ids.view(), ids.view(), levels.view(), None, None)
            .unwrap();
    let got = per_query_embeddings_excluding_self_with(
        x.view(),
        x.view(),
        ids.view(),
        ids.view(),
        levels.view(),
        None,
        None,
    )
    .unwrap();
    for i in 0..90 {
        assert!(
            same(got.h_ap[i], want.h_ap[i]) && got.top1[i] == want.top1[i],
            "query {i}"
        );
    }
}

#[test]
fn what_is_not_a_single_set_is_refused_by_name() {
    let (d, ids, levels) = case(6, 3, false, 5);
    let err = |r: Result<PerQuery>| match r {
        Err(DyclError::InvalidArgument { arg, .. }) => arg,
        other => panic!("expected an invalid argument, got {other:?}"),
    };
    let cut = d.slice(s![.., ..5]);
    let g5 = ids.slice(s![..5]);
    let call = |d, q, g| per_query_excluding_self_with(d, q, g, levels.view(), None, None);
    assert_eq!(err(call(cut, ids.view(), g5)), "distances");
    let mut other = ids.clone();
    other[2] = (other[2] + 1) % 3;
    assert_eq!(err(call(d.view(), ids.view(), other.view())), "gallery_ids");
    let one = d.slice(s![..1, ..1]);
    assert_eq!(
        err(call(one, ids.slice(s![..1]), ids.slice(s![..1]))),
        "distances"
    );
    let x = Array2::<f32>::ones((6, 2));
    let mut y = x.clone();
    y[[4, 0]] = 2.0;
    let r = per_query_embeddings_excluding_self_with(
        x.view(),
        y.view(),
        ids.view(),
        ids.view(),
        levels.view(),
        None,
        None,
    );
    assert_eq!(err(r), "gallery_emb");
}
