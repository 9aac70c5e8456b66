//! Caller re-asks: a framework's hidden retries, seen and acted on.
//!
//! Agent frameworks check answers themselves. When MetaGPT's parser rejects an answer, it sends
//! the identical request again (up to six times). Without this module each re-send is a fresh
//! call: the ledger never learns the answer was rejected, and the response cache hands back the
//! same rejected answer every time. So answers that reached a caller are remembered for a short
//! window (default 120 s), keyed by the request's digest and the caller (`user`). A request
//! that matches one is a re-ask:
//! - the earlier answer gets a `rejected_by_caller` ledger record;
//! - it is evicted from the cache and the re-ask never reads the cache;
//! - the re-ask continues the earlier call's attempt budget, as a retry: on the SLM with a new
//!   seed while its SLM attempts last, then on the LLM.
//!
//! Only deterministic requests (temperature 0, or a seed) are tracked: re-sending a sampled
//! request is how a caller asks for another sample, not a verdict on the first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::RequestDigest;
use crate::ledger::{AttemptRecord, Outcome};
use crate::tier::Tier;
use crate::types::ChatCompletionRequest;

/// How long an answer can be re-asked for, by default.
pub const DEFAULT_REASK_WINDOW: Duration = Duration::from_secs(120);

/// More answers than this and the expired ones are dropped; if none has expired, the oldest.
const MAX_REMEMBERED: usize = 10_000;

/// What identifies "the same request from the same caller".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ReaskKey {
    digest: RequestDigest,
    caller: Option<String>,
    /// A framework that re-sends a call re-sends it the same way; the same request asked once
    /// whole and once streamed is two ways of reading one answer, not a rejection of it.
    streamed: bool,
}

impl ReaskKey {
    /// The key of `request`, if it is deterministic enough for a repeat to mean a rejection.
    pub(crate) fn of(request: &ChatCompletionRequest, digest: RequestDigest) -> Option<Self> {
        let deterministic = request.temperature == Some(0.0) || request.seed.is_some();
        deterministic.then(|| ReaskKey { digest, caller: request.user.clone(), streamed: request.stream == Some(true) })
    }

    pub(crate) fn digest(&self) -> &RequestDigest {
        &self.digest
    }
}

/// What a chain of re-asks of one call has used of that call's attempt budget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Chain {
    /// The first call: the one the caller keeps re-sending.
    pub root: String,
    /// Re-asks so far.
    pub reasks: u32,
    pub slm_attempts: u32,
    pub llm_attempts: u32,
}

impl Chain {
    /// A chain that starts with call `root`.
    pub(crate) fn starting(root: &str) -> Self {
        Chain { root: root.to_owned(), ..Chain::default() }
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.slm_attempts + self.llm_attempts
    }
}

/// An answer that reached a caller: what its rejection record needs, and the chain it ends.
#[derive(Debug, Clone)]
pub(crate) struct Answered {
    pub call_id: String,
    /// The served attempt (1 for a cache hit).
    pub attempt: u32,
    pub tier: Tier,
    /// `local`, `remote` or `cache`.
    pub backend: String,
    pub model: String,
    pub task: Option<String>,
    /// The served record's all-LLM counterfactual, withdrawn on rejection.
    pub counterfactual_usd: f64,
    pub chain: Chain,
}

impl Answered {
    /// The ledger record saying the caller rejected this answer.
    pub(crate) fn rejection(&self, after: Duration) -> AttemptRecord {
        AttemptRecord {
            outcome: Outcome::RejectedByCaller,
            reason: Some(format!(
                "the caller re-sent the identical request {:.1} s after this answer reached it",
                after.as_secs_f64()
            )),
            counterfactual_llm_cost_usd: Some(self.counterfactual_usd),
            reask_of: (self.chain.root != self.call_id).then(|| self.chain.root.clone()),
            ..AttemptRecord::new(
                &self.call_id,
                self.attempt,
                self.tier,
                &self.backend,
                &self.model,
                self.task.as_deref(),
            )
        }
    }
}

/// The answers callers got in the last `window`.
#[derive(Debug)]
pub(crate) struct ReaskLog {
    window: Duration,
    answers: Mutex<HashMap<ReaskKey, (Instant, Answered)>>,
}

impl ReaskLog {
    /// A log keeping answers for `window`; a zero window turns re-ask detection off.
    pub(crate) fn new(window: Duration) -> Self {
        ReaskLog { window, answers: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, HashMap<ReaskKey, (Instant, Answered)>> {
        self.answers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a request with `key` would be a re-ask now.
    pub(crate) fn contains(&self, key: &ReaskKey) -> bool {
        self.answers().get(key).is_some_and(|(at, _)| at.elapsed() <= self.window)
    }

    /// The answer a request with `key` re-asks for, and how long ago it was given; taken out
    /// of the log (the re-ask's own answer replaces it).
    pub(crate) fn take(&self, key: &ReaskKey) -> Option<(Answered, Duration)> {
        let (at, answered) = self.answers().remove(key)?;
        let after = at.elapsed();
        (after <= self.window).then_some((answered, after))
    }

    /// The answer a request with `key` would re-ask for, left in place (for `explain`).
    pub(crate) fn peek(&self, key: &ReaskKey) -> Option<Answered> {
        self.answers().get(key).filter(|(at, _)| at.elapsed() <= self.window).map(|(_, answered)| answered.clone())
    }

    /// Remembers the answer a caller got for a request with `key`.
    pub(crate) fn remember(&self, key: ReaskKey, answered: Answered) {
        if !self.enabled() {
            return;
        }
        let mut answers = self.answers();
        if answers.len() >= MAX_REMEMBERED && !answers.contains_key(&key) {
            answers.retain(|_, (at, _)| at.elapsed() <= self.window);
            if answers.len() >= MAX_REMEMBERED {
                let oldest = answers.iter().min_by_key(|(_, (at, _))| *at).map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    answers.remove(&oldest);
                }
            }
        }
        answers.insert(key, (Instant::now(), answered));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::cache::digest;

    fn request(temperature: Option<f64>, user: Option<&str>) -> ChatCompletionRequest {
        let mut request: ChatCompletionRequest =
            serde_json::from_value(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                .unwrap();
        request.temperature = temperature;
        request.user = user.map(str::to_owned);
        request
    }

    fn answered(call: &str) -> Answered {
        Answered {
            call_id: call.into(),
            attempt: 2,
            tier: Tier::Slm,
            backend: "local".into(),
            model: "m".into(),
            task: None,
            counterfactual_usd: 0.25,
            chain: Chain::starting(call),
        }
    }

    #[test]
    fn only_deterministic_requests_are_tracked_and_callers_are_kept_apart() {
        let sampled = request(None, None);
        assert!(ReaskKey::of(&sampled, digest(&sampled)).is_none());
        let alice = request(Some(0.0), Some("alice"));
        let bob = request(Some(0.0), Some("bob"));
        let log = ReaskLog::new(DEFAULT_REASK_WINDOW);
        log.remember(ReaskKey::of(&alice, digest(&alice)).unwrap(), answered("call-a"));
        assert!(log.contains(&ReaskKey::of(&alice, digest(&alice)).unwrap()));
        assert!(!log.contains(&ReaskKey::of(&bob, digest(&bob)).unwrap()));
    }

    #[test]
    fn the_same_request_streamed_is_not_a_reask_of_it_whole() {
        let whole = request(Some(0.0), Some("alice"));
        let mut streamed = whole.clone();
        streamed.stream = Some(true);
        let log = ReaskLog::new(DEFAULT_REASK_WINDOW);
        log.remember(ReaskKey::of(&whole, digest(&whole)).unwrap(), answered("call-a"));
        assert!(!log.contains(&ReaskKey::of(&streamed, digest(&streamed)).unwrap()));
        assert!(log.contains(&ReaskKey::of(&whole, digest(&whole)).unwrap()));
    }

    #[test]
    fn an_answer_is_taken_once_and_expires_with_its_window() {
        let greedy = request(Some(0.0), None);
        let key = ReaskKey::of(&greedy, digest(&greedy)).unwrap();
        let log = ReaskLog::new(Duration::from_millis(50));
        log.remember(key.clone(), answered("call-a"));
        let (taken, _) = log.take(&key).unwrap();
        assert_eq!(taken.call_id, "call-a");
        assert!(log.take(&key).is_none());
        log.remember(key.clone(), answered("call-b"));
        std::thread::sleep(Duration::from_millis(80));
        assert!(!log.contains(&key) && log.take(&key).is_none());
    }

    #[test]
    fn a_rejection_record_withdraws_the_counterfactual_and_names_the_chain() {
        let mut later = answered("call-b");
        later.chain = Chain { root: "call-a".into(), reasks: 1, slm_attempts: 2, llm_attempts: 0 };
        let record = later.rejection(Duration::from_secs(3));
        assert_eq!(record.outcome, Outcome::RejectedByCaller);
        assert_eq!((record.call_id.as_str(), record.attempt), ("call-b", 2));
        assert_eq!(record.counterfactual_llm_cost_usd, Some(0.25));
        assert_eq!(record.reask_of.as_deref(), Some("call-a"));
        assert!(!record.served && record.cost_usd == 0.0);
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let greedy = request(Some(0.0), None);
        let key = ReaskKey::of(&greedy, digest(&greedy)).unwrap();
        let log = ReaskLog::new(Duration::ZERO);
        log.remember(key.clone(), answered("call-a"));
        assert!(!log.enabled() && !log.contains(&key));
    }
}
