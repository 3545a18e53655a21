//! Hierarchical retrieval metrics (DESIGN §4): H-AP, ASI, NDCG, and binary
//! AP / first relevant rank per spatial scale, for every query, plus the
//! top-1 localization error when building coordinates are given.
//!
//! The core returns per-query values; the Python wrapper (`dycl.metrics`)
//! names them and takes the means. Queries are scored in parallel with rayon,
//! each worker reusing its buffers (see [`ranking`] for why the gallery never
//! needs a full sort).
//!
//! `L`, the number of positive levels, is the largest entry of the level
//! matrix (the level of "same building"). Scale `s` in `0..L` counts an item
//! as relevant when its level is at least `L − s`.

mod ranking;
mod scores;
mod stream;

use geographiclib_rs::{Geodesic, InverseGeodesic};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::distance::normalized_finite;
use crate::error::{DyclError, FirstError, Result};
use crate::geo::validate_coords;
use crate::memory::{ensure_fits, try_array2, try_capacity, try_zeroed, Purpose};
use crate::progress::{Progress, ProgressSink, Tracker};
use ranking::{top_k_row, RankedPositives};
use scores::{ScoreContext, ScoreScratch};

/// Per-query metric values of one evaluation (rows follow the queries).
#[derive(Debug, Clone)]
pub struct PerQuery {
    /// `L`: number of positive levels (= scales).
    pub n_levels: usize,
    /// H-AP per query; NaN for a query without any positive (level > 0) item.
    pub h_ap: Array1<f64>,
    /// ASI per query; NaN without positives.
    pub asi: Array1<f64>,
    /// NDCG per query; NaN without positives.
    pub ndcg: Array1<f64>,
    /// `(q, L)` binary average precision per scale; NaN where the query has no
    /// relevant item at that scale.
    pub average_precision: Array2<f64>,
    /// `(q, L)` 1-based rank of the first relevant item per scale; 0 where none.
    pub first_relevant_rank: Array2<u32>,
    /// `(q, L)` number of relevant gallery items per scale.
    pub n_relevant: Array2<u32>,
    /// Gallery index of each query's rank-1 item.
    pub top1: Array1<u32>,
    /// Geodesic distance (m) from the query's building to the building of its
    /// rank-1 item (0 for the same building); present when coordinates were given.
    pub top1_error_m: Option<Array1<f64>>,
}

/// Check a `(q, g)` distance matrix: non-empty, finite, and a gallery whose
/// ranks fit in `u32`.
pub fn validate_distances<D: Copy + Into<f64> + Sync>(
    arg: &'static str,
    distances: ArrayView2<D>,
) -> Result<()> {
    validate_distance_shape(arg, distances.dim())?;
    validate_finite(arg, distances)
}

fn validate_distance_shape(arg: &'static str, (q, g): (usize, usize)) -> Result<()> {
    if q == 0 {
        return Err(DyclError::invalid(
            arg,
            "has no rows: the query set is empty",
        ));
    }
    if g == 0 {
        return Err(DyclError::invalid(
            arg,
            "has no columns: the gallery is empty",
        ));
    }
    if g >= u32::MAX as usize {
        return Err(DyclError::invalid(
            arg,
            format!("gallery of {g} items is too large (max {})", u32::MAX - 1),
        ));
    }
    Ok(())
}

/// The first non-finite entry, if any, as an error naming `arg`.
fn validate_finite<D: Copy + Into<f64> + Sync>(
    arg: &'static str,
    distances: ArrayView2<D>,
) -> Result<()> {
    let bad_row = distances
        .axis_iter(Axis(0))
        .into_par_iter()
        .position_first(|row| !all_finite(row));
    if let Some(i) = bad_row {
        let j = distances
            .row(i)
            .iter()
            .position(|&d| !d.into().is_finite())
            .unwrap_or(0);
        return Err(DyclError::invalid(
            arg,
            format!("contains NaN or inf (first at ({i}, {j}))"),
        ));
    }
    Ok(())
}

/// Whether every value is finite; branch-free per chunk so it vectorises.
fn all_finite<D: Copy + Into<f64>>(row: ArrayView1<D>) -> bool {
    match row.as_slice() {
        Some(values) => values
            .chunks(64)
            .all(|c| c.iter().fold(true, |ok, &d| ok & d.into().is_finite())),
        None => row.iter().all(|&d| d.into().is_finite()),
    }
}

/// Check a level matrix and return `L`, its largest level.
pub fn validate_levels(levels: ArrayView2<u8>) -> Result<usize> {
    let (rows, cols) = levels.dim();
    if rows != cols {
        return Err(DyclError::invalid(
            "levels",
            format!("expected a square (B, B) matrix, got ({rows}, {cols})"),
        ));
    }
    if rows == 0 {
        return Err(DyclError::invalid("levels", "is empty"));
    }
    let top = levels.iter().copied().max().unwrap_or(0);
    if top == 0 {
        return Err(DyclError::invalid(
            "levels",
            "has no positive level (the same building should be level L >= 1)",
        ));
    }
    Ok(top as usize)
}

/// What the id copies are, and what to do when they do not fit.
const IDS: Purpose = Purpose::new("metrics: the checked ids", "pass fewer queries per call");

/// What the per-query results are, and what to do when they do not fit.
const RESULTS: Purpose = Purpose::new(
    "metrics: the per-query results",
    "pass fewer queries per call",
);

/// Check ids against the expected count and the level matrix size.
fn checked_ids(
    arg: &'static str,
    ids: ArrayView1<i64>,
    expected: usize,
    what: &str,
    n_buildings: usize,
) -> Result<Vec<usize>> {
    if ids.len() != expected {
        return Err(DyclError::invalid(
            arg,
            format!("expected {expected} ids ({what}), got {}", ids.len()),
        ));
    }
    let mut out = try_capacity::<usize>(ids.len(), IDS)?;
    for (i, &id) in ids.iter().enumerate() {
        if id < 0 || id as u64 >= n_buildings as u64 {
            return Err(DyclError::invalid(
                arg,
                format!(
                    "id {id} at position {i} is outside the level matrix (valid ids are 0..{})",
                    n_buildings - 1
                ),
            ));
        }
        out.push(id as usize);
    }
    Ok(out)
}

/// Queries per rayon task: at least a few, and few enough tasks (about four
/// per thread) that the per-task buffers, sized for the whole gallery, are
/// allocated a handful of times per call rather than once per query.
fn queries_per_task(n_queries: usize) -> usize {
    let tasks = 4 * rayon::current_num_threads().max(1);
    n_queries.div_ceil(tasks).max(8)
}

/// Metrics of every query for a `(q, g)` distance matrix (lower = closer,
/// ties by gallery index). `query_ids[i]` / `gallery_ids[j]` index the
/// `(B, B)` level matrix; `coords` (`(B, 2)` lat/lon degrees) adds the top-1
/// localization error. `D` is `f64` or `f32` (widened exactly, never narrowed).
pub fn per_query<D: Copy + Into<f64> + Send + Sync>(
    distances: ArrayView2<D>,
    query_ids: ArrayView1<i64>,
    gallery_ids: ArrayView1<i64>,
    levels: ArrayView2<u8>,
    coords: Option<ArrayView2<f64>>,
) -> Result<PerQuery> {
    per_query_with(distances, query_ids, gallery_ids, levels, coords, None)
}

/// [`per_query`] reporting to `progress` (one unit per query), which can
/// cancel it: the call then returns [`DyclError::Cancelled`].
pub fn per_query_with<D: Copy + Into<f64> + Send + Sync>(
    distances: ArrayView2<D>,
    query_ids: ArrayView1<i64>,
    gallery_ids: ArrayView1<i64>,
    levels: ArrayView2<u8>,
    coords: Option<ArrayView2<f64>>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<PerQuery> {
    let inputs = (query_ids, gallery_ids, levels, coords);
    per_query_in_mode(distances, inputs, false, progress)
}

/// [`per_query_with`] for single-set retrieval: the gallery is the query set
/// (`distances` square, `gallery_ids` equal to `query_ids`) and each query's
/// own column is left out of its ranking, so every metric (ranks, AP, H-AP,
/// ASI, NDCG, level counts, the top-1) is over the `N − 1` other items.
pub fn per_query_excluding_self_with<D: Copy + Into<f64> + Send + Sync>(
    distances: ArrayView2<D>,
    query_ids: ArrayView1<i64>,
    gallery_ids: ArrayView1<i64>,
    levels: ArrayView2<u8>,
    coords: Option<ArrayView2<f64>>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<PerQuery> {
    let inputs = (query_ids, gallery_ids, levels, coords);
    per_query_in_mode(distances, inputs, true, progress)
}

/// The ids, levels and coordinates of a metrics call.
type RelevanceInputs<'a> = (
    ArrayView1<'a, i64>,
    ArrayView1<'a, i64>,
    ArrayView2<'a, u8>,
    Option<ArrayView2<'a, f64>>,
);

/// [`per_query_with`], or with `exclude_self` its single-set variant.
fn per_query_in_mode<D: Copy + Into<f64> + Send + Sync>(
    distances: ArrayView2<D>,
    (query_ids, gallery_ids, levels, coords): RelevanceInputs,
    exclude_self: bool,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<PerQuery> {
    let mut ids = check_per_query_inputs(distances.dim(), query_ids, gallery_ids, levels, coords)?;
    if exclude_self {
        check_single_set("distances", "gallery_ids", distances.dim(), &ids)?;
        ids.exclude_self = true;
    }
    let levels = levels.as_standard_layout();
    let mut out = QueryArrays::zeros(distances.nrows(), ids.n_levels)?;
    let q = distances.nrows();
    let all_finite = Progress::new(progress).run("metrics", 0, q, |t| {
        score_queries(distances, &ids, levels.view(), &mut out, t)
    })??;
    // Finiteness is checked while ranking (one read of the matrix, not two);
    // the error is raised here, before any result is returned.
    if !all_finite {
        validate_finite("distances", distances)?;
    }
    let top1_error_m = coords
        .map(|c| top1_errors(c, &ids, &out.top1))
        .transpose()?;
    Ok(out.into_per_query(ids.n_levels, top1_error_m))
}

/// What [`per_query`] takes from its checked inputs: `L` and the ids as
/// row indices of the level matrix.
struct CheckedIds {
    n_levels: usize,
    query: Vec<usize>,
    gallery: Vec<usize>,
    /// Single-set retrieval: query `i` skips gallery item `i` (itself).
    exclude_self: bool,
}

impl CheckedIds {
    /// The gallery column query `i` must skip, if any.
    #[inline]
    fn skip(&self, i: usize) -> Option<usize> {
        self.exclude_self.then_some(i)
    }
}

/// The checks of single-set retrieval: as many gallery items as queries
/// (`shape_arg`), at least two (a query must have another item to find),
/// and the same id at every position (`ids_arg` is blamed).
fn check_single_set(
    shape_arg: &'static str,
    ids_arg: &'static str,
    (q, g): (usize, usize),
    ids: &CheckedIds,
) -> Result<()> {
    if q != g {
        return Err(DyclError::invalid(
            shape_arg,
            format!(
                "exclude_self needs the gallery to be the query set (square), got ({q}, {g}) items"
            ),
        ));
    }
    if g < 2 {
        return Err(DyclError::invalid(
            shape_arg,
            "exclude_self needs at least 2 items (each query is ranked against the others)",
        ));
    }
    if let Some(i) = (0..q).find(|&i| ids.query[i] != ids.gallery[i]) {
        return Err(DyclError::invalid(
            ids_arg,
            format!(
                "with exclude_self must equal query_ids; they differ at position {i} ({} vs {})",
                ids.gallery[i], ids.query[i]
            ),
        ));
    }
    Ok(())
}

/// Every check of [`per_query`] but finiteness, in the order its errors are
/// reported: levels, query ids, gallery ids, the distance shape, coords.
fn check_per_query_inputs(
    (q, g): (usize, usize),
    query_ids: ArrayView1<i64>,
    gallery_ids: ArrayView1<i64>,
    levels: ArrayView2<u8>,
    coords: Option<ArrayView2<f64>>,
) -> Result<CheckedIds> {
    let n_levels = validate_levels(levels)?;
    let n_buildings = levels.nrows();
    let query = checked_ids(
        "query_ids",
        query_ids,
        q,
        "one per row of distances",
        n_buildings,
    )?;
    let gallery = checked_ids(
        "gallery_ids",
        gallery_ids,
        g,
        "one per column of distances",
        n_buildings,
    )?;
    validate_distance_shape("distances", (q, g))?;
    check_coords(coords, n_buildings)?;
    Ok(CheckedIds {
        n_levels,
        query,
        gallery,
        exclude_self: false,
    })
}

/// Optional building coordinates: valid, one row per building.
fn check_coords(coords: Option<ArrayView2<f64>>, n_buildings: usize) -> Result<()> {
    if let Some(c) = coords {
        validate_coords("coords", c)?;
        if c.nrows() != n_buildings {
            return Err(DyclError::invalid(
                "coords",
                format!(
                    "expected one row per building of the level matrix ({n_buildings}), got {}",
                    c.nrows()
                ),
            ));
        }
    }
    Ok(())
}

/// The per-query outputs being filled: one slot or one `(L)` row per query.
struct QueryArrays {
    h_ap: Array1<f64>,
    asi: Array1<f64>,
    ndcg: Array1<f64>,
    top1: Array1<u32>,
    average_precision: Array2<f64>,
    first_relevant_rank: Array2<u32>,
    n_relevant: Array2<u32>,
}

impl QueryArrays {
    fn zeros(q: usize, n_levels: usize) -> Result<Self> {
        Ok(QueryArrays {
            h_ap: Array1::from(try_zeroed(q, RESULTS)?),
            asi: Array1::from(try_zeroed(q, RESULTS)?),
            ndcg: Array1::from(try_zeroed(q, RESULTS)?),
            top1: Array1::from(try_zeroed(q, RESULTS)?),
            average_precision: try_array2((q, n_levels), RESULTS)?,
            first_relevant_rank: try_array2((q, n_levels), RESULTS)?,
            n_relevant: try_array2((q, n_levels), RESULTS)?,
        })
    }

    fn into_per_query(self, n_levels: usize, top1_error_m: Option<Array1<f64>>) -> PerQuery {
        PerQuery {
            n_levels,
            h_ap: self.h_ap,
            asi: self.asi,
            ndcg: self.ndcg,
            average_precision: self.average_precision,
            first_relevant_rank: self.first_relevant_rank,
            n_relevant: self.n_relevant,
            top1: self.top1,
            top1_error_m,
        }
    }
}

/// Buffers of one rayon task, sized for the whole gallery and reused for
/// every query of the task.
struct Scratch {
    ranked: RankedPositives,
    score: ScoreScratch,
    /// Contiguous `f64` copy of a distance row that is not contiguous.
    row: Vec<f64>,
}

impl Scratch {
    /// Buffers for a gallery of `g`; `copy_rows` when rows are not
    /// contiguous and must be copied before they are ranked.
    fn new(g: usize, n_levels: usize, copy_rows: bool) -> Result<Self> {
        Ok(Scratch {
            ranked: RankedPositives::new(g, n_levels)?,
            score: ScoreScratch::new(n_levels),
            row: try_capacity(if copy_rows { g } else { 0 }, ranking::SCRATCH)?,
        })
    }
}

/// One query's share of [`QueryArrays`].
struct QueryOut<'a> {
    h_ap: &'a mut f64,
    asi: &'a mut f64,
    ndcg: &'a mut f64,
    top1: &'a mut u32,
    average_precision: &'a mut [f64],
    first_relevant_rank: &'a mut [u32],
    n_relevant: &'a mut [u32],
}

/// Rank and score every query in parallel into `out`; returns whether every
/// distance was finite (if not, the rows with a non-finite distance are
/// left unscored and the caller reports the error).
fn score_queries<D: Copy + Into<f64> + Send + Sync>(
    distances: ArrayView2<D>,
    ids: &CheckedIds,
    levels: ArrayView2<u8>,
    out: &mut QueryArrays,
    tracker: &Tracker,
) -> Result<bool> {
    let (q, g) = distances.dim();
    let n_levels = ids.n_levels;
    let ctx = ScoreContext::new(n_levels, g)?;
    let copy_rows = distances.row(0).as_slice().is_none();
    let scratch_error = FirstError::default();
    let saw_non_finite = AtomicBool::new(false);
    (
        out.h_ap.as_slice_mut().expect("fresh array").par_iter_mut(),
        out.asi.as_slice_mut().expect("fresh array").par_iter_mut(),
        out.ndcg.as_slice_mut().expect("fresh array").par_iter_mut(),
        out.top1.as_slice_mut().expect("fresh array").par_iter_mut(),
        out.average_precision.axis_iter_mut(Axis(0)).into_par_iter(),
        out.first_relevant_rank
            .axis_iter_mut(Axis(0))
            .into_par_iter(),
        out.n_relevant.axis_iter_mut(Axis(0)).into_par_iter(),
    )
        .into_par_iter()
        .enumerate()
        .with_min_len(queries_per_task(q))
        .for_each_init(
            || Scratch::new(g, n_levels, copy_rows),
            |s, (i, (h_ap, asi, ndcg, top1, mut ap, mut first, mut n_rel))| {
                let s = match s {
                    Ok(s) => s,
                    Err(err) => return scratch_error.record(err),
                };
                if tracker.cancelled() {
                    return;
                }
                tracker.advance(1);
                let level_row = levels.row(ids.query[i]);
                let level_row = level_row.as_slice().expect("standard layout");
                if !rank_row(s, distances.row(i), (&ids.gallery, ids.skip(i)), level_row) {
                    saw_non_finite.store(true, Ordering::Relaxed);
                    return;
                }
                let query_out = QueryOut {
                    h_ap,
                    asi,
                    ndcg,
                    top1,
                    average_precision: ap.as_slice_mut().expect("row of a fresh array"),
                    first_relevant_rank: first.as_slice_mut().expect("row of a fresh array"),
                    n_relevant: n_rel.as_slice_mut().expect("row of a fresh array"),
                };
                score_ranked(&ctx, s, query_out);
            },
        );
    debug_assert_eq!(ctx.n_levels(), n_levels);
    scratch_error.into_result()?;
    Ok(!saw_non_finite.load(Ordering::Relaxed))
}

/// Rank one query's positives into `s.ranked` (see [`RankedPositives::rank`]);
/// a non-contiguous row is first copied into `s.row`. Returns whether every
/// distance was finite.
#[inline]
fn rank_row<D: Copy + Into<f64>>(
    s: &mut Scratch,
    row: ArrayView1<D>,
    (gallery_ids, skip): (&[usize], Option<usize>),
    level_row: &[u8],
) -> bool {
    match row.as_slice() {
        Some(d) => s.ranked.rank_excluding(d, gallery_ids, level_row, skip),
        None => {
            s.row.clear();
            s.row.extend(row.iter().map(|&d| d.into()));
            s.ranked
                .rank_excluding(&s.row, gallery_ids, level_row, skip)
        }
    }
}

/// Every metric of the query just ranked into `s.ranked`.
#[inline]
fn score_ranked(ctx: &ScoreContext, s: &mut Scratch, out: QueryOut) {
    let (pos, ranks, counts) = (
        s.ranked.positives(),
        s.ranked.ranks(),
        s.ranked.level_counts(),
    );
    (*out.h_ap, *out.asi, *out.ndcg) = scores::hierarchical(ctx, pos, ranks, counts, &mut s.score);
    scores::per_scale(
        ctx,
        pos,
        ranks,
        counts,
        &mut s.score,
        out.average_precision,
        out.first_relevant_rank,
        out.n_relevant,
    );
    *out.top1 = s.ranked.top1() as u32;
}

/// Geodesic distance (m) from each query's building to that of its rank-1
/// item; 0 for the same building.
fn top1_errors(
    coords: ArrayView2<f64>,
    ids: &CheckedIds,
    top1: &Array1<u32>,
) -> Result<Array1<f64>> {
    let geod = Geodesic::wgs84();
    let mut errors = Array1::from(try_zeroed::<f64>(ids.query.len(), RESULTS)?);
    errors
        .as_slice_mut()
        .expect("fresh array")
        .par_iter_mut()
        .enumerate()
        .for_each(|(i, e)| {
            let (a, b) = (ids.query[i], ids.gallery[top1[i] as usize]);
            if a != b {
                *e = geod.inverse(
                    coords[[a, 0]],
                    coords[[a, 1]],
                    coords[[b, 0]],
                    coords[[b, 1]],
                );
            }
        });
    Ok(errors)
}

/// [`per_query`] from embeddings, on the cosine distances that
/// [`crate::distance::cosine_distances`] gives (bit-identical results)
/// without ever holding them: queries are scored in blocks of rows (see
/// [`stream`]), so memory is O(block × g), not O(q × g).
pub fn per_query_embeddings(
    query_emb: ArrayView2<f32>,
    gallery_emb: ArrayView2<f32>,
    query_ids: ArrayView1<i64>,
    gallery_ids: ArrayView1<i64>,
    levels: ArrayView2<u8>,
    coords: Option<ArrayView2<f64>>,
) -> Result<PerQuery> {
    per_query_embeddings_with(
        query_emb,
        gallery_emb,
        query_ids,
        gallery_ids,
        levels,
        coords,
        None,
    )
}

/// [`per_query_embeddings`] reporting to `progress` (one unit per query),
/// which can cancel it: the call then returns [`DyclError::Cancelled`].
pub fn per_query_embeddings_with(
    query_emb: ArrayView2<f32>,
    gallery_emb: ArrayView2<f32>,
    query_ids: ArrayView1<i64>,
    gallery_ids: ArrayView1<i64>,
    levels: ArrayView2<u8>,
    coords: Option<ArrayView2<f64>>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<PerQuery> {
    let (q, g) = (query_emb.nrows(), gallery_emb.nrows());
    let block = stream::block_rows(q, g);
    per_query_embeddings_in_blocks(
        (query_emb, gallery_emb),
        (query_ids, gallery_ids),
        (levels, coords, false),
        block,
        Progress::new(progress),
    )
}

/// [`per_query_embeddings_with`] for single-set retrieval (see
/// [`per_query_excluding_self_with`]): `gallery_emb` must equal `query_emb`
/// value for value and `gallery_ids` equal `query_ids`.
pub fn per_query_embeddings_excluding_self_with(
    query_emb: ArrayView2<f32>,
    gallery_emb: ArrayView2<f32>,
    query_ids: ArrayView1<i64>,
    gallery_ids: ArrayView1<i64>,
    levels: ArrayView2<u8>,
    coords: Option<ArrayView2<f64>>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<PerQuery> {
    let (q, g) = (query_emb.nrows(), gallery_emb.nrows());
    let block = stream::block_rows(q, g);
    per_query_embeddings_in_blocks(
        (query_emb, gallery_emb),
        (query_ids, gallery_ids),
        (levels, coords, true),
        block,
        Progress::new(progress),
    )
}

/// [`per_query_embeddings`] with `block` query rows per block.
fn per_query_embeddings_in_blocks(
    (query_emb, gallery_emb): (ArrayView2<f32>, ArrayView2<f32>),
    (query_ids, gallery_ids): (ArrayView1<i64>, ArrayView1<i64>),
    (levels, coords, exclude_self): (ArrayView2<u8>, Option<ArrayView2<f64>>, bool),
    block: usize,
    mut progress: Progress,
) -> Result<PerQuery> {
    let mut ids = check_embedding_inputs(query_emb, gallery_emb, query_ids, gallery_ids, levels)?;
    if exclude_self {
        let shape = (query_emb.nrows(), gallery_emb.nrows());
        check_single_set("gallery_emb", "gallery_ids", shape, &ids)?;
        ids.exclude_self = true;
    }
    check_coords(coords, levels.nrows())?;
    // The normalised copies are the one pass over the embeddings that checks them finite.
    let query = normalized_finite("query_emb", query_emb)?;
    let gallery = normalized_finite("gallery_emb", gallery_emb)?;
    if exclude_self && query_emb != gallery_emb {
        return Err(DyclError::invalid(
            "gallery_emb",
            "with exclude_self must equal query_emb (the gallery is the query set)",
        ));
    }
    let levels = levels.as_standard_layout();
    let mut out = QueryArrays::zeros(query.nrows(), ids.n_levels)?;
    let (q, g) = (query.view(), gallery.view());
    progress.run("metrics from embeddings", 0, q.nrows(), |t| {
        stream::score_blocks(q, g, &ids, levels.view(), block, &mut out, t)
    })??;
    let top1_error_m = coords
        .map(|c| top1_errors(c, &ids, &out.top1))
        .transpose()?;
    Ok(out.into_per_query(ids.n_levels, top1_error_m))
}

/// The checks of [`per_query_embeddings`] that read no embedding value, in
/// the order its errors are reported: levels, query ids, gallery ids, the
/// embedding shapes.
fn check_embedding_inputs(
    query_emb: ArrayView2<f32>,
    gallery_emb: ArrayView2<f32>,
    query_ids: ArrayView1<i64>,
    gallery_ids: ArrayView1<i64>,
    levels: ArrayView2<u8>,
) -> Result<CheckedIds> {
    let n_levels = validate_levels(levels)?;
    let (q, g) = (query_emb.nrows(), gallery_emb.nrows());
    let what = ("one per row of query_emb", "one per row of gallery_emb");
    let query = checked_ids("query_ids", query_ids, q, what.0, levels.nrows())?;
    let gallery = checked_ids("gallery_ids", gallery_ids, g, what.1, levels.nrows())?;
    for (arg, emb, set) in [
        ("query_emb", query_emb, "query set"),
        ("gallery_emb", gallery_emb, "gallery"),
    ] {
        if emb.nrows() == 0 {
            return Err(DyclError::invalid(
                arg,
                format!("has no rows: the {set} is empty"),
            ));
        }
        if emb.ncols() == 0 {
            return Err(DyclError::invalid(arg, "has zero columns"));
        }
    }
    if query_emb.ncols() != gallery_emb.ncols() {
        return Err(DyclError::invalid(
            "gallery_emb",
            format!(
                "embedding width {} differs from query_emb's {}",
                gallery_emb.ncols(),
                query_emb.ncols()
            ),
        ));
    }
    if g >= u32::MAX as usize {
        return Err(DyclError::invalid(
            "gallery_emb",
            format!("gallery of {g} items is too large (max {})", u32::MAX - 1),
        ));
    }
    Ok(CheckedIds {
        n_levels,
        query,
        gallery,
        exclude_self: false,
    })
}

/// Indices of the `k` nearest gallery items of every query, nearest first,
/// ties by gallery index: `(q, k)`.
pub fn ranked_gallery<D: Copy + Into<f64> + Send + Sync>(
    distances: ArrayView2<D>,
    k: usize,
) -> Result<Array2<u32>> {
    ranked_gallery_with(distances, k, None)
}

/// [`ranked_gallery`] reporting to `progress` (one unit per query), which
/// can cancel it: the call then returns [`DyclError::Cancelled`].
pub fn ranked_gallery_with<D: Copy + Into<f64> + Send + Sync>(
    distances: ArrayView2<D>,
    k: usize,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<u32>> {
    let (q, g) = distances.dim();
    validate_distance_shape("distances", (q, g))?;
    if k == 0 || k > g {
        return Err(DyclError::invalid(
            "k",
            format!("must be between 1 and the gallery size {g}, got {k}"),
        ));
    }
    // An impossible size fails before the distances are scanned.
    ensure_fits::<u32>(&[q, k], RESULTS)?;
    validate_finite("distances", distances)?;
    let mut out = try_array2::<u32>((q, k), RESULTS)?;
    let view = out.view_mut();
    Progress::new(progress).run("ranking the gallery", 0, q, |t| {
        top_k_rows(distances, k, view, t)
    })??;
    Ok(out)
}

/// The body of [`ranked_gallery_with`]: each query's top `k` into its row
/// of `out`, in parallel; stops early once `tracker` is cancelled.
fn top_k_rows<D: Copy + Into<f64> + Send + Sync>(
    distances: ArrayView2<D>,
    k: usize,
    mut out: ArrayViewMut2<u32>,
    tracker: &Tracker,
) -> Result<()> {
    let (q, g) = distances.dim();
    let copy_rows = distances.row(0).as_slice().is_none();
    let scratch_error = FirstError::default();
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .with_min_len(queries_per_task(q))
        .for_each_init(
            || -> Result<(Vec<u128>, Vec<f64>)> {
                let row_len = if copy_rows { g } else { 0 };
                Ok((
                    try_capacity(g, ranking::SCRATCH)?,
                    try_capacity(row_len, ranking::SCRATCH)?,
                ))
            },
            |scratch, (i, mut out_row)| {
                let (keys, row_buf) = match scratch {
                    Ok(s) => (&mut s.0, &mut s.1),
                    Err(err) => return scratch_error.record(err),
                };
                if tracker.cancelled() {
                    return;
                }
                tracker.advance(1);
                let out_row = out_row.as_slice_mut().expect("row of a fresh array");
                let row = distances.row(i);
                match row.as_slice() {
                    Some(d) => top_k_row(d, k, keys, out_row),
                    None => {
                        row_buf.clear();
                        row_buf.extend(row.iter().map(|&d| d.into()));
                        top_k_row(row_buf, k, keys, out_row);
                    }
                }
            },
        );
    scratch_error.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::cosine_distances;
    use ndarray::{array, Array1, Array2};

    fn lv3() -> Array2<u8> {
        // buildings 0..4 with L = 3
        array![[3, 2, 1, 0], [2, 3, 0, 1], [1, 0, 3, 2], [0, 1, 2, 3]]
    }

    #[test]
    fn perfect_ranking_scores_one_everywhere() {
        let levels = lv3();
        let gallery_ids = array![0i64, 0, 1, 2, 3];
        let query_ids = array![0i64];
        // distances decreasing with level: 0, 0 (building 0), 1 (level 2), 2 (level 1), 3 (level 0)
        let d = array![[0.0, 0.1, 1.0, 2.0, 3.0]];
        let r = per_query(
            d.view(),
            query_ids.view(),
            gallery_ids.view(),
            levels.view(),
            None,
        )
        .unwrap();
        assert_eq!(r.n_levels, 3);
        for v in [r.asi[0], r.ndcg[0]] {
            assert!((v - 1.0).abs() < 1e-12, "{v}");
        }
        // H-AP's ideal orders by per-item relevance, not by level: two images of
        // the query's building share weight 1.5 (0.75 each) < 1.0 of the level-2
        // item, so the level-sorted ranking scores below 1 (hand computed).
        let expect = (0.75 / 1.0 + 1.5 / 2.0 + 2.5 / 3.0 + 2.0 / 4.0) / 3.0;
        assert!((r.h_ap[0] - expect).abs() < 1e-12, "{}", r.h_ap[0]);
        // with one image per building the level order is ideal for H-AP too
        let one_each = per_query(
            array![[0.0, 1.0, 2.0, 3.0]].view(),
            query_ids.view(),
            array![0i64, 1, 2, 3].view(),
            levels.view(),
            None,
        )
        .unwrap();
        assert!((one_each.h_ap[0] - 1.0).abs() < 1e-12);
        assert_eq!(r.average_precision.row(0).to_vec(), vec![1.0, 1.0, 1.0]);
        assert_eq!(r.first_relevant_rank.row(0).to_vec(), vec![1, 1, 1]);
        assert_eq!(r.n_relevant.row(0).to_vec(), vec![2, 3, 4]);
        assert_eq!(r.top1[0], 0);
        assert!(r.top1_error_m.is_none());
    }

    #[test]
    fn f32_and_non_contiguous_inputs_agree_with_f64() {
        let levels = lv3();
        let gallery_ids = array![3i64, 0, 1, 2, 2, 0, 1];
        let query_ids = array![0i64, 1, 2, 3, 1];
        let d64 = Array2::from_shape_fn((5, 7), |(i, j)| ((i * 13 + j * 7) % 5) as f64 * 0.25);
        let d32 = d64.mapv(|x| x as f32);
        let a = per_query(
            d64.view(),
            query_ids.view(),
            gallery_ids.view(),
            levels.view(),
            None,
        )
        .unwrap();
        let b = per_query(
            d32.view(),
            query_ids.view(),
            gallery_ids.view(),
            levels.view(),
            None,
        )
        .unwrap();
        // a transposed (column-major) copy gives non-contiguous rows
        let t = d64.t().to_owned();
        let c = per_query(
            t.t(),
            query_ids.view(),
            gallery_ids.view(),
            levels.view(),
            None,
        )
        .unwrap();
        for other in [&b, &c] {
            assert_eq!(a.top1, other.top1);
            assert_eq!(a.first_relevant_rank, other.first_relevant_rank);
            for (x, y) in a.h_ap.iter().zip(other.h_ap.iter()) {
                assert_eq!(x.to_bits(), y.to_bits());
            }
        }
        let top = ranked_gallery(t.t(), 7).unwrap();
        let top_c = ranked_gallery(d64.view(), 7).unwrap();
        assert_eq!(top, top_c);
        assert_eq!(top.column(0), a.top1);
    }

    #[test]
    fn localization_error_is_zero_for_same_building() {
        let levels = array![[2u8, 1], [1, 2]];
        let coords = array![[22.3, 114.2], [22.301, 114.2]];
        let d = array![[0.5, 0.1], [0.2, 0.9]];
        let r = per_query(
            d.view(),
            array![0i64, 1].view(),
            array![0i64, 1].view(),
            levels.view(),
            Some(coords.view()),
        )
        .unwrap();
        let err = r.top1_error_m.unwrap();
        // query 0 ranks building 1 first (about 110.6 m north), query 1 ranks building 0 first
        assert!((err[0] - 110.6).abs() < 1.0, "{}", err[0]);
        assert_eq!(err[0], err[1]);
        let d_ok = array![[0.1, 0.5], [0.9, 0.2]];
        let r = per_query(
            d_ok.view(),
            array![0i64, 1].view(),
            array![0i64, 1].view(),
            levels.view(),
            Some(coords.view()),
        )
        .unwrap();
        assert_eq!(r.top1_error_m.unwrap().to_vec(), vec![0.0, 0.0]);
    }

    fn arg_of<T: std::fmt::Debug>(r: Result<T>) -> &'static str {
        match r {
            Err(DyclError::InvalidArgument { arg, .. }) => arg,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn bad_input_names_the_argument() {
        let levels = lv3();
        let d = array![[0.1, 0.2]];
        let (q, g) = (array![0i64], array![0i64, 1]);
        let call = |d: ArrayView2<f64>,
                    q: ArrayView1<i64>,
                    g: ArrayView1<i64>,
                    lv: ArrayView2<u8>| { per_query(d, q, g, lv, None) };
        assert_eq!(
            arg_of(call(
                array![[0.1, f64::NAN]].view(),
                q.view(),
                g.view(),
                levels.view()
            )),
            "distances"
        );
        assert_eq!(
            arg_of(call(
                array![[0.1, f64::INFINITY]].view(),
                q.view(),
                g.view(),
                levels.view()
            )),
            "distances"
        );
        let empty_q = Array2::<f64>::zeros((0, 2));
        assert_eq!(
            arg_of(call(
                empty_q.view(),
                Array1::<i64>::zeros(0).view(),
                g.view(),
                levels.view()
            )),
            "distances"
        );
        let empty_g = Array2::<f64>::zeros((1, 0));
        assert_eq!(
            arg_of(call(
                empty_g.view(),
                q.view(),
                Array1::<i64>::zeros(0).view(),
                levels.view()
            )),
            "distances"
        );
        assert_eq!(
            arg_of(call(
                d.view(),
                array![0i64, 1].view(),
                g.view(),
                levels.view()
            )),
            "query_ids"
        );
        assert_eq!(
            arg_of(call(d.view(), array![4i64].view(), g.view(), levels.view())),
            "query_ids"
        );
        assert_eq!(
            arg_of(call(
                d.view(),
                q.view(),
                array![0i64, -1].view(),
                levels.view()
            )),
            "gallery_ids"
        );
        assert_eq!(
            arg_of(call(d.view(), q.view(), array![0i64].view(), levels.view())),
            "gallery_ids"
        );
        let not_square = Array2::<u8>::ones((2, 3));
        assert_eq!(
            arg_of(call(d.view(), q.view(), g.view(), not_square.view())),
            "levels"
        );
        let all_zero = Array2::<u8>::zeros((2, 2));
        assert_eq!(
            arg_of(call(d.view(), q.view(), g.view(), all_zero.view())),
            "levels"
        );
        let wrong_coords = array![[0.0, 0.0]];
        assert_eq!(
            arg_of(per_query(
                d.view(),
                q.view(),
                g.view(),
                levels.view(),
                Some(wrong_coords.view())
            )),
            "coords"
        );
        assert_eq!(arg_of(ranked_gallery(d.view(), 3)), "k");
        assert_eq!(arg_of(ranked_gallery(d.view(), 0)), "k");
        let qe = array![[1.0f32, 0.0]];
        let ge = array![[1.0f32, 0.0, 0.0]];
        assert!(per_query_embeddings(
            qe.view(),
            ge.view(),
            q.view(),
            array![0i64].view(),
            levels.view(),
            None
        )
        .is_err());
    }

    fn out_of_memory<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(DyclError::OutOfMemory(msg)) => msg,
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
    }

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        // Zero strides: 2^45 queries with no memory behind them.
        let levels = lv3();
        let n = 1usize << 45;
        let row = array![[0.5, 0.25]];
        let d = row.broadcast((n, 2)).unwrap();
        let zero = array![0i64];
        let q = zero.broadcast(n).unwrap();
        let g = array![0i64, 1];
        let msg = out_of_memory(per_query(d, q, g.view(), levels.view(), None));
        assert!(msg.contains("pass fewer queries per call"), "{msg}");
        let wide = row.broadcast((1usize << 61, 2)).unwrap();
        out_of_memory(ranked_gallery(wide, 2));
        let e = array![[1.0f32, 0.0]];
        let msg = out_of_memory(per_query_embeddings(
            e.broadcast((n, 2)).unwrap(),
            e.view(),
            q,
            zero.view(),
            levels.view(),
            None,
        ));
        assert!(msg.contains("metrics: "), "{msg}");
    }

    #[test]
    fn non_finite_distance_is_reported_with_its_position() {
        let levels = lv3();
        let mut d = Array2::<f64>::zeros((40, 3));
        d[[27, 1]] = f64::NEG_INFINITY;
        let q = Array1::<i64>::zeros(40);
        let g = array![0i64, 1, 2];
        match per_query(d.view(), q.view(), g.view(), levels.view(), None) {
            Err(DyclError::InvalidArgument { arg, msg }) => {
                assert_eq!(arg, "distances");
                assert!(msg.contains("(27, 1)"), "{msg}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn assert_bits_equal(a: &PerQuery, b: &PerQuery, what: &str) {
        let bits = |x: &Array1<f64>| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let bits2 = |x: &Array2<f64>| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.h_ap), bits(&b.h_ap), "{what}: H-AP");
        assert_eq!(bits(&a.asi), bits(&b.asi), "{what}: ASI");
        assert_eq!(bits(&a.ndcg), bits(&b.ndcg), "{what}: NDCG");
        assert_eq!(
            bits2(&a.average_precision),
            bits2(&b.average_precision),
            "{what}: AP"
        );
        assert_eq!(a.first_relevant_rank, b.first_relevant_rank, "{what}");
        assert_eq!(a.n_relevant, b.n_relevant, "{what}");
        assert_eq!(a.top1, b.top1, "{what}");
        let errors = |r: &PerQuery| r.top1_error_m.as_ref().map(bits);
        assert_eq!(errors(a), errors(b), "{what}: errors");
    }

    /// Embeddings with near-ties (a small grid of values) over 40 buildings
    /// whose levels come from coordinates.
    fn embedding_case(q: usize, g: usize, d: usize) -> EmbeddingCase {
        let value =
            |i: usize, j: usize, salt: usize| ((i * 31 + j * 17 + salt) % 23) as f32 / 7.0 - 1.5;
        let coords = Array2::from_shape_fn((40, 2), |(b, c)| {
            [22.3, 114.2][c] + ((b * [37, 53][c]) % 29) as f64 * 1e-3
        });
        EmbeddingCase {
            query: Array2::from_shape_fn((q, d), |(i, j)| value(i, j, 1)),
            gallery: Array2::from_shape_fn((g, d), |(i, j)| value(i, j, 5)),
            query_ids: Array1::from_shape_fn(q, |i| ((i * 7) % 40) as i64),
            gallery_ids: Array1::from_shape_fn(g, |i| ((i * 3) % 40) as i64),
            levels: crate::geo::level_matrix(coords.view(), &[200.0, 500.0]).unwrap(),
            coords,
        }
    }

    struct EmbeddingCase {
        query: Array2<f32>,
        gallery: Array2<f32>,
        query_ids: Array1<i64>,
        gallery_ids: Array1<i64>,
        levels: Array2<u8>,
        coords: Array2<f64>,
    }

    #[test]
    fn streamed_embeddings_are_bit_identical_to_the_distance_matrix() {
        let c = embedding_case(600, 700, 13);
        let d = cosine_distances(c.query.view(), c.gallery.view()).unwrap();
        let (qi, gi) = (c.query_ids.view(), c.gallery_ids.view());
        let want = per_query(d.view(), qi, gi, c.levels.view(), Some(c.coords.view())).unwrap();
        assert!(
            want.h_ap.iter().any(|v| *v < 1.0),
            "a case where ranking matters"
        );
        for block in [1, 7, 32, 256, 300, 600, 1000] {
            let got = per_query_embeddings_in_blocks(
                (c.query.view(), c.gallery.view()),
                (qi, gi),
                (c.levels.view(), Some(c.coords.view()), false),
                block,
                Progress::silent(),
            )
            .unwrap();
            assert_bits_equal(&got, &want, &format!("block {block}"));
        }
        let got = per_query_embeddings(
            c.query.view(),
            c.gallery.view(),
            qi,
            gi,
            c.levels.view(),
            None,
        )
        .unwrap();
        assert_eq!(got.top1, want.top1);
        // non-contiguous embeddings give the same bits too
        let (qt, gt) = (c.query.t().to_owned(), c.gallery.t().to_owned());
        let strided = per_query_embeddings(
            qt.t(),
            gt.t(),
            qi,
            gi,
            c.levels.view(),
            Some(c.coords.view()),
        );
        assert_bits_equal(&strided.unwrap(), &want, "strided");
    }

    #[test]
    fn non_finite_embeddings_name_their_argument() {
        let c = embedding_case(50, 60, 4);
        let (qi, gi, lv) = (c.query_ids.view(), c.gallery_ids.view(), c.levels.view());
        for (which, arg) in [(0, "query_emb"), (1, "gallery_emb")] {
            let (mut q, mut g) = (c.query.clone(), c.gallery.clone());
            match which {
                0 => q[[41, 2]] = f32::NAN,
                _ => g[[3, 0]] = f32::NEG_INFINITY,
            }
            let err = per_query_embeddings(q.view(), g.view(), qi, gi, lv, None).unwrap_err();
            assert_eq!(arg_of(Err::<(), _>(err)), arg);
        }
        let empty = Array2::<f32>::zeros((0, 4));
        let none = Array1::<i64>::zeros(0);
        let err = per_query_embeddings(empty.view(), c.gallery.view(), none.view(), gi, lv, None);
        assert_eq!(arg_of(err), "query_emb");
    }

    /// A call under test, given the sink to report to.
    type Call<'a> = dyn Fn(&mut CancelAfter) -> Result<()> + 'a;

    /// Says go on `allowed` times, then cancels; keeps the last report.
    struct CancelAfter {
        allowed: usize,
        calls: usize,
        last: (String, usize, usize),
    }

    impl CancelAfter {
        fn new(allowed: usize) -> Self {
            CancelAfter {
                allowed,
                calls: 0,
                last: (String::new(), 0, 0),
            }
        }
    }

    impl ProgressSink for CancelAfter {
        fn report(&mut self, stage: &str, done: usize, total: usize) -> bool {
            self.calls += 1;
            self.last = (stage.to_string(), done, total);
            self.calls <= self.allowed
        }
    }

    #[test]
    fn sink_returning_false_cancels_metrics_calls() {
        // Seconds of work on one core; the first report while running cancels.
        let c = embedding_case(20_000, 4_000, 16);
        let (qi, gi, lv) = (c.query_ids.view(), c.gallery_ids.view(), c.levels.view());
        let row = Array1::from_shape_fn(20_000, |j| ((j * 7919) % 1000) as f64);
        let d = row.broadcast((20_000, 20_000)).unwrap();
        let many = Array1::from_shape_fn(20_000, |i| (i % 40) as i64);
        let calls: [&Call; 3] = [
            &|s| {
                per_query_embeddings_with(
                    c.query.view(),
                    c.gallery.view(),
                    qi,
                    gi,
                    lv,
                    None,
                    Some(s),
                )
                .map(|_| ())
            },
            &|s| per_query_with(d, many.view(), many.view(), lv, None, Some(s)).map(|_| ()),
            &|s| ranked_gallery_with(d, 20_000, Some(s)).map(|_| ()),
        ];
        for call in calls {
            let mut sink = CancelAfter::new(1);
            assert_eq!(call(&mut sink), Err(DyclError::Cancelled));
            let (stage, done, total) = sink.last.clone();
            assert!(done < total, "{stage}: cancelled after the work was done");
        }
        // A sink that always goes on sees the whole stage and changes nothing.
        let small = embedding_case(300, 200, 8);
        let args = (
            small.query_ids.view(),
            small.gallery_ids.view(),
            small.levels.view(),
        );
        let mut sink = CancelAfter::new(usize::MAX);
        let (qe, ge) = (small.query.view(), small.gallery.view());
        let got = per_query_embeddings_with(qe, ge, args.0, args.1, args.2, None, Some(&mut sink));
        let want = per_query_embeddings(qe, ge, args.0, args.1, args.2, None).unwrap();
        assert_bits_equal(&got.unwrap(), &want, "with a sink");
        assert_eq!(sink.last, ("metrics from embeddings".to_string(), 300, 300));
    }

    #[test]
    fn embeddings_entry_point_matches_distances() {
        let levels = lv3();
        let qe = array![[1.0f32, 0.2], [0.0, 1.0]];
        let ge = array![[1.0f32, 0.0], [0.7, 0.7], [0.0, 1.0], [-1.0, 0.1]];
        let (q, g) = (array![0i64, 2], array![0i64, 1, 2, 3]);
        let a = per_query_embeddings(
            qe.view(),
            ge.view(),
            q.view(),
            g.view(),
            levels.view(),
            None,
        )
        .unwrap();
        let d = cosine_distances(qe.view(), ge.view()).unwrap();
        let b = per_query(d.view(), q.view(), g.view(), levels.view(), None).unwrap();
        assert_eq!(a.top1, b.top1);
        assert_eq!(a.h_ap, b.h_ap);
        assert_eq!(a.top1, array![0u32, 2]);
    }
}

#[cfg(test)]
mod single_tests;
