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
//! at (at most two) values per bucket chosen inside that bucket so that the sum equals the
//! rollup's sum. Bucket counts, count, sum, min and max of the exported histogram are the
//! pipeline's. One rule for durations (in nanoseconds, recorded as seconds) and tokens.
//!
//! Only calls folded into rollups (calls without an [`OperationId`](crate::trace::OperationId))
//! appear in the duration histograms: calls inside an operation are summarised per operation
//! instead, without route or status.
//!
//! Token usage comes from the batch's [`UsageRollup`]s (every model call that reported usage,
//! with or without an operation, and every `Telemetry::record_usage`, each one call): per
//! (product, model, window), one data point per token type, replayed from the rollup's
//! per-call [`TokenHistogram`]s, so each call is in its own bucket and count, sum, min and max
//! are exact. A call adds a value of a token type when it reported tokens of that type: a type
//! the window's calls reported none of (the output of embeddings) gives no point. The record
//! carries one model (the one the response named, else the serving endpoint called), so it is both
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

use crate::event::{Batch, Rollup, RollupKey, TokenHistogram, UsageRollup};

/// `http.client.request.duration`.
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
/// `http.server.request.duration`.
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";

/// `gen_ai.client.token.usage`.
pub const GEN_AI_CLIENT_TOKEN_USAGE: &str = "gen_ai.client.token.usage";

/// The GenAI semantic conventions' bucket boundaries for `gen_ai.client.token.usage`
/// ([`TokenHistogram::BOUNDS`]).
pub const TOKEN_BOUNDARIES: [f64; TokenHistogram::BUCKETS - 1] = {
    let mut bounds = [0.0; TokenHistogram::BUCKETS - 1];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = TokenHistogram::BOUNDS[i] as f64;
        i += 1;
    }
    bounds
};

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

    /// Records one usage rollup into `gen_ai.client.token.usage`: its calls' input and output
    /// tokens, each call in its bucket (see the [module docs](self)).
    pub fn record_usage_rollup(&self, rollup: &UsageRollup) {
        self.record_token_usage(
            &rollup.product,
            &rollup.model,
            &rollup.input_histogram,
            &rollup.output_histogram,
        );
    }

    /// Records the per-call token counts of one window's model calls into
    /// `gen_ai.client.token.usage`, as [`record_usage_rollup`](Self::record_usage_rollup)
    /// does: the exported histogram has the same count per bucket, min, max, sum and count as
    /// `input` and `output`. An empty histogram gives no point.
    pub fn record_token_usage(
        &self,
        product: &kasal_user_agent::Product,
        model: &str,
        input: &TokenHistogram,
        output: &TokenHistogram,
    ) {
        for (token_type, histogram) in token_histograms(input, output) {
            let attributes: Vec<KeyValue> = token_attribute_values(product, model, token_type)
                .into_iter()
                .map(|(name, value)| match value {
                    AttributeValue::Str(text) => KeyValue::new(name, text),
                    AttributeValue::Int(number) => KeyValue::new(name, number),
                })
                .collect();
            replay(Replay::tokens(histogram), |value, times| {
                for _ in 0..times {
                    self.token_usage.record(value, &attributes);
                }
            });
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
        replay(Replay::durations(rollup), |nanos, times| {
            // Correctly rounded, so a bound in nanoseconds lands on the bound in seconds.
            let seconds = nanos as f64 / 1e9;
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

/// The `gen_ai.client.token.usage` points of a usage rollup's histograms: `("input", input)`
/// and `("output", output)`, without the empty ones. One rule for the metrics API and OTLP.
pub(crate) fn token_histograms<'a>(
    input: &'a TokenHistogram,
    output: &'a TokenHistogram,
) -> impl Iterator<Item = (&'static str, &'a TokenHistogram)> {
    [("input", input), ("output", output)]
        .into_iter()
        .filter(|(_, histogram)| !histogram.is_empty())
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

/// A histogram to replay, in integers (nanoseconds or tokens): counts per bucket, the buckets'
/// upper bounds (inclusive; one fewer than the counts, the last bucket is unbounded), and the
/// values' min, max and sum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replay<'a> {
    counts: &'a [u64],
    bounds: &'a [u64],
    min: u64,
    max: u64,
    sum: u64,
}

impl<'a> Replay<'a> {
    /// A rollup's latencies, in nanoseconds.
    fn durations(rollup: &'a Rollup) -> Replay<'a> {
        let nanos = |latency: Duration| u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        Replay {
            counts: &rollup.histogram,
            bounds: &Rollup::BOUNDS_NS,
            min: nanos(rollup.latency_min),
            max: nanos(rollup.latency_max),
            sum: nanos(rollup.latency_sum),
        }
    }

    /// A token histogram.
    fn tokens(histogram: &'a TokenHistogram) -> Replay<'a> {
        Replay {
            counts: &histogram.buckets,
            bounds: &TokenHistogram::BOUNDS,
            min: histogram.min,
            max: histogram.max,
            sum: histogram.sum,
        }
    }

    fn bucket(&self, value: u64) -> usize {
        self.bounds.partition_point(|&bound| bound < value)
    }

    /// The values bucket `bucket` can hold within `min..=max`: `(low, high)`, `low <= high`.
    fn range(&self, bucket: usize) -> (u64, u64) {
        let lower = match bucket {
            0 => 0,
            _ => self.bounds[bucket - 1].saturating_add(1),
        };
        let upper = self.bounds.get(bucket).copied().unwrap_or(u64::MAX);
        let low = lower.max(self.min).min(upper);
        let high = upper.min(self.max).max(low);
        (low, high)
    }
}

/// Calls `record(value, times)` so that the recorded values reproduce the histogram: the same
/// count per bucket, the same min, max and sum (when the histogram is consistent; otherwise as
/// close as the buckets allow, never a panic). At most two values per bucket, no allocation.
pub(crate) fn replay(histogram: Replay<'_>, mut record: impl FnMut(u64, u64)) {
    const MAX_BUCKETS: usize = 32;
    let buckets = histogram.counts.len().min(MAX_BUCKETS);
    let mut counts = [0u64; MAX_BUCKETS];
    counts[..buckets].copy_from_slice(&histogram.counts[..buckets]);
    let counts = &mut counts[..buckets];
    let total: u64 = counts.iter().fold(0, |a, &c| a.saturating_add(c));
    if total == 0 {
        return;
    }
    let histogram = Replay {
        min: histogram.min.min(histogram.max),
        ..histogram
    };
    let (min, max) = (histogram.min, histogram.max);
    if total == 1 {
        record(max, 1);
        return;
    }
    // The extremes, once each, in their own buckets (when the histogram agrees).
    let mut left = histogram.sum;
    for extreme in [min, max] {
        let bucket = histogram.bucket(extreme);
        if let Some(count) = counts.get_mut(bucket).filter(|count| **count > 0) {
            *count -= 1;
            record(extreme, 1);
            left = left.saturating_sub(extreme);
        }
    }
    // The rest: each call at least its bucket's low value, and the tokens (or nanoseconds) left
    // above that shared out over the buckets in proportion to their room, then within a bucket
    // as two values that differ by one.
    let (mut floor, mut room) = (0u128, 0u128);
    for (bucket, &count) in counts.iter().enumerate() {
        let (low, high) = histogram.range(bucket);
        floor = floor.saturating_add(u128::from(count) * u128::from(low));
        room = room.saturating_add(u128::from(count) * u128::from(high - low));
    }
    let extra = u128::from(left).saturating_sub(floor).min(room);
    // Each bucket's proportional share (and its room), never more than what is left of `extra`:
    // the same sequence on both passes.
    let shares = || {
        let mut budget = extra;
        counts.iter().enumerate().map(move |(bucket, &count)| {
            let (low, high) = histogram.range(bucket);
            let cap = u128::from(count) * u128::from(high - low);
            // Approximate (f64); the rest is handed out below, so the sum stays exact.
            let share = if room == 0 {
                0
            } else {
                (cap as f64 * (extra as f64 / room as f64)) as u128
            };
            let share = share.min(cap).min(budget);
            budget -= share;
            (bucket, count, share, cap)
        })
    };
    let mut rest = extra - shares().map(|(.., share, _)| share).sum::<u128>();
    for (bucket, count, share, cap) in shares() {
        if count == 0 {
            continue;
        }
        let more = rest.min(cap - share);
        rest -= more;
        let share = share + more;
        let low = histogram.range(bucket).0;
        // share <= count * (high - low): both values stay within the bucket's range.
        let (step, above) = (share / u128::from(count), share % u128::from(count));
        let value = low.saturating_add(u64::try_from(step).unwrap_or(u64::MAX));
        // `above < count`, so it fits.
        let above = u64::try_from(above).unwrap_or(0);
        if above > 0 {
            record(value.saturating_add(1), above);
        }
        record(value, count - above);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays and returns the values recorded, one per call.
    fn replayed(histogram: Replay<'_>) -> Vec<u64> {
        let mut values = Vec::new();
        replay(histogram, |value, times| {
            values.extend(std::iter::repeat_n(value, times as usize));
        });
        values.sort_unstable();
        values
    }

    fn tokens(values: &[u64]) -> TokenHistogram {
        let mut histogram = TokenHistogram::default();
        for &value in values {
            histogram.add(value);
        }
        histogram
    }

    /// The replayed values have the histogram's buckets, min, max, sum and count.
    fn assert_reproduces(values: &[u64]) {
        let histogram = tokens(values);
        let got = replayed(Replay::tokens(&histogram));
        assert_eq!(tokens(&got), histogram, "{values:?} -> {got:?}");
    }

    #[test]
    fn replay_reproduces_buckets_min_max_and_sum() {
        assert_eq!(
            replayed(Replay::tokens(&tokens(&[10, 100, 1000]))),
            [10, 100, 1000]
        );
        assert_reproduces(&[10, 100, 1000]);
        assert_reproduces(&[7]);
        assert_reproduces(&[5, 5, 5, 5]);
        assert_reproduces(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
        assert_reproduces(&[0, 0, 1, 70_000_000, 3, 300, 301, 302, 5_000, 5_001]);
        assert_reproduces(&[u64::MAX / 4, u64::MAX / 4, 2, 3]);
        assert!(replayed(Replay::tokens(&TokenHistogram::default())).is_empty());
        // Pseudo-random windows of 1..40 calls of 0..2^k tokens.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let calls = 1 + next() % 40;
            let values: Vec<u64> = (0..calls)
                .map(|_| {
                    let bits = next() % 30;
                    next() % (1 << bits).max(1)
                })
                .collect();
            assert_reproduces(&values);
        }
    }

    #[test]
    fn replay_of_an_inconsistent_histogram_keeps_the_buckets() {
        // A sum below what the buckets allow, min above max, counts beyond min..max.
        let mut histogram = tokens(&[10, 100, 1000, 5000]);
        histogram.sum = 3;
        (histogram.min, histogram.max) = (2000, 50);
        let got = replayed(Replay::tokens(&histogram));
        assert_eq!(got.len(), 4);
        assert_eq!(tokens(&got).buckets, histogram.buckets);
        histogram.sum = u64::MAX;
        assert_eq!(
            tokens(&replayed(Replay::tokens(&histogram))).buckets,
            histogram.buckets
        );
    }

    #[test]
    fn durations_replay_in_nanoseconds() {
        let nanos = [3_000_000, 5_000_000, 5_000_001, 80_000_000, 20_000_000_000];
        let mut histogram = [0; Rollup::BUCKETS];
        for &value in &nanos {
            histogram[Rollup::bucket_index(Duration::from_nanos(value))] += 1;
        }
        let rollup = Rollup {
            key: RollupKey::of(&kasal_trace::CallRecord::new(
                Direction::Client,
                kasal_user_agent::Product::Genie,
                Method::GET,
                std::time::SystemTime::UNIX_EPOCH,
            )),
            window_start: std::time::SystemTime::UNIX_EPOCH,
            window_end: std::time::SystemTime::UNIX_EPOCH,
            count: nanos.len() as u64,
            latency_sum: Duration::from_nanos(nanos.iter().sum()),
            latency_min: Duration::from_nanos(3_000_000),
            latency_max: Duration::from_nanos(20_000_000_000),
            histogram,
        };
        let got = replayed(Replay::durations(&rollup));
        let buckets = got
            .iter()
            .fold([0; Rollup::BUCKETS], |mut buckets, &value| {
                buckets[Rollup::bucket_index(Duration::from_nanos(value))] += 1;
                buckets
            });
        assert_eq!(buckets, histogram);
        assert_eq!(got.iter().sum::<u64>(), nanos.iter().sum::<u64>());
        assert_eq!((got[0], got[4]), (nanos[0], nanos[4]));
        // The bound in nanoseconds is the bound in seconds.
        for (nanos, seconds) in Rollup::BOUNDS_NS.iter().zip(DURATION_BOUNDARIES_S) {
            assert_eq!(*nanos as f64 / 1e9, seconds);
        }
    }

    #[test]
    fn token_histograms_skip_empty_types() {
        let (input, output) = (tokens(&[8, 9]), TokenHistogram::default());
        let points: Vec<_> = token_histograms(&input, &output).collect();
        assert_eq!(points, [("input", &input)]);
        assert_eq!(TOKEN_BOUNDARIES[0], 1.0);
        assert_eq!(TOKEN_BOUNDARIES[13], 67_108_864.0);
    }
}
