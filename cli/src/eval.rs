//! `slmkit eval`: runs a task file through a configured client and prints the result table
//! (the logic is the core's `slmkit::eval`; this only picks the tiers and prints).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use slmkit::config::TierSection;
use slmkit::eval::{preflight, read_tasks, run_tasks, EvalOptions, EvalResult};
use slmkit::{Config, OpenAiClientOptions};

use crate::demo::{DEMO_SLM, DEMO_STAND_IN_LLM};

/// What `slmkit eval` was asked.
pub struct EvalArgs {
    pub tasks: PathBuf,
    pub config: Option<PathBuf>,
    pub slm: Option<String>,
    pub llm: Option<String>,
    pub no_slm: bool,
    pub no_llm: bool,
    pub bare: bool,
    pub out: Option<PathBuf>,
    pub ledger: Option<PathBuf>,
}

/// The tiers: `--config`'s (or, without one, Qwen2.5-Coder-0.5B as the SLM and an LLM from
/// the environment or Qwen2.5-Coder-1.5B standing in, as `slmkit demo` has), with `--slm` /
/// `--llm` (model references or `http(s)://…/v1` endpoints) replacing a tier, and
/// `--no-slm` / `--no-llm` dropping one. A bare run needs no LLM, so it loads none.
fn eval_config(args: &EvalArgs) -> Result<(Config, Option<String>), Box<dyn std::error::Error>> {
    let mut note = None;
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::from_toml_str(&format!(
            "[slm]\nbackend = \"local\"\nmodel = \"{DEMO_SLM}\"\ncontext = 4096\nslots = 1\n"
        ))?,
    };
    let shorthand = |tier: &str, target: &str| -> Result<Option<TierSection>, slmkit::Error> {
        let sections = json!({ tier: target }).to_string();
        let parsed = Config::from_sources(None, Some(&sections), &OpenAiClientOptions::default())?;
        let mut section = if tier == "slm" { parsed.slm } else { parsed.llm };
        // Tasks run one at a time: one slot is all a local model needs.
        if let Some(TierSection::Local { slots: slots @ None, .. }) = &mut section {
            *slots = Some(1);
        }
        Ok(section)
    };
    if let Some(slm) = &args.slm {
        config.slm = shorthand("slm", slm)?;
    }
    if let Some(llm) = &args.llm {
        config.llm = shorthand("llm", llm)?;
    }
    if args.no_slm {
        config.slm = None;
    }
    if args.bare || args.no_llm {
        config.llm = None;
    } else if config.llm.is_none() && args.config.is_none() {
        config.llm = match Config::llm_from_env() {
            Some(remote) => Some(remote),
            None => {
                // A stand-in for a hosted LLM is priced like one (gpt-4o's list price).
                let stand_in = Config::from_toml_str(&format!(
                    "[llm]\nbackend = \"local\"\nmodel = \"{DEMO_STAND_IN_LLM}\"\ncontext = 4096\nslots = 1\n\
                     [llm.pricing]\nkind = \"per_token\"\ninput_usd_per_million = 2.5\noutput_usd_per_million = 10.0\n"
                ))?;
                note = Some(format!(
                    "LLM tier: STAND-IN {DEMO_STAND_IN_LLM}, a local model priced at gpt-4o's list price"
                ));
                stand_in.llm
            }
        };
    }
    if let Some(path) = &args.ledger {
        config.ledger.path = Some(path.clone());
    }
    Ok((config, note))
}

pub async fn run(args: EvalArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Every line is checked before any model loads.
    let tasks = read_tasks(&args.tasks)?;
    let (config, note) = eval_config(&args)?;
    eprintln!("slmkit eval: {} tasks from {}; loading the models", tasks.len(), args.tasks.display());
    let client = tokio::task::spawn_blocking(move || config.build()).await??;
    preflight(&client, Duration::from_secs(5)).await?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let options = EvalOptions { bare: args.bare };
    let total = tasks.len();
    let mut done = 0usize;
    let mut result = run_tasks(&client, &tasks, &options, |task| {
        done += 1;
        let mark = if task.correct { "ok " } else { "BAD" };
        eprintln!("[{done:>3}/{total}] {mark} {:<28} {:>7.0} ms  attempts {}", task.id, task.latency_ms, task.attempts);
    })
    .await;
    result.tasks_file = Some(args.tasks.display().to_string());
    client.ledger().flush();
    if let Some(path) = &args.out {
        write_json(path, &result)?;
        eprintln!("slmkit eval: wrote {}", path.display());
    }
    print!("{}", result.to_table());
    Ok(())
}

fn write_json(path: &Path, result: &EvalResult) -> Result<(), Box<dyn std::error::Error>> {
    let text = serde_json::to_string_pretty(result)?;
    std::fs::write(path, text + "\n").map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    Ok(())
}

/// `slmkit eval --compare A.json B.json`.
pub fn compare(a: &Path, b: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let (a, b) = (EvalResult::read(a)?, EvalResult::read(b)?);
    print!("{}", EvalResult::compare(&a, &b));
    Ok(())
}
