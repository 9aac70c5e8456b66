//! A backend for any OpenAI-compatible endpoint: OpenAI, vLLM, llama.cpp's server, Ollama…
//!
//! One HTTP attempt per call: retries belong to the client's single retry budget, so they
//! never multiply across layers.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::hints::{HINT_FIELD, HINT_METADATA_PREFIX};
use crate::types::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkStream};

/// An API key. It prints as `***` and is never serialised, so it cannot leak into logs, the
/// ledger or error messages by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// How to reach a remote endpoint.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The API root, e.g. `https://api.openai.com/v1` or `http://localhost:8000/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<ApiKey>,
    /// The model name to ask for. Empty means "whatever the request names".
    pub model: String,
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// Until the whole answer (or, for a stream, its headers) has arrived. Default 600 s.
    pub request_timeout: Duration,
    /// The longest a stream may go quiet between chunks. Default 60 s.
    pub stream_idle_timeout: Duration,
}

impl RemoteConfig {
    /// A config for `base_url` with default timeouts and no key.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        RemoteConfig {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
            stream_idle_timeout: Duration::from_secs(60),
        }
    }

    /// Sets the key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(ApiKey::new(key));
        self
    }
}

/// A remote OpenAI-compatible chat-completions endpoint.
#[derive(Debug, Clone)]
pub struct RemoteBackend {
    config: RemoteConfig,
    url: String,
    http: reqwest::Client,
}

impl RemoteBackend {
    /// # Errors
    /// [`Error::Config`] for a base URL that is not http(s), or an HTTP client that cannot be built.
    pub fn new(config: RemoteConfig) -> Result<Self> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!("base_url must start with http:// or https://, got {base:?}")));
        }
        let url = format!("{base}/chat/completions");
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|err| Error::Config(format!("cannot build the HTTP client: {err}")))?;
        Ok(RemoteBackend { config, url, http })
    }

    /// The model this backend asks for.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// The endpoint, model and a fingerprint of the key: what makes two remote backends'
    /// answers interchangeable, without the key itself.
    pub(crate) fn identity(&self) -> String {
        let key =
            self.config.api_key.as_ref().map(|key| crate::cache::key_fingerprint(key.expose())).unwrap_or_default();
        format!("remote:{}:{}:{key}", self.url, self.config.model)
    }

    /// The full chat-completions URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One non-streaming call.
    ///
    /// # Errors
    /// [`Error::Api`] for an HTTP error status (with the body), [`Error::Timeout`],
    /// [`Error::Connection`], or [`Error::MalformedResponse`] for a 2xx that is not a completion.
    pub async fn create(&self, request: &ChatCompletionRequest) -> Result<ChatCompletion> {
        let body = self.outbound_body(request, false)?;
        let response = self
            .send(body)
            .timeout(self.config.request_timeout)
            .send()
            .await
            .map_err(|err| self.transport_error(err, "request"))?;
        let response = self.check_status(response).await?;
        let bytes = response.bytes().await.map_err(|err| self.transport_error(err, "request"))?;
        serde_json::from_slice::<ChatCompletion>(&bytes).map_err(|err| Error::MalformedResponse {
            url: self.url.clone(),
            reason: format!("not a chat completion: {err}"),
            body: self.redact(&snippet(&bytes)),
        })
    }

    /// One streaming call. The stream always asks for usage, so every attempt can be billed;
    /// the client drops the usage chunk again if its caller did not ask for it.
    ///
    /// # Errors
    /// As [`RemoteBackend::create`] for failures before the first byte; later failures are
    /// the stream's last item.
    pub async fn create_stream(&self, request: &ChatCompletionRequest) -> Result<ChunkStream> {
        let body = self.outbound_body(request, true)?;
        let send = self.send(body).send();
        let response = match tokio::time::timeout(self.config.request_timeout, send).await {
            Ok(sent) => sent.map_err(|err| self.transport_error(err, "request"))?,
            Err(_) => {
                return Err(Error::Timeout {
                    url: self.url.clone(),
                    phase: "request",
                    after: self.config.request_timeout,
                })
            }
        };
        let response = self.check_status(response).await?;
        let events = response.bytes_stream().eventsource();
        let state = SseState { events: Box::pin(events), backend: self.clone(), done: false };
        Ok(Box::pin(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })))
    }

    fn send(&self, body: Value) -> reqwest::RequestBuilder {
        let mut builder = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        builder
    }

    /// The request as it leaves: our model name, our stream settings, no slmkit hints.
    ///
    /// # Errors
    /// [`Error::Internal`] when the request cannot be serialised (nothing is sent).
    fn outbound_body(&self, request: &ChatCompletionRequest, stream: bool) -> Result<Value> {
        let mut outbound = request.clone();
        if !self.config.model.is_empty() {
            outbound.model = self.config.model.clone();
        }
        outbound.extra.remove(HINT_FIELD);
        if let Some(metadata) = &mut outbound.metadata {
            metadata.retain(|key, _| !key.starts_with(HINT_METADATA_PREFIX));
            if metadata.is_empty() {
                outbound.metadata = None;
            }
        }
        outbound.stream = stream.then_some(true);
        outbound.stream_options = None;
        let mut body = request_json(&outbound)?;
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        Ok(body)
    }

    async fn check_status(&self, response: reqwest::Response) -> Result<reqwest::Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.unwrap_or_default();
        let body = self.redact(&snippet(&bytes));
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|value| value.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
            .map(|message| self.redact(&message))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        Err(Error::Api { url: self.url.clone(), status: status.as_u16(), message, body, retry_after })
    }

    fn transport_error(&self, err: reqwest::Error, phase: &'static str) -> Error {
        if err.is_timeout() {
            let (phase, after) = if err.is_connect() {
                ("connect", self.config.connect_timeout)
            } else {
                (phase, self.config.request_timeout)
            };
            return Error::Timeout { url: self.url.clone(), phase, after };
        }
        let reason = self.redact(&error_chain(&err));
        Error::Connection { url: self.url.clone(), reason, source: Some(Box::new(err.without_url())) }
    }

    /// Removes the API key from text that came back from the server.
    fn redact(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "[redacted]"),
            _ => text.to_owned(),
        }
    }
}

struct SseState {
    events: std::pin::Pin<
        Box<
            dyn futures::Stream<
                    Item = std::result::Result<
                        eventsource_stream::Event,
                        eventsource_stream::EventStreamError<reqwest::Error>,
                    >,
                > + Send,
        >,
    >,
    backend: RemoteBackend,
    done: bool,
}

impl SseState {
    async fn next(&mut self) -> Option<Result<ChatCompletionChunk>> {
        if self.done {
            return None;
        }
        let url = &self.backend.url;
        loop {
            let idle = self.backend.config.stream_idle_timeout;
            let event = match tokio::time::timeout(idle, self.events.next()).await {
                Err(_) => {
                    self.done = true;
                    return Some(Err(Error::Timeout { url: url.clone(), phase: "stream idle", after: idle }));
                }
                Ok(None) => {
                    self.done = true;
                    return Some(Err(Error::Connection {
                        url: url.clone(),
                        reason: "the stream ended before data: [DONE]".into(),
                        source: None,
                    }));
                }
                Ok(Some(Err(err))) => {
                    self.done = true;
                    return Some(Err(match err {
                        eventsource_stream::EventStreamError::Transport(err) => {
                            self.backend.transport_error(err, "stream")
                        }
                        other => Error::MalformedResponse {
                            url: url.clone(),
                            reason: format!("invalid server-sent events: {other}"),
                            body: String::new(),
                        },
                    }));
                }
                Ok(Some(Ok(event))) => event,
            };
            let data = event.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                self.done = true;
                return None;
            }
            let value: Value = match serde_json::from_str(data) {
                Ok(value) => value,
                Err(err) => {
                    self.done = true;
                    return Some(Err(Error::MalformedResponse {
                        url: url.clone(),
                        reason: format!("a stream event is not JSON: {err}"),
                        body: self.backend.redact(&snippet(data.as_bytes())),
                    }));
                }
            };
            if let Some(error) = value.get("error") {
                self.done = true;
                let message = error.get("message").and_then(Value::as_str).unwrap_or("error event in stream");
                let status = error.get("code").and_then(Value::as_u64).and_then(|code| u16::try_from(code).ok());
                return Some(Err(Error::Api {
                    url: url.clone(),
                    status: status.filter(|code| (400..600).contains(code)).unwrap_or(500),
                    message: self.backend.redact(message),
                    body: self.backend.redact(data),
                    retry_after: None,
                }));
            }
            return Some(serde_json::from_value::<ChatCompletionChunk>(value).map_err(|err| {
                self.done = true;
                Error::MalformedResponse {
                    url: url.clone(),
                    reason: format!("a stream event is not a chat.completion.chunk: {err}"),
                    body: self.backend.redact(&snippet(data.as_bytes())),
                }
            }));
        }
    }
}

/// Every chunk (or the error that ends the stream) that `body`, split into `pieces` reads,
/// yields through the same parser a live stream uses. For the fuzzers
/// ([`crate::fuzzing::sse`]) and tests; runs on the caller's Tokio runtime.
pub(crate) async fn parse_sse_body(backend: &RemoteBackend, pieces: Vec<Vec<u8>>) -> Vec<Result<ChatCompletionChunk>> {
    let source = futures::stream::iter(pieces.into_iter().map(Ok::<_, reqwest::Error>));
    let mut state = SseState { events: Box::pin(source.eventsource()), backend: backend.clone(), done: false };
    let mut items = Vec::new();
    while let Some(item) = state.next().await {
        items.push(item);
    }
    items
}

/// A request body as JSON. A failure is an error, never an empty body sent in its place.
fn request_json<T: serde::Serialize>(request: &T) -> Result<Value> {
    serde_json::to_value(request).map_err(|err| Error::Internal(format!("cannot serialise the request: {err}")))
}

/// `Retry-After` (seconds) or OpenAI's `retry-after-ms`.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    if let Some(millis) = header("retry-after-ms").and_then(|value| value.parse::<f64>().ok()) {
        return (millis.is_finite() && millis >= 0.0).then(|| Duration::from_secs_f64(millis / 1000.0));
    }
    header("retry-after")
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The start of a body, for error messages.
fn snippet(bytes: &[u8]) -> String {
    const LIMIT: usize = 2000;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(LIMIT)]).into_owned();
    if bytes.len() > LIMIT {
        format!("{text}…")
    } else {
        text
    }
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Before, a request that failed to serialise went out as `{}`.
    #[test]
    fn a_request_that_cannot_be_serialised_is_an_error() {
        struct Unserialisable;
        impl serde::Serialize for Unserialisable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        assert!(matches!(request_json(&Unserialisable), Err(Error::Internal(message)) if message.contains("no")));
        assert_eq!(request_json(&json!({"a": 1})).ok(), Some(json!({"a": 1})));
    }
}
