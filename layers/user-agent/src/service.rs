//! `SetUserAgent`: the service. It applies the User-Agent, then calls the inner service.

use std::task::{Context, Poll};

use http::Request;
use tower_service::Service;

use crate::{UserAgent, UserAgentLayer};

/// Applies a [`UserAgent`] to each request, then forwards it to the inner service.
///
/// Built by [`UserAgentLayer`]. Readiness, responses and errors are the inner service's own: the
/// response future is the inner future, unwrapped and unboxed.
#[derive(Clone, Debug)]
pub struct SetUserAgent<S> {
    inner: S,
    user_agent: UserAgent,
}

impl<S> SetUserAgent<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, user_agent: UserAgent) -> Self {
        SetUserAgent { inner, user_agent }
    }

    /// A [`UserAgentLayer`] producing this service.
    pub fn layer(user_agent: UserAgent) -> UserAgentLayer {
        UserAgentLayer::new(user_agent)
    }

    /// The User-Agent this service applies.
    pub fn user_agent(&self) -> &UserAgent {
        &self.user_agent
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for SetUserAgent<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        self.user_agent.apply(request.headers_mut());
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::header::USER_AGENT;
    use http::{HeaderValue, Request};
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use crate::{Product, UserAgent, UserAgentLayer};

    fn echo_user_agents(
        request: Request<()>,
    ) -> std::future::Ready<Result<Vec<HeaderValue>, Infallible>> {
        let values = request
            .headers()
            .get_all(USER_AGENT)
            .iter()
            .cloned()
            .collect();
        std::future::ready(Ok(values))
    }

    #[tokio::test]
    async fn sets_when_absent_and_prepends_to_the_callers_own() {
        let service = ServiceBuilder::new()
            .layer(UserAgentLayer::new(UserAgent::new(Product::Mcp)))
            .service(service_fn(echo_user_agents));
        let bare = Request::new(());
        assert_eq!(
            service.clone().oneshot(bare).await.unwrap(),
            ["kasal_mcp/0.1.0"]
        );
        let theirs = Request::builder()
            .header(USER_AGENT, "their-ua/1.2")
            .body(())
            .unwrap();
        assert_eq!(
            service.oneshot(theirs).await.unwrap(),
            ["kasal_mcp/0.1.0 their-ua/1.2"]
        );
    }

    #[tokio::test]
    async fn stacked_twice_does_not_duplicate_the_token() {
        let ua = UserAgent::new(Product::Mcp);
        let service = ServiceBuilder::new()
            .layer(UserAgentLayer::new(ua.clone()))
            .layer(UserAgentLayer::new(ua))
            .service(service_fn(echo_user_agents));
        let theirs = Request::builder()
            .header(USER_AGENT, "their-ua/1.2")
            .body(())
            .unwrap();
        assert_eq!(
            service.oneshot(theirs).await.unwrap(),
            ["kasal_mcp/0.1.0 their-ua/1.2"]
        );
    }

    #[tokio::test]
    async fn poll_ready_and_errors_are_the_inner_services() {
        let failing = service_fn(|_: Request<()>| async { Err::<(), _>("inner failed") });
        let service = ServiceBuilder::new()
            .layer(UserAgentLayer::new(UserAgent::new(Product::Genie)))
            .service(failing);
        assert_eq!(
            service.oneshot(Request::new(())).await.unwrap_err(),
            "inner failed"
        );
    }
}
