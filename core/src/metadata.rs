//! What slmkit says about each call, in the response's `slmkit` field: where it was served,
//! by which attempts, why, and whether from the cache. Written in one place
//! ([`CallMetadata::attach`]) and read back typed ([`CallMetadata::of`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ledger::Outcome;
use crate::tier::Tier;

/// The response field (of a completion, or of a stream's first chunk) that carries
/// [`CallMetadata`]; the same name as the request field for hints ([`crate::hints::HINT_FIELD`]).
pub const METADATA_FIELD: &str = "slmkit";

/// Whether the response cache answered a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// Answered from the cache: no backend call.
    Hit,
    /// The cache takes the request, but had no answer: the backend answered (and the answer
    /// was stored, if it passed).
    Miss,
    /// The cache is off, or does not take this request (not deterministic, or bypassed).
    Disabled,
}

impl CacheStatus {
    /// `hit`, `miss` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Disabled => "disabled",
        }
    }
}

/// What happened in one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptSummary {
    pub attempt: u32,
    pub tier: Tier,
    pub model: String,
    /// For a pool: the endpoint (its base URL) the attempt went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `slmkit` field of a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallMetadata {
    pub call_id: String,
    /// The tier whose answer was served; `None` when none was (yet).
    pub tier: Option<Tier>,
    pub model: Option<String>,
    /// Every attempt of this call, in order; empty for a cache hit.
    pub attempts: Vec<AttemptSummary>,
    /// Why the call was routed where it was (and escalated, if it was).
    pub reasons: Vec<String>,
    pub cache: CacheStatus,
    /// Set when this call re-sent an earlier call's request: the caller rejected that answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reask: Option<Reask>,
}

/// A call that re-sent an earlier call's identical request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reask {
    /// The first call of the chain: the one the caller keeps re-sending.
    pub of: String,
    /// 1 for the first re-ask, 2 for the second...
    pub number: u32,
}

impl CallMetadata {
    /// Puts this metadata in `extra` (a completion's or a chunk's unknown fields).
    pub fn attach(&self, extra: &mut Map<String, Value>) {
        // Plain data (strings, numbers, enums): serialising it cannot fail.
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        extra.insert(METADATA_FIELD.to_owned(), value);
    }

    /// The metadata in `extra`, if it has any that parses.
    pub fn of(extra: &Map<String, Value>) -> Option<CallMetadata> {
        extra.get(METADATA_FIELD).and_then(|value| CallMetadata::deserialize(value).ok())
    }
}

/// Marks a replayed chunk as coming from the cache, unless it already carries metadata.
pub(crate) fn mark_cached(extra: &mut Map<String, Value>) {
    extra.entry(METADATA_FIELD).or_insert_with(|| serde_json::json!({"cache": CacheStatus::Hit.as_str()}));
}

/// Removes slmkit's metadata (before an answer is stored in the cache).
pub(crate) fn strip(extra: &mut Map<String, Value>) {
    extra.remove(METADATA_FIELD);
}
