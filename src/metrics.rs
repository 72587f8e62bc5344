//! HTTP and GenAI metrics through the OpenTelemetry metrics API (feature `otel`), fed from the
//! pipeline's rollups: `http.client.request.duration`, `http.server.request.duration` and
//! `gen_ai.client.token.usage`.
//!
//! [`HttpMetrics`] is an exporter (`tower::Service<Batch>`): give it to the pipeline alone or
//! next to another exporter with [`FanOut`](crate::export::FanOut), and every rollup the
//! pipeline closes is recorded into two histograms created from the [`Meter`] you pass, so the
//! data goes wherever your `MeterProvider` sends it (OTLP, Prometheus, stdout, ...). Nothing is
//! added to the request path: calls are already folded into rollups on the caller's thread, and
//! this exporter replays those aggregates on the pipeline's task.
//!
//! | instrument | unit | attributes |
//! |---|---|---|
//! | `http.client.request.duration` (histogram) | `s` | `http.request.method`, `http.response.status_code`, `server.address`, `server.port` (when the authority has one), `url.template`, `error.type`, `kasal.product` |
//! | `http.server.request.duration` (histogram) | `s` | the same, with `http.route` instead of `url.template` |
//! | `gen_ai.client.token.usage` (histogram) | `{token}` | `gen_ai.token.type` (`input`, `output`), `gen_ai.operation.name`, `gen_ai.provider.name` (`databricks`), `gen_ai.request.model`, `gen_ai.response.model`, `kasal.product` |
//!
//! Bucket boundaries are the HTTP semantic conventions' `[0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
//! 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]` seconds, the same as the rollup's
//! ([`Rollup::BUCKETS_MS`]), so every rollup bucket lands in the matching metric bucket.
//! Unknown methods are `_OTHER`. `error.type` is the status code for 4xx and 5xx on the client
//! side (5xx on the server side), the short error name when no response arrived, else absent.
//!
//! How a rollup is replayed: the histogram API takes one value at a time, so a rollup of `n`
//! calls becomes `n` recordings: the window's minimum and maximum once each, and the other calls
//! at one value per bucket chosen inside that bucket so that the sum equals the rollup's latency
//! sum. Bucket counts, count, sum, min and max of the exported histogram are the pipeline's.
//!
//! Only calls folded into rollups (calls without an [`OperationId`](crate::trace::OperationId))
//! appear in the duration histograms: calls inside an operation are summarised per operation
//! instead, without route or status.
//!
//! Token usage comes from the batch's [`UsageRollup`]s (every model call that reported usage,
//! with or without an operation, and every `Telemetry::record_usage`): per (product, model,
//! window), one data point per token type whose count is the rollup's calls and whose sum is
//! its tokens. The pipeline keeps sums, not each call's count, so the tokens are spread evenly
//! over the calls (values that differ by at most one): count, sum, min and max are exact for
//! calls of equal size, the bucket of each call is not known. A token type the window's calls
//! reported none of (the output of embeddings) gives no point. The record carries one model
//! (the one the response named, else the serving endpoint called), so it is both
//! `gen_ai.request.model` and `gen_ai.response.model`; `gen_ai.operation.name` is `embeddings`
//! for the `embedding` product and `chat` for the others.
//!
//! Must never: panic on a strange rollup (an empty one, a sum outside min..max), allocate per
//! call, or hold the pipeline (recording is synchronous and never fails).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Method;
use kasal_trace::Direction;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};

use crate::event::{Batch, Rollup, RollupKey, UsageRollup};

/// `http.client.request.duration`.
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
/// `http.server.request.duration`.
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";

/// `gen_ai.client.token.usage`.
pub const GEN_AI_CLIENT_TOKEN_USAGE: &str = "gen_ai.client.token.usage";

/// The GenAI semantic conventions' bucket boundaries for `gen_ai.client.token.usage`.
pub const TOKEN_BOUNDARIES: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// The HTTP semantic conventions' bucket boundaries for request durations, in seconds.
pub const DURATION_BOUNDARIES_S: [f64; Rollup::BUCKETS - 1] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Records the pipeline's rollups into OpenTelemetry histograms. Cheap to clone. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    client_duration: Histogram<f64>,
    server_duration: Histogram<f64>,
    token_usage: Histogram<u64>,
}

impl HttpMetrics {
    /// Creates the instruments from `meter` (for example
    /// `opentelemetry::global::meter("kasal-telemetry")` or `provider.meter(..)`).
    pub fn new(meter: &Meter) -> HttpMetrics {
        let duration = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BOUNDARIES_S.to_vec())
                .build()
        };
        HttpMetrics {
            client_duration: duration(
                HTTP_CLIENT_REQUEST_DURATION,
                "Duration of HTTP client requests.",
            ),
            server_duration: duration(
                HTTP_SERVER_REQUEST_DURATION,
                "Duration of HTTP server requests.",
            ),
            token_usage: meter
                .u64_histogram(GEN_AI_CLIENT_TOKEN_USAGE)
                .with_unit("{token}")
                .with_description("Number of input and output tokens used.")
                .with_boundaries(TOKEN_BOUNDARIES.to_vec())
                .build(),
        }
    }

    /// From the global `MeterProvider`, with the meter named `kasal-telemetry`.
    pub fn global() -> HttpMetrics {
        HttpMetrics::new(&opentelemetry::global::meter("kasal-telemetry"))
    }

    /// Records every rollup of the batch: call durations and token usage.
    pub fn record_batch(&self, batch: &Batch) {
        for rollup in &batch.rollups {
            self.record_rollup(rollup);
        }
        for usage in &batch.usage {
            self.record_usage_rollup(usage);
        }
    }

    /// Records one usage rollup into `gen_ai.client.token.usage`: its calls and tokens, per
    /// token type (see the [module docs](self)).
    pub fn record_usage_rollup(&self, rollup: &UsageRollup) {
        self.record_token_usage(
            &rollup.product,
            &rollup.model,
            rollup.calls,
            rollup.usage.input_tokens,
            rollup.usage.output_tokens,
        );
    }

    /// Records the token usage of `calls` model calls of one window into
    /// `gen_ai.client.token.usage`, as [`record_usage_rollup`](Self::record_usage_rollup) does.
    ///
    /// Usage is aggregated per (product, model, window), not per call, so the tokens are spread
    /// evenly over the calls: count and sum are exact, the per-call distribution is not known.
    pub fn record_token_usage(
        &self,
        product: &kasal_user_agent::Product,
        model: &str,
        calls: u64,
        input_tokens: u64,
        output_tokens: u64,
    ) {
        for point in token_points(calls, input_tokens, output_tokens) {
            let attributes: Vec<KeyValue> =
                token_attribute_values(product, model, point.token_type)
                    .into_iter()
                    .map(|(name, value)| match value {
                        AttributeValue::Str(text) => KeyValue::new(name, text),
                        AttributeValue::Int(number) => KeyValue::new(name, number),
                    })
                    .collect();
            for (value, times) in point.values {
                for _ in 0..times {
                    self.token_usage.record(value, &attributes);
                }
            }
        }
    }

    /// Records one rollup: its calls into the duration histogram of its direction.
    pub fn record_rollup(&self, rollup: &Rollup) {
        if rollup.count == 0 {
            return;
        }
        let attributes = attributes(&rollup.key);
        let histogram = match rollup.key.direction {
            Direction::Client => &self.client_duration,
            Direction::Server => &self.server_duration,
        };
        replay(rollup, |seconds, times| {
            for _ in 0..times {
                histogram.record(seconds, &attributes);
            }
        });
    }
}

/// `HttpMetrics` as an exporter: records the batch and is done. Never fails, always ready.
impl tower_service::Service<Batch> for HttpMetrics {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        self.record_batch(&batch);
        ready(Ok(()))
    }
}

/// The metric attributes of a rollup key, per the HTTP semantic conventions.
pub fn attributes(key: &RollupKey) -> Vec<KeyValue> {
    attribute_values(key)
        .into_iter()
        .map(|(name, value)| match value {
            AttributeValue::Str(text) => KeyValue::new(name, text),
            AttributeValue::Int(number) => KeyValue::new(name, number),
        })
        .collect()
}

/// An attribute value: text or integer (the conventions' integers are `i64`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AttributeValue {
    Str(String),
    Int(i64),
}

/// The attributes of a rollup key as (name, value): one rule for the metrics API and OTLP.
pub(crate) fn attribute_values(key: &RollupKey) -> Vec<(&'static str, AttributeValue)> {
    use AttributeValue::{Int, Str};
    let mut attributes = Vec::with_capacity(8);
    attributes.push((
        "http.request.method",
        Str(method_name(&key.method).to_owned()),
    ));
    if let Some(status) = key.status {
        attributes.push(("http.response.status_code", Int(i64::from(status.as_u16()))));
    }
    if let Some(host) = &key.host {
        attributes.push(("server.address", Str(host.host().to_owned())));
        if let Some(port) = host.port_u16() {
            attributes.push(("server.port", Int(i64::from(port))));
        }
    }
    if let Some(route) = &key.route {
        let name = match key.direction {
            Direction::Client => "url.template",
            Direction::Server => "http.route",
        };
        attributes.push((name, Str(route.to_string())));
    }
    if let Some(error_type) = error_type(key) {
        attributes.push(("error.type", Str(error_type)));
    }
    attributes.push(("kasal.product", Str(key.product.as_str().to_owned())));
    attributes
}

/// `http.request.method`: the method if the conventions know it, else `_OTHER`.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// `error.type`: the status code when the status is an error for this side, the short error
/// name when no response arrived, `_OTHER` for a failure without either.
fn error_type(key: &RollupKey) -> Option<String> {
    let threshold = match key.direction {
        Direction::Client => 400,
        Direction::Server => 500,
    };
    match key.status {
        Some(status) if status.as_u16() >= threshold => Some(status.as_str().to_owned()),
        Some(_) => None,
        None if key.outcome == "success" => None,
        None => Some(key.error_type.as_deref().unwrap_or("_OTHER").to_owned()),
    }
}

/// One `gen_ai.client.token.usage` data point: the tokens of one type of `count` calls, spread
/// evenly over them (values that differ by at most one). One rule for the metrics API (which
/// replays [`values`](Self::values)) and OTLP (which sends the rest as they are).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenPoint {
    /// `input` or `output`.
    pub(crate) token_type: &'static str,
    pub(crate) count: u64,
    pub(crate) sum: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
    /// Counts per [`TOKEN_BOUNDARIES`] bucket (one more than the boundaries).
    pub(crate) buckets: [u64; TOKEN_BOUNDARIES.len() + 1],
    /// The values a call carried, with how many calls carried each: `(value, calls)`.
    pub(crate) values: [(u64, u64); 2],
}

/// The data points of `calls` calls that carried `input` and `output` tokens in all: one per
/// token type, none for a type without tokens (an embedding's output) or without calls.
pub(crate) fn token_points(
    calls: u64,
    input: u64,
    output: u64,
) -> impl Iterator<Item = TokenPoint> {
    [("input", input), ("output", output)]
        .into_iter()
        .filter(move |&(_, tokens)| calls > 0 && tokens > 0)
        .map(move |(token_type, tokens)| {
            let (quotient, remainder) = (tokens / calls, tokens % calls);
            // `remainder` calls carried one token more than the others.
            let values = [(quotient + 1, remainder), (quotient, calls - remainder)];
            let mut buckets = [0; TOKEN_BOUNDARIES.len() + 1];
            for (value, times) in values {
                buckets[token_bucket(value)] += times;
            }
            TokenPoint {
                token_type,
                count: calls,
                sum: tokens,
                min: quotient,
                max: if remainder > 0 {
                    quotient + 1
                } else {
                    quotient
                },
                buckets,
                values,
            }
        })
}

/// The [`TOKEN_BOUNDARIES`] bucket of `tokens`: buckets are `(previous bound, bound]`.
fn token_bucket(tokens: u64) -> usize {
    TOKEN_BOUNDARIES.partition_point(|&bound| bound < tokens as f64)
}

/// The attributes of a `gen_ai.client.token.usage` point, per the GenAI semantic conventions.
pub(crate) fn token_attribute_values(
    product: &kasal_user_agent::Product,
    model: &str,
    token_type: &'static str,
) -> Vec<(&'static str, AttributeValue)> {
    use AttributeValue::Str;
    let operation = match product {
        kasal_user_agent::Product::Embedding => "embeddings",
        _ => "chat",
    };
    vec![
        ("gen_ai.token.type", Str(token_type.to_owned())),
        ("gen_ai.operation.name", Str(operation.to_owned())),
        ("gen_ai.provider.name", Str("databricks".to_owned())),
        ("gen_ai.request.model", Str(model.to_owned())),
        ("gen_ai.response.model", Str(model.to_owned())),
        ("kasal.product", Str(product.as_str().to_owned())),
    ]
}

/// Calls `record(seconds, times)` so that the recorded values reproduce the rollup: the same
/// count per bucket, the same min, max and (up to rounding) sum.
pub(crate) fn replay(rollup: &Rollup, mut record: impl FnMut(f64, u64)) {
    let mut counts = rollup.histogram;
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return;
    }
    let (min, max) = (
        rollup.latency_min.min(rollup.latency_max),
        rollup.latency_max,
    );
    let seconds = |latency: Duration| latency.as_secs_f64();
    if total == 1 {
        record(seconds(max), 1);
        return;
    }
    // The extremes, once each, in their own buckets (when the histogram agrees).
    let mut extremes_sum = 0.0;
    for extreme in [min, max] {
        let bucket = Rollup::bucket_index(extreme);
        if counts[bucket] > 0 {
            counts[bucket] -= 1;
            record(seconds(extreme), 1);
            extremes_sum += seconds(extreme);
        }
    }
    // The rest: one value per bucket, inside the bucket and within min..=max, interpolated so
    // that the values add up to what is left of the sum.
    let (min_s, max_s) = (seconds(min), seconds(max));
    let ranges: Vec<(u64, f64, f64)> = counts
        .iter()
        .enumerate()
        .filter(|(_, count)| **count > 0)
        .map(|(bucket, &count)| {
            let lower = match bucket {
                0 => 0.0,
                _ => DURATION_BOUNDARIES_S[bucket - 1].next_up(),
            };
            let upper = DURATION_BOUNDARIES_S
                .get(bucket)
                .copied()
                .unwrap_or(f64::MAX);
            let low = lower.max(min_s).min(upper);
            let high = upper.min(max_s).max(low);
            (count, low, high)
        })
        .collect();
    let remaining: u64 = ranges.iter().map(|(count, ..)| count).sum();
    if remaining == 0 {
        return;
    }
    let sum_s = seconds(rollup.latency_sum) - extremes_sum;
    let floor: f64 = ranges.iter().map(|&(c, low, _)| c as f64 * low).sum();
    let span: f64 = ranges
        .iter()
        .map(|&(c, low, high)| c as f64 * (high - low))
        .sum();
    let t = if span > 0.0 {
        ((sum_s - floor) / span).clamp(0.0, 1.0)
    } else {
        0.0
    };
    for (count, low, high) in ranges {
        record(low + t * (high - low), count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_points_keep_count_sum_and_buckets() {
        let points: Vec<_> = token_points(3, 1_000, 50).collect();
        assert_eq!(points.len(), 2);
        let input = &points[0];
        assert_eq!(
            (
                input.token_type,
                input.count,
                input.sum,
                input.min,
                input.max
            ),
            ("input", 3, 1_000, 333, 334)
        );
        assert_eq!(input.values, [(334, 1), (333, 2)]);
        // 333 and 334 are both in (256, 1024].
        assert_eq!(input.buckets[token_bucket(333)], 3);
        assert_eq!(input.buckets.iter().sum::<u64>(), 3);
        let output = &points[1];
        assert_eq!(
            (output.min, output.max, output.values),
            (16, 17, [(17, 2), (16, 1)])
        );
        assert_eq!(output.buckets[3], 2); // (16, 64]
        assert_eq!(output.buckets[2], 1); // (4, 16]: 16 sits on its bound
        // Embeddings: no output point; no calls: nothing.
        let points: Vec<_> = token_points(2, 10, 0).collect();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].token_type, "input");
        assert_eq!(token_points(0, 10, 10).count(), 0);
        // Fewer tokens than calls: some calls carried none.
        let point = token_points(4, 3, 0).next().unwrap();
        assert_eq!((point.min, point.max, point.buckets[0]), (0, 1, 4));
    }

    #[test]
    fn token_buckets_are_upper_inclusive() {
        assert_eq!(token_bucket(0), 0);
        assert_eq!(token_bucket(1), 0);
        assert_eq!(token_bucket(2), 1);
        assert_eq!(token_bucket(67_108_864), 13);
        assert_eq!(token_bucket(67_108_865), 14);
        assert_eq!(token_bucket(u64::MAX), 14);
    }
}
