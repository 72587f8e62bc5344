//! HTTP metrics through the OpenTelemetry SDK's in-memory metric exporter: the pipeline's rollups
//! replayed by `HttpMetrics` give histograms with the conventions' bounds, the calls' bucket
//! counts, count, sum, min and max, and the conventions' attributes.
#![cfg(feature = "otel")]
mod common;
#[path = "common/model_calls.rs"]
mod model_calls;
#[path = "common/model_serving.rs"]
mod model_serving;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{Reply, TestServer};
use http::Request;
use http_body_util::{BodyExt, Full};
use kasal_telemetry::event::TokenHistogram;
use kasal_telemetry::export::FanOut;
use kasal_telemetry::metrics::{DURATION_BOUNDARIES_S, HttpMetrics};
use kasal_telemetry::trace::Direction;
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{InMemoryExporter, Rollup, RollupKey, Telemetry, TelemetryLayer};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::{Key, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_semantic_conventions::{attribute as semconv, metric as semconv_metric};
use tower::{ServiceBuilder, ServiceExt};

/// One exported histogram data point, copied out of the SDK's types.
#[derive(Debug)]
struct Point {
    metric: String,
    unit: String,
    attributes: BTreeMap<String, Value>,
    bounds: Vec<f64>,
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

fn provider() -> (SdkMeterProvider, InMemoryMetricExporter) {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    (provider, exporter)
}

fn points(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> Vec<Point> {
    provider.force_flush().unwrap();
    let metrics: Vec<ResourceMetrics> = exporter.get_finished_metrics().unwrap();
    let mut out = Vec::new();
    for resource in &metrics {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics() {
                if let AggregatedMetrics::U64(MetricData::Histogram(histogram)) = metric.data() {
                    for point in histogram.data_points() {
                        out.push(Point {
                            metric: metric.name().to_owned(),
                            unit: metric.unit().to_owned(),
                            attributes: point
                                .attributes()
                                .map(|kv| (kv.key.to_string(), kv.value.clone()))
                                .collect(),
                            bounds: point.bounds().collect(),
                            buckets: point.bucket_counts().collect(),
                            count: point.count(),
                            sum: point.sum() as f64,
                            min: point.min().map(|v| v as f64),
                            max: point.max().map(|v| v as f64),
                        });
                    }
                    continue;
                }
                let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() else {
                    panic!("{} is not a histogram", metric.name());
                };
                for point in histogram.data_points() {
                    out.push(Point {
                        metric: metric.name().to_owned(),
                        unit: metric.unit().to_owned(),
                        attributes: point
                            .attributes()
                            .map(|kv| (kv.key.to_string(), kv.value.clone()))
                            .collect(),
                        bounds: point.bounds().collect(),
                        buckets: point.bucket_counts().collect(),
                        count: point.count(),
                        sum: point.sum(),
                        min: point.min(),
                        max: point.max(),
                    });
                }
            }
        }
    }
    out
}

fn rollup(direction: Direction, latencies_ms: &[u64], status: u16) -> Rollup {
    let status = http::StatusCode::from_u16(status).unwrap();
    let mut histogram = [0; Rollup::BUCKETS];
    for &ms in latencies_ms {
        histogram[Rollup::bucket_index(Duration::from_millis(ms))] += 1;
    }
    let now = SystemTime::now();
    Rollup {
        key: RollupKey {
            product: Product::Genie,
            direction,
            method: http::Method::POST,
            host: Some("adb-1.2.azuredatabricks.net".parse().unwrap()),
            route: Some("/api/2.0/genie/spaces/{space_id}".into()),
            status_class: (status.as_u16() / 100) as u8,
            outcome: if status.is_success() {
                "success"
            } else {
                "terminal"
            },
            status: Some(status),
            error_type: (!status.is_success()).then(|| status.as_str().into()),
        },
        window_start: now,
        window_end: now,
        count: latencies_ms.len() as u64,
        latency_sum: latencies_ms
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .sum(),
        latency_min: Duration::from_millis(*latencies_ms.iter().min().unwrap()),
        latency_max: Duration::from_millis(*latencies_ms.iter().max().unwrap()),
        histogram,
    }
}

#[test]
fn instrument_names_and_bounds_are_the_conventions() {
    assert_eq!(
        kasal_telemetry::metrics::HTTP_CLIENT_REQUEST_DURATION,
        semconv_metric::HTTP_CLIENT_REQUEST_DURATION
    );
    assert_eq!(
        kasal_telemetry::metrics::HTTP_SERVER_REQUEST_DURATION,
        semconv_metric::HTTP_SERVER_REQUEST_DURATION
    );
    assert_eq!(
        DURATION_BOUNDARIES_S,
        [
            0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
        ]
    );
    for (ms, s) in Rollup::BUCKETS_MS.iter().zip(DURATION_BOUNDARIES_S) {
        assert_eq!(*ms as f64 / 1000.0, s);
    }
}

#[test]
fn a_rollup_replays_into_the_same_histogram() {
    let (provider, exporter) = provider();
    let metrics = HttpMetrics::new(&provider.meter("test"));
    // Edges of buckets, the unbounded bucket, repeated values.
    let latencies = [
        1, 5, 5, 6, 10, 74, 75, 76, 100, 300, 999, 1000, 7_500, 10_000, 12_345,
    ];
    metrics.record_rollup(&rollup(Direction::Client, &latencies, 200));
    metrics.record_rollup(&rollup(Direction::Server, &[3, 40, 40], 503));

    let points = points(&provider, &exporter);
    assert_eq!(points.len(), 2, "{points:?}");
    let client = points
        .iter()
        .find(|p| p.metric == semconv_metric::HTTP_CLIENT_REQUEST_DURATION)
        .unwrap();
    assert_eq!(client.unit, "s");
    assert_eq!(client.bounds, DURATION_BOUNDARIES_S);
    assert_eq!(
        client.buckets,
        rollup(Direction::Client, &latencies, 200).histogram
    );
    assert_eq!(
        client.buckets,
        [3, 2, 0, 0, 2, 2, 0, 1, 0, 2, 0, 0, 1, 1, 1]
    );
    assert_eq!(client.count, latencies.len() as u64);
    let sum: u64 = latencies.iter().sum();
    assert!(
        (client.sum - sum as f64 / 1000.0).abs() < 1e-6,
        "{}",
        client.sum
    );
    assert_eq!(client.min, Some(0.001));
    assert_eq!(client.max, Some(12.345));
    assert!(!client.attributes.contains_key(semconv::ERROR_TYPE));

    let server = points
        .iter()
        .find(|p| p.metric == semconv_metric::HTTP_SERVER_REQUEST_DURATION)
        .unwrap();
    assert_eq!(server.count, 3);
    assert_eq!(server.buckets[0], 1);
    assert_eq!(server.buckets[3], 2);
    assert!((server.sum - 0.083).abs() < 1e-9);
    assert_eq!(
        server.attributes[semconv::HTTP_ROUTE],
        Value::from("/api/2.0/genie/spaces/{space_id}")
    );
    assert_eq!(server.attributes[semconv::ERROR_TYPE], Value::from("503"));
    assert!(!server.attributes.contains_key(semconv::URL_TEMPLATE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_the_stack_become_metrics_with_the_conventions_attributes() {
    let server = TestServer::start(|request, _| match request.uri.path() {
        path if path.starts_with("/serving-endpoints/") => {
            Reply::text(200, "{}").delayed(Duration::from_millis(120))
        }
        "/api/2.0/secrets/get" => Reply::status(404),
        _ => Reply::status(200),
    })
    .await;
    let (provider, metric_exporter) = provider();
    let rollups = InMemoryExporter::new();
    let telemetry = Telemetry::builder()
        .exporter(
            FanOut::new()
                .exporter(rollups.clone())
                .exporter(HttpMetrics::new(&provider.meter("kasal"))),
        )
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
        .build();
    let client = ServiceBuilder::new()
        .layer(TelemetryLayer::new(Product::Llm, telemetry.clone()))
        .service(common::client::<Full<Bytes>>());

    let mut calls = 0;
    for (path, n) in [
        ("/serving-endpoints/alice-endpoint-7/invocations", 3),
        ("/serving-endpoints/bob-endpoint-9/invocations", 2),
        ("/api/2.0/secrets/get?scope=alice&key=k", 2),
        ("/v1/orders/12345", 4),
    ] {
        for _ in 0..n {
            let request = Request::post(server.url(path))
                .body(Full::default())
                .unwrap();
            let response = client.clone().oneshot(request).await.unwrap();
            response.into_body().collect().await.unwrap();
            calls += 1;
        }
    }
    telemetry.flush().await;
    let rollups = rollups.rollups();
    let points = points(&provider, &metric_exporter);
    assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), calls);
    // A terminal error (the 404s) closes a window early, so one key can span two rollups; the
    // SDK adds them up per attribute set.
    let mut by_route: BTreeMap<String, (u64, f64, [u64; Rollup::BUCKETS])> = BTreeMap::new();
    for rollup in &rollups {
        let entry = by_route
            .entry(rollup.key.route.as_deref().unwrap().to_owned())
            .or_insert((0, 0.0, [0; Rollup::BUCKETS]));
        entry.0 += rollup.count;
        entry.1 += rollup.latency_sum.as_secs_f64();
        for (into, from) in entry.2.iter_mut().zip(rollup.histogram) {
            *into += from;
        }
    }
    assert_eq!(points.len(), by_route.len());

    let host = server.authority();
    let (address, port) = host.rsplit_once(':').unwrap();
    let mut templates = Vec::new();
    for point in &points {
        assert_eq!(point.metric, semconv_metric::HTTP_CLIENT_REQUEST_DURATION);
        assert_eq!(point.bounds, DURATION_BOUNDARIES_S);
        let a = &point.attributes;
        // Every attribute name is a conventions constant (or ours, `kasal.*`).
        for name in a.keys() {
            assert!(
                [
                    semconv::HTTP_REQUEST_METHOD,
                    semconv::HTTP_RESPONSE_STATUS_CODE,
                    semconv::SERVER_ADDRESS,
                    semconv::SERVER_PORT,
                    semconv::URL_TEMPLATE,
                    semconv::ERROR_TYPE,
                ]
                .contains(&name.as_str())
                    || name == "kasal.product",
                "{name}"
            );
        }
        assert_eq!(a[semconv::HTTP_REQUEST_METHOD], Value::from("POST"));
        assert_eq!(a[semconv::SERVER_ADDRESS], Value::from(address.to_owned()));
        assert_eq!(a[semconv::SERVER_PORT], Value::I64(port.parse().unwrap()));
        assert_eq!(
            a[&Key::from("kasal.product").to_string()],
            Value::from("llm")
        );
        let template = a[semconv::URL_TEMPLATE].as_str().into_owned();
        // Never a raw path: no name or id from the calls above.
        assert!(
            !template.contains("alice") && !template.contains("12345"),
            "{template}"
        );
        let status = a[semconv::HTTP_RESPONSE_STATUS_CODE].clone();
        match template.as_str() {
            "/serving-endpoints/{name}/invocations" => {
                assert_eq!(point.count, 5);
                assert_eq!(status, Value::I64(200));
                // 120 ms answers: all in (0.1, 0.25] unless the machine stalls for 130 ms.
                assert!(point.sum >= 0.6, "{}", point.sum);
                assert_eq!(point.buckets.iter().sum::<u64>(), 5);
                assert!(point.min.unwrap() >= 0.12);
            }
            "/api/2.0/secrets/get" => {
                assert_eq!(point.count, 2);
                assert_eq!(status, Value::I64(404));
                assert_eq!(a[semconv::ERROR_TYPE], Value::from("404"));
            }
            "/v1/orders/{id}" => {
                assert_eq!(point.count, 4);
                assert!(!a.contains_key(semconv::ERROR_TYPE));
            }
            other => panic!("unexpected template {other}"),
        }
        // The metric's buckets are the rollup's, bucket for bucket.
        let (count, sum, histogram) = by_route[&template];
        assert_eq!(point.buckets, histogram);
        assert_eq!(point.count, count);
        assert!((point.sum - sum).abs() < 1e-6);
        templates.push(template);
    }
    templates.sort();
    assert_eq!(templates.len(), 3, "{templates:?}");
    telemetry.shutdown().await;
}

#[test]
fn token_usage_has_each_call_in_its_bucket_per_token_type() {
    assert_eq!(
        kasal_telemetry::metrics::GEN_AI_CLIENT_TOKEN_USAGE,
        "gen_ai.client.token.usage"
    );
    let (provider, exporter) = provider();
    let metrics = HttpMetrics::new(&provider.meter("test"));
    let (mut input, mut output) = (TokenHistogram::default(), TokenHistogram::default());
    for (i, o) in [(10, 3), (100, 70), (1000, 70)] {
        input.add(i);
        output.add(o);
    }
    metrics.record_token_usage(&Product::Llm, "databricks-claude", &input, &output);
    let points = points(&provider, &exporter);
    assert_eq!(points.len(), 2);
    for point in &points {
        assert_eq!(point.metric, "gen_ai.client.token.usage");
        assert_eq!(point.unit, "{token}");
        assert_eq!(
            point.attributes["gen_ai.request.model"],
            Value::from("databricks-claude")
        );
        assert_eq!(point.attributes["kasal.product"], Value::from("llm"));
        assert_eq!(point.bounds, kasal_telemetry::metrics::TOKEN_BOUNDARIES);
        let (buckets, min, max, sum) = match point.attributes["gen_ai.token.type"].as_str().as_ref()
        {
            // 10 in (4, 16], 100 in (64, 256], 1000 in (256, 1024].
            "input" => (expected_buckets(&[10, 100, 1000]), 10.0, 1000.0, 1110.0),
            // 3 in (1, 4], 70 twice in (64, 256].
            "output" => (expected_buckets(&[3, 70, 70]), 3.0, 70.0, 143.0),
            other => panic!("{other}"),
        };
        assert_eq!(
            (&point.buckets, point.min, point.max, point.sum, point.count),
            (&buckets, Some(min), Some(max), sum, 3)
        );
    }
    assert_eq!(expected_buckets(&[10, 100, 1000])[2..6], [1, 0, 1, 1]);
}

/// Counts per `gen_ai.client.token.usage` bucket of calls carrying `values` tokens, from the
/// conventions' bounds (a bucket holds `(previous bound, bound]`).
fn expected_buckets(values: &[u64]) -> Vec<u64> {
    let bounds = kasal_telemetry::metrics::TOKEN_BOUNDARIES;
    let mut buckets = vec![0; bounds.len() + 1];
    for &value in values {
        let bucket = bounds
            .iter()
            .position(|&bound| value as f64 <= bound)
            .unwrap_or(bounds.len());
        buckets[bucket] += 1;
    }
    buckets
}

/// GenAI attribute names, checked against the conventions crate (which marks the GenAI
/// constants deprecated: they moved to the GenAI conventions repository).
#[allow(deprecated)]
const GEN_AI_ATTRIBUTES: [&str; 5] = [
    semconv::GEN_AI_TOKEN_TYPE,
    semconv::GEN_AI_OPERATION_NAME,
    semconv::GEN_AI_PROVIDER_NAME,
    semconv::GEN_AI_REQUEST_MODEL,
    semconv::GEN_AI_RESPONSE_MODEL,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_calls_token_usage_equals_what_the_calls_carried() {
    #[allow(deprecated)]
    let name = semconv_metric::GEN_AI_CLIENT_TOKEN_USAGE;
    assert_eq!(kasal_telemetry::metrics::GEN_AI_CLIENT_TOKEN_USAGE, name);
    let server = model_serving::ModelServer::start().await;
    let (provider, metric_exporter) = provider();
    let telemetry = Telemetry::builder()
        .exporter(HttpMetrics::new(&provider.meter("kasal")))
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
        .build();
    let carried = model_calls::make_model_calls(&telemetry, &server).await;
    telemetry.flush().await;

    // The server's own count of what it reported, over the HTTP calls.
    let http_calls: (u64, u64, u64) = carried
        .iter()
        .filter(|((_, model), _)| model != "external-model")
        .fold((0, 0, 0), |a, (_, c)| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
    assert_eq!(server.reported(), http_calls);

    let points: Vec<Point> = points(&provider, &metric_exporter)
        .into_iter()
        .filter(|point| point.metric == name)
        .collect();
    let mut got = model_calls::Carried::new();
    for point in &points {
        assert_eq!(point.unit, "{token}");
        assert_eq!(point.bounds, kasal_telemetry::metrics::TOKEN_BOUNDARIES);
        assert_eq!(point.buckets.iter().sum::<u64>(), point.count);
        let a = &point.attributes;
        for name in a.keys() {
            assert!(
                GEN_AI_ATTRIBUTES.contains(&name.as_str()) || name == "kasal.product",
                "{name}"
            );
        }
        let text = |name: &str| a[name].as_str().into_owned();
        let product = text("kasal.product");
        let model = text(GEN_AI_ATTRIBUTES[3]);
        assert_eq!(text(GEN_AI_ATTRIBUTES[4]), model);
        assert_eq!(text(GEN_AI_ATTRIBUTES[2]), "databricks");
        let operation = if product == "embedding" {
            "embeddings"
        } else {
            "chat"
        };
        assert_eq!(text(GEN_AI_ATTRIBUTES[1]), operation);
        let entry = got.entry((product, model)).or_default();
        // Every point of a (product, model) counts the same calls.
        assert!(entry.0 == 0 || entry.0 == point.count);
        entry.0 = point.count;
        match text(GEN_AI_ATTRIBUTES[0]).as_str() {
            "input" => entry.1 = point.sum as u64,
            "output" => entry.2 = point.sum as u64,
            other => panic!("token type {other}"),
        }
        assert!(point.min.unwrap() <= point.max.unwrap());
    }
    assert_eq!(got, carried);
    // Embeddings report no output tokens: no output point for them.
    assert_eq!(points.len(), 2 * carried.len() - 1);
    // Per (product, model) and token type: each call in its own bucket, exact min, max, sum
    // and count, from the token counts the server sent each call.
    let per_call = model_calls::per_call();
    for (key, (inputs, outputs)) in &per_call {
        let sums = (
            inputs.len() as u64,
            inputs.iter().sum(),
            outputs.iter().sum(),
        );
        assert_eq!(carried[key], sums, "{key:?}");
    }
    for point in &points {
        let a = &point.attributes;
        let key = (
            a["kasal.product"].as_str().into_owned(),
            a[GEN_AI_ATTRIBUTES[3]].as_str().into_owned(),
        );
        let (inputs, outputs) = &per_call[&key];
        let values = match a[GEN_AI_ATTRIBUTES[0]].as_str().as_ref() {
            "input" => inputs,
            _ => outputs,
        };
        let expected = (
            expected_buckets(values),
            values.iter().min().map(|&v| v as f64),
            values.iter().max().map(|&v| v as f64),
            values.iter().sum::<u64>() as f64,
            values.len() as u64,
        );
        assert_eq!(
            (
                point.buckets.clone(),
                point.min,
                point.max,
                point.sum,
                point.count
            ),
            expected,
            "{key:?} {:?}",
            a[GEN_AI_ATTRIBUTES[0]]
        );
    }
    // Three chats of 100, 7 and 5000 input tokens: one each in (4, 16], (64, 256] and
    // (4096, 16384], min 7, max 5000.
    let chat = points
        .iter()
        .find(|p| {
            p.attributes["kasal.product"] == Value::from("llm")
                && p.attributes[GEN_AI_ATTRIBUTES[0]] == Value::from("input")
                && p.attributes[GEN_AI_ATTRIBUTES[3]] == Value::from("databricks-claude-sonnet")
        })
        .unwrap();
    assert_eq!(
        (chat.count, chat.sum, chat.min, chat.max),
        (3, 5107.0, Some(7.0), Some(5000.0))
    );
    let mut buckets = vec![0; 15];
    (buckets[2], buckets[4], buckets[7]) = (1, 1, 1);
    assert_eq!(chat.buckets, buckets);
    telemetry.shutdown().await;
}
