//! The client: one call path from request to answer.
//!
//! 1. A request comes in and is routed to the SLM or the LLM tier.
//! 2. An SLM answer is checked by the validators; a rejected one is retried on the SLM with a
//!    new seed, up to a budget, then escalated to the LLM.
//! 3. LLM transport failures that may pass (429, 5xx, timeouts, broken connections) are
//!    retried with jittered exponential backoff, honouring `Retry-After`.
//! 4. One attempt budget covers the whole call, and every attempt is recorded and priced.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::cache::{cache_key, CacheConfig, CacheKey, CachedAnswer, ResponseCache};
use crate::error::{Error, Result};
use crate::ledger::{AttemptRecord, Ledger, Outcome, Pricing, Tier};
use crate::local::{ChunkStream, LocalEngine};
use crate::remote::RemoteBackend;
use crate::routing::{RouteDecision, Router, RoutingConfig, SlmProfile};
use crate::types::{
    new_id, AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, FinishReason,
    FunctionCall, ResponseFormat, Role, StreamOptions, ToolCall, Usage,
};
use crate::validate::{default_validators, Validator};

/// Where a tier's answers come from.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A GGUF model in this process.
    Local(LocalEngine),
    /// An OpenAI-compatible endpoint.
    Remote(RemoteBackend),
}

impl Backend {
    /// `local` or `remote`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
            Backend::Remote(_) => "remote",
        }
    }

    /// The model this backend serves.
    pub fn model(&self) -> String {
        match self {
            Backend::Local(engine) => engine.model().name().to_owned(),
            Backend::Remote(remote) => remote.model().to_owned(),
        }
    }

    /// The id a request's `model` can name to force this tier: a local model's id (its catalog
    /// name or file stem). Remote tiers have none: their model names (`gpt-4o`) are what
    /// frameworks send anyway, so those calls are routed.
    pub fn forcing_id(&self) -> Option<&str> {
        match self {
            Backend::Local(engine) => Some(engine.model().id()),
            Backend::Remote(_) => None,
        }
    }

    /// What identifies this backend's answers in the cache key: the model file, or the
    /// endpoint, model and a fingerprint of the API key.
    pub(crate) fn identity(&self) -> String {
        match self {
            Backend::Local(engine) => format!("local:{}", engine.model().path().display()),
            Backend::Remote(remote) => remote.identity(),
        }
    }

    async fn create(&self, request: &ChatCompletionRequest) -> Result<ChatCompletion> {
        match self {
            Backend::Local(engine) => engine.create(request).await,
            Backend::Remote(remote) => remote.create(request).await,
        }
    }

    async fn create_stream(&self, request: &ChatCompletionRequest) -> Result<ChunkStream> {
        match self {
            Backend::Local(engine) => engine.create_stream(request).await,
            Backend::Remote(remote) => remote.create_stream(request).await,
        }
    }
}

/// A tier: a backend and what it costs.
#[derive(Debug, Clone)]
pub struct TierConfig {
    pub backend: Backend,
    pub pricing: Pricing,
}

/// How hard a call tries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// SLM attempts per call before escalating, the first included. Default 3.
    pub slm_attempts: u32,
    /// LLM attempts per call, the first included. Default 3.
    pub llm_attempts: u32,
    /// Attempts per call across both tiers: the one budget. Default 5.
    pub max_attempts: u32,
    /// First backoff before an LLM retry; doubled each time, with jitter. Default 250 ms.
    pub initial_backoff: Duration,
    /// Default 8 s.
    pub max_backoff: Duration,
    /// A longer `Retry-After` than this ends the call instead of waiting. Default 60 s.
    pub max_retry_after: Duration,
    /// SLM retries of a greedy (temperature 0) request sample at this temperature instead,
    /// since a new seed alone would reproduce the same answer. Default 0.7.
    pub retry_temperature: f64,
    /// Nucleus sampling for SLM retries that set no `top_p` of their own. Default 0.9.
    pub retry_top_p: Option<f64>,
    /// llama.cpp's `min_p` for local SLM retries: tokens below this share of the likeliest
    /// token's probability are never sampled, which keeps a small model's retry from drifting
    /// into junk at a raised temperature. Default 0.05.
    pub retry_min_p: Option<f64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            slm_attempts: 3,
            llm_attempts: 3,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            retry_temperature: 0.7,
            retry_top_p: Some(0.9),
            retry_min_p: Some(0.05),
        }
    }
}

impl RetryPolicy {
    /// The wait before LLM retry number `retry` (1-based): the server's `Retry-After` if it
    /// gave one, else exponential backoff with "equal jitter" (half fixed, half random).
    fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait;
        }
        let exponential = self.initial_backoff.saturating_mul(1 << retry.saturating_sub(1).min(16));
        let capped = exponential.min(self.max_backoff);
        let half = capped / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    slm: Option<TierConfig>,
    llm: Option<TierConfig>,
    validators: Vec<Arc<dyn Validator>>,
    retry: RetryPolicy,
    ledger: Ledger,
    routing: RoutingConfig,
    cache: CacheConfig,
    counterfactual: Option<Pricing>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            slm: None,
            llm: None,
            validators: default_validators(),
            retry: RetryPolicy::default(),
            ledger: Ledger::in_memory(),
            routing: RoutingConfig::default(),
            cache: CacheConfig::default(),
            counterfactual: None,
        }
    }
}

impl ClientBuilder {
    pub fn slm(mut self, backend: Backend, pricing: Pricing) -> Self {
        self.slm = Some(TierConfig { backend, pricing });
        self
    }

    pub fn llm(mut self, backend: Backend, pricing: Pricing) -> Self {
        self.llm = Some(TierConfig { backend, pricing });
        self
    }

    /// Adds a validator to the defaults (JSON, schema and tool-argument checks).
    pub fn validator(mut self, validator: Arc<dyn Validator>) -> Self {
        self.validators.push(validator);
        self
    }

    /// Drops the default validators, keeping only those added after this call.
    pub fn without_default_validators(mut self) -> Self {
        self.validators.clear();
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = ledger;
        self
    }

    /// Sends every call to `tier` instead of scoring it (hard limits and forced routes
    /// still apply).
    pub fn default_route(mut self, tier: Tier) -> Self {
        self.routing.default = Some(tier);
        self
    }

    /// The response cache's configuration (on by default, for deterministic requests).
    pub fn cache(mut self, cache: CacheConfig) -> Self {
        self.cache = cache;
        self
    }

    /// The router's configuration, laid over the defaults.
    pub fn routing(mut self, routing: RoutingConfig) -> Self {
        self.routing = routing;
        self
    }

    /// How the all-LLM counterfactual is priced. Default: the LLM tier's per-token price, or
    /// gpt-4o's list price when the LLM tier is priced by energy (a local stand-in).
    pub fn counterfactual_pricing(mut self, pricing: Pricing) -> Self {
        self.counterfactual = Some(pricing);
        self
    }

    /// # Errors
    /// [`Error::Config`] when no tier is configured, a pricing is invalid, or the retry
    /// budget allows no attempt.
    pub fn build(self) -> Result<Client> {
        if self.slm.is_none() && self.llm.is_none() {
            return Err(Error::Config("a client needs an SLM tier, an LLM tier, or both".into()));
        }
        for tier in self.slm.iter().chain(self.llm.iter()) {
            tier.pricing.validate()?;
        }
        if self.retry.max_attempts == 0 || (self.retry.slm_attempts == 0 && self.retry.llm_attempts == 0) {
            return Err(Error::Config("the retry policy must allow at least one attempt".into()));
        }
        if !self.retry.retry_temperature.is_finite() || !(0.0..=2.0).contains(&self.retry.retry_temperature) {
            return Err(Error::Config("retry_temperature must be from 0 to 2".into()));
        }
        for (name, value) in [("retry_top_p", self.retry.retry_top_p), ("retry_min_p", self.retry.retry_min_p)] {
            if value.is_some_and(|value| !value.is_finite() || !(0.0..=1.0).contains(&value)) {
                return Err(Error::Config(format!("{name} must be from 0 to 1")));
            }
        }
        let counterfactual = self.counterfactual.unwrap_or_else(|| match &self.llm {
            Some(TierConfig { pricing: pricing @ Pricing::PerToken { .. }, .. }) => pricing.clone(),
            _ => Pricing::gpt_4o(),
        });
        counterfactual.validate()?;
        let slm_profile = self.slm.as_ref().map(|tier| match &tier.backend {
            Backend::Local(engine) => SlmProfile {
                context_window: engine.context_window(),
                tokenizer: Some(engine.model().clone()),
                supports_tools: true,
                supports_images: false,
            },
            // The router fills these from its configuration.
            Backend::Remote(_) => {
                SlmProfile { context_window: 0, tokenizer: None, supports_tools: true, supports_images: false }
            }
        });
        let router = Router::new(&self.routing, slm_profile, self.llm.is_some())?;
        let cache = if self.cache.enabled { Some(Arc::new(ResponseCache::new(self.cache)?)) } else { None };
        Ok(Client {
            inner: Arc::new(ClientInner {
                slm: self.slm,
                llm: self.llm,
                validators: self.validators,
                retry: self.retry,
                ledger: self.ledger,
                router,
                cache,
                counterfactual,
            }),
        })
    }
}

/// Routes, validates, retries, escalates and accounts. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    slm: Option<TierConfig>,
    llm: Option<TierConfig>,
    validators: Vec<Arc<dyn Validator>>,
    retry: RetryPolicy,
    ledger: Ledger,
    router: Router,
    cache: Option<Arc<ResponseCache>>,
    counterfactual: Pricing,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("slm", &self.inner.slm.as_ref().map(|tier| tier.backend.model()))
            .field("llm", &self.inner.llm.as_ref().map(|tier| tier.backend.model()))
            .finish_non_exhaustive()
    }
}

/// What happened in one attempt, as the response's `slmkit` metadata shows it.
#[derive(Debug, Clone, serde::Serialize)]
struct AttemptSummary {
    attempt: u32,
    tier: Tier,
    model: String,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The ledger every attempt is recorded in.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// The backend of `tier`, if configured.
    pub fn tier(&self, tier: Tier) -> Option<&TierConfig> {
        match tier {
            Tier::Slm => self.inner.slm.as_ref(),
            Tier::Llm => self.inner.llm.as_ref(),
        }
    }

    /// Where `request` would go, and why, with each signal's contribution.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a malformed routing hint.
    pub fn explain(&self, request: &ChatCompletionRequest) -> Result<RouteDecision> {
        let mut decision = self.inner.router.decide(request)?;
        if !decision.forced {
            if let Some(tier) = self.tier_named(&request.model) {
                decision.tier = tier;
                decision.forced = true;
                decision.signals.clear();
                decision.score = None;
                decision.reasons = vec![format!("the request's model {:?} is the {tier} tier's model", request.model)];
            }
        }
        if self.tier(decision.tier).is_none() {
            let other = other_tier(decision.tier);
            decision.reasons.push(format!("no {} tier is configured, so the {other} tier serves", decision.tier));
            decision.tier = other;
        }
        Ok(decision)
    }

    /// The tier whose local model `model` names (case-insensitive), if any.
    fn tier_named(&self, model: &str) -> Option<Tier> {
        if model.is_empty() {
            return None;
        }
        [Tier::Slm, Tier::Llm].into_iter().find(|tier| {
            self.tier(*tier)
                .and_then(|config| config.backend.forcing_id())
                .is_some_and(|id| id.eq_ignore_ascii_case(model))
        })
    }

    /// Answers `request`: from the cache, or routed, validated, retried and escalated as
    /// configured. Identical concurrent requests that the cache admits share one backend call.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] before any attempt; the last attempt's error when every
    /// attempt failed; [`Error::ValidationFailed`] with every reason when no answer passed and
    /// there was no LLM to escalate to; [`Error::Validator`] when a validator itself broke.
    pub async fn create(&self, request: &ChatCompletionRequest) -> Result<ChatCompletion> {
        request.validate()?;
        let decision = self.explain(request)?;
        let Some((cache, key)) = self.cache_slot(request, &decision) else {
            let mut call = Call::new(self, request, decision, "disabled");
            let completion = call.run(false).await?.into_completion()?;
            return Ok(call.finish(completion));
        };
        let started = Instant::now();
        let metadata = std::sync::Mutex::new(None);
        let (answer, ran) = cache
            .get_or_run(key, async {
                let mut call = Call::new(self, request, decision.clone(), "miss");
                let completion = call.run(false).await?.into_completion()?;
                let answer = call.cached_answer(&completion, None);
                *metadata.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(call.metadata());
                Ok(answer)
            })
            .await;
        let answer = answer.map_err(|shared| Arc::try_unwrap(shared).unwrap_or_else(Error::Shared))?;
        let mut completion = answer.completion.clone();
        let metadata = if ran { metadata.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()) } else { None };
        let metadata = match metadata {
            Some(metadata) => metadata,
            None => self.record_hit(request, &answer, &decision, started.elapsed()),
        };
        completion.extra.insert("slmkit".into(), metadata);
        Ok(completion)
    }

    /// The answer to `request` if the response cache holds it right now, without waiting on
    /// anything; `None` for a miss, a request the cache doesn't take, or an invalid request
    /// (which [`Client::create`] then reports). A hit is recorded in the ledger exactly as
    /// [`Client::create`] records one. Bindings call this first so a hit skips the hop to an
    /// async runtime thread and back.
    pub fn create_if_cached(&self, request: &ChatCompletionRequest) -> Option<ChatCompletion> {
        use futures::FutureExt;
        request.validate().ok()?;
        let decision = self.explain(request).ok()?;
        let (cache, key) = self.cache_slot(request, &decision)?;
        // Timed from here, as `create` times its hits.
        let started = Instant::now();
        let answer = cache.get(&key).now_or_never().flatten()?;
        let mut completion = answer.completion.clone();
        let metadata = self.record_hit(request, &answer, &decision, started.elapsed());
        completion.extra.insert("slmkit".into(), metadata);
        Some(completion)
    }

    /// Answers `request` as a stream of chunks.
    ///
    /// Without a validator that applies, SLM tokens flow as they come. With one, the SLM's
    /// stream is buffered, validated, and only then released. A stream that fails before its
    /// first content reaches the caller falls back (retry or escalation); one that fails after
    /// ends with [`Error::StreamInterrupted`], and the ledger records it. A cached answer
    /// replays chunk by chunk, in the chunking it was first streamed with.
    ///
    /// # Errors
    /// As [`Client::create`], for failures before the stream starts.
    pub async fn create_stream(&self, request: &ChatCompletionRequest) -> Result<ChunkStream> {
        request.validate()?;
        let decision = self.explain(request)?;
        let include_usage = request.include_usage();
        let filter_usage = move |chunk: &ChatCompletionChunk| include_usage || !is_usage_only(chunk);
        let slot = self.cache_slot(request, &decision);
        if let Some((cache, key)) = &slot {
            let started = Instant::now();
            if let Some(answer) = cache.get(key).await {
                let metadata = self.record_hit(request, &answer, &decision, started.elapsed());
                let chunks = match &answer.chunks {
                    Some(chunks) => chunks.iter().filter(|chunk| filter_usage(chunk)).cloned().collect(),
                    None => chunks_of(&answer.completion, include_usage),
                };
                let replay = with_metadata(chunks, metadata).into_iter().map(|mut chunk| {
                    chunk.extra.entry("slmkit").or_insert_with(|| json!({"cache": "hit"}));
                    Ok(chunk)
                });
                return Ok(Box::pin(futures::stream::iter(replay.collect::<Vec<_>>())));
            }
        }
        let mut call = Call::new(self, request, decision, if slot.is_some() { "miss" } else { "disabled" });
        let served = call.run(true).await?;
        let metadata = call.metadata();
        match served {
            Served::Whole(completion) => {
                if let Some((cache, key)) = slot {
                    cache.insert(key, call.cached_answer(&completion, None)).await;
                }
                let chunks = chunks_of(&completion, include_usage);
                Ok(Box::pin(futures::stream::iter(with_metadata(chunks, metadata).into_iter().map(Ok))))
            }
            Served::Buffered(chunks) => {
                if let Some((cache, key)) = slot {
                    cache.insert(key, call.cached_answer(&assemble(&chunks), Some(chunks.clone()))).await;
                }
                let chunks: Vec<_> = chunks.into_iter().filter(filter_usage).collect();
                Ok(Box::pin(futures::stream::iter(with_metadata(chunks, metadata).into_iter().map(Ok))))
            }
            Served::Live { held, rest, guard, started } => {
                let store = slot.map(|(cache, key)| PendingStore {
                    cache,
                    key,
                    chunks: held.clone(),
                    spent_before: call.spent_usd,
                });
                let held: VecDeque<_> = with_metadata(held.into_iter().filter(filter_usage).collect(), metadata).into();
                let live = LiveStream {
                    held,
                    rest,
                    guard: Some(guard),
                    include_usage,
                    started,
                    delivered: 0,
                    observed: Observed::default(),
                    store,
                };
                Ok(Box::pin(futures::stream::unfold(live, |mut live| async move {
                    let item = live.next().await?;
                    Some((item, live))
                })))
            }
        }
    }

    /// The cache and key for `request`, when the cache admits it.
    fn cache_slot(
        &self,
        request: &ChatCompletionRequest,
        decision: &RouteDecision,
    ) -> Option<(Arc<ResponseCache>, CacheKey)> {
        let cache = self.inner.cache.as_ref()?;
        // `{"slmkit": {"cache": "bypass"}}`: a caller re-asking on purpose (MetaGPT re-sends
        // the identical prompt when parsing fails) must not get the same answer back.
        let bypass = crate::routing::hint(request, "cache") == Some("bypass");
        if bypass || !cache.admits(request) {
            return None;
        }
        let identity = self.tier(decision.tier).map(|tier| tier.backend.identity()).unwrap_or_default();
        Some((Arc::clone(cache), cache_key(request, decision.tier, &identity)))
    }

    /// Records a cache hit (no backend call; the tokens and cost it saved) and returns the
    /// response metadata for it.
    fn record_hit(
        &self,
        request: &ChatCompletionRequest,
        answer: &CachedAnswer,
        decision: &RouteDecision,
        latency: Duration,
    ) -> Value {
        let call_id = new_id("call-");
        let usage = answer.completion.usage.unwrap_or_default();
        let task = crate::routing::task_tag(request);
        self.inner.ledger.record(AttemptRecord {
            outcome: Outcome::CacheHit,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            latency_ms: latency.as_secs_f64() * 1000.0,
            served: true,
            counterfactual_llm_cost_usd: Some(answer.counterfactual_llm_cost_usd),
            saved_cost_usd: Some(answer.cost_usd),
            ..AttemptRecord::new(&call_id, 1, answer.tier, "cache", &answer.model, task)
        });
        json!({
            "call_id": call_id,
            "tier": answer.tier,
            "model": answer.model,
            "attempts": [],
            "reasons": decision.reasons,
            "cache": "hit",
        })
    }

    /// Answers stored in the response cache now.
    pub async fn cached_answers(&self) -> u64 {
        match &self.inner.cache {
            Some(cache) => cache.len().await,
            None => 0,
        }
    }
}

fn other_tier(tier: Tier) -> Tier {
    match tier {
        Tier::Slm => Tier::Llm,
        Tier::Llm => Tier::Slm,
    }
}

/// The answer a call ended with.
// Built once per call and moved straight to the caller: boxing the live variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum Served {
    Whole(ChatCompletion),
    /// A stream, read to the end and validated.
    Buffered(Vec<ChatCompletionChunk>),
    /// A stream still flowing: chunks read so far, the rest, and the attempt's open record.
    Live {
        held: Vec<ChatCompletionChunk>,
        rest: ChunkStream,
        guard: AttemptGuard,
        started: Instant,
    },
}

impl Served {
    fn into_completion(self) -> Result<ChatCompletion> {
        match self {
            Served::Whole(completion) => Ok(completion),
            Served::Buffered(chunks) => Ok(assemble(&chunks)),
            Served::Live { .. } => Err(Error::Inference("internal: a live stream for a non-streaming call".into())),
        }
    }
}

/// The state of one call across its attempts.
struct Call<'a> {
    client: &'a ClientInner,
    request: &'a ChatCompletionRequest,
    id: String,
    decision: RouteDecision,
    attempts: Vec<AttemptSummary>,
    next_attempt: u32,
    cache_status: &'static str,
    /// Spent on this call's finished attempts.
    spent_usd: f64,
    /// The served attempt's all-LLM counterfactual.
    counterfactual_usd: f64,
}

/// What one attempt produced.
enum AttemptResult {
    Accepted(Box<Served>),
    /// A validator rejected the answer; `cut_off_after_prompt` holds the prompt's tokens when
    /// the answer had been cut off by its token budget.
    Rejected {
        reason: String,
        cut_off_after_prompt: Option<u32>,
    },
    Failed(Error),
}

/// Whether the answer must be JSON or tool calls, which a cut-off answer cannot be.
fn asks_for_structure(request: &ChatCompletionRequest) -> bool {
    matches!(request.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }))
        || !request.active_tools().is_empty()
}

/// A bigger output budget for the retry of an answer cut off at `current` tokens: four times
/// as many (doubling often cuts a pretty-printed JSON answer off again), within what the local model's window leaves after the prompt. `None` when it cannot
/// grow (no budget was set, so the window itself cut it off, or the window is full).
fn larger_output_budget(current: Option<u32>, prompt_tokens: u32, slm: &TierConfig) -> Option<u32> {
    let current = current?;
    let grown = current.saturating_mul(4);
    let larger = match &slm.backend {
        Backend::Local(engine) => grown.min(engine.context_window().saturating_sub(prompt_tokens)),
        Backend::Remote(_) => grown,
    };
    (larger > current).then_some(larger)
}

impl<'a> Call<'a> {
    fn new(
        client: &'a Client,
        request: &'a ChatCompletionRequest,
        decision: RouteDecision,
        cache_status: &'static str,
    ) -> Self {
        Call {
            client: &client.inner,
            request,
            id: new_id("call-"),
            decision,
            attempts: Vec::new(),
            next_attempt: 1,
            cache_status,
            spent_usd: 0.0,
            counterfactual_usd: 0.0,
        }
    }

    /// The completion with this call's metadata attached.
    fn finish(&self, mut completion: ChatCompletion) -> ChatCompletion {
        completion.extra.insert("slmkit".into(), self.metadata());
        completion
    }

    /// What the cache keeps of this call's answer.
    fn cached_answer(&self, completion: &ChatCompletion, chunks: Option<Vec<ChatCompletionChunk>>) -> CachedAnswer {
        let served = self.attempts.iter().rev().find(|attempt| attempt.outcome == Outcome::Ok);
        CachedAnswer::new(
            completion.clone(),
            chunks,
            served.map_or(self.decision.tier, |attempt| attempt.tier),
            served.map(|attempt| attempt.model.clone()).unwrap_or_default(),
            self.spent_usd,
            self.counterfactual_usd,
        )
    }

    fn budget_left(&self) -> bool {
        self.next_attempt <= self.client.retry.max_attempts
    }

    async fn run(&mut self, stream: bool) -> Result<Served> {
        let retry = self.client.retry.clone();
        let mut rejections: Vec<String> = Vec::new();
        let mut last_error: Option<Error> = None;
        let forced_slm = self.decision.forced && self.decision.tier == Tier::Slm;
        if self.decision.tier == Tier::Slm {
            if let Some(slm) = &self.client.slm {
                let mut output_budget = self.request.max_output_tokens();
                for slm_try in 0..retry.slm_attempts {
                    if !self.budget_left() {
                        break;
                    }
                    let request = self.slm_request(slm_try, output_budget, slm);
                    match self.attempt(Tier::Slm, slm, &request, stream).await? {
                        AttemptResult::Accepted(served) => return Ok(*served),
                        AttemptResult::Rejected { reason, cut_off_after_prompt } => {
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
                        AttemptResult::Failed(err) => {
                            // A new seed does not fix a failing engine or an oversized prompt: escalate.
                            last_error = Some(err);
                            break;
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
        for llm_try in 0..retry.llm_attempts {
            if !self.budget_left() {
                break;
            }
            match self.attempt(Tier::Llm, llm, self.request, stream).await? {
                AttemptResult::Accepted(served) => return Ok(*served),
                AttemptResult::Rejected { reason, cut_off_after_prompt } => {
                    rejections.push(reason);
                    if cut_off_after_prompt.is_some() {
                        // The same request would be cut off at the same place again.
                        break;
                    }
                }
                AttemptResult::Failed(err) => {
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
            let retry = &self.client.retry;
            request.seed = Some(match self.request.seed {
                Some(seed) => seed.wrapping_add(i64::from(slm_try)),
                None => rand::random::<u32>().into(),
            });
            if request.temperature.is_some_and(|temperature| temperature == 0.0) {
                request.temperature = Some(retry.retry_temperature);
            }
            if request.top_p.is_none() {
                request.top_p = retry.retry_top_p;
            }
            if let (Some(min_p), Backend::Local(_)) = (retry.retry_min_p, &slm.backend) {
                request.extra.entry("min_p").or_insert_with(|| json!(min_p));
            }
        }
        request
    }

    fn validators_for(&self, tier: Tier) -> Vec<Arc<dyn Validator>> {
        if tier != Tier::Slm {
            return Vec::new();
        }
        self.client.validators.iter().filter(|validator| validator.applies_to(self.request)).cloned().collect()
    }

    async fn attempt(
        &mut self,
        tier: Tier,
        config: &TierConfig,
        request: &ChatCompletionRequest,
        stream: bool,
    ) -> Result<AttemptResult> {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let mut guard = AttemptGuard::new(self.client, &self.id, attempt, tier, config, self.request);
        let validators = self.validators_for(tier);
        let started = Instant::now();
        let answer = if !stream {
            config.backend.create(request).await.map(|completion| (completion, None))
        } else {
            let mut streamed = request.clone();
            streamed.stream = Some(true);
            streamed.stream_options = Some(StreamOptions { include_usage: Some(true), ..Default::default() });
            match config.backend.create_stream(&streamed).await {
                Err(err) => Err(err),
                Ok(mut chunks) if validators.is_empty() => {
                    // Hold chunks back until one carries content: a failure before then can
                    // still fall back, because nothing has reached the caller.
                    let mut held = Vec::new();
                    loop {
                        match chunks.next().await {
                            Some(Ok(chunk)) => {
                                let substantive = carries_output(&chunk);
                                held.push(chunk);
                                if substantive {
                                    guard.ttft = Some(started.elapsed());
                                    let summary = self.summary(attempt, tier, config, Outcome::Ok, None);
                                    self.attempts.push(summary);
                                    let live = Served::Live { held, rest: chunks, guard, started };
                                    return Ok(AttemptResult::Accepted(Box::new(live)));
                                }
                            }
                            Some(Err(err)) => break Err(err),
                            None => {
                                // Finished without content: an empty answer, complete.
                                let completion = assemble(&held);
                                break Ok((completion, Some(held)));
                            }
                        }
                    }
                }
                Ok(chunks) => {
                    let collected: Result<Vec<ChatCompletionChunk>> =
                        chunks.collect::<Vec<_>>().await.into_iter().collect();
                    collected.map(|held| (assemble(&held), Some(held)))
                }
            }
        };
        let latency = started.elapsed();
        let (completion, chunks) = match answer {
            Ok(answer) => answer,
            Err(err) => {
                let outcome = if matches!(err, Error::Timeout { .. }) { Outcome::Timeout } else { Outcome::Error };
                let billed = match &err {
                    // A failed remote attempt still bills its prompt tokens.
                    Error::Api { .. } | Error::Timeout { .. } | Error::MalformedResponse { .. } => {
                        estimate_prompt_tokens(request)
                    }
                    _ => 0,
                };
                self.spent_usd += guard.finish(
                    outcome,
                    Some(err.to_string()),
                    Some(&err),
                    Usage::new(billed, 0),
                    billed > 0,
                    latency,
                    false,
                );
                self.attempts.push(self.summary(attempt, tier, config, outcome, Some(err.to_string())));
                return Ok(AttemptResult::Failed(err));
            }
        };
        let (usage, estimated) = usage_or_estimate(&completion, request);
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
                    self.spent_usd += guard.finish(
                        Outcome::ValidationFailed,
                        Some(reason.clone()),
                        None,
                        usage,
                        estimated,
                        latency,
                        false,
                    );
                    self.attempts.push(self.summary(
                        attempt,
                        tier,
                        config,
                        Outcome::ValidationFailed,
                        Some(reason.clone()),
                    ));
                    let cut_off_after_prompt = cut_off.then_some(usage.prompt_tokens);
                    return Ok(AttemptResult::Rejected { reason, cut_off_after_prompt });
                }
                Err(err) => {
                    let message = err.to_string();
                    self.spent_usd += guard.finish(
                        Outcome::Error,
                        Some(message.clone()),
                        Some(&err),
                        usage,
                        estimated,
                        latency,
                        false,
                    );
                    self.attempts.push(self.summary(attempt, tier, config, Outcome::Error, Some(message)));
                    return Err(match err {
                        err @ Error::Validator { .. } => err,
                        other => Error::Validator { name: validator.name().to_owned(), source: Box::new(other) },
                    });
                }
            }
        }
        self.spent_usd += guard.finish(Outcome::Ok, None, None, usage, estimated, latency, true);
        self.counterfactual_usd = guard.record.counterfactual_llm_cost_usd.unwrap_or(0.0);
        self.attempts.push(self.summary(attempt, tier, config, Outcome::Ok, None));
        Ok(AttemptResult::Accepted(Box::new(match chunks {
            Some(chunks) => Served::Buffered(chunks),
            None => Served::Whole(completion),
        })))
    }

    fn summary(
        &self,
        attempt: u32,
        tier: Tier,
        config: &TierConfig,
        outcome: Outcome,
        reason: Option<String>,
    ) -> AttemptSummary {
        AttemptSummary { attempt, tier, model: config.backend.model(), outcome, reason }
    }

    /// The `slmkit` field of the response: where it was served, how, and why.
    fn metadata(&self) -> Value {
        let served_by = self.attempts.iter().rev().find(|attempt| attempt.outcome == Outcome::Ok);
        json!({
            "call_id": self.id,
            "tier": served_by.map(|attempt| attempt.tier),
            "model": served_by.map(|attempt| attempt.model.clone()),
            "attempts": self.attempts,
            "reasons": self.decision.reasons,
            "cache": self.cache_status,
        })
    }
}

/// Records an attempt when it finishes, or as cancelled if the caller drops it first.
struct AttemptGuard {
    ledger: Ledger,
    record: AttemptRecord,
    pricing: Pricing,
    counterfactual: Pricing,
    ttft: Option<Duration>,
    estimated_prompt_tokens: u32,
    started: Instant,
    finished: bool,
}

impl AttemptGuard {
    fn new(
        client: &ClientInner,
        call_id: &str,
        attempt: u32,
        tier: Tier,
        config: &TierConfig,
        request: &ChatCompletionRequest,
    ) -> Self {
        AttemptGuard {
            ledger: client.ledger.clone(),
            record: AttemptRecord::new(
                call_id,
                attempt,
                tier,
                config.backend.kind(),
                &config.backend.model(),
                crate::routing::task_tag(request),
            ),
            pricing: config.pricing.clone(),
            counterfactual: client.counterfactual.clone(),
            ttft: None,
            estimated_prompt_tokens: estimate_prompt_tokens(request),
            started: Instant::now(),
            finished: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        outcome: Outcome,
        reason: Option<String>,
        error: Option<&Error>,
        usage: Usage,
        estimated: bool,
        latency: Duration,
        served: bool,
    ) -> f64 {
        if self.finished {
            return 0.0;
        }
        self.finished = true;
        let (cost, energy) = self.pricing.price(usage.prompt_tokens, usage.completion_tokens, latency);
        let record = &mut self.record;
        record.outcome = outcome;
        record.reason = reason;
        record.error_kind = error.map(|err| err.kind().to_owned());
        record.status = match error {
            Some(Error::Api { status, .. }) => Some(*status),
            _ => None,
        };
        record.prompt_tokens = usage.prompt_tokens;
        record.completion_tokens = usage.completion_tokens;
        record.tokens_estimated = estimated;
        record.latency_ms = latency.as_secs_f64() * 1000.0;
        record.ttft_ms = self.ttft.map(|ttft| ttft.as_secs_f64() * 1000.0);
        record.cost_usd = cost;
        record.energy_j = energy;
        record.served = served;
        record.counterfactual_llm_cost_usd =
            served.then(|| self.counterfactual.price(usage.prompt_tokens, usage.completion_tokens, latency).0);
        self.ledger.record(record.clone());
        cost
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if !self.finished {
            // The caller dropped the call mid-attempt. The prompt was sent, so it is billed.
            let latency = self.started.elapsed();
            let prompt = self.estimated_prompt_tokens;
            self.finish(
                Outcome::Cancelled,
                Some("cancelled by the caller".into()),
                None,
                Usage::new(prompt, 0),
                true,
                latency,
                false,
            );
        }
    }
}

/// What a live stream has seen so far.
#[derive(Default)]
struct Observed {
    usage: Option<Usage>,
    output_chars: usize,
}

/// A live stream's answer, stored in the cache if the stream completes.
struct PendingStore {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    chunks: Vec<ChatCompletionChunk>,
    spent_before: f64,
}

struct LiveStream {
    store: Option<PendingStore>,
    held: VecDeque<ChatCompletionChunk>,
    rest: ChunkStream,
    guard: Option<AttemptGuard>,
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
            self.observed.output_chars += choice.delta.content.as_deref().map_or(0, str::len);
        }
    }

    async fn next(&mut self) -> Option<Result<ChatCompletionChunk>> {
        loop {
            if let Some(chunk) = self.held.pop_front() {
                self.observe(&chunk);
                self.delivered += 1;
                return Some(Ok(chunk));
            }
            let mut guard = self.guard.take()?;
            match self.rest.next().await {
                Some(Ok(chunk)) => {
                    self.guard = Some(guard);
                    self.observe(&chunk);
                    if let Some(store) = &mut self.store {
                        store.chunks.push(chunk.clone());
                    }
                    if !self.include_usage && is_usage_only(&chunk) {
                        continue;
                    }
                    self.delivered += 1;
                    return Some(Ok(chunk));
                }
                Some(Err(err)) => {
                    let (usage, estimated) = self.usage();
                    let message = err.to_string();
                    let _ = guard.finish(
                        Outcome::Error,
                        Some(message),
                        Some(&err),
                        usage,
                        estimated,
                        self.started.elapsed(),
                        false,
                    );
                    let tier = guard.record.tier.to_string();
                    return Some(Err(Error::StreamInterrupted {
                        tier,
                        chunks_delivered: self.delivered,
                        source: Box::new(err),
                    }));
                }
                None => {
                    let (usage, estimated) = self.usage();
                    let cost = guard.finish(Outcome::Ok, None, None, usage, estimated, self.started.elapsed(), true);
                    if let Some(store) = self.store.take() {
                        // Only a stream that ran to its end is stored: never a broken one.
                        let answer = CachedAnswer::new(
                            assemble(&store.chunks),
                            Some(store.chunks),
                            guard.record.tier,
                            guard.record.model.clone(),
                            store.spent_before + cost,
                            guard.record.counterfactual_llm_cost_usd.unwrap_or(0.0),
                        );
                        store.cache.insert(store.key, answer).await;
                    }
                    return None;
                }
            }
        }
    }

    fn usage(&self) -> (Usage, bool) {
        match self.observed.usage {
            Some(usage) => (usage, false),
            None => {
                let prompt = self.guard.as_ref().map_or(0, |guard| guard.estimated_prompt_tokens);
                (Usage::new(prompt, (self.observed.output_chars / 4) as u32), true)
            }
        }
    }
}

/// Whether a chunk carries part of the answer (not just the role or usage).
fn carries_output(chunk: &ChatCompletionChunk) -> bool {
    chunk.choices.iter().any(|choice| {
        choice.delta.content.as_deref().is_some_and(|content| !content.is_empty())
            || choice.delta.tool_calls.is_some()
            || choice.finish_reason.is_some()
    })
}

fn is_usage_only(chunk: &ChatCompletionChunk) -> bool {
    chunk.choices.is_empty() && chunk.usage.is_some()
}

/// A rough token count (4 characters a token) for attempts whose backend reported none.
fn estimate_prompt_tokens(request: &ChatCompletionRequest) -> u32 {
    let chars: usize = request.messages.iter().map(|message| message.text().len()).sum();
    (chars / 4) as u32
}

fn usage_or_estimate(completion: &ChatCompletion, request: &ChatCompletionRequest) -> (Usage, bool) {
    match completion.usage {
        Some(usage) => (usage, false),
        None => (Usage::new(estimate_prompt_tokens(request), (completion.content().len() / 4) as u32), true),
    }
}

/// Puts the routing metadata on the first chunk.
fn with_metadata(mut chunks: Vec<ChatCompletionChunk>, metadata: Value) -> Vec<ChatCompletionChunk> {
    if let Some(first) = chunks.first_mut() {
        first.extra.insert("slmkit".into(), metadata);
    }
    chunks
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
                let call = &mut calls[index];
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

/// A completion as the chunks a stream of it would have had.
fn chunks_of(completion: &ChatCompletion, include_usage: bool) -> Vec<ChatCompletionChunk> {
    use crate::types::{ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};
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
        let delta = ToolCallDelta {
            index: index as u32,
            id: Some(call.id.clone()),
            kind: Some(call.kind.clone()),
            function: Some(FunctionCallDelta {
                name: Some(call.function.name.clone()),
                arguments: Some(call.function.arguments.clone()),
            }),
        };
        chunks.push(chunk(Delta { tool_calls: Some(vec![delta]), ..Delta::default() }, None));
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
