//! The client: one call path from request to answer.
//!
//! 1. A request comes in and is routed to the SLM or the LLM tier.
//! 2. An SLM answer is checked by the validators; a rejected one is retried on the SLM with a
//!    new seed, up to a budget, then escalated to the LLM.
//! 3. LLM transport failures that may pass (429, 5xx, timeouts, broken connections) are
//!    retried with jittered exponential backoff, honouring `Retry-After`.
//! 4. One attempt budget covers the whole call, and every attempt is recorded and priced.
//!
//! The parts: this module holds the public API and the builder; `call.rs` the per-call state
//! machine, `settle.rs` attempt accounting, `live.rs` streaming, `backend.rs` the backends,
//! `prepared.rs` the prepared call.
//!
//! A call is checked and hashed once ([`Client::prepare`]); a cache hit is found from that
//! hash without routing, so [`Client::cached`] is cheap enough for a binding to try on the
//! caller's thread, and routing runs once, in [`Client::create_prepared`].

mod backend;
mod call;
mod live;
mod prepared;
mod reask;
mod responses;
mod retry;
mod settle;

pub use self::backend::{Backend, BackendKind, TierConfig};
pub use self::prepared::Prepared;
pub use self::reask::DEFAULT_REASK_WINDOW;
pub use self::responses::{to_chat_request, to_events, to_response, PreparedResponse};
pub use self::retry::{OnOverload, RetryPolicy};
pub use self::settle::SHUTDOWN_REASON;
/// Re-exported from [`crate::types`], where it lives now, so `slmkit::client::assemble` keeps working.
pub use crate::types::assemble;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;

use self::call::{Call, StreamServed, Streamed, Whole};
use self::live::{live_stream, replay, replay_cached, with_metadata, OnServed, PendingStore};
use self::prepared::{within, CacheSlot};
use self::reask::{Answered, Chain, ReaskKey, ReaskLog};
use crate::cache::{digest, key_for, CacheConfig, CachedAnswer, RequestDigest, ResponseCache};
use crate::error::{Error, Result};
use crate::hints::{bypasses_cache, task_tag};
use crate::ledger::{AttemptRecord, FeedbackSource, Ledger, Outcome, Pricing, Verdict};
use crate::metadata::{CacheStatus, CallMetadata};
use crate::routing::adaptive::{Adaptive, TierPrices};
use crate::routing::fleet::{instance_id, share_routing_stats};
use crate::routing::stats::{stats_path, Learning, OutcomeStats};
use crate::routing::{RouteDecision, Router, RoutingConfig, SlmProfile};
use crate::shared::{fleet_records, SharedStore, StreamSink};
use crate::tier::Tier;
use crate::types::{is_usage_only, new_id, ChatCompletion, ChatCompletionRequest, ChunkStream};
use crate::validate::{default_validators, Validator};

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
    shared: Option<Arc<SharedStore>>,
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
            shared: None,
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

    /// Shares the response cache (as L2), single flight and the ledger (as a stream) with
    /// every process on `store`.
    pub fn shared(mut self, store: Arc<SharedStore>) -> Self {
        self.shared = Some(store);
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
            Backend::Remote(_) | Backend::Pool(_) => {
                SlmProfile { context_window: 0, tokenizer: None, supports_tools: true, supports_images: false }
            }
        });
        let mut router = Router::new(&self.routing, slm_profile, self.llm.is_some())?;
        if let (true, Some(slm), Some(llm)) = (self.routing.adaptive, &self.slm, &self.llm) {
            let learning = Learning { keep: self.routing.learning.keep, ..Learning::default() };
            let stats = Arc::new(match self.ledger.path() {
                Some(ledger) => OutcomeStats::load(&stats_path(ledger), learning),
                None => OutcomeStats::new(learning),
            });
            self.ledger.observe(stats.clone());
            let saved = Arc::clone(&stats);
            if let Some(store) = &self.shared {
                let file = self.ledger.path().map(stats_path);
                let instance = instance_id(store.config().instance_id.as_deref(), file.as_deref());
                share_routing_stats(store, Arc::clone(&stats), instance);
            }
            let prices = TierPrices {
                slm: slm.pricing.clone(),
                llm: llm.pricing.clone(),
                slm_model: slm.backend.model(),
                slm_attempts: self.retry.slm_attempts,
            };
            router = router.with_adaptive(Adaptive::new(stats, prices, self.routing.learning)?);
            // After `Adaptive::new` checked the interval; one too long to count is only at close.
            if let Ok(every) = std::time::Duration::try_from_secs_f64(self.routing.learning.save_every_s) {
                saved.autosave(every);
            }
        }
        let identities: Vec<String> = [&self.slm, &self.llm]
            .into_iter()
            .map(|tier| tier.as_ref().map(|tier| tier.backend.identity()).unwrap_or_default())
            .collect();
        let cache = if self.cache.enabled {
            let cache = ResponseCache::new(self.cache)?;
            Some(Arc::new(match &self.shared {
                Some(store) => cache.shared_through(Arc::clone(store), &identities),
                None => cache,
            }))
        } else {
            None
        };
        if let Some(store) = &self.shared {
            if self.ledger.also_to(StreamSink::start(store)).is_err() {
                return Err(Error::Config("this ledger already streams to a shared store".into()));
            }
        }
        Ok(Client {
            inner: Arc::new(ClientInner {
                slm: self.slm,
                llm: self.llm,
                validators: self.validators,
                reasks: ReaskLog::new(self.retry.reask_window),
                retry: self.retry,
                ledger: self.ledger,
                router,
                cache,
                counterfactual,
                shared: self.shared,
                #[cfg(test)]
                passes: tests::Passes::default(),
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
    /// The fleet's store, with `[shared]`.
    shared: Option<Arc<SharedStore>>,
    /// Answers callers got recently, to tell a re-ask from a new call.
    reasks: ReaskLog,
    /// Routing and hashing passes, counted for the test that there is one of each per call.
    #[cfg(test)]
    passes: tests::Passes,
}

impl ClientInner {
    fn tier_config(&self, tier: Tier) -> Option<&TierConfig> {
        match tier {
            Tier::Slm => self.slm.as_ref(),
            Tier::Llm => self.llm.as_ref(),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("slm", &self.inner.slm.as_ref().map(|tier| tier.backend.model()))
            .field("llm", &self.inner.llm.as_ref().map(|tier| tier.backend.model()))
            .finish_non_exhaustive()
    }
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
        self.inner.tier_config(tier)
    }

    /// The configured tiers as OpenAI's `GET /v1/models` list (`{"object": "list", "data":
    /// [...]}`), one entry per tier with slmkit's fields beside OpenAI's: the tier, the backend,
    /// and for a local model its context window, quantization and tool support. `serve` and
    /// both bindings' in-process `/models` answer with this.
    pub fn models(&self) -> serde_json::Value {
        let data: Vec<serde_json::Value> = [Tier::Slm, Tier::Llm]
            .into_iter()
            .filter_map(|tier| {
                let config = self.tier(tier)?;
                let mut entry = serde_json::json!({
                    "id": config.backend.forcing_id().map_or_else(|| config.backend.model(), str::to_owned),
                    "object": "model",
                    "created": 0,
                    "owned_by": format!("slmkit-{tier}"),
                    "tier": tier,
                    "backend": config.backend.kind(),
                    "name": config.backend.model(),
                });
                if let Backend::Local(engine) = &config.backend {
                    let model = engine.model();
                    entry["context_window"] = serde_json::json!(engine.context_window());
                    entry["context_length"] = serde_json::json!(model.context_length());
                    entry["quantization"] = serde_json::json!(model.quantization());
                    entry["tool_support"] = serde_json::json!(model.tool_support());
                    entry["chat_template"] =
                        serde_json::json!(if model.has_chat_template() { "gguf" } else { "chatml_fallback" });
                }
                Some(entry)
            })
            .collect();
        serde_json::json!({"object": "list", "data": data})
    }

    /// Explicit feedback on call `call_id`'s answer: a `feedback` record in the ledger, which
    /// the adaptive router weighs above the validators' verdict.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when no served call `call_id` is in the ledger's memory.
    pub fn feedback(&self, call_id: &str, correct: bool, reason: Option<String>) -> Result<()> {
        self.judge(call_id, correct, reason, FeedbackSource::Caller)
    }

    /// As [`Client::feedback`], from `source`.
    pub(crate) fn judge(
        &self,
        call_id: &str,
        correct: bool,
        reason: Option<String>,
        source: FeedbackSource,
    ) -> Result<()> {
        let Some(served) = self.inner.ledger.served_record(call_id) else {
            return Err(Error::invalid_request(
                format!("no answered call {call_id:?} is in the ledger to take feedback"),
                Some("call_id"),
            ));
        };
        self.inner.ledger.record(AttemptRecord {
            outcome: Outcome::Feedback,
            reason,
            feedback: Some(Verdict { correct, source }),
            task_key: served.task_key.clone(),
            reask_of: served.reask_of.clone(),
            ..AttemptRecord::new(
                call_id,
                served.attempt,
                served.tier,
                &served.backend,
                &served.model,
                served.task.as_deref(),
            )
        });
        Ok(())
    }

    /// Writes the adaptive router's statistics to their file now (they are also written when
    /// the last clone of the client goes). A no-op without the adaptive router or a ledger file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn save_routing_stats(&self) -> Result<()> {
        self.inner.router.outcome_stats().map_or(Ok(()), |stats| stats.save())
    }

    /// The adaptive router's statistics, when it is on.
    pub fn outcome_stats(&self) -> Option<&Arc<OutcomeStats>> {
        self.inner.router.outcome_stats()
    }

    /// Where `request` would go, and why, with each signal's contribution.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a malformed routing hint.
    pub fn explain(&self, request: &ChatCompletionRequest) -> Result<RouteDecision> {
        let mut decision = self.route(request)?;
        if let Some(earlier) = self.reask_key(request, None).and_then(|key| self.inner.reasks.peek(&key)) {
            decision.reasons.push(format!(
                "a re-ask of call {} (its answer was given {} attempt(s) into the call's budget of {}): \
                 sent now, it would reject that answer and be retried",
                earlier.chain.root,
                earlier.chain.attempts(),
                self.inner.retry.max_attempts
            ));
        }
        Ok(decision)
    }

    /// Where `request` goes: the router's decision, then the request's `model` naming a tier,
    /// then a missing tier's fallback. Once per call.
    fn route(&self, request: &ChatCompletionRequest) -> Result<RouteDecision> {
        #[cfg(test)]
        self.inner.passes.routed();
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
            let other = decision.tier.other();
            decision.reasons.push(format!("no {} tier is configured, so the {other} tier serves", decision.tier));
            decision.tier = other;
        }
        Ok(decision)
    }

    /// The re-ask key of `request` (reusing its cache digest when it has one), when re-asks
    /// are tracked and the request is deterministic.
    fn reask_key(&self, request: &ChatCompletionRequest, digest: Option<RequestDigest>) -> Option<ReaskKey> {
        if !self.inner.reasks.enabled() {
            return None;
        }
        ReaskKey::of(request, digest.unwrap_or_else(|| crate::cache::digest(request)))
    }

    /// The schema bounds every request is held to: the local SLM engine's, or the defaults.
    /// Checked before routing, so a schema no tier should take never reaches one.
    fn schema_limits(&self) -> crate::schema::SchemaLimits {
        match self.tier(Tier::Slm).map(|config| &config.backend) {
            Some(Backend::Local(engine)) => *engine.schema_limits(),
            _ => crate::schema::SchemaLimits::default(),
        }
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

    /// Checks `request` and, when the response cache takes it, hashes it: the one pass of
    /// each per call. Cheap: no routing, no tokenizing.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a request no backend could serve.
    pub fn prepare<'r>(&self, request: &'r ChatCompletionRequest) -> Result<Prepared<'r>> {
        self.prepared(Cow::Borrowed(request))
    }

    /// As [`Client::prepare`], keeping the request (for a call that outlives the caller's
    /// borrow, e.g. one handed to another thread).
    ///
    /// # Errors
    /// As [`Client::prepare`].
    pub fn prepare_owned(&self, request: ChatCompletionRequest) -> Result<Prepared<'static>> {
        self.prepared(Cow::Owned(request))
    }

    fn prepared<'r>(&self, request: Cow<'r, ChatCompletionRequest>) -> Result<Prepared<'r>> {
        request.validate()?;
        crate::hints::check(&request)?;
        crate::schema::check_request(&request, &self.schema_limits())?;
        let slot = match &self.inner.cache {
            Some(cache) if !bypasses_cache(&request) && cache.admits(&request) => {
                #[cfg(test)]
                self.inner.passes.hashed();
                Some(CacheSlot { cache: Arc::clone(cache), digest: digest(&request) })
            }
            _ => None,
        };
        let reask = self.reask_key(&request, slot.as_ref().map(|slot| slot.digest));
        Ok(Prepared { request, slot, timeout: None, reask })
    }

    /// Answers `request`: from the cache, or routed, validated, retried and escalated as
    /// configured. Identical concurrent requests that the cache admits share one backend call.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] before any attempt; the last attempt's error when every
    /// attempt failed; [`Error::ValidationFailed`] with every reason when no answer passed and
    /// there was no LLM to escalate to; [`Error::Validator`] when a validator itself broke.
    pub async fn create(&self, request: &ChatCompletionRequest) -> Result<ChatCompletion> {
        self.create_prepared(self.prepare(request)?).await
    }

    /// As [`Client::create`], for a prepared request (within its timeout, if it has one).
    ///
    /// # Errors
    /// As [`Client::create`]; [`Error::Timeout`] past the call's timeout.
    pub async fn create_prepared(&self, prepared: Prepared<'_>) -> Result<ChatCompletion> {
        within(prepared.timeout, self.answer(&prepared)).await
    }

    async fn answer(&self, prepared: &Prepared<'_>) -> Result<ChatCompletion> {
        let request = prepared.request();
        let chain = self.take_reask(prepared).await;
        // A re-ask never reads the cache (it holds the answer the caller rejected), and
        // never waits on an identical call in flight (that would be the same answer).
        let slot = match &prepared.slot {
            Some(slot) if chain.is_none() => slot,
            _ => {
                let decision = self.route(request)?;
                let store = prepared.slot.as_ref().map(|slot| {
                    (
                        slot,
                        key_for(&slot.digest, decision.tier, &self.identity(decision.tier)),
                        decision.reasons.clone(),
                    )
                });
                let status = if store.is_some() { CacheStatus::Miss } else { CacheStatus::Disabled };
                let mut call = Call::new(&self.inner, request, decision, status).resuming(chain);
                let mut completion = call.run::<Whole>().await?;
                self.remember(prepared, call.answered());
                if let Some((slot, key, reasons)) = store {
                    slot.cache.insert(slot.digest, key, call.cached_answer(completion.clone(), None, reasons)).await;
                }
                call.metadata().attach(&mut completion.extra);
                return Ok(completion);
            }
        };
        let started = Instant::now();
        if let Some(answer) = slot.cache.lookup(&slot.digest).await {
            return Ok(self.hit(prepared, &answer, started));
        }
        let decision = self.route(request)?;
        let key = key_for(&slot.digest, decision.tier, &self.identity(decision.tier));
        let reasons = decision.reasons.clone();
        // Set only if this caller made the answer; a concurrent identical call may have.
        let mut made: Option<(CallMetadata, Option<Answered>)> = None;
        let answer = slot
            .cache
            .get_or_run(&slot.digest, key, async {
                let mut call = Call::new(&self.inner, request, decision, CacheStatus::Miss);
                let completion = call.run::<Whole>().await?;
                made = Some((call.metadata(), call.answered()));
                Ok(call.cached_answer(completion, None, reasons))
            })
            .await
            .map_err(|shared| Arc::try_unwrap(shared).unwrap_or_else(Error::Shared))?;
        slot.cache.remember(slot.digest, key).await;
        match made {
            Some((metadata, answered)) => {
                self.remember(prepared, answered);
                let mut completion = answer.completion.clone();
                metadata.attach(&mut completion.extra);
                Ok(completion)
            }
            None => Ok(self.hit(prepared, &answer, started)),
        }
    }

    /// If `prepared` re-sends a request whose answer its caller got moments ago: records that
    /// the caller rejected the answer, evicts it from the cache, and returns the chain of
    /// calls the re-ask continues.
    async fn take_reask(&self, prepared: &Prepared<'_>) -> Option<Chain> {
        let key = prepared.reask.as_ref()?;
        let (earlier, after) = self.inner.reasks.take(key)?;
        self.inner.ledger.record(earlier.rejection(after));
        if let Some(slot) = &prepared.slot {
            let keys = [Tier::Slm, Tier::Llm].map(|tier| key_for(key.digest(), tier, &self.identity(tier)));
            slot.cache.evict(&slot.digest, &keys).await;
        }
        let mut chain = earlier.chain;
        chain.reasks += 1;
        Some(chain)
    }

    /// Remembers the answer `prepared`'s caller got, so a re-send can be told for a re-ask.
    fn remember(&self, prepared: &Prepared<'_>, answered: Option<Answered>) {
        if let (Some(key), Some(answered)) = (&prepared.reask, answered) {
            self.inner.reasks.remember(key.clone(), answered);
        }
    }

    /// [`Client::remember`] for an answer still streaming: what to run when its stream has
    /// delivered it whole.
    fn remember_when_served(&self, prepared: &Prepared<'_>, answered: Option<Answered>) -> Option<OnServed> {
        let (key, answered) = (prepared.reask.clone()?, answered?);
        let inner = Arc::clone(&self.inner);
        Some(Box::new(move || inner.reasks.remember(key, answered)))
    }

    /// The answer to a prepared request if the response cache holds it right now, without
    /// waiting on anything or routing the request; `None` for a miss or a request the cache
    /// doesn't take. A hit is recorded in the ledger exactly as [`Client::create`] records one.
    /// Bindings call this first so a hit skips the hop to an async runtime thread and back.
    pub fn cached(&self, prepared: &Prepared<'_>) -> Option<ChatCompletion> {
        let slot = prepared.slot.as_ref()?;
        if prepared.reask.as_ref().is_some_and(|key| self.inner.reasks.contains(key)) {
            return None; // A re-ask: the cache holds the answer its caller rejected.
        }
        let started = Instant::now();
        let answer = slot.cache.lookup_local(&slot.digest).now_or_never().flatten()?;
        Some(self.hit(prepared, &answer, started))
    }

    /// [`Client::cached`] for a request not yet prepared; `None` also for an invalid request
    /// (which [`Client::create`] then reports).
    pub fn create_if_cached(&self, request: &ChatCompletionRequest) -> Option<ChatCompletion> {
        self.cached(&self.prepare(request).ok()?)
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
        self.create_stream_prepared(self.prepare(request)?).await
    }

    /// As [`Client::create_stream`], for a prepared request (its timeout bounds the wait for
    /// the stream to start).
    ///
    /// # Errors
    /// As [`Client::create_stream`]; [`Error::Timeout`] past the call's timeout.
    pub async fn create_stream_prepared(&self, prepared: Prepared<'_>) -> Result<ChunkStream> {
        within(prepared.timeout, self.answer_stream(&prepared)).await
    }

    async fn answer_stream(&self, prepared: &Prepared<'_>) -> Result<ChunkStream> {
        let request = prepared.request();
        let include_usage = request.include_usage();
        let chain = self.take_reask(prepared).await;
        if let (Some(slot), None) = (&prepared.slot, &chain) {
            let started = Instant::now();
            if let Some(answer) = slot.cache.lookup(&slot.digest).await {
                let metadata = self.record_hit(prepared, &answer, started);
                return Ok(replay_cached(&answer, &metadata, include_usage));
            }
        }
        let decision = self.route(request)?;
        let store = prepared.slot.as_ref().map(|slot| PendingStore {
            cache: Arc::clone(&slot.cache),
            digest: slot.digest,
            key: key_for(&slot.digest, decision.tier, &self.identity(decision.tier)),
            reasons: decision.reasons.clone(),
            spent_before: 0.0,
        });
        let status = if store.is_some() { CacheStatus::Miss } else { CacheStatus::Disabled };
        let mut call = Call::new(&self.inner, request, decision, status).resuming(chain);
        let served = call.run::<Streamed>().await?;
        let metadata = call.metadata();
        match served {
            StreamServed::Buffered { completion, chunks } => {
                self.remember(prepared, call.answered());
                if let Some(store) = store {
                    let answer = call.cached_answer(completion, Some(chunks.clone()), store.reasons);
                    store.cache.insert(store.digest, store.key, answer).await;
                }
                let chunks = chunks.into_iter().filter(|chunk| include_usage || !is_usage_only(chunk)).collect();
                Ok(replay(with_metadata(chunks, &metadata)))
            }
            StreamServed::Live(start) => {
                let store = store.map(|store| PendingStore { spent_before: call.spent_usd, ..store });
                // The caller has a live answer only when its stream ends, which can be minutes
                // after it started (a long document on a slow model): the re-ask window starts
                // there, or a re-send after a long stream would not be told for a re-ask.
                let on_served = self.remember_when_served(prepared, call.answered());
                Ok(live_stream(start, call.tally.hand_over(), store, on_served, &metadata, include_usage))
            }
        }
    }

    /// What identifies `tier`'s answers in the cache key.
    fn identity(&self, tier: Tier) -> String {
        self.tier(tier).map(|tier| tier.backend.identity()).unwrap_or_default()
    }

    /// A cache hit as the completion the caller gets, recorded in the ledger.
    fn hit(&self, prepared: &Prepared<'_>, answer: &CachedAnswer, started: Instant) -> ChatCompletion {
        let metadata = self.record_hit(prepared, answer, started);
        let mut completion = answer.completion.clone();
        metadata.attach(&mut completion.extra);
        completion
    }

    /// Records a cache hit (no backend call; the tokens and cost it saved), remembers it for
    /// re-asks, and returns the response metadata for it.
    fn record_hit(&self, prepared: &Prepared<'_>, answer: &CachedAnswer, started: Instant) -> CallMetadata {
        let request = prepared.request();
        let call_id = new_id("call-");
        self.remember(
            prepared,
            Some(Answered {
                call_id: call_id.clone(),
                attempt: 1,
                tier: answer.tier,
                backend: "cache".into(),
                model: answer.model.clone(),
                task: task_tag(request).map(str::to_owned),
                counterfactual_usd: answer.counterfactual_llm_cost_usd,
                chain: Chain::starting(&call_id),
            }),
        );
        let usage = answer.completion.usage.unwrap_or_default();
        self.inner.ledger.record(AttemptRecord {
            outcome: Outcome::CacheHit,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            served: true,
            counterfactual_llm_cost_usd: Some(answer.counterfactual_llm_cost_usd),
            saved_cost_usd: Some(answer.cost_usd),
            ..AttemptRecord::new(&call_id, 1, answer.tier, "cache", &answer.model, task_tag(request))
        });
        CallMetadata {
            call_id,
            tier: Some(answer.tier),
            model: Some(answer.model.clone()),
            attempts: Vec::new(),
            reasons: answer.reasons.clone(),
            cache: CacheStatus::Hit,
            reask: None,
        }
    }

    /// The fleet's shared store, with `[shared]`.
    pub fn shared_store(&self) -> Option<&Arc<SharedStore>> {
        self.inner.shared.as_ref()
    }

    /// The report over the whole fleet's ledger stream (every process sharing this client's
    /// store), and the stream entries that did not parse.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] without `[shared]`; [`Error::SharedStore`] when Redis cannot
    /// be read.
    pub async fn fleet_report(&self) -> Result<(crate::ledger::Report, Vec<String>)> {
        let Some(store) = &self.inner.shared else {
            return Err(Error::invalid_request("a fleet report needs a [shared] store", Some("scope")));
        };
        let ledger = self.inner.ledger.clone();
        // Records of this process still on their way to the stream count too.
        let _ = tokio::task::spawn_blocking(move || ledger.flush()).await;
        let (records, warnings) = fleet_records(store.url(), &store.config().key_prefix).await?;
        Ok((crate::ledger::Report::from_records(&records), warnings))
    }

    /// Answers stored in the response cache now.
    pub async fn cached_answers(&self) -> u64 {
        match &self.inner.cache {
            Some(cache) => cache.len().await,
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests;
