//! Cosine distances between embedding sets.
//!
//! The similarity is one GEMM; it is split into row blocks that rayon runs in
//! parallel, each block a single-threaded `matrixmultiply` call, so the work
//! scales with cores without oversubscribing threads inside threads.

use ndarray::{
    linalg::general_mat_mul, s, Array1, Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis,
};
use rayon::prelude::*;

use crate::error::{DyclError, Result};
use crate::memory::{ensure_fits, try_array2, try_zeroed, Purpose};

/// Rows per parallel GEMM block: large enough to keep matrixmultiply's
/// kernels busy, small enough to balance across threads.
const ROW_BLOCK: usize = 256;

/// Check an embedding matrix: non-empty rows, finite values.
pub fn validate_embeddings(arg: &'static str, emb: ArrayView2<f32>) -> Result<()> {
    if emb.nrows() == 0 {
        return Err(DyclError::invalid(arg, "is empty (no rows)"));
    }
    if emb.ncols() == 0 {
        return Err(DyclError::invalid(arg, "has zero columns"));
    }
    if let Some(pos) = emb.iter().position(|v| !v.is_finite()) {
        return Err(DyclError::invalid(
            arg,
            format!("contains NaN or inf (first at flat index {pos})"),
        ));
    }
    Ok(())
}

/// What an embedding copy is, and what to do when it does not fit.
const EMBEDDINGS: Purpose = Purpose::new(
    "the normalised copy of the embeddings",
    "pass fewer embeddings per call",
);

/// What a similarity matrix is, and what to do when it does not fit.
const SIMILARITIES: Purpose = Purpose::new(
    "the query × gallery similarity matrix",
    "pass fewer queries per call (the result is q × g float32)",
);

/// Rows scaled to unit L2 norm (zero rows stay zero, so their similarity to
/// everything is 0 and their cosine distance 1).
pub fn l2_normalized(emb: ArrayView2<f32>) -> Result<Array2<f32>> {
    let mut out = try_array2::<f32>(emb.dim(), EMBEDDINGS)?;
    out.assign(&emb);
    normalize_rows(&mut out);
    Ok(out)
}

/// [`l2_normalized`] of embeddings that must be finite, in one pass over
/// them: each row is copied, checked and normalised. A non-finite value is
/// reported naming `arg`, as [`validate_embeddings`] does.
pub fn normalized_finite(arg: &'static str, emb: ArrayView2<f32>) -> Result<Array2<f32>> {
    let mut out = try_array2::<f32>(emb.dim(), EMBEDDINGS)?;
    out.assign(&emb);
    let first_bad_row = out
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .filter_map(|(i, row)| {
            if row.iter().all(|v| v.is_finite()) {
                normalize_row(row);
                None
            } else {
                Some(i)
            }
        })
        .min();
    if let Some(i) = first_bad_row {
        let j = emb.row(i).iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(DyclError::invalid(
            arg,
            format!(
                "contains NaN or inf (first at flat index {})",
                i * emb.ncols() + j
            ),
        ));
    }
    Ok(out)
}

/// [`l2_normalized`] in place.
pub fn normalize_rows(emb: &mut Array2<f32>) {
    emb.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(normalize_row);
}

/// Scale one row to unit L2 norm (the norm summed in f64, the scale applied in f32).
#[inline]
fn normalize_row(mut row: ArrayViewMut1<f32>) {
    let norm = row
        .iter()
        .map(|v| (*v as f64) * (*v as f64))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        row.mapv_inplace(|v| v * inv);
    }
}

/// `out = a · bᵀ`, parallel over row blocks of `a`.
pub fn similarity_into(a: ArrayView2<f32>, b: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) {
    debug_assert_eq!(out.dim(), (a.nrows(), b.nrows()));
    let bt = b.t();
    out.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)
        .into_par_iter()
        .enumerate()
        .for_each(|(blk, mut out_blk)| {
            let start = blk * ROW_BLOCK;
            let rows = a.slice(s![start..start + out_blk.nrows(), ..]);
            general_mat_mul(1.0, &rows, &bt, 0.0, &mut out_blk);
        });
}

/// Inner products `a · bᵀ` as a new `(a.nrows(), b.nrows())` matrix.
pub fn similarity(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Result<Array2<f32>> {
    let mut out = try_array2::<f32>((a.nrows(), b.nrows()), SIMILARITIES)?;
    similarity_into(a, b, out.view_mut());
    Ok(out)
}

/// Cosine distances `1 − cos(q_i, g_j)` between L2-normalised rows.
pub fn cosine_distances(query: ArrayView2<f32>, gallery: ArrayView2<f32>) -> Result<Array2<f32>> {
    // An impossible size fails before the inputs are scanned.
    ensure_fits::<f32>(&[query.nrows(), gallery.nrows()], SIMILARITIES)?;
    validate_embeddings("query", query)?;
    validate_embeddings("gallery", gallery)?;
    if query.ncols() != gallery.ncols() {
        return Err(DyclError::invalid(
            "gallery",
            format!(
                "embedding width {} differs from the query's {}",
                gallery.ncols(),
                query.ncols()
            ),
        ));
    }
    let q = l2_normalized(query)?;
    let g = l2_normalized(gallery)?;
    let mut d = similarity(q.view(), g.view())?;
    d.par_mapv_inplace(|s| 1.0 - s);
    Ok(d)
}

/// Squared L2 norms of rows (used by Euclidean-distance callers).
pub fn row_sq_norms(emb: ArrayView2<f32>) -> Result<Array1<f32>> {
    let mut out = Array1::from(try_zeroed::<f32>(emb.nrows(), EMBEDDINGS)?);
    out.iter_mut()
        .zip(emb.axis_iter(Axis(0)))
        .for_each(|(o, r)| *o = r.dot(&r));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn cosine_matches_direct_formula() {
        let q = array![[1.0f32, 0.0], [3.0, 4.0]];
        let g = array![[0.0f32, 2.0], [1.0, 1.0], [-1.0, 0.0]];
        let d = cosine_distances(q.view(), g.view()).unwrap();
        let expect = |a: [f32; 2], b: [f32; 2]| {
            let na = (a[0] * a[0] + a[1] * a[1]).sqrt();
            let nb = (b[0] * b[0] + b[1] * b[1]).sqrt();
            1.0 - (a[0] * b[0] + a[1] * b[1]) / (na * nb)
        };
        let qs = [[1.0, 0.0], [3.0, 4.0]];
        let gs = [[0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]];
        for i in 0..2 {
            for j in 0..3 {
                assert!((d[[i, j]] - expect(qs[i], gs[j])).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn blocks_cover_all_rows() {
        let n = ROW_BLOCK * 2 + 7;
        let a = Array2::from_shape_fn((n, 5), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let b = Array2::from_shape_fn((9, 5), |(i, j)| ((i * 5 + j) % 7) as f32 - 3.0);
        let fast = similarity(a.view(), b.view()).unwrap();
        let slow = a.dot(&b.t());
        assert_eq!(fast, slow);
    }

    #[test]
    fn rejects_width_mismatch_and_nan() {
        let q = array![[1.0f32, 0.0]];
        let g = array![[1.0f32, 0.0, 0.0]];
        assert!(cosine_distances(q.view(), g.view()).is_err());
        let bad = array![[f32::NAN, 0.0]];
        assert!(cosine_distances(bad.view(), q.view()).is_err());
    }

    #[test]
    fn normalized_finite_matches_l2_normalized_and_names_the_argument() {
        let x = Array2::from_shape_fn((300, 7), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let a = normalized_finite("query_emb", x.view()).unwrap();
        assert_eq!(a, l2_normalized(x.view()).unwrap());
        let mut bad = x.clone();
        bad[[250, 3]] = f32::INFINITY;
        bad[[260, 0]] = f32::NAN;
        let err = normalized_finite("gallery_emb", bad.view()).unwrap_err();
        assert_eq!(
            err,
            DyclError::invalid(
                "gallery_emb",
                "contains NaN or inf (first at flat index 1753)"
            )
        );
    }

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        let one = array![[1.0f32, 0.5]];
        let huge = one.broadcast((1usize << 33, 2)).unwrap();
        match cosine_distances(huge, huge) {
            Err(DyclError::OutOfMemory(msg)) => {
                assert!(msg.contains("similarity matrix"), "{msg}")
            }
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
        assert!(matches!(
            l2_normalized(one.broadcast((1usize << 61, 2)).unwrap()),
            Err(DyclError::OutOfMemory(_))
        ));
    }
}
