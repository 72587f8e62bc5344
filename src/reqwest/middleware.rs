//! [`TelemetryMiddleware`]: User-Agent, span, classification and record for every request of a
//! reqwest-middleware client, over the same call core as the tower stack.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::USER_AGENT;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue};
use kasal_classify::{Attempts, DefaultClassifier, RetryPolicy};
use kasal_trace::{CallSpan, OnBodyChunk, OperationId, SharedHooks};
use kasal_user_agent::{Product, UserAgent};
use pin_project_lite::pin_project;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};
use url::Position;

use super::body::trace_response;
use super::error::inner_error;
use super::retry::{Attempted, once, with_retries};
use crate::Telemetry;
use crate::usage::{ReadUsage, UsageReading};

/// The middleware that attributes, traces, classifies and records each call made through a
/// [`reqwest_middleware::ClientWithMiddleware`].
///
/// Per request, in order:
///
/// 1. the User-Agent: `kasal_<product>/<version>` set, or prepended to the request's own
///    (exactly as [`UserAgent::apply`] does for the tower stack);
/// 2. one span (the OpenTelemetry HTTP client conventions, as [`CallSpan`] opens it), with the
///    [`ExecutionContext`](crate::trace::ExecutionContext), [`OperationId`] and
///    [`Route`](crate::trace::Route) read from the request's extensions
///    (`RequestBuilder::with_extension`) or else the task-local context;
/// 3. the rest of the chain (retry, circuit breaker, reqwest) runs inside the span;
/// 4. the response head is classified ([`DefaultClassifier`]) and the response body wrapped so
///    the call is recorded into the [`Telemetry`] pipeline when the body has been read to its
///    end, fails or is dropped; an error is classified and recorded at once.
///
/// Errors are returned unchanged: the middleware never adds one. Add it first (outermost), so
/// one span and one record cover every attempt of [`RetryMiddleware`](super::RetryMiddleware).
///
/// reqwest adds a client's default headers (`reqwest::ClientBuilder::user_agent`) after every
/// middleware has run, and only where the request has none: tell the middleware the client's
/// own User-Agent with [`client_user_agent`](Self::client_user_agent) (the stack of
/// [`builder_with`](super::builder_with) does) and ours is prepended to it
/// (`kasal_genie/0.1.0 their-app/1.2`), as to a per-request one.
///
/// With [`retry`](Self::retry) the middleware also retries, as a
/// [`RetryMiddleware`](super::RetryMiddleware) right after it would, at the cost of one
/// middleware less: what [`client`](super::client) and [`builder`](super::builder) use.
///
/// Calls of the `llm`, `embedding` and `agent` products to model-serving paths have their token
/// usage read from the response body as it passes ([`ReadUsage`]; see [`usage`](Self::usage)).
pub struct TelemetryMiddleware<H = ReadUsage> {
    user_agent: UserAgent,
    /// The client's default User-Agent, and ours before it: what a request without one is
    /// sent with.
    client_user_agent: Option<(HeaderValue, HeaderValue)>,
    retry: Option<RetryPolicy>,
    /// The classifier and the pipeline, shared with every response body (one reference
    /// count per call, not an allocation).
    hooks: SharedHooks<DefaultClassifier, Telemetry>,
    on_body_chunk: H,
    body_sizes: bool,
}

impl TelemetryMiddleware {
    /// Attributes calls to `product` (User-Agent `kasal_<product>/<crate version>`, spans and
    /// records) and records them into `telemetry`.
    pub fn new(product: Product, telemetry: Telemetry) -> Self {
        TelemetryMiddleware {
            on_body_chunk: ReadUsage::new(&product, UsageReading::Auto, &telemetry),
            user_agent: UserAgent::new(product),
            client_user_agent: None,
            retry: None,
            hooks: SharedHooks::new(DefaultClassifier::new(), telemetry),
            body_sizes: false,
        }
    }
}

impl<H> TelemetryMiddleware<H> {
    /// Sends `user_agent` (a custom version or extras) instead of the default one. Spans and
    /// records are attributed to its product.
    pub fn user_agent(mut self, user_agent: UserAgent) -> Self {
        self.user_agent = user_agent;
        if let Some((theirs, _)) = self.client_user_agent.take() {
            return self.client_user_agent(&theirs);
        }
        self
    }

    /// The User-Agent the reqwest client adds to requests without one (its
    /// `ClientBuilder::user_agent`, which reqwest adds only after every middleware has run):
    /// ours is prepended to it, so such a request is sent with `kasal_<product>/<version>
    /// their-app/1.2`. Computed once, here; [`builder_with`](super::builder_with) reads it
    /// from the client it is given.
    pub fn client_user_agent(mut self, theirs: &HeaderValue) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, theirs.clone());
        self.user_agent.apply(&mut headers);
        self.client_user_agent = headers
            .remove(USER_AGENT)
            .map(|sent| (theirs.clone(), sent));
        self
    }

    /// Retries retryable calls by `policy` inside this middleware, exactly as a
    /// [`RetryMiddleware`](super::RetryMiddleware) added right after it would (each attempt
    /// runs the rest of the chain, e.g. a
    /// [`CircuitBreakerMiddleware`](super::CircuitBreakerMiddleware)), without the cost of a
    /// second middleware.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Shows every data chunk of every response body to `hook` (a clone of it per response),
    /// as the body passes: the way to read something from a body (token usage, a JSON-RPC
    /// error) without buffering it. See [`OnBodyChunk`].
    pub fn on_body_chunk<H2>(self, hook: H2) -> TelemetryMiddleware<H2> {
        TelemetryMiddleware {
            user_agent: self.user_agent,
            client_user_agent: self.client_user_agent,
            retry: self.retry,
            hooks: self.hooks,
            on_body_chunk: hook,
            body_sizes: self.body_sizes,
        }
    }

    /// Which calls have their token usage read from the response body (replacing any other
    /// body hook): [`UsageReading::Auto`] by default, as in `TelemetryLayer::usage`.
    pub fn usage(self, reading: UsageReading) -> TelemetryMiddleware<ReadUsage> {
        let hook = ReadUsage::new(self.user_agent.product(), reading, self.hooks.recorder());
        self.on_body_chunk(hook)
    }

    /// Records `http.request.body.size` (a buffered body's length) and
    /// `http.response.body.size` on the span (off by default: the conventions make them
    /// opt-in), as `SpanLayer::body_sizes` does for the tower stack.
    pub fn body_sizes(mut self, record: bool) -> Self {
        self.body_sizes = record;
        self
    }

    /// The product calls are attributed to.
    pub fn product(&self) -> &Product {
        self.user_agent.product()
    }
}

impl<H: Clone> Clone for TelemetryMiddleware<H> {
    fn clone(&self) -> Self {
        TelemetryMiddleware {
            user_agent: self.user_agent.clone(),
            client_user_agent: self.client_user_agent.clone(),
            retry: self.retry.clone(),
            hooks: self.hooks.clone(),
            on_body_chunk: self.on_body_chunk.clone(),
            body_sizes: self.body_sizes,
        }
    }
}

impl<H> fmt::Debug for TelemetryMiddleware<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryMiddleware")
            .field("user_agent", &self.user_agent)
            .field("client_user_agent", &self.client_user_agent)
            .field("retry", &self.retry)
            .field("classifier", self.hooks.classifier())
            .finish_non_exhaustive()
    }
}

/// A request extension naming a response header that carries the call's [`OperationId`], for
/// calls that start an operation the server names (an MCP session id, assigned by the
/// `initialize` response). Used only when the request has no operation of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationIdHeader(pub HeaderName);

/// Longest header value taken as an operation id: longer ones are ignored.
const MAX_OPERATION_ID_LEN: usize = 256;

impl<H> Middleware for TelemetryMiddleware<H>
where
    H: OnBodyChunk<Bytes> + Clone + Sync,
{
    // `handle` as `#[async_trait]` would write it, written out so the work before the first
    // await is done before the future is boxed: the box then holds the request once (in the
    // attempts' future), not also as the argument of an `async fn`, and stays small.
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        mut request: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> Pin<Box<dyn Future<Output = Result<Response>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        match &self.client_user_agent {
            // reqwest would add the client's own after us: send ours before it.
            Some((_, value)) if !request.headers().contains_key(USER_AGENT) => {
                request.headers_mut().insert(USER_AGENT, value.clone());
            }
            _ => self.user_agent.apply(request.headers_mut()),
        }
        // Opened from the parts the `Url` has already parsed: no `http::Uri` is built. Boxed
        // at once: the body keeps it boxed, and the future awaiting the response holds a
        // pointer instead of the whole call.
        let url = request.url();
        let mut call = Box::new(CallSpan::start_client(
            self.user_agent.product(),
            request.method(),
            url.scheme(),
            url.authority(),
            &url[Position::BeforePath..Position::AfterQuery],
            request.headers(),
            extensions,
        ));
        call.set_protocol_version(request.version());
        // The call's span as the request's parent (`traceparent`); with retry, each attempt
        // sends its own instead (so does a `RetryMiddleware` further in, over this one).
        #[cfg(feature = "otel")]
        if self.retry.is_none() {
            crate::layer::propagation::inject(call.span(), request.headers_mut());
        }
        if self.body_sizes {
            let size = request
                .body()
                .and_then(reqwest::Body::as_bytes)
                .map(|b| b.len() as u64);
            call.record_body_sizes(size);
        }
        match &self.retry {
            Some(policy) => {
                let attempts =
                    with_retries(policy, self.hooks.classifier(), request, extensions, next);
                Box::pin(self.complete(call, attempts))
            }
            None => {
                let attempt = once(self.hooks.classifier(), request, extensions, next);
                Box::pin(self.complete(call, attempt))
            }
        }
    }
}

pin_project! {
    /// The call from its first attempt to its answer, polled in its span; then the response
    /// with its body traced, or the error, recorded. A future of its own, not an `async fn`,
    /// so it holds the attempts' future once (an `async fn` would keep its argument besides).
    struct Complete<'m, F, H> {
        #[pin]
        attempts: F,
        // `None` once answered.
        call: Option<Box<CallSpan>>,
        middleware: &'m TelemetryMiddleware<H>,
    }
}

impl<'e, F, H> Future for Complete<'_, F, H>
where
    F: Future<Output = (Attempted, &'e mut Extensions)>,
    H: OnBodyChunk<Bytes> + Clone + Sync,
{
    type Output = Result<Response>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(span) = this.call.as_ref().map(|call| call.span()) else {
            // Polled after its answer: there is none to give again.
            return Poll::Pending;
        };
        let (attempted, extensions) = {
            let _entered = span.enter();
            ready!(this.attempts.poll(cx))
        };
        match this.call.take() {
            Some(call) => Poll::Ready(this.middleware.answer(call, attempted, extensions)),
            None => Poll::Pending,
        }
    }
}

impl<H> TelemetryMiddleware<H>
where
    H: OnBodyChunk<Bytes> + Clone + Sync,
{
    /// The call's answer: the response with its body traced (the call is recorded when the
    /// body ends), or the error, recorded now.
    fn answer(
        &self,
        mut call: Box<CallSpan>,
        attempted: Attempted,
        extensions: &mut Extensions,
    ) -> Result<Response> {
        let Attempted {
            result,
            outcome,
            attempts,
        } = attempted;
        if attempts > 1 {
            // What a `RetryMiddleware` leaves for us, from our own retry.
            extensions.insert(Attempts(attempts));
        }
        match result {
            Ok(response) => {
                call.set_protocol_version(response.version());
                // Classified once, for the retry and the call alike.
                call.on_response(response.status(), extensions, outcome);
                if call.record().operation_id.is_none() {
                    operation_from_header(&mut call, extensions, response.headers());
                }
                Ok(trace_response(
                    response,
                    call,
                    &self.hooks,
                    self.on_body_chunk.clone(),
                ))
            }
            Err(error) => {
                if attempts > 1 {
                    // No response carries the attempts of a call that failed after retries:
                    // the span and the record take them from the retry.
                    call.span()
                        .record("http.request.resend_count", i64::from(attempts - 1));
                }
                call.on_error(inner_error(&error), outcome);
                let mut record = call.finish();
                record.attempts = record.attempts.max(attempts);
                self.hooks.recorder().record(record);
                Err(error)
            }
        }
    }

    /// The future of a call opened as `call`, its attempts made by `attempts`.
    fn complete<F>(&self, call: Box<CallSpan>, attempts: F) -> Complete<'_, F, H> {
        Complete {
            attempts,
            call: Some(call),
            middleware: self,
        }
    }
}

/// Takes the call's operation from the response header an [`OperationIdHeader`] names.
fn operation_from_header(call: &mut CallSpan, extensions: &Extensions, headers: &http::HeaderMap) {
    let Some(OperationIdHeader(name)) = extensions.get::<OperationIdHeader>() else {
        return;
    };
    let Some(id) = headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= MAX_OPERATION_ID_LEN)
    else {
        return;
    };
    let id = OperationId::new(id);
    call.span().record("kasal.operation_id", id.as_str());
    call.record_mut().operation_id = Some(id);
}
