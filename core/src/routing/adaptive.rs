//! The adaptive decision: per call, the expected cost of trying the SLM first (its attempts,
//! the chance of escalating to the LLM, the latency if it is priced) against going straight
//! to the LLM, from the call's cluster statistics. The heuristic score is the prior for
//! clusters with little data; Thompson sampling keeps exploring where the SLM is uncertain;
//! a quality floor stops a cluster the SLM fails, probed again at a low rate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::stats::{ClusterStats, OutcomeStats, SignalCounts};
use crate::error::{Error, Result};
use crate::ledger::Pricing;
use crate::tier::Tier;

/// The adaptive router's knobs (`[routing]`: `adaptive = true` and these).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// The SLM's success after retries (its Thompson sample) below which a call goes to the
    /// LLM. The heuristic prior is centred here: a call scored at the threshold is even odds.
    pub quality_floor: f64,
    /// The share of a floored cluster's calls still sent to the SLM, to notice a recovery.
    pub probe_rate: f64,
    /// How many outcomes the heuristic prior is worth.
    pub prior_strength: f64,
    /// What a second of the caller's waiting costs, in dollars (0: latency is free).
    pub usd_per_latency_second: f64,
    /// Evidence kept per new outcome in a cluster (see [`super::stats::Learning`]).
    pub keep: f64,
    /// Sample with this seed (tests, simulations); default: from the OS.
    pub seed: Option<u64>,
    /// Seconds between saves of the statistics while they change (0: only at close).
    pub save_every_s: f64,
    /// A target spend per call, in dollars: while calls spend more on average, the LLM's
    /// expected cost is multiplied and the quality floor divided by the overspend (up to 4x).
    pub budget_usd_per_call: Option<f64>,
    /// A target spend per hour since the client started, paced the same way.
    pub budget_usd_per_hour: Option<f64>,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            quality_floor: 0.7,
            probe_rate: 0.05,
            prior_strength: 2.0,
            usd_per_latency_second: 0.0,
            keep: 0.98,
            seed: None,
            save_every_s: 30.0,
            budget_usd_per_call: None,
            budget_usd_per_hour: None,
        }
    }
}

impl AdaptiveConfig {
    /// # Errors
    /// [`Error::Config`] naming a figure out of range.
    pub fn validate(&self) -> Result<()> {
        let unit = |name: &str, value: f64| {
            if value.is_finite() && (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(Error::Config(format!("routing {name} must be from 0 to 1, got {value}")))
            }
        };
        unit("quality_floor", self.quality_floor)?;
        unit("probe_rate", self.probe_rate)?;
        unit("keep", self.keep)?;
        if !(self.prior_strength.is_finite() && self.prior_strength > 0.0) {
            return Err(Error::Config("routing prior_strength must be positive".into()));
        }
        if !(self.usd_per_latency_second.is_finite() && self.usd_per_latency_second >= 0.0) {
            return Err(Error::Config("routing usd_per_latency_second must be a non-negative number".into()));
        }
        if !(self.save_every_s.is_finite() && self.save_every_s >= 0.0) {
            return Err(Error::Config("routing save_every_s must be a non-negative number of seconds".into()));
        }
        for (name, budget) in
            [("budget_usd_per_call", self.budget_usd_per_call), ("budget_usd_per_hour", self.budget_usd_per_hour)]
        {
            if let Some(value) = budget {
                if !(value.is_finite() && value > 0.0) {
                    return Err(Error::Config(format!(
                        "routing {name} must be a positive number of dollars, got {value}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// What the adaptive router knows about the two tiers.
#[derive(Debug, Clone)]
pub struct TierPrices {
    pub slm: Pricing,
    pub llm: Pricing,
    /// The SLM model the statistics are kept for.
    pub slm_model: String,
    /// SLM attempts before escalating (the retry policy's).
    pub slm_attempts: u32,
}

/// The adaptive part of a decision, for `explain`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdaptiveView {
    /// The heuristic prior's mean success after retries.
    pub prior_mean: f64,
    /// The posterior Beta's parameters (prior plus evidence) for success after retries.
    pub posterior_alpha: f64,
    pub posterior_beta: f64,
    pub posterior_mean: f64,
    /// The Thompson sample the decision used.
    pub sampled_success: f64,
    /// The first SLM attempt's acceptance rate, when there is data.
    pub first_try_rate: Option<f64>,
    pub expected_slm_attempts: f64,
    pub escalation_rate: f64,
    pub slm_calls: u64,
    /// How many outcomes rest on each signal.
    pub signals: SignalCounts,
    pub slm_first_cost_usd: f64,
    pub llm_cost_usd: f64,
    /// Whether this call is a probe of a floored cluster.
    pub probe: bool,
    /// The budget's pacing, when a budget is set.
    pub budget: Option<BudgetView>,
    pub why: String,
}

/// Where spending stands against the budget, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BudgetView {
    /// Spend over the budget's pace so far (above 1: ahead of it).
    pub pace: f64,
    /// What the LLM's expected cost was multiplied by (1 while on pace).
    pub llm_multiplier: f64,
    /// The quality floor this call was held to (the configured one divided by the multiplier).
    pub floor: f64,
    pub spent_usd: f64,
    pub calls: u64,
}

/// Tokens per second the priors assume for a local SLM with no data yet (a CPU's prefill and
/// decode), and a remote LLM's decode; the cluster's measured figures replace them.
const ASSUMED_SLM_PREFILL_TPS: f64 = 400.0;
const ASSUMED_SLM_DECODE_TPS: f64 = 25.0;
const ASSUMED_LLM_FIRST_TOKEN_S: f64 = 0.6;
const ASSUMED_LLM_DECODE_TPS: f64 = 80.0;
/// Output expected when the caller sets no budget, and the cap on reading a budget as output.
const ASSUMED_OUTPUT_TOKENS: u32 = 300;
const OUTPUT_CAP: u32 = 1000;
/// Evidence (weighted outcomes) past which the posterior mean, not a sample, meets the floor.
const CONFIDENT_EVIDENCE: f64 = 10.0;
/// How steeply the heuristic score turns into a prior success rate.
const PRIOR_SLOPE: f64 = 1.2;
/// The most the budget's pacing multiplies the LLM's expected cost by.
const MAX_BUDGET_PRESSURE: f64 = 4.0;
/// Calls, and seconds, before the pace is read (the first few calls say little).
const PACE_AFTER_CALLS: u64 = 10;
const PACE_AFTER_SECONDS: f64 = 60.0;

/// The adaptive router's state: the statistics, the prices and the sampler.
pub struct Adaptive {
    pub(super) stats: Arc<OutcomeStats>,
    prices: TierPrices,
    config: AdaptiveConfig,
    rng: Mutex<StdRng>,
    started: Instant,
}

impl std::fmt::Debug for Adaptive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adaptive").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Adaptive {
    /// # Errors
    /// [`Error::Config`] for a knob out of range.
    pub fn new(stats: Arc<OutcomeStats>, prices: TierPrices, config: AdaptiveConfig) -> Result<Self> {
        config.validate()?;
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Adaptive { stats, prices, config, rng: Mutex::new(rng), started: Instant::now() })
    }

    pub fn stats(&self) -> &Arc<OutcomeStats> {
        &self.stats
    }

    /// Decides SLM-first or LLM for a call of cluster `key`, whose heuristic `score` (against
    /// `threshold`) is the prior.
    pub fn decide(
        &self,
        key: &str,
        score: f64,
        threshold: f64,
        prompt_tokens: u32,
        max_tokens: Option<u32>,
    ) -> (Tier, AdaptiveView) {
        let cluster = self.stats.get(key, &self.prices.slm_model).unwrap_or_default();
        // Centred on the floor: a call the heuristic scores at its threshold is a call whose
        // SLM success is as likely above the floor as below.
        let floor = self.config.quality_floor.clamp(0.01, 0.99);
        let prior_logit = (floor / (1.0 - floor)).ln() - (score - threshold) * PRIOR_SLOPE;
        let prior_mean = (1.0 / (1.0 + (-prior_logit).exp())).clamp(0.02, 0.98);
        let alpha = self.config.prior_strength * prior_mean + cluster.slm_success.successes;
        let beta = self.config.prior_strength * (1.0 - prior_mean) + cluster.slm_success.failures;
        let posterior_mean = alpha / (alpha + beta);
        let (sampled, roll) = {
            let mut rng = self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (sample_beta(&mut *rng, alpha, beta), rng.random::<f64>())
        };
        let output = max_tokens.unwrap_or(ASSUMED_OUTPUT_TOKENS).min(OUTPUT_CAP);
        let costs = self.costs(&cluster, prompt_tokens, output);
        let attempts = cluster
            .slm_attempts
            .get()
            .unwrap_or(1.0 + (1.0 - sampled) * f64::from(self.prices.slm_attempts.saturating_sub(1)));
        let fail = 1.0 - sampled;
        let price = self.config.usd_per_latency_second;
        let budget = self.budget();
        let pressure = budget.map_or(1.0, |budget| budget.llm_multiplier);
        let llm_usd = costs.llm_usd * pressure;
        let slm_first = attempts * (costs.slm_usd + price * costs.slm_s) + fail * (llm_usd + price * costs.llm_s);
        let llm = llm_usd + price * costs.llm_s;
        let floor = budget.map_or(self.config.quality_floor, |budget| budget.floor);
        let evidence = cluster.slm_success.weight();
        // Thompson sampling while the cluster is uncertain; its mean once it is not, so a
        // cluster near the floor does not flip call by call.
        let belief = if evidence < CONFIDENT_EVIDENCE { sampled } else { posterior_mean };
        // Until the SLM has been measured on the cluster, its cost is a guess: the heuristic's
        // answer (the prior against the floor) decides.
        let measured = cluster.slm.latency_ms.weight >= 1.0;
        let mut probe = false;
        let (tier, why) = if belief < floor {
            if roll < self.config.probe_rate {
                probe = true;
                (
                    Tier::Slm,
                    format!(
                        "a probe: the SLM's success after retries ({belief:.2}) is below the floor ({floor:.2}), \
                         and {:.0}% of such calls still try it",
                        self.config.probe_rate * 100.0
                    ),
                )
            } else {
                (Tier::Llm, format!("the SLM's success after retries ({belief:.2}) is below the floor ({floor:.2})"))
            }
        } else if !measured {
            (
                Tier::Slm,
                format!(
                    "the SLM's success after retries ({belief:.2}) clears the floor ({floor:.2}), and the SLM \
                     is not measured on this task yet"
                ),
            )
        } else if slm_first <= llm {
            (Tier::Slm, format!("SLM first is expected to cost ${slm_first:.6}, the LLM ${llm:.6}"))
        } else {
            (Tier::Llm, format!("the LLM is expected to cost ${llm:.6}, SLM first ${slm_first:.6}"))
        };
        let first_try = cluster.first_try;
        let view = AdaptiveView {
            prior_mean,
            posterior_alpha: alpha,
            posterior_beta: beta,
            posterior_mean,
            sampled_success: sampled,
            first_try_rate: (first_try.weight() > 0.0).then(|| first_try.successes / first_try.weight()),
            expected_slm_attempts: attempts,
            escalation_rate: cluster.escalation_rate(),
            slm_calls: cluster.slm_calls,
            signals: cluster.signals,
            slm_first_cost_usd: slm_first,
            llm_cost_usd: llm,
            probe,
            budget,
            why: match budget {
                Some(budget) if budget.llm_multiplier > 1.0 => format!(
                    "{why} (spend is {:.2}x the budget's pace: the LLM's cost counts {:.2}x, the floor is {:.2})",
                    budget.pace, budget.llm_multiplier, budget.floor
                ),
                _ => why,
            },
        };
        (tier, view)
    }

    /// The budget's pacing: spend so far against the target per call and per hour, whichever
    /// is further ahead. `None` without a budget.
    fn budget(&self) -> Option<BudgetView> {
        let (per_call, per_hour) = (self.config.budget_usd_per_call, self.config.budget_usd_per_hour);
        if per_call.is_none() && per_hour.is_none() {
            return None;
        }
        let spend = self.stats.spend();
        let mut pace: f64 = 0.0;
        if let (Some(target), true) = (per_call, spend.calls >= PACE_AFTER_CALLS) {
            pace = pace.max(spend.usd / (spend.calls as f64 * target));
        }
        if let Some(target) = per_hour {
            let hours = self.started.elapsed().as_secs_f64().max(PACE_AFTER_SECONDS) / 3600.0;
            pace = pace.max(spend.usd / (target * hours));
        }
        let llm_multiplier = pace.clamp(1.0, MAX_BUDGET_PRESSURE);
        Some(BudgetView {
            pace,
            llm_multiplier,
            floor: self.config.quality_floor / llm_multiplier,
            spent_usd: spend.usd,
            calls: spend.calls,
        })
    }

    /// Per-attempt cost and latency of each tier: measured on the cluster, else from prices.
    fn costs(&self, cluster: &ClusterStats, prompt_tokens: u32, output: u32) -> Costs {
        let slm_s_guess =
            f64::from(prompt_tokens) / ASSUMED_SLM_PREFILL_TPS + f64::from(output) / ASSUMED_SLM_DECODE_TPS;
        let llm_s_guess = ASSUMED_LLM_FIRST_TOKEN_S + f64::from(output) / ASSUMED_LLM_DECODE_TPS;
        let priced = |pricing: &Pricing, seconds: f64| {
            pricing.price(prompt_tokens, output, Duration::from_secs_f64(seconds.max(0.0))).0
        };
        Costs {
            slm_usd: cluster.slm.cost_usd.get().unwrap_or_else(|| priced(&self.prices.slm, slm_s_guess)),
            slm_s: cluster.slm.latency_ms.get().map_or(slm_s_guess, |ms| ms / 1000.0),
            llm_usd: cluster.llm.cost_usd.get().unwrap_or_else(|| priced(&self.prices.llm, llm_s_guess)),
            llm_s: cluster.llm.latency_ms.get().map_or(llm_s_guess, |ms| ms / 1000.0),
        }
    }
}

struct Costs {
    slm_usd: f64,
    slm_s: f64,
    llm_usd: f64,
    llm_s: f64,
}

/// A draw from Beta(alpha, beta), as X / (X + Y) with X, Y Gamma-distributed.
fn sample_beta(rng: &mut impl Rng, alpha: f64, beta: f64) -> f64 {
    let x = sample_gamma(rng, alpha);
    let y = sample_gamma(rng, beta);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        alpha / (alpha + beta)
    }
}

/// Marsaglia and Tsang's method; shape below 1 boosted by U^(1/shape).
fn sample_gamma(rng: &mut impl Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let boost = rng.random::<f64>().max(f64::MIN_POSITIVE).powf(1.0 / shape);
        return sample_gamma(rng, shape + 1.0) * boost;
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.random::<f64>();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_samples_have_the_right_mean() {
        let mut rng = StdRng::seed_from_u64(7);
        for (alpha, beta) in [(0.4, 3.6), (2.0, 2.0), (30.0, 3.0)] {
            let n = 20_000;
            let mean: f64 = (0..n).map(|_| sample_beta(&mut rng, alpha, beta)).sum::<f64>() / f64::from(n);
            assert!((mean - alpha / (alpha + beta)).abs() < 0.01, "{alpha} {beta}: {mean}");
        }
    }

    fn prices() -> TierPrices {
        TierPrices { slm: Pricing::local_default(), llm: Pricing::gpt_4o(), slm_model: "qwen".into(), slm_attempts: 3 }
    }

    #[test]
    fn a_tag_rule_names_the_cluster_and_seeds_the_prior_but_outcomes_decide() {
        use crate::ledger::{AttemptRecord, Outcome, RecordObserver};
        use crate::routing::{Router, RoutingConfig, SlmProfile};
        use crate::types::{ChatCompletionRequest, ChatMessage, ContentPart, MessageContent};
        let stats = Arc::new(OutcomeStats::new(super::super::stats::Learning::default()));
        let adaptive =
            Adaptive::new(stats.clone(), prices(), AdaptiveConfig { seed: Some(3), ..AdaptiveConfig::default() })
                .unwrap();
        let slm = SlmProfile { context_window: 8192, tokenizer: None, supports_tools: true, supports_images: false };
        let router = Router::new(&RoutingConfig::default(), Some(slm), true).unwrap().with_adaptive(adaptive);
        let tagged = |task: &str| {
            let mut request = ChatCompletionRequest::new(vec![ChatMessage::user("Write the product requirements.")]);
            request.metadata =
                Some(serde_json::Map::from_iter([("slmkit_task".into(), serde_json::Value::from(task))]));
            request
        };
        // The default rules send WriteCode to the SLM and WritePRD to the LLM: now as priors.
        let code = router.decide(&tagged("WriteCode")).unwrap();
        let view = code.adaptive.expect("the adaptive router decides a tagged call");
        assert_eq!(code.task_key.unwrap().key, "tag:WriteCode");
        assert!(view.prior_mean > 0.9, "{view:?}");
        assert!(code.reasons.iter().any(|reason| reason.contains("prior")), "{:?}", code.reasons);
        let prd = router.decide(&tagged("WritePRD")).unwrap();
        let view = prd.adaptive.unwrap();
        assert!(view.prior_mean < 0.3, "{view:?}");
        assert_eq!(prd.tier, Tier::Llm);
        // The SLM turns out to write this team's PRDs well: outcomes overrule the rule.
        for call in 0..30 {
            stats.observe(&AttemptRecord {
                outcome: Outcome::Ok,
                served: true,
                cost_usd: 0.00001,
                latency_ms: 500.0,
                task_key: Some("tag:WritePRD".into()),
                ..AttemptRecord::new(&format!("prd{call}"), 1, Tier::Slm, "local", "qwen", None)
            });
        }
        let prd = router.decide(&tagged("WritePRD")).unwrap();
        assert_eq!(prd.tier, Tier::Slm, "{:?}", prd.reasons);
        // A forced route and a hard limit still come first.
        let mut forced = tagged("WritePRD");
        forced.extra.insert("slmkit".into(), serde_json::json!({"route": "llm"}));
        let decision = router.decide(&forced).unwrap();
        assert!(decision.forced && decision.tier == Tier::Llm && decision.adaptive.is_none());
        let mut image = tagged("WriteCode");
        image.messages[0].content = Some(MessageContent::Parts(vec![ContentPart::ImageUrl {
            image_url: serde_json::json!({"url": "https://example.com/a.png"}),
        }]));
        let decision = router.decide(&image).unwrap();
        assert!(decision.tier == Tier::Llm && decision.adaptive.is_none(), "{:?}", decision.reasons);
    }

    #[test]
    fn overspending_makes_the_llm_dearer_and_lowers_the_floor() {
        use crate::ledger::{AttemptRecord, Outcome, RecordObserver};
        let stats = Arc::new(OutcomeStats::new(super::super::stats::Learning::default()));
        let config = AdaptiveConfig { budget_usd_per_call: Some(0.001), seed: Some(1), ..AdaptiveConfig::default() };
        let adaptive = Adaptive::new(stats.clone(), prices(), config).unwrap();
        let (_, view) = adaptive.decide("tag:x", 0.0, 0.0, 500, Some(100));
        assert_eq!(view.budget.unwrap().llm_multiplier, 1.0, "too few calls to pace");
        for call in 0..20 {
            stats.observe(&AttemptRecord {
                outcome: Outcome::Ok,
                served: true,
                cost_usd: 0.003,
                ..AttemptRecord::new(&format!("c{call}"), 1, Tier::Llm, "remote", "gpt", None)
            });
        }
        let (_, view) = adaptive.decide("tag:x", 0.0, 0.0, 500, Some(100));
        let budget = view.budget.unwrap();
        assert!((budget.pace - 3.0).abs() < 1e-9, "{budget:?}");
        assert!((budget.llm_multiplier - 3.0).abs() < 1e-9);
        assert!((budget.floor - 0.7 / 3.0).abs() < 1e-9);
        assert!(view.why.contains("budget"), "{}", view.why);
    }

    #[test]
    fn bad_knobs_are_config_errors() {
        let bad = AdaptiveConfig { quality_floor: 1.5, ..AdaptiveConfig::default() };
        assert!(matches!(bad.validate(), Err(Error::Config(message)) if message.contains("quality_floor")));
        let bad = AdaptiveConfig { usd_per_latency_second: f64::NAN, ..AdaptiveConfig::default() };
        assert!(bad.validate().is_err());
        let bad = AdaptiveConfig { budget_usd_per_hour: Some(-1.0), ..AdaptiveConfig::default() };
        assert!(matches!(bad.validate(), Err(Error::Config(message)) if message.contains("budget_usd_per_hour")));
    }
}
