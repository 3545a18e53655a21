//! Where the squared distances of the joint set come from.
//!
//! Re-ranking works on `D`, the N×N matrix of DESIGN §5 step 1: with
//! `A = [[q_q, q_g], [q_gᵀ, g_g]]`, row `i` of `D` is column `i` of `A²`
//! divided by that column's maximum. A [`SquaredDistances`] hands out tiles of
//! `A²` already transposed that way (rows of `D`, before normalisation), so
//! nothing N×N is ever materialised: [`BlockDistances`] reads the caller's
//! blocks in place, [`EmbeddingDistances`] computes cosine distances with
//! blocked GEMMs on demand.

use std::ops::Range;

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};

use super::knn::NeighbourLists;
use crate::distance::{balanced_block_rows, normalize_rows, similarity_tile, validate_embeddings};
use crate::error::{DyclError, Result};
use crate::memory::{try_array2, Purpose};
use crate::progress::Tracker;

/// What the joint embeddings are, and what to do when they do not fit.
const JOINT: Purpose = Purpose::new(
    "re-ranking: the normalised copy of the query and gallery embeddings",
    "use fewer items",
);

/// Squared distances, row `i` being what item `i` sees (`A[j, i]²` at column `j`).
pub trait SquaredDistances: Sync {
    /// `N`, the number of items (queries first, then the gallery).
    fn n_items(&self) -> usize;
    /// Rows per tile that suit this source at most (GEMM block or transpose tile).
    fn tile_rows(&self) -> usize;
    /// Rows per tile for a parallel pass over `rows` rows: at most
    /// [`SquaredDistances::tile_rows`], the tiles' count a multiple of the
    /// rayon threads so that none idles while another finishes a remainder.
    fn tile_rows_for(&self, rows: usize) -> usize {
        balanced_block_rows(rows, 1, self.tile_rows())
    }
    /// The neighbour lists of all rows by a faster route this source knows,
    /// or `None` for the generic tiled [`NeighbourLists::build`]. Both give
    /// the same lists.
    fn full_neighbour_lists(
        &self,
        _len: usize,
        _tracker: &Tracker,
    ) -> Option<Result<NeighbourLists>> {
        None
    }
    /// Row-major `rows.len() × cols.len()` tile of squared distances.
    fn fill(&self, rows: Range<usize>, cols: Range<usize>, out: &mut [f32]);
    /// One squared distance, row `row` column `col`.
    fn get(&self, row: usize, col: usize) -> f32;
    /// Called when a tile contained NaN or inf: the error naming the culprit.
    fn non_finite_error(&self) -> DyclError;
}

/// An element type whose square is taken in its own precision, then stored as f32
/// (the reference squares float64 input in float64 before the cast).
pub trait SquareF32: Copy + Send + Sync + 'static {
    fn square_f32(self) -> f32;
    fn is_finite_value(self) -> bool;
    fn as_f64(self) -> f64;
}

impl SquareF32 for f32 {
    #[inline(always)]
    fn square_f32(self) -> f32 {
        self * self
    }
    fn is_finite_value(self) -> bool {
        self.is_finite()
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl SquareF32 for f64 {
    #[inline(always)]
    fn square_f32(self) -> f32 {
        (self * self) as f32
    }
    fn is_finite_value(self) -> bool {
        self.is_finite()
    }
    fn as_f64(self) -> f64 {
        self
    }
}

/// One distance block in either precision, read in place.
#[derive(Clone, Copy, Debug)]
pub enum DistanceBlock<'a> {
    F32(ArrayView2<'a, f32>),
    F64(ArrayView2<'a, f64>),
}

impl DistanceBlock<'_> {
    pub fn dim(&self) -> (usize, usize) {
        match self {
            DistanceBlock::F32(a) => a.dim(),
            DistanceBlock::F64(a) => a.dim(),
        }
    }

    #[inline]
    pub(super) fn get_sq(&self, r: usize, c: usize) -> f32 {
        match self {
            DistanceBlock::F32(a) => a[[r, c]].square_f32(),
            DistanceBlock::F64(a) => a[[r, c]].square_f32(),
        }
    }

    /// `out[(a - src_cols.start) * width + b - src_rows.start] = self[b, a]²` (transposed copy).
    pub(super) fn fill_transposed(
        &self,
        src_rows: Range<usize>,
        src_cols: Range<usize>,
        out: &mut [f32],
        width: usize,
    ) {
        match self {
            DistanceBlock::F32(m) => transposed(*m, src_rows, src_cols, out, width),
            DistanceBlock::F64(m) => transposed(*m, src_rows, src_cols, out, width),
        }
    }

    /// `out[(a - src_rows.start) * width + b - src_cols.start] = self[a, b]²` (straight copy).
    fn fill_direct(
        &self,
        src_rows: Range<usize>,
        src_cols: Range<usize>,
        out: &mut [f32],
        width: usize,
    ) {
        match self {
            DistanceBlock::F32(m) => direct(*m, src_rows, src_cols, out, width),
            DistanceBlock::F64(m) => direct(*m, src_rows, src_cols, out, width),
        }
    }

    /// First non-finite value, or first value whose square overflows f32.
    pub(super) fn first_problem(&self) -> Option<(usize, usize, f64, bool)> {
        fn scan<T: SquareF32>(m: ArrayView2<T>) -> Option<(usize, usize, f64, bool)> {
            for ((r, c), &v) in m.indexed_iter() {
                if !v.is_finite_value() {
                    return Some((r, c, v.as_f64(), true));
                }
            }
            for ((r, c), &v) in m.indexed_iter() {
                if !v.square_f32().is_finite() {
                    return Some((r, c, v.as_f64(), false));
                }
            }
            None
        }
        match self {
            DistanceBlock::F32(m) => scan(*m),
            DistanceBlock::F64(m) => scan(*m),
        }
    }
}

fn transposed<T: SquareF32>(
    m: ArrayView2<T>,
    src_rows: Range<usize>,
    src_cols: Range<usize>,
    out: &mut [f32],
    width: usize,
) {
    let r0 = src_rows.start;
    let Some(data) = m.as_slice() else {
        // Strided input (a view into a larger array): element by element.
        for b in src_rows {
            for (a, &v) in m.slice(s![b, src_cols.clone()]).iter().enumerate() {
                out[a * width + b - r0] = v.square_f32();
            }
        }
        return;
    };
    // Row-major input: transpose in blocks of TRANSPOSE_BLOCK source rows, so
    // each output write fills a run of contiguous floats and the block's
    // source lines stay in L1 while its columns are walked.
    let ld = m.ncols();
    let (c0, n_cols) = (src_cols.start, src_cols.len());
    if src_rows.is_empty() || n_cols == 0 {
        return;
    }
    // Every index read below is at most this one (last row, last column).
    assert!((src_rows.end - 1) * ld + c0 + n_cols <= data.len());
    assert!((n_cols - 1) * width + src_rows.end - r0 <= out.len());
    let mut b0 = src_rows.start;
    while b0 < src_rows.end {
        let b1 = (b0 + TRANSPOSE_BLOCK).min(src_rows.end);
        for a in 0..n_cols {
            let dst = &mut out[a * width + b0 - r0..a * width + b1 - r0];
            let base = b0 * ld + c0 + a;
            for (k, d) in dst.iter_mut().enumerate() {
                // SAFETY: base + k·ld = (b0 + k)·ld + c0 + a with b0 + k < src_rows.end and
                // a < n_cols, bounded by the assertion above.
                *d = unsafe { data.get_unchecked(base + k * ld) }.square_f32();
            }
        }
        b0 = b1;
    }
}

fn direct<T: SquareF32>(
    m: ArrayView2<T>,
    src_rows: Range<usize>,
    src_cols: Range<usize>,
    out: &mut [f32],
    width: usize,
) {
    let r0 = src_rows.start;
    let len = src_cols.len();
    for a in src_rows {
        let seg = m.slice(s![a, src_cols.clone()]);
        let dst = &mut out[(a - r0) * width..(a - r0) * width + len];
        for (d, &v) in dst.iter_mut().zip(seg.iter()) {
            *d = v.square_f32();
        }
    }
}

/// The three distance blocks of DESIGN §5, read in place (never copied).
#[derive(Clone, Copy, Debug)]
pub struct DistanceBlocks<'a> {
    /// `(q, g)` query-to-gallery distances.
    pub q_g: DistanceBlock<'a>,
    /// `(q, q)` query-to-query distances.
    pub q_q: DistanceBlock<'a>,
    /// `(g, g)` gallery-to-gallery distances.
    pub g_g: DistanceBlock<'a>,
}

impl DistanceBlocks<'_> {
    /// Check the shapes: `q_g` non-empty `(q, g)`, `q_q` `(q, q)`, `g_g` `(g, g)`.
    pub fn validate(&self) -> Result<(usize, usize)> {
        let (q, g) = self.q_g.dim();
        if q == 0 || g == 0 {
            return Err(DyclError::invalid(
                "q_g_dist",
                format!("is empty: shape ({q}, {g})"),
            ));
        }
        let qq = self.q_q.dim();
        if qq != (q, q) {
            return Err(DyclError::invalid(
                "q_q_dist",
                format!(
                    "expected shape (q, q) = ({q}, {q}) to match q_g_dist {:?}, got {qq:?}",
                    (q, g)
                ),
            ));
        }
        let gg = self.g_g.dim();
        if gg != (g, g) {
            return Err(DyclError::invalid(
                "g_g_dist",
                format!(
                    "expected shape (g, g) = ({g}, {g}) to match q_g_dist {:?}, got {gg:?}",
                    (q, g)
                ),
            ));
        }
        Ok((q, g))
    }
}

/// [`SquaredDistances`] over caller-owned blocks (any mix of f32 and f64).
pub struct BlockDistances<'a> {
    blocks: DistanceBlocks<'a>,
    q: usize,
    n: usize,
}

/// Rows of `D` per tile: each source row is read in 64-wide segments (256 B
/// of f32, four cache lines), which streams far better than narrower strips
/// (measured with `cargo bench --bench rerank`, "neighbour lists").
const TRANSPOSE_TILE: usize = 64;

/// Source rows transposed together (one cache line of f32 output per column).
const TRANSPOSE_BLOCK: usize = 16;

impl<'a> BlockDistances<'a> {
    pub fn new(blocks: DistanceBlocks<'a>) -> Result<Self> {
        let (q, g) = blocks.validate()?;
        Ok(BlockDistances {
            blocks,
            q,
            n: q + g,
        })
    }

    pub fn n_query(&self) -> usize {
        self.q
    }
}

/// Split `r` at `q` into (part below q, part at or above q).
fn split_at(r: Range<usize>, q: usize) -> [(Range<usize>, bool); 2] {
    let mid = r.end.min(q).max(r.start);
    [(r.start..mid, true), (mid..r.end, false)]
}

impl SquaredDistances for BlockDistances<'_> {
    fn n_items(&self) -> usize {
        self.n
    }

    fn tile_rows(&self) -> usize {
        TRANSPOSE_TILE
    }

    fn fill(&self, rows: Range<usize>, cols: Range<usize>, out: &mut [f32]) {
        let width = cols.len();
        let q = self.q;
        debug_assert!(out.len() >= rows.len() * width);
        for (rr, row_is_query) in split_at(rows.clone(), q) {
            if rr.is_empty() {
                continue;
            }
            for (cc, col_is_query) in split_at(cols.clone(), q) {
                if cc.is_empty() {
                    continue;
                }
                let offset = (rr.start - rows.start) * width + (cc.start - cols.start);
                let dst = &mut out[offset..];
                // D[r, c] = A[c, r]²; pick the block and orientation holding A[c, r].
                match (row_is_query, col_is_query) {
                    (true, true) => self.blocks.q_q.fill_transposed(cc, rr.clone(), dst, width),
                    (true, false) => self.blocks.q_g.fill_direct(
                        rr.clone(),
                        cc.start - q..cc.end - q,
                        dst,
                        width,
                    ),
                    (false, true) => {
                        self.blocks
                            .q_g
                            .fill_transposed(cc, rr.start - q..rr.end - q, dst, width)
                    }
                    (false, false) => self.blocks.g_g.fill_transposed(
                        cc.start - q..cc.end - q,
                        rr.start - q..rr.end - q,
                        dst,
                        width,
                    ),
                }
            }
        }
    }

    fn get(&self, row: usize, col: usize) -> f32 {
        let q = self.q;
        match (row < q, col < q) {
            (true, true) => self.blocks.q_q.get_sq(col, row),
            (true, false) => self.blocks.q_g.get_sq(row, col - q),
            (false, true) => self.blocks.q_g.get_sq(col, row - q),
            (false, false) => self.blocks.g_g.get_sq(col - q, row - q),
        }
    }

    fn non_finite_error(&self) -> DyclError {
        for (name, block) in [
            ("q_g_dist", &self.blocks.q_g),
            ("q_q_dist", &self.blocks.q_q),
            ("g_g_dist", &self.blocks.g_g),
        ] {
            if let Some((r, c, v, non_finite)) = block.first_problem() {
                return if non_finite {
                    DyclError::invalid(
                        name,
                        format!("contains NaN or inf (first at index ({r}, {c}))"),
                    )
                } else {
                    DyclError::invalid(
                        name,
                        format!("value {v:e} at index ({r}, {c}) is too large: its square overflows float32"),
                    )
                };
            }
        }
        DyclError::invalid("q_g_dist", "contains NaN or inf")
    }
}

/// Cosine distances `1 − a·b` of L2-normalised embeddings, computed on demand.
pub struct EmbeddingDistances {
    /// Queries then gallery, rows of unit norm.
    joint: Array2<f32>,
}

/// Bytes of distances one tile holds at most (one tile per thread): a tile
/// of `rows` rows packs the whole joint set once for its GEMM, so more rows
/// amortise the packing, within this budget.
const TILE_BYTES: usize = 64 << 20;

/// Rows per tile at least, whatever the budget says: fewer rows would spend
/// more time packing the joint set than multiplying.
const MIN_TILE: usize = 64;

/// Rows per tile at most: beyond this the packing is already negligible and
/// fewer, larger tiles only balance worse over threads.
const MAX_TILE: usize = 1024;

impl EmbeddingDistances {
    /// Rows per tile at most for `n` joint items ([`SquaredDistances::tile_rows`]):
    /// `TILE_BYTES` (64 MiB) of f32 distances, clamped to 64..=1024.
    pub fn max_tile_rows(n: usize) -> usize {
        (TILE_BYTES / (4 * n.max(1))).clamp(MIN_TILE, MAX_TILE)
    }

    /// The checks that read no values: neither set empty, equal widths.
    pub fn check_shapes(query: ArrayView2<f32>, gallery: ArrayView2<f32>) -> Result<()> {
        for (arg, emb) in [("query_emb", query), ("gallery_emb", gallery)] {
            if emb.nrows() == 0 {
                return Err(DyclError::invalid(arg, "is empty (no rows)"));
            }
            if emb.ncols() == 0 {
                return Err(DyclError::invalid(arg, "has zero columns"));
            }
        }
        if query.ncols() != gallery.ncols() {
            return Err(DyclError::invalid(
                "gallery_emb",
                format!(
                    "embedding width {} differs from query_emb's {}",
                    gallery.ncols(),
                    query.ncols()
                ),
            ));
        }
        Ok(())
    }

    pub fn new(query: ArrayView2<f32>, gallery: ArrayView2<f32>) -> Result<Self> {
        Self::check_shapes(query, gallery)?;
        validate_embeddings("query_emb", query)?;
        validate_embeddings("gallery_emb", gallery)?;
        let (q, g) = (query.nrows(), gallery.nrows());
        let mut joint = try_array2::<f32>((q.saturating_add(g), query.ncols()), JOINT)?;
        joint.slice_mut(s![..q, ..]).assign(&query);
        joint.slice_mut(s![q.., ..]).assign(&gallery);
        normalize_rows(&mut joint);
        Ok(EmbeddingDistances { joint })
    }

    /// The normalised joint embeddings, queries first.
    pub fn joint(&self) -> ArrayView2<'_, f32> {
        self.joint.view()
    }
}

impl EmbeddingDistances {
    /// Row-major tile of cosine distances `1 − a·b`, the values that
    /// [`SquaredDistances::fill`] squares (one GEMM path for both).
    pub fn fill_cosine(&self, rows: Range<usize>, cols: Range<usize>, out: &mut [f32]) {
        let (h, w) = (rows.len(), cols.len());
        let out = &mut out[..h * w];
        let view =
            ArrayViewMut2::from_shape((h, w), &mut *out).expect("tile buffer has the tile's size");
        // One GEMM on this thread: the callers run tiles in parallel.
        similarity_tile(
            self.joint.slice(s![rows, ..]),
            self.joint.slice(s![cols, ..]),
            view,
        );
        for v in out.iter_mut() {
            *v = 1.0 - *v;
        }
    }
}

impl SquaredDistances for EmbeddingDistances {
    fn n_items(&self) -> usize {
        self.joint.nrows()
    }

    fn tile_rows(&self) -> usize {
        Self::max_tile_rows(self.joint.nrows())
    }

    fn fill(&self, rows: Range<usize>, cols: Range<usize>, out: &mut [f32]) {
        let cells = rows.len() * cols.len();
        self.fill_cosine(rows, cols, out);
        for v in out[..cells].iter_mut() {
            *v = *v * *v;
        }
    }

    /// The symmetric pass ([`super::symmetric`]): half the flops.
    fn full_neighbour_lists(
        &self,
        len: usize,
        tracker: &Tracker,
    ) -> Option<Result<NeighbourLists>> {
        super::symmetric::neighbour_lists(self, len, tracker)
    }

    fn get(&self, row: usize, col: usize) -> f32 {
        let d = 1.0 - self.joint.row(row).dot(&self.joint.row(col));
        d * d
    }

    fn non_finite_error(&self) -> DyclError {
        // Inputs were checked finite and normalised rows cannot overflow.
        DyclError::invalid("query_emb", "produced non-finite distances")
    }
}
