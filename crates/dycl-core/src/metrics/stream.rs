//! Metrics from embeddings without the `(q, g)` distance matrix (DESIGN
//! §11): the queries are taken in blocks; a block's cosine distances are one
//! GEMM against the normalised gallery, each row is ranked and scored, and
//! only the per-query values are kept. Memory is O(block × g) per thread.
//!
//! Each distance is the `1 − s` of the same f32 GEMM entry that
//! [`crate::distance::cosine_distances`] computes (both go through
//! [`similarity_tile`], whose entries do not depend on where a row sits in
//! a block), so the rankings, and every metric, are bit-identical to
//! scoring that matrix.

use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{s, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::scores::ScoreContext;
use super::{score_ranked, CheckedIds, QueryArrays, QueryOut, Scratch};
use crate::distance::similarity_tile;
use crate::error::{DyclError, FirstError, Result};
use crate::memory::{ensure_fits, try_zeroed, Purpose};
use crate::progress::Tracker;

/// Distances one block holds at most: 64 MB of f32.
const BLOCK_BYTES: usize = 64 << 20;

/// Rows per block at most (one GEMM call packs the gallery once per block).
const MAX_BLOCK_ROWS: usize = 256;

/// Rows per block at least, unless memory says otherwise: fewer rows make
/// the GEMM inefficient.
const MIN_BLOCK_ROWS: usize = 32;

/// What a block of distances is, and what to do when it does not fit.
const BLOCKS: Purpose = Purpose::new(
    "metrics: the per-thread block of query × gallery distances",
    "use a smaller gallery, or fewer threads (RAYON_NUM_THREADS)",
);

/// Query rows per block for `q` queries against `g` gallery items: at most
/// [`MAX_BLOCK_ROWS`] and [`BLOCK_BYTES`] of distances, and small enough to
/// give every thread a few blocks (but not below [`MIN_BLOCK_ROWS`]).
pub(super) fn block_rows(q: usize, g: usize) -> usize {
    let by_memory = BLOCK_BYTES / (4 * g.max(1));
    let for_threads = q
        .div_ceil(4 * rayon::current_num_threads().max(1))
        .max(MIN_BLOCK_ROWS);
    by_memory.min(MAX_BLOCK_ROWS).min(for_threads).max(1)
}

/// Score every query of `query` (L2-normalised rows) against `gallery`
/// (L2-normalised rows) into `out`, `block` query rows at a time. Stops
/// early, leaving `out` partly filled, once `tracker` is cancelled.
pub(super) fn score_blocks(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    ids: &CheckedIds,
    levels: ArrayView2<u8>,
    block: usize,
    out: &mut QueryArrays,
    tracker: &Tracker,
) -> Result<()> {
    let (g, n_levels) = (gallery.nrows(), ids.n_levels);
    let ctx = ScoreContext::new(n_levels, g)?;
    let cells = ensure_fits::<f32>(&[block, g], BLOCKS)?;
    let pass = BlockPass {
        query,
        gallery,
        ids,
        levels,
        ctx: &ctx,
        block,
    };
    let scratch_error = FirstError::default();
    let non_finite = AtomicBool::new(false);
    block_outputs(out, block).enumerate().for_each_init(
        || -> Result<(Vec<f32>, Scratch)> {
            Ok((
                try_zeroed(cells, BLOCKS)?,
                Scratch::new(g, n_levels, false)?,
            ))
        },
        |scratch, (b, out)| {
            let (dist, s) = match scratch {
                Ok((dist, s)) => (dist, s),
                Err(err) => return scratch_error.record(err),
            };
            if tracker.cancelled() {
                return;
            }
            let rows = out.h_ap.len();
            if !pass.answer_block(s, dist, b * block, out) {
                non_finite.store(true, Ordering::Relaxed);
            }
            tracker.advance(rows);
        },
    );
    scratch_error.into_result()?;
    if non_finite.into_inner() {
        // Finite unit rows cannot give a non-finite cosine; kept as a guard.
        return Err(DyclError::invalid(
            "query_emb",
            "produced non-finite cosine distances",
        ));
    }
    Ok(())
}

/// `out` cut into blocks of `block` queries, in parallel.
fn block_outputs(
    out: &mut QueryArrays,
    block: usize,
) -> impl IndexedParallelIterator<Item = BlockOut<'_>> {
    (
        out.h_ap
            .as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(block),
        out.asi
            .as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(block),
        out.ndcg
            .as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(block),
        out.top1
            .as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(block),
        out.average_precision
            .axis_chunks_iter_mut(Axis(0), block)
            .into_par_iter(),
        out.first_relevant_rank
            .axis_chunks_iter_mut(Axis(0), block)
            .into_par_iter(),
        out.n_relevant
            .axis_chunks_iter_mut(Axis(0), block)
            .into_par_iter(),
    )
        .into_par_iter()
        .map(|(h_ap, asi, ndcg, top1, ap, first, n_rel)| BlockOut {
            h_ap,
            asi,
            ndcg,
            top1,
            ap,
            first,
            n_rel,
        })
}

/// The fixed inputs of [`score_blocks`], shared by all its tasks.
struct BlockPass<'a> {
    query: ArrayView2<'a, f32>,
    gallery: ArrayView2<'a, f32>,
    ids: &'a CheckedIds,
    levels: ArrayView2<'a, u8>,
    ctx: &'a ScoreContext,
    block: usize,
}

/// One block's share of [`QueryArrays`].
struct BlockOut<'a> {
    h_ap: &'a mut [f64],
    asi: &'a mut [f64],
    ndcg: &'a mut [f64],
    top1: &'a mut [u32],
    ap: ArrayViewMut2<'a, f64>,
    first: ArrayViewMut2<'a, u32>,
    n_rel: ArrayViewMut2<'a, u32>,
}

impl BlockPass<'_> {
    /// Score the query rows `r0..` that `out` holds into it; false if a
    /// distance was not finite.
    fn answer_block(
        &self,
        s: &mut Scratch,
        dist: &mut [f32],
        r0: usize,
        mut out: BlockOut,
    ) -> bool {
        let (rows, g) = (out.h_ap.len(), self.gallery.nrows());
        self.distances(r0, rows, dist);
        let mut finite = true;
        for r in 0..rows {
            let query_out = QueryOut {
                h_ap: &mut out.h_ap[r],
                asi: &mut out.asi[r],
                ndcg: &mut out.ndcg[r],
                top1: &mut out.top1[r],
                average_precision: row_slice(out.ap.row_mut(r)),
                first_relevant_rank: row_slice(out.first.row_mut(r)),
                n_relevant: row_slice(out.n_rel.row_mut(r)),
            };
            finite &= self.score_row(s, r0 + r, &dist[r * g..(r + 1) * g], query_out);
        }
        finite
    }

    /// `dist[..rows × g]` = cosine distances of query rows `r0..r0 + rows`
    /// to the gallery, row-major.
    fn distances(&self, r0: usize, rows: usize, dist: &mut [f32]) {
        debug_assert!(rows <= self.block);
        let g = self.gallery.nrows();
        let mut d = ArrayViewMut2::from_shape((rows, g), &mut dist[..rows * g])
            .expect("the block buffer holds block × g values");
        let q = self.query.slice(s![r0..r0 + rows, ..]);
        similarity_tile(q, self.gallery, d.view_mut());
        d.mapv_inplace(|s| 1.0 - s);
    }

    /// Rank and score query `i` from its distances; false if one was not finite.
    fn score_row(&self, s: &mut Scratch, i: usize, dist: &[f32], out: QueryOut) -> bool {
        let level_row = self.levels.row(self.ids.query[i]);
        let level_row = level_row.as_slice().expect("standard layout");
        if !s
            .ranked
            .rank_excluding(dist, &self.ids.gallery, level_row, self.ids.skip(i))
        {
            return false;
        }
        score_ranked(self.ctx, s, out);
        true
    }
}

/// A row of a fresh `(q, L)` output array as a slice.
fn row_slice<T>(row: ndarray::ArrayViewMut1<'_, T>) -> &mut [T] {
    row.into_slice().expect("row of a fresh array")
}
