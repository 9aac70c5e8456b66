//! `[shared]` on a real Redis, side by side in one run:
//! `cargo bench -p slmkit-cli --bench shared -- [--calls N] [--requests N] [--out FILE]`.
//!
//! Starts its own `redis-server` on a free loopback port (in a temporary folder), the loopback
//! LLM test server and `slmkit serve` processes, then measures:
//!
//! 1. in process ([`slmkit::Client`]): a plain Redis `GET` of a value the size of a stored
//!    answer (one loopback round trip, the floor), an L1 hit, and an L2 hit (a second client
//!    with an empty L1 reading answers a first one made, as another process would have);
//! 2. from Python (`bench/litellm_cache.py` in `bench/.venv-litellm`, as `make bench` makes
//!    it): a plain redis-py `GET`, a LiteLLM Redis cache hit (`litellm.completion`), and
//!    `slmkit serve` L2 and L1 hits over HTTP;
//! 3. throughput: one `slmkit serve` against two sharing Redis (and two without it), with
//!    concurrent clients and an LLM answering after a fixed delay; each question is asked
//!    twice, by different clients, so a shared cache saves the second backend call.
//!
//! Prints a Markdown table (median, p90, p99 and the interquartile range), also to `--out`.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slmkit::shared::{SharedConfig, SharedStore};
use slmkit::types::{ChatCompletionRequest, ChatMessage};
use slmkit::{Backend, Client, Pricing, RemoteBackend, RemoteConfig};
use slmkit_testserver::{Behavior, TestServer};

/// The LLM's fixed delay in the throughput runs.
const LLM_DELAY_MS: u64 = 20;
/// Concurrent clients in the throughput runs.
const CLIENTS: usize = 32;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter().position(|arg| arg == name).and_then(|at| args.get(at + 1)).cloned()
}

fn number_arg(name: &str, default: usize) -> usize {
    arg(name).map_or(default, |value| value.parse().unwrap_or_else(|_| panic!("{name} takes a number, got {value:?}")))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("slmkit-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Redis(Child, PathBuf, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = temp_dir("redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start redis-server ({err}): `make setup` installs it"));
        let redis = Redis(child, dir, port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis::Client::open(redis.url()).unwrap().get_connection().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.2)
    }
}

/// One `slmkit serve` process.
struct Serve {
    child: Child,
    base: String,
    dir: PathBuf,
}

impl Serve {
    fn start(name: &str, llm: &TestServer, redis: Option<&Redis>) -> Serve {
        let dir = temp_dir(&format!("serve-{name}"));
        let shared = redis.map(|redis| format!("[shared]\nredis_url = \"{}\"\n", redis.url())).unwrap_or_default();
        let config = dir.join("slmkit.toml");
        std::fs::write(
            &config,
            format!(
                "[llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"m\"\napi_key = \"k\"\n\n[ledger]\npath = {:?}\n\n{shared}",
                llm.base_url(),
                dir.join("ledger.jsonl").display().to_string()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_slmkit"))
            .args(["serve", "--port", "0", "--host", "127.0.0.1", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("slmkit serve exited before listening").unwrap();
            if let Some(base) = line.strip_prefix("slmkit serve: listening on ") {
                break base.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Serve { child, base, dir }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Median, p90, p99 and interquartile range, in microseconds.
struct Summary {
    p50: f64,
    p90: f64,
    p99: f64,
    iqr: f64,
    n: usize,
}

fn summary(mut micros: Vec<f64>) -> Summary {
    micros.sort_by(f64::total_cmp);
    let at = |share: f64| micros[((micros.len() as f64 - 1.0) * share).round() as usize];
    Summary { p50: at(0.5), p90: at(0.9), p99: at(0.99), iqr: at(0.75) - at(0.25), n: micros.len() }
}

fn micros(samples: Vec<Duration>) -> Summary {
    summary(samples.into_iter().map(|sample| sample.as_secs_f64() * 1e6).collect())
}

fn row(table: &mut String, path: &str, summary: &Summary) {
    let Summary { p50, p90, p99, iqr, n } = summary;
    writeln!(table, "| {path} | {n} | {p50:.0} | {p90:.0} | {p99:.0} | {iqr:.0} |").unwrap();
}

fn in_process_client(server: &TestServer, store: Arc<SharedStore>) -> Client {
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

async fn in_process(table: &mut String, redis: &Redis, server: &TestServer, calls: usize) -> (f64, f64) {
    let url = redis.url();
    let maker = in_process_client(server, SharedStore::connect(&SharedConfig::new(&url)).unwrap());
    let reader = in_process_client(server, SharedStore::connect(&SharedConfig::new(&url)).unwrap());
    for index in 0..calls {
        maker.create(&request(index, "maker")).await.unwrap();
    }
    let mut connection = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("slmkit:answer:*").query_async(&mut connection).await.unwrap();
    let entry: usize = redis::cmd("STRLEN").arg(&keys[0]).query_async(&mut connection).await.unwrap();
    redis::cmd("SET")
        .arg("bench:answer-sized")
        .arg(vec![b'x'; entry])
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let (mut plain, mut l1, mut l2) = (Vec::new(), Vec::new(), Vec::new());
    for index in 0..calls {
        let started = Instant::now();
        let bytes: Vec<u8> = redis::cmd("GET").arg("bench:answer-sized").query_async(&mut connection).await.unwrap();
        plain.push(started.elapsed());
        assert_eq!(bytes.len(), entry);

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
    let (plain, l1, l2) = (micros(plain), micros(l1), micros(l2));
    writeln!(table, "\n### Cache hits in process (Rust `slmkit::Client`; answers of {entry} bytes)\n").unwrap();
    writeln!(table, "| path | n | p50 µs | p90 µs | p99 µs | IQR µs |\n|---|---:|---:|---:|---:|---:|").unwrap();
    row(table, "plain Redis GET, same size, loopback (the floor)", &plain);
    row(table, "hit through L1 (moka)", &l1);
    row(table, "hit through L2 (Redis, L1 empty)", &l2);
    (plain.p50, l2.p50)
}

/// LiteLLM's Redis cache hit against `slmkit serve`'s, from Python; `None` without the venv.
fn from_python(table: &mut String, redis: &Redis, server: &TestServer, calls: usize) -> Option<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join("bench/.venv-litellm/bin/python");
    if !python.exists() {
        writeln!(table, "\n(LiteLLM not measured: `make bench` makes bench/.venv-litellm with litellm==1.106.2.)")
            .unwrap();
        return None;
    }
    let maker = Serve::start("maker", server, Some(redis));
    let reader = Serve::start("reader", server, Some(redis));
    let output = Command::new(python)
        .arg(root.join("bench/litellm_cache.py"))
        // Offline: LiteLLM's bundled price map, not a fetch that fails after retries.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .args([redis.2.to_string(), server.base_url(), maker.base.clone(), reader.base.clone(), calls.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    if !output.status.success() {
        writeln!(table, "\n(LiteLLM not measured: bench/litellm_cache.py failed, its error above.)").unwrap();
        return None;
    }
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    let path = |name: &str| {
        summary(result["micros"][name].as_array().unwrap().iter().map(|value| value.as_f64().unwrap()).collect())
    };
    writeln!(
        table,
        "\n### Cache hits from Python (litellm 1.106.2 in process; `slmkit serve` over loopback HTTP, httpx keep-alive)\n"
    )
    .unwrap();
    writeln!(table, "| path | n | p50 µs | p90 µs | p99 µs | IQR µs |\n|---|---:|---:|---:|---:|---:|").unwrap();
    row(
        table,
        &format!("plain redis-py GET of LiteLLM's entry size ({} bytes)", result["entry_bytes"]),
        &path("redis_py_get"),
    );
    row(table, "LiteLLM `completion` Redis cache hit (in process)", &path("litellm_hit"));
    row(table, "`slmkit serve` L2 hit (HTTP request + serve + Redis)", &path("serve_l2_hit_http"));
    row(table, "`slmkit serve` L1 hit (HTTP request + serve)", &path("serve_l1_hit_http"));
    Some(result)
}

/// Throughput of `serves` (round robin) under `CLIENTS` concurrent clients, each question
/// asked twice by different clients. Requests per second, p50 µs, backend calls.
async fn throughput(serves: &[Serve], llm: &TestServer, requests: usize) -> (f64, Summary, usize) {
    let before = llm.request_count();
    let http = reqwest::Client::new();
    let run = format!("{:?}", std::time::SystemTime::now());
    // Question q asked at positions q and q + half: the repeat comes later, from another client.
    let half = requests / 2;
    let queue = Arc::new(std::sync::Mutex::new((0..requests).rev().collect::<Vec<usize>>()));
    let started = Instant::now();
    let workers = (0..CLIENTS).map(|_| {
        let (queue, http, run) = (Arc::clone(&queue), http.clone(), run.clone());
        let bases: Vec<String> = serves.iter().map(|serve| serve.base.clone()).collect();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(position) = queue.lock().unwrap().pop() else { break };
                let question = position % half;
                let body = json!({"model": "m", "temperature": 0, "user": format!("client-{position}"),
                    "messages": [{"role": "user", "content": format!("run {run}: question {question}")}]});
                // The repeat goes to the next process: with two, the other one.
                let base = &bases[(question + position / half) % bases.len()];
                let sent = Instant::now();
                let response = http.post(format!("{base}/chat/completions")).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                latencies.push(sent.elapsed());
            }
            latencies
        })
    });
    let mut latencies = Vec::new();
    for worker in futures::future::join_all(workers).await {
        latencies.extend(worker.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    (requests as f64 / seconds, micros(latencies), llm.request_count() - before)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls = number_arg("--calls", 1_000);
    let requests = number_arg("--requests", 4_000);
    let redis = Redis::start();
    let server = TestServer::start().await;
    let mut table = String::new();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    writeln!(table, "## `[shared]` benchmarks (`cargo bench -p slmkit-cli --bench shared`)\n").unwrap();
    writeln!(
        table,
        "Conditions: {cores} cores, load average at start {} (a shared machine: other builds ran beside it); \
         redis-server {} on loopback, no persistence; the LLM is the loopback test server. Cache-hit rows are \
         interleaved request by request.",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        String::from_utf8_lossy(&Command::new("redis-server").arg("--version").output().unwrap().stdout)
            .split_whitespace()
            .find_map(|word| word.strip_prefix("v="))
            .unwrap_or("?"),
    )
    .unwrap();

    let (plain_p50, l2_p50) = in_process(&mut table, &redis, &server, calls).await;
    writeln!(
        table,
        "\nAn L2 hit adds {:.0} µs p50 over a plain GET round trip (goal: under 500 µs).",
        l2_p50 - plain_p50
    )
    .unwrap();

    if let Some(result) = from_python(&mut table, &redis, &server, calls) {
        let p50 = |name: &str| {
            summary(result["micros"][name].as_array().unwrap().iter().map(|value| value.as_f64().unwrap()).collect())
                .p50
        };
        writeln!(
            table,
            "\nLiteLLM's hit p50 {:.0} µs in process against slmkit's {:.0} µs in process (Rust) and {:.0} µs \
             through `slmkit serve` including an HTTP round trip.",
            p50("litellm_hit"),
            l2_p50,
            p50("serve_l2_hit_http")
        )
        .unwrap();
    }

    let llm = TestServer::start().await;
    llm.set_default(Behavior::reply_text("an answer").delayed(LLM_DELAY_MS));
    writeln!(
        table,
        "\n### Throughput ({requests} requests, {CLIENTS} concurrent clients, a question's repeat sent to the next process; \
         the LLM answers after {LLM_DELAY_MS} ms; each question asked twice, by different clients)\n"
    )
    .unwrap();
    writeln!(table, "| set-up | requests/s | p50 µs | p90 µs | p99 µs | IQR µs | backend calls |").unwrap();
    writeln!(table, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    let set_ups: [(&str, usize, bool); 3] = [
        ("one `slmkit serve`, with Redis", 1, true),
        ("two `slmkit serve`, sharing Redis", 2, true),
        ("two `slmkit serve`, no `[shared]`", 2, false),
    ];
    for (name, count, shared) in set_ups {
        let serves: Vec<Serve> =
            (0..count).map(|index| Serve::start(&format!("t{index}"), &llm, shared.then_some(&redis))).collect();
        let (per_second, latency, backend) = throughput(&serves, &llm, requests).await;
        let Summary { p50, p90, p99, iqr, .. } = latency;
        writeln!(table, "| {name} | {per_second:.0} | {p50:.0} | {p90:.0} | {p99:.0} | {iqr:.0} | {backend} |")
            .unwrap();
    }

    println!("{table}");
    if let Some(out) = arg("--out") {
        // Relative to the workspace root (cargo runs benches in the package's folder).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        std::fs::write(root.join(out), &table).unwrap();
    }
}
