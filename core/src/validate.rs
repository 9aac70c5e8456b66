//! Validators: the checks an SLM answer must pass before it is returned.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::error::Result;
use crate::types::{ChatCompletion, ChatCompletionRequest, ResponseFormat, Role};

/// `Ok(())` accepts the answer; `Err(reason)` rejects it, and the reason goes to the ledger.
pub type Verdict = std::result::Result<(), String>;

/// A check on an answer. Returning `Err` from the outer [`Result`] means the validator itself
/// broke (a callback raised); the call is then aborted with that error.
pub trait Validator: Send + Sync {
    /// A short name for the ledger and errors, e.g. `json_schema`.
    fn name(&self) -> &str;

    /// Whether this validator has anything to say about `request`. Streams are buffered for
    /// validation only when some validator applies.
    fn applies_to(&self, request: &ChatCompletionRequest) -> bool;

    /// Whether the output grammar a local engine decodes `request` under makes this check
    /// pass on every complete answer. When it does for every validator that applies, a local
    /// SLM's stream flows to the caller live instead of being buffered for validation. False
    /// unless the validator knows better; only the JSON and schema checks do.
    fn enforced_by_grammar(&self, request: &ChatCompletionRequest) -> bool {
        let _ = request;
        false
    }

    /// Judges `answer`, an answer to `request`.
    fn check<'a>(
        &'a self,
        request: &'a ChatCompletionRequest,
        answer: &'a ChatCompletion,
    ) -> BoxFuture<'a, Result<Verdict>>;
}

/// Shorthand for an immediately-ready verdict.
fn ready<'a>(verdict: Verdict) -> BoxFuture<'a, Result<Verdict>> {
    Box::pin(std::future::ready(Ok(verdict)))
}

/// The answer has text or tool calls.
#[derive(Debug, Default, Clone)]
pub struct NonEmpty;

impl Validator for NonEmpty {
    fn name(&self) -> &str {
        "non_empty"
    }

    fn applies_to(&self, _: &ChatCompletionRequest) -> bool {
        true
    }

    fn check<'a>(&'a self, _: &'a ChatCompletionRequest, answer: &'a ChatCompletion) -> BoxFuture<'a, Result<Verdict>> {
        let has_calls = answer.message().and_then(|message| message.tool_calls.as_ref()).is_some_and(|c| !c.is_empty());
        ready(if has_calls || !answer.content().trim().is_empty() { Ok(()) } else { Err("the answer is empty".into()) })
    }
}

/// With `response_format` json_object or json_schema: the content parses as JSON (an object
/// for json_object).
#[derive(Debug, Default, Clone)]
pub struct JsonParses;

impl Validator for JsonParses {
    fn name(&self) -> &str {
        "json"
    }

    fn applies_to(&self, request: &ChatCompletionRequest) -> bool {
        matches!(request.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }))
    }

    /// Both formats decode under a JSON grammar (an object's for json_object).
    fn enforced_by_grammar(&self, request: &ChatCompletionRequest) -> bool {
        decodes_under_format_grammar(request)
    }

    fn check<'a>(
        &'a self,
        request: &'a ChatCompletionRequest,
        answer: &'a ChatCompletion,
    ) -> BoxFuture<'a, Result<Verdict>> {
        let verdict = match serde_json::from_str::<Value>(answer.content()) {
            Err(err) => Err(format!("the content is not JSON: {err}")),
            Ok(value) if matches!(request.response_format, Some(ResponseFormat::JsonObject)) && !value.is_object() => {
                Err("json_object was requested but the content is not an object".into())
            }
            Ok(_) => Ok(()),
        };
        ready(verdict)
    }
}

/// With `response_format` json_schema: the content matches the schema.
#[derive(Debug, Default, Clone)]
pub struct JsonSchemaMatches;

impl Validator for JsonSchemaMatches {
    fn name(&self) -> &str {
        "json_schema"
    }

    fn applies_to(&self, request: &ChatCompletionRequest) -> bool {
        requested_schema(request).is_some()
    }

    /// Only for schemas whose every keyword llama.cpp's converter turns into grammar rules.
    fn enforced_by_grammar(&self, request: &ChatCompletionRequest) -> bool {
        decodes_under_format_grammar(request) && requested_schema(request).is_some_and(grammar_enforces)
    }

    fn check<'a>(
        &'a self,
        request: &'a ChatCompletionRequest,
        answer: &'a ChatCompletion,
    ) -> BoxFuture<'a, Result<Verdict>> {
        let Some(schema) = requested_schema(request) else { return ready(Ok(())) };
        let verdict = match serde_json::from_str::<Value>(answer.content()) {
            Err(err) => Err(format!("the content is not JSON: {err}")),
            Ok(value) => schema_verdict(schema, &value, "the content"),
        };
        ready(verdict)
    }
}

/// Whether a local engine decodes `request` under its `response_format`'s grammar alone, and
/// nothing else ends the output early: tools in play take over the grammar, and a stop string
/// could cut the JSON short while the answer still reads as finished.
fn decodes_under_format_grammar(request: &ChatCompletionRequest) -> bool {
    matches!(request.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }))
        && request.active_tools().is_empty()
        && request.stop_sequences().is_empty()
}

/// Whether every keyword of `schema` is one llama.cpp's schema-to-grammar converter enforces
/// exactly, so any complete output of its grammar validates. Conservative: a keyword it ignores
/// or enforces only in part (`pattern`, `format`, `oneOf`'s "exactly one", number ranges,
/// `$ref`, `allOf`, `uniqueItems`, ...) makes it false.
fn grammar_enforces(schema: &Value) -> bool {
    const TYPES: [&str; 7] = ["object", "array", "string", "integer", "number", "boolean", "null"];
    let Value::Object(keywords) = schema else { return schema == &Value::Bool(true) };
    let integer = keywords.get("type").and_then(Value::as_str) == Some("integer");
    keywords.iter().all(|(keyword, value)| match keyword.as_str() {
        "title" | "description" | "$schema" | "$comment" | "examples" | "default" | "required" | "enum" | "const"
        | "minLength" | "maxLength" | "minItems" | "maxItems" => true,
        "type" => value.as_str().is_some_and(|name| TYPES.contains(&name)),
        "properties" => value.as_object().is_some_and(|properties| properties.values().all(grammar_enforces)),
        "additionalProperties" => value.is_boolean() || grammar_enforces(value),
        "items" => grammar_enforces(value),
        "anyOf" => value.as_array().is_some_and(|alternatives| alternatives.iter().all(grammar_enforces)),
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => integer,
        _ => false,
    })
}

fn requested_schema(request: &ChatCompletionRequest) -> Option<&Value> {
    match &request.response_format {
        Some(ResponseFormat::JsonSchema { json_schema }) => json_schema.schema.as_ref(),
        _ => None,
    }
}

fn schema_verdict(schema: &Value, value: &Value, what: &str) -> Verdict {
    let validator = jsonschema::validator_for(schema).map_err(|err| format!("the schema is invalid: {err}"))?;
    let errors: Vec<String> = validator.iter_errors(value).take(3).map(|err| err.to_string()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{what} does not match the schema: {}", errors.join("; ")))
    }
}

/// With `tools`: every tool call names a known tool and its arguments match that tool's
/// `parameters` schema. A forced `tool_choice` also requires at least one call.
#[derive(Debug, Default, Clone)]
pub struct ToolArgumentsMatch;

impl Validator for ToolArgumentsMatch {
    fn name(&self) -> &str {
        "tool_arguments"
    }

    fn applies_to(&self, request: &ChatCompletionRequest) -> bool {
        !request.active_tools().is_empty()
    }

    fn check<'a>(
        &'a self,
        request: &'a ChatCompletionRequest,
        answer: &'a ChatCompletion,
    ) -> BoxFuture<'a, Result<Verdict>> {
        use crate::types::{ToolChoice, ToolChoiceMode};
        let calls = answer.message().and_then(|message| message.tool_calls.clone()).unwrap_or_default();
        let forced =
            matches!(request.tool_choice, Some(ToolChoice::Named(_) | ToolChoice::Mode(ToolChoiceMode::Required)));
        if forced && calls.is_empty() {
            return ready(Err("a tool call was required but the answer has none".into()));
        }
        for call in &calls {
            let Some(tool) = request.active_tools().iter().find(|tool| tool.function.name == call.function.name) else {
                return ready(Err(format!("the answer calls unknown tool {:?}", call.function.name)));
            };
            let arguments = match serde_json::from_str::<Value>(&call.function.arguments) {
                Ok(arguments) => arguments,
                Err(err) => return ready(Err(format!("arguments of {} are not JSON: {err}", call.function.name))),
            };
            if let Some(schema) = &tool.function.parameters {
                if let Err(reason) = schema_verdict(schema, &arguments, &format!("arguments of {}", call.function.name))
                {
                    return ready(Err(reason));
                }
            }
        }
        ready(Ok(()))
    }
}

/// The text content matches a regular expression, optionally only for requests whose
/// instructions match another (e.g. answers must open with `[CONTENT]` when the prompt asks
/// for that format).
#[derive(Debug, Clone)]
pub struct RegexMatches {
    name: String,
    pattern: regex::Regex,
    when: Option<regex::Regex>,
}

impl RegexMatches {
    /// # Errors
    /// [`crate::Error::Config`] for a pattern that does not compile.
    pub fn new(pattern: &str) -> Result<Self> {
        let compiled = regex::Regex::new(pattern)
            .map_err(|err| crate::Error::Config(format!("validator regex {pattern:?} does not compile: {err}")))?;
        Ok(RegexMatches { name: format!("regex({pattern})"), pattern: compiled, when: None })
    }

    /// Applies the check only to requests whose system or user messages match `when`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a pattern that does not compile.
    pub fn when(mut self, when: &str) -> Result<Self> {
        self.when =
            Some(regex::Regex::new(when).map_err(|err| {
                crate::Error::Config(format!("validator condition {when:?} does not compile: {err}"))
            })?);
        Ok(self)
    }
}

impl Validator for RegexMatches {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies_to(&self, request: &ChatCompletionRequest) -> bool {
        use crate::types::Role;
        match &self.when {
            None => true,
            Some(when) => request
                .messages
                .iter()
                .filter(|message| matches!(message.role, Role::System | Role::Developer | Role::User))
                .any(|message| when.is_match(&message.text())),
        }
    }

    fn check<'a>(&'a self, _: &'a ChatCompletionRequest, answer: &'a ChatCompletion) -> BoxFuture<'a, Result<Verdict>> {
        ready(if self.pattern.is_match(answer.content()) {
            Ok(())
        } else {
            Err(format!("the content does not match /{}/", self.pattern.as_str()))
        })
    }
}

/// The function type behind [`Callback`]: the bindings wrap Python and JS functions in it.
pub type CallbackFn =
    dyn for<'a> Fn(&'a ChatCompletionRequest, &'a ChatCompletion) -> BoxFuture<'a, Result<Verdict>> + Send + Sync;

/// A user function decides.
#[derive(Clone)]
pub struct Callback {
    name: String,
    function: Arc<CallbackFn>,
}

impl Callback {
    /// Wraps an async check.
    pub fn new(name: impl Into<String>, function: Arc<CallbackFn>) -> Self {
        Callback { name: name.into(), function }
    }

    /// Wraps a synchronous check that returns `Ok(())` to accept or `Err(reason)` to reject.
    pub fn sync<F>(name: impl Into<String>, check: F) -> Self
    where
        F: Fn(&ChatCompletionRequest, &ChatCompletion) -> Verdict + Send + Sync + 'static,
    {
        let check = Arc::new(check);
        Callback::new(
            name,
            Arc::new(move |request, answer| {
                let verdict = check(request, answer);
                Box::pin(std::future::ready(Ok(verdict)))
            }),
        )
    }
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Validator for Callback {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies_to(&self, _: &ChatCompletionRequest) -> bool {
        true
    }

    fn check<'a>(
        &'a self,
        request: &'a ChatCompletionRequest,
        answer: &'a ChatCompletion,
    ) -> BoxFuture<'a, Result<Verdict>> {
        (self.function)(request, answer)
    }
}

/// The validators every client starts with: JSON, schema and tool-argument checks, each of
/// which applies only to requests that ask for that structure.
pub fn default_validators() -> Vec<Arc<dyn Validator>> {
    vec![Arc::new(JsonParses), Arc::new(JsonSchemaMatches), Arc::new(ToolArgumentsMatch), Arc::new(ToolCallRepeated)]
}

/// After a tool result, the answer does not call the same tool with the same arguments again.
/// Small models often do, instead of answering from the result; the call would loop forever.
#[derive(Debug, Default, Clone)]
pub struct ToolCallRepeated;

impl ToolCallRepeated {
    /// The calls that the trailing tool results answer: those of the last assistant message,
    /// when every message after it is a tool result.
    fn answered_calls(request: &ChatCompletionRequest) -> Option<&[crate::types::ToolCall]> {
        let last_assistant = request.messages.iter().rposition(|message| message.role == Role::Assistant)?;
        let after = &request.messages[last_assistant + 1..];
        if after.is_empty() || !after.iter().all(|message| message.role == Role::Tool) {
            return None;
        }
        request.messages[last_assistant].tool_calls.as_deref().filter(|calls| !calls.is_empty())
    }
}

impl Validator for ToolCallRepeated {
    fn name(&self) -> &str {
        "tool_call_repeated"
    }

    fn applies_to(&self, request: &ChatCompletionRequest) -> bool {
        !request.active_tools().is_empty() && Self::answered_calls(request).is_some()
    }

    fn check<'a>(
        &'a self,
        request: &'a ChatCompletionRequest,
        answer: &'a ChatCompletion,
    ) -> BoxFuture<'a, Result<Verdict>> {
        let answered = Self::answered_calls(request).unwrap_or_default();
        let calls = answer.message().and_then(|message| message.tool_calls.as_deref()).unwrap_or_default();
        let same_arguments =
            |a: &str, b: &str| match (serde_json::from_str::<Value>(a), serde_json::from_str::<Value>(b)) {
                (Ok(a), Ok(b)) => a == b,
                _ => a.trim() == b.trim(),
            };
        let repeated = calls.iter().find(|call| {
            answered.iter().any(|done| {
                done.function.name == call.function.name
                    && same_arguments(&done.function.arguments, &call.function.arguments)
            })
        });
        ready(match repeated {
            Some(call) => Err(format!(
                "the answer repeats the call {}({}) whose result it was just given",
                call.function.name, call.function.arguments
            )),
            None => Ok(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChatMessage;
    use serde_json::json;

    fn request_after_result() -> ChatCompletionRequest {
        serde_json::from_value(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "Where is order A-1?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "get_order", "arguments": "{\"order_id\": \"A-1\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "shipped"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}]
        }))
        .unwrap()
    }

    fn answer(tool_calls: Value, content: Value) -> ChatCompletion {
        serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": content, "tool_calls": tool_calls}}]
        }))
        .unwrap()
    }

    fn verdict(request: &ChatCompletionRequest, answer: &ChatCompletion) -> Verdict {
        futures::executor::block_on(ToolCallRepeated.check(request, answer)).unwrap()
    }

    #[test]
    fn a_call_repeated_after_its_result_is_rejected() {
        let request = request_after_result();
        assert!(ToolCallRepeated.applies_to(&request));
        let same = json!([{"id": "c2", "type": "function",
            "function": {"name": "get_order", "arguments": "{\"order_id\":\"A-1\"}"}}]);
        let err = verdict(&request, &answer(same, Value::Null)).unwrap_err();
        assert!(err.contains("repeats the call get_order"), "{err}");
        let other = json!([{"id": "c2", "type": "function",
            "function": {"name": "get_order", "arguments": "{\"order_id\":\"B-2\"}"}}]);
        assert_eq!(verdict(&request, &answer(other, Value::Null)), Ok(()));
        assert_eq!(verdict(&request, &answer(Value::Null, json!("It has shipped."))), Ok(()));
    }

    #[test]
    fn only_turns_right_after_a_result_are_checked() {
        let mut request = request_after_result();
        request.messages.push(ChatMessage::user("thanks"));
        assert!(!ToolCallRepeated.applies_to(&request));
        request.messages.truncate(1);
        assert!(!ToolCallRepeated.applies_to(&request));
    }

    fn formatted(format: ResponseFormat) -> ChatCompletionRequest {
        let mut request = ChatCompletionRequest::new(vec![ChatMessage::user("x")]);
        request.response_format = Some(format);
        request
    }

    #[test]
    fn only_schemas_the_grammar_fully_enforces_are_trusted_to_it() {
        let enforced = json!({
            "type": "object",
            "title": "ticket",
            "properties": {
                "intent": {"enum": ["refund", "bug"]},
                "priority": {"type": "integer", "minimum": 1, "maximum": 5},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
                "who": {"anyOf": [{"type": "string"}, {"type": "null"}]}
            },
            "required": ["intent"],
            "additionalProperties": false
        });
        let request = formatted(ResponseFormat::json_schema("t", enforced.clone()));
        assert!(JsonSchemaMatches.enforced_by_grammar(&request));
        assert!(JsonParses.enforced_by_grammar(&request));
        for (path, keyword) in [
            ("/properties/who", json!({"type": "string", "pattern": "^[a-z]+$"})),
            ("/properties/who", json!({"type": "string", "format": "email"})),
            ("/properties/who", json!({"type": "number", "minimum": 0.5})),
            ("/properties/who", json!({"oneOf": [{"type": "string"}, {"type": "null"}]})),
            ("/properties/who", json!({"$ref": "#/$defs/x"})),
            ("/properties/tags", json!({"type": "array", "uniqueItems": true})),
        ] {
            let mut schema = enforced.clone();
            *schema.pointer_mut(path).unwrap() = keyword.clone();
            let request = formatted(ResponseFormat::json_schema("t", schema));
            assert!(!JsonSchemaMatches.enforced_by_grammar(&request), "{keyword}");
        }
        assert!(JsonParses.enforced_by_grammar(&formatted(ResponseFormat::JsonObject)));
        assert!(!JsonParses.enforced_by_grammar(&formatted(ResponseFormat::Text)));
        // A stop string could end the JSON early; tools take the grammar over.
        let mut stopped = formatted(ResponseFormat::json_schema("t", enforced.clone()));
        stopped.stop = Some(crate::types::Stop::One("}".into()));
        assert!(!JsonSchemaMatches.enforced_by_grammar(&stopped) && !JsonParses.enforced_by_grammar(&stopped));
        let mut with_tools = formatted(ResponseFormat::json_schema("t", enforced));
        with_tools.tools = Some(vec![crate::types::Tool::function("f", "d", json!({"type": "object"}))]);
        assert!(!JsonSchemaMatches.enforced_by_grammar(&with_tools));
        assert!(!NonEmpty.enforced_by_grammar(&formatted(ResponseFormat::JsonObject)), "the default is false");
    }
}
