//! Fleet-wide deletion of rejected answers: the process that rejects one deletes it from
//! Redis and publishes its id on `{prefix}evictions`; every process (itself included) drops
//! it from its local cache. A process that was disconnected while a message went out keeps
//! its local copy until the entry's TTL: pub/sub does not replay.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;

use super::{SharedStore, State};

/// Called with each published eviction's id.
pub type OnEviction = Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>;

impl SharedStore {
    /// Sets what an eviction published by any process does here. Once per store.
    pub fn on_eviction(&self, handler: OnEviction) {
        let _ = self.state.on_eviction.set(handler);
    }

    /// Deletes the answer under `id` and tells the fleet to drop its local copies, in one
    /// round trip. Whether Redis confirmed it.
    pub async fn evict_everywhere(&self, id: &str) -> bool {
        let key = self.key("answer", id);
        let channel = self.channel();
        let id = id.to_owned();
        self.run("fleet eviction", |mut connection| async move {
            redis::pipe().del(key).ignore().publish(channel, id).ignore().query_async::<()>(&mut connection).await
        })
        .await
        .is_some()
    }

    fn channel(&self) -> String {
        channel(&self.state)
    }
}

fn channel(state: &State) -> String {
    format!("{}evictions", state.config.key_prefix)
}

/// Subscribes, hands each message to the handler, and resubscribes with backoff when the
/// connection goes.
pub(super) async fn listen(state: Arc<State>, client: redis::Client) {
    let mut backoff = Duration::from_millis(100);
    while !state.closed.load(Ordering::SeqCst) {
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(Duration::from_secs(3), client.get_async_pubsub()).await {
            if pubsub.subscribe(channel(&state)).await.is_ok() {
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    if let (Ok(id), Some(handler)) = (message.get_payload::<String>(), state.on_eviction.get()) {
                        handler(id).await;
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
