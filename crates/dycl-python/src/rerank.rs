//! Bindings for `dycl_core::rerank`.
//!
//! Distance blocks are borrowed in place (float32 or float64, no copy); the
//! GIL is released for the whole computation. Progress goes to an optional
//! Python callback `progress(stage, done, total)`, called on the calling
//! thread with the GIL re-acquired; signals (Ctrl-C) are checked at the same
//! moments, so a long call can be interrupted. A panic in the core becomes a
//! `RuntimeError` (see [`crate::call_core`]).

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use dycl_core::memory::{try_capacity, Purpose};
use dycl_core::rerank::{self, DistanceBlock, DistanceBlocks, GivenNeighbours, Variant};
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

/// What the int64 copy of the neighbour indices is, and what to do when it does not fit.
const INDEX: Purpose = Purpose::new(
    "neighbour lists: the int64 indices handed to Python (r × L)",
    "ask for fewer rows (rows=(start, stop)) or a smaller k",
);

/// `(index int64 (r, L), distance float32 (r, L), max_distance float32 (r,))`.
type ListArrays<'py> = (
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<f32>>,
);

/// Exact neighbour lists of the joint set's rows `rows = (start, stop)`
/// (default all): the first `min(k + 1, N)` by cosine distance, ties by index.
/// Each call normalises its own copy of all `N` embeddings (N × d float32),
/// so a split computation pays that copy once per block of rows.
#[pyfunction]
#[pyo3(signature = (query_emb, gallery_emb, k, rows=None, progress=None))]
fn neighbour_lists<'py>(
    py: Python<'py>,
    query_emb: PyReadonlyArray2<'py, f32>,
    gallery_emb: PyReadonlyArray2<'py, f32>,
    k: usize,
    rows: Option<(usize, usize)>,
    progress: Option<Py<PyAny>>,
) -> PyResult<ListArrays<'py>> {
    let (q, g) = (query_emb.as_array(), gallery_emb.as_array());
    let out = call_core(py, "neighbour_lists", progress, |sink| {
        let lists = rerank::neighbour_lists(q, g, k, rows.map(|(a, b)| a..b), Some(sink))?;
        let shape = (lists.max_distance.len(), lists.lists.len);
        let mut index = try_capacity::<i64>(lists.lists.index.len(), INDEX)?;
        index.extend(lists.lists.index.iter().map(|&j| j as i64));
        Ok((
            rows_of(shape, index)?,
            rows_of(shape, lists.distance)?,
            lists.max_distance,
        ))
    })?;
    Ok((
        out.0.into_pyarray(py),
        out.1.into_pyarray(py),
        ndarray::Array1::from_vec(out.2).into_pyarray(py),
    ))
}

/// A row-major buffer as a 2-D array (the core sized it; a mismatch is a bug, reported as one).
fn rows_of<T>(shape: (usize, usize), data: Vec<T>) -> CoreResult<Array2<T>> {
    Array2::from_shape_vec(shape, data)
        .map_err(|e| dycl_core::DyclError::invalid("rows", format!("internal shape mismatch: {e}")))
}

/// Given neighbour lists as NumPy hands them over.
fn given<'a>(
    index: &'a PyReadonlyArray2<i64>,
    distance: &'a PyReadonlyArray2<f32>,
    max_distance: &'a PyReadonlyArray1<f32>,
) -> GivenNeighbours<'a> {
    GivenNeighbours {
        index: index.as_array(),
        distance: distance.as_array(),
        max_distance: max_distance.as_array(),
    }
}

/// k-reciprocal re-ranking from embeddings and given neighbour lists; `(q, g)` float32.
#[pyfunction]
#[pyo3(signature = (query_emb, gallery_emb, index, distance, max_distance, k1, k2, lambda_value, progress=None))]
#[allow(clippy::too_many_arguments)]
fn k_reciprocal_neighbours<'py>(
    py: Python<'py>,
    query_emb: PyReadonlyArray2<'py, f32>,
    gallery_emb: PyReadonlyArray2<'py, f32>,
    index: PyReadonlyArray2<'py, i64>,
    distance: PyReadonlyArray2<'py, f32>,
    max_distance: PyReadonlyArray1<'py, f32>,
    k1: usize,
    k2: usize,
    lambda_value: f64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (q, g) = (query_emb.as_array(), gallery_emb.as_array());
    let lists = given(&index, &distance, &max_distance);
    run_detached(py, "k_reciprocal_neighbours", progress, |sink| {
        rerank::k_reciprocal_neighbours(q, g, &lists, k1, k2, lambda_value, Some(sink))
    })
}

/// MSRerank from embeddings and given neighbour lists; `(q, g)` float32.
#[pyfunction]
#[pyo3(signature = (query_emb, gallery_emb, index, distance, max_distance, ks, k2, lambda_value, variant, progress=None))]
#[allow(clippy::too_many_arguments)]
fn msrerank_neighbours<'py>(
    py: Python<'py>,
    query_emb: PyReadonlyArray2<'py, f32>,
    gallery_emb: PyReadonlyArray2<'py, f32>,
    index: PyReadonlyArray2<'py, i64>,
    distance: PyReadonlyArray2<'py, f32>,
    max_distance: PyReadonlyArray1<'py, f32>,
    ks: Vec<usize>,
    k2: usize,
    lambda_value: f64,
    variant: &str,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let variant: Variant = variant.parse().map_err(to_py_err)?;
    let (q, g) = (query_emb.as_array(), gallery_emb.as_array());
    let lists = given(&index, &distance, &max_distance);
    run_detached(py, "msrerank_neighbours", progress, |sink| {
        rerank::msrerank_neighbours(q, g, &lists, &ks, k2, lambda_value, variant, Some(sink))
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

/// `(index int64 (q, top), distance float32 (q, top))`: each query's best gallery items.
type TopArrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// The core's top answer with its gallery indices widened to int64 (a fallible copy).
fn widened(answer: rerank::TopAnswer) -> CoreResult<(Array2<i64>, Array2<f32>)> {
    let shape = answer.index.dim();
    let mut index = try_capacity::<i64>(answer.index.len(), INDEX)?;
    index.extend(answer.index.iter().map(|&j| j as i64));
    Ok((rows_of(shape, index)?, answer.distance))
}

/// The widened top answer as NumPy arrays.
fn top_arrays(py: Python<'_>, (index, distance): (Array2<i64>, Array2<f32>)) -> TopArrays<'_> {
    (index.into_pyarray(py), distance.into_pyarray(py))
}

/// k-reciprocal re-ranking with given lists, keeping each query's best `top` gallery items.
#[pyfunction]
#[pyo3(signature = (query_emb, gallery_emb, index, distance, max_distance, k1, k2, lambda_value, top, progress=None))]
#[allow(clippy::too_many_arguments)]
fn k_reciprocal_neighbours_top<'py>(
    py: Python<'py>,
    query_emb: PyReadonlyArray2<'py, f32>,
    gallery_emb: PyReadonlyArray2<'py, f32>,
    index: PyReadonlyArray2<'py, i64>,
    distance: PyReadonlyArray2<'py, f32>,
    max_distance: PyReadonlyArray1<'py, f32>,
    k1: usize,
    k2: usize,
    lambda_value: f64,
    top: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<TopArrays<'py>> {
    let (q, g) = (query_emb.as_array(), gallery_emb.as_array());
    let lists = given(&index, &distance, &max_distance);
    let answer = call_core(py, "k_reciprocal_neighbours_top", progress, |sink| {
        widened(rerank::k_reciprocal_neighbours_top(
            q,
            g,
            &lists,
            k1,
            k2,
            lambda_value,
            top,
            Some(sink),
        )?)
    })?;
    Ok(top_arrays(py, answer))
}

/// MSRerank with given lists, keeping each query's best `top` gallery items.
#[pyfunction]
#[pyo3(signature = (query_emb, gallery_emb, index, distance, max_distance, ks, k2, lambda_value, variant, top, progress=None))]
#[allow(clippy::too_many_arguments)]
fn msrerank_neighbours_top<'py>(
    py: Python<'py>,
    query_emb: PyReadonlyArray2<'py, f32>,
    gallery_emb: PyReadonlyArray2<'py, f32>,
    index: PyReadonlyArray2<'py, i64>,
    distance: PyReadonlyArray2<'py, f32>,
    max_distance: PyReadonlyArray1<'py, f32>,
    ks: Vec<usize>,
    k2: usize,
    lambda_value: f64,
    variant: &str,
    top: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<TopArrays<'py>> {
    let variant: Variant = variant.parse().map_err(to_py_err)?;
    let (q, g) = (query_emb.as_array(), gallery_emb.as_array());
    let lists = given(&index, &distance, &max_distance);
    let options = (k2, lambda_value, variant);
    let answer = call_core(py, "msrerank_neighbours_top", progress, |sink| {
        widened(rerank::msrerank_neighbours_top(
            q,
            g,
            &lists,
            &ks,
            options,
            top,
            Some(sink),
        )?)
    })?;
    Ok(top_arrays(py, answer))
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
    m.add_function(wrap_pyfunction!(neighbour_lists, m)?)?;
    m.add_function(wrap_pyfunction!(k_reciprocal_neighbours, m)?)?;
    m.add_function(wrap_pyfunction!(msrerank_neighbours, m)?)?;
    m.add_function(wrap_pyfunction!(k_reciprocal_neighbours_top, m)?)?;
    m.add_function(wrap_pyfunction!(msrerank_neighbours_top, m)?)?;
    Ok(())
}
