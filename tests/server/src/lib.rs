//! An OpenAI-compatible chat-completions server on loopback, for tests in every language.
//!
//! Each request takes the next [`Behavior`] from a script (pushed in-process or with
//! `POST /_script`); with the script empty it answers with its default behaviour: an echo of
//! the last user message, unless `POST /_default` set another.
//! Behaviours cover the faults a real endpoint shows: error statuses with `Retry-After`, a
//! slow first byte, a stream cut midway, malformed JSON and malformed SSE.

// Test infrastructure, never shipped: a server that cannot bind is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

/// What the server does with one request.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Behavior {
    /// A completion. Without `content` or `tool_calls`, echoes the last user message.
    Reply {
        #[serde(default)]
        content: Option<String>,
        /// OpenAI `tool_calls` objects, returned as given.
        #[serde(default)]
        tool_calls: Option<Value>,
        #[serde(default)]
        prompt_tokens: Option<u32>,
        #[serde(default)]
        completion_tokens: Option<u32>,
        /// Wait this long before sending anything (a slow first byte).
        #[serde(default)]
        delay_ms: u64,
        /// For streams: send this many chunks, then break the connection.
        #[serde(default)]
        cut_after_chunks: Option<usize>,
        /// The finish reason to report (default: `tool_calls` with tool calls, else `stop`).
        #[serde(default)]
        finish_reason: Option<String>,
    },
    /// An HTTP error. In `body`, `{auth}` is replaced by the request's Authorization header,
    /// so tests can check that a key echoed by a server never leaks.
    Status {
        status: u16,
        #[serde(default)]
        body: Option<String>,
        #[serde(default)]
        retry_after: Option<String>,
    },
    /// 200 with a body that is not JSON (non-streaming), or a stream event that is not JSON.
    MalformedJson,
    /// A stream whose bytes are not valid server-sent events (invalid UTF-8).
    MalformedSse,
    /// A completion whose content is the block under the last `## format example` heading of
    /// the last user message (up to the next `## ` heading), as MetaGPT's ActionNode prompts
    /// carry it (`[CONTENT]{...}[/CONTENT]`); an echo when the prompt has no such block.
    FormatExample,
}

impl Behavior {
    /// A reply with this content and exact usage.
    pub fn reply(content: &str, prompt_tokens: u32, completion_tokens: u32) -> Self {
        Behavior::Reply {
            content: Some(content.to_owned()),
            tool_calls: None,
            prompt_tokens: Some(prompt_tokens),
            completion_tokens: Some(completion_tokens),
            delay_ms: 0,
            cut_after_chunks: None,
            finish_reason: None,
        }
    }

    /// A reply with this content and usage counted by the server.
    pub fn reply_text(content: &str) -> Self {
        Behavior::Reply {
            content: Some(content.to_owned()),
            tool_calls: None,
            prompt_tokens: None,
            completion_tokens: None,
            delay_ms: 0,
            cut_after_chunks: None,
            finish_reason: None,
        }
    }

    /// The default reply: an echo of the last user message.
    pub fn echo() -> Self {
        let mut echo = Behavior::reply_text("");
        if let Behavior::Reply { content, .. } = &mut echo {
            *content = None;
        }
        echo
    }

    /// This reply, sent only after `millis` (a slow first byte).
    pub fn delayed(mut self, millis: u64) -> Self {
        if let Behavior::Reply { delay_ms, .. } = &mut self {
            *delay_ms = millis;
        }
        self
    }

    /// This reply's stream, with the connection broken after `chunks` chunks.
    pub fn cut_after(mut self, chunks: usize) -> Self {
        if let Behavior::Reply { cut_after_chunks, .. } = &mut self {
            *cut_after_chunks = Some(chunks);
        }
        self
    }

    /// This reply, reporting `reason` as its finish reason (`length` for a cut-off answer).
    pub fn finishing(mut self, reason: &str) -> Self {
        if let Behavior::Reply { finish_reason, .. } = &mut self {
            *finish_reason = Some(reason.to_owned());
        }
        self
    }

    /// An answer with the prompt's format example (see [`Behavior::FormatExample`]).
    pub fn format_example() -> Self {
        Behavior::FormatExample
    }

    /// An error status with an OpenAI-style error body.
    pub fn status(status: u16) -> Self {
        Behavior::Status { status, body: None, retry_after: None }
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Behavior>>,
    /// What an empty script does; `None` is the echo.
    default: Mutex<Option<Behavior>>,
    received: Mutex<Vec<Received>>,
}

/// A running server. It stops when this handle is dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1, on a free port.
    ///
    /// # Panics
    /// When no loopback port can be bound: a test cannot run without one.
    pub async fn start() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        Self::serve(listener).await
    }

    /// Serves on an already-bound listener.
    ///
    /// # Panics
    /// When the listener has no local address.
    pub async fn serve(listener: tokio::net::TcpListener) -> TestServer {
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared::default());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        TestServer { addr, shared, _shutdown: shutdown }
    }

    /// The API root to configure clients with, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Appends behaviours to the script.
    pub fn push(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        lock(&self.shared.script).extend(behaviors);
    }

    /// What to do when the script is empty (initially [`Behavior::echo`]).
    pub fn set_default(&self, behavior: Behavior) {
        *lock(&self.shared.default) = Some(behavior);
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// How many chat-completions requests arrived.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.received).len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(|| async { Json(json!({"object": "list", "data": [{"id": "test-model", "object": "model", "created": 0, "owned_by": "slmkit-testserver"}]})) }))
        .route("/_script", post(push_script))
        .route("/_default", post(set_default))
        .route("/_requests", get(list_requests))
        .with_state(shared)
}

async fn push_script(State(shared): State<Arc<Shared>>, Json(behaviors): Json<Vec<Behavior>>) -> StatusCode {
    lock(&shared.script).extend(behaviors);
    StatusCode::NO_CONTENT
}

async fn set_default(State(shared): State<Arc<Shared>>, Json(behavior): Json<Behavior>) -> StatusCode {
    *lock(&shared.default) = Some(behavior);
    StatusCode::NO_CONTENT
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let received = lock(&shared.received);
    Json(json!(received.iter().map(|r| json!({"body": r.body, "authorization": r.authorization})).collect::<Vec<_>>()))
}

async fn chat_completions(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers.get("authorization").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error_response(400, "the request body is not JSON", None);
    };
    lock(&shared.received).push(Received { body: request.clone(), authorization: authorization.clone() });
    let scripted = lock(&shared.script).pop_front();
    let mut behavior = scripted.or_else(|| lock(&shared.default).clone()).unwrap_or_else(Behavior::echo);
    if behavior == Behavior::FormatExample {
        behavior = match format_example(&last_user_text(&request)) {
            Some(example) => Behavior::reply_text(&example),
            None => Behavior::echo(),
        };
    }
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    match behavior {
        Behavior::Status { status, body, retry_after } => {
            let body = body.map(|body| body.replace("{auth}", authorization.as_deref().unwrap_or("")));
            let mut response = match body {
                Some(body) => {
                    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body).into_response()
                }
                None => error_response(status, &format!("scripted error {status}"), None),
            };
            if let Some(retry_after) = retry_after.and_then(|value| HeaderValue::from_str(&value).ok()) {
                response.headers_mut().insert("retry-after", retry_after);
            }
            response
        }
        Behavior::MalformedJson if !stream => {
            (StatusCode::OK, "{\"id\": \"chatcmpl-1\", \"choices\": [").into_response()
        }
        Behavior::MalformedJson => sse(vec![Bytes::from_static(b"data: {\"id\": \"chatcmpl-1\", \"choi\n\n")], None, 0),
        Behavior::MalformedSse => sse(vec![Bytes::from_static(b"data: \xff\xfe\xfd broken\n\n")], None, 0),
        Behavior::FormatExample => unreachable!("replaced by a reply above"),
        Behavior::Reply {
            content,
            tool_calls,
            prompt_tokens,
            completion_tokens,
            delay_ms,
            cut_after_chunks,
            finish_reason,
        } => {
            let echo = last_user_text(&request);
            let content = match (&content, &tool_calls) {
                (None, None) => Some(format!("echo: {echo}")),
                _ => content,
            };
            let prompt_tokens = prompt_tokens.unwrap_or_else(|| (request.to_string().len() / 4) as u32);
            let completion_tokens = completion_tokens
                .unwrap_or_else(|| content.as_deref().map_or(1, |text| text.split_whitespace().count() as u32));
            let model = request.get("model").and_then(Value::as_str).unwrap_or("test-model").to_owned();
            let reply = Reply { model, content, tool_calls, prompt_tokens, completion_tokens, finish_reason };
            if stream {
                let include_usage =
                    request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
                sse(reply.events(include_usage), cut_after_chunks, delay_ms)
            } else {
                if delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                Json(reply.completion()).into_response()
            }
        }
    }
}

fn error_response(status: u16, message: &str, code: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": message, "type": "scripted_error", "param": null, "code": code}});
    (status, Json(body)).into_response()
}

fn last_user_text(request: &Value) -> String {
    let messages = request.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    let Some(last) = messages.iter().rev().find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    match last.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

/// The block under the last `## format example` heading of `prompt`, up to the next line that
/// starts a `## ` heading, trimmed; `None` without one.
pub fn format_example(prompt: &str) -> Option<String> {
    const HEADING: &str = "## format example";
    let start = prompt.rfind(HEADING)? + HEADING.len();
    let rest = &prompt[start..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    let block = rest[..end].trim();
    (!block.is_empty()).then(|| block.to_owned())
}

struct Reply {
    model: String,
    content: Option<String>,
    tool_calls: Option<Value>,
    prompt_tokens: u32,
    completion_tokens: u32,
    finish_reason: Option<String>,
}

const CREATED: u64 = 1_700_000_000;

impl Reply {
    fn finish_reason(&self) -> &str {
        match (&self.finish_reason, &self.tool_calls) {
            (Some(reason), _) => reason,
            (None, Some(_)) => "tool_calls",
            (None, None) => "stop",
        }
    }

    fn usage(&self) -> Value {
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": self.prompt_tokens + self.completion_tokens})
    }

    fn completion(&self) -> Value {
        let mut message = json!({"role": "assistant", "content": self.content, "refusal": null});
        if let Some(calls) = &self.tool_calls {
            message["tool_calls"] = calls.clone();
        }
        json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": CREATED, "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason(), "logprobs": null}],
            "usage": self.usage(), "system_fingerprint": "fp_test"
        })
    }

    /// The stream as OpenAI frames it: role, content pieces, tool calls, finish, usage, [DONE].
    fn events(&self, include_usage: bool) -> Vec<Bytes> {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": CREATED, "model": self.model, "system_fingerprint": "fp_test",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]})
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        if let Some(content) = &self.content {
            let mut piece = String::new();
            for word in content.split_inclusive(' ') {
                piece.push_str(word);
                if piece.len() >= 8 {
                    events.push(chunk(json!({"content": std::mem::take(&mut piece)}), Value::Null));
                }
            }
            if !piece.is_empty() {
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
        }
        if let Some(Value::Array(calls)) = &self.tool_calls {
            for (index, call) in calls.iter().enumerate() {
                let mut delta_call = call.clone();
                delta_call["index"] = json!(index);
                events.push(chunk(json!({"tool_calls": [delta_call]}), Value::Null));
            }
        }
        events.push(chunk(json!({}), json!(self.finish_reason())));
        if include_usage {
            events.push(json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": CREATED, "model": self.model, "choices": [], "usage": self.usage()}));
        }
        let mut frames: Vec<Bytes> = events.iter().map(|event| Bytes::from(format!("data: {event}\n\n"))).collect();
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        frames
    }
}

/// An SSE response of `frames`; with `cut_after`, the connection breaks after that many
/// (after a pause, so the frames before the cut reach the client first).
fn sse(frames: Vec<Bytes>, cut_after: Option<usize>, delay_ms: u64) -> Response {
    let limit = cut_after.unwrap_or(frames.len());
    let mut pending: VecDeque<Bytes> = frames.into_iter().take(limit).collect();
    let mut cut = cut_after.is_some();
    let mut first = true;
    let body = futures::stream::unfold((), move |()| {
        let delay = if std::mem::take(&mut first) { delay_ms } else { 0 };
        let next = pending.pop_front();
        let cut_now = next.is_none() && std::mem::take(&mut cut);
        async move {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            match next {
                Some(frame) => Some((Ok::<Bytes, std::io::Error>(frame), ())),
                None if cut_now => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "scripted cut")), ()))
                }
                None => None,
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MetaGPT 0.8.2's ActionNode prompt (SIMPLE_TEMPLATE), abridged.
    const PROMPT: &str = "\n## context\nWrite a PRD for a CLI snake game\n\n-----\n\n## format example\n[CONTENT]\n{\n    \"Language\": \"en_us\",\n    \"Requirements\": [\"a\", \"b\"]\n}\n[/CONTENT]\n\n## nodes: \"<node>: <type>  # <instruction>\"\n- Language: <class 'str'>  # Provide the language\n\n## constraint\nFormat: output wrapped inside [CONTENT][/CONTENT] like format example, nothing else.\n";

    #[test]
    fn format_example_takes_the_block_under_its_heading() {
        let example = format_example(PROMPT).unwrap();
        assert_eq!(
            example,
            "[CONTENT]\n{\n    \"Language\": \"en_us\",\n    \"Requirements\": [\"a\", \"b\"]\n}\n[/CONTENT]"
        );
    }

    #[test]
    fn format_example_without_a_heading_is_none() {
        assert_eq!(format_example("## context\nno example here"), None);
        assert_eq!(format_example("## format example\n\n## nodes\n"), None);
        // The last block wins (the context may quote an earlier prompt); it may end the prompt.
        assert_eq!(
            format_example("## format example\nold\n## format example\n[CONTENT]x[/CONTENT]").unwrap(),
            "[CONTENT]x[/CONTENT]"
        );
    }

    #[test]
    fn the_behaviour_is_scriptable_by_name() {
        let parsed: Vec<Behavior> = serde_json::from_str(r#"[{"kind": "format_example"}]"#).unwrap();
        assert_eq!(parsed, vec![Behavior::format_example()]);
    }

    #[tokio::test]
    async fn the_default_behaviour_answers_once_the_script_is_empty() {
        let server = TestServer::start().await;
        let origin = format!("http://{}", server.addr);
        let client = reqwest::Client::new();
        let status = client
            .post(format!("{origin}/_default"))
            .json(&json!({"kind": "format_example"}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
        server.push([Behavior::reply_text("[CONTENT]{\"broken\": }[/CONTENT]")]);
        let request = json!({"model": "m", "messages": [{"role": "user", "content": PROMPT}]});
        let url = format!("{}/chat/completions", server.base_url());
        let mut answers = Vec::new();
        for _ in 0..3 {
            let answer: Value = client.post(&url).json(&request).send().await.unwrap().json().await.unwrap();
            answers.push(answer["choices"][0]["message"]["content"].as_str().unwrap().to_owned());
        }
        let example = format_example(PROMPT).unwrap();
        assert_eq!(answers, ["[CONTENT]{\"broken\": }[/CONTENT]", example.as_str(), example.as_str()]);
        server.set_default(Behavior::echo());
        let answer: Value = client.post(&url).json(&request).send().await.unwrap().json().await.unwrap();
        assert!(answer["choices"][0]["message"]["content"].as_str().unwrap().starts_with("echo: "));
        assert_eq!(server.request_count(), 4);
    }

    #[tokio::test]
    async fn format_example_is_served_whole_and_streamed_and_echoes_without_one() {
        let server = TestServer::start().await;
        server.push([Behavior::format_example(), Behavior::format_example(), Behavior::format_example()]);
        let url = format!("{}/chat/completions", server.base_url());
        let ask = |prompt: &str, stream: bool| serde_json::json!({"model": "m", "stream": stream, "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": prompt}]});
        let client = reqwest::Client::new();
        let whole: Value = client.post(&url).json(&ask(PROMPT, false)).send().await.unwrap().json().await.unwrap();
        let expected = format_example(PROMPT).unwrap();
        assert_eq!(whole["choices"][0]["message"]["content"], expected.as_str());

        let streamed = client.post(&url).json(&ask(PROMPT, true)).send().await.unwrap().text().await.unwrap();
        let text: String = streamed
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .filter(|data| *data != "[DONE]")
            .filter_map(|data| {
                serde_json::from_str::<Value>(data).unwrap()["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, expected);

        let echo: Value = client.post(&url).json(&ask("plain", false)).send().await.unwrap().json().await.unwrap();
        assert_eq!(echo["choices"][0]["message"]["content"], "echo: plain");
    }
}
