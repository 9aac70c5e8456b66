//! One tokio runtime for every client in the process, rebuilt after `fork()`, and the two
//! ways Python waits on it: blocking (sync client, GIL released, Ctrl-C honoured) and asyncio
//! futures (async client, through `pyo3_async_runtimes`' generic bridge).
//!
//! `pyo3_async_runtimes::tokio` keeps its runtime in a `OnceLock` that can never be replaced.
//! After `fork()` the child inherits that runtime without its worker threads, so every future
//! hangs. Here the runtime sits behind an atomic pointer that a `pthread_atfork` child handler
//! clears, and the first call in the child builds a fresh one (the lancedb approach, simplified:
//! a runtime is never reclaimed, so a reader can never see a freed one).

use std::future::Future;
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3_async_runtimes::generic::{ContextExt, JoinError, Runtime};
use pyo3_async_runtimes::TaskLocals;

static RUNTIME: AtomicPtr<tokio::runtime::Runtime> = AtomicPtr::new(ptr::null_mut());
/// A spinlock, not a `Mutex`: the fork handler must be able to reset it with one atomic store
/// if a thread that no longer exists in the child held it at the moment of the fork.
static INSTALLING: AtomicBool = AtomicBool::new(false);
static ATFORK_INSTALLED: AtomicBool = AtomicBool::new(false);

/// How often a blocked sync call wakes up to let Python handle signals (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// The process's runtime, built on first use (and again after a fork).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    let current = RUNTIME.load(Ordering::Acquire);
    if current.is_null() {
        install()
    } else {
        // SAFETY: a published runtime is leaked (never freed), so the pointer stays valid.
        unsafe { &*current }
    }
}

#[cold]
fn install() -> &'static tokio::runtime::Runtime {
    while INSTALLING.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::thread::yield_now();
    }
    let mut current = RUNTIME.load(Ordering::Acquire);
    if current.is_null() {
        if !ATFORK_INSTALLED.swap(true, Ordering::SeqCst) {
            // SAFETY: registers a plain `extern "C"` function that only performs atomic stores.
            unsafe {
                libc::pthread_atfork(None, None, Some(after_fork_in_child));
            }
        }
        let built = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("slmkit-runtime").build();
        let built = match built {
            Ok(built) => built,
            Err(err) => {
                INSTALLING.store(false, Ordering::Release);
                // Only the OS refusing threads gets here, never user input; pyo3 turns the
                // panic into a Python exception at the call's boundary.
                #[allow(clippy::panic)]
                {
                    panic!("slmkit cannot start its tokio runtime: {err}");
                }
            }
        };
        current = Box::into_raw(Box::new(built));
        RUNTIME.store(current, Ordering::Release);
    }
    INSTALLING.store(false, Ordering::Release);
    // SAFETY: as in `runtime`: published runtimes are never freed.
    unsafe { &*current }
}

/// Runs in the child right after `fork()`, where only the forking thread exists. Atomic stores
/// only (no allocation, no locks). The parent's runtime is abandoned, not dropped: dropping it
/// would try to join worker threads that do not exist here.
extern "C" fn after_fork_in_child() {
    RUNTIME.store(ptr::null_mut(), Ordering::SeqCst);
    INSTALLING.store(false, Ordering::SeqCst);
}

/// Runs `future` to completion for a synchronous Python call: the GIL is released while it
/// runs, and every [`SIGNAL_POLL`] Python gets to handle signals. A `KeyboardInterrupt` (or any
/// exception a signal handler raises) drops the future, which cancels the call and frees its
/// engine slot, and is returned.
///
/// # Errors
/// Whatever a signal handler raised.
pub fn wait<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = runtime();
    if tokio::runtime::Handle::try_current().is_ok() {
        // Called from inside the runtime (e.g. a validator that makes a sync slmkit call):
        // `block_on` would panic there, so run it as a task and wait on a channel.
        let (sender, mut receiver) = std::sync::mpsc::channel();
        let task = runtime.spawn(async move {
            let _ = sender.send(future.await);
        });
        loop {
            // A `Receiver` is not `Sync`; lending it mutably makes the closure `Send`.
            let receiver = &mut receiver;
            match py.detach(move || receiver.recv_timeout(SIGNAL_POLL)) {
                Ok(output) => return Ok(output),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(err) = py.check_signals() {
                        task.abort();
                        return Err(err);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(PyRuntimeError::new_err("slmkit: a task ended without a result"));
                }
            }
        }
    }
    // Polled on this thread: a call that is ready at once (a cache hit) never leaves it.
    let mut future = Box::pin(future);
    loop {
        // The timer must be created inside the runtime's context, hence the async block.
        let polled = py.detach(|| runtime.block_on(async { tokio::time::timeout(SIGNAL_POLL, &mut future).await }));
        match polled {
            Ok(output) => return Ok(output),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// The asyncio bridge's view of [`runtime`].
pub struct SharedRuntime;

/// `tokio::task::JoinError`, wrapped to implement the bridge's trait.
pub struct TaskJoinError(tokio::task::JoinError);

impl JoinError for TaskJoinError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }

    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

type BoxedJoin = Pin<Box<dyn Future<Output = Result<(), TaskJoinError>> + Send>>;

impl Runtime for SharedRuntime {
    type JoinError = TaskJoinError;
    type JoinHandle = BoxedJoin;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = runtime().spawn(fut);
        Box::pin(async move { handle.await.map_err(TaskJoinError) })
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        let handle = runtime().spawn_blocking(f);
        Box::pin(async move { handle.await.map_err(TaskJoinError) })
    }
}

tokio::task_local! {
    static TASK_LOCALS: std::cell::OnceCell<TaskLocals>;
}

impl ContextExt for SharedRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = std::cell::OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(|cell| cell.get().cloned()).unwrap_or_default()
    }
}

/// An asyncio awaitable for `future`, run on the shared runtime. Cancelling the awaitable
/// drops `future`.
///
/// # Errors
/// When no asyncio event loop is running in this thread.
pub fn future_into_py<F, T>(py: Python<'_>, future: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    pyo3_async_runtimes::generic::future_into_py::<SharedRuntime, F, T>(py, future)
}

/// The event loop of the asyncio call this task serves, if it serves one.
pub fn current_locals() -> Option<TaskLocals> {
    SharedRuntime::get_task_locals()
}
