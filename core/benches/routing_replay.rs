//! The adaptive router replayed on real outcomes:
//! `cargo bench -p slmkit --bench routing_replay -- SLM.json [LLM.json] [--tasks TASKS.jsonl] [--out FILE.md]`.
//!
//! `SLM.json` is an `slmkit eval --out` result of the SLM (its pipeline: attempts, escalation,
//! the check's verdict per task); `LLM.json`, when given, the same tasks answered by the LLM.
//! Without it the LLM is assumed to answer every task correctly at the gpt-4o list price of
//! the task's tokens (the eval's counterfactual), and the report says so. The tasks file
//! (default: the one the result names) gives each task's real request.
//!
//! The stream replays the tasks in shuffled passes (an agent's recurring calls). Each call's
//! real request goes through the real `Router`: its task key, its heuristic score, and, for the
//! adaptive policy, the real `OutcomeStats` fed with attempt records shaped like the recorded
//! run (validator rejections, escalation) and with the eval's verdict as feedback on a share
//! of the SLM's answers. What a call costs and whether it ends right is what the eval recorded
//! for that task on the tier(s) it went to.
//!
//! Policies: two oracles (per cluster: knows each task key's SLM right-rate and routes like the
//! simulation's oracle; per task: hindsight, SLM first exactly where the SLM was right),
//! always-LLM, always-SLM-with-escalation, the static heuristic, and the adaptive router with
//! feedback and with validation alone.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use slmkit::eval::{read_tasks, EvalResult, TaskResult};
use slmkit::ledger::{AttemptRecord, FeedbackSource, Outcome, Pricing, RecordObserver, Verdict};
use slmkit::routing::adaptive::{Adaptive, AdaptiveConfig, TierPrices};
use slmkit::routing::stats::{Learning, OutcomeStats};
use slmkit::routing::{task_key, Router, RoutingConfig, SlmProfile};
use slmkit::types::ChatCompletionRequest;
use slmkit::Tier;

/// Calls per replay, rounded up to whole passes over the tasks.
const CALLS: usize = 2000;
const SLM_ATTEMPTS: u32 = 3;
const FLOOR: f64 = 0.7;
/// The share of the SLM's answers whose eval verdict reaches the router as feedback.
const FEEDBACK_SHARE: f64 = 0.3;
const SLM_MODEL: &str = "replay-slm";
const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

/// One task as the replay needs it.
struct Replayed {
    id: String,
    kind: String,
    request: ChatCompletionRequest,
    key: String,
    /// The request with its kind as the caller's task tag (`metadata.slmkit_task`), and its key.
    tagged: ChatCompletionRequest,
    tagged_key: String,
    slm: SlmRun,
    llm: LlmRun,
}

/// What the recorded SLM-first run of a task did.
struct SlmRun {
    /// SLM attempts, each with its recorded cost.
    attempts: u32,
    attempt_usd: f64,
    attempt_ms: f64,
    /// Answered by the SLM (else it escalated, or failed: the LLM answers).
    served: bool,
    correct: bool,
}

/// What the LLM costs on a task and whether it is right.
struct LlmRun {
    usd: f64,
    ms: f64,
    correct: bool,
}

impl Replayed {
    /// The cost and final correctness of SLM first.
    fn slm_first(&self) -> (f64, bool) {
        let slm = f64::from(self.slm.attempts) * self.slm.attempt_usd;
        if self.slm.served {
            (slm, self.slm.correct)
        } else {
            (slm + self.llm.usd, self.llm.correct)
        }
    }
}

struct Inputs {
    tasks: Vec<Replayed>,
    slm_file: PathBuf,
    llm_file: Option<PathBuf>,
    tasks_file: PathBuf,
    slm_model: String,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A path as given, else relative to the workspace root (cargo runs benches in `core/`).
fn resolve(path: &str) -> PathBuf {
    let given = PathBuf::from(path);
    if given.is_absolute() || given.exists() {
        given
    } else {
        workspace_root().join(given)
    }
}

fn llm_run(result: Option<&TaskResult>, slm: &TaskResult) -> LlmRun {
    match result {
        Some(result) => LlmRun { usd: result.cost_usd, ms: result.latency_ms, correct: result.correct },
        None => {
            // The eval's counterfactual prices the SLM's tokens at the LLM's list price; a
            // failed call has none, so its tokens are priced here.
            let usd = if slm.counterfactual_llm_cost_usd > 0.0 {
                slm.counterfactual_llm_cost_usd
            } else {
                let attempts = slm.attempts.max(1) as u64;
                let prompt = (slm.prompt_tokens / attempts) as u32;
                let completion = (slm.completion_tokens / attempts).max(1) as u32;
                Pricing::gpt_4o().price(prompt, completion, Duration::ZERO).0
            };
            LlmRun { usd, ms: 3000.0, correct: true }
        }
    }
}

fn read_inputs(args: &[String]) -> (Inputs, Option<PathBuf>) {
    let mut files = Vec::new();
    let mut tasks_file = None;
    let mut out = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--tasks" => tasks_file = rest.next().map(|path| resolve(path)),
            "--out" => out = rest.next().map(|path| resolve(path)),
            "--bench" => {}
            other => files.push(resolve(other)),
        }
    }
    let slm_file =
        files.first().cloned().unwrap_or_else(|| resolve("bench/results/eval-qwen2.5-coder-0.5b-pipeline.json"));
    let llm_file = files.get(1).cloned();
    let slm = EvalResult::read(&slm_file).unwrap_or_else(|err| panic!("{err}"));
    let llm = llm_file.as_ref().map(|path| EvalResult::read(path).unwrap_or_else(|err| panic!("{err}")));
    let tasks_file = tasks_file
        .or_else(|| slm.tasks_file.as_deref().map(resolve))
        .expect("the SLM result names no tasks file: pass --tasks");
    let requests: BTreeMap<String, ChatCompletionRequest> = read_tasks(&tasks_file)
        .unwrap_or_else(|err| panic!("{err}"))
        .into_iter()
        .map(|task| (task.id, task.request))
        .collect();
    let llm_by_id: BTreeMap<&str, &TaskResult> =
        llm.as_ref().map(|llm| llm.tasks.iter().map(|task| (task.id.as_str(), task)).collect()).unwrap_or_default();
    let mut tasks = Vec::new();
    for result in &slm.tasks {
        let request = requests
            .get(&result.id)
            .unwrap_or_else(|| panic!("task {} is not in {}", result.id, tasks_file.display()))
            .clone();
        if llm.is_some() && !llm_by_id.contains_key(result.id.as_str()) {
            panic!("task {} is not in the LLM's result", result.id);
        }
        let attempts = result.attempts.max(1);
        let served = result.served_by == Some(Tier::Slm);
        let slm_attempts = if served || result.escalated { attempts } else { SLM_ATTEMPTS.min(attempts) };
        let llm = llm_run(llm_by_id.get(result.id.as_str()).copied(), result);
        let llm_share = if result.escalated { llm.usd } else { 0.0 };
        let mut tagged = request.clone();
        tagged
            .metadata
            .get_or_insert_with(Default::default)
            .insert("slmkit_task".into(), serde_json::Value::from(result.kind.clone()));
        tasks.push(Replayed {
            id: result.id.clone(),
            kind: result.kind.clone(),
            key: task_key(&request).key,
            tagged_key: task_key(&tagged).key,
            tagged,
            request,
            slm: SlmRun {
                attempts: slm_attempts,
                attempt_usd: ((result.cost_usd - llm_share).max(0.0)) / f64::from(slm_attempts),
                attempt_ms: result.latency_ms / f64::from(slm_attempts),
                served,
                correct: served && result.correct,
            },
            llm,
        });
    }
    let inputs = Inputs {
        tasks,
        slm_file,
        llm_file,
        tasks_file,
        slm_model: slm.slm.clone().unwrap_or_else(|| "the SLM".into()),
    };
    (inputs, out)
}

#[derive(Clone, Copy, PartialEq)]
enum Policy {
    ClusterOracle,
    TaskOracle,
    AlwaysLlm,
    AlwaysSlm,
    Heuristic,
    Adaptive,
    AdaptiveValidationOnly,
    KindOracle,
    AdaptiveTagged,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::ClusterOracle => "oracle (knows each cluster's SLM rate)",
            Policy::TaskOracle => "hindsight (knows each task's outcome)",
            Policy::AlwaysLlm => "always LLM",
            Policy::AlwaysSlm => "always SLM, escalating",
            Policy::Heuristic => "static heuristic",
            Policy::Adaptive => "adaptive router",
            Policy::AdaptiveValidationOnly => "adaptive router, no feedback (validators only)",
            Policy::KindOracle => "oracle per kind (knows each kind's SLM rate)",
            Policy::AdaptiveTagged => "adaptive router, calls tagged with their kind",
        }
    }
}

fn slm_profile() -> SlmProfile {
    SlmProfile { context_window: 32_768, tokenizer: None, supports_tools: true, supports_images: false }
}

fn adaptive_router(stats: Arc<OutcomeStats>, seed: u64) -> Router {
    let router = Router::new(&RoutingConfig::default(), Some(slm_profile()), true).unwrap();
    let prices = TierPrices {
        slm: Pricing::local_default(),
        llm: Pricing::gpt_4o(),
        slm_model: SLM_MODEL.into(),
        slm_attempts: SLM_ATTEMPTS,
    };
    let config = AdaptiveConfig { quality_floor: FLOOR, seed: Some(seed), ..AdaptiveConfig::default() };
    router.with_adaptive(Adaptive::new(stats, prices, config).unwrap())
}

/// The per-cluster oracle's choice: SLM first where the cluster's right-rate after retries
/// clears the floor and SLM first is cheaper on average.
fn cluster_oracle(tasks: &[Replayed], by_kind: bool) -> Vec<bool> {
    let key = |task: &'_ Replayed| if by_kind { task.tagged_key.clone() } else { task.key.clone() };
    let mut by_key: BTreeMap<String, (f64, f64, f64, f64)> = BTreeMap::new();
    for task in tasks {
        let (usd, right) = task.slm_first();
        let entry = by_key.entry(key(task)).or_default();
        entry.0 += usd;
        entry.1 += task.llm.usd;
        entry.2 += f64::from(u8::from(right));
        entry.3 += 1.0;
    }
    tasks
        .iter()
        .map(|task| {
            let (slm, llm, right, n) = by_key[&key(task)];
            right / n >= FLOOR && slm < llm
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Tally {
    usd: f64,
    right: u64,
    calls: u64,
    slm_first: u64,
}

fn replay(policy: Policy, tasks: &[Replayed], seed: u64) -> (Tally, Vec<Tally>) {
    let stats = Arc::new(OutcomeStats::new(Learning { keep: AdaptiveConfig::default().keep, ..Learning::default() }));
    let router = adaptive_router(stats.clone(), seed);
    let heuristic = Router::new(&RoutingConfig::default(), Some(slm_profile()), true).unwrap();
    let oracle = cluster_oracle(tasks, false);
    let kind_oracle = cluster_oracle(tasks, true);
    let passes = CALLS.div_ceil(tasks.len());
    let mut order_rng = StdRng::seed_from_u64(seed);
    let mut feedback_rng = StdRng::seed_from_u64(seed ^ 0xfeed);
    let mut total = Tally::default();
    let mut per_task = vec![Tally::default(); tasks.len()];
    let mut call = 0usize;
    for _ in 0..passes {
        let mut order: Vec<usize> = (0..tasks.len()).collect();
        order.shuffle(&mut order_rng);
        for index in order {
            let task = &tasks[index];
            let slm_first = match policy {
                Policy::ClusterOracle => oracle[index],
                Policy::KindOracle => kind_oracle[index],
                Policy::AdaptiveTagged => router.decide(&task.tagged).unwrap().tier == Tier::Slm,
                Policy::TaskOracle => task.slm.served && task.slm.correct && task.slm_first().0 <= task.llm.usd,
                Policy::AlwaysLlm => false,
                Policy::AlwaysSlm => true,
                Policy::Heuristic => heuristic.decide(&task.request).unwrap().tier == Tier::Slm,
                Policy::Adaptive | Policy::AdaptiveValidationOnly => {
                    router.decide(&task.request).unwrap().tier == Tier::Slm
                }
            };
            let call_id = format!("replay-{call}");
            call += 1;
            let (usd, right) = if slm_first { task.slm_first() } else { (task.llm.usd, task.llm.correct) };
            if matches!(policy, Policy::Adaptive | Policy::AdaptiveValidationOnly | Policy::AdaptiveTagged) {
                let share = if policy == Policy::AdaptiveValidationOnly { 0.0 } else { FEEDBACK_SHARE };
                let key = if policy == Policy::AdaptiveTagged { &task.tagged_key } else { &task.key };
                feed(&stats, &call_id, task, key, slm_first, share, &mut feedback_rng);
            }
            for tally in [&mut total, &mut per_task[index]] {
                tally.usd += usd;
                tally.right += u64::from(right);
                tally.calls += 1;
                tally.slm_first += u64::from(slm_first);
            }
        }
    }
    (total, per_task)
}

/// The ledger records the recorded run would have written, and the eval's verdict on a share
/// of the SLM's answers.
fn feed(
    stats: &OutcomeStats,
    call_id: &str,
    task: &Replayed,
    key: &str,
    slm_first: bool,
    share: f64,
    rng: &mut StdRng,
) {
    let record = |attempt, tier, outcome, served, cost_usd, latency_ms| AttemptRecord {
        outcome,
        served,
        cost_usd,
        latency_ms,
        task_key: Some(key.to_owned()),
        ..AttemptRecord::new(
            call_id,
            attempt,
            tier,
            "replay",
            if tier == Tier::Slm { SLM_MODEL } else { "replay-llm" },
            None,
        )
    };
    let mut attempt = 0;
    if slm_first {
        for n in 1..=task.slm.attempts {
            attempt += 1;
            let last = n == task.slm.attempts;
            let accepted = last && task.slm.served;
            let outcome = if accepted { Outcome::Ok } else { Outcome::ValidationFailed };
            stats.observe(&record(attempt, Tier::Slm, outcome, accepted, task.slm.attempt_usd, task.slm.attempt_ms));
        }
        if task.slm.served {
            if rng.random::<f64>() < share {
                stats.observe(&AttemptRecord {
                    outcome: Outcome::Feedback,
                    feedback: Some(Verdict { correct: task.slm.correct, source: FeedbackSource::Eval }),
                    ..record(attempt, Tier::Slm, Outcome::Feedback, false, 0.0, 0.0)
                });
            }
            return;
        }
    }
    stats.observe(&record(attempt + 1, Tier::Llm, Outcome::Ok, true, task.llm.usd, task.llm.ms));
}

fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[0], sorted[sorted.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (inputs, out) = read_inputs(&args);
    let tasks = &inputs.tasks;
    let passes = CALLS.div_ceil(tasks.len());
    let mut report = String::new();
    let mut line = |text: String| {
        println!("{text}");
        report.push_str(&text);
        report.push('\n');
    };
    line("# Routing replay on real outcomes\n".into());
    let display = |path: &Path| path.strip_prefix(workspace_root()).unwrap_or(path).display().to_string();
    line(format!(
        "SLM outcomes: `{}` ({}, {} tasks, {:.1}% right). Requests: `{}`.",
        display(&inputs.slm_file),
        inputs.slm_model,
        tasks.len(),
        tasks.iter().filter(|task| task.slm.correct).count() as f64 / tasks.len() as f64 * 100.0,
        display(&inputs.tasks_file)
    ));
    match &inputs.llm_file {
        Some(path) => line(format!("LLM outcomes: `{}`.", display(path))),
        None => line(
            "LLM outcomes: **assumed** — no LLM result was given, so the LLM is taken to answer every task \
             correctly, at the gpt-4o list price of the task's tokens (the eval's counterfactual)."
                .into(),
        ),
    }
    let clusters: std::collections::BTreeSet<&str> = tasks.iter().map(|task| task.key.as_str()).collect();
    let kinds: std::collections::BTreeSet<&str> = tasks.iter().map(|task| task.kind.as_str()).collect();
    line(format!(
        "\n{passes} shuffled passes over the tasks ({} calls) per seed, seeds {SEEDS:?}; figures are the median \
         over seeds with [min–max]. Cost is dollars as recorded (the SLM's energy at the local default \
         price, the LLM's list price); latency is not priced. Up to {SLM_ATTEMPTS} SLM attempts as recorded. \
         Quality floor {FLOOR}. The adaptive router gets the eval's verdict as feedback on {:.0}% of the SLM's \
         answers. Task keys from the real requests: {} clusters over {} kinds.\n",
        passes * tasks.len(),
        FEEDBACK_SHARE * 100.0,
        clusters.len(),
        kinds.len()
    ));
    let policies = [
        Policy::ClusterOracle,
        Policy::TaskOracle,
        Policy::AlwaysLlm,
        Policy::AlwaysSlm,
        Policy::Heuristic,
        Policy::Adaptive,
        Policy::AdaptiveValidationOnly,
        Policy::KindOracle,
        Policy::AdaptiveTagged,
    ];
    let mut rows = Vec::new();
    for policy in policies {
        let runs: Vec<(Tally, Vec<Tally>)> = SEEDS.iter().map(|seed| replay(policy, tasks, *seed)).collect();
        rows.push((policy, runs));
    }
    let cost = |runs: &[(Tally, Vec<Tally>)]| spread(&runs.iter().map(|(total, _)| total.usd).collect::<Vec<_>>());
    let oracle = cost(&rows[0].1).0;
    let heuristic = cost(&rows[4].1).0;
    line(
        "| policy | cost | regret vs oracle | vs heuristic | right answers | SLM first |\n|---|---:|---:|---:|---:|---:|"
            .into(),
    );
    for (policy, runs) in &rows {
        let (usd, low, high) = cost(runs);
        let share = |pick: &dyn Fn(&Tally) -> u64| {
            spread(&runs.iter().map(|(total, _)| pick(total) as f64 / total.calls as f64 * 100.0).collect::<Vec<_>>())
        };
        let (right, right_low, right_high) = share(&|tally| tally.right);
        let (slm, _, _) = share(&|tally| tally.slm_first);
        line(format!(
            "| {} | ${usd:.4} [{low:.4}–{high:.4}] | {:+.1}% | {:+.1}% | {right:.1}% [{right_low:.1}–{right_high:.1}] | {slm:.1}% |",
            policy.name(),
            (usd / oracle - 1.0) * 100.0,
            (usd / heuristic - 1.0) * 100.0,
        ));
    }
    line(
        "\nPer kind (seed 1): the SLM's right-rate as recorded; the share of calls sent SLM first, and of right \
         answers, by the heuristic, the adaptive router (task keys from the requests) and the adaptive router \
         with kind tags.\n"
            .into(),
    );
    line(
        "| kind | tasks | clusters | SLM right | heuristic: SLM first | adaptive: SLM first | adaptive: right | \
         tagged: SLM first | tagged: right |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            .into(),
    );
    for kind in &kinds {
        let members: Vec<usize> = (0..tasks.len()).filter(|index| tasks[*index].kind == *kind).collect();
        let keys: std::collections::BTreeSet<&str> = members.iter().map(|index| tasks[*index].key.as_str()).collect();
        let sum = |row: usize, pick: &dyn Fn(&Tally) -> u64| -> f64 {
            let tallies = &rows[row].1[0].1;
            let picked: u64 = members.iter().map(|index| pick(&tallies[*index])).sum();
            let calls: u64 = members.iter().map(|index| tallies[*index].calls).sum();
            picked as f64 / calls as f64 * 100.0
        };
        line(format!(
            "| {kind} | {} | {} | {:.0}% | {:.0}% | {:.0}% | {:.1}% | {:.0}% | {:.1}% |",
            members.len(),
            keys.len(),
            members.iter().filter(|index| tasks[**index].slm.correct).count() as f64 / members.len() as f64 * 100.0,
            sum(4, &|tally| tally.slm_first),
            sum(5, &|tally| tally.slm_first),
            sum(5, &|tally| tally.right),
            sum(8, &|tally| tally.slm_first),
            sum(8, &|tally| tally.right),
        ));
    }
    let wrong: Vec<&str> = tasks.iter().filter(|task| !task.slm.correct).map(|task| task.id.as_str()).collect();
    line(format!("\nTasks the SLM got wrong: {}.", wrong.join(", ")));
    if let Some(out) = out {
        std::fs::write(&out, report).unwrap_or_else(|err| panic!("cannot write {}: {err}", out.display()));
        eprintln!("wrote {}", out.display());
    }
}
