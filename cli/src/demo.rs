//! `slmkit demo`: replays a bundled MetaGPT-shaped agent trace through the client and prints,
//! per call, the route, the reasons, the attempts and the cache status, then the ledger report.

use std::path::{Path, PathBuf};

use slmkit::config::{TierSection, ValidatorSection};
use slmkit::types::ChatCompletionRequest;
use slmkit::{CallMetadata, Config, Pricing};

/// 30 calls of a software-company run: PRD, design, tasks, code, tests, review, summaries,
/// and the repeated calls such a run makes.
const BUNDLED_TRACE: &str = include_str!("../../examples/traces/metagpt_software_company.jsonl");

/// The two tiny test models (under 1 MB together), built into the binary so an installed
/// `slmkit demo` runs from any directory with no files around it.
const BUNDLED_MODELS: [(&str, &[u8]); 2] = [
    ("tiny-chatml.gguf", include_bytes!("../../core/tests/fixtures/tiny-chatml.gguf")),
    ("tiny-notemplate.gguf", include_bytes!("../../core/tests/fixtures/tiny-notemplate.gguf")),
];

/// The bundled model `name`, written once to a folder of this version under the temporary
/// directory (llama.cpp loads models from files).
fn fixture(name: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("slmkit-demo-{}", env!("CARGO_PKG_VERSION")));
    let Some((_, bytes)) = BUNDLED_MODELS.iter().find(|(bundled, _)| *bundled == name) else {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no bundled model {name}")));
    };
    let path = dir.join(name);
    if std::fs::metadata(&path).is_ok_and(|found| found.len() == bytes.len() as u64) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    // Written aside and renamed, so a concurrent demo never loads half a file.
    let partial = dir.join(format!("{name}.{}.partial", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// The demo's configuration: the given file, or the tiny fixture model as the SLM and, for
/// the LLM, the endpoint in OPENAI_BASE_URL / OPENAI_API_KEY or else a second local model
/// standing in for it.
fn demo_config(config: Option<&Path>) -> Result<(Config, String), Box<dyn std::error::Error>> {
    if let Some(path) = config {
        return Ok((Config::from_file(path)?, format!("tiers from {}", path.display())));
    }
    let mut config = Config::from_toml_str(&format!(
        "[slm]\nbackend = \"local\"\nmodel = {:?}\ncontext = 2048\nslots = 2\n",
        fixture("tiny-chatml.gguf")?.display().to_string()
    ))?;
    let note = match Config::llm_from_env() {
        Some(remote) => {
            let label = match &remote {
                TierSection::Remote { base_url, model, .. } => {
                    format!("LLM tier: {model} at {base_url} (from the environment)")
                }
                TierSection::Local { .. } => String::new(),
            };
            config.llm = Some(remote);
            label
        }
        None => {
            config.llm = Some(TierSection::Local {
                model: fixture("tiny-notemplate.gguf")?,
                slots: Some(2),
                context: Some(2048),
                prefix_cache: None,
                threads: None,
                queue: None,
                gpu_layers: None,
                // It stands in for a hosted LLM, so it is priced like one.
                pricing: Some(Pricing::gpt_4o()),
            });
            "LLM tier: STAND-IN — a second tiny local model priced at gpt-4o's list price, so the demo runs offline \
             with no keys (set OPENAI_API_KEY / OPENAI_BASE_URL, or pass --config, for a real LLM)"
                .to_owned()
        }
    };
    // MetaGPT's ActionNode prompts ask for [CONTENT]...[/CONTENT]; answers without it fail.
    config
        .validators
        .push(ValidatorSection::Regex { pattern: r"^\s*\[CONTENT\]".into(), when: Some(r"\[CONTENT\]".into()) });
    Ok((config, note))
}

pub async fn run(
    config: Option<&Path>,
    trace: Option<&Path>,
    ledger: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut config, note) = demo_config(config)?;
    if let Some(path) = ledger {
        config.ledger.path = Some(path.to_owned());
    }
    let text = match trace {
        Some(path) => std::fs::read_to_string(path)?,
        None => BUNDLED_TRACE.to_owned(),
    };
    let client = config.build()?;
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
                    .map(|attempt| format!("{}:{}", attempt.tier, outcome_name(attempt.outcome)))
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
        None => "none".into(),
    }
}
