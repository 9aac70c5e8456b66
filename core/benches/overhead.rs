//! slmkit's own overhead on a remote call: `cargo bench -p slmkit --bench overhead -- [--calls N]`.
//!
//! In one process, against the loopback test server (`slmkit-testserver`, started in-process
//! on port 0), side by side:
//!
//! - a raw `reqwest` POST of the same chat-completion JSON body, read and parsed back: what any
//!   HTTP client pays;
//! - the same call through [`slmkit::Client`] with the response cache off: routing, the ledger,
//!   validation and the remote backend. The pipeline's overhead is the difference of the two;
//! - a response-cache hit through [`slmkit::Client`] (a deterministic request, temperature 0;
//!   the first call fills the cache).
//!
//! The three are measured in interleaved rounds (five rounds of N/5 calls each, default
//! N = 2,000), so drift on the machine hits all three alike. Prints median and p90 in
//! microseconds.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::Value;
use slmkit::types::{ChatCompletionRequest, ChatMessage};
use slmkit::{Backend, CacheConfig, Client, Pricing, RemoteBackend, RemoteConfig};
use slmkit_testserver::TestServer;

const ROUNDS: usize = 5;
const WARMUP: usize = 50;
const API_KEY: &str = "sk-bench";
const MODEL: &str = "m";

fn calls_from_args() -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let calls = args.iter().position(|arg| arg == "--calls").and_then(|at| args.get(at + 1));
    match calls {
        Some(value) => value.parse().unwrap_or_else(|_| panic!("--calls takes a number, got {value:?}")),
        None => 2_000,
    }
}

fn request() -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(vec![ChatMessage::user("What is the capital of France?")]);
    request.model = MODEL.to_owned();
    request.temperature = Some(0.0);
    request
}

fn client(server: &TestServer, cache: CacheConfig) -> Client {
    let backend =
        RemoteBackend::new(RemoteConfig::new(server.base_url(), MODEL).with_api_key(API_KEY)).expect("remote backend");
    let pricing =
        Pricing::PerToken { input_usd_per_million: 2.5, output_usd_per_million: 10.0, joules_per_token: None };
    Client::builder().llm(Backend::Remote(backend), pricing).cache(cache).build().expect("client")
}

/// What a plain HTTP client does: POST the body, read the answer, parse it.
async fn raw_call(http: &reqwest::Client, url: &str, body: &Value) {
    let response = http.post(url).bearer_auth(API_KEY).json(body).send().await.expect("raw POST");
    assert!(response.status().is_success(), "raw POST answered {}", response.status());
    let bytes = response.bytes().await.expect("raw body");
    black_box(serde_json::from_slice::<Value>(&bytes).expect("raw JSON"));
}

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn at(&mut self, quantile: f64) -> f64 {
        self.0.sort_unstable();
        self.0[((self.0.len() - 1) as f64 * quantile).round() as usize].as_secs_f64() * 1e6
    }
}

#[tokio::main]
async fn main() {
    let calls = calls_from_args().max(ROUNDS);
    let per_round = calls / ROUNDS;
    let server = TestServer::start().await;

    let request = request();
    let url = format!("{}/chat/completions", server.base_url());
    let body = serde_json::to_value(&request).expect("request body");
    let http = reqwest::Client::new();
    let uncached = client(&server, CacheConfig { enabled: false, ..CacheConfig::default() });
    let cached = client(&server, CacheConfig::default());

    // Warm every path: connections open, the cache filled.
    for _ in 0..WARMUP {
        raw_call(&http, &url, &body).await;
        black_box(uncached.create(&request).await.expect("uncached call"));
        black_box(cached.create(&request).await.expect("cached call"));
    }
    let check = uncached.create(&request).await.expect("uncached call");
    assert_eq!(check.extra["slmkit"]["cache"], "disabled");
    let check = cached.create(&request).await.expect("cached call");
    assert_eq!(check.extra["slmkit"]["cache"], "hit");

    let (mut raw, mut pipeline, mut hit) = (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..ROUNDS {
        for _ in 0..per_round {
            let started = Instant::now();
            raw_call(&http, &url, &body).await;
            raw.0.push(started.elapsed());
        }
        for _ in 0..per_round {
            let started = Instant::now();
            black_box(uncached.create(black_box(&request)).await.expect("uncached call"));
            pipeline.0.push(started.elapsed());
        }
        for _ in 0..per_round {
            let started = Instant::now();
            black_box(cached.create(black_box(&request)).await.expect("cached call"));
            hit.0.push(started.elapsed());
        }
    }

    println!("slmkit overhead against a loopback OpenAI-compatible server ({ROUNDS} rounds of {per_round} calls each)");
    println!("  {:<52} {:>10} {:>10}", "measure", "median µs", "p90 µs");
    let mut medians = Vec::new();
    for (name, samples) in [
        ("a. raw reqwest POST + JSON parse (baseline)", &mut raw),
        ("b. slmkit::Client, cache off (full pipeline)", &mut pipeline),
        ("c. slmkit::Client, response-cache hit", &mut hit),
    ] {
        let (median, p90) = (samples.at(0.5), samples.at(0.9));
        println!("  {name:<52} {median:>10.1} {p90:>10.1}");
        medians.push(median);
    }
    println!("  pipeline overhead (b - a, medians): {:.1} µs", medians[1] - medians[0]);
}
