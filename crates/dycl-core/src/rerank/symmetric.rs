//! The neighbour lists of embedding distances from one triangle of the
//! similarity matrix.
//!
//! `D`'s squared distances before normalisation are symmetric, and
//! [`similarity_tile`] gives `x_i · x_j` and `x_j · x_i` the same bits (the
//! same chain of multiply-adds). So the joint set is cut into blocks of
//! rows, and each block pair (I, J) with J ≥ I is computed once: its rows
//! feed the rows of I, its columns the rows of J. Half the flops of
//! [`NeighbourLists::build`], and each GEMM packs two blocks, not the whole set.
//!
//! A row's normalisation maximum is known only after its last block, so each
//! row keeps, on the raw values, every candidate within a relative `SLACK` (2⁻²⁰)
//! of its running `len`-th smallest; once all blocks are in, the candidates
//! are normalised and ranked exactly as the tiled pass ranks the whole row.
//! Dividing by the maximum is monotone and moves a value by at most half an
//! ulp (the squared distances of unit rows are 0 or far above the
//! subnormals), so a value more than `SLACK` above the `len`-th smallest
//! normalises strictly above it and cannot make the list: the lists have the
//! same bits as the tiled pass's. A row with more near-ties than its buffer
//! holds is recomputed at the end with the tiled pass's per-row procedure.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ndarray::{s, ArrayViewMut2};
use rayon::prelude::*;

use super::knn::{
    key_value, max_and_finite, normalise_row, sort_key, NeighbourLists, SmallestK, LISTS, TILES,
};
use super::source::{EmbeddingDistances, SquaredDistances};
use crate::distance::similarity_tile;
use crate::error::Result;
use crate::memory::{try_capacity, try_vec, try_zeroed};
use crate::progress::Tracker;

/// Relative margin above a row's running `len`-th smallest raw value within
/// which candidates are kept: many ulps, so that rounding cannot undo it.
const SLACK: f32 = 1.0 / (1u32 << 20) as f32;

/// Rows per block at most: a pair packs 2 × 1024 rows for 1024² outputs.
const MAX_BLOCK: usize = 1024;

/// Rows per block at least (smaller GEMMs run inefficiently).
const MIN_BLOCK: usize = 64;

/// The neighbour lists of `source` (all rows, `len` entries each), or `None`
/// when the candidate buffers would take more memory than the tiles of the
/// tiled pass, which the caller then runs instead.
pub fn neighbour_lists(
    source: &EmbeddingDistances,
    len: usize,
    tracker: &Tracker,
) -> Option<Result<NeighbourLists>> {
    let n = source.n_items();
    let len = len.min(n);
    if len == 0 {
        return None;
    }
    let threads = rayon::current_num_threads().max(1);
    let cap = 2 * len + 32;
    let tile_bytes = threads
        .saturating_mul(source.tile_rows())
        .saturating_mul(n)
        .saturating_mul(4);
    if n.saturating_mul(cap).saturating_mul(8) > tile_bytes {
        return None;
    }
    let block = n.div_ceil(2 * threads).clamp(MIN_BLOCK, MAX_BLOCK);
    let block = n.div_ceil(n.div_ceil(block));
    let pass = Pass::new(source, len, cap, block).ok()?;
    Some(pass.run(tracker).map(|(lists, _)| lists))
}

/// Values compared with their bounds at once, before any is offered: almost
/// every group has none within its bounds, and the compare vectorises.
const LANES: usize = 16;

/// Whether some `values[i] <= bounds[i]` (over the shorter of the two).
#[inline(always)]
fn any_at_most(values: &[f32], bounds: &[f32]) -> bool {
    values
        .iter()
        .zip(bounds)
        .fold(false, |hit, (v, b)| hit | (v <= b))
}

/// The candidates of one block of rows, on raw squared distances.
struct Candidates {
    /// Buffer capacity per row.
    cap: usize,
    /// Row-major `rows × cap` sort keys of `(raw value, column)`.
    keys: Vec<u64>,
    count: Vec<usize>,
    /// Values above a row's bound are not candidates.
    bound: Vec<f32>,
    /// Running maximum per row (its normalisation divisor at the end).
    max: Vec<f32>,
    /// Rows whose near-ties overflowed the buffer: recomputed at the end.
    overflow: Vec<bool>,
    finite: bool,
}

impl Candidates {
    fn new(rows: usize, cap: usize) -> Result<Self> {
        let mut bound = try_capacity::<f32>(rows, LISTS)?;
        bound.resize(rows, f32::INFINITY);
        Ok(Candidates {
            cap,
            keys: try_zeroed::<u64>(rows.saturating_mul(cap), LISTS)?,
            count: try_zeroed::<usize>(rows, LISTS)?,
            bound,
            max: try_zeroed::<f32>(rows, LISTS)?,
            overflow: try_vec(rows, false, LISTS)?,
            finite: true,
        })
    }

    /// Offer value `v` at column `col` to row `r`.
    #[inline(always)]
    fn offer(&mut self, r: usize, v: f32, col: usize, len: usize) {
        if v <= self.bound[r] {
            let at = r * self.cap + self.count[r];
            self.keys[at] = sort_key(v, col as u32);
            self.count[r] += 1;
            if self.count[r] == self.cap {
                self.compact(r, len);
            }
        }
    }

    /// Cut row `r`'s full buffer back to its `len` smallest and the values
    /// within [`SLACK`] of the `len`-th; give up on the row if that frees
    /// too little room.
    fn compact(&mut self, r: usize, len: usize) {
        let cap = self.cap;
        let keys = &mut self.keys[r * cap..(r + 1) * cap];
        keys.select_nth_unstable(len - 1);
        let bound = key_value(keys[len - 1]) * (1.0 + SLACK);
        let mut kept = len;
        for t in len..cap {
            if key_value(keys[t]) <= bound {
                keys[kept] = keys[t];
                kept += 1;
            }
        }
        if kept > cap - cap / 4 {
            self.overflow[r] = true;
            self.bound[r] = f32::NEG_INFINITY;
            self.count[r] = 0;
        } else {
            self.count[r] = kept;
            self.bound[r] = bound;
        }
    }

    /// Row `r` sees `values` at columns `first_col..`.
    fn take_row(&mut self, r: usize, values: &[f32], first_col: usize, len: usize) {
        let (max, finite) = max_and_finite(values);
        self.finite &= finite;
        if max > self.max[r] {
            self.max[r] = max;
        }
        for c0 in (0..values.len()).step_by(LANES) {
            let chunk = &values[c0..(c0 + LANES).min(values.len())];
            if any_at_most(chunk, &[self.bound[r]; LANES]) {
                for (c, &v) in chunk.iter().enumerate() {
                    self.offer(r, v, first_col + c0 + c, len);
                }
            }
        }
    }

    /// The rows of this block are the columns of the row-major `tile`
    /// (`width` wide), whose rows are items `first_row..`.
    fn take_columns(&mut self, tile: &[f32], width: usize, first_row: usize, len: usize) {
        for (i, line) in tile.chunks_exact(width).enumerate() {
            let (_, finite) = max_and_finite(line);
            self.finite &= finite;
            for (m, &v) in self.max.iter_mut().zip(line) {
                *m = if v > *m { v } else { *m };
            }
            for c0 in (0..width).step_by(LANES) {
                let end = (c0 + LANES).min(width);
                if any_at_most(&line[c0..end], &self.bound[c0..end]) {
                    for (c, &v) in line[c0..end].iter().enumerate() {
                        self.offer(c0 + c, v, first_row + i, len);
                    }
                }
            }
        }
    }

    /// Row `r`'s list: its candidates normalised and ranked like the tiled
    /// pass ranks a row. False if the row overflowed (nothing written).
    fn finish(&mut self, r: usize, len: usize, index: &mut [u32], dist: &mut [f32]) -> bool {
        // Fewer than `len` candidates only happens with non-finite values
        // (never offered), which fail the call anyway.
        if self.overflow[r] || self.count[r] < len {
            return false;
        }
        let max = self.max[r];
        let keys = &mut self.keys[r * self.cap..r * self.cap + self.count[r]];
        for key in keys.iter_mut() {
            let v = key_value(*key);
            let normalised = if max > 0.0 { v / max } else { v };
            *key = sort_key(normalised, *key as u32);
        }
        keys.select_nth_unstable(len - 1);
        let top = &mut keys[..len];
        top.sort_unstable();
        for ((slot_index, slot_dist), &key) in index.iter_mut().zip(dist.iter_mut()).zip(top.iter())
        {
            *slot_index = key as u32;
            *slot_dist = key_value(key);
        }
        true
    }
}

/// One symmetric pass: the blocks, their candidates and the pairs to compute.
struct Pass<'a> {
    source: &'a EmbeddingDistances,
    n: usize,
    len: usize,
    block: usize,
    candidates: Vec<Mutex<Candidates>>,
    /// Per block, the pairs containing it still to compute (progress).
    remaining: Vec<AtomicUsize>,
}

/// A poisoned lock still holds valid candidates (updates never panic midway).
fn lock(m: &Mutex<Candidates>) -> MutexGuard<'_, Candidates> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<'a> Pass<'a> {
    fn new(source: &'a EmbeddingDistances, len: usize, cap: usize, block: usize) -> Result<Self> {
        let n = source.n_items();
        let blocks = n.div_ceil(block);
        let mut candidates = try_capacity::<Mutex<Candidates>>(blocks, LISTS)?;
        let mut remaining = try_capacity::<AtomicUsize>(blocks, LISTS)?;
        for b in 0..blocks {
            let rows = block.min(n - b * block);
            candidates.push(Mutex::new(Candidates::new(rows, cap)?));
            remaining.push(AtomicUsize::new(blocks));
        }
        Ok(Pass {
            source,
            n,
            len,
            block,
            candidates,
            remaining,
        })
    }

    fn rows(&self, b: usize) -> Range<usize> {
        b * self.block..((b + 1) * self.block).min(self.n)
    }

    /// The lists, and how many rows were recomputed after overflowing.
    fn run(self, tracker: &Tracker) -> Result<(NeighbourLists, usize)> {
        let blocks = self.candidates.len();
        let mut pairs = try_capacity::<(usize, usize)>(blocks * (blocks + 1) / 2, TILES)?;
        pairs.extend((0..blocks).flat_map(|i| (i..blocks).map(move |j| (i, j))));
        let tile_cells = self.block * self.block;
        let scratch_error = crate::error::FirstError::default();
        pairs.par_iter().for_each_init(
            || try_zeroed::<f32>(tile_cells, TILES),
            |tile, &(i, j)| match tile {
                Ok(tile) if !tracker.cancelled() => self.pair(i, j, tile, tracker),
                Ok(_) => {}
                Err(err) => scratch_error.record(err),
            },
        );
        scratch_error.into_result()?;
        self.lists(tracker)
    }

    /// Compute block pair (I, J) and feed it to both blocks' rows.
    fn pair(&self, i: usize, j: usize, tile: &mut [f32], tracker: &Tracker) {
        let (rows_i, rows_j) = (self.rows(i), self.rows(j));
        let (h, w) = (rows_i.len(), rows_j.len());
        let tile = &mut tile[..h * w];
        let joint = self.source.joint();
        let view = ArrayViewMut2::from_shape((h, w), &mut *tile).expect("tile holds h × w");
        similarity_tile(
            joint.slice(s![rows_i.clone(), ..]),
            joint.slice(s![rows_j.clone(), ..]),
            view,
        );
        // The same squared distance as EmbeddingDistances::fill.
        for v in tile.iter_mut() {
            let d = 1.0 - *v;
            *v = d * d;
        }
        {
            let mut c = lock(&self.candidates[i]);
            for (r, values) in tile.chunks_exact(w).enumerate() {
                c.take_row(r, values, rows_j.start, self.len);
            }
        }
        if j != i {
            lock(&self.candidates[j]).take_columns(tile, w, rows_i.start, self.len);
        }
        let both = [i, j];
        for &b in if i == j { &both[..1] } else { &both[..] } {
            if self.remaining[b].fetch_sub(1, Ordering::Relaxed) == 1 {
                tracker.advance(self.rows(b).len());
            }
        }
    }

    /// Every row's list from its candidates; overflowed rows recomputed.
    fn lists(self, tracker: &Tracker) -> Result<(NeighbourLists, usize)> {
        let (n, len, block) = (self.n, self.len, self.block);
        let mut index = try_zeroed::<u32>(n.saturating_mul(len), LISTS)?;
        let mut dist = try_zeroed::<f32>(n * len, LISTS)?;
        let mut row_max = try_zeroed::<f32>(n, LISTS)?;
        let bad = AtomicBool::new(false);
        let overflowed = Mutex::new(Vec::new());
        self.candidates
            .into_par_iter()
            .zip(index.par_chunks_mut(block * len))
            .zip(dist.par_chunks_mut(block * len))
            .zip(row_max.par_chunks_mut(block))
            .enumerate()
            .for_each(|(b, (((c, index), dist), maxes))| {
                let mut c = c.into_inner().unwrap_or_else(|p| p.into_inner());
                bad.fetch_or(!c.finite, Ordering::Relaxed);
                maxes.copy_from_slice(&c.max);
                for r in 0..maxes.len() {
                    let span = r * len..(r + 1) * len;
                    if !c.finish(r, len, &mut index[span.clone()], &mut dist[span]) {
                        let mut list = overflowed.lock().unwrap_or_else(|p| p.into_inner());
                        list.push(b * block + r);
                    }
                }
            });
        if bad.into_inner() {
            return Err(self.source.non_finite_error());
        }
        let overflowed = overflowed.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut lists = NeighbourLists {
            n,
            len,
            index,
            dist,
            row_max,
        };
        if !tracker.cancelled() {
            recompute_rows(self.source, &mut lists, &overflowed)?;
        }
        Ok((lists, overflowed.len()))
    }
}

/// Rows `rows` of `lists` by the tiled pass's procedure on the whole row.
fn recompute_rows(
    source: &EmbeddingDistances,
    lists: &mut NeighbourLists,
    rows: &[usize],
) -> Result<()> {
    let (n, len) = (lists.n, lists.len);
    let mut values = try_zeroed::<f32>(n, TILES)?;
    let mut selector = SmallestK::default();
    let mut picked = try_capacity::<u32>(len, LISTS)?;
    for &r in rows {
        source.fill(r..r + 1, 0..n, &mut values);
        let (max, _) = max_and_finite(&values);
        normalise_row(&mut values, max);
        lists.row_max[r] = max;
        selector.select(&values, len, &mut picked);
        for (slot, &j) in picked.iter().enumerate() {
            lists.index[r * len + slot] = j;
            lists.dist[r * len + slot] = values[j as usize];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// Deterministic clustered embeddings with exact duplicates: `clusters`
    /// centres, each row a centre plus noise, every `dup`-th row a copy.
    fn embeddings(n: usize, d: usize, clusters: usize, dup: usize, seed: u64) -> Array2<f32> {
        let mut state = seed;
        let mut noise = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let centres = Array2::from_shape_fn((clusters, d), |_| noise());
        let mut x =
            Array2::from_shape_fn((n, d), |(i, j)| centres[[i % clusters, j]] + 0.3 * noise());
        for i in (dup..n).step_by(dup.max(1)) {
            let copy = x.row(i - dup).to_owned();
            x.row_mut(i).assign(&copy);
        }
        x
    }

    fn assert_same_lists(a: &NeighbourLists, b: &NeighbourLists, what: &str) {
        assert_eq!((a.n, a.len), (b.n, b.len), "{what}");
        assert_eq!(a.index, b.index, "{what}: index");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.dist), bits(&b.dist), "{what}: dist");
        assert_eq!(bits(&a.row_max), bits(&b.row_max), "{what}: row_max");
    }

    #[test]
    fn triangle_lists_are_the_tiled_lists_bit_for_bit() {
        let tracker = Tracker::default();
        // several blocks (n > 64 per thread), block tails, duplicates that
        // tie exactly, and lengths from 1 to most of a row
        for (q, g, d, clusters, dup, len) in [
            (5, 60, 16, 4, 0, 7),
            (40, 700, 24, 30, 0, 21),
            (13, 500, 8, 3, 7, 21),
            (20, 380, 12, 10, 3, 150),
            (1, 300, 3, 2, 5, 1),
            (30, 170, 10, 5, 0, 200),
        ] {
            let x = embeddings(
                q + g,
                d,
                clusters,
                if dup == 0 { usize::MAX } else { dup },
                (q * g) as u64,
            );
            let source =
                EmbeddingDistances::new(x.slice(s![..q, ..]), x.slice(s![q.., ..])).unwrap();
            let want = NeighbourLists::build(&source, len, &tracker).unwrap();
            for block in [MIN_BLOCK, 97, 1000] {
                let pass =
                    Pass::new(&source, len.min(q + g), 2 * len.min(q + g) + 32, block).unwrap();
                let (got, _) = pass.run(&tracker).unwrap();
                assert_same_lists(&got, &want, &format!("q {q} g {g} len {len} block {block}"));
            }
            let got = neighbour_lists(&source, len, &tracker)
                .expect("fits")
                .unwrap();
            assert_same_lists(&got, &want, &format!("q {q} g {g} len {len}"));
        }
    }

    #[test]
    fn rows_with_more_near_ties_than_their_buffer_are_recomputed() {
        // 400 copies of one item: every row has hundreds of exact ties, far
        // more than a buffer of 2·len + 32 holds.
        let tracker = Tracker::default();
        let mut x = embeddings(600, 8, 6, usize::MAX, 3);
        let first = x.row(0).to_owned();
        for i in 100..500 {
            x.row_mut(i).assign(&first);
        }
        let source = EmbeddingDistances::new(x.slice(s![..10, ..]), x.slice(s![10.., ..])).unwrap();
        let want = NeighbourLists::build(&source, 21, &tracker).unwrap();
        let pass = Pass::new(&source, 21, 74, 64).unwrap();
        let (got, recomputed) = pass.run(&tracker).unwrap();
        assert!(recomputed >= 400, "{recomputed} rows recomputed");
        assert_same_lists(&got, &want, "near ties");
    }

    #[test]
    fn values_that_normalisation_makes_equal_keep_the_order_by_index() {
        // Two neighbouring floats that divide to the same float: the larger
        // at column 0, the smaller at column 1. On raw values column 1 ranks
        // first; after normalisation they tie and column 0 (lower index)
        // ranks first. The buffer must keep column 0 through compaction.
        let max = 3.0f32;
        let mut small = 1.9f32;
        while small / max != f32::from_bits(small.to_bits() + 1) / max {
            small = f32::from_bits(small.to_bits() + 1);
        }
        let large = f32::from_bits(small.to_bits() + 1);
        let mut row = vec![large, small];
        row.extend(std::iter::repeat_n(max, 100));
        let len = 1;
        let mut c = Candidates::new(1, 2 * len + 32).unwrap();
        c.take_row(0, &row, 0, len);
        let (mut index, mut dist) = (vec![0u32; len], vec![0f32; len]);
        assert!(c.finish(0, len, &mut index, &mut dist));
        // the tiled pass's definition: normalise the whole row, then rank
        let mut normalised = row.clone();
        normalise_row(&mut normalised, max);
        let mut want = Vec::new();
        SmallestK::default().select(&normalised, len, &mut want);
        assert_eq!(want, vec![0]);
        assert_eq!(index, want);
        assert_eq!(dist, vec![normalised[0]]);
    }
}
