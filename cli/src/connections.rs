//! The server's own accept loop, so slow and idle clients cannot hold connections forever:
//! a header timeout, an idle timeout, and a cap on open connections (see [`Limits`]).
//!
//! The body timeout lives in the handler (`server::answer`), which reads the body.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

/// How long clients may take and how many may be connected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// A request's head (request line and headers) must arrive within this, counted from its
    /// first byte.
    pub header_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this: a
    /// client that connects and sends nothing, or a keep-alive connection left open.
    pub idle_timeout: Duration,
    /// Open connections at most. One more is answered `503` with `Connection: close` at once,
    /// rather than queued where it would wait unseen.
    pub max_connections: usize,
}

/// What the connection's reader needs to know about its requests.
struct Activity {
    /// Requests the service is handling now; while one is, reads wait without a deadline
    /// (the handler bounds the body read itself).
    in_flight: AtomicUsize,
    /// When the connection last went idle or moved bytes while idle, and whether bytes of a
    /// next request have arrived since it went idle.
    idle: Mutex<(Instant, Option<Instant>)>,
}

impl Activity {
    fn started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    fn touch(&self, read: bool) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if read {
            idle.1.get_or_insert_with(Instant::now);
        } else {
            idle.0 = Instant::now();
        }
    }

    /// When a pending read should give up, if it should.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let (since, head_started) = *self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(match head_started {
            Some(first_byte) => first_byte + limits.header_timeout,
            None => since + limits.idle_timeout,
        })
    }
}

/// A request being handled; when it is done the connection is idle again.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = (Instant::now(), None);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TCP stream whose pending reads fail with `TimedOut` past the [`Activity`] deadline.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before && this.activity.in_flight.load(Ordering::SeqCst) == 0 {
                    this.activity.touch(true);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let Some(deadline) = this.activity.deadline(&this.limits) else { return Poll::Pending };
                this.timer.as_mut().reset(deadline);
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent no complete request in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.in_flight.load(Ordering::SeqCst) == 0 {
            // A streamed response still flowing after its handler returned.
            this.activity.touch(false);
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 138\r\n\r\n{\"error\":{\"message\":\"too many open connections; try again shortly\",\"type\":\"server_overloaded\",\"param\":null,\"code\":\"too_many_connections\"}}";

/// Accepts connections until `stopping` resolves, then stops accepting and lets open
/// connections finish their requests for up to `grace`. Past it, `cut_off` runs and the
/// requests still running are stopped (dropped, so their attempts settle) before this returns.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stopping: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    cut_off: impl FnOnce(),
) -> std::io::Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The head is bounded by `Watched`; hyper's own header timer would also end idle keep-alive waits.
    builder.header_read_timeout(None);
    tokio::pin!(stopping);
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait a moment rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopping => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY_RESPONSE)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let activity = Arc::new(Activity { in_flight: AtomicUsize::new(0), idle: Mutex::new((Instant::now(), None)) });
        let io = Watched {
            stream,
            activity: Arc::clone(&activity),
            limits,
            timer: Box::pin(tokio::time::sleep_until(Instant::now() + limits.idle_timeout)),
        };
        let tower = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |request| {
            let handling = activity.started();
            let response = hyper::service::Service::call(&tower, request);
            async move {
                let response = response.await;
                drop(handling);
                response
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        connections.spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
        // Reap finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        eprintln!("slmkit serve: in-flight requests still running after {grace:?}; stopping them");
        cut_off();
        connections.shutdown().await;
    }
    Ok(())
}
