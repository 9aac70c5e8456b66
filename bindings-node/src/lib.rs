//! The native half of the `slmkit` npm package.
//!
//! Everything crosses the boundary as JSON text: requests go in as the request body, answers
//! come back as the exact JSON an OpenAI server would send, and the JS layer (`index.js`)
//! `JSON.parse`s them. That keeps the binding thin (the core owns every type) and makes the
//! objects Node sees the same ones the `openai` package would parse from the wire.
//!
//! Errors reject with a JS `Error` whose message is `ERROR_PREFIX` followed by a JSON object
//! (kind, status, message and the variant's details); `index.js` turns it into the matching
//! `openai`-style error class.

pub mod models;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use napi::bindgen_prelude::{Either, FnArgs, Function, Promise, PromiseRaw};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::{Env, Status};
use napi_derive::napi;
use serde_json::{json, Value};
use slmkit::types::responses::ResponseRequest;
use slmkit::types::ChatCompletionRequest;
use slmkit::validate::{Callback, Verdict};
use slmkit::{Client, Config, OpenAiClientOptions, Prepared, PreparedResponse};
use tokio_util::sync::CancellationToken;

/// What every slmkit error message starts with, so `index.js` can tell them from napi's own.
const ERROR_PREFIX: &str = "SLMKIT_ERROR:";

/// The JS side of a validator call: `(index, requestJson, completionJson) => Promise<verdictJson>`.
/// Weak, so a client that is still reachable does not keep the process alive on its own, and
/// not callee-handled, so the JS function gets plain arguments (no leading error).
type Dispatcher = ThreadsafeFunction<
    FnArgs<(u32, String, String)>,
    Promise<String>,
    FnArgs<(u32, String, String)>,
    Status,
    false,
    true,
>;

/// An exception a JS validator threw. The JS layer keeps the thrown value under `id`, so the
/// call's rejection can carry it as `cause`: napi cannot move a JS value through the core.
#[derive(Debug)]
struct JsValidatorError {
    id: u32,
    message: String,
}

impl std::fmt::Display for JsValidatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JsValidatorError {}

/// A core error as the JS layer reads it.
/// The core's `Error::details`, plus the id of a JS exception a validator threw, so the JS
/// layer can set it as the rejection's `cause`.
fn error_details(err: &slmkit::Error) -> Value {
    let mut details = err.details();
    if let slmkit::Error::Validator { source, .. } = err {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
        while let Some(current) = cause {
            if let Some(js) = current.downcast_ref::<JsValidatorError>() {
                details["cause_id"] = json!(js.id);
                break;
            }
            cause = current.source();
        }
    }
    if matches!(err, slmkit::Error::ContextLength { .. }) {
        details["code"] = json!("context_length_exceeded");
    }
    details
}

fn to_napi(err: slmkit::Error) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("{ERROR_PREFIX}{}", error_details(&err)))
}

fn cancelled() -> napi::Error {
    to_napi(slmkit::Error::Cancelled)
}

fn json_error(err: serde_json::Error) -> napi::Error {
    to_napi(slmkit::Error::Internal(format!("cannot serialise the answer: {err}")))
}

fn parse_request(request_json: &str) -> napi::Result<ChatCompletionRequest> {
    ChatCompletionRequest::from_json(request_json).map_err(to_napi)
}

/// The request checked and (for the cache) hashed once, with its per-call timeout
/// (milliseconds, as the `openai` package takes it): the core's one preparation pass, cheap
/// enough for the event loop (no routing).
fn prepare(client: &Client, request_json: &str, timeout_ms: Option<f64>) -> slmkit::Result<Prepared<'static>> {
    ChatCompletionRequest::from_json(request_json)
        .and_then(|request| client.prepare_owned(request))
        .and_then(|prepared| prepared.with_timeout_s(timeout_ms.map(|ms| ms / 1000.0)))
}

/// A Responses API request mapped onto the chat call path and prepared, as [`prepare`].
fn prepare_response(client: &Client, request_json: &str, timeout_ms: Option<f64>) -> slmkit::Result<PreparedResponse> {
    ResponseRequest::from_json(request_json)
        .and_then(|request| client.prepare_response(request))
        .and_then(|prepared| prepared.with_timeout_s(timeout_ms.map(|ms| ms / 1000.0)))
}

/// A stream's items as the JSON text JS receives: chat chunks, or Responses events.
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

/// The cancellation of a call: the caller's token, or one nobody cancels.
fn token_of(token: Option<&CancelToken>) -> CancellationToken {
    token.map_or_else(CancellationToken::new, |token| token.token.clone())
}

/// The verdict JSON the dispatcher in `index.js` answers with.
fn read_verdict(name: &str, text: &str) -> slmkit::Result<Verdict> {
    let malformed = || slmkit::Error::Validator {
        name: name.to_owned(),
        source: format!("the JS dispatcher answered {text:?}").into(),
    };
    let value: Value = serde_json::from_str(text).map_err(|_| malformed())?;
    if let Some(error) = value.get("error") {
        let id = error.get("id").and_then(Value::as_u64).and_then(|id| u32::try_from(id).ok()).unwrap_or(0);
        let message = error.get("message").and_then(Value::as_str).unwrap_or("the validator threw").to_owned();
        return Err(slmkit::Error::Validator {
            name: name.to_owned(),
            source: Box::new(JsValidatorError { id, message }),
        });
    }
    match value.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(Ok(())),
        Some(false) => {
            let reason = value.get("reason").and_then(Value::as_str).unwrap_or("rejected").to_owned();
            Ok(Err(reason))
        }
        None => Err(malformed()),
    }
}

/// A validator that calls JS function number `index` through the dispatcher.
fn js_validator(name: String, index: u32, dispatcher: Arc<Dispatcher>) -> Callback {
    let label = name.clone();
    Callback::new(
        name,
        Arc::new(move |request, answer| {
            let dispatcher = dispatcher.clone();
            let name = label.clone();
            // Serialise before the future: it must not borrow anything it does not need to.
            let payload =
                serde_json::to_string(request).and_then(|request| Ok((request, serde_json::to_string(answer)?)));
            Box::pin(async move {
                let broke = |reason: String| slmkit::Error::Validator { name: name.clone(), source: reason.into() };
                let (request, answer) = payload.map_err(|err| broke(err.to_string()))?;
                let promise = dispatcher
                    .call_async(FnArgs::from((index, request, answer)))
                    .await
                    .map_err(|err| broke(format!("cannot call the JS validator: {err}")))?;
                let verdict = promise.await.map_err(|err| broke(format!("the JS validator failed: {err}")))?;
                read_verdict(&name, &verdict)
            })
        }),
    )
}

/// Cancels one call (its future, or its stream) when the caller's `AbortSignal` fires.
#[napi]
pub struct CancelToken {
    token: CancellationToken,
}

#[napi]
impl CancelToken {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        CancelToken { token: CancellationToken::new() }
    }

    /// Drops the call's work: a pending answer, or a stream and its engine slot.
    #[napi]
    pub fn cancel(&self) {
        self.token.cancel();
    }
}

/// A slmkit client: the core's [`Client`], configured from options, a file or the environment.
#[napi]
pub struct NativeClient {
    client: Client,
}

#[napi]
impl NativeClient {
    /// `config_json`: the configuration (the TOML file's structure, as JSON, with shorthands);
    /// and/or `config_path`: a TOML file; or neither: `$SLMKIT_CONFIG`, then the environment
    /// (the core's `Config::from_sources`). `base_url` / `api_key` set the LLM tier's
    /// endpoint, `max_retries` its retries. `validator_names[i]` is checked by calling
    /// `dispatcher(i, requestJson, completionJson)`.
    ///
    /// # Errors
    /// Config (invalid options or file), model load (a local model that does not load), I/O.
    #[napi(constructor)]
    // Spelled out rather than aliased, so napi generates the function's TS signature.
    #[allow(clippy::type_complexity)]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config_json: Option<String>,
        config_path: Option<String>,
        base_url: Option<String>,
        api_key: Option<String>,
        max_retries: Option<u32>,
        validator_names: Option<Vec<String>>,
        dispatcher: Option<Function<'_, FnArgs<(u32, String, String)>, Promise<String>>>,
    ) -> napi::Result<Self> {
        // The constructor's `timeout` is each call's default deadline (index.js passes it per call).
        let options = OpenAiClientOptions { base_url, api_key, timeout_s: None, max_retries };
        let path = config_path.map(PathBuf::from);
        let config = Config::from_sources(path.as_deref(), config_json.as_deref(), &options).map_err(to_napi)?;
        let mut builder = config.builder().map_err(to_napi)?;
        let names = validator_names.unwrap_or_default();
        if !names.is_empty() {
            let dispatcher = dispatcher
                .ok_or_else(|| to_napi(slmkit::Error::Config("validators were given without a dispatcher".into())))?;
            let dispatcher: Arc<Dispatcher> =
                Arc::new(dispatcher.build_threadsafe_function().callee_handled::<false>().weak::<true>().build()?);
            for (index, name) in names.into_iter().enumerate() {
                let index = u32::try_from(index).map_err(|_| napi::Error::from_reason("too many validators"))?;
                builder = builder.validator(Arc::new(js_validator(name, index, dispatcher.clone())));
            }
        }
        // The local engine and the remote backend may touch the runtime while they start.
        let client = napi::bindgen_prelude::within_runtime_if_available(|| builder.build()).map_err(to_napi)?;
        Ok(NativeClient { client })
    }

    /// Answers a request body (JSON) with the completion's JSON: at once for a response-cache
    /// hit (no hop to a runtime thread and back, which costs more than the lookup), otherwise
    /// as a promise. `timeout_ms` bounds the whole call.
    #[napi(ts_return_type = "Promise<string> | string")]
    pub fn create<'env>(
        &self,
        env: &'env Env,
        request_json: String,
        token: &CancelToken,
        timeout_ms: Option<f64>,
    ) -> napi::Result<Either<String, PromiseRaw<'env, String>>> {
        let client = self.client.clone();
        let token = token.token.clone();
        let prepared = prepare(&client, &request_json, timeout_ms);
        if let Ok(prepared) = &prepared {
            if let Some(hit) = client.cached(prepared) {
                return serde_json::to_string(&hit).map(Either::A).map_err(json_error);
            }
        }
        env.spawn_future(async move {
            let prepared = prepared.map_err(to_napi)?;
            // Leaving the select drops the call's future, which frees the engine slot and
            // records the attempt as cancelled. Routing happens in there, off the event loop.
            tokio::select! {
                biased;
                () = token.cancelled() => Err(cancelled()),
                answer = client.create_prepared(prepared) => {
                    serde_json::to_string(&answer.map_err(to_napi)?).map_err(json_error)
                }
            }
        })
        .map(Either::B)
    }

    /// Starts a stream; resolves once the first chunks are ready (or the call failed).
    /// `timeout_ms` bounds the wait for the stream to start.
    #[napi(ts_return_type = "Promise<NativeStream>")]
    pub fn create_stream<'env>(
        &self,
        env: &'env Env,
        request_json: String,
        token: &CancelToken,
        timeout_ms: Option<f64>,
    ) -> napi::Result<PromiseRaw<'env, NativeStream>> {
        let client = self.client.clone();
        let token = token.token.clone();
        let prepared = prepare(&client, &request_json, timeout_ms);
        env.spawn_future(async move {
            let prepared = prepared.map_err(to_napi)?;
            let stream = tokio::select! {
                biased;
                () = token.cancelled() => return Err(cancelled()),
                stream = client.create_stream_prepared(prepared) => stream.map_err(to_napi)?,
            };
            Ok(NativeStream::new(json_stream(stream), token))
        })
    }

    /// One Responses API call (`POST /v1/responses` body as JSON): resolves to the response's
    /// JSON. The same call path as `create` (routing, validation, retries, cache, ledger).
    /// `token` cancels it; `timeout_ms` bounds the whole call.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn respond<'env>(
        &self,
        env: &'env Env,
        request_json: String,
        token: Option<&CancelToken>,
        timeout_ms: Option<f64>,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        let client = self.client.clone();
        let token = token_of(token);
        let prepared = prepare_response(&client, &request_json, timeout_ms);
        env.spawn_future(async move {
            let prepared = prepared.map_err(to_napi)?;
            tokio::select! {
                biased;
                () = token.cancelled() => Err(cancelled()),
                answer = client.respond_prepared(prepared) => {
                    serde_json::to_string(&answer.map_err(to_napi)?).map_err(json_error)
                }
            }
        })
    }

    /// A streamed Responses API call: resolves to a stream whose `next()` gives each event's
    /// JSON (`{"type": ..., "sequence_number": ..., ...}`), then `null`.
    #[napi(ts_return_type = "Promise<NativeStream>")]
    pub fn respond_stream<'env>(
        &self,
        env: &'env Env,
        request_json: String,
        token: Option<&CancelToken>,
        timeout_ms: Option<f64>,
    ) -> napi::Result<PromiseRaw<'env, NativeStream>> {
        let client = self.client.clone();
        let token = token_of(token);
        let prepared = prepare_response(&client, &request_json, timeout_ms);
        env.spawn_future(async move {
            let prepared = prepared.map_err(to_napi)?;
            let stream = tokio::select! {
                biased;
                () = token.cancelled() => return Err(cancelled()),
                stream = client.respond_stream_prepared(prepared) => stream.map_err(to_napi)?,
            };
            Ok(NativeStream::new(json_stream(stream), token))
        })
    }

    /// Where a request would go, and why (JSON).
    #[napi]
    pub fn explain(&self, request_json: String) -> napi::Result<String> {
        let request = parse_request(&request_json)?;
        let decision = self.client.explain(&request).map_err(to_napi)?;
        serde_json::to_string(&decision).map_err(json_error)
    }

    /// The configured tiers' models as `GET /v1/models` lists them (`slmkit serve`'s entries):
    /// an OpenAI model list (JSON), the SLM first.
    #[napi]
    pub fn models(&self) -> napi::Result<String> {
        serde_json::to_string(&self.client.models()).map_err(json_error)
    }

    /// Explicit feedback on an answered call (a ledger record the adaptive router learns from).
    #[napi]
    pub fn feedback(&self, call_id: String, correct: bool, reason: Option<String>) -> napi::Result<()> {
        self.client.feedback(&call_id, correct, reason).map_err(to_napi)
    }

    /// The ledger's report (JSON).
    #[napi]
    pub fn ledger_report(&self) -> napi::Result<String> {
        serde_json::to_string(&self.client.ledger().report()).map_err(json_error)
    }

    /// The ledger's report as a text table.
    #[napi]
    pub fn ledger_table(&self) -> String {
        self.client.ledger().report().to_table()
    }

    /// Every attempt recorded so far (JSON array).
    #[napi]
    pub fn ledger_records(&self) -> napi::Result<String> {
        serde_json::to_string(&self.client.ledger().records()).map_err(json_error)
    }

    /// Runs checkable agent tasks (`slmkit eval`'s format) through the client, one at a time,
    /// off the event loop. `tasks` is a JSONL file's path when `is_path`, else its text.
    /// Resolves to `{"result": <the eval result>, "table": "<its table>"}` (JSON).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn evaluate<'env>(
        &self,
        env: &'env Env,
        tasks: String,
        is_path: bool,
        bare: bool,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        let client = self.client.clone();
        // Every line is checked before anything runs, here on the caller's thread (it is cheap).
        let parsed = match is_path {
            true => slmkit::eval::read_tasks(&tasks),
            false => slmkit::eval::parse_tasks(&tasks, "tasks"),
        };
        env.spawn_future(async move {
            let tasks = parsed.map_err(to_napi)?;
            let options = slmkit::eval::EvalOptions { bare };
            let result = client.evaluate(&tasks, &options).await.map_err(to_napi)?;
            let table = result.to_table();
            serde_json::to_string(&serde_json::json!({"result": result, "table": table})).map_err(json_error)
        })
    }
}

/// A stream of chat chunks or Responses events, as JSON. Closing it, or cancelling its call's
/// token, drops the core stream, which stops generation and frees the engine slot.
#[napi]
pub struct NativeStream {
    stream: Arc<tokio::sync::Mutex<Option<JsonStream>>>,
    token: CancellationToken,
    ended: Arc<AtomicBool>,
}

impl NativeStream {
    fn new(stream: JsonStream, token: CancellationToken) -> Self {
        let stream = Arc::new(tokio::sync::Mutex::new(Some(stream)));
        // An abort must free the engine slot even while nobody is reading the stream, so a
        // watcher drops it on cancellation. It holds a weak reference, so an abandoned stream
        // is still freed when JS collects it; the token is cancelled at the end of the stream
        // and on drop, so the watcher always finishes.
        let weak = Arc::downgrade(&stream);
        let watched = token.clone();
        napi::bindgen_prelude::spawn(async move {
            watched.cancelled().await;
            if let Some(stream) = weak.upgrade() {
                stream.lock().await.take();
            }
        });
        NativeStream { stream, token, ended: Arc::new(AtomicBool::new(false)) }
    }
}

impl Drop for NativeStream {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

#[napi]
impl NativeStream {
    /// The next chunk's (or event's) JSON, or `null` at the end.
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn next<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Option<String>>> {
        let stream = self.stream.clone();
        let token = self.token.clone();
        let ended = self.ended.clone();
        env.spawn_future(async move {
            if ended.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let mut slot = tokio::select! {
                biased;
                () = token.cancelled() => return Err(cancelled()),
                slot = stream.lock() => slot,
            };
            let Some(chunks) = slot.as_mut() else { return Ok(None) };
            let item = tokio::select! {
                biased;
                () = token.cancelled() => {
                    *slot = None;
                    return Err(cancelled());
                }
                item = chunks.next() => item,
            };
            match item {
                Some(Ok(json)) => Ok(Some(json)),
                Some(Err(err)) => {
                    *slot = None;
                    ended.store(true, Ordering::SeqCst);
                    token.cancel();
                    Err(to_napi(err))
                }
                None => {
                    *slot = None;
                    ended.store(true, Ordering::SeqCst);
                    token.cancel();
                    Ok(None)
                }
            }
        })
    }

    /// Stops the stream and frees what it holds. A pending `next()` rejects as cancelled.
    #[napi]
    pub fn close(&self) {
        self.token.cancel();
        if let Ok(mut slot) = self.stream.try_lock() {
            *slot = None;
        }
    }
}
