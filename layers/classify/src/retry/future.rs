use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::Attempts;

pin_project! {
    /// The response future of [`Retry`](super::Retry).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F) -> Self {
        ResponseFuture { inner }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut result = ready!(self.project().inner.poll(cx));
        if let Ok(res) = &mut result {
            // The policy records the count whenever it was consulted; a request it could not
            // clone was sent exactly once.
            if res.extensions().get::<Attempts>().is_none() {
                res.extensions_mut().insert(Attempts(1));
            }
        }
        Poll::Ready(result)
    }
}
