//! `slmkit demo`: replays a bundled MetaGPT-shaped agent trace through the client and prints,
//! per call, the route, the reasons, the attempts and the cache status, then the ledger report.

use std::path::Path;

use slmkit::config::{TierSection, ValidatorSection};
use slmkit::types::ChatCompletionRequest;
use slmkit::{CallMetadata, Config};

/// 30 calls of a software-company run: PRD, design, tasks, code, tests, review, summaries,
/// and the repeated calls such a run makes.
const BUNDLED_TRACE: &str = include_str!("../../examples/traces/metagpt_software_company.jsonl");

/// The SLM: a real small instruct model from the catalog, pulled on first use.
pub const DEMO_SLM: &str = "qwen2.5-coder-0.5b-instruct";
/// Without OpenAI credentials, a three-times-larger local model stands in for the LLM.
pub const DEMO_STAND_IN_LLM: &str = "qwen2.5-coder-1.5b-instruct";

/// The demo's configuration: the given file, or Qwen2.5-Coder-0.5B-Instruct as the SLM and,
/// for the LLM, the endpoint in OPENAI_BASE_URL / OPENAI_API_KEY or else Qwen2.5-Coder-1.5B-
/// Instruct standing in for it. Models are catalog names, so an installed binary runs the
/// demo from any directory.
fn demo_config(config: Option<&Path>) -> Result<(Config, String), Box<dyn std::error::Error>> {
    if let Some(path) = config {
        return Ok((Config::from_file(path)?, format!("tiers from {}", path.display())));
    }
    let mut config = Config::from_toml_str(&format!(
        "[slm]\nbackend = \"local\"\nmodel = \"{DEMO_SLM}\"\ncontext = 4096\nslots = 2\n"
    ))?;
    let note = match Config::llm_from_env() {
        Some(remote) => {
            let label = match &remote {
                TierSection::Remote { base_url, model, .. } => {
                    format!("LLM tier: {model} at {base_url} (from the environment)")
                }
                TierSection::Local { .. } | TierSection::Pool { .. } => String::new(),
            };
            config.llm = Some(remote);
            label
        }
        None => {
            // It stands in for a hosted LLM, so it is priced like one (gpt-4o's list price).
            let stand_in = Config::from_toml_str(&format!(
                "[llm]\nbackend = \"local\"\nmodel = \"{DEMO_STAND_IN_LLM}\"\ncontext = 4096\nslots = 1\n\
                 [llm.pricing]\nkind = \"per_token\"\ninput_usd_per_million = 2.5\noutput_usd_per_million = 10.0\n"
            ))?;
            config.llm = stand_in.llm;
            format!(
                "LLM tier: STAND-IN — {DEMO_STAND_IN_LLM}, a local model priced at gpt-4o's list price, so the demo \
                 runs offline with no keys (set OPENAI_API_KEY / OPENAI_BASE_URL, or pass --config, for a real LLM)"
            )
        }
    };
    // MetaGPT's ActionNode prompts ask for [CONTENT]...[/CONTENT]; answers without it fail.
    config
        .validators
        .push(ValidatorSection::Regex { pattern: r"^\s*\[CONTENT\]".into(), when: Some(r"\[CONTENT\]".into()) });
    // WriteCode asks for the file in a ```python block, which MetaGPT's CodeParser takes out.
    config.validators.push(ValidatorSection::Regex {
        pattern: r"```python\n".into(),
        when: Some(r"Write code with triple quotes".into()),
    });
    Ok((config, note))
}

pub async fn run(
    config: Option<&Path>,
    trace: Option<&Path>,
    ledger: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut config, note) = demo_config(config)?;
    // The trace's repeated calls are deliberate repeats later in the run (what the cache is
    // for), not a framework re-sending a request because it rejected the answer, and a replay
    // cannot tell the two apart: re-ask detection is off unless the config turns it on.
    // (`make eval-metagpt` runs a real MetaGPT, whose re-asks are real.)
    config.retry.reask_window_s.get_or_insert(0.0);
    if let Some(path) = ledger {
        config.ledger.path = Some(path.to_owned());
    }
    let text = match trace {
        Some(path) => std::fs::read_to_string(path)?,
        None => BUNDLED_TRACE.to_owned(),
    };
    eprintln!("slmkit demo: loading the models (pulled and verified on first use)");
    let client = tokio::task::spawn_blocking(move || config.build().map(|client| (client, config))).await??;
    let (client, config) = client;
    println!("slmkit demo: replaying {} agent calls", text.lines().filter(|line| !line.trim().is_empty()).count());
    println!("SLM tier: {}", describe(&config.slm));
    println!("{note}\n");
    for (index, line) in text.lines().filter(|line| !line.trim().is_empty()).enumerate() {
        let request = ChatCompletionRequest::from_json(line)?;
        let task = slmkit::routing::task_tag(&request).unwrap_or("-").to_owned();
        match client.create(&request).await {
            Ok(completion) => {
                let Some(meta) = CallMetadata::of(&completion.extra) else {
                    println!("#{:02} {:<16} -> answered, without slmkit metadata", index + 1, task);
                    continue;
                };
                let attempts: Vec<String> = meta
                    .attempts
                    .iter()
                    .map(|attempt| match &attempt.endpoint {
                        Some(endpoint) => format!("{}:{}@{endpoint}", attempt.tier, outcome_name(attempt.outcome)),
                        None => format!("{}:{}", attempt.tier, outcome_name(attempt.outcome)),
                    })
                    .collect();
                let reason = meta.reasons.iter().take(2).map(String::as_str).collect::<Vec<_>>().join("; ");
                println!(
                    "#{:02} {:<16} -> {:<3}  cache {:<4}  attempts [{}]\n     why: {}",
                    index + 1,
                    task,
                    meta.tier.map_or("?", |tier| tier.as_str()),
                    meta.cache.as_str(),
                    attempts.join(", "),
                    reason,
                );
            }
            Err(err) => println!("#{:02} {:<16} -> failed: {err}", index + 1, task),
        }
    }
    println!();
    print!("{}", client.ledger().report().to_table());
    Ok(())
}

/// An outcome as the ledger spells it (`ok`, `validation_failed`, ...).
fn outcome_name(outcome: slmkit::Outcome) -> String {
    serde_json::to_value(outcome).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
}

fn describe(tier: &Option<TierSection>) -> String {
    match tier {
        Some(TierSection::Local { model, .. }) => format!("local {}", model.display()),
        Some(TierSection::Remote { base_url, model, .. }) => format!("remote {model} at {base_url}"),
        Some(TierSection::Pool { endpoints, model, .. }) => format!("pool {model} over {} endpoints", endpoints.len()),
        None => "none".into(),
    }
}
