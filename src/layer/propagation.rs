//! W3C trace context across services (feature `otel`): the server reads the incoming
//! `traceparent`/`tracestate` into its span's remote parent, the client writes the current call
//! span's context into the outgoing request. Both go through OpenTelemetry's *global* text map
//! propagator and `tracing-opentelemetry`, so they follow whatever the app configured (with the
//! default no-op propagator they do nothing).
//!
//! Never fails a request: a malformed `traceparent` is ignored (the span starts a new trace), a
//! header the propagator wants to write that is not a valid header is skipped.

#[cfg(all(feature = "otel", feature = "reqwest"))]
pub(crate) use w3c::inject;
#[cfg(all(feature = "otel", feature = "axum"))]
pub(crate) use w3c::set_remote_parent;

/// What the client's call (or attempt) span wraps: an adapter that injects the trace context
/// with feature `otel`; the service itself (no cost) without.
#[cfg(feature = "otel")]
pub(crate) type Propagate<S> = w3c::InjectTraceContext<S>;
/// What the client's call (or attempt) span wraps: an adapter that injects the trace context
/// with feature `otel`; the service itself (no cost) without.
#[cfg(not(feature = "otel"))]
pub(crate) type Propagate<S> = S;

/// Wraps the service the call (or attempt) span encloses: each request carries its context.
pub(crate) fn propagate<S>(inner: S) -> Propagate<S> {
    #[cfg(feature = "otel")]
    let inner = w3c::InjectTraceContext::new(inner);
    inner
}

#[cfg(feature = "otel")]
mod w3c {
    use std::task::{Context, Poll};

    use http::{HeaderMap, HeaderName, HeaderValue, Request};
    use opentelemetry::global;
    #[cfg(feature = "axum")]
    use opentelemetry::propagation::Extractor;
    use opentelemetry::propagation::Injector;
    use opentelemetry::trace::TraceContextExt;
    use tower_service::Service;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// Reads propagation headers from a `HeaderMap` (the server side).
    #[cfg(feature = "axum")]
    struct HeaderExtractor<'a>(&'a HeaderMap);

    #[cfg(feature = "axum")]
    impl Extractor for HeaderExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|value| value.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(HeaderName::as_str).collect()
        }
    }

    /// Writes propagation headers into a `HeaderMap`.
    struct HeaderInjector<'a>(&'a mut HeaderMap);

    impl Injector for HeaderInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::try_from(value),
            ) {
                self.0.insert(name, value);
            }
        }
    }

    /// Makes `span` continue the trace of the request's propagation headers, if they hold a valid
    /// remote span context. Call before the span is first entered.
    #[cfg(feature = "axum")]
    pub(crate) fn set_remote_parent(span: &Span, headers: &HeaderMap) {
        if span.is_disabled() {
            return;
        }
        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(headers))
        });
        if parent.span().span_context().is_valid() {
            // Fails only without a tracing-opentelemetry layer, where there is nothing to continue.
            let _ = span.set_parent(parent);
        }
    }

    /// Writes the current span's OpenTelemetry context into `headers` (`traceparent`, …).
    pub(crate) fn inject_current(headers: &mut HeaderMap) {
        inject(&Span::current(), headers);
    }

    /// Writes `span`'s OpenTelemetry context into `headers` (`traceparent`, …); nothing for a
    /// disabled span or one without a valid context (no tracing-opentelemetry layer).
    pub(crate) fn inject(span: &Span, headers: &mut HeaderMap) {
        if span.is_disabled() {
            return;
        }
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return;
        }
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(headers));
        });
    }

    /// Client middleware: writes the current span's trace context into each request. Sits
    /// inside the call's span and, with retry, inside each attempt's span, so the server
    /// called sees the attempt that reached it as its parent.
    ///
    /// `pub` but unnameable (private module), like the client stack's other inner adapters.
    #[allow(unreachable_pub)]
    #[derive(Clone, Debug)]
    pub struct InjectTraceContext<S> {
        inner: S,
    }

    impl<S> InjectTraceContext<S> {
        pub(crate) fn new(inner: S) -> Self {
            InjectTraceContext { inner }
        }
    }

    impl<S, B> Service<Request<B>> for InjectTraceContext<S>
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
            inject_current(request.headers_mut());
            self.inner.call(request)
        }
    }
}
