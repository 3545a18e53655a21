//! The last pass over the queries: Jaccard distances of every level mixed
//! with `D`, combined across levels as MSRerank prescribes (DESIGN §5).
//!
//! A single level with `Variant::Paper` is plain k-reciprocal re-ranking.

use ndarray::Array2;
use rayon::prelude::*;

use super::knn::{normalise_row, NeighbourLists, SmallestK, TILES};
use super::kreciprocal::{jaccard_row, Inverted, SparseRows};
use super::source::SquaredDistances;
use crate::error::{FirstError, Result};
use crate::memory::{ensure_fits, try_array2, try_capacity, try_zeroed, Purpose};
use crate::progress::Tracker;

/// What the answer is, and what to do when it does not fit.
const OUTPUT: Purpose = Purpose::new(
    "re-ranking: the q × g float32 answer",
    "use fewer queries per call",
);

/// How levels are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Algorithm 1 of the paper: `d* += d_l` on gallery items not fixed by
    /// the previous level; then the `k^l` best gallery items are fixed.
    Paper,
    /// The authors' released code: over all N joint columns, level `l ≥ 1`
    /// replaces `final` by `d_l + l` outside the union of the previous
    /// levels' top `k + 1` columns.
    Reference,
}

impl std::str::FromStr for Variant {
    type Err = crate::DyclError;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "paper" => Ok(Variant::Paper),
            "reference" => Ok(Variant::Reference),
            other => Err(crate::DyclError::invalid(
                "variant",
                format!("unknown variant {other:?}; expected \"paper\" or \"reference\""),
            )),
        }
    }
}

/// One level's data for the query pass.
pub struct Level<'a> {
    /// Neighbourhood size `k` of the level.
    pub k: usize,
    /// Rows of `V` (after query expansion); only query rows are read.
    pub weights: &'a SparseRows,
    /// `V` inverted over rows `first_col..N`, the columns this level needs.
    pub inverted: &'a Inverted,
    /// First joint column whose distance this level needs: `q` (gallery
    /// only) or 0 (all N, for the reference variant's protected sets).
    pub first_col: usize,
}

/// Joint columns each level must see: only the reference variant's levels
/// before the last choose protected columns among all N; every other level
/// is only read on gallery columns.
pub fn first_columns(variant: Variant, n_levels: usize, q: usize) -> Vec<usize> {
    (0..n_levels)
        .map(|l| match variant {
            Variant::Reference if l + 1 < n_levels => 0,
            _ => q,
        })
        .collect()
}

/// Buffers of one rayon task, allocated once per task and reused for each
/// of its rows.
struct Scratch {
    /// Distances of a tile of rows to joint columns `col0..N`.
    dist: Vec<f32>,
    row: RowScratch,
}

/// What one row needs besides its distances, all over joint columns
/// `col0..N`. Kept apart from `Scratch::dist` so a row's slice of the tile
/// can be borrowed alongside these.
struct RowScratch {
    /// Scratch of [`jaccard_row`].
    shared: Vec<f32>,
    /// The current level's mixed distance `d_l`.
    level: Vec<f32>,
    /// The running combined result.
    state: Vec<f32>,
    /// Columns fixed (paper) or protected (reference) carry the current epoch.
    mark: Vec<u32>,
    epoch: u32,
    selector: SmallestK,
    picked: Vec<u32>,
}

/// Combine the levels for every query row into the `(q, g)` answer.
///
/// `state` holds the running result over joint columns `col0..N` (`col0`
/// the smallest `first_col`); the answer is its gallery part.
pub fn combine_levels<S: SquaredDistances + ?Sized>(
    source: &S,
    lists: &NeighbourLists,
    q: usize,
    levels: &[Level],
    lambda: f64,
    variant: Variant,
    tracker: &Tracker,
) -> Result<Array2<f32>> {
    combine_levels_from(source, lists, (q, q), levels, lambda, variant, tracker)
}

/// [`combine_levels`] for the first `q` rows against the gallery of joint
/// columns `gallery_col0..N`: `gallery_col0 = q` for a query set and a
/// gallery, 0 in single-set mode (the answer is then `q × N`).
pub fn combine_levels_from<S: SquaredDistances + ?Sized>(
    source: &S,
    lists: &NeighbourLists,
    (q, gallery_col0): (usize, usize),
    levels: &[Level],
    lambda: f64,
    variant: Variant,
    tracker: &Tracker,
) -> Result<Array2<f32>> {
    let pass = QueryPass::new(source, lists, gallery_col0, levels, lambda, variant);
    let tile = source.tile_rows_for(q);
    let mut out = try_array2::<f32>((q, pass.g), OUTPUT)?;
    let scratch_error = FirstError::default();
    out.as_slice_mut()
        .expect("fresh array is contiguous")
        .par_chunks_mut(tile * pass.g)
        .enumerate()
        .for_each_init(
            || pass.scratch(tile),
            |s, (t, out_rows)| {
                let s = match s {
                    Ok(s) => s,
                    Err(err) => return scratch_error.record(err),
                };
                if tracker.cancelled() {
                    return;
                }
                let rows = pass.answer_tile(s, t * tile, out_rows);
                tracker.advance(rows);
            },
        );
    scratch_error.into_result()?;
    Ok(out)
}

/// What the top-k answer is, and what to do when it does not fit.
const TOP_OUTPUT: Purpose = Purpose::new(
    "re-ranking: the q × top indices and distances of the answer",
    "ask for a smaller top or fewer queries per call",
);

/// [`combine_levels_from`] keeping only each query's `top` best gallery
/// columns, ranked by re-ranked distance with ties by column (the order of a
/// stable argsort of the full answer): `(index, distance)`, both
/// `q × min(top, g)`. Memory O(q · top) instead of the `q × g` answer.
#[allow(clippy::too_many_arguments)]
pub fn combine_levels_top<S: SquaredDistances + ?Sized>(
    source: &S,
    lists: &NeighbourLists,
    (q, gallery_col0): (usize, usize),
    levels: &[Level],
    lambda: f64,
    variant: Variant,
    top: usize,
    tracker: &Tracker,
) -> Result<(Array2<u32>, Array2<f32>)> {
    let pass = QueryPass::new(source, lists, gallery_col0, levels, lambda, variant);
    let top = top.clamp(1, pass.g.max(1));
    let tile = source.tile_rows_for(q);
    let mut index = try_array2::<u32>((q, top), TOP_OUTPUT)?;
    let mut distance = try_array2::<f32>((q, top), TOP_OUTPUT)?;
    let scratch_error = FirstError::default();
    index
        .as_slice_mut()
        .expect("fresh array is contiguous")
        .par_chunks_mut(tile * top)
        .zip(
            distance
                .as_slice_mut()
                .expect("fresh array is contiguous")
                .par_chunks_mut(tile * top),
        )
        .enumerate()
        .for_each_init(
            || -> Result<_> {
                let picked = try_capacity::<u32>(top, TOP_OUTPUT)?;
                Ok((pass.scratch(tile)?, SmallestK::default(), picked))
            },
            |s, (t, (index_rows, dist_rows))| {
                let (scratch, selector, picked) = match s {
                    Ok(s) => (&mut s.0, &mut s.1, &mut s.2),
                    Err(err) => return scratch_error.record(err),
                };
                if tracker.cancelled() {
                    return;
                }
                let out = (index_rows, dist_rows);
                let rows = pass.answer_tile_top(scratch, (t * tile, top), (selector, picked), out);
                tracker.advance(rows);
            },
        );
    scratch_error.into_result()?;
    Ok((index, distance))
}

/// The fixed inputs of the query pass, shared by all its tasks.
struct QueryPass<'a, S: ?Sized> {
    source: &'a S,
    lists: &'a NeighbourLists,
    levels: &'a [Level<'a>],
    variant: Variant,
    /// Joint columns `col0..n` are read; the answer is the last `g` of them.
    col0: usize,
    n: usize,
    g: usize,
    width: usize,
    w_jaccard: f32,
    w_dist: f32,
}

impl<'a, S: SquaredDistances + ?Sized> QueryPass<'a, S> {
    /// The pass over the gallery of joint columns `gallery_col0..N`.
    fn new(
        source: &'a S,
        lists: &'a NeighbourLists,
        gallery_col0: usize,
        levels: &'a [Level<'a>],
        lambda: f64,
        variant: Variant,
    ) -> Self {
        let n = source.n_items();
        let col0 = levels
            .iter()
            .map(|l| l.first_col)
            .min()
            .unwrap_or(gallery_col0);
        QueryPass {
            source,
            lists,
            levels,
            variant,
            col0,
            n,
            g: n - gallery_col0,
            width: n - col0,
            // The reference computes (1 − λ)·J + λ·D in float32 with the weights cast once.
            w_jaccard: (1.0 - lambda) as f32,
            w_dist: lambda as f32,
        }
    }

    fn scratch(&self, tile: usize) -> Result<Scratch> {
        let width = self.width;
        Ok(Scratch {
            dist: try_zeroed(ensure_fits::<f32>(&[tile, width], TILES)?, TILES)?,
            row: RowScratch {
                shared: try_zeroed(width, TILES)?,
                level: try_zeroed(width, TILES)?,
                state: try_zeroed(width, TILES)?,
                mark: try_zeroed(width, TILES)?,
                epoch: 0,
                selector: SmallestK::default(),
                picked: Vec::new(),
            },
        })
    }

    /// Answer the query rows `r0..` that `out_rows` holds (one tile, read
    /// from the source at once); returns how many rows that was.
    fn answer_tile(&self, s: &mut Scratch, r0: usize, out_rows: &mut [f32]) -> usize {
        let g = self.g;
        let rows = out_rows.len() / g;
        self.each_answer_row(s, r0, rows, |r, answer| {
            out_rows[r * g..(r + 1) * g].copy_from_slice(answer)
        });
        rows
    }

    /// [`Self::answer_tile`] keeping each row's best `top` columns (rows of
    /// `top` entries in `index_rows` and `dist_rows`); returns the rows done.
    fn answer_tile_top(
        &self,
        s: &mut Scratch,
        (r0, top): (usize, usize),
        (selector, picked): (&mut SmallestK, &mut Vec<u32>),
        (index_rows, dist_rows): (&mut [u32], &mut [f32]),
    ) -> usize {
        let rows = index_rows.len() / top;
        self.each_answer_row(s, r0, rows, |r, answer| {
            selector.select(answer, top, picked);
            for (slot, &j) in picked.iter().enumerate() {
                index_rows[r * top + slot] = j;
                dist_rows[r * top + slot] = answer[j as usize];
            }
        });
        rows
    }

    /// Fill the distances of query rows `r0..r0 + rows`, combine each row's
    /// levels and hand its answer (the `g` gallery columns) to `emit(r, answer)`.
    #[inline]
    fn each_answer_row(
        &self,
        s: &mut Scratch,
        r0: usize,
        rows: usize,
        mut emit: impl FnMut(usize, &[f32]),
    ) {
        let (g, width) = (self.g, self.width);
        self.source
            .fill(r0..r0 + rows, self.col0..self.n, &mut s.dist);
        for r in 0..rows {
            let dist = &mut s.dist[r * width..(r + 1) * width];
            self.combine_row(&mut s.row, r0 + r, dist);
            emit(r, &s.row.state[width - g..]);
        }
    }

    /// Combine every level for query row `i` into `s.state`; `dist` is the
    /// row's raw distances to columns `col0..N`.
    #[inline]
    fn combine_row(&self, s: &mut RowScratch, i: usize, dist: &mut [f32]) {
        normalise_row(dist, self.lists.row_max[i]);
        // Marks of earlier rows carry older epochs. The paper variant moves to a
        // fresh epoch whenever it re-fixes (the fixed set is replaced); the
        // reference variant keeps one epoch per row (protected columns accumulate).
        s.epoch += 1;
        for (l, level) in self.levels.iter().enumerate() {
            // Positions in `state`, `dist` and `mark` of this level's columns.
            let lo = level.first_col - self.col0;
            self.mixed_distances(s, level, i, &dist[lo..]);
            let last = l + 1 == self.levels.len();
            match self.variant {
                Variant::Paper => paper_step(s, l, lo, level.k, last),
                Variant::Reference => reference_step(s, l, lo, level.k, last),
            }
        }
    }

    /// `s.level[..cols] = (1 − λ)·J_l + λ·D` for row `i` on this level's
    /// columns (`dist` holds `D` on them).
    #[inline]
    fn mixed_distances(&self, s: &mut RowScratch, level: &Level, i: usize, dist: &[f32]) {
        let cols = dist.len();
        jaccard_row(
            level.weights.row(i),
            level.inverted,
            &mut s.shared[..cols],
            &mut s.level[..cols],
        );
        for (d_l, &d) in s.level[..cols].iter_mut().zip(dist) {
            *d_l = *d_l * self.w_jaccard + d * self.w_dist;
        }
    }
}

/// Level `l` of the paper's Algorithm 1 on columns `lo..` of the row: add
/// `d_l` where not fixed, then (except after the last level) fix the `k`
/// best columns in a fresh epoch.
#[inline]
fn paper_step(s: &mut RowScratch, l: usize, lo: usize, k: usize, last: bool) {
    let state = &mut s.state[lo..];
    let mark = &s.mark[lo..];
    let cols = state.len();
    let d_l = &s.level[..cols];
    if l == 0 {
        for (x, &d) in state.iter_mut().zip(d_l) {
            // `0.0 + d` rather than `d`: it turns -0.0 into 0.0; kept so
            // the results stay the same bit for bit.
            *x = 0.0 + d;
        }
    } else {
        for c in 0..cols {
            if mark[c] != s.epoch {
                state[c] += d_l[c];
            }
        }
    }
    if !last {
        s.epoch += 1;
        s.selector.select(state, k, &mut s.picked);
        for &c in &s.picked {
            s.mark[lo + c as usize] = s.epoch;
        }
    }
}

/// Level `l` of the released code on columns `lo..` of the row: replace by
/// `d_l + l` outside the protected columns, then (except after the last
/// level) protect the `k + 1` best, in the row's one epoch.
#[inline]
fn reference_step(s: &mut RowScratch, l: usize, lo: usize, k: usize, last: bool) {
    let state = &mut s.state[lo..];
    let mark = &s.mark[lo..];
    let cols = state.len();
    let d_l = &s.level[..cols];
    if l == 0 {
        state.copy_from_slice(d_l);
    } else {
        let offset = l as f32;
        for c in 0..cols {
            if mark[c] != s.epoch {
                state[c] = d_l[c] + offset;
            }
        }
    }
    if !last {
        s.selector.select(state, k + 1, &mut s.picked);
        for &c in &s.picked {
            s.mark[lo + c as usize] = s.epoch;
        }
    }
}
