//! The core's errors as the Python exceptions of `slmkit._exceptions`.
//!
//! The class is the core's (`Error::openai_class`, in the details): `_from_native` only looks
//! it up among the classes it defines. This side supplies the kind, status, message, the
//! variant's fields as JSON (the class name among them), and the cause.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use slmkit::Error;

static FROM_NATIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python exception for `err`.
///
/// A Python exception raised inside a validator comes back as itself, traceback included.
pub fn to_py(py: Python<'_>, err: &Error) -> PyErr {
    if let Error::Validator { source, .. } = err {
        if let Some(raised) = source.downcast_ref::<PyErr>() {
            return raised.clone_ref(py);
        }
    }
    build(py, err).unwrap_or_else(|failed| failed)
}

/// As [`to_py`], for use off the GIL (in a future): attaches to build the exception.
pub fn to_py_detached(err: &Error) -> PyErr {
    Python::attach(|py| to_py(py, err))
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let factory = FROM_NATIVE
        .get_or_try_init(py, || py.import("slmkit._exceptions")?.getattr("_from_native").map(Bound::unbind))?;
    let cause: Option<PyErr> = match err {
        Error::StreamInterrupted { source, .. } => Some(to_py(py, source)),
        Error::Validator { source, .. } => source.downcast_ref::<PyErr>().map(|raised| raised.clone_ref(py)),
        _ => None,
    };
    let cause = cause.map(|cause| cause.into_value(py));
    let exception =
        factory.bind(py).call1((err.kind(), err.status_code(), err.to_string(), err.details().to_string(), cause))?;
    Ok(PyErr::from_value(exception))
}
