//! Top-k selection and the shared neighbour lists (`initial_rank` prefixes).
//!
//! Ranks are by value with ties broken by index, the order of a stable
//! argsort. Both are packed into one `u64` key so that selection is integer
//! comparisons only.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::source::{EmbeddingDistances, SquaredDistances};
use crate::error::{DyclError, FirstError, Result};
use crate::memory::{ensure_fits, try_capacity, try_zeroed, Purpose};
use crate::progress::Tracker;

/// What the neighbour lists are, and what to do when they do not fit.
pub(crate) const LISTS: Purpose = Purpose::new(
    "re-ranking: the neighbour lists (N × (k + 1) entries)",
    "use a smaller k or fewer items",
);

/// What the per-thread distance tiles are, and what to do when they do not fit.
pub(crate) const TILES: Purpose = Purpose::new(
    "re-ranking: the per-thread distance tiles (rows × N float32)",
    "use fewer items, or fewer threads (RAYON_NUM_THREADS)",
);

/// `(value, index)` as a `u64` whose integer order is value order, ties by
/// index. `-0.0` counts as `+0.0`, as in NumPy's sort.
#[inline(always)]
pub fn sort_key(value: f32, index: u32) -> u64 {
    let bits = (value + 0.0).to_bits();
    // Standard total-order trick: flip all bits of negatives, only the sign of positives.
    let flip = (((bits as i32) >> 31) as u32) | 0x8000_0000;
    (((bits ^ flip) as u64) << 32) | index as u64
}

/// The value packed into a [`sort_key`] (`-0.0` comes back as `+0.0`).
#[inline]
pub fn key_value(key: u64) -> f32 {
    let ordered = (key >> 32) as u32;
    let bits = if ordered & 0x8000_0000 != 0 {
        ordered ^ 0x8000_0000
    } else {
        !ordered
    };
    f32::from_bits(bits)
}

/// Selects the `k` smallest entries of a row, reusing its buffer between rows.
#[derive(Default)]
pub struct SmallestK {
    keys: Vec<u64>,
}

impl SmallestK {
    /// Replace `out` by the indices of the `k` smallest `values` (all of them
    /// if `k >= values.len()`), in ranked order, ties by index.
    ///
    /// Keys below the running threshold go to a buffer that is cut back to
    /// `k` whenever it fills: one comparison per element for almost every
    /// element, no full sort.
    pub fn select(&mut self, values: &[f32], k: usize, out: &mut Vec<u32>) {
        out.clear();
        let k = k.min(values.len());
        if k == 0 {
            return;
        }
        let cap = (2 * k).max(k + 512);
        let keys = &mut self.keys;
        keys.clear();
        keys.reserve(cap);
        let mut threshold = u64::MAX;
        // `key < threshold` implies `v <= threshold_value`: a float compare
        // that rejects almost every element before a key is built.
        let mut threshold_value = f32::INFINITY;
        for (j, &v) in values.iter().enumerate() {
            if v <= threshold_value {
                let key = sort_key(v, j as u32);
                if key < threshold {
                    keys.push(key);
                    if keys.len() == cap {
                        keys.select_nth_unstable(k - 1);
                        keys.truncate(k);
                        threshold = keys[k - 1];
                        threshold_value = key_value(threshold);
                    }
                }
            }
        }
        if keys.len() > k {
            keys.select_nth_unstable(k - 1);
            keys.truncate(k);
        }
        keys.sort_unstable();
        out.extend(keys.iter().map(|&key| key as u32));
    }
}

/// Maximum of non-negative values (0 for none) and whether all are finite.
/// Written as plain compare-selects over lanes so that it vectorises.
#[inline]
pub fn max_and_finite(values: &[f32]) -> (f32, bool) {
    const LANES: usize = 16;
    let mut max = [0f32; LANES];
    let mut finite = [true; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for l in 0..LANES {
            let v = chunk[l];
            finite[l] &= v <= f32::MAX;
            max[l] = if v > max[l] { v } else { max[l] };
        }
    }
    let mut m = 0f32;
    let mut ok = finite.iter().all(|&f| f);
    for &v in tail.iter().chain(max.iter()) {
        ok &= v <= f32::MAX;
        m = if v > m { v } else { m };
    }
    (m, ok)
}

/// `values /= max` like the reference's column normalisation; an all-zero
/// row (max 0) stays zero instead of becoming NaN.
#[inline]
pub fn normalise_row(values: &mut [f32], max: f32) {
    if max > 0.0 {
        for v in values.iter_mut() {
            *v /= max;
        }
    }
}

/// The first `len` entries of every row of `initial_rank`, with their
/// normalised distances, and each row's normalisation maximum.
pub struct NeighbourLists {
    /// Number of items `N`.
    pub n: usize,
    /// Entries per row, `min(N, max(k + 1, k2))` over the levels requested.
    pub len: usize,
    /// Row-major `N × len` item indices.
    pub index: Vec<u32>,
    /// Row-major `N × len` values of `D` at those indices.
    pub dist: Vec<f32>,
    /// Per row of `D`, the maximum of `A²` over its column (its divisor).
    pub row_max: Vec<f32>,
}

impl NeighbourLists {
    pub fn row(&self, i: usize) -> &[u32] {
        &self.index[i * self.len..(i + 1) * self.len]
    }

    pub fn row_dist(&self, i: usize) -> &[f32] {
        &self.dist[i * self.len..(i + 1) * self.len]
    }

    /// One blocked pass over `D`: tiles of rows are filled by the source,
    /// normalised and reduced to their top `len`. Fails with the source's
    /// [`SquaredDistances::non_finite_error`] if it produced a non-finite
    /// value, or when a buffer cannot be allocated.
    pub fn build<S: SquaredDistances + ?Sized>(
        source: &S,
        len: usize,
        tracker: &Tracker,
    ) -> Result<Self> {
        Self::build_rows(source, 0..source.n_items(), len, tracker)
    }

    /// [`NeighbourLists::build`] for the rows `rows` of the joint set only,
    /// against all `N` columns: `n` is still `N`, but `index`, `dist` and
    /// `row_max` hold `rows.len()` rows, `row(r)` being item `rows.start + r`.
    /// The row blocks of a split computation concatenate to the full lists.
    pub fn build_rows<S: SquaredDistances + ?Sized>(
        source: &S,
        rows: Range<usize>,
        len: usize,
        tracker: &Tracker,
    ) -> Result<Self> {
        let n = source.n_items();
        let fill = |r: Range<usize>, buf: &mut [f32]| source.fill(r, 0..n, buf);
        let selected = select_rows(
            n,
            source.tile_rows_for(rows.len()),
            rows,
            len,
            &fill,
            false,
            tracker,
        )?;
        if selected.non_finite {
            return Err(source.non_finite_error());
        }
        Ok(selected.lists)
    }
}

/// Neighbour lists with the cosine distances `1 − a·b` they were ranked by.
pub struct CosineLists {
    /// Indices, normalised `D` values and divisors, as [`NeighbourLists::build_rows`].
    pub lists: NeighbourLists,
    /// Row-major `rows × len` cosine distances at `lists.index`: exactly the
    /// values whose squares are `A²` (so `distance² / max_distance²` is `D`).
    pub distance: Vec<f32>,
    /// Per row, the largest `|1 − a·b|` over all items: its square is `row_max`.
    pub max_distance: Vec<f32>,
}

impl CosineLists {
    /// [`NeighbourLists::build_rows`] on embeddings, keeping the distances
    /// before squaring so that a caller can hand them back
    /// ([`super::given::GivenNeighbours`]) and get the very same `D`.
    pub fn build_rows(
        source: &EmbeddingDistances,
        rows: Range<usize>,
        len: usize,
        tracker: &Tracker,
    ) -> Result<Self> {
        let n = source.n_items();
        let fill = |r: Range<usize>, buf: &mut [f32]| source.fill_cosine(r, 0..n, buf);
        let selected = select_rows(
            n,
            source.tile_rows_for(rows.len()),
            rows,
            len,
            &fill,
            true,
            tracker,
        )?;
        if selected.non_finite {
            return Err(source.non_finite_error());
        }
        let (distance, max_distance) = selected.cosine;
        Ok(CosineLists {
            lists: selected.lists,
            distance,
            max_distance,
        })
    }
}

/// What [`select_rows`] produced.
struct Selected {
    lists: NeighbourLists,
    /// The unsquared values and per-row maxima of `|value|` (empty unless asked for).
    cosine: (Vec<f32>, Vec<f32>),
    /// A tile held NaN or inf (the lists are then incomplete).
    non_finite: bool,
}

/// The output rows of one tile.
struct TileOut<'a> {
    first_row: usize,
    index: &'a mut [u32],
    dist: &'a mut [f32],
    maxes: &'a mut [f32],
    /// Unsquared values and their row maxima, when the fill is unsquared.
    cosine: Option<(&'a mut [f32], &'a mut [f32])>,
}

/// Per-thread buffers of [`select_rows`].
struct TileScratch {
    buf: Vec<f32>,
    selector: SmallestK,
    picked: Vec<u32>,
    /// One row before squaring (unsquared fills only).
    raw: Vec<f32>,
}

/// The blocked pass behind [`NeighbourLists::build_rows`]: `fill(rows, out)`
/// writes tiles of `rows.len() × n` values, squared distances or (when
/// `unsquared`) the values to square.
fn select_rows(
    n: usize,
    tile: usize,
    rows: Range<usize>,
    len: usize,
    fill: &(dyn Fn(Range<usize>, &mut [f32]) + Sync),
    unsquared: bool,
    tracker: &Tracker,
) -> Result<Selected> {
    if rows.start >= rows.end || rows.end > n {
        return Err(DyclError::invalid(
            "rows",
            format!(
                "must be a non-empty range (start, stop) within [0, N] = [0, {n}], got {rows:?}"
            ),
        ));
    }
    if len == 0 {
        return Err(DyclError::invalid(
            "k",
            "must keep at least one neighbour per item",
        ));
    }
    let (len, tile) = (len.min(n), tile.max(1));
    let mut selected = Selected::zeroed(n, rows.len(), len, unsquared)?;
    let tile_cells = ensure_fits::<f32>(&[tile, n], TILES)?;
    let outs = selected.tiles(rows.start, tile)?;
    let bad = AtomicBool::new(false);
    let scratch_error = FirstError::default();
    outs.into_par_iter().for_each_init(
        || -> Result<TileScratch> {
            Ok(TileScratch {
                buf: try_zeroed::<f32>(tile_cells, TILES)?,
                selector: SmallestK::default(),
                picked: try_capacity::<u32>(len, LISTS)?,
                raw: try_zeroed::<f32>(if unsquared { n } else { 0 }, TILES)?,
            })
        },
        |scratch, out| match scratch {
            Err(err) => scratch_error.record(err),
            Ok(_) if tracker.cancelled() => {}
            Ok(s) => {
                let rows = out.maxes.len();
                if !select_tile(s, out, n, len, fill) {
                    bad.store(true, Ordering::Relaxed);
                }
                tracker.advance(rows);
            }
        },
    );
    scratch_error.into_result()?;
    selected.non_finite = bad.into_inner();
    Ok(selected)
}

impl Selected {
    /// Zeroed outputs for `count` rows of `len` entries (and their unsquared values if asked).
    fn zeroed(n: usize, count: usize, len: usize, unsquared: bool) -> Result<Self> {
        let index = try_zeroed::<u32>(ensure_fits::<u32>(&[count, len], LISTS)?, LISTS)?;
        let dist = try_zeroed::<f32>(count * len, LISTS)?;
        let row_max = try_zeroed::<f32>(count, LISTS)?;
        let (cells, maxes) = if unsquared {
            (count * len, count)
        } else {
            (0, 0)
        };
        let cosine = (
            try_zeroed::<f32>(cells, LISTS)?,
            try_zeroed::<f32>(maxes, LISTS)?,
        );
        let lists = NeighbourLists {
            n,
            len,
            index,
            dist,
            row_max,
        };
        Ok(Selected {
            lists,
            cosine,
            non_finite: false,
        })
    }

    /// The outputs cut into tiles of `tile` rows, the first being item `first_row`.
    fn tiles(&mut self, first_row: usize, tile: usize) -> Result<Vec<TileOut<'_>>> {
        let len = self.lists.len;
        let lists = &mut self.lists;
        let unsquared = !self.cosine.1.is_empty();
        let mut cos_chunks = self
            .cosine
            .0
            .chunks_mut(tile * len)
            .zip(self.cosine.1.chunks_mut(tile));
        let mut outs = try_capacity::<TileOut>(lists.row_max.len().div_ceil(tile), LISTS)?;
        for (t, ((index, dist), maxes)) in lists
            .index
            .chunks_mut(tile * len)
            .zip(lists.dist.chunks_mut(tile * len))
            .zip(lists.row_max.chunks_mut(tile))
            .enumerate()
        {
            let cosine = if unsquared { cos_chunks.next() } else { None };
            let first_row = first_row + t * tile;
            outs.push(TileOut {
                first_row,
                index,
                dist,
                maxes,
                cosine,
            });
        }
        Ok(outs)
    }
}

/// Fill one tile, normalise its rows and keep their top `len`; false if a
/// value was not finite.
fn select_tile(
    s: &mut TileScratch,
    mut out: TileOut,
    n: usize,
    len: usize,
    fill: &(dyn Fn(Range<usize>, &mut [f32]) + Sync),
) -> bool {
    let rows = out.maxes.len();
    fill(out.first_row..out.first_row + rows, &mut s.buf);
    for r in 0..rows {
        let values = &mut s.buf[r * n..(r + 1) * n];
        if let Some((_, cos_max)) = &mut out.cosine {
            s.raw.copy_from_slice(values);
            // Rounding is monotone, so the largest square is the square of the largest |value|.
            let mut largest = 0f32;
            for v in values.iter_mut() {
                largest = largest.max(v.abs());
                *v = *v * *v;
            }
            cos_max[r] = largest;
        }
        let (max, finite) = max_and_finite(values);
        if !finite {
            return false;
        }
        normalise_row(values, max);
        out.maxes[r] = max;
        s.selector.select(values, len, &mut s.picked);
        for (slot, &j) in s.picked.iter().enumerate() {
            out.index[r * len + slot] = j;
            out.dist[r * len + slot] = values[j as usize];
            if let Some((cos, _)) = &mut out.cosine {
                cos[r * len + slot] = s.raw[j as usize];
            }
        }
    }
    true
}

/// For every item `i`, the `(j, position)` pairs such that `i` is at that
/// position of `j`'s neighbour list: "is `i` among the first `k + 1` of `j`"
/// becomes `position <= k`, for any `k < len`.
pub struct InLists {
    offsets: Vec<usize>,
    entries: Vec<(u32, u32)>,
}

impl InLists {
    pub fn build(lists: &NeighbourLists) -> Result<Self> {
        let n = lists.n;
        let mut offsets = try_zeroed::<usize>(n.saturating_add(1), LISTS)?;
        for &i in &lists.index {
            offsets[i as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut cursor = try_capacity::<usize>(n, LISTS)?;
        cursor.extend_from_slice(&offsets[..n]);
        let mut entries = try_zeroed::<(u32, u32)>(lists.index.len(), LISTS)?;
        for j in 0..n {
            for (pos, &i) in lists.row(j).iter().enumerate() {
                let slot = &mut cursor[i as usize];
                entries[*slot] = (j as u32, pos as u32);
                *slot += 1;
            }
        }
        Ok(InLists { offsets, entries })
    }

    pub fn of(&self, i: usize) -> &[(u32, u32)] {
        &self.entries[self.offsets[i]..self.offsets[i + 1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_smallest(values: &[f32], k: usize) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..values.len() as u32).collect();
        // stable sort by value = ties by index
        idx.sort_by(|&a, &b| values[a as usize].partial_cmp(&values[b as usize]).unwrap());
        idx.truncate(k);
        idx
    }

    #[test]
    fn key_orders_like_a_stable_sort() {
        let vals = [0.5f32, -1.0, 0.0, -0.0, 3.0, -0.0, 1e-30, -1e-30, 0.5];
        let mut keyed: Vec<u64> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| sort_key(v, i as u32))
            .collect();
        keyed.sort_unstable();
        let got: Vec<u32> = keyed.iter().map(|&k| k as u32).collect();
        assert_eq!(got, reference_smallest(&vals, vals.len()));
    }

    #[test]
    fn key_value_round_trips() {
        for v in [
            0.0f32,
            -0.0,
            1.5,
            -2.25,
            f32::MAX,
            -f32::MAX,
            1e-40,
            -1e-40,
            f32::INFINITY,
        ] {
            let back = key_value(sort_key(v, 7));
            assert_eq!(back, v);
            assert_eq!(back.to_bits(), (v + 0.0).to_bits());
        }
    }

    #[test]
    fn selection_matches_full_sort_with_ties() {
        let mut sel = SmallestK::default();
        let mut out = Vec::new();
        // many ties and a long row to force several buffer compactions
        let vals: Vec<f32> = (0..5000u32)
            .map(|i| ((i * 7919) % 97) as f32 / 7.0)
            .collect();
        for k in [1, 2, 20, 293, 600, 4999, 5000, 6000] {
            sel.select(&vals, k, &mut out);
            assert_eq!(out, reference_smallest(&vals, k.min(vals.len())), "k = {k}");
        }
        // decreasing values: every element passes the threshold
        let desc: Vec<f32> = (0..3000).rev().map(|i| i as f32).collect();
        sel.select(&desc, 21, &mut out);
        assert_eq!(out, reference_smallest(&desc, 21));
        // negative values and signed zeros (Jaccard mixes can dip below 0 by rounding)
        let signed: Vec<f32> = (0..2000)
            .map(|i| ((i * 37) % 101) as f32 - 50.0)
            .chain([-0.0, 0.0, -0.0])
            .collect();
        for k in [1, 5, 100, 1500] {
            sel.select(&signed, k, &mut out);
            assert_eq!(out, reference_smallest(&signed, k), "k = {k}");
        }
    }
}
