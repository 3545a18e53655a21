//! The last pass over the queries: Jaccard distances of every level mixed
//! with `D`, combined across levels as MSRerank prescribes (DESIGN §5).
//!
//! A single level with `Variant::Paper` is plain k-reciprocal re-ranking.

use ndarray::Array2;
use rayon::prelude::*;

use super::knn::{normalise_row, NeighbourLists, SmallestK};
use super::kreciprocal::{jaccard_row, Inverted, SparseRows};
use super::progress::Tracker;
use super::source::SquaredDistances;

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

struct Scratch {
    dist: Vec<f32>,
    shared: Vec<f32>,
    level: Vec<f32>,
    state: Vec<f32>,
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
) -> Array2<f32> {
    let n = source.n_items();
    let g = n - q;
    let col0 = levels.iter().map(|l| l.first_col).min().unwrap_or(q);
    let width = n - col0;
    let tile = source.tile_rows().min(q);
    // The reference computes (1 − λ)·J + λ·D in float32 with the weights cast once.
    let w_jaccard = (1.0 - lambda) as f32;
    let w_dist = lambda as f32;
    let mut out = Array2::<f32>::zeros((q, g));
    out.as_slice_mut()
        .expect("fresh array is contiguous")
        .par_chunks_mut(tile * g)
        .enumerate()
        .for_each_init(
            || Scratch {
                dist: vec![0.0; tile * width],
                shared: vec![0.0; width],
                level: vec![0.0; width],
                state: vec![0.0; width],
                mark: vec![0; width],
                epoch: 0,
                selector: SmallestK::default(),
                picked: Vec::new(),
            },
            |s, (t, out_rows)| {
                if tracker.cancelled() {
                    return;
                }
                let r0 = t * tile;
                let rows = out_rows.len() / g;
                source.fill(r0..r0 + rows, col0..n, &mut s.dist);
                for r in 0..rows {
                    let i = r0 + r;
                    let dist = &mut s.dist[r * width..(r + 1) * width];
                    normalise_row(dist, lists.row_max[i]);
                    // Marks of earlier rows carry older epochs. The paper variant moves to a
                    // fresh epoch whenever it re-fixes (the fixed set is replaced); the
                    // reference variant keeps one epoch per row (protected columns accumulate).
                    s.epoch += 1;
                    for (l, level) in levels.iter().enumerate() {
                        // Positions in `state`, `dist` and `mark` of this level's columns.
                        let lo = level.first_col - col0;
                        let cols = width - lo;
                        jaccard_row(
                            level.weights.row(i),
                            level.inverted,
                            &mut s.shared[..cols],
                            &mut s.level[..cols],
                        );
                        for (d_l, &d) in s.level[..cols].iter_mut().zip(&dist[lo..]) {
                            *d_l = *d_l * w_jaccard + d * w_dist;
                        }
                        let last = l + 1 == levels.len();
                        let state = &mut s.state[lo..];
                        let mark = &s.mark[lo..];
                        let d_l = &s.level[..cols];
                        match variant {
                            Variant::Paper => {
                                if l == 0 {
                                    for (x, &d) in state.iter_mut().zip(d_l) {
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
                                    s.selector.select(state, level.k, &mut s.picked);
                                    for &c in &s.picked {
                                        s.mark[lo + c as usize] = s.epoch;
                                    }
                                }
                            }
                            Variant::Reference => {
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
                                    s.selector.select(state, level.k + 1, &mut s.picked);
                                    for &c in &s.picked {
                                        s.mark[lo + c as usize] = s.epoch;
                                    }
                                }
                            }
                        }
                    }
                    out_rows[r * g..(r + 1) * g].copy_from_slice(&s.state[width - g..]);
                }
                tracker.advance(rows);
            },
        );
    out
}
