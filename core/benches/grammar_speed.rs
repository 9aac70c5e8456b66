//! Structured output speed: `cargo bench -p slmkit --bench grammar_speed -- MODEL.gguf [THREADS] [RUNS]`.
//!
//! On one prompt, greedy, one request at a time: generation tokens/s of free text,
//! `json_schema`, `json_object` and a forced tool call, on the fast sampling path (sample, then
//! check that token against the grammar) and on the full-grammar path (mask every candidate
//! first), side by side in one run, interleaved. Each request repeats a warmed-up prompt, so
//! the engine reuses its KV state and the time is generation alone. Then, per mode and path,
//! the time per token of each sampling stage (from `slmkit::local::take_sampling_profile`);
//! "decode + rest" is the wall time per token less the sampling stages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use serde_json::json;
use slmkit::local::{take_sampling_profile, SamplingProfile};
use slmkit::types::{ChatCompletionRequest, ChatMessage, ResponseFormat, Tool, ToolChoice};
use slmkit::{EngineOptions, LocalEngine, LocalModel, ModelOptions};

const MAX_TOKENS: u32 = 96;

fn base() -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(vec![ChatMessage::user(
        "A customer writes: 'I was charged twice for order 4411 and nobody answers my emails, this is the third \
         time.' Describe the ticket: its intent, whether it is urgent, a priority from 1 to 5, a short tag and a \
         one-sentence summary.",
    )]);
    request.temperature = Some(0.0);
    request.max_tokens = Some(MAX_TOKENS);
    request
}

fn modes() -> Vec<(&'static str, ChatCompletionRequest)> {
    let schema = json!({
        "type": "object",
        "properties": {
            "intent": {"type": "string", "enum": ["refund", "billing", "bug", "other"]},
            "urgent": {"type": "boolean"},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "tag": {"type": "string", "maxLength": 12},
            "summary": {"type": "string"}
        },
        "required": ["intent", "urgent", "priority", "tag", "summary"],
        "additionalProperties": false
    });
    let mut json_schema = base();
    json_schema.response_format = Some(ResponseFormat::json_schema("ticket", schema.clone()));
    let mut json_object = base();
    json_object.response_format = Some(ResponseFormat::JsonObject);
    let mut tool = base();
    tool.tools = Some(vec![Tool::function("file_ticket", "File a support ticket", schema)]);
    tool.tool_choice = Some(ToolChoice::named("file_ticket"));
    vec![("free text", base()), ("json_schema", json_schema), ("json_object", json_object), ("tool call", tool)]
}

/// Completion tokens and seconds of one request.
async fn run(engine: &LocalEngine, request: &ChatCompletionRequest) -> (u32, f64) {
    let started = Instant::now();
    let completion = engine.create(request).await.expect("completion");
    let seconds = started.elapsed().as_secs_f64();
    (completion.usage.expect("usage").completion_tokens, seconds)
}

fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[0], sorted[sorted.len() - 1])
}

fn per_token_us(nanos: u64, steps: u64) -> f64 {
    nanos as f64 / 1000.0 / steps.max(1) as f64
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with("--")).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: cargo bench -p slmkit --bench grammar_speed -- MODEL.gguf [THREADS] [RUNS]");
        return;
    };
    let threads: u32 = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(2);
    let runs: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(5);
    let model = LocalModel::load(path, &ModelOptions::default()).expect("model");
    let options =
        EngineOptions { slots: 1, context_per_slot: Some(2048), threads: Some(threads), ..EngineOptions::default() };
    let fast = LocalEngine::start(model.clone(), options.clone()).expect("engine");
    let full = LocalEngine::start(model.clone(), EngineOptions { full_grammar: true, ..options }).expect("engine");
    println!(
        "slmkit structured output, {} ({threads} threads), greedy, up to {MAX_TOKENS} tokens, \
         generation tokens/s: median [min, max] of {runs}",
        model.name()
    );
    println!();
    println!("| mode | tokens | fast path | full grammar | fast / full | fast / free text (fast) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut profiles = Vec::new();
    let mut free_text_rate = None;
    for (name, request) in modes() {
        // Warm-up: the prompt's KV state is kept, and the grammar converted and parsed.
        let (tokens, _) = run(&fast, &request).await;
        run(&full, &request).await;
        take_sampling_profile();
        let mut rates = [Vec::new(), Vec::new()];
        let mut profile = [SamplingProfile::default(), SamplingProfile::default()];
        let mut seconds = [0.0f64; 2];
        for _ in 0..runs {
            for (path, engine) in [&fast, &full].into_iter().enumerate() {
                let (generated, elapsed) = run(engine, &request).await;
                // Not asserted equal to the warm-up's: a prompt read afresh and one restored from
                // the prefix cache can differ in the last bits of a logit, enough to flip a near
                // tie on the 1.5B model. Tokens/s is per run.
                rates[path].push(f64::from(generated) / elapsed);
                seconds[path] += elapsed;
                let taken = take_sampling_profile();
                add(&mut profile[path], &taken);
            }
        }
        let (fast_rate, fast_min, fast_max) = stats(&rates[0]);
        let (full_rate, full_min, full_max) = stats(&rates[1]);
        let free = *free_text_rate.get_or_insert(fast_rate);
        println!(
            "| {name} | {tokens} | {fast_rate:.1} [{fast_min:.1}, {fast_max:.1}] | {full_rate:.1} [{full_min:.1}, \
             {full_max:.1}] | {:.2}x | {:.2}x |",
            fast_rate / full_rate,
            fast_rate / free
        );
        profiles.push((name, profile, seconds));
    }
    println!();
    println!("Per token, microseconds (mean over the timed runs); rejections: steps whose first pick was not allowed; full masks: steps that masked every candidate.");
    println!();
    println!(
        "| mode | path | logits copy | chain | check | grammar mask | utf8 mask | accept | decode + rest | \
         rejections | full masks | setup/request |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, profile, seconds) in profiles {
        for (path, label) in ["fast", "full"].into_iter().enumerate() {
            let p = &profile[path];
            let steps = p.steps;
            let sampling = p.fetch_ns + p.chain_ns + p.check_ns + p.grammar_ns + p.utf8_ns + p.accept_ns;
            let wall_us = seconds[path] * 1e6 / steps.max(1) as f64;
            println!(
                "| {name} | {label} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} | {:.0} | {}/{} | {} | {:.0} |",
                per_token_us(p.fetch_ns, steps),
                per_token_us(p.chain_ns, steps),
                per_token_us(p.check_ns, steps),
                per_token_us(p.grammar_ns, steps),
                per_token_us(p.utf8_ns, steps),
                per_token_us(p.accept_ns, steps),
                wall_us - per_token_us(sampling, steps),
                p.rejections,
                steps,
                p.full_masks,
                per_token_us(p.setup_ns, p.requests),
            );
        }
    }
}

fn add(total: &mut SamplingProfile, more: &SamplingProfile) {
    total.steps += more.steps;
    total.rejections += more.rejections;
    total.full_masks += more.full_masks;
    total.fetch_ns += more.fetch_ns;
    total.chain_ns += more.chain_ns;
    total.check_ns += more.check_ns;
    total.grammar_ns += more.grammar_ns;
    total.utf8_ns += more.utf8_ns;
    total.accept_ns += more.accept_ns;
    total.setup_ns += more.setup_ns;
    total.requests += more.requests;
}
