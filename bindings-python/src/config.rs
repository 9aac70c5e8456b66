//! Where a client's configuration comes from: a TOML file, constructor sections (as JSON), or
//! the environment; then the `openai` constructor's own arguments on top.
//!
//! Everything here is what the Node binding's `new OpenAI({...})` needs as well; it belongs in
//! the core (`Config::from_sources`) and lives here until it
//! moves there.

use std::path::PathBuf;

use serde_json::{json, Map, Value};
use slmkit::{Config, Error, Result};

/// The `openai` constructor's arguments that mean something to slmkit.
#[derive(Debug, Default)]
pub struct ClientOptions {
    pub api_key: Option<String>,
    pub base_url: Option<String>,
    /// Seconds, for each remote request.
    pub timeout: Option<f64>,
    /// Retries of the LLM tier after the first attempt.
    pub max_retries: Option<u32>,
}

/// The configuration: `path` (a TOML file) and `sections` (the same structure as JSON) may be
/// combined, a section given in `sections` replacing the file's; with neither, the file named
/// by `$SLMKIT_CONFIG`, if any. An LLM tier comes from the options, else the config, else the
/// `OPENAI_*` environment variables.
///
/// # Errors
/// [`Error::Config`] / [`Error::Io`] for a bad file or section.
pub fn resolve(path: Option<PathBuf>, sections: Option<&str>, options: &ClientOptions) -> Result<Config> {
    let mut config = match (path, sections) {
        (None, None) => Config::load(None)?,
        (None, Some(sections)) => parse_sections(sections)?.1,
        (Some(path), None) => Config::from_file(path)?,
        (Some(path), Some(sections)) => {
            let mut config = Config::from_file(&path)?;
            let (given, parsed) = parse_sections(sections)?;
            for key in given.keys() {
                match key.as_str() {
                    "slm" => config.slm = parsed.slm.clone(),
                    "llm" => config.llm = parsed.llm.clone(),
                    "retry" => config.retry = parsed.retry.clone(),
                    "routing" => config.routing = parsed.routing.clone(),
                    "ledger" => config.ledger = parsed.ledger.clone(),
                    "cache" => config.cache = parsed.cache.clone(),
                    "validators" => config.validators = parsed.validators.clone(),
                    "default_validators" => config.default_validators = parsed.default_validators,
                    "counterfactual_pricing" => config.counterfactual_pricing = parsed.counterfactual_pricing.clone(),
                    "server" => config.server = parsed.server.clone(),
                    other => {
                        return Err(Error::Config(format!(
                            "the {other} section cannot be combined with a config file yet; put it in {}",
                            path.display()
                        )))
                    }
                }
            }
            config
        }
    };
    apply_options(&mut config, options);
    if config.llm.is_none() {
        config.llm = Config::llm_from_env();
    }
    Ok(config)
}

fn parse_sections(sections: &str) -> Result<(Map<String, Value>, Config)> {
    let given: Map<String, Value> =
        serde_json::from_str(sections).map_err(|err| Error::Config(format!("client options: {err}")))?;
    let given = expand_shorthands(given);
    let parsed = Config::from_json_str(&Value::Object(given.clone()).to_string())?;
    Ok((given, parsed))
}

/// `slm = "model.gguf"` (or any model reference: a catalog name, `hf:…`, a URL to a `.gguf`
/// file) means a local model; `llm = "https://…/v1"` a remote endpoint;
/// `ledger = "file.jsonl"` a ledger file.
fn expand_shorthands(mut sections: Map<String, Value>) -> Map<String, Value> {
    for tier in ["slm", "llm"] {
        if let Some(Value::String(target)) = sections.get(tier) {
            // A URL to a `.gguf` file is a model to download (`slmkit::models`), not an endpoint.
            let gguf = target.split(['?', '#']).next().is_some_and(|path| path.ends_with(".gguf"));
            let expanded = if (target.starts_with("http://") || target.starts_with("https://")) && !gguf {
                json!({"backend": "remote", "base_url": target})
            } else {
                json!({"backend": "local", "model": target})
            };
            sections.insert(tier.to_owned(), expanded);
        }
    }
    if let Some(Value::String(path)) = sections.get("ledger") {
        let expanded = json!({ "path": path });
        sections.insert("ledger".to_owned(), expanded);
    }
    sections
}

/// `api_key` / `base_url` / `timeout` / `max_retries`, as they configure an `openai.OpenAI`
/// (the core's `Config::apply_openai_options`).
fn apply_options(config: &mut Config, options: &ClientOptions) {
    config.apply_openai_options(&slmkit::OpenAiClientOptions {
        base_url: options.base_url.clone(),
        api_key: options.api_key.clone(),
        timeout_s: options.timeout,
        max_retries: options.max_retries,
    });
}
