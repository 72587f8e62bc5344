//! [`RetryMode`]: whether a [`TelemetryLayer`](super::TelemetryLayer) retries, in its type.
//!
//! Without retry the stack asks nothing of the request body; with retry (`.retry(policy)`) it
//! needs [`TryCloneBody`](kasal_classify::TryCloneBody) to replay it. A type parameter (`()` or
//! [`RetryPolicy`]) makes that bound apply only where retry is on, at no run-time cost.

use kasal_classify::{Retry, RetryPolicy};

use super::attempt::AttemptSpans;

/// `()` (no retry) or [`RetryPolicy`] (retry): the second type parameter of
/// [`TelemetryLayer`](super::TelemetryLayer) and [`TelemetryService`](super::TelemetryService).
///
/// Sealed and unnameable (`pub` in a private module, as it appears in the bounds of public
/// types): users write `TelemetryService<S>` or `TelemetryService<S, RetryPolicy>`.
#[allow(unreachable_pub)]
pub trait RetryMode: Clone + sealed::Sealed {
    /// The service that makes the attempts of one call.
    type Service<S>;

    /// Wraps `inner` (which makes one attempt per call).
    fn wrap<S>(&self, inner: S) -> Self::Service<S>;
}

/// No retry: one attempt per call, any request body.
impl RetryMode for () {
    type Service<S> = S;

    fn wrap<S>(&self, inner: S) -> S {
        inner
    }
}

/// Retry by the policy, one `HTTP attempt` span per attempt: bodies must implement
/// `TryCloneBody`.
impl RetryMode for RetryPolicy {
    type Service<S> = Retry<AttemptSpans<S>>;

    fn wrap<S>(&self, inner: S) -> Self::Service<S> {
        Retry::new(AttemptSpans::new(inner), self.clone())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for () {}
    impl Sealed for kasal_classify::RetryPolicy {}
}
