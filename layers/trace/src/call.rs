//! The sans-IO core of the span layer: open a call span from a request head, record the response
//! or the error on it, count body bytes, and finish into a [`CallRecord`].
//!
//! [`Traced`](crate::Traced) and [`TracedBody`](crate::TracedBody) are thin tower/http-body
//! adapters over [`CallSpan`]; other clients (the reqwest middleware) drive it directly, so both
//! produce the same spans and records. Nothing here may copy the context's `user_token` or an
//! unredacted URL or error message into a span field or a record.

use std::borrow::Cow;
use std::cell::{Cell as StdCell, RefCell};
use std::error::Error;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::uri::Authority;
use http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use kasal_classify::{AttemptCounter, Attempts, Classify, Outcome};
use kasal_user_agent::Product;
use tracing::Span;
use tracing::field::{Value, display};

use crate::callsite::{self, StartValues};

use crate::context::Route;
use crate::forwarded::ONE_PASS_MAX;
use crate::last::LastText;
use crate::redact::{RedactedUri, host_and_port, redact, redact_error, url_authority};
use crate::{CallRecord, ClientAddress, Direction, ExecutionContext, OperationId, Usage};

/// One call in flight: its span and the [`CallRecord`] being filled in.
///
/// Lifecycle: [`start`](Self::start) from the request head (then, optionally,
/// [`set_protocol_version`](Self::set_protocol_version) and
/// [`record_body_sizes`](Self::record_body_sizes)); then
/// [`classify_response`](Self::classify_response) (or [`on_response`](Self::on_response) with an
/// outcome of your own) or [`classify_error`](Self::classify_error) /
/// [`on_error`](Self::on_error) (also for an error while reading the body);
/// [`on_body_bytes`](Self::on_body_bytes) per data frame; and [`finish`](Self::finish) once, which
/// returns the record ([`fail`](Self::fail) = classify an error, then finish). The
/// [`TracedBody`](crate::TracedBody) does the body part. The span closes when the `CallSpan`
/// (and every clone of its span) is dropped.
#[derive(Debug)]
pub struct CallSpan {
    span: Span,
    record: CallRecord,
    start: Instant,
    /// Set when a retry layer reports attempts through the request (see `on_error`).
    attempt_counter: Option<AttemptCounter>,
    /// `network.protocol.version` to record with the response head (or the error).
    protocol_version: Option<&'static str>,
    /// Opt-in: record `http.response.body.size` at the end (see `record_body_sizes`).
    body_sizes: bool,
    /// The path is a model-serving one ([`is_model_serving_path`](crate::is_model_serving_path)).
    model_call: bool,
}

impl CallSpan {
    /// Opens the span for a call described by its request head, as a child of the current span.
    ///
    /// The execution context comes from an [`ExecutionContext`] request extension, else the
    /// task-local one; the operation from an [`OperationId`] request extension, else the context;
    /// the route template from a [`Route`] extension. An [`AttemptCounter`] extension, if any,
    /// gives the attempts of a call that ends in an error (see [`on_error`](Self::on_error)).
    pub fn start(
        product: &Product,
        direction: Direction,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Self {
        CallSpan::start_with_route(product, direction, method, uri, headers, extensions, None)
    }

    /// As [`start`](Self::start), with `route` as the route template when the request has no
    /// [`Route`] extension (one set by the user still wins): for an adapter that knows the
    /// route itself (a server's matched path) and would otherwise insert it into the request
    /// only for this call to read it.
    pub fn start_with_route(
        product: &Product,
        direction: Direction,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
        route: Option<&Route>,
    ) -> Self {
        let target = Target::of_uri(uri);
        CallSpan::open(
            product, direction, method, target, headers, extensions, route,
        )
    }

    /// As [`start`](Self::start) for a client call whose URL was parsed elsewhere (reqwest's
    /// `Url`), from the text of its parts: `scheme` (`https`), `authority` (`host[:port]`;
    /// userinfo is allowed and never recorded; empty for none) and `path_and_query`
    /// (`/api/2.0/jobs/list?page=2`, without the fragment). The span and the record are those
    /// [`start`](Self::start) makes from the `Uri` of the same text, without building one.
    pub fn start_client(
        product: &Product,
        method: &Method,
        scheme: &str,
        authority: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Self {
        let target = Target::of_parts(scheme, authority, path_and_query);
        CallSpan::open(
            product,
            Direction::Client,
            method,
            target,
            headers,
            extensions,
            None,
        )
    }

    /// What [`start_with_route`](Self::start_with_route) and
    /// [`start_client`](Self::start_client) share: the call opened from its target's parts.
    fn open(
        product: &Product,
        direction: Direction,
        method: &Method,
        target: Target<'_>,
        headers: &HeaderMap,
        extensions: &Extensions,
        route: Option<&Route>,
    ) -> Self {
        let start = Instant::now();
        let started_at = wall_clock(start);
        // The one place the template is chosen: a `Route` extension, else the adapter's `route`
        // (the server adapter's, from the router's matched path), else, for client calls, the
        // template inferred from the path (`route::infer_shared`): never the raw path.
        // For a template of the table: its row, and whether the path passes the redaction
        // prefilter (then `url.full` writes it without `redact`).
        let (route, table_match) = match extensions.get::<Route>().or(route) {
            Some(route) => (Some(route.0.clone()), None),
            None if direction == Direction::Client => {
                let (route, found) = crate::route::infer_path_indexed(target.path);
                (Some(route), found)
            }
            None => (None, None),
        };
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
        // A server reads `Host` and `User-Agent`; a client at most `Host`, when the URI has no
        // authority.
        let (host_header, user_agent_header) = match direction {
            Direction::Server => host_and_user_agent(headers),
            Direction::Client => (None, None),
        };
        let host = server_authority(&target, || match direction {
            Direction::Server => host_header,
            Direction::Client => headers.get(http::header::HOST),
        });
        let model_call = crate::usage::is_model_serving_path(target.path);
        let endpoint = model_call
            .then(|| crate::usage::serving_endpoint_model(target.path))
            .flatten();

        // The span's own fields are worked out only for an enabled span: a subscriber that
        // filters the call span out pays for none of them.
        let span = match callsite::enabled() {
            false => Span::none(),
            true => {
                let (address, port) = match &host {
                    Some(host) => {
                        let (address, port) = split_host_port(host.as_str());
                        let port = port.or(match target.scheme {
                            Some(scheme) if scheme.eq_ignore_ascii_case("https") => Some(443),
                            Some(scheme) if scheme.eq_ignore_ascii_case("http") => Some(80),
                            _ => None,
                        });
                        (Some(address), port)
                    }
                    None => (None, None),
                };
                let method_index = known_method_index(method);
                let known_method = method_index.is_some();
                let route_index = table_match.map(|(row, _)| row);
                let path_clean = table_match.is_some_and(|(_, clean)| clean);
                let otel_name = otel_name(method_index, route_index, route.as_deref());
                let is_server = direction == Direction::Server;
                // Client: `url.full` and `url.template`. Server: `url.path`, `url.scheme`,
                // `http.route`, `user_agent.original`, `client.address`.
                let url_full = (!is_server).then(|| target.redacted().path_clean(path_clean));
                let url_path = is_server.then(|| redact(target.path));
                let user_agent = user_agent_header
                    .and_then(|value| value.to_str().ok())
                    .map(redacted_user_agent);
                let client_address = match is_server {
                    true => extensions
                        .get::<ClientAddress>()
                        .map(|address| display(address.ip())),
                    false => None,
                };
                let kind = direction.as_str();
                let method_name = method_index.map_or(OTHER, |index| KNOWN_METHODS[index]);
                let method_original = (!known_method).then(|| method.as_str());
                let http_route = route.as_deref().filter(|_| is_server);
                let url_template = route.as_deref().filter(|_| !is_server);
                let url_path = url_path.as_deref();
                let url_scheme = is_server.then(|| target.scheme.unwrap_or("http"));
                let port = port.map(i64::from);
                let user_agent = user_agent.as_deref();
                let product_name = product.as_str();
                let operation = operation_id.as_ref().map(OperationId::as_str);
                let execution = mode.as_str();
                let caller = caller_id.as_deref();
                // Shown as text (`Display`), not as a string field: a `fmt` layer escapes a
                // string field character by character, and the name is one of the longest.
                let otel_name = display(&*otel_name);
                // `url.full` written once, with pushes, into this thread's buffer: subscribers
                // are shown text, not a `Display` that each of them would run.
                let mut url = UrlBuffer::take();
                if let Some(redacted) = &url_full {
                    redacted.push_to(&mut url.0);
                }
                let url_text = url_full.as_ref().map(|_| display(url.0.as_str()));
                let f = callsite::fields();
                // Only the fields the span starts with; the others are recorded when known.
                let values: StartValues<'_> = [
                    (&f[callsite::OTEL_KIND], Some(&kind)),
                    (&f[callsite::OTEL_NAME], Some(&otel_name)),
                    (&f[callsite::METHOD], Some(&method_name)),
                    (&f[callsite::METHOD_ORIGINAL], value(&method_original)),
                    (&f[callsite::ROUTE], value(&http_route)),
                    (&f[callsite::URL_TEMPLATE], value(&url_template)),
                    (&f[callsite::URL_FULL], value(&url_text)),
                    (&f[callsite::URL_PATH], value(&url_path)),
                    (&f[callsite::URL_SCHEME], value(&url_scheme)),
                    (&f[callsite::SERVER_ADDRESS], value(&address)),
                    (&f[callsite::SERVER_PORT], value(&port)),
                    (&f[callsite::CLIENT_ADDRESS], value(&client_address)),
                    (&f[callsite::USER_AGENT], value(&user_agent)),
                    (&f[callsite::PRODUCT], Some(&product_name)),
                    (&f[callsite::OPERATION_ID], value(&operation)),
                    (&f[callsite::EXECUTION_CONTEXT], Some(&execution)),
                    (&f[callsite::CALLER_ID], value(&caller)),
                    (&f[callsite::OBO_DEV_FALLBACK], Some(&obo_dev_fallback)),
                    (&f[callsite::REQUEST_MODEL], value(&endpoint)),
                ];
                callsite::new_span(&values)
            }
        };

        CallSpan {
            span,
            start,
            attempt_counter: extensions.get::<AttemptCounter>().cloned(),
            protocol_version: None,
            body_sizes: false,
            // Written in place (what `CallRecord::new` gives, with what is known now): built
            // apart and moved in, the record (~300 bytes) would be copied once more.
            record: CallRecord {
                host,
                route,
                mode,
                caller_id,
                obo_dev_fallback,
                operation_id,
                model: endpoint.map(Arc::from),
                ..CallRecord::new(direction, product.clone(), method.clone(), started_at)
            },
            model_call,
        }
    }

    /// The call's span: enter it while doing the call's work.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The record filled in so far (handed out by [`finish`](Self::finish)).
    pub fn record(&self) -> &CallRecord {
        &self.record
    }

    /// The record filled in so far, to add what an adapter or a body hook learns (a model name,
    /// token usage). Never put a token or an unredacted message into it.
    pub fn record_mut(&mut self) -> &mut CallRecord {
        &mut self.record
    }

    /// The HTTP version the call used, recorded as `network.protocol.version` (`"1.1"`, `"2"`)
    /// with the response head, or with the error if none arrives. Set it from the request when
    /// the call starts and again from the response (which tells what was negotiated). Costs
    /// no dispatch of its own.
    pub fn set_protocol_version(&mut self, version: Version) {
        self.protocol_version = protocol_version(version);
    }

    /// Opts in to the body sizes (off by default: the conventions make them opt-in, and they cost
    /// a dispatch per call): records `http.request.body.size` now, when the caller knows it
    /// (the tower layer reads `Content-Length`), and `http.response.body.size` when the call
    /// ends.
    pub fn record_body_sizes(&mut self, request_body_size: Option<u64>) {
        self.body_sizes = true;
        if let Some(size) = request_body_size {
            self.record_field(callsite::REQUEST_BODY_SIZE, saturating_i64(size));
        }
    }

    /// Classifies the response head with `classifier` and records it with
    /// [`on_response`](Self::on_response). What every adapter does when the head arrives
    /// (tower's [`Traced`](crate::Traced), the reqwest middleware, the server layer).
    pub fn classify_response<C: Classify>(
        &mut self,
        classifier: &C,
        status: StatusCode,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) {
        let outcome = classifier.classify_response(status, headers);
        self.on_response(status, extensions, outcome);
    }

    /// Classifies `error` with `classifier` and records it with [`on_error`](Self::on_error):
    /// an error from the inner service (no response) or while reading the body.
    pub fn classify_error<C: Classify>(&mut self, classifier: &C, error: &(dyn Error + 'static)) {
        let outcome = classifier.classify_error(error);
        self.on_error(error, outcome);
    }

    /// A call that failed without a response: classifies and records `error`, then
    /// [`finish`](Self::finish)es. Hand the record to a [`RecordCall`](crate::RecordCall).
    pub fn fail<C: Classify>(
        mut self,
        classifier: &C,
        error: &(dyn Error + 'static),
    ) -> CallRecord {
        self.classify_error(classifier, error);
        self.finish()
    }

    /// Records the response head: status, attempts (from an [`Attempts`] response extension,
    /// else 1) and the classified outcome.
    ///
    /// The span status is ERROR, with `error.type` the status code, for a 4xx or 5xx on a client
    /// span and a 5xx on a server span, as the HTTP conventions ask, whatever the outcome says;
    /// `http.request.resend_count` is recorded only when the call was resent.
    pub fn on_response(&mut self, status: StatusCode, extensions: &Extensions, outcome: Outcome) {
        let attempts = extensions.get::<Attempts>().map_or(1, |a| a.0.max(1));
        self.record.status = Some(status);
        self.record.attempts = attempts;
        self.record.outcome = outcome;
        let is_error = match self.record.direction {
            Direction::Server => status.is_server_error(),
            Direction::Client => status.is_client_error() || status.is_server_error(),
        };
        if self.span.is_disabled() {
            return; // nothing to record on it
        }
        let f = callsite::fields();
        let status_code = i64::from(status.as_u16());
        let resend_count = i64::from(attempts - 1);
        let error_type = status.as_str();
        let values = [
            (&f[callsite::STATUS_CODE], Some(&status_code as &dyn Value)),
            (
                &f[callsite::RESEND_COUNT],
                (attempts > 1).then_some(&resend_count as &dyn Value),
            ),
            (
                &f[callsite::OUTCOME],
                Some(&self.record.outcome.as_str() as &dyn Value),
            ),
            (
                &f[callsite::ERROR_TYPE],
                is_error.then_some(&error_type as &dyn Value),
            ),
            (
                &f[callsite::OTEL_STATUS_CODE],
                is_error.then_some(&"ERROR" as &dyn Value),
            ),
            (
                &f[callsite::PROTOCOL_VERSION],
                self.protocol_version.as_ref().map(|v| v as &dyn Value),
            ),
        ];
        // One dispatch for the whole response head.
        self.span
            .record_all(&callsite::field_set().value_set(&values));
    }

    /// Records a failure: an error from the inner service (no response) or while reading the
    /// body. The message, with its source chain (at most 32 links), is redacted and truncated. Without a response,
    /// the attempts (and `http.request.resend_count`) come from the request's
    /// [`AttemptCounter`], if a retry layer filled one in, else 1.
    pub fn on_error(&mut self, error: &(dyn Error + 'static), outcome: Outcome) {
        self.record.error = Some(Arc::from(redact_error(error)));
        self.record.outcome = outcome;
        let no_response = self.record.status.is_none();
        if no_response {
            // No response carries `Attempts`: a retry layer may have counted them for us.
            self.record.attempts = self
                .attempt_counter
                .as_ref()
                .map_or(1, |counter| counter.get().max(1));
        }
        if self.span.is_disabled() {
            return;
        }
        let f = callsite::fields();
        // A failure is an error whatever the direction or the status.
        let error_type = self.record.outcome.error_type().unwrap_or(OTHER);
        let resend_count = i64::from(self.record.attempts - 1);
        let description = self.record.error.as_deref().unwrap_or_default();
        let values = [
            (
                &f[callsite::RESEND_COUNT],
                (no_response && self.record.attempts > 1).then_some(&resend_count as &dyn Value),
            ),
            (
                &f[callsite::OUTCOME],
                Some(&self.record.outcome.as_str() as &dyn Value),
            ),
            (&f[callsite::ERROR_TYPE], Some(&error_type as &dyn Value)),
            // The code before the description: tracing-opentelemetry reads the code "ERROR" as
            // an error without description, then the description as an error with it.
            (&f[callsite::OTEL_STATUS_CODE], Some(&"ERROR" as &dyn Value)),
            (
                &f[callsite::OTEL_STATUS_DESCRIPTION],
                Some(&description as &dyn Value),
            ),
            (
                &f[callsite::PROTOCOL_VERSION],
                self.protocol_version
                    .as_ref()
                    .filter(|_| no_response)
                    .map(|v| v as &dyn Value),
            ),
        ];
        self.span
            .record_all(&callsite::field_set().value_set(&values));
    }

    /// Counts response body bytes.
    pub fn on_body_bytes(&mut self, bytes: u64) {
        self.record.response_bytes += bytes;
    }

    /// Records the model the call asked for (`gen_ai.request.model`), e.g. the serving endpoint's
    /// name. It is the record's model unless the response names one.
    pub fn set_request_model(&mut self, model: Arc<str>) {
        self.record_field(callsite::REQUEST_MODEL, &*model);
        if self.record.model.is_none() {
            self.record.model = Some(model);
        }
    }

    /// Records the model that answered (`gen_ai.response.model`); it becomes the record's model.
    pub fn set_response_model(&mut self, model: Arc<str>) {
        self.record_field(callsite::RESPONSE_MODEL, &*model);
        self.record.model = Some(model);
    }

    /// Records the tokens the call consumed on the record and as `gen_ai.usage.input_tokens` and
    /// `gen_ai.usage.output_tokens` (as `i64`, saturating).
    pub fn set_usage(&mut self, usage: Usage) {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.record_field(callsite::INPUT_TOKENS, as_i64(usage.input_tokens));
        self.record_field(callsite::OUTPUT_TOKENS, as_i64(usage.output_tokens));
        self.record.usage = Some(usage);
    }

    /// Whether the request went to a model-serving path (`…/serving-endpoints/{name}/invocations`,
    /// `…/chat/completions`, `…/completions`, `…/embeddings`, `…/responses`). For such a call
    /// to a serving endpoint, the endpoint's name is recorded at the start as
    /// `gen_ai.request.model` and as the record's model.
    pub fn is_model_call(&self) -> bool {
        self.model_call
    }

    /// The model recorded so far, if any.
    pub fn model(&self) -> Option<&Arc<str>> {
        self.record.model.as_ref()
    }

    /// Notes that the response body was dropped before its end (`kasal.body_cut_short = true`).
    pub fn on_cut_short(&mut self) {
        self.record_field(callsite::BODY_CUT_SHORT, true);
    }

    /// Ends the call: sets the latency (from `start`) and returns the record. The span closes
    /// when the returned `CallSpan` is gone, i.e. now, unless someone holds a clone of it.
    pub fn finish(self) -> CallRecord {
        let CallSpan {
            span,
            record,
            start,
            body_sizes,
            ..
        } = self;
        end(&span, record, start, body_sizes)
    }

    /// [`finish`](Self::finish) of a boxed call: takes the record out of the box without
    /// moving the rest of the call first.
    pub(crate) fn finish_boxed(mut self: Box<Self>) -> CallRecord {
        let call = &mut *self;
        end_in_place(&call.span, &mut call.record, call.start, call.body_sizes);
        // Only the record leaves the box, straight to the caller; the rest (the span, which
        // closes) is dropped with the box.
        self.record
    }

    /// Records one field of the call span (`index` from `callsite`), found without a name
    /// lookup.
    fn record_field(&self, index: usize, value: impl Value) {
        self.span.record(&callsite::fields()[index], value);
    }
}

/// This thread's buffer for `url.full`, taken for one span's creation and put back after (an
/// empty one while it is out, so a nested call span, if a subscriber ever made one, allocates its
/// own): no allocation per call.
struct UrlBuffer(String);

impl UrlBuffer {
    thread_local! {
        static BUFFER: StdCell<String> = const { StdCell::new(String::new()) };
    }

    fn take() -> UrlBuffer {
        let mut text = Self::BUFFER.try_with(StdCell::take).unwrap_or_default();
        text.clear();
        UrlBuffer(text)
    }
}

impl Drop for UrlBuffer {
    fn drop(&mut self) {
        let text = std::mem::take(&mut self.0);
        let _ = Self::BUFFER.try_with(|buffer| buffer.set(text));
    }
}

/// The end of a call: its latency (from `start`) and, if opted in, the response body size.
/// The span closes when the caller drops it, after this.
fn end(span: &Span, mut record: CallRecord, start: Instant, body_sizes: bool) -> CallRecord {
    end_in_place(span, &mut record, start, body_sizes);
    record
}

/// [`end`] of a record that stays where it is.
fn end_in_place(span: &Span, record: &mut CallRecord, start: Instant, body_sizes: bool) {
    record.latency = start.elapsed();
    if body_sizes && record.status.is_some() {
        let size = saturating_i64(record.response_bytes);
        span.record(&callsite::fields()[callsite::RESPONSE_BODY_SIZE], size);
    }
}

/// A start value of the call span, if it has one.
fn value<T: Value>(value: &Option<T>) -> Option<&dyn Value> {
    value.as_ref().map(|value| value as &dyn Value)
}

/// How long a thread derives wall-clock times from its anchor before reading the wall clock again.
const REANCHOR_AFTER: Duration = Duration::from_secs(1);

/// The wall-clock time at `now`, without a wall-clock read per call: each thread keeps an
/// (`Instant`, `SystemTime`) pair read together and adds the monotonic time elapsed since, reading
/// both clocks again once the pair is [`REANCHOR_AFTER`] old.
///
/// Trade-off: NTP slewing moves both clocks alike, but a step of the wall clock (`settimeofday`,
/// a VM resume) shows up in `started_at` up to one second late. `started_at` is a timestamp for
/// exported telemetry, never compared with `latency` (which is monotonic), so that is acceptable.
fn wall_clock(now: Instant) -> SystemTime {
    thread_local! {
        static ANCHOR: StdCell<Option<(Instant, SystemTime)>> = const { StdCell::new(None) };
    }
    ANCHOR
        .try_with(|anchor| {
            if let Some((at, wall)) = anchor.get() {
                if let Some(since) = now.checked_duration_since(at) {
                    if since < REANCHOR_AFTER {
                        return wall + since;
                    }
                }
            }
            let wall = SystemTime::now();
            anchor.set(Some((now, wall)));
            wall
        })
        // During thread teardown the thread-local is gone: read the clock.
        .unwrap_or_else(|_| SystemTime::now())
}

/// `(host, port)` of a `host[:port]` authority without userinfo: what `Authority::host` and
/// `Authority::port_u16` return, reading only the port's bytes (from the end: the port is the
/// run of digits after the last `:`; an IPv6 literal ends in `]`, so its colons never count).
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    let bytes = authority.as_bytes();
    let digits = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let port_start = bytes.len() - digits;
    match port_start.checked_sub(1).map(|colon| (colon, bytes[colon])) {
        // `:` is ASCII: both ends are char boundaries.
        Some((colon, b':')) => (&authority[..colon], authority[port_start..].parse().ok()),
        _ => (authority, None),
    }
}

/// `host[:port]` of the server, from the target's authority or else the `Host` header, without
/// userinfo.
fn server_authority<'a>(
    target: &Target<'_>,
    host_header: impl FnOnce() -> Option<&'a HeaderValue>,
) -> Option<Authority> {
    match (target.parsed, target.host) {
        // No userinfo was cut: the URI's own authority, shared rather than parsed again.
        (Some(full), _) => Some(full.clone()),
        (None, Some(host)) => shared_authority(host),
        _ => host_header()
            .and_then(|host| host.to_str().ok())
            .and_then(|host| shared_authority(host_and_port(host))),
    }
}

/// `user_agent.original`: [`redact`] of a server's `User-Agent`, without reading it again when
/// it is this thread's last clean one (clients send the same one request after request, and a
/// browser's is a few hundred bytes). Only a value that `redact` leaves as it is, and of at most
/// [`LAST_USER_AGENT_MAX`] bytes, is kept: never one that may hold a secret.
fn redacted_user_agent(text: &str) -> Cow<'_, str> {
    thread_local! {
        static LAST_CLEAN: RefCell<LastText<()>> = const { RefCell::new(LastText::new()) };
    }
    crate::last::answer(
        &LAST_CLEAN,
        text,
        LAST_USER_AGENT_MAX,
        |()| Cow::Borrowed(text),
        || {
            let redacted = redact(text);
            let clean = matches!(&redacted, Cow::Borrowed(same) if same.len() == text.len());
            (redacted, clean.then_some(()))
        },
    )
}

/// The longest `User-Agent` a thread keeps (see [`redacted_user_agent`]), in bytes.
const LAST_USER_AGENT_MAX: usize = 512;

/// The first `Host` and `User-Agent` values of a request (what `HeaderMap::get` gives for each):
/// found in one pass over a map of at most [`ONE_PASS_MAX`] values.
fn host_and_user_agent(headers: &HeaderMap) -> (Option<&HeaderValue>, Option<&HeaderValue>) {
    use http::header::{HOST, USER_AGENT};
    if headers.len() > ONE_PASS_MAX {
        return (headers.get(HOST), headers.get(USER_AGENT));
    }
    let (mut host, mut user_agent) = (None, None);
    for (name, value) in headers {
        if *name == HOST {
            host.get_or_insert(value);
        } else if *name == USER_AGENT {
            user_agent.get_or_insert(value);
        }
    }
    (host, user_agent)
}

/// What a call is opened from: the parts of its URI, read from an `http::Uri` or from the text
/// of a URL parsed elsewhere (reqwest's `Url`).
#[derive(Clone, Copy)]
struct Target<'a> {
    scheme: Option<&'a str>,
    /// `host[:port]`, without userinfo (see [`url_authority`]).
    host: Option<&'a str>,
    /// The URI's own authority when `host` is the whole of it (no userinfo): shared, not
    /// parsed again.
    parsed: Option<&'a Authority>,
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn of_uri(uri: &'a Uri) -> Self {
        let host = url_authority(uri);
        Target {
            scheme: uri.scheme_str(),
            host,
            parsed: uri
                .authority()
                .filter(|full| host.is_some_and(|host| host.len() == full.as_str().len())),
            path: uri.path(),
            query: uri.query(),
        }
    }

    /// As `Uri` reads them: an empty authority is none, an empty path is `/`, and the query
    /// is what follows the first `?`.
    fn of_parts(scheme: &'a str, authority: &'a str, path_and_query: &'a str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        Target {
            scheme: Some(scheme),
            host: (!authority.is_empty()).then(|| host_and_port(authority)),
            parsed: None,
            path: if path.is_empty() { "/" } else { path },
            query,
        }
    }

    fn redacted(&self) -> RedactedUri<'a> {
        RedactedUri::from_parts(self.scheme, self.host, self.path, self.query)
    }
}

/// `host` parsed as an [`Authority`], shared from this thread's last one when the text is the
/// same: a server sees the same `Host` on nearly every request, and a client calls the same
/// few hosts, so this saves a parse and a copy (the clone shares the bytes). `None` when the
/// text is not an authority. For adapters building a request's URI (the reqwest one does).
pub fn shared_authority(host: &str) -> Option<Authority> {
    thread_local! {
        static LAST: RefCell<Option<Authority>> = const { RefCell::new(None) };
    }
    crate::last::shared(&LAST, |last| last.as_str() == host, || host.parse().ok())
}

/// `otel.name`: `"{METHOD}"` or `"{METHOD} {template}"` (`HTTP` for a method the conventions do
/// not know). A plain string, so subscribers record it without formatting: shared and
/// allocated once per (method, table row) for a template of
/// [`DATABRICKS_ROUTES`](crate::route::DATABRICKS_ROUTES) (`route_index`), static without a
/// route; for another template (a server's matched route), formatted once and reused while
/// the thread's calls keep the same method and template.
fn otel_name(method_index: Option<usize>, route_index: Option<usize>, route: Option<&str>) -> Name {
    let method = method_index.map_or("HTTP", |index| KNOWN_METHODS[index]);
    let Some(route) = route else {
        return Name::Static(method);
    };
    let Some(row) = route_index else {
        return last_name(method, route);
    };
    static NAMES: OnceLock<Box<[OnceLock<Box<str>>]>> = OnceLock::new();
    let rows = crate::route::DATABRICKS_ROUTES.len();
    let names = NAMES.get_or_init(|| {
        (0..(KNOWN_METHODS.len() + 1) * rows)
            .map(|_| OnceLock::new())
            .collect()
    });
    let slot = method_index.unwrap_or(KNOWN_METHODS.len()) * rows + row;
    match names.get(slot) {
        Some(name) => Name::Static(name.get_or_init(|| format!("{method} {route}").into())),
        None => last_name(method, route),
    }
}

/// `"{method} {route}"`, from this thread's last one when it is the same.
fn last_name(method: &'static str, route: &str) -> Name {
    thread_local! {
        static LAST: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
    }
    let make = || Arc::<str>::from(format!("{method} {route}"));
    let same = |name: &Arc<str>| {
        name.strip_prefix(method)
            .and_then(|rest| rest.strip_prefix(' '))
            .is_some_and(|rest| rest == route)
    };
    Name::Shared(crate::last::shared(&LAST, same, || Some(make())).unwrap_or_else(make))
}

/// An `otel.name`, borrowed for the span's creation.
enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Name::Static(name) => name,
            Name::Shared(name) => name,
        }
    }
}

/// `_OTHER`: the conventions' value for an unknown method and an unknown error type.
const OTHER: &str = "_OTHER";

/// The methods the HTTP conventions know (RFC 9110 and PATCH); any other is `_OTHER`.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The index of `method` in [`KNOWN_METHODS`], `None` for a method the conventions do not know.
fn known_method_index(method: &Method) -> Option<usize> {
    Some(match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => return None,
    })
}

/// `network.protocol.version` for `version`.
fn protocol_version(version: Version) -> Option<&'static str> {
    match version {
        Version::HTTP_09 => Some("0.9"),
        Version::HTTP_10 => Some("1.0"),
        Version::HTTP_11 => Some("1.1"),
        Version::HTTP_2 => Some("2"),
        Version::HTTP_3 => Some("3"),
        _ => None,
    }
}

/// OpenTelemetry has no unsigned integers (tracing-opentelemetry exports a `u64` as a string).
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;
    use crate::redact::MAX_CHAIN_DEPTH;

    #[test]
    fn split_host_port_agrees_with_authority() {
        for text in [
            "example.com",
            "example.com:8443",
            "example.com:",
            "example.com:99999",
            "example.com:0",
            "10",
            "10:80",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[fe80::1%25eth0]:443",
            "adb-1234567890123456.7.azuredatabricks.net",
        ] {
            let authority: Authority = text.parse().unwrap();
            assert_eq!(
                split_host_port(authority.as_str()),
                (authority.host(), authority.port_u16()),
                "{text}"
            );
        }
    }

    #[test]
    fn a_repeated_user_agent_is_redacted_as_redact_does() {
        let secret = "curl/8 Authorization: Bearer abc.def.ghi";
        for text in [
            "bench/1.0",
            "bench/1.0",
            secret,
            secret,
            "bench/1.0",
            "",
            &"Mozilla/5.0 ".repeat(100),
        ] {
            assert_eq!(redacted_user_agent(text), redact(text), "{text}");
        }
        assert_ne!(redacted_user_agent(secret), secret);
    }

    #[test]
    fn host_and_user_agent_are_the_first_values_in_any_map() {
        use http::header::{HOST, USER_AGENT};
        let mut small = HeaderMap::new();
        small.append(USER_AGENT, HeaderValue::from_static("ua/1"));
        small.append("x-a", HeaderValue::from_static("a"));
        small.append(HOST, HeaderValue::from_static("h1"));
        small.append(HOST, HeaderValue::from_static("h2"));
        small.append(USER_AGENT, HeaderValue::from_static("ua/2"));
        let mut large = small.clone();
        for i in 0..ONE_PASS_MAX {
            large.append(
                format!("x-{i}").parse::<http::HeaderName>().unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        for map in [&small, &large, &HeaderMap::new()] {
            assert_eq!(
                host_and_user_agent(map),
                (map.get(HOST), map.get(USER_AGENT))
            );
        }
        assert_eq!(host_and_user_agent(&small).0.unwrap(), "h1");
    }

    /// An error whose `source()` is itself, for the first `links` walks (then it ends, so a
    /// walk that does not bound itself still terminates here, after `links` steps).
    #[derive(Debug)]
    struct Cyclic {
        walked: StdCell<usize>,
        links: usize,
    }

    impl fmt::Display for Cyclic {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loop")
        }
    }

    impl Error for Cyclic {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.walked.set(self.walked.get() + 1);
            (self.walked.get() < self.links).then_some(self as &(dyn Error + 'static))
        }
    }

    #[test]
    fn on_error_walks_a_cyclic_source_chain_a_bounded_depth() {
        let mut call = CallSpan::start(
            &Product::Genie,
            Direction::Client,
            &Method::GET,
            &Uri::from_static("http://h/"),
            &HeaderMap::new(),
            &Extensions::new(),
        );
        let error = Cyclic {
            walked: StdCell::new(0),
            links: 10_000,
        };
        call.on_error(&error, Outcome::Success);
        assert!(
            error.walked.get() <= MAX_CHAIN_DEPTH,
            "{}",
            error.walked.get()
        );
        let message = call.finish().error.unwrap_or_default();
        assert_eq!(
            message.matches("loop").count(),
            MAX_CHAIN_DEPTH,
            "{message}"
        );
        assert!(message.starts_with("loop: loop"), "{message}");
    }

    /// `start_client` from the text of a URI's parts opens the call `start` opens from the URI.
    #[test]
    fn start_client_from_parts_is_start_from_the_uri() {
        for text in [
            "http://127.0.0.1:8080/api/2.0/genie/spaces/01ef?page=2",
            "https://example.cloud.databricks.com/serving-endpoints/llama/invocations",
            "https://example.cloud.databricks.com",
            "http://user:secret@host.example:81/a/b?token=x&y=%20z",
            "http://[::1]:9000/v1?q",
            "https://host.example/a?",
            "ftp://host.example/file",
        ] {
            let uri = Uri::from_static(text);
            let path_and_query = uri.path_and_query().map_or("", |pq| pq.as_str());
            let authority = uri.authority().map_or("", Authority::as_str);
            let start = |call: CallSpan| {
                let model_call = call.is_model_call();
                let record = call.finish();
                (record.host, record.route, record.model, model_call)
            };
            let (headers, extensions) = (HeaderMap::new(), Extensions::new());
            let ours = CallSpan::start_client(
                &Product::Genie,
                &Method::GET,
                uri.scheme_str().unwrap_or_default(),
                authority,
                path_and_query,
                &headers,
                &extensions,
            );
            let theirs = CallSpan::start(
                &Product::Genie,
                Direction::Client,
                &Method::GET,
                &uri,
                &headers,
                &extensions,
            );
            assert_eq!(start(ours), start(theirs), "{text}");
            // `url.full`, redacted: the same text.
            let scheme = uri.scheme_str().unwrap_or_default();
            let (mut ours, mut theirs) = (String::new(), String::new());
            Target::of_parts(scheme, authority, path_and_query)
                .redacted()
                .push_to(&mut ours);
            RedactedUri::new(&uri).push_to(&mut theirs);
            assert_eq!(ours, theirs, "{text}");
            assert!(!ours.contains("secret"), "{ours}");
        }
    }

    #[test]
    fn wall_clock_tracks_the_system_clock() {
        let before = SystemTime::now();
        let first = wall_clock(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let second = wall_clock(Instant::now());
        let after = SystemTime::now();
        // Derived from the anchor: within the real readings (plus a little slack), in order.
        let slack = Duration::from_millis(5);
        assert!(first + slack >= before && first <= after);
        assert!(second >= first + Duration::from_millis(20));
        assert!(second <= after + slack);
    }
}
