//! slmkit's per-call hints: `{"slmkit": {"route": "llm", "task": "WriteCode", "cache": "bypass",
//! "pipeline": "bare"}}`
//! in the request body, or `metadata.slmkit_<name>`. The router, the cache key and the remote
//! backend (which strips them before a request leaves) all read them from here.

use serde_json::Value;

use crate::error::{Error, Result};
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

/// The hints slmkit reads, and the values each may take (`None`: any string).
const KNOWN_HINTS: [(&str, Option<&[&str]>); 4] = [
    ("route", Some(&["slm", "llm", "auto"])),
    ("task", None),
    ("cache", Some(&["bypass", "use"])),
    ("pipeline", Some(&["full", "bare"])),
];

/// Checks every hint a request carries, in the body and in `metadata`, before anything reads
/// one: `slmkit` must be an object of known hints with string values from their sets. A hint
/// that cannot be read would otherwise be ignored, and, through `slmkit serve`, a header hint
/// dropped with it.
///
/// # Errors
/// [`Error::InvalidRequest`] naming the hint.
pub fn check(request: &ChatCompletionRequest) -> Result<()> {
    if let Some(hints) = request.extra.get(HINT_FIELD) {
        let Some(hints) = hints.as_object() else {
            return Err(Error::invalid_request(
                format!("{HINT_FIELD} must be an object of hints, e.g. {{\"route\": \"llm\"}}, got {hints}"),
                Some(HINT_FIELD),
            ));
        };
        for (name, value) in hints {
            check_one(name, value, &format!("{HINT_FIELD}.{name}"))?;
        }
    }
    for (key, value) in request.metadata.iter().flatten() {
        if let Some(name) = key.strip_prefix(HINT_METADATA_PREFIX) {
            check_one(name, value, &format!("metadata.{key}"))?;
        }
    }
    Ok(())
}

fn check_one(name: &str, value: &Value, param: &str) -> Result<()> {
    let Some((_, allowed)) = KNOWN_HINTS.iter().find(|(known, _)| *known == name) else {
        let known: Vec<&str> = KNOWN_HINTS.iter().map(|(known, _)| *known).collect();
        return Err(Error::invalid_request(
            format!("unknown slmkit hint {name:?}; the hints are {}", known.join(", ")),
            Some(param),
        ));
    };
    let Some(text) = value.as_str() else {
        return Err(Error::invalid_request(format!("the {name} hint must be a string, got {value}"), Some(param)));
    };
    match allowed {
        Some(allowed) if !allowed.contains(&text) => Err(Error::invalid_request(
            format!("the {name} hint {text:?} is not one of {}", allowed.join(", ")),
            Some(param),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;

    fn with(body: Value) -> ChatCompletionRequest {
        let mut base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in body.as_object().unwrap() {
            base[key] = value.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn param_of(body: Value) -> Option<String> {
        match check(&with(body)) {
            Ok(()) => None,
            Err(Error::InvalidRequest { param, .. }) => param,
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn hints_are_checked_in_the_body_and_in_metadata() {
        assert!(check(&with(json!({"slmkit": {"route": "llm", "task": "WritePRD", "cache": "bypass"}}))).is_ok());
        assert!(check(&with(json!({"metadata": {"slmkit_route": "slm", "team": 5}}))).is_ok());
        assert_eq!(param_of(json!({"slmkit": "str"})).as_deref(), Some("slmkit"));
        assert_eq!(param_of(json!({"slmkit": {"route": 12}})).as_deref(), Some("slmkit.route"));
        assert_eq!(param_of(json!({"slmkit": {"route": "banana"}})).as_deref(), Some("slmkit.route"));
        assert_eq!(param_of(json!({"slmkit": {"rout": "llm"}})).as_deref(), Some("slmkit.rout"));
        assert_eq!(param_of(json!({"metadata": {"slmkit_route": "fast"}})).as_deref(), Some("metadata.slmkit_route"));
    }
}
