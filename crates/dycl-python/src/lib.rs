//! Python bindings for `dycl-core`, built as the extension module `dycl._core`.
//!
//! This crate only converts: NumPy arrays in, `dycl-core` calls with the GIL
//! released, NumPy arrays out. Validation that needs Python types (dtype
//! conversion, friendly messages) happens in the `dycl` Python wrappers;
//! everything else is checked in the core and arrives here as a `DyclError`.
//!
//! Every binding calls the core through [`call_core`], so all of them share
//! one policy: the GIL is released; progress goes to an optional Python
//! callback and signals (Ctrl-C) are checked a few times a second, so a long
//! call can be interrupted; a core error becomes the matching Python
//! exception; a Rust panic becomes a `RuntimeError` (an `Exception`, unlike
//! PyO3's `PanicException`) instead of escaping as a `BaseException`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use dycl_core::rerank::ProgressSink;
use dycl_core::{DyclError, Result as CoreResult};

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

/// A [`ProgressSink`] on the calling thread: checks Python's signals, then
/// forwards the report to the optional callback. The first Python error
/// (a `KeyboardInterrupt` from Ctrl-C, or whatever the callback raised) is
/// kept and cancels the computation.
pub(crate) struct PythonProgress {
    callback: Option<Py<PyAny>>,
    error: Option<PyErr>,
}

impl ProgressSink for PythonProgress {
    fn report(&mut self, stage: &str, done: usize, total: usize) -> bool {
        Python::attach(|py| {
            let outcome = py.check_signals().and_then(|()| match &self.callback {
                Some(cb) => cb.call1(py, (stage, done, total)).map(|_| ()),
                None => Ok(()),
            });
            match outcome {
                Ok(()) => true,
                Err(err) => {
                    self.error = Some(err);
                    false
                }
            }
        })
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Run `work`, a call into the core made by the binding `name`, under the
/// policy of the module docs. `work` gets the sink to hand to the core's
/// `_with` functions; `progress` is the Python callback, if any.
pub(crate) fn call_core<T: Send>(
    py: Python<'_>,
    name: &str,
    progress: Option<Py<PyAny>>,
    work: impl FnOnce(&mut PythonProgress) -> CoreResult<T> + Send,
) -> PyResult<T> {
    let mut sink = PythonProgress {
        callback: progress,
        error: None,
    };
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(|| work(&mut sink))));
    match outcome {
        Ok(Ok(out)) => Ok(out),
        // A Python error that cancelled the call is the one to raise.
        Ok(Err(err)) => Err(sink.error.take().unwrap_or_else(|| to_py_err(err))),
        Err(payload) => Err(PyRuntimeError::new_err(format!(
            "internal error in dycl._core.{name}: {}; please report it",
            panic_message(payload.as_ref())
        ))),
    }
}

/// Panics inside [`call_core`]; exists only so the tests can check that a
/// panic of the core reaches Python as a `RuntimeError`.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>, message: String) -> PyResult<()> {
    call_core(py, "_panic_for_tests", None, |_| -> CoreResult<()> {
        panic!("{message}")
    })
}

/// Bytes this process can still allocate: the host's available memory capped by
/// its cgroup's limit (the figure the core's own memory guards use), or None.
#[pyfunction]
fn available_memory(py: Python<'_>) -> PyResult<Option<u64>> {
    call_core(py, "available_memory", None, |_| {
        Ok(dycl_core::memory::available_memory())
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(available_memory, m)?)?;
    geo::register(m)?;
    metrics::register(m)?;
    rerank::register(m)?;
    Ok(())
}
