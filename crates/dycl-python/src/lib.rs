//! Python bindings for `dycl-core`, built as the extension module `dycl._core`.
//!
//! This crate only converts: NumPy arrays in, `dycl-core` calls with the GIL
//! released, NumPy arrays out. Validation that needs Python types (dtype
//! conversion, friendly messages) happens in the `dycl` Python wrappers;
//! everything else is checked in the core and arrives here as a `DyclError`.

use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PyValueError};
use pyo3::prelude::*;

use dycl_core::DyclError;

mod geo;
mod metrics;
mod rerank;

/// Turn a core error into the matching Python exception.
pub(crate) fn to_py_err(err: DyclError) -> PyErr {
    match err {
        DyclError::InvalidArgument { .. } => PyValueError::new_err(err.to_string()),
        DyclError::OutOfMemory(msg) => PyMemoryError::new_err(msg),
        DyclError::Cancelled => PyKeyboardInterrupt::new_err(err.to_string()),
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    geo::register(m)?;
    metrics::register(m)?;
    rerank::register(m)?;
    Ok(())
}
