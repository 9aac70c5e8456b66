//! The shared store's cost on a cache hit: `cargo bench -p slmkit --bench shared -- [--calls N]`.
//!
//! Starts its own `redis-server` on a free loopback port (in a temporary folder) and the
//! loopback test server, then measures, side by side:
//!
//! - a raw Redis `GET` of an answer-sized value (the floor: one loopback round trip);
//! - an L1 hit through [`slmkit::Client`] (the local moka cache);
//! - an L2 hit through a second [`slmkit::Client`] with an empty L1, on the same Redis: the
//!   answers were made by a first client, as another process would have made them.
//!
//! Each L2 hit fills that client's L1, so every L2 measurement uses a request not asked
//! before. Prints median and p90 in microseconds as a Markdown table.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slmkit::shared::{SharedConfig, SharedStore};
use slmkit::types::{ChatCompletionRequest, ChatMessage};
use slmkit::{Backend, Client, Pricing, RemoteBackend, RemoteConfig};
use slmkit_testserver::TestServer;

fn calls_from_args() -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let calls = args.iter().position(|arg| arg == "--calls").and_then(|at| args.get(at + 1));
    match calls {
        Some(value) => value.parse().unwrap_or_else(|_| panic!("--calls takes a number, got {value:?}")),
        None => 1_000,
    }
}

struct Redis(Child, std::path::PathBuf);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_redis() -> (Redis, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("slmkit-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start redis-server ({err}): `make setup` installs it"));
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis::Client::open(url.as_str()).unwrap().get_connection().is_err() {
        assert!(Instant::now() < deadline, "redis-server did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Redis(child, dir), url)
}

fn client(server: &TestServer, store: Arc<SharedStore>) -> Client {
    let backend = RemoteBackend::new(RemoteConfig::new(server.base_url(), "m")).unwrap();
    Client::builder().llm(Backend::Remote(backend), Pricing::gpt_4o()).shared(store).build().unwrap()
}

/// Request `index` from `caller` (callers differ, so a repeat is a hit, not a re-ask).
fn request(index: usize, caller: &str) -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(vec![
        ChatMessage::system("You are a careful assistant."),
        ChatMessage::user(format!("Summarise ticket {index}: the export button does nothing on Safari.")),
    ]);
    request.temperature = Some(0.0);
    request.user = Some(caller.to_owned());
    request
}

fn micros(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |share: f64| samples[((samples.len() as f64 - 1.0) * share) as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.9))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls = calls_from_args();
    let (_redis, url) = start_redis();
    let server = TestServer::start().await;
    let maker = client(&server, SharedStore::connect(&SharedConfig::new(&url)).unwrap());
    let reader = client(&server, SharedStore::connect(&SharedConfig::new(&url)).unwrap());
    for index in 0..calls {
        maker.create(&request(index, "maker")).await.unwrap();
    }

    let raw = redis::Client::open(url.as_str()).unwrap();
    let mut connection = raw.get_multiplexed_async_connection().await.unwrap();
    let value = vec![b'x'; 700];
    redis::cmd("SET").arg("bench:raw").arg(&value).query_async::<()>(&mut connection).await.unwrap();
    let mut raw_get = Vec::with_capacity(calls);
    let mut l2 = Vec::with_capacity(calls);
    let mut l1 = Vec::with_capacity(calls);
    for index in 0..calls {
        let started = Instant::now();
        let bytes: Vec<u8> = redis::cmd("GET").arg("bench:raw").query_async(&mut connection).await.unwrap();
        raw_get.push(started.elapsed());
        assert_eq!(bytes.len(), 700);

        let started = Instant::now();
        let answer = reader.create(&request(index, "l2")).await.unwrap();
        l2.push(started.elapsed());
        assert_eq!(answer.extra["slmkit"]["cache"], "hit", "an L2 hit");

        let started = Instant::now();
        let answer = reader.create(&request(index, "l1")).await.unwrap();
        l1.push(started.elapsed());
        assert_eq!(answer.extra["slmkit"]["cache"], "hit", "an L1 hit");
    }
    assert_eq!(server.request_count(), calls, "only the maker called the backend");
    let (raw_p50, raw_p90) = micros(raw_get);
    let (l1_p50, l1_p90) = micros(l1);
    let (l2_p50, l2_p90) = micros(l2);
    println!("| path ({calls} calls, interleaved) | p50 µs | p90 µs |");
    println!("|---|---:|---:|");
    println!("| raw Redis GET, loopback (the floor) | {raw_p50:.0} | {raw_p90:.0} |");
    println!("| cache hit via L1 (moka) | {l1_p50:.0} | {l1_p90:.0} |");
    println!("| cache hit via L2 (Redis, L1 empty) | {l2_p50:.0} | {l2_p90:.0} |");
    println!();
    println!("L2 hit over a raw round trip: {:.0} µs p50 (goal: under 500 µs)", l2_p50 - raw_p50);
}
