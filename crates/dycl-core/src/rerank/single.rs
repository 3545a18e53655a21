//! Single-set re-ranking: the query set is the gallery (single-domain
//! retrieval such as DyML, where each image is ranked against the others).
//!
//! The joint set is the `N` items once, not `[X; X]`: duplicating them would
//! give every item a distance-0 twin that fills its neighbourhoods and
//! reciprocal sets. `D` is built as in the two-set case with `A` the caller's
//! `N × N` distance matrix (row `i` of `D` is column `i` of `A²` divided by
//! its maximum), every row is a query and every column a gallery item, so the
//! answer is `N × N`, the item itself included; the metrics' single-set mode
//! (`metrics::per_query_excluding_self_with`) leaves the diagonal out.

use std::ops::Range;

use ndarray::{s, Array2, ArrayView2};

use super::source::{DistanceBlock, EmbeddingDistances, SquaredDistances};
use super::{check_k1, check_ks, rerank, Plan, Variant};
use crate::distance::validate_embeddings;
use crate::error::{DyclError, Result};
use crate::progress::{Progress, ProgressSink};

/// The argument a distance matrix of this mode is passed as.
const DIST: &str = "dist";
/// The argument the embeddings of this mode are passed as.
const EMB: &str = "embeddings";

/// [`SquaredDistances`] over one caller-owned square matrix, read in place.
pub struct SingleDistances<'a> {
    dist: DistanceBlock<'a>,
    n: usize,
}

/// Rows of `D` per tile (the transposed read of [`super::BlockDistances`]).
const TILE_ROWS: usize = 64;

impl<'a> SingleDistances<'a> {
    /// Check the shape: square and at least two items.
    pub fn new(dist: DistanceBlock<'a>) -> Result<Self> {
        let (rows, cols) = dist.dim();
        if rows != cols {
            return Err(DyclError::invalid(
                DIST,
                format!("expected a square (N, N) matrix of the items to each other, got ({rows}, {cols})"),
            ));
        }
        if rows < 2 {
            return Err(DyclError::invalid(
                DIST,
                format!(
                    "needs at least 2 items (each is re-ranked against the others), got {rows}"
                ),
            ));
        }
        Ok(SingleDistances { dist, n: rows })
    }
}

impl SquaredDistances for SingleDistances<'_> {
    fn n_items(&self) -> usize {
        self.n
    }

    fn tile_rows(&self) -> usize {
        TILE_ROWS
    }

    fn fill(&self, rows: Range<usize>, cols: Range<usize>, out: &mut [f32]) {
        // D[r, c] = A[c, r]²: rows of the tile are columns of A.
        let width = cols.len();
        self.dist.fill_transposed(cols, rows, out, width);
    }

    fn get(&self, row: usize, col: usize) -> f32 {
        self.dist.get_sq(col, row)
    }

    fn non_finite_error(&self) -> DyclError {
        match self.dist.first_problem() {
            Some((r, c, _, true)) => DyclError::invalid(
                DIST,
                format!("contains NaN or inf (first at index ({r}, {c}))"),
            ),
            Some((r, c, v, false)) => DyclError::invalid(
                DIST,
                format!(
                    "value {v:e} at index ({r}, {c}) is too large: its square overflows float32"
                ),
            ),
            None => DyclError::invalid(DIST, "contains NaN or inf"),
        }
    }
}

/// k-reciprocal re-ranking of `N` items among themselves from their
/// `(N, N)` distances; `(N, N)` float32.
pub fn k_reciprocal_single(
    dist: DistanceBlock,
    k1: usize,
    k2: usize,
    lambda: f64,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    check_k1(k1)?;
    from_matrix(dist, &[k1], (k2, lambda, Variant::Paper), progress)
}

/// MSRerank of `N` items among themselves from their `(N, N)` distances;
/// `(N, N)` float32. The paper variant's fixed sets are chosen among all `N`
/// columns, the item itself included (it is nearest to itself).
pub fn msrerank_single(
    dist: DistanceBlock,
    ks: &[usize],
    k2: usize,
    lambda: f64,
    variant: Variant,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    check_ks(ks)?;
    from_matrix(dist, ks, (k2, lambda, variant), progress)
}

/// k-reciprocal re-ranking of `N` embeddings among themselves (cosine
/// distances, O(N·k) memory besides the `(N, N)` answer).
pub fn k_reciprocal_single_embeddings(
    embeddings: ArrayView2<f32>,
    k1: usize,
    k2: usize,
    lambda: f64,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    check_k1(k1)?;
    from_embeddings(embeddings, &[k1], (k2, lambda, Variant::Paper), progress)
}

/// MSRerank of `N` embeddings among themselves; `(N, N)` float32.
pub fn msrerank_single_embeddings(
    embeddings: ArrayView2<f32>,
    ks: &[usize],
    k2: usize,
    lambda: f64,
    variant: Variant,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    check_ks(ks)?;
    from_embeddings(embeddings, ks, (k2, lambda, variant), progress)
}

fn from_matrix(
    dist: DistanceBlock,
    ks: &[usize],
    (k2, lambda, variant): (usize, f64, Variant),
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    let source = SingleDistances::new(dist)?;
    let plan = Plan::single_set(source.n_items(), ks, (k2, lambda), TILE_ROWS, 0)?;
    rerank(&source, &plan, variant, Progress::new(progress))
}

fn from_embeddings(
    embeddings: ArrayView2<f32>,
    ks: &[usize],
    (k2, lambda, variant): (usize, f64, Variant),
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    let (n, d) = embeddings.dim();
    if n < 2 {
        return Err(DyclError::invalid(
            EMB,
            format!("needs at least 2 items (each is re-ranked against the others), got {n}"),
        ));
    }
    if d == 0 {
        return Err(DyclError::invalid(EMB, "has zero columns"));
    }
    let joint_bytes = (n as u64).saturating_mul(d as u64 * 4);
    let tile = EmbeddingDistances::max_tile_rows(n);
    let plan = Plan::single_set(n, ks, (k2, lambda), tile, joint_bytes)?;
    validate_embeddings(EMB, embeddings)?;
    // The two-set source holds [first row; the rest] = the N items once, in order.
    let source =
        EmbeddingDistances::new(embeddings.slice(s![..1, ..]), embeddings.slice(s![1.., ..]))?;
    rerank(&source, &plan, variant, Progress::new(progress))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::cosine_distances;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn items(n: usize, seed: u64) -> Array2<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        Array2::from_shape_fn((n, 5), |(i, _)| (i % 7) as f32 + rng.random::<f32>())
    }

    #[test]
    fn embeddings_agree_with_their_cosine_matrix() {
        let x = items(70, 1);
        let d = cosine_distances(x.view(), x.view()).unwrap();
        for variant in [Variant::Paper, Variant::Reference] {
            let ks = [4, 8, 20];
            let a = msrerank_single_embeddings(x.view(), &ks, 3, 0.3, variant, None).unwrap();
            let b =
                msrerank_single(DistanceBlock::F32(d.view()), &ks, 3, 0.3, variant, None).unwrap();
            assert_eq!(a.dim(), (70, 70));
            let worst = a
                .iter()
                .zip(b.iter())
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-5, "{variant:?}: {worst}");
        }
    }

    #[test]
    fn a_single_k_is_k_reciprocal() {
        let x = items(40, 2);
        let d = cosine_distances(x.view(), x.view()).unwrap();
        let block = DistanceBlock::F32(d.view());
        let a = k_reciprocal_single(block, 6, 3, 0.3, None).unwrap();
        let b = msrerank_single(block, &[6], 3, 0.3, Variant::Paper, None).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_input_names_the_argument() {
        let arg = |r: Result<Array2<f32>>| match r {
            Err(DyclError::InvalidArgument { arg, .. }) => arg,
            other => panic!("expected an invalid argument, got {other:?}"),
        };
        let rect = Array2::<f64>::zeros((3, 4));
        assert_eq!(
            arg(k_reciprocal_single(
                DistanceBlock::F64(rect.view()),
                2,
                1,
                0.3,
                None
            )),
            "dist"
        );
        let one = Array2::<f64>::zeros((1, 1));
        assert_eq!(
            arg(msrerank_single(
                DistanceBlock::F64(one.view()),
                &[1],
                1,
                0.3,
                Variant::Paper,
                None
            )),
            "dist"
        );
        let mut nan = Array2::<f64>::zeros((4, 4));
        nan[[1, 2]] = f64::NAN;
        assert_eq!(
            arg(k_reciprocal_single(
                DistanceBlock::F64(nan.view()),
                2,
                1,
                0.3,
                None
            )),
            "dist"
        );
        let mut emb = items(5, 3);
        emb[[0, 0]] = f32::INFINITY;
        assert_eq!(
            arg(k_reciprocal_single_embeddings(emb.view(), 2, 1, 0.3, None)),
            "embeddings"
        );
        let ok = items(5, 4);
        assert_eq!(
            arg(msrerank_single_embeddings(
                ok.view(),
                &[3, 2],
                1,
                0.3,
                Variant::Paper,
                None
            )),
            "ks"
        );
        assert_eq!(
            arg(k_reciprocal_single_embeddings(ok.view(), 2, 9, 0.3, None)),
            "k2"
        );
    }
}
