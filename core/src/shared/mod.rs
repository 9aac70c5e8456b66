//! State shared by a fleet of slmkit processes through Redis (or Valkey): the L2 response
//! cache, fleet-wide single flight, and the fleet ledger stream.
//!
//! - this module: the `[shared]` section and [`SharedStore`], the one connection (reconnected
//!   with backoff by a prober thread), every operation bounded by the budget;
//! - [`entries`]: byte-level answers, deletions and single-flight locks (the cache decides what
//!   goes in them);
//! - [`stream`]: the ledger's records appended to a Redis Stream, and the fleet report's reader;
//! - [`snapshots`]: per-process snapshots a fleet exchanges (the adaptive router's statistics).
//!
//! Redis is an accelerator, never a dependency of a call: when it is down, slow or flushed,
//! every operation gives up within the budget (or at once, while an outage is known), the call
//! goes on with the local cache, one warning is logged per outage, and
//! [`SharedStore::errors`] counts each failure.

pub mod entries;
pub mod evictions;
pub mod snapshots;
pub mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::error::{Error, Result};

pub use entries::{LockOutcome, Wait};
pub use evictions::OnEviction;
pub use stream::{fleet_records, StreamSink};

/// The `[shared]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://…` (TLS, the system's trust store).
    #[serde(default)]
    pub redis_url: Option<String>,
    /// The environment variable holding the URL (keeps a password out of the file).
    #[serde(default)]
    pub redis_url_env: Option<String>,
    /// Refuse to start when Redis cannot be reached (default false: warn and go on with L1).
    #[serde(default)]
    pub required: bool,
    /// The most any call waits on one Redis operation, in milliseconds (default 50).
    #[serde(default = "default_budget_ms")]
    pub budget_ms: u64,
    /// Put before every key (default `slmkit:`): fleets sharing one Redis keep apart by it.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// The ledger stream's approximate length bound (`XADD MAXLEN ~`; default 1,000,000).
    #[serde(default = "default_stream_max_len")]
    pub stream_max_len: u64,
    /// A fleet single-flight lock's expiry in milliseconds (default 30,000): a holder that
    /// dies blocks the others at most this long, and waiters give up waiting after it.
    #[serde(default = "default_lock_ttl_ms")]
    pub lock_ttl_ms: u64,
    /// Answers larger than this (their JSON) stay in the local cache only (default 1 MiB).
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: usize,
    /// How often, in milliseconds, the adaptive router's statistics are published and the
    /// fleet's read (default 1,000; with `[routing] adaptive = true`).
    #[serde(default = "default_routing_sync_ms")]
    pub routing_sync_ms: u64,
    /// How long a process's published statistics outlive its last publication, in seconds
    /// (default 86,400): a process that died stops counting after this.
    #[serde(default = "default_routing_ttl_s")]
    pub routing_ttl_s: u64,
    /// This process's name in the fleet's routing state (default: derived from the host and
    /// the statistics file, so a restart replaces its own evidence rather than adding to it).
    #[serde(default)]
    pub instance_id: Option<String>,
}

fn default_budget_ms() -> u64 {
    50
}
fn default_prefix() -> String {
    "slmkit:".into()
}
fn default_stream_max_len() -> u64 {
    1_000_000
}
fn default_lock_ttl_ms() -> u64 {
    30_000
}
fn default_max_entry_bytes() -> usize {
    1 << 20
}
fn default_routing_sync_ms() -> u64 {
    1_000
}
fn default_routing_ttl_s() -> u64 {
    86_400
}

impl SharedConfig {
    /// A section for `url` with every default.
    pub fn new(url: impl Into<String>) -> Self {
        SharedConfig {
            redis_url: Some(url.into()),
            redis_url_env: None,
            required: false,
            budget_ms: default_budget_ms(),
            key_prefix: default_prefix(),
            stream_max_len: default_stream_max_len(),
            lock_ttl_ms: default_lock_ttl_ms(),
            max_entry_bytes: default_max_entry_bytes(),
            routing_sync_ms: default_routing_sync_ms(),
            routing_ttl_s: default_routing_ttl_s(),
            instance_id: None,
        }
    }

    /// The URL, from `redis_url` or the variable `redis_url_env` names.
    ///
    /// # Errors
    /// [`Error::Config`] when neither is set, or the variable is unset.
    pub fn url(&self) -> Result<String> {
        match (&self.redis_url, &self.redis_url_env) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(variable)) => std::env::var(variable)
                .map_err(|_| Error::Config(format!("[shared] redis_url_env names {variable}, which is not set"))),
            (None, None) => Err(Error::Config("[shared] needs redis_url or redis_url_env".into())),
        }
    }

    fn check(&self) -> Result<()> {
        if self.budget_ms == 0
            || self.lock_ttl_ms == 0
            || self.stream_max_len == 0
            || self.max_entry_bytes == 0
            || self.routing_sync_ms == 0
            || self.routing_ttl_s == 0
        {
            return Err(Error::Config(
                "[shared] budget_ms, lock_ttl_ms, stream_max_len, max_entry_bytes, routing_sync_ms and \
                 routing_ttl_s must be > 0"
                    .into(),
            ));
        }
        if self.instance_id.as_deref().is_some_and(|id| id.is_empty() || id.contains(char::is_whitespace)) {
            return Err(Error::Config("[shared] instance_id must be non-empty, without spaces".into()));
        }
        Ok(())
    }
}

/// `url` with any password replaced, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => format!("{}://***{}", &url[..scheme_end], &url[at..]),
        _ => url.to_owned(),
    }
}

/// The connection to the fleet's Redis, and its health.
pub struct SharedStore {
    state: Arc<State>,
    /// Runs the connection's driver, the prober and the stream shipper, whatever runtime
    /// (or none) the callers have.
    runtime: tokio::runtime::Handle,
    _thread: RuntimeThread,
}

pub(crate) struct State {
    url: String,
    pub(crate) config: SharedConfig,
    connection: Mutex<Option<ConnectionManager>>,
    healthy: AtomicBool,
    errors: AtomicU64,
    /// Wakes the prober when an operation fails.
    outage: Notify,
    closed: AtomicBool,
    /// What to do with another process's eviction (the local cache's L1 invalidation).
    on_eviction: std::sync::OnceLock<OnEviction>,
}

/// Stops the store's runtime thread when the store goes.
struct RuntimeThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore").field("url", &redacted(&self.state.url)).finish_non_exhaustive()
    }
}

impl SharedStore {
    /// Connects to the section's Redis. With `required`, a Redis that cannot be reached (or
    /// refuses the password) is an error; without, a warning, and the store keeps trying in
    /// the background while calls use the local cache only.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad section or URL; [`Error::SharedStore`] when `required` and
    /// the first connection fails.
    pub fn connect(config: &SharedConfig) -> Result<Arc<SharedStore>> {
        config.check()?;
        let url = config.url()?;
        let client = redis::Client::open(url.as_str())
            .map_err(|source| Error::SharedStore { context: format!("bad redis_url {}", redacted(&url)), source })?;
        let (runtime, thread) = start_runtime()?;
        let state = Arc::new(State {
            url: url.clone(),
            config: config.clone(),
            connection: Mutex::new(None),
            healthy: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            outage: Notify::new(),
            closed: AtomicBool::new(false),
            on_eviction: std::sync::OnceLock::new(),
        });
        // Not `block_on`: the caller may itself be on an async runtime.
        let (sender, receiver) = std::sync::mpsc::channel();
        let first_client = client.clone();
        let budget_ms = config.budget_ms;
        runtime.spawn(async move {
            let _ = sender.send(open(&first_client, budget_ms).await);
        });
        let first = receiver.recv_timeout(CONNECT_TIMEOUT).unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "timed out",
                format!("no answer within {} ms", CONNECT_TIMEOUT.as_millis()),
            )))
        });
        match first {
            Ok(connection) => {
                *state.lock_connection() = Some(connection);
                state.healthy.store(true, Ordering::SeqCst);
            }
            Err(source) if config.required => {
                return Err(Error::SharedStore {
                    context: format!("[shared] required, and cannot use {}", redacted(&url)),
                    source,
                });
            }
            Err(cause) => {
                state.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    redis = %redacted(&url),
                    "shared store unreachable at start-up ({cause}); using the local cache only until it answers"
                );
            }
        }
        runtime.spawn(evictions::listen(Arc::clone(&state), client.clone()));
        runtime.spawn(probe(Arc::clone(&state), client));
        Ok(Arc::new(SharedStore { state, runtime, _thread: thread }))
    }

    /// Operations that failed or ran past the budget since start-up (`slmkit_shared_errors_total`).
    pub fn errors(&self) -> u64 {
        self.state.errors.load(Ordering::Relaxed)
    }

    /// Whether the last operation (or probe) reached Redis.
    pub fn healthy(&self) -> bool {
        self.state.healthy.load(Ordering::SeqCst)
    }

    /// The URL it connects to (with any password: keep it out of messages, see [`redacted`]).
    pub fn url(&self) -> &str {
        &self.state.url
    }

    /// The section it was made from.
    pub fn config(&self) -> &SharedConfig {
        &self.state.config
    }

    pub(crate) fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.state.config.key_prefix)
    }

    /// Runs `op` on the connection within the budget; `None` (counted, and the outage
    /// warned about once) when Redis is known to be down, fails, or is too slow.
    pub(crate) async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.state.run(what, Duration::from_millis(self.state.config.budget_ms), op).await
    }

    pub(crate) fn state(&self) -> &Arc<State> {
        &self.state
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}

impl Drop for SharedStore {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.state.outage.notify_one();
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl State {
    fn lock_connection(&self) -> std::sync::MutexGuard<'_, Option<ConnectionManager>> {
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) async fn run<T, F, Fut>(&self, what: &'static str, budget: Duration, op: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.healthy.load(Ordering::SeqCst) {
            return None;
        }
        let connection = self.lock_connection().clone()?;
        match tokio::time::timeout(budget, op(connection)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(err)) => {
                self.failed(what, &err.to_string());
                None
            }
            Err(_) => {
                self.failed(what, &format!("no answer within the {} ms budget", budget.as_millis()));
                None
            }
        }
    }

    fn failed(&self, what: &str, cause: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.healthy.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                redis = %redacted(&self.url),
                "shared store unavailable ({what}: {cause}); using the local cache only until it answers again"
            );
            self.outage.notify_one();
        }
    }
}

async fn open(client: &redis::Client, budget_ms: u64) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(Duration::from_millis(budget_ms.max(1000))))
        .set_number_of_retries(1);
    let mut connection = ConnectionManager::new_with_config(client.clone(), config).await?;
    // A wrong password can pass the connect and fail the first command: ask one now.
    redis::cmd("PING").query_async::<String>(&mut connection).await?;
    Ok(connection)
}

/// While Redis is down: reconnect (or ping) with exponential backoff, and mark the store
/// healthy again when it answers.
async fn probe(state: Arc<State>, client: redis::Client) {
    let mut backoff = PROBE_START;
    loop {
        if state.closed.load(Ordering::SeqCst) {
            return;
        }
        if state.healthy.load(Ordering::SeqCst) {
            backoff = PROBE_START;
            state.outage.notified().await;
            continue;
        }
        tokio::time::sleep(backoff).await;
        let existing = state.lock_connection().clone();
        let answered = match existing {
            Some(mut connection) => {
                tokio::time::timeout(CONNECT_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut connection))
                    .await
                    .is_ok_and(|reply| reply.is_ok())
            }
            None => match tokio::time::timeout(CONNECT_TIMEOUT, open(&client, state.config.budget_ms)).await {
                Ok(Ok(connection)) => {
                    *state.lock_connection() = Some(connection);
                    true
                }
                _ => false,
            },
        };
        if answered {
            state.healthy.store(true, Ordering::SeqCst);
            tracing::info!(redis = %redacted(&state.url), "shared store reachable again");
        } else {
            backoff = (backoff * 2).min(PROBE_MAX);
        }
    }
}

const PROBE_START: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(5);

/// A current-thread runtime on its own thread, until the returned guard goes.
fn start_runtime() -> Result<(tokio::runtime::Handle, RuntimeThread)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io { context: "cannot start the shared store's runtime".into(), source })?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("slmkit-shared".into())
        .spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })
        .map_err(|source| Error::Io { context: "cannot start the shared store's thread".into(), source })?;
    Ok((handle, RuntimeThread { stop: Some(stop) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redacted("redis://:hunter2@127.0.0.1:6379/0"), "redis://***@127.0.0.1:6379/0");
        assert_eq!(redacted("rediss://user:pw@host:1"), "rediss://***@host:1");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn bad_sections_are_config_errors() {
        let mut config = SharedConfig::new("redis://127.0.0.1:1");
        config.budget_ms = 0;
        assert!(matches!(SharedStore::connect(&config), Err(Error::Config(message)) if message.contains("budget_ms")));
        let config = SharedConfig { redis_url: None, ..SharedConfig::new("") };
        assert!(matches!(config.url(), Err(Error::Config(_))));
        let config = SharedConfig {
            redis_url: None,
            redis_url_env: Some("SLMKIT_SURELY_UNSET_REDIS".into()),
            ..SharedConfig::new("")
        };
        assert!(matches!(config.url(), Err(Error::Config(message)) if message.contains("SLMKIT_SURELY_UNSET_REDIS")));
        assert!(matches!(SharedStore::connect(&SharedConfig::new("http://nope")), Err(Error::SharedStore { .. })));
    }
}
