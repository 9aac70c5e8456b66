//! `backend = "pool"` through a real `slmkit serve` process: a pool of three loopback test
//! servers (one healthy, one answering 500, one hanging past the attempt timeout).

// Tests stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{json, Value};
use slmkit::ledger::read_jsonl;
use slmkit_testserver::{Behavior, TestServer};
use support::Serve;

/// A `slmkit serve` process whose `[slm]` is a pool with `slm`'s settings; `Err` with its
/// stderr when it exits before listening.
fn start(slm: &str) -> Result<Serve, String> {
    let config = |ledger: &Path| {
        format!(
            "[slm]\nbackend = \"pool\"\nmodel = \"small\"\n{slm}\n\n[ledger]\npath = {:?}\n\n[cache]\nenabled = false\n",
            ledger.display().to_string()
        )
    };
    Serve::start(config, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_moves_traffic_to_the_healthy_endpoint_and_records_each_attempts_endpoint() {
    let healthy = TestServer::start().await;
    let failing = TestServer::start().await;
    failing.set_default(Behavior::status(500));
    let hanging = TestServer::start().await;
    hanging.set_default(Behavior::echo().delayed(30_000));
    let endpoints = [&failing, &hanging, &healthy].map(|server| format!("{:?}", server.base_url())).join(", ");
    let mut serve = start(&format!(
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
        match start(slm) {
            Ok(_) => panic!("serve started with {slm}"),
            Err(stderr) => assert!(stderr.contains(says), "{slm}: {stderr}"),
        }
    }
}
