//! The core's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in slmkit's core.
///
/// Each variant says what was wrong and, where there is one, carries the cause. The bindings
/// map variants onto the exception classes of the `openai` packages (see [`Error::status_code`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or asks for something unsupported (HTTP 400).
    #[error("invalid request: {message}")]
    InvalidRequest {
        message: String,
        /// The offending parameter, e.g. `temperature` or `messages[2]`.
        param: Option<String>,
    },

    /// The JSON schema in `response_format` or in a tool's `parameters` is invalid (HTTP 400).
    #[error("invalid JSON schema in {param}: {reason}")]
    InvalidSchema { param: String, reason: String },

    /// A part of the request is beyond a configured bound, e.g. a schema too large to become a
    /// grammar (HTTP 413). See [`crate::schema::SchemaLimits`].
    #[error("request too large at {param}: {reason}")]
    RequestTooLarge { param: String, reason: String },

    /// The prompt plus the requested output does not fit the model's context window (HTTP 400).
    #[error(
        "prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) is {} tokens, more than the context window of {context_window} tokens",
        prompt_tokens + max_tokens
    )]
    ContextLength { prompt_tokens: u32, max_tokens: u32, context_window: u32 },

    /// A model file could not be loaded: missing, not GGUF, truncated or corrupt.
    #[error("cannot load model {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },

    /// A model reference could not be resolved to a file: a download failed (not found,
    /// access denied, network, sha256 mismatch) or, offline, the model is not in the cache.
    /// See [`crate::models`].
    #[error("cannot fetch model {reference}: {reason}")]
    ModelFetch { reference: String, reason: String },

    /// The engine's queue is full; retry later (HTTP 503).
    #[error("the local engine is overloaded: {queued} requests already queued (capacity {capacity})")]
    Overloaded { queued: usize, capacity: usize },

    /// The model's chat template failed to render the conversation.
    #[error("chat template failed: {0}")]
    Template(String),

    /// llama.cpp failed while decoding or sampling.
    #[error("inference failed: {0}")]
    Inference(String),

    /// The engine's worker thread is gone, e.g. it was shut down.
    #[error("the local engine has stopped")]
    EngineStopped,

    /// A remote endpoint answered with an HTTP error. `body` is the server's answer, with any
    /// API key redacted.
    #[error("{url} answered HTTP {status}: {message}")]
    Api {
        url: String,
        status: u16,
        message: String,
        body: String,
        /// From a `Retry-After` header (429 and 503).
        retry_after: Option<std::time::Duration>,
    },

    /// A remote call took too long. `phase` is `connect`, `request` or `stream idle`.
    #[error("{url}: {phase} timed out after {} ms", after.as_millis())]
    Timeout { url: String, phase: &'static str, after: std::time::Duration },

    /// A remote endpoint could not be reached, or the connection broke.
    #[error("cannot reach {url}: {reason}")]
    Connection {
        url: String,
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A remote endpoint answered 2xx with something that is not an OpenAI response.
    #[error("malformed response from {url}: {reason}")]
    MalformedResponse { url: String, reason: String, body: String },

    /// A stream failed after chunks had already reached the caller, so it could not fall back.
    #[error("the stream from the {tier} tier broke after {chunks_delivered} chunks: {source}")]
    StreamInterrupted {
        tier: String,
        chunks_delivered: usize,
        #[source]
        source: Box<Error>,
    },

    /// Every SLM attempt failed validation and there was no LLM tier to escalate to.
    #[error("no answer passed validation after {} attempts: {}", reasons.len(), reasons.join("; "))]
    ValidationFailed {
        /// One reason per failed attempt, in order.
        reasons: Vec<String>,
    },

    /// A validator itself failed (e.g. a Python or JS callback raised). The call is aborted
    /// rather than the answer silently accepted or rejected.
    #[error("validator {name} raised an error: {source}")]
    Validator {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The configuration is invalid: a bad file, a missing key, an impossible setting.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The fleet's shared store (Redis) could not be used where it had to be: at start-up with
    /// `[shared] required = true`, or when reading the fleet ledger. Calls never fail with it;
    /// they fall back to the local cache.
    #[error("{context}: {source}")]
    SharedStore {
        context: String,
        #[source]
        source: redis::RedisError,
    },

    /// The call was cancelled by the caller.
    #[error("the call was cancelled")]
    Cancelled,

    /// The error of a call that this one waited on: identical concurrent requests share one
    /// backend call, and so its failure.
    #[error("{0}")]
    Shared(std::sync::Arc<Error>),

    /// An I/O error with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A bug in slmkit: a state it should never reach, or data it made and cannot serialise
    /// (HTTP 500). Reported rather than hidden, and worth an issue.
    #[error("internal error (a bug in slmkit): {0}")]
    Internal(String),
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Error::InvalidRequest { message: message.into(), param: param.map(str::to_owned) }
    }

    pub(crate) fn model_load(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::ModelLoad { path: path.into(), reason: reason.into() }
    }

    /// The HTTP status an OpenAI-compatible server would answer this error with.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::InvalidRequest { .. } | Error::InvalidSchema { .. } | Error::ContextLength { .. } => 400,
            Error::RequestTooLarge { .. } => 413,
            Error::Api { status, .. } => *status,
            // A deadline slmkit gave up on (the upstream's, or the call's own): the gateway
            // timed out, not the client's request, so not 408.
            Error::Timeout { .. } => 504,
            Error::Overloaded { .. } | Error::EngineStopped | Error::SharedStore { .. } => 503,
            Error::Connection { .. } | Error::MalformedResponse { .. } => 502,
            Error::StreamInterrupted { source, .. } => source.status_code(),
            Error::Shared(inner) => inner.status_code(),
            Error::ValidationFailed { .. } => 422,
            Error::Cancelled => 499,
            Error::ModelLoad { .. }
            | Error::ModelFetch { .. }
            | Error::Template(_)
            | Error::Inference(_)
            | Error::Io { .. }
            | Error::Validator { .. }
            | Error::Internal(_)
            | Error::Config(_) => 500,
        }
    }

    /// A stable, machine-readable name for the kind of error, used in ledgers and bindings.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidRequest { .. } => "invalid_request",
            Error::InvalidSchema { .. } => "invalid_schema",
            Error::RequestTooLarge { .. } => "request_too_large",
            Error::ContextLength { .. } => "context_length_exceeded",
            Error::ModelLoad { .. } => "model_load",
            Error::ModelFetch { .. } => "model_fetch",
            Error::Overloaded { .. } => "overloaded",
            Error::Template(_) => "template",
            Error::Inference(_) => "inference",
            Error::EngineStopped => "engine_stopped",
            Error::Api { status: 400, .. } => "bad_request",
            Error::Api { status: 401, .. } => "authentication",
            Error::Api { status: 403, .. } => "permission_denied",
            Error::Api { status: 404, .. } => "not_found",
            Error::Api { status: 408, .. } => "timeout",
            Error::Api { status: 409, .. } => "conflict",
            Error::Api { status: 422, .. } => "unprocessable_entity",
            Error::Api { status: 429, .. } => "rate_limit",
            Error::Api { status, .. } if *status >= 500 => "internal_server",
            Error::Api { .. } => "api",
            Error::Timeout { .. } => "timeout",
            Error::Connection { .. } => "connection",
            Error::MalformedResponse { .. } => "malformed_response",
            Error::StreamInterrupted { .. } => "stream_interrupted",
            Error::ValidationFailed { .. } => "validation_failed",
            Error::Validator { .. } => "validator_error",
            Error::Config(_) => "config",
            Error::SharedStore { .. } => "shared_store",
            Error::Cancelled => "cancelled",
            Error::Shared(inner) => inner.kind(),
            Error::Io { .. } => "io",
            Error::Internal(_) => "internal",
        }
    }

    /// The name of the exception class the `openai` packages (Python and Node) would raise for
    /// this error, or slmkit's own subclass of it (`ContextLengthError` of `BadRequestError`,
    /// `OverloadedError` of `InternalServerError`, `ValidationError` of
    /// `UnprocessableEntityError`, `ModelLoadError`, `ModelFetchError` (of `ModelLoadError`), `ValidatorError`, `ConfigError`). The one
    /// table both bindings and `slmkit serve` read, so they cannot disagree.
    pub fn openai_class(&self) -> &'static str {
        match self {
            Error::InvalidRequest { .. } | Error::InvalidSchema { .. } => "BadRequestError",
            Error::RequestTooLarge { .. } => "APIStatusError",
            Error::ContextLength { .. } => "ContextLengthError",
            Error::ModelLoad { .. } => "ModelLoadError",
            Error::ModelFetch { .. } => "ModelFetchError",
            Error::Overloaded { .. } => "OverloadedError",
            Error::Template(_) | Error::Inference(_) | Error::EngineStopped | Error::Io { .. } | Error::Internal(_) => {
                "InternalServerError"
            }
            Error::Api { status: 400, .. } => "BadRequestError",
            Error::Api { status: 401, .. } => "AuthenticationError",
            Error::Api { status: 403, .. } => "PermissionDeniedError",
            Error::Api { status: 404, .. } => "NotFoundError",
            Error::Api { status: 408, .. } | Error::Timeout { .. } => "APITimeoutError",
            Error::Api { status: 409, .. } => "ConflictError",
            Error::Api { status: 422, .. } => "UnprocessableEntityError",
            Error::Api { status: 429, .. } => "RateLimitError",
            Error::Api { status, .. } if *status >= 500 => "InternalServerError",
            Error::Api { .. } => "APIStatusError",
            Error::Connection { .. } | Error::SharedStore { .. } => "APIConnectionError",
            Error::MalformedResponse { .. } => "APIResponseValidationError",
            // The class says why the stream broke.
            Error::StreamInterrupted { source, .. } => source.openai_class(),
            Error::ValidationFailed { .. } => "ValidationError",
            Error::Validator { .. } => "ValidatorError",
            Error::Config(_) => "ConfigError",
            Error::Cancelled => "APIUserAbortError",
            Error::Shared(inner) => inner.openai_class(),
        }
    }

    /// Everything a binding or server needs to rebuild this error for its own users, as
    /// JSON: always `kind`, `openai_class` (see [`Error::openai_class`]), `status`, `message`
    /// and `causes` (the source chain, outermost first); then the variant's own fields, e.g. `param` and `reason`, `prompt_tokens` /
    /// `max_tokens` / `context_window`, `path`, `reference`, `queued` / `capacity`, `url`, `body` (the
    /// server's answer as text) with `error` (its OpenAI error object, when it has one),
    /// `phase` / `after_s`, `tier` / `chunks_delivered` / `source_kind`, `reasons`,
    /// `validator`, and `retry_after_s`.
    pub fn details(&self) -> serde_json::Value {
        use serde_json::{json, Value};
        let mut details = json!({
            "kind": self.kind(),
            "openai_class": self.openai_class(),
            "status": self.status_code(),
            "message": self.to_string(),
        });
        let fields = match self {
            Error::Shared(inner) => {
                let mut inner = inner.details();
                inner["message"] = json!(self.to_string());
                return inner;
            }
            Error::InvalidRequest { message, param } => json!({"param": param, "reason": message}),
            Error::InvalidSchema { param, reason } | Error::RequestTooLarge { param, reason } => {
                json!({"param": param, "reason": reason})
            }
            Error::ContextLength { prompt_tokens, max_tokens, context_window } => json!({
                "prompt_tokens": prompt_tokens, "max_tokens": max_tokens, "context_window": context_window,
            }),
            Error::ModelLoad { path, reason } => json!({"path": path.display().to_string(), "reason": reason}),
            Error::ModelFetch { reference, reason } => json!({"reference": reference, "reason": reason}),
            Error::Overloaded { queued, capacity } => json!({"queued": queued, "capacity": capacity}),
            Error::Api { url, message, body, .. } => {
                let parsed = serde_json::from_str::<Value>(body).ok();
                let error = parsed.as_ref().and_then(|value| value.get("error")).cloned();
                json!({"url": url, "reason": message, "body": body, "error": error})
            }
            Error::Timeout { url, phase, after } => json!({"url": url, "phase": phase, "after_s": after.as_secs_f64()}),
            Error::Connection { url, reason, .. } => json!({"url": url, "reason": reason}),
            Error::MalformedResponse { url, reason, body } => json!({"url": url, "reason": reason, "body": body}),
            Error::StreamInterrupted { tier, chunks_delivered, source } => json!({
                "tier": tier, "chunks_delivered": chunks_delivered, "source_kind": source.kind(),
            }),
            Error::ValidationFailed { reasons } => json!({"reasons": reasons}),
            Error::Validator { name, .. } => json!({"validator": name}),
            Error::Io { context, .. } | Error::SharedStore { context, .. } => json!({"reason": context}),
            Error::Template(reason) | Error::Inference(reason) | Error::Config(reason) | Error::Internal(reason) => {
                json!({"reason": reason})
            }
            Error::EngineStopped | Error::Cancelled => json!({}),
        };
        if let (Some(details), Value::Object(fields)) = (details.as_object_mut(), fields) {
            details.extend(fields.into_iter().filter(|(_, value)| !value.is_null()));
        }
        if let Some(wait) = self.retry_after() {
            details["retry_after_s"] = json!(wait.as_secs_f64());
        }
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        details["causes"] = json!(causes);
        details
    }

    /// Whether trying the same call again may succeed: rate limits, server errors, timeouts
    /// and broken connections. Client errors (400, 401, 403, 404, 409, 422) are final.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Api { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            Error::Timeout { .. } | Error::Connection { .. } | Error::Overloaded { .. } => true,
            Error::StreamInterrupted { source, .. } => source.is_retriable(),
            Error::Shared(inner) => inner.is_retriable(),
            _ => false,
        }
    }

    /// How long the server asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            Error::Shared(inner) => inner.retry_after(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_carry_what_bindings_need() {
        let api = Error::Api {
            url: "u".into(),
            status: 429,
            message: "slow down".into(),
            body: r#"{"error": {"message": "slow down"}}"#.into(),
            retry_after: Some(std::time::Duration::from_secs(2)),
        };
        let details = api.details();
        assert_eq!(details["kind"], "rate_limit");
        assert_eq!(details["status"], 429);
        assert_eq!(details["error"]["message"], "slow down");
        assert_eq!(details["body"], r#"{"error": {"message": "slow down"}}"#);
        assert_eq!(details["retry_after_s"], 2.0);
        let failed = Error::ValidationFailed { reasons: vec!["a".into(), "b".into()] };
        assert_eq!(failed.details()["reasons"], serde_json::json!(["a", "b"]));
        let shared = Error::Shared(std::sync::Arc::new(Error::ContextLength {
            prompt_tokens: 9,
            max_tokens: 2,
            context_window: 10,
        }));
        assert_eq!(shared.details()["context_window"], 10);
        assert_eq!(shared.details()["kind"], "context_length_exceeded");
        let validator = Error::Validator { name: "v".into(), source: Box::new(Error::Config("inner".into())) };
        assert_eq!(validator.details()["causes"][0], "invalid configuration: inner");
    }
}
