//! A streamed answer: replays of whole answers (cached, or buffered for validation), and the
//! live stream, which settles its attempt and stores its answer when it ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use super::call::LiveStart;
use super::settle::{AttemptGuard, CallTally, Measured, Settlement};
use crate::cache::{AnswerOrigin, CacheKey, CachedAnswer, RequestDigest, ResponseCache};
use crate::error::{Error, Result};
use crate::metadata::{mark_cached, CallMetadata};
use crate::types::{assemble, chunks_of, is_usage_only, ChatCompletionChunk, ChunkStream, FinishReason, Usage};

/// Puts the call's metadata on the first chunk.
pub(super) fn with_metadata(mut chunks: Vec<ChatCompletionChunk>, metadata: &CallMetadata) -> Vec<ChatCompletionChunk> {
    if let Some(first) = chunks.first_mut() {
        metadata.attach(&mut first.extra);
    }
    chunks
}

/// Chunks already in hand, as a stream.
pub(super) fn replay(chunks: Vec<ChatCompletionChunk>) -> ChunkStream {
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}

/// A cached answer replayed chunk by chunk, in the chunking it was first streamed with (or
/// as a stream of it would have been chunked), every chunk marked as cached.
pub(super) fn replay_cached(answer: &CachedAnswer, metadata: &CallMetadata, include_usage: bool) -> ChunkStream {
    let chunks = match &answer.chunks {
        Some(chunks) => chunks.iter().filter(|chunk| include_usage || !is_usage_only(chunk)).cloned().collect(),
        None => chunks_of(&answer.completion, include_usage),
    };
    let mut chunks = with_metadata(chunks, metadata);
    for chunk in &mut chunks {
        mark_cached(&mut chunk.extra);
    }
    replay(chunks)
}

/// Where a live stream's answer goes if the stream completes.
pub(super) struct PendingStore {
    pub cache: Arc<ResponseCache>,
    pub digest: RequestDigest,
    pub key: CacheKey,
    /// The route's reasons, for the hits that replay it.
    pub reasons: Vec<String>,
    /// Spent on the call's attempts before this one.
    pub spent_before: f64,
}

/// Run once a live stream has delivered its answer whole (not when it breaks or is dropped).
pub(super) type OnServed = Box<dyn FnOnce() + Send>;

/// A live stream and what it needs to settle.
pub(super) fn live_stream(
    start: LiveStart,
    tally: CallTally,
    store: Option<PendingStore>,
    on_served: Option<OnServed>,
    metadata: &CallMetadata,
    include_usage: bool,
) -> ChunkStream {
    let LiveStart { held, rest, guard, started } = start;
    let stored = store.map(|store| (store, held.clone()));
    let held: VecDeque<_> =
        with_metadata(held.into_iter().filter(|chunk| include_usage || !is_usage_only(chunk)).collect(), metadata)
            .into();
    let live = LiveStream {
        held,
        rest,
        guard: Some(guard),
        tally,
        include_usage,
        started,
        delivered: 0,
        observed: Observed::default(),
        stored,
        on_served,
    };
    Box::pin(futures::stream::unfold(live, |mut live| async move {
        let item = live.next().await?;
        Some((item, live))
    }))
}

/// What a live stream has seen so far.
#[derive(Default)]
struct Observed {
    usage: Option<Usage>,
    output_chars: usize,
    /// Chunks that carried content.
    content_chunks: u32,
    finish_reason: Option<FinishReason>,
}

struct LiveStream {
    /// The cache slot, and every chunk so far, for storing the answer at the end.
    stored: Option<(PendingStore, Vec<ChatCompletionChunk>)>,
    on_served: Option<OnServed>,
    held: VecDeque<ChatCompletionChunk>,
    rest: ChunkStream,
    guard: Option<AttemptGuard>,
    tally: CallTally,
    include_usage: bool,
    started: Instant,
    delivered: usize,
    observed: Observed,
}

impl LiveStream {
    fn observe(&mut self, chunk: &ChatCompletionChunk) {
        if let Some(usage) = chunk.usage {
            self.observed.usage = Some(usage);
        }
        for choice in &chunk.choices {
            let content = choice.delta.content.as_deref().map_or(0, str::len);
            self.observed.output_chars += content;
            self.observed.content_chunks += u32::from(content > 0);
            if let Some(reason) = choice.finish_reason {
                self.observed.finish_reason = Some(reason);
            }
        }
    }

    async fn next(&mut self) -> Option<Result<ChatCompletionChunk>> {
        loop {
            if let Some(chunk) = self.held.pop_front() {
                self.observe(&chunk);
                self.delivered += 1;
                return Some(Ok(chunk));
            }
            // The guard stays in `self` across the await: a stream dropped there settles it in
            // `Drop`, with what was generated so far.
            self.guard.as_ref()?;
            match self.rest.next().await {
                Some(Ok(chunk)) => {
                    self.observe(&chunk);
                    if let Some((_, chunks)) = &mut self.stored {
                        chunks.push(chunk.clone());
                    }
                    if !self.include_usage && is_usage_only(&chunk) {
                        continue;
                    }
                    self.delivered += 1;
                    return Some(Ok(chunk));
                }
                Some(Err(err)) => {
                    let mut guard = self.guard.take()?;
                    let measured = self.measured(&guard);
                    guard.settle(Settlement::Broke(&err), measured);
                    return Some(Err(Error::StreamInterrupted {
                        tier: guard.tier().to_string(),
                        chunks_delivered: self.delivered,
                        source: Box::new(err),
                    }));
                }
                None => {
                    let mut guard = self.guard.take()?;
                    // A grammar-trusted answer is valid once complete; cut off by max_tokens it
                    // may be half a JSON value. The caller has it, with finish_reason `length`;
                    // the ledger says so, and the cache does not keep it.
                    let cut_off = guard.grammar_trusted && self.observed.finish_reason == Some(FinishReason::Length);
                    if cut_off {
                        guard.note = Some("served live unvalidated, and cut off by max_tokens".into());
                        self.stored = None;
                    }
                    let measured = self.measured(&guard);
                    let cost = guard.settle(Settlement::Served, measured);
                    self.tally.served();
                    if let Some(on_served) = self.on_served.take() {
                        on_served();
                    }
                    if let Some((store, chunks)) = self.stored.take() {
                        // Only a stream that ran to its end is stored: never a broken one.
                        let origin = AnswerOrigin {
                            tier: guard.tier(),
                            model: guard.model().to_owned(),
                            cost_usd: store.spent_before + cost,
                            counterfactual_llm_cost_usd: guard.counterfactual_usd(),
                            reasons: store.reasons,
                        };
                        let answer = CachedAnswer::new(assemble(&chunks), Some(chunks), origin);
                        store.cache.insert(store.digest, store.key, answer).await;
                    }
                    return None;
                }
            }
        }
    }

    /// What a stream cut off by its caller had generated: its usage if a chunk reported one,
    /// else an estimate from the text delivered (at least a token per content chunk).
    fn measured_so_far(&self, guard: &AttemptGuard) -> Measured {
        let mut measured = self.measured(guard);
        if measured.estimated {
            let tokens = measured.usage.completion_tokens.max(self.observed.content_chunks);
            measured.usage = Usage::new(measured.usage.prompt_tokens, tokens);
        }
        measured
    }

    fn measured(&self, guard: &AttemptGuard) -> Measured {
        let latency = self.started.elapsed();
        match self.observed.usage {
            Some(usage) => Measured { usage, estimated: false, latency },
            None => {
                let usage = Usage::new(guard.estimated_prompt_tokens, (self.observed.output_chars / 4) as u32);
                Measured { usage, estimated: true, latency }
            }
        }
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            let measured = self.measured_so_far(&guard);
            guard.settle(Settlement::Cancelled, measured);
        }
    }
}
