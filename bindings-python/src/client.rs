//! The native client: requests and answers cross as JSON text, which the Python layer turns
//! into keyword arguments and response objects.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use pyo3::exceptions::{PyStopAsyncIteration, PyValueError};
use pyo3::prelude::*;
use slmkit::types::responses::ResponseRequest;
use slmkit::types::ChatCompletionRequest;
use slmkit::{Client, Config, OpenAiClientOptions, Prepared, PreparedResponse};

use crate::errors::{to_py, to_py_detached};
use crate::runtime::{future_into_py, wait};
use crate::validators;

/// A configured slmkit client. Use `slmkit.OpenAI` / `slmkit.AsyncOpenAI`, which wrap it.
#[pyclass(module = "slmkit._slmkit", frozen)]
pub struct NativeClient {
    recipe: Recipe,
    /// The client and the process it was built in.
    built: Mutex<(u32, Client)>,
}

/// What a client is built from, kept so a forked child can build its own.
///
/// A client inherited across `fork()` holds HTTP connections whose I/O tasks ran on the
/// parent's runtime threads, and a local engine whose worker thread is gone: a call would wait
/// for its timeout. The core should notice the fork itself (a new HTTP client and engine
/// worker when the process id changes); until it does, the child rebuilds the whole client on
/// its first call (its ledger starts empty).
struct Recipe {
    config_path: Option<PathBuf>,
    sections: Option<String>,
    options: OpenAiClientOptions,
    validators: Vec<(String, Arc<Py<PyAny>>)>,
}

impl Recipe {
    fn build(&self) -> slmkit::Result<Client> {
        let config = Config::from_sources(self.config_path.as_deref(), self.sections.as_deref(), &self.options)?;
        let mut builder = config.builder()?;
        for (name, function) in &self.validators {
            builder = builder.validator(Arc::new(validators::callback(name.clone(), Arc::clone(function))));
        }
        builder.build()
    }
}

impl NativeClient {
    /// The client for this process.
    fn client(&self, py: Python<'_>) -> PyResult<Client> {
        let pid = std::process::id();
        let mut built = self.built.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if built.0 != pid {
            let client = py.detach(|| self.recipe.build()).map_err(|err| to_py(py, &err))?;
            // Leaked, not dropped: dropping the parent's local engine would join a worker
            // thread that does not exist in this process.
            std::mem::forget(std::mem::replace(&mut *built, (pid, client)));
        }
        Ok(built.1.clone())
    }
}

/// The request, checked and (for the cache) hashed once, with its per-call timeout: the
/// core's one preparation pass, here on the caller's thread because it is cheap (no routing).
fn prepare(py: Python<'_>, client: &Client, request: &str, timeout: Option<f64>) -> PyResult<Prepared<'static>> {
    ChatCompletionRequest::from_json(request)
        .and_then(|request| client.prepare_owned(request))
        .and_then(|prepared| prepared.with_timeout_s(timeout))
        .map_err(|err| to_py(py, &err))
}

/// A Responses API request mapped onto the chat call path and prepared, as [`prepare`].
fn prepare_response(
    py: Python<'_>,
    client: &Client,
    request: &str,
    timeout: Option<f64>,
) -> PyResult<PreparedResponse> {
    ResponseRequest::from_json(request)
        .and_then(|request| client.prepare_response(request))
        .and_then(|prepared| prepared.with_timeout_s(timeout))
        .map_err(|err| to_py(py, &err))
}

/// A stream's items as the JSON text Python receives: chat chunks, or Responses events.
type JsonStream = std::pin::Pin<Box<dyn futures::Stream<Item = slmkit::Result<String>> + Send>>;

fn json_stream<T, S>(stream: S) -> JsonStream
where
    T: serde::Serialize,
    S: futures::Stream<Item = slmkit::Result<T>> + Send + 'static,
{
    Box::pin(stream.map(|item| {
        item.and_then(|value| {
            serde_json::to_string(&value)
                .map_err(|err| slmkit::Error::Internal(format!("cannot serialise a stream item: {err}")))
        })
    }))
}

fn parse(py: Python<'_>, request: &str) -> PyResult<ChatCompletionRequest> {
    ChatCompletionRequest::from_json(request).map_err(|err| to_py(py, &err))
}

fn to_json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|err| PyValueError::new_err(format!("cannot serialise: {err}")))
}

#[pymethods]
impl NativeClient {
    /// Builds a client; see `slmkit.OpenAI` for the arguments. Loading a local model happens
    /// here, with the GIL released.
    #[new]
    #[pyo3(signature = (*, config_path=None, sections=None, api_key=None, base_url=None, timeout=None, max_retries=None, validators=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        config_path: Option<PathBuf>,
        sections: Option<String>,
        api_key: Option<String>,
        base_url: Option<String>,
        timeout: Option<f64>,
        max_retries: Option<u32>,
        validators: Vec<(String, Py<PyAny>)>,
    ) -> PyResult<Self> {
        // The timeout and retries are checked by the core's configuration (a ConfigError).
        let options = OpenAiClientOptions { api_key, base_url, timeout_s: timeout, max_retries };
        let validators = validators.into_iter().map(|(name, function)| (name, Arc::new(function))).collect();
        let recipe = Recipe { config_path, sections, options, validators };
        let client = py.detach(|| recipe.build()).map_err(|err| to_py(py, &err))?;
        Ok(NativeClient { recipe, built: Mutex::new((std::process::id(), client)) })
    }

    /// One call; returns the completion as JSON.
    #[pyo3(signature = (request, timeout=None))]
    fn create(&self, py: Python<'_>, request: &str, timeout: Option<f64>) -> PyResult<String> {
        let client = self.client(py)?;
        let prepared = prepare(py, &client, request, timeout)?;
        // A response-cache hit is answered here: handing it to a runtime thread and waiting
        // for it back costs more than the lookup. Routing (which may tokenize the prompt)
        // happens only on a miss, on the runtime, with the GIL released.
        if let Some(hit) = client.cached(&prepared) {
            return to_json(&hit);
        }
        let answer = wait(py, async move { client.create_prepared(prepared).await })?;
        answer.map_err(|err| to_py(py, &err)).and_then(|completion| to_json(&completion))
    }

    /// One call from asyncio; the awaitable gives the completion as JSON.
    #[pyo3(signature = (request, timeout=None))]
    fn create_async<'py>(&self, py: Python<'py>, request: &str, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client(py)?;
        let prepared = prepare(py, &client, request, timeout)?;
        future_into_py(py, async move {
            match client.create_prepared(prepared).await {
                Ok(completion) => to_json(&completion),
                Err(err) => Err(to_py_detached(&err)),
            }
        })
    }

    /// A streamed call: an iterator of chunks as JSON.
    #[pyo3(signature = (request, timeout=None))]
    fn stream(&self, py: Python<'_>, request: &str, timeout: Option<f64>) -> PyResult<NativeStream> {
        let client = self.client(py)?;
        let prepared = prepare(py, &client, request, timeout)?;
        let stream = wait(py, async move { client.create_stream_prepared(prepared).await })?;
        let stream = stream.map_err(|err| to_py(py, &err))?;
        Ok(NativeStream { stream: Mutex::new(Some(json_stream(stream))) })
    }

    /// A streamed call from asyncio: the awaitable gives an async iterator of chunks as JSON.
    #[pyo3(signature = (request, timeout=None))]
    fn stream_async<'py>(&self, py: Python<'py>, request: &str, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client(py)?;
        let prepared = prepare(py, &client, request, timeout)?;
        future_into_py(py, async move {
            match client.create_stream_prepared(prepared).await {
                Ok(stream) => Ok(NativeAsyncStream::new(json_stream(stream))),
                Err(err) => Err(to_py_detached(&err)),
            }
        })
    }

    /// One Responses API call (`POST /v1/responses` body as JSON); returns the response as JSON.
    /// The same call path as `create`: routing, validation, retries, cache, ledger.
    #[pyo3(signature = (request, timeout=None))]
    fn respond(&self, py: Python<'_>, request: &str, timeout: Option<f64>) -> PyResult<String> {
        let client = self.client(py)?;
        let prepared = prepare_response(py, &client, request, timeout)?;
        if let Some(hit) = client.respond_cached(&prepared) {
            return to_json(&hit);
        }
        let answer = wait(py, async move { client.respond_prepared(prepared).await })?;
        answer.map_err(|err| to_py(py, &err)).and_then(|response| to_json(&response))
    }

    /// One Responses API call from asyncio; the awaitable gives the response as JSON.
    #[pyo3(signature = (request, timeout=None))]
    fn respond_async<'py>(&self, py: Python<'py>, request: &str, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client(py)?;
        let prepared = prepare_response(py, &client, request, timeout)?;
        future_into_py(py, async move {
            match client.respond_prepared(prepared).await {
                Ok(response) => to_json(&response),
                Err(err) => Err(to_py_detached(&err)),
            }
        })
    }

    /// A streamed Responses API call: an iterator of events as JSON
    /// (`{"type": ..., "sequence_number": ..., ...}`).
    #[pyo3(signature = (request, timeout=None))]
    fn respond_stream(&self, py: Python<'_>, request: &str, timeout: Option<f64>) -> PyResult<NativeStream> {
        let client = self.client(py)?;
        let prepared = prepare_response(py, &client, request, timeout)?;
        let stream = wait(py, async move { client.respond_stream_prepared(prepared).await })?;
        let stream = stream.map_err(|err| to_py(py, &err))?;
        Ok(NativeStream { stream: Mutex::new(Some(json_stream(stream))) })
    }

    /// A streamed Responses API call from asyncio: the awaitable gives an async iterator of
    /// events as JSON.
    #[pyo3(signature = (request, timeout=None))]
    fn respond_stream_async<'py>(
        &self,
        py: Python<'py>,
        request: &str,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client(py)?;
        let prepared = prepare_response(py, &client, request, timeout)?;
        future_into_py(py, async move {
            match client.respond_stream_prepared(prepared).await {
                Ok(stream) => Ok(NativeAsyncStream::new(json_stream(stream))),
                Err(err) => Err(to_py_detached(&err)),
            }
        })
    }

    /// Where `request` would go and why, as JSON.
    fn explain(&self, py: Python<'_>, request: &str) -> PyResult<String> {
        let request = parse(py, request)?;
        let decision = self.client(py)?.explain(&request).map_err(|err| to_py(py, &err))?;
        to_json(&decision)
    }

    /// Explicit feedback on an answered call (a ledger record the adaptive router learns from).
    #[pyo3(signature = (call_id, correct, reason=None))]
    fn feedback(&self, py: Python<'_>, call_id: &str, correct: bool, reason: Option<String>) -> PyResult<()> {
        self.client(py)?.feedback(call_id, correct, reason).map_err(|err| to_py(py, &err))
    }

    /// The ledger report as JSON.
    /// The configured tiers' models, as JSON: `[{"tier": "slm", "model": "..."}, ...]` (what the
    /// drop-in's `GET /models` lists).
    fn models(&self, py: Python<'_>) -> PyResult<String> {
        to_json(&self.client(py)?.models())
    }

    fn ledger_report(&self, py: Python<'_>) -> PyResult<String> {
        to_json(&self.client(py)?.ledger().report())
    }

    /// The ledger report as a table for people.
    fn ledger_table(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.client(py)?.ledger().report().to_table())
    }

    /// Every attempt in the ledger, oldest first, as a JSON list.
    fn ledger_records(&self, py: Python<'_>) -> PyResult<String> {
        to_json(&self.client(py)?.ledger().records())
    }

    /// Runs checkable agent tasks (`slmkit eval`'s format: a JSONL file at `tasks_path`, or
    /// the same lines as `tasks_text`) through the client, one at a time, with the GIL
    /// released; returns the result as JSON and its table.
    #[pyo3(signature = (*, tasks_path=None, tasks_text=None, bare=false))]
    fn evaluate(
        &self,
        py: Python<'_>,
        tasks_path: Option<PathBuf>,
        tasks_text: Option<String>,
        bare: bool,
    ) -> PyResult<(String, String)> {
        let client = self.client(py)?;
        let tasks = match (tasks_path, tasks_text) {
            (Some(path), None) => slmkit::eval::read_tasks(path),
            (None, Some(text)) => slmkit::eval::parse_tasks(&text, "tasks"),
            _ => return Err(PyValueError::new_err("give the tasks as a path or as JSONL text, not both")),
        }
        .map_err(|err| to_py(py, &err))?;
        let options = slmkit::eval::EvalOptions { bare };
        let result = wait(py, async move { client.evaluate(&tasks, &options).await })?;
        let result = result.map_err(|err| to_py(py, &err))?;
        Ok((to_json(&result)?, result.to_table()))
    }

    fn __repr__(&self) -> String {
        let built = self.built.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        format!("<slmkit native {:?}>", built.1)
    }
}

/// A stream for the sync client: chat chunks or Responses events, as JSON. Dropping it (or
/// `close()`) cancels the call.
#[pyclass(module = "slmkit._slmkit", frozen)]
pub struct NativeStream {
    stream: Mutex<Option<JsonStream>>,
}

#[pymethods]
impl NativeStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let taken = self.stream.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let Some(mut stream) = taken else { return Ok(None) };
        // The stream travels into the waiting future and back, so a Ctrl-C (which drops the
        // future) also ends the stream.
        let (item, stream) = wait(py, async move {
            let item = stream.next().await;
            (item, stream)
        })?;
        match item {
            Some(Ok(json)) => {
                *self.stream.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(stream);
                Ok(Some(json))
            }
            Some(Err(err)) => Err(to_py(py, &err)),
            None => Ok(None),
        }
    }

    /// Ends the stream now, cancelling the call if it is still generating.
    fn close(&self) {
        let taken = self.stream.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        drop(taken);
    }
}

/// A stream for the async client: chat chunks or Responses events, as JSON. Dropping it (or
/// `close()`) cancels the call.
#[pyclass(module = "slmkit._slmkit", frozen)]
pub struct NativeAsyncStream {
    stream: Arc<tokio::sync::Mutex<Option<JsonStream>>>,
}

impl NativeAsyncStream {
    fn new(stream: JsonStream) -> Self {
        NativeAsyncStream { stream: Arc::new(tokio::sync::Mutex::new(Some(stream))) }
    }
}

#[pymethods]
impl NativeAsyncStream {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = Arc::clone(&self.stream);
        future_into_py(py, async move {
            let mut guard = stream.lock().await;
            let Some(live) = guard.as_mut() else { return Err(PyStopAsyncIteration::new_err(())) };
            match live.next().await {
                Some(Ok(json)) => Ok(json),
                Some(Err(err)) => {
                    *guard = None;
                    Err(to_py_detached(&err))
                }
                None => {
                    *guard = None;
                    Err(PyStopAsyncIteration::new_err(()))
                }
            }
        })
    }

    /// Ends the stream now, cancelling the call if it is still generating.
    fn close(&self) {
        // A chunk being awaited holds the lock; it ends the stream itself when dropped.
        if let Ok(mut guard) = self.stream.try_lock() {
            guard.take();
        }
    }
}
