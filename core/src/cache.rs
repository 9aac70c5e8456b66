//! The response cache (on `moka`): exact-match answers for requests that would get the same
//! answer again.
//!
//! The key is a SHA-256 of everything that changes the answer (the tier and its model, the
//! messages, tools, tool choice, response format, sampling parameters, stop sequences, seed,
//! and any field slmkit does not know) and of nothing that does not (`stream`,
//! `stream_options`, `user`, metadata the router ignores). Remote tiers enter the key by URL,
//! model and a hash of their API key, never the key itself.
//!
//! With a fleet's shared store ([`crate::shared`]) this cache is L1 and Redis is L2: a miss
//! here reads Redis under an id made of the request digest and the backends' identities (so
//! only processes with the same backends share answers); stored answers are written to both
//! (with the same TTL; answers over the store's entry bound stay local); evictions delete in
//! both; and identical concurrent calls across the fleet share one run (single flight).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::hints::{HINT_FIELD, HINT_METADATA_PREFIX};
use crate::metadata::strip;
use crate::shared::{LockOutcome, SharedStore, Wait};
use crate::tier::Tier;
use crate::types::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, FinishReason};

/// The `[cache]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Default true.
    pub enabled: bool,
    /// Default 10,000 answers.
    pub max_entries: u64,
    /// Default 256 MiB, counting each answer's JSON size.
    pub max_bytes: u64,
    /// Seconds an answer stays; default 3,600. 0 means no expiry.
    pub ttl_s: f64,
    /// Cache only requests that would repeat their answer: temperature 0, or a seed given.
    /// Default true; false caches every request.
    pub deterministic_only: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_entries: 10_000,
            max_bytes: 256 << 20,
            ttl_s: 3600.0,
            deterministic_only: true,
        }
    }
}

/// A stored answer and what it cost to get.
#[derive(Debug, Clone)]
pub(crate) struct CachedAnswer {
    pub completion: ChatCompletion,
    /// The chunks as first streamed, when the answer came from a stream.
    pub chunks: Option<Vec<ChatCompletionChunk>>,
    pub tier: Tier,
    pub model: String,
    /// Every attempt of the call that produced it, retries included.
    pub cost_usd: f64,
    pub counterfactual_llm_cost_usd: f64,
    /// Why the call that made it was routed where it was: a hit's metadata repeats them.
    pub reasons: Vec<String>,
    bytes: u32,
}

impl CachedAnswer {
    /// Whether the answer ran to its end. One cut off by `max_tokens` may be half an answer (a
    /// JSON document without its tail) that its caller then rejects, as MetaGPT does with a
    /// design cut off mid-JSON; it is served, but never stored for another call.
    pub(crate) fn is_complete(&self) -> bool {
        self.completion.choices.iter().all(|choice| choice.finish_reason != FinishReason::Length)
    }

    pub(crate) fn new(
        mut completion: ChatCompletion,
        chunks: Option<Vec<ChatCompletionChunk>>,
        made_by: AnswerOrigin,
    ) -> Self {
        strip(&mut completion.extra);
        let chunks = chunks.map(|chunks| {
            chunks
                .into_iter()
                .map(|mut chunk| {
                    strip(&mut chunk.extra);
                    chunk
                })
                .collect::<Vec<_>>()
        });
        let bytes = serde_json::to_vec(&completion).map_or(0, |json| json.len())
            + chunks.as_ref().map_or(0, |chunks| serde_json::to_vec(chunks).map_or(0, |json| json.len()));
        CachedAnswer {
            completion,
            chunks,
            tier: made_by.tier,
            model: made_by.model,
            cost_usd: made_by.cost_usd,
            counterfactual_llm_cost_usd: made_by.counterfactual_llm_cost_usd,
            reasons: made_by.reasons,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        }
    }
}

/// A cached answer as the fleet's store holds it (JSON).
#[derive(Serialize, Deserialize)]
struct StoredAnswer {
    key: String,
    completion: ChatCompletion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunks: Option<Vec<ChatCompletionChunk>>,
    tier: Tier,
    model: String,
    cost_usd: f64,
    counterfactual_llm_cost_usd: f64,
    reasons: Vec<String>,
}

impl StoredAnswer {
    fn encode(key: &CacheKey, answer: &CachedAnswer) -> Option<Vec<u8>> {
        serde_json::to_vec(&StoredAnswer {
            key: hex(key),
            completion: answer.completion.clone(),
            chunks: answer.chunks.clone(),
            tier: answer.tier,
            model: answer.model.clone(),
            cost_usd: answer.cost_usd,
            counterfactual_llm_cost_usd: answer.counterfactual_llm_cost_usd,
            reasons: answer.reasons.clone(),
        })
        .ok()
    }

    /// The answer and its key; `None` for bytes that are not one (another version's, or
    /// damaged).
    fn decode(bytes: &[u8]) -> Option<(CacheKey, CachedAnswer)> {
        let stored: StoredAnswer = serde_json::from_slice(bytes).ok()?;
        let key = unhex(&stored.key)?;
        let origin = AnswerOrigin {
            tier: stored.tier,
            model: stored.model,
            cost_usd: stored.cost_usd,
            counterfactual_llm_cost_usd: stored.counterfactual_llm_cost_usd,
            reasons: stored.reasons,
        };
        Some((key, CachedAnswer::new(stored.completion, stored.chunks, origin)))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<CacheKey> {
    let mut key = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(key)
}

/// The fleet's store as this cache's L2.
struct Fleet {
    store: Arc<SharedStore>,
    /// A hash of the backends' identities: answers are shared only between processes whose
    /// tiers are the same.
    scope: [u8; 32],
}

impl Fleet {
    fn id(&self, digest: &RequestDigest) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.scope);
        hasher.update(digest.0);
        hex(&hasher.finalize())
    }
}

/// How many times a fleet single flight races again for a lock whose holder failed before
/// making the call here.
const FLEET_RACES: usize = 3;

/// Who made a cached answer, and at what cost.
#[derive(Debug, Clone)]
pub(crate) struct AnswerOrigin {
    pub tier: Tier,
    pub model: String,
    /// Every attempt of the call that produced it, retries included.
    pub cost_usd: f64,
    pub counterfactual_llm_cost_usd: f64,
    pub reasons: Vec<String>,
}

/// Where an answer is stored: a hash of the request and of the tier and backend that
/// answered it.
pub(crate) type CacheKey = [u8; 32];

/// A hash of everything in a request that changes the answer, before routing. Computed once
/// per call; the cache key adds the routed tier and its backend to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestDigest([u8; 32]);

/// The cache itself: bounded by entries and bytes (whichever binds first), with a TTL.
pub(crate) struct ResponseCache {
    entries: moka::future::Cache<CacheKey, Arc<CachedAnswer>>,
    /// The key each request digest was last stored under, so a repeat finds its answer
    /// without being routed again (routing may tokenize the whole prompt).
    routes: moka::future::Cache<RequestDigest, CacheKey>,
    config: CacheConfig,
    fleet: Option<Fleet>,
    /// The digest behind each fleet id stored here, so a fleet eviction finds its entry.
    fleet_digests: moka::future::Cache<String, RequestDigest>,
}

impl ResponseCache {
    /// # Errors
    /// [`Error::Config`] for a negative or non-finite TTL or zero bounds.
    pub(crate) fn new(config: CacheConfig) -> Result<Self> {
        if !config.ttl_s.is_finite() || config.ttl_s < 0.0 || config.max_entries == 0 || config.max_bytes == 0 {
            return Err(Error::Config("cache ttl_s must be >= 0 and max_entries, max_bytes > 0".into()));
        }
        // One policy enforces both bounds: every entry weighs at least max_bytes / max_entries,
        // so no more than max_entries fit, and the weights (at least the bytes) never pass
        // max_bytes.
        let floor = u32::try_from((config.max_bytes / config.max_entries).max(1)).unwrap_or(u32::MAX);
        let mut builder = moka::future::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(move |_, answer: &Arc<CachedAnswer>| answer.bytes.max(floor));
        let mut routes = moka::future::Cache::builder().max_capacity(config.max_entries);
        if config.ttl_s > 0.0 {
            builder = builder.time_to_live(Duration::from_secs_f64(config.ttl_s));
            routes = routes.time_to_live(Duration::from_secs_f64(config.ttl_s));
        }
        let mut digests = moka::future::Cache::builder().max_capacity(config.max_entries);
        if config.ttl_s > 0.0 {
            digests = digests.time_to_live(Duration::from_secs_f64(config.ttl_s));
        }
        Ok(ResponseCache {
            entries: builder.build(),
            routes: routes.build(),
            config,
            fleet: None,
            fleet_digests: digests.build(),
        })
    }

    /// Makes `store` this cache's L2, shared with the processes whose backends have the same
    /// `identities`.
    pub(crate) fn shared_through(mut self, store: Arc<SharedStore>, identities: &[String]) -> Self {
        let mut hasher = Sha256::new();
        for identity in identities {
            hasher.update(identity.as_bytes());
            hasher.update([0]);
        }
        let scope: [u8; 32] = hasher.finalize().into();
        // Another process rejected an answer: drop this process's copy of it too.
        let (entries, routes) = (self.entries.clone(), self.routes.clone());
        let fleet = Fleet { store: Arc::clone(&store), scope };
        let digests = self.fleet_digests.clone();
        store.on_eviction(Arc::new(move |id: String| {
            let (entries, routes, digests) = (entries.clone(), routes.clone(), digests.clone());
            Box::pin(async move {
                if let Some(digest) = digests.remove(&id).await {
                    if let Some(key) = routes.remove(&digest).await {
                        entries.invalidate(&key).await;
                    }
                }
            })
        }));
        self.fleet = Some(fleet);
        self
    }

    fn ttl(&self) -> Option<Duration> {
        (self.config.ttl_s > 0.0).then(|| Duration::from_secs_f64(self.config.ttl_s))
    }

    /// Reads the fleet's answer under `id`; a stored value that is not an answer is deleted.
    async fn fleet_answer(&self, fleet: &Fleet, id: &str) -> Option<(CacheKey, CachedAnswer)> {
        let bytes = fleet.store.get_answer(id).await?;
        let decoded = StoredAnswer::decode(&bytes);
        if decoded.is_none() {
            fleet.store.delete_answer(id).await;
        }
        decoded
    }

    async fn fleet_store(&self, fleet: &Fleet, id: &str, key: &CacheKey, answer: &CachedAnswer) {
        if !answer.is_complete() {
            return;
        }
        if let Some(bytes) = StoredAnswer::encode(key, answer) {
            fleet.store.put_answer(id, bytes, self.ttl()).await;
        }
    }

    /// Whether `request` may be served from, and stored in, the cache.
    pub(crate) fn admits(&self, request: &ChatCompletionRequest) -> bool {
        self.config.enabled
            && (!self.config.deterministic_only || request.temperature == Some(0.0) || request.seed.is_some())
    }

    /// The answer stored for a request with this digest, found without routing it: here,
    /// else in the fleet's store (and then kept here too).
    pub(crate) async fn lookup(&self, digest: &RequestDigest) -> Option<Arc<CachedAnswer>> {
        if let Some(answer) = self.lookup_local(digest).await {
            return Some(answer);
        }
        let fleet = self.fleet.as_ref()?;
        let (key, answer) = self.fleet_answer(fleet, &fleet.id(digest)).await?;
        let answer = Arc::new(answer);
        self.entries.insert(key, Arc::clone(&answer)).await;
        self.remember(*digest, key).await;
        Some(answer)
    }

    /// As [`ResponseCache::lookup`], in this process only: never waits on the network.
    pub(crate) async fn lookup_local(&self, digest: &RequestDigest) -> Option<Arc<CachedAnswer>> {
        let key = self.routes.get(digest).await?;
        self.entries.get(&key).await
    }

    /// Stores `answer` under `key` (and in the fleet's store), and remembers the key for the
    /// request's digest.
    pub(crate) async fn insert(&self, digest: RequestDigest, key: CacheKey, answer: CachedAnswer) {
        if !answer.is_complete() {
            return;
        }
        if let Some(fleet) = &self.fleet {
            self.fleet_store(fleet, &fleet.id(&digest), &key, &answer).await;
        }
        self.entries.insert(key, Arc::new(answer)).await;
        self.remember(digest, key).await;
    }

    /// Removes the answers stored under `keys` and the route from `digest` to them, here and
    /// fleet-wide: a caller rejected the answer, so it must never be served again.
    pub(crate) async fn evict(&self, digest: &RequestDigest, keys: &[CacheKey]) {
        if let Some(fleet) = &self.fleet {
            fleet.store.evict_everywhere(&fleet.id(digest)).await;
        }
        self.routes.invalidate(digest).await;
        for key in keys {
            self.entries.invalidate(key).await;
        }
    }

    /// Remembers that requests with `digest` are stored under `key`.
    pub(crate) async fn remember(&self, digest: RequestDigest, key: CacheKey) {
        if let Some(fleet) = &self.fleet {
            self.fleet_digests.insert(fleet.id(&digest), digest).await;
        }
        self.routes.insert(digest, key).await;
    }

    /// Returns the cached answer, or runs `init` once for all concurrent callers with the same
    /// key (across the fleet, with a shared store), storing its answer if it succeeds. An
    /// answer another process made comes back without `init` running.
    pub(crate) async fn get_or_run<F>(
        &self,
        digest: &RequestDigest,
        key: CacheKey,
        init: F,
    ) -> std::result::Result<Arc<CachedAnswer>, Arc<Error>>
    where
        F: std::future::Future<Output = Result<CachedAnswer>>,
    {
        let answer = self
            .entries
            .try_get_with(key, async {
                match &self.fleet {
                    Some(fleet) => self.fleet_run(fleet, digest, &key, init).await,
                    None => init.await.map(Arc::new),
                }
            })
            .await?;
        // The identical calls that waited on this one share it; later ones must not.
        if !answer.is_complete() {
            self.entries.invalidate(&key).await;
        }
        Ok(answer)
    }

    /// One run of `init` across the fleet: take the request's lock and run it, or wait for
    /// the holder's answer. Redis away, or a wait past the lock's expiry: run it here.
    async fn fleet_run<F>(
        &self,
        fleet: &Fleet,
        digest: &RequestDigest,
        key: &CacheKey,
        init: F,
    ) -> Result<Arc<CachedAnswer>>
    where
        F: std::future::Future<Output = Result<CachedAnswer>>,
    {
        let id = fleet.id(digest);
        for _ in 0..FLEET_RACES {
            match fleet.store.lock(&id).await {
                LockOutcome::Acquired(token) => {
                    // The last holder may have finished between this call's lookup and now.
                    if let Some((_, answer)) = self.fleet_answer(fleet, &id).await {
                        fleet.store.release(&id, &token).await;
                        return Ok(Arc::new(answer));
                    }
                    let made = init.await;
                    if let Ok(answer) = &made {
                        self.fleet_store(fleet, &id, key, answer).await;
                    }
                    fleet.store.release(&id, &token).await;
                    return made.map(Arc::new);
                }
                LockOutcome::Unavailable => break,
                LockOutcome::Held => match fleet.store.wait_for(&id).await {
                    Wait::Answer(bytes) => match StoredAnswer::decode(&bytes) {
                        Some((_, answer)) => return Ok(Arc::new(answer)),
                        None => {
                            fleet.store.delete_answer(&id).await;
                            break;
                        }
                    },
                    Wait::Released => {}
                    Wait::GaveUp => break,
                },
            }
        }
        init.await.map(Arc::new)
    }

    /// Entries stored now (after pending maintenance).
    pub(crate) async fn len(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }
}

/// The cache key of `request` served by `tier`, whose backend is described by `identity`.
#[cfg(test)]
pub(crate) fn cache_key(request: &ChatCompletionRequest, tier: Tier, identity: &str) -> CacheKey {
    key_for(&digest(request), tier, identity)
}

/// The key of a request with `digest`, served by `tier`, whose backend is `identity`.
pub(crate) fn key_for(digest: &RequestDigest, tier: Tier, identity: &str) -> CacheKey {
    let mut hasher = Sha256::new();
    hasher.update(digest.0);
    hasher.update(tier.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(identity.as_bytes());
    hasher.finalize().into()
}

/// The digest of everything in `request` that changes the answer.
pub(crate) fn digest(request: &ChatCompletionRequest) -> RequestDigest {
    let mut extra = request.extra.clone();
    // Routing hints change where a call goes, so they count; other metadata does not.
    let hints: Map<String, Value> = request
        .metadata
        .iter()
        .flatten()
        .filter(|(key, _)| key.starts_with(HINT_METADATA_PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if let Some(hint) = extra.remove(HINT_FIELD) {
        extra.insert("slmkit_hint".into(), hint);
    }
    let identity_fields = json!({
        "messages": request.messages,
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "parallel_tool_calls": request.parallel_tool_calls,
        "response_format": request.response_format,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_output_tokens(),
        "stop": request.stop_sequences(),
        "seed": request.seed,
        "n": request.n,
        "metadata_hints": hints,
        "extra": extra,
    });
    let mut canonical = String::new();
    write_canonical(&identity_fields, &mut canonical);
    RequestDigest(Sha256::digest(canonical.as_bytes()).into())
}

/// JSON with object keys sorted, so key order never changes the hash.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&fields[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A fingerprint of an API key: enough to keep two accounts' answers apart, useless to a thief.
pub(crate) fn key_fingerprint(key: &str) -> String {
    let digest = Sha256::digest(format!("slmkit-cache-key:{key}").as_bytes());
    digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChatMessage, ResponseFormat, Stop, StreamOptions, Tool, ToolChoice};

    fn base() -> ChatCompletionRequest {
        let mut request = ChatCompletionRequest::new(vec![ChatMessage::system("s"), ChatMessage::user("u")]);
        request.temperature = Some(0.0);
        request
    }

    type Mutation = Box<dyn Fn(&mut ChatCompletionRequest)>;

    fn key(request: &ChatCompletionRequest) -> CacheKey {
        cache_key(request, Tier::Slm, "local:model.gguf")
    }

    #[test]
    fn every_answer_changing_field_changes_the_key() {
        let original = key(&base());
        let variants: Vec<(&str, Mutation)> = vec![
            ("system prompt", Box::new(|r| r.messages[0] = ChatMessage::system("S"))),
            ("user message", Box::new(|r| r.messages[1] = ChatMessage::user("v"))),
            ("extra message", Box::new(|r| r.messages.push(ChatMessage::assistant("a")))),
            ("tools", Box::new(|r| r.tools = Some(vec![Tool::function("f", "d", json!({"type": "object"}))]))),
            ("tool_choice", Box::new(|r| r.tool_choice = Some(ToolChoice::named("f")))),
            ("response_format", Box::new(|r| r.response_format = Some(ResponseFormat::JsonObject))),
            ("temperature", Box::new(|r| r.temperature = Some(0.5))),
            ("top_p", Box::new(|r| r.top_p = Some(0.9))),
            ("max_tokens", Box::new(|r| r.max_tokens = Some(10))),
            ("stop", Box::new(|r| r.stop = Some(Stop::One("x".into())))),
            ("seed", Box::new(|r| r.seed = Some(1))),
            ("unknown field", Box::new(|r| drop(r.extra.insert("frequency_penalty".into(), json!(0.5))))),
            ("route hint", Box::new(|r| drop(r.extra.insert("slmkit".into(), json!({"route": "llm"}))))),
            ("task tag", Box::new(|r| r.metadata = Some(Map::from_iter([("slmkit_task".into(), json!("WriteCode"))])))),
        ];
        for (name, change) in variants {
            let mut request = base();
            change(&mut request);
            assert_ne!(key(&request), original, "changing {name} must miss");
        }
        assert_ne!(cache_key(&base(), Tier::Llm, "local:model.gguf"), original, "the tier");
        assert_ne!(cache_key(&base(), Tier::Slm, "local:other.gguf"), original, "the model");
    }

    #[test]
    fn fields_that_do_not_change_the_answer_keep_the_key() {
        let original = key(&base());
        let variants: Vec<(&str, Mutation)> = vec![
            ("stream", Box::new(|r| r.stream = Some(true))),
            (
                "stream_options",
                Box::new(|r| {
                    r.stream_options = Some(StreamOptions { include_usage: Some(true), ..Default::default() })
                }),
            ),
            ("user", Box::new(|r| r.user = Some("alice".into()))),
            ("metadata", Box::new(|r| r.metadata = Some(Map::from_iter([("trace_id".into(), json!("abc"))])))),
            ("max_completion_tokens alias", Box::new(|r| r.max_completion_tokens = None)),
        ];
        for (name, change) in variants {
            let mut request = base();
            change(&mut request);
            assert_eq!(key(&request), original, "changing {name} must still hit");
        }
        let mut via_alias = base();
        via_alias.max_completion_tokens = Some(10);
        let mut via_legacy = base();
        via_legacy.max_tokens = Some(10);
        assert_eq!(key(&via_alias), key(&via_legacy), "max_tokens and max_completion_tokens mean the same");
    }

    #[test]
    fn key_order_inside_schemas_does_not_matter() {
        let mut a = base();
        a.response_format = Some(ResponseFormat::json_schema(
            "s",
            serde_json::from_str(r#"{"type":"object","properties":{"x":{"type":"string"}}}"#).unwrap(),
        ));
        let mut b = base();
        b.response_format = Some(ResponseFormat::json_schema(
            "s",
            serde_json::from_str(r#"{"properties":{"x":{"type":"string"}},"type":"object"}"#).unwrap(),
        ));
        assert_eq!(key(&a), key(&b));
    }

    #[test]
    fn fingerprints_hide_the_key() {
        let print = key_fingerprint("sk-secret-123");
        assert!(!print.contains("secret"));
        assert_eq!(print.len(), 16);
        assert_ne!(print, key_fingerprint("sk-secret-124"));
    }
}
