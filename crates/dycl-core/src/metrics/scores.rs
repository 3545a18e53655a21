//! The metrics of one query from its ranked positives (DESIGN §4).
//!
//! Inputs are the positives sorted by rank (level in each key's low byte),
//! their 1-based ranks and the number of gallery items at each level. All
//! loops run over positives only, `O(P · L)` per query.

use super::ranking::key_level;
use crate::error::Result;
use crate::memory::{try_zeroed, Purpose};

/// What the per-rank tables are, and what to do when they do not fit.
const TABLES: Purpose = Purpose::new(
    "metrics: the per-rank tables (24 bytes per gallery item)",
    "use a smaller gallery",
);

/// Tables shared by all queries of one evaluation.
pub(crate) struct ScoreContext {
    /// `L`, the number of positive levels (the top level).
    n_levels: usize,
    /// Level weight `v / (L − 1)` for `v = 0..=L`; with `L = 1` the single
    /// level gets weight 1 (any constant gives the same H-AP, which is then
    /// the binary AP of the exact building).
    weight: Vec<f64>,
    /// NDCG gain `2^v − 1` for `v = 0..=L`.
    gain: Vec<f64>,
    /// `discount[r] = 1 / log2(1 + r)` for ranks `r = 1..=g` (index 0 unused).
    discount: Vec<f64>,
    /// `discount_sum[n] = Σ_{r=1..=n} discount[r]`, for the ideal DCG.
    discount_sum: Vec<f64>,
    /// `inverse[r] = 1 / r` (index 0 unused): the per-rank divisions become
    /// multiplications.
    inverse: Vec<f64>,
}

impl ScoreContext {
    pub(crate) fn new(n_levels: usize, gallery_len: usize) -> Result<Self> {
        let weight = (0..=n_levels)
            .map(|v| {
                if n_levels == 1 {
                    v as f64
                } else {
                    v as f64 / (n_levels - 1) as f64
                }
            })
            .collect();
        let gain = (0..=n_levels).map(|v| 2f64.powi(v as i32) - 1.0).collect();
        let len = gallery_len.saturating_add(1);
        let mut discount = try_zeroed::<f64>(len, TABLES)?;
        let mut discount_sum = try_zeroed::<f64>(len, TABLES)?;
        let mut inverse = try_zeroed::<f64>(len, TABLES)?;
        for r in 1..=gallery_len {
            inverse[r] = 1.0 / r as f64;
            discount[r] = 1.0 / ((1 + r) as f64).log2();
            discount_sum[r] = discount_sum[r - 1] + discount[r];
        }
        Ok(ScoreContext {
            n_levels,
            weight,
            gain,
            discount,
            discount_sum,
            inverse,
        })
    }

    pub(crate) fn n_levels(&self) -> usize {
        self.n_levels
    }
}

/// Per-thread scratch for [`hierarchical`] and [`per_scale`].
pub(crate) struct ScoreScratch {
    rel: Vec<f64>,
    seen: Vec<u32>,
    in_ranking: Vec<u32>,
    in_ideal: Vec<u32>,
    hits: Vec<u32>,
    precision_sum: Vec<f64>,
}

impl ScoreScratch {
    pub(crate) fn new(n_levels: usize) -> Self {
        ScoreScratch {
            rel: vec![0.0; n_levels + 1],
            seen: vec![0; n_levels + 1],
            in_ranking: vec![0; n_levels + 1],
            in_ideal: vec![0; n_levels + 1],
            hits: vec![0; n_levels],
            precision_sum: vec![0.0; n_levels],
        }
    }
}

/// H-AP, ASI and NDCG of one query; NaN for all three when it has no positive.
pub(crate) fn hierarchical(
    ctx: &ScoreContext,
    positives: &[u128],
    ranks: &[u32],
    level_counts: &[u32],
    s: &mut ScoreScratch,
) -> (f64, f64, f64) {
    if positives.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (
        h_ap(ctx, positives, ranks, level_counts, s),
        asi(ctx, positives, ranks, level_counts, s),
        ndcg(ctx, positives, ranks, level_counts),
    )
}

/// Per-item H-AP. `H-rank(k) = rel(k) + Σ_{j<k} min(rel(k), rel(j))`; only
/// positives have `rel > 0`, and every positive at level `u` has the same
/// `rel_u`, so the sum is `Σ_u seen_u · min(rel(k), rel_u)` over the running
/// count `seen_u` of positives ranked above: `O(L)` per item. Counting by
/// item (not by matching relevance values) keeps H-AP ≤ 1 when two levels
/// have the same per-item relevance.
fn h_ap(
    ctx: &ScoreContext,
    positives: &[u128],
    ranks: &[u32],
    counts: &[u32],
    s: &mut ScoreScratch,
) -> f64 {
    let n_levels = ctx.n_levels;
    let mut total_rel = 0.0;
    for v in 1..=n_levels {
        s.rel[v] = if counts[v] > 0 {
            ctx.weight[v] / counts[v] as f64
        } else {
            0.0
        };
        if counts[v] > 0 {
            total_rel += ctx.weight[v];
        }
    }
    s.seen.fill(0);
    let mut sum = 0.0;
    for (&key, &rank) in positives.iter().zip(ranks) {
        let v = key_level(key) as usize;
        let rel = s.rel[v];
        let mut h_rank = rel;
        for u in 1..=n_levels {
            h_rank += s.seen[u] as f64 * rel.min(s.rel[u]);
        }
        s.seen[v] += 1;
        sum += h_rank * ctx.inverse[rank as usize];
    }
    sum / total_rel
}

/// ASI: mean over `k = 1..=R` of `Σ_v min(#{rank ≤ k, level v},
/// #{ideal rank ≤ k, level v}) / k`, `R` = number of positives. The sum of
/// minima changes by at most two levels per step, so it is updated in `O(1)`.
fn asi(
    ctx: &ScoreContext,
    positives: &[u128],
    ranks: &[u32],
    counts: &[u32],
    s: &mut ScoreScratch,
) -> f64 {
    let n_pos = positives.len();
    s.in_ranking.fill(0);
    s.in_ideal.fill(0);
    let mut overlap = 0u32; // Σ_v min(in_ranking[v], in_ideal[v])
    let mut next = 0usize; // next positive in rank order
    let mut ideal_level = ctx.n_levels; // the ideal ranking lists levels L, L-1, ..., 1
    let mut ideal_left = counts[ideal_level];
    let mut sum = 0.0;
    for k in 1..=n_pos {
        if next < n_pos && ranks[next] as usize == k {
            let v = key_level(positives[next]) as usize;
            next += 1;
            let before = s.in_ranking[v].min(s.in_ideal[v]);
            s.in_ranking[v] += 1;
            overlap = overlap + s.in_ranking[v].min(s.in_ideal[v]) - before;
        }
        while ideal_left == 0 {
            ideal_level -= 1;
            ideal_left = counts[ideal_level];
        }
        ideal_left -= 1;
        let w = ideal_level;
        let before = s.in_ranking[w].min(s.in_ideal[w]);
        s.in_ideal[w] += 1;
        overlap = overlap + s.in_ranking[w].min(s.in_ideal[w]) - before;
        sum += overlap as f64 * ctx.inverse[k];
    }
    sum / n_pos as f64
}

/// NDCG over the whole ranking: gains `2^level − 1`, discount `1/log2(1+k)`.
fn ndcg(ctx: &ScoreContext, positives: &[u128], ranks: &[u32], counts: &[u32]) -> f64 {
    let dcg: f64 = positives
        .iter()
        .zip(ranks)
        .map(|(&key, &rank)| ctx.gain[key_level(key) as usize] * ctx.discount[rank as usize])
        .sum();
    let mut ideal = 0.0;
    let mut filled = 0usize;
    for v in (1..=ctx.n_levels).rev() {
        let n = counts[v] as usize;
        ideal += ctx.gain[v] * (ctx.discount_sum[filled + n] - ctx.discount_sum[filled]);
        filled += n;
    }
    dcg / ideal
}

/// Binary metrics per scale `s` (relevant: `level ≥ L − s`): average
/// precision (NaN without relevant items), 1-based rank of the first relevant
/// item (0 without) and the number of relevant items.
pub(crate) fn per_scale(
    ctx: &ScoreContext,
    positives: &[u128],
    ranks: &[u32],
    counts: &[u32],
    s: &mut ScoreScratch,
    average_precision: &mut [f64],
    first_rank: &mut [u32],
    n_relevant: &mut [u32],
) {
    let n_levels = ctx.n_levels;
    s.hits.fill(0);
    s.precision_sum.fill(0.0);
    first_rank.fill(0);
    for (&key, &rank) in positives.iter().zip(ranks) {
        let v = key_level(key) as usize;
        // relevant at every scale s with L − s ≤ v
        for scale in (n_levels - v)..n_levels {
            s.hits[scale] += 1;
            s.precision_sum[scale] += s.hits[scale] as f64 * ctx.inverse[rank as usize];
            if s.hits[scale] == 1 {
                first_rank[scale] = rank;
            }
        }
    }
    for scale in 0..n_levels {
        let n: u32 = counts[n_levels - scale..=n_levels].iter().sum();
        n_relevant[scale] = n;
        average_precision[scale] = if n > 0 {
            s.precision_sum[scale] / n as f64
        } else {
            f64::NAN
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ranking::item_key;

    /// Positives in rank order from a full list of levels in rank order.
    fn from_ranked_levels(levels: &[u8], n_levels: usize) -> (Vec<u128>, Vec<u32>, Vec<u32>) {
        let mut keys = vec![];
        let mut ranks = vec![];
        let mut counts = vec![0u32; n_levels + 1];
        for (i, &v) in levels.iter().enumerate() {
            counts[v as usize] += 1;
            if v > 0 {
                keys.push(item_key(i as f64, i, v));
                ranks.push(i as u32 + 1);
            }
        }
        (keys, ranks, counts)
    }

    fn scores(levels: &[u8], n_levels: usize) -> (f64, f64, f64) {
        let ctx = ScoreContext::new(n_levels, levels.len()).unwrap();
        let (keys, ranks, counts) = from_ranked_levels(levels, n_levels);
        hierarchical(
            &ctx,
            &keys,
            &ranks,
            &counts,
            &mut ScoreScratch::new(n_levels),
        )
    }

    #[test]
    fn ideal_ranking_scores_one() {
        let (hap, asi, ndcg) = scores(&[3, 2, 2, 1, 1, 1, 0, 0], 3);
        assert!((hap - 1.0).abs() < 1e-12, "{hap}");
        assert!((asi - 1.0).abs() < 1e-12, "{asi}");
        assert!((ndcg - 1.0).abs() < 1e-12, "{ndcg}");
    }

    #[test]
    fn hand_computed_small_case() {
        // ranked levels [1, 3, 0, 2], L = 3: weights 0.5, 1, 1.5, one item each
        let (hap, asi, ndcg) = scores(&[1, 3, 0, 2], 3);
        // H-rank: k=1: 0.5; k=2: 1.5 + 0.5 = 2; k=4: 1 + 0.5 + 1 = 2.5
        let expect_hap = (0.5 / 1.0 + 2.0 / 2.0 + 2.5 / 4.0) / 3.0;
        assert!((hap - expect_hap).abs() < 1e-12, "{hap} vs {expect_hap}");
        // ideal [3, 2, 1]; SI(1) = 0, SI(2) = 1/2 (level 3), SI(3) = (1 + 0 + 1)/3
        let expect_asi = (0.0 + 0.5 + 2.0 / 3.0) / 3.0;
        assert!((asi - expect_asi).abs() < 1e-12, "{asi} vs {expect_asi}");
        let d = |k: f64| 1.0 / (1.0 + k).log2();
        let dcg = 1.0 * d(1.0) + 7.0 * d(2.0) + 3.0 * d(4.0);
        let idcg = 7.0 * d(1.0) + 3.0 * d(2.0) + 1.0 * d(3.0);
        assert!((ndcg - dcg / idcg).abs() < 1e-12);
    }

    #[test]
    fn equal_per_item_relevance_stays_at_most_one() {
        // L = 3, 2 items at level 1 (rel 0.5/2) and 4 at level 2 (rel 1/4):
        // equal per-item relevance. Worst-first orders must stay ≤ 1.
        for levels in [
            [1u8, 1, 2, 2, 2, 2, 3],
            [2, 2, 2, 2, 1, 1, 3],
            [3, 1, 2, 1, 2, 2, 2],
        ] {
            let (hap, _, _) = scores(&levels, 3);
            assert!(hap <= 1.0 + 1e-12 && hap > 0.0, "{levels:?}: {hap}");
        }
    }

    #[test]
    fn single_level_h_ap_is_binary_ap() {
        let levels = [0u8, 1, 0, 1, 1, 0];
        let (hap, _, _) = scores(&levels, 1);
        let ap = (1.0 / 2.0 + 2.0 / 4.0 + 3.0 / 5.0) / 3.0;
        assert!((hap - ap).abs() < 1e-12, "{hap} vs {ap}");
    }

    #[test]
    fn no_positive_is_nan() {
        let (hap, asi, ndcg) = scores(&[0, 0], 2);
        assert!(hap.is_nan() && asi.is_nan() && ndcg.is_nan());
    }

    #[test]
    fn per_scale_ap_first_rank_and_counts() {
        let n_levels = 3;
        let levels = [1u8, 3, 0, 2, 2];
        let ctx = ScoreContext::new(n_levels, levels.len()).unwrap();
        let (keys, ranks, counts) = from_ranked_levels(&levels, n_levels);
        let (mut ap, mut first, mut n_rel) = (vec![0.0; 3], vec![0; 3], vec![0; 3]);
        per_scale(
            &ctx,
            &keys,
            &ranks,
            &counts,
            &mut ScoreScratch::new(3),
            &mut ap,
            &mut first,
            &mut n_rel,
        );
        assert_eq!(n_rel, vec![1, 3, 4]);
        assert_eq!(first, vec![2, 2, 1]);
        assert!((ap[0] - 0.5).abs() < 1e-12);
        assert!((ap[1] - (1.0 / 2.0 + 2.0 / 4.0 + 3.0 / 5.0) / 3.0).abs() < 1e-12);
        assert!((ap[2] - (1.0 + 1.0 + 3.0 / 4.0 + 4.0 / 5.0) / 4.0).abs() < 1e-12);
        // a scale without relevant items
        let levels = [0u8, 1, 0];
        let (keys, ranks, counts) = from_ranked_levels(&levels, n_levels);
        per_scale(
            &ctx,
            &keys,
            &ranks,
            &counts,
            &mut ScoreScratch::new(3),
            &mut ap,
            &mut first,
            &mut n_rel,
        );
        assert!(ap[0].is_nan() && ap[1].is_nan());
        assert_eq!(first, vec![0, 0, 2]);
        assert_eq!(n_rel, vec![0, 0, 1]);
    }
}
