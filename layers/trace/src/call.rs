//! The sans-IO core of the span layer: open a call span from a request head, record the response
//! or the error on it, count body bytes, and finish into a [`CallRecord`].
//!
//! [`Traced`](crate::Traced) and [`TracedBody`](crate::TracedBody) are thin tower/http-body
//! adapters over [`CallSpan`]; other clients (the reqwest middleware) drive it directly, so both
//! produce the same spans and records. Nothing here may copy the context's `user_token` or an
//! unredacted URL or error message into a span field or a record.

use std::cell::{Cell as StdCell, RefCell};
use std::error::Error;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::uri::{Authority, Scheme};
use http::{Extensions, HeaderMap, Method, StatusCode, Uri, Version};
use kasal_classify::{AttemptCounter, Attempts, Classify, Outcome};
use kasal_user_agent::Product;
use tracing::Span;
use tracing::field::{Empty, Field, FieldSet, Value, display};

use crate::context::Route;
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
        let start = Instant::now();
        let started_at = wall_clock(start);
        // The one place the template is chosen: a `Route` extension (the server adapter sets it
        // from the router's matched path), else, for client calls, the template inferred from
        // the path (`route::infer_shared`): never the raw path.
        // For a template of the table: its row, and whether the path passes the redaction
        // prefilter (then `url.full` writes it without `redact`).
        let (route, table_match) = match extensions.get::<Route>() {
            Some(route) => (Some(route.0.clone()), None),
            None if direction == Direction::Client => {
                let (route, found) = crate::route::infer_path_indexed(uri.path());
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
        let authority = url_authority(uri);
        let host = server_authority(uri, authority, headers);
        let (address, port) = match &host {
            Some(host) => {
                let (address, port) = split_host_port(host.as_str());
                let port = port.or(match uri.scheme() {
                    Some(scheme) if *scheme == Scheme::HTTPS => Some(443),
                    Some(scheme) if *scheme == Scheme::HTTP => Some(80),
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
        // Client: `url.full` and `url.template`. Server: `url.path`, `url.scheme`, `http.route`,
        // `user_agent.original`, `client.address`.
        let url_full = (!is_server)
            .then(|| display(RedactedUri::with_authority(uri, authority).path_clean(path_clean)));
        let url_path = is_server.then(|| redact(uri.path()));
        let user_agent = match is_server {
            true => headers
                .get(http::header::USER_AGENT)
                .and_then(|value| value.to_str().ok())
                .map(redact),
            false => None,
        };
        let client_address = match is_server {
            true => extensions
                .get::<ClientAddress>()
                .map(|address| display(address.ip())),
            false => None,
        };

        let model_call = crate::usage::is_model_serving_path(uri.path());
        let endpoint = model_call
            .then(|| crate::usage::serving_endpoint_model(uri.path()))
            .flatten();

        let span = tracing::info_span!(
            target: "kasal_trace",
            "HTTP",
            otel.kind = direction.as_str(),
            otel.name = &*otel_name,
            otel.status_code = Empty,
            otel.status_description = Empty,
            http.request.method = method_index.map_or(OTHER, |index| KNOWN_METHODS[index]),
            http.request.method_original = (!known_method).then(|| method.as_str()),
            http.route = route.as_deref().filter(|_| is_server),
            url.template = route.as_deref().filter(|_| !is_server),
            url.full = url_full,
            url.path = url_path.as_deref(),
            url.scheme = is_server.then(|| uri.scheme_str().unwrap_or("http")),
            server.address = address,
            server.port = port.map(i64::from),
            client.address = client_address,
            user_agent.original = user_agent.as_deref(),
            network.protocol.version = Empty,
            http.request.body.size = Empty,
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
            gen_ai.request.model = endpoint,
            gen_ai.response.model = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
        );

        let mut record = CallRecord::new(direction, product.clone(), method.clone(), started_at);
        record.host = host;
        record.route = route;
        record.mode = mode;
        record.caller_id = caller_id;
        record.obo_dev_fallback = obo_dev_fallback;
        record.operation_id = operation_id;
        record.model = endpoint.map(Arc::from);
        CallSpan {
            span,
            start,
            attempt_counter: extensions.get::<AttemptCounter>().cloned(),
            protocol_version: None,
            body_sizes: false,
            record,
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
            self.span
                .record("http.request.body.size", saturating_i64(size));
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
        let Some(fields) = LateFields::of(&self.span) else {
            return; // the span is disabled: nothing to record on it
        };
        let status_code = i64::from(status.as_u16());
        let resend_count = i64::from(attempts - 1);
        let error_type = status.as_str();
        let values = [
            (&fields.status_code, Some(&status_code as &dyn Value)),
            (
                &fields.resend_count,
                (attempts > 1).then_some(&resend_count as &dyn Value),
            ),
            (
                &fields.outcome,
                Some(&self.record.outcome.as_str() as &dyn Value),
            ),
            (
                &fields.error_type,
                is_error.then_some(&error_type as &dyn Value),
            ),
            (
                &fields.otel_status_code,
                is_error.then_some(&"ERROR" as &dyn Value),
            ),
            (
                &fields.protocol_version,
                self.protocol_version.as_ref().map(|v| v as &dyn Value),
            ),
        ];
        // One dispatch for the whole response head.
        self.span.record_all(&fields.set.value_set(&values));
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
        let Some(fields) = LateFields::of(&self.span) else {
            return;
        };
        // A failure is an error whatever the direction or the status.
        let error_type = self.record.outcome.error_type().unwrap_or(OTHER);
        let resend_count = i64::from(self.record.attempts - 1);
        let description = self.record.error.as_deref().unwrap_or_default();
        let values = [
            (
                &fields.resend_count,
                (no_response && self.record.attempts > 1).then_some(&resend_count as &dyn Value),
            ),
            (
                &fields.outcome,
                Some(&self.record.outcome.as_str() as &dyn Value),
            ),
            (&fields.error_type, Some(&error_type as &dyn Value)),
            // The code before the description: tracing-opentelemetry reads the code "ERROR" as
            // an error without description, then the description as an error with it.
            (&fields.otel_status_code, Some(&"ERROR" as &dyn Value)),
            (&fields.status_description, Some(&description as &dyn Value)),
            (
                &fields.protocol_version,
                self.protocol_version
                    .as_ref()
                    .filter(|_| no_response)
                    .map(|v| v as &dyn Value),
            ),
        ];
        self.span.record_all(&fields.set.value_set(&values));
    }

    /// Counts response body bytes.
    pub fn on_body_bytes(&mut self, bytes: u64) {
        self.record.response_bytes += bytes;
    }

    /// Records the model the call asked for (`gen_ai.request.model`), e.g. the serving endpoint's
    /// name. It is the record's model unless the response names one.
    pub fn set_request_model(&mut self, model: Arc<str>) {
        self.span.record("gen_ai.request.model", &*model);
        if self.record.model.is_none() {
            self.record.model = Some(model);
        }
    }

    /// Records the model that answered (`gen_ai.response.model`); it becomes the record's model.
    pub fn set_response_model(&mut self, model: Arc<str>) {
        self.span.record("gen_ai.response.model", &*model);
        self.record.model = Some(model);
    }

    /// Records the tokens the call consumed on the record and as `gen_ai.usage.input_tokens` and
    /// `gen_ai.usage.output_tokens` (as `i64`, saturating).
    pub fn set_usage(&mut self, usage: Usage) {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.span
            .record("gen_ai.usage.input_tokens", as_i64(usage.input_tokens));
        self.span
            .record("gen_ai.usage.output_tokens", as_i64(usage.output_tokens));
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
        self.span.record("kasal.body_cut_short", true);
    }

    /// Ends the call: sets the latency (from `start`) and returns the record. The span closes
    /// when the returned `CallSpan` is gone, i.e. now, unless someone holds a clone of it.
    pub fn finish(mut self) -> CallRecord {
        self.record.latency = self.start.elapsed();
        if self.body_sizes && self.record.status.is_some() {
            let size = saturating_i64(self.record.response_bytes);
            self.span.record("http.response.body.size", size);
        }
        self.record
    }
}

/// The span fields recorded after the span opens, looked up by name once: every call span comes
/// from the one `info_span!` in [`CallSpan::start`], so they are the same for all of them. Saves
/// a name lookup per field and lets a whole stage go out in one `record_all` dispatch.
struct LateFields {
    set: &'static FieldSet,
    status_code: Field,
    resend_count: Field,
    error_type: Field,
    otel_status_code: Field,
    status_description: Field,
    protocol_version: Field,
    outcome: Field,
}

impl LateFields {
    /// The fields of `span`'s callsite; `None` for a disabled span.
    fn of(span: &Span) -> Option<&'static LateFields> {
        static FIELDS: OnceLock<Option<LateFields>> = OnceLock::new();
        let metadata = span.metadata()?;
        let set = metadata.fields();
        FIELDS
            .get_or_init(|| {
                Some(LateFields {
                    set,
                    status_code: set.field("http.response.status_code")?,
                    resend_count: set.field("http.request.resend_count")?,
                    error_type: set.field("error.type")?,
                    otel_status_code: set.field("otel.status_code")?,
                    status_description: set.field("otel.status_description")?,
                    protocol_version: set.field("network.protocol.version")?,
                    outcome: set.field("kasal.outcome")?,
                })
            })
            .as_ref()
            // Always true (one callsite); checked so a future second callsite cannot mix fields.
            .filter(|fields| fields.outcome.callsite() == metadata.callsite())
    }
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

/// `(host, port)` of a `host[:port]` authority without userinfo, in one pass: what
/// `Authority::host` and `Authority::port_u16` return, without their separate scans.
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    let bytes = authority.as_bytes();
    // An IPv6 literal keeps its brackets, and its colons are not a port separator.
    let host_end = if bytes.first() == Some(&b'[') {
        bytes
            .iter()
            .position(|&b| b == b']')
            .map_or(bytes.len(), |i| i + 1)
    } else {
        bytes.iter().position(|&b| b == b':').unwrap_or(bytes.len())
    };
    let (host, rest) = authority.split_at(host_end);
    let port = rest.strip_prefix(':').and_then(|port| port.parse().ok());
    (host, port)
}

/// `host[:port]` of the server, from the URI (`authority` is [`url_authority`] of it) or else the
/// `Host` header, without userinfo.
fn server_authority(uri: &Uri, authority: Option<&str>, headers: &HeaderMap) -> Option<Authority> {
    match (uri.authority(), authority) {
        // No userinfo was cut: the URI's own authority, shared rather than parsed again.
        (Some(full), Some(host)) if full.as_str().len() == host.len() => Some(full.clone()),
        (_, Some(host)) => host.parse().ok(),
        _ => headers
            .get(http::header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| parse_host(host_and_port(host))),
    }
}

/// `host` as an [`Authority`], shared from this thread's last one when it is the same (a
/// server sees the same `Host` on nearly every request: this saves a parse and a copy).
fn parse_host(host: &str) -> Option<Authority> {
    thread_local! {
        static LAST: RefCell<Option<Authority>> = const { RefCell::new(None) };
    }
    LAST.try_with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return host.parse().ok();
        };
        if let Some(authority) = last.as_ref().filter(|a| a.as_str() == host) {
            return Some(authority.clone());
        }
        let authority: Authority = host.parse().ok()?;
        *last = Some(authority.clone());
        Some(authority)
    })
    .unwrap_or_else(|_| host.parse().ok())
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
    /// The method, the route and their name.
    type Last = Option<(&'static str, Arc<str>, Arc<str>)>;
    thread_local! {
        static LAST: RefCell<Last> = const { RefCell::new(None) };
    }
    let make = || Arc::<str>::from(format!("{method} {route}"));
    LAST.try_with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return make();
        };
        if let Some((last_method, last_route, name)) = &*last {
            if *last_method == method && **last_route == *route {
                return name.clone();
            }
        }
        let name = make();
        *last = Some((method, Arc::from(route), name.clone()));
        name
    })
    .map_or_else(|_| Name::Shared(make()), Name::Shared)
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
