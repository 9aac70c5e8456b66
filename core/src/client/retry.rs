//! How hard a call tries: the retry policy, and how an SLM retry differs from the attempt
//! before it.

use std::time::Duration;

use super::{Backend, TierConfig};
use crate::types::{ChatCompletionRequest, ResponseFormat};

/// How hard a call tries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// SLM attempts per call before escalating, the first included. Default 3.
    pub slm_attempts: u32,
    /// LLM attempts per call, the first included. Default 3.
    pub llm_attempts: u32,
    /// Attempts per call across both tiers: the one budget. Default 5.
    pub max_attempts: u32,
    /// First backoff before an LLM retry; doubled each time, with jitter. Default 250 ms.
    pub initial_backoff: Duration,
    /// Default 8 s.
    pub max_backoff: Duration,
    /// A longer `Retry-After` than this ends the call instead of waiting. Default 60 s.
    pub max_retry_after: Duration,
    /// SLM retries of a greedy (temperature 0) request, and re-asks of an answer the LLM
    /// gave, sample at this temperature instead, since a new seed alone would reproduce the
    /// same answer. Default 0.7.
    pub retry_temperature: f64,
    /// Nucleus sampling for SLM retries that set no `top_p` of their own. Default 0.9.
    pub retry_top_p: Option<f64>,
    /// llama.cpp's `min_p` for local SLM retries: tokens below this share of the likeliest
    /// token's probability are never sampled, which keeps a small model's retry from drifting
    /// into junk at a raised temperature. Default 0.05.
    pub retry_min_p: Option<f64>,
    /// How long after an answer an identical deterministic request from the same caller
    /// counts as a re-ask: the caller rejected the answer, and the re-ask continues the call's
    /// attempt budget. Default 120 s; zero turns detection off. See `client/reask.rs`.
    pub reask_window: Duration,
    /// What a call does when the local SLM engine's queue is full. Default
    /// [`OnOverload::Escalate`].
    pub on_overload: OnOverload,
}

/// What a call does when the local SLM engine's queue is full (`[slm] on_overload`). The
/// attempt is recorded with outcome `overloaded` whichever is chosen, except a `wait` that
/// got its place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOverload {
    /// Go on to the LLM tier, as after any SLM error (and fail without one). The default:
    /// an overloaded SLM costs LLM money but no caller waits.
    #[default]
    Escalate,
    /// Wait for a queue place, as long as the call's timeout allows (with none, until one
    /// opens).
    Wait,
    /// Fail the call with [`Error::Overloaded`](crate::Error::Overloaded): HTTP 503,
    /// `server_overloaded`, through `slmkit serve`.
    Reject,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            slm_attempts: 3,
            llm_attempts: 3,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            retry_temperature: 0.7,
            retry_top_p: Some(0.9),
            retry_min_p: Some(0.05),
            reask_window: super::reask::DEFAULT_REASK_WINDOW,
            on_overload: OnOverload::default(),
        }
    }
}

impl RetryPolicy {
    /// The wait before LLM retry number `retry` (1-based): the server's `Retry-After` if it
    /// gave one, else exponential backoff with "equal jitter" (half fixed, half random).
    pub(super) fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait;
        }
        let exponential = self.initial_backoff.saturating_mul(1 << retry.saturating_sub(1).min(16));
        let capped = exponential.min(self.max_backoff);
        let half = capped / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// Whether the answer must be JSON or tool calls, which a cut-off answer cannot be.
pub(super) fn asks_for_structure(request: &ChatCompletionRequest) -> bool {
    matches!(request.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }))
        || !request.active_tools().is_empty()
}

/// A bigger output budget for the retry of an answer cut off at `current` tokens: four times
/// as many (doubling often cuts a pretty-printed JSON answer off again), within what the
/// local model's window leaves after the prompt. `None` when it cannot grow (no budget was
/// set, so the window itself cut it off, or the window is full).
pub(super) fn larger_output_budget(current: Option<u32>, prompt_tokens: u32, slm: &TierConfig) -> Option<u32> {
    let current = current?;
    let grown = current.saturating_mul(4);
    let larger = match &slm.backend {
        Backend::Local(engine) => grown.min(engine.context_window().saturating_sub(prompt_tokens)),
        Backend::Remote(_) | Backend::Pool(_) => grown,
    };
    (larger > current).then_some(larger)
}
