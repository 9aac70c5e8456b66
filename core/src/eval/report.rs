//! What a run adds up to: per task, per kind and overall; as JSON, as a table, and two runs
//! side by side.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::tasks::Task;
use crate::error::{Error, Result};
use crate::ledger::{AttemptRecord, Outcome};
use crate::metadata::CacheStatus;
use crate::tier::Tier;

/// One task's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub id: String,
    pub kind: String,
    /// The task's line in its file.
    pub line: usize,
    pub correct: bool,
    /// Why the answer is wrong (the check's reason, or the call's error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The call's error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error's stable kind (`validation_failed`, `connection`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The answer (text, or tool calls as JSON), cut to 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The tier whose answer was served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
    /// Backend attempts (a cache hit makes none).
    pub attempts: u32,
    /// Served by the SLM on the call's first attempt.
    pub slm_first_try: bool,
    /// Started on the SLM and went on to the LLM.
    pub escalated: bool,
    pub latency_ms: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub energy_j: f64,
    /// The call priced as if the LLM had answered it first try (0 for a failed call).
    pub counterfactual_llm_cost_usd: f64,
}

impl TaskResult {
    pub(super) fn new(task: &Task, latency_ms: f64) -> Self {
        TaskResult {
            id: task.id.clone(),
            kind: task.kind.clone(),
            line: task.line,
            correct: false,
            reason: None,
            error: None,
            error_kind: None,
            answer: None,
            served_by: None,
            cache: None,
            attempts: 0,
            slm_first_try: false,
            escalated: false,
            latency_ms,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            energy_j: 0.0,
            counterfactual_llm_cost_usd: 0.0,
        }
    }

    /// Adds up the call's ledger records, as [`crate::ledger::Report`] does: a cache hit
    /// costs nothing and makes no attempt, but carries the counterfactual.
    pub(super) fn add_records(&mut self, records: &[AttemptRecord]) {
        let mut sorted: Vec<&AttemptRecord> = records.iter().collect();
        sorted.sort_by_key(|record| record.attempt);
        if let Some(first) = sorted.first() {
            self.escalated = first.tier == Tier::Slm && sorted.iter().any(|record| record.tier == Tier::Llm);
        }
        for record in sorted {
            self.counterfactual_llm_cost_usd += record.counterfactual_llm_cost_usd.unwrap_or(0.0);
            if record.outcome == Outcome::CacheHit {
                continue;
            }
            self.attempts += 1;
            self.prompt_tokens += u64::from(record.prompt_tokens);
            self.completion_tokens += u64::from(record.completion_tokens);
            self.cost_usd += record.cost_usd;
            self.energy_j += record.energy_j.unwrap_or(0.0);
        }
    }
}

/// A group of tasks (one kind, or all) added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub tasks: u64,
    pub correct: u64,
    /// `correct / tasks`.
    pub accuracy: f64,
    /// Tasks whose call failed (counted wrong).
    pub errors: u64,
    /// Tasks the SLM served on the call's first attempt.
    pub slm_first_try: u64,
    /// `slm_first_try / tasks`.
    pub slm_first_try_rate: f64,
    /// Of those, the ones whose answer was right.
    pub slm_first_try_correct: u64,
    /// Backend attempts per task.
    pub mean_attempts: f64,
    pub escalations: u64,
    /// Nearest-rank percentiles of the calls' wall-clock latency.
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Every attempt's cost, from the ledger.
    pub cost_usd: f64,
    pub energy_j: f64,
    /// The same calls sent to the LLM and answered first try.
    pub counterfactual_llm_cost_usd: f64,
    /// `counterfactual_llm_cost_usd - cost_usd`.
    pub net_saving_usd: f64,
    /// The net saving over the counterfactual (0 when that is 0).
    pub saving_share: f64,
}

impl Summary {
    /// Adds up `results`.
    pub fn over<'a>(results: impl IntoIterator<Item = &'a TaskResult>) -> Summary {
        let mut summary = Summary::default();
        let mut latencies = Vec::new();
        let mut attempts = 0u64;
        for result in results {
            summary.tasks += 1;
            summary.correct += u64::from(result.correct);
            summary.errors += u64::from(result.error.is_some());
            summary.slm_first_try += u64::from(result.slm_first_try);
            summary.slm_first_try_correct += u64::from(result.slm_first_try && result.correct);
            summary.escalations += u64::from(result.escalated);
            attempts += u64::from(result.attempts);
            latencies.push(result.latency_ms);
            summary.prompt_tokens += result.prompt_tokens;
            summary.completion_tokens += result.completion_tokens;
            summary.cost_usd += result.cost_usd;
            summary.energy_j += result.energy_j;
            summary.counterfactual_llm_cost_usd += result.counterfactual_llm_cost_usd;
        }
        let ratio = |part: f64, whole: u64| if whole == 0 { 0.0 } else { part / whole as f64 };
        summary.accuracy = ratio(summary.correct as f64, summary.tasks);
        summary.slm_first_try_rate = ratio(summary.slm_first_try as f64, summary.tasks);
        summary.mean_attempts = ratio(attempts as f64, summary.tasks);
        latencies.sort_by(f64::total_cmp);
        summary.latency_p50_ms = percentile(&latencies, 50);
        summary.latency_p90_ms = percentile(&latencies, 90);
        summary.net_saving_usd = summary.counterfactual_llm_cost_usd - summary.cost_usd;
        summary.saving_share = if summary.counterfactual_llm_cost_usd > 0.0 {
            summary.net_saving_usd / summary.counterfactual_llm_cost_usd
        } else {
            0.0
        };
        summary
    }
}

/// The nearest-rank `p`th percentile of sorted values (0 for none).
fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// A whole run: how it was made, overall and per kind, and every task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// `pipeline` (the client as configured) or `bare` (the SLM alone, one attempt, no
    /// validators, no grammar).
    pub mode: String,
    /// The SLM tier's model, if any.
    #[serde(default)]
    pub slm: Option<String>,
    /// The LLM tier's model, if any.
    #[serde(default)]
    pub llm: Option<String>,
    /// The task file, when the run came from one.
    #[serde(default)]
    pub tasks_file: Option<String>,
    pub overall: Summary,
    /// By task kind, in name order.
    pub kinds: BTreeMap<String, Summary>,
    pub tasks: Vec<TaskResult>,
}

impl EvalResult {
    /// Adds up `tasks`.
    pub fn new(mode: &str, slm: Option<String>, llm: Option<String>, tasks: Vec<TaskResult>) -> Self {
        let mut by_kind: BTreeMap<String, Vec<&TaskResult>> = BTreeMap::new();
        for task in &tasks {
            by_kind.entry(task.kind.clone()).or_default().push(task);
        }
        let kinds = by_kind.into_iter().map(|(kind, results)| (kind, Summary::over(results))).collect();
        EvalResult { mode: mode.to_owned(), slm, llm, tasks_file: None, overall: Summary::over(&tasks), kinds, tasks }
    }

    /// Reads a result written as JSON (`slmkit eval --out`).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::InvalidRequest`] naming it when it
    /// is not an eval result.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Io { context: format!("cannot read eval result {}", path.display()), source })?;
        serde_json::from_str(&text).map_err(|err| {
            Error::invalid_request(format!("{} is not an slmkit eval result: {err}", path.display()), None)
        })
    }

    /// What the run was: mode and models.
    pub fn title(&self) -> String {
        let tiers =
            format!("SLM {}, LLM {}", self.slm.as_deref().unwrap_or("none"), self.llm.as_deref().unwrap_or("none"));
        match &self.tasks_file {
            Some(file) => format!("slmkit eval ({}; {tiers}) on {file}", self.mode),
            None => format!("slmkit eval ({}; {tiers})", self.mode),
        }
    }

    /// The table for people: one row per kind and one overall, then the wrong answers.
    pub fn to_table(&self) -> String {
        let header = [
            "kind",
            "tasks",
            "accuracy",
            "SLM 1st try",
            "attempts",
            "escal.",
            "p50 ms",
            "p90 ms",
            "tokens in/out",
            "cost $",
            "energy J",
            "all-LLM $",
            "net saving $",
        ];
        let row = |name: &str, summary: &Summary| -> Vec<String> {
            vec![
                name.to_owned(),
                summary.tasks.to_string(),
                format!("{:.1}% ({})", summary.accuracy * 100.0, summary.correct),
                format!("{:.1}% ({})", summary.slm_first_try_rate * 100.0, summary.slm_first_try),
                format!("{:.2}", summary.mean_attempts),
                summary.escalations.to_string(),
                format!("{:.0}", summary.latency_p50_ms),
                format!("{:.0}", summary.latency_p90_ms),
                format!("{}/{}", summary.prompt_tokens, summary.completion_tokens),
                format!("{:.6}", summary.cost_usd),
                format!("{:.1}", summary.energy_j),
                format!("{:.6}", summary.counterfactual_llm_cost_usd),
                format!("{:.6} ({:.0}%)", summary.net_saving_usd, summary.saving_share * 100.0),
            ]
        };
        let mut rows: Vec<Vec<String>> = self.kinds.iter().map(|(kind, summary)| row(kind, summary)).collect();
        rows.push(row("overall", &self.overall));
        let mut table = format!("{}\n", self.title());
        table.push_str(&render(&header.map(str::to_owned), &rows));
        let wrong: Vec<&TaskResult> = self.tasks.iter().filter(|task| !task.correct).collect();
        if !wrong.is_empty() {
            table.push_str(&format!("\nwrong ({}):\n", wrong.len()));
            for task in wrong {
                let reason = task.reason.as_deref().unwrap_or("");
                table.push_str(&format!("  {} [{}] line {}: {}\n", task.id, task.kind, task.line, clip(reason, 160)));
            }
        }
        table
    }

    /// Two runs side by side: the overall figures, then accuracy per kind.
    pub fn compare(a: &EvalResult, b: &EvalResult) -> String {
        let header = ["", "A", "B"].map(str::to_owned);
        let (x, y) = (&a.overall, &b.overall);
        let pct = |value: f64| format!("{:.1}%", value * 100.0);
        let mut rows = vec![
            vec!["mode".to_owned(), a.mode.clone(), b.mode.clone()],
            vec!["tasks".into(), x.tasks.to_string(), y.tasks.to_string()],
            vec!["accuracy".into(), pct(x.accuracy), pct(y.accuracy)],
            vec!["errors".into(), x.errors.to_string(), y.errors.to_string()],
            vec!["SLM first try".into(), pct(x.slm_first_try_rate), pct(y.slm_first_try_rate)],
            vec![
                "SLM first try, right".into(),
                x.slm_first_try_correct.to_string(),
                y.slm_first_try_correct.to_string(),
            ],
            vec!["mean attempts".into(), format!("{:.2}", x.mean_attempts), format!("{:.2}", y.mean_attempts)],
            vec!["escalations".into(), x.escalations.to_string(), y.escalations.to_string()],
            vec!["latency p50 ms".into(), format!("{:.0}", x.latency_p50_ms), format!("{:.0}", y.latency_p50_ms)],
            vec!["latency p90 ms".into(), format!("{:.0}", x.latency_p90_ms), format!("{:.0}", y.latency_p90_ms)],
            vec!["prompt tokens".into(), x.prompt_tokens.to_string(), y.prompt_tokens.to_string()],
            vec!["completion tokens".into(), x.completion_tokens.to_string(), y.completion_tokens.to_string()],
            vec!["cost $".into(), format!("{:.6}", x.cost_usd), format!("{:.6}", y.cost_usd)],
            vec!["energy J".into(), format!("{:.1}", x.energy_j), format!("{:.1}", y.energy_j)],
            vec![
                "all-LLM counterfactual $".into(),
                format!("{:.6}", x.counterfactual_llm_cost_usd),
                format!("{:.6}", y.counterfactual_llm_cost_usd),
            ],
            vec!["net saving $".into(), format!("{:.6}", x.net_saving_usd), format!("{:.6}", y.net_saving_usd)],
        ];
        let kinds: std::collections::BTreeSet<&String> = a.kinds.keys().chain(b.kinds.keys()).collect();
        for kind in kinds {
            let cell = |result: &EvalResult| match result.kinds.get(kind) {
                Some(summary) => format!("{} ({}/{})", pct(summary.accuracy), summary.correct, summary.tasks),
                None => "-".to_owned(),
            };
            rows.push(vec![format!("accuracy: {kind}"), cell(a), cell(b)]);
        }
        format!("A: {}\nB: {}\n{}", a.title(), b.title(), render(&header, &rows))
    }
}

/// Columns padded to their widest cell; the first left-aligned, the rest right-aligned.
fn render(header: &[String], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::from(" ");
        for (index, cell) in cells.iter().enumerate().take(columns) {
            let width = widths[index];
            let padded = if index == 0 { format!(" {cell:<width$}") } else { format!("  {cell:>width$}") };
            text.push_str(&padded);
        }
        text.push('\n');
        text
    };
    let mut table = line(header);
    let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
    table.push_str(&line(&rule));
    for row in rows {
        table.push_str(&line(row));
    }
    table
}

fn clip(text: &str, chars: usize) -> String {
    let single = text.replace('\n', " ");
    match single.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}…", &single[..cut]),
        None => single,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&values, 50), 5.0);
        assert_eq!(percentile(&values, 90), 9.0);
        assert_eq!(percentile(&[7.0], 90), 7.0);
        assert_eq!(percentile(&[], 50), 0.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50), 2.0);
    }
}
