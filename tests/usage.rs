//! Token usage end to end: a real model-serving server on 127.0.0.1 (`common/model_serving.rs`)
//! answering chat completions, embeddings and event streams, called through `TelemetryLayer`
//! over hyper-util's client, with the pipeline exporting into an `InMemoryExporter`.
//! Synchronisation is by `flush` and the server's own counters; no sleeps.
mod common;
#[path = "common/model_serving.rs"]
mod model_serving;
#[path = "common/spans.rs"]
mod spans;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::TestServer;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use kasal_telemetry::trace::{ExecutionContext, OperationId, Usage};
use kasal_telemetry::usage::{UsageReading, UsageScanner};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{
    DatabricksExporter, InMemoryExporter, JsonLinesExporter, Telemetry, TelemetryBody,
    TelemetryLayer, UsageRollup,
};
use model_serving::{Ask, ModelServer, body_of};
use spans::SpanCapture;
use tower::{Layer, ServiceExt};

type Body = Full<Bytes>;
type HyperClient =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;
type Client = kasal_telemetry::TelemetryService<HyperClient>;

const MIB: usize = 1024 * 1024;

fn pipeline() -> (Telemetry, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    let telemetry = Telemetry::builder()
        .exporter(exporter.clone())
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
        .build();
    (telemetry, exporter)
}

fn layered(product: Product, telemetry: &Telemetry) -> Client {
    TelemetryLayer::new(product, telemetry.clone()).layer(common::client::<Body>())
}

fn request(url: &str, ask: &Ask) -> Request<Body> {
    Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(ask.to_json()))
        .unwrap()
}

/// Reads a body to its end or its first error: the bytes received, and whether it failed.
async fn read<B>(response: Response<B>) -> (StatusCode, Vec<u8>, bool)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Err(_) => return (status, bytes, true),
        }
    }
    (status, bytes, false)
}

async fn call_layered(client: &Client, url: &str, ask: &Ask) -> (StatusCode, Vec<u8>, bool) {
    let response: Response<TelemetryBody<Incoming>> = client
        .clone()
        .oneshot(request(url, ask))
        .await
        .expect("response");
    read(response).await
}

async fn call_plain(url: &str, ask: &Ask) -> (StatusCode, Vec<u8>, bool) {
    let response = common::client::<Body>()
        .request(request(url, ask))
        .await
        .expect("response");
    read(response).await
}

/// The usage rollups, sorted by (product, model).
fn usage_of(exporter: &InMemoryExporter) -> Vec<UsageRollup> {
    let mut usage = exporter.usage();
    usage.sort_by(|a, b| (a.product.as_str(), &a.model).cmp(&(b.product.as_str(), &b.model)));
    usage
}

fn find<'a>(usage: &'a [UsageRollup], product: Product, model: &str) -> &'a UsageRollup {
    usage
        .iter()
        .find(|r| r.product == product && &*r.model == model)
        .unwrap_or_else(|| panic!("no usage for {product:?} {model} in {usage:#?}"))
}

#[tokio::test]
async fn chat_embedding_and_stream_give_their_usage_and_model() {
    let (dispatch, captured) = SpanCapture::dispatch();
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let server = ModelServer::start().await;
    let (telemetry, exporter) = pipeline();
    let llm = layered(Product::Llm, &telemetry);
    let embedding = layered(Product::Embedding, &telemetry);

    let mut chat = Ask::chat(19, 10);
    chat.cached = 4;
    chat.reasoning = 3;
    let chat_url = server.url("/serving-endpoints/chat-endpoint/invocations");
    let (status, body, failed) = call_layered(&llm, &chat_url, &chat).await;
    assert_eq!((status, failed), (StatusCode::OK, false));
    assert_eq!(body, body_of(&chat));

    let embed = Ask::embedding(8);
    let embed_url = server.url("/serving-endpoints/gte-endpoint/invocations");
    let (_, body, _) = call_layered(&embedding, &embed_url, &embed).await;
    assert_eq!(body, body_of(&embed));

    let stream = Ask::stream(11, 50);
    let stream_url = server.url("/serving-endpoints/chat/completions");
    let (_, body, _) = call_layered(&llm, &stream_url, &stream).await;
    assert_eq!(body, body_of(&stream));

    telemetry.flush().await;
    let usage = usage_of(&exporter);
    assert_eq!(usage.len(), 3, "{usage:#?}");
    let expected_chat = Usage {
        input_tokens: 19,
        output_tokens: 10,
        total_tokens: 29,
        cached_input_tokens: 4,
        reasoning_tokens: 3,
    };
    let chat_usage = find(&usage, Product::Llm, "databricks-claude-sonnet");
    assert_eq!((chat_usage.calls, chat_usage.usage), (1, expected_chat));
    // The embedding answer names no model: the endpoint's name is the model.
    let embed_usage = find(&usage, Product::Embedding, "gte-endpoint");
    assert_eq!(
        (embed_usage.calls, embed_usage.usage),
        (1, Usage::new(8, 0))
    );
    let stream_usage = find(&usage, Product::Llm, "databricks-llama-stream");
    assert_eq!(
        (stream_usage.calls, stream_usage.usage),
        (1, Usage::new(11, 50))
    );

    let stats = telemetry.stats();
    assert_eq!((stats.usage_read, stats.usage_ignored), (3, 0));

    // The GenAI attributes, as integers, on each call span.
    let spans = captured.spans_named("HTTP");
    assert_eq!(spans.len(), 3);
    let fields = |i: usize| {
        [
            "gen_ai.request.model",
            "gen_ai.response.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
        ]
        .map(|name| spans[i].field(name))
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        fields(0),
        [
            some("chat-endpoint"),
            some("databricks-claude-sonnet"),
            some("19"),
            some("10")
        ]
    );
    assert_eq!(
        fields(1),
        [some("gte-endpoint"), None, some("8"), some("0")]
    );
    assert_eq!(
        fields(2),
        [
            None,
            some("databricks-llama-stream"),
            some("11"),
            some("50")
        ]
    );
    assert!(matches!(
        spans[0].fields.get("gen_ai.usage.input_tokens"),
        Some(spans::Value::I64(19))
    ));
}

#[tokio::test]
async fn bodies_are_byte_identical_with_and_without_the_layer() {
    let server = ModelServer::start().await;
    let (telemetry, exporter) = pipeline();
    let llm = layered(Product::Llm, &telemetry);
    let url = server.url("/serving-endpoints/big/invocations");
    let asks = [
        Ask::chat(1_000, 2_000).padded(5 * MIB),
        Ask::stream(3_000, 4_000).padded(5 * MIB),
        Ask::embedding(5_000).padded(MIB),
        Ask::chat(6, 7),
    ];
    for ask in &asks {
        let plain = call_plain(&url, ask).await;
        let with_layer = call_layered(&llm, &url, ask).await;
        assert_eq!(plain.1.len(), body_of(ask).len());
        assert!(plain == with_layer, "{} differs", ask.reply);
        assert_eq!(with_layer.1, body_of(ask));
    }
    assert!(body_of(&asks[0]).len() >= 5 * MIB);
    assert!(body_of(&asks[1]).len() >= 5 * MIB);
    telemetry.flush().await;
    let usage = usage_of(&exporter);
    let total: Usage = usage.iter().map(|r| r.usage).sum();
    assert_eq!(total.input_tokens, 1_000 + 3_000 + 5_000 + 6);
    assert_eq!(total.output_tokens, 2_000 + 4_000 + 7);
    assert_eq!(telemetry.stats().usage_read, 4);
}

/// A 200 with `body` and a `Content-Length` of `len` (the body's own length, or more: cut off),
/// leaked to be served by a [`RawServer`](common::raw_server::RawServer).
fn with_length(content_type: &str, body: &[u8], len: usize) -> &'static [u8] {
    let mut reply =
        format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {len}\r\n\r\n")
            .into_bytes();
    reply.extend_from_slice(body);
    Vec::leak(reply)
}

/// Bodies with a `Content-Length` (what a JSON completion has) are read knowing their length
/// (no chunk kept by reference): the same usage, the same bytes; one cut short is ignored.
#[tokio::test]
async fn bodies_of_known_length_give_their_usage_and_cut_ones_none() {
    let (telemetry, exporter) = pipeline();
    let llm = layered(Product::Llm, &telemetry);
    let chat = body_of(&Ask::chat(1_000, 2_000).padded(5 * MIB));
    let stream = body_of(&Ask::stream(3_000, 4_000).padded(MIB));
    let small = body_of(&Ask::chat(6, 7));
    for (content_type, body) in [
        ("application/json", &chat),
        ("text/event-stream", &stream),
        ("application/json", &small),
    ] {
        let server =
            common::raw_server::RawServer::start(with_length(content_type, body, body.len())).await;
        let url = server.url("/serving-endpoints/big/invocations");
        let plain = call_plain(&url, &Ask::raw("")).await;
        let with_layer = call_layered(&llm, &url, &Ask::raw("")).await;
        assert!(plain == with_layer);
        assert_eq!(&with_layer.1, body);
        assert!(!with_layer.2);
    }
    // A body shorter than its length (even cut where a body could end: before the stream's
    // `[DONE]`): the caller gets the bytes and the error, no usage is read.
    let done = stream.len() - "data: [DONE]\n\n".len();
    for (content_type, body, len) in [
        ("application/json", &chat[..chat.len() - 30], chat.len()),
        ("text/event-stream", &stream[..done], stream.len()),
    ] {
        let server =
            common::raw_server::RawServer::start(with_length(content_type, body, len)).await;
        let url = server.url("/serving-endpoints/big/invocations");
        let plain = call_plain(&url, &Ask::raw("")).await;
        let with_layer = call_layered(&llm, &url, &Ask::raw("")).await;
        assert!(plain == with_layer);
        assert_eq!(with_layer.1, body);
        assert!(with_layer.2, "the body ends in an error");
    }
    telemetry.flush().await;
    let total: Usage = usage_of(&exporter).iter().map(|r| r.usage).sum();
    assert_eq!(total.input_tokens, 1_000 + 3_000 + 6);
    assert_eq!(total.output_tokens, 2_000 + 4_000 + 7);
    let stats = telemetry.stats();
    assert_eq!((stats.usage_read, stats.usage_ignored), (3, 2));
}

/// Feeds a body in the server's 16 KiB frames, copied or by reference (as the layers feed
/// `Bytes`); returns the most the scanner held at any time.
fn peak_retained(body: &[u8], by_ref: bool) -> usize {
    let body = Bytes::copy_from_slice(body);
    let mut scanner = UsageScanner::new();
    let mut peak = 0;
    for at in (0..body.len()).step_by(16 * 1024) {
        let frame = body.slice(at..(at + 16 * 1024).min(body.len()));
        if by_ref {
            scanner.feed_bytes(&frame);
        } else {
            scanner.feed(&frame);
        }
        peak = peak.max(scanner.retained_bytes());
    }
    assert!(scanner.finish().usage.is_some());
    peak
}

#[test]
fn the_scanner_holds_the_same_few_kib_whatever_the_body_size() {
    for ask in [Ask::chat(1, 2), Ask::stream(1, 2), Ask::embedding(1)] {
        let peaks: Vec<usize> = [64 * 1024, 512 * 1024, 5 * MIB]
            .into_iter()
            .map(|pad| peak_retained(&body_of(&ask.clone().padded(pad)), false))
            .collect();
        assert!(
            peaks.iter().all(|&p| p == peaks[0]),
            "{} {peaks:?}",
            ask.reply
        );
        assert!(peaks[0] <= 32 * 1024, "{} {peaks:?}", ask.reply);
        // By reference: the newest frames (what covers the window) plus at most a window
        // copied, at every size.
        for pad in [64 * 1024, 512 * 1024, 5 * MIB] {
            let peak = peak_retained(&body_of(&ask.clone().padded(pad)), true);
            assert!(peak <= 3 * 16 * 1024, "{} {pad} {peak}", ask.reply);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_from_tasks_and_blocking_threads_are_all_counted() {
    let server = Arc::new(ModelServer::start().await);
    let (telemetry, exporter) = pipeline();
    let llm = layered(Product::Llm, &telemetry);
    let url = server.url("/serving-endpoints/llm/invocations");

    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let (llm, url) = (llm.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..10u64 {
                let ask = if i % 2 == 0 {
                    Ask::chat(task * 100 + i, i + 1)
                } else {
                    Ask::stream(task * 100 + i, 2 * i)
                };
                let (status, _, failed) = call_layered(&llm, &url, &ask).await;
                assert_eq!((status, failed), (StatusCode::OK, false));
            }
        }));
    }
    let runtime = tokio::runtime::Handle::current();
    for thread in 0..4u64 {
        let (llm, url, runtime) = (llm.clone(), url.clone(), runtime.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            for i in 0..5u64 {
                let ask = Ask::chat(1_000 + thread * 10 + i, 3);
                // No task-local, no global: a plain blocking thread driving the client.
                let (status, _, _) = runtime.block_on(call_layered(&llm, &url, &ask));
                assert_eq!(status, StatusCode::OK);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    telemetry.flush().await;

    let (calls, input, output) = server.reported();
    assert_eq!(calls, 8 * 10 + 4 * 5);
    let usage = usage_of(&exporter);
    let total: Usage = usage.iter().map(|r| r.usage).sum();
    assert_eq!(usage.iter().map(|r| r.calls).sum::<u64>(), calls);
    assert_eq!((total.input_tokens, total.output_tokens), (input, output));
    assert_eq!(telemetry.stats().usage_read, calls);
}

#[tokio::test]
async fn unreadable_answers_are_ignored_counted_and_unchanged() {
    let server = ModelServer::start().await;
    let (telemetry, exporter) = pipeline();
    let llm = layered(Product::Llm, &telemetry);
    let url = server.url("/serving-endpoints/llm/invocations");

    let cases = [
        Ask::raw(r#"{"usage": {"prompt_tokens": 5"#),
        Ask::raw("not json at all"),
        Ask::raw(r#"{"id":"x","choices":[]}"#),
        Ask::raw(r#"{"model":"m","usage":null}"#),
        Ask::raw(
            "data: {\"model\":\"m\",\"usage\":null}\n\ndata: {\"usage\":null}\n\ndata: [DONE]\n\n",
        ),
        Ask::raw(r#"{"usage":{"prompt_tokens":-5,"completion_tokens":3}}"#),
        Ask::raw(r#"{"usage":{"prompt_tokens":2000000000,"completion_tokens":3}}"#),
        Ask::raw(r#"{"usage":{"prompt_tokens":"5","completion_tokens":3}}"#),
        Ask::raw(r#"{"choices":[{"message":{"content":"\"usage\": {\"prompt_tokens\": 7}"}}]}"#),
        Ask::raw(""),
    ];
    for ask in &cases {
        let plain = call_plain(&url, ask).await;
        let with_layer = call_layered(&llm, &url, ask).await;
        assert!(plain == with_layer, "{:?}", ask.raw);
        assert_eq!(with_layer.1, ask.raw.as_bytes());
        assert!(!with_layer.2);
    }
    // Streams cut off mid-chunk: inside the usage event of an SSE stream, and before the end
    // of a JSON body. The caller gets the same bytes and the same error, with or without us.
    let stream = body_of(&Ask::stream(5, 6).padded(100_000));
    let chat = body_of(&Ask::chat(5, 6).padded(100_000));
    let cut = [
        stream[..stream.len() - 40].to_vec(),
        chat[..chat.len() - 30].to_vec(),
    ];
    for body in &cut {
        let server = model_serving::CutServer::start(body.clone()).await;
        let url = server.url("/serving-endpoints/llm/invocations");
        let ask = Ask::raw("");
        let plain = call_plain(&url, &ask).await;
        let with_layer = call_layered(&llm, &url, &ask).await;
        assert!(plain == with_layer);
        assert_eq!(&with_layer.1, body);
        assert!(with_layer.2, "the body ends in an error");
    }
    let cases = cases.len() + cut.len();
    telemetry.flush().await;
    assert!(exporter.usage().is_empty(), "{:#?}", exporter.usage());
    let stats = telemetry.stats();
    assert_eq!(stats.usage_read, 0);
    assert_eq!(stats.usage_ignored, cases as u64);
    // The calls themselves are recorded as usual.
    assert_eq!(exporter.total_calls(), cases as u64);
}

#[tokio::test]
async fn an_operation_sums_its_calls_tokens() {
    let server = ModelServer::start().await;
    let (telemetry, exporter) = pipeline();
    let agent = layered(Product::Agent, &telemetry);
    let url = server.url("/serving-endpoints/agent-llm/invocations");
    let run = OperationId::new("agent-run-1");
    let context = ExecutionContext::service().with_operation_id(run.clone());
    context
        .scope(async {
            call_layered(&agent, &url, &Ask::chat(100, 20)).await;
            call_layered(&agent, &url, &Ask::stream(200, 30)).await;
            call_layered(&agent, &url, &Ask::raw("{}")).await;
        })
        .await;
    telemetry.complete_operation(&run);
    telemetry.flush().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1);
    assert_eq!(operations[0].calls, 3);
    assert_eq!(operations[0].usage, Usage::new(300, 50));
    // And in the window's per-model sums.
    let total: Usage = exporter.usage().iter().map(|r| r.usage).sum();
    assert_eq!(total, Usage::new(300, 50));
}

#[tokio::test]
async fn which_calls_are_read_is_a_layer_setting() {
    let server = ModelServer::start().await;
    let (telemetry, exporter) = pipeline();
    let invocations = server.url("/serving-endpoints/m/invocations");
    let other_path = server.url("/api/2.0/genie/answer");
    let ask = Ask::chat(1, 1);

    // Auto: a genie client is not read; an llm client is read on model-serving paths only.
    call_layered(&layered(Product::Genie, &telemetry), &invocations, &ask).await;
    call_layered(&layered(Product::Llm, &telemetry), &other_path, &ask).await;
    let never = TelemetryLayer::new(Product::Llm, telemetry.clone())
        .usage(UsageReading::Never)
        .layer(common::client::<Body>());
    call_layered(&never, &invocations, &ask).await;
    telemetry.flush().await;
    assert!(exporter.usage().is_empty());
    assert_eq!(telemetry.stats().usage_ignored, 0);

    let always = TelemetryLayer::new(Product::Genie, telemetry.clone())
        .usage(UsageReading::Always)
        .layer(common::client::<Body>());
    call_layered(&always, &other_path, &Ask::chat(2, 3)).await;
    telemetry.flush().await;
    let usage = exporter.usage();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].product, Product::Genie);
    assert_eq!(usage[0].usage, Usage::new(2, 3));
}

/// A `Write` the test can read back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn record_usage_is_summed_per_model_and_written_as_json_lines() {
    let out = Shared::default();
    let telemetry = Telemetry::builder()
        .exporter(JsonLinesExporter::new(out.clone()))
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
        .build();
    telemetry.record_usage(Product::Llm, "gpt-x", Usage::new(10, 5));
    telemetry.record_usage(Product::Llm, "gpt-x", Usage::new(1, 2));
    telemetry.record_usage(Product::Embedding, "gte", Usage::new(7, 0));
    telemetry.flush().await;
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    lines.sort_by_key(|line| line["product"].as_str().unwrap_or_default().to_string());
    assert_eq!(lines.len(), 2, "{text}");
    for line in &lines {
        assert_eq!(line["kind"], "usage");
        assert!(line["window_end_ms"].as_u64() >= line["window_start_ms"].as_u64());
    }
    assert_eq!(
        (&lines[0]["product"], &lines[0]["model"], &lines[0]["calls"]),
        (&"embedding".into(), &"gte".into(), &1.into())
    );
    assert_eq!(lines[0]["input_tokens"], 7);
    assert_eq!(
        (&lines[1]["product"], &lines[1]["calls"]),
        (&"llm".into(), &2.into())
    );
    assert_eq!(
        (
            &lines[1]["input_tokens"],
            &lines[1]["output_tokens"],
            &lines[1]["total_tokens"]
        ),
        (&11.into(), &7.into(), &18.into())
    );
    // Each call's tokens in its bucket: 10 in (4, 16], 1 in [0, 1]; 5 in (4, 16], 2 in (1, 4].
    let input = &lines[1]["input_histogram"];
    assert_eq!(
        (&input["count"], &input["sum"], &input["min"], &input["max"]),
        (&2.into(), &11.into(), &1.into(), &10.into())
    );
    assert_eq!(input["bounds"][0], 1);
    assert_eq!(input["bounds"].as_array().unwrap().len(), 14);
    let buckets = |line: &serde_json::Value| -> Vec<u64> {
        serde_json::from_value(line["buckets"].clone()).unwrap()
    };
    assert_eq!(buckets(input)[..4], [1, 0, 1, 0]);
    assert_eq!(buckets(input).iter().sum::<u64>(), 2);
    let output = &lines[1]["output_histogram"];
    assert_eq!((&output["min"], &output["max"]), (&2.into(), &5.into()));
    assert_eq!(buckets(output)[..4], [0, 1, 1, 0]);
    // The embedding reported no output tokens: no output histogram.
    assert!(lines[0].get("output_histogram").is_none());
    assert_eq!(lines[0]["input_histogram"]["count"], 1);
}

async fn beacon_requests(on: bool) -> Vec<common::Recorded> {
    let server = TestServer::always(200).await;
    let exporter = DatabricksExporter::builder(server.url(""))
        .allow_private_hosts(true)
        .force_enabled(true)
        .timeout(Duration::from_secs(2))
        .usage_beacon(on)
        .build()
        .unwrap();
    let telemetry = Telemetry::builder()
        .exporter(exporter)
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
        .build();
    // Window 1: three completions of one model, one embedding.
    telemetry.record_usage(Product::Llm, "m1", Usage::new(10, 5));
    telemetry.record_usage(Product::Llm, "m1", Usage::new(10, 5));
    telemetry.record_usage(Product::Llm, "m1", Usage::new(1, 0));
    telemetry.record_usage(Product::Embedding, "org/e1", Usage::new(7, 0));
    telemetry.flush().await;
    // Window 2.
    telemetry.record_usage(Product::Llm, "m1", Usage::new(2, 3));
    telemetry.flush().await;
    server.requests()
}

#[tokio::test]
async fn the_beacon_sends_one_request_per_product_and_model_per_window() {
    let requests = beacon_requests(true).await;
    let version = env!("CARGO_PKG_VERSION");
    let beacons: Vec<_> = requests
        .iter()
        .filter(|r| r.uri.path() == "/api/2.0/serving-endpoints")
        .collect();
    assert_eq!(beacons.len(), 3, "{requests:#?}");
    assert!(beacons.iter().all(|r| r.method == http::Method::GET));
    let mut window_1: Vec<String> = beacons[..2]
        .iter()
        .map(|r| r.header("user-agent").unwrap())
        .collect();
    window_1.sort();
    assert_eq!(
        window_1,
        [
            format!(
                "kasal_telemetry/{version}/embedding/model=org_e1/input_tokens=7/output_tokens=0"
            ),
            format!("kasal_telemetry/{version}/llm/model=m1/input_tokens=21/output_tokens=10"),
        ]
    );
    assert_eq!(
        beacons[2].header("user-agent").unwrap(),
        format!("kasal_telemetry/{version}/llm/model=m1/input_tokens=2/output_tokens=3")
    );
    // Usage alone is not a telemetry upload: the drivers' schema has no field for it.
    assert_eq!(requests.len(), 3);
}

#[tokio::test]
async fn without_the_beacon_no_request_is_made() {
    let requests = beacon_requests(false).await;
    assert!(requests.is_empty(), "{requests:#?}");
}

#[test]
fn usage_errors_do_not_reach_the_caller() {
    // A scanner fed anything never panics and always answers (the proptest in the crate covers
    // arbitrary bytes and chunkings); here, a few hostile shapes at the API.
    for body in [
        &b"\xff\xfe\x00"[..],
        b"{{{{{{{{{{",
        b"data:",
        b"\n\n\n",
        b"[]",
        b"{}",
    ] {
        let mut scanner = UsageScanner::new();
        scanner.feed(body);
        let scan = scanner.finish();
        assert!(scan.usage.is_none() && scan.ignored.is_some(), "{body:?}");
    }
}

/// The same answers through the reqwest middleware (feature `reqwest`).
#[cfg(feature = "reqwest")]
mod via_reqwest {
    use super::*;

    async fn post(
        client: &reqwest_middleware::ClientWithMiddleware,
        url: &str,
        ask: &Ask,
    ) -> Vec<u8> {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(ask.to_json())
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.expect("body").to_vec()
    }

    #[tokio::test]
    async fn chat_embedding_and_stream_through_reqwest() {
        let server = ModelServer::start().await;
        let (telemetry, exporter) = pipeline();
        let llm = kasal_telemetry::reqwest::client(Product::Llm, &telemetry);
        let embedding = kasal_telemetry::reqwest::client(Product::Embedding, &telemetry);
        let plain = reqwest_middleware::ClientBuilder::new(
            kasal_telemetry::reqwest::http_client().build().unwrap(),
        )
        .build();

        let chat = Ask::chat(19, 10);
        let embed = Ask::embedding(8).padded(5 * MIB);
        let stream = Ask::stream(11, 50).padded(5 * MIB);
        let chat_url = server.url("/serving-endpoints/chat-endpoint/invocations");
        let embed_url = server.url("/serving-endpoints/gte-endpoint/invocations");
        let stream_url = server.url("/serving-endpoints/chat/completions");
        for (client, url, ask) in [
            (&llm, &chat_url, &chat),
            (&embedding, &embed_url, &embed),
            (&llm, &stream_url, &stream),
        ] {
            let body = post(client, url, ask).await;
            assert_eq!(body, body_of(ask));
            assert_eq!(body, post(&plain, url, ask).await);
        }
        telemetry.flush().await;
        let usage = usage_of(&exporter);
        assert_eq!(usage.len(), 3, "{usage:#?}");
        assert_eq!(
            find(&usage, Product::Llm, "databricks-claude-sonnet").usage,
            Usage::new(19, 10)
        );
        assert_eq!(
            find(&usage, Product::Embedding, "gte-endpoint").usage,
            Usage::new(8, 0)
        );
        assert_eq!(
            find(&usage, Product::Llm, "databricks-llama-stream").usage,
            Usage::new(11, 50)
        );
        assert_eq!(telemetry.stats().usage_read, 3);
    }

    /// A body with a `Content-Length`, through reqwest: read knowing its length.
    #[tokio::test]
    async fn a_body_of_known_length_through_reqwest() {
        let (telemetry, exporter) = pipeline();
        let llm = kasal_telemetry::reqwest::client(Product::Llm, &telemetry);
        let chat = body_of(&Ask::chat(21, 34).padded(MIB));
        let server = common::raw_server::RawServer::start(with_length(
            "application/json",
            &chat,
            chat.len(),
        ))
        .await;
        let url = server.url("/serving-endpoints/chat-endpoint/invocations");
        assert_eq!(post(&llm, &url, &Ask::raw("")).await, chat);
        telemetry.flush().await;
        let usage = usage_of(&exporter);
        assert_eq!(
            find(&usage, Product::Llm, "databricks-claude-sonnet").usage,
            Usage::new(21, 34)
        );
        assert_eq!(telemetry.stats().usage_read, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reqwest_calls_from_tasks_are_all_counted() {
        let server = Arc::new(ModelServer::start().await);
        let (telemetry, exporter) = pipeline();
        let llm = kasal_telemetry::reqwest::client(Product::Agent, &telemetry);
        let url = server.url("/serving-endpoints/agent-llm/invocations");
        let tasks: Vec<_> = (0..8u64)
            .map(|task| {
                let (llm, url) = (llm.clone(), url.clone());
                tokio::spawn(async move {
                    for i in 0..5u64 {
                        post(&llm, &url, &Ask::stream(task * 10 + i, i)).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        telemetry.flush().await;
        let (calls, input, output) = server.reported();
        let total: Usage = exporter.usage().iter().map(|r| r.usage).sum();
        assert_eq!(calls, 40);
        assert_eq!((total.input_tokens, total.output_tokens), (input, output));
    }

    #[tokio::test]
    async fn a_reqwest_middleware_without_usage_reading() {
        let server = ModelServer::start().await;
        let (telemetry, exporter) = pipeline();
        let client = reqwest_middleware::ClientBuilder::new(
            kasal_telemetry::reqwest::http_client().build().unwrap(),
        )
        .with(
            kasal_telemetry::reqwest::TelemetryMiddleware::new(Product::Llm, telemetry.clone())
                .usage(UsageReading::Never),
        )
        .build();
        let url = server.url("/serving-endpoints/m/invocations");
        post(&client, &url, &Ask::chat(1, 2)).await;
        telemetry.flush().await;
        assert!(exporter.usage().is_empty());
        assert_eq!(exporter.total_calls(), 1);
    }
}
