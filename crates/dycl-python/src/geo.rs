//! Bindings for `dycl_core::geo`. Long calls check for Ctrl-C a few times
//! a second (see [`crate::call_core`]).

use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use pyo3::prelude::*;

use dycl_core::geo;

use crate::call_core;

/// Geodesic distances (metres, WGS84) between rows of two `(n, 2)` float64
/// lat/lon arrays; `coords_b=None` gives the symmetric self-distance matrix.
#[pyfunction]
#[pyo3(signature = (coords_a, coords_b=None))]
fn geodesic_distances<'py>(
    py: Python<'py>,
    coords_a: PyReadonlyArray2<'py, f64>,
    coords_b: Option<PyReadonlyArray2<'py, f64>>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let a = coords_a.as_array();
    let b = coords_b.as_ref().map(|b| b.as_array());
    let out = call_core(py, "geodesic_distances", None, |sink| match b {
        Some(b) => geo::geodesic_distances_with(a, b, Some(sink)),
        None => geo::geodesic_distances_self_with(a, Some(sink)),
    })?;
    Ok(out.into_pyarray(py))
}

/// `(B, B)` uint8 relevance levels of buildings from their coordinates.
#[pyfunction]
fn level_matrix<'py>(
    py: Python<'py>,
    coords: PyReadonlyArray2<'py, f64>,
    thresholds: Vec<f64>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let c = coords.as_array();
    let out = call_core(py, "level_matrix", None, |sink| {
        geo::level_matrix_with(c, &thresholds, Some(sink))
    })?;
    Ok(out.into_pyarray(py))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(geodesic_distances, m)?)?;
    m.add_function(wrap_pyfunction!(level_matrix, m)?)?;
    Ok(())
}
