//! `backend = "pool"` against real loopback servers (`slmkit-testserver`, in-process): where
//! attempts go when endpoints fail, hang, come back, are busy, or share a system prompt.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use slmkit::types::{ChatCompletionRequest, ChatMessage};
use slmkit::{AttemptRecord, Backend, CallMetadata, Client, Config, Error, Outcome, PoolBackend, Tier};
use slmkit_testserver::{Behavior, TestServer};

/// A client whose SLM tier is a pool of `servers`, with `settings` added to its `[slm]`
/// section. The cache and re-ask detection are off: every call here must reach a backend.
fn pool_client(servers: &[&TestServer], settings: &str) -> Client {
    let endpoints: Vec<String> = servers.iter().map(|server| format!("{:?}", server.base_url())).collect();
    let toml = format!(
        "[slm]\nbackend = \"pool\"\nmodel = \"m\"\nendpoints = [{}]\n{settings}\n\
         [cache]\nenabled = false\n[retry]\nreask_window_s = 0\n",
        endpoints.join(", ")
    );
    Config::from_toml_str(&toml).unwrap().build().unwrap()
}

fn pool_of(client: &Client) -> PoolBackend {
    match &client.tier(Tier::Slm).unwrap().backend {
        Backend::Pool(pool) => pool.clone(),
        other => panic!("expected a pool, got {other:?}"),
    }
}

fn ask(system: Option<&str>, user: &str) -> ChatCompletionRequest {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(ChatMessage::system(system));
    }
    messages.push(ChatMessage::user(user));
    ChatCompletionRequest::new(messages)
}

/// The ledger's attempt records, by call, in order.
fn attempts_by_call(client: &Client) -> HashMap<String, Vec<AttemptRecord>> {
    let mut calls: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
    for record in client.ledger().records() {
        calls.entry(record.call_id.clone()).or_default().push(record);
    }
    calls
}

/// Waits (polling) until `done`, failing the test after `limit`.
async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn traffic_moves_to_the_healthy_endpoint_away_from_errors_and_a_hang() {
    let healthy = TestServer::start().await;
    let failing = TestServer::start().await;
    failing.set_default(Behavior::status(500));
    let hanging = TestServer::start().await;
    hanging.set_default(Behavior::echo().delayed(30_000));
    let client = pool_client(
        &[&failing, &hanging, &healthy],
        "request_timeout_s = 0.3\neject_after_failures = 1\ncooldown_s = 60\nprobe_interval_s = 60",
    );
    let started = Instant::now();
    // Three at once: the least busy endpoint takes each, so every endpoint gets one.
    let burst = (0..3).map(|n| {
        let client = client.clone();
        async move { client.create(&ask(None, &format!("burst {n}"))).await }
    });
    for answer in futures::future::join_all(burst).await {
        assert!(answer.unwrap().choices[0].message.content.as_deref().unwrap().starts_with("echo: burst"));
    }
    let (failed, hung) = (failing.request_count(), hanging.request_count());
    assert!(failed >= 1 && hung >= 1, "every endpoint was tried: {failed}, {hung}");
    assert_eq!(pool_of(&client).healthy(), [healthy.base_url()]);
    let burst_records = client.ledger().recorded();
    for n in 0..8 {
        let answer = client.create(&ask(Some(&format!("system prompt {n}")), &format!("q{n}"))).await.unwrap();
        assert_eq!(answer.choices[0].message.content.as_deref(), Some(format!("echo: q{n}").as_str()));
    }
    assert_eq!((failing.request_count(), hanging.request_count()), (failed, hung), "no more traffic to them");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let after: Vec<(Outcome, Option<String>)> = client
        .ledger()
        .records_since(burst_records)
        .into_iter()
        .map(|record| (record.outcome, record.endpoint))
        .collect();
    assert_eq!(after, vec![(Outcome::Ok, Some(healthy.base_url())); 8]);
    let records = client.ledger().records();
    assert!(records.iter().all(|record| record.backend == "pool"));
    for record in &records {
        let expected = match record.outcome {
            Outcome::Ok => healthy.base_url(),
            Outcome::Error => failing.base_url(),
            Outcome::Timeout => hanging.base_url(),
            other => panic!("unexpected outcome {other:?}"),
        };
        assert_eq!(record.endpoint.as_deref(), Some(expected.as_str()), "{record:?}");
    }
}

#[tokio::test]
async fn a_retry_never_reuses_an_endpoint_that_failed_its_call() {
    let healthy = TestServer::start().await;
    let failing = [TestServer::start().await, TestServer::start().await];
    for server in &failing {
        server.set_default(Behavior::status(503));
    }
    // Never taken out: only the call's own memory keeps its retries off a failed endpoint.
    let client =
        pool_client(&[&failing[0], &healthy, &failing[1]], "eject_after_failures = 1000\nprobe_interval_s = 60");
    for n in 0..12 {
        client.create(&ask(None, &format!("q{n}"))).await.unwrap();
    }
    let calls = attempts_by_call(&client);
    assert_eq!(calls.len(), 12);
    for (call, attempts) in &calls {
        let endpoints: Vec<&str> = attempts.iter().map(|record| record.endpoint.as_deref().unwrap()).collect();
        let distinct: HashSet<&str> = endpoints.iter().copied().collect();
        assert_eq!(distinct.len(), endpoints.len(), "call {call} reused an endpoint: {endpoints:?}");
        assert_eq!(endpoints.last().copied(), Some(healthy.base_url().as_str()), "call {call}");
    }
    assert!(failing.iter().all(|server| server.request_count() > 0), "the failing endpoints stayed in service");
    // The metadata lists each attempt's endpoint too.
    let answer = client.create(&ask(None, "last")).await.unwrap();
    let metadata = CallMetadata::of(&answer.extra).unwrap();
    let served = metadata.attempts.last().unwrap();
    assert_eq!((served.outcome, served.endpoint.clone()), (Outcome::Ok, Some(healthy.base_url())));
}

#[tokio::test]
async fn a_call_fails_with_the_last_error_when_every_endpoint_fails_it() {
    let servers = [TestServer::start().await, TestServer::start().await];
    for server in &servers {
        server.set_default(Behavior::status(502));
    }
    let client = pool_client(&[&servers[0], &servers[1]], "eject_after_failures = 1000\nprobe_interval_s = 60");
    let err = client.create(&ask(None, "x")).await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 502, .. }), "{err:?}");
    let endpoints: HashSet<String> =
        client.ledger().records().into_iter().filter_map(|record| record.endpoint).collect();
    assert_eq!(endpoints.len(), 2, "both endpoints were tried");
}

#[tokio::test]
async fn failed_endpoints_come_back_after_the_cooldown_once_probes_pass() {
    let steady = TestServer::start().await;
    let flaky = TestServer::start().await;
    flaky.set_default(Behavior::status(500));
    let client = pool_client(
        &[&flaky, &steady],
        "eject_after_failures = 1\ncooldown_s = 1\nprobe_interval_s = 0.05\nprobe_timeout_s = 0.5",
    );
    let pool = pool_of(&client);
    let started = Instant::now();
    for n in 0..4 {
        client.create(&ask(None, &format!("q{n}"))).await.unwrap();
    }
    assert_eq!(flaky.request_count(), 1, "taken out after its first failure");
    // Its probe (`/health` is 404 on the test server, so `/v1/models`) passes, but only after
    // the cooldown does it come back; then it serves again.
    flaky.set_default(Behavior::echo());
    eventually(Duration::from_secs(5), "the flaky endpoint back in service", || pool.healthy().len() == 2).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "back before its cooldown: {:?}", started.elapsed());
    for n in 0..6 {
        client.create(&ask(None, &format!("again {n}"))).await.unwrap();
    }
    assert!(flaky.request_count() >= 3, "the recovered endpoint shares the work: {}", flaky.request_count());
}

#[tokio::test]
async fn a_probe_takes_out_an_endpoint_that_went_away_before_any_call_fails_on_it() {
    let steady = TestServer::start().await;
    let leaving = TestServer::start().await;
    let address = leaving.addr;
    let client = pool_client(&[&steady, &leaving], "cooldown_s = 0.2\nprobe_interval_s = 0.05\nprobe_timeout_s = 0.5");
    let pool = pool_of(&client);
    drop(leaving);
    eventually(Duration::from_secs(5), "the stopped endpoint taken out", || pool.healthy() == [steady.base_url()])
        .await;
    for n in 0..4 {
        client.create(&ask(None, &format!("q{n}"))).await.unwrap();
    }
    let records = client.ledger().records();
    assert!(records.iter().all(|record| record.outcome == Outcome::Ok), "no attempt went to the stopped endpoint");
    // Back on the same port, it returns.
    // The old listener closes once its server task notices the shutdown: retry the bind.
    let started = Instant::now();
    let listener = loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => break listener,
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("cannot bind {address} again: {err}"),
        }
    };
    let returned = TestServer::serve(listener).await;
    eventually(Duration::from_secs(5), "the restarted endpoint back", || pool.healthy().len() == 2).await;
    for n in 0..4 {
        client.create(&ask(None, &format!("back {n}"))).await.unwrap();
    }
    assert!(returned.request_count() >= 1);
}

#[tokio::test]
async fn concurrent_slow_requests_spread_over_the_least_busy_endpoints() {
    let servers = [TestServer::start().await, TestServer::start().await, TestServer::start().await];
    for server in &servers {
        server.set_default(Behavior::echo().delayed(400));
    }
    let client = pool_client(&[&servers[0], &servers[1], &servers[2]], "probe_interval_s = 60");
    let calls = (0..6).map(|n| {
        let client = client.clone();
        async move { client.create(&ask(None, &format!("q{n}"))).await }
    });
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(Result::is_ok));
    let counts: Vec<usize> = servers.iter().map(TestServer::request_count).collect();
    assert_eq!(counts, [2, 2, 2]);
}

#[tokio::test]
async fn calls_sharing_a_system_prompt_stay_on_one_endpoint() {
    let servers = [TestServer::start().await, TestServer::start().await, TestServer::start().await];
    let client = pool_client(&[&servers[0], &servers[1], &servers[2]], "probe_interval_s = 60");
    let prompts: Vec<String> = (0..8).map(|n| format!("You are agent {n}. Answer in JSON.")).collect();
    for round in 0..4 {
        for prompt in &prompts {
            client.create(&ask(Some(prompt), &format!("round {round}"))).await.unwrap();
        }
    }
    let mut endpoint_of: HashMap<String, HashSet<String>> = HashMap::new();
    for server in &servers {
        for received in server.received() {
            let system = received.body["messages"][0]["content"].as_str().unwrap().to_owned();
            endpoint_of.entry(system).or_default().insert(server.base_url());
        }
    }
    assert_eq!(endpoint_of.len(), 8);
    assert!(endpoint_of.values().all(|endpoints| endpoints.len() == 1), "{endpoint_of:?}");
    let used: HashSet<&String> = endpoint_of.values().flatten().collect();
    assert!(used.len() >= 2, "different prompts spread over endpoints: {used:?}");
}

#[tokio::test]
async fn a_stream_through_the_pool_retries_elsewhere_and_records_its_endpoint() {
    let healthy = TestServer::start().await;
    let failing = TestServer::start().await;
    failing.set_default(Behavior::status(500));
    let client = pool_client(&[&failing, &healthy], "eject_after_failures = 1000\nprobe_interval_s = 60");
    for n in 0..3 {
        let mut request = ask(None, &format!("streamed {n}"));
        request.stream = Some(true);
        let chunks: Vec<_> = client.create_stream(&request).await.unwrap().collect().await;
        let text: String = chunks
            .into_iter()
            .map(Result::unwrap)
            .filter_map(|chunk| chunk.choices.first().and_then(|choice| choice.delta.content.clone()))
            .collect();
        assert_eq!(text, format!("echo: streamed {n}"));
    }
    let served: Vec<Option<String>> =
        client.ledger().records().into_iter().filter(|record| record.served).map(|record| record.endpoint).collect();
    assert_eq!(served, vec![Some(healthy.base_url()); 3]);
}

#[test]
fn bad_pool_configurations_are_config_errors_at_start_up() {
    let build =
        |slm: &str| Config::from_toml_str(&format!("[slm]\nbackend = \"pool\"\n{slm}\n")).and_then(|c| c.build());
    for (slm, says) in [
        ("endpoints = []", "at least one endpoint"),
        ("endpoints = [\"localhost:8080/v1\"]", "http"),
        ("endpoints = [\"http://127.0.0.1:9/v1\"]\ncooldown_s = -1", "cooldown_s"),
        ("endpoints = [\"http://127.0.0.1:9/v1\"]\neject_after_failures = 0", "eject_after_failures"),
        (
            "endpoints = [{ base_url = \"http://127.0.0.1:9/v1\", api_key_env = \"SLMKIT_SURELY_UNSET_POOL_KEY\" }]",
            "SLMKIT_SURELY_UNSET_POOL_KEY",
        ),
    ] {
        match build(slm) {
            Err(Error::Config(message)) => assert!(message.contains(says), "{slm}: {message}"),
            Err(other) => panic!("{slm}: expected a config error, got {other:?}"),
            Ok(_) => panic!("{slm}: expected a config error, got a client"),
        }
    }
    assert!(build("endpoints = \"http://127.0.0.1:9/v1\"").is_err(), "a string is not a list");
    assert!(build("endpoints = [{ url = \"http://127.0.0.1:9/v1\" }]").is_err(), "unknown key");
}
