//! Outcome statistics per cluster (task key × SLM model), learnt from the ledger as calls
//! settle, forgotten slowly so a model or prompt change is noticed, and kept in a file next to
//! the ledger (`ledger.jsonl` → `ledger.routing.json`).
//!
//! [`ClusterStats`] is the unit a shared store merges and serialises; [`OutcomeStats`] watches
//! a ledger ([`RecordObserver`]) and keeps one per cluster.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ledger::{AttemptRecord, FeedbackSource, Outcome, RecordObserver, Tier};

/// Evidence for a rate: weighted successes and failures (the prior is added when read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Beta {
    pub successes: f64,
    pub failures: f64,
}

impl Beta {
    pub fn weight(&self) -> f64 {
        self.successes + self.failures
    }

    fn add(&mut self, success: bool, weight: f64) {
        if success {
            self.successes += weight;
        } else {
            self.failures += weight;
        }
    }

    fn forget(&mut self, keep: f64) {
        self.successes *= keep;
        self.failures *= keep;
    }

    fn merge(&mut self, other: &Beta) {
        self.successes += other.successes;
        self.failures += other.failures;
    }
}

/// An exponentially weighted mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    pub value: f64,
    pub weight: f64,
}

impl Mean {
    fn add(&mut self, value: f64, keep: f64) {
        self.weight = self.weight * keep + 1.0;
        self.value += (value - self.value) / self.weight;
    }

    fn merge(&mut self, other: &Mean) {
        let weight = self.weight + other.weight;
        if weight > 0.0 {
            self.value = (self.value * self.weight + other.value * other.weight) / weight;
        }
        self.weight = weight;
    }

    /// The mean, when there is any data.
    pub fn get(&self) -> Option<f64> {
        (self.weight > 0.0).then_some(self.value)
    }
}

/// The cost and latency of one tier's part of a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TierCost {
    /// Per attempt.
    pub cost_usd: Mean,
    pub latency_ms: Mean,
}

impl TierCost {
    fn merge(&mut self, other: &TierCost) {
        self.cost_usd.merge(&other.cost_usd);
        self.latency_ms.merge(&other.latency_ms);
    }
}

/// How many outcomes rest on each signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalCounts {
    /// Calls settled by the validators alone (an answer accepted, or escalated).
    pub validation: u64,
    pub caller_rejection: u64,
    pub caller_feedback: u64,
    pub eval: u64,
}

/// What one SLM has shown on one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// The first SLM attempt's answer accepted.
    pub first_try: Beta,
    /// An SLM-first call answered by the SLM (after its retries) and not overruled.
    pub slm_success: Beta,
    /// SLM attempts per SLM-first call.
    pub slm_attempts: Mean,
    pub slm_calls: u64,
    pub escalations: u64,
    pub caller_rejections: u64,
    pub slm: TierCost,
    pub llm: TierCost,
    pub signals: SignalCounts,
    pub updated_ms: u64,
}

impl ClusterStats {
    /// Adds `other`'s evidence (another process's, or a shared store's).
    pub fn merge(&mut self, other: &ClusterStats) {
        self.first_try.merge(&other.first_try);
        self.slm_success.merge(&other.slm_success);
        self.slm_attempts.merge(&other.slm_attempts);
        self.slm_calls += other.slm_calls;
        self.escalations += other.escalations;
        self.caller_rejections += other.caller_rejections;
        self.slm.merge(&other.slm);
        self.llm.merge(&other.llm);
        self.signals.validation += other.signals.validation;
        self.signals.caller_rejection += other.signals.caller_rejection;
        self.signals.caller_feedback += other.signals.caller_feedback;
        self.signals.eval += other.signals.eval;
        self.updated_ms = self.updated_ms.max(other.updated_ms);
    }

    /// The escalation rate of SLM-first calls.
    pub fn escalation_rate(&self) -> f64 {
        if self.slm_calls == 0 {
            0.0
        } else {
            self.escalations as f64 / self.slm_calls as f64
        }
    }
}

/// How much each kind of evidence counts, and how fast old evidence fades.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Learning {
    /// Evidence kept per new outcome in a cluster (0.98: the last ~50 outcomes count most).
    pub keep: f64,
    pub validation_weight: f64,
    pub caller_rejection_weight: f64,
    pub feedback_weight: f64,
}

impl Default for Learning {
    fn default() -> Self {
        Learning { keep: 0.98, validation_weight: 1.0, caller_rejection_weight: 2.0, feedback_weight: 3.0 }
    }
}

/// A cluster's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterId {
    pub key: String,
    pub model: String,
}

/// Calls remembered for verdicts that come after them (re-asks, feedback).
const REMEMBERED_CALLS: usize = 20_000;
/// SLM attempts of calls still in flight, before the oldest is dropped.
const OPEN_CALLS: usize = 4_096;
const FILE_VERSION: u32 = 2;

/// A call whose SLM attempts are under way.
#[derive(Debug, Clone)]
struct OpenCall {
    cluster: ClusterId,
    attempts: u32,
}

/// How a call ended, for verdicts on it.
#[derive(Debug, Clone)]
struct SettledCall {
    cluster: ClusterId,
    served_by_slm: bool,
    first_try: bool,
}

/// What the calls this process has seen spent, for the budget's pacing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spend {
    pub usd: f64,
    pub calls: u64,
}

#[derive(Default)]
struct State {
    clusters: HashMap<ClusterId, ClusterStats>,
    spend: Spend,
    /// Changed since the last save.
    dirty: bool,
    open: HashMap<String, OpenCall>,
    open_order: VecDeque<String>,
    settled: HashMap<String, SettledCall>,
    settled_order: VecDeque<String>,
}

/// The file's form: each cluster as its key, model and [`ClusterStats::to_numbers`] (compact,
/// so 10,000 clusters load in milliseconds).
#[derive(Serialize, Deserialize)]
struct StatsFile {
    version: u32,
    clusters: Vec<(String, String, Vec<f64>)>,
}

impl ClusterStats {
    /// The statistics as a flat list of numbers, in a fixed order.
    fn to_numbers(&self) -> Vec<f64> {
        vec![
            self.first_try.successes,
            self.first_try.failures,
            self.slm_success.successes,
            self.slm_success.failures,
            self.slm_attempts.value,
            self.slm_attempts.weight,
            self.slm_calls as f64,
            self.escalations as f64,
            self.caller_rejections as f64,
            self.slm.cost_usd.value,
            self.slm.cost_usd.weight,
            self.slm.latency_ms.value,
            self.slm.latency_ms.weight,
            self.llm.cost_usd.value,
            self.llm.cost_usd.weight,
            self.llm.latency_ms.value,
            self.llm.latency_ms.weight,
            self.signals.validation as f64,
            self.signals.caller_rejection as f64,
            self.signals.caller_feedback as f64,
            self.signals.eval as f64,
            self.updated_ms as f64,
        ]
    }

    /// The inverse of [`ClusterStats::to_numbers`]; `None` for a list of the wrong length.
    fn from_numbers(numbers: &[f64]) -> Option<Self> {
        let &[a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u, v] = numbers else { return None };
        let count = |value: f64| value.max(0.0) as u64;
        let mean = |value, weight| Mean { value, weight };
        Some(ClusterStats {
            first_try: Beta { successes: a, failures: b },
            slm_success: Beta { successes: c, failures: d },
            slm_attempts: mean(e, f),
            slm_calls: count(g),
            escalations: count(h),
            caller_rejections: count(i),
            slm: TierCost { cost_usd: mean(j, k), latency_ms: mean(l, m) },
            llm: TierCost { cost_usd: mean(n, o), latency_ms: mean(p, q) },
            signals: SignalCounts {
                validation: count(r),
                caller_rejection: count(s),
                caller_feedback: count(t),
                eval: count(u),
            },
            updated_ms: count(v),
        })
    }
}

/// Outcome statistics for every cluster, fed by a ledger.
pub struct OutcomeStats {
    state: Mutex<State>,
    learning: Learning,
    path: Option<PathBuf>,
    /// One save at a time (they share the temporary file).
    saving: Mutex<()>,
    /// The other processes' evidence (a shared store's), added when read, never saved or
    /// published again: kept apart so no process counts its own evidence twice.
    fleet: Mutex<HashMap<ClusterId, ClusterStats>>,
}

impl std::fmt::Debug for OutcomeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeStats").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The statistics file next to a ledger file: `ledger.jsonl` → `ledger.routing.json`.
pub fn stats_path(ledger: &Path) -> PathBuf {
    ledger.with_extension("routing.json")
}

impl OutcomeStats {
    /// Empty statistics, kept in memory.
    pub fn new(learning: Learning) -> Self {
        OutcomeStats {
            state: Mutex::new(State::default()),
            learning,
            path: None,
            saving: Mutex::new(()),
            fleet: Mutex::default(),
        }
    }

    /// The statistics saved at `path`, or a fresh start when there is no file yet. A file that
    /// cannot be read is one warning and a fresh start (it is overwritten at the next save).
    pub fn load(path: &Path, learning: Learning) -> Self {
        let mut stats = OutcomeStats::new(learning);
        stats.path = Some(path.to_owned());
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<StatsFile>(&bytes) {
                Ok(file) if file.version == FILE_VERSION => {
                    let mut clusters = HashMap::with_capacity(file.clusters.len());
                    for (key, model, numbers) in file.clusters {
                        match ClusterStats::from_numbers(&numbers) {
                            Some(cluster) => {
                                clusters.insert(ClusterId { key, model }, cluster);
                            }
                            None => {
                                tracing::warn!(path = %path.display(), "routing statistics file is corrupt; starting afresh");
                                return stats;
                            }
                        }
                    }
                    stats.lock().clusters = clusters;
                }
                Ok(file) => tracing::warn!(
                    path = %path.display(),
                    version = file.version,
                    "routing statistics file has an unknown version; starting afresh"
                ),
                Err(err) => tracing::warn!(
                    path = %path.display(),
                    %err,
                    "routing statistics file is corrupt; starting afresh"
                ),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "cannot read routing statistics; starting afresh");
            }
        }
        stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where the statistics are saved, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes the statistics to their file (a temporary file renamed over it, so a crash
    /// leaves the old or the new one). A no-op for statistics kept in memory.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let _one_at_a_time = self.saving.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let clusters: Vec<(String, String, Vec<f64>)> = {
            let mut state = self.lock();
            state.dirty = false;
            state.clusters.iter().map(|(id, stats)| (id.key.clone(), id.model.clone(), stats.to_numbers())).collect()
        };
        let text = serde_json::to_vec(&StatsFile { version: FILE_VERSION, clusters })
            .map_err(|err| Error::Config(format!("cannot serialise routing statistics: {err}")))?;
        let temporary = path.with_extension("routing.json.tmp");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|source| Error::Io { context: format!("cannot write {}", path.display()), source })
    }

    /// Saves the statistics every `every` while they change, on a thread of their own, so a
    /// crash loses at most that much learning (they are also saved when the last reference
    /// goes). The thread ends soon after the statistics are dropped. A no-op for statistics
    /// kept in memory.
    pub fn autosave(self: &Arc<Self>, every: Duration) {
        if self.path.is_none() || every.is_zero() {
            return;
        }
        let stats = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("slmkit-routing-stats".into()).spawn(move || loop {
            std::thread::sleep(every);
            let Some(stats) = Weak::upgrade(&stats) else { return };
            if stats.lock().dirty {
                if let Err(err) = stats.save() {
                    tracing::warn!(%err, "cannot save routing statistics");
                }
            }
        });
        if let Err(err) = spawned {
            tracing::warn!(%err, "cannot start saving routing statistics periodically; they are saved at close");
        }
    }

    /// What the calls seen so far spent (every attempt, both tiers).
    pub fn spend(&self) -> Spend {
        self.lock().spend
    }

    /// One cluster's statistics: this process's evidence plus the fleet's.
    pub fn get(&self, key: &str, model: &str) -> Option<ClusterStats> {
        let id = ClusterId { key: key.to_owned(), model: model.to_owned() };
        let local = self.lock().clusters.get(&id).cloned();
        let fleet = self.lock_fleet().get(&id).cloned();
        match (local, fleet) {
            (Some(mut local), Some(fleet)) => {
                local.merge(&fleet);
                Some(local)
            }
            (local, fleet) => local.or(fleet),
        }
    }

    /// This process's own evidence for every cluster (what it saves and publishes).
    pub fn local_snapshot(&self) -> Vec<(ClusterId, ClusterStats)> {
        self.lock().clusters.iter().map(|(id, stats)| (id.clone(), stats.clone())).collect()
    }

    /// Replaces the other processes' evidence with `fleet` (the shared store's latest sum).
    pub fn set_fleet(&self, fleet: HashMap<ClusterId, ClusterStats>) {
        *self.lock_fleet() = fleet;
    }

    fn lock_fleet(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterId, ClusterStats>> {
        self.fleet.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every cluster's statistics, the fleet's evidence included.
    pub fn snapshot(&self) -> Vec<(ClusterId, ClusterStats)> {
        let mut combined = self.lock().clusters.clone();
        for (id, stats) in self.lock_fleet().iter() {
            combined.entry(id.clone()).or_default().merge(stats);
        }
        let mut all: Vec<_> = combined.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Adds another store's statistics for `id` (the seam for shared state).
    pub fn merge(&self, id: ClusterId, stats: &ClusterStats) {
        self.lock().clusters.entry(id).or_default().merge(stats);
    }

    /// The number of clusters.
    pub fn len(&self) -> usize {
        self.lock().clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn attempt(&self, state: &mut State, record: &AttemptRecord) {
        let keep = self.learning.keep;
        let accepted = record.outcome == Outcome::Ok;
        match record.tier {
            Tier::Slm => {
                let open = match state.open.get_mut(&record.call_id) {
                    Some(open) => open,
                    None => {
                        let Some(key) = &record.task_key else { return };
                        let cluster = ClusterId { key: key.clone(), model: record.model.clone() };
                        if state.open.len() >= OPEN_CALLS {
                            if let Some(oldest) = state.open_order.pop_front() {
                                state.open.remove(&oldest);
                            }
                        }
                        state.open_order.push_back(record.call_id.clone());
                        state.open.entry(record.call_id.clone()).or_insert(OpenCall { cluster, attempts: 0 })
                    }
                };
                open.attempts += 1;
                let attempts = open.attempts;
                let cluster = open.cluster.clone();
                let stats = state.clusters.entry(cluster.clone()).or_default();
                stats.updated_ms = record.timestamp_ms;
                if record.outcome == Outcome::Cancelled {
                    return;
                }
                stats.slm.cost_usd.add(record.cost_usd, keep);
                stats.slm.latency_ms.add(record.latency_ms, keep);
                if attempts == 1 {
                    stats.first_try.forget(keep);
                    stats.first_try.add(accepted && record.served, self.learning.validation_weight);
                }
                if accepted && record.served {
                    stats.slm_success.forget(keep);
                    stats.slm_success.add(true, self.learning.validation_weight);
                    stats.slm_attempts.add(f64::from(attempts), keep);
                    stats.slm_calls += 1;
                    stats.signals.validation += 1;
                    state.open.remove(&record.call_id);
                    remember(state, record, cluster, true, attempts == 1);
                }
            }
            Tier::Llm => {
                if let Some(open) = state.open.remove(&record.call_id) {
                    let stats = state.clusters.entry(open.cluster.clone()).or_default();
                    stats.slm_success.forget(keep);
                    stats.slm_success.add(false, self.learning.validation_weight);
                    stats.slm_attempts.add(f64::from(open.attempts), keep);
                    stats.slm_calls += 1;
                    stats.escalations += 1;
                    stats.signals.validation += 1;
                    stats.llm.cost_usd.add(record.cost_usd, keep);
                    stats.llm.latency_ms.add(record.latency_ms, keep);
                    remember(state, record, open.cluster, false, false);
                } else if let Some(key) = &record.task_key {
                    // A call sent straight to the LLM: its price, for the cluster of every
                    // SLM that has tried this task.
                    let key = key.clone();
                    let same_task = state.clusters.iter_mut().filter(|(id, _)| id.key == key);
                    for stats in same_task.map(|(_, stats)| stats) {
                        stats.llm.cost_usd.add(record.cost_usd, keep);
                        stats.llm.latency_ms.add(record.latency_ms, keep);
                    }
                }
            }
        }
    }

    fn verdict(&self, state: &mut State, record: &AttemptRecord) {
        let Some(settled) = state.settled.get(&record.call_id).cloned() else { return };
        if !settled.served_by_slm {
            return;
        }
        let keep = self.learning.keep;
        let stats = state.clusters.entry(settled.cluster).or_default();
        let (correct, weight) = match (&record.outcome, &record.feedback) {
            (Outcome::RejectedByCaller, _) => {
                stats.caller_rejections += 1;
                stats.signals.caller_rejection += 1;
                (false, self.learning.caller_rejection_weight)
            }
            (Outcome::Feedback, Some(verdict)) => {
                match verdict.source {
                    FeedbackSource::Caller => stats.signals.caller_feedback += 1,
                    FeedbackSource::Eval => stats.signals.eval += 1,
                }
                (verdict.correct, self.learning.feedback_weight)
            }
            _ => return,
        };
        stats.updated_ms = record.timestamp_ms;
        if correct {
            // The validators already counted this answer a success: a confirmation adds no
            // weight (counting it again would inflate every cluster that gets feedback).
            return;
        }
        // The validators' success this verdict overrules is taken back.
        let taken = self.learning.validation_weight;
        stats.slm_success.successes = (stats.slm_success.successes - taken).max(0.0);
        if settled.first_try {
            stats.first_try.successes = (stats.first_try.successes - taken).max(0.0);
            stats.first_try.add(false, weight);
        }
        stats.slm_success.forget(keep);
        stats.slm_success.add(false, weight);
    }
}

fn remember(state: &mut State, record: &AttemptRecord, cluster: ClusterId, served_by_slm: bool, first_try: bool) {
    if state.settled.len() >= REMEMBERED_CALLS {
        if let Some(oldest) = state.settled_order.pop_front() {
            state.settled.remove(&oldest);
        }
    }
    if state.settled.insert(record.call_id.clone(), SettledCall { cluster, served_by_slm, first_try }).is_none() {
        state.settled_order.push_back(record.call_id.clone());
    }
}

impl RecordObserver for OutcomeStats {
    fn observe(&self, record: &AttemptRecord) {
        let mut state = self.lock();
        if record.outcome.is_attempt() {
            state.spend.usd += record.cost_usd;
            state.spend.calls += u64::from(record.attempt == 1);
        } else if record.outcome == Outcome::CacheHit {
            state.spend.calls += 1;
        }
        state.dirty = true;
        match record.outcome {
            Outcome::CacheHit => {}
            Outcome::RejectedByCaller | Outcome::Feedback => self.verdict(&mut state, record),
            _ => self.attempt(&mut state, record),
        }
    }
}

impl Drop for OutcomeStats {
    fn drop(&mut self) {
        if let Err(err) = self.save() {
            tracing::warn!(%err, "cannot save routing statistics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Verdict;

    fn attempt(call: &str, attempt: u32, tier: Tier, outcome: Outcome, served: bool) -> AttemptRecord {
        AttemptRecord {
            outcome,
            served,
            cost_usd: if tier == Tier::Llm { 0.01 } else { 0.0001 },
            latency_ms: 100.0,
            task_key: Some("tag:Classify".into()),
            ..AttemptRecord::new(call, attempt, tier, "local", if tier == Tier::Slm { "qwen" } else { "gpt" }, None)
        }
    }

    fn stats(store: &OutcomeStats) -> ClusterStats {
        store.get("tag:Classify", "qwen").unwrap()
    }

    #[test]
    fn settled_calls_feed_their_cluster() {
        let store = OutcomeStats::new(Learning { keep: 1.0, ..Learning::default() });
        store.observe(&attempt("a", 1, Tier::Slm, Outcome::Ok, true));
        store.observe(&attempt("b", 1, Tier::Slm, Outcome::ValidationFailed, false));
        store.observe(&attempt("b", 2, Tier::Slm, Outcome::Ok, true));
        store.observe(&attempt("c", 1, Tier::Slm, Outcome::ValidationFailed, false));
        store.observe(&attempt("c", 2, Tier::Llm, Outcome::Ok, true));
        let cluster = stats(&store);
        assert_eq!(cluster.first_try, Beta { successes: 1.0, failures: 2.0 });
        assert_eq!(cluster.slm_success, Beta { successes: 2.0, failures: 1.0 });
        assert_eq!((cluster.slm_calls, cluster.escalations, cluster.signals.validation), (3, 1, 3));
        assert!((cluster.slm_attempts.value - 4.0 / 3.0).abs() < 1e-9);
        assert!((cluster.llm.cost_usd.value - 0.01).abs() < 1e-12);
    }

    #[test]
    fn feedback_outweighs_and_overrules_validation() {
        let store = OutcomeStats::new(Learning { keep: 1.0, ..Learning::default() });
        store.observe(&attempt("a", 1, Tier::Slm, Outcome::Ok, true));
        store.observe(&AttemptRecord {
            feedback: Some(Verdict { correct: false, source: FeedbackSource::Caller }),
            ..attempt("a", 1, Tier::Slm, Outcome::Feedback, false)
        });
        store.observe(&attempt("b", 1, Tier::Slm, Outcome::Ok, true));
        store.observe(&attempt("b", 1, Tier::Slm, Outcome::RejectedByCaller, false));
        let cluster = stats(&store);
        assert_eq!(cluster.slm_success, Beta { successes: 0.0, failures: 5.0 });
        assert_eq!(cluster.signals, SignalCounts { validation: 2, caller_rejection: 1, caller_feedback: 1, eval: 0 });
    }

    #[test]
    fn forgetting_lets_new_outcomes_win() {
        let store = OutcomeStats::new(Learning::default());
        for call in 0..200 {
            store.observe(&attempt(&format!("good{call}"), 1, Tier::Slm, Outcome::Ok, true));
        }
        for call in 0..60 {
            store.observe(&attempt(&format!("bad{call}"), 1, Tier::Slm, Outcome::ValidationFailed, false));
            store.observe(&attempt(&format!("bad{call}"), 2, Tier::Llm, Outcome::Ok, true));
        }
        let success = stats(&store).slm_success;
        assert!(success.failures > success.successes * 2.0, "{success:?}");
    }

    #[test]
    fn statistics_survive_a_restart_and_a_corrupt_file_is_a_fresh_start() {
        let dir = std::env::temp_dir().join(format!("slmkit-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = stats_path(&dir.join("ledger.jsonl"));
        assert!(path.ends_with("ledger.routing.json"));
        let _ = std::fs::remove_file(&path);
        {
            let store = OutcomeStats::load(&path, Learning::default());
            assert!(store.is_empty());
            store.observe(&attempt("a", 1, Tier::Slm, Outcome::Ok, true));
        }
        let reloaded = OutcomeStats::load(&path, Learning::default());
        assert_eq!(stats(&reloaded).slm_calls, 1);
        drop(reloaded);
        std::fs::write(&path, b"{\"version\":2,\"clusters\":[[\"k\",\"m\",[1.0]]]}").unwrap();
        let fresh = OutcomeStats::load(&path, Learning::default());
        assert!(fresh.is_empty());
        fresh.observe(&attempt("b", 1, Tier::Slm, Outcome::Ok, true));
        drop(fresh);
        assert_eq!(stats(&OutcomeStats::load(&path, Learning::default())).slm_calls, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn statistics_are_saved_periodically_without_a_close() {
        let dir = std::env::temp_dir().join(format!("slmkit-autosave-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = stats_path(&dir.join("ledger.jsonl"));
        let _ = std::fs::remove_file(&path);
        let store = Arc::new(OutcomeStats::load(&path, Learning::default()));
        store.autosave(Duration::from_millis(20));
        let saved_calls = || {
            let file: StatsFile = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
            file.clusters.first().and_then(|(_, _, numbers)| ClusterStats::from_numbers(numbers)).map(|c| c.slm_calls)
        };
        let wait_for = |calls: u64| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while saved_calls() != Some(calls) {
                assert!(std::time::Instant::now() < deadline, "the file never showed {calls} calls");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        store.observe(&attempt("a", 1, Tier::Slm, Outcome::Ok, true));
        wait_for(1);
        store.observe(&attempt("b", 1, Tier::Slm, Outcome::Ok, true));
        wait_for(2);
        // Both saves came while the store was open: no close wrote them.
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn spend_counts_calls_and_every_attempt() {
        let store = OutcomeStats::new(Learning::default());
        store.observe(&attempt("a", 1, Tier::Slm, Outcome::ValidationFailed, false));
        store.observe(&attempt("a", 2, Tier::Llm, Outcome::Ok, true));
        store.observe(&attempt("b", 1, Tier::Slm, Outcome::Ok, true));
        let spend = store.spend();
        assert_eq!(spend.calls, 2);
        assert!((spend.usd - 0.0102).abs() < 1e-12, "{spend:?}");
    }

    #[test]
    fn clusters_merge() {
        let mut a =
            ClusterStats { slm_calls: 2, first_try: Beta { successes: 1.0, failures: 1.0 }, ..Default::default() };
        let b = ClusterStats { slm_calls: 3, first_try: Beta { successes: 3.0, failures: 0.0 }, ..Default::default() };
        a.merge(&b);
        assert_eq!((a.slm_calls, a.first_try), (5, Beta { successes: 4.0, failures: 1.0 }));
    }
}
