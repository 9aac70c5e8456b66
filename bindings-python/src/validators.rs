//! Python callables as core validators.
//!
//! The Python side (`slmkit._client._adapt_validator`) wraps the user's function so that it
//! takes the request and the answer as JSON text and returns `None` (accept), a reason string
//! (reject), or an awaitable of one of those (an `async def` validator).

use std::sync::Arc;

use futures::future::BoxFuture;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use slmkit::types::{ChatCompletion, ChatCompletionRequest};
use slmkit::validate::{Callback, Verdict};
use slmkit::Error;

use crate::runtime;

static RUN_AWAITABLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// What the adapter returned.
enum Returned {
    Verdict(Option<String>),
    Awaitable(Py<PyAny>),
}

/// A core validator that calls `function` (an adapter made by the Python layer).
pub fn callback(name: String, function: Arc<Py<PyAny>>) -> Callback {
    let validator_name = name.clone();
    Callback::new(
        name,
        Arc::new(move |request: &ChatCompletionRequest, answer: &ChatCompletion| -> BoxFuture<'_, _> {
            let function = Arc::clone(&function);
            let name = validator_name.clone();
            let request = serde_json::to_string(request).unwrap_or_default();
            let answer = serde_json::to_string(answer).unwrap_or_default();
            // Set when this call came from an asyncio coroutine: an async validator then runs
            // on that coroutine's event loop.
            let locals = runtime::current_locals();
            Box::pin(async move {
                let raised = |err: PyErr| Error::Validator { name: name.clone(), source: Box::new(err) };
                // Python code runs on the blocking pool, never on a runtime worker: it takes the
                // GIL, and a slow validator must not stall other calls' I/O.
                let call = tokio::task::spawn_blocking(move || {
                    Python::attach(|py| -> PyResult<Returned> {
                        let returned = function.bind(py).call1((request, answer))?;
                        if returned.hasattr("__await__")? {
                            Ok(Returned::Awaitable(returned.unbind()))
                        } else {
                            Ok(Returned::Verdict(returned.extract()?))
                        }
                    })
                });
                let returned = call
                    .await
                    .map_err(|err| Error::Validator { name: name.clone(), source: Box::new(err) })?
                    .map_err(raised)?;
                let verdict = match returned {
                    Returned::Verdict(verdict) => verdict,
                    Returned::Awaitable(awaitable) => match locals {
                        Some(locals) => {
                            let future = Python::attach(|py| {
                                pyo3_async_runtimes::into_future_with_locals(&locals, awaitable.into_bound(py))
                            })
                            .map_err(raised)?;
                            let value = future.await.map_err(raised)?;
                            Python::attach(|py| value.bind(py).extract::<Option<String>>()).map_err(raised)?
                        }
                        // A sync client: no event loop to borrow, so run it on a fresh one.
                        None => tokio::task::spawn_blocking(move || {
                            Python::attach(|py| -> PyResult<Option<String>> {
                                let run = RUN_AWAITABLE.get_or_try_init(py, || {
                                    py.import("slmkit._client")?.getattr("_run_awaitable").map(Bound::unbind)
                                })?;
                                run.bind(py).call1((awaitable,))?.extract()
                            })
                        })
                        .await
                        .map_err(|err| Error::Validator { name: name.clone(), source: Box::new(err) })?
                        .map_err(raised)?,
                    },
                };
                Ok(match verdict {
                    None => Verdict::Ok(()),
                    Some(reason) => Verdict::Err(reason),
                })
            })
        }),
    )
}
