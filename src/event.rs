//! What flows through the pipeline: `CallRecord`s in, `Batch`es of `OperationSummary`s and
//! `Rollup`s out to the exporter.
//!
//! These are plain data: no I/O, no locks. Nothing here may hold a secret: error messages arrive
//! redacted (by the layer that builds the `CallRecord`) and are truncated by the pipeline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode, uri::Authority};
use kasal_trace::{Direction, ExecutionMode, OperationId, Usage};
use kasal_user_agent::Product;

pub use kasal_trace::CallRecord;

/// How many calls ended in each outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Successful calls.
    pub success: u64,
    /// Calls that failed in a retryable way.
    pub retryable: u64,
    /// Calls that failed terminally.
    pub terminal: u64,
}

/// One distinct error inside an operation: deduplicated by (`error_type`, `message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorEntry {
    /// The `error.type`: a status code as text or a short name (`timeout`, `connect`).
    pub error_type: Arc<str>,
    /// The redacted, truncated message.
    pub message: Arc<str>,
    /// How many times it occurred.
    pub count: u64,
}

/// All the calls of one operation (`OperationId`), folded.
#[derive(Clone, Debug)]
pub struct OperationSummary {
    /// The operation.
    pub operation_id: OperationId,
    /// The product of the operation's first call.
    pub product: Product,
    /// User or service (of the first call).
    pub mode: ExecutionMode,
    /// The caller's identity (of the first call), if known.
    pub caller_id: Option<Arc<str>>,
    /// Whether any call fell back to developer credentials.
    pub obo_dev_fallback: bool,
    /// When the first call started.
    pub started_at: SystemTime,
    /// Logical calls folded in.
    pub calls: u64,
    /// Extra attempts (retries) across those calls.
    pub retries: u64,
    /// Sum of call latencies.
    pub latency_sum: Duration,
    /// Longest call latency.
    pub latency_max: Duration,
    /// Response bytes read across calls.
    pub bytes: u64,
    /// Calls per outcome.
    pub outcomes: OutcomeCounts,
    /// Distinct errors (at most 50), with counts.
    pub errors: Vec<ErrorEntry>,
    /// Errors not kept because of the per-operation or byte bounds.
    pub errors_dropped: u64,
    /// False when emitted because of eviction or TTL rather than `complete_operation` or a
    /// terminal error.
    pub complete: bool,
    /// Model tokens across the operation's calls (an agent run's total), zero when none
    /// reported usage.
    pub usage: Usage,
}

/// What a `Rollup` aggregates over: calls that share all of these.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RollupKey {
    /// The product.
    pub product: Product,
    /// Client or server.
    pub direction: Direction,
    /// The HTTP method.
    pub method: Method,
    /// The server's `host[:port]`, when known.
    pub host: Option<Authority>,
    /// The route template, when known.
    pub route: Option<Arc<str>>,
    /// The status class: 1..=5 for 1xx..5xx, 0 when no response arrived.
    pub status_class: u8,
    /// `"success"`, `"retryable"` or `"terminal"`.
    pub outcome: &'static str,
    /// The final response status, when a response arrived (the metrics'
    /// `http.response.status_code`).
    pub status: Option<StatusCode>,
    /// The failure's `error.type` (`"503"`, `"timeout"`, `"connect"`, ...), for failed calls.
    pub error_type: Option<Arc<str>>,
}

impl RollupKey {
    /// The key a call without an operation folds into.
    pub fn of(record: &CallRecord) -> RollupKey {
        RollupKey {
            product: record.product.clone(),
            direction: record.direction,
            method: record.method.clone(),
            host: record.host.clone(),
            route: record.route.clone(),
            status_class: status_class(record.status),
            outcome: record.outcome.as_str(),
            status: record.status,
            error_type: record.outcome.error_type().map(Arc::from),
        }
    }
}

/// The status class of a response: 1..=5 for 1xx..5xx, 0 when no response arrived.
pub fn status_class(status: Option<StatusCode>) -> u8 {
    // `StatusCode` is 100..=999, so the class fits in a `u8`.
    status.map_or(0, |status| (status.as_u16() / 100) as u8)
}

/// Calls without an operation id, folded per key over one time window.
#[derive(Clone, Debug)]
pub struct Rollup {
    /// What the calls share.
    pub key: RollupKey,
    /// Window start (wall clock).
    pub window_start: SystemTime,
    /// Window end (wall clock).
    pub window_end: SystemTime,
    /// Calls in the window.
    pub count: u64,
    /// Sum of latencies.
    pub latency_sum: Duration,
    /// Shortest latency.
    pub latency_min: Duration,
    /// Longest latency.
    pub latency_max: Duration,
    /// Latency histogram: counts per bucket, upper bounds in `Rollup::BUCKETS_MS`
    /// (the last bucket is unbounded).
    pub histogram: [u64; Rollup::BUCKETS],
}

impl Rollup {
    /// Number of histogram buckets.
    pub const BUCKETS: usize = 15;
    /// Upper bounds of the first `BUCKETS - 1` buckets, in milliseconds: the OpenTelemetry HTTP
    /// semantic conventions' bucket boundaries for `http.*.request.duration` (0.005 s .. 10 s),
    /// so rollups map onto those histograms bucket for bucket.
    pub const BUCKETS_MS: [u64; Rollup::BUCKETS - 1] = [
        5, 10, 25, 50, 75, 100, 250, 500, 750, 1_000, 2_500, 5_000, 7_500, 10_000,
    ];

    /// [`BUCKETS_MS`](Self::BUCKETS_MS) in nanoseconds (the rollup fold and the metrics replay
    /// work in whole nanoseconds).
    pub(crate) const BOUNDS_NS: [u64; Rollup::BUCKETS - 1] = {
        let mut bounds = [0; Rollup::BUCKETS - 1];
        let mut i = 0;
        while i < bounds.len() {
            bounds[i] = Rollup::BUCKETS_MS[i] * 1_000_000;
            i += 1;
        }
        bounds
    };

    /// The histogram bucket a latency falls in: the first bucket whose upper bound (inclusive)
    /// is at least `latency`, or the last (unbounded) bucket.
    pub fn bucket_index(latency: Duration) -> usize {
        Rollup::BUCKETS_MS
            .iter()
            .position(|&bound| latency <= Duration::from_millis(bound))
            .unwrap_or(Rollup::BUCKETS - 1)
    }

    /// Mean latency over the window (zero when empty).
    pub fn latency_mean(&self) -> Duration {
        match u32::try_from(self.count) {
            Ok(0) => Duration::ZERO,
            Ok(count) => self.latency_sum / count,
            Err(_) => Duration::from_nanos(
                u64::try_from(self.latency_sum.as_nanos() / u128::from(self.count))
                    .unwrap_or(u64::MAX),
            ),
        }
    }
}

/// Model token usage per (product, model) over one time window: every call that reported
/// usage (with or without an operation id) and every `Telemetry::record_usage`.
///
/// `#[non_exhaustive]`: only the pipeline builds these, and fields may be added.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageRollup {
    /// The product the calls were made for.
    pub product: Product,
    /// The model (the response's, else the serving endpoint's; `unknown` when neither).
    pub model: Arc<str>,
    /// Window start (wall clock).
    pub window_start: SystemTime,
    /// Window end (wall clock).
    pub window_end: SystemTime,
    /// Calls (or `record_usage` reports) summed.
    pub calls: u64,
    /// Their tokens, summed.
    pub usage: Usage,
    /// Each call's input tokens (calls that reported some): bucket counts, min, max and sum,
    /// the `input` points of `gen_ai.client.token.usage`.
    pub input_histogram: TokenHistogram,
    /// Each call's output tokens (calls that reported some; embeddings report none): the
    /// `output` points of `gen_ai.client.token.usage`.
    pub output_histogram: TokenHistogram,
}

/// The token counts of one type (input or output) of the calls of a window, one value per call:
/// counts per bucket over the OpenTelemetry GenAI conventions' bounds for
/// `gen_ai.client.token.usage` ([`TokenHistogram::BOUNDS`]), with min, max and sum, so a
/// metrics backend gets each call in its own bucket.
///
/// ```
/// use kasal_telemetry::event::TokenHistogram;
///
/// let mut input = TokenHistogram::default();
/// for tokens in [10, 100, 1000] {
///     input.add(tokens);
/// }
/// assert_eq!((input.count(), input.sum, input.min, input.max), (3, 1110, 10, 1000));
/// assert_eq!(input.buckets[TokenHistogram::bucket_index(10)], 1); // (4, 16]
/// assert_eq!(input.buckets[2..6], [1, 0, 1, 1]); // (4, 16], (16, 64], (64, 256], (256, 1024]
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenHistogram {
    /// Sum of the values (saturating).
    pub sum: u64,
    /// Smallest value (0 when empty).
    pub min: u64,
    /// Largest value (0 when empty).
    pub max: u64,
    /// Values per bucket: bucket `i` holds `(BOUNDS[i - 1], BOUNDS[i]]` (the first from 0, the
    /// last unbounded).
    pub buckets: [u64; TokenHistogram::BUCKETS],
}

impl TokenHistogram {
    /// Number of buckets: one more than the bounds.
    pub const BUCKETS: usize = 15;
    /// Upper bounds (inclusive) of the first `BUCKETS - 1` buckets: the GenAI semantic
    /// conventions' bucket boundaries for `gen_ai.client.token.usage`.
    pub const BOUNDS: [u64; TokenHistogram::BUCKETS - 1] = [
        1, 4, 16, 64, 256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216,
        67_108_864,
    ];

    /// The bucket `tokens` falls in: the first whose upper bound is at least `tokens`, or the
    /// last (unbounded) one.
    pub fn bucket_index(tokens: u64) -> usize {
        TokenHistogram::BOUNDS.partition_point(|&bound| bound < tokens)
    }

    /// Adds one call's count.
    pub fn add(&mut self, tokens: u64) {
        // `max == 0` first: the bucket scan only while nothing above zero was added.
        if self.max == 0 && self.is_empty() {
            (self.min, self.max) = (tokens, tokens);
        } else {
            self.min = self.min.min(tokens);
            self.max = self.max.max(tokens);
        }
        self.sum = self.sum.saturating_add(tokens);
        self.buckets[TokenHistogram::bucket_index(tokens)] += 1;
    }

    /// Values added (calls counted).
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// True when no value was added.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|&count| count == 0)
    }
}

/// What the aggregator hands the exporter in one go.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Finished (or evicted) operations.
    pub operations: Vec<OperationSummary>,
    /// Per-window rollups of calls without an operation.
    pub rollups: Vec<Rollup>,
    /// Per-window model token usage, per (product, model). These calls are also counted in
    /// `operations` or `rollups`: not added to [`calls`](Batch::calls).
    pub usage: Vec<UsageRollup>,
}

impl Batch {
    /// True when there is nothing to export.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty() && self.rollups.is_empty() && self.usage.is_empty()
    }

    /// Items in the batch (operations + rollups + usage rollups).
    pub fn len(&self) -> usize {
        self.operations.len() + self.rollups.len() + self.usage.len()
    }

    /// Tokens the batch's usage rollups account for.
    pub fn usage_total(&self) -> Usage {
        self.usage.iter().map(|rollup| rollup.usage).sum()
    }

    /// Calls the batch accounts for: the operations' calls plus the rollups' counts.
    pub fn calls(&self) -> u64 {
        let operations: u64 = self.operations.iter().map(|op| op.calls).sum();
        let rollups: u64 = self.rollups.iter().map(|rollup| rollup.count).sum();
        operations + rollups
    }
}
