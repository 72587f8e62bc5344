//! Retrying calls that failed in a retryable way, with exponential backoff and jitter.
//!
//! [`RetryLayer`] wraps any `Service<http::Request<B>>` whose request body implements
//! [`TryCloneBody`] and whose error implements [`AsError`](crate::AsError) (hyper-util's client
//! error and `tower::BoxError` both do). The [`Classify`](crate::Classify) implementation decides
//! what is retryable; [`RetryPolicy`] only schedules. Every response carries [`Attempts`].
//!
//! It must never retry a request it cannot replay (a streaming body is sent once), never retry a
//! terminal outcome, and never wait longer than its caps (`max_delay` for backoff,
//! `max_retry_after` for the server's `Retry-After`).
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use kasal_classify::{Attempts, RetryLayer, RetryPolicy};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), tower::BoxError> {
//! let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//!     .build_http::<Full<Bytes>>();
//! let mut svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::new().max_retries(2)))
//!     .service(client);
//! let req = http::Request::get("http://127.0.0.1:8080/").body(Full::new(Bytes::new()))?;
//! let res = svc.ready().await?.call(req).await?;
//! let attempts = res.extensions().get::<Attempts>().map_or(1, |a| a.0);
//! println!("{} after {attempts} call(s)", res.status());
//! # Ok(()) }
//! ```

mod backoff;
mod body;
mod future;
mod layer;
mod policy;
mod service;

pub use self::backoff::{Backoff, Jitter};
pub use self::body::{TryCloneBody, clone_request};
pub use self::future::ResponseFuture;
pub use self::layer::RetryLayer;
pub use self::policy::RetryPolicy;
pub use self::service::Retry;

/// How many calls a [`Retry`] service made for one request (1 = no retry), in the response
/// extensions. The span layer reports `Attempts(n).0 - 1` as `http.request.resend_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attempts(pub u32);

/// A request extension through which a [`Retry`] service reports how many calls it has made for
/// the request, also when they end in an error, where no response can carry [`Attempts`].
///
/// Insert one before the retry layer and keep a clone: clones share the count (the retry policy
/// copies request extensions into every attempt). It reads 0 until the policy has judged the
/// first call, and stays 0 for requests whose body cannot be cloned (sent once).
///
/// ```
/// use kasal_classify::AttemptCounter;
///
/// let counter = AttemptCounter::new();
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(counter.clone());
/// // ... call a `Retry` service with `request` ...
/// assert_eq!(counter.get(), 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct AttemptCounter(std::sync::Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    attempts: std::sync::atomic::AtomicU32,
    /// The wait before the next attempt, in microseconds (0 = none scheduled).
    delay_micros: std::sync::atomic::AtomicU64,
}

impl AttemptCounter {
    /// A counter at 0.
    pub fn new() -> Self {
        AttemptCounter::default()
    }

    /// Calls made so far (0 before the first has been judged).
    pub fn get(&self) -> u32 {
        self.0.attempts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The wait the retry policy scheduled after the last judged call, before the next one
    /// (`None` before the first retry, or when no retry followed).
    pub fn last_delay(&self) -> Option<std::time::Duration> {
        match self
            .0
            .delay_micros
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            micros => Some(std::time::Duration::from_micros(micros)),
        }
    }

    /// Reports `attempts` calls made so far: for retry adapters outside this crate (the
    /// reqwest middleware), as [`Retry`] does through its policy.
    pub fn set(&self, attempts: u32) {
        self.0
            .attempts
            .store(attempts, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn set_delay(&self, delay: Option<std::time::Duration>) {
        let micros = delay.map_or(0, |d| {
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
        });
        self.0
            .delay_micros
            .store(micros, std::sync::atomic::Ordering::Relaxed);
    }
}
