//! What the pool balancer adds to a call: `cargo bench -p slmkit --bench pool -- [--calls N]`.
//!
//! In one process, against loopback test servers (`slmkit-testserver`, in-process on port 0),
//! side by side in interleaved rounds (five rounds of N/5 calls each, default N = 2,000):
//!
//! - the same request through [`slmkit::Client`] with one remote backend (one server);
//! - through a pool of three servers (the first the same server): the balancer's pick, its
//!   in-flight count, health bookkeeping and the per-call endpoint memory;
//!
//! then the balancer's pick alone, in nanoseconds, with no system prompt and with a 20 KB one
//! (the affinity hash reads at most its first 4 KiB). Prints a markdown table (p50, p90, p99
//! and the interquartile range) that `make bench` writes to `bench/results/pool-DATE.md`.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use slmkit::types::{ChatCompletionRequest, ChatMessage};
use slmkit::{
    Backend, CacheConfig, Client, PoolBackend, PoolConfig, PoolPolicy, Pricing, RemoteBackend, RemoteConfig,
    RetryPolicy,
};
use slmkit_testserver::TestServer;

const ROUNDS: usize = 5;
const WARMUP: usize = 100;
const PICKS: usize = 200_000;
const MODEL: &str = "m";

fn calls_from_args() -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let calls = args.iter().position(|arg| arg == "--calls").and_then(|at| args.get(at + 1));
    match calls {
        Some(value) => value.parse().unwrap_or_else(|_| panic!("--calls takes a number, got {value:?}")),
        None => 2_000,
    }
}

fn request(system: Option<&str>) -> ChatCompletionRequest {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(ChatMessage::system(system));
    }
    messages.push(ChatMessage::user("What is the capital of France?"));
    let mut request = ChatCompletionRequest::new(messages);
    request.model = MODEL.to_owned();
    request
}

fn client(backend: Backend) -> Client {
    let retry = RetryPolicy { reask_window: Duration::ZERO, ..RetryPolicy::default() };
    Client::builder()
        .slm(backend, Pricing::local_default())
        .cache(CacheConfig { enabled: false, ..CacheConfig::default() })
        .retry(retry)
        .build()
        .expect("client")
}

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    /// Microseconds at `quantile`.
    fn at(&mut self, quantile: f64) -> f64 {
        self.0.sort_unstable();
        self.0[((self.0.len() - 1) as f64 * quantile).round() as usize].as_secs_f64() * 1e6
    }
}

/// Nanoseconds per pick, the median of `ROUNDS` runs of `PICKS` picks.
fn pick_ns(pool: &PoolBackend, request: &ChatCompletionRequest) -> (f64, f64, f64) {
    let mut runs: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..PICKS {
                black_box(pool.pick_for(black_box(request)));
            }
            started.elapsed().as_secs_f64() * 1e9 / PICKS as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    (runs[ROUNDS / 2], runs[0], runs[ROUNDS - 1])
}

#[tokio::main]
async fn main() {
    let calls = calls_from_args().max(ROUNDS);
    let per_round = calls / ROUNDS;
    let servers = [TestServer::start().await, TestServer::start().await, TestServer::start().await];
    let single = client(Backend::Remote(RemoteBackend::new(RemoteConfig::new(servers[0].base_url(), MODEL)).unwrap()));
    let pool = PoolBackend::new(PoolConfig {
        endpoints: servers.iter().map(|server| RemoteConfig::new(server.base_url(), MODEL)).collect(),
        policy: PoolPolicy::default(),
    })
    .expect("pool");
    let pooled = client(Backend::Pool(pool.clone()));
    let request = request(None);

    for _ in 0..WARMUP {
        black_box(single.create(&request).await.expect("single call"));
        black_box(pooled.create(&request).await.expect("pooled call"));
    }
    let (mut direct, mut balanced) = (Samples::default(), Samples::default());
    for _ in 0..ROUNDS {
        for _ in 0..per_round {
            let started = Instant::now();
            black_box(single.create(black_box(&request)).await.expect("single call"));
            direct.0.push(started.elapsed());
        }
        for _ in 0..per_round {
            let started = Instant::now();
            black_box(pooled.create(black_box(&request)).await.expect("pooled call"));
            balanced.0.push(started.elapsed());
        }
    }
    let served: Vec<usize> = servers.iter().map(TestServer::request_count).collect();

    let threads = std::thread::available_parallelism().map_or(0, usize::from);
    println!("# The pool balancer's added latency\n");
    println!(
        "`cargo bench -p slmkit --bench pool`: {ROUNDS} interleaved rounds of {per_round} sequential calls per \
         row, against in-process loopback test servers (one for the single backend; three for the pool, the \
         first the same server), cache off. {threads} CPU threads; the machine was shared with other builds \
         and benchmarks while this ran, so compare the rows with each other, not with other runs.\n"
    );
    println!("| call path | p50 µs | p90 µs | p99 µs | IQR µs |");
    println!("|---|---:|---:|---:|---:|");
    let mut medians = Vec::new();
    for (name, samples) in
        [("slmkit::Client, one remote backend", &mut direct), ("slmkit::Client, pool of 3 endpoints", &mut balanced)]
    {
        let (p25, p50, p75, p90, p99) =
            (samples.at(0.25), samples.at(0.5), samples.at(0.75), samples.at(0.9), samples.at(0.99));
        println!("| {name} | {p50:.1} | {p90:.1} | {p99:.1} | {:.1} |", p75 - p25);
        medians.push(p50);
    }
    println!("\nAdded by the pool (p50 difference): {:.1} µs.", medians[1] - medians[0]);
    println!("Requests per server (warm-up included): {served:?}.\n");

    let long_system = "You are a meticulous assistant. ".repeat(640);
    println!("| the balancer's pick alone | median ns | fastest run ns | slowest run ns |");
    println!("|---|---:|---:|---:|");
    for (name, request) in
        [("no system prompt", request), ("20 KB system prompt (affinity)", self::request(Some(&long_system)))]
    {
        let (median, fastest, slowest) = pick_ns(&pool, &request);
        println!("| {name} | {median:.0} | {fastest:.0} | {slowest:.0} |");
    }
    println!("\n({ROUNDS} runs of {PICKS} picks each; idle endpoints, so ties rotate.)");
}
