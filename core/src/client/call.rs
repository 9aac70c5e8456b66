//! One call's state machine: SLM attempts with fresh seeds, escalation, LLM attempts with
//! backoff, one attempt budget. Generic over how answers are delivered ([`Whole`] or
//! [`Streamed`]), so a whole call can never end with a live stream.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use futures::StreamExt;

use super::reask::{Answered, Chain};
use super::retry::{asks_for_structure, larger_output_budget, OnOverload, RetryPolicy};
use super::settle::{usage_or_estimate, AttemptGuard, CallTally, Measured, Settlement};
use super::{Backend, ClientInner, TierConfig};
use crate::cache::{AnswerOrigin, CachedAnswer};
use crate::error::{Error, Result};
use crate::hints::{is_bare, task_tag};
use crate::ledger::Outcome;
use crate::metadata::{AttemptSummary, CacheStatus, CallMetadata, Reask};
use crate::pool::Visits;
use crate::routing::RouteDecision;
use crate::tier::Tier;
use crate::types::{
    assemble, new_id, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkStream, FinishReason,
    StreamOptions,
};
use crate::validate::Validator;

/// `on_overload = "wait"`: the first pause before asking the engine again, doubled up to the
/// second. Short: a queue place opens as soon as a running request finishes.
const OVERLOAD_FIRST_PAUSE: Duration = Duration::from_millis(10);
const OVERLOAD_MAX_PAUSE: Duration = Duration::from_millis(250);

/// What one attempt fetched from its backend, before validation.
// Made once per attempt and matched at once: boxing a variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Fetched<Kept, Live> {
    /// A complete answer to validate, and what the delivery keeps besides it.
    Complete(ChatCompletion, Kept),
    /// A stream already flowing to the caller (no validator applies).
    Live(Live),
}

/// How a call's answers travel: whole, or as a stream.
pub(super) trait Delivery {
    /// What the caller gets from an accepted answer.
    type Served: Send;
    /// What a complete answer keeps besides its completion: nothing, or the chunks it came as.
    type Kept: Send;
    /// A stream still flowing; [`Infallible`] for whole calls, which never have one.
    type Live: Send;

    /// Asks `backend` once. `hold` is false when no validator applies, or when a local engine's
    /// output grammar settles every one that does ([`grammar_settles`]), so a stream may flow
    /// to the caller as soon as it carries content.
    fn fetch<'a>(
        backend: &'a Backend,
        request: &'a ChatCompletionRequest,
        hold: bool,
        visits: &'a mut Visits,
    ) -> impl Future<Output = Result<Fetched<Self::Kept, Self::Live>>> + Send + 'a;

    fn accept(completion: ChatCompletion, kept: Self::Kept) -> Self::Served;

    /// A live stream, with the attempt's open record, which settles when the stream ends.
    fn go_live(live: Self::Live, guard: AttemptGuard) -> Self::Served;
}

/// A call answered with one completion.
pub(super) struct Whole;

impl Delivery for Whole {
    type Served = ChatCompletion;
    type Kept = ();
    type Live = Infallible;

    async fn fetch<'a>(
        backend: &'a Backend,
        request: &'a ChatCompletionRequest,
        _hold: bool,
        visits: &'a mut Visits,
    ) -> Result<Fetched<(), Infallible>> {
        backend.create(request, visits).await.map(|completion| Fetched::Complete(completion, ()))
    }

    fn accept(completion: ChatCompletion, (): ()) -> ChatCompletion {
        completion
    }

    fn go_live(live: Infallible, _guard: AttemptGuard) -> ChatCompletion {
        match live {}
    }
}

/// A call answered as a stream.
pub(super) struct Streamed;

/// What a streamed call ends with.
// Built once per call and moved straight to the caller: boxing the live variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum StreamServed {
    /// Read to the end (to validate it, or because it ended before any content).
    Buffered { completion: ChatCompletion, chunks: Vec<ChatCompletionChunk> },
    /// Still flowing.
    Live(LiveStart),
}

/// A stream that has begun to carry content: the chunks read so far, the rest, and the
/// attempt's open record.
pub(super) struct LiveStart {
    pub held: Vec<ChatCompletionChunk>,
    pub rest: ChunkStream,
    pub guard: AttemptGuard,
    pub started: Instant,
}

/// A stream read up to its first content.
pub(super) struct Flowing {
    held: Vec<ChatCompletionChunk>,
    rest: ChunkStream,
    started: Instant,
    ttft: Duration,
}

impl Delivery for Streamed {
    type Served = StreamServed;
    type Kept = Vec<ChatCompletionChunk>;
    type Live = Flowing;

    async fn fetch<'a>(
        backend: &'a Backend,
        request: &'a ChatCompletionRequest,
        hold: bool,
        visits: &'a mut Visits,
    ) -> Result<Fetched<Vec<ChatCompletionChunk>, Flowing>> {
        {
            let started = Instant::now();
            let mut streamed = request.clone();
            streamed.stream = Some(true);
            streamed.stream_options = Some(StreamOptions { include_usage: Some(true), ..Default::default() });
            let mut chunks = backend.create_stream(&streamed, visits).await?;
            if hold {
                let held: Vec<ChatCompletionChunk> =
                    chunks.collect::<Vec<_>>().await.into_iter().collect::<Result<_>>()?;
                return Ok(Fetched::Complete(assemble(&held), held));
            }
            // Hold chunks back until one carries content: a failure before then can still
            // fall back, because nothing has reached the caller.
            let mut held = Vec::new();
            loop {
                match chunks.next().await {
                    Some(Ok(chunk)) => {
                        let substantive = carries_output(&chunk);
                        held.push(chunk);
                        if substantive {
                            let ttft = started.elapsed();
                            return Ok(Fetched::Live(Flowing { held, rest: chunks, started, ttft }));
                        }
                    }
                    Some(Err(err)) => return Err(err),
                    // Finished without content: an empty answer, complete.
                    None => return Ok(Fetched::Complete(assemble(&held), held)),
                }
            }
        }
    }

    fn accept(completion: ChatCompletion, chunks: Vec<ChatCompletionChunk>) -> StreamServed {
        StreamServed::Buffered { completion, chunks }
    }

    fn go_live(live: Flowing, mut guard: AttemptGuard) -> StreamServed {
        guard.ttft = Some(live.ttft);
        StreamServed::Live(LiveStart { held: live.held, rest: live.rest, guard, started: live.started })
    }
}

/// Whether nothing is left for `validators` to decide once an answer from `backend` is complete:
/// none applies, or a local engine decodes under a grammar that makes each of them pass.
///
/// Such a stream flows to the caller live. If it is cut off by `max_tokens` before the grammar
/// could close the JSON, the caller gets it as it is, with finish_reason `length` (as OpenAI
/// serves a cut-off structured stream), instead of a retry with a larger budget: the ledger
/// records the attempt as served, and the cache does not keep it (see `live.rs`).
fn grammar_settles(backend: &Backend, request: &ChatCompletionRequest, validators: &[Arc<dyn Validator>]) -> bool {
    validators.is_empty()
        || (matches!(backend, Backend::Local(_))
            && validators.iter().all(|validator| validator.enforced_by_grammar(request)))
}

/// Whether a chunk carries part of the answer (not just the role or usage).
fn carries_output(chunk: &ChatCompletionChunk) -> bool {
    chunk.choices.iter().any(|choice| {
        choice.delta.content.as_deref().is_some_and(|content| !content.is_empty())
            || choice.delta.tool_calls.is_some()
            || choice.finish_reason.is_some()
    })
}

/// The state of one call across its attempts.
pub(super) struct Call<'a> {
    client: &'a ClientInner,
    request: &'a ChatCompletionRequest,
    id: String,
    decision: RouteDecision,
    attempts: Vec<AttemptSummary>,
    next_attempt: u32,
    cache: CacheStatus,
    /// Spent on this call's settled attempts.
    pub(super) spent_usd: f64,
    /// The served attempt's all-LLM counterfactual.
    counterfactual_usd: f64,
    pub(super) tally: CallTally,
    /// For a re-ask: the chain it continues, with the attempts its earlier calls used (and
    /// this re-ask counted in `reasks`).
    chain: Option<Chain>,
    /// The pool endpoints this call used, so a retry avoids those that failed it.
    visits: Visits,
    /// A re-ask that found its chain's budget spent: it gets one attempt, so a re-sent request
    /// is never refused (a caller looping over the same request is not always re-asking).
    overdraft: bool,
}

/// What one attempt produced.
enum Attempted<S> {
    Accepted(S),
    /// A validator rejected the answer; `cut_off_after_prompt` holds the prompt's tokens when
    /// the answer had been cut off by its token budget.
    Rejected {
        reason: String,
        cut_off_after_prompt: Option<u32>,
    },
    Failed(Error),
}

impl<'a> Call<'a> {
    pub(super) fn new(
        client: &'a ClientInner,
        request: &'a ChatCompletionRequest,
        decision: RouteDecision,
        cache: CacheStatus,
    ) -> Self {
        Call {
            client,
            request,
            id: new_id("call-"),
            decision,
            attempts: Vec::new(),
            next_attempt: 1,
            cache,
            spent_usd: 0.0,
            counterfactual_usd: 0.0,
            tally: CallTally::new(client.ledger.clone()),
            chain: None,
            overdraft: false,
            visits: Visits::default(),
        }
    }

    /// Makes this call a re-ask continuing `chain` (its attempt budget, its SLM retries).
    pub(super) fn resuming(mut self, chain: Option<Chain>) -> Self {
        if let Some(chain) = &chain {
            self.decision.reasons.push(format!(
                "re-ask {} of call {}: the caller re-sent the request, rejecting the answer it got; \
                 retried as attempt {} of the call's {}",
                chain.reasks,
                chain.root,
                chain.attempts() + 1,
                self.client.retry.max_attempts
            ));
        }
        self.chain = chain;
        self
    }

    /// The answer this call served, for the re-ask log; `None` if it served none.
    pub(super) fn answered(&self) -> Option<Answered> {
        let served = self.attempts.iter().rev().find(|attempt| attempt.outcome == Outcome::Ok)?;
        let mut chain = self.chain.clone().unwrap_or_else(|| Chain::starting(&self.id));
        for attempt in &self.attempts {
            match attempt.tier {
                Tier::Slm => chain.slm_attempts += 1,
                Tier::Llm => chain.llm_attempts += 1,
            }
        }
        let backend = self.client.tier_config(served.tier);
        Some(Answered {
            call_id: self.id.clone(),
            attempt: served.attempt,
            tier: served.tier,
            backend: backend.map(|config| config.backend.kind().as_str()).unwrap_or_default().to_owned(),
            model: served.model.clone(),
            task: task_tag(self.request).map(str::to_owned),
            counterfactual_usd: self.counterfactual_usd,
            chain,
        })
    }

    /// The `slmkit` field of the response: where it was served, how, and why.
    pub(super) fn metadata(&self) -> CallMetadata {
        let served_by = self.attempts.iter().rev().find(|attempt| attempt.outcome == Outcome::Ok);
        CallMetadata {
            call_id: self.id.clone(),
            tier: served_by.map(|attempt| attempt.tier),
            model: served_by.map(|attempt| attempt.model.clone()),
            attempts: self.attempts.clone(),
            reasons: self.decision.reasons.clone(),
            cache: self.cache,
            reask: self.chain.as_ref().map(|chain| Reask { of: chain.root.clone(), number: chain.reasks }),
        }
    }

    /// What the cache keeps of this call's answer. `reasons` are the route's, before any
    /// escalation.
    pub(super) fn cached_answer(
        &self,
        completion: ChatCompletion,
        chunks: Option<Vec<ChatCompletionChunk>>,
        reasons: Vec<String>,
    ) -> CachedAnswer {
        let served = self.attempts.iter().rev().find(|attempt| attempt.outcome == Outcome::Ok);
        let origin = AnswerOrigin {
            tier: served.map_or(self.decision.tier, |attempt| attempt.tier),
            model: served.map(|attempt| attempt.model.clone()).unwrap_or_default(),
            cost_usd: self.spent_usd,
            counterfactual_llm_cost_usd: self.counterfactual_usd,
            reasons,
        };
        CachedAnswer::new(completion, chunks, origin)
    }

    fn budget_left(&self) -> bool {
        if self.overdraft {
            return self.next_attempt == 1;
        }
        let before = self.chain.as_ref().map_or(0, Chain::attempts);
        before + self.next_attempt <= self.client.retry.max_attempts
    }

    /// Whether a re-ask can still make an attempt on some tier, within its chain's budget.
    fn reask_can_attempt(&self, chain: &Chain, forced_slm: bool) -> bool {
        let retry = &self.client.retry;
        if chain.attempts() >= retry.max_attempts {
            return false;
        }
        let slm_left = self.decision.tier == Tier::Slm
            && self.client.slm.is_some()
            && chain.llm_attempts == 0
            && chain.slm_attempts < retry.slm_attempts;
        let llm_left = !forced_slm && self.client.llm.is_some() && chain.llm_attempts < retry.llm_attempts;
        slm_left || llm_left
    }

    /// Runs the call to an accepted answer or its final error.
    pub(super) async fn run<D: Delivery>(&mut self) -> Result<D::Served> {
        let mut retry = self.client.retry.clone();
        if is_bare(self.request) {
            // The bare model: one attempt, no retries (see `crate::hints::is_bare`).
            retry.slm_attempts = retry.slm_attempts.min(1);
            retry.llm_attempts = retry.llm_attempts.min(1);
        }
        let mut rejections: Vec<String> = Vec::new();
        let mut last_error: Option<Error> = None;
        let forced_slm = self.decision.forced && self.decision.tier == Tier::Slm;
        let chain = self.chain.clone().unwrap_or_default();
        self.overdraft = self.chain.is_some() && !self.reask_can_attempt(&chain, forced_slm);
        let overdraft_on_llm = self.overdraft && self.client.llm.is_some() && !forced_slm;
        if self.overdraft {
            self.decision.reasons.push(format!(
                "the call's attempt budget ({} attempts) is spent: this re-ask gets one attempt, on the {}",
                retry.max_attempts,
                if overdraft_on_llm { Tier::Llm } else { Tier::Slm }
            ));
        }
        // SLM tries are numbered across the chain, so every re-ask on the SLM gets a new seed.
        let slm_tries = match self.overdraft {
            true => chain.slm_attempts..chain.slm_attempts + 1,
            false => chain.slm_attempts..retry.slm_attempts,
        };
        // A chain that reached the LLM stays there: the SLM had its chances.
        let slm_first = self.decision.tier == Tier::Slm
            && match self.overdraft {
                true => !overdraft_on_llm,
                false => chain.llm_attempts == 0,
            };
        if slm_first {
            if let Some(slm) = &self.client.slm {
                let mut output_budget = self.request.max_output_tokens();
                for slm_try in slm_tries {
                    if !self.budget_left() {
                        break;
                    }
                    let request = self.slm_request(slm_try, output_budget, slm);
                    match self.attempt::<D>(Tier::Slm, slm, &request).await? {
                        Attempted::Accepted(served) => return Ok(served),
                        Attempted::Rejected { reason, cut_off_after_prompt } => {
                            rejections.push(reason);
                            // A cut-off answer retried with the same budget is cut off again.
                            // Structured output (JSON, tool calls) usually failed only because it
                            // could not close, so it gets room; free text that failed a check
                            // would fail it again at any length, so it escalates.
                            if let Some(prompt_tokens) = cut_off_after_prompt {
                                let larger = match asks_for_structure(self.request) {
                                    true => larger_output_budget(output_budget, prompt_tokens, slm),
                                    false => None,
                                };
                                match larger {
                                    Some(larger) => output_budget = Some(larger),
                                    None => {
                                        self.decision
                                            .reasons
                                            .push("the SLM's rejected answer was cut off by max_tokens".into());
                                        break;
                                    }
                                }
                            }
                        }
                        Attempted::Failed(err) => {
                            if matches!(err, Error::Overloaded { .. })
                                && self.client.retry.on_overload == OnOverload::Reject
                            {
                                return Err(err);
                            }
                            // A new seed does not fix a failing engine or an oversized prompt:
                            // escalate, unless a pool has another endpoint for it.
                            let elsewhere = err.is_retriable() && slm.backend.has_untried_endpoint(&self.visits);
                            last_error = Some(err);
                            if !elsewhere {
                                break;
                            }
                        }
                    }
                }
                if forced_slm {
                    return Err(last_error.unwrap_or(Error::ValidationFailed { reasons: rejections }));
                }
                if self.client.llm.is_some() && self.budget_left() {
                    self.decision.reasons.push(match &last_error {
                        Some(err) => format!("escalated to the LLM after an SLM error: {err}"),
                        None => format!("escalated to the LLM after {} rejected SLM answers", rejections.len()),
                    });
                }
            }
        }
        let Some(llm) = &self.client.llm else {
            return Err(last_error.unwrap_or(Error::ValidationFailed { reasons: rejections }));
        };
        let llm_tries = match self.overdraft {
            true => 0..1,
            false => chain.llm_attempts..retry.llm_attempts,
        };
        // The caller rejected an answer the LLM already gave: the same greedy request would
        // only buy the same answer again, so this re-ask samples like an SLM retry.
        let llm_request = (chain.llm_attempts > 0).then(|| self.resampled(chain.attempts() + 1, llm));
        if let Some(resampled) = &llm_request {
            self.decision.reasons.push(format!(
                "the caller rejected the LLM's answer: this re-ask samples with a new seed{}",
                match resampled.temperature != self.request.temperature {
                    true => format!(" at temperature {}", retry.retry_temperature),
                    false => String::new(),
                }
            ));
        }
        for llm_try in llm_tries {
            if !self.budget_left() {
                break;
            }
            let request = llm_request.as_ref().unwrap_or(self.request);
            match self.attempt::<D>(Tier::Llm, llm, request).await? {
                Attempted::Accepted(served) => return Ok(served),
                Attempted::Rejected { reason, cut_off_after_prompt } => {
                    rejections.push(reason);
                    if cut_off_after_prompt.is_some() {
                        // The same request would be cut off at the same place again.
                        break;
                    }
                }
                Attempted::Failed(err) => {
                    let retriable = err.is_retriable();
                    let wait = retry.backoff(llm_try + 1, err.retry_after());
                    let waited_too_long = err.retry_after().is_some_and(|asked| asked > retry.max_retry_after);
                    last_error = Some(err);
                    if !retriable || waited_too_long || llm_try + 1 >= retry.llm_attempts || !self.budget_left() {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(last_error.unwrap_or(Error::ValidationFailed { reasons: rejections }))
    }

    /// The request for SLM try `slm_try` (0-based): retries get a new seed, greedy requests a
    /// temperature, and both the retry sampling settings, so a retry can answer differently
    /// without drifting into junk; `output_budget` replaces the caller's `max_tokens` after a
    /// cut-off answer.
    fn slm_request(&self, slm_try: u32, output_budget: Option<u32>, slm: &TierConfig) -> ChatCompletionRequest {
        let mut request = self.request.clone();
        if output_budget != self.request.max_output_tokens() {
            if request.max_completion_tokens.is_some() {
                request.max_completion_tokens = output_budget;
            } else {
                request.max_tokens = output_budget;
            }
        }
        if slm_try > 0 {
            resample(&mut request, self.request.seed, slm_try, &self.client.retry, slm);
        }
        request
    }

    /// The caller's request with a retry's sampling (see [`resample`]), for try `number` of
    /// the call's chain.
    fn resampled(&self, number: u32, tier: &TierConfig) -> ChatCompletionRequest {
        let mut request = self.request.clone();
        resample(&mut request, self.request.seed, number, &self.client.retry, tier);
        request
    }

    fn validators_for(&self, tier: Tier) -> Vec<Arc<dyn Validator>> {
        if tier != Tier::Slm || is_bare(self.request) {
            return Vec::new();
        }
        self.client.validators.iter().filter(|validator| validator.applies_to(self.request)).cloned().collect()
    }

    async fn attempt<D: Delivery>(
        &mut self,
        tier: Tier,
        config: &TierConfig,
        request: &ChatCompletionRequest,
    ) -> Result<Attempted<D::Served>> {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.tally.attempted(tier);
        let mut guard = AttemptGuard::new(self.client, &self.id, attempt, tier, config, self.request);
        if let Some(chain) = &self.chain {
            guard.reask_of(&chain.root);
        }
        guard.task_key(self.decision.task_key.as_ref().map(|key| key.key.as_str()));
        let validators = self.validators_for(tier);
        let started = Instant::now();
        let hold = !grammar_settles(&config.backend, request, &validators);
        // Validators apply but the grammar settles them: a live answer is trusted to it.
        guard.grammar_trusted = !hold && !validators.is_empty();
        let mut fetched = D::fetch(&config.backend, request, hold, &mut self.visits).await;
        if tier == Tier::Slm && self.client.retry.on_overload == OnOverload::Wait {
            // The call's timeout, if it has one, ends the wait.
            let mut pause = OVERLOAD_FIRST_PAUSE;
            while matches!(fetched, Err(Error::Overloaded { .. })) {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(OVERLOAD_MAX_PAUSE);
                fetched = D::fetch(&config.backend, request, hold, &mut self.visits).await;
            }
        }
        let latency = started.elapsed();
        if let Err(err) = &fetched {
            self.visits.attempt_failed(err);
        }
        let endpoint = self.visits.take_last();
        guard.endpoint(endpoint.clone());
        let (completion, kept) = match fetched {
            Ok(Fetched::Complete(completion, kept)) => (completion, kept),
            Ok(Fetched::Live(live)) => {
                self.summarise(attempt, tier, config, endpoint, Outcome::Ok, None);
                return Ok(Attempted::Accepted(D::go_live(live, guard)));
            }
            Err(err) => {
                let billed = match &err {
                    // A failed remote attempt still bills its prompt tokens.
                    Error::Api { .. } | Error::Timeout { .. } | Error::MalformedResponse { .. } => {
                        guard.estimated_prompt_tokens
                    }
                    _ => 0,
                };
                let settlement = Settlement::BackendFailed(&err);
                let usage = crate::types::Usage::new(billed, 0);
                self.spent_usd += guard.settle(settlement, Measured { usage, estimated: billed > 0, latency });
                self.summarise(attempt, tier, config, endpoint, settlement.outcome(), Some(err.to_string()));
                return Ok(Attempted::Failed(err));
            }
        };
        let (usage, estimated) = usage_or_estimate(&completion, request);
        let measured = Measured { usage, estimated, latency };
        let cut_off = completion.choices.first().is_some_and(|choice| choice.finish_reason == FinishReason::Length);
        // LLM answers are trusted, except one cut off by max_tokens: that may be half an answer.
        let validators = if tier == Tier::Llm && cut_off { self.validators_for(Tier::Slm) } else { validators };
        for validator in &validators {
            match validator.check(self.request, &completion).await {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    let reason = match cut_off {
                        true => format!("{}: {reason} (the answer was cut off by max_tokens)", validator.name()),
                        false => format!("{}: {reason}", validator.name()),
                    };
                    self.spent_usd += guard.settle(Settlement::Rejected(&reason), measured);
                    self.summarise(
                        attempt,
                        tier,
                        config,
                        endpoint.clone(),
                        Outcome::ValidationFailed,
                        Some(reason.clone()),
                    );
                    let cut_off_after_prompt = cut_off.then_some(usage.prompt_tokens);
                    return Ok(Attempted::Rejected { reason, cut_off_after_prompt });
                }
                Err(err) => {
                    self.spent_usd += guard.settle(Settlement::Broke(&err), measured);
                    self.summarise(attempt, tier, config, endpoint.clone(), Outcome::Error, Some(err.to_string()));
                    return Err(match err {
                        err @ Error::Validator { .. } => err,
                        other => Error::Validator { name: validator.name().to_owned(), source: Box::new(other) },
                    });
                }
            }
        }
        self.spent_usd += guard.settle(Settlement::Served, measured);
        self.tally.served();
        self.counterfactual_usd = guard.counterfactual_usd();
        self.summarise(attempt, tier, config, endpoint, Outcome::Ok, None);
        Ok(Attempted::Accepted(D::accept(completion, kept)))
    }

    fn summarise(
        &mut self,
        attempt: u32,
        tier: Tier,
        config: &TierConfig,
        endpoint: Option<String>,
        outcome: Outcome,
        reason: Option<String>,
    ) {
        let model = config.backend.model();
        self.attempts.push(AttemptSummary { attempt, tier, model, endpoint, outcome, reason });
    }
}

/// Sets a retry's sampling on `request`: a new seed (the caller's plus `number`, or a random
/// one), the retry temperature for a greedy request, the retry `top_p` where the caller set
/// none, and `min_p` for a local engine. A new seed alone would reproduce a greedy answer.
fn resample(
    request: &mut ChatCompletionRequest,
    seed: Option<i64>,
    number: u32,
    retry: &RetryPolicy,
    tier: &TierConfig,
) {
    request.seed = Some(match seed {
        Some(seed) => seed.wrapping_add(i64::from(number)),
        None => rand::random::<u32>().into(),
    });
    if request.temperature.is_some_and(|temperature| temperature == 0.0) {
        request.temperature = Some(retry.retry_temperature);
    }
    if request.top_p.is_none() {
        request.top_p = retry.retry_top_p;
    }
    if let (Some(min_p), Backend::Local(_)) = (retry.retry_min_p, &tier.backend) {
        request.extra.entry("min_p").or_insert_with(|| json!(min_p));
    }
}
