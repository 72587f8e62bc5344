//! The sans-IO core of the span layer: open a call span from a request head, record the response
//! or the error on it, count body bytes, and finish into a [`CallRecord`].
//!
//! [`Traced`](crate::Traced) and [`TracedBody`](crate::TracedBody) are thin tower/http-body
//! adapters over [`CallSpan`]; other clients (the reqwest middleware) drive it directly, so both
//! produce the same spans and records. Nothing here may copy the context's `user_token` or an
//! unredacted URL or error message into a span field or a record.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::uri::{Authority, Scheme};
use http::{Extensions, HeaderMap, Method, StatusCode, Uri};
use kasal_classify::{Attempts, Outcome};
use kasal_user_agent::Product;
use tracing::Span;
use tracing::field::Empty;

use crate::context::Route;
use crate::redact::{RedactedUri, host_and_port, redact};
use crate::{CallRecord, Direction, ExecutionContext, OperationId};

/// One call in flight: its span and the [`CallRecord`] being filled in.
///
/// Lifecycle: [`start`](Self::start) from the request head, then [`on_response`](Self::on_response)
/// or [`on_error`](Self::on_error) (also for an error while reading the body),
/// [`on_body_bytes`](Self::on_body_bytes) per data frame, and [`finish`](Self::finish) once, which
/// returns the record. The span closes when the `CallSpan` (and every clone of its span) is
/// dropped.
#[derive(Debug)]
pub struct CallSpan {
    span: Span,
    record: CallRecord,
    start: Instant,
}

impl CallSpan {
    /// Opens the span for a call described by its request head, as a child of the current span.
    ///
    /// The execution context comes from an [`ExecutionContext`] request extension, else the
    /// task-local one; the operation from an [`OperationId`] request extension, else the context;
    /// the route template from a [`Route`] extension.
    pub fn start(
        product: &Product,
        direction: Direction,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Self {
        let start = Instant::now();
        let started_at = SystemTime::now();
        let route = extensions.get::<Route>().map(|route| route.0.clone());
        let (mode, caller_id, obo_dev_fallback, context_operation) =
            ExecutionContext::read_for_request(extensions, |ctx| {
                (
                    ctx.mode,
                    ctx.caller_id.clone(),
                    ctx.obo_dev_fallback,
                    ctx.operation_id.clone(),
                )
            });
        let operation_id = extensions
            .get::<OperationId>()
            .cloned()
            .or(context_operation);
        let host = server_authority(uri, headers);
        let port = host.as_ref().and_then(|host| {
            host.port_u16().or(match uri.scheme() {
                Some(scheme) if *scheme == Scheme::HTTPS => Some(443),
                Some(scheme) if *scheme == Scheme::HTTP => Some(80),
                _ => None,
            })
        });

        let span = tracing::info_span!(
            target: "kasal_trace",
            "HTTP",
            otel.kind = direction.as_str(),
            otel.name = %OtelName { method, route: route.as_deref() },
            otel.status_code = Empty,
            http.request.method = method.as_str(),
            http.route = route.as_deref(),
            url.full = %RedactedUri(uri),
            server.address = host.as_ref().map(Authority::host),
            server.port = port,
            http.response.status_code = Empty,
            http.request.resend_count = Empty,
            http.response.body.size = Empty,
            error.type = Empty,
            kasal.product = product.as_str(),
            kasal.outcome = Empty,
            kasal.operation_id = operation_id.as_ref().map(OperationId::as_str),
            kasal.body_cut_short = Empty,
            execution.context = mode.as_str(),
            caller.id = caller_id.as_deref(),
            execution.obo_dev_fallback = obo_dev_fallback,
        );

        CallSpan {
            span,
            start,
            record: CallRecord {
                direction,
                product: product.clone(),
                method: method.clone(),
                host,
                route,
                status: None,
                outcome: Outcome::Success,
                started_at,
                latency: Default::default(),
                attempts: 1,
                response_bytes: 0,
                mode,
                caller_id,
                obo_dev_fallback,
                operation_id,
                error: None,
            },
        }
    }

    /// The call's span: enter it while doing the call's work.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Records the response head: status, attempts (from an [`Attempts`] response extension,
    /// else 1) and the classified outcome.
    pub fn on_response(&mut self, status: StatusCode, extensions: &Extensions, outcome: Outcome) {
        let attempts = extensions.get::<Attempts>().map_or(1, |a| a.0.max(1));
        self.span
            .record("http.response.status_code", status.as_u16())
            .record("http.request.resend_count", attempts - 1);
        self.record.status = Some(status);
        self.record.attempts = attempts;
        self.set_outcome(outcome);
    }

    /// Records a failure: an error from the inner service (no response) or while reading the
    /// body. The message, with its source chain, is redacted and truncated.
    pub fn on_error(&mut self, error: &(dyn Error + 'static), outcome: Outcome) {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(err) = source {
            message.push_str(": ");
            message.push_str(&err.to_string());
            source = err.source();
        }
        self.record.error = Some(Arc::from(redact(&message)));
        if self.record.status.is_none() {
            self.span.record("http.request.resend_count", 0);
        }
        self.span.record("kasal.outcome", outcome.as_str());
        self.record.outcome = outcome;
        // A failure is an error whatever the direction or the status.
        self.mark_error();
    }

    /// Counts response body bytes.
    pub fn on_body_bytes(&mut self, bytes: u64) {
        self.record.response_bytes += bytes;
    }

    /// Notes that the response body was dropped before its end (`kasal.body_cut_short = true`).
    pub fn on_cut_short(&mut self) {
        self.span.record("kasal.body_cut_short", true);
    }

    /// Ends the call: sets the latency (from `start`) and returns the record. The span closes
    /// when the returned `CallSpan` is gone, i.e. now, unless someone holds a clone of it.
    pub fn finish(mut self) -> CallRecord {
        self.record.latency = self.start.elapsed();
        if self.record.status.is_some() {
            self.span
                .record("http.response.body.size", self.record.response_bytes);
        }
        self.record
    }

    fn set_outcome(&mut self, outcome: Outcome) {
        self.span.record("kasal.outcome", outcome.as_str());
        let is_error = match (self.record.direction, self.record.status) {
            // OTel HTTP conventions: a server span is an error only for 5xx.
            (Direction::Server, Some(status)) => status.is_server_error(),
            _ => !matches!(outcome, Outcome::Success),
        };
        self.record.outcome = outcome;
        if is_error {
            self.mark_error();
        }
    }

    fn mark_error(&self) {
        let error_type = match self.record.outcome.error_type() {
            Some(error_type) => error_type,
            None => self
                .record
                .status
                .as_ref()
                .map_or("other", StatusCode::as_str),
        };
        self.span
            .record("error.type", error_type)
            .record("otel.status_code", "ERROR");
    }
}

/// `host[:port]` of the server, from the URI or else the `Host` header, without userinfo.
fn server_authority(uri: &Uri, headers: &HeaderMap) -> Option<Authority> {
    match uri.authority() {
        Some(authority) if !authority.as_str().contains('@') => Some(authority.clone()),
        Some(authority) => host_and_port(authority.as_str()).parse().ok(),
        None => headers
            .get(http::header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host_and_port(host).parse().ok()),
    }
}

/// `otel.name`: `"{METHOD}"` or `"{METHOD} {route}"`, formatted only by subscribers that want it.
struct OtelName<'a> {
    method: &'a Method,
    route: Option<&'a str>,
}

impl fmt::Display for OtelName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.route {
            Some(route) => write!(f, "{} {route}", self.method),
            None => f.write_str(self.method.as_str()),
        }
    }
}
