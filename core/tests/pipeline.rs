//! The client pipeline against real HTTP servers on loopback: the remote backend, faults,
//! validation, retry, escalation and the ledger.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use slmkit::ledger::read_jsonl;
use slmkit::types::{ChatCompletionRequest, ChatMessage, ResponseFormat, Tool, ToolChoice};
use slmkit::validate::{Callback, RegexMatches};
use slmkit::{Backend, Client, Error, Ledger, Outcome, Pricing, RemoteBackend, RemoteConfig, RetryPolicy, Tier};
use slmkit_testserver::{Behavior, TestServer};

const SLM_PRICE: (f64, f64) = (0.10, 0.20);
const LLM_PRICE: (f64, f64) = (2.50, 10.00);

fn per_token((input, output): (f64, f64)) -> Pricing {
    Pricing::PerToken { input_usd_per_million: input, output_usd_per_million: output, joules_per_token: None }
}

fn remote(server: &TestServer, model: &str) -> RemoteBackend {
    let mut config = RemoteConfig::new(server.base_url(), model);
    config.request_timeout = Duration::from_secs(5);
    config.stream_idle_timeout = Duration::from_secs(2);
    RemoteBackend::new(config).unwrap()
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..RetryPolicy::default()
    }
}

fn llm_only(server: &TestServer) -> Client {
    Client::builder()
        .llm(Backend::Remote(remote(server, "big-model")), per_token(LLM_PRICE))
        .retry(fast_retries())
        .build()
        .unwrap()
}

fn two_tier(slm: &TestServer, llm: &TestServer) -> Client {
    Client::builder()
        .slm(Backend::Remote(remote(slm, "small-model")), per_token(SLM_PRICE))
        .llm(Backend::Remote(remote(llm, "big-model")), per_token(LLM_PRICE))
        .retry(fast_retries())
        .build()
        .unwrap()
}

fn ask(text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest::new(vec![ChatMessage::user(text)])
}

fn outcomes(client: &Client) -> Vec<(Tier, Outcome)> {
    client.ledger().records().iter().map(|record| (record.tier, record.outcome)).collect()
}

#[tokio::test]
async fn plain_and_streamed_calls_pass_tools_and_formats_through() {
    let server = TestServer::start().await;
    let client = llm_only(&server);
    let completion = client.create(&ask("hello there")).await.unwrap();
    assert_eq!(completion.content(), "echo: hello there");
    assert_eq!(completion.extra["slmkit"]["tier"], "llm");

    let mut request = ask("stream me please");
    request.tools = Some(vec![Tool::function("f", "d", json!({"type": "object"}))]);
    request.tool_choice = Some(ToolChoice::named("f"));
    request.response_format = Some(ResponseFormat::JsonObject);
    request.metadata =
        Some(serde_json::Map::from_iter([("slmkit_route".into(), json!("llm")), ("team".into(), json!("a"))]));
    request.stream = Some(true);
    let chunks: Vec<_> = client.create_stream(&request).await.unwrap().collect().await;
    let text: String = chunks
        .iter()
        .map(|chunk| chunk.as_ref().unwrap())
        .flat_map(|chunk| &chunk.choices)
        .filter_map(|choice| choice.delta.content.clone())
        .collect();
    assert_eq!(text, "echo: stream me please");
    assert!(chunks.iter().all(|chunk| chunk.as_ref().unwrap().usage.is_none()), "usage was not asked for");

    let sent = &server.received()[1].body;
    assert_eq!(sent["model"], "big-model");
    assert_eq!(sent["tools"][0]["function"]["name"], "f");
    assert_eq!(sent["tool_choice"]["function"]["name"], "f");
    assert_eq!(sent["response_format"]["type"], "json_object");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true, "always asked, so every attempt is billed");
    assert_eq!(sent["metadata"], json!({"team": "a"}), "slmkit hints are stripped before a request leaves");
    let records = client.ledger().records();
    assert_eq!(records[1].prompt_tokens, server.received()[1].body.to_string().len() as u32 / 4);
    assert!(!records[1].tokens_estimated);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_and_recorded() {
    let server = TestServer::start().await;
    server.push([Behavior::status(500), Behavior::status(503)]);
    let client = llm_only(&server);
    let completion = client.create(&ask("retry me")).await.unwrap();
    assert_eq!(completion.content(), "echo: retry me");
    assert_eq!(
        outcomes(&client),
        vec![(Tier::Llm, Outcome::Error), (Tier::Llm, Outcome::Error), (Tier::Llm, Outcome::Ok)]
    );
    let records = client.ledger().records();
    assert_eq!(records[0].status, Some(500));
    assert_eq!(records[1].error_kind.as_deref(), Some("internal_server"));
    assert!(records[0].prompt_tokens > 0, "a failed remote attempt still bills its prompt");
    assert_eq!(completion.extra["slmkit"]["attempts"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn retries_stop_at_the_budget() {
    let server = TestServer::start().await;
    server.push([Behavior::status(502), Behavior::status(502), Behavior::status(502), Behavior::status(502)]);
    let client = llm_only(&server);
    match client.create(&ask("x")).await {
        Err(Error::Api { status: 502, .. }) => {}
        other => panic!("expected the last 502, got {other:?}"),
    }
    assert_eq!(server.request_count(), 3, "llm_attempts is 3");
    assert_eq!(client.ledger().records().len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_carry_status_and_body() {
    for status in [400u16, 401, 403, 404, 409, 422] {
        let server = TestServer::start().await;
        server.push([Behavior::Status {
            status,
            body: Some(format!("{{\"error\": {{\"message\": \"nope {status}\"}}}}")),
            retry_after: None,
        }]);
        let client = llm_only(&server);
        match client.create(&ask("x")).await {
            Err(err @ Error::Api { .. }) => {
                let Error::Api { status: got, message, body, .. } = &err else { unreachable!() };
                assert_eq!(*got, status);
                assert_eq!(message, &format!("nope {status}"));
                assert!(body.contains("nope"));
                assert!(!err.is_retriable());
                assert_eq!(err.status_code(), status);
            }
            other => panic!("{status}: expected Api error, got {other:?}"),
        }
        assert_eq!(server.request_count(), 1, "{status} must not be retried");
    }
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let server = TestServer::start().await;
    server.push([Behavior::Status { status: 429, body: None, retry_after: Some("1".into()) }]);
    let client = llm_only(&server);
    let started = Instant::now();
    client.create(&ask("x")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());
    assert_eq!(client.ledger().records()[0].error_kind.as_deref(), Some("rate_limit"));

    // A Retry-After beyond the policy's limit ends the call instead of sleeping through it.
    server.push([Behavior::Status { status: 429, body: None, retry_after: Some("3600".into()) }]);
    let started = Instant::now();
    let err = client.create(&ask("x")).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_slow_first_byte_times_out_and_is_retried() {
    let server = TestServer::start().await;
    server.push([Behavior::reply("late", 3, 1).delayed(1500)]);
    let mut config = RemoteConfig::new(server.base_url(), "m");
    config.request_timeout = Duration::from_millis(300);
    let client = Client::builder()
        .llm(Backend::Remote(RemoteBackend::new(config).unwrap()), per_token(LLM_PRICE))
        .retry(fast_retries())
        .build()
        .unwrap();
    let completion = client.create(&ask("x")).await.unwrap();
    assert_eq!(completion.content(), "echo: x");
    assert_eq!(outcomes(&client), vec![(Tier::Llm, Outcome::Timeout), (Tier::Llm, Outcome::Ok)]);
    assert_eq!(client.ledger().records()[0].error_kind.as_deref(), Some("timeout"));
}

#[tokio::test]
async fn a_stream_that_goes_quiet_hits_the_idle_timeout() {
    let server = TestServer::start().await;
    server.push([Behavior::reply_text("slow").delayed(4000)]);
    let backend = remote(&server, "m"); // idle timeout 2 s
    let mut stream = backend.create_stream(&ask("x")).await.unwrap();
    match stream.next().await {
        Some(Err(Error::Timeout { phase: "stream idle", .. })) => {}
        other => panic!("expected an idle timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_cut_before_any_content_falls_back() {
    let server = TestServer::start().await;
    server.push([Behavior::reply_text("lost").cut_after(1)]);
    let client = llm_only(&server);
    let mut request = ask("fall back");
    request.stream = Some(true);
    let chunks: Vec<_> = client.create_stream(&request).await.unwrap().collect().await;
    assert!(chunks.iter().all(Result::is_ok));
    let text: String =
        chunks.iter().flat_map(|c| &c.as_ref().unwrap().choices).filter_map(|c| c.delta.content.clone()).collect();
    assert_eq!(text, "echo: fall back");
    assert_eq!(outcomes(&client), vec![(Tier::Llm, Outcome::Error), (Tier::Llm, Outcome::Ok)]);
}

#[tokio::test]
async fn a_stream_cut_after_content_is_a_clear_error_and_recorded() {
    let server = TestServer::start().await;
    server.push([Behavior::reply_text("one two three four five six").cut_after(3)]);
    let client = llm_only(&server);
    let mut request = ask("x");
    request.stream = Some(true);
    let items: Vec<_> = client.create_stream(&request).await.unwrap().collect().await;
    let last = items.last().unwrap();
    match last {
        Err(Error::StreamInterrupted { chunks_delivered, tier, .. }) => {
            assert!(*chunks_delivered >= 2);
            assert_eq!(tier, "llm");
        }
        other => panic!("expected StreamInterrupted, got {other:?}"),
    }
    assert!(items[..items.len() - 1].iter().all(Result::is_ok));
    assert_eq!(outcomes(&client), vec![(Tier::Llm, Outcome::Error)]);
    assert!(client.ledger().records()[0].tokens_estimated);
}

#[tokio::test]
async fn malformed_responses_are_typed_errors() {
    let server = TestServer::start().await;
    let backend = remote(&server, "m");
    server.push([Behavior::MalformedJson]);
    assert!(matches!(backend.create(&ask("x")).await, Err(Error::MalformedResponse { .. })));
    for behavior in [Behavior::MalformedJson, Behavior::MalformedSse] {
        server.push([behavior.clone()]);
        let mut stream = backend.create_stream(&ask("x")).await.unwrap();
        match stream.next().await {
            Some(Err(Error::MalformedResponse { .. })) => {}
            other => panic!("{behavior:?}: expected MalformedResponse, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = RemoteConfig::new(format!("http://127.0.0.1:{closed_port}/v1"), "m");
    config.connect_timeout = Duration::from_secs(1);
    let client = Client::builder()
        .llm(Backend::Remote(RemoteBackend::new(config).unwrap()), per_token(LLM_PRICE))
        .retry(fast_retries())
        .build()
        .unwrap();
    match client.create(&ask("x")).await {
        Err(err @ Error::Connection { .. }) => assert!(err.is_retriable()),
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert_eq!(client.ledger().records().len(), 3);
}

#[tokio::test]
async fn validation_failures_retry_on_the_slm_then_escalate() {
    let slm = TestServer::start().await;
    let llm = TestServer::start().await;
    slm.push([
        Behavior::reply("not json", 10, 2),
        Behavior::reply("still not", 10, 2),
        Behavior::reply("[1, 2]", 10, 2),
    ]);
    llm.push([Behavior::reply("{\"ok\": true}", 12, 5)]);
    let client = two_tier(&slm, &llm);
    let mut request = ask("give me JSON");
    request.response_format = Some(ResponseFormat::JsonObject);
    request.temperature = Some(0.0);
    request.seed = Some(100);
    let completion = client.create(&request).await.unwrap();
    assert_eq!(completion.content(), "{\"ok\": true}");
    assert_eq!(
        outcomes(&client),
        vec![
            (Tier::Slm, Outcome::ValidationFailed),
            (Tier::Slm, Outcome::ValidationFailed),
            (Tier::Slm, Outcome::ValidationFailed),
            (Tier::Llm, Outcome::Ok)
        ]
    );
    // Retries used new seeds, and a temperature, since greedy would repeat itself.
    let seeds: Vec<Value> = slm.received().iter().map(|r| r.body["seed"].clone()).collect();
    assert_eq!(seeds, vec![json!(100), json!(101), json!(102)]);
    assert_eq!(slm.received()[1].body["temperature"], json!(0.7));
    let meta = &completion.extra["slmkit"];
    assert_eq!(meta["tier"], "llm");
    assert!(meta["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("escalated")));
    assert!(meta["attempts"][2]["reason"].as_str().unwrap().contains("not an object"));
}

#[tokio::test]
async fn without_an_llm_tier_validation_failure_lists_every_reason() {
    let slm = TestServer::start().await;
    slm.push([Behavior::reply("a", 1, 1), Behavior::reply("b", 1, 1), Behavior::reply("c", 1, 1)]);
    let client = Client::builder()
        .slm(Backend::Remote(remote(&slm, "small")), per_token(SLM_PRICE))
        .validator(Arc::new(RegexMatches::new("^OK").unwrap()))
        .build()
        .unwrap();
    match client.create(&ask("x")).await {
        Err(Error::ValidationFailed { reasons }) => {
            assert_eq!(reasons.len(), 3);
            assert!(reasons.iter().all(|reason| reason.contains("regex(^OK)")));
        }
        other => panic!("expected ValidationFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_raising_validator_aborts_the_call_with_its_error() {
    let slm = TestServer::start().await;
    let client = Client::builder()
        .slm(Backend::Remote(remote(&slm, "small")), per_token(SLM_PRICE))
        .validator(Arc::new(Callback::new(
            "explodes",
            Arc::new(|_, _| Box::pin(async { Err(Error::Config("validator bug".into())) })),
        )))
        .build()
        .unwrap();
    match client.create(&ask("x")).await {
        Err(Error::Validator { name, source }) => {
            assert_eq!(name, "explodes");
            assert!(source.to_string().contains("validator bug"));
        }
        other => panic!("expected Validator error, got {other:?}"),
    }
    assert_eq!(outcomes(&client), vec![(Tier::Slm, Outcome::Error)]);
}

#[tokio::test]
async fn one_budget_covers_both_tiers() {
    let slm = TestServer::start().await;
    let llm = TestServer::start().await;
    slm.push([Behavior::reply("x", 1, 1), Behavior::reply("y", 1, 1), Behavior::reply("z", 1, 1)]);
    llm.push([Behavior::status(500), Behavior::status(500), Behavior::status(500)]);
    let client = Client::builder()
        .slm(Backend::Remote(remote(&slm, "small")), per_token(SLM_PRICE))
        .llm(Backend::Remote(remote(&llm, "big")), per_token(LLM_PRICE))
        .validator(Arc::new(RegexMatches::new("^never$").unwrap()))
        .retry(RetryPolicy { max_attempts: 4, ..fast_retries() })
        .build()
        .unwrap();
    assert!(client.create(&ask("x")).await.is_err());
    assert_eq!(slm.request_count() + llm.request_count(), 4, "3 SLM tries and 3 LLM tries, capped at 4 in all");
    assert_eq!(client.ledger().records().len(), 4);
}

#[tokio::test]
async fn streams_are_buffered_and_validated_before_release() {
    let slm = TestServer::start().await;
    let llm = TestServer::start().await;
    slm.push([Behavior::reply("no JSON here", 5, 3), Behavior::reply("{\"a\": 1}", 5, 4)]);
    let client = two_tier(&slm, &llm);
    let mut request = ask("json please");
    request.response_format = Some(ResponseFormat::JsonObject);
    request.stream = Some(true);
    request.stream_options = Some(slmkit::types::StreamOptions { include_usage: Some(true), ..Default::default() });
    let chunks: Vec<_> = client.create_stream(&request).await.unwrap().map(Result::unwrap).collect().await;
    let text: String = chunks.iter().flat_map(|c| &c.choices).filter_map(|c| c.delta.content.clone()).collect();
    assert_eq!(text, "{\"a\": 1}", "the rejected answer never reached the caller");
    assert_eq!(chunks.last().unwrap().usage.unwrap().completion_tokens, 4);
    assert_eq!(chunks[0].extra["slmkit"]["tier"], "slm");
    assert_eq!(outcomes(&client), vec![(Tier::Slm, Outcome::ValidationFailed), (Tier::Slm, Outcome::Ok)]);
    assert_eq!(llm.request_count(), 0);
}

#[tokio::test]
async fn a_dropped_call_is_recorded_as_cancelled() {
    let server = TestServer::start().await;
    server.push([Behavior::echo().delayed(3000)]);
    let client = llm_only(&server);
    let request = ask("never mind");
    let attempt = tokio::time::timeout(Duration::from_millis(200), client.create(&request)).await;
    assert!(attempt.is_err(), "the call should still be waiting");
    let records = client.ledger().records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::Cancelled);
}

#[tokio::test]
async fn route_hints_choose_the_tier() {
    let slm = TestServer::start().await;
    let llm = TestServer::start().await;
    let client = two_tier(&slm, &llm);
    let mut request = ask("x");
    request.extra.insert("slmkit".into(), json!({"route": "llm"}));
    let completion = client.create(&request).await.unwrap();
    assert_eq!(completion.extra["slmkit"]["tier"], "llm");
    assert!(llm.received()[0].body.get("slmkit").is_none(), "hints never leave");
    request.extra.insert("slmkit".into(), json!({"route": "gpu"}));
    assert!(matches!(client.create(&request).await, Err(Error::InvalidRequest { .. })));
    assert_eq!(client.create(&ask("y")).await.unwrap().extra["slmkit"]["tier"], "slm");
}

/// The scripted run of the issue: 10 calls, 6 served by the SLM first try, 2 after one retry,
/// 2 escalated; every call has 1,000 prompt tokens and 100 completion tokens.
#[tokio::test]
async fn a_scripted_run_of_ten_calls_adds_up_to_the_hand_computed_report() {
    let slm = TestServer::start().await;
    let llm = TestServer::start().await;
    let ok = || Behavior::reply("OK: done", 1000, 100);
    let bad = || Behavior::reply("garbage", 1000, 100);
    slm.push((0..6).map(|_| ok()));
    slm.push([bad(), ok(), bad(), ok()]);
    slm.push((0..6).map(|_| bad()));
    llm.push([ok(), ok()]);
    let path = std::env::temp_dir().join(format!("slmkit-ledger-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let client = Client::builder()
        .slm(Backend::Remote(remote(&slm, "small")), per_token(SLM_PRICE))
        .llm(Backend::Remote(remote(&llm, "big")), per_token(LLM_PRICE))
        .validator(Arc::new(RegexMatches::new("^OK").unwrap()))
        .ledger(Ledger::with_file(&path).unwrap())
        .retry(fast_retries())
        .build()
        .unwrap();
    for index in 0..10 {
        client.create(&ask(&format!("call {index}"))).await.unwrap();
    }
    let report = client.ledger().report();

    // By hand: an SLM attempt costs (1000 × 0.10 + 100 × 0.20) / 1e6 = $0.00012, an LLM
    // attempt (1000 × 2.50 + 100 × 10.00) / 1e6 = $0.0035. Attempts: 6 + 2×2 + 2×3 = 16 on
    // the SLM and 2 on the LLM.
    let slm_attempt = 0.000_12;
    let llm_attempt = 0.003_5;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert_eq!(report.calls, 10);
    assert_eq!(report.attempts, 18);
    assert_eq!((report.served_by_slm, report.served_by_llm, report.failed_calls), (8, 2, 0));
    assert!(close(report.slm_share, 0.8));
    assert_eq!(report.slm_first_tried, 10);
    assert!(close(report.slm_first_try_success_rate, 0.6));
    assert!(close(report.mean_attempts_per_slm_call, 10.0 / 8.0));
    assert_eq!(report.escalations, 2);
    assert_eq!(report.validation_failures, 8);
    assert_eq!((report.prompt_tokens, report.completion_tokens), (18_000, 1_800));
    assert!(close(report.slm_cost_usd, 16.0 * slm_attempt), "{}", report.slm_cost_usd);
    assert!(close(report.llm_cost_usd, 2.0 * llm_attempt));
    assert!(close(report.cost_usd, 0.008_92), "{}", report.cost_usd);
    assert!(close(report.wasted_cost_usd, 8.0 * slm_attempt));
    assert!(close(report.counterfactual_llm_cost_usd, 10.0 * llm_attempt));
    assert!(close(report.savings_usd, 0.035 - 0.008_92));
    assert!(close(report.savings_share, (0.035 - 0.008_92) / 0.035));

    let table = report.to_table();
    assert!(table.contains("escalations SLM -> LLM") && table.contains("80.0% of calls"), "{table}");

    // The JSONL file holds the same records, and a torn last line is skipped with a warning.
    // The file is written by the ledger's writer thread: flush waits for it.
    client.ledger().flush();
    let (from_file, warnings) = read_jsonl(&path).unwrap();
    assert_eq!(from_file, client.ledger().records());
    assert!(warnings.is_empty());
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, b"{\"call_id\": \"call-torn\", \"attem").unwrap();
    let (from_file, warnings) = read_jsonl(&path).unwrap();
    assert_eq!(from_file.len(), 18);
    assert_eq!(warnings.len(), 1);
    assert_eq!(slmkit::Report::from_records(&from_file), report);
    let _ = std::fs::remove_file(&path);
}

#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_api_key_never_appears_in_logs_the_ledger_or_errors() {
    const KEY: &str = "sk-test-DO-NOT-LEAK-4f9a";
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber =
        tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let server = TestServer::start().await;
        // The server echoes the Authorization header back in its error body.
        server.push([Behavior::Status {
            status: 401,
            body: Some("{\"error\": {\"message\": \"bad key {auth}\"}}".into()),
            retry_after: None,
        }]);
        let path = std::env::temp_dir().join(format!("slmkit-keyledger-{}.jsonl", std::process::id()));
        let config = RemoteConfig::new(server.base_url(), "m").with_api_key(KEY);
        assert!(!format!("{config:?}").contains(KEY));
        let client = Client::builder()
            .llm(Backend::Remote(RemoteBackend::new(config).unwrap()), per_token(LLM_PRICE))
            .ledger(Ledger::with_file(&path).unwrap())
            .build()
            .unwrap();
        let err = client.create(&ask("x")).await.unwrap_err();
        assert_eq!(server.received()[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(!shown.contains(KEY), "{shown}");
        client.create(&ask("y")).await.unwrap();
        client.ledger().flush();
        let ledger = std::fs::read_to_string(&path).unwrap();
        assert!(!ledger.contains(KEY));
        assert!(!format!("{client:?}").contains(KEY));
        let _ = std::fs::remove_file(&path);
    });
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains(KEY), "the key leaked into the logs");
}

/// A local SLM from a config file, a remote LLM behind it: grammar-checked answers stay local,
/// a forced route goes remote, and local attempts are priced by energy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_slm_and_a_remote_llm_from_one_config_file() {
    let llm = TestServer::start().await;
    let dir = std::env::temp_dir().join(format!("slmkit-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-chatml.gguf");
    std::fs::copy(&fixture, dir.join("slm.gguf")).unwrap();
    let config_path = dir.join("slmkit.toml");
    std::fs::write(
        &config_path,
        format!(
            "[slm]\nbackend = \"local\"\nmodel = \"slm.gguf\"\ncontext = 1024\nslots = 2\n\n\
             [llm]\nbackend = \"remote\"\nbase_url = \"{}\"\nmodel = \"big\"\napi_key = \"sk-local-test\"\n\n\
             [llm.pricing]\nkind = \"per_token\"\ninput_usd_per_million = 2.5\noutput_usd_per_million = 10.0\n\n\
             [ledger]\npath = \"ledger.jsonl\"\n",
            llm.base_url()
        ),
    )
    .unwrap();
    let client = slmkit::Config::from_file(&config_path).unwrap().build().unwrap();

    let mut request = ask("Extract: order 42 is late");
    request.max_tokens = Some(80);
    request.seed = Some(3);
    request.response_format = Some(ResponseFormat::json_schema(
        "order",
        json!({"type": "object", "properties": {"late": {"type": "boolean"}}, "required": ["late"], "additionalProperties": false}),
    ));
    let completion = client.create(&request).await.unwrap();
    assert_eq!(completion.extra["slmkit"]["tier"], "slm");
    let value: Value = serde_json::from_str(completion.content()).unwrap();
    assert!(value["late"].is_boolean());
    let record = &client.ledger().records()[0];
    assert_eq!((record.backend.as_str(), record.outcome), ("local", Outcome::Ok));
    assert!(record.energy_j.unwrap() > 0.0 && record.cost_usd > 0.0, "local attempts are priced by measured busy time");
    assert!(record.counterfactual_llm_cost_usd.unwrap() > record.cost_usd);

    request.metadata = Some(serde_json::Map::from_iter([("slmkit_route".into(), json!("llm"))]));
    let escalated = client.create(&request).await.unwrap();
    assert_eq!(escalated.extra["slmkit"]["tier"], "llm");
    assert_eq!(llm.received()[0].authorization.as_deref(), Some("Bearer sk-local-test"));
    client.ledger().flush();
    let (from_file, _) = read_jsonl(dir.join("ledger.jsonl")).unwrap();
    assert_eq!(from_file.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

fn json_request(text: &str, max_tokens: u32) -> ChatCompletionRequest {
    let mut request = ask(text);
    request.response_format = Some(ResponseFormat::JsonObject);
    request.max_tokens = Some(max_tokens);
    request
}

#[tokio::test]
async fn a_cut_off_slm_answer_is_retried_with_a_larger_budget() {
    let (slm, llm) = (TestServer::start().await, TestServer::start().await);
    slm.push([
        Behavior::reply("{\"order\": \"A-", 10, 8).finishing("length"),
        Behavior::reply("{\"order\": \"A-1\"}", 10, 9),
    ]);
    let client = two_tier(&slm, &llm);
    let completion = client.create(&json_request("order as JSON", 8)).await.unwrap();
    assert_eq!(completion.content(), "{\"order\": \"A-1\"}");
    let sent: Vec<Value> = slm.received().iter().map(|request| request.body["max_tokens"].clone()).collect();
    assert_eq!(sent, [json!(8), json!(32)], "the retry gets four times the budget");
    let records = client.ledger().records();
    assert!(records[0].reason.as_deref().unwrap().contains("cut off by max_tokens"), "{:?}", records[0].reason);
    assert!(llm.received().is_empty());
}

#[tokio::test]
async fn a_cut_off_free_text_answer_that_fails_escalates_at_once() {
    let (slm, llm) = (TestServer::start().await, TestServer::start().await);
    slm.push([Behavior::reply("Here is the co", 10, 4).finishing("length")]);
    let client = Client::builder()
        .slm(Backend::Remote(remote(&slm, "small-model")), per_token(SLM_PRICE))
        .llm(Backend::Remote(remote(&llm, "big-model")), per_token(LLM_PRICE))
        .validator(Arc::new(RegexMatches::new("^\\[CONTENT\\]").unwrap()))
        .retry(fast_retries())
        .build()
        .unwrap();
    let mut request = ask("code please");
    request.max_tokens = Some(4);
    let completion = client.create(&request).await.unwrap();
    assert_eq!(completion.extra["slmkit"]["tier"], "llm");
    assert_eq!(slm.received().len(), 1, "not retried unchanged on the SLM");
}

#[tokio::test]
async fn a_cut_off_llm_answer_that_fails_validation_is_an_error_not_a_success() {
    let server = TestServer::start().await;
    server.push([Behavior::reply("{\"order\": \"A-", 10, 8).finishing("length")]);
    let client = llm_only(&server);
    let err = client.create(&json_request("order as JSON", 8)).await.unwrap_err();
    assert_eq!(err.kind(), "validation_failed", "{err}");
    assert!(err.to_string().contains("cut off"), "{err}");
    assert_eq!(server.received().len(), 1, "the same request would be cut off again");
    // A cut-off answer that passes is served, and says it was cut off.
    server.push([Behavior::reply("{\"order\": 1}", 10, 8).finishing("length")]);
    let completion = client.create(&json_request("another order as JSON", 8)).await.unwrap();
    assert_eq!(completion.choices[0].finish_reason, slmkit::types::FinishReason::Length);
}

#[tokio::test]
async fn a_forced_slm_call_fails_rather_than_escalate() {
    let (slm, llm) = (TestServer::start().await, TestServer::start().await);
    slm.push([Behavior::status(400)]);
    let client = two_tier(&slm, &llm);
    let mut request = ask("hi");
    request.extra.insert("slmkit".into(), json!({"route": "slm"}));
    let err = client.create(&request).await.unwrap_err();
    assert_eq!(err.status_code(), 400, "{err}");
    assert!(llm.received().is_empty());
}

#[tokio::test]
async fn slm_retries_sample_with_top_p_and_a_temperature() {
    let (slm, llm) = (TestServer::start().await, TestServer::start().await);
    slm.push([Behavior::reply_text("not json"), Behavior::reply_text("{}")]);
    let client = two_tier(&slm, &llm);
    let mut request = json_request("json", 16);
    request.temperature = Some(0.0);
    client.create(&request).await.unwrap();
    let sent = slm.received();
    assert_eq!(sent[0].body["temperature"], 0.0);
    assert!(sent[0].body.get("top_p").is_none());
    assert_eq!(sent[1].body["temperature"], 0.7);
    assert_eq!(sent[1].body["top_p"], 0.9);
    assert!(sent[1].body.get("min_p").is_none(), "min_p is llama.cpp's: only local engines get it");
}

/// Issue 18, finding 2: schemas are checked in full before routing; no tier is called, no
/// attempt recorded, nothing escalates.
#[tokio::test]
async fn invalid_schemas_are_refused_before_any_tier_is_called() {
    let (slm, llm) = (TestServer::start().await, TestServer::start().await);
    let client = two_tier(&slm, &llm);
    let cases = [
        (json!({"type": 5}), "/type"),
        (json!({"type": "object", "properties": {"u": {"$ref": "#/$defs/Missing"}}}), "Missing"),
        (
            json!({"type": "object", "properties": {"code": {"type": "string", "pattern": "(unclosed"}}}),
            "/properties/code",
        ),
        (json!({"type": "object", "properties": {"xs": {"type": "array", "minItems": 1_000_000}}}), "minItems"),
    ];
    for (schema, mentions) in cases {
        let mut as_format = ask("give me json");
        as_format.response_format = Some(ResponseFormat::json_schema("s", schema.clone()));
        let mut as_tool = ask("call it");
        as_tool.tools = Some(vec![Tool::function("f", "d", schema.clone())]);
        for (request, param) in
            [(as_format, "response_format.json_schema.schema"), (as_tool, "tools[0].function.parameters")]
        {
            let err = client.create(&request).await.unwrap_err();
            let Error::InvalidSchema { param: named, reason } = &err else { panic!("{schema}: {err:?}") };
            assert_eq!(named, param);
            assert!(reason.contains(mentions), "{schema}: {reason}");
            assert_eq!(err.status_code(), 400);
        }
    }
    let mut huge = ask("pick");
    let values: Vec<String> = (0..100_000).map(|n| format!("v{n}")).collect();
    huge.response_format = Some(ResponseFormat::json_schema("s", json!({"enum": values})));
    assert!(matches!(client.create(&huge).await.unwrap_err(), Error::RequestTooLarge { .. }));
    assert_eq!((slm.request_count(), llm.request_count()), (0, 0));
    assert!(client.ledger().records().is_empty());
}
