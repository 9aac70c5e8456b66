//! The response cache through the client, against a loopback OpenAI server.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use slmkit::types::{ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ResponseFormat, StreamOptions};
use slmkit::{Backend, CacheConfig, Client, Error, Outcome, Pricing, RemoteBackend, RemoteConfig, RetryPolicy};
use slmkit_testserver::{Behavior, TestServer};

fn pricing() -> Pricing {
    Pricing::PerToken { input_usd_per_million: 2.5, output_usd_per_million: 10.0, joules_per_token: None }
}

/// These tests repeat requests to test the cache itself, so re-ask detection (which makes an
/// identical request soon after its answer a rejection of that answer, never a hit) is off;
/// tests/reask.rs covers how the two meet.
fn retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
        reask_window: Duration::ZERO,
        ..RetryPolicy::default()
    }
}

fn client_with(server: &TestServer, cache: CacheConfig) -> Client {
    let backend = RemoteBackend::new(RemoteConfig::new(server.base_url(), "big")).unwrap();
    Client::builder().llm(Backend::Remote(backend), pricing()).cache(cache).retry(retry()).build().unwrap()
}

fn client(server: &TestServer) -> Client {
    client_with(server, CacheConfig::default())
}

fn greedy(text: &str) -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(vec![ChatMessage::user(text)]);
    request.temperature = Some(0.0);
    request
}

async fn stream_all(client: &Client, request: &ChatCompletionRequest) -> Vec<Result<ChatCompletionChunk, Error>> {
    let mut request = request.clone();
    request.stream = Some(true);
    client.create_stream(&request).await.unwrap().collect().await
}

fn pieces(chunks: &[Result<ChatCompletionChunk, Error>]) -> Vec<String> {
    chunks
        .iter()
        .map(|chunk| chunk.as_ref().unwrap())
        .flat_map(|chunk| &chunk.choices)
        .filter_map(|choice| choice.delta.content.clone())
        .collect()
}

#[tokio::test]
async fn a_repeat_is_served_from_the_cache_and_accounted() {
    let server = TestServer::start().await;
    server.push([Behavior::reply("the answer", 1000, 100)]);
    let client = client(&server);
    let first = client.create(&greedy("q")).await.unwrap();
    let second = client.create(&greedy("q")).await.unwrap();
    assert_eq!(server.request_count(), 1);
    assert_eq!(first.content(), second.content());
    assert_eq!(first.extra["slmkit"]["cache"], "miss");
    assert_eq!(second.extra["slmkit"]["cache"], "hit");
    assert_eq!(second.extra["slmkit"]["tier"], "llm");

    let records = client.ledger().records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].outcome, Outcome::CacheHit);
    assert_eq!(records[1].cost_usd, 0.0);
    assert!((records[1].saved_cost_usd.unwrap() - records[0].cost_usd).abs() < 1e-15);
    let report = client.ledger().report();
    assert_eq!((report.calls, report.served_from_cache), (2, 1));
    assert!((report.cache_saved_usd - 0.0035).abs() < 1e-12, "{}", report.cache_saved_usd);
    assert_eq!(report.prompt_tokens, 1000, "a hit does no backend work");
}

#[tokio::test]
async fn sampled_requests_are_not_cached_unless_configured() {
    let server = TestServer::start().await;
    let client = client(&server);
    let sampled = ChatCompletionRequest::new(vec![ChatMessage::user("q")]);
    client.create(&sampled).await.unwrap();
    client.create(&sampled).await.unwrap();
    assert_eq!(server.request_count(), 2, "temperature 1 without a seed may answer differently");
    let seeded = ChatCompletionRequest { seed: Some(7), ..sampled.clone() };
    client.create(&seeded).await.unwrap();
    client.create(&seeded).await.unwrap();
    assert_eq!(server.request_count(), 3, "a seed makes it repeatable");

    let everything = client_with(&server, CacheConfig { deterministic_only: false, ..CacheConfig::default() });
    everything.create(&sampled).await.unwrap();
    everything.create(&sampled).await.unwrap();
    assert_eq!(server.request_count(), 4);
    let disabled = client_with(&server, CacheConfig { enabled: false, ..CacheConfig::default() });
    disabled.create(&greedy("q")).await.unwrap();
    let again = disabled.create(&greedy("q")).await.unwrap();
    assert_eq!(server.request_count(), 6);
    assert_eq!(again.extra["slmkit"]["cache"], "disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_identical_requests_make_one_backend_call() {
    let server = TestServer::start().await;
    server.push([Behavior::reply("shared", 10, 2).delayed(300)]);
    let client = client(&server);
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.create(&greedy("same question")).await })
        })
        .collect();
    let mut hits = 0;
    for call in calls {
        let completion = call.await.unwrap().unwrap();
        assert_eq!(completion.content(), "shared");
        hits += usize::from(completion.extra["slmkit"]["cache"] == "hit");
    }
    assert_eq!(server.request_count(), 1);
    assert_eq!(hits, 99);
    assert_eq!(client.ledger().report().served_from_cache, 99);
}

#[tokio::test]
async fn failures_and_rejected_answers_are_never_stored() {
    let server = TestServer::start().await;
    server.push([Behavior::status(500), Behavior::status(500), Behavior::status(500)]);
    let client = client(&server);
    assert!(client.create(&greedy("q")).await.is_err());
    let answer = client.create(&greedy("q")).await.unwrap();
    assert_eq!(answer.extra["slmkit"]["cache"], "miss", "the error was not cached");
    assert_eq!(server.request_count(), 4);

    // An SLM answer that failed validation is retried, and only the accepted one is stored.
    let slm = TestServer::start().await;
    slm.push([Behavior::reply("not json", 5, 5), Behavior::reply("{\"ok\": 1}", 5, 5)]);
    let two_tier = Client::builder()
        .slm(Backend::Remote(RemoteBackend::new(RemoteConfig::new(slm.base_url(), "small")).unwrap()), pricing())
        .llm(Backend::Remote(RemoteBackend::new(RemoteConfig::new(server.base_url(), "big")).unwrap()), pricing())
        .retry(retry())
        .build()
        .unwrap();
    let mut json = greedy("give json");
    json.response_format = Some(ResponseFormat::JsonObject);
    assert_eq!(two_tier.create(&json).await.unwrap().content(), "{\"ok\": 1}");
    let hit = two_tier.create(&json).await.unwrap();
    assert_eq!((hit.content(), &hit.extra["slmkit"]["cache"]), ("{\"ok\": 1}", &serde_json::json!("hit")));
    assert_eq!(slm.request_count(), 2);
}

#[tokio::test]
async fn a_cached_stream_replays_in_its_original_chunks() {
    let server = TestServer::start().await;
    server.push([Behavior::reply("one two three four five six seven eight", 8, 8)]);
    let client = client(&server);
    let mut request = greedy("stream it");
    request.stream_options = Some(StreamOptions { include_usage: Some(true), ..Default::default() });
    let first = stream_all(&client, &request).await;
    let replay = stream_all(&client, &request).await;
    assert_eq!(server.request_count(), 1);
    assert!(pieces(&first).len() > 2, "the answer came in several chunks");
    assert_eq!(pieces(&first), pieces(&replay), "same chunking");
    let replay: Vec<_> = replay.into_iter().map(Result::unwrap).collect();
    assert_eq!(replay[0].extra["slmkit"]["cache"], "hit");
    assert!(replay.iter().all(|chunk| chunk.extra.contains_key("slmkit")), "every replayed chunk is marked");
    assert_eq!(replay.last().unwrap().usage.unwrap().completion_tokens, 8);

    let whole = client.create(&request).await.unwrap();
    assert_eq!(whole.content(), "one two three four five six seven eight");
    assert_eq!(whole.extra["slmkit"]["cache"], "hit");
}

#[tokio::test]
async fn a_broken_stream_is_not_stored() {
    let server = TestServer::start().await;
    server.push([Behavior::reply_text("one two three four five six").cut_after(3)]);
    let client = client(&server);
    let broken = stream_all(&client, &greedy("q")).await;
    assert!(matches!(broken.last(), Some(Err(Error::StreamInterrupted { .. }))));
    let again = client.create(&greedy("q")).await.unwrap();
    assert_eq!(again.extra["slmkit"]["cache"], "miss");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn entries_and_ttl_are_bounded() {
    let server = TestServer::start().await;
    let small = client_with(&server, CacheConfig { max_entries: 2, ..CacheConfig::default() });
    for index in 0..6 {
        small.create(&greedy(&format!("q{index}"))).await.unwrap();
    }
    assert!(small.cached_answers().await <= 2, "{} entries", small.cached_answers().await);

    let tiny = client_with(&server, CacheConfig { max_bytes: 64, max_entries: 100, ..CacheConfig::default() });
    tiny.create(&greedy("bytes")).await.unwrap();
    assert_eq!(tiny.cached_answers().await, 0, "an answer larger than max_bytes is not kept");

    let brief = client_with(&server, CacheConfig { ttl_s: 0.2, ..CacheConfig::default() });
    brief.create(&greedy("ttl")).await.unwrap();
    assert_eq!(brief.create(&greedy("ttl")).await.unwrap().extra["slmkit"]["cache"], "hit");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(brief.create(&greedy("ttl")).await.unwrap().extra["slmkit"]["cache"], "miss");
}

#[tokio::test]
async fn a_bypass_hint_asks_the_backend_again() {
    let server = TestServer::start().await;
    let client = client(&server);
    client.create(&greedy("q")).await.unwrap();
    let mut reask = greedy("q");
    reask.extra.insert("slmkit".into(), serde_json::json!({"cache": "bypass"}));
    let again = client.create(&reask).await.unwrap();
    assert_eq!(again.extra["slmkit"]["cache"], "disabled");
    assert_eq!(server.request_count(), 2, "a caller re-asking on purpose gets a fresh answer");
    let mut tagged = greedy("q");
    tagged.metadata = Some(serde_json::Map::from_iter([("slmkit_task".into(), serde_json::json!("WriteCode"))]));
    client.create(&tagged).await.unwrap();
    assert_eq!(client.ledger().records().last().unwrap().task.as_deref(), Some("WriteCode"));
}

/// The synchronous lookup the bindings try first answers a hit exactly as `create` does, and
/// stays out of the way (no backend call, no ledger record) on a miss or an uncacheable request.
#[tokio::test]
async fn create_if_cached_answers_only_hits_and_accounts_them_like_create() {
    let server = TestServer::start().await;
    server.push([Behavior::reply("the answer", 1000, 100)]);
    let client = client(&server);
    assert!(client.create_if_cached(&greedy("q")).is_none(), "nothing cached yet");
    assert!(client.ledger().records().is_empty(), "a miss records nothing");
    assert_eq!(server.request_count(), 0, "a miss calls no backend");

    let first = client.create(&greedy("q")).await.unwrap();
    let hit = client.create_if_cached(&greedy("q")).expect("a hit");
    let async_hit = client.create(&greedy("q")).await.unwrap();
    assert_eq!(server.request_count(), 1);
    assert_eq!(hit.content(), first.content());
    assert_eq!(hit.extra["slmkit"]["cache"], "hit");
    assert_eq!(hit.extra["slmkit"]["tier"], async_hit.extra["slmkit"]["tier"]);
    let records = client.ledger().records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[1].outcome, Outcome::CacheHit);
    assert_eq!(records[1].saved_cost_usd, records[2].saved_cost_usd);

    let sampled = ChatCompletionRequest::new(vec![ChatMessage::user("q")]);
    assert!(client.create_if_cached(&sampled).is_none(), "sampled requests are not cached by default");
    let mut bypass = greedy("q");
    bypass.extra.insert("slmkit".into(), serde_json::json!({"cache": "bypass"}));
    assert!(client.create_if_cached(&bypass).is_none(), "a deliberate re-ask skips the cache");
    let mut invalid = greedy("q");
    invalid.temperature = Some(f64::NAN);
    assert!(client.create_if_cached(&invalid).is_none(), "create reports invalid requests");
    assert_eq!(client.ledger().records().len(), 3);
}
