//! Geodesic distances on the WGS84 ellipsoid and the relevance levels derived
//! from them (DESIGN §3).
//!
//! Distances use Karney's algorithm through `geographiclib-rs`, so they agree
//! with GeographicLib to well under a millimetre.

use geographiclib_rs::{Geodesic, InverseGeodesic};
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::error::{DyclError, Result};

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
    for (row, ll) in coords.axis_iter(Axis(0)).enumerate() {
        let (lat, lon) = (ll[0], ll[1]);
        if !lat.is_finite() || !lon.is_finite() {
            return Err(DyclError::invalid(
                arg,
                format!("row {row} is not finite ({lat}, {lon})"),
            ));
        }
        if !(-90.0..=90.0).contains(&lat) {
            return Err(DyclError::invalid(
                arg,
                format!("row {row}: latitude {lat} outside [-90, 90]"),
            ));
        }
        if !(-540.0..=540.0).contains(&lon) {
            return Err(DyclError::invalid(
                arg,
                format!("row {row}: longitude {lon} outside [-540, 540]"),
            ));
        }
    }
    Ok(())
}

/// Ellipsoidal geodesic distance in metres between every row of `a` and every
/// row of `b` (both `(n, 2)` latitude/longitude in degrees).
pub fn geodesic_distances(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<Array2<f64>> {
    validate_coords("coords_a", a)?;
    validate_coords("coords_b", b)?;
    let geod = Geodesic::wgs84();
    let mut out = Array2::<f64>::zeros((a.nrows(), b.nrows()));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut row)| {
            for (j, d) in row.iter_mut().enumerate() {
                *d = geod.inverse(a[[i, 0]], a[[i, 1]], b[[j, 0]], b[[j, 1]]);
            }
        });
    Ok(out)
}

/// Pairwise distances of one set with itself; computes each pair once.
pub fn geodesic_distances_self(coords: ArrayView2<f64>) -> Result<Array2<f64>> {
    validate_coords("coords", coords)?;
    let n = coords.nrows();
    let geod = Geodesic::wgs84();
    // Upper triangle in parallel, then mirror: the inverse problem is the
    // expensive part and is symmetric.
    let rows: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|i| {
            ((i + 1)..n)
                .map(|j| {
                    geod.inverse(
                        coords[[i, 0]],
                        coords[[i, 1]],
                        coords[[j, 0]],
                        coords[[j, 1]],
                    )
                })
                .collect()
        })
        .collect();
    let mut out = Array2::<f64>::zeros((n, n));
    for (i, row) in rows.iter().enumerate() {
        for (off, &d) in row.iter().enumerate() {
            let j = i + 1 + off;
            out[[i, j]] = d;
            out[[j, i]] = d;
        }
    }
    Ok(out)
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
/// building id) is `L`, other pairs get [`level_of_distance`].
pub fn level_matrix(coords: ArrayView2<f64>, thresholds: &[f64]) -> Result<Array2<u8>> {
    validate_thresholds(thresholds)?;
    let dist = geodesic_distances_self(coords)?;
    Ok(levels_from_distances(dist.view(), thresholds))
}

/// Level matrix from a precomputed square distance matrix (metres).
pub fn levels_from_distances(dist: ArrayView2<f64>, thresholds: &[f64]) -> Array2<u8> {
    let top = (thresholds.len() + 1) as u8;
    let mut out = dist.mapv(|d| level_of_distance(d, thresholds));
    for i in 0..out.nrows().min(out.ncols()) {
        out[[i, i]] = top;
    }
    out
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
