//! What the ledger adds up to: the report over records, and the running totals.

use serde::{Deserialize, Serialize};

use super::record::{AttemptRecord, FeedbackSource, Outcome};
use crate::tier::Tier;

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
    /// Calls whose answer the caller rejected by re-sending the identical request (its hidden
    /// retry); not counted as served by any tier.
    pub rejected_by_caller: u64,
    /// Of those, answers the SLM had made (a cache hit counts for the tier that made it).
    pub slm_rejected_by_caller: u64,
    /// Calls that re-sent an earlier call's request (each is also a call of its own).
    pub reasks: u64,
    /// Calls whose answer the caller kept that the SLM made, over all calls (cache hits count
    /// for the tier that first answered).
    pub slm_share: f64,
    /// Calls whose first attempt went to the SLM (re-asks excluded: they are retries).
    pub slm_first_tried: u64,
    /// Of those, the share whose first SLM answer passed validation and was not rejected by
    /// the caller. Passing validation is not being correct: only `slmkit eval`'s checks say
    /// that.
    pub slm_first_try_success_rate: f64,
    /// Attempts made per call that the SLM ended up serving (1.0 means no retries).
    pub mean_attempts_per_slm_call: f64,
    /// Calls that started on the SLM and ended on the LLM.
    pub escalations: u64,
    pub validation_failures: u64,
    pub errors: u64,
    /// SLM attempts refused because the local engine's queue was full (outcome `overloaded`;
    /// not in `errors`).
    #[serde(default)]
    pub overloaded: u64,
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
    /// Per task cluster that the SLM tried, how many outcomes rest on each signal (the
    /// evidence the adaptive router learns from), by task key.
    #[serde(default)]
    pub clusters: Vec<ClusterSignals>,
}

/// How many of a task cluster's SLM outcomes rest on each signal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSignals {
    pub task_key: String,
    /// Calls started on the SLM and settled by its validators (answered, or escalated).
    pub validation: u64,
    /// SLM answers the caller rejected by asking again.
    pub caller_rejection: u64,
    /// Explicit verdicts on SLM answers: `feedback()` and `POST /v1/slmkit/feedback`.
    pub caller_feedback: u64,
    /// Verdicts from `slmkit eval`'s checks.
    pub eval: u64,
}

/// Rows of the table's per-cluster part; the JSON has every cluster.
const CLUSTER_ROWS: usize = 20;

impl Report {
    /// Adds up `records` (any order; grouped by call id).
    pub fn from_records(records: &[AttemptRecord]) -> Report {
        Report::over(records)
    }

    /// As [`Report::from_records`], over any collection of records (the ledger's in-memory
    /// buffer, without copying it).
    pub fn over<'a>(records: impl IntoIterator<Item = &'a AttemptRecord>) -> Report {
        let mut calls: Vec<(&str, Vec<&AttemptRecord>)> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut attempts = 0u64;
        let mut clusters: std::collections::BTreeMap<String, ClusterSignals> = std::collections::BTreeMap::new();
        for record in records {
            // Feedback judges an answer: the report counts it only as a signal of its cluster
            // (as the router's statistics do, for answers the SLM made).
            if record.outcome == Outcome::Feedback {
                if let (Some(key), Some(verdict), Tier::Slm) = (&record.task_key, &record.feedback, record.tier) {
                    let cluster = clusters.entry(key.clone()).or_default();
                    match verdict.source {
                        FeedbackSource::Caller => cluster.caller_feedback += 1,
                        FeedbackSource::Eval => cluster.eval += 1,
                    }
                }
                continue;
            }
            // Cache hits are calls, not attempts: no backend was asked.
            if record.outcome.is_attempt() {
                attempts += 1;
            }
            let slot = *index.entry(&record.call_id).or_insert_with(|| {
                calls.push((&record.call_id, Vec::new()));
                calls.len() - 1
            });
            calls[slot].1.push(record);
        }
        let mut report = Report { calls: calls.len() as u64, attempts, ..Report::default() };
        let mut slm_served_attempts = 0u64;
        let mut slm_first_try_successes = 0u64;
        for (_, attempts) in &mut calls {
            attempts.sort_by_key(|record| record.attempt);
            let first = attempts[0];
            let served = attempts.iter().find(|record| record.served);
            let rejected = attempts.iter().any(|record| record.outcome == Outcome::RejectedByCaller);
            let reask = attempts.iter().any(|record| record.reask_of.is_some());
            report.reasks += u64::from(reask);
            if first.tier == Tier::Slm && first.outcome.is_attempt() && !reask {
                report.slm_first_tried += 1;
                if first.served && !rejected {
                    slm_first_try_successes += 1;
                }
            }
            let started_on_slm = first.tier == Tier::Slm;
            if let Some(key) = attempts.iter().find_map(|record| record.task_key.as_ref()) {
                let slm_served = served.is_some_and(|record| record.tier == Tier::Slm && record.outcome.is_attempt());
                let escalated = attempts.iter().any(|record| record.tier == Tier::Llm && record.outcome.is_attempt());
                if started_on_slm && first.outcome.is_attempt() && (slm_served || escalated) {
                    clusters.entry(key.clone()).or_default().validation += 1;
                }
                if rejected && served.is_some_and(|record| record.tier == Tier::Slm) {
                    clusters.entry(key.clone()).or_default().caller_rejection += 1;
                }
            }
            match served {
                Some(record) if rejected => {
                    report.rejected_by_caller += 1;
                    report.slm_rejected_by_caller += u64::from(record.tier == Tier::Slm);
                    if started_on_slm && record.tier == Tier::Llm && record.outcome != Outcome::CacheHit {
                        report.escalations += 1;
                    }
                }
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
                // A rejected answer saved nothing: the re-ask that replaces it is priced instead.
                if !rejected {
                    report.counterfactual_llm_cost_usd += record.counterfactual_llm_cost_usd.unwrap_or(0.0);
                }
                if record.outcome == Outcome::RejectedByCaller {
                    continue;
                }
                if record.outcome == Outcome::CacheHit {
                    if rejected {
                        continue;
                    }
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
                    Outcome::Overloaded => report.overloaded += 1,
                    _ => {}
                }
            }
        }
        let ratio = |part: u64, whole: u64| if whole == 0 { 0.0 } else { part as f64 / whole as f64 };
        // A cache hit counts for the tier whose answer it replays, unless the caller rejected it.
        let cached_slm = calls
            .iter()
            .filter(|(_, attempts)| {
                attempts.iter().any(|r| r.served && r.outcome == Outcome::CacheHit && r.tier == Tier::Slm)
                    && !attempts.iter().any(|r| r.outcome == Outcome::RejectedByCaller)
            })
            .count() as u64;
        report.slm_share = ratio(report.served_by_slm + cached_slm, report.calls);
        report.slm_first_try_success_rate = ratio(slm_first_try_successes, report.slm_first_tried);
        report.mean_attempts_per_slm_call = ratio(slm_served_attempts, report.served_by_slm);
        report.clusters =
            clusters.into_iter().map(|(task_key, signals)| ClusterSignals { task_key, ..signals }).collect();
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
                "rejected by the caller (re-sent)",
                format!(
                    "{} ({} made by the SLM); {} re-asks",
                    self.rejected_by_caller, self.slm_rejected_by_caller, self.reasks
                ),
            ),
            (
                "SLM first try passed validation",
                format!(
                    "{:.1}% of {} calls (not a correctness check; caller rejections count as failures)",
                    self.slm_first_try_success_rate * 100.0,
                    self.slm_first_tried
                ),
            ),
            ("mean attempts per SLM-served call", format!("{:.2}", self.mean_attempts_per_slm_call)),
            ("escalations SLM -> LLM", self.escalations.to_string()),
            ("validation failures", self.validation_failures.to_string()),
            ("errors", self.errors.to_string()),
            ("SLM attempts refused: engine overloaded", self.overloaded.to_string()),
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
        if !self.clusters.is_empty() {
            table.push_str(&self.cluster_table());
        }
        table
    }

    /// The SLM's outcomes per task cluster by signal, the busiest clusters first.
    fn cluster_table(&self) -> String {
        let total = |cluster: &ClusterSignals| {
            cluster.validation + cluster.caller_rejection + cluster.caller_feedback + cluster.eval
        };
        let mut busiest: Vec<&ClusterSignals> = self.clusters.iter().collect();
        busiest.sort_by(|a, b| total(b).cmp(&total(a)).then_with(|| a.task_key.cmp(&b.task_key)));
        let width = busiest.iter().take(CLUSTER_ROWS).map(|cluster| cluster.task_key.len()).max().unwrap_or(0).max(8);
        let mut table = format!(
            "SLM outcomes per task cluster, by signal\n  {:<width$}  {:>10}  {:>15}  {:>15}  {:>6}\n",
            "task key", "validators", "caller re-asks", "caller feedback", "eval"
        );
        for cluster in busiest.iter().take(CLUSTER_ROWS) {
            table.push_str(&format!(
                "  {:<width$}  {:>10}  {:>15}  {:>15}  {:>6}\n",
                cluster.task_key, cluster.validation, cluster.caller_rejection, cluster.caller_feedback, cluster.eval
            ));
        }
        if busiest.len() > CLUSTER_ROWS {
            table.push_str(&format!("  ... and {} more clusters (all in --json)\n", busiest.len() - CLUSTER_ROWS));
        }
        table
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_table())
    }
}

/// Running totals since the ledger was opened. They only ever grow: unlike [`Report`], they
/// are not computed from the in-memory records (which are capped, oldest dropped first), so
/// Prometheus counters read from them never go down. Updated per record and per finished call,
/// so reading them costs nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub calls: u64,
    /// Backend attempts, retries and escalations included (cache hits are not attempts).
    pub attempts: u64,
    pub served_by_slm: u64,
    pub served_by_llm: u64,
    pub served_from_cache: u64,
    /// Calls that ended without an answer (every attempt failed, or the caller went away).
    pub failed_calls: u64,
    /// Answers the caller rejected by re-sending the request. The served counts above keep
    /// them (they only ever grow); subtract these for the answers that stood.
    pub rejected_by_caller: u64,
    /// The counterfactual of rejected answers, withdrawn: subtract it from
    /// `counterfactual_llm_cost_usd` for the all-LLM cost of the answers that stood.
    pub withdrawn_counterfactual_usd: f64,
    /// Calls that started on the SLM and went on to the LLM.
    pub escalations: u64,
    pub validation_failures: u64,
    pub errors: u64,
    /// SLM attempts refused because the local engine's queue was full (outcome `overloaded`;
    /// not in `errors`).
    #[serde(default)]
    pub overloaded: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub slm_cost_usd: f64,
    pub llm_cost_usd: f64,
    pub wasted_cost_usd: f64,
    pub energy_j: f64,
    pub counterfactual_llm_cost_usd: f64,
    pub cache_saved_usd: f64,
}

/// How a call ended, as the client tells the ledger once per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallEnd {
    /// No attempt's answer reached the caller.
    pub failed: bool,
    /// The call started on the SLM and made an LLM attempt.
    pub escalated: bool,
}

impl Totals {
    /// Counts one attempt record. A call is counted at its first attempt (attempt 1), and by
    /// the tier of the attempt that served it.
    pub(crate) fn add(&mut self, record: &AttemptRecord) {
        if record.outcome == Outcome::Feedback {
            return;
        }
        if record.outcome == Outcome::RejectedByCaller {
            self.rejected_by_caller += 1;
            self.withdrawn_counterfactual_usd += record.counterfactual_llm_cost_usd.unwrap_or(0.0);
            return;
        }
        if record.attempt == 1 {
            self.calls += 1;
        }
        self.counterfactual_llm_cost_usd += record.counterfactual_llm_cost_usd.unwrap_or(0.0);
        if record.outcome == Outcome::CacheHit {
            self.served_from_cache += 1;
            self.cache_saved_usd += record.saved_cost_usd.unwrap_or(0.0);
            return;
        }
        self.attempts += 1;
        if record.served {
            match record.tier {
                Tier::Slm => self.served_by_slm += 1,
                Tier::Llm => self.served_by_llm += 1,
            }
        } else {
            self.wasted_cost_usd += record.cost_usd;
        }
        self.prompt_tokens += u64::from(record.prompt_tokens);
        self.completion_tokens += u64::from(record.completion_tokens);
        self.cost_usd += record.cost_usd;
        match record.tier {
            Tier::Slm => self.slm_cost_usd += record.cost_usd,
            Tier::Llm => self.llm_cost_usd += record.cost_usd,
        }
        self.energy_j += record.energy_j.unwrap_or(0.0);
        match record.outcome {
            Outcome::ValidationFailed => self.validation_failures += 1,
            Outcome::Error | Outcome::Timeout => self.errors += 1,
            Outcome::Overloaded => self.overloaded += 1,
            _ => {}
        }
    }

    /// Counts a finished call's outcome.
    pub(crate) fn end_call(&mut self, end: CallEnd) {
        if end.failed {
            self.failed_calls += 1;
        }
        if end.escalated {
            self.escalations += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Verdict;

    fn record(call: &str, attempt: u32, tier: Tier, outcome: Outcome, served: bool, key: &str) -> AttemptRecord {
        AttemptRecord {
            outcome,
            served,
            task_key: Some(key.into()),
            ..AttemptRecord::new(call, attempt, tier, "remote", if tier == Tier::Slm { "qwen" } else { "gpt" }, None)
        }
    }

    fn verdict(call: &str, source: FeedbackSource, key: &str) -> AttemptRecord {
        AttemptRecord {
            feedback: Some(Verdict { correct: false, source }),
            ..record(call, 1, Tier::Slm, Outcome::Feedback, false, key)
        }
    }

    #[test]
    fn the_report_counts_each_clusters_outcomes_by_signal() {
        let records = vec![
            record("a", 1, Tier::Slm, Outcome::Ok, true, "tag:Classify"),
            verdict("a", FeedbackSource::Caller, "tag:Classify"),
            record("b", 1, Tier::Slm, Outcome::ValidationFailed, false, "tag:Classify"),
            record("b", 2, Tier::Llm, Outcome::Ok, true, "tag:Classify"),
            record("c", 1, Tier::Slm, Outcome::Ok, true, "tag:Classify"),
            // The re-ask's rejection record carries no task key: the call's attempts do.
            AttemptRecord { task_key: None, ..record("c", 1, Tier::Slm, Outcome::RejectedByCaller, false, "") },
            record("d", 1, Tier::Slm, Outcome::Ok, true, "tpl:0123abcd"),
            verdict("d", FeedbackSource::Eval, "tpl:0123abcd"),
            // Straight to the LLM: no SLM outcome to count.
            record("e", 1, Tier::Llm, Outcome::Ok, true, "tag:WritePRD"),
        ];
        let report = Report::from_records(&records);
        assert_eq!(report.calls, 5, "feedback records are not calls");
        assert_eq!(
            report.clusters,
            vec![
                ClusterSignals {
                    task_key: "tag:Classify".into(),
                    validation: 3,
                    caller_rejection: 1,
                    caller_feedback: 1,
                    eval: 0
                },
                ClusterSignals { task_key: "tpl:0123abcd".into(), validation: 1, eval: 1, ..Default::default() },
            ]
        );
        let table = report.to_table();
        assert!(table.contains("SLM outcomes per task cluster, by signal"), "{table}");
        let row = table.lines().find(|line| line.contains("tag:Classify")).unwrap();
        let counts: Vec<&str> = row.split_whitespace().skip(1).collect();
        assert_eq!(counts, ["3", "1", "1", "0"], "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["clusters"][1]["eval"], 1);
        assert!(!table.contains("tag:WritePRD"));
    }
}
