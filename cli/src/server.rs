//! `slmkit serve`: the client behind an OpenAI-compatible HTTP API, so any framework that
//! takes a base URL uses slmkit without code.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use slmkit::hints::HINT_FIELD;
use slmkit::metadata::METADATA_FIELD;
use slmkit::types::{ChatCompletionRequest, ChunkStream};
use slmkit::{Client, Config, Error, Tier};

pub use crate::connections::Limits;

/// The `[server]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Default 127.0.0.1: a server on a shared host answers only locally unless told otherwise.
    pub host: String,
    /// Default 8080.
    pub port: u16,
    /// A bearer token clients must send. Prefer `api_key_env`.
    pub api_key: Option<String>,
    /// The environment variable holding that token.
    pub api_key_env: Option<String>,
    /// Largest accepted request body. Default 8 MiB.
    pub max_body_bytes: usize,
    /// How long in-flight requests may run after SIGTERM/SIGINT. Default 30 s.
    pub shutdown_grace_s: f64,
    /// Whether `/metrics` (call counts and cost) answers without the API key. Default: public
    /// when there is no key, behind it when there is one.
    pub metrics_public: Option<bool>,
    /// Web origins (e.g. `https://app.example.com`) whose pages may call the API. Browsers
    /// send `Origin` on cross-site requests; any other origin gets a 403, so a page a user
    /// happens to open cannot make a loopback server spend money. Default: none.
    pub allowed_origins: Vec<String>,
    /// Seconds a request's head (request line and headers) may take to arrive, from its first
    /// byte. Default 10.
    pub header_timeout_s: f64,
    /// Seconds a request's body may take to arrive once its head has; then a 408. Default 30.
    pub body_timeout_s: f64,
    /// Seconds a connection may sit with no request in flight and no bytes moving (a client
    /// that connects and sends nothing, an idle keep-alive connection). Default 60.
    pub idle_timeout_s: f64,
    /// Open connections at most; one more is answered 503 (`too_many_connections`) and closed.
    /// Default 1024.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            api_key_env: None,
            max_body_bytes: 8 << 20,
            shutdown_grace_s: 30.0,
            metrics_public: None,
            allowed_origins: Vec::new(),
            header_timeout_s: 10.0,
            body_timeout_s: 30.0,
            idle_timeout_s: 60.0,
            max_connections: 1024,
        }
    }
}

impl ServerConfig {
    /// Reads `[server]` from a config.
    ///
    /// # Errors
    /// [`Error::Config`] for unknown keys, bad values, or an `api_key_env` that is not set.
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let mut server: ServerConfig = match &config.server {
            Some(table) => {
                table.clone().try_into().map_err(|err: toml::de::Error| Error::Config(format!("[server]: {err}")))?
            }
            None => ServerConfig::default(),
        };
        if let Some(variable) = &server.api_key_env {
            server.api_key = Some(
                std::env::var(variable)
                    .map_err(|_| Error::Config(format!("[server] api_key_env names {variable}, which is not set")))?,
            );
        }
        if !server.shutdown_grace_s.is_finite() || server.shutdown_grace_s < 0.0 || server.max_body_bytes == 0 {
            return Err(Error::Config("[server] shutdown_grace_s must be >= 0 and max_body_bytes > 0".into()));
        }
        for (name, seconds) in [
            ("header_timeout_s", server.header_timeout_s),
            ("body_timeout_s", server.body_timeout_s),
            ("idle_timeout_s", server.idle_timeout_s),
        ] {
            if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
                return Err(Error::Config(format!("[server] {name} must be from 0 to 86400 seconds, got {seconds}")));
            }
        }
        if server.max_connections == 0 {
            return Err(Error::Config("[server] max_connections must be at least 1".into()));
        }
        Ok(server)
    }

    /// The connection limits (`header_timeout_s`, `idle_timeout_s`, `max_connections`).
    pub fn limits(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_secs_f64(self.header_timeout_s),
            idle_timeout: Duration::from_secs_f64(self.idle_timeout_s),
            max_connections: self.max_connections,
        }
    }
}

/// Latency buckets (seconds) of the request histogram.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, count) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *bucket {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

struct AppState {
    client: Client,
    /// The bearer token's SHA-256, compared in constant time.
    api_key: Option<[u8; 32]>,
    max_body_bytes: usize,
    body_timeout: Duration,
    latency: Histogram,
    requests: AtomicU64,
    errors: AtomicU64,
    allowed_origins: Vec<String>,
}

mod responses;

/// The HTTP application around `client`.
pub fn app(client: Client, server: &ServerConfig) -> Router {
    let state = Arc::new(AppState {
        client,
        api_key: server.api_key.as_deref().map(|key| Sha256::digest(key.as_bytes()).into()),
        max_body_bytes: server.max_body_bytes,
        body_timeout: Duration::from_secs_f64(server.body_timeout_s),
        latency: Histogram::default(),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        allowed_origins: server.allowed_origins.iter().map(|origin| origin.trim_end_matches('/').to_owned()).collect(),
    });
    let mut api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/models", get(models))
        .route("/v1/slmkit/report", get(report))
        .route("/v1/slmkit/feedback", post(feedback))
        .route("/v1/slmkit/explain", post(explain));
    let metrics_public = server.metrics_public.unwrap_or(server.api_key.is_none());
    let mut open = Router::new().route("/healthz", get(|| async { Json(json!({"status": "ok"})) }));
    if metrics_public {
        open = open.route("/metrics", get(metrics));
    } else {
        api = api.route("/metrics", get(metrics));
    }
    // Layers run outside in: the browser guard first, then the key.
    let api = api
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), authorize))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), browser_guard));
    Router::new()
        .merge(api)
        .merge(open)
        .fallback(|| async {
            openai_error(StatusCode::NOT_FOUND, "no such route", "invalid_request_error", Some("not_found"))
        })
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// for up to `grace`, and returns. Connections get the default [`Limits`].
///
/// # Errors
/// The server's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    serve_with(listener, app, ServerConfig::default().limits(), shutdown, grace, || {}).await
}

/// As [`serve`], with these connection limits; `cut_off` runs once the grace period is over,
/// just before the requests still running are stopped.
///
/// # Errors
/// The server's I/O error.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
    cut_off: impl FnOnce(),
) -> std::io::Result<()> {
    crate::connections::serve(listener, app, limits, shutdown, grace, cut_off).await
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// `slmkit serve --config FILE`.
///
/// # Errors
/// Configuration, bind and server errors.
pub async fn run(
    config_path: &std::path::Path,
    host: Option<String>,
    port: Option<u16>,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(Some(config_path))?;
    let mut server = ServerConfig::from_config(&config)?;
    server.host = host.unwrap_or(server.host);
    server.port = port.unwrap_or(server.port);
    // Bind before loading models: a taken port is reported at once, not after a minute of
    // loading, and connections that arrive while models load wait in the backlog.
    let wanted = format!("{}:{}", server.host, server.port);
    let listener = tokio::net::TcpListener::bind((server.host.as_str(), server.port))
        .await
        .map_err(|err| format!("cannot listen on {wanted}: {err}"))?;
    let address: SocketAddr = listener.local_addr()?;
    eprintln!("slmkit serve: bound http://{address}/v1; loading models");
    let client = tokio::task::spawn_blocking(move || config.build()).await??;
    for tier in [Tier::Slm, Tier::Llm] {
        if let Some(config) = client.tier(tier) {
            eprintln!("slmkit serve: {tier} tier: {}", config.backend.model());
        }
    }
    println!("slmkit serve: listening on http://{address}/v1");
    let grace = Duration::from_secs_f64(server.shutdown_grace_s);
    // Whatever is still running after the grace period is cut off by the shutdown, not by
    // its caller, and the ledger says so.
    let ledger = client.ledger().clone();
    let cut_off = move || ledger.mark_shutting_down();
    serve_with(listener, app(client.clone(), &server), server.limits(), shutdown_signal(), grace, cut_off).await?;
    // The ledger file is written by a thread: wait for it, then say where things stand.
    let ledger = client.ledger().clone();
    tokio::task::spawn_blocking(move || ledger.flush()).await?;
    let report = client.ledger().report();
    println!(
        "slmkit serve: stopped after {} calls; ledger flushed ({} write errors)",
        report.calls,
        client.ledger().write_errors()
    );
    Ok(())
}

/// Whether `presented` is the key whose SHA-256 is `expected`. Compares digests (fixed
/// length, whatever was sent) with a fold that looks at every byte, so the time taken says
/// nothing about how much of the key was right.
fn key_matches(expected: &[u8; 32], presented: Option<&str>) -> bool {
    let Some(presented) = presented else { return false };
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let difference = expected.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    // Keep the optimiser from turning the fold back into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

/// Refuses what only a browser would send: a request from a web origin not allowed (a page
/// the user opened, posting to this server), or a POST whose body is not declared JSON
/// (`text/plain` and form posts are the content types a page may send cross-site without a
/// CORS preflight). API clients send JSON and no `Origin`.
async fn browser_guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        if !state.allowed_origins.iter().any(|allowed| allowed == origin) {
            return openai_error(
                StatusCode::FORBIDDEN,
                &format!(
                    "requests from the web origin {origin:?} are not allowed; list it in [server] allowed_origins"
                ),
                "invalid_request_error",
                Some("origin_not_allowed"),
            );
        }
    }
    if request.method() == axum::http::Method::POST {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| {
                let media = media.trim().to_ascii_lowercase();
                media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
            });
        if !json {
            return openai_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the request body must be sent as Content-Type: application/json",
                "invalid_request_error",
                Some("unsupported_media_type"),
            );
        }
    }
    next.run(request).await
}

async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.api_key {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !key_matches(expected, presented) {
            return openai_error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send Authorization: Bearer <key>",
                "invalid_request_error",
                Some("invalid_api_key"),
            );
        }
    }
    next.run(request).await
}

fn openai_error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

/// OpenAI's error JSON for `err`, plus slmkit's own fields beside it (`slmkit.kind` and
/// `slmkit.openai_class`, the exception class the `openai` packages and slmkit's bindings
/// raise for it), where OpenAI clients ignore them.
fn error_json(err: &Error) -> Value {
    let status = StatusCode::from_u16(err.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = error_type(err, status);
    let param = match err {
        Error::InvalidRequest { param, .. } => param.clone(),
        Error::InvalidSchema { param, .. } | Error::RequestTooLarge { param, .. } => Some(param.clone()),
        _ => None,
    };
    let mut body = json!({"error": {"message": err.to_string(), "type": kind, "param": param, "code": err.kind()}});
    body[METADATA_FIELD] = json!({"kind": err.kind(), "openai_class": err.openai_class()});
    body
}

/// The OpenAI error object's `type`: what openai clients and retry logic read besides the status.
fn error_type(err: &Error, status: StatusCode) -> &'static str {
    match err.kind() {
        "timeout" => "timeout",
        "rate_limit" => "rate_limit_exceeded",
        "overloaded" | "engine_stopped" => "server_overloaded",
        _ if status.is_client_error() => "invalid_request_error",
        _ => "server_error",
    }
}

fn error_response(err: &Error) -> Response {
    let status = StatusCode::from_u16(err.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = error_json(err);
    let mut response = (status, Json(body)).into_response();
    if let Some(wait) = err.retry_after() {
        if let Ok(value) = wait.as_secs().max(1).to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

async fn chat_completions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    state.requests.fetch_add(1, Ordering::Relaxed);
    let response = answer(&state, &headers, body).await;
    if !response.status().is_success() {
        state.errors.fetch_add(1, Ordering::Relaxed);
    }
    state.latency.observe(started.elapsed());
    response
}

/// A request's body as text, read within `body_timeout_s` and `max_body_bytes`; the error
/// response otherwise. Chat and Responses requests both come through here.
async fn read_body_text(state: &AppState, body: Body) -> Result<String, Response> {
    let reading = tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, state.max_body_bytes));
    let bytes: Bytes = match reading.await {
        Ok(Ok(bytes)) => bytes,
        Err(_) => {
            return Err(openai_error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {} s (body_timeout_s)",
                    state.body_timeout.as_secs_f64()
                ),
                "invalid_request_error",
                Some("request_timeout"),
            ))
        }
        Ok(Err(_)) => {
            return Err(openai_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than {} bytes", state.max_body_bytes),
                "invalid_request_error",
                Some("request_too_large"),
            ))
        }
    };
    std::str::from_utf8(&bytes).map(str::to_owned).map_err(|err| {
        openai_error(StatusCode::BAD_REQUEST, &format!("the body is not UTF-8: {err}"), "invalid_request_error", None)
    })
}

/// A chat-completions body read, parsed and its hints checked, with the headers' hints applied;
/// the error response otherwise.
async fn read_chat_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<ChatCompletionRequest, Response> {
    let text = read_body_text(state, body).await?;
    let mut request = ChatCompletionRequest::from_json(&text).map_err(|err| error_response(&err))?;
    // The body's own hints are checked before a header's may replace one of them.
    slmkit::hints::check(&request).map_err(|err| error_response(&err))?;
    apply_header_hints(&mut request.extra, headers);
    Ok(request)
}

async fn answer(state: &AppState, headers: &HeaderMap, body: Body) -> Response {
    let request = match read_chat_request(state, headers, body).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    if request.is_stream() {
        match state.client.create_stream(&request).await {
            Ok(chunks) => sse_response(chunks),
            Err(err) => error_response(&err),
        }
    } else {
        match state.client.create(&request).await {
            Ok(completion) => Json(completion).into_response(),
            Err(err) => error_response(&err),
        }
    }
}

/// Where a chat request would go and why (`Client::explain`), without making the call: the
/// heuristic's signals and, with the adaptive router, the posterior it decided from (the
/// fleet's evidence included, with `[shared]`).
async fn explain(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let request = match read_chat_request(&state, &headers, body).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    match state.client.explain(&request) {
        Ok(decision) => Json(decision).into_response(),
        Err(err) => error_response(&err),
    }
}

/// `X-Slmkit-Route` and `X-Slmkit-Task` become the same hints `{"slmkit": {...}}` carries, in a
/// chat or a Responses request's extra fields.
fn apply_header_hints(extra: &mut serde_json::Map<String, Value>, headers: &HeaderMap) {
    for (header_name, key) in [("x-slmkit-route", "route"), ("x-slmkit-task", "task")] {
        if let Some(value) = headers.get(header_name).and_then(|value| value.to_str().ok()) {
            let hints = extra.entry(HINT_FIELD).or_insert_with(|| json!({}));
            if let Some(hints) = hints.as_object_mut() {
                hints.insert(key.into(), Value::String(value.to_owned()));
            }
        }
    }
}

/// One SSE frame for a stream item: the chunk, or, for an error (or a chunk that cannot be
/// serialised), an `error` event as OpenAI sends one.
fn sse_frame<T: serde::Serialize>(item: Result<T, Error>) -> Bytes {
    let serialised = item.and_then(|chunk| {
        serde_json::to_string(&chunk).map_err(|err| Error::Internal(format!("cannot serialise a chunk: {err}")))
    });
    let json = match serialised {
        Ok(json) => json,
        Err(err) => {
            let mut event = error_json(&err);
            event["error"]["type"] = json!("server_error");
            event.to_string()
        }
    };
    Bytes::from(format!("data: {json}\n\n"))
}

/// Chunks framed as OpenAI frames them: `data: {json}\n\n`, then `data: [DONE]\n\n`. An
/// error after the first chunk is sent as an `error` event, as OpenAI does, and ends the stream.
fn sse_response(chunks: ChunkStream) -> Response {
    let frames = chunks
        .map(|item| Ok::<Bytes, std::convert::Infallible>(sse_frame(item)))
        .chain(futures::stream::once(async { Ok(Bytes::from_static(b"data: [DONE]\n\n")) }));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.client.models())
}

/// `?scope=fleet`: the whole fleet's ledger stream (with `[shared]`); otherwise this process's.
#[derive(serde::Deserialize)]
struct ReportQuery {
    scope: Option<String>,
}

async fn report(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(query): axum::extract::Query<ReportQuery>,
) -> Response {
    let report = match query.scope.as_deref() {
        None | Some("process") => state.client.ledger().report(),
        Some("fleet") => match state.client.fleet_report().await {
            Ok((report, _unparsed)) => report,
            Err(err) => return error_response(&err),
        },
        Some(other) => {
            return error_response(&Error::InvalidRequest {
                message: format!("scope must be process or fleet, not {other:?}"),
                param: Some("scope".into()),
            })
        }
    };
    match serde_json::to_value(report) {
        Ok(report) => Json(report).into_response(),
        Err(err) => error_response(&Error::Internal(format!("cannot serialise the report: {err}"))),
    }
}

/// The body of `POST /v1/slmkit/feedback`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    call_id: String,
    correct: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// Explicit feedback on an answer (`Client::feedback`): `{"call_id", "correct", "reason"?}`.
async fn feedback(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let parsed = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => serde_json::from_slice::<FeedbackBody>(&bytes).map_err(|err| err.to_string()),
        Err(_) => Err(format!("the request body is larger than {} bytes", state.max_body_bytes)),
    };
    let body = match parsed {
        Ok(body) => body,
        Err(reason) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                &format!("feedback must be {{\"call_id\": string, \"correct\": bool, \"reason\"?: string}}: {reason}"),
                "invalid_request_error",
                None,
            )
        }
    };
    match state.client.feedback(&body.call_id, body.correct, body.reason) {
        Ok(()) => Json(json!({"object": "slmkit.feedback", "call_id": body.call_id, "recorded": true})).into_response(),
        Err(err) => error_response(&err),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // Running totals, not the report over the records in memory: those are capped, and
    // counters read from them would go down when old records are dropped.
    let report = state.client.ledger().totals();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        out.push_str(&format!("# HELP slmkit_{name} {help}\n# TYPE slmkit_{name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("slmkit_{name}{labels} {value}\n"));
        }
    };
    metric(
        "http_requests_total",
        "counter",
        "Chat-completions requests received.",
        &[("", state.requests.load(Ordering::Relaxed) as f64)],
    );
    metric(
        "http_errors_total",
        "counter",
        "Requests answered with an error status.",
        &[("", state.errors.load(Ordering::Relaxed) as f64)],
    );
    metric(
        "calls_total",
        "counter",
        "Calls by the route that served them.",
        &[
            ("{route=\"slm\"}", report.served_by_slm as f64),
            ("{route=\"llm\"}", report.served_by_llm as f64),
            ("{route=\"cache\"}", report.served_from_cache as f64),
            ("{route=\"failed\"}", report.failed_calls as f64),
        ],
    );
    metric("attempts_total", "counter", "Backend attempts, retries included.", &[("", report.attempts as f64)]);
    metric(
        "escalations_total",
        "counter",
        "Calls that started on the SLM and ended on the LLM.",
        &[("", report.escalations as f64)],
    );
    metric(
        "validation_failures_total",
        "counter",
        "SLM answers rejected by a validator.",
        &[("", report.validation_failures as f64)],
    );
    metric(
        "overloaded_total",
        "counter",
        "SLM attempts refused because the local engine's queue was full (see [slm] on_overload).",
        &[("", report.overloaded as f64)],
    );
    metric(
        "rejected_by_caller_total",
        "counter",
        "Answers the caller rejected by re-sending the same request (re-asks).",
        &[("", report.rejected_by_caller as f64)],
    );
    metric(
        "cache_hits_total",
        "counter",
        "Calls answered from the response cache.",
        &[("", report.served_from_cache as f64)],
    );
    metric(
        "tokens_total",
        "counter",
        "Tokens processed by backends.",
        &[
            ("{kind=\"prompt\"}", report.prompt_tokens as f64),
            ("{kind=\"completion\"}", report.completion_tokens as f64),
        ],
    );
    metric(
        "cost_usd_total",
        "counter",
        "Money spent, every attempt included.",
        &[("{tier=\"slm\"}", report.slm_cost_usd), ("{tier=\"llm\"}", report.llm_cost_usd)],
    );
    metric(
        "counterfactual_llm_cost_usd_total",
        "counter",
        "The same calls priced all-LLM, first try.",
        &[("", report.counterfactual_llm_cost_usd)],
    );
    metric("energy_joules_total", "counter", "Energy of local attempts.", &[("", report.energy_j)]);
    if let Some(store) = state.client.shared_store() {
        metric(
            "shared_errors_total",
            "counter",
            "Shared-store (Redis) operations that failed or ran past the budget; calls went on locally.",
            &[("", store.errors() as f64)],
        );
    }
    out.push_str("# HELP slmkit_request_duration_seconds Chat-completions request latency.\n# TYPE slmkit_request_duration_seconds histogram\n");
    for (bucket, count) in BUCKETS.iter().zip(&state.latency.counts) {
        out.push_str(&format!(
            "slmkit_request_duration_seconds_bucket{{le=\"{bucket}\"}} {}\n",
            count.load(Ordering::Relaxed)
        ));
    }
    let total = state.latency.count.load(Ordering::Relaxed);
    out.push_str(&format!("slmkit_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n"));
    out.push_str(&format!(
        "slmkit_request_duration_seconds_sum {}\nslmkit_request_duration_seconds_count {total}\n",
        state.latency.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_only_exactly() {
        let expected: [u8; 32] = Sha256::digest(b"serve-secret").into();
        assert!(key_matches(&expected, Some("serve-secret")));
        for wrong in ["", "serve-secreT", "serve-secret ", "serve", "x".repeat(1000).as_str()] {
            assert!(!key_matches(&expected, Some(wrong)), "{wrong:?}");
        }
        assert!(!key_matches(&expected, None));
    }

    /// Before, a chunk that failed to serialise went out as an empty `data: ` event.
    #[test]
    fn a_chunk_that_cannot_be_serialised_is_an_error_event() {
        struct Unserialisable;
        impl serde::Serialize for Unserialisable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let frame = sse_frame(Ok::<_, Error>(Unserialisable));
        let text = std::str::from_utf8(&frame).unwrap();
        let event: Value = serde_json::from_str(text.strip_prefix("data: ").unwrap().trim()).unwrap();
        assert_eq!(event["error"]["type"], "server_error");
        assert_eq!(event["error"]["code"], "internal");
        assert!(event["error"]["message"].as_str().unwrap().contains("cannot serialise a chunk"));
        let ok = sse_frame(Ok::<_, Error>(json!({"id": "c"})));
        assert_eq!(&ok[..], b"data: {\"id\":\"c\"}\n\n");
    }
}
