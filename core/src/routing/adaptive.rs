//! The adaptive decision: per call, the expected cost of trying the SLM first (its attempts,
//! the chance of escalating to the LLM, the latency if it is priced) against going straight
//! to the LLM, from the call's cluster statistics. The heuristic score is the prior for
//! clusters with little data; Thompson sampling keeps exploring where the SLM is uncertain;
//! a quality floor stops a cluster the SLM fails, probed again at a low rate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    pub why: String,
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

/// The adaptive router's state: the statistics, the prices and the sampler.
pub struct Adaptive {
    pub(super) stats: Arc<OutcomeStats>,
    prices: TierPrices,
    config: AdaptiveConfig,
    rng: Mutex<StdRng>,
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
        Ok(Adaptive { stats, prices, config, rng: Mutex::new(rng) })
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
        let slm_first = attempts * (costs.slm_usd + price * costs.slm_s) + fail * (costs.llm_usd + price * costs.llm_s);
        let llm = costs.llm_usd + price * costs.llm_s;
        let floor = self.config.quality_floor;
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
            why,
        };
        (tier, view)
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

    #[test]
    fn bad_knobs_are_config_errors() {
        let bad = AdaptiveConfig { quality_floor: 1.5, ..AdaptiveConfig::default() };
        assert!(matches!(bad.validate(), Err(Error::Config(message)) if message.contains("quality_floor")));
        let bad = AdaptiveConfig { usd_per_latency_second: f64::NAN, ..AdaptiveConfig::default() };
        assert!(bad.validate().is_err());
    }
}
