//! Bindings for `dycl_core::metrics`: per-query values as a dict of arrays
//! (the `dycl.metrics` wrapper names and averages them). Long calls check
//! for Ctrl-C a few times a second (see [`crate::call_core`]).

use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use dycl_core::metrics::{self, PerQuery};

use crate::call_core;

fn per_query_dict(py: Python<'_>, r: PerQuery) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("n_levels", r.n_levels)?;
    out.set_item("h_ap", r.h_ap.into_pyarray(py))?;
    out.set_item("asi", r.asi.into_pyarray(py))?;
    out.set_item("ndcg", r.ndcg.into_pyarray(py))?;
    out.set_item("average_precision", r.average_precision.into_pyarray(py))?;
    out.set_item(
        "first_relevant_rank",
        r.first_relevant_rank.into_pyarray(py),
    )?;
    out.set_item("n_relevant", r.n_relevant.into_pyarray(py))?;
    out.set_item("top1", r.top1.into_pyarray(py))?;
    if let Some(err) = r.top1_error_m {
        out.set_item("top1_error_m", err.into_pyarray(py))?;
    }
    Ok(out)
}

/// Per-query metrics of a `(q, g)` float64 distance matrix; with
/// `exclude_self` the single-set mode (each query skips its own column).
#[pyfunction]
#[pyo3(signature = (distances, query_ids, gallery_ids, levels, coords=None, exclude_self=false))]
#[allow(clippy::too_many_arguments)]
fn per_query<'py>(
    py: Python<'py>,
    distances: PyReadonlyArray2<'py, f64>,
    query_ids: PyReadonlyArray1<'py, i64>,
    gallery_ids: PyReadonlyArray1<'py, i64>,
    levels: PyReadonlyArray2<'py, u8>,
    coords: Option<PyReadonlyArray2<'py, f64>>,
    exclude_self: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let (d, q, g, lv) = (
        distances.as_array(),
        query_ids.as_array(),
        gallery_ids.as_array(),
        levels.as_array(),
    );
    let c = coords.as_ref().map(|c| c.as_array());
    let r = call_core(py, "per_query", None, |sink| {
        if exclude_self {
            metrics::per_query_excluding_self_with(d, q, g, lv, c, Some(sink))
        } else {
            metrics::per_query_with(d, q, g, lv, c, Some(sink))
        }
    })?;
    per_query_dict(py, r)
}

/// Per-query metrics from float32 embeddings (cosine distances in the core);
/// `exclude_self` as in [`per_query`].
#[pyfunction]
#[pyo3(signature = (query_emb, gallery_emb, query_ids, gallery_ids, levels, coords=None, exclude_self=false))]
#[allow(clippy::too_many_arguments)]
fn per_query_embeddings<'py>(
    py: Python<'py>,
    query_emb: PyReadonlyArray2<'py, f32>,
    gallery_emb: PyReadonlyArray2<'py, f32>,
    query_ids: PyReadonlyArray1<'py, i64>,
    gallery_ids: PyReadonlyArray1<'py, i64>,
    levels: PyReadonlyArray2<'py, u8>,
    coords: Option<PyReadonlyArray2<'py, f64>>,
    exclude_self: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let (qe, ge) = (query_emb.as_array(), gallery_emb.as_array());
    let (q, g, lv) = (
        query_ids.as_array(),
        gallery_ids.as_array(),
        levels.as_array(),
    );
    let c = coords.as_ref().map(|c| c.as_array());
    let r = call_core(py, "per_query_embeddings", None, |sink| {
        if exclude_self {
            metrics::per_query_embeddings_excluding_self_with(qe, ge, q, g, lv, c, Some(sink))
        } else {
            metrics::per_query_embeddings_with(qe, ge, q, g, lv, c, Some(sink))
        }
    })?;
    per_query_dict(py, r)
}

/// `(q, k)` uint32 indices of the `k` nearest gallery items, ties by index.
#[pyfunction]
fn ranked_gallery<'py>(
    py: Python<'py>,
    distances: PyReadonlyArray2<'py, f64>,
    k: usize,
) -> PyResult<Bound<'py, PyArray2<u32>>> {
    let d = distances.as_array();
    let out = call_core(py, "ranked_gallery", None, |sink| {
        metrics::ranked_gallery_with(d, k, Some(sink))
    })?;
    Ok(out.into_pyarray(py))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(per_query, m)?)?;
    m.add_function(wrap_pyfunction!(per_query_embeddings, m)?)?;
    m.add_function(wrap_pyfunction!(ranked_gallery, m)?)?;
    Ok(())
}
