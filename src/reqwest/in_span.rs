//! [`InSpan`]: a future polled with a borrowed span entered.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tracing::Span;

pin_project! {
    /// Polls the rest of the chain with a span entered, without cloning the span.
    pub(super) struct InSpan<'a, F> {
        pub(super) span: &'a Span,
        #[pin]
        pub(super) inner: F,
    }
}

impl<F: Future> Future for InSpan<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll(cx)
    }
}
