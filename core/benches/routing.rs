//! Routing decision latency: `cargo bench -p slmkit --bench routing`.
//!
//! Prints the median and spread of one decision (the task key included: `decide` computes it
//! for every call) for a short request, for an 8k-token conversation, for an 8k-token agent
//! prompt with sections, code and JSON (what the lexicon's zones read), on the estimate path
//! (the window is far away), and on the exact path (the estimate is near the window, so the
//! SLM's own tokenizer counts the prompt). Writes the table to
//! `bench/results/routing-DATE.md` (UTC date).

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use slmkit::routing::{Router, RoutingConfig, SlmProfile};
use slmkit::types::{ChatCompletionRequest, ChatMessage};
use slmkit::{LocalModel, ModelOptions};

fn conversation(target_chars: usize) -> ChatCompletionRequest {
    let mut messages = vec![ChatMessage::system(
        "You are Alex, an engineer in a software company. Write elegant, readable, extensible code. Follow the design.",
    )];
    let turn = "Here is the next file to implement, with the interfaces from the design document and the \
                relevant parts of the existing code base, which you should keep consistent. ";
    let mut size = 0;
    let mut index = 0;
    while size < target_chars {
        let text = format!("{index}: {}", turn.repeat(8));
        size += text.len();
        messages.push(if index % 2 == 0 { ChatMessage::user(text) } else { ChatMessage::assistant(text) });
        index += 1;
    }
    messages.push(ChatMessage::user("Write `storage.py` from the spec above. Return only the code."));
    let mut request = ChatCompletionRequest::new(messages);
    request.max_tokens = Some(1024);
    request
}

/// One ~8k-token agent prompt shaped like MetaGPT's: a role system prompt, then one user turn
/// with context sections, a design document, code fences, a JSON format example and the
/// instruction at the end.
fn agent_prompt(target_chars: usize) -> ChatCompletionRequest {
    let mut user = String::from("# Context\n## Design\n");
    let mut index = 0;
    while user.len() < target_chars {
        user.push_str(&format!(
            "### Module {index}\nThe architecture keeps a design review plan per module.\n```python\n\
             class Module{index}:\n    def run(self) -> int:\n        return {index}\n```\n\
             {{\"File list\": [\"module_{index}.py\"], \"Anything UNCLEAR\": \"\"}}\n"
        ));
        index += 1;
    }
    user.push_str("## Format example\n```python\n## storage.py\n...\n```\n");
    user.push_str("# Instruction: Based on the context, write `storage.py`. Return only the code.\n");
    let mut request = ChatCompletionRequest::new(vec![
        ChatMessage::system("You are Alex, an engineer. Your goal is to write elegant, readable, extensible code."),
        ChatMessage::user(user),
    ]);
    request.max_tokens = Some(4096);
    request
}

fn measure(router: &Router, request: &ChatCompletionRequest, runs: usize) -> (f64, f64, f64, bool) {
    let mut times = Vec::with_capacity(runs);
    let mut exact = false;
    for _ in 0..runs {
        let started = Instant::now();
        let decision = black_box(router.decide(black_box(request))).expect("decision");
        times.push(started.elapsed().as_secs_f64() * 1e6);
        exact = decision.prompt_tokens_exact;
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.1), at(0.9), exact)
}

fn main() {
    let remote_slm =
        |window| SlmProfile { context_window: window, tokenizer: None, supports_tools: true, supports_images: false };
    let wide = Router::new(&RoutingConfig::default(), Some(remote_slm(32_768)), true).expect("router");
    let short = {
        let mut request = ChatCompletionRequest::new(vec![
            ChatMessage::system("Classify the ticket into exactly one intent: billing, bug, other."),
            ChatMessage::user("I was charged twice for order 1234."),
        ]);
        request.max_tokens = Some(10);
        request
    };
    let eight_k = conversation(32_000); // ~8,000 tokens at 4 characters a token
    let eight_k_agent = agent_prompt(32_000);
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-chatml.gguf");
    let model = LocalModel::load(fixture, &ModelOptions::default()).expect("fixture model");
    let local =
        SlmProfile { context_window: 2048, tokenizer: Some(model), supports_tools: true, supports_images: false };
    let near = Router::new(&RoutingConfig::default(), Some(local), true).expect("router");
    // The fixture's byte-level vocabulary makes ~1 token a character: 1,700 characters sit
    // near its 2,048-token window, so the exact count runs.
    let near_window = conversation(1_700);

    println!("routing decision latency (microseconds; median [p10, p90] of 2,000 runs)");
    let mut table = String::from(
        "| case | prompt tokens | routed | median µs | p10 µs | p90 µs | exact count |\n|---|---:|---|---:|---:|---:|---|\n",
    );
    for (name, router, request) in [
        ("short request, estimate", &wide, &short),
        ("8k-token conversation, estimate (window 32k)", &wide, &eight_k),
        ("8k-token agent prompt with sections, estimate (window 32k)", &wide, &eight_k_agent),
        ("near-window request, exact local tokenizer count", &near, &near_window),
    ] {
        let decision = router.decide(request).expect("decision");
        let (median, p10, p90, exact) = measure(router, request, 2_000);
        println!(
            "    -> {} ({} prompt tokens): {}",
            decision.tier,
            decision.prompt_tokens,
            decision.reasons.join("; ")
        );
        println!("  {name:<50} {median:>8.2}  [{p10:.2}, {p90:.2}]  exact count: {exact}");
        table.push_str(&format!(
            "| {name} | {} | {} | {median:.2} | {p10:.2} | {p90:.2} | {exact} |\n",
            decision.prompt_tokens, decision.tier
        ));
    }
    write_table(&table);
}

/// `bench/results/routing-DATE.md`, with how it was measured.
fn write_table(table: &str) {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    let (year, month, day) = civil_from_days(days);
    let date = format!("{year:04}-{month:02}-{day:02}");
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let text = format!(
        "# Routing decision latency, {date}\n\n`cargo bench -p slmkit --bench routing`: one `Router::decide` \
         (hard limits, the task key, the scored signals with the lexicon's zones), median and spread of 2,000 \
         runs each, side by side in one run, on {cores} cores (a shared machine: other builds and \
         measurements may have been running). Goal: under 20 µs median for an 8k-token conversation.\n\n{table}"
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/results/routing-");
    let path = format!("{path}{date}.md");
    match std::fs::write(&path, text) {
        Ok(()) => println!("table written to {path}"),
        Err(err) => eprintln!("cannot write {path}: {err}"),
    }
}

/// Days since 1970-01-01 to a (year, month, day) date (the proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if month <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, month, day)
}
