//! Scoring the router on labelled agent calls (JSONL: `{"id", "label": "slm"|"llm",
//! "request": {...}}`, the format of `shared/routing/devset.jsonl`).

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::routing::Router;
use crate::tier::Tier;
use crate::types::ChatCompletionRequest;

/// One labelled call. Fields other than these (e.g. `category`, `why`) are ignored, and
/// never shown to the router.
#[derive(Debug, Clone, Deserialize)]
pub struct LabelledCall {
    pub id: String,
    pub label: Tier,
    pub request: ChatCompletionRequest,
}

/// Reads a labelled JSONL file.
///
/// # Errors
/// [`Error::Io`] for an unreadable file; [`Error::Config`] naming the line that does not parse.
pub fn read_labelled(path: &Path) -> Result<Vec<LabelledCall>> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Io { context: format!("cannot read {}", path.display()), source })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line)
                .map_err(|err| Error::Config(format!("{}:{}: not a labelled call: {err}", path.display(), index + 1)))
        })
        .collect()
}

/// How a router did on a labelled set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Evaluation {
    pub total: usize,
    pub correct: usize,
    pub labelled_slm: usize,
    pub routed_slm: usize,
    /// Routed to the SLM but labelled `llm`: costs quality.
    pub false_slm: Vec<String>,
    /// Routed to the LLM but labelled `slm`: costs money.
    pub false_llm: Vec<String>,
    /// Median decision time in microseconds.
    pub median_decision_us: f64,
}

/// Routes every call and compares with its label.
///
/// # Errors
/// The router's error for a call it cannot decide (a malformed routing hint).
pub fn evaluate(router: &Router, calls: &[LabelledCall]) -> Result<Evaluation> {
    let mut evaluation = Evaluation {
        total: calls.len(),
        correct: 0,
        labelled_slm: 0,
        routed_slm: 0,
        false_slm: Vec::new(),
        false_llm: Vec::new(),
        median_decision_us: 0.0,
    };
    let mut timings = Vec::with_capacity(calls.len());
    for call in calls {
        let started = std::time::Instant::now();
        let decision = router.decide(&call.request)?;
        timings.push(started.elapsed().as_secs_f64() * 1e6);
        evaluation.labelled_slm += usize::from(call.label == Tier::Slm);
        evaluation.routed_slm += usize::from(decision.tier == Tier::Slm);
        match (call.label, decision.tier) {
            (label, routed) if label == routed => evaluation.correct += 1,
            (Tier::Llm, _) => evaluation.false_slm.push(call.id.clone()),
            (Tier::Slm, _) => evaluation.false_llm.push(call.id.clone()),
        }
    }
    timings.sort_by(f64::total_cmp);
    evaluation.median_decision_us = timings.get(timings.len() / 2).copied().unwrap_or(0.0);
    Ok(evaluation)
}

impl std::fmt::Display for Evaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = |part: usize| if self.total == 0 { 0.0 } else { part as f64 / self.total as f64 };
        let labelled_llm = self.total - self.labelled_slm;
        let routed_llm = self.total - self.routed_slm;
        let rate = |part: usize, whole: usize| if whole == 0 { 0.0 } else { part as f64 / whole as f64 };
        writeln!(f, "accuracy        {}/{} = {:.3}", self.correct, self.total, share(self.correct))?;
        writeln!(
            f,
            "SLM share       routed {:.3}  vs labelled {:.3}",
            share(self.routed_slm),
            share(self.labelled_slm)
        )?;
        writeln!(f, "confusion       (rows: label, columns: routed)")?;
        writeln!(f, "                  slm   llm")?;
        writeln!(f, "  label slm     {:>5} {:>5}", self.labelled_slm - self.false_llm.len(), self.false_llm.len())?;
        writeln!(f, "  label llm     {:>5} {:>5}", self.false_slm.len(), labelled_llm - self.false_slm.len())?;
        writeln!(f, "  (routed slm {}, routed llm {})", self.routed_slm, routed_llm)?;
        writeln!(
            f,
            "false slm       {}/{} = {:.3}  (quality risk) {:?}",
            self.false_slm.len(),
            labelled_llm,
            rate(self.false_slm.len(), labelled_llm),
            self.false_slm
        )?;
        writeln!(
            f,
            "false llm       {}/{} = {:.3}  (extra cost)   {:?}",
            self.false_llm.len(),
            self.labelled_slm,
            rate(self.false_llm.len(), self.labelled_slm),
            self.false_llm
        )?;
        write!(f, "decision time   median {:.1} us", self.median_decision_us)
    }
}
