//! Neighbour lists found outside the core (FAISS, torch, a cluster), turned
//! into the [`NeighbourLists`] the rest of the pipeline consumes.
//!
//! Contract of a given list, per item `i` of the joint set (queries, then
//! gallery):
//! * `index[i]`: `L` distinct items in `[0, N)`, any order. The item itself
//!   need not be present: an approximate search may miss any item,
//!   including `i` (the exact lists hold it, at distance 0, near rank 0).
//! * `distance[i]`: their cosine distances `1 − a·b`, finite, in `[0, 2]`
//!   up to rounding (values far outside mean similarities were passed).
//! * `max_distance[i]`: the largest cosine distance from `i` to any item.
//!   It may come from an approximate farthest-item search, so the divisor
//!   used is the larger of its square and the largest listed square.
//!
//! Each row is re-sorted by (normalised squared distance, index), the order
//! of the core's own selection, so ties are deterministic and the core's
//! exact lists, handed back, give the very same `D` and result.

use ndarray::{ArrayView1, ArrayView2};
use rayon::prelude::*;

use super::knn::{normalise_row, sort_key, NeighbourLists, LISTS};
use crate::error::{DyclError, Result};
use crate::memory::{ensure_fits, try_capacity, try_vec, try_zeroed};
use crate::progress::Tracker;

/// Per-thread buffers: one row's normalised values, its (sort key, position) pairs.
type RowScratch = (Vec<f32>, Vec<(u64, u32)>);

/// How far outside `[0, 2]` a cosine distance may stray by rounding.
const COSINE_SLACK: f32 = 1e-3;

/// Neighbour lists of all `N` items, as a caller hands them over.
#[derive(Clone, Copy, Debug)]
pub struct GivenNeighbours<'a> {
    /// `(N, L)` neighbour indices into the joint set.
    pub index: ArrayView2<'a, i64>,
    /// `(N, L)` cosine distances at those indices.
    pub distance: ArrayView2<'a, f32>,
    /// `(N,)` each item's largest cosine distance to any item.
    pub max_distance: ArrayView1<'a, f32>,
}

impl GivenNeighbours<'_> {
    /// Neighbours per item, `L`.
    pub fn width(&self) -> usize {
        self.index.ncols()
    }

    /// Check shapes against `n` items and every value (see the module docs).
    pub fn validate(&self, n: usize) -> Result<()> {
        let (rows, width) = self.index.dim();
        if rows != n || width == 0 {
            return Err(DyclError::invalid(
                "index",
                format!(
                    "expected shape (N, L) with N = q + g = {n} and L >= 1, got ({rows}, {width})"
                ),
            ));
        }
        if self.distance.dim() != (rows, width) {
            return Err(DyclError::invalid(
                "distance",
                format!(
                    "expected the shape of index ({rows}, {width}), got {:?}",
                    self.distance.dim()
                ),
            ));
        }
        if self.max_distance.len() != n {
            return Err(DyclError::invalid(
                "max_distance",
                format!(
                    "expected shape (N,) = ({n},), got ({},)",
                    self.max_distance.len()
                ),
            ));
        }
        check_cosines("distance", self.distance.indexed_iter())?;
        check_cosines(
            "max_distance",
            self.max_distance.indexed_iter().map(|(i, v)| ((i, 0), v)),
        )?;
        self.check_indices(n)
    }

    /// Every index in `[0, n)` and no item twice in a row.
    fn check_indices(&self, n: usize) -> Result<()> {
        let mut seen = try_vec::<u32>(n, u32::MAX, LISTS)?;
        for (i, row) in self.index.rows().into_iter().enumerate() {
            for (slot, &j) in row.iter().enumerate() {
                if j < 0 || j as u64 >= n as u64 {
                    return Err(DyclError::invalid(
                        "index",
                        format!("value {j} at ({i}, {slot}) is outside [0, N) = [0, {n}) (an approximate search's -1 'not found' cannot be used: search more lists)"),
                    ));
                }
                if seen[j as usize] == i as u32 {
                    return Err(DyclError::invalid(
                        "index",
                        format!("row {i} lists item {j} twice (at {slot}); each row must list distinct items"),
                    ));
                }
                seen[j as usize] = i as u32;
            }
        }
        Ok(())
    }
}

/// Finite values within `[0, 2]` up to [`COSINE_SLACK`].
fn check_cosines<'v>(
    name: &'static str,
    values: impl Iterator<Item = ((usize, usize), &'v f32)>,
) -> Result<()> {
    for ((r, c), &v) in values {
        if !v.is_finite() {
            return Err(DyclError::invalid(
                name,
                format!("contains NaN or inf (first at ({r}, {c}))"),
            ));
        }
        if !(-COSINE_SLACK..=2.0 + COSINE_SLACK).contains(&v) {
            return Err(DyclError::invalid(
                name,
                format!("value {v} at ({r}, {c}) is not a cosine distance 1 − a·b in [0, 2]; were similarities passed?"),
            ));
        }
    }
    Ok(())
}

impl NeighbourLists {
    /// The lists of `n` items from given neighbours (validated here), each
    /// row re-sorted by (normalised squared distance, index) and cut to its
    /// first `len` entries; `len` must not exceed the given width.
    pub fn from_given(
        given: &GivenNeighbours,
        n: usize,
        len: usize,
        tracker: &Tracker,
    ) -> Result<Self> {
        given.validate(n)?;
        let width = given.width();
        if len == 0 || len > width {
            return Err(DyclError::invalid(
                "index",
                format!("holds {width} neighbours per item, {len} needed"),
            ));
        }
        let mut index = try_zeroed::<u32>(ensure_fits::<u32>(&[n, len], LISTS)?, LISTS)?;
        let mut dist = try_zeroed::<f32>(n * len, LISTS)?;
        let mut row_max = try_zeroed::<f32>(n, LISTS)?;
        let scratch = || -> Result<RowScratch> {
            Ok((
                try_zeroed::<f32>(width, LISTS)?,
                try_capacity::<(u64, u32)>(width, LISTS)?,
            ))
        };
        index
            .par_chunks_mut(len)
            .zip(dist.par_chunks_mut(len))
            .zip(row_max.par_iter_mut())
            .enumerate()
            .try_for_each_init(scratch, |buffers, (i, ((index, dist), max))| {
                let (values, keys) = buffers.as_mut().map_err(|err| err.clone())?;
                *max = sorted_row(given, i, values, keys);
                for (slot, &(_, pos)) in keys[..len].iter().enumerate() {
                    let pos = pos as usize;
                    index[slot] = given.index[[i, pos]] as u32;
                    dist[slot] = values[pos];
                }
                tracker.advance(1);
                Ok(())
            })?;
        Ok(NeighbourLists {
            n,
            len,
            index,
            dist,
            row_max,
        })
    }
}

/// Row `i`'s normalised squared distances into `values` and, into `keys`,
/// their positions sorted by (value, item index); returns the divisor.
fn sorted_row(
    given: &GivenNeighbours,
    i: usize,
    values: &mut [f32],
    keys: &mut Vec<(u64, u32)>,
) -> f32 {
    let m = given.max_distance[i];
    let mut max = m * m;
    for (v, &d) in values.iter_mut().zip(given.distance.row(i)) {
        *v = d * d;
        max = max.max(*v);
    }
    normalise_row(values, max);
    // Keys are unique (distinct items), so the unstable sort is deterministic.
    let items = given.index.row(i);
    keys.clear();
    keys.extend((0..values.len()).map(|p| (sort_key(values[p], items[p] as u32), p as u32)));
    keys.sort_unstable();
    max
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::super::{
        k_reciprocal_embeddings, k_reciprocal_neighbours, k_reciprocal_neighbours_top,
        msrerank_embeddings, msrerank_neighbours, msrerank_neighbours_top, neighbour_lists,
        Variant,
    };
    use super::*;

    fn clustered(rng: &mut StdRng, n: usize, dim: usize) -> Array2<f32> {
        let centres = Array2::from_shape_fn((7, dim), |_| rng.random::<f32>() - 0.5);
        Array2::from_shape_fn((n, dim), |(i, j)| {
            centres[[i % 7, j]] + 0.3 * (rng.random::<f32>() - 0.5)
        })
    }

    /// The core's exact lists of all rows, as owned arrays, columns reversed
    /// (so that re-sorting is needed).
    fn reversed_lists(
        x: &Array2<f32>,
        q: usize,
        k: usize,
    ) -> (Array2<i64>, Array2<f32>, Array1<f32>) {
        let (qv, gv) = (x.slice(ndarray::s![..q, ..]), x.slice(ndarray::s![q.., ..]));
        let lists = neighbour_lists(qv, gv, k, None, None).unwrap();
        let (n, len) = (lists.max_distance.len(), lists.lists.len);
        let index = Array2::from_shape_fn((n, len), |(i, c)| {
            lists.lists.index[i * len + len - 1 - c] as i64
        });
        let dist = Array2::from_shape_fn((n, len), |(i, c)| lists.distance[i * len + len - 1 - c]);
        (index, dist, Array1::from_vec(lists.max_distance))
    }

    #[test]
    fn given_exact_lists_reproduce_the_embedding_entry_points() {
        let mut rng = StdRng::seed_from_u64(11);
        let x = clustered(&mut rng, 260, 12);
        let q = 40;
        let (index, dist, max) = reversed_lists(&x, q, 35);
        let given = GivenNeighbours {
            index: index.view(),
            distance: dist.view(),
            max_distance: max.view(),
        };
        let (qv, gv) = (x.slice(ndarray::s![..q, ..]), x.slice(ndarray::s![q.., ..]));
        let expected = k_reciprocal_embeddings(qv, gv, 20, 6, 0.3, None).unwrap();
        let got = k_reciprocal_neighbours(qv, gv, &given, 20, 6, 0.3, None).unwrap();
        assert_eq!(got, expected);
        let ks = [4, 11, 34];
        let expected = msrerank_embeddings(qv, gv, &ks, 6, 0.3, Variant::Reference, None).unwrap();
        let got =
            msrerank_neighbours(qv, gv, &given, &ks, 6, 0.3, Variant::Reference, None).unwrap();
        assert_eq!(got, expected);
    }

    /// Column order of a stable argsort of `row` (by value, ties by index): the reference ranking.
    fn stable_order(row: ndarray::ArrayView1<f32>) -> Vec<u32> {
        let mut order: Vec<u32> = (0..row.len() as u32).collect();
        order.sort_by(|&a, &b| row[a as usize].total_cmp(&row[b as usize]).then(a.cmp(&b)));
        order
    }

    #[test]
    fn top_answers_are_the_first_columns_of_the_full_answer() {
        let mut rng = StdRng::seed_from_u64(13);
        let x = clustered(&mut rng, 240, 10);
        let q = 30;
        let (index, dist, max) = reversed_lists(&x, q, 40);
        let given = GivenNeighbours {
            index: index.view(),
            distance: dist.view(),
            max_distance: max.view(),
        };
        let (qv, gv) = (x.slice(ndarray::s![..q, ..]), x.slice(ndarray::s![q.., ..]));
        let full = k_reciprocal_neighbours(qv, gv, &given, 20, 6, 0.3, None).unwrap();
        let options = (6, 0.3, Variant::Paper);
        let ms_full =
            msrerank_neighbours(qv, gv, &given, &[4, 11, 34], 6, 0.3, Variant::Paper, None);
        let ms_full = ms_full.unwrap();
        for top in [1, 7, 210, 500] {
            let got = k_reciprocal_neighbours_top(qv, gv, &given, 20, 6, 0.3, top, None).unwrap();
            let ms =
                msrerank_neighbours_top(qv, gv, &given, &[4, 11, 34], options, top, None).unwrap();
            let width = top.min(210);
            for (answer, out) in [(&full, &got), (&ms_full, &ms)] {
                assert_eq!(out.index.dim(), (q, width));
                for i in 0..q {
                    let order = stable_order(answer.row(i));
                    assert_eq!(out.index.row(i).to_vec(), order[..width].to_vec());
                    for (c, &j) in out.index.row(i).iter().enumerate() {
                        assert_eq!(out.distance[(i, c)], answer[(i, j as usize)]);
                    }
                }
            }
        }
        let zero = k_reciprocal_neighbours_top(qv, gv, &given, 20, 6, 0.3, 0, None);
        assert!(matches!(
            zero,
            Err(crate::error::DyclError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn bad_lists_are_errors_naming_the_argument() {
        let mut rng = StdRng::seed_from_u64(12);
        let x = clustered(&mut rng, 50, 6);
        let (index, dist, max) = reversed_lists(&x, 10, 5);
        let check = |index: &Array2<i64>, dist: &Array2<f32>, max: &Array1<f32>, arg: &str| {
            let given = GivenNeighbours {
                index: index.view(),
                distance: dist.view(),
                max_distance: max.view(),
            };
            let err = NeighbourLists::from_given(&given, 50, 6, &Tracker::default())
                .err()
                .expect("an error");
            assert!(err.to_string().starts_with(arg), "{err} should name {arg}");
        };
        let mut bad = index.clone();
        bad[[2, 1]] = 50;
        check(&bad, &dist, &max, "index");
        bad[[2, 1]] = bad[[2, 0]];
        check(&bad, &dist, &max, "index");
        let mut bad = dist.clone();
        bad[[4, 4]] = f32::NAN;
        check(&index, &bad, &max, "distance");
        bad[[4, 4]] = 3.0;
        check(&index, &bad, &max, "distance");
        let mut bad = max.clone();
        bad[0] = f32::INFINITY;
        check(&index, &dist, &bad, "max_distance");
        check(
            &index,
            &dist,
            &max.slice(ndarray::s![1..]).to_owned(),
            "max_distance",
        );
        let given = GivenNeighbours {
            index: index.view(),
            distance: dist.view(),
            max_distance: max.view(),
        };
        let err = NeighbourLists::from_given(&given, 50, 7, &Tracker::default())
            .err()
            .expect("an error");
        assert!(err.to_string().starts_with("index"), "{err}");
    }
}
