//! A tier served by several OpenAI-compatible endpoints (llama.cpp's `llama-server`, vLLM,
//! other `slmkit serve` instances): each attempt goes to one of them.
//!
//! - **Balance:** the healthy endpoint with the fewest requests in flight (ties rotate).
//! - **Affinity:** calls whose system prompts begin alike prefer the same endpoint, so its KV
//!   prefix cache is reused, unless it is down or clearly busier than the least busy one.
//! - **Health:** consecutive failures (connect errors, 5xx, timeouts, malformed answers) take
//!   an endpoint out; a background prober (`/health`, else `{base_url}/models`) takes out one
//!   that stops answering, and puts a taken-out one back once the cooldown has passed and a
//!   probe succeeds. When every endpoint is out, all are tried (failing open beats failing all).
//! - **Retries:** `Visits` is one call's memory of the endpoints that failed it; the next
//!   attempt goes elsewhere while another endpoint is left.
//!
//! Each endpoint is a [`RemoteBackend`]: one HTTP attempt per call, as for a remote tier.

use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;

use crate::error::{Error, Result};
use crate::remote::{RemoteBackend, RemoteConfig};
use crate::types::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkStream, Role};

/// How a pool judges and balances its endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPolicy {
    /// Consecutive failed requests that take an endpoint out (default 3).
    pub eject_after_failures: u32,
    /// The least time an endpoint stays out (default 10 s).
    pub cooldown: Duration,
    /// How often the prober asks every endpoint (default 5 s).
    pub probe_interval: Duration,
    /// A probe that takes longer has failed (default 2 s).
    pub probe_timeout: Duration,
    /// An affine endpoint with more than this many requests in flight beyond the least busy
    /// one is passed over (default 2).
    pub affinity_slack: usize,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        PoolPolicy {
            eject_after_failures: 3,
            cooldown: Duration::from_secs(10),
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(2),
            affinity_slack: 2,
        }
    }
}

/// A pool's endpoints and policy.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// One per endpoint; all ask for the same model.
    pub endpoints: Vec<RemoteConfig>,
    pub policy: PoolPolicy,
}

/// One call's memory of the pool endpoints it used: the last one asked (for its attempt's
/// ledger record) and those that failed it (never asked again in this call while another
/// endpoint is left).
#[derive(Debug, Default)]
pub(crate) struct Visits {
    failed: Vec<Arc<str>>,
    last: Option<Arc<str>>,
}

impl Visits {
    /// The endpoint the latest attempt went to, taken (so the next attempt starts clean).
    pub(crate) fn take_last(&mut self) -> Option<String> {
        self.last.take().map(|name| name.to_string())
    }

    /// Settles the latest attempt's endpoint: after an error it might not repeat elsewhere,
    /// the endpoint is avoided for the rest of the call.
    pub(crate) fn attempt_failed(&mut self, err: &Error) {
        if let (true, Some(last)) = (another_endpoint_may_answer(err), &self.last) {
            if !self.failed.contains(last) {
                self.failed.push(Arc::clone(last));
            }
        }
    }

    fn avoids(&self, name: &str) -> bool {
        self.failed.iter().any(|failed| &**failed == name)
    }
}

/// Errors of one endpoint rather than of the request: another endpoint may answer.
fn another_endpoint_may_answer(err: &Error) -> bool {
    match err {
        Error::Api { status, .. } => *status == 429 || *status >= 500,
        Error::Connection { .. } | Error::Timeout { .. } | Error::MalformedResponse { .. } => true,
        Error::StreamInterrupted { source, .. } => another_endpoint_may_answer(source),
        _ => false,
    }
}

/// Errors that count against an endpoint's health (a 429 is the endpoint protecting itself,
/// and a 4xx the request's fault).
fn counts_against_health(err: &Error) -> bool {
    match err {
        Error::Api { status, .. } => *status >= 500,
        Error::StreamInterrupted { source, .. } => counts_against_health(source),
        other => another_endpoint_may_answer(other),
    }
}

#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    /// When the endpoint was taken out; `None` while it is in.
    out_since: Option<Instant>,
}

#[derive(Debug)]
struct Endpoint {
    /// The base URL, as configured: what the ledger records.
    name: Arc<str>,
    remote: RemoteBackend,
    probe_urls: [String; 2],
    api_key: Option<crate::remote::ApiKey>,
    in_flight: AtomicUsize,
    health: Mutex<Health>,
}

impl Endpoint {
    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_in(&self) -> bool {
        self.health().out_since.is_none()
    }
}

#[derive(Debug)]
struct PoolState {
    endpoints: Vec<Endpoint>,
    policy: PoolPolicy,
    model: String,
    /// Where the search for the least busy endpoint starts, so ties rotate.
    rotation: AtomicUsize,
}

/// A tier served by several OpenAI-compatible endpoints.
#[derive(Debug, Clone)]
pub struct PoolBackend {
    state: Arc<PoolState>,
    /// Stops the prober when the last clone goes.
    _prober: Arc<ProberStop>,
}

#[derive(Debug)]
struct ProberStop(Option<tokio::sync::oneshot::Sender<()>>);

impl PoolBackend {
    /// Checks the endpoints and starts the prober.
    ///
    /// # Errors
    /// [`Error::Config`] for no endpoints, one listed twice, different models, a URL that is
    /// not http(s) with a host, a zero `eject_after_failures`, or a prober thread that cannot
    /// start.
    pub fn new(config: PoolConfig) -> Result<Self> {
        let PoolConfig { endpoints, policy } = config;
        let Some(first) = endpoints.first() else {
            return Err(Error::Config("a pool needs at least one endpoint".into()));
        };
        if policy.eject_after_failures == 0 {
            return Err(Error::Config("eject_after_failures must be at least 1".into()));
        }
        let model = first.model.clone();
        let mut built: Vec<Endpoint> = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let name = endpoint.base_url.trim_end_matches('/').to_owned();
            if endpoint.model != model {
                return Err(Error::Config(format!(
                    "the pool's endpoints must ask for one model; {name} asks for {:?}, not {model:?}",
                    endpoint.model
                )));
            }
            let url = reqwest::Url::parse(&name)
                .map_err(|err| Error::Config(format!("pool endpoint {name:?} is not a URL: {err}")))?;
            let has_host = matches!(url.host_str(), Some(host) if !host.is_empty());
            if !has_host || !matches!(url.scheme(), "http" | "https") {
                return Err(Error::Config(format!("pool endpoint {name:?} must be an http(s) URL with a host")));
            }
            if built.iter().any(|other| *other.name == *name) {
                return Err(Error::Config(format!("pool endpoint {name} is listed twice")));
            }
            let origin = url.origin().ascii_serialization();
            let api_key = endpoint.api_key.clone();
            built.push(Endpoint {
                probe_urls: [format!("{origin}/health"), format!("{name}/models")],
                remote: RemoteBackend::new(endpoint)?,
                name: name.into(),
                api_key,
                in_flight: AtomicUsize::new(0),
                health: Mutex::new(Health::default()),
            });
        }
        let state = Arc::new(PoolState { endpoints: built, policy, model, rotation: AtomicUsize::new(0) });
        let stop = start_prober(Arc::downgrade(&state))?;
        Ok(PoolBackend { state, _prober: Arc::new(ProberStop(Some(stop))) })
    }

    /// The model every endpoint asks for.
    pub fn model(&self) -> &str {
        &self.state.model
    }

    /// The endpoints' base URLs, in configured order.
    pub fn endpoints(&self) -> Vec<String> {
        self.state.endpoints.iter().map(|endpoint| endpoint.name.to_string()).collect()
    }

    /// The endpoints in service now (not taken out), by base URL.
    pub fn healthy(&self) -> Vec<String> {
        self.state.endpoints.iter().filter(|e| e.is_in()).map(|e| e.name.to_string()).collect()
    }

    /// The endpoints' identities, sorted: answers from any of them are interchangeable.
    pub(crate) fn identity(&self) -> String {
        let mut identities: Vec<String> =
            self.state.endpoints.iter().map(|endpoint| endpoint.remote.identity()).collect();
        identities.sort();
        format!("pool[{}]", identities.join(","))
    }

    /// The endpoint a request would go to now, for a call that has avoided none: what each
    /// attempt pays to choose. For benchmarks.
    #[doc(hidden)]
    pub fn pick_for(&self, request: &ChatCompletionRequest) -> usize {
        self.pick(affinity_key(request), &Visits::default())
    }

    /// Whether an endpoint is left that has not failed this call.
    pub(crate) fn has_untried(&self, visits: &Visits) -> bool {
        self.state.endpoints.len() > 1 && self.state.endpoints.iter().any(|endpoint| !visits.avoids(&endpoint.name))
    }

    /// One non-streaming attempt on the endpoint [`PoolBackend::pick`] chooses.
    ///
    /// # Errors
    /// As [`RemoteBackend::create`].
    pub(crate) async fn create(&self, request: &ChatCompletionRequest, visits: &mut Visits) -> Result<ChatCompletion> {
        let index = self.pick(affinity_key(request), visits);
        let endpoint = &self.state.endpoints[index];
        visits.last = Some(Arc::clone(&endpoint.name));
        let _in_flight = InFlight::enter(&self.state, index);
        let answered = endpoint.remote.create(request).await;
        self.state.observe(index, answered.as_ref().err());
        answered
    }

    /// One streaming attempt; the endpoint counts it in flight until the stream ends or is
    /// dropped, and an error mid-stream counts against it.
    ///
    /// # Errors
    /// As [`RemoteBackend::create_stream`].
    pub(crate) async fn create_stream(
        &self,
        request: &ChatCompletionRequest,
        visits: &mut Visits,
    ) -> Result<ChunkStream> {
        let index = self.pick(affinity_key(request), visits);
        let endpoint = &self.state.endpoints[index];
        visits.last = Some(Arc::clone(&endpoint.name));
        let in_flight = InFlight::enter(&self.state, index);
        match endpoint.remote.create_stream(request).await {
            Ok(inner) => Ok(Box::pin(Watched { inner, in_flight, failed: false })),
            Err(err) => {
                self.state.observe(index, Some(&err));
                Err(err)
            }
        }
    }

    /// The endpoint for an attempt: among those in service that this call has not seen fail
    /// (else those not failed, else all), the affine one unless it is clearly busier, else the
    /// least busy.
    fn pick(&self, affinity: Option<u64>, visits: &Visits) -> usize {
        let endpoints = &self.state.endpoints;
        let count = endpoints.len();
        let untried = |index: &usize| !visits.avoids(&endpoints[*index].name);
        let mut candidates: Vec<usize> = (0..count).filter(|i| untried(i) && endpoints[*i].is_in()).collect();
        if candidates.is_empty() {
            candidates = (0..count).filter(untried).collect();
        }
        if candidates.is_empty() {
            candidates = (0..count).collect();
        }
        let load = |index: usize| endpoints[index].in_flight.load(Ordering::Relaxed);
        let start = self.state.rotation.fetch_add(1, Ordering::Relaxed);
        let least_busy = (0..candidates.len())
            .map(|offset| candidates[(start + offset) % candidates.len()])
            .min_by_key(|index| load(*index))
            .unwrap_or(0);
        let Some(key) = affinity else { return least_busy };
        // Rendezvous hashing: the affine endpoint moves only for the keys of one that leaves.
        let affine = candidates.iter().copied().max_by_key(|index| mix(key, *index)).unwrap_or(least_busy);
        match load(affine) <= load(least_busy) + self.state.policy.affinity_slack {
            true => affine,
            false => least_busy,
        }
    }
}

impl Drop for ProberStop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

impl PoolState {
    /// Passive health: a success clears the failure count (and brings back an endpoint that
    /// answered while out, as happens when every endpoint is out); enough failures in a row
    /// take it out.
    fn observe(&self, index: usize, err: Option<&Error>) {
        let endpoint = &self.endpoints[index];
        let mut health = endpoint.health();
        match err {
            None => {
                health.consecutive_failures = 0;
                if health.out_since.take().is_some() {
                    tracing::info!(endpoint = %endpoint.name, "pool endpoint answered again; back in service");
                }
            }
            Some(err) if counts_against_health(err) => {
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                if health.consecutive_failures >= self.policy.eject_after_failures && health.out_since.is_none() {
                    health.out_since = Some(Instant::now());
                    tracing::warn!(
                        endpoint = %endpoint.name,
                        failures = health.consecutive_failures,
                        "pool endpoint taken out after failing in a row ({err}); probing it for its return"
                    );
                }
            }
            Some(_) => {}
        }
    }

    /// Active health: a failed probe takes an endpoint out at once; a successful one puts it
    /// back once its cooldown has passed.
    fn probed(&self, index: usize, outcome: std::result::Result<(), String>) {
        let endpoint = &self.endpoints[index];
        let mut health = endpoint.health();
        match outcome {
            Ok(()) => {
                if health.out_since.is_some_and(|since| since.elapsed() >= self.policy.cooldown) {
                    health.out_since = None;
                    health.consecutive_failures = 0;
                    tracing::info!(endpoint = %endpoint.name, "pool endpoint passed its probe after the cooldown; back in service");
                }
            }
            Err(reason) => {
                if health.out_since.is_none() {
                    tracing::warn!(endpoint = %endpoint.name, "pool endpoint taken out: its probe failed ({reason})");
                }
                health.out_since = Some(Instant::now());
            }
        }
    }
}

/// Counts a request in flight on one endpoint until dropped.
#[derive(Debug)]
struct InFlight {
    state: Arc<PoolState>,
    index: usize,
}

impl InFlight {
    fn enter(state: &Arc<PoolState>, index: usize) -> Self {
        state.endpoints[index].in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { state: Arc::clone(state), index }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.endpoints[self.index].in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pool endpoint's stream: in flight until it ends, and its failures counted.
struct Watched {
    inner: ChunkStream,
    in_flight: InFlight,
    failed: bool,
}

impl Stream for Watched {
    type Item = Result<ChatCompletionChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Err(err))) = &polled {
            if !self.failed {
                self.failed = true;
                self.in_flight.state.observe(self.in_flight.index, Some(err));
            }
        }
        polled
    }
}

/// A hash of the start of the call's system (or developer) instructions; `None` without any.
/// Only the start is hashed: prompts that share it share at least that much KV prefix, and
/// hashing a 25k-token prompt whole on every attempt would cost more than the choice saves.
fn affinity_key(request: &ChatCompletionRequest) -> Option<u64> {
    const PREFIX_BYTES: usize = 4096;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut hashed = 0usize;
    for message in &request.messages {
        if !matches!(message.role, Role::System | Role::Developer) {
            break;
        }
        let text = message.text();
        let take = floor_char_boundary(&text, PREFIX_BYTES - hashed);
        text.as_bytes()[..take].hash(&mut hasher);
        hashed += take;
        if hashed >= PREFIX_BYTES {
            break;
        }
    }
    (hashed > 0).then(|| hasher.finish())
}

/// The longest prefix of `text` within `limit` bytes that ends on a character boundary.
fn floor_char_boundary(text: &str, limit: usize) -> usize {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// An endpoint's weight for an affinity key (rendezvous hashing).
fn mix(key: u64, index: usize) -> u64 {
    // splitmix64's finaliser: cheap, and spreads consecutive indices.
    let mut value = key ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

/// The prober: its own thread and runtime, so it runs whatever runtime (if any) the callers
/// use. It stops when the pool goes.
fn start_prober(state: std::sync::Weak<PoolState>) -> Result<tokio::sync::oneshot::Sender<()>> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Config(format!("cannot start the pool's prober: {err}")))?;
    let Some(policy) = state.upgrade().map(|state| state.policy.clone()) else { return Ok(stop) };
    let http = reqwest::Client::builder()
        .timeout(policy.probe_timeout)
        .build()
        .map_err(|err| Error::Config(format!("cannot build the pool prober's HTTP client: {err}")))?;
    std::thread::Builder::new()
        .name("slmkit-pool-prober".into())
        .spawn(move || {
            runtime.block_on(async move {
                // Which probe each endpoint answers: `/health` until it says it has none.
                let mut probe_models: Vec<bool> = Vec::new();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        () = tokio::time::sleep(policy.probe_interval) => {}
                    }
                    let Some(state) = state.upgrade() else { return };
                    probe_models.resize(state.endpoints.len(), false);
                    let probes = state
                        .endpoints
                        .iter()
                        .zip(&probe_models)
                        .map(|(endpoint, models)| probe(&http, endpoint, *models));
                    let outcomes = futures::future::join_all(probes).await;
                    for (index, (outcome, uses_models)) in outcomes.into_iter().enumerate() {
                        probe_models[index] = uses_models;
                        state.probed(index, outcome);
                    }
                }
            });
        })
        .map_err(|err| Error::Config(format!("cannot start the pool's prober thread: {err}")))?;
    Ok(stop)
}

/// Asks one endpoint whether it is up: `GET /health` (llama.cpp, vLLM), or, once that is
/// 404/405, `GET {base_url}/models` (any OpenAI-compatible server). Returns the outcome and
/// whether the endpoint is probed through `/models` from now on.
async fn probe(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    uses_models: bool,
) -> (std::result::Result<(), String>, bool) {
    let get = |url: &str| {
        let mut request = http.get(url);
        if let Some(key) = &endpoint.api_key {
            request = request.bearer_auth(key.expose());
        }
        request.send()
    };
    if !uses_models {
        match get(&endpoint.probe_urls[0]).await {
            Ok(response) if response.status().is_success() => return (Ok(()), false),
            Ok(response) if matches!(response.status().as_u16(), 404 | 405) => {}
            Ok(response) => return (Err(format!("/health answered {}", response.status())), false),
            Err(err) => return (Err(probe_failure(&err)), false),
        }
    }
    match get(&endpoint.probe_urls[1]).await {
        Ok(response) if response.status().is_success() => (Ok(()), true),
        Ok(response) => (Err(format!("/models answered {}", response.status())), true),
        Err(err) => (Err(probe_failure(&err)), true),
    }
}

fn probe_failure(err: &reqwest::Error) -> String {
    match err.is_timeout() {
        true => "the probe timed out".into(),
        false => format!("the probe failed: {}", crate::remote::error_chain(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChatMessage;

    fn pool(urls: &[&str]) -> PoolBackend {
        let endpoints = urls.iter().map(|url| RemoteConfig::new(*url, "m")).collect();
        PoolBackend::new(PoolConfig { endpoints, policy: PoolPolicy::default() }).unwrap()
    }

    fn with_system(system: &str) -> ChatCompletionRequest {
        ChatCompletionRequest::new(vec![ChatMessage::system(system), ChatMessage::user("hi")])
    }

    #[test]
    fn bad_endpoint_lists_are_config_errors() {
        let config = |urls: &[&str]| PoolConfig {
            endpoints: urls.iter().map(|url| RemoteConfig::new(*url, "m")).collect(),
            policy: PoolPolicy::default(),
        };
        for (urls, says) in [
            (&[][..], "at least one endpoint"),
            (&["ftp://h/v1"][..], "http(s)"),
            (&["not a url"][..], "not a URL"),
            (&["http://h:1/v1", "http://h:1/v1/"][..], "listed twice"),
        ] {
            match PoolBackend::new(config(urls)) {
                Err(Error::Config(message)) => assert!(message.contains(says), "{urls:?}: {message}"),
                other => panic!("{urls:?}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn ties_rotate_and_load_decides() {
        let pool = pool(&["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1"]);
        let request = ChatCompletionRequest::new(vec![ChatMessage::user("no system prompt")]);
        let mut seen: Vec<usize> = (0..3).map(|_| pool.pick_for(&request)).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2], "idle endpoints share the work");
        let _busy = [InFlight::enter(&pool.state, 0), InFlight::enter(&pool.state, 2)];
        assert!((0..5).all(|_| pool.pick_for(&request) == 1), "the idle endpoint gets it");
    }

    #[test]
    fn affinity_holds_until_the_endpoint_is_clearly_busier_or_failed() {
        let pool = pool(&["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1"]);
        let request = with_system("You are a careful extractor.");
        let affine = pool.pick_for(&request);
        assert!((0..10).all(|_| pool.pick_for(&request) == affine));
        let spread: std::collections::HashSet<usize> =
            (0..40).map(|n| pool.pick_for(&with_system(&format!("prompt {n}")))).collect();
        assert_eq!(spread.len(), 3, "different prompts land on different endpoints");
        let slack = pool.state.policy.affinity_slack;
        let mut load: Vec<InFlight> = (0..slack).map(|_| InFlight::enter(&pool.state, affine)).collect();
        assert_eq!(pool.pick_for(&request), affine, "a little busier keeps its affinity");
        load.push(InFlight::enter(&pool.state, affine));
        assert_ne!(pool.pick_for(&request), affine, "clearly busier loses it");
        drop(load);
        let mut visits = Visits { last: Some(Arc::clone(&pool.state.endpoints[affine].name)), failed: Vec::new() };
        visits.attempt_failed(&Error::Connection { url: String::new(), reason: "refused".into(), source: None });
        assert_ne!(pool.pick(affinity_key(&request), &visits), affine, "a failed endpoint is not reused");
    }

    #[test]
    fn failures_in_a_row_take_an_endpoint_out_and_a_success_clears_them() {
        let pool = pool(&["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]);
        let server_error = Error::Api {
            url: String::new(),
            status: 503,
            message: String::new(),
            body: String::new(),
            retry_after: None,
        };
        let bad_request = Error::Api {
            url: String::new(),
            status: 400,
            message: String::new(),
            body: String::new(),
            retry_after: None,
        };
        let state = &pool.state;
        state.observe(0, Some(&server_error));
        state.observe(0, Some(&server_error));
        state.observe(0, None);
        state.observe(0, Some(&server_error));
        state.observe(0, Some(&bad_request));
        assert_eq!(pool.healthy().len(), 2, "a success in between and a 400 do not count");
        state.observe(0, Some(&server_error));
        state.observe(0, Some(&server_error));
        assert_eq!(pool.healthy(), ["http://127.0.0.1:2/v1"]);
        state.probed(0, Ok(()));
        assert_eq!(pool.healthy().len(), 1, "not back before the cooldown");
        state.probed(1, Err("refused".into()));
        assert!(pool.healthy().is_empty());
        let request = ChatCompletionRequest::new(vec![ChatMessage::user("x")]);
        let picked: std::collections::HashSet<usize> = (0..4).map(|_| pool.pick_for(&request)).collect();
        assert_eq!(picked.len(), 2, "with every endpoint out, all are tried");
    }
}
