//! Where a tier's answers come from: a local engine or a remote endpoint, and its price.

use serde::Serialize;

use crate::error::Result;
use crate::ledger::Pricing;
use crate::local::LocalEngine;
use crate::pool::{PoolBackend, Visits};
use crate::remote::RemoteBackend;
use crate::types::{ChatCompletion, ChatCompletionRequest, ChunkStream};

/// Where a tier's answers come from.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A GGUF model in this process.
    Local(LocalEngine),
    /// An OpenAI-compatible endpoint.
    Remote(RemoteBackend),
    /// Several OpenAI-compatible endpoints serving one model, balanced.
    Pool(PoolBackend),
}

/// The kind of a [`Backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A GGUF model in this process.
    Local,
    /// An OpenAI-compatible endpoint.
    Remote,
    /// Several OpenAI-compatible endpoints.
    Pool,
}

impl BackendKind {
    /// `local`, `remote` or `pool`, as the ledger records it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Remote => "remote",
            BackendKind::Pool => "pool",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Backend {
    /// Local, remote or pool.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Local(_) => BackendKind::Local,
            Backend::Remote(_) => BackendKind::Remote,
            Backend::Pool(_) => BackendKind::Pool,
        }
    }

    /// The model this backend serves.
    pub fn model(&self) -> String {
        match self {
            Backend::Local(engine) => engine.model().name().to_owned(),
            Backend::Remote(remote) => remote.model().to_owned(),
            Backend::Pool(pool) => pool.model().to_owned(),
        }
    }

    /// The id a request's `model` can name to force this tier: a local model's id (its file's
    /// stem). Remote tiers have none: their model names (`gpt-4o`) are what frameworks send
    /// anyway, so those calls are routed.
    pub fn forcing_id(&self) -> Option<&str> {
        match self {
            Backend::Local(engine) => Some(engine.model().id()),
            Backend::Remote(_) | Backend::Pool(_) => None,
        }
    }

    /// What identifies this backend's answers in the cache key: the model file, or the
    /// endpoint, model and a fingerprint of the API key (every endpoint's, for a pool).
    pub(crate) fn identity(&self) -> String {
        match self {
            Backend::Local(engine) => format!("local:{}", engine.model().path().display()),
            Backend::Remote(remote) => remote.identity(),
            Backend::Pool(pool) => pool.identity(),
        }
    }

    /// Whether a failed attempt could go to another endpoint: a pool with one that has not
    /// failed this call. A single backend that failed would likely fail again.
    pub(super) fn has_untried_endpoint(&self, visits: &Visits) -> bool {
        matches!(self, Backend::Pool(pool) if pool.has_untried(visits))
    }

    /// One attempt. `visits` is the call's memory of a pool's endpoints (the others ignore it).
    pub(super) async fn create(&self, request: &ChatCompletionRequest, visits: &mut Visits) -> Result<ChatCompletion> {
        match self {
            Backend::Local(engine) => engine.create(request).await,
            Backend::Remote(remote) => remote.create(request).await,
            Backend::Pool(pool) => pool.create(request, visits).await,
        }
    }

    pub(super) async fn create_stream(
        &self,
        request: &ChatCompletionRequest,
        visits: &mut Visits,
    ) -> Result<ChunkStream> {
        match self {
            Backend::Local(engine) => engine.create_stream(request).await,
            Backend::Remote(remote) => remote.create_stream(request).await,
            Backend::Pool(pool) => pool.create_stream(request, visits).await,
        }
    }
}

/// A tier: a backend and what it costs.
#[derive(Debug, Clone)]
pub struct TierConfig {
    pub backend: Backend,
    pub pricing: Pricing,
}
