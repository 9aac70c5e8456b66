//! `slmkit`: the demo, an OpenAI-compatible server, task evals, router scoring and ledger reports.

use slmkit_cli::{demo, eval, server};

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
    /// Run a file of checkable agent tasks (JSONL; see tests/eval/FORMAT.md) through the client
    /// and report accuracy, SLM first-try success, attempts, escalations, latency, tokens, cost,
    /// energy and the saving against all-LLM, per task kind and overall.
    Eval {
        /// The task file (not needed with --compare).
        #[arg(required_unless_present = "compare")]
        tasks: Option<PathBuf>,
        /// A config file with the tiers (default: Qwen2.5-Coder-0.5B as the SLM, and an LLM from
        /// OPENAI_BASE_URL / OPENAI_API_KEY or Qwen2.5-Coder-1.5B standing in).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The SLM: a model reference (catalog name, hf:…, path) or an http(s)://…/v1 endpoint.
        #[arg(long)]
        slm: Option<String>,
        /// The LLM: a model reference or an http(s)://…/v1 endpoint.
        #[arg(long)]
        llm: Option<String>,
        /// No SLM tier (evaluate the LLM alone).
        #[arg(long, conflicts_with = "slm")]
        no_slm: bool,
        /// No LLM tier (the SLM with its validators and retries; failures count as wrong).
        #[arg(long, conflicts_with = "llm")]
        no_llm: bool,
        /// The bare model: the SLM alone, one attempt, no validators, no grammar enforcement
        /// (a schema or forced tool call goes only into the prompt).
        #[arg(long)]
        bare: bool,
        /// Write the result as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also append the ledger to this JSONL file.
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// Show two results (written with --out) side by side instead of running.
        #[arg(long, num_args = 2, value_names = ["A_JSON", "B_JSON"], conflicts_with_all = ["tasks", "bare", "out"])]
        compare: Option<Vec<PathBuf>>,
    },
    /// Download models into the cache (catalog names, hf:ORG/REPO/FILE.gguf[@rev], https:// URLs)
    /// and print their paths.
    Pull {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// List the model catalog and what is cached.
    Models,
    /// Render a ledger JSONL file, or with --redis the whole fleet's ledger stream, as the
    /// report table (or JSON).
    Report {
        #[arg(required_unless_present = "redis", conflicts_with = "redis")]
        ledger: Option<PathBuf>,
        /// The fleet's Redis (`[shared] redis_url`), to report on every process's attempts.
        #[arg(long, value_name = "URL")]
        redis: Option<String>,
        /// The fleet's `[shared] key_prefix`.
        #[arg(long, default_value = "slmkit:")]
        key_prefix: String,
        #[arg(long)]
        json: bool,
    },
}

/// Logs the core's warnings (and, with `SLMKIT_LOG=info` or `debug`, more) to stderr.
fn start_logging() {
    let level = match std::env::var("SLMKIT_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::WARN,
    };
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).with_target(false).init();
}

fn main() -> ExitCode {
    start_logging();
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
        Command::Eval { tasks, config, slm, llm, no_slm, no_llm, bare, out, ledger, compare } => {
            match (compare.as_deref(), tasks) {
                (Some([a, b]), _) => eval::compare(a, b)?,
                (_, Some(tasks)) => {
                    let args = eval::EvalArgs { tasks, config, slm, llm, no_slm, no_llm, bare, out, ledger };
                    eval::run(args).await?;
                }
                _ => return Err("slmkit eval needs a task file, or --compare A.json B.json".into()),
            }
        }
        Command::Pull { references } => {
            let paths = tokio::task::spawn_blocking(move || slmkit_cli::models::pull(&references)).await??;
            for path in paths {
                println!("{}", path.display());
            }
        }
        Command::Models => print!("{}", slmkit_cli::models::list()),
        Command::Report { ledger, redis, key_prefix, json } => {
            let (records, warnings) = match (redis, ledger) {
                (Some(url), _) => slmkit::shared::fleet_records(&url, &key_prefix).await?,
                (None, Some(ledger)) => read_jsonl(&ledger)?,
                (None, None) => return Err("slmkit report needs a ledger file or --redis URL".into()),
            };
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
