//! k-reciprocal re-ranking (Zhong et al., CVPR 2017) and MSRerank, with the
//! exact semantics of DESIGN §5.
//!
//! Pipeline, shared by every entry point:
//! 1. [`knn::NeighbourLists`]: one blocked pass over `D` (tiles of rows from a
//!    [`source::SquaredDistances`]) keeps each row's normalisation maximum
//!    and its first `max(k) + 1` ranks (ties by index). Computed once and
//!    shared by all MSRerank levels. From embeddings, [`symmetric`] computes
//!    the same lists from one triangle of the similarity matrix.
//! 2. Per distinct `k`: reciprocal sets from the lists and their inverse
//!    ([`knn::InLists`]), the 2/3 expansion, sparse `V`, query expansion,
//!    an inverted index over the columns the answer needs
//!    ([`kreciprocal`]).
//! 3. [`msrerank::combine_levels`]: per query row, Jaccard distances of each
//!    level mixed with `D` and combined across levels.
//!
//! Nothing N×N is allocated: memory is O(N·k) plus one tile per thread, so
//! the embedding entry points scale to galleries whose distance matrix would
//! not fit in memory. All passes are parallel over rows with rayon.
//!
//! `D` is built exactly as the reference does, including for asymmetric
//! blocks: row `i` of `D` is column `i` of `A² = [[q_q, q_g], [q_gᵀ, g_g]]²`
//! divided by its maximum. One deliberate difference: a column whose maximum
//! is 0 stays 0 instead of becoming NaN.

pub mod given;
pub mod knn;
pub mod kreciprocal;
pub mod msrerank;
pub mod single;
pub mod source;
pub mod symmetric;

/// Progress and cancellation, shared with the other long calls of the core.
pub use crate::progress;

use ndarray::{Array2, ArrayView2};

pub use given::GivenNeighbours;
pub use knn::CosineLists;
pub use msrerank::Variant;
pub use progress::{Progress, ProgressSink};
pub use single::{
    k_reciprocal_single, k_reciprocal_single_embeddings, msrerank_single,
    msrerank_single_embeddings, SingleDistances,
};
pub use source::{
    BlockDistances, DistanceBlock, DistanceBlocks, EmbeddingDistances, SquaredDistances,
};

use crate::error::{DyclError, Result};
pub use crate::memory::available_memory;
use knn::{InLists, NeighbourLists};
use kreciprocal::{half_to_even, query_expansion, reciprocal_all, weights, Inverted, SparseRows};
use msrerank::{combine_levels_from, combine_levels_top, first_columns, Level};

/// k-reciprocal re-ranking from the three distance blocks; `(q, g)` float32.
pub fn k_reciprocal(
    blocks: DistanceBlocks,
    k1: usize,
    k2: usize,
    lambda: f64,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    check_k1(k1)?;
    from_blocks(blocks, &[k1], k2, lambda, Variant::Paper, progress)
}

/// k-reciprocal re-ranking on cosine distances `1 − a·b` of L2-normalised
/// embeddings, without materialising any N×N matrix; `(q, g)` float32.
pub fn k_reciprocal_embeddings(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    k1: usize,
    k2: usize,
    lambda: f64,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    check_k1(k1)?;
    let options = (k2, lambda, Variant::Paper);
    from_embeddings(query, gallery, &[k1], options, progress)
}

/// MSRerank from the three distance blocks; `(q, g)` float32.
pub fn msrerank(
    blocks: DistanceBlocks,
    ks: &[usize],
    k2: usize,
    lambda: f64,
    variant: Variant,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    check_ks(ks)?;
    from_blocks(blocks, ks, k2, lambda, variant, progress)
}

/// MSRerank on cosine distances of embeddings, O(N·k) memory; `(q, g)` float32.
pub fn msrerank_embeddings(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    ks: &[usize],
    k2: usize,
    lambda: f64,
    variant: Variant,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    check_ks(ks)?;
    from_embeddings(query, gallery, ks, (k2, lambda, variant), progress)
}

/// k-reciprocal re-ranking on embeddings with neighbour lists found
/// elsewhere (see [`given`]): the lists replace the first pass over `D`;
/// the rest reads single cosine distances from the embeddings. With the
/// core's own lists ([`neighbour_lists`]) it equals
/// [`k_reciprocal_embeddings`] exactly. `(q, g)` float32.
pub fn k_reciprocal_neighbours(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    lists: &GivenNeighbours,
    k1: usize,
    k2: usize,
    lambda: f64,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    check_k1(k1)?;
    from_neighbours(
        query,
        gallery,
        lists,
        &[k1],
        (k2, lambda, Variant::Paper),
        progress,
    )
}

/// MSRerank on embeddings with given neighbour lists (as
/// [`k_reciprocal_neighbours`]); `(q, g)` float32.
#[allow(clippy::too_many_arguments)]
pub fn msrerank_neighbours(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    lists: &GivenNeighbours,
    ks: &[usize],
    k2: usize,
    lambda: f64,
    variant: Variant,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    check_ks(ks)?;
    from_neighbours(query, gallery, lists, ks, (k2, lambda, variant), progress)
}

/// Each query's best `top` gallery items after re-ranking, ranked (ties by
/// gallery index, the order of a stable argsort of the full answer).
pub struct TopAnswer {
    /// `(q, min(top, g))` gallery indices.
    pub index: Array2<u32>,
    /// Their re-ranked distances, same shape.
    pub distance: Array2<f32>,
}

/// [`k_reciprocal_neighbours`] returning each query's best `top` gallery
/// items instead of the `q × g` answer: memory O(q · top) for the answer,
/// for galleries where `q × g` float32 would not fit.
#[allow(clippy::too_many_arguments)]
pub fn k_reciprocal_neighbours_top(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    lists: &GivenNeighbours,
    k1: usize,
    k2: usize,
    lambda: f64,
    top: usize,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<TopAnswer> {
    check_k1(k1)?;
    let options = (k2, lambda, Variant::Paper);
    from_neighbours_top(query, gallery, lists, &[k1], options, top, progress)
}

/// [`msrerank_neighbours`] returning each query's best `top` gallery items
/// (as [`k_reciprocal_neighbours_top`]).
#[allow(clippy::too_many_arguments)]
pub fn msrerank_neighbours_top(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    lists: &GivenNeighbours,
    ks: &[usize],
    (k2, lambda, variant): (usize, f64, Variant),
    top: usize,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<TopAnswer> {
    check_ks(ks)?;
    from_neighbours_top(
        query,
        gallery,
        lists,
        ks,
        (k2, lambda, variant),
        top,
        progress,
    )
}

/// The exact neighbour lists of the items `rows` of the joint set
/// (queries then gallery) against all `N` items: the first
/// `min(k + 1, N)` by cosine distance (ties by index) with their distances
/// and each item's largest distance, in the form [`GivenNeighbours`] takes.
pub fn neighbour_lists(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    k: usize,
    rows: Option<std::ops::Range<usize>>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<CosineLists> {
    if k < 1 {
        return Err(DyclError::invalid("k", format!("must be >= 1, got {k}")));
    }
    let source = EmbeddingDistances::new(query, gallery)?;
    let n = source.n_items();
    let rows = rows.unwrap_or(0..n);
    let len = k.saturating_add(1).min(n);
    Progress::new(progress).run("neighbour lists", 0, rows.len(), |t| {
        CosineLists::build_rows(&source, rows.clone(), len, t)
    })?
}

/// The checks of the given-neighbours entry points and their plan (`top`:
/// the answer keeps each query's best `top` columns), before any copy.
fn neighbours_plan(
    (query, gallery): (ArrayView2<f32>, ArrayView2<f32>),
    given: &GivenNeighbours,
    ks: &[usize],
    (k2, lambda): (usize, f64),
    top: Option<usize>,
) -> Result<Plan> {
    EmbeddingDistances::check_shapes(query, gallery)?;
    let (q, n) = (query.nrows(), query.nrows() + gallery.nrows());
    let joint_bytes = (n as u64).saturating_mul(query.ncols() as u64 * 4);
    let tile = EmbeddingDistances::max_tile_rows(n);
    if top == Some(0) {
        return Err(DyclError::invalid("top", "must be >= 1"));
    }
    let plan = Plan::checked((n, q, q), ks, (k2, lambda), tile, joint_bytes, top)?;
    given.validate(n)?;
    if given.width() < plan.len {
        let k_max = plan.ks.iter().max().copied().unwrap_or(1);
        return Err(DyclError::invalid(
            "index",
            format!(
                "holds {} neighbours per item, but k = {k_max} and k2 = {k2} need {} \
                 (max(k + 1, k2), at most N = {n}); search more neighbours or lower k",
                given.width(),
                plan.len
            ),
        ));
    }
    Ok(plan)
}

/// The entry points on embeddings with given lists, once `ks` is checked.
fn from_neighbours(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    given: &GivenNeighbours,
    ks: &[usize],
    (k2, lambda, variant): (usize, f64, Variant),
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    let plan = neighbours_plan((query, gallery), given, ks, (k2, lambda), None)?;
    let (source, lists, progress) = given_lists((query, gallery), given, &plan, progress)?;
    rerank_lists(&source, &plan, lists, variant, progress)
}

/// The source and the given lists of a planned given-neighbours call.
fn given_lists<'p>(
    (query, gallery): (ArrayView2<f32>, ArrayView2<f32>),
    given: &GivenNeighbours,
    plan: &Plan,
    progress: Option<&'p mut dyn ProgressSink>,
) -> Result<(EmbeddingDistances, NeighbourLists, Progress<'p>)> {
    let source = EmbeddingDistances::new(query, gallery)?;
    let n = source.n_items();
    let mut progress = Progress::new(progress);
    let lists = progress.run("neighbour lists", 0, n, |t| {
        NeighbourLists::from_given(given, n, plan.len, t)
    })??;
    Ok((source, lists, progress))
}

/// [`from_neighbours`] keeping each query's best `top` gallery columns.
fn from_neighbours_top(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    given: &GivenNeighbours,
    ks: &[usize],
    (k2, lambda, variant): (usize, f64, Variant),
    top: usize,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<TopAnswer> {
    let plan = neighbours_plan((query, gallery), given, ks, (k2, lambda), Some(top))?;
    let (source, lists, progress) = given_lists((query, gallery), given, &plan, progress)?;
    let sets = (plan.q, plan.gallery_col0);
    let (index, distance) =
        with_levels(&source, &plan, &lists, variant, progress, |levels, t| {
            combine_levels_top(&source, &lists, sets, levels, plan.lambda, variant, top, t)
        })??;
    Ok(TopAnswer { index, distance })
}

/// The entry points on distance blocks, once `ks` is checked.
fn from_blocks(
    blocks: DistanceBlocks,
    ks: &[usize],
    k2: usize,
    lambda: f64,
    variant: Variant,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    let source = BlockDistances::new(blocks)?;
    let (n, q) = (source.n_items(), source.n_query());
    let plan = Plan::new(n, q, ks, k2, lambda, source.tile_rows(), 0)?;
    rerank(&source, &plan, variant, Progress::new(progress))
}

/// The entry points on embeddings, once `ks` is checked: the call is
/// planned (and refused if it cannot fit) before the embeddings are copied.
fn from_embeddings(
    query: ArrayView2<f32>,
    gallery: ArrayView2<f32>,
    ks: &[usize],
    (k2, lambda, variant): (usize, f64, Variant),
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f32>> {
    EmbeddingDistances::check_shapes(query, gallery)?;
    let (q, n) = (query.nrows(), query.nrows() + gallery.nrows());
    let joint_bytes = (n as u64).saturating_mul(query.ncols() as u64 * 4);
    let tile = EmbeddingDistances::max_tile_rows(n);
    let plan = Plan::new(n, q, ks, k2, lambda, tile, joint_bytes)?;
    let source = EmbeddingDistances::new(query, gallery)?;
    rerank(&source, &plan, variant, Progress::new(progress))
}

fn check_k1(k1: usize) -> Result<()> {
    if k1 < 1 {
        return Err(DyclError::invalid("k1", format!("must be >= 1, got {k1}")));
    }
    Ok(())
}

fn check_ks(ks: &[usize]) -> Result<()> {
    if ks.is_empty() {
        return Err(DyclError::invalid("ks", "must not be empty"));
    }
    if let Some(&k) = ks.iter().find(|&&k| k < 1) {
        return Err(DyclError::invalid(
            "ks",
            format!("every k must be >= 1, got {k} in {ks:?}"),
        ));
    }
    if ks.windows(2).any(|w| w[1] < w[0]) {
        return Err(DyclError::invalid(
            "ks",
            format!("must be non-decreasing, got {ks:?}"),
        ));
    }
    Ok(())
}

/// Every neighbourhood size clamped to `N − 1`: a neighbourhood cannot hold
/// more than the other items, so a larger `k` gives the same sets (and the
/// same result) as `N − 1`, without the arithmetic on `k` overflowing.
fn clamped(ks: &[usize], n: usize) -> Vec<usize> {
    let most = n.saturating_sub(1).max(1);
    ks.iter().map(|&k| k.min(most)).collect()
}

/// Rough peak bytes of [`rerank`] beyond its inputs: `source_bytes` for the
/// source's own copy, the neighbour lists of `len` entries per row, `V` of
/// each distinct `k` of `ks` (non-decreasing), the answer and one tile per
/// thread. Saturates instead of wrapping.
fn estimated_bytes(
    (n, q, len): (usize, usize, usize),
    ks: &[usize],
    tile_cells: usize,
    source_bytes: u64,
) -> u64 {
    let (n, q, len) = (n as u64, q as u64, len as u64);
    let lists = n.saturating_mul(len).saturating_mul(4 + 4 + 8);
    let mut distinct = ks.to_vec();
    distinct.dedup();
    // V before and after query expansion plus its inverse: a few times (k + 1) entries per row.
    let per_level = distinct.iter().fold(0u64, |sum, &k| {
        let entries = (k as u64).saturating_add(1).saturating_mul(3 * 6 * 8);
        sum.saturating_add(n.saturating_mul(entries))
    });
    let output = q.saturating_mul(n.saturating_sub(q)).saturating_mul(4);
    let threads = rayon::current_num_threads() as u64;
    let tiles = threads.saturating_mul(tile_cells as u64).saturating_mul(4);
    [lists, per_level, output, tiles]
        .iter()
        .fold(source_bytes, |sum, &b| sum.saturating_add(b))
}

/// The sizes of one call, checked, clamped and known to fit before any work.
struct Plan {
    q: usize,
    /// First joint column of the gallery: `q` when queries and gallery are
    /// two sets, 0 in single-set mode (the `N` items are both; the answer
    /// is `N × N`).
    gallery_col0: usize,
    /// Neighbourhood sizes, each clamped to `N − 1`.
    ks: Vec<usize>,
    k2: usize,
    lambda: f64,
    /// Entries kept per neighbour list.
    len: usize,
}

impl Plan {
    /// Check the options of a call on `n` items (the first `q` queries) read
    /// in tiles of `tile_rows` rows, clamp `ks` and refuse the call if its
    /// [`estimated_bytes`] exceed the memory available.
    fn new(
        n: usize,
        q: usize,
        ks: &[usize],
        k2: usize,
        lambda: f64,
        tile_rows: usize,
        source_bytes: u64,
    ) -> Result<Plan> {
        Self::checked((n, q, q), ks, (k2, lambda), tile_rows, source_bytes, None)
    }

    /// [`Plan::new`] for single-set mode: all `n` items are queries and
    /// gallery at once.
    fn single_set(
        n: usize,
        ks: &[usize],
        (k2, lambda): (usize, f64),
        tile_rows: usize,
        source_bytes: u64,
    ) -> Result<Plan> {
        Self::checked((n, n, 0), ks, (k2, lambda), tile_rows, source_bytes, None)
    }

    fn checked(
        (n, q, gallery_col0): (usize, usize, usize),
        ks: &[usize],
        (k2, lambda): (usize, f64),
        tile_rows: usize,
        source_bytes: u64,
        top: Option<usize>,
    ) -> Result<Plan> {
        check_rerank_args(n, k2, lambda)?;
        let ks = clamped(ks, n);
        let k_max = *ks.iter().max().expect("ks checked non-empty");
        let len = k_max.saturating_add(1).max(k2).min(n);
        let need = estimated_bytes((n, q, len), &ks, tile_rows.saturating_mul(n), source_bytes);
        // estimated_bytes counts a q × (n − q) answer; a gallery from column
        // gallery_col0 < q (single-set mode) adds q × (q − gallery_col0) cells.
        let extra = (q as u64)
            .saturating_mul((q - gallery_col0) as u64)
            .saturating_mul(4);
        let need = need.saturating_add(extra);
        // A top answer holds q × top (index, distance) pairs instead of q × g distances.
        let need = match top {
            None => need,
            Some(top) => {
                let full = (q as u64)
                    .saturating_mul((n - gallery_col0) as u64)
                    .saturating_mul(4);
                let kept = (q as u64)
                    .saturating_mul(top.min(n) as u64)
                    .saturating_mul(8);
                need.saturating_sub(full).saturating_add(kept)
            }
        };
        check_memory(n, q, need)?;
        Ok(Plan {
            q,
            gallery_col0,
            ks,
            k2,
            lambda,
            len,
        })
    }
}

/// The shared pipeline (see the module docs).
fn rerank<S: SquaredDistances>(
    source: &S,
    plan: &Plan,
    variant: Variant,
    mut progress: Progress,
) -> Result<Array2<f32>> {
    let lists = progress.run("neighbour lists", 0, source.n_items(), |t| {
        match source.full_neighbour_lists(plan.len, t) {
            Some(lists) => lists,
            None => NeighbourLists::build(source, plan.len, t),
        }
    })??;
    rerank_lists(source, plan, lists, variant, progress)
}

/// Steps 2 and 3 of the pipeline, on lists of `plan.len` entries per item.
fn rerank_lists<S: SquaredDistances>(
    source: &S,
    plan: &Plan,
    lists: NeighbourLists,
    variant: Variant,
    progress: Progress,
) -> Result<Array2<f32>> {
    let sets = (plan.q, plan.gallery_col0);
    with_levels(source, plan, &lists, variant, progress, |levels, t| {
        combine_levels_from(source, &lists, sets, levels, plan.lambda, variant, t)
    })?
}

/// Step 2 (every level's sparse rows and inverted index), then `finish`
/// (the query pass) on the levels, as the "re-ranking queries" stage.
fn with_levels<S: SquaredDistances, T: Send>(
    source: &S,
    plan: &Plan,
    lists: &NeighbourLists,
    variant: Variant,
    mut progress: Progress,
    finish: impl FnOnce(&[Level], &progress::Tracker) -> T + Send,
) -> Result<T> {
    let (n, q, ks) = (source.n_items(), plan.q, &plan.ks[..]);
    let inlists = InLists::build(lists)?;

    let first_cols = first_columns(variant, ks.len(), plan.gallery_col0);
    let weights = WeightsPerK::build(source, lists, &inlists, ks, plan.k2, &mut progress)?;
    let inverted = InvertedPerLevel::build(&weights, ks, &first_cols, n)?;
    let levels: Vec<Level> = ks
        .iter()
        .zip(&first_cols)
        .map(|(&k, &first_col)| Level {
            k,
            weights: weights.of(k),
            inverted: inverted.of(k, first_col),
            first_col,
        })
        .collect();
    progress.run("re-ranking queries", 0, q, |t| finish(&levels, t))
}

/// The checks of [`rerank`]'s own arguments (`ks` and the inputs are
/// checked by the entry points).
fn check_rerank_args(n: usize, k2: usize, lambda: f64) -> Result<()> {
    if n >= u32::MAX as usize {
        return Err(DyclError::invalid(
            "q_g_dist",
            format!("{n} items exceed the supported 2^32 - 1"),
        ));
    }
    if k2 < 1 || k2 > n {
        return Err(DyclError::invalid(
            "k2",
            format!("must be in [1, N] = [1, {n}] (N = q + g items), got {k2}"),
        ));
    }
    if !lambda.is_finite() || !(0.0..=1.0).contains(&lambda) {
        return Err(DyclError::invalid(
            "lambda_value",
            format!("must be in [0, 1], got {lambda}"),
        ));
    }
    Ok(())
}

/// Refuse, before any work, a call that needs more than the memory
/// available (when that is known), rather than fail part way.
fn check_memory(n: usize, q: usize, need: u64) -> Result<()> {
    if let Some(avail) = available_memory() {
        if need > avail {
            return Err(DyclError::OutOfMemory(format!(
                "re-ranking {q} queries against {} gallery items would need about {:.1} GB but only {:.1} GB \
                 is available; use fewer queries per call (the output alone is q × g float32)",
                n - q,
                need as f64 / 1e9,
                avail as f64 / 1e9
            )));
        }
    }
    Ok(())
}

/// `V` (after query expansion when `k2 > 1`) of each distinct `k`.
struct WeightsPerK(Vec<(usize, SparseRows)>);

impl WeightsPerK {
    /// Step 2 of the pipeline for each distinct `k` of `ks` (non-decreasing),
    /// each reported as one stage of 2 or 3 passes over the `n` rows.
    fn build<S: SquaredDistances>(
        source: &S,
        lists: &NeighbourLists,
        inlists: &InLists,
        ks: &[usize],
        k2: usize,
        progress: &mut Progress,
    ) -> Result<Self> {
        let n = source.n_items();
        let mut distinct = ks.to_vec();
        distinct.dedup();
        let mut per_k = Vec::with_capacity(distinct.len());
        for (idx, &k) in distinct.iter().enumerate() {
            let stage = format!(
                "k-reciprocal sets, k = {k} ({}/{})",
                idx + 1,
                distinct.len()
            );
            let steps = if k2 > 1 { 3 } else { 2 };
            let candidates = progress.run(&stage, 0, steps * n, |t| {
                reciprocal_all(lists, inlists, half_to_even(k), t)
            })??;
            let mut v = progress.run(&stage, n, steps * n, |t| {
                weights(source, lists, inlists, &candidates, k, t)
            })??;
            // The candidates are no longer needed; free them before the expansion.
            drop(candidates);
            if k2 > 1 {
                v = progress.run(&stage, 2 * n, steps * n, |t| {
                    query_expansion(&v, lists, k2, t)
                })??;
            }
            per_k.push((k, v));
        }
        Ok(WeightsPerK(per_k))
    }

    fn of(&self, k: usize) -> &SparseRows {
        &self
            .0
            .iter()
            .find(|e| e.0 == k)
            .expect("every k was computed")
            .1
    }
}

/// One inverted index per distinct (k, first column) of the levels.
struct InvertedPerLevel(Vec<(usize, usize, Inverted)>);

impl InvertedPerLevel {
    fn build(weights: &WeightsPerK, ks: &[usize], first_cols: &[usize], n: usize) -> Result<Self> {
        let mut inverted: Vec<(usize, usize, Inverted)> = Vec::new();
        for (&k, &first_col) in ks.iter().zip(first_cols) {
            if !inverted.iter().any(|e| e.0 == k && e.1 == first_col) {
                inverted.push((
                    k,
                    first_col,
                    Inverted::build(weights.of(k), first_col..n, n)?,
                ));
            }
        }
        Ok(InvertedPerLevel(inverted))
    }

    fn of(&self, k: usize, first_col: usize) -> &Inverted {
        &self
            .0
            .iter()
            .find(|e| e.0 == k && e.1 == first_col)
            .expect("built above")
            .2
    }
}

#[cfg(test)]
mod tests;
