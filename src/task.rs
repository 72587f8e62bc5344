//! Context across tasks: [`spawn`], [`spawn_blocking`] and
//! [`in_current_context`](ContextFutureExt::in_current_context) carry the
//! [`ExecutionContext`] and the current `tracing` span (and, with feature `otel`, the current
//! OpenTelemetry context) into work that runs elsewhere.
//!
//! # Why not a global "current user token"
//!
//! A server answers many users at once. On a multi-thread runtime, the requests of alice and
//! bob are polled on the same worker threads, interleaved at every `.await`. A process-global
//! (a `static Mutex<Option<Token>>`, an environment variable, a `OnceLock` set per request) or
//! a thread-local holds *one* value for all of them: whichever request wrote it last wins, and
//! bob's downstream call goes out with alice's token and is recorded under alice's name. Locks
//! do not help (the value is wrong, not torn), and it only shows under concurrent load, in
//! production, as a security incident.
//!
//! The context of a request belongs to the request's *task*, so it lives where the task's other
//! state lives:
//!
//! - in a tokio task-local, set by [`ExecutionContext::scope`] (the server layer scopes every
//!   handler in its request's context; read it with [`ExecutionContext::current`]);
//! - or on the request itself, as an `ExecutionContext` extension (wins over the task-local);
//! - and when the work moves to another task or thread, it is handed over explicitly, which is
//!   what this module does: `tokio::spawn` starts a task with no task-locals and no current
//!   span, so `tokio::spawn(fut)` loses the context, and calls made in it are attributed to the
//!   service and appear as orphan spans. [`spawn`] does not.
//!
//! | instead of | use |
//! |---|---|
//! | `tokio::spawn(fut)` | [`kasal_telemetry::spawn(fut)`](spawn) |
//! | `tokio::task::spawn_blocking(f)` | [`kasal_telemetry::spawn_blocking(f)`](spawn_blocking) |
//! | `JoinSet::spawn(fut)`, `select!` arms, any executor | `fut.in_current_context()` |
//!
//! The captured context is a snapshot: a clone of the `ExecutionContext` (a few reference
//! counts; the token stays a [`SecretToken`](crate::trace::SecretToken)), of the span handle
//! and of the current `tracing` dispatcher (so a subscriber set with `set_default` follows the
//! work to another thread). Nothing is global, so concurrent tenants never see each other's
//! context.
//!
//! ```
//! use kasal_telemetry::trace::ExecutionContext;
//! use kasal_telemetry::{ContextFutureExt, spawn, spawn_blocking};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! ExecutionContext::user("alice@example.com")
//!     .scope(async {
//!         let in_task = spawn(async { ExecutionContext::current().caller_id })
//!             .await
//!             .unwrap();
//!         assert_eq!(in_task.as_deref(), Some("alice@example.com"));
//!
//!         let blocking = spawn_blocking(|| ExecutionContext::current().caller_id)
//!             .await
//!             .unwrap();
//!         assert_eq!(blocking.as_deref(), Some("alice@example.com"));
//!
//!         // Plain tokio::spawn loses it:
//!         let lost = tokio::spawn(async { ExecutionContext::try_current() }).await.unwrap();
//!         assert_eq!(lost, None);
//!
//!         // Any executor: wrap the future.
//!         let mut tasks = tokio::task::JoinSet::new();
//!         tasks.spawn(async { ExecutionContext::current().mode }.in_current_context());
//!         let mode = tasks.join_next().await.unwrap().unwrap();
//!         assert_eq!(mode.as_str(), "user");
//!     })
//!     .await;
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use kasal_trace::ExecutionContext;
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;
use tokio::task::futures::TaskLocalFuture;
use tracing::Span;
use tracing::instrument::{Instrument, Instrumented, WithDispatch, WithSubscriber};

/// The context, then the span, then the subscriber the span reports to (the current one may be
/// a scoped default, which a task on another thread would not see).
type Carried<F> = WithDispatch<Instrumented<TaskLocalFuture<ExecutionContext, F>>>;
#[cfg(feature = "otel")]
type Inner<F> = opentelemetry::context::WithContext<Carried<F>>;
#[cfg(not(feature = "otel"))]
type Inner<F> = Carried<F>;

pin_project! {
    /// A future carrying the execution context and span it was created in: built by
    /// [`ContextFutureExt::in_current_context`].
    #[must_use = "futures do nothing unless polled"]
    pub struct InContext<F> {
        #[pin]
        inner: Inner<F>,
    }
}

impl<F: Future> Future for InContext<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F> std::fmt::Debug for InContext<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InContext").finish_non_exhaustive()
    }
}

/// `.in_current_context()` on every future: carry the current [`ExecutionContext`], span (and
/// OpenTelemetry context, feature `otel`) to wherever the future is polled.
pub trait ContextFutureExt: Future + Sized {
    /// Wraps the future so that, wherever it is polled, it runs in the execution context and
    /// span current *now* (the service context if none is set).
    fn in_current_context(self) -> InContext<Self> {
        let scoped = ExecutionContext::current()
            .scope(self)
            .instrument(Span::current())
            .with_current_subscriber();
        #[cfg(feature = "otel")]
        let scoped = opentelemetry::context::FutureExt::with_current_context(scoped);
        InContext { inner: scoped }
    }
}

impl<F: Future> ContextFutureExt for F {}

/// `tokio::spawn`, keeping the caller's [`ExecutionContext`] and span (see the
/// [module docs](self)). Must be called inside a tokio runtime, like `tokio::spawn`.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.in_current_context())
}

/// `tokio::task::spawn_blocking`, running `f` in the caller's [`ExecutionContext`] and span
/// (see the [module docs](self)). Must be called inside a tokio runtime.
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let context = ExecutionContext::current();
    let span = Span::current();
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    #[cfg(feature = "otel")]
    let otel = opentelemetry::Context::current();
    tokio::task::spawn_blocking(move || {
        #[cfg(feature = "otel")]
        let _otel = otel.attach();
        tracing::dispatcher::with_default(&dispatch, || span.in_scope(|| context.sync_scope(f)))
    })
}
