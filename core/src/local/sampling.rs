//! Picking a sequence's next token: the sampling chain, the output grammar and the UTF-8 mask.
//!
//! Masking a 150k-token vocabulary with a grammar costs more than the sampling itself (every
//! candidate's bytes are run through the grammar's stacks), and most steps do not need it: the
//! token the model prefers is usually one the grammar allows. So, as llama.cpp's own common
//! sampler does, the chain samples from the unconstrained candidates first, and only the chosen
//! token is checked against the grammar and the UTF-8 rule. Only when it is rejected are the
//! candidates fetched again, masked in full and sampled again. See [`pick`] for why that keeps
//! the distribution right.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use super::grammar::{BoundedLru, OutputConstraint};
use super::model::LocalModel;
use super::output::keeps_utf8_valid;
use crate::error::{Error, Result};
use crate::types::{penalty_range_error, PENALTY_RANGE};

/// What a job needs from the sampler.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sampling {
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub seed: u32,
    /// Penalties on tokens the answer has already used; none when all are neutral.
    pub penalties: Option<Penalties>,
    /// Mask every candidate with the grammar before sampling (the slow path), for tests and
    /// benches that compare it with the fast one.
    pub full_grammar: bool,
}

/// Penalties on the tokens an answer has already used, as OpenAI's `frequency_penalty` and
/// `presence_penalty` (subtracted from a used token's logit: per use, and once) and llama.cpp's
/// `repeat_penalty` (a used token's logit divided by it). They break the loops small models
/// fall into at temperature 0. Checked when the request or the config is read; compared and
/// hashed by their bits, so options holding them can key the shared engines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties {
    /// From -2 to 2; 0 is neutral.
    pub frequency: f32,
    /// From -2 to 2; 0 is neutral.
    pub presence: f32,
    /// Above 0; 1 is neutral.
    pub repeat: f32,
}

impl Eq for Penalties {}

impl std::hash::Hash for Penalties {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.frequency.to_bits(), self.presence.to_bits(), self.repeat.to_bits()).hash(state);
    }
}

impl Penalties {
    /// Neutral penalties: every one off.
    pub const NONE: Penalties = Penalties { frequency: 0.0, presence: 0.0, repeat: 1.0 };

    /// `None` when every penalty is neutral, so the sampling chain stays without one.
    pub(crate) fn active(self) -> Option<Penalties> {
        (self != Penalties::NONE).then_some(self)
    }

    /// Checks the ranges: OpenAI's -2 to 2 for `frequency_penalty` and `presence_penalty`, and
    /// above 0 (at most 10) for `repeat_penalty`. The error names the parameter.
    pub(crate) fn check(self) -> std::result::Result<Penalties, (&'static str, String)> {
        for (param, value) in [("frequency_penalty", self.frequency), ("presence_penalty", self.presence)] {
            if !PENALTY_RANGE.contains(&f64::from(value)) {
                return Err((param, penalty_range_error(param, value)));
            }
        }
        if !(self.repeat.is_finite() && self.repeat > 0.0 && self.repeat <= 10.0) {
            return Err((
                "repeat_penalty",
                format!("repeat_penalty must be above 0 and at most 10, got {}", self.repeat),
            ));
        }
        Ok(self)
    }
}

/// The answer's latest tokens the penalties look back over: llama.cpp's default
/// (`penalty_last_n`), so a local model penalised here answers as under llama.cpp's server.
/// A longer window would punish the tokens code and JSON legitimately repeat (indentation,
/// `self`, quotes) as much as a loop.
const PENALTY_WINDOW: i32 = 64;

/// How a request's tokens are picked ([`pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Picking {
    /// The chain is greedy alone, so it leaves the candidates as they were.
    pub greedy: bool,
    /// See [`Sampling::full_grammar`].
    pub full_grammar: bool,
}

impl Picking {
    pub(crate) fn of(sampling: &Sampling) -> Self {
        Picking { greedy: sampling.temperature <= 0.0, full_grammar: sampling.full_grammar }
    }
}

/// A rejected greedy pick is followed by the next best candidates, this many at most, before
/// the candidates are masked in full.
const GREEDY_RUNNERS_UP: usize = 32;

/// A rejected random pick is drawn again this many times at most before the candidates are
/// masked in full.
const REDRAWS: usize = 4;

/// Time spent in each sampling stage since the last [`take_sampling_profile`], over every
/// engine in the process. A diagnostic for benches; the counters cost a few nanoseconds a step.
#[doc(hidden)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SamplingProfile {
    /// Tokens sampled.
    pub steps: u64,
    /// Steps whose first pick the grammar or the UTF-8 rule rejected. With the full-grammar
    /// path, every constrained step.
    pub rejections: u64,
    /// Steps that masked every candidate (no runner-up or redraw was allowed, or the
    /// full-grammar path).
    pub full_masks: u64,
    /// Copying the logits into a candidate array.
    pub fetch_ns: u64,
    /// The sampling chain (greedy, or top-p/min-p/temperature/dist).
    pub chain_ns: u64,
    /// Checking the picked token alone against the grammar and the UTF-8 rule.
    pub check_ns: u64,
    /// Masking every candidate with the grammar.
    pub grammar_ns: u64,
    /// Masking candidates that would break UTF-8.
    pub utf8_ns: u64,
    /// Accepting the token into the chain and the grammar.
    pub accept_ns: u64,
    /// Building a request's samplers (grammar parsing, or a clone of a cached one).
    pub setup_ns: u64,
    /// Requests whose samplers were built.
    pub requests: u64,
}

struct Counters([AtomicU64; 11]);

static PROFILE: Counters = Counters([const { AtomicU64::new(0) }; 11]);

#[derive(Clone, Copy)]
pub(crate) enum Stage {
    Steps,
    Rejections,
    Fetch,
    Chain,
    Check,
    Grammar,
    Utf8,
    Accept,
    Setup,
    Requests,
    FullMasks,
}

pub(crate) fn count(stage: Stage, amount: u64) {
    PROFILE.0[stage as usize].fetch_add(amount, Ordering::Relaxed);
}

pub(crate) fn timed(stage: Stage, started: Instant) {
    count(stage, u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
}

/// The counters since the last call, which resets them.
#[doc(hidden)]
pub fn take_sampling_profile() -> SamplingProfile {
    let take = |stage: Stage| PROFILE.0[stage as usize].swap(0, Ordering::Relaxed);
    SamplingProfile {
        steps: take(Stage::Steps),
        rejections: take(Stage::Rejections),
        fetch_ns: take(Stage::Fetch),
        chain_ns: take(Stage::Chain),
        check_ns: take(Stage::Check),
        grammar_ns: take(Stage::Grammar),
        utf8_ns: take(Stage::Utf8),
        accept_ns: take(Stage::Accept),
        setup_ns: take(Stage::Setup),
        requests: take(Stage::Requests),
        full_masks: take(Stage::FullMasks),
    }
}

/// Picks the next token from the logits at `batch_index`.
///
/// The fast path samples the unconstrained candidates with `chain`, then asks the grammar and
/// the UTF-8 rule about that one token. Accepted, it is the answer. Rejected: a greedy pick
/// tries the next best candidates in order ([`GREEDY_RUNNERS_UP`]), a random one draws again
/// from fresh candidates ([`REDRAWS`]); failing that, the candidates are fetched afresh (the
/// chain may have rescaled and truncated them), masked in full and sampled with the same chain.
///
/// Why the distribution stays right:
/// - Greedy: the unconstrained argmax, when allowed, is also the argmax of the masked
///   candidates (masking only lowers the others). The runners-up are tried by falling logit,
///   ties by rising token id, which is the order in which llama.cpp's greedy sampler prefers
///   them, so the first allowed one is the masked argmax. Greedy output is exactly the
///   full-grammar output.
/// - Temperature and `dist`: each draw is independent, so after `k` rejected draws a token
///   `x` comes out with probability `p(x) (1 + (1 - Z) + … + (1 - Z)^(k-1)) + (1 - Z)^k p(x) / Z
///   = p(x) / Z`, where `Z` is the allowed tokens' mass: exactly the masked distribution. The
///   draws are independent because `dist` keeps its RNG state across applications, so a redraw
///   takes the next random number (replaying the same one, as resetting the chain would, would
///   correlate the draws and skew the result). With a fixed seed the sequence of draws, and so
///   the output, is still fixed.
/// - top-p and min-p: the nucleus of a draw is computed over the model's own distribution, as
///   llama.cpp's common sampler does, not over the masked one; the token is always one the
///   grammar allows, and the final full mask computes the nucleus over the masked candidates.
/// - State: nothing is accepted until the token is final ([`LlamaSampler::accept`] runs once,
///   in the worker), and the single-token grammar check is an `apply`, which reads the
///   grammar's stacks without changing them. A penalty sampler in the chain reads its history
///   in `apply` and adds to it only in `accept`, so redraws and the greedy runners-up see the
///   same penalised logits the full mask would.
///
/// `full_grammar` forces the slow path: mask everything, then sample once.
pub(crate) fn pick(
    context: &LlamaContext<'_>,
    batch_index: i32,
    model: &LocalModel,
    mut grammar: Option<&mut LlamaSampler>,
    chain: &mut LlamaSampler,
    pending: &[u8],
    picking: Picking,
) -> Option<LlamaToken> {
    count(Stage::Steps, 1);
    let mut allowed = |token: LlamaToken| {
        let started = Instant::now();
        let piece = model.piece(token);
        let allowed = (piece.is_empty() || keeps_utf8_valid(pending, piece))
            && grammar.as_deref_mut().is_none_or(|grammar| grammar_allows(grammar, token));
        timed(Stage::Check, started);
        allowed
    };
    if !picking.full_grammar {
        let draws = if picking.greedy { 1 } else { 1 + REDRAWS };
        for draw in 0..draws {
            let started = Instant::now();
            let mut candidates = context.token_data_array_ith(batch_index);
            timed(Stage::Fetch, started);
            let started = Instant::now();
            candidates.apply_sampler(chain);
            timed(Stage::Chain, started);
            let Some(token) = candidates.selected_token() else { break };
            if allowed(token) {
                return Some(token);
            }
            if draw == 0 {
                count(Stage::Rejections, 1);
            }
            if picking.greedy {
                // Greedy leaves the candidates untouched: the runners-up are in hand.
                if let Some(token) = best_runners_up(&candidates, GREEDY_RUNNERS_UP).into_iter().find(|&t| allowed(t)) {
                    return Some(token);
                }
            }
        }
        count(Stage::FullMasks, 1);
    } else if grammar.is_some() {
        count(Stage::Rejections, 1);
        count(Stage::FullMasks, 1);
    }
    let started = Instant::now();
    let mut candidates = context.token_data_array_ith(batch_index);
    timed(Stage::Fetch, started);
    if let Some(grammar) = grammar {
        let started = Instant::now();
        candidates.apply_sampler(grammar);
        timed(Stage::Grammar, started);
    }
    let started = Instant::now();
    mask_invalid_utf8(&mut candidates, pending, model);
    timed(Stage::Utf8, started);
    let started = Instant::now();
    candidates.apply_sampler(chain);
    timed(Stage::Chain, started);
    candidates.selected_token()
}

/// The `count` best candidates, best first: by falling logit, ties by rising position (the
/// greedy sampler's preference).
fn best_runners_up(candidates: &LlamaTokenDataArray, count: usize) -> Vec<LlamaToken> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(count + 1);
    for (index, candidate) in candidates.data.iter().enumerate() {
        let logit = candidate.logit();
        if best.len() == count && best.last().is_some_and(|&(worst, _)| logit <= worst) {
            continue;
        }
        // After every entry with a logit at least as high: earlier positions win ties.
        let at = best.partition_point(|&(other, _)| other >= logit);
        best.insert(at, (logit, index));
        best.truncate(count);
    }
    best.into_iter().filter_map(|(_, index)| candidates.data.get(index).map(LlamaTokenData::id)).collect()
}

/// Whether `grammar` allows `token` next: the grammar applied to a one-candidate array leaves
/// its logit finite exactly when the full mask would.
fn grammar_allows(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 0.0, 0.0)], false);
    one.apply_sampler(grammar);
    one.data.first().is_some_and(|candidate| candidate.logit().is_finite())
}

/// Rules out tokens that would make the output invalid UTF-8. Byte-level vocabularies can
/// spell any byte sequence, and llama.cpp's grammars accept malformed sequences inside
/// strings; left alone, a lone byte would surface as U+FFFD and break a schema's maxLength.
fn mask_invalid_utf8(candidates: &mut LlamaTokenDataArray, pending: &[u8], model: &LocalModel) {
    // llama.cpp lays the candidates out by token id. With no character pending, only tokens
    // that are not complete UTF-8 on their own can break the text: checking just those keeps
    // the mask off the per-token hot path of a 150k-token vocabulary.
    let by_id = !candidates.sorted && candidates.data.len() == model.piece_count();
    let suspects: Box<dyn Iterator<Item = usize> + '_> = if pending.is_empty() && by_id {
        Box::new(model.partial_utf8_tokens().iter().map(|token| token.0 as usize))
    } else {
        Box::new(0..candidates.data.len())
    };
    let mut masked = Vec::new();
    for index in suspects {
        let Some(candidate) = candidates.data.get(index) else { continue };
        let piece = model.piece(candidate.id());
        // Control tokens (end of turn) have no bytes and are always fine.
        if candidate.logit() != f32::NEG_INFINITY && !piece.is_empty() && !keeps_utf8_valid(pending, piece) {
            masked.push((index, candidate.logit()));
        }
    }
    for (index, _) in &masked {
        candidates.data[*index].set_logit(f32::NEG_INFINITY);
    }
    // Never mask everything: a stuck sampler is worse than one replacement character.
    if !masked.is_empty() && candidates.data.iter().all(|candidate| candidate.logit() == f32::NEG_INFINITY) {
        for (index, logit) in masked {
            candidates.data[index].set_logit(logit);
        }
    }
}

/// Parsed grammar samplers, fresh (nothing accepted), by constraint. llama.cpp parses a
/// grammar in milliseconds; cloning a parsed one copies its rules. Samplers are used on the
/// worker thread only, so the cache lives there.
pub(crate) struct GrammarSamplers {
    parsed: BoundedLru<OutputConstraint, LlamaSampler>,
}

/// Parsed grammars a worker keeps.
const PARSED_GRAMMARS: usize = 32;
/// Their grammars' text, in bytes (a parsed grammar takes a small multiple of it).
const PARSED_GRAMMAR_BYTES: usize = 4 << 20;

impl Default for GrammarSamplers {
    fn default() -> Self {
        GrammarSamplers { parsed: BoundedLru::new(PARSED_GRAMMARS, PARSED_GRAMMAR_BYTES) }
    }
}

impl GrammarSamplers {
    /// A fresh grammar sampler for `constraint`, if it has one.
    fn sampler(&mut self, model: &LocalModel, constraint: &OutputConstraint) -> Result<Option<LlamaSampler>> {
        let grammar_error =
            |err: llama_cpp_2::GrammarError| Error::Inference(format!("llama.cpp rejected the output grammar: {err}"));
        let (text, parsed) = match constraint {
            OutputConstraint::None => return Ok(None),
            OutputConstraint::Grammar(grammar) => {
                if let Some(parsed) = self.parsed.get(constraint) {
                    return Ok(Some(parsed.clone()));
                }
                (grammar, LlamaSampler::grammar(model.llama(), grammar, "root").map_err(grammar_error)?)
            }
            OutputConstraint::LazyGrammar { grammar, trigger } => {
                if let Some(parsed) = self.parsed.get(constraint) {
                    return Ok(Some(parsed.clone()));
                }
                (
                    grammar,
                    LlamaSampler::grammar_lazy(model.llama(), grammar, "root", [trigger.as_bytes()], &[])
                        .map_err(grammar_error)?,
                )
            }
        };
        let fresh = parsed.clone();
        self.parsed.insert(constraint.clone(), parsed, text.len());
        Ok(Some(fresh))
    }
}

/// The grammar sampler (if any) and the sampling chain.
pub(crate) fn build_samplers(
    model: &LocalModel,
    sampling: &Sampling,
    constraint: &OutputConstraint,
    grammars: &mut GrammarSamplers,
) -> Result<(Option<LlamaSampler>, LlamaSampler)> {
    let started = Instant::now();
    let grammar = grammars.sampler(model, constraint)?;
    let mut chain = Vec::new();
    // First, so greedy picks and nuclei alike see the penalised logits. The penalty sampler
    // keeps its own history of the tokens accepted into the chain: the answer's, not the prompt's.
    if let Some(penalties) = sampling.penalties {
        chain.push(LlamaSampler::penalties(
            model.llama().n_vocab(),
            PENALTY_WINDOW,
            penalties.repeat,
            penalties.frequency,
            penalties.presence,
        ));
    }
    if sampling.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if let Some(top_p) = sampling.top_p {
            chain.push(LlamaSampler::top_p(top_p as f32, 1));
        }
        if let Some(min_p) = sampling.min_p {
            chain.push(LlamaSampler::min_p(min_p as f32, 1));
        }
        chain.push(LlamaSampler::temp(sampling.temperature as f32));
        chain.push(LlamaSampler::dist(sampling.seed));
    }
    timed(Stage::Setup, started);
    count(Stage::Requests, 1);
    Ok((grammar, LlamaSampler::chain_simple(chain)))
}
