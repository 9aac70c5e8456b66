//! Caller re-asks (a framework re-sending the identical request after its own parser rejected
//! the answer, as MetaGPT's ActionNode does through tenacity), and honest energy accounting.
//! Real HTTP servers on loopback for the remote tiers; the tiny fixture model for the engine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use slmkit::ledger::Report;
use slmkit::metadata::CallMetadata;
use slmkit::types::{ChatCompletionRequest, ChatMessage};
use slmkit::{
    Backend, Client, EngineOptions, LocalEngine, LocalModel, ModelOptions, Outcome, Pricing, RemoteBackend,
    RemoteConfig, RetryPolicy, Tier,
};
use slmkit_testserver::{Behavior, TestServer};

fn per_token(input: f64, output: f64) -> Pricing {
    Pricing::PerToken { input_usd_per_million: input, output_usd_per_million: output, joules_per_token: None }
}

fn remote(server: &TestServer, model: &str) -> Backend {
    let mut config = RemoteConfig::new(server.base_url(), model);
    config.request_timeout = Duration::from_secs(5);
    Backend::Remote(RemoteBackend::new(config).unwrap())
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..RetryPolicy::default()
    }
}

/// What MetaGPT sends for an ActionNode: a system and a user message, temperature 0.
fn action_node_request() -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(vec![
        ChatMessage::system("You are a product manager."),
        ChatMessage::user("## format example\n[CONTENT]{\"Language\": \"en_us\"}[/CONTENT]\nFill it in."),
    ]);
    request.temperature = Some(0.0);
    request
}

fn metadata(completion: &slmkit::types::ChatCompletion) -> CallMetadata {
    CallMetadata::of(&completion.extra).expect("every answer carries slmkit metadata")
}

/// MetaGPT's pattern: its parser rejects the answer, and it re-sends the identical request.
/// Each re-send continues the first call's budget (3 SLM tries, then the LLM, 5 attempts in
/// all), and the ledger and report say the caller rejected each answer.
#[tokio::test]
async fn identical_resends_are_reasks_that_continue_the_first_calls_budget() {
    let slm = TestServer::start().await;
    let llm = TestServer::start().await;
    // Answers that pass slmkit's checks (free text) but not the caller's JSON parser.
    slm.push((1..=3).map(|n| Behavior::reply_text(&format!("[CONTENT]{{\"Language\": }} slm {n}[/CONTENT]"))));
    llm.push((1..=2).map(|n| Behavior::reply_text(&format!("[CONTENT]{{\"Language\": }} llm {n}[/CONTENT]"))));
    let client = Client::builder()
        .slm(remote(&slm, "small"), per_token(0.1, 0.2))
        .llm(remote(&llm, "big"), per_token(2.5, 10.0))
        .retry(policy())
        .default_route(Tier::Slm)
        .build()
        .unwrap();
    let request = action_node_request();

    let first = client.create(&request).await.unwrap();
    let first_meta = metadata(&first);
    assert!(first_meta.reask.is_none());
    assert_eq!(first.content(), "[CONTENT]{\"Language\": } slm 1[/CONTENT]");

    let mut served_by = Vec::new();
    for number in 1..=4u32 {
        let again = client.create(&request).await.unwrap();
        let meta = metadata(&again);
        let reask = meta.reask.clone().expect("a re-send is a re-ask");
        assert_eq!((reask.of.as_str(), reask.number), (first_meta.call_id.as_str(), number));
        assert!(meta.reasons.iter().any(|reason| reason.contains(&format!("re-ask {number} of call"))), "{meta:?}");
        assert_eq!(meta.attempts.len(), 1, "one attempt per re-ask: {meta:?}");
        served_by.push(meta.tier.unwrap());
    }
    // Two more SLM tries (new seeds), then the LLM for the rest of the budget of five.
    assert_eq!(served_by, [Tier::Slm, Tier::Slm, Tier::Llm, Tier::Llm]);
    let slm_requests = slm.received();
    assert_eq!(slm_requests.len(), 3, "no re-ask was answered from the cache");
    assert!(slm_requests[0].body.get("seed").is_none());
    for retry in &slm_requests[1..] {
        assert!(retry.body["seed"].is_number(), "an SLM re-ask is a retry with a new seed");
        assert_eq!(retry.body["temperature"], 0.7);
    }
    // The chain's first LLM attempt is the caller's request; once the caller has rejected an
    // LLM answer, sending the same greedy request again would buy the same answer.
    let llm_requests = llm.received();
    assert_eq!(llm_requests.len(), 2);
    assert_eq!((llm_requests[0].body["temperature"].as_f64(), llm_requests[0].body.get("seed")), (Some(0.0), None));
    assert!(llm_requests[1].body["seed"].is_number(), "an LLM re-ask of an LLM answer gets a new seed");
    assert_eq!(llm_requests[1].body["temperature"], 0.7);

    // The sixth send finds the budget spent: it still gets one attempt, on the LLM, and says so.
    let sixth = client.create(&request).await.unwrap();
    let meta = metadata(&sixth);
    assert_eq!((meta.tier, meta.reask.as_ref().map(|reask| reask.number)), (Some(Tier::Llm), Some(5)));
    assert!(meta.reasons.iter().any(|reason| reason.contains("budget (5 attempts) is spent")), "{meta:?}");
    assert!(meta.reasons.iter().any(|reason| reason.contains("rejected the LLM's answer")), "{meta:?}");
    assert_eq!((slm.request_count(), llm.request_count()), (3, 3));
    assert_eq!(llm.received()[2].body["temperature"], 0.7, "the overdraft attempt samples too");

    let records = client.ledger().records();
    let rejected: Vec<_> = records.iter().filter(|record| record.outcome == Outcome::RejectedByCaller).collect();
    assert_eq!(rejected.len(), 5, "each of the five answers was rejected by the re-send after it");
    assert!(rejected.iter().all(|record| !record.served && record.cost_usd == 0.0));
    assert_eq!(rejected[0].call_id, first_meta.call_id);
    let reask_records = records.iter().filter(|record| record.reask_of.as_deref() == Some(&first_meta.call_id));
    assert_eq!(reask_records.filter(|record| record.outcome.is_attempt()).count(), 5);

    let report = Report::from_records(&records);
    assert_eq!(report.calls, 6, "one call per request the caller sent");
    assert_eq!(report.attempts, 6);
    assert_eq!((report.rejected_by_caller, report.slm_rejected_by_caller, report.reasks), (5, 3, 5));
    assert_eq!((report.served_by_slm, report.served_by_llm, report.failed_calls), (0, 1, 0));
    assert_eq!(report.escalations, 0, "each re-ask is a call of its own; the chain's first call started on the SLM");
    assert_eq!(report.slm_first_tried, 1);
    assert_eq!(report.slm_first_try_success_rate, 0.0, "a rejected first answer is no success");
    // Only the answer that stood (the sixth, from the LLM) is priced against the LLM.
    let kept = records.iter().find(|record| record.served && record.call_id == meta.call_id).unwrap();
    assert_eq!(report.counterfactual_llm_cost_usd, kept.counterfactual_llm_cost_usd.unwrap());
    assert!(report.savings_usd < 0.0, "six paid attempts for one kept LLM answer: a loss, not a saving");
    assert!(report.to_table().contains("rejected by the caller"));
}

/// The failure: a rejected answer served again from the cache. Here the rejected
/// answer is evicted, the re-ask's answer replaces it, and a later (non re-ask) request gets
/// the replacement from the cache.
#[tokio::test]
async fn a_cached_answer_the_caller_rejected_is_never_served_again() {
    let llm = TestServer::start().await;
    llm.push([Behavior::reply_text("cut off {\"design\": "), Behavior::reply_text("{\"design\": \"ok\"}")]);
    let client = Client::builder()
        .llm(remote(&llm, "big"), per_token(2.5, 10.0))
        .retry(RetryPolicy { reask_window: Duration::from_millis(400), ..policy() })
        .build()
        .unwrap();
    let request = action_node_request();
    let rejected = client.create(&request).await.unwrap();
    let replacement = client.create(&request).await.unwrap();
    assert_ne!(replacement.content(), rejected.content());
    assert_eq!(metadata(&replacement).cache.as_str(), "miss");
    assert_eq!(llm.request_count(), 2);
    // Past the window the same request is a new call, and the cache answers it with the
    // replacement, never the rejected answer.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = client.create(&request).await.unwrap();
    assert_eq!(later.content(), "{\"design\": \"ok\"}");
    assert_eq!(metadata(&later).cache.as_str(), "hit");
    assert!(metadata(&later).reask.is_none());
    assert_eq!(llm.request_count(), 2);
    // A binding's fast path (`cached`) must not serve a re-ask either.
    let prepared = client.prepare(&request).unwrap();
    assert!(client.cached(&prepared).is_none(), "a re-send of the hit is a re-ask, not a hit");
    let fourth = client.create_prepared(prepared).await.unwrap();
    assert_eq!(metadata(&fourth).reask.as_ref().map(|reask| reask.number), Some(1));
    assert_eq!(llm.request_count(), 3);
}

#[tokio::test]
async fn sampled_requests_other_callers_and_a_zero_window_are_not_reasks() {
    let llm = TestServer::start().await;
    let client = Client::builder().llm(remote(&llm, "big"), per_token(2.5, 10.0)).retry(policy()).build().unwrap();
    let mut sampled = action_node_request();
    sampled.temperature = Some(0.8);
    for _ in 0..2 {
        assert!(metadata(&client.create(&sampled).await.unwrap()).reask.is_none());
    }
    let mut alice = action_node_request();
    alice.user = Some("alice".into());
    let mut bob = alice.clone();
    bob.user = Some("bob".into());
    assert!(metadata(&client.create(&alice).await.unwrap()).reask.is_none());
    let bob_answer = client.create(&bob).await.unwrap();
    assert!(metadata(&bob_answer).reask.is_none(), "another caller's identical request is not a re-ask");
    assert!(client.explain(&alice).unwrap().reasons.iter().any(|reason| reason.contains("a re-ask of call")));

    let off = Client::builder()
        .llm(remote(&llm, "big"), per_token(2.5, 10.0))
        .retry(RetryPolicy { reask_window: Duration::ZERO, ..policy() })
        .build()
        .unwrap();
    let greedy = action_node_request();
    off.create(&greedy).await.unwrap();
    let again = off.create(&greedy).await.unwrap();
    assert!(metadata(&again).reask.is_none());
    assert_eq!(metadata(&again).cache.as_str(), "hit");
}

#[tokio::test]
async fn a_streamed_reask_is_marked_on_its_first_chunk() {
    let llm = TestServer::start().await;
    let client = Client::builder().llm(remote(&llm, "big"), per_token(2.5, 10.0)).retry(policy()).build().unwrap();
    let mut request = action_node_request();
    request.stream = Some(true);
    let first: Vec<_> = client.create_stream(&request).await.unwrap().collect().await;
    let first_meta = CallMetadata::of(&first[0].as_ref().unwrap().extra).unwrap();
    let again: Vec<_> = client.create_stream(&request).await.unwrap().collect().await;
    let meta = CallMetadata::of(&again[0].as_ref().unwrap().extra).unwrap();
    assert_eq!(meta.reask.map(|reask| reask.of), Some(first_meta.call_id));
    assert_eq!(llm.request_count(), 2);
}

/// The real MetaGPT run's failure: a design streamed live for minutes, MetaGPT's parser
/// rejected it, and the identical re-send came from the cache, because the re-ask window had
/// started with the stream's first token. It starts when the stream has delivered the answer.
#[tokio::test]
async fn a_resend_after_a_long_live_stream_is_a_reask() {
    let llm = TestServer::start().await;
    let client = Client::builder()
        .llm(remote(&llm, "big"), per_token(2.5, 10.0))
        .retry(RetryPolicy { reask_window: Duration::from_millis(300), ..policy() })
        .build()
        .unwrap();
    let mut request = action_node_request();
    request.stream = Some(true);
    let mut first = client.create_stream(&request).await.unwrap();
    let first_meta = CallMetadata::of(&first.next().await.unwrap().unwrap().extra).unwrap();
    // The caller reads the rest longer than the window lasts.
    tokio::time::sleep(Duration::from_millis(600)).await;
    while first.next().await.is_some() {}
    let again: Vec<_> = client.create_stream(&request).await.unwrap().collect().await;
    let meta = CallMetadata::of(&again[0].as_ref().unwrap().extra).unwrap();
    assert_eq!(meta.reask.map(|reask| reask.of), Some(first_meta.call_id));
    assert_eq!(meta.cache.as_str(), "miss");
    assert_eq!(llm.request_count(), 2);
}

/// An answer cut off by `max_tokens` reaches its caller, but the cache never keeps it: another
/// caller's identical request asks the backend again, whole or streamed.
#[tokio::test]
async fn an_answer_cut_off_by_max_tokens_is_never_cached() {
    let llm = TestServer::start().await;
    llm.set_default(Behavior::reply_text("[CONTENT]{\"design\": \"half").finishing("length"));
    let client = Client::builder().llm(remote(&llm, "big"), per_token(2.5, 10.0)).retry(policy()).build().unwrap();
    for (n, stream) in [false, true].into_iter().enumerate() {
        let mut request = action_node_request();
        request.stream = Some(stream);
        for user in ["alice", "bob"] {
            request.user = Some(user.into());
            let meta = if stream {
                let chunks: Vec<_> = client.create_stream(&request).await.unwrap().collect().await;
                CallMetadata::of(&chunks[0].as_ref().unwrap().extra).unwrap()
            } else {
                metadata(&client.create(&request).await.unwrap())
            };
            assert_eq!(meta.cache.as_str(), "miss", "{user}, stream {stream}");
        }
        assert_eq!(llm.request_count(), 2 * (n + 1));
    }
}

/// Four concurrent calls on one engine: each is charged its share of the engine's busy time,
/// never its wall-clock time (which counts the time it waited for the others).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_energy_is_a_share_of_engine_busy_time_and_never_exceeds_it() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-chatml.gguf");
    let model = LocalModel::load(fixture, &ModelOptions::default()).unwrap();
    let engine = LocalEngine::start(
        model,
        EngineOptions { slots: 2, context_per_slot: Some(512), threads: Some(1), ..EngineOptions::default() },
    )
    .unwrap();
    let watts = 100.0;
    let pricing =
        Pricing::Energy { device_watts: watts, psu_efficiency: 1.0, pue: 1.0, utilisation: 1.0, usd_per_kwh: 0.2 };
    let client = Client::builder().slm(Backend::Local(engine.clone()), pricing).retry(policy()).build().unwrap();
    let busy_before = engine.busy_time();
    let started = Instant::now();
    let calls = (0..4).map(|n| {
        let client = client.clone();
        async move {
            let mut request = ChatCompletionRequest::new(vec![ChatMessage::user(format!("count to ten, call {n}"))]);
            request.max_tokens = Some(24);
            request.seed = Some(n);
            client.create(&request).await.unwrap()
        }
    });
    futures::future::join_all(calls).await;
    let wall = started.elapsed();
    let busy = engine.busy_time() - busy_before;
    let records = client.ledger().records();
    assert_eq!(records.len(), 4);
    let charged: f64 = records.iter().map(|record| record.energy_j.unwrap()).sum();
    let latencies: f64 = records.iter().map(|record| record.latency_ms / 1000.0).sum();
    assert!(records.iter().all(|record| record.energy_j.unwrap() > 0.0));
    assert!(charged <= busy.as_secs_f64() * watts * 1.0001, "charged {charged} J for {busy:?} busy");
    assert!(charged <= wall.as_secs_f64() * watts, "charged {charged} J in {wall:?} of wall time");
    // With two slots and four calls, two queued: wall-clock pricing would have charged more.
    assert!(charged < latencies * watts, "charged {charged} J; the latencies add up to {latencies} s");
    let report: Value = serde_json::to_value(Report::from_records(&records)).unwrap();
    assert!((report["energy_j"].as_f64().unwrap() - charged).abs() < 1e-9);
}
