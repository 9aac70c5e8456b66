//! The retry-accounting ledger: one record per attempt, priced, and a report whose savings
//! are net of every retry and escalation.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The two tiers a call can be served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The small model: local, or a remote pool.
    Slm,
    /// The large model.
    Llm,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Slm => "slm",
            Tier::Llm => "llm",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An answer, accepted.
    Ok,
    /// An answer, rejected by a validator (the reason is in the record).
    ValidationFailed,
    /// The backend failed (the kind is in the record).
    Error,
    Timeout,
    /// The caller went away mid-attempt.
    Cancelled,
    /// Served from the response cache: no backend call.
    CacheHit,
}

/// One attempt of one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub call_id: String,
    /// 1-based, across both tiers.
    pub attempt: u32,
    pub tier: Tier,
    /// `local` or `remote`.
    pub backend: String,
    pub model: String,
    pub outcome: Outcome,
    /// The validator's reason, or the error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For errors: a stable kind such as `rate_limit` or `internal_server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// True when the backend reported no usage and the counts are estimated from text length.
    #[serde(default)]
    pub tokens_estimated: bool,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    pub cost_usd: f64,
    /// Joules, where the tier's pricing can say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    /// Whether this attempt's answer went back to the caller.
    pub served: bool,
    /// On the served attempt: what the call would have cost sent to the LLM and answered
    /// first try (the same tokens at LLM prices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterfactual_llm_cost_usd: Option<f64>,
    /// On a cache hit: what the cached answer cost when it was made (all its attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_cost_usd: Option<f64>,
    /// The call's task tag (e.g. MetaGPT's action name), when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

impl AttemptRecord {
    /// A record of attempt `attempt` of `call_id`, stamped now, with nothing measured yet:
    /// no tokens, no cost, not served, outcome `cancelled` until the attempt says otherwise.
    pub fn new(call_id: &str, attempt: u32, tier: Tier, backend: &str, model: &str, task: Option<&str>) -> Self {
        AttemptRecord {
            call_id: call_id.to_owned(),
            attempt,
            tier,
            backend: backend.to_owned(),
            model: model.to_owned(),
            outcome: Outcome::Cancelled,
            reason: None,
            error_kind: None,
            status: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            tokens_estimated: false,
            latency_ms: 0.0,
            ttft_ms: None,
            cost_usd: 0.0,
            energy_j: None,
            served: false,
            counterfactual_llm_cost_usd: None,
            saved_cost_usd: None,
            task: task.map(str::to_owned),
            timestamp_ms: now_ms(),
        }
    }
}

/// What a tier costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pricing {
    /// Per million tokens, as remote APIs bill.
    PerToken {
        input_usd_per_million: f64,
        output_usd_per_million: f64,
        /// An energy estimate per token, if known; remote providers do not publish one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        joules_per_token: Option<f64>,
    },
    /// Measured busy time on your own hardware, turned into energy and money.
    Energy {
        /// Power drawn by the device while busy. Default 65 W: a typical desktop CPU's TDP.
        device_watts: f64,
        /// Power-supply efficiency. Default 0.85: an 80 PLUS Bronze unit near half load;
        /// consumer supplies run at 80-85%.
        psu_efficiency: f64,
        /// Facility overhead. Default 1.0 (a home or office: no cooling plant); about 1.1 for a
        /// modern datacenter.
        pue: f64,
        /// Share of the device's powered time that does useful work. Default 1.0 counts busy
        /// time only; set 0.05-0.10 to charge a consumer machine's idle time to its requests.
        utilisation: f64,
        /// Default $0.17/kWh: about the 2024 US residential average (US EIA).
        usd_per_kwh: f64,
    },
}

impl Pricing {
    /// OpenAI's published gpt-4o list price: $2.50 per million input tokens, $10.00 per million
    /// output tokens.
    pub fn gpt_4o() -> Self {
        Pricing::PerToken { input_usd_per_million: 2.5, output_usd_per_million: 10.0, joules_per_token: None }
    }

    /// Local hardware with the documented defaults.
    pub fn local_default() -> Self {
        Pricing::Energy { device_watts: 65.0, psu_efficiency: 0.85, pue: 1.0, utilisation: 1.0, usd_per_kwh: 0.17 }
    }

    /// Checks that every figure is finite and in range.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad figure.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, value: f64, positive: bool| {
            if !value.is_finite() || value < 0.0 || (positive && value == 0.0) {
                Err(Error::Config(format!(
                    "pricing {name} must be a finite {} number, got {value}",
                    if positive { "positive" } else { "non-negative" }
                )))
            } else {
                Ok(())
            }
        };
        match self {
            Pricing::PerToken { input_usd_per_million, output_usd_per_million, joules_per_token } => {
                check("input_usd_per_million", *input_usd_per_million, false)?;
                check("output_usd_per_million", *output_usd_per_million, false)?;
                joules_per_token.map_or(Ok(()), |joules| check("joules_per_token", joules, false))
            }
            Pricing::Energy { device_watts, psu_efficiency, pue, utilisation, usd_per_kwh } => {
                check("device_watts", *device_watts, false)?;
                check("psu_efficiency", *psu_efficiency, true)?;
                check("pue", *pue, true)?;
                check("utilisation", *utilisation, true)?;
                check("usd_per_kwh", *usd_per_kwh, false)?;
                if *psu_efficiency > 1.0 || *utilisation > 1.0 || *pue < 1.0 {
                    return Err(Error::Config(
                        "psu_efficiency and utilisation must be at most 1, pue at least 1".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Cost in dollars and energy in joules of one attempt.
    pub fn price(&self, prompt_tokens: u32, completion_tokens: u32, busy: Duration) -> (f64, Option<f64>) {
        match self {
            Pricing::PerToken { input_usd_per_million, output_usd_per_million, joules_per_token } => {
                let cost = (f64::from(prompt_tokens) * input_usd_per_million
                    + f64::from(completion_tokens) * output_usd_per_million)
                    / 1e6;
                let energy = joules_per_token.map(|joules| joules * f64::from(prompt_tokens + completion_tokens));
                (cost, energy)
            }
            Pricing::Energy { device_watts, psu_efficiency, pue, utilisation, usd_per_kwh } => {
                let joules = busy.as_secs_f64() * device_watts / psu_efficiency * pue / utilisation;
                (joules / 3.6e6 * usd_per_kwh, Some(joules))
            }
        }
    }
}

/// Keeps records in memory (the newest `memory_limit`) and, optionally, appends each one to a
/// JSONL file as it happens, flushed, so a crash loses nothing already recorded.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Mutex<LedgerInner>>,
}

struct LedgerInner {
    records: VecDeque<AttemptRecord>,
    memory_limit: usize,
    file: Option<(PathBuf, File)>,
    write_errors: u64,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::in_memory()
    }
}

/// Records kept in memory by default; the JSONL file, if any, keeps everything.
pub const DEFAULT_MEMORY_LIMIT: usize = 100_000;

impl Ledger {
    /// A ledger kept in memory only.
    pub fn in_memory() -> Self {
        Ledger {
            inner: Arc::new(Mutex::new(LedgerInner {
                records: VecDeque::new(),
                memory_limit: DEFAULT_MEMORY_LIMIT,
                file: None,
                write_errors: 0,
            })),
        }
    }

    /// A ledger that also appends to `path` (created if missing).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened for appending.
    pub fn with_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io { context: format!("cannot open ledger file {}", path.display()), source })?;
        let ledger = Ledger::in_memory();
        ledger.lock().file = Some((path, file));
        Ok(ledger)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a record (and appends it to the file, if there is one).
    pub fn record(&self, record: AttemptRecord) {
        let mut inner = self.lock();
        if let Some((path, file)) = &mut inner.file {
            let line = serde_json::to_string(&record).unwrap_or_default();
            // One write of the whole line, then a flush: a crash leaves at most a torn last line.
            let written = file.write_all(format!("{line}\n").as_bytes()).and_then(|()| file.flush());
            if let Err(err) = written {
                tracing::warn!(path = %path.display(), %err, "cannot append to the ledger file");
                inner.write_errors += 1;
            }
        }
        inner.records.push_back(record);
        while inner.records.len() > inner.memory_limit {
            inner.records.pop_front();
        }
    }

    /// The records in memory, oldest first.
    pub fn records(&self) -> Vec<AttemptRecord> {
        self.lock().records.iter().cloned().collect()
    }

    /// The report over the records in memory.
    pub fn report(&self) -> Report {
        Report::from_records(&self.records())
    }

    /// Writes that failed since the ledger was opened (they are logged as warnings too).
    pub fn write_errors(&self) -> u64 {
        self.lock().write_errors
    }
}

/// Reads a ledger JSONL file. Lines that do not parse (a torn last line after a crash) are
/// skipped and returned as warnings, never fatal.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read at all.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<(Vec<AttemptRecord>, Vec<String>)> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|source| Error::Io { context: format!("cannot open ledger {}", path.display()), source })?;
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line =
            line.map_err(|source| Error::Io { context: format!("cannot read ledger {}", path.display()), source })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<AttemptRecord>(&line) {
            Ok(record) => records.push(record),
            Err(err) => {
                let warning =
                    format!("{}:{}: skipped a line that is not a ledger record ({err})", path.display(), index + 1);
                tracing::warn!("{warning}");
                warnings.push(warning);
            }
        }
    }
    Ok((records, warnings))
}

/// What the ledger adds up to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub calls: u64,
    /// Backend attempts, retries and escalations included (cache hits are not attempts).
    pub attempts: u64,
    pub served_by_slm: u64,
    pub served_by_llm: u64,
    pub served_from_cache: u64,
    pub failed_calls: u64,
    /// Calls served by the SLM over all calls (cache hits count for the tier that first answered).
    pub slm_share: f64,
    /// Calls whose first attempt went to the SLM.
    pub slm_first_tried: u64,
    /// Of those, the share the SLM answered acceptably on its first attempt.
    pub slm_first_try_success_rate: f64,
    /// Attempts made per call that the SLM ended up serving (1.0 means no retries).
    pub mean_attempts_per_slm_call: f64,
    /// Calls that started on the SLM and ended on the LLM.
    pub escalations: u64,
    pub validation_failures: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Everything spent, every attempt included.
    pub cost_usd: f64,
    pub slm_cost_usd: f64,
    pub llm_cost_usd: f64,
    /// Spent on attempts whose answers were thrown away.
    pub wasted_cost_usd: f64,
    pub energy_j: f64,
    /// Each call priced as if sent to the LLM and answered first try.
    pub counterfactual_llm_cost_usd: f64,
    /// `counterfactual_llm_cost_usd - cost_usd`: net of retries and escalations.
    pub savings_usd: f64,
    /// Savings over the counterfactual (0 when the counterfactual is 0).
    pub savings_share: f64,
    /// What cache hits would have cost to answer again (included in `savings_usd`).
    pub cache_saved_usd: f64,
}

impl Report {
    /// Adds up `records` (any order; grouped by call id).
    pub fn from_records(records: &[AttemptRecord]) -> Report {
        let mut calls: Vec<(&str, Vec<&AttemptRecord>)> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for record in records {
            let slot = *index.entry(&record.call_id).or_insert_with(|| {
                calls.push((&record.call_id, Vec::new()));
                calls.len() - 1
            });
            calls[slot].1.push(record);
        }
        // Cache hits are calls, not attempts: no backend was asked.
        let attempts = records.iter().filter(|record| record.outcome != Outcome::CacheHit).count() as u64;
        let mut report = Report { calls: calls.len() as u64, attempts, ..Report::default() };
        let mut slm_served_attempts = 0u64;
        let mut slm_first_try_successes = 0u64;
        for (_, attempts) in &mut calls {
            attempts.sort_by_key(|record| record.attempt);
            let first = attempts[0];
            let served = attempts.iter().find(|record| record.served);
            if first.tier == Tier::Slm && first.outcome != Outcome::CacheHit {
                report.slm_first_tried += 1;
                if first.served {
                    slm_first_try_successes += 1;
                }
            }
            let started_on_slm = first.tier == Tier::Slm;
            match served {
                Some(record) if record.outcome == Outcome::CacheHit => report.served_from_cache += 1,
                Some(record) if record.tier == Tier::Slm => {
                    report.served_by_slm += 1;
                    slm_served_attempts += attempts.len() as u64;
                }
                Some(_) => {
                    report.served_by_llm += 1;
                    if started_on_slm {
                        report.escalations += 1;
                    }
                }
                None => {
                    report.failed_calls += 1;
                    if started_on_slm && attempts.iter().any(|record| record.tier == Tier::Llm) {
                        report.escalations += 1;
                    }
                }
            }
            for record in attempts.iter() {
                report.counterfactual_llm_cost_usd += record.counterfactual_llm_cost_usd.unwrap_or(0.0);
                if record.outcome == Outcome::CacheHit {
                    // No backend work: its tokens were spent, and counted, when it was made.
                    report.cache_saved_usd += record.saved_cost_usd.unwrap_or(0.0);
                    continue;
                }
                report.prompt_tokens += u64::from(record.prompt_tokens);
                report.completion_tokens += u64::from(record.completion_tokens);
                report.cost_usd += record.cost_usd;
                match record.tier {
                    Tier::Slm => report.slm_cost_usd += record.cost_usd,
                    Tier::Llm => report.llm_cost_usd += record.cost_usd,
                }
                if !record.served {
                    report.wasted_cost_usd += record.cost_usd;
                }
                report.energy_j += record.energy_j.unwrap_or(0.0);
                match record.outcome {
                    Outcome::ValidationFailed => report.validation_failures += 1,
                    Outcome::Error | Outcome::Timeout => report.errors += 1,
                    _ => {}
                }
            }
        }
        let ratio = |part: u64, whole: u64| if whole == 0 { 0.0 } else { part as f64 / whole as f64 };
        // A cache hit counts for the tier whose answer it replays.
        let cached_slm = calls
            .iter()
            .filter(|(_, attempts)| {
                attempts.iter().any(|r| r.served && r.outcome == Outcome::CacheHit && r.tier == Tier::Slm)
            })
            .count() as u64;
        report.slm_share = ratio(report.served_by_slm + cached_slm, report.calls);
        report.slm_first_try_success_rate = ratio(slm_first_try_successes, report.slm_first_tried);
        report.mean_attempts_per_slm_call = ratio(slm_served_attempts, report.served_by_slm);
        report.savings_usd = report.counterfactual_llm_cost_usd - report.cost_usd;
        report.savings_share = if report.counterfactual_llm_cost_usd > 0.0 {
            report.savings_usd / report.counterfactual_llm_cost_usd
        } else {
            0.0
        };
        report
    }

    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let rows: Vec<(&str, String)> = vec![
            ("calls", self.calls.to_string()),
            ("attempts", self.attempts.to_string()),
            ("served by SLM", format!("{} ({:.1}% of calls)", self.served_by_slm, self.slm_share * 100.0)),
            ("served by LLM", self.served_by_llm.to_string()),
            ("served from cache", format!("{} (saved ${:.6})", self.served_from_cache, self.cache_saved_usd)),
            ("failed calls", self.failed_calls.to_string()),
            (
                "SLM first-try success",
                format!("{:.1}% of {} calls", self.slm_first_try_success_rate * 100.0, self.slm_first_tried),
            ),
            ("mean attempts per SLM-served call", format!("{:.2}", self.mean_attempts_per_slm_call)),
            ("escalations SLM -> LLM", self.escalations.to_string()),
            ("validation failures", self.validation_failures.to_string()),
            ("errors", self.errors.to_string()),
            ("tokens (prompt / completion)", format!("{} / {}", self.prompt_tokens, self.completion_tokens)),
            ("cost, all attempts", format!("${:.6}", self.cost_usd)),
            ("  of which SLM / LLM", format!("${:.6} / ${:.6}", self.slm_cost_usd, self.llm_cost_usd)),
            ("  of which on discarded attempts", format!("${:.6}", self.wasted_cost_usd)),
            ("energy", format!("{:.1} J", self.energy_j)),
            ("all-LLM counterfactual", format!("${:.6}", self.counterfactual_llm_cost_usd)),
            ("net saving", format!("${:.6} ({:.1}%)", self.savings_usd, self.savings_share * 100.0)),
        ];
        let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        let mut table = String::from("slmkit ledger report\n");
        for (label, value) in rows {
            table.push_str(&format!("  {label:<width$}  {value}\n"));
        }
        table
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_table())
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_pricing_follows_the_documented_formula() {
        let pricing =
            Pricing::Energy { device_watts: 100.0, psu_efficiency: 0.8, pue: 1.1, utilisation: 0.5, usd_per_kwh: 0.2 };
        let (cost, energy) = pricing.price(0, 0, Duration::from_secs(36));
        // 36 s × 100 W / 0.8 × 1.1 / 0.5 = 9,900 J = 0.00275 kWh → $0.00055.
        assert!((energy.unwrap() - 9_900.0).abs() < 1e-9);
        assert!((cost - 0.00055).abs() < 1e-12);
        let (cost, energy) = Pricing::gpt_4o().price(1_000_000, 500_000, Duration::ZERO);
        assert!((cost - 7.5).abs() < 1e-12);
        assert_eq!(energy, None);
    }

    #[test]
    fn bad_pricing_is_a_config_error() {
        let bad = Pricing::Energy {
            device_watts: f64::NAN,
            psu_efficiency: 0.85,
            pue: 1.0,
            utilisation: 1.0,
            usd_per_kwh: 0.1,
        };
        assert!(matches!(bad.validate(), Err(Error::Config(_))));
        let bad =
            Pricing::Energy { device_watts: 50.0, psu_efficiency: 1.5, pue: 1.0, utilisation: 1.0, usd_per_kwh: 0.1 };
        assert!(bad.validate().is_err());
        assert!(Pricing::local_default().validate().is_ok());
    }
}
