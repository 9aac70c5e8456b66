//! Attempt accounting: every attempt is settled exactly once, as served, rejected, failed or
//! cancelled, priced, and recorded in the ledger; every call tells the ledger how it ended.

use std::time::{Duration, Instant};

use super::{BackendKind, ClientInner, TierConfig};
use crate::error::Error;
use crate::hints::task_tag;
use crate::ledger::{AttemptRecord, CallEnd, Ledger, Outcome, Pricing};
use crate::tier::Tier;
use crate::types::{ChatCompletion, ChatCompletionRequest, Usage};

/// How an attempt ended.
#[derive(Debug, Clone, Copy)]
pub(super) enum Settlement<'e> {
    /// Its answer was accepted and goes to the caller.
    Served,
    /// A validator rejected its answer, for this reason.
    Rejected(&'e str),
    /// The backend failed before an answer (a timeout is recorded as such).
    BackendFailed(&'e Error),
    /// It broke after an answer began: a validator raised, or a stream broke mid-way.
    Broke(&'e Error),
    /// The caller went away mid-attempt.
    Cancelled,
}

impl<'e> Settlement<'e> {
    pub(super) fn outcome(self) -> Outcome {
        match self {
            Settlement::Served => Outcome::Ok,
            Settlement::Rejected(_) => Outcome::ValidationFailed,
            Settlement::BackendFailed(Error::Timeout { .. }) => Outcome::Timeout,
            Settlement::BackendFailed(Error::Overloaded { .. }) => Outcome::Overloaded,
            Settlement::BackendFailed(_) | Settlement::Broke(_) => Outcome::Error,
            Settlement::Cancelled => Outcome::Cancelled,
        }
    }

    fn reason(self) -> Option<String> {
        match self {
            Settlement::Served => None,
            Settlement::Rejected(reason) => Some(reason.to_owned()),
            Settlement::BackendFailed(err) | Settlement::Broke(err) => Some(err.to_string()),
            Settlement::Cancelled => Some("cancelled by the caller".into()),
        }
    }

    fn error(self) -> Option<&'e Error> {
        match self {
            Settlement::BackendFailed(err) | Settlement::Broke(err) => Some(err),
            _ => None,
        }
    }
}

/// The reason on an attempt cut off because `slmkit serve` (or another host that calls
/// [`Ledger::mark_shutting_down`]) stopped, not because its caller left.
pub const SHUTDOWN_REASON: &str = "cut off by the server's shutdown";

/// What an attempt used.
#[derive(Debug, Clone, Copy)]
pub(super) struct Measured {
    pub usage: Usage,
    /// The backend reported no usage: the counts are estimated from text length.
    pub estimated: bool,
    pub latency: Duration,
}

/// Records an attempt when it settles, or as cancelled if the caller drops it first.
pub(super) struct AttemptGuard {
    ledger: Ledger,
    record: AttemptRecord,
    pricing: Pricing,
    counterfactual: Pricing,
    /// Time to the first content, for streams.
    pub ttft: Option<Duration>,
    pub estimated_prompt_tokens: u32,
    /// The answer streams live without validation because the output grammar settles every
    /// validator that applies (see `call::grammar_settles`).
    pub grammar_trusted: bool,
    /// Recorded as the reason of an attempt that settles without one of its own.
    pub note: Option<String>,
    started: Instant,
    settled: bool,
}

impl AttemptGuard {
    pub(super) fn new(
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
                config.backend.kind().as_str(),
                &config.backend.model(),
                task_tag(request),
            ),
            pricing: config.pricing.clone(),
            counterfactual: client.counterfactual.clone(),
            ttft: None,
            estimated_prompt_tokens: estimate_prompt_tokens(request),
            grammar_trusted: false,
            note: None,
            started: Instant::now(),
            settled: false,
        }
    }

    /// Tags the attempt with its call's task cluster (what the outcome statistics gather by).
    pub(super) fn task_key(&mut self, key: Option<&str>) {
        self.record.task_key = key.map(str::to_owned);
    }

    /// The pool endpoint the attempt went to (none for other backends).
    pub(super) fn endpoint(&mut self, endpoint: Option<String>) {
        self.record.endpoint = endpoint;
    }

    /// Marks the attempt as part of a re-ask of call `root`.
    pub(super) fn reask_of(&mut self, root: &str) {
        self.record.reask_of = Some(root.to_owned());
    }

    pub(super) fn tier(&self) -> Tier {
        self.record.tier
    }

    pub(super) fn model(&self) -> &str {
        &self.record.model
    }

    /// The served attempt's all-LLM counterfactual (0 until it is served).
    pub(super) fn counterfactual_usd(&self) -> f64 {
        self.record.counterfactual_llm_cost_usd.unwrap_or(0.0)
    }

    /// Prices and records the attempt; returns what it cost. A second settlement is ignored.
    pub(super) fn settle(&mut self, settlement: Settlement<'_>, measured: Measured) -> f64 {
        if self.settled {
            return 0.0;
        }
        self.settled = true;
        let Measured { usage, estimated, latency } = measured;
        let served = matches!(settlement, Settlement::Served);
        let (cost, energy) =
            self.pricing.price(usage.prompt_tokens, usage.completion_tokens, self.busy(&usage, latency));
        let record = &mut self.record;
        record.outcome = settlement.outcome();
        record.reason = match settlement {
            Settlement::Cancelled if self.ledger.is_shutting_down() => Some(SHUTDOWN_REASON.to_owned()),
            _ => settlement.reason().or_else(|| self.note.take()),
        };
        record.error_kind = settlement.error().map(|err| err.kind().to_owned());
        record.status = match settlement.error() {
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

impl AttemptGuard {
    /// The compute time an attempt is charged energy for. A local answer says what share of
    /// the engine's time it took; wall-clock time would also count time spent queued, or shared
    /// with concurrent requests, and four concurrent calls would be charged up to four times
    /// what the device drew. A local attempt that ended without that figure (failed or
    /// cancelled) is charged nothing rather than a guess; a remote one its latency (energy
    /// pricing for a remote tier is a stand-in's estimate anyway).
    fn busy(&self, usage: &Usage, latency: Duration) -> Duration {
        match usage.engine_busy {
            Some(busy) => busy,
            None if self.record.backend == BackendKind::Local.as_str() => Duration::ZERO,
            None => latency,
        }
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if !self.settled {
            // The caller dropped the call mid-attempt. The prompt was sent, so it is billed.
            let usage = Usage::new(self.estimated_prompt_tokens, 0);
            let latency = self.started.elapsed();
            self.settle(Settlement::Cancelled, Measured { usage, estimated: true, latency });
        }
    }
}

/// A call's standing for the ledger's running totals: whether it was served, and whether it
/// went from the SLM to the LLM. Told to the ledger once, when the call ends (or is dropped).
pub(super) struct CallTally {
    ledger: Ledger,
    first_tier: Option<Tier>,
    reached_llm: bool,
    served: bool,
    open: bool,
}

impl CallTally {
    pub(super) fn new(ledger: Ledger) -> Self {
        CallTally { ledger, first_tier: None, reached_llm: false, served: false, open: true }
    }

    /// An attempt on `tier` begins.
    pub(super) fn attempted(&mut self, tier: Tier) {
        self.first_tier.get_or_insert(tier);
        self.reached_llm |= tier == Tier::Llm;
    }

    /// An answer reached the caller.
    pub(super) fn served(&mut self) {
        self.served = true;
    }

    /// Moves the tally to whatever finishes the call (a live stream); this one goes quiet.
    pub(super) fn hand_over(&mut self) -> CallTally {
        self.open = false;
        CallTally {
            ledger: self.ledger.clone(),
            first_tier: self.first_tier,
            reached_llm: self.reached_llm,
            served: self.served,
            open: true,
        }
    }
}

impl Drop for CallTally {
    fn drop(&mut self) {
        // A call without attempts (e.g. nothing to escalate to) is not in the ledger at all.
        if self.open && self.first_tier.is_some() {
            let escalated = self.first_tier == Some(Tier::Slm) && self.reached_llm;
            self.ledger.end_call(CallEnd { failed: !self.served, escalated });
        }
    }
}

/// A rough token count (4 characters a token) for attempts whose backend reported none.
pub(super) fn estimate_prompt_tokens(request: &ChatCompletionRequest) -> u32 {
    let chars: usize = request.messages.iter().map(|message| message.text().len()).sum();
    (chars / 4) as u32
}

pub(super) fn usage_or_estimate(completion: &ChatCompletion, request: &ChatCompletionRequest) -> (Usage, bool) {
    match completion.usage {
        Some(usage) => (usage, false),
        None => (Usage::new(estimate_prompt_tokens(request), (completion.content().len() / 4) as u32), true),
    }
}
