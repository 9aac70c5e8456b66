//! A call prepared once: the request checked, and hashed when the cache takes it, with its
//! per-call timeout.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use super::reask::ReaskKey;
use crate::cache::{RequestDigest, ResponseCache};
use crate::error::{Error, Result};
use crate::types::ChatCompletionRequest;

/// A request checked once and, when the response cache takes it, hashed once: what
/// [`Client::cached`](super::Client::cached), [`Client::create_prepared`](super::Client::create_prepared)
/// and [`Client::create_stream_prepared`](super::Client::create_stream_prepared)
/// take. Made by [`Client::prepare`](super::Client::prepare) or
/// [`Client::prepare_owned`](super::Client::prepare_owned).
pub struct Prepared<'r> {
    pub(super) request: Cow<'r, ChatCompletionRequest>,
    /// Where this request's answer is looked up and stored, when the cache takes it.
    pub(super) slot: Option<CacheSlot>,
    pub(super) timeout: Option<Duration>,
    /// How a re-send of this request would be recognised, when re-asks are tracked for it.
    pub(super) reask: Option<ReaskKey>,
}

pub(super) struct CacheSlot {
    pub(super) cache: Arc<ResponseCache>,
    pub(super) digest: RequestDigest,
}

impl Prepared<'_> {
    /// The request.
    pub fn request(&self) -> &ChatCompletionRequest {
        &self.request
    }

    /// A deadline over the whole call, every attempt and backoff included (for a stream: until
    /// it starts), as `timeout=` on an `openai` call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// As [`Prepared::with_timeout`], from the seconds a binding was given.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for seconds that are not a positive number.
    pub fn with_timeout_s(self, seconds: Option<f64>) -> Result<Self> {
        match seconds {
            None => Ok(self),
            Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
                Ok(self.with_timeout(Duration::from_secs_f64(seconds)))
            }
            Some(seconds) => Err(Error::invalid_request(
                format!("timeout must be a positive number of seconds, got {seconds}"),
                Some("timeout"),
            )),
        }
    }
}

/// `call` within `timeout`, if there is one; past it, [`Error::Timeout`].
pub(super) async fn within<T>(
    timeout: Option<Duration>,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match timeout {
        None => call.await,
        Some(after) => tokio::time::timeout(after, call).await.unwrap_or(Err(Error::Timeout {
            url: "slmkit call".to_owned(),
            phase: "request",
            after,
        })),
    }
}
