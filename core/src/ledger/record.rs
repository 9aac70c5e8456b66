//! One record per attempt: what it was, how it ended, what it cost.

use serde::{Deserialize, Serialize};

use crate::tier::Tier;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An answer, accepted.
    Ok,
    /// An answer, rejected by a validator (the reason is in the record).
    ValidationFailed,
    /// The backend failed (the kind is in the record).
    Error,
    Timeout,
    /// The local engine's queue was full, so the attempt never ran (see `[slm] on_overload`).
    Overloaded,
    /// The caller went away mid-attempt.
    Cancelled,
    /// Served from the response cache: no backend call.
    CacheHit,
    /// Not an attempt but a verdict on one: the caller re-sent the identical request soon
    /// after this attempt's answer reached it (a framework's hidden retry after its own parser
    /// failed), so the answer it served was rejected. Same `call_id` and `attempt` as the
    /// served record it overrules.
    RejectedByCaller,
    /// Not an attempt but a verdict on one: explicit feedback on the served answer
    /// (`Client::feedback`, or `slmkit eval`'s check). The verdict is in `feedback`; same
    /// `call_id` and `attempt` as the served record it judges.
    Feedback,
}

impl Outcome {
    /// Whether a backend was asked (cache hits and caller verdicts are not attempts).
    pub fn is_attempt(self) -> bool {
        !matches!(self, Outcome::CacheHit | Outcome::RejectedByCaller | Outcome::Feedback)
    }
}

/// One attempt of one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub call_id: String,
    /// 1-based, across both tiers.
    pub attempt: u32,
    pub tier: Tier,
    /// `local`, `remote` or `pool`.
    pub backend: String,
    pub model: String,
    /// For a pool: the endpoint (its base URL) the attempt went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub outcome: Outcome,
    /// The validator's reason, or the error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For errors: a stable kind such as `rate_limit` or `internal_server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// True when the backend reported no usage and the counts are estimated from text length.
    #[serde(default)]
    pub tokens_estimated: bool,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    pub cost_usd: f64,
    /// Joules, where the tier's pricing can say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    /// Whether this attempt's answer went back to the caller.
    pub served: bool,
    /// On the served attempt: what the call would have cost sent to the LLM and answered
    /// first try (the same tokens at LLM prices). On a `rejected_by_caller` record: the served
    /// attempt's figure, withdrawn (the re-ask that replaces the answer carries its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterfactual_llm_cost_usd: Option<f64>,
    /// On a cache hit: what the cached answer cost when it was made (all its attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_cost_usd: Option<f64>,
    /// The call's task tag (e.g. MetaGPT's action name), when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// On a re-ask's records: the first call of the chain the caller keeps re-sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reask_of: Option<String>,
    /// The router's task key for the call (see `routing::task_key`), on its attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_key: Option<String>,
    /// On a `feedback` record: the verdict and who gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Verdict>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// Explicit feedback on a served answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub correct: bool,
    pub source: FeedbackSource,
}

/// Who judged an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackSource {
    /// The caller (`Client::feedback`, `POST /v1/slmkit/feedback`).
    Caller,
    /// `slmkit eval`'s check of the answer.
    Eval,
}

impl AttemptRecord {
    /// A record of attempt `attempt` of `call_id`, stamped now, with nothing measured yet:
    /// no tokens, no cost, not served, outcome `cancelled` until the attempt says otherwise.
    pub fn new(call_id: &str, attempt: u32, tier: Tier, backend: &str, model: &str, task: Option<&str>) -> Self {
        AttemptRecord {
            call_id: call_id.to_owned(),
            attempt,
            tier,
            backend: backend.to_owned(),
            model: model.to_owned(),
            endpoint: None,
            outcome: Outcome::Cancelled,
            reason: None,
            error_kind: None,
            status: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            tokens_estimated: false,
            latency_ms: 0.0,
            ttft_ms: None,
            cost_usd: 0.0,
            energy_j: None,
            served: false,
            counterfactual_llm_cost_usd: None,
            saved_cost_usd: None,
            task: task.map(str::to_owned),
            reask_of: None,
            task_key: None,
            feedback: None,
            timestamp_ms: now_ms(),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
