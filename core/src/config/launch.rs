//! Starting a tier's backend: loading a GGUF file and starting its engine thread, or building
//! a remote endpoint's HTTP client. [`crate::Config::builder`] calls this, once per tier; nothing
//! else in the configuration does work beyond parsing.

use std::path::{Path, PathBuf};

use super::{seconds, OpenAiEnv, PoolEndpointSection, TierSection};
use crate::client::Backend;
use crate::error::{Error, Result};
use crate::ledger::Pricing;
use crate::local::{EngineOptions, LocalEngine, LocalModel, ModelOptions, Penalties};
use crate::pool::{PoolBackend, PoolConfig, PoolPolicy};
use crate::remote::{ApiKey, RemoteBackend, RemoteConfig};
use crate::schema::SchemaLimits;

/// Loads or connects the backend `section` describes, with its pricing.
///
/// # Errors
/// [`Error::ModelLoad`], or [`Error::Config`] for a missing API key variable or bad value.
pub fn tier(section: &TierSection) -> Result<(Backend, Pricing)> {
    match section {
        TierSection::Local {
            model,
            slots,
            context,
            prefix_cache,
            threads,
            queue,
            gpu_layers,
            pricing,
            max_schema_bytes,
            max_schema_enum_values,
            max_schema_repeat,
            grammar_timeout_s,
            on_overload: _,
            frequency_penalty,
            presence_penalty,
            repeat_penalty,
        } => {
            let neutral = Penalties::NONE;
            let penalties = Penalties {
                frequency: frequency_penalty.unwrap_or(neutral.frequency),
                presence: presence_penalty.unwrap_or(neutral.presence),
                repeat: repeat_penalty.unwrap_or(neutral.repeat),
            }
            .check()
            .map_err(|(_, message)| Error::Config(message))?;
            let schema_defaults = SchemaLimits::default();
            let schema_limits = SchemaLimits {
                max_bytes: max_schema_bytes.unwrap_or(schema_defaults.max_bytes),
                max_enum_values: max_schema_enum_values.unwrap_or(schema_defaults.max_enum_values),
                max_repeat: max_schema_repeat.unwrap_or(schema_defaults.max_repeat),
                grammar_timeout: seconds("grammar_timeout_s", *grammar_timeout_s, schema_defaults.grammar_timeout)?,
            };
            let options = ModelOptions { gpu_layers: gpu_layers.unwrap_or(0), ..ModelOptions::default() };
            let loaded = LocalModel::load(resolve_model(model)?, &options)?;
            let defaults = EngineOptions::default();
            let engine = LocalEngine::shared(
                loaded,
                EngineOptions {
                    slots: slots.unwrap_or(defaults.slots),
                    context_per_slot: context.or(defaults.context_per_slot),
                    threads: threads.or(defaults.threads),
                    queue_capacity: queue.unwrap_or(defaults.queue_capacity),
                    prefix_cache_tokens: prefix_cache.or(defaults.prefix_cache_tokens),
                    batch_size: defaults.batch_size,
                    schema_limits,
                    penalties,
                    ..defaults
                },
            )?;
            Ok((Backend::Local(engine), pricing.clone().unwrap_or_else(Pricing::local_default)))
        }
        TierSection::Remote {
            base_url,
            model,
            api_key,
            api_key_env,
            connect_timeout_s,
            request_timeout_s,
            stream_idle_timeout_s,
            pricing,
        } => {
            let defaults = RemoteConfig::new(base_url.clone(), model.clone());
            let key = match (api_key, api_key_env) {
                (Some(key), _) => Some(ApiKey::new(key.clone())),
                (None, Some(variable)) => Some(ApiKey::new(
                    std::env::var(variable)
                        .map_err(|_| Error::Config(format!("api_key_env names {variable}, which is not set")))?,
                )),
                (None, None) => OpenAiEnv::read().api_key.map(ApiKey::new),
            };
            let config = RemoteConfig {
                api_key: key,
                ..with_timeouts(defaults, *connect_timeout_s, *request_timeout_s, *stream_idle_timeout_s)?
            };
            Ok((Backend::Remote(RemoteBackend::new(config)?), pricing.clone().unwrap_or_else(Pricing::gpt_4o)))
        }
        TierSection::Pool {
            endpoints,
            model,
            connect_timeout_s,
            request_timeout_s,
            stream_idle_timeout_s,
            eject_after_failures,
            cooldown_s,
            probe_interval_s,
            probe_timeout_s,
            affinity_slack,
            pricing,
        } => {
            let defaults = RemoteConfig::new(String::new(), model.clone());
            let timeouts = with_timeouts(defaults, *connect_timeout_s, *request_timeout_s, *stream_idle_timeout_s)?;
            let mut configs = Vec::with_capacity(endpoints.len());
            for endpoint in endpoints {
                let (base_url, api_key) = match endpoint {
                    PoolEndpointSection::Url(url) => (url.clone(), None),
                    PoolEndpointSection::Table(table) => (table.base_url.clone(), pool_key(table)?),
                };
                configs.push(RemoteConfig { base_url, api_key, ..timeouts.clone() });
            }
            let policy_defaults = PoolPolicy::default();
            let policy = PoolPolicy {
                eject_after_failures: eject_after_failures.unwrap_or(policy_defaults.eject_after_failures),
                cooldown: match cooldown_s {
                    Some(0.0) => std::time::Duration::ZERO,
                    other => seconds("cooldown_s", *other, policy_defaults.cooldown)?,
                },
                probe_interval: seconds("probe_interval_s", *probe_interval_s, policy_defaults.probe_interval)?,
                probe_timeout: seconds("probe_timeout_s", *probe_timeout_s, policy_defaults.probe_timeout)?,
                affinity_slack: affinity_slack.unwrap_or(policy_defaults.affinity_slack),
            };
            let pool = PoolBackend::new(PoolConfig { endpoints: configs, policy })
                .map_err(|err| Error::Config(format!("backend = \"pool\": {}", config_message(err))))?;
            Ok((Backend::Pool(pool), pricing.clone().unwrap_or_else(Pricing::local_default)))
        }
    }
}

/// A pool endpoint's key: its own, or none (never `OPENAI_API_KEY`).
/// `config` with the timeouts a `remote` or `pool` section sets, each checked by name.
fn with_timeouts(
    config: RemoteConfig,
    connect_s: Option<f64>,
    request_s: Option<f64>,
    stream_idle_s: Option<f64>,
) -> Result<RemoteConfig> {
    Ok(RemoteConfig {
        connect_timeout: seconds("connect_timeout_s", connect_s, config.connect_timeout)?,
        request_timeout: seconds("request_timeout_s", request_s, config.request_timeout)?,
        stream_idle_timeout: seconds("stream_idle_timeout_s", stream_idle_s, config.stream_idle_timeout)?,
        ..config
    })
}

fn pool_key(table: &super::PoolEndpointTable) -> Result<Option<ApiKey>> {
    Ok(match (&table.api_key, &table.api_key_env) {
        (Some(key), _) => Some(ApiKey::new(key.clone())),
        (None, Some(variable)) => Some(ApiKey::new(std::env::var(variable).map_err(|_| {
            Error::Config(format!("pool endpoint {}: api_key_env names {variable}, which is not set", table.base_url))
        })?)),
        (None, None) => None,
    })
}

/// The message of a configuration error without its `invalid configuration:` prefix.
fn config_message(err: Error) -> String {
    match err {
        Error::Config(message) => message,
        other => other.to_string(),
    }
}

/// A local tier's `model`: a path, or a reference [`crate::models::resolve`] fetches (from the
/// cache when it is there; offline with `HF_HUB_OFFLINE=1` / `SLMKIT_OFFLINE=1`).
fn resolve_model(model: &Path) -> Result<PathBuf> {
    let Some(reference) = model.to_str() else { return Ok(model.to_owned()) };
    let options = crate::models::ResolveOptions::from_env();
    if crate::models::cached(reference, &options).is_none() && !model.is_file() {
        tracing::info!(model = reference, "pulling the model (slmkit pull {reference} does this ahead of time)");
    }
    let path = crate::models::resolve(reference, &options)?;
    tracing::debug!(model = reference, path = %path.display(), "model resolved");
    Ok(path)
}
