//! Bindings for `dycl_core::rerank`.
//!
//! Distance blocks are borrowed in place (float32 or float64, no copy); the
//! GIL is released for the whole computation. Progress goes to an optional
//! Python callback `progress(stage, done, total)`, called on the calling
//! thread with the GIL re-acquired; signals (Ctrl-C) are checked at the same
//! moments, so a long call can be interrupted. A panic in the core becomes a
//! `RuntimeError` (see [`crate::call_core`]).

use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use pyo3::prelude::*;

use dycl_core::rerank::{self, DistanceBlock, DistanceBlocks, Variant};
use dycl_core::Result as CoreResult;
use ndarray::Array2;

use crate::{call_core, to_py_err, PythonProgress};

/// A distance block as NumPy hands it over: float32 or float64.
#[derive(FromPyObject)]
enum DistanceArray<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

impl DistanceArray<'_> {
    fn block(&self) -> DistanceBlock<'_> {
        match self {
            DistanceArray::F32(a) => DistanceBlock::F32(a.as_array()),
            DistanceArray::F64(a) => DistanceBlock::F64(a.as_array()),
        }
    }
}

/// A re-ranking call under [`call_core`], its result as a NumPy array.
fn run_detached<'py>(
    py: Python<'py>,
    name: &str,
    progress: Option<Py<PyAny>>,
    work: impl FnOnce(&mut PythonProgress) -> CoreResult<Array2<f32>> + Send,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    Ok(call_core(py, name, progress, work)?.into_pyarray(py))
}

fn blocks<'a>(
    q_g: &'a DistanceArray,
    q_q: &'a DistanceArray,
    g_g: &'a DistanceArray,
) -> DistanceBlocks<'a> {
    DistanceBlocks {
        q_g: q_g.block(),
        q_q: q_q.block(),
        g_g: g_g.block(),
    }
}

/// k-reciprocal re-ranking from distance blocks; `(q, g)` float32.
#[pyfunction]
#[pyo3(signature = (q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value, progress=None))]
#[allow(clippy::too_many_arguments)]
fn k_reciprocal<'py>(
    py: Python<'py>,
    q_g_dist: DistanceArray<'py>,
    q_q_dist: DistanceArray<'py>,
    g_g_dist: DistanceArray<'py>,
    k1: usize,
    k2: usize,
    lambda_value: f64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let b = blocks(&q_g_dist, &q_q_dist, &g_g_dist);
    run_detached(py, "k_reciprocal", progress, |sink| {
        rerank::k_reciprocal(b, k1, k2, lambda_value, Some(sink))
    })
}

/// k-reciprocal re-ranking from float32 embeddings (cosine distance); `(q, g)` float32.
#[pyfunction]
#[pyo3(signature = (query_emb, gallery_emb, k1, k2, lambda_value, progress=None))]
fn k_reciprocal_embeddings<'py>(
    py: Python<'py>,
    query_emb: PyReadonlyArray2<'py, f32>,
    gallery_emb: PyReadonlyArray2<'py, f32>,
    k1: usize,
    k2: usize,
    lambda_value: f64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (q, g) = (query_emb.as_array(), gallery_emb.as_array());
    run_detached(py, "k_reciprocal_embeddings", progress, |sink| {
        rerank::k_reciprocal_embeddings(q, g, k1, k2, lambda_value, Some(sink))
    })
}

/// MSRerank from distance blocks; `(q, g)` float32.
#[pyfunction]
#[pyo3(signature = (q_g_dist, q_q_dist, g_g_dist, ks, k2, lambda_value, variant, progress=None))]
#[allow(clippy::too_many_arguments)]
fn msrerank<'py>(
    py: Python<'py>,
    q_g_dist: DistanceArray<'py>,
    q_q_dist: DistanceArray<'py>,
    g_g_dist: DistanceArray<'py>,
    ks: Vec<usize>,
    k2: usize,
    lambda_value: f64,
    variant: &str,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let variant: Variant = variant.parse().map_err(to_py_err)?;
    let b = blocks(&q_g_dist, &q_q_dist, &g_g_dist);
    run_detached(py, "msrerank", progress, |sink| {
        rerank::msrerank(b, &ks, k2, lambda_value, variant, Some(sink))
    })
}

/// MSRerank from float32 embeddings (cosine distance); `(q, g)` float32.
#[pyfunction]
#[pyo3(signature = (query_emb, gallery_emb, ks, k2, lambda_value, variant, progress=None))]
#[allow(clippy::too_many_arguments)]
fn msrerank_embeddings<'py>(
    py: Python<'py>,
    query_emb: PyReadonlyArray2<'py, f32>,
    gallery_emb: PyReadonlyArray2<'py, f32>,
    ks: Vec<usize>,
    k2: usize,
    lambda_value: f64,
    variant: &str,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let variant: Variant = variant.parse().map_err(to_py_err)?;
    let (q, g) = (query_emb.as_array(), gallery_emb.as_array());
    run_detached(py, "msrerank_embeddings", progress, |sink| {
        rerank::msrerank_embeddings(q, g, &ks, k2, lambda_value, variant, Some(sink))
    })
}

/// k-reciprocal re-ranking of N items among themselves from their `(N, N)`
/// distances (single-set mode); `(N, N)` float32.
#[pyfunction]
#[pyo3(signature = (dist, k1, k2, lambda_value, progress=None))]
fn k_reciprocal_single<'py>(
    py: Python<'py>,
    dist: DistanceArray<'py>,
    k1: usize,
    k2: usize,
    lambda_value: f64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let d = dist.block();
    run_detached(py, "k_reciprocal_single", progress, |sink| {
        rerank::k_reciprocal_single(d, k1, k2, lambda_value, Some(sink))
    })
}

/// k-reciprocal re-ranking of N float32 embeddings among themselves; `(N, N)` float32.
#[pyfunction]
#[pyo3(signature = (embeddings, k1, k2, lambda_value, progress=None))]
fn k_reciprocal_single_embeddings<'py>(
    py: Python<'py>,
    embeddings: PyReadonlyArray2<'py, f32>,
    k1: usize,
    k2: usize,
    lambda_value: f64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let e = embeddings.as_array();
    run_detached(py, "k_reciprocal_single_embeddings", progress, |sink| {
        rerank::k_reciprocal_single_embeddings(e, k1, k2, lambda_value, Some(sink))
    })
}

/// MSRerank of N items among themselves from their `(N, N)` distances; `(N, N)` float32.
#[pyfunction]
#[pyo3(signature = (dist, ks, k2, lambda_value, variant, progress=None))]
#[allow(clippy::too_many_arguments)]
fn msrerank_single<'py>(
    py: Python<'py>,
    dist: DistanceArray<'py>,
    ks: Vec<usize>,
    k2: usize,
    lambda_value: f64,
    variant: &str,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let variant: Variant = variant.parse().map_err(to_py_err)?;
    let d = dist.block();
    run_detached(py, "msrerank_single", progress, |sink| {
        rerank::msrerank_single(d, &ks, k2, lambda_value, variant, Some(sink))
    })
}

/// MSRerank of N float32 embeddings among themselves; `(N, N)` float32.
#[pyfunction]
#[pyo3(signature = (embeddings, ks, k2, lambda_value, variant, progress=None))]
#[allow(clippy::too_many_arguments)]
fn msrerank_single_embeddings<'py>(
    py: Python<'py>,
    embeddings: PyReadonlyArray2<'py, f32>,
    ks: Vec<usize>,
    k2: usize,
    lambda_value: f64,
    variant: &str,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let variant: Variant = variant.parse().map_err(to_py_err)?;
    let e = embeddings.as_array();
    run_detached(py, "msrerank_single_embeddings", progress, |sink| {
        rerank::msrerank_single_embeddings(e, &ks, k2, lambda_value, variant, Some(sink))
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(k_reciprocal_single, m)?)?;
    m.add_function(wrap_pyfunction!(k_reciprocal_single_embeddings, m)?)?;
    m.add_function(wrap_pyfunction!(msrerank_single, m)?)?;
    m.add_function(wrap_pyfunction!(msrerank_single_embeddings, m)?)?;
    m.add_function(wrap_pyfunction!(k_reciprocal, m)?)?;
    m.add_function(wrap_pyfunction!(k_reciprocal_embeddings, m)?)?;
    m.add_function(wrap_pyfunction!(msrerank, m)?)?;
    m.add_function(wrap_pyfunction!(msrerank_embeddings, m)?)?;
    Ok(())
}
