//! Ranking a gallery for one query without sorting all of it.
//!
//! Every metric of DESIGN §4 depends only on the ranks of the *positive*
//! items (level > 0): negatives have zero relevance, zero gain and are never
//! relevant at any scale. So instead of sorting the whole gallery row we sort
//! the positives (usually a small share) and count, for each gap between two
//! consecutive positives, how many negatives fall into it (one binary search
//! per negative). That is `O(P log P + N log P)` instead of `O(N log N)` and
//! touches each distance once.
//!
//! Items are compared through a `u128` key: the distance mapped to an
//! order-preserving `u64` in the high half, then the gallery index, then the
//! level in the low byte. Indices are unique, so the level never decides an
//! order; it rides along so no second lookup is needed after sorting. Equal
//! distances are therefore ordered by gallery index, as DESIGN §4 requires.

use crate::error::Result;
use crate::memory::{try_capacity, try_zeroed, Purpose};

/// Order-preserving map from a finite `f64` to `u64`: `a < b ⇔ key(a) < key(b)`.
/// `-0.0` and `0.0` map to the same key (they are equal distances).
#[inline]
pub(crate) fn order_key(x: f64) -> u64 {
    let bits = (x + 0.0).to_bits(); // -0.0 + 0.0 == +0.0
                                    // negative: flip every bit; positive: flip the sign bit (branch-free)
    let mask = (((bits as i64) >> 63) as u64) | (1 << 63);
    bits ^ mask
}

/// Sort key of gallery item `index` (< 2^56) at `distance` with `level`.
#[inline]
pub(crate) fn item_key(distance: f64, index: usize, level: u8) -> u128 {
    ((order_key(distance) as u128) << 64) | ((index as u128) << 8) | level as u128
}

#[inline]
pub(crate) fn key_index(key: u128) -> usize {
    ((key as u64) >> 8) as usize
}

#[inline]
pub(crate) fn key_level(key: u128) -> u8 {
    key as u8
}

/// What the ranking buffers are, and what to do when they do not fit.
pub(crate) const SCRATCH: Purpose = Purpose::new(
    "metrics: the per-thread ranking buffers (about 50 bytes per gallery item)",
    "use a smaller gallery, or fewer threads (RAYON_NUM_THREADS)",
);

/// Per-thread buffers for ranking one query; sized once for the gallery and
/// reused for every query, so the hot loop allocates nothing.
pub(crate) struct RankedPositives {
    /// `keys[..n_positive]`: positives sorted by (distance, index).
    keys: Vec<u128>,
    n_positive: usize,
    negatives: Vec<u128>,
    /// Distance half of each sorted positive key.
    positive_distances: Vec<u64>,
    /// Negatives in each gap before positive `t` (length `n_positive + 1`).
    gap_negatives: Vec<u32>,
    /// 1-based rank of each sorted positive in the whole gallery ranking.
    ranks: Vec<u32>,
    /// Number of gallery items at each level `0..=L` for this query.
    level_counts: Vec<u32>,
    /// Gallery index of the rank-1 item.
    top1: usize,
}

impl RankedPositives {
    pub(crate) fn new(gallery_len: usize, n_levels: usize) -> Result<Self> {
        Ok(RankedPositives {
            keys: try_zeroed(gallery_len, SCRATCH)?,
            n_positive: 0,
            negatives: try_zeroed(gallery_len, SCRATCH)?,
            positive_distances: try_capacity(gallery_len, SCRATCH)?,
            gap_negatives: try_capacity(gallery_len.saturating_add(1), SCRATCH)?,
            ranks: try_capacity(gallery_len, SCRATCH)?,
            level_counts: vec![0; n_levels + 1],
            top1: 0,
        })
    }

    /// Rank the positives of one query. `distances[j]` is the distance to
    /// gallery item `j`, whose level is `level_row[gallery_ids[j]]`; every
    /// level must be `<= L` (the `n_levels` given to [`Self::new`]).
    /// Returns whether every distance was finite; if not, the ranking is
    /// meaningless and must be discarded.
    #[cfg(test)]
    pub(crate) fn rank<D: Copy + Into<f64>>(
        &mut self,
        distances: &[D],
        gallery_ids: &[usize],
        level_row: &[u8],
    ) -> bool {
        self.rank_excluding(distances, gallery_ids, level_row, None)
    }

    /// [`Self::rank`] over the gallery without item `skip` (single-set
    /// retrieval: a query's own column). Ranks, level counts and the top-1
    /// are those of the other items; the skipped distance is still checked
    /// finite so a bad value is never hidden.
    pub(crate) fn rank_excluding<D: Copy + Into<f64>>(
        &mut self,
        distances: &[D],
        gallery_ids: &[usize],
        level_row: &[u8],
        skip: Option<usize>,
    ) -> bool {
        debug_assert_eq!(distances.len(), gallery_ids.len());
        debug_assert!(self.keys.len() >= distances.len());
        self.level_counts.fill(0);
        let (mut n_pos, mut n_neg) = (0usize, 0usize);
        let mut best = u128::MAX;
        let mut finite = true;
        // Branch-free split into positives and negatives: write the key to
        // both buffers, advance only the matching one.
        for (j, (&d, &gid)) in distances.iter().zip(gallery_ids).enumerate() {
            let d: f64 = d.into();
            finite &= d.is_finite();
            if skip == Some(j) {
                continue;
            }
            let level = level_row[gid];
            let key = item_key(d, j, level);
            best = best.min(key);
            self.level_counts[level as usize] += 1;
            self.keys[n_pos] = key;
            self.negatives[n_neg] = key;
            let is_pos = (level > 0) as usize;
            n_pos += is_pos;
            n_neg += 1 - is_pos;
        }
        self.top1 = key_index(best);
        self.n_positive = n_pos;
        self.ranks.clear();
        if n_pos == 0 {
            return finite;
        }
        let positives = &mut self.keys[..n_pos];
        positives.sort_unstable();
        // Search on the distance half only (u64 compares, half the cache
        // footprint); equal distances are then settled by index.
        self.positive_distances.clear();
        self.positive_distances
            .extend(positives.iter().map(|&k| (k >> 64) as u64));
        let hi = &self.positive_distances[..];
        let (first, last) = (positives[0], positives[n_pos - 1]);
        self.gap_negatives.clear();
        self.gap_negatives.resize(n_pos + 1, 0);
        for &key in &self.negatives[..n_neg] {
            let gap = if key < first {
                0
            } else if key > last {
                n_pos
            } else {
                let d = (key >> 64) as u64;
                let mut gap = hi.partition_point(|&p| p < d);
                while gap < n_pos && hi[gap] == d && positives[gap] < key {
                    gap += 1;
                }
                gap
            };
            self.gap_negatives[gap] += 1;
        }
        let mut negatives_before = 0u32;
        for t in 0..n_pos {
            negatives_before += self.gap_negatives[t];
            self.ranks.push(t as u32 + 1 + negatives_before);
        }
        finite
    }

    /// Sorted positive keys (level in the low byte, see [`key_level`]).
    pub(crate) fn positives(&self) -> &[u128] {
        &self.keys[..self.n_positive]
    }

    /// 1-based gallery rank of each positive, in the order of [`Self::positives`].
    pub(crate) fn ranks(&self) -> &[u32] {
        &self.ranks
    }

    pub(crate) fn level_counts(&self) -> &[u32] {
        &self.level_counts
    }

    pub(crate) fn top1(&self) -> usize {
        self.top1
    }
}

/// Indices of the `k` nearest gallery items of one row, nearest first, ties
/// by index. `keys` is a reusable buffer.
pub(crate) fn top_k_row<D: Copy + Into<f64>>(
    distances: &[D],
    k: usize,
    keys: &mut Vec<u128>,
    out: &mut [u32],
) {
    keys.clear();
    keys.extend(
        distances
            .iter()
            .enumerate()
            .map(|(j, &d)| item_key(d.into(), j, 0)),
    );
    if k < keys.len() {
        keys.select_nth_unstable(k - 1);
    }
    let head = &mut keys[..k];
    head.sort_unstable();
    for (o, &key) in out.iter_mut().zip(head.iter()) {
        *o = key_index(key) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_key_is_monotone_and_merges_signed_zeros() {
        let xs = [
            f64::MIN,
            -1e300,
            -2.5,
            -1e-300,
            -0.0,
            0.0,
            1e-300,
            0.5,
            1.0,
            3.0,
            1e300,
            f64::MAX,
        ];
        for w in xs.windows(2) {
            if w[0] == w[1] {
                assert_eq!(order_key(w[0]), order_key(w[1]));
            } else {
                assert!(order_key(w[0]) < order_key(w[1]), "{} vs {}", w[0], w[1]);
            }
        }
    }

    #[test]
    fn keys_round_trip_index_and_level() {
        let k = item_key(0.25, 123_456, 7);
        assert_eq!(key_index(k), 123_456);
        assert_eq!(key_level(k), 7);
        // ties on distance are ordered by index, whatever the levels
        assert!(item_key(0.25, 3, 9) < item_key(0.25, 4, 0));
    }

    /// Ranks from a full stable argsort, the obvious way.
    fn full_sort_ranks(d: &[f64], levels: &[u8]) -> (Vec<u32>, Vec<u8>) {
        let mut order: Vec<usize> = (0..d.len()).collect();
        order.sort_by(|&a, &b| d[a].partial_cmp(&d[b]).unwrap().then(a.cmp(&b)));
        let mut ranks = vec![];
        let mut lv = vec![];
        for (r, &j) in order.iter().enumerate() {
            if levels[j] > 0 {
                ranks.push(r as u32 + 1);
                lv.push(levels[j]);
            }
        }
        (ranks, lv)
    }

    #[test]
    fn positive_ranks_match_full_sort_with_ties() {
        // distances on a coarse grid so that ties are frequent
        let n = 200;
        let d: Vec<f64> = (0..n)
            .map(|j| ((j * 37 + 11) % 13) as f64 * 0.5 - 1.0)
            .collect();
        let levels: Vec<u8> = (0..n).map(|j| ((j * 7 + 3) % 5) as u8 % 4).collect();
        let ids: Vec<usize> = (0..n).collect();
        let mut rp = RankedPositives::new(n, 3).unwrap();
        rp.rank(&d, &ids, &levels);
        let (ranks, lv) = full_sort_ranks(&d, &levels);
        assert_eq!(rp.ranks(), &ranks[..]);
        let got_lv: Vec<u8> = rp.positives().iter().map(|&k| key_level(k)).collect();
        assert_eq!(got_lv, lv);
        let counts: Vec<u32> = (0..4)
            .map(|v| levels.iter().filter(|&&l| l == v).count() as u32)
            .collect();
        assert_eq!(rp.level_counts(), &counts[..]);
        // top-1: smallest distance, lowest index among ties
        let min = d.iter().cloned().fold(f64::INFINITY, f64::min);
        assert_eq!(rp.top1(), d.iter().position(|&x| x == min).unwrap());
        // reusing the buffers for another query gives the same answer
        rp.rank(&d, &ids, &levels);
        assert_eq!(rp.ranks(), &ranks[..]);
    }

    #[test]
    fn positive_ranks_match_full_sort_on_random_rows() {
        use rand::rngs::StdRng;
        use rand::{RngExt, SeedableRng};
        let mut rng = StdRng::seed_from_u64(11);
        let mut rp = RankedPositives::new(500, 4).unwrap();
        for case in 0..200 {
            let n = rng.random_range(1..500usize);
            let share_pos: f64 = rng.random();
            let d: Vec<f64> = (0..n)
                .map(|_| match case % 4 {
                    0 => rng.random::<f64>(),                            // spread
                    1 => (rng.random_range(0..6i32) as f64) * 0.5 - 1.0, // heavy ties, signs
                    2 => 0.3 + rng.random::<f64>() * 1e-12,              // narrow range
                    _ => (rng.random::<f64>() - 0.5) * 10f64.powi(rng.random_range(-300..300)), // wide
                })
                .collect();
            let levels: Vec<u8> = (0..n)
                .map(|_| {
                    if rng.random::<f64>() < share_pos {
                        rng.random_range(1..5u8)
                    } else {
                        0
                    }
                })
                .collect();
            let ids: Vec<usize> = (0..n).collect();
            rp.rank(&d, &ids, &levels);
            let (ranks, lv) = full_sort_ranks(&d, &levels);
            assert_eq!(rp.ranks(), &ranks[..], "case {case}");
            let got_lv: Vec<u8> = rp.positives().iter().map(|&k| key_level(k)).collect();
            assert_eq!(got_lv, lv, "case {case}");
        }
    }

    #[test]
    fn no_positive_and_all_positive() {
        let d = [0.3, 0.1, 0.2];
        let ids = [0, 1, 2];
        let mut rp = RankedPositives::new(3, 1).unwrap();
        rp.rank(&d, &ids, &[0, 0, 0]);
        assert!(rp.positives().is_empty() && rp.ranks().is_empty());
        assert_eq!(rp.top1(), 1);
        rp.rank(&d, &ids, &[1, 1, 1]);
        assert_eq!(rp.ranks(), &[1, 2, 3]);
        let order: Vec<usize> = rp.positives().iter().map(|&k| key_index(k)).collect();
        assert_eq!(order, vec![1, 2, 0]);
    }

    #[test]
    fn top_k_orders_by_distance_then_index() {
        let d = [0.5f32, 0.1, 0.5, 0.0, 0.1];
        let mut keys = vec![];
        let mut out = [0u32; 4];
        top_k_row(&d, 4, &mut keys, &mut out);
        assert_eq!(out, [3, 1, 4, 0]);
        let mut all = [0u32; 5];
        top_k_row(&d, 5, &mut keys, &mut all);
        assert_eq!(all, [3, 1, 4, 0, 2]);
    }
}
