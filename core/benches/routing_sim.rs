//! The adaptive router judged on a simulated stream: `cargo bench -p slmkit --bench routing_sim`.
//!
//! Calls come from task clusters whose SLM per-attempt rates are known: an attempt's answer is
//! accepted and right (`right`), accepted but wrong (`wrong`, caught only by feedback), or
//! rejected by the validators (the rest: a retry, and after three an escalation to the LLM,
//! which is always right). One cluster degrades halfway. A share of served answers gets
//! explicit feedback. The real `Router` (heuristic prior, Thompson sampling, quality floor) and
//! the real `OutcomeStats` decide and learn; the simulation only draws outcomes and prices them
//! with the pricing defaults (gpt-4o list price for the LLM, the local energy default for the
//! SLM) plus a price on latency.
//!
//! Policies: the oracle (knows the rates: SLM first where that is cheaper and its success
//! after retries clears the floor), always-LLM, always-SLM-with-escalation, the static
//! heuristic and the adaptive router. Prints a Markdown report; also measures loading a
//! statistics file of 10,000 clusters.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use slmkit::ledger::{AttemptRecord, FeedbackSource, Outcome, Pricing, RecordObserver, Verdict};
use slmkit::routing::adaptive::{Adaptive, AdaptiveConfig, TierPrices};
use slmkit::routing::stats::{ClusterId, ClusterStats, Learning, OutcomeStats};
use slmkit::routing::{Router, RoutingConfig, SlmProfile};
use slmkit::types::{ChatCompletionRequest, ChatMessage, ResponseFormat};
use slmkit::Tier;

const CALLS: usize = 2000;
const CHECKPOINT: usize = 1000;
const SLM_ATTEMPTS: u32 = 3;
const FEEDBACK_SHARE: f64 = 0.3;
const FLOOR: f64 = 0.7;
/// What a second of the agent's waiting costs: $1.80 an hour.
const USD_PER_SECOND: f64 = 0.0005;
const PROMPT_TOKENS: u32 = 800;
const OUTPUT_TOKENS: u32 = 200;
const SLM_SECONDS: f64 = 1.5;
const LLM_SECONDS: f64 = 3.0;
const SLM_MODEL: &str = "sim-slm";
/// The budget row's target: dollars per call (latency not counted), about two thirds of what
/// the adaptive router spends unconstrained.
const BUDGET_USD_PER_CALL: f64 = 0.0012;

#[derive(Clone, Copy)]
struct Rates {
    right: f64,
    wrong: f64,
}

struct Cluster {
    name: &'static str,
    request: ChatCompletionRequest,
    before: Rates,
    after: Rates,
}

impl Cluster {
    fn rates(&self, call: usize) -> Rates {
        if call < CALLS / 2 {
            self.before
        } else {
            self.after
        }
    }
}

fn request(task: &str, system: &str, user: &str, json: bool) -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(vec![ChatMessage::system(system), ChatMessage::user(user)]);
    if json {
        request.response_format = Some(ResponseFormat::JsonObject);
    }
    request.max_tokens = Some(OUTPUT_TOKENS);
    request.metadata = Some(serde_json::Map::from_iter([("slmkit_task".into(), Value::from(task))]));
    request
}

fn clusters() -> Vec<Cluster> {
    let steady = |right, wrong| (Rates { right, wrong }, Rates { right, wrong });
    let mut all = Vec::new();
    let mut add = |name, request, (before, after): (Rates, Rates)| all.push(Cluster { name, request, before, after });
    add(
        "classify (easy, heuristic: SLM)",
        request(
            "classify",
            "Classify the ticket into exactly one intent: billing, bug, other.",
            "my bill is wrong",
            true,
        ),
        steady(0.95, 0.01),
    );
    add(
        "role-boilerplate extraction (easy, heuristic: LLM)",
        request(
            "extract",
            "You are a principal architect. You design systems, weigh trade-offs and plan strategy for the \
             product roadmap across teams.",
            "Design review context follows. List the file names mentioned in it as a JSON array.",
            true,
        ),
        steady(0.92, 0.02),
    );
    add(
        "multi-file fix (hard, heuristic: SLM)",
        request("fix", "You write one small Python function from a precise spec.", "Write the function.", false),
        steady(0.30, 0.05),
    );
    add(
        "summary that degrades halfway (heuristic: SLM)",
        request("summarise", "Summarise the text in two sentences.", "Summarise: the meeting moved to Tuesday.", false),
        (Rates { right: 0.95, wrong: 0.01 }, Rates { right: 0.25, wrong: 0.05 }),
    );
    add(
        "architecture (hard, heuristic: LLM)",
        request(
            "design",
            "You are a principal engineer.",
            "Design the architecture for our multi-region webhook platform and discuss the trade-offs.",
            false,
        ),
        steady(0.10, 0.10),
    );
    all
}

/// Dollars and seconds of one tier's attempt.
struct Prices {
    slm_usd: f64,
    llm_usd: f64,
}

impl Prices {
    fn new() -> Self {
        let (slm_usd, _) =
            Pricing::local_default().price(PROMPT_TOKENS, OUTPUT_TOKENS, Duration::from_secs_f64(SLM_SECONDS));
        let (llm_usd, _) = Pricing::gpt_4o().price(PROMPT_TOKENS, OUTPUT_TOKENS, Duration::ZERO);
        Prices { slm_usd, llm_usd }
    }

    fn slm_attempt(&self) -> f64 {
        self.slm_usd + USD_PER_SECOND * SLM_SECONDS
    }

    fn llm_call(&self) -> f64 {
        self.llm_usd + USD_PER_SECOND * LLM_SECONDS
    }
}

/// The exact expected cost and right-answer rate of SLM first under `rates`.
fn slm_first_expectation(rates: Rates, prices: &Prices) -> (f64, f64) {
    let reject = 1.0 - rates.right - rates.wrong;
    let mut attempts = 0.0;
    let mut reach = 1.0;
    for _ in 0..SLM_ATTEMPTS {
        attempts += reach;
        reach *= reject;
    }
    let served = 1.0 - reach;
    let right_after_retries = served * rates.right / (rates.right + rates.wrong);
    (attempts * prices.slm_attempt() + reach * prices.llm_call(), right_after_retries)
}

#[derive(Default, Clone, Copy)]
struct Tally {
    usd: f64,
    money_usd: f64,
    right: u64,
    calls: u64,
    slm_first: u64,
}

struct Outcome3 {
    records: Vec<AttemptRecord>,
    usd: f64,
    money_usd: f64,
    right: bool,
}

/// Plays one call: SLM attempts (when `slm_first`), then the LLM.
fn play(call_id: &str, key: &str, rates: Rates, slm_first: bool, prices: &Prices, rng: &mut StdRng) -> Outcome3 {
    let mut records = Vec::new();
    let mut usd = 0.0;
    let mut money = 0.0;
    let mut attempt = 0;
    let record = |attempt, tier, outcome, served, cost_usd, seconds: f64| AttemptRecord {
        outcome,
        served,
        cost_usd,
        latency_ms: seconds * 1000.0,
        task_key: Some(key.to_owned()),
        ..AttemptRecord::new(call_id, attempt, tier, "sim", if tier == Tier::Slm { SLM_MODEL } else { "sim-llm" }, None)
    };
    if slm_first {
        for _ in 0..SLM_ATTEMPTS {
            attempt += 1;
            usd += prices.slm_attempt();
            money += prices.slm_usd;
            let draw: f64 = rng.random();
            if draw < rates.right + rates.wrong {
                records.push(record(attempt, Tier::Slm, Outcome::Ok, true, prices.slm_usd, SLM_SECONDS));
                return Outcome3 { records, usd, money_usd: money, right: draw < rates.right };
            }
            records.push(record(attempt, Tier::Slm, Outcome::ValidationFailed, false, prices.slm_usd, SLM_SECONDS));
        }
    }
    attempt += 1;
    usd += prices.llm_call();
    money += prices.llm_usd;
    records.push(record(attempt, Tier::Llm, Outcome::Ok, true, prices.llm_usd, LLM_SECONDS));
    Outcome3 { records, usd, money_usd: money, right: true }
}

fn routing_config() -> AdaptiveConfig {
    AdaptiveConfig {
        quality_floor: FLOOR,
        usd_per_latency_second: USD_PER_SECOND,
        seed: Some(5),
        ..AdaptiveConfig::default()
    }
}

fn router(adaptive: Option<Arc<OutcomeStats>>, budget: Option<f64>) -> Router {
    let slm = SlmProfile { context_window: 8192, tokenizer: None, supports_tools: true, supports_images: false };
    let router = Router::new(&RoutingConfig::default(), Some(slm), true).unwrap();
    match adaptive {
        None => router,
        Some(stats) => {
            let prices = TierPrices {
                slm: Pricing::local_default(),
                llm: Pricing::gpt_4o(),
                slm_model: SLM_MODEL.into(),
                slm_attempts: SLM_ATTEMPTS,
            };
            let config = AdaptiveConfig { budget_usd_per_call: budget, ..routing_config() };
            router.with_adaptive(Adaptive::new(stats, prices, config).unwrap())
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Policy {
    Oracle,
    AlwaysLlm,
    AlwaysSlm,
    Heuristic,
    Adaptive,
    AdaptiveBudget,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Oracle => "oracle (knows the rates)",
            Policy::AlwaysLlm => "always LLM",
            Policy::AlwaysSlm => "always SLM, escalating",
            Policy::Heuristic => "static heuristic",
            Policy::Adaptive => "adaptive router",
            Policy::AdaptiveBudget => "adaptive router, budget $0.0012/call",
        }
    }
}

struct Run {
    at_checkpoint: Tally,
    total: Tally,
    /// Calls of the degrading cluster after its change until the router stopped trying the SLM
    /// first on it (ten LLM routes in a row).
    noticed_after: Option<usize>,
    per_cluster: Vec<Tally>,
}

fn simulate(policy: Policy, clusters: &[Cluster], seed: u64) -> Run {
    let prices = Prices::new();
    let stats = Arc::new(OutcomeStats::new(Learning { keep: routing_config().keep, ..Learning::default() }));
    let adaptive = matches!(policy, Policy::Adaptive | Policy::AdaptiveBudget);
    let budget = (policy == Policy::AdaptiveBudget).then_some(BUDGET_USD_PER_CALL);
    let router = router(adaptive.then(|| stats.clone()), budget);
    let heuristic = router_heuristic(clusters);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut outcomes = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut total = Tally::default();
    let mut at_checkpoint = Tally::default();
    let mut per_cluster = vec![Tally::default(); clusters.len()];
    let degrading = clusters.iter().position(|cluster| cluster.name.contains("degrades")).unwrap();
    let mut after_change = 0usize;
    let mut llm_streak = 0usize;
    let mut noticed_after = None;
    for call in 0..CALLS {
        let index = rng.random_range(0..clusters.len());
        let cluster = &clusters[index];
        let rates = cluster.rates(call);
        let slm_first = match policy {
            Policy::Oracle => {
                let (usd, right) = slm_first_expectation(rates, &prices);
                right >= FLOOR && usd < prices.llm_call()
            }
            Policy::AlwaysLlm => false,
            Policy::AlwaysSlm => true,
            Policy::Heuristic => heuristic[index],
            Policy::Adaptive | Policy::AdaptiveBudget => router.decide(&cluster.request).unwrap().tier == Tier::Slm,
        };
        let key = format!("tag:{}", cluster.request.metadata.as_ref().unwrap()["slmkit_task"].as_str().unwrap());
        let call_id = format!("call-{call}");
        let played = play(&call_id, &key, rates, slm_first, &prices, &mut outcomes);
        for record in &played.records {
            stats.observe(record);
        }
        let served = played.records.last().unwrap();
        if served.tier == Tier::Slm && outcomes.random::<f64>() < FEEDBACK_SHARE {
            stats.observe(&AttemptRecord {
                outcome: Outcome::Feedback,
                feedback: Some(Verdict { correct: played.right, source: FeedbackSource::Eval }),
                ..served.clone()
            });
        }
        for tally in [&mut total, &mut per_cluster[index]] {
            tally.usd += played.usd;
            tally.money_usd += played.money_usd;
            tally.right += u64::from(played.right);
            tally.calls += 1;
            tally.slm_first += u64::from(slm_first);
        }
        if call + 1 == CHECKPOINT {
            at_checkpoint = total;
        }
        if index == degrading && call >= CALLS / 2 && noticed_after.is_none() {
            after_change += 1;
            llm_streak = if slm_first { 0 } else { llm_streak + 1 };
            if llm_streak == 10 {
                noticed_after = Some(after_change - 10);
            }
        }
    }
    Run { at_checkpoint, total, noticed_after, per_cluster }
}

fn router_heuristic(clusters: &[Cluster]) -> Vec<bool> {
    let router = router(None, None);
    clusters.iter().map(|cluster| router.decide(&cluster.request).unwrap().tier == Tier::Slm).collect()
}

fn load_time() -> (f64, f64, usize) {
    let dir = std::env::temp_dir().join(format!("slmkit-routing-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.routing.json");
    let _ = std::fs::remove_file(&path);
    {
        let stats = OutcomeStats::load(&path, Learning::default());
        let mut sample = ClusterStats::default();
        let mut rng = StdRng::seed_from_u64(1);
        for index in 0..10_000 {
            sample.slm_calls = rng.random_range(1..500);
            sample.first_try.successes = rng.random_range(0.0..50.0);
            sample.first_try.failures = rng.random_range(0.0..50.0);
            sample.slm_success = sample.first_try;
            sample.updated_ms = 1_796_000_000_000 + index;
            stats.merge(
                ClusterId { key: format!("tpl:{:016x}", rng.random::<u64>()), model: "qwen2.5-coder-0.5b".into() },
                &sample,
            );
        }
        stats.save().unwrap();
    }
    let bytes = std::fs::metadata(&path).unwrap().len() as f64;
    let mut times = Vec::new();
    let mut loaded = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let stats = OutcomeStats::load(&path, Learning::default());
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        loaded = stats.len();
        std::mem::forget(stats); // not saved back: the measurement is the load
    }
    times.sort_by(f64::total_cmp);
    let _ = std::fs::remove_dir_all(&dir);
    (times[times.len() / 2], bytes / 1e6, loaded)
}

fn main() {
    let clusters = clusters();
    let prices = Prices::new();
    let heuristic = router_heuristic(&clusters);
    println!("# Routing simulation\n");
    println!(
        "{CALLS} calls, clusters drawn uniformly; the degrading cluster changes at call {}. Per call: {PROMPT_TOKENS} \
         prompt and {OUTPUT_TOKENS} output tokens. SLM attempt: {SLM_SECONDS} s, ${:.6} (local energy default); LLM \
         call: {LLM_SECONDS} s, ${:.6} (gpt-4o list price); latency priced at ${USD_PER_SECOND}/s. Up to \
         {SLM_ATTEMPTS} SLM attempts, then the LLM. Feedback on {:.0}% of SLM answers. Quality floor {FLOOR}.\n",
        CALLS / 2,
        prices.slm_usd,
        prices.llm_usd,
        FEEDBACK_SHARE * 100.0
    );
    println!("| cluster | right / wrong per attempt (before → after) | heuristic | oracle |");
    println!("|---|---|---|---|");
    for (cluster, slm) in clusters.iter().zip(&heuristic) {
        let oracle = |rates: Rates| {
            let (usd, right) = slm_first_expectation(rates, &prices);
            if right >= FLOOR && usd < prices.llm_call() {
                "SLM"
            } else {
                "LLM"
            }
        };
        println!(
            "| {} | {:.2}/{:.2} → {:.2}/{:.2} | {} | {} → {} |",
            cluster.name,
            cluster.before.right,
            cluster.before.wrong,
            cluster.after.right,
            cluster.after.wrong,
            if *slm { "SLM" } else { "LLM" },
            oracle(cluster.before),
            oracle(cluster.after)
        );
    }
    let seeds = [1u64, 2, 3, 4, 5];
    let policies = [
        Policy::Oracle,
        Policy::AlwaysLlm,
        Policy::AlwaysSlm,
        Policy::Heuristic,
        Policy::Adaptive,
        Policy::AdaptiveBudget,
    ];
    let mut mean = Vec::new();
    for policy in policies {
        let runs: Vec<Run> = seeds.iter().map(|seed| simulate(policy, &clusters, *seed)).collect();
        let n = runs.len() as f64;
        let avg = |pick: &dyn Fn(&Run) -> f64| runs.iter().map(pick).sum::<f64>() / n;
        let noticed: Vec<String> =
            runs.iter().map(|run| run.noticed_after.map_or("never".into(), |calls| calls.to_string())).collect();
        mean.push((
            policy,
            avg(&|run| run.at_checkpoint.usd),
            avg(&|run| run.total.usd),
            avg(&|run| run.total.money_usd),
            avg(&|run| run.total.right as f64 / run.total.calls as f64),
            avg(&|run| run.total.slm_first as f64 / run.total.calls as f64),
            noticed.join(", "),
            runs,
        ));
    }
    let oracle_checkpoint = mean[0].1;
    let oracle_total = mean[0].2;
    let heuristic_total = mean[3].2;
    println!("\nMeans over seeds {seeds:?}. Cost = dollars plus priced latency; regret = cost over the oracle's.\n");
    println!(
        "| policy | cost, first {CHECKPOINT} | regret, first {CHECKPOINT} | cost, all {CALLS} | regret, all | vs heuristic | \
         dollars only | right answers | SLM first | degradation noticed after (calls of the cluster, per seed) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (policy, checkpoint, total, money, right, slm_share, noticed, _) in &mean {
        println!(
            "| {} | ${checkpoint:.3} | {:+.1}% | ${total:.3} | {:+.1}% | {:+.1}% | ${money:.3} | {:.1}% | {:.1}% | {} |",
            policy.name(),
            (checkpoint / oracle_checkpoint - 1.0) * 100.0,
            (total / oracle_total - 1.0) * 100.0,
            (total / heuristic_total - 1.0) * 100.0,
            right * 100.0,
            slm_share * 100.0,
            if matches!(policy, Policy::Adaptive | Policy::AdaptiveBudget | Policy::Oracle) {
                noticed.as_str()
            } else {
                "-"
            }
        );
    }
    println!("\nPer cluster, adaptive router (seed 1): SLM-first share and right answers.\n");
    println!("| cluster | calls | SLM first | right |");
    println!("|---|---:|---:|---:|");
    for (cluster, tally) in clusters.iter().zip(&mean[4].7[0].per_cluster) {
        println!(
            "| {} | {} | {:.1}% | {:.1}% |",
            cluster.name,
            tally.calls,
            tally.slm_first as f64 / tally.calls as f64 * 100.0,
            tally.right as f64 / tally.calls as f64 * 100.0
        );
    }
    // Where the heuristic's cost differs from the oracle's: the gap the 20% goal asks the
    // adaptive router to close is at most the oracle's.
    println!(
        "\nPer cluster, mean over seeds: cost (dollars plus priced latency) and right answers of the static \
         heuristic, the oracle and the adaptive router; the last column is the oracle's saving over the heuristic \
         on that cluster (negative: the oracle pays more there, for quality).\n"
    );
    println!(
        "| cluster | heuristic cost | heuristic right | oracle cost | oracle right | adaptive cost | adaptive right | \
         oracle saving |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let per_cluster = |row: usize, index: usize| {
        let runs = &mean[row].7;
        let n = runs.len() as f64;
        let usd = runs.iter().map(|run| run.per_cluster[index].usd).sum::<f64>() / n;
        let right = runs
            .iter()
            .map(|run| run.per_cluster[index].right as f64 / run.per_cluster[index].calls.max(1) as f64)
            .sum::<f64>()
            / n;
        (usd, right)
    };
    for (index, cluster) in clusters.iter().enumerate() {
        let (heuristic_usd, heuristic_right) = per_cluster(3, index);
        let (oracle_usd, oracle_right) = per_cluster(0, index);
        let (adaptive_usd, adaptive_right) = per_cluster(4, index);
        println!(
            "| {} | ${heuristic_usd:.3} | {:.1}% | ${oracle_usd:.3} | {:.1}% | ${adaptive_usd:.3} | {:.1}% | ${:+.3} |",
            cluster.name,
            heuristic_right * 100.0,
            oracle_right * 100.0,
            adaptive_right * 100.0,
            heuristic_usd - oracle_usd
        );
    }
    let (load_ms, megabytes, loaded) = load_time();
    println!("\nStatistics file: {loaded} clusters, {megabytes:.1} MB, loaded in {load_ms:.1} ms (median of 5).");
}
