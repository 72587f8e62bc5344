//! What the workspace records, as its accessors hand it out: the data types only. The servers
//! that fill them (`otlp`, `record`, `serving`, `telemetry`) add their own methods, and
//! `state` keeps them, so neither imports the other.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;

/// What the OTLP receiver has decoded so far.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct OtlpReceived {
    /// Export requests decoded, all signals.
    pub requests: u64,
    /// Requests refused: not protobuf, not decodable, or too large.
    pub malformed: u64,
    /// Metric name → data points received.
    pub metric_points: BTreeMap<String, u64>,
    /// Metric name → the sum of its values: number points' values, histogram points' `sum`.
    pub metric_sums: BTreeMap<String, f64>,
    /// Metric name → its unit, as last received.
    pub metric_units: BTreeMap<String, String>,
    /// Span name → spans received.
    pub spans: BTreeMap<String, u64>,
    /// Log records received.
    pub log_records: u64,
}

/// One call the workspace answered (faults included), as the server saw it. Tokens are never
/// kept: only whether there was one and, if the workspace knows it, whose it is.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecordedCall {
    /// The request method.
    pub method: Method,
    /// The request path, without the query.
    pub path: String,
    /// The route template that matched (`/serving-endpoints/{name}/invocations`), if any.
    pub route: Option<String>,
    /// The `User-Agent` header as received.
    pub user_agent: Option<String>,
    /// `X-Forwarded-Email`, else `X-Forwarded-User`: the user a proxy says the call is for.
    pub forwarded_user: Option<String>,
    /// The user the bearer token belongs to (see [`WorkspaceBuilder::user`]); `None` for no
    /// token or a token the workspace does not know.
    ///
    /// [`WorkspaceBuilder::user`]: crate::WorkspaceBuilder::user
    pub caller: Option<String>,
    /// Whether the call carried `Authorization: Bearer …`.
    pub authenticated: bool,
    /// The status answered.
    pub status: StatusCode,
    /// Whether an injected fault chose the status.
    pub injected: bool,
    /// Time from receiving the request to having the response head (streamed bodies continue).
    pub latency: Duration,
}

/// Token usage the serving endpoint answered for one model (summed over its answers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServedUsage {
    /// Answers that carried a usage object.
    pub responses: u64,
    /// `usage.prompt_tokens` summed.
    pub prompt_tokens: u64,
    /// `usage.completion_tokens` summed (0 for embeddings).
    pub completion_tokens: u64,
    /// `usage.total_tokens` summed.
    pub total_tokens: u64,
}

/// One telemetry upload the workspace received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TelemetryBatch {
    /// `/telemetry-ext` or `/telemetry-unauth`.
    pub path: String,
    /// Whether the upload carried `Authorization: Bearer …`.
    pub authenticated: bool,
    /// The uploader's User-Agent.
    pub user_agent: Option<String>,
    /// Bytes on the wire (compressed size when gzip).
    pub bytes: usize,
    /// Whether it came with `Content-Encoding: gzip`.
    pub gzip: bool,
    /// `uploadTime` (ms since the epoch), if present.
    pub upload_time: Option<i64>,
    /// Length of `items`.
    pub items: usize,
    /// Every `protoLogs` entry, parsed.
    pub proto_logs: Vec<Value>,
    /// `protoLogs` entries that were not JSON objects (the service would reject them).
    pub rejected_logs: usize,
}
