//! slmkit's per-call hints: `{"slmkit": {"route": "llm", "task": "WriteCode", "cache": "bypass",
//! "pipeline": "bare"}}`
//! in the request body, or `metadata.slmkit_<name>`. The router, the cache key and the remote
//! backend (which strips them before a request leaves) all read them from here.

use serde_json::Value;

use crate::types::ChatCompletionRequest;

/// The request field that carries slmkit's hints (and the response field that carries its
/// call metadata; see [`crate::metadata::METADATA_FIELD`]).
pub const HINT_FIELD: &str = "slmkit";

/// The prefix of `metadata` keys that carry hints.
pub const HINT_METADATA_PREFIX: &str = "slmkit_";

/// A per-call slmkit hint: `{"slmkit": {name: ...}}` or `metadata.slmkit_<name>`.
pub fn hint<'a>(request: &'a ChatCompletionRequest, name: &str) -> Option<&'a str> {
    let from_extra = request.extra.get(HINT_FIELD).and_then(|hint| hint.get(name)).and_then(Value::as_str);
    from_extra.or_else(|| {
        request
            .metadata
            .as_ref()?
            .iter()
            .find(|(key, _)| key.strip_prefix(HINT_METADATA_PREFIX) == Some(name))
            .and_then(|(_, value)| value.as_str())
    })
}

/// The task tag of a call: `{"slmkit": {"task": ...}}` or `metadata.slmkit_task`.
pub fn task_tag(request: &ChatCompletionRequest) -> Option<&str> {
    hint(request, "task")
}

/// Whether the caller asked to skip the response cache: `{"slmkit": {"cache": "bypass"}}`.
/// A caller re-asking on purpose (MetaGPT re-sends the identical prompt when parsing fails)
/// must not get the same answer back.
pub fn bypasses_cache(request: &ChatCompletionRequest) -> bool {
    hint(request, "cache") == Some("bypass")
}

/// Whether the caller asked for the bare model: `{"slmkit": {"pipeline": "bare"}}` (the other
/// value is `"full"`, the default). A bare call goes to the SLM alone, for one attempt, with no
/// validators and, on the local engine, no grammar: a `response_format` schema or a forced
/// tool call is stated in the prompt instead of enforced while decoding. It exists to measure
/// what the pipeline adds over the model (`slmkit eval --bare`).
///
/// Why a hint rather than an engine or config option: one client (one loaded model) can then
/// answer both ways side by side; the hint is part of the cache key ([`crate::cache`]), so a
/// bare answer never serves a full call; and turning it off for one call weakens no other.
/// The cost is that any caller can opt out of the checks for its own calls; it is the
/// caller's answer that goes unchecked. A remote SLM still enforces `response_format` itself
/// if its server does: only the local engine's grammar can be switched off.
pub fn is_bare(request: &ChatCompletionRequest) -> bool {
    hint(request, "pipeline") == Some("bare")
}
