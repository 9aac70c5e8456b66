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

    /// The prompt plus the requested output does not fit the model's context window (HTTP 400).
    #[error(
        "prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) is {} tokens, more than the context window of {context_window} tokens",
        prompt_tokens + max_tokens
    )]
    ContextLength { prompt_tokens: u32, max_tokens: u32, context_window: u32 },

    /// A model file could not be loaded: missing, not GGUF, truncated or corrupt.
    #[error("cannot load model {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },

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

    /// An I/O error with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
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
            Error::Overloaded { .. } | Error::EngineStopped => 503,
            Error::ModelLoad { .. } | Error::Template(_) | Error::Inference(_) | Error::Io { .. } => 500,
        }
    }

    /// A stable, machine-readable name for the kind of error, used in ledgers and bindings.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidRequest { .. } => "invalid_request",
            Error::InvalidSchema { .. } => "invalid_schema",
            Error::ContextLength { .. } => "context_length_exceeded",
            Error::ModelLoad { .. } => "model_load",
            Error::Overloaded { .. } => "overloaded",
            Error::Template(_) => "template",
            Error::Inference(_) => "inference",
            Error::EngineStopped => "engine_stopped",
            Error::Io { .. } => "io",
        }
    }
}
