//! Local inference through slmkit: `cargo bench -p slmkit --bench engine -- MODEL.gguf [THREADS]`.
//!
//! Prints medians (and min-max) of 3 runs for: prompt processing and generation tokens/s, time
//! to first token for a call that shares a ~2,000-token system prompt with the previous one
//! (cold vs warm), aggregate generation tokens/s with 1, 2, 4 and 8 concurrent requests (while
//! all of them are generating, and end to end including their prompts), and the time for four
//! concurrent calls sharing the ~2,000-token system prompt to all reach their first token, and
//! generation speed and prefix reuse again after eight calls with different ~2,000-token
//! system prompts (an agent's roles), whose KV state the engine keeps for reuse.
//! `bench/llama_cpp_python.py` measures the same on llama-cpp-python; `make bench` runs both.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use slmkit::types::{ChatCompletionRequest, ChatMessage};
use slmkit::{EngineOptions, LocalEngine, LocalModel, ModelOptions};

const RUNS: usize = 3;

fn words(seed: usize, count: usize) -> String {
    const WORDS: [&str; 16] = [
        "agent", "routes", "the", "ticket", "to", "billing", "when", "a", "refund", "is", "asked", "for", "by", "an",
        "angry", "customer",
    ];
    (0..count).map(|index| WORDS[(index * 7 + seed * 13 + index / 5) % WORDS.len()]).collect::<Vec<_>>().join(" ")
}

fn request(system: &str, user: &str, max_tokens: u32) -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(vec![ChatMessage::system(system), ChatMessage::user(user)]);
    request.max_tokens = Some(max_tokens);
    request.temperature = Some(0.0);
    request
}

/// Time to the first content chunk, total time, and completion tokens.
async fn timed(engine: &LocalEngine, request: &ChatCompletionRequest) -> (Duration, Duration, u32) {
    let (first, total, tokens, _) = traced(engine, request, Instant::now()).await;
    (first, total, tokens)
}

/// As `timed`, measured from `started`, plus when each content chunk arrived.
async fn traced(
    engine: &LocalEngine,
    request: &ChatCompletionRequest,
    started: Instant,
) -> (Duration, Duration, u32, Vec<Duration>) {
    let mut streamed = request.clone();
    streamed.stream = Some(true);
    streamed.stream_options = Some(slmkit::types::StreamOptions { include_usage: Some(true), ..Default::default() });
    let mut stream = engine.create_stream(&streamed).await.expect("stream");
    let mut first = None;
    let mut tokens = 0;
    let mut arrivals = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        if chunk.choices.iter().any(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty())) {
            arrivals.push(started.elapsed());
            first.get_or_insert(started.elapsed());
        }
        if let Some(usage) = chunk.usage {
            tokens = usage.completion_tokens;
        }
    }
    let total = started.elapsed();
    (first.unwrap_or(total), total, tokens, arrivals)
}

/// Generation tokens/s of a short-prompt request for 64 tokens, timed from its first token.
async fn generation_rate(engine: &LocalEngine, run: usize) -> f64 {
    let (ttft, total, tokens) = timed(engine, &request(&words(300 + run, 4), "go", 64)).await;
    f64::from(tokens.saturating_sub(1)) / (total - ttft).as_secs_f64()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn stats(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!("{:>9.1}  [{:.1}, {:.1}]", values[values.len() / 2], values[0], values[values.len() - 1])
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with("--")).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: cargo bench -p slmkit --bench engine -- MODEL.gguf [THREADS]");
        return;
    };
    let threads: u32 = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(2);
    let model = LocalModel::load(path, &ModelOptions::default()).expect("model");
    let engine = LocalEngine::start(
        model.clone(),
        EngineOptions { slots: 8, context_per_slot: Some(4096), threads: Some(threads), ..EngineOptions::default() },
    )
    .expect("engine");
    println!("slmkit local inference, {} ({} threads), medians [min, max] of {RUNS}", model.name(), threads);

    // Prompt processing: ~512 fresh prompt tokens, one output token.
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for run in 0..RUNS {
        let prompt = request(&words(100 + run, 90), &words(200 + run, 10), 1);
        let prompt_tokens = model.count_tokens(&model.render_prompt(&prompt.messages, &[]).expect("render")) as f64;
        let (ttft, _, _) = timed(&engine, &prompt).await;
        pp.push(prompt_tokens / ttft.as_secs_f64());
        tg.push(generation_rate(&engine, run).await);
    }
    println!("  prompt processing, tokens/s      {}", stats(pp));
    let fresh_generation = tg.clone();
    println!("  generation, tokens/s             {}", stats(tg));

    // Concurrency. "While all generate" counts the tokens that arrive between the moment the
    // last request starts generating and the moment the first one ends: the steady state in
    // which every request shares each decode step. "End to end" also includes reading prompts.
    for concurrent in [1usize, 2, 4, 8] {
        let mut steady = Vec::new();
        let mut end_to_end = Vec::new();
        for run in 0..RUNS {
            let started = Instant::now();
            let tasks: Vec<_> = (0..concurrent)
                .map(|index| {
                    let engine = engine.clone();
                    let request = request(&words(500 + run * 10 + index, 6), "continue", 64);
                    tokio::spawn(async move { traced(&engine, &request, started).await })
                })
                .collect();
            let mut traces = Vec::new();
            for task in tasks {
                traces.push(task.await.expect("task"));
            }
            let tokens: u32 = traces.iter().map(|trace| trace.2).sum();
            end_to_end.push(f64::from(tokens) / started.elapsed().as_secs_f64());
            let all_generating = traces.iter().map(|trace| trace.0).max().unwrap_or_default();
            let first_done = traces.iter().map(|trace| trace.1).min().unwrap_or_default();
            let in_window =
                traces.iter().flat_map(|trace| &trace.3).filter(|&&at| at > all_generating && at <= first_done).count();
            steady.push(in_window as f64 / (first_done - all_generating).as_secs_f64());
        }
        println!("  {concurrent} concurrent, aggregate tokens/s while all generate {}", stats(steady));
        println!("  {concurrent} concurrent, aggregate tokens/s end to end         {}", stats(end_to_end));
    }
    // Prefix reuse: a ~2,000-token system prompt, two calls in a row.
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut shared_tokens = 0;
    for run in 0..RUNS {
        let system = words(400 + run, 470);
        shared_tokens = model.count_tokens(&system);
        let (first, _, _) = timed(&engine, &request(&system, "first question", 1)).await;
        let (second, _, _) = timed(&engine, &request(&system, "a second, different question", 1)).await;
        cold.push(first.as_secs_f64() * 1000.0);
        warm.push(second.as_secs_f64() * 1000.0);
    }
    println!("  TTFT, {shared_tokens}-token shared prefix, ms");
    println!("    first call (cold)              {}", stats(cold.clone()));
    println!("    second call (prefix reused)    {}", stats(warm.clone()));
    let ratio: Vec<f64> = cold.iter().zip(&warm).map(|(c, w)| c / w).collect();
    println!("    cold / warm                    {}", stats(ratio));

    // Four calls at once with one new ~2,000-token system prompt: the engine reads it once and
    // the others share its cells, so all four start about when one alone would.
    let mut all_started = Vec::new();
    for run in 0..RUNS {
        let system = words(700 + run, 470);
        let started = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|index| {
                let engine = engine.clone();
                let request = request(&system, &format!("question number {index}"), 1);
                tokio::spawn(async move { traced(&engine, &request, started).await.0 })
            })
            .collect();
        let mut last_first_token = Duration::ZERO;
        for task in tasks {
            last_first_token = last_first_token.max(task.await.expect("task"));
        }
        all_started.push(last_first_token.as_secs_f64() * 1000.0);
    }
    println!("  4 concurrent calls sharing a new {shared_tokens}-token prefix, ms until all have a first token");
    println!("                                   {}", stats(all_started));

    // An agent with several roles: eight different ~2,000-token system prompts, one call each.
    // Their KV state is kept for reuse; it must not slow down what runs next.
    let roles: Vec<String> = (0..8).map(|role| words(900 + role, 470)).collect();
    for system in &roles {
        timed(&engine, &request(system, "first question", 1)).await;
    }
    let mut tg = Vec::new();
    let mut warm = Vec::new();
    for run in 0..RUNS {
        tg.push(generation_rate(&engine, run).await);
        let role = &roles[roles.len() - 1 - run];
        let (first, _, _) = timed(&engine, &request(role, &format!("follow-up {run}"), 1)).await;
        warm.push(first.as_secs_f64() * 1000.0);
    }
    println!("  after 8 calls with different {shared_tokens}-token system prompts");
    println!("    generation, tokens/s           {}", stats(tg.clone()));
    println!("      ratio to a fresh engine's    {:>9.2}", median(&tg) / median(&fresh_generation));
    println!("    TTFT, a recent role again, ms  {}", stats(warm));
}
