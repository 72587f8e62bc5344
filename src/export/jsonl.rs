//! `JsonLinesExporter`: one JSON object per line for each operation summary and rollup.
//!
//! Field names are stable (snake_case, durations in milliseconds as numbers, times in Unix
//! milliseconds); each line has `"kind": "operation"`, `"kind": "rollup"` or `"kind": "usage"`
//! (model tokens per product, model and window). Operation lines carry the operation's tokens
//! in `usage` when any call reported some. Usage lines carry each call's tokens per type in
//! `input_histogram` / `output_histogram` (`count`, `sum`, `min`, `max`, `bounds`, `buckets`;
//! absent when no call reported tokens of that type).
//!
//! Must never block the runtime: lines are serialized on the aggregator task and written on
//! tokio's blocking pool. Write errors are returned to the pipeline, which counts them.

use std::fmt;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::{self, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tower::Service;

use super::clock::unix_millis;
use crate::event::{
    Batch, ErrorEntry, OperationSummary, OutcomeCounts, Rollup, TokenHistogram, UsageRollup,
};
use kasal_trace::Usage;

/// Writes each batch as JSON lines to stdout, a file, or any `Write`.
///
/// ```
/// use kasal_telemetry::{JsonLinesExporter, Telemetry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let telemetry = Telemetry::builder()
///     .exporter(JsonLinesExporter::stdout())
///     .ignore_env()
///     .build();
/// telemetry.shutdown().await;
/// # }
/// ```
#[derive(Clone)]
pub struct JsonLinesExporter {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl fmt::Debug for JsonLinesExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesExporter").finish_non_exhaustive()
    }
}

impl JsonLinesExporter {
    /// Writes to standard output.
    pub fn stdout() -> JsonLinesExporter {
        JsonLinesExporter::new(io::stdout())
    }

    /// Appends to the file at `path`, creating it if needed.
    pub fn file(path: impl AsRef<Path>) -> io::Result<JsonLinesExporter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLinesExporter::new(file))
    }

    /// Writes to `writer`.
    pub fn new(writer: impl Write + Send + 'static) -> JsonLinesExporter {
        JsonLinesExporter {
            out: Arc::new(Mutex::new(Box::new(writer))),
        }
    }
}

/// Serializes a batch: one line per operation summary, then one per rollup.
pub(crate) fn to_lines(batch: &Batch) -> Vec<u8> {
    let mut lines = Vec::new();
    for operation in &batch.operations {
        write_line(&mut lines, &OperationLine::from(operation));
    }
    for rollup in &batch.rollups {
        write_line(&mut lines, &RollupLine::from(rollup));
    }
    for usage in &batch.usage {
        write_line(&mut lines, &UsageLine::from(usage));
    }
    lines
}

fn write_line(lines: &mut Vec<u8>, line: &impl Serialize) {
    // Serializing these plain structs into a Vec cannot fail.
    if serde_json::to_writer(&mut *lines, line).is_ok() {
        lines.push(b'\n');
    }
}

fn write_all(out: &Mutex<Box<dyn Write + Send>>, lines: &[u8]) -> io::Result<()> {
    let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
    out.write_all(lines)?;
    out.flush()
}

impl Service<Batch> for JsonLinesExporter {
    type Response = ();
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        let lines = to_lines(&batch);
        let out = self.out.clone();
        Box::pin(async move {
            if lines.is_empty() {
                return Ok(());
            }
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => runtime
                    .spawn_blocking(move || write_all(&out, &lines))
                    .await
                    .map_err(io::Error::other)?,
                // Polled outside tokio: no blocking pool to move to.
                Err(_) => write_all(&out, &lines),
            }
        })
    }
}

/// Milliseconds with nanosecond precision (exact for whole milliseconds).
fn ms(duration: Duration) -> f64 {
    duration.as_nanos() as f64 / 1e6
}

#[derive(Serialize)]
struct OperationLine<'a> {
    kind: &'static str,
    operation_id: &'a str,
    product: &'a str,
    execution_context: &'static str,
    caller_id: Option<&'a str>,
    obo_dev_fallback: bool,
    started_at_ms: u64,
    complete: bool,
    calls: u64,
    retries: u64,
    latency_sum_ms: f64,
    latency_max_ms: f64,
    bytes: u64,
    outcomes: OutcomesLine,
    errors: Vec<ErrorLine<'a>>,
    errors_dropped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<TokensLine>,
}

#[derive(Serialize)]
struct TokensLine {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    cached_input_tokens: u64,
    reasoning_tokens: u64,
}

impl From<Usage> for TokensLine {
    fn from(usage: Usage) -> Self {
        TokensLine {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            total_tokens: usage.total_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            reasoning_tokens: usage.reasoning_tokens,
        }
    }
}

#[derive(Serialize)]
struct UsageLine<'a> {
    kind: &'static str,
    product: &'a str,
    model: &'a str,
    window_start_ms: u64,
    window_end_ms: u64,
    calls: u64,
    #[serde(flatten)]
    tokens: TokensLine,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_histogram: Option<TokenHistogramLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_histogram: Option<TokenHistogramLine<'a>>,
}

/// Each call's tokens of one type: buckets over `bounds` (upper bounds, inclusive; one more
/// bucket than bounds).
#[derive(Serialize)]
struct TokenHistogramLine<'a> {
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
    bounds: &'static [u64],
    buckets: &'a [u64],
}

impl<'a> TokenHistogramLine<'a> {
    fn of(histogram: &'a TokenHistogram) -> Option<Self> {
        (!histogram.is_empty()).then(|| TokenHistogramLine {
            count: histogram.count(),
            sum: histogram.sum,
            min: histogram.min,
            max: histogram.max,
            bounds: &TokenHistogram::BOUNDS,
            buckets: &histogram.buckets,
        })
    }
}

impl<'a> From<&'a UsageRollup> for UsageLine<'a> {
    fn from(rollup: &'a UsageRollup) -> Self {
        UsageLine {
            kind: "usage",
            product: rollup.product.as_str(),
            model: &rollup.model,
            window_start_ms: unix_millis(rollup.window_start),
            window_end_ms: unix_millis(rollup.window_end),
            calls: rollup.calls,
            tokens: rollup.usage.into(),
            input_histogram: TokenHistogramLine::of(&rollup.input_histogram),
            output_histogram: TokenHistogramLine::of(&rollup.output_histogram),
        }
    }
}

#[derive(Serialize)]
struct OutcomesLine {
    success: u64,
    retryable: u64,
    terminal: u64,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    error_type: &'a str,
    message: &'a str,
    count: u64,
}

#[derive(Serialize)]
struct RollupLine<'a> {
    kind: &'static str,
    product: &'a str,
    direction: &'static str,
    method: &'a str,
    host: Option<&'a str>,
    route: Option<&'a str>,
    status_class: u8,
    outcome: &'static str,
    window_start_ms: u64,
    window_end_ms: u64,
    count: u64,
    latency_sum_ms: f64,
    latency_min_ms: f64,
    latency_max_ms: f64,
    histogram_bounds_ms: &'static [u64],
    histogram: &'a [u64],
}

impl<'a> From<&'a OperationSummary> for OperationLine<'a> {
    fn from(operation: &'a OperationSummary) -> Self {
        let OutcomeCounts {
            success,
            retryable,
            terminal,
        } = operation.outcomes;
        OperationLine {
            kind: "operation",
            operation_id: operation.operation_id.as_str(),
            product: operation.product.as_str(),
            execution_context: operation.mode.as_str(),
            caller_id: operation.caller_id.as_deref(),
            obo_dev_fallback: operation.obo_dev_fallback,
            started_at_ms: unix_millis(operation.started_at),
            complete: operation.complete,
            calls: operation.calls,
            retries: operation.retries,
            latency_sum_ms: ms(operation.latency_sum),
            latency_max_ms: ms(operation.latency_max),
            bytes: operation.bytes,
            outcomes: OutcomesLine {
                success,
                retryable,
                terminal,
            },
            errors: operation.errors.iter().map(ErrorLine::from).collect(),
            errors_dropped: operation.errors_dropped,
            usage: (!operation.usage.is_zero()).then(|| operation.usage.into()),
        }
    }
}

impl<'a> From<&'a ErrorEntry> for ErrorLine<'a> {
    fn from(error: &'a ErrorEntry) -> Self {
        ErrorLine {
            error_type: &error.error_type,
            message: &error.message,
            count: error.count,
        }
    }
}

impl<'a> From<&'a Rollup> for RollupLine<'a> {
    fn from(rollup: &'a Rollup) -> Self {
        let key = &rollup.key;
        RollupLine {
            kind: "rollup",
            product: key.product.as_str(),
            direction: key.direction.as_str(),
            method: key.method.as_str(),
            host: key.host.as_ref().map(|host| host.as_str()),
            route: key.route.as_deref(),
            status_class: key.status_class,
            outcome: key.outcome,
            window_start_ms: unix_millis(rollup.window_start),
            window_end_ms: unix_millis(rollup.window_end),
            count: rollup.count,
            latency_sum_ms: ms(rollup.latency_sum),
            latency_min_ms: ms(rollup.latency_min),
            latency_max_ms: ms(rollup.latency_max),
            histogram_bounds_ms: &Rollup::BUCKETS_MS,
            histogram: &rollup.histogram,
        }
    }
}
