//! The in-process SLM tier: GGUF models run by llama.cpp through `llama-cpp-2`.
//!
//! [`LocalModel`] loads a file once per process and shares it; [`LocalEngine`] runs requests
//! against it on a worker thread and speaks OpenAI's chat-completions types.

mod chat;
mod engine;
pub(crate) mod gguf;
pub(crate) mod grammar;
mod model;
pub(crate) mod output;
mod prefix_store;
mod sampling;
mod template;

/// Re-exported from [`crate::types`], where it lives now, so `slmkit::local::ChunkStream` keeps working.
pub use crate::types::ChunkStream;
pub use engine::{EngineOptions, LocalEngine};
pub use grammar::check_schema;
pub use model::{LocalModel, ModelOptions, ToolSupport};
#[doc(hidden)]
pub use sampling::{take_sampling_profile, Penalties, SamplingProfile};
