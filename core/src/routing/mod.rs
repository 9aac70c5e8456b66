//! The router: per call, SLM or LLM, in microseconds, with reasons a person can read.
//!
//! It reads the whole request: every message's size against the SLM's window, the
//! modalities and tools it needs, the structure it asks for, the task its instructions
//! describe, the output it expects and the depth of the conversation, plus the caller's own
//! tags. Lexicons, weights and rules come from configuration (`routing/defaults.toml`,
//! overridable in the `[routing]` section).

pub mod adaptive;
pub mod fleet;
pub mod stats;
pub mod task_key;

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::adaptive::{Adaptive, AdaptiveConfig, AdaptiveView};
use self::stats::OutcomeStats;
pub use self::task_key::{task_key, KeySource, TaskKey};
use crate::error::{Error, Result};
use crate::hints::hint;
pub use crate::hints::task_tag;
use crate::local::LocalModel;
use crate::tier::Tier;
use crate::types::{
    ChatCompletionRequest, ContentPart, MessageContent, ResponseFormat, Role, ToolChoice, ToolChoiceMode,
};

const DEFAULTS: &str = include_str!("defaults.toml");

/// The `[routing]` section: everything optional, laid over the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Send every call to this tier (still subject to hard limits and forced routes)
    /// instead of scoring.
    #[serde(default)]
    pub default: Option<Tier>,
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub bias: Option<f64>,
    /// The SLM's window when its tier cannot say (a remote SLM pool). Default 8192.
    #[serde(default)]
    pub slm_context: Option<u32>,
    #[serde(default)]
    pub chars_per_token: Option<f64>,
    #[serde(default)]
    pub exact_count_band: Option<f64>,
    /// Whether the SLM tier can call tools (a local tier always can). Default true.
    #[serde(default)]
    pub slm_supports_tools: Option<bool>,
    /// Whether the SLM tier reads images (a local tier never does). Default false.
    #[serde(default)]
    pub slm_supports_images: Option<bool>,
    /// Weight overrides by name (see `routing/defaults.toml`).
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Phrases added to the default lexicon, or new weights for default phrases.
    #[serde(default)]
    pub lexicon: BTreeMap<String, f64>,
    /// Drop the default lexicon instead of extending it.
    #[serde(default)]
    pub replace_lexicon: bool,
    /// Rules tried before the defaults.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Drop the default rules.
    #[serde(default)]
    pub replace_rules: bool,
    /// Learn from outcomes: per task cluster, the expected cost of SLM first against the LLM
    /// (the score is the prior). Needs both tiers.
    #[serde(default)]
    pub adaptive: bool,
    /// The adaptive router's knobs (`[routing.learning]`).
    #[serde(default)]
    pub learning: AdaptiveConfig,
}

/// A caller-tag rule: a tag named by the call, or a regex on its system prompt, picks the tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub system_regex: Option<String>,
    pub route: Tier,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    threshold: f64,
    bias: f64,
    default_slm_context: u32,
    chars_per_token: f64,
    exact_count_band: f64,
    weights: Weights,
    lexicon: BTreeMap<String, f64>,
    sections: SectionWords,
    rules: Vec<Rule>,
}

/// Words that name a prompt section's kind in its heading (`## Format example`) or line label
/// (`Requirement: ...`); see `[sections]` in `routing/defaults.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionWords {
    /// Any of these in a heading makes the section an example (material), whatever else it says.
    example: Vec<String>,
    instruction: Vec<String>,
    material: Vec<String>,
}

/// Signal weights; see `routing/defaults.toml` for what each means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub json_schema: f64,
    pub json_object: f64,
    pub forced_tool_call: f64,
    pub free_tool_choice: f64,
    pub tools_free: f64,
    pub per_extra_tool: f64,
    pub stated_long_output: f64,
    pub long_output_words: f64,
    pub long_max_tokens: f64,
    pub long_max_tokens_at: f64,
    pub short_max_tokens: f64,
    pub short_max_tokens_at: f64,
    pub per_extra_message: f64,
    pub depth_free: f64,
    pub depth_cap: f64,
    pub half_window_prompt: f64,
    pub lexicon_cap: f64,
    pub stated_short_output: f64,
    pub short_output_words: f64,
    pub zone_instruction: f64,
    pub zone_plain: f64,
    pub zone_material: f64,
    pub zone_role: f64,
}

/// One signal's part in a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub name: String,
    /// Positive pulls to the LLM, negative to the SLM.
    pub contribution: f64,
    pub detail: String,
}

/// Where a call goes, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteDecision {
    pub tier: Tier,
    /// Reasons a person can read, most decisive first.
    pub reasons: Vec<String>,
    /// Each scored signal with its contribution (empty when a hard limit, a forced route or
    /// a rule decided).
    pub signals: Vec<Signal>,
    /// The summed score, when the call was scored.
    pub score: Option<f64>,
    pub threshold: f64,
    /// The prompt's size in tokens, as the router saw it.
    pub prompt_tokens: u32,
    /// Whether `prompt_tokens` was counted with the SLM's tokenizer (else estimated).
    pub prompt_tokens_exact: bool,
    /// Whether the caller chose the tier (a route hint, or a tier's model id in `model`): a
    /// forced SLM call is never escalated.
    pub forced: bool,
    /// The call's task cluster (absent only when a tier is missing).
    pub task_key: Option<TaskKey>,
    /// The adaptive router's posterior and expected costs, when it decided.
    pub adaptive: Option<AdaptiveView>,
}

/// What the router knows about the SLM tier.
#[derive(Debug, Clone)]
pub struct SlmProfile {
    pub context_window: u32,
    pub tokenizer: Option<LocalModel>,
    pub supports_tools: bool,
    pub supports_images: bool,
}

struct Phrase {
    text: String,
    prefix: bool,
    weight: f64,
}

/// Where wording sits in a prompt, which decides how much it says about the task. A role
/// prompt's persona and a format example or pasted document are full of words ("design",
/// "review", "plan") that describe the agent or the data, not what this call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    /// A section or line that states what to do (`## Instruction`, `Requirement: ...`).
    Instruction,
    /// Prose with no section marking.
    Plain,
    /// Quoted material: code fences, JSON, `[CONTENT]` blocks, sections headed as examples,
    /// context, documents or logs.
    Material,
    /// A system prompt's persona sentence ("You are an architect, ...").
    Role,
}

impl Zone {
    fn name(self) -> &'static str {
        match self {
            Zone::Instruction => "instruction",
            Zone::Plain => "plain",
            Zone::Material => "material",
            Zone::Role => "role",
        }
    }
}

/// One instruction text the lexicon reads, and where it came from.
struct Window<'a> {
    text: &'a str,
    /// From a system (or developer) message.
    system: bool,
    /// The start of its message (a tail window starts mid-section, so its first lines are
    /// plain until a marker says otherwise).
    head: bool,
}

/// A matched phrase, its weight and the zone that gave it the most weight.
struct Matched {
    shown: String,
    weight: f64,
    zone: Zone,
    factor: f64,
}

struct CompiledRule {
    tags: Vec<String>,
    system_regex: Option<regex::Regex>,
    route: Tier,
}

/// Decides SLM or LLM per call.
pub struct Router {
    fixed: Option<Tier>,
    threshold: f64,
    bias: f64,
    chars_per_token: f64,
    exact_count_band: f64,
    weights: Weights,
    phrases: Vec<Phrase>,
    matcher: AhoCorasick,
    words_regex: regex::Regex,
    words_after_regex: regex::Regex,
    sections: SectionWords,
    rules: Vec<CompiledRule>,
    slm: Option<SlmProfile>,
    has_llm: bool,
    adaptive: Option<Adaptive>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("fixed", &self.fixed)
            .field("phrases", &self.phrases.len())
            .finish_non_exhaustive()
    }
}

/// Output assumed when a request sets no `max_tokens`.
const ASSUMED_OUTPUT_TOKENS: u32 = 512;
/// How much of each instruction message's start and end the lexicon reads.
const SCAN_CHARS: usize = 1500;
/// Tokens a chat template adds around each message.
const PER_MESSAGE_OVERHEAD: usize = 4;

impl Router {
    /// Builds a router from `config` laid over the defaults.
    ///
    /// `slm` describes the SLM tier (`None` when there is none); `has_llm` says whether
    /// there is an LLM tier to send hard-limit cases to.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown weight, a bad regex or a bad number.
    pub fn new(config: &RoutingConfig, slm: Option<SlmProfile>, has_llm: bool) -> Result<Self> {
        let defaults: Defaults =
            toml::from_str(DEFAULTS).map_err(|err| Error::Config(format!("routing defaults: {err}")))?;
        let mut weights = serde_json::to_value(&defaults.weights).map_err(|err| Error::Config(err.to_string()))?;
        for (name, value) in &config.weights {
            if weights.get(name).is_none() {
                return Err(Error::Config(format!("routing weight {name:?} does not exist")));
            }
            weights[name] = Value::from(*value);
        }
        let weights: Weights = serde_json::from_value(weights).map_err(|err| Error::Config(err.to_string()))?;
        let mut lexicon = if config.replace_lexicon { BTreeMap::new() } else { defaults.lexicon };
        lexicon.extend(config.lexicon.clone());
        let mut phrases = Vec::with_capacity(lexicon.len());
        for (phrase, weight) in lexicon {
            if !weight.is_finite() {
                return Err(Error::Config(format!("lexicon weight for {phrase:?} must be finite")));
            }
            let (text, prefix) = match phrase.strip_suffix('*') {
                Some(stem) => (stem.to_owned(), true),
                None => (phrase.clone(), false),
            };
            if text.trim().is_empty() {
                return Err(Error::Config("lexicon phrases must not be empty".into()));
            }
            phrases.push(Phrase { text, prefix, weight });
        }
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(phrases.iter().map(|phrase| phrase.text.as_str()))
            .map_err(|err| Error::Config(format!("routing lexicon: {err}")))?;
        let mut rules = Vec::new();
        let default_rules = if config.replace_rules { Vec::new() } else { defaults.rules };
        for rule in config.rules.iter().chain(default_rules.iter()) {
            let system_regex = match &rule.system_regex {
                Some(pattern) => Some(
                    regex::Regex::new(pattern)
                        .map_err(|err| Error::Config(format!("routing rule regex {pattern:?}: {err}")))?,
                ),
                None => None,
            };
            rules.push(CompiledRule { tags: rule.tags.clone(), system_regex, route: rule.route });
        }
        let threshold = config.threshold.unwrap_or(defaults.threshold);
        let bias = config.bias.unwrap_or(defaults.bias);
        let chars_per_token = config.chars_per_token.unwrap_or(defaults.chars_per_token);
        let exact_count_band = config.exact_count_band.unwrap_or(defaults.exact_count_band);
        for (name, value) in [("threshold", threshold), ("bias", bias)] {
            if !value.is_finite() {
                return Err(Error::Config(format!("routing {name} must be finite")));
            }
        }
        let band_ok = exact_count_band.is_finite() && exact_count_band >= 1.0;
        if !(chars_per_token.is_finite() && chars_per_token > 0.0 && band_ok) {
            return Err(Error::Config("chars_per_token must be positive and exact_count_band at least 1".into()));
        }
        // Explicit configuration wins; a remote SLM that states no window (0) gets the default.
        let slm = slm.map(|mut profile| {
            if let Some(window) = config.slm_context {
                profile.context_window = window;
            } else if profile.context_window == 0 {
                profile.context_window = defaults.default_slm_context;
            }
            if profile.tokenizer.is_none() {
                profile.supports_tools = config.slm_supports_tools.unwrap_or(profile.supports_tools);
                profile.supports_images = config.slm_supports_images.unwrap_or(profile.supports_images);
            }
            profile
        });
        Ok(Router {
            fixed: config.default,
            threshold,
            bias,
            chars_per_token,
            exact_count_band,
            weights,
            phrases,
            matcher,
            words_regex: regex::Regex::new(r"(?i)\b(\d{1,2},\d{3}|\d{2,6})\s*(?:-|\s)?\s*words?\b")
                .map_err(|err| Error::Config(err.to_string()))?,
            // "a word count of 2,000", "word limit of 150": the number after the words.
            words_after_regex: regex::Regex::new(
                r"(?i)\bwords?\s+(?:count|limit)\s+(?:of\s+)?(?:at\s+least\s+|at\s+most\s+)?(\d{1,2},\d{3}|\d{2,6})\b",
            )
            .map_err(|err| Error::Config(err.to_string()))?,
            sections: lowercase_sections(defaults.sections),
            rules,
            slm,
            has_llm,
            adaptive: None,
        })
    }

    /// Lets `adaptive` decide scored calls and calls a caller-tag rule matched (the score, or
    /// the rule's route, becomes its prior). Hard limits and forced routes still come first.
    pub fn with_adaptive(mut self, adaptive: Adaptive) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// The outcome statistics the adaptive router learns from, when it is on.
    pub fn outcome_stats(&self) -> Option<&std::sync::Arc<OutcomeStats>> {
        self.adaptive.as_ref().map(Adaptive::stats)
    }

    /// Decides where `request` goes.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a malformed routing hint.
    pub fn decide(&self, request: &ChatCompletionRequest) -> Result<RouteDecision> {
        let mut decision = RouteDecision {
            tier: Tier::Slm,
            reasons: Vec::new(),
            signals: Vec::new(),
            score: None,
            threshold: self.threshold,
            prompt_tokens: 0,
            prompt_tokens_exact: false,
            forced: false,
            task_key: Some(task_key(request)),
            adaptive: None,
        };
        let Some(slm) = &self.slm else {
            decision.tier = Tier::Llm;
            decision.reasons.push("there is no SLM tier".into());
            return Ok(decision);
        };
        if !self.has_llm {
            decision.reasons.push("there is no LLM tier".into());
            return Ok(decision);
        }
        let (prompt_tokens, exact) = self.prompt_tokens(request, slm);
        decision.prompt_tokens = prompt_tokens;
        decision.prompt_tokens_exact = exact;

        if let Some(tier) = forced_route(request)? {
            decision.tier = tier;
            decision.forced = true;
            decision.reasons.push(format!("the caller forced the {tier} tier"));
            return Ok(decision);
        }
        if let Some(reason) = self.hard_limit(request, slm, prompt_tokens, exact) {
            decision.tier = Tier::Llm;
            decision.reasons.push(reason);
            return Ok(decision);
        }
        if let Some(tier) = self.fixed {
            decision.tier = tier;
            decision.reasons.push(format!("fixed route: every call goes to the {tier} tier"));
            return Ok(decision);
        }
        let prior = match (self.rule_route(request, &mut decision), &self.adaptive) {
            (Some(reason), None) => {
                decision.reasons.push(reason);
                return Ok(decision);
            }
            // With the adaptive router a rule is a strong prior, not the route: the tag names
            // the cluster, and outcomes can overrule the rule.
            (Some(reason), Some(_)) => {
                decision.reasons.push(format!("{reason} (the adaptive router's prior)"));
                Some(rule_prior_score(decision.tier, self.threshold))
            }
            (None, _) => {
                self.score(request, slm, prompt_tokens, &mut decision);
                decision.score
            }
        };
        if let (Some(adaptive), Some(score), Some(key)) = (&self.adaptive, prior, &decision.task_key) {
            let (tier, view) =
                adaptive.decide(&key.key, score, self.threshold, prompt_tokens, request.max_output_tokens());
            decision.tier = tier;
            decision.reasons.insert(0, format!("adaptive, task {}: {}", key.key, view.why));
            decision.adaptive = Some(view);
        }
        Ok(decision)
    }

    /// The prompt's size: estimated from its characters, counted exactly with the local
    /// tokenizer when the estimate is close enough to the window to matter.
    fn prompt_tokens(&self, request: &ChatCompletionRequest, slm: &SlmProfile) -> (u32, bool) {
        let mut chars = 0usize;
        for message in &request.messages {
            chars += PER_MESSAGE_OVERHEAD * self.chars_per_token as usize;
            chars += match &message.content {
                Some(MessageContent::Text(text)) => text.len(),
                Some(MessageContent::Parts(parts)) => parts
                    .iter()
                    .map(|part| match part {
                        ContentPart::Text { text } => text.len(),
                        _ => 0,
                    })
                    .sum(),
                None => 0,
            };
            for call in message.tool_calls.iter().flatten() {
                chars += call.function.name.len() + call.function.arguments.len() + 32;
            }
        }
        for tool in request.active_tools() {
            chars += tool.function.name.len()
                + tool.function.description.as_ref().map_or(0, String::len)
                + tool.function.parameters.as_ref().map_or(0, json_size);
        }
        let estimate = (chars as f64 / self.chars_per_token).ceil() as u32;
        let needed = estimate.saturating_add(output_tokens(request));
        let window = f64::from(slm.context_window);
        let near =
            f64::from(needed) >= window / self.exact_count_band && f64::from(needed) <= window * self.exact_count_band;
        if let (true, Some(model)) = (near, &slm.tokenizer) {
            if let Ok(prompt) = model.render_prompt(&request.messages, request.active_tools()) {
                return (model.count_tokens(&prompt) as u32, true);
            }
        }
        (estimate, false)
    }

    fn hard_limit(
        &self,
        request: &ChatCompletionRequest,
        slm: &SlmProfile,
        prompt_tokens: u32,
        exact: bool,
    ) -> Option<String> {
        let output = output_tokens(request);
        if prompt_tokens.saturating_add(output) > slm.context_window {
            let how = if exact { "" } else { "~" };
            return Some(format!(
                "the prompt ({how}{prompt_tokens} tokens) plus the output ({output}) exceeds the SLM's {}-token window",
                slm.context_window
            ));
        }
        let mut has_images = false;
        let mut has_audio = false;
        for message in &request.messages {
            if let Some(MessageContent::Parts(parts)) = &message.content {
                for part in parts {
                    match part {
                        ContentPart::ImageUrl { .. } | ContentPart::File { .. } => has_images = true,
                        ContentPart::InputAudio { .. } => has_audio = true,
                        _ => {}
                    }
                }
            }
        }
        if has_images && !slm.supports_images {
            return Some("the request holds images or files, which the SLM cannot read".into());
        }
        if has_audio {
            return Some("the request holds audio, which the SLM cannot hear".into());
        }
        if !request.active_tools().is_empty() && !slm.supports_tools {
            return Some("the request offers tools, which the SLM tier cannot call".into());
        }
        None
    }

    fn rule_route(&self, request: &ChatCompletionRequest, decision: &mut RouteDecision) -> Option<String> {
        let tag = task_tag(request);
        let system = system_text(request);
        for rule in &self.rules {
            if let Some(tag) = tag {
                if rule.tags.iter().any(|candidate| candidate.eq_ignore_ascii_case(tag)) {
                    decision.tier = rule.route;
                    return Some(format!("the call's task tag {tag:?} routes to the {} tier", rule.route));
                }
            }
            if let Some(regex) = &rule.system_regex {
                if regex.is_match(&system) {
                    decision.tier = rule.route;
                    return Some(format!(
                        "the system prompt matches /{}/, which routes to the {} tier",
                        regex.as_str(),
                        rule.route
                    ));
                }
            }
        }
        None
    }

    fn score(
        &self,
        request: &ChatCompletionRequest,
        slm: &SlmProfile,
        prompt_tokens: u32,
        decision: &mut RouteDecision,
    ) {
        let w = &self.weights;
        let mut signals =
            vec![Signal { name: "bias".into(), contribution: self.bias, detail: "the default lean".into() }];

        match &request.response_format {
            Some(ResponseFormat::JsonSchema { .. }) => signals.push(Signal {
                name: "structure".into(),
                contribution: w.json_schema,
                detail: "a JSON schema is requested; the SLM's grammar guarantees it".into(),
            }),
            Some(ResponseFormat::JsonObject) => signals.push(Signal {
                name: "structure".into(),
                contribution: w.json_object,
                detail: "JSON output is requested; the SLM's grammar guarantees it".into(),
            }),
            _ => {}
        }
        let tools = request.active_tools().len();
        if tools > 0 {
            let forced =
                matches!(request.tool_choice, Some(ToolChoice::Named(_) | ToolChoice::Mode(ToolChoiceMode::Required)));
            if forced {
                signals.push(Signal {
                    name: "tools".into(),
                    contribution: w.forced_tool_call,
                    detail: "a tool call is forced; the grammar makes it valid".into(),
                });
            } else {
                let extra = (tools as f64 - w.tools_free).max(0.0);
                signals.push(Signal {
                    name: "tools".into(),
                    contribution: w.free_tool_choice + extra * w.per_extra_tool,
                    detail: format!("{tools} tools with free choice"),
                });
            }
        }

        let texts = instruction_texts(request);
        let (routine, open_ended, matched) = self.lexicon_scores(&texts);
        let wording = |routine_side: bool| {
            matched
                .iter()
                .filter(|found| (found.weight < 0.0) == routine_side)
                .map(|found| {
                    if found.factor == 1.0 {
                        found.shown.clone()
                    } else {
                        format!("{} (x{} {})", found.shown, found.factor, found.zone.name())
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if routine != 0.0 {
            signals.push(Signal {
                name: "task: routine".into(),
                contribution: routine.max(-w.lexicon_cap),
                detail: format!("routine wording: {}", wording(true)),
            });
        }
        if open_ended != 0.0 {
            signals.push(Signal {
                name: "task: open-ended".into(),
                contribution: open_ended.min(w.lexicon_cap),
                detail: format!("open-ended wording: {}", wording(false)),
            });
        }

        if let Some(words) = texts.iter().filter_map(|window| self.stated_words(window.text)).max() {
            if f64::from(words) >= w.long_output_words {
                signals.push(Signal {
                    name: "output length".into(),
                    contribution: w.stated_long_output,
                    detail: format!("the instructions ask for about {words} words"),
                });
            } else if f64::from(words) <= w.short_output_words {
                signals.push(Signal {
                    name: "output length".into(),
                    contribution: w.stated_short_output,
                    detail: format!("the instructions bound the answer to about {words} words"),
                });
            }
        }
        if let Some(max_tokens) = request.max_output_tokens() {
            let value = f64::from(max_tokens);
            if value >= w.long_max_tokens_at && !is_round_default(max_tokens) {
                signals.push(Signal {
                    name: "output length".into(),
                    contribution: w.long_max_tokens,
                    detail: format!("max_tokens {max_tokens} expects a long answer"),
                });
            } else if value <= w.short_max_tokens_at {
                signals.push(Signal {
                    name: "output length".into(),
                    contribution: w.short_max_tokens,
                    detail: format!("max_tokens {max_tokens} expects a short answer"),
                });
            }
        }
        let messages = request
            .messages
            .iter()
            .filter(|message| message.role != Role::System && message.role != Role::Developer)
            .count();
        let extra_messages = (messages as f64 - w.depth_free).max(0.0);
        if extra_messages > 0.0 {
            signals.push(Signal {
                name: "conversation depth".into(),
                contribution: (extra_messages * w.per_extra_message).min(w.depth_cap),
                detail: format!("{messages} turns"),
            });
        }
        if f64::from(prompt_tokens) > f64::from(slm.context_window) / 2.0 {
            signals.push(Signal {
                name: "prompt size".into(),
                contribution: w.half_window_prompt,
                detail: format!("the prompt fills over half of the SLM's {}-token window", slm.context_window),
            });
        }

        let score: f64 = signals.iter().map(|signal| signal.contribution).sum();
        decision.tier = if score > self.threshold { Tier::Llm } else { Tier::Slm };
        decision.score = Some(score);
        let mut strongest: Vec<&Signal> = signals.iter().filter(|signal| signal.name != "bias").collect();
        strongest.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        decision.reasons.push(format!("score {score:+.2} against threshold {:+.2}", self.threshold));
        decision.reasons.extend(
            strongest
                .iter()
                .take(3)
                .map(|signal| format!("{} ({:+.2}): {}", signal.name, signal.contribution, signal.detail)),
        );
        decision.signals = signals;
    }

    /// Sums lexicon weights over the instruction texts, each phrase counted once, at the
    /// weight of the zone where it counts most (an instruction outweighs a format example).
    fn lexicon_scores(&self, texts: &[Window<'_>]) -> (f64, f64, Vec<Matched>) {
        let w = &self.weights;
        let factor = |zone: Zone| match zone {
            Zone::Instruction => w.zone_instruction,
            Zone::Plain => w.zone_plain,
            Zone::Material => w.zone_material,
            Zone::Role => w.zone_role,
        };
        // Per phrase, the best zone so far (None: not matched).
        let top = w.zone_instruction.max(w.zone_plain).max(w.zone_material).max(w.zone_role);
        let mut best: Vec<Option<Zone>> = vec![None; self.phrases.len()];
        let mut spans = Vec::new();
        for window in texts {
            let bytes = window.text.as_bytes();
            spans.clear();
            let mut zones_known = false;
            for found in self.matcher.find_overlapping_iter(window.text) {
                let index = found.pattern().as_usize();
                if best[index].is_some_and(|zone| factor(zone) >= top) {
                    continue;
                }
                let phrase = &self.phrases[index];
                let before_ok = found.start() == 0 || !is_word_byte(bytes[found.start() - 1]);
                let after_ok = phrase.prefix || found.end() == bytes.len() || !is_word_byte(bytes[found.end()]);
                if !(before_ok && after_ok) {
                    continue;
                }
                // Zones are worked out only for windows where something matched.
                if !zones_known {
                    zone_spans(window, &self.sections, &mut spans);
                    zones_known = true;
                }
                let zone = zone_at(&spans, found.start());
                if best[index].is_none_or(|previous| factor(zone) > factor(previous)) {
                    best[index] = Some(zone);
                }
            }
        }
        let mut routine = 0.0;
        let mut open_ended = 0.0;
        let mut matched = Vec::new();
        for (phrase, zone) in self.phrases.iter().zip(&best) {
            let Some(zone) = *zone else { continue };
            let weighed = phrase.weight * factor(zone);
            if phrase.weight < 0.0 {
                routine += weighed;
            } else {
                open_ended += weighed;
            }
            let shown = if phrase.prefix { format!("{}*", phrase.text) } else { phrase.text.clone() };
            matched.push(Matched { shown, weight: phrase.weight, zone, factor: factor(zone) });
        }
        (routine, open_ended, matched)
    }

    fn stated_words(&self, text: &str) -> Option<u32> {
        let parse = |captures: regex::Captures<'_>| captures.get(1)?.as_str().replace(',', "").parse::<u32>().ok();
        self.words_regex
            .captures_iter(text)
            .filter_map(parse)
            .chain(self.words_after_regex.captures_iter(text).filter_map(parse))
            .max()
    }
}

/// A byte that continues a word: identifiers such as `markdown_blog` or `debug_mode` are one
/// word, not prose that says "blog" or "debug".
fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn lowercase_sections(words: SectionWords) -> SectionWords {
    let lower = |list: Vec<String>| list.into_iter().map(|word| word.to_ascii_lowercase()).collect();
    SectionWords {
        example: lower(words.example),
        instruction: lower(words.instruction),
        material: lower(words.material),
    }
}

/// How many characters of a heading or line label are read to name its section.
const LABEL_CHARS: usize = 60;

/// The zones of a window, as (start byte, zone) from that byte on, in order.
///
/// Line by line: a code fence or a `[CONTENT]` block is material to its end; a markdown
/// heading opens a section whose kind its words name (an example, an instruction, or material
/// such as context, documents, logs; plain when they name none); a short `Label:` at a line's
/// start names that line alone; a line that looks like JSON is material. A system prompt's
/// opening "You are ..." sentence is the persona.
fn zone_spans(window: &Window<'_>, words: &SectionWords, spans: &mut Vec<(usize, Zone)>) {
    let text = window.text;
    let mut section = Zone::Plain;
    let mut fenced = false;
    let mut content_block = false;
    let mut offset = 0;
    if window.system && window.head {
        let opening = text.trim_start();
        if opening.len() >= 7 && opening.as_bytes()[..7].eq_ignore_ascii_case(b"you are") {
            let end = text.find(['.', '\n']).map_or(text.len(), |at| at + 1);
            spans.push((0, Zone::Role));
            offset = end;
        }
    }
    let push = |spans: &mut Vec<(usize, Zone)>, at: usize, zone: Zone| {
        if spans.last().is_none_or(|&(_, last)| last != zone) {
            spans.push((at, zone));
        }
    };
    for line in text[offset..].split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            fenced = !fenced;
            push(spans, at, Zone::Material);
            continue;
        }
        if fenced {
            push(spans, at, Zone::Material);
            continue;
        }
        if trimmed.starts_with("[CONTENT]") {
            content_block = !trimmed.contains("[/CONTENT]");
            push(spans, at, Zone::Material);
            continue;
        }
        if content_block {
            content_block = !trimmed.contains("[/CONTENT]");
            push(spans, at, Zone::Material);
            continue;
        }
        if let Some(title) = heading(trimmed) {
            section = section_kind(title, words).unwrap_or(Zone::Plain);
            push(spans, at, section);
            continue;
        }
        if looks_like_json(trimmed) {
            push(spans, at, Zone::Material);
            continue;
        }
        if let Some(zone) = line_label(trimmed).and_then(|label| section_kind(label, words)) {
            push(spans, at, zone);
            continue;
        }
        push(spans, at, section);
    }
}

/// The zone at byte `at`, from [`zone_spans`]'s list.
fn zone_at(spans: &[(usize, Zone)], at: usize) -> Zone {
    let index = spans.partition_point(|&(start, _)| start <= at);
    index.checked_sub(1).map_or(Zone::Plain, |index| spans[index].1)
}

/// A markdown heading's title: `#` to `######`, then a space.
fn heading(line: &str) -> Option<&str> {
    let hashes = line.bytes().take_while(|&byte| byte == b'#').count();
    if (1..=6).contains(&hashes) && line.as_bytes().get(hashes) == Some(&b' ') {
        Some(line[hashes..].trim())
    } else {
        None
    }
}

/// A line's label: up to three words before a colon at its start ("Requirement: ...").
fn line_label(line: &str) -> Option<&str> {
    let colon = line.get(..LABEL_CHARS.min(line.len())).unwrap_or(line).find(':')?;
    let label = &line[..colon];
    let words = label.split_whitespace().count();
    (1..=3).contains(&words).then_some(label)
}

/// The kind a heading or label names, by its words; `None` when it names none. An example
/// is material whatever else the heading says; otherwise the earliest word decides ("Task
/// context" is an instruction, "Context of the task" material).
fn section_kind(title: &str, words: &SectionWords) -> Option<Zone> {
    let end = floor_char_boundary(title, LABEL_CHARS.min(title.len()));
    let title = title[..end].to_ascii_lowercase();
    let has_word = |word: &str| find_word(&title, word);
    if words.example.iter().any(|word| has_word(word).is_some()) {
        return Some(Zone::Material);
    }
    let first = |list: &[String]| list.iter().filter_map(|word| has_word(word)).min();
    match (first(&words.instruction), first(&words.material)) {
        (Some(a), Some(b)) => Some(if a <= b { Zone::Instruction } else { Zone::Material }),
        (Some(_), None) => Some(Zone::Instruction),
        (None, Some(_)) => Some(Zone::Material),
        (None, None) => None,
    }
}

/// Where `word` starts in `text` as a word (a prefix of a longer word counts: "logs" for
/// "log"), or `None`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    text.match_indices(word).map(|(at, _)| at).find(|&at| at == 0 || !is_word_byte(bytes[at - 1]))
}

/// A line that is JSON rather than prose: an object or list bracket, or a `"key": value` pair.
fn looks_like_json(line: &str) -> bool {
    match line.as_bytes().first() {
        Some(b'{' | b'}' | b']') => true,
        Some(b'[') => !line.starts_with("[CONTENT]"),
        Some(b'"') => line[1..].find('"').is_some_and(|close| line[close + 2..].trim_start().starts_with(':')),
        _ => false,
    }
}

/// OpenAI SDKs and agent frameworks send these when the caller set nothing in particular.
fn is_round_default(max_tokens: u32) -> bool {
    matches!(max_tokens, 1024 | 2048 | 4096 | 8192 | 16384 | 32768)
}

fn output_tokens(request: &ChatCompletionRequest) -> u32 {
    request.max_output_tokens().unwrap_or(ASSUMED_OUTPUT_TOKENS)
}

fn json_size(value: &Value) -> usize {
    match value {
        Value::Object(fields) => fields.iter().map(|(key, value)| key.len() + 4 + json_size(value)).sum::<usize>() + 2,
        Value::Array(items) => items.iter().map(|item| json_size(item) + 2).sum::<usize>() + 2,
        Value::String(text) => text.len() + 2,
        _ => 5,
    }
}

/// How far past the threshold a rule's route puts its prior score: with the default floor
/// and prior slope, a prior success of about 0.93 for a rule's SLM route and 0.28 for its LLM
/// route, worth `prior_strength` outcomes.
const RULE_PRIOR_MARGIN: f64 = 1.5;

/// The score a rule's route stands for, as the adaptive router's prior.
fn rule_prior_score(route: Tier, threshold: f64) -> f64 {
    match route {
        Tier::Slm => threshold - RULE_PRIOR_MARGIN,
        Tier::Llm => threshold + RULE_PRIOR_MARGIN,
    }
}

/// A forced route in the request: `{"slmkit": {"route": ...}}` or `metadata.slmkit_route`.
///
/// # Errors
/// [`Error::InvalidRequest`] for a value other than `slm`, `llm` or `auto`, or a `pipeline`
/// hint other than `full` or `bare` (a bare call is forced to the SLM).
pub fn forced_route(request: &ChatCompletionRequest) -> Result<Option<Tier>> {
    match hint(request, "pipeline") {
        None | Some("full") => {}
        // The bare model is the SLM's (see `crate::hints::is_bare`).
        Some("bare") => return Ok(Some(Tier::Slm)),
        Some(other) => {
            return Err(Error::invalid_request(
                format!("pipeline hint {other:?} is not one of \"full\" or \"bare\""),
                Some("slmkit.pipeline"),
            ))
        }
    }
    match hint(request, "route") {
        None | Some("auto") => Ok(None),
        Some("slm") => Ok(Some(Tier::Slm)),
        Some("llm") => Ok(Some(Tier::Llm)),
        Some(other) => Err(Error::invalid_request(
            format!("route hint {other:?} is not one of \"slm\", \"llm\" or \"auto\""),
            Some("slmkit.route"),
        )),
    }
}

fn system_text(request: &ChatCompletionRequest) -> String {
    request
        .messages
        .iter()
        .filter(|message| matches!(message.role, Role::System | Role::Developer))
        .map(|message| message.text())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The parts of a request that state its task: the system prompt, and the first and last
/// user messages, each trimmed to its first and last [`SCAN_CHARS`] characters so a huge
/// pasted log costs no more to read than a short one.
fn instruction_texts(request: &ChatCompletionRequest) -> Vec<Window<'_>> {
    let mut chosen: Vec<&crate::types::ChatMessage> = Vec::new();
    chosen.extend(request.messages.iter().filter(|m| matches!(m.role, Role::System | Role::Developer)));
    let users: Vec<_> = request.messages.iter().filter(|m| m.role == Role::User).collect();
    if let Some(first) = users.first() {
        chosen.push(first);
    }
    if users.len() > 1 {
        if let Some(last) = users.last() {
            chosen.push(last);
        }
    }
    let mut out = Vec::new();
    for message in chosen {
        let system = matches!(message.role, Role::System | Role::Developer);
        match &message.content {
            Some(MessageContent::Text(text)) => push_windows(text, system, &mut out),
            Some(MessageContent::Parts(parts)) => {
                for part in parts {
                    if let ContentPart::Text { text } = part {
                        push_windows(text, system, &mut out);
                    }
                }
            }
            None => {}
        }
    }
    out
}

fn push_windows<'a>(text: &'a str, system: bool, out: &mut Vec<Window<'a>>) {
    if text.len() <= 2 * SCAN_CHARS {
        out.push(Window { text, system, head: true });
        return;
    }
    let head_end = floor_char_boundary(text, SCAN_CHARS);
    let tail_start = floor_char_boundary(text, text.len() - SCAN_CHARS);
    out.push(Window { text: &text[..head_end], system, head: true });
    out.push(Window { text: &text[tail_start..], system, head: false });
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChatMessage;

    fn router() -> Router {
        let slm = SlmProfile { context_window: 8192, tokenizer: None, supports_tools: true, supports_images: false };
        Router::new(&RoutingConfig::default(), Some(slm), true).unwrap()
    }

    fn ask(system: &str, user: &str) -> ChatCompletionRequest {
        ChatCompletionRequest::new(vec![ChatMessage::system(system), ChatMessage::user(user)])
    }

    #[test]
    fn routine_and_open_ended_work_split() {
        let router = router();
        let classify = router.decide(&ask("Classify the ticket into exactly one intent.", "my bill is wrong")).unwrap();
        assert_eq!(classify.tier, Tier::Slm, "{classify:?}");
        let design = router
            .decide(&ask(
                "You are a principal engineer.",
                "Design the architecture for our webhook platform and discuss trade-offs.",
            ))
            .unwrap();
        assert_eq!(design.tier, Tier::Llm, "{design:?}");
        assert!(design.signals.iter().any(|signal| signal.name == "task: open-ended"));
    }

    #[test]
    fn wording_in_examples_and_documents_counts_less_than_the_instruction() {
        let router = router();
        // An agent prompt whose pasted design document and format example talk of design,
        // architecture and review, while its instruction asks for one routine conversion.
        let material = "## Context\n### System design\nThe architecture and its trade-offs, the roadmap and the \
                        strategy for the review.\n```python\n# design: debug the race condition\n```\n\
                        ## Format example\n{\"design\": \"architecture plan\"}\n";
        let routine = ask(
            "You are an architect who designs systems.",
            &format!(
                "{material}## Instruction\nConvert the \
                           design above to CSV rows. Return only the CSV."
            ),
        );
        let decision = router.decide(&routine).unwrap();
        assert_eq!(decision.tier, Tier::Slm, "{:?}", decision.reasons);
        let open = decision.signals.iter().find(|signal| signal.name == "task: open-ended").unwrap();
        assert!(open.detail.contains("material"), "{}", open.detail);
        assert!(open.detail.contains("role"), "{}", open.detail);

        // The same material, with an open-ended instruction: the instruction decides.
        let design = ask(
            "You are an architect.",
            &format!(
                "{material}## Instruction\nDesign the architecture for \
                          this system, weigh the trade-offs and propose a migration roadmap."
            ),
        );
        assert_eq!(router.decide(&design).unwrap().tier, Tier::Llm);
    }

    #[test]
    fn zones_come_from_fences_headings_labels_and_json_lines() {
        let words = lowercase_sections(toml::from_str::<Defaults>(DEFAULTS).unwrap().sections);
        let text = "You are a planner. Plan well.\n## Format example\nplan here\n## Action\ndo it\n\
                    Requirement: one line\n\"key\": 1\n```\ncode\n```\nprose";
        let mut spans = Vec::new();
        zone_spans(&Window { text, system: true, head: true }, &words, &mut spans);
        let zone_of = |needle: &str| zone_at(&spans, text.find(needle).unwrap());
        assert_eq!(zone_of("planner"), Zone::Role);
        assert_eq!(zone_of("Plan well"), Zone::Plain);
        assert_eq!(zone_of("plan here"), Zone::Material);
        assert_eq!(zone_of("do it"), Zone::Instruction);
        assert_eq!(zone_of("Requirement"), Zone::Instruction);
        assert_eq!(zone_of("\"key\""), Zone::Material);
        assert_eq!(zone_of("code"), Zone::Material);
        assert_eq!(zone_of("prose"), Zone::Instruction, "the section goes on after the fence");
        // A user message's tail window starts mid-section: plain until a marker.
        spans.clear();
        zone_spans(&Window { text: "You are here.\nplan", system: false, head: false }, &words, &mut spans);
        assert_eq!(zone_at(&spans, 0), Zone::Plain);
    }

    #[test]
    fn a_stated_word_count_after_the_word_counts() {
        let router = router();
        let long = ask("Write a report.", "The report should have a minimum word count of 2,000.");
        let decision = router.decide(&long).unwrap();
        assert!(decision.signals.iter().any(|signal| signal.detail.contains("2000 words")), "{:?}", decision.signals);
        let short = ask("Ask follow-up questions.", "Within a word limit of 150 words.");
        let decision = router.decide(&short).unwrap();
        assert!(decision.signals.iter().any(|signal| signal.contribution < 0.0 && signal.detail.contains("150 words")));
    }

    #[test]
    fn hard_limits_decide_before_scores() {
        let router = router();
        let mut long = ask("Classify this log.", &"x".repeat(40_000));
        long.max_tokens = Some(10);
        let decision = router.decide(&long).unwrap();
        assert_eq!(decision.tier, Tier::Llm);
        assert!(decision.reasons[0].contains("window"), "{:?}", decision.reasons);
        assert!(decision.signals.is_empty());
    }

    #[test]
    fn tags_rules_and_forced_routes() {
        let router = router();
        let mut request = ask("Design it all.", "go");
        request.metadata = Some(serde_json::Map::from_iter([("slmkit_task".into(), Value::from("WriteCode"))]));
        assert_eq!(router.decide(&request).unwrap().tier, Tier::Slm);
        request.extra.insert("slmkit".into(), serde_json::json!({"route": "llm"}));
        assert_eq!(router.decide(&request).unwrap().tier, Tier::Llm);
    }

    #[test]
    fn config_errors_are_clear() {
        let bad = RoutingConfig { weights: BTreeMap::from([("jsn_schema".into(), 1.0)]), ..Default::default() };
        assert!(matches!(Router::new(&bad, None, true), Err(Error::Config(message)) if message.contains("jsn_schema")));
        let bad = RoutingConfig {
            rules: vec![Rule { tags: vec![], system_regex: Some("(".into()), route: Tier::Llm }],
            ..Default::default()
        };
        assert!(Router::new(&bad, None, true).is_err());
    }
}
