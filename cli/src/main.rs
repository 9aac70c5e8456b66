//! `slmkit`: the demo, an OpenAI-compatible server, router scoring and ledger reports.

use slmkit_cli::{demo, server};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use slmkit::ledger::{read_jsonl, Report};
use slmkit::route_eval::{evaluate, read_labelled};
use slmkit::routing::SlmProfile;
use slmkit::{Config, Router};

#[derive(Parser)]
#[command(
    name = "slmkit",
    version,
    about = "Route routine agent LLM calls to a small model, verify them, account for every attempt."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a MetaGPT-shaped agent trace through the client and print the ledger report.
    Demo {
        /// A config file with the tiers (default: the fixture model, and an LLM from the
        /// environment or a local stand-in).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A JSONL trace of chat-completions requests (default: the bundled one).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Also append the ledger to this JSONL file.
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
    /// Serve the client over an OpenAI-compatible HTTP API (`/v1/chat/completions`, SSE).
    Serve {
        /// The config file: tiers, router, cache, and the `[server]` section.
        #[arg(long)]
        config: PathBuf,
        /// Overrides `[server]` host.
        #[arg(long)]
        host: Option<String>,
        /// Overrides `[server]` port (0 picks a free one).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Score the router on labelled calls (JSONL in the format of shared/routing/devset.jsonl).
    RouteScore {
        /// The labelled JSONL file.
        file: PathBuf,
        /// A config file whose `[routing]` section to use (default: the built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The SLM's context window the labels assume.
        #[arg(long, default_value_t = 8192)]
        slm_context: u32,
        /// Also print every call's decision with its score and strongest signals.
        #[arg(long)]
        explain: bool,
    },
    /// Download models into the cache (catalog names, hf:ORG/REPO/FILE.gguf[@rev], https:// URLs)
    /// and print their paths.
    Pull {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// List the model catalog and what is cached.
    Models,
    /// Render a ledger JSONL file as the report table (or JSON).
    Report {
        ledger: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("slmkit: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("slmkit: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Serve { config, host, port } => {
            server::run(&config, host, port).await?;
        }
        Command::Demo { config, trace, ledger } => {
            demo::run(config.as_deref(), trace.as_deref(), ledger.as_deref()).await?;
        }
        Command::RouteScore { file, config, slm_context, explain } => {
            let config = match config {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            let mut routing = config.routing.clone();
            routing.slm_context = routing.slm_context.or(Some(slm_context));
            // The labels assume a text-only SLM reached by estimate (no local tokenizer).
            let slm = SlmProfile {
                context_window: slm_context,
                tokenizer: None,
                supports_tools: true,
                supports_images: false,
            };
            let router = Router::new(&routing, Some(slm), true)?;
            let calls = read_labelled(&file)?;
            if explain {
                for call in &calls {
                    let decision = router.decide(&call.request)?;
                    let mark = if decision.tier == call.label { " " } else { "x" };
                    println!(
                        "{mark} {:<10} label {:<3} routed {:<3} {}",
                        call.id,
                        call.label,
                        decision.tier,
                        decision.reasons.join(" | ")
                    );
                }
                println!();
            }
            println!("{}", evaluate(&router, &calls)?);
        }
        Command::Pull { references } => {
            let paths = tokio::task::spawn_blocking(move || slmkit_cli::models::pull(&references)).await??;
            for path in paths {
                println!("{}", path.display());
            }
        }
        Command::Models => print!("{}", slmkit_cli::models::list()),
        Command::Report { ledger, json } => {
            let (records, warnings) = read_jsonl(&ledger)?;
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            let report = Report::from_records(&records);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_table());
            }
        }
    }
    Ok(())
}
