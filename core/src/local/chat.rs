//! The OpenAI-shaped API of the local engine: requests in, completions and chunk streams out.

use serde_json::Map;
use tokio::sync::mpsc::UnboundedReceiver;

use super::engine::{Event, LocalEngine, Sampling};
use super::grammar::{constraint_for, OutputConstraint, OutputKind};
use super::output::parse_tool_calls;
use crate::error::{Error, Result};
use crate::types::{
    new_id, unix_now, AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
    ChunkChoice, ChunkStream, ContentPart, Delta, FinishReason, MessageContent, Role, ToolCall, Usage,
};

/// A request turned into what the worker needs, plus what the response needs.
struct Prepared {
    prompt_tokens: u32,
    kind: OutputKind,
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
                Some(Event::Finished { reason, completion_tokens, cached_prompt_tokens }) => {
                    let usage = Usage::new(prepared.prompt_tokens, completion_tokens)
                        .with_cached_prompt_tokens(cached_prompt_tokens);
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
    async fn enqueue(&self, request: &ChatCompletionRequest) -> Result<(Prepared, UnboundedReceiver<Event>)> {
        let engine = self.clone();
        let request = request.clone();
        // Rendering and tokenizing a 25k-token prompt takes milliseconds: keep it off the runtime.
        let (prepared, job) = tokio::task::spawn_blocking(move || engine.prepare(request))
            .await
            .map_err(|err| Error::Inference(format!("request preparation panicked: {err}")))??;
        let events = self.submit(job.prompt, job.sampling, job.constraint, job.max_tokens, job.stops)?;
        Ok((prepared, events))
    }

    fn prepare(&self, request: ChatCompletionRequest) -> Result<(Prepared, PreparedJob)> {
        request.validate()?;
        reject_non_text(&request, self.model().name())?;
        let (constraint, kind) = constraint_for(&request, self.model().tool_syntax())?;
        let prompt_text = self.model().render_prompt(&request.messages, request.active_tools())?;
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
            seed: request.seed.map(fold_seed).unwrap_or_else(rand::random),
        };
        let job = PreparedJob { prompt, sampling, constraint, max_tokens, stops: request.stop_sequences() };
        Ok((Prepared { prompt_tokens, kind, request }, job))
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
        let parsed = parse_tool_calls(&text, self.model().tool_syntax(), prepared.request.active_tools());
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
    events: UnboundedReceiver<Event>,
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
                    Some(Event::Finished { reason, completion_tokens, cached_prompt_tokens }) => {
                        let usage = Usage::new(self.prepared.prompt_tokens, completion_tokens)
                            .with_cached_prompt_tokens(cached_prompt_tokens);
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
