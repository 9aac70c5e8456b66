//! Completions and streams of chunks, each as the other: the one place they are converted.

use std::pin::Pin;

use futures::Stream;

use super::{
    new_id, AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, Delta, FinishReason,
    FunctionCall, Role, ToolCall,
};
use crate::error::Result;

/// A stream of completion chunks, as every backend and the client produce them.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatCompletionChunk>> + Send>>;

/// Whether a chunk is the final usage-only one (no choices).
pub fn is_usage_only(chunk: &ChatCompletionChunk) -> bool {
    chunk.choices.is_empty() && chunk.usage.is_some()
}

/// Rebuilds a completion from its stream.
pub fn assemble(chunks: &[ChatCompletionChunk]) -> ChatCompletion {
    let mut content: Option<String> = None;
    let mut calls: Vec<ToolCall> = Vec::new();
    let mut finish_reason = FinishReason::Stop;
    let mut usage = None;
    for chunk in chunks {
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
        for choice in &chunk.choices {
            if let Some(text) = &choice.delta.content {
                content.get_or_insert_with(String::new).push_str(text);
            }
            for delta in choice.delta.tool_calls.iter().flatten() {
                let index = delta.index as usize;
                while calls.len() <= index {
                    calls.push(ToolCall {
                        id: String::new(),
                        kind: "function".into(),
                        function: FunctionCall { name: String::new(), arguments: String::new() },
                    });
                }
                let Some(call) = calls.get_mut(index) else { continue };
                if let Some(id) = &delta.id {
                    call.id.push_str(id);
                }
                if let Some(function) = &delta.function {
                    call.function.name.push_str(function.name.as_deref().unwrap_or(""));
                    call.function.arguments.push_str(function.arguments.as_deref().unwrap_or(""));
                }
            }
            if let Some(reason) = choice.finish_reason {
                finish_reason = reason;
            }
        }
    }
    let first = chunks.first();
    ChatCompletion {
        id: first.map(|chunk| chunk.id.clone()).unwrap_or_else(|| new_id("chatcmpl-")),
        object: "chat.completion".into(),
        created: first.map_or(0, |chunk| chunk.created),
        model: first.map(|chunk| chunk.model.clone()).unwrap_or_default(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: Role::Assistant,
                content: if calls.is_empty() {
                    Some(content.unwrap_or_default())
                } else {
                    content.filter(|c| !c.is_empty())
                },
                refusal: None,
                tool_calls: (!calls.is_empty()).then_some(calls),
            },
            finish_reason,
            logprobs: None,
        }],
        usage,
        system_fingerprint: first.and_then(|chunk| chunk.system_fingerprint.clone()),
        extra: Default::default(),
    }
}

/// A completion as the chunks a stream of it would have had: the role, the content, each
/// tool call, the finish reason, and (with `include_usage`) the usage.
pub fn chunks_of(completion: &ChatCompletion, include_usage: bool) -> Vec<ChatCompletionChunk> {
    let chunk = |delta: Delta, finish_reason: Option<FinishReason>| ChatCompletionChunk {
        id: completion.id.clone(),
        object: "chat.completion.chunk".into(),
        created: completion.created,
        model: completion.model.clone(),
        choices: vec![ChunkChoice { index: 0, delta, finish_reason, logprobs: None }],
        usage: None,
        system_fingerprint: completion.system_fingerprint.clone(),
        extra: Default::default(),
    };
    let Some(choice) = completion.choices.first() else { return Vec::new() };
    let mut chunks =
        vec![chunk(Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() }, None)];
    if let Some(content) = choice.message.content.as_deref().filter(|content| !content.is_empty()) {
        chunks.push(chunk(Delta { content: Some(content.to_owned()), ..Delta::default() }, None));
    }
    for (index, call) in choice.message.tool_calls.iter().flatten().enumerate() {
        chunks.push(chunk(Delta::tool_call(index as u32, call.clone()), None));
    }
    chunks.push(chunk(Delta::default(), Some(choice.finish_reason)));
    if include_usage {
        if let Some(usage) = completion.usage {
            chunks.push(ChatCompletionChunk {
                choices: Vec::new(),
                usage: Some(usage),
                ..chunk(Delta::default(), None)
            });
        }
    }
    chunks
}
