//! The Responses API subset on the chat call path: a [`ResponseRequest`] becomes a
//! [`ChatCompletionRequest`], runs through the same routing, validation, retries, cache and
//! ledger as a chat call, and its completion (or its chunks) comes back as a [`Response`]
//! (or as the Responses stream events).
//!
//! Features outside the subset are refused with [`Error::InvalidRequest`] naming the field,
//! never ignored: a caller who relies on `previous_response_id` or a built-in tool must learn
//! at once that slmkit does not do it.

use std::collections::VecDeque;

use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::{Client, Prepared};
use crate::error::{Error, Result};
use crate::hints::HINT_FIELD;
use crate::metadata::METADATA_FIELD;
use crate::types::responses::{
    IncompleteDetails, InputTokensDetails, ItemStatus, OutputContent, OutputItem, OutputTokensDetails, Response,
    ResponseEvent, ResponseEventKind, ResponseEventStream, ResponseRequest, ResponseStatus, ResponseUsage,
};
use crate::types::{
    new_id, unix_now, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ChunkStream,
    ContentPart, FinishReason, FunctionCall, FunctionDefinition, JsonSchemaFormat, MessageContent, ResponseFormat,
    Role, StreamOptions, Tool, ToolCall, ToolChoice, ToolChoiceMode, Usage,
};

/// Fields accepted and ignored: they tune OpenAI's own service (its prompt cache, service
/// tiers, abuse checks) and change nothing in an answer.
const NO_EFFECT: &[&str] = &["service_tier", "prompt_cache_key", "prompt_cache_retention", "safety_identifier"];

/// A Responses request mapped onto a prepared chat call: what the `*_prepared` methods take.
pub struct PreparedResponse {
    request: ResponseRequest,
    prepared: Prepared<'static>,
}

impl PreparedResponse {
    /// The Responses request.
    pub fn request(&self) -> &ResponseRequest {
        &self.request
    }

    /// The chat request it runs as.
    pub fn chat_request(&self) -> &ChatCompletionRequest {
        self.prepared.request()
    }

    /// A deadline over the whole call, as [`Prepared::with_timeout_s`].
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for seconds that are not a positive number.
    pub fn with_timeout_s(self, seconds: Option<f64>) -> Result<Self> {
        Ok(PreparedResponse { prepared: self.prepared.with_timeout_s(seconds)?, ..self })
    }
}

impl Client {
    /// Answers a Responses API request through the chat call path.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a field outside the subset or a malformed one (naming
    /// it); otherwise as [`Client::create`].
    pub async fn respond(&self, request: &ResponseRequest) -> Result<Response> {
        self.respond_prepared(self.prepare_response(request.clone())?).await
    }

    /// Answers a Responses API request as its stream of events.
    ///
    /// # Errors
    /// As [`Client::respond`], for failures before the stream starts.
    pub async fn respond_stream(&self, request: &ResponseRequest) -> Result<ResponseEventStream> {
        self.respond_stream_prepared(self.prepare_response(request.clone())?).await
    }

    /// Maps `request` onto a chat request and prepares it ([`Client::prepare_owned`]).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a field outside the subset or a malformed one.
    pub fn prepare_response(&self, request: ResponseRequest) -> Result<PreparedResponse> {
        let chat = to_chat_request(&request)?;
        let prepared = self.prepare_owned(chat)?;
        Ok(PreparedResponse { request, prepared })
    }

    /// The answer when the response cache holds it now, as [`Client::cached`].
    pub fn respond_cached(&self, prepared: &PreparedResponse) -> Option<Response> {
        let completion = self.cached(&prepared.prepared)?;
        Some(to_response(&prepared.request, completion))
    }

    /// As [`Client::respond`], for a prepared request.
    ///
    /// # Errors
    /// As [`Client::respond`]; [`Error::Timeout`] past the call's timeout.
    pub async fn respond_prepared(&self, prepared: PreparedResponse) -> Result<Response> {
        let PreparedResponse { request, prepared } = prepared;
        let completion = self.create_prepared(prepared).await?;
        Ok(to_response(&request, completion))
    }

    /// As [`Client::respond_stream`], for a prepared request.
    ///
    /// # Errors
    /// As [`Client::respond_stream`]; [`Error::Timeout`] past the call's timeout.
    pub async fn respond_stream_prepared(&self, prepared: PreparedResponse) -> Result<ResponseEventStream> {
        let PreparedResponse { request, prepared } = prepared;
        let chunks = self.create_stream_prepared(prepared).await?;
        Ok(to_events(&request, chunks))
    }
}

fn refuse(message: impl Into<String>, param: &str) -> Error {
    Error::invalid_request(message, Some(param))
}

fn unsupported(field: &str, why: &str) -> Error {
    refuse(format!("{field} is not supported by slmkit's Responses API subset{why}"), field)
}

/// The chat request `request` runs as.
///
/// # Errors
/// [`Error::InvalidRequest`] naming the first field outside the subset, or malformed.
pub fn to_chat_request(request: &ResponseRequest) -> Result<ChatCompletionRequest> {
    let mut extra = Map::new();
    for (field, value) in &request.extra {
        if value.is_null() || NO_EFFECT.contains(&field.as_str()) {
            continue;
        }
        match field.as_str() {
            HINT_FIELD => {
                extra.insert(field.clone(), value.clone());
            }
            "stream_options" => {}
            "truncation" if value == "disabled" => {}
            "include" if value.as_array().is_some_and(Vec::is_empty) => {}
            "previous_response_id" | "conversation" => {
                return Err(unsupported(
                    field,
                    ": slmkit stores no responses; send the whole conversation as input items",
                ))
            }
            "truncation" => return Err(unsupported(field, " (only \"disabled\": slmkit never truncates input)")),
            _ => return Err(unsupported(field, "")),
        }
    }
    let mut messages = Vec::new();
    if let Some(instructions) = &request.instructions {
        messages.push(ChatMessage::system(instructions.clone()));
    }
    messages.extend(input_messages(&request.input)?);
    let tools = match &request.tools {
        Some(tools) => {
            Some(tools.iter().enumerate().map(|(index, tool)| chat_tool(index, tool)).collect::<Result<_>>()?)
        }
        None => None,
    };
    let tool_choice =
        request.tool_choice.as_ref().filter(|choice| !choice.is_null()).map(chat_tool_choice).transpose()?;
    let response_format = request.text.as_ref().filter(|text| !text.is_null()).map(chat_format).transpose()?.flatten();
    let stream = request.is_stream();
    Ok(ChatCompletionRequest {
        model: request.model.clone(),
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: request.parallel_tool_calls,
        response_format,
        temperature: request.temperature,
        top_p: request.top_p,
        max_completion_tokens: request.max_output_tokens,
        stream: stream.then_some(true),
        // The final `response.completed` event carries the usage.
        stream_options: stream.then(|| StreamOptions { include_usage: Some(true), ..Default::default() }),
        metadata: request.metadata.clone(),
        user: request.user.clone(),
        extra,
        ..Default::default()
    })
}

fn input_messages(input: &Value) -> Result<Vec<ChatMessage>> {
    let items = match input {
        Value::String(text) => return Ok(vec![ChatMessage::user(text.clone())]),
        Value::Array(items) => items,
        Value::Null => return Err(refuse("input is required: a string or a list of input items", "input")),
        _ => return Err(refuse("input must be a string or a list of input items", "input")),
    };
    let mut messages: Vec<ChatMessage> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let param = format!("input[{index}]");
        let Some(item) = item.as_object() else {
            return Err(refuse(format!("{param} must be an object"), &param));
        };
        match item.get("type").and_then(Value::as_str).unwrap_or("message") {
            "message" => messages.push(input_message(item, &param)?),
            "function_call" => {
                let call = ToolCall {
                    id: required_str(item, "call_id", &param)?.to_owned(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: required_str(item, "name", &param)?.to_owned(),
                        arguments: required_str(item, "arguments", &param)?.to_owned(),
                    },
                };
                // Calls that follow an assistant turn belong to it, as in a chat transcript.
                match messages.last_mut() {
                    Some(last) if last.role == Role::Assistant => {
                        last.tool_calls.get_or_insert_with(Vec::new).push(call)
                    }
                    _ => messages.push(ChatMessage {
                        content: None,
                        tool_calls: Some(vec![call]),
                        ..ChatMessage::assistant("")
                    }),
                }
            }
            "function_call_output" => {
                let call_id = required_str(item, "call_id", &param)?;
                let output = match item.get("output") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Array(parts)) => text_parts(parts, &format!("{param}.output"))?.join("\n"),
                    _ => return Err(refuse(format!("{param}.output must be a string or text parts"), &param)),
                };
                messages.push(ChatMessage::tool(call_id, output));
            }
            other => {
                return Err(refuse(
                    format!(
                        "{param}.type {other:?} is not supported by slmkit's Responses API subset \
                         (only message, function_call and function_call_output items)"
                    ),
                    &format!("{param}.type"),
                ))
            }
        }
    }
    Ok(messages)
}

fn required_str<'a>(item: &'a Map<String, Value>, key: &str, param: &str) -> Result<&'a str> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| refuse(format!("{param}.{key} is required and must be a string"), &format!("{param}.{key}")))
}

fn input_message(item: &Map<String, Value>, param: &str) -> Result<ChatMessage> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("system") => Role::System,
        Some("developer") => Role::Developer,
        Some("assistant") => Role::Assistant,
        other => {
            return Err(refuse(
                format!("{param}.role must be user, system, developer or assistant, got {other:?}"),
                &format!("{param}.role"),
            ))
        }
    };
    let content = match item.get("content") {
        Some(Value::String(text)) => MessageContent::Text(text.clone()),
        Some(Value::Array(parts)) => MessageContent::Parts(
            text_parts(parts, &format!("{param}.content"))?
                .into_iter()
                .map(|text| ContentPart::Text { text })
                .collect(),
        ),
        _ => {
            return Err(refuse(
                format!("{param}.content must be a string or a list of text parts"),
                &format!("{param}.content"),
            ))
        }
    };
    Ok(ChatMessage { content: Some(content), ..ChatMessage::new(role, "") })
}

/// The texts of `input_text` / `output_text` (and `refusal`) parts; any other part is refused.
fn text_parts(parts: &[Value], param: &str) -> Result<Vec<String>> {
    parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            let part_param = format!("{param}[{index}]");
            let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
            let field = match kind {
                "input_text" | "output_text" => "text",
                "refusal" => "refusal",
                _ => {
                    return Err(refuse(
                        format!(
                            "{part_param}.type {kind:?} is not supported: slmkit's Responses API subset takes \
                             text only (input_text, output_text)"
                        ),
                        &format!("{part_param}.type"),
                    ))
                }
            };
            part.get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| refuse(format!("{part_param}.{field} must be a string"), &part_param))
        })
        .collect()
}

fn chat_tool(index: usize, tool: &Value) -> Result<Tool> {
    let param = format!("tools[{index}]");
    let Some(tool) = tool.as_object() else {
        return Err(refuse(format!("{param} must be an object"), &param));
    };
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => {
            return Err(refuse(
                format!(
                    "{param}.type {:?} is not supported by slmkit's Responses API subset (only function tools)",
                    other.unwrap_or("")
                ),
                &format!("{param}.type"),
            ))
        }
    }
    let name = required_str(tool, "name", &param)?.to_owned();
    let description = match tool.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(refuse(format!("{param}.description must be a string"), &param)),
    };
    let strict = match tool.get("strict") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(strict)) => Some(*strict),
        Some(_) => return Err(refuse(format!("{param}.strict must be a boolean"), &param)),
    };
    let parameters = tool.get("parameters").filter(|value| !value.is_null()).cloned();
    Ok(Tool { kind: "function".into(), function: FunctionDefinition { name, description, parameters, strict } })
}

fn chat_tool_choice(choice: &Value) -> Result<ToolChoice> {
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Ok(ToolChoice::Mode(ToolChoiceMode::Auto)),
            "none" => Ok(ToolChoice::Mode(ToolChoiceMode::None)),
            "required" => Ok(ToolChoice::Mode(ToolChoiceMode::Required)),
            _ => Err(refuse(format!("tool_choice {mode:?} is not one of auto, none, required"), "tool_choice")),
        },
        Value::Object(named) if named.get("type").and_then(Value::as_str) == Some("function") => {
            Ok(ToolChoice::named(required_str(named, "name", "tool_choice")?))
        }
        _ => Err(refuse(
            format!(
                "tool_choice {choice} is not supported by slmkit's Responses API subset \
                 (auto, none, required, or {{\"type\": \"function\", \"name\": ...}})"
            ),
            "tool_choice",
        )),
    }
}

/// `text.format` as a chat `response_format` (`None` for plain text).
fn chat_format(text: &Value) -> Result<Option<ResponseFormat>> {
    let Some(text) = text.as_object() else {
        return Err(refuse("text must be an object, e.g. {\"format\": {\"type\": \"text\"}}", "text"));
    };
    if let Some((key, _)) = text.iter().find(|(key, value)| key.as_str() != "format" && !value.is_null()) {
        return Err(unsupported(&format!("text.{key}"), ""));
    }
    let Some(format) = text.get("format").filter(|format| !format.is_null()) else { return Ok(None) };
    let Some(format) = format.as_object() else {
        return Err(refuse("text.format must be an object", "text.format"));
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Some(ResponseFormat::Text)),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => Ok(Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: required_str(format, "name", "text.format")?.to_owned(),
                description: format.get("description").and_then(Value::as_str).map(str::to_owned),
                schema: format.get("schema").filter(|schema| !schema.is_null()).cloned(),
                strict: format.get("strict").and_then(Value::as_bool),
            },
        })),
        other => Err(refuse(
            format!("text.format.type {other:?} is not one of text, json_object, json_schema"),
            "text.format.type",
        )),
    }
}

/// A response to `request` with no output yet: the request's settings echoed, as OpenAI does.
fn skeleton(request: &ResponseRequest, model: &str, created_at: u64) -> Response {
    Response {
        id: new_id("resp_"),
        object: "response".into(),
        created_at,
        status: ResponseStatus::InProgress,
        incomplete_details: None,
        error: None,
        model: model.to_owned(),
        output: Vec::new(),
        usage: None,
        instructions: request.instructions.clone(),
        metadata: request.metadata.clone().unwrap_or_default(),
        temperature: request.temperature,
        top_p: request.top_p,
        max_output_tokens: request.max_output_tokens,
        tools: request.tools.clone().unwrap_or_default(),
        tool_choice: request.tool_choice.clone().filter(|choice| !choice.is_null()).unwrap_or_else(|| json!("auto")),
        parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
        text: request
            .text
            .clone()
            .filter(|text| !text.is_null())
            .unwrap_or_else(|| json!({"format": {"type": "text"}})),
        user: request.user.clone(),
        extra: Map::new(),
    }
}

fn response_usage(usage: Usage) -> ResponseUsage {
    ResponseUsage {
        input_tokens: usage.prompt_tokens,
        input_tokens_details: InputTokensDetails {
            cached_tokens: usage.prompt_tokens_details.map_or(0, |details| details.cached_tokens),
            cache_write_tokens: 0,
        },
        output_tokens: usage.completion_tokens,
        output_tokens_details: OutputTokensDetails::default(),
        total_tokens: usage.total_tokens,
    }
}

/// The status and incomplete reason a chat finish reason means.
fn ending(finish: Option<FinishReason>) -> (ResponseStatus, Option<IncompleteDetails>) {
    let reason = match finish {
        Some(FinishReason::Length) => "max_output_tokens",
        Some(FinishReason::ContentFilter) => "content_filter",
        _ => return (ResponseStatus::Completed, None),
    };
    (ResponseStatus::Incomplete, Some(IncompleteDetails { reason: reason.into() }))
}

fn item_status(status: ResponseStatus) -> ItemStatus {
    match status {
        ResponseStatus::Incomplete => ItemStatus::Incomplete,
        ResponseStatus::InProgress => ItemStatus::InProgress,
        ResponseStatus::Completed => ItemStatus::Completed,
    }
}

/// `completion` as the response to `request`.
pub fn to_response(request: &ResponseRequest, completion: ChatCompletion) -> Response {
    let mut response = skeleton(request, &completion.model, completion.created);
    let (status, incomplete) = ending(completion.choices.first().map(|choice| choice.finish_reason));
    response.status = status;
    response.incomplete_details = incomplete;
    response.usage = completion.usage.map(response_usage);
    if let Some(metadata) = completion.extra.get(METADATA_FIELD) {
        response.extra.insert(METADATA_FIELD.into(), metadata.clone());
    }
    if let Some(message) = completion.message() {
        let mut content = Vec::new();
        if let Some(text) = message.content.as_deref().filter(|text| !text.is_empty()) {
            content.push(OutputContent::text(text));
        }
        if let Some(refusal) = &message.refusal {
            content.push(OutputContent::Refusal { refusal: refusal.clone() });
        }
        let calls = message.tool_calls.as_deref().unwrap_or_default();
        if !content.is_empty() || calls.is_empty() {
            if content.is_empty() {
                content.push(OutputContent::text(""));
            }
            response.output.push(OutputItem::Message {
                id: new_id("msg_"),
                role: "assistant".into(),
                status: item_status(status),
                content,
            });
        }
        for call in calls {
            response.output.push(OutputItem::FunctionCall {
                id: new_id("fc_"),
                call_id: call.id.clone(),
                name: call.function.name.clone(),
                arguments: call.function.arguments.clone(),
                status: ItemStatus::Completed,
            });
        }
    }
    response
}

/// `chunks` as the Responses stream events for `request`.
pub fn to_events(request: &ResponseRequest, chunks: ChunkStream) -> ResponseEventStream {
    struct State {
        chunks: ChunkStream,
        events: EventWriter,
        ended: bool,
    }
    let state = State { chunks, events: EventWriter::new(request.clone()), ended: false };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.events.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if state.ended {
                return None;
            }
            match state.chunks.next().await {
                Some(Ok(chunk)) => state.events.chunk(chunk),
                Some(Err(err)) => {
                    state.ended = true;
                    return Some((Err(err), state));
                }
                None => {
                    state.events.finish();
                    state.ended = true;
                }
            }
        }
    }))
}

/// A function-call item being streamed.
struct OpenCall {
    output_index: u32,
    item_id: String,
    call_id: String,
    name: String,
    arguments: String,
}

/// Turns chunks into events, keeping the response built so far.
struct EventWriter {
    request: ResponseRequest,
    /// Set by the first chunk.
    response: Option<Response>,
    sequence: u64,
    pending: VecDeque<ResponseEvent>,
    /// The message item being streamed: its output index, id and text so far.
    message: Option<(u32, String, String)>,
    /// Function calls by their chat stream index, once started; the last one is open.
    calls: Vec<(u32, OpenCall)>,
    open_call: Option<u32>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl EventWriter {
    fn new(request: ResponseRequest) -> Self {
        EventWriter {
            request,
            response: None,
            sequence: 0,
            pending: VecDeque::new(),
            message: None,
            calls: Vec::new(),
            open_call: None,
            finish: None,
            usage: None,
        }
    }

    fn emit(&mut self, kind: ResponseEventKind) {
        self.pending.push_back(ResponseEvent { sequence_number: self.sequence, kind });
        self.sequence += 1;
    }

    /// The response so far; the first call (from the first chunk, or at the end of an empty
    /// stream) announces it.
    fn started(&mut self, first: Option<&ChatCompletionChunk>) -> &mut Response {
        if self.response.is_none() {
            let (model, created) =
                first.map_or((self.request.model.as_str(), unix_now()), |chunk| (chunk.model.as_str(), chunk.created));
            let mut response = skeleton(&self.request, model, created);
            if let Some(metadata) = first.and_then(|chunk| chunk.extra.get(METADATA_FIELD)) {
                response.extra.insert(METADATA_FIELD.into(), metadata.clone());
            }
            self.emit(ResponseEventKind::Created { response: Box::new(response.clone()) });
            self.emit(ResponseEventKind::InProgress { response: Box::new(response.clone()) });
            self.response = Some(response);
        }
        self.response.get_or_insert_with(|| skeleton(&ResponseRequest::default(), "", 0))
    }

    fn next_output_index(&mut self) -> u32 {
        u32::try_from(self.started(None).output.len()).unwrap_or(u32::MAX)
    }

    fn chunk(&mut self, chunk: ChatCompletionChunk) {
        self.started(Some(&chunk));
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content.filter(|text| !text.is_empty()) {
                self.text(text);
            }
            for delta in choice.delta.tool_calls.into_iter().flatten() {
                let function = delta.function.unwrap_or_default();
                self.call(delta.index, delta.id, function.name, function.arguments.unwrap_or_default());
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(reason);
            }
        }
    }

    fn text(&mut self, delta: String) {
        self.close_call();
        if self.message.is_none() {
            let output_index = self.next_output_index();
            let item_id = new_id("msg_");
            let item = OutputItem::Message {
                id: item_id.clone(),
                role: "assistant".into(),
                status: ItemStatus::InProgress,
                content: Vec::new(),
            };
            self.started(None).output.push(item.clone());
            self.emit(ResponseEventKind::OutputItemAdded { output_index, item });
            self.emit(ResponseEventKind::ContentPartAdded {
                item_id: item_id.clone(),
                output_index,
                content_index: 0,
                part: OutputContent::text(""),
            });
            self.message = Some((output_index, item_id, String::new()));
        }
        if let Some((output_index, item_id, text)) = &mut self.message {
            text.push_str(&delta);
            let event = ResponseEventKind::OutputTextDelta {
                item_id: item_id.clone(),
                output_index: *output_index,
                content_index: 0,
                delta,
                logprobs: Vec::new(),
            };
            self.emit(event);
        }
    }

    fn call(&mut self, index: u32, id: Option<String>, name: Option<String>, arguments: String) {
        if self.open_call != Some(index) && !self.calls.iter().any(|(started, _)| *started == index) {
            self.close_message();
            self.close_call();
            let output_index = self.next_output_index();
            let call = OpenCall {
                output_index,
                item_id: new_id("fc_"),
                call_id: id.clone().unwrap_or_else(|| new_id("call_")),
                name: name.clone().unwrap_or_default(),
                arguments: String::new(),
            };
            let item = OutputItem::FunctionCall {
                id: call.item_id.clone(),
                call_id: call.call_id.clone(),
                name: call.name.clone(),
                arguments: String::new(),
                status: ItemStatus::InProgress,
            };
            self.started(None).output.push(item.clone());
            self.emit(ResponseEventKind::OutputItemAdded { output_index, item });
            self.calls.push((index, call));
            self.open_call = Some(index);
        }
        if arguments.is_empty() {
            return;
        }
        let Some((_, call)) = self.calls.iter_mut().find(|(started, _)| *started == index) else { return };
        call.arguments.push_str(&arguments);
        let event = ResponseEventKind::FunctionCallArgumentsDelta {
            item_id: call.item_id.clone(),
            output_index: call.output_index,
            delta: arguments,
        };
        self.emit(event);
    }

    fn item_status(&self) -> ItemStatus {
        item_status(ending(self.finish).0)
    }

    fn close_message(&mut self) {
        let Some((output_index, item_id, text)) = self.message.take() else { return };
        let part = OutputContent::text(text.clone());
        let item = OutputItem::Message {
            id: item_id.clone(),
            role: "assistant".into(),
            status: self.item_status(),
            content: vec![part.clone()],
        };
        self.emit(ResponseEventKind::OutputTextDone {
            item_id: item_id.clone(),
            output_index,
            content_index: 0,
            text,
            logprobs: Vec::new(),
        });
        self.emit(ResponseEventKind::ContentPartDone { item_id, output_index, content_index: 0, part });
        self.done(output_index, item);
    }

    fn close_call(&mut self) {
        let Some(index) = self.open_call.take() else { return };
        let Some((_, call)) = self.calls.iter().find(|(started, _)| *started == index) else { return };
        let item = OutputItem::FunctionCall {
            id: call.item_id.clone(),
            call_id: call.call_id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            status: ItemStatus::Completed,
        };
        let (item_id, output_index, arguments) = (call.item_id.clone(), call.output_index, call.arguments.clone());
        self.emit(ResponseEventKind::FunctionCallArgumentsDone { item_id, output_index, arguments });
        self.done(output_index, item);
    }

    /// Ends an item: its final form goes into the response and out as `output_item.done`.
    fn done(&mut self, output_index: u32, item: OutputItem) {
        if let Some(slot) = self.started(None).output.get_mut(output_index as usize) {
            *slot = item.clone();
        }
        self.emit(ResponseEventKind::OutputItemDone { output_index, item });
    }

    fn finish(&mut self) {
        self.started(None);
        self.close_message();
        self.close_call();
        let (status, incomplete) = ending(self.finish);
        let usage = self.usage.map(response_usage);
        // A call's arguments may have grown after it was closed (interleaved deltas).
        let arguments: Vec<(u32, String)> =
            self.calls.iter().map(|(_, call)| (call.output_index, call.arguments.clone())).collect();
        let response = self.started(None);
        for (output_index, grown) in arguments {
            if let Some(OutputItem::FunctionCall { arguments, .. }) = response.output.get_mut(output_index as usize) {
                *arguments = grown;
            }
        }
        response.status = status;
        response.incomplete_details = incomplete;
        response.usage = usage;
        let response = Box::new(response.clone());
        self.emit(match status {
            ResponseStatus::Incomplete => ResponseEventKind::Incomplete { response },
            _ => ResponseEventKind::Completed { response },
        });
    }
}
