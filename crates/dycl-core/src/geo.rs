//! Geodesic distances on the WGS84 ellipsoid and the relevance levels derived
//! from them (DESIGN §3).
//!
//! Distances use Karney's algorithm through `geographiclib-rs`, so they agree
//! with GeographicLib to well under a millimetre.

use geographiclib_rs::{Geodesic, InverseGeodesic};
use ndarray::{Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::error::{DyclError, Result};
use crate::memory::{ensure_fits, try_array2, Purpose, Zeroable};
use crate::progress::{Progress, ProgressSink, Tracker};

/// Check an `(n, 2)` array of latitude/longitude degrees.
pub fn validate_coords(arg: &'static str, coords: ArrayView2<f64>) -> Result<()> {
    if coords.ncols() != 2 {
        return Err(DyclError::invalid(
            arg,
            format!(
                "expected shape (n, 2) of latitude, longitude; got (n, {})",
                coords.ncols()
            ),
        ));
    }
    let (lats, lons) = (coords.column(0), coords.column(1));
    // One branch-light pass; the message is worked out for the first bad row only.
    let in_range =
        |lat: f64, lon: f64| (-90.0..=90.0).contains(&lat) && (-540.0..=540.0).contains(&lon);
    let Some(row) = lats
        .iter()
        .zip(lons.iter())
        .position(|(&lat, &lon)| !in_range(lat, lon))
    else {
        return Ok(());
    };
    let (lat, lon) = (lats[row], lons[row]);
    let msg = if !lat.is_finite() || !lon.is_finite() {
        format!("row {row} is not finite ({lat}, {lon})")
    } else if !(-90.0..=90.0).contains(&lat) {
        format!("row {row}: latitude {lat} outside [-90, 90]")
    } else {
        format!("row {row}: longitude {lon} outside [-540, 540]")
    };
    Err(DyclError::invalid(arg, msg))
}

/// What the distance matrix is, and what to do when it does not fit.
const DISTANCES: Purpose = Purpose::new(
    "geodesic_distances: the distance matrix",
    "pass fewer coordinates per call (e.g. blocks of rows of coords_a)",
);

/// What the level matrix is, and what to do when it does not fit.
const LEVELS: Purpose = Purpose::new(
    "level_matrix: the level matrix",
    "pass fewer buildings per call",
);

/// Rows per parallel work item, and between two looks at the cancellation flag.
pub const ROW_BLOCK: usize = 16;

/// Ellipsoidal geodesic distance in metres between every row of `a` and every
/// row of `b` (both `(n, 2)` latitude/longitude in degrees).
pub fn geodesic_distances(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<Array2<f64>> {
    geodesic_distances_with(a, b, None)
}

/// [`geodesic_distances`] reporting to `progress`, which can cancel it
/// (checked every [`ROW_BLOCK`] rows; the call then returns
/// [`DyclError::Cancelled`]).
pub fn geodesic_distances_with(
    a: ArrayView2<f64>,
    b: ArrayView2<f64>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f64>> {
    // An impossible size fails before the inputs are scanned.
    ensure_fits::<f64>(&[a.nrows(), b.nrows()], DISTANCES)?;
    validate_coords("coords_a", a)?;
    validate_coords("coords_b", b)?;
    let mut out = try_array2::<f64>((a.nrows(), b.nrows()), DISTANCES)?;
    let geod = Geodesic::wgs84();
    let rows = out.view_mut();
    Progress::new(progress).run("geodesic distances", 0, a.nrows(), |t| {
        for_row_blocks(rows, t, |i, mut row| {
            for (j, d) in row.iter_mut().enumerate() {
                *d = geod.inverse(a[[i, 0]], a[[i, 1]], b[[j, 0]], b[[j, 1]]);
            }
        })
    })?;
    Ok(out)
}

/// Pairwise distances of one set with itself; computes each pair once.
pub fn geodesic_distances_self(coords: ArrayView2<f64>) -> Result<Array2<f64>> {
    geodesic_distances_self_with(coords, None)
}

/// [`geodesic_distances_self`] reporting to `progress`, which can cancel it.
pub fn geodesic_distances_self_with(
    coords: ArrayView2<f64>,
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<f64>> {
    let stage = ("geodesic distances", DISTANCES);
    symmetric(coords, stage, 0.0, |d| d, Progress::new(progress))
}

/// `fill(i, row)` for every row `i` of `out`, in parallel blocks of
/// [`ROW_BLOCK`] rows; stops at the next block once `tracker` is cancelled.
fn for_row_blocks<T: Send + Sync>(
    mut out: ArrayViewMut2<T>,
    tracker: &Tracker,
    fill: impl Fn(usize, ArrayViewMut1<T>) + Sync,
) {
    out.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)
        .into_par_iter()
        .enumerate()
        .for_each(|(blk, mut rows)| {
            if tracker.cancelled() {
                return;
            }
            let n_rows = rows.nrows();
            for (r, row) in rows.axis_iter_mut(Axis(0)).enumerate() {
                fill(blk * ROW_BLOCK + r, row);
            }
            tracker.advance(n_rows);
        });
}

/// `value(d)` of the geodesic distance `d` of every pair of rows of
/// `coords`, `diagonal` on the diagonal: the upper triangle in parallel,
/// written in place, then mirrored. The inverse problem is the expensive
/// part and is symmetric, so each pair is solved once. `stage` names the
/// work for `progress` and the buffer for an allocation error.
fn symmetric<T: Zeroable + Send + Sync>(
    coords: ArrayView2<f64>,
    (stage, purpose): (&str, Purpose),
    diagonal: T,
    value: impl Fn(f64) -> T + Sync,
    mut progress: Progress,
) -> Result<Array2<T>> {
    let n = coords.nrows();
    ensure_fits::<T>(&[n, n], purpose)?;
    validate_coords("coords", coords)?;
    let mut out = try_array2::<T>((n, n), purpose)?;
    let geod = Geodesic::wgs84();
    let (lat, lon) = (coords.column(0), coords.column(1));
    let rows = out.view_mut();
    progress.run(stage, 0, n, |t| {
        for_row_blocks(rows, t, |i, mut row| {
            row[i] = diagonal;
            for j in (i + 1)..n {
                row[j] = value(geod.inverse(lat[i], lon[i], lat[j], lon[j]));
            }
        })
    })?;
    mirror_upper(&mut out);
    Ok(out)
}

/// Copy the upper triangle of a square matrix onto the lower one, in tiles
/// so both the rows read and the rows written stay in cache.
fn mirror_upper<T: Copy>(m: &mut Array2<T>) {
    const TILE: usize = 64;
    let n = m.nrows();
    for i0 in (0..n).step_by(TILE) {
        for j0 in (0..=i0).step_by(TILE) {
            for i in i0..(i0 + TILE).min(n) {
                for j in j0..(j0 + TILE).min(i) {
                    m[[i, j]] = m[[j, i]];
                }
            }
        }
    }
}

/// Check that thresholds are finite, non-negative and strictly increasing,
/// and that the number of levels fits in a `u8`.
pub fn validate_thresholds(thresholds: &[f64]) -> Result<()> {
    if thresholds.len() > 254 {
        return Err(DyclError::invalid(
            "thresholds",
            "at most 254 thresholds are supported",
        ));
    }
    for (i, t) in thresholds.iter().enumerate() {
        if !t.is_finite() || *t < 0.0 {
            return Err(DyclError::invalid(
                "thresholds",
                format!("threshold {i} ({t}) must be finite and >= 0"),
            ));
        }
        if i > 0 && *t <= thresholds[i - 1] {
            return Err(DyclError::invalid(
                "thresholds",
                format!("must be strictly increasing; got {:?}", thresholds),
            ));
        }
    }
    Ok(())
}

/// Relevance level of two distinct buildings `distance` metres apart:
/// `L-1` within `thresholds[0]`, `L-2` within `thresholds[1]`, ..., 0 beyond
/// the last threshold, with `L = thresholds.len() + 1`.
#[inline]
pub fn level_of_distance(distance: f64, thresholds: &[f64]) -> u8 {
    let n_levels = thresholds.len() + 1;
    match thresholds.iter().position(|&t| distance <= t) {
        Some(i) => (n_levels - 1 - i) as u8,
        None => 0,
    }
}

/// Building-by-building level matrix from coordinates: the diagonal (same
/// building id) is `L`, other pairs get [`level_of_distance`]. Levels are
/// computed straight from each pair's distance: no `(B, B)` float64 matrix
/// is held on the way.
pub fn level_matrix(coords: ArrayView2<f64>, thresholds: &[f64]) -> Result<Array2<u8>> {
    level_matrix_with(coords, thresholds, None)
}

/// [`level_matrix`] reporting to `progress`, which can cancel it.
pub fn level_matrix_with(
    coords: ArrayView2<f64>,
    thresholds: &[f64],
    progress: Option<&mut dyn ProgressSink>,
) -> Result<Array2<u8>> {
    validate_thresholds(thresholds)?;
    let top = (thresholds.len() + 1) as u8;
    let value = |d| level_of_distance(d, thresholds);
    symmetric(
        coords,
        ("level matrix", LEVELS),
        top,
        value,
        Progress::new(progress),
    )
}

/// Level matrix from a precomputed square distance matrix (metres).
pub fn levels_from_distances(dist: ArrayView2<f64>, thresholds: &[f64]) -> Result<Array2<u8>> {
    let top = (thresholds.len() + 1) as u8;
    let mut out = try_array2::<u8>(dist.dim(), LEVELS)?;
    out.zip_mut_with(&dist, |l, &d| *l = level_of_distance(d, thresholds));
    for i in 0..out.nrows().min(out.ncols()) {
        out[[i, i]] = top;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn known_distance_matches_geographiclib() {
        // GeographicLib's documented example: JFK to LHR, 5551759.400319 m on WGS84
        // (GeodSolve -i 40.6 -73.8 51.6 -0.5, full precision).
        let a = array![[40.6, -73.8]];
        let b = array![[51.6, -0.5]];
        let d = geodesic_distances(a.view(), b.view()).unwrap();
        assert!(
            (d[[0, 0]] - 5_551_759.400_319).abs() < 1e-3,
            "{}",
            d[[0, 0]]
        );
    }

    #[test]
    fn self_distances_are_symmetric_with_zero_diagonal() {
        let c = array![[22.3, 114.2], [22.301, 114.2], [22.3, 114.205]];
        let d = geodesic_distances_self(c.view()).unwrap();
        let full = geodesic_distances(c.view(), c.view()).unwrap();
        for i in 0..3 {
            assert_eq!(d[[i, i]], 0.0);
            for j in 0..3 {
                assert_eq!(d[[i, j]], d[[j, i]]);
                assert!((d[[i, j]] - full[[i, j]]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn levels_follow_thresholds() {
        let t = [200.0, 500.0];
        assert_eq!(level_of_distance(0.0, &t), 2);
        assert_eq!(level_of_distance(200.0, &t), 2);
        assert_eq!(level_of_distance(200.1, &t), 1);
        assert_eq!(level_of_distance(500.0, &t), 1);
        assert_eq!(level_of_distance(500.1, &t), 0);
        // any number of levels
        let t4 = [10.0, 20.0, 30.0];
        assert_eq!(level_of_distance(5.0, &t4), 3);
        assert_eq!(level_of_distance(25.0, &t4), 1);
        assert_eq!(level_of_distance(35.0, &t4), 0);
    }

    #[test]
    fn same_building_is_top_level_even_at_zero_distance_duplicates() {
        // two buildings at the same spot are level L-1, not L: "same" means same id
        let c = array![[22.3, 114.2], [22.3, 114.2]];
        let lv = level_matrix(c.view(), &[200.0, 500.0]).unwrap();
        assert_eq!(lv, array![[3, 2], [2, 3]]);
    }

    #[test]
    fn level_matrix_matches_levels_of_the_distance_matrix() {
        let c = Array2::from_shape_fn((150, 2), |(i, j)| {
            if j == 0 {
                22.3 + ((i * 37) % 101) as f64 * 4e-5
            } else {
                114.2 + ((i * 53) % 97) as f64 * 4e-5
            }
        });
        let t = [200.0, 500.0];
        let dist = geodesic_distances_self(c.view()).unwrap();
        let full = geodesic_distances(c.view(), c.view()).unwrap();
        for ((i, j), &d) in dist.indexed_iter() {
            assert_eq!(d, dist[[j, i]]);
            assert!((d - full[[i, j]]).abs() < 1e-6);
        }
        let lv = level_matrix(c.view(), &t).unwrap();
        assert_eq!(lv, levels_from_distances(dist.view(), &t).unwrap());
        assert!(lv.iter().any(|&l| l == 1) && lv.iter().any(|&l| l == 0));
    }

    fn out_of_memory<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(DyclError::OutOfMemory(msg)) => msg,
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
    }

    #[test]
    fn impossible_matrices_are_errors_not_aborts() {
        // Zero strides: 2^33 rows of one coordinate, no memory behind them.
        let one = array![[22.3, 114.2]];
        let huge = one.broadcast((1usize << 33, 2)).unwrap();
        let msg = out_of_memory(geodesic_distances(huge, huge));
        assert!(
            msg.starts_with("geodesic_distances: the distance matrix of"),
            "{msg}"
        );
        assert!(msg.contains("pass fewer coordinates"), "{msg}");
        out_of_memory(geodesic_distances_self(huge));
        let msg = out_of_memory(level_matrix(huge, &[200.0]));
        assert!(
            msg.starts_with("level_matrix: the level matrix of"),
            "{msg}"
        );
        // representable sizes (9 PB of f64, 1 PB of u8) that no machine has
        let big = one.broadcast((1usize << 25, 2)).unwrap();
        out_of_memory(geodesic_distances(big, big));
        out_of_memory(level_matrix(big, &[200.0]));
    }

    /// A call under test, given the sink to report to.
    type Call<'a> = dyn Fn(&mut CancelAfter) -> Result<()> + 'a;

    /// Says go on `allowed` times, then cancels; counts what it was told.
    struct CancelAfter {
        allowed: usize,
        reports: Vec<(String, usize, usize)>,
    }

    impl ProgressSink for CancelAfter {
        fn report(&mut self, stage: &str, done: usize, total: usize) -> bool {
            self.reports.push((stage.to_string(), done, total));
            self.reports.len() <= self.allowed
        }
    }

    /// Many buildings: a few seconds of geodesics on one core.
    fn campus(n: usize) -> Array2<f64> {
        Array2::from_shape_fn((n, 2), |(i, j)| {
            [22.3, 114.2][j] + ((i * [37, 53][j]) % 1009) as f64 * 1e-4
        })
    }

    #[test]
    fn sink_returning_false_cancels_geo_calls() {
        let c = campus(3000);
        let calls: [&Call; 3] = [
            &|s| level_matrix_with(c.view(), &[200.0], Some(s)).map(|_| ()),
            &|s| geodesic_distances_self_with(c.view(), Some(s)).map(|_| ()),
            &|s| geodesic_distances_with(c.view(), c.view(), Some(s)).map(|_| ()),
        ];
        for call in calls {
            // The start is allowed, the first report while running cancels.
            let mut sink = CancelAfter {
                allowed: 1,
                reports: vec![],
            };
            assert_eq!(call(&mut sink), Err(DyclError::Cancelled));
            let (stage, done, total) = sink.reports.last().unwrap().clone();
            assert!(done < total, "{stage}: cancelled after the work was done");
        }
        // A sink that always goes on sees the whole stage and changes nothing.
        let small = campus(40);
        let mut sink = CancelAfter {
            allowed: usize::MAX,
            reports: vec![],
        };
        let lv = level_matrix_with(small.view(), &[200.0], Some(&mut sink)).unwrap();
        assert_eq!(lv, level_matrix(small.view(), &[200.0]).unwrap());
        let last = sink.reports.last().unwrap();
        assert_eq!((last.0.as_str(), last.1, last.2), ("level matrix", 40, 40));
    }

    #[test]
    fn rejects_bad_input() {
        let bad_lat = array![[91.0, 0.0]];
        assert!(matches!(
            level_matrix(bad_lat.view(), &[200.0]),
            Err(DyclError::InvalidArgument { arg: "coords", .. })
        ));
        let ok = array![[0.0, 0.0]];
        assert!(level_matrix(ok.view(), &[500.0, 200.0]).is_err());
        assert!(level_matrix(ok.view(), &[f64::NAN]).is_err());
        let wrong_cols = array![[0.0, 0.0, 0.0]];
        assert!(geodesic_distances(wrong_cols.view(), ok.view()).is_err());
    }
}
