//! # slmkit
//!
//! Send the routine share of an agent's LLM calls to a small language model running
//! in-process, check its answers, and account for every attempt.
//!
//! This crate is the core that the Python and Node bindings wrap. It holds:
//! - [`types`]: OpenAI chat-completions requests, responses and stream chunks;
//! - [`local`]: the local SLM engine on llama.cpp, with grammar-enforced JSON and tool calls;
//! - [`remote`]: any OpenAI-compatible endpoint, streaming over SSE;
//! - [`client`]: the call path: route ([`routing`]), answer from the [`cache`], validate
//!   ([`validate`]), retry, escalate, and record every attempt in the [`ledger`]; what it did
//!   goes back in each response's [`metadata`];
//! - [`config`]: the TOML file that configures all of it;
//! - [`models`]: model references (paths, `hf:`, URLs, catalog names) pulled into a cache;
//! - [`eval`]: checkable agent tasks run through a client and scored (`slmkit eval`).
//!
//! ARCHITECTURE.md at the repository root maps the modules and the call path.
//!
//! ```no_run
//! # async fn demo() -> slmkit::Result<()> {
//! use slmkit::local::{EngineOptions, LocalEngine, LocalModel, ModelOptions};
//! use slmkit::types::{ChatCompletionRequest, ChatMessage};
//!
//! let model = LocalModel::load("model.gguf", &ModelOptions::default())?;
//! let engine = LocalEngine::start(model, EngineOptions::default())?;
//! let mut request = ChatCompletionRequest::new(vec![ChatMessage::user("Classify: 'refund please'")]);
//! request.max_tokens = Some(16);
//! let completion = engine.create(&request).await?;
//! println!("{}", completion.content());
//! # Ok(()) }
//! ```

pub mod cache;
pub mod client;
pub mod config;
pub mod error;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod hints;
pub mod ledger;
pub mod local;
pub mod metadata;
pub mod models;
pub mod pool;
pub mod remote;
pub mod route_eval;
pub mod routing;
pub mod schema;
pub mod shared;
pub mod tier;
pub mod types;
pub mod validate;

pub use cache::CacheConfig;
pub use client::{
    Backend, BackendKind, Client, ClientBuilder, OnOverload, Prepared, PreparedResponse, RetryPolicy, SHUTDOWN_REASON,
};
pub use config::{Config, OpenAiClientOptions};
pub use error::{Error, Result};
pub use ledger::{AttemptRecord, Ledger, Outcome, Pricing, Report, Totals};
pub use local::{EngineOptions, LocalEngine, LocalModel, ModelOptions};
pub use metadata::{CacheStatus, CallMetadata, Reask};
pub use pool::{PoolBackend, PoolConfig, PoolPolicy};
pub use remote::{RemoteBackend, RemoteConfig};
pub use routing::{RouteDecision, Router, RoutingConfig};
pub use tier::Tier;
pub use types::responses::{Response, ResponseEvent, ResponseEventStream, ResponseRequest};
pub use types::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage};
