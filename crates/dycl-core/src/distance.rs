//! Cosine distances between embedding sets.
//!
//! The similarity is one f32 GEMM, run by the `gemm` crate with its runtime
//! CPU dispatch (AVX2 or AVX-512 kernels, whichever the machine has). It is
//! split into balanced row blocks that rayon runs in parallel, each block a
//! single-threaded GEMM call, so the work scales with cores without
//! oversubscribing threads inside threads.
//!
//! Every entry comes out with the same bits whatever the shape of the call
//! it is computed in (see [`similarity_tile`]): a row ranked from a block
//! of queries equals the same row of the full matrix.

use std::ops::Range;

use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::error::{DyclError, Result};
use crate::memory::{ensure_fits, try_array2, try_zeroed, Purpose};

/// Rows per parallel GEMM block at most: each block packs the right-hand
/// side once, so larger blocks amortise that; [`balanced_block_rows`] makes
/// them smaller only to give every thread the same number of blocks.
const MAX_BLOCK_ROWS: usize = 512;

/// Rows per parallel GEMM block at least (fewer rows run the kernel inefficiently).
const MIN_BLOCK_ROWS: usize = 16;

/// The embedding width is summed in chunks of at most this many terms, each
/// chunk one GEMM call. `gemm` would split a longer sum itself at a size that
/// depends on the call's shape; fixing the split here keeps entries
/// bit-identical across shapes.
const DEPTH_CHUNK: usize = 512;

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

/// `out = a · bᵀ`, parallel over balanced row blocks of `a`.
pub fn similarity_into(a: ArrayView2<f32>, b: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) {
    debug_assert_eq!(out.dim(), (a.nrows(), b.nrows()));
    let block = balanced_block_rows(a.nrows(), MIN_BLOCK_ROWS, MAX_BLOCK_ROWS);
    out.axis_chunks_iter_mut(Axis(0), block)
        .into_par_iter()
        .enumerate()
        .for_each(|(blk, out_blk)| {
            let start = blk * block;
            let rows = a.slice(s![start..start + out_blk.nrows(), ..]);
            similarity_tile(rows, b, out_blk);
        });
}

/// Rows per block to cut `rows` rows into blocks of at most `most` rows
/// (and at least `least`, where there are that many), their count a
/// multiple of the rayon threads so that every thread gets the same share:
/// 300 rows on 2 threads are 150 + 150, not 256 + 44.
pub fn balanced_block_rows(rows: usize, least: usize, most: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let most = most.max(1);
    let by_size = rows.div_ceil(most).max(1);
    let blocks = by_size.div_ceil(threads) * threads;
    let block = rows.div_ceil(blocks).max(1);
    if block < least {
        least.min(rows).max(1)
    } else {
        block
    }
}

/// `out = a · bᵀ` on the calling thread: one `gemm` call per
/// `DEPTH_CHUNK` (512) of the embedding width, the chunks added in order.
///
/// `gemm`'s main kernel computes each entry as a chain of fused
/// multiply-adds over the width in order, whatever the entry's place in the
/// block. Its special paths for tiny shapes (one row or column, at most 256
/// entries, width ≤ 2) sum differently, so those shapes take
/// `fma_chain_tile`, which computes the same chain directly. Either way an
/// entry depends only on its two rows, never on the tile it is computed in.
pub fn similarity_tile(a: ArrayView2<f32>, b: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) {
    debug_assert_eq!(out.dim(), (a.nrows(), b.nrows()));
    debug_assert_eq!(a.ncols(), b.ncols());
    let (m, n, depth) = (a.nrows(), b.nrows(), a.ncols());
    if m == 0 || n == 0 {
        return;
    }
    let chunks = depth_chunks(depth);
    let main_kernel = m >= 2 && n >= 2 && m * n > 256 && depth >= 3;
    if !main_kernel {
        fma_chain_tile(a, b, out, &chunks);
        return;
    }
    let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
    let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
    let (o_rs, o_cs) = (out.strides()[0], out.strides()[1]);
    let dst = out.as_mut_ptr();
    for (c, cols) in chunks.iter().enumerate() {
        // SAFETY: the pointers and strides are those of live ndarray views of
        // shapes (m, depth), (n, depth) and (m, n) with `cols` inside 0..depth;
        // `out` is borrowed mutably and does not alias the inputs.
        unsafe {
            gemm::gemm(
                m,
                n,
                cols.len(),
                dst,
                o_cs,
                o_rs,
                c > 0,
                a.as_ptr().offset(cols.start as isize * a_cs),
                a_cs,
                a_rs,
                b.as_ptr().offset(cols.start as isize * b_cs),
                b_rs,
                b_cs,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// The width `0..depth` cut into nearly equal chunks of at most [`DEPTH_CHUNK`].
fn depth_chunks(depth: usize) -> Vec<Range<usize>> {
    let count = depth.div_ceil(DEPTH_CHUNK).max(1);
    (0..count)
        .map(|c| c * depth / count..(c + 1) * depth / count)
        .collect()
}

/// Whether `gemm`'s kernels on this machine use fused multiply-adds (its
/// AVX2, AVX-512 and NEON kernels do; its portable fallback multiplies, then adds).
fn gemm_fuses_multiply_add() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// [`similarity_tile`] entry by entry: per chunk of the width, a chain of
/// (fused, where `gemm`'s are) multiply-adds from zero in order; the chunks'
/// sums added in order.
fn fma_chain_tile(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    mut out: ArrayViewMut2<f32>,
    chunks: &[Range<usize>],
) {
    let fused = gemm_fuses_multiply_add();
    for (i, arow) in a.axis_iter(Axis(0)).enumerate() {
        for (j, brow) in b.axis_iter(Axis(0)).enumerate() {
            let mut total = 0f32;
            for (c, cols) in chunks.iter().enumerate() {
                let mut acc = 0f32;
                if fused {
                    for t in cols.clone() {
                        acc = arow[t].mul_add(brow[t], acc);
                    }
                } else {
                    for t in cols.clone() {
                        acc += arow[t] * brow[t];
                    }
                }
                total = if c == 0 { acc } else { total + acc };
            }
            out[[i, j]] = total;
        }
    }
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

    /// Deterministic pseudo-random values in [-1, 1).
    fn noise(shape: (usize, usize), seed: u64) -> Array2<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Array2::from_shape_fn(shape, |_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
    }

    /// The definition: per width chunk a multiply-add chain, chunks added.
    fn reference(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
        let mut out = Array2::zeros((a.nrows(), b.nrows()));
        fma_chain_tile(a, b, out.view_mut(), &depth_chunks(a.ncols()));
        out
    }

    #[test]
    fn gemm_tiles_equal_the_multiply_add_chain_bit_for_bit() {
        // Row and column counts off the kernel's register blocks, tiny
        // shapes that take gemm's special paths, widths of 1, 2 and several chunks.
        for (m, n, d) in [
            (1, 1, 1),
            (3, 2, 2),
            (1, 300, 40),
            (300, 1, 40),
            (16, 16, 64),
            (17, 17, 64),
            (37, 53, 13),
            (100, 301, 512),
            (65, 130, 1100),
            (7, 1000, 700),
        ] {
            let a = noise((m, d), (m * 1000 + d) as u64);
            let b = noise((n, d), (n * 7 + d) as u64);
            let mut fast = Array2::from_elem((m, n), f32::NAN);
            similarity_tile(a.view(), b.view(), fast.view_mut());
            assert_eq!(fast, reference(a.view(), b.view()), "({m}, {n}, {d})");
            // and to the plain product, within rounding
            let slow = a.dot(&b.t());
            let worst = (&fast - &slow).iter().fold(0f32, |w, v| w.max(v.abs()));
            assert!(worst < 1e-4 * d as f32, "({m}, {n}, {d}): {worst}");
        }
    }

    #[test]
    fn entries_do_not_depend_on_the_block_they_are_computed_in() {
        let a = noise((523, 96), 1);
        let b = noise((301, 96), 2);
        let whole = similarity(a.view(), b.view()).unwrap();
        for (rows, cols) in [
            (0..1, 0..301),
            (5..6, 0..2),
            (3..200, 17..18),
            (500..523, 0..10),
        ] {
            let mut part = Array2::zeros((rows.len(), cols.len()));
            similarity_tile(
                a.slice(s![rows.clone(), ..]),
                b.slice(s![cols.clone(), ..]),
                part.view_mut(),
            );
            assert_eq!(
                part,
                whole.slice(s![rows.clone(), cols.clone()]),
                "{rows:?} {cols:?}"
            );
        }
        // strided inputs and a column-major output give the same bits
        let (at, bt) = (a.t().to_owned(), b.t().to_owned());
        let mut out_t = Array2::zeros((301, 523));
        similarity_tile(at.t(), bt.t(), out_t.view_mut().reversed_axes());
        assert_eq!(out_t.t(), whole);
    }

    #[test]
    fn blocks_are_balanced_over_threads() {
        let threads = rayon::current_num_threads();
        for rows in [1, 2, 15, 44, 300, 701, 18_300, 100_000] {
            let block = balanced_block_rows(rows, 16, 512);
            assert!((1..=512).contains(&block), "{rows}: {block}");
            let blocks = rows.div_ceil(block);
            if rows >= 16 * threads {
                // every thread gets a block, the last block not much smaller
                assert!(blocks >= threads, "{rows}: {block}");
                assert!(
                    rows - (blocks - 1) * block + blocks > block,
                    "{rows}: {block}"
                );
            }
        }
        let n = 2 * 512 + 7;
        let a = noise((n, 5), 3);
        let b = noise((9, 5), 4);
        assert_eq!(
            similarity(a.view(), b.view()).unwrap(),
            reference(a.view(), b.view())
        );
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
