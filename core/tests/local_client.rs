//! The client over the tiny fixture engine (the SLM) and the loopback test server (the LLM):
//! what a full engine queue does under each `on_overload` policy, and what the ledger records
//! for a stream its caller drops.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use slmkit::types::{ChatCompletionRequest, ChatMessage};
use slmkit::{
    Backend, Client, EngineOptions, Error, LocalEngine, LocalModel, ModelOptions, OnOverload, Outcome, Pricing,
    RemoteBackend, RemoteConfig, RetryPolicy, Tier,
};
use slmkit_testserver::TestServer;

fn engine(queue_capacity: usize) -> LocalEngine {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-chatml.gguf");
    let model = LocalModel::load(path, &ModelOptions::default()).unwrap();
    // `start`, not `shared`: each test gets its own queue.
    LocalEngine::start(
        model,
        EngineOptions { slots: 1, queue_capacity, context_per_slot: Some(512), ..EngineOptions::default() },
    )
    .unwrap()
}

fn client(engine: LocalEngine, llm: &TestServer, on_overload: OnOverload) -> Client {
    let remote = RemoteBackend::new(RemoteConfig::new(llm.base_url(), "big")).unwrap();
    Client::builder()
        .slm(Backend::Local(engine), Pricing::local_default())
        .llm(Backend::Remote(remote), Pricing::gpt_4o())
        .retry(RetryPolicy { on_overload, initial_backoff: Duration::from_millis(10), ..RetryPolicy::default() })
        .build()
        .unwrap()
}

fn slow(index: usize) -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(vec![ChatMessage::user(format!("ticket {index}: refund please"))]);
    request.max_tokens = Some(120);
    request.temperature = Some(0.0);
    request
}

/// Eight calls at once into one slot and a queue of one: what each policy makes of it.
async fn flood(client: &Client) -> Vec<Result<slmkit::ChatCompletion, Error>> {
    let calls: Vec<_> = (0..8)
        .map(|index| {
            let client = client.clone();
            tokio::spawn(async move { client.create(&slow(index)).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    results
}

fn overloaded_records(client: &Client) -> usize {
    client.ledger().records().iter().filter(|record| record.outcome == Outcome::Overloaded).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalate_sends_overflow_to_the_llm_and_the_ledger_says_why() {
    let llm = TestServer::start().await;
    let client = client(engine(1), &llm, OnOverload::Escalate);
    let results = flood(&client).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let overloaded = overloaded_records(&client);
    assert!(overloaded > 0, "eight calls into one slot and a queue of one must overflow");
    assert_eq!(llm.request_count(), overloaded, "each overloaded SLM attempt escalated once");
    let report = client.ledger().report();
    assert_eq!(report.overloaded, overloaded as u64);
    assert!(report.to_table().contains("engine overloaded"), "{}", report.to_table());
    let record = client.ledger().records().into_iter().find(|r| r.outcome == Outcome::Overloaded).unwrap();
    assert_eq!((record.tier, record.error_kind.as_deref()), (Tier::Slm, Some("overloaded")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_fails_overflow_with_a_503_and_never_calls_the_llm() {
    let llm = TestServer::start().await;
    let client = client(engine(1), &llm, OnOverload::Reject);
    let results = flood(&client).await;
    let rejected: Vec<_> = results.iter().filter_map(|result| result.as_ref().err()).collect();
    assert!(!rejected.is_empty(), "eight calls into one slot and a queue of one must overflow");
    for err in &rejected {
        assert_eq!(err.kind(), "overloaded", "{err:?}");
        assert_eq!(err.status_code(), 503);
    }
    assert_eq!(llm.request_count(), 0);
    assert_eq!(client.ledger().report().overloaded, rejected.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_serves_every_call_on_the_slm() {
    let llm = TestServer::start().await;
    let client = client(engine(1), &llm, OnOverload::Wait);
    let results = flood(&client).await;
    for result in &results {
        assert_eq!(result.as_ref().unwrap().extra["slmkit"]["tier"], "slm");
    }
    assert_eq!(llm.request_count(), 0);
    assert_eq!(overloaded_records(&client), 0);
}

/// Finding 8: a live stream dropped after chunks reached its caller records the tokens it
/// generated, not 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_records_what_it_generated() {
    let llm = TestServer::start().await;
    let client = client(engine(4), &llm, OnOverload::Escalate);
    let mut request = slow(0);
    request.max_tokens = Some(400);
    request.stream = Some(true);
    let mut stream = client.create_stream(&request).await.unwrap();
    let mut content_chunks = 0;
    while content_chunks < 5 {
        let chunk = stream.next().await.unwrap().unwrap();
        if chunk.choices.iter().any(|choice| choice.delta.content.as_deref().is_some_and(|text| !text.is_empty())) {
            content_chunks += 1;
        }
    }
    drop(stream);
    let records = client.ledger().records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].outcome, Outcome::Cancelled);
    assert!(records[0].completion_tokens >= 5, "{:?}", records[0]);
    assert_eq!(records[0].reason.as_deref(), Some("cancelled by the caller"));
}
