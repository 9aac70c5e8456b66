//! `slmkit._slmkit`: the native half of the `slmkit` Python package.
//!
//! Thin by design: requests arrive as JSON, go to the core's `Client`, and answers leave as
//! JSON; the pure-Python package (`python/slmkit`) gives them the `openai` package's surface.
//! Three things live here because only Rust can do them:
//! - `runtime`: one tokio runtime for the process, fork-safe, with the GIL released while
//!   waiting and Ctrl-C honoured;
//! - `errors`: core errors as the right Python exception, a validator's own exception kept;
//! - `validators`: Python callables (sync or async) as core validators.

mod client;
mod errors;
mod models;
mod runtime;
mod validators;

use pyo3::prelude::*;

#[pymodule]
fn _slmkit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::NativeClient>()?;
    m.add_class::<client::NativeStream>()?;
    m.add_class::<client::NativeAsyncStream>()?;
    m.add_function(wrap_pyfunction!(models::resolve_model, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
