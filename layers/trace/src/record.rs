//! [`CallRecord`]: one finished call as handed to the telemetry pipeline, and [`RecordCall`], the
//! sink that takes it. A record must never hold a token or an unredacted message.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode, uri::Authority};
use kasal_classify::Outcome;
use kasal_user_agent::Product;

use crate::{ExecutionMode, OperationId, Usage};

/// Whether we made the call (client) or answered it (server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// An outgoing call.
    Client,
    /// An incoming call.
    Server,
}

impl Direction {
    /// `"client"` or `"server"`: also the span's `otel.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Client => "client",
            Direction::Server => "server",
        }
    }
}

/// One finished logical call (all its attempts), as recorded into the telemetry pipeline.
///
/// Holds no secrets: the execution context's token is never copied here, and `error` is redacted.
///
/// `#[non_exhaustive]`: fields will be added (token usage, model) without a breaking change.
/// Outside this crate, build one with [`CallRecord::new`] and set the public fields:
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use kasal_trace::{CallRecord, Direction};
/// use kasal_user_agent::Product;
///
/// let mut record = CallRecord::new(Direction::Client, Product::Genie, http::Method::GET, SystemTime::now());
/// record.status = Some(http::StatusCode::OK);
/// record.latency = Duration::from_millis(12);
/// assert_eq!(record.attempts, 1);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CallRecord {
    /// Client or server.
    pub direction: Direction,
    /// The product the call is attributed to.
    pub product: Product,
    /// The HTTP method.
    pub method: Method,
    /// `host[:port]` of the server, when known.
    pub host: Option<Authority>,
    /// The route template (`/api/2.0/serving-endpoints/{name}`), when known; never a raw path.
    pub route: Option<Arc<str>>,
    /// The final response status, if a response arrived.
    pub status: Option<StatusCode>,
    /// How the call went.
    pub outcome: Outcome,
    /// When the call started (wall clock).
    pub started_at: SystemTime,
    /// From the start of the call to the end of the response body (or the error).
    pub latency: Duration,
    /// Attempts made, including the first (1 = no retry).
    pub attempts: u32,
    /// Response body bytes read.
    pub response_bytes: u64,
    /// User or service.
    pub mode: ExecutionMode,
    /// The caller's identity, if known.
    pub caller_id: Option<Arc<str>>,
    /// Whether the call fell back to developer credentials.
    pub obo_dev_fallback: bool,
    /// The operation this call belongs to, if any.
    pub operation_id: Option<OperationId>,
    /// The redacted error message, for failed calls.
    pub error: Option<Arc<str>>,
    /// Tokens the call consumed, for model calls whose response reported them.
    pub usage: Option<Usage>,
    /// The model: the one the response named, else the one requested (the serving endpoint).
    pub model: Option<Arc<str>>,
}

impl CallRecord {
    /// A call started at `started_at`, with nothing else known yet: no host, route, status or
    /// error, outcome `Success`, zero latency and bytes, one attempt, `Service` mode, no caller,
    /// no operation.
    pub fn new(
        direction: Direction,
        product: Product,
        method: Method,
        started_at: SystemTime,
    ) -> Self {
        CallRecord {
            direction,
            product,
            method,
            host: None,
            route: None,
            status: None,
            outcome: Outcome::Success,
            started_at,
            latency: Duration::ZERO,
            attempts: 1,
            response_bytes: 0,
            mode: ExecutionMode::Service,
            caller_id: None,
            obo_dev_fallback: false,
            operation_id: None,
            error: None,
            usage: None,
            model: None,
        }
    }
}

/// Receives every finished call. Implemented by the telemetry pipeline's handle; `()` drops them.
///
/// Must not block: it runs on the request path (at the end of the response body).
pub trait RecordCall: Clone + Send + Sync + 'static {
    /// Takes one finished call.
    fn record_call(&self, record: CallRecord);
}

impl RecordCall for () {
    fn record_call(&self, _record: CallRecord) {}
}

/// Any `Fn(CallRecord)` closure records calls, like tower-http's callbacks.
impl<F> RecordCall for F
where
    F: Fn(CallRecord) + Clone + Send + Sync + 'static,
{
    fn record_call(&self, record: CallRecord) {
        self(record)
    }
}
