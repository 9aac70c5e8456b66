//! The OpenAI-shaped API of the local engine: requests in, completions and chunk streams out.

use serde_json::Map;

use super::engine::{Event, JobEvents, LocalEngine, Sampling};
use super::grammar::{constraint_for, OutputConstraint, OutputKind, ToolCallSyntax};
use super::model::ToolSupport;
use super::output::parse_tool_calls;
use super::sampling::Penalties;
use super::template::arguments_value;
use crate::error::{Error, Result};
use crate::hints::is_bare;
use crate::types::{
    new_id, unix_now, AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage,
    Choice, ChunkChoice, ChunkStream, ContentPart, Delta, FinishReason, MessageContent, ResponseFormat, Role, Tool,
    ToolCall, ToolChoice, ToolChoiceMode, Usage,
};

/// A request turned into what the worker needs, plus what the response needs.
struct Prepared {
    prompt_tokens: u32,
    kind: OutputKind,
    /// How calls are written in this request's output (bare JSON when slmkit prompts the tools).
    syntax: ToolCallSyntax,
    request: ChatCompletionRequest,
}

impl LocalEngine {
    /// Runs a chat completion to the end.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`], [`Error::InvalidSchema`] or [`Error::ContextLength`] for a
    /// request the model cannot serve, checked before decoding; [`Error::Overloaded`] when the
    /// queue is full; [`Error::Inference`] when llama.cpp fails.
    pub async fn create(&self, request: &ChatCompletionRequest) -> Result<ChatCompletion> {
        let (prepared, mut events) = self.enqueue(request).await?;
        let mut text = String::new();
        loop {
            match events.recv().await {
                Some(Event::Text(piece)) => text.push_str(&piece),
                Some(Event::Finished { reason, completion_tokens, cached_prompt_tokens, busy }) => {
                    let usage = Usage::new(prepared.prompt_tokens, completion_tokens)
                        .with_cached_prompt_tokens(cached_prompt_tokens)
                        .with_engine_busy(busy);
                    return Ok(self.completion(&prepared, text, reason, usage));
                }
                Some(Event::Failed(err)) => return Err(err),
                None => return Err(Error::EngineStopped),
            }
        }
    }

    /// Runs a chat completion as a stream of chunks.
    ///
    /// Text streams token by token. Requests with tools in play are held until the output is
    /// complete, because until then it cannot be told apart from a tool call; they then arrive
    /// as one content chunk or as `tool_calls` deltas. Dropping the stream cancels the request
    /// and frees its slot.
    ///
    /// # Errors
    /// As [`LocalEngine::create`], for errors found before decoding starts. Errors after that
    /// arrive as the stream's last item.
    pub async fn create_stream(&self, request: &ChatCompletionRequest) -> Result<ChunkStream> {
        let (prepared, events) = self.enqueue(request).await?;
        let chunks = ChunkMaker { id: new_id("chatcmpl-"), created: unix_now(), model: self.model().name().to_owned() };
        let state =
            StreamState { events, chunks, prepared, engine: self.clone(), phase: Phase::Role, held: String::new() };
        Ok(Box::pin(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })))
    }

    /// Validates and renders the request, checks it fits, and queues it.
    async fn enqueue(&self, request: &ChatCompletionRequest) -> Result<(Prepared, JobEvents)> {
        let engine = self.clone();
        let request = request.clone();
        // Rendering and tokenizing a 25k-token prompt takes milliseconds, and turning a schema
        // into a grammar can take longer: both stay off the runtime and off the engine's worker
        // thread, which only parses the finished grammar. The schema limits bound the work; the
        // timeout bounds the wait for whatever they let through.
        let limit = self.schema_limits().grammar_timeout;
        let preparing = tokio::task::spawn_blocking(move || engine.prepare(request));
        let (prepared, job) = tokio::time::timeout(limit, preparing)
            .await
            .map_err(|_| Error::RequestTooLarge {
                param: "response_format/tools".into(),
                reason: format!(
                    "turning the request's schemas into a grammar took more than {} ms (grammar_timeout_s)",
                    limit.as_millis()
                ),
            })?
            .map_err(|err| Error::Inference(format!("request preparation panicked: {err}")))??;
        let events = self.submit(job.prompt, job.sampling, job.constraint, job.max_tokens, job.stops)?;
        Ok((prepared, events))
    }

    fn prepare(&self, request: ChatCompletionRequest) -> Result<(Prepared, PreparedJob)> {
        request.validate()?;
        reject_non_text(&request, self.model().name())?;
        let prompted_tools = self.model().tool_support() == ToolSupport::Prompt && !request.active_tools().is_empty();
        let syntax = if prompted_tools { ToolCallSyntax::BareJson } else { self.model().tool_syntax() };
        let (mut constraint, kind) = constraint_for(&request, syntax, self.schema_limits())?;
        let bare = is_bare(&request);
        let mut messages = std::borrow::Cow::Borrowed(&request.messages);
        if bare {
            // The bare model: nothing is enforced while decoding; what the grammar would have
            // enforced is asked for in the prompt, as a plain llama.cpp caller would ask.
            constraint = OutputConstraint::None;
            if let Some(instruction) = bare_instruction(&request) {
                messages = std::borrow::Cow::Owned(with_system_note(&request.messages, &instruction));
            }
        }
        let prompt_text = if prompted_tools {
            let messages = with_prompted_tools(&messages, request.active_tools());
            self.model().render_prompt(&messages, &[])?
        } else {
            self.model().render_prompt(&messages, request.active_tools())?
        };
        let prompt = self.model().tokenize(&prompt_text);
        let prompt_tokens = prompt.len() as u32;
        let window = self.context_window();
        let max_tokens = match request.max_output_tokens() {
            Some(max_tokens) => max_tokens,
            None => window.saturating_sub(prompt_tokens),
        };
        if max_tokens == 0 || prompt_tokens.saturating_add(max_tokens) > window {
            return Err(Error::ContextLength { prompt_tokens, max_tokens: max_tokens.max(1), context_window: window });
        }
        let sampling = Sampling {
            temperature: request.temperature.unwrap_or(1.0),
            top_p: request.top_p,
            min_p: min_p_of(&request)?,
            seed: request.seed.map(fold_seed).unwrap_or_else(rand::random),
            penalties: penalties_of(&request, self.default_penalties())?,
            full_grammar: self.full_grammar(),
        };
        let mut stops = request.stop_sequences();
        for marker in self.model().stop_markers() {
            if !stops.contains(marker) {
                stops.push(marker.clone());
            }
        }
        let job = PreparedJob { prompt, sampling, constraint, max_tokens, stops };
        Ok((Prepared { prompt_tokens, kind, syntax, request }, job))
    }

    fn completion(&self, prepared: &Prepared, text: String, reason: FinishReason, usage: Usage) -> ChatCompletion {
        let (content, tool_calls, finish_reason) = self.interpret(prepared, text, reason);
        ChatCompletion {
            id: new_id("chatcmpl-"),
            object: "chat.completion".to_owned(),
            created: unix_now(),
            model: self.model().name().to_owned(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: Role::Assistant,
                    content,
                    refusal: None,
                    tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                },
                finish_reason,
                logprobs: None,
            }],
            usage: Some(usage),
            system_fingerprint: None,
            extra: Map::new(),
        }
    }

    /// Splits finished output into content and tool calls.
    fn interpret(
        &self,
        prepared: &Prepared,
        text: String,
        reason: FinishReason,
    ) -> (Option<String>, Vec<ToolCall>, FinishReason) {
        if prepared.kind == OutputKind::Text {
            return (Some(text), Vec::new(), reason);
        }
        let parsed = parse_tool_calls(&text, prepared.syntax, prepared.request.active_tools());
        if parsed.tool_calls.is_empty() {
            // A forced call cut short by max_tokens stays text, with finish_reason "length".
            return (Some(text), Vec::new(), reason);
        }
        let reason = if reason == FinishReason::Stop { FinishReason::ToolCalls } else { reason };
        (parsed.content, parsed.tool_calls, reason)
    }
}

struct PreparedJob {
    prompt: Vec<llama_cpp_2::token::LlamaToken>,
    sampling: Sampling,
    constraint: OutputConstraint,
    max_tokens: u32,
    stops: Vec<String>,
}

/// llama.cpp's `min_p`, an extension to OpenAI's parameters that llama.cpp's server and vLLM
/// accept as well; slmkit's retries set it.
fn min_p_of(request: &ChatCompletionRequest) -> Result<Option<f64>> {
    match request.extra.get("min_p") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(min_p) if (0.0..=1.0).contains(&min_p) => Ok(Some(min_p)),
            _ => Err(Error::invalid_request(format!("min_p must be a number from 0 to 1, got {value}"), Some("min_p"))),
        },
    }
}

/// OpenAI's `frequency_penalty` and `presence_penalty` and llama.cpp's `repeat_penalty`, each
/// the request's where it sets one and the engine's default otherwise; `None` when all are
/// neutral. A value out of range is an invalid request naming the parameter.
fn penalties_of(request: &ChatCompletionRequest, defaults: Penalties) -> Result<Option<Penalties>> {
    let number = |param: &'static str, default: f32| -> Result<f32> {
        match request.extra.get(param) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(value) => value
                .as_f64()
                .map(|number| number as f32)
                .ok_or_else(|| Error::invalid_request(format!("{param} must be a number, got {value}"), Some(param))),
        }
    };
    let penalties = Penalties {
        frequency: number("frequency_penalty", defaults.frequency)?,
        presence: number("presence_penalty", defaults.presence)?,
        repeat: number("repeat_penalty", defaults.repeat)?,
    };
    let checked = penalties.check().map_err(|(param, message)| Error::invalid_request(message, Some(param)))?;
    Ok(checked.active())
}

/// The tool preamble slmkit writes for a model whose template ignores `tools` (the README's
/// "Tool support is a property of the loaded model").
const PROMPTED_TOOLS_PREAMBLE: &str = "You can call these functions. Their signatures, as JSON:";
const PROMPTED_TOOLS_INSTRUCTION: &str = "To call a function, answer with only a JSON object \
{\"name\": <function name>, \"arguments\": <arguments object>} and nothing else. \
Otherwise, answer normally.";

/// The conversation for a model without template tool support: the tools described in the
/// system message, earlier calls written as the JSON the model is asked for, and tool results
/// as user turns.
fn with_prompted_tools(messages: &[ChatMessage], tools: &[Tool]) -> Vec<ChatMessage> {
    let signatures: Vec<String> = tools.iter().map(|tool| serde_json::json!(tool.function).to_string()).collect();
    let preamble = format!("{PROMPTED_TOOLS_PREAMBLE}\n{}\n{PROMPTED_TOOLS_INSTRUCTION}", signatures.join("\n"));
    let mut rewritten = Vec::with_capacity(messages.len() + 1);
    let mut rest = messages;
    match messages.first() {
        Some(first) if matches!(first.role, Role::System | Role::Developer) => {
            rewritten.push(ChatMessage::system(format!("{}\n\n{preamble}", first.text())));
            rest = &messages[1..];
        }
        _ => rewritten.push(ChatMessage::system(preamble)),
    }
    for message in rest {
        match message.role {
            Role::Tool => rewritten.push(ChatMessage::user(format!("Function result:\n{}", message.text()))),
            Role::Assistant if message.tool_calls.as_ref().is_some_and(|calls| !calls.is_empty()) => {
                let calls: Vec<String> = message
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|call| {
                        serde_json::json!({"name": call.function.name, "arguments": arguments_value(call)}).to_string()
                    })
                    .collect();
                rewritten.push(ChatMessage::assistant(calls.join("\n")));
            }
            _ => rewritten.push(message.clone()),
        }
    }
    rewritten
}

/// What a bare call (see [`is_bare`]) states in its prompt instead of enforcing by grammar:
/// the `response_format` schema, or the tool call the caller forced. `None` when the request
/// asks for neither.
fn bare_instruction(request: &ChatCompletionRequest) -> Option<String> {
    if !request.active_tools().is_empty() {
        return match &request.tool_choice {
            Some(ToolChoice::Named(named)) => {
                Some(format!("Answer with a call of the function {}.", named.function.name))
            }
            Some(ToolChoice::Mode(ToolChoiceMode::Required)) => Some("Answer with a function call.".to_owned()),
            _ => None,
        };
    }
    match &request.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some("Answer with only a JSON object.".to_owned()),
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(match &json_schema.schema {
            Some(schema) => format!("Answer with only a JSON value matching this JSON Schema:\n{schema}"),
            None => "Answer with only a JSON object.".to_owned(),
        }),
    }
}

/// `messages` with `note` appended to the system message (or in a new one, first).
fn with_system_note(messages: &[ChatMessage], note: &str) -> Vec<ChatMessage> {
    let mut rewritten = messages.to_vec();
    match rewritten.first_mut() {
        Some(first) if matches!(first.role, Role::System | Role::Developer) => {
            *first = ChatMessage {
                content: Some(MessageContent::Text(format!("{}\n\n{note}", first.text()))),
                ..first.clone()
            };
        }
        _ => rewritten.insert(0, ChatMessage::system(note)),
    }
    rewritten
}

/// OpenAI seeds are 64-bit; llama.cpp's are 32. Fold rather than truncate so high bits count.
fn fold_seed(seed: i64) -> u32 {
    let bits = seed as u64;
    (bits ^ (bits >> 32)) as u32
}

/// The local engine reads text only: images, audio and files are an error, not silently dropped.
fn reject_non_text(request: &ChatCompletionRequest, model: &str) -> Result<()> {
    for (index, message) in request.messages.iter().enumerate() {
        if let Some(MessageContent::Parts(parts)) = &message.content {
            for part in parts {
                let kind = match part {
                    ContentPart::Text { .. } | ContentPart::Refusal { .. } => continue,
                    ContentPart::ImageUrl { .. } => "image",
                    ContentPart::InputAudio { .. } => "audio",
                    ContentPart::File { .. } => "file",
                };
                let param = format!("messages[{index}].content");
                return Err(Error::invalid_request(
                    format!("{param} holds {kind} input, but the local model {model} reads text only"),
                    Some(&param),
                ));
            }
        }
    }
    Ok(())
}

struct ChunkMaker {
    id: String,
    created: u64,
    model: String,
}

impl ChunkMaker {
    fn chunk(&self, delta: Delta, finish_reason: Option<FinishReason>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice { index: 0, delta, finish_reason, logprobs: None }],
            usage: None,
            system_fingerprint: None,
            extra: Map::new(),
        }
    }

    fn usage_chunk(&self, usage: Usage) -> ChatCompletionChunk {
        ChatCompletionChunk { choices: Vec::new(), usage: Some(usage), ..self.chunk(Delta::default(), None) }
    }
}

enum Phase {
    Role,
    Streaming,
    /// Chunks computed at the end, released one per poll.
    Draining(std::vec::IntoIter<ChatCompletionChunk>),
    Done,
}

struct StreamState {
    events: JobEvents,
    chunks: ChunkMaker,
    prepared: Prepared,
    engine: LocalEngine,
    phase: Phase,
    /// Output held back while tools are in play.
    held: String,
}

impl StreamState {
    async fn next(&mut self) -> Option<Result<ChatCompletionChunk>> {
        loop {
            match &mut self.phase {
                Phase::Done => return None,
                Phase::Role => {
                    self.phase = Phase::Streaming;
                    let delta = Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() };
                    return Some(Ok(self.chunks.chunk(delta, None)));
                }
                Phase::Draining(rest) => match rest.next() {
                    Some(chunk) => return Some(Ok(chunk)),
                    None => self.phase = Phase::Done,
                },
                Phase::Streaming => match self.events.recv().await {
                    Some(Event::Text(text)) if self.prepared.kind == OutputKind::Text => {
                        let delta = Delta { content: Some(text), ..Delta::default() };
                        return Some(Ok(self.chunks.chunk(delta, None)));
                    }
                    Some(Event::Text(text)) => self.held.push_str(&text),
                    Some(Event::Finished { reason, completion_tokens, cached_prompt_tokens, busy }) => {
                        let usage = Usage::new(self.prepared.prompt_tokens, completion_tokens)
                            .with_cached_prompt_tokens(cached_prompt_tokens)
                            .with_engine_busy(busy);
                        let closing = self.closing_chunks(reason, usage);
                        self.phase = Phase::Draining(closing.into_iter());
                    }
                    Some(Event::Failed(err)) => {
                        self.phase = Phase::Done;
                        return Some(Err(err));
                    }
                    None => {
                        self.phase = Phase::Done;
                        return Some(Err(Error::EngineStopped));
                    }
                },
            }
        }
    }

    fn closing_chunks(&mut self, reason: FinishReason, usage: Usage) -> Vec<ChatCompletionChunk> {
        let mut closing = Vec::new();
        let mut finish_reason = reason;
        if self.prepared.kind != OutputKind::Text {
            let held = std::mem::take(&mut self.held);
            let (content, calls, reason) = self.engine.interpret(&self.prepared, held, reason);
            finish_reason = reason;
            if let Some(content) = content.filter(|content| !content.is_empty()) {
                closing.push(self.chunks.chunk(Delta { content: Some(content), ..Delta::default() }, None));
            }
            for (index, call) in calls.into_iter().enumerate() {
                closing.push(self.chunks.chunk(Delta::tool_call(index as u32, call), None));
            }
        }
        closing.push(self.chunks.chunk(Delta::default(), Some(finish_reason)));
        if self.prepared.request.include_usage() {
            closing.push(self.chunks.usage_chunk(usage));
        }
        closing
    }
}
