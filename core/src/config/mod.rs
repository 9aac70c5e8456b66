//! The configuration file (TOML), shared by the Rust client, the bindings and `slmkit serve`.
//!
//! ```toml
//! [slm]                      # the small model: local GGUF, or a remote pool (vLLM, Ollama…)
//! backend = "local"
//! model = "qwen2.5-coder-0.5b-instruct"   # a catalog name, hf:ORG/REPO/FILE.gguf, a URL, or a path relative to this file
//! slots = 4                  # requests decoded together
//! context = 4096             # tokens per request, prompt and output
//! prefix_cache = 16384       # tokens of finished requests' KV state kept for prefix reuse
//!
//! # or a pool of OpenAI-compatible servers (llama-server, vLLM, other `slmkit serve`s):
//! # [slm]
//! # backend = "pool"
//! # model = "qwen2.5-coder-0.5b"
//! # endpoints = ["http://10.0.0.5:8080/v1", { base_url = "http://10.0.0.6:8000/v1", api_key_env = "VLLM_KEY" }]
//! # cooldown_s = 10        # eject_after_failures = 3, probe_interval_s = 5, affinity_slack = 2
//!
//! [llm]
//! backend = "remote"
//! base_url = "https://api.openai.com/v1"
//! model = "gpt-4o"
//! api_key_env = "OPENAI_API_KEY"   # the default; or api_key = "…"
//!
//! [llm.pricing]
//! kind = "per_token"
//! input_usd_per_million = 2.5
//! output_usd_per_million = 10.0
//!
//! [retry]
//! slm_attempts = 3
//! reask_window_s = 120       # an identical greedy request this soon after an answer rejects it
//!
//! [routing]                  # see routing/defaults.toml for every knob
//! bias = -0.1
//! [[routing.rules]]
//! tags = ["WriteCode"]
//! route = "slm"
//!
//! [ledger]
//! path = "slmkit-ledger.jsonl"
//!
//! [shared]                 # optional: a fleet of processes sharing one Redis (or Valkey)
//! redis_url_env = "SLMKIT_REDIS_URL"   # or redis_url = "redis://:password@host:6379/0"
//! required = false           # true: refuse to start without it; false: warn, use L1 only
//! budget_ms = 50             # the most a call waits on Redis
//!
//! [[validators]]
//! kind = "regex"
//! pattern = "^\\[CONTENT\\]"
//! ```
//! Unknown keys are errors, so a typo cannot silently fall back to a default.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub mod launch;
mod sources;

pub use sources::OpenAiEnv;

use crate::cache::CacheConfig;
use crate::client::{Backend, Client, ClientBuilder, RetryPolicy};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Pricing};
use crate::routing::RoutingConfig;
use crate::shared::{SharedConfig, SharedStore};
use crate::validate::{NonEmpty, RegexMatches, Validator};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub slm: Option<TierSection>,
    #[serde(default)]
    pub llm: Option<TierSection>,
    #[serde(default)]
    pub retry: RetrySection,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub ledger: LedgerSection,
    #[serde(default)]
    pub cache: CacheConfig,
    /// The fleet's shared store (Redis): L2 cache, single flight, fleet ledger. None: nothing
    /// is shared and no Redis is needed.
    #[serde(default)]
    pub shared: Option<SharedConfig>,
    #[serde(default)]
    pub validators: Vec<ValidatorSection>,
    /// Keep the JSON, schema and tool-argument validators (default true).
    #[serde(default = "yes")]
    pub default_validators: bool,
    /// Prices the all-LLM counterfactual; defaults to the LLM tier's per-token price.
    #[serde(default)]
    pub counterfactual_pricing: Option<Pricing>,
    /// Sections owned by other parts (e.g. `[server]`), read by them.
    #[serde(default)]
    pub server: Option<toml::Table>,
}

fn yes() -> bool {
    true
}

/// One tier.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum TierSection {
    Local {
        /// The GGUF file: a path (relative to the config file), or a model reference
        /// (`hf:ORG/REPO/FILE.gguf[@rev]`, an `https://` URL, a catalog name) that
        /// [`crate::models::resolve`] fetches into the cache.
        model: PathBuf,
        #[serde(default)]
        slots: Option<usize>,
        /// Tokens per request (prompt and output).
        #[serde(default)]
        context: Option<u32>,
        /// Tokens of finished requests' KV state kept in host memory for prefix reuse; see
        /// [`EngineOptions::prefix_cache_tokens`](crate::local::EngineOptions::prefix_cache_tokens).
        #[serde(default)]
        prefix_cache: Option<u32>,
        #[serde(default)]
        threads: Option<u32>,
        #[serde(default)]
        queue: Option<usize>,
        #[serde(default)]
        gpu_layers: Option<u32>,
        #[serde(default)]
        pricing: Option<Pricing>,
        /// A request schema's size as JSON, in bytes (default 256 KiB); see
        /// [`SchemaLimits`](crate::schema::SchemaLimits).
        #[serde(default)]
        max_schema_bytes: Option<usize>,
        /// `enum` values over a request's schemas (default 4096).
        #[serde(default)]
        max_schema_enum_values: Option<usize>,
        /// The largest `minItems`/`maxItems`/`minLength`/`maxLength`/`min-`/`maxProperties`
        /// (default 10,000).
        #[serde(default)]
        max_schema_repeat: Option<u64>,
        /// Seconds turning a request's schemas into a grammar may take (default 10).
        #[serde(default)]
        grammar_timeout_s: Option<f64>,
        /// `escalate` (default), `wait` or `reject`: see [`OnOverload`](crate::client::OnOverload).
        #[serde(default)]
        on_overload: Option<crate::client::OnOverload>,
        /// Penalties for requests that set none of their own (see
        /// [`Penalties`](crate::local::Penalties)): OpenAI's, from -2 to 2 (default 0).
        #[serde(default)]
        frequency_penalty: Option<f32>,
        #[serde(default)]
        presence_penalty: Option<f32>,
        /// llama.cpp's, above 0 (default 1: off).
        #[serde(default)]
        repeat_penalty: Option<f32>,
    },
    Remote {
        base_url: String,
        #[serde(default)]
        model: String,
        /// The key itself. Prefer `api_key_env`.
        #[serde(default)]
        api_key: Option<String>,
        /// The environment variable holding the key (default `OPENAI_API_KEY`).
        #[serde(default)]
        api_key_env: Option<String>,
        #[serde(default)]
        connect_timeout_s: Option<f64>,
        #[serde(default)]
        request_timeout_s: Option<f64>,
        #[serde(default)]
        stream_idle_timeout_s: Option<f64>,
        #[serde(default)]
        pricing: Option<Pricing>,
    },
    /// Several OpenAI-compatible servers of one model (see [`crate::pool`]).
    Pool {
        /// Each a base URL (`"http://10.0.0.5:8080/v1"`) or a table with its own key.
        endpoints: Vec<PoolEndpointSection>,
        /// The model to ask every endpoint for. Empty means "whatever the request names".
        #[serde(default)]
        model: String,
        /// Per endpoint, as for a remote tier.
        #[serde(default)]
        connect_timeout_s: Option<f64>,
        #[serde(default)]
        request_timeout_s: Option<f64>,
        #[serde(default)]
        stream_idle_timeout_s: Option<f64>,
        /// Consecutive failed requests that take an endpoint out (default 3).
        #[serde(default)]
        eject_after_failures: Option<u32>,
        /// The least time an endpoint stays out (default 10).
        #[serde(default)]
        cooldown_s: Option<f64>,
        /// Seconds between health probes (default 5).
        #[serde(default)]
        probe_interval_s: Option<f64>,
        /// A probe slower than this fails (default 2).
        #[serde(default)]
        probe_timeout_s: Option<f64>,
        /// Requests in flight beyond the least busy endpoint's that make a call give up its
        /// prefix-affine endpoint (default 2).
        #[serde(default)]
        affinity_slack: Option<usize>,
        #[serde(default)]
        pricing: Option<Pricing>,
    },
}

/// One endpoint of a pool.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PoolEndpointSection {
    /// Its base URL; no API key is sent.
    Url(String),
    /// Its base URL and key.
    Table(PoolEndpointTable),
}

/// A pool endpoint with its own key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolEndpointTable {
    pub base_url: String,
    /// The key itself. Prefer `api_key_env`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// The environment variable holding the key. A pool never falls back to
    /// `OPENAI_API_KEY`: its servers are usually your own, and need not see that key.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    pub slm_attempts: Option<u32>,
    pub llm_attempts: Option<u32>,
    pub max_attempts: Option<u32>,
    pub initial_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub max_retry_after_s: Option<f64>,
    pub retry_temperature: Option<f64>,
    /// Nucleus sampling for SLM retries (0 to 1; 1 turns it off). Default 0.9.
    pub retry_top_p: Option<f64>,
    /// `min_p` for local SLM retries (0 to 1; 0 turns it off). Default 0.05.
    pub retry_min_p: Option<f64>,
    /// Seconds after an answer in which an identical deterministic request from the same
    /// caller is a re-ask, rejecting that answer (default 120; 0 turns detection off).
    pub reask_window_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// Append every attempt to this JSONL file (relative to the config file).
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ValidatorSection {
    NonEmpty,
    Regex {
        pattern: String,
        /// Check only requests whose instructions match this.
        #[serde(default)]
        when: Option<String>,
    },
}

/// The constructor options of the `openai` packages' clients that slmkit honours.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenAiClientOptions {
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub timeout_s: Option<f64>,
    pub max_retries: Option<u32>,
}

/// The default key variable for remote tiers.
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";

/// Where a remote tier goes when nothing says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

impl Config {
    /// Parses TOML text. Relative paths stay relative to the working directory.
    ///
    /// # Errors
    /// [`Error::Config`] with the parser's message (line and key) for invalid TOML or keys.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|err| Error::Config(err.to_string()))
    }

    /// Parses the same structure from JSON (the bindings pass constructor options this way).
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad key or value.
    pub fn from_json_str(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|err| Error::Config(err.to_string()))
    }

    /// As [`Config::from_json_str`], from parsed JSON.
    fn deserialize_json(value: serde_json::Value) -> Result<Self> {
        serde_json::from_value(value).map_err(|err| Error::Config(err.to_string()))
    }

    /// Parses JSON options (a binding's constructor arguments) and, when they set no LLM
    /// tier, takes one from the environment as [`Config::load`] does.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad key or value.
    pub fn load_json(text: &str) -> Result<Self> {
        let mut config = Self::from_json_str(text)?;
        if config.llm.is_none() {
            config.llm = Self::llm_from_env();
        }
        Ok(config)
    }

    /// Applies the OpenAI client's own constructor options, as `OpenAI(base_url=...,
    /// api_key=..., timeout=..., max_retries=...)` would: `base_url` and `api_key` point (or
    /// create) the remote LLM tier; a `base_url` also replaces a local LLM tier, while a key
    /// alone leaves one alone (it has nothing to authenticate); `timeout` is the LLM's request
    /// timeout; `max_retries` its retries, inside the one attempt budget.
    pub fn apply_openai_options(&mut self, options: &OpenAiClientOptions) {
        let local_llm = matches!(self.llm, Some(TierSection::Local { .. }));
        match &mut self.llm {
            Some(TierSection::Remote { base_url, api_key, api_key_env, .. }) => {
                if let Some(url) = &options.base_url {
                    base_url.clone_from(url);
                }
                if let Some(key) = &options.api_key {
                    *api_key = Some(key.clone());
                    *api_key_env = None;
                }
            }
            _ if options.base_url.is_some() || (options.api_key.is_some() && !local_llm) => {
                let env = OpenAiEnv::read();
                self.llm = Some(TierSection::Remote {
                    base_url: options.base_url.clone().or(env.base_url).unwrap_or_else(|| DEFAULT_BASE_URL.into()),
                    // Empty: each request's own `model` is sent, as the OpenAI client does.
                    model: env.model.unwrap_or_default(),
                    api_key: options.api_key.clone(),
                    api_key_env: None,
                    connect_timeout_s: None,
                    request_timeout_s: None,
                    stream_idle_timeout_s: None,
                    pricing: None,
                });
            }
            _ => {}
        }
        if let (Some(seconds), Some(TierSection::Remote { request_timeout_s, .. })) = (options.timeout_s, &mut self.llm)
        {
            *request_timeout_s = Some(seconds);
        }
        if let Some(retries) = options.max_retries {
            self.retry.llm_attempts = Some(retries.saturating_add(1));
        }
    }

    /// The configuration a client gets without explicit options: the file named by `path`,
    /// else by the `SLMKIT_CONFIG` variable, else nothing; then, when no LLM tier is set, one
    /// from `OPENAI_BASE_URL` / `OPENAI_API_KEY` (see [`Config::llm_from_env`]).
    ///
    /// # Errors
    /// As [`Config::from_file`].
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let from_env = std::env::var_os("SLMKIT_CONFIG").map(PathBuf::from);
        let mut config = match path.map(Path::to_owned).or(from_env) {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        if config.llm.is_none() {
            config.llm = Self::llm_from_env();
        }
        Ok(config)
    }

    /// Reads a file; relative paths in it are taken relative to its folder.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Config`] when it is invalid.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Io { context: format!("cannot read config {}", path.display()), source })?;
        let mut config = Self::from_toml_str(&text).map_err(|err| {
            Error::Config(format!(
                "{}: {}",
                path.display(),
                err.to_string().trim_start_matches("invalid configuration: ")
            ))
        })?;
        if let Some(dir) = path.parent() {
            config.resolve_paths(dir);
        }
        Ok(config)
    }

    /// An LLM tier from `OPENAI_BASE_URL` / `OPENAI_API_KEY` / `OPENAI_MODEL`, when
    /// `OPENAI_BASE_URL` or `OPENAI_API_KEY` is set. Without `OPENAI_MODEL`, each request's own
    /// `model` is sent, as the OpenAI client would.
    pub fn llm_from_env() -> Option<TierSection> {
        let env = OpenAiEnv::read();
        if env.base_url.is_none() && env.api_key.is_none() {
            return None;
        }
        Some(TierSection::Remote {
            base_url: env.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.into()),
            model: env.model.unwrap_or_default(),
            api_key: None,
            api_key_env: None,
            connect_timeout_s: None,
            request_timeout_s: None,
            stream_idle_timeout_s: None,
            pricing: None,
        })
    }

    fn resolve_paths(&mut self, dir: &Path) {
        for tier in [&mut self.slm, &mut self.llm].into_iter().flatten() {
            if let TierSection::Local { model, .. } = tier {
                if model.is_relative() && !crate::models::is_named_reference(model, dir) {
                    *model = dir.join(&*model);
                }
            }
        }
        if let Some(path) = &mut self.ledger.path {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }

    /// A builder with everything in this config; add validators (e.g. callbacks) before
    /// building.
    ///
    /// # Errors
    /// [`Error::ModelLoad`] for a local model that does not load; [`Error::Config`] for
    /// invalid settings.
    pub fn builder(&self) -> Result<ClientBuilder> {
        let mut builder = Client::builder();
        if !self.default_validators {
            builder = builder.without_default_validators();
        }
        // The one place backends start: GGUF files are loaded and engine threads started here.
        if let Some(section) = &self.slm {
            let (backend, pricing) = launch::tier(section)?;
            builder = builder.slm(backend, pricing);
        }
        if let Some(section) = &self.llm {
            let (backend, pricing) = launch::tier(section)?;
            builder = builder.llm(backend, pricing);
        }
        let mut policy = self.retry.policy()?;
        if let Some(TierSection::Local { on_overload: Some(on_overload), .. }) = &self.slm {
            policy.on_overload = *on_overload;
        }
        builder = builder.retry(policy);
        builder = builder.routing(self.routing.clone()).cache(self.cache.clone());
        if let Some(path) = &self.ledger.path {
            builder = builder.ledger(Ledger::with_file(path)?);
        }
        if let Some(shared) = &self.shared {
            builder = builder.shared(SharedStore::connect(shared)?);
        }
        for validator in &self.validators {
            let validator: Arc<dyn Validator> = match validator {
                ValidatorSection::NonEmpty => Arc::new(NonEmpty),
                ValidatorSection::Regex { pattern, when } => {
                    let validator = RegexMatches::new(pattern)?;
                    Arc::new(match when {
                        Some(when) => validator.when(when)?,
                        None => validator,
                    })
                }
            };
            builder = builder.validator(validator);
        }
        if let Some(pricing) = &self.counterfactual_pricing {
            builder = builder.counterfactual_pricing(pricing.clone());
        }
        Ok(builder)
    }

    /// Builds the client.
    ///
    /// # Errors
    /// As [`Config::builder`] and [`ClientBuilder::build`].
    pub fn build(&self) -> Result<Client> {
        self.builder()?.build()
    }
}

pub(crate) fn seconds(name: &str, value: Option<f64>, default: Duration) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(Duration::from_secs_f64(seconds)),
        Some(seconds) => Err(Error::Config(format!("{name} must be a positive number of seconds, got {seconds}"))),
    }
}

impl TierSection {
    /// Loads or connects the backend, with its pricing (see [`launch::tier`]).
    ///
    /// # Errors
    /// As [`launch::tier`].
    pub fn backend(&self) -> Result<(Backend, Pricing)> {
        launch::tier(self)
    }
}

impl RetrySection {
    fn policy(&self) -> Result<RetryPolicy> {
        let defaults = RetryPolicy::default();
        Ok(RetryPolicy {
            slm_attempts: self.slm_attempts.unwrap_or(defaults.slm_attempts),
            llm_attempts: self.llm_attempts.unwrap_or(defaults.llm_attempts),
            max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
            initial_backoff: self.initial_backoff_ms.map_or(defaults.initial_backoff, Duration::from_millis),
            max_backoff: self.max_backoff_ms.map_or(defaults.max_backoff, Duration::from_millis),
            max_retry_after: seconds("max_retry_after_s", self.max_retry_after_s, defaults.max_retry_after)?,
            retry_temperature: self.retry_temperature.unwrap_or(defaults.retry_temperature),
            retry_top_p: self.retry_top_p.or(defaults.retry_top_p),
            retry_min_p: self.retry_min_p.or(defaults.retry_min_p),
            reask_window: match self.reask_window_s {
                Some(0.0) => Duration::ZERO,
                other => seconds("reask_window_s", other, defaults.reask_window)?,
            },
            on_overload: defaults.on_overload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_and_bad_values_are_clear_errors() {
        let err = Config::from_toml_str("[retry]\nslm_atempts = 2\n").unwrap_err();
        assert!(err.to_string().contains("slm_atempts"), "{err}");
        let err = Config::from_toml_str("[slm]\nbackend = \"quantum\"\n").unwrap_err();
        assert!(err.to_string().contains("quantum"), "{err}");
        let config = Config::from_toml_str(
            "[llm]\nbackend = \"remote\"\nbase_url = \"http://127.0.0.1:9/v1\"\nrequest_timeout_s = -1\n",
        )
        .unwrap();
        assert!(matches!(config.build(), Err(Error::Config(message)) if message.contains("request_timeout_s")));
        let config = Config::from_toml_str(
            "[llm]\nbackend = \"remote\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"SLMKIT_SURELY_UNSET_VAR\"\n",
        )
        .unwrap();
        assert!(matches!(config.build(), Err(Error::Config(message)) if message.contains("SLMKIT_SURELY_UNSET_VAR")));
        assert!(matches!(Config::default().build(), Err(Error::Config(_))));
    }

    #[test]
    fn openai_constructor_options_point_the_llm_tier() {
        let options = |base_url: Option<&str>, api_key: Option<&str>| OpenAiClientOptions {
            base_url: base_url.map(str::to_owned),
            api_key: api_key.map(str::to_owned),
            timeout_s: Some(5.0),
            max_retries: Some(0),
        };
        let remote = |config: &Config| match &config.llm {
            Some(TierSection::Remote { base_url, api_key, request_timeout_s, .. }) => {
                Some((base_url.clone(), api_key.clone(), *request_timeout_s))
            }
            _ => None,
        };
        let mut config = Config::default();
        config.apply_openai_options(&options(Some("http://127.0.0.1:9/v1"), Some("k")));
        assert_eq!(remote(&config), Some(("http://127.0.0.1:9/v1".into(), Some("k".into()), Some(5.0))));
        assert_eq!(config.retry.llm_attempts, Some(1));
        config.apply_openai_options(&options(None, Some("k2")));
        assert_eq!(remote(&config), Some(("http://127.0.0.1:9/v1".into(), Some("k2".into()), Some(5.0))));
        let mut local = Config::from_toml_str("[llm]\nbackend = \"local\"\nmodel = \"m.gguf\"\n").unwrap();
        local.apply_openai_options(&options(None, Some("k")));
        assert!(matches!(local.llm, Some(TierSection::Local { .. })), "a key alone keeps a local LLM tier");
        local.apply_openai_options(&options(Some("http://h/v1"), None));
        assert!(remote(&local).is_some(), "a base_url replaces it");
        let json = Config::load_json(r#"{"cache": {"ttl_s": 5}}"#).unwrap();
        assert_eq!(json.cache.ttl_s, 5.0);
        assert!(matches!(Config::load_json(r#"{"cahce": {}}"#), Err(Error::Config(_))));
    }

    #[test]
    fn a_missing_local_model_is_a_model_load_error() {
        let config =
            Config::from_toml_str("[slm]\nbackend = \"local\"\nmodel = \"/nonexistent/model.gguf\"\n").unwrap();
        assert!(matches!(config.build(), Err(Error::ModelLoad { .. })));
    }

    #[test]
    fn out_of_range_penalties_are_config_errors_before_the_model_loads() {
        for (line, says) in [
            ("frequency_penalty = 2.5", "frequency_penalty must be a number from -2 to 2"),
            ("presence_penalty = -4", "presence_penalty must be a number from -2 to 2"),
            ("repeat_penalty = 0", "repeat_penalty must be above 0"),
        ] {
            let text = format!("[slm]\nbackend = \"local\"\nmodel = \"/nonexistent/model.gguf\"\n{line}\n");
            match Config::from_toml_str(&text).unwrap().build() {
                Err(Error::Config(message)) => assert!(message.contains(says), "{line}: {message}"),
                other => panic!("{line}: expected a config error, got {other:?}"),
            }
        }
    }
}
