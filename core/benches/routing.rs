//! Routing decision latency: `cargo bench -p slmkit --bench routing`.
//!
//! Prints the median and spread of one decision for a short request and for an 8k-token
//! conversation, on the estimate path (the window is far away) and on the exact path (the
//! estimate is near the window, so the SLM's own tokenizer counts the prompt).

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
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-chatml.gguf");
    let model = LocalModel::load(fixture, &ModelOptions::default()).expect("fixture model");
    let local =
        SlmProfile { context_window: 2048, tokenizer: Some(model), supports_tools: true, supports_images: false };
    let near = Router::new(&RoutingConfig::default(), Some(local), true).expect("router");
    // The fixture's byte-level vocabulary makes ~1 token a character: 1,700 characters sit
    // near its 2,048-token window, so the exact count runs.
    let near_window = conversation(1_700);

    println!("routing decision latency (microseconds; median [p10, p90] of 2,000 runs)");
    for (name, router, request) in [
        ("short request, estimate", &wide, &short),
        ("8k-token conversation, estimate (window 32k)", &wide, &eight_k),
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
    }
}
