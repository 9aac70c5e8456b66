//! OpenAI Chat Completions types, with the field names and nesting of the public API.
//!
//! Requests keep the fields slmkit does not know in [`ChatCompletionRequest::extra`] (and
//! [`ChatMessage::extra`]), so a request passed through to a remote endpoint loses nothing.
//! Responses serialise to JSON that the official `openai` packages parse into their own
//! `ChatCompletion` and `ChatCompletionChunk` models.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

mod convert;
pub mod responses;
pub use convert::{assemble, chunks_of, is_usage_only, ChunkStream};

/// A `POST /v1/chat/completions` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model name. slmkit routes by tier, so an empty name is allowed.
    #[serde(default)]
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Deprecated by OpenAI in favour of `max_completion_tokens`; both are honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Number of choices. Only 1 is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every field this struct does not name, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The role's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Calls the assistant made (assistant messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call this message answers (tool messages only, and then required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// A message with plain text content.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: Some(MessageContent::Text(content.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A tool result answering the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { tool_call_id: Some(tool_call_id.into()), ..Self::new(Role::Tool, content) }
    }

    /// The text of the message: the string, or its text parts joined. Non-text parts are skipped.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(text)) => text.clone(),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter_map(|part| match part {
                    ContentPart::Text { text } => Some(text.as_str()),
                    ContentPart::Refusal { refusal } => Some(refusal.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// Message content: a string, or an array of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of an array-valued message content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
    ImageUrl { image_url: Value },
    InputAudio { input_audio: Value },
    File { file: Value },
    Refusal { refusal: String },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `"function"`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionDefinition,
}

fn function_type() -> String {
    "function".to_owned()
}

impl Tool {
    /// A function tool with a JSON-schema `parameters` object.
    pub fn function(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        Tool {
            kind: function_type(),
            function: FunctionDefinition {
                name: name.into(),
                description: Some(description.into()),
                parameters: Some(parameters),
                strict: None,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the arguments. Absent means "no arguments".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"`, or one named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Named(NamedToolChoice),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedToolChoice {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: NamedFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

impl ToolChoice {
    /// Force a call of the function `name`.
    pub fn named(name: impl Into<String>) -> Self {
        ToolChoice::Named(NamedToolChoice { kind: function_type(), function: NamedFunction { name: name.into() } })
    }
}

/// `response_format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl ResponseFormat {
    /// A `json_schema` response format.
    pub fn json_schema(name: impl Into<String>, schema: Value) -> Self {
        ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: name.into(),
                description: None,
                schema: Some(schema),
                strict: Some(true),
            },
        }
    }
}

/// `stop`: one string or a list of up to four.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(one) => vec![one.clone()],
            Stop::Many(many) => many.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A call the assistant made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON string, as OpenAI sends them.
    pub arguments: String,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    FunctionCall,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// Present when part of the prompt was served from a cache (the local engine's prefix reuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// The in-process engine's compute time for this answer (its share of batched decodes and
    /// its sampling, never time spent queued): what a local attempt's energy is charged for.
    /// Not part of OpenAI's format, so never serialised; `None` for remote answers.
    #[serde(skip)]
    pub engine_busy: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose processing was reused rather than recomputed.
    pub cached_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
            engine_busy: None,
        }
    }

    /// The same usage, with the engine's compute time for the answer.
    pub fn with_engine_busy(self, busy: std::time::Duration) -> Self {
        Usage { engine_busy: Some(busy), ..self }
    }

    /// The same usage, noting how many prompt tokens were reused from a cache.
    pub fn with_cached_prompt_tokens(self, cached_tokens: u32) -> Self {
        Usage { prompt_tokens_details: Some(PromptTokensDetails { cached_tokens }), ..self }
    }
}

/// The assistant message of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `"assistant"`.
    pub role: Role,
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: FinishReason,
    #[serde(default)]
    pub logprobs: Option<Value>,
}

/// A `chat.completion` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    /// Always `"chat.completion"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Omitted when unknown: the `openai` npm types say `system_fingerprint?: string`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Fields of other servers' responses, and slmkit's own routing metadata.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletion {
    /// The first choice's message, which is the only one since `n` must be 1.
    pub fn message(&self) -> Option<&AssistantMessage> {
        self.choices.first().map(|choice| &choice.message)
    }

    /// The first choice's text content, or `""`.
    pub fn content(&self) -> &str {
        self.message().and_then(|message| message.content.as_deref()).unwrap_or("")
    }
}

/// The changes one chunk brings to the message being streamed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

impl Delta {
    /// The delta that streams `call`, whole, as tool call number `index`.
    pub fn tool_call(index: u32, call: ToolCall) -> Delta {
        let delta = ToolCallDelta {
            index,
            id: Some(call.id),
            kind: Some(call.kind),
            function: Some(FunctionCallDelta {
                name: Some(call.function.name),
                arguments: Some(call.function.arguments),
            }),
        };
        Delta { tool_calls: Some(vec![delta]), ..Delta::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(default)]
    pub logprobs: Option<Value>,
}

/// A `chat.completion.chunk`, one event of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// Always `"chat.completion.chunk"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    /// Empty on the final usage-only chunk, as with OpenAI.
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Omitted when unknown: the `openai` npm types say `system_fingerprint?: string`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Sampling limits checked before anything reaches an engine. OpenAI's own ranges.
const TEMPERATURE_RANGE: std::ops::RangeInclusive<f64> = 0.0..=2.0;
const TOP_P_RANGE: std::ops::RangeInclusive<f64> = 0.0..=1.0;
/// OpenAI's range for `frequency_penalty` and `presence_penalty`, checked here for every
/// backend and by the local engine for its configured defaults.
pub(crate) const PENALTY_RANGE: std::ops::RangeInclusive<f64> = -2.0..=2.0;

/// The error for a `frequency_penalty` or `presence_penalty` outside [`PENALTY_RANGE`].
pub(crate) fn penalty_range_error(param: &str, value: impl std::fmt::Display) -> String {
    format!("{param} must be a number from -2 to 2, got {value}")
}
const MAX_STOP_SEQUENCES: usize = 4;

impl ChatCompletionRequest {
    /// A request with these messages and defaults for everything else.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        ChatCompletionRequest { messages, ..Default::default() }
    }

    /// Parses a request from JSON, with a clear error for a malformed one.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when the JSON does not describe a valid request.
    pub fn from_json(json: &str) -> Result<Self> {
        let request: Self = serde_json::from_str(json)
            .map_err(|err| Error::invalid_request(format!("malformed request: {err}"), None))?;
        request.validate()?;
        Ok(request)
    }

    /// The output limit: `max_completion_tokens`, else `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Whether this request asks for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the final stream chunk should carry `usage`.
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|options| options.include_usage).unwrap_or(false)
    }

    /// The stop sequences, empty when none are given.
    pub fn stop_sequences(&self) -> Vec<String> {
        self.stop.as_ref().map(Stop::to_vec).unwrap_or_default()
    }

    /// The tools in play: none when `tool_choice` is `"none"`.
    pub fn active_tools(&self) -> &[Tool] {
        match (&self.tools, &self.tool_choice) {
            (_, Some(ToolChoice::Mode(ToolChoiceMode::None))) | (None, _) => &[],
            (Some(tools), _) => tools,
        }
    }

    /// Checks everything that can be checked without a model.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the offending parameter.
    pub fn validate(&self) -> Result<()> {
        if self.messages.is_empty() {
            return Err(Error::invalid_request("messages must not be empty", Some("messages")));
        }
        if let Some(n) = self.n {
            if n != 1 {
                return Err(Error::invalid_request(
                    format!("n = {n} is not supported: slmkit returns exactly one choice (n = 1)"),
                    Some("n"),
                ));
            }
        }
        if let Some(temperature) = self.temperature {
            if !temperature.is_finite() || !TEMPERATURE_RANGE.contains(&temperature) {
                return Err(Error::invalid_request(
                    format!("temperature must be a number from 0 to 2, got {temperature}"),
                    Some("temperature"),
                ));
            }
        }
        if let Some(top_p) = self.top_p {
            if !top_p.is_finite() || !TOP_P_RANGE.contains(&top_p) {
                return Err(Error::invalid_request(
                    format!("top_p must be a number from 0 to 1, got {top_p}"),
                    Some("top_p"),
                ));
            }
        }
        // OpenAI's range, whatever the backend: a remote would refuse them too, later.
        for param in ["frequency_penalty", "presence_penalty"] {
            match self.extra.get(param) {
                None | Some(Value::Null) => {}
                Some(value) => {
                    if !value.as_f64().is_some_and(|penalty| PENALTY_RANGE.contains(&penalty)) {
                        return Err(Error::invalid_request(penalty_range_error(param, value), Some(param)));
                    }
                }
            }
        }
        for (param, value) in [("max_tokens", self.max_tokens), ("max_completion_tokens", self.max_completion_tokens)] {
            if value == Some(0) {
                return Err(Error::invalid_request(format!("{param} must be at least 1"), Some(param)));
            }
        }
        let stops = self.stop_sequences();
        if stops.len() > MAX_STOP_SEQUENCES {
            return Err(Error::invalid_request(
                format!("stop takes at most {MAX_STOP_SEQUENCES} sequences, got {}", stops.len()),
                Some("stop"),
            ));
        }
        if stops.iter().any(String::is_empty) {
            return Err(Error::invalid_request("stop sequences must not be empty", Some("stop")));
        }
        self.validate_messages()?;
        self.validate_tools()
    }

    fn validate_messages(&self) -> Result<()> {
        let mut offered_call_ids = std::collections::HashSet::new();
        for (index, message) in self.messages.iter().enumerate() {
            let param = format!("messages[{index}]");
            match message.role {
                Role::Tool => {
                    let Some(call_id) = message.tool_call_id.as_deref() else {
                        return Err(Error::invalid_request(
                            format!("{param}: a tool message needs a tool_call_id"),
                            Some(&param),
                        ));
                    };
                    if !offered_call_ids.is_empty() && !offered_call_ids.contains(call_id) {
                        return Err(Error::invalid_request(
                            format!("{param}: tool_call_id {call_id:?} answers no earlier assistant tool call"),
                            Some(&param),
                        ));
                    }
                }
                Role::Assistant => {
                    for call in message.tool_calls.iter().flatten() {
                        offered_call_ids.insert(call.id.as_str());
                    }
                }
                _ => {
                    if message.tool_calls.is_some() {
                        return Err(Error::invalid_request(
                            format!("{param}: only assistant messages carry tool_calls"),
                            Some(&param),
                        ));
                    }
                }
            }
            if message.content.is_none() && message.tool_calls.is_none() {
                return Err(Error::invalid_request(format!("{param}: content is missing"), Some(&param)));
            }
        }
        Ok(())
    }

    fn validate_tools(&self) -> Result<()> {
        let tools = self.tools.as_deref().unwrap_or_default();
        for tool in tools {
            if tool.kind != "function" {
                return Err(Error::invalid_request(
                    format!("tool type {:?} is not supported; use \"function\"", tool.kind),
                    Some("tools"),
                ));
            }
            if tool.function.name.is_empty() {
                return Err(Error::invalid_request("a tool's function name must not be empty", Some("tools")));
            }
        }
        match &self.tool_choice {
            Some(ToolChoice::Named(named)) if !tools.iter().any(|tool| tool.function.name == named.function.name) => {
                return Err(Error::invalid_request(
                    format!("tool_choice names {:?}, which is not in tools", named.function.name),
                    Some("tool_choice"),
                ));
            }
            Some(ToolChoice::Mode(ToolChoiceMode::Required)) if tools.is_empty() => {
                return Err(Error::invalid_request(
                    "tool_choice \"required\" needs at least one tool",
                    Some("tool_choice"),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch, for `created`.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

/// A fresh id with an OpenAI-style prefix, e.g. `chatcmpl-…` or `call_…`.
pub(crate) fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..24)
        .map(|_| {
            const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            ALPHABET[rng.random_range(0..ALPHABET.len())] as char
        })
        .collect();
    format!("{prefix}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let body = json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi", "x_note": 1}],
            "logit_bias": {"50256": -100},
            "service_tier": "auto"
        });
        let request: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(request.extra["service_tier"], "auto");
        assert_eq!(serde_json::to_value(&request).unwrap(), body);
    }

    #[test]
    fn content_parts_and_tool_choice_forms_parse() {
        let request: ChatCompletionRequest = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
            "stop": "END"
        }))
        .unwrap();
        assert_eq!(request.messages[0].text(), "describe");
        assert_eq!(request.tool_choice, Some(ToolChoice::named("f")));
        assert_eq!(request.stop_sequences(), vec!["END"]);
        request.validate().unwrap();
        for mode in ["none", "auto", "required"] {
            let choice: ToolChoice = serde_json::from_value(json!(mode)).unwrap();
            assert!(matches!(choice, ToolChoice::Mode(_)));
        }
    }

    #[test]
    fn invalid_requests_name_their_parameter() {
        let base = ChatCompletionRequest::new(vec![ChatMessage::user("hi")]);
        let cases: Vec<(ChatCompletionRequest, &str)> = vec![
            (ChatCompletionRequest { n: Some(2), ..base.clone() }, "n"),
            (ChatCompletionRequest { temperature: Some(f64::NAN), ..base.clone() }, "temperature"),
            (ChatCompletionRequest { temperature: Some(2.5), ..base.clone() }, "temperature"),
            (ChatCompletionRequest { top_p: Some(-0.1), ..base.clone() }, "top_p"),
            (ChatCompletionRequest { max_tokens: Some(0), ..base.clone() }, "max_tokens"),
            (ChatCompletionRequest { messages: vec![], ..base.clone() }, "messages"),
            (
                ChatCompletionRequest {
                    extra: Map::from_iter([("frequency_penalty".to_owned(), json!(2.5))]),
                    ..base.clone()
                },
                "frequency_penalty",
            ),
            (
                ChatCompletionRequest {
                    extra: Map::from_iter([("presence_penalty".to_owned(), json!("lots"))]),
                    ..base.clone()
                },
                "presence_penalty",
            ),
            (
                ChatCompletionRequest {
                    messages: vec![ChatMessage { tool_call_id: None, ..ChatMessage::tool("x", "r") }],
                    ..base.clone()
                },
                "messages[0]",
            ),
            (ChatCompletionRequest { tool_choice: Some(ToolChoice::named("ghost")), ..base.clone() }, "tool_choice"),
        ];
        for (request, param) in cases {
            match request.validate() {
                Err(Error::InvalidRequest { param: Some(got), .. }) => assert_eq!(got, param),
                other => panic!("expected an invalid-request error for {param}, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_role_is_a_clear_error() {
        let err = ChatCompletionRequest::from_json(r#"{"messages":[{"role":"wizard","content":"x"}]}"#).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("wizard"), "{message}");
        assert!(message.contains("expected one of"), "{message}");
    }
}
