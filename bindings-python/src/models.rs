//! `slmkit.models.resolve(ref, progress=None)`: the core's `models::resolve`, with the GIL
//! released while it downloads.

use std::sync::Arc;

use pyo3::prelude::*;
use slmkit::models::{resolve, Progress, ResolveOptions};

use crate::errors::to_py;

/// Resolves a model reference (a catalog name, `hf:ORG/REPO/FILE.gguf[@rev]`, an `https://`
/// URL or a path) to a local GGUF file, downloading it into the Hugging Face cache when
/// needed. `progress(file, done, total)` is called as bytes arrive (`total` may be `None`);
/// an exception it raises is reported as unraisable and does not stop the download.
#[pyfunction]
#[pyo3(signature = (reference, progress=None))]
pub fn resolve_model(py: Python<'_>, reference: String, progress: Option<Py<PyAny>>) -> PyResult<String> {
    let mut options = ResolveOptions::from_env();
    if let Some(callback) = progress {
        let callback = Arc::new(callback);
        options.progress = Some(Arc::new(move |progress: Progress| {
            Python::attach(|py| {
                if let Err(err) = callback.call1(py, (progress.file, progress.done, progress.total)) {
                    err.write_unraisable(py, None);
                }
            });
        }));
    }
    let path = py.detach(|| resolve(&reference, &options)).map_err(|err| to_py(py, &err))?;
    Ok(path.to_string_lossy().into_owned())
}
