//! The call path's own invariants (the behaviour is tested end to end in `core/tests`).

use std::sync::atomic::{AtomicU64, Ordering};

use slmkit_testserver::TestServer;

use super::*;
use crate::remote::{RemoteBackend, RemoteConfig};
use crate::types::ChatMessage;

/// Routing and hashing passes made by a client.
#[derive(Default)]
pub(super) struct Passes {
    routed: AtomicU64,
    hashed: AtomicU64,
}

impl Passes {
    pub(super) fn routed(&self) {
        self.routed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn hashed(&self) {
        self.hashed.fetch_add(1, Ordering::Relaxed);
    }

    fn counts(&self) -> (u64, u64) {
        (self.routed.load(Ordering::Relaxed), self.hashed.load(Ordering::Relaxed))
    }
}

/// What a binding does per call: prepare (on the caller's thread), try the cache, and on a
/// miss hand the prepared call to the runtime. Before, the cache check routed and hashed the
/// request on the caller's thread, and `create` did both again on a miss: two routing passes
/// per miss, one of them holding the GIL or the Node event loop.
#[tokio::test]
async fn a_call_is_routed_once_off_the_callers_thread_and_hashed_once() {
    let server = TestServer::start().await;
    let backend = Backend::Remote(RemoteBackend::new(RemoteConfig::new(server.base_url(), "m")).unwrap());
    // Re-asks off: this test repeats a request to count the passes a cache hit makes.
    let no_reasks = RetryPolicy { reask_window: std::time::Duration::ZERO, ..RetryPolicy::default() };
    let client = Client::builder().llm(backend, Pricing::gpt_4o()).retry(no_reasks).build().unwrap();
    let mut request = ChatCompletionRequest::new(vec![ChatMessage::user("hello")]);
    request.temperature = Some(0.0);

    let prepared = client.prepare_owned(request.clone()).unwrap();
    assert_eq!(client.inner.passes.counts(), (0, 1), "preparing hashes, never routes");
    assert!(client.cached(&prepared).is_none());
    assert_eq!(client.inner.passes.counts(), (0, 1), "a cache check routes nothing");
    let missed = client.create_prepared(prepared).await.unwrap();
    assert_eq!(client.inner.passes.counts(), (1, 1), "a miss: one routing pass, one hash");
    assert_eq!(CallMetadata::of(&missed.extra).map(|meta| meta.cache), Some(CacheStatus::Miss));

    let prepared = client.prepare_owned(request.clone()).unwrap();
    let hit = client.cached(&prepared).unwrap();
    assert_eq!(client.inner.passes.counts(), (1, 2), "a hit: one hash, no routing");
    let meta = CallMetadata::of(&hit.extra).unwrap();
    assert_eq!((meta.cache, meta.tier), (CacheStatus::Hit, Some(Tier::Llm)));
    assert_eq!(meta.reasons, CallMetadata::of(&missed.extra).unwrap().reasons, "the hit repeats the route's reasons");

    // `create` itself: one hash, and no routing for a hit.
    client.create(&request).await.unwrap();
    assert_eq!(client.inner.passes.counts(), (1, 3));
    assert_eq!(server.request_count(), 1);
}

/// A call's end reaches the running totals: failed calls and escalations, which no single
/// attempt record can say.
#[tokio::test]
async fn failed_calls_and_escalations_reach_the_running_totals() {
    let slm = TestServer::start().await;
    let llm = TestServer::start().await;
    let remote =
        |server: &TestServer| Backend::Remote(RemoteBackend::new(RemoteConfig::new(server.base_url(), "m")).unwrap());
    let client = Client::builder()
        .slm(remote(&slm), Pricing::gpt_4o())
        .llm(remote(&llm), Pricing::gpt_4o())
        .validator(Arc::new(crate::validate::RegexMatches::new("^OK").unwrap()))
        .retry(RetryPolicy { slm_attempts: 1, llm_attempts: 1, max_attempts: 2, ..RetryPolicy::default() })
        .default_route(Tier::Slm)
        .build()
        .unwrap();
    slm.push([slmkit_testserver::Behavior::reply_text("nope")]);
    llm.push([slmkit_testserver::Behavior::status(400)]);
    assert!(client.create(&ChatCompletionRequest::new(vec![ChatMessage::user("x")])).await.is_err());
    let totals = client.ledger().totals();
    assert_eq!((totals.calls, totals.attempts, totals.failed_calls, totals.escalations), (1, 2, 1, 1));
    let report = client.ledger().report();
    assert_eq!((report.calls, report.attempts, report.failed_calls, report.escalations), (1, 2, 1, 1));
}
