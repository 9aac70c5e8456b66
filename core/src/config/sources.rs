//! Where a client's configuration comes from: a TOML file, sections given as JSON (a
//! binding's constructor arguments), the `OPENAI_*` environment, and the `openai`
//! constructor's own options on top. The bindings call [`Config::from_sources`]; this module
//! is the only reader of the `OPENAI_*` variables.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::{Config, OpenAiClientOptions, DEFAULT_API_KEY_ENV};
use crate::error::{Error, Result};

/// The `OPENAI_*` environment variables, read in one place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenAiEnv {
    /// `OPENAI_BASE_URL`.
    pub base_url: Option<String>,
    /// `OPENAI_API_KEY`, when set and not empty.
    pub api_key: Option<String>,
    /// `OPENAI_MODEL`.
    pub model: Option<String>,
}

impl OpenAiEnv {
    /// Reads the variables now.
    pub fn read() -> Self {
        OpenAiEnv {
            base_url: std::env::var("OPENAI_BASE_URL").ok(),
            api_key: std::env::var(DEFAULT_API_KEY_ENV).ok().filter(|key| !key.is_empty()),
            model: std::env::var("OPENAI_MODEL").ok(),
        }
    }
}

impl Config {
    /// The configuration of a client made by a binding: `path` (a TOML file) and `sections`
    /// (the same structure as JSON, with shorthands) may be combined, a section given in
    /// `sections` replacing the file's; with neither, the file named by `$SLMKIT_CONFIG`, if
    /// any. Then the `openai` constructor's `options` (see [`Config::apply_openai_options`]);
    /// then, when there is still no LLM tier, one from the `OPENAI_*` environment.
    ///
    /// Shorthands: `slm = "model.gguf"` is a local model, `llm = "https://…/v1"` a remote
    /// endpoint (either tier takes either form), `ledger = "file.jsonl"` a ledger file.
    ///
    /// # Errors
    /// [`Error::Config`] / [`Error::Io`] for a bad file or section.
    pub fn from_sources(path: Option<&Path>, sections: Option<&str>, options: &OpenAiClientOptions) -> Result<Config> {
        let mut config = match (path, sections) {
            (None, None) => Config::load(None)?,
            (None, Some(sections)) => parse_sections(sections)?.1,
            (Some(path), None) => Config::from_file(path)?,
            (Some(path), Some(sections)) => {
                let mut config = Config::from_file(path)?;
                let (given, parsed) = parse_sections(sections)?;
                for key in given.keys() {
                    config.take_section(key, &parsed)?;
                }
                config
            }
        };
        config.apply_openai_options(options);
        if config.llm.is_none() {
            config.llm = Config::llm_from_env();
        }
        Ok(config)
    }

    /// Replaces section `key` with `from`'s.
    fn take_section(&mut self, key: &str, from: &Config) -> Result<()> {
        match key {
            "slm" => self.slm.clone_from(&from.slm),
            "llm" => self.llm.clone_from(&from.llm),
            "retry" => self.retry.clone_from(&from.retry),
            "routing" => self.routing.clone_from(&from.routing),
            "ledger" => self.ledger.clone_from(&from.ledger),
            "cache" => self.cache.clone_from(&from.cache),
            "validators" => self.validators.clone_from(&from.validators),
            "default_validators" => self.default_validators = from.default_validators,
            "counterfactual_pricing" => self.counterfactual_pricing.clone_from(&from.counterfactual_pricing),
            "server" => self.server.clone_from(&from.server),
            other => return Err(Error::Config(format!("unknown section {other}"))),
        }
        Ok(())
    }
}

/// The sections given, with shorthands expanded, and as a config.
fn parse_sections(sections: &str) -> Result<(Map<String, Value>, Config)> {
    let given: Map<String, Value> =
        serde_json::from_str(sections).map_err(|err| Error::Config(format!("client options: {err}")))?;
    let given = expand_shorthands(given);
    let parsed = Config::deserialize_json(Value::Object(given.clone()))?;
    Ok((given, parsed))
}

/// `slm = "model.gguf"` (or any model reference: a catalog name, `hf:…`, a URL to a `.gguf`
/// file) means a local model; `llm = "https://…/v1"` a remote endpoint;
/// `ledger = "file.jsonl"` a ledger file.
fn expand_shorthands(mut sections: Map<String, Value>) -> Map<String, Value> {
    for tier in ["slm", "llm"] {
        if let Some(Value::String(target)) = sections.get(tier) {
            // A URL to a `.gguf` file is a model to download (`crate::models`), not an endpoint.
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::TierSection;

    #[test]
    fn shorthands_sections_and_a_file_combine() {
        let dir = std::env::temp_dir().join(format!("slmkit-sources-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("slmkit.toml");
        std::fs::write(&file, "[slm]\nbackend = \"local\"\nmodel = \"a.gguf\"\n\n[retry]\nslm_attempts = 2\n").unwrap();
        let options = OpenAiClientOptions { max_retries: Some(4), ..Default::default() };
        let sections = r#"{"llm": "http://127.0.0.1:9/v1", "ledger": "l.jsonl"}"#;
        let config = Config::from_sources(Some(&file), Some(sections), &options).unwrap();
        assert!(matches!(&config.slm, Some(TierSection::Local { model, .. }) if *model == dir.join("a.gguf")));
        assert!(
            matches!(&config.llm, Some(TierSection::Remote { base_url, .. }) if base_url == "http://127.0.0.1:9/v1")
        );
        assert_eq!(config.ledger.path, Some(PathBuf::from("l.jsonl")));
        assert_eq!((config.retry.slm_attempts, config.retry.llm_attempts), (Some(2), Some(5)));
        let only_sections = Config::from_sources(None, Some(r#"{"slm": "m.gguf"}"#), &options).unwrap();
        assert!(
            matches!(&only_sections.slm, Some(TierSection::Local { model, .. }) if model.as_path() == std::path::Path::new("m.gguf"))
        );
        assert!(matches!(Config::from_sources(None, Some(r#"{"sml": "m.gguf"}"#), &options), Err(Error::Config(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
