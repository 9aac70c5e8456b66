//! `backend = "pool"` through a real `slmkit serve` process: a pool of three loopback test
//! servers (one healthy, one answering 500, one hanging past the attempt timeout).

// Tests stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
use slmkit::ledger::read_jsonl;
use slmkit_testserver::{Behavior, TestServer};

/// A temporary folder, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("slmkit-pool-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `slmkit serve` process whose `[slm]` is `slm`.
struct Serve {
    child: Child,
    base: String,
    ledger: PathBuf,
    _dir: TempDir,
}

impl Serve {
    /// Starts it; `Err` with its stderr when it exits before listening.
    fn start(slm: &str) -> Result<Serve, String> {
        let dir = TempDir::new("serve");
        let ledger = dir.0.join("ledger.jsonl");
        let config = dir.0.join("slmkit.toml");
        let text = format!(
            "[slm]\nbackend = \"pool\"\nmodel = \"small\"\n{slm}\n\n[ledger]\npath = {:?}\n\n[cache]\nenabled = false\n",
            ledger.display().to_string()
        );
        std::fs::write(&config, text).unwrap();
        let stderr = dir.0.join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_slmkit"))
            .args(["serve", "--port", "0", "--host", "127.0.0.1", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(base) = line.strip_prefix("slmkit serve: listening on ") {
                        break base.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.wait();
                    return Err(std::fs::read_to_string(&stderr).unwrap_or_default());
                }
            }
        };
        // Keep reading stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Serve { child, base, ledger, _dir: dir })
    }

    /// Stops it with SIGTERM (a clean shutdown flushes the ledger) and waits.
    fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_moves_traffic_to_the_healthy_endpoint_and_records_each_attempts_endpoint() {
    let healthy = TestServer::start().await;
    let failing = TestServer::start().await;
    failing.set_default(Behavior::status(500));
    let hanging = TestServer::start().await;
    hanging.set_default(Behavior::echo().delayed(30_000));
    let endpoints = [&failing, &hanging, &healthy].map(|server| format!("{:?}", server.base_url())).join(", ");
    let mut serve = Serve::start(&format!(
        "endpoints = [{endpoints}]\nrequest_timeout_s = 0.3\nstream_idle_timeout_s = 0.3\neject_after_failures = 2\ncooldown_s = 60\nprobe_interval_s = 60"
    ))
    .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", serve.base);
    for n in 0..10 {
        let stream = n % 2 == 1;
        let body =
            json!({"model": "small", "stream": stream, "messages": [{"role": "user", "content": format!("q{n}")}]});
        let response = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        if stream {
            assert!(text.contains("echo: q") && text.contains("[DONE]"), "{text}");
        } else {
            let answer: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(answer["choices"][0]["message"]["content"], format!("echo: q{n}"));
            let attempts = answer["slmkit"]["attempts"].as_array().unwrap();
            assert_eq!(attempts.last().unwrap()["endpoint"], healthy.base_url());
        }
    }
    // Two failures in a row take an endpoint out, so each bad one saw at most two requests.
    assert!(failing.request_count() <= 2 && hanging.request_count() <= 2);
    assert_eq!(healthy.request_count(), 10);
    serve.stop();
    let (records, bad_lines) = read_jsonl(&serve.ledger).unwrap();
    assert!(bad_lines.is_empty());
    let mut by_call: HashMap<String, Vec<String>> = HashMap::new();
    for record in &records {
        assert_eq!(record.backend, "pool");
        let endpoint = record.endpoint.clone().unwrap();
        if record.served {
            assert_eq!(endpoint, healthy.base_url());
        }
        by_call.entry(record.call_id.clone()).or_default().push(endpoint);
    }
    assert_eq!(by_call.len(), 10);
    for endpoints in by_call.values() {
        let distinct: HashSet<&String> = endpoints.iter().collect();
        assert_eq!(distinct.len(), endpoints.len(), "a call reused an endpoint: {endpoints:?}");
    }
}

#[test]
fn a_bad_pool_is_a_clear_error_at_start_up() {
    for (slm, says) in
        [("endpoints = []", "at least one endpoint"), ("endpoints = [\"http://\"]", "is not a URL: empty host")]
    {
        match Serve::start(slm) {
            Ok(_) => panic!("serve started with {slm}"),
            Err(stderr) => assert!(stderr.contains(says), "{slm}: {stderr}"),
        }
    }
}
