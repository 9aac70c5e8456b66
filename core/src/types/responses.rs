//! OpenAI Responses API types (`POST /v1/responses`): the subset slmkit serves.
//!
//! The request keeps its structured parts (`input`, `tools`, `tool_choice`, `text`) as JSON
//! values: `client::responses` reads them item by item, so a rejected feature is named by its
//! path (`input[2].type`, `tools[0].type`). Answers serialise to the JSON the official
//! `openai` packages parse into their `Response` model and stream events.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A `POST /v1/responses` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseRequest {
    /// The model name; as in chat, it may name a tier's model or be empty.
    #[serde(default)]
    pub model: String,
    /// A string (one user message) or a list of input items.
    #[serde(default)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// `{"format": {...}}`: `text`, `json_object` or `json_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Passed on as the chat request's `metadata`, so `slmkit_*` hints work as in chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Accepted either way; slmkit stores no responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Every other field: slmkit's hints (`slmkit`), fields accepted without effect, and
    /// the features this subset refuses (checked when the request is mapped).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponseRequest {
    /// A request for `input` as one user message, with defaults for everything else.
    pub fn text(input: impl Into<String>) -> Self {
        ResponseRequest { input: Value::String(input.into()), ..Default::default() }
    }

    /// Parses a request from JSON, with a clear error for a malformed one. The fields are
    /// checked when the request is mapped onto a chat request (`Client::respond` does it).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when the JSON is not a request object.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|err| Error::invalid_request(format!("malformed request: {err}"), None))
    }

    /// Whether this request asks for a stream of events.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
}

/// Where a response stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    InProgress,
    Completed,
    Incomplete,
}

/// Why a response is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: String,
}

/// An output item's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

/// One item of a response's `output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// The assistant's text.
    Message {
        id: String,
        /// Always `"assistant"`.
        role: String,
        status: ItemStatus,
        content: Vec<OutputContent>,
    },
    /// A call of one of the request's function tools.
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        /// The arguments as a JSON string.
        arguments: String,
        status: ItemStatus,
    },
}

/// One part of an output message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    OutputText {
        text: String,
        /// Always empty: slmkit cites nothing.
        #[serde(default)]
        annotations: Vec<Value>,
        #[serde(default)]
        logprobs: Vec<Value>,
    },
    Refusal {
        refusal: String,
    },
}

impl OutputContent {
    /// An `output_text` part.
    pub fn text(text: impl Into<String>) -> Self {
        OutputContent::OutputText { text: text.into(), annotations: Vec::new(), logprobs: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    pub cached_tokens: u32,
    pub cache_write_tokens: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u32,
}

/// A response's token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseUsage {
    pub input_tokens: u32,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u32,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u32,
}

/// A `response` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// `resp_…`.
    pub id: String,
    /// Always `"response"`.
    pub object: String,
    pub created_at: u64,
    pub status: ResponseStatus,
    /// Set when `status` is `incomplete`.
    pub incomplete_details: Option<IncompleteDetails>,
    /// Always null: a failed call is an HTTP error (or a stream's `error` event).
    pub error: Option<Value>,
    pub model: String,
    pub output: Vec<OutputItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResponseUsage>,
    // The request's settings, echoed as OpenAI does.
    pub instructions: Option<String>,
    pub metadata: Map<String, Value>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u32>,
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub text: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// slmkit's call metadata (under `slmkit`), as on chat completions.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Response {
    /// The text of every `output_text` part, joined: what openai's SDKs call `output_text`.
    pub fn output_text(&self) -> String {
        self.output
            .iter()
            .filter_map(|item| match item {
                OutputItem::Message { content, .. } => Some(content),
                OutputItem::FunctionCall { .. } => None,
            })
            .flatten()
            .filter_map(|part| match part {
                OutputContent::OutputText { text, .. } => Some(text.as_str()),
                OutputContent::Refusal { .. } => None,
            })
            .collect()
    }

    /// The function calls the response asks for, in order: `(call_id, name, arguments)`.
    pub fn function_calls(&self) -> Vec<(&str, &str, &str)> {
        self.output
            .iter()
            .filter_map(|item| match item {
                OutputItem::FunctionCall { call_id, name, arguments, .. } => {
                    Some((call_id.as_str(), name.as_str(), arguments.as_str()))
                }
                OutputItem::Message { .. } => None,
            })
            .collect()
    }
}

/// One event of a streamed response, as OpenAI sends it: the `type` and `sequence_number`
/// beside the event's own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseEvent {
    /// 0 for the first event of the stream, then one more for each.
    pub sequence_number: u64,
    #[serde(flatten)]
    pub kind: ResponseEventKind,
}

impl ResponseEvent {
    /// The event's `type`, e.g. `response.output_text.delta`.
    pub fn event_type(&self) -> &'static str {
        self.kind.event_type()
    }
}

/// The events slmkit streams, in the order it sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ResponseEventKind {
    #[serde(rename = "response.created")]
    Created { response: Box<Response> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: Box<Response> },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded { output_index: u32, item: OutputItem },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded { item_id: String, output_index: u32, content_index: u32, part: OutputContent },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta { item_id: String, output_index: u32, content_index: u32, delta: String, logprobs: Vec<Value> },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone { item_id: String, output_index: u32, content_index: u32, text: String, logprobs: Vec<Value> },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone { item_id: String, output_index: u32, content_index: u32, part: OutputContent },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta { item_id: String, output_index: u32, delta: String },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone { item_id: String, output_index: u32, arguments: String },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone { output_index: u32, item: OutputItem },
    #[serde(rename = "response.completed")]
    Completed { response: Box<Response> },
    /// The end of a response cut off by `max_output_tokens` (or a content filter).
    #[serde(rename = "response.incomplete")]
    Incomplete { response: Box<Response> },
}

impl ResponseEventKind {
    /// The event's `type` on the wire (and the SSE `event:` line).
    pub fn event_type(&self) -> &'static str {
        match self {
            ResponseEventKind::Created { .. } => "response.created",
            ResponseEventKind::InProgress { .. } => "response.in_progress",
            ResponseEventKind::OutputItemAdded { .. } => "response.output_item.added",
            ResponseEventKind::ContentPartAdded { .. } => "response.content_part.added",
            ResponseEventKind::OutputTextDelta { .. } => "response.output_text.delta",
            ResponseEventKind::OutputTextDone { .. } => "response.output_text.done",
            ResponseEventKind::ContentPartDone { .. } => "response.content_part.done",
            ResponseEventKind::FunctionCallArgumentsDelta { .. } => "response.function_call_arguments.delta",
            ResponseEventKind::FunctionCallArgumentsDone { .. } => "response.function_call_arguments.done",
            ResponseEventKind::OutputItemDone { .. } => "response.output_item.done",
            ResponseEventKind::Completed { .. } => "response.completed",
            ResponseEventKind::Incomplete { .. } => "response.incomplete",
        }
    }
}

/// A stream of response events, as [`crate::Client::respond_stream`] produces it. An error
/// after the first event ends the stream (the server sends it as an `error` event).
pub type ResponseEventStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<ResponseEvent>> + Send>>;
