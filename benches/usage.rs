//! Token usage extraction: a 1 MB JSON chat completion and a 1 MB SSE stream through
//! `TelemetryLayer` with usage reading on (`Product::Llm`, a `/serving-endpoints/{name}/invocations`
//! path) vs off (`.usage(UsageReading::Never)`), side by side in one criterion group, three ways:
//!
//! - `in_process`: a `tower::service_fn` answering the body in 16 KiB `Bytes` frames (slices of
//!   one buffer: no copy), read frame by frame and dropped. The strictest floor: nothing but the
//!   stack and the scanner; the megabyte itself is never touched.
//! - `collected`: the same, read into one buffer (`collect().await?.to_bytes()`, what reqwest's
//!   `.bytes()` does): what a caller that parses the answer pays at least.
//! - `loopback`: hyper-util's client against a hyper server on 127.0.0.1 sending the same body,
//!   read frame by frame: the real-world case.
//!
//! After the group, an interleaved check (short rounds alternating on and off, median ratio) is
//! printed for each, since criterion measures the two apart and a shared machine drifts. Then a
//! counting global allocator reports the peak bytes live during one in-process call, with usage
//! reading on and off, for 64 KiB, 1 MiB and 5 MiB bodies: the scanner's share must not grow
//! with the body.
//!
//! Run: `cargo bench --bench usage -- --warm-up-time 1 --measurement-time 3`; for the
//! interleaved check alone see [`interleaved`], for instruction counts see [`instructions`].
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use kasal_telemetry::usage::UsageReading;
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{BoxError, Telemetry, TelemetryLayer};
use tower::{Layer, Service, ServiceExt};

use common::{peak_above, reset_peak};

#[global_allocator]
static GLOBAL: common::CountingAllocator = common::CountingAllocator;

const MB: usize = 1_000_000;
const FRAME: usize = 16 * 1024;
const PATH: &str = "/serving-endpoints/databricks-claude-sonnet/invocations";

const TEXT: &str = r#"Here is the plan: {"step": 1} \ "quoted" and a "usage" word. "#;

/// A chat completion of about `size` bytes (the content is what grows), members in the order
/// OpenAI-compatible servers send them.
fn json_body(size: usize) -> Bytes {
    let content: String = TEXT.chars().cycle().take(size).collect();
    let content = serde_json::to_string(&content).unwrap();
    let body = format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"databricks-claude-sonnet","choices":[{{"index":0,"message":{{"role":"assistant","content":{content}}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":1200,"completion_tokens":250000,"total_tokens":251200,"prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}},"system_fingerprint":"fp_1"}}"#
    );
    Bytes::from(body)
}

/// An SSE stream of about `size` bytes: ~250-byte content events with `usage: null`, the usage
/// event, `[DONE]`.
fn sse_body(size: usize) -> Bytes {
    let mut out = Vec::with_capacity(size + 1024);
    let mut i = 0;
    while out.len() < size {
        let event = serde_json::json!({
            "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "databricks-claude-sonnet",
            "choices": [{"index": 0, "delta": {"content": format!("{i} {TEXT}")}, "finish_reason": null}],
            "usage": null,
        });
        out.extend_from_slice(format!("data: {event}\n\n").as_bytes());
        i += 1;
    }
    let last = serde_json::json!({
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "databricks-claude-sonnet",
        "choices": [], "usage": {"prompt_tokens": 1200, "completion_tokens": i, "total_tokens": 1200 + i},
    });
    out.extend_from_slice(format!("data: {last}\n\ndata: [DONE]\n\n").as_bytes());
    Bytes::from(out)
}

type Body = BoxBody<Bytes, Infallible>;

/// `body` in 16 KiB frames (slices, no copy). Its length is not told (a stream: chunked over
/// HTTP/1.1), except with `USAGE_SIZED=1` for a JSON body (`{`): its size hint is then exact
/// (over HTTP/1.1, a `Content-Length`), as a chat completion's is.
fn framed(body: &Bytes) -> Body {
    let frames: Vec<_> = (0..body.len())
        .step_by(FRAME)
        .map(|at| Ok(Frame::data(body.slice(at..(at + FRAME).min(body.len())))))
        .collect();
    let stream = StreamBody::new(futures_util::stream::iter(frames)).boxed();
    static SIZED: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var_os("USAGE_SIZED").is_some());
    if body.first() == Some(&b'{') && *SIZED {
        return Sized {
            inner: stream,
            remaining: body.len() as u64,
        }
        .boxed();
    }
    stream
}

/// A body of known length: `inner`, with an exact size hint.
struct Sized {
    inner: Body,
    remaining: u64,
}

impl http_body::Body for Sized {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.remaining -= data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

fn layer(telemetry: &Telemetry, on: bool) -> TelemetryLayer {
    let layer = TelemetryLayer::new(Product::Llm, telemetry.clone());
    if on {
        layer
    } else {
        layer.usage(UsageReading::Never)
    }
}

/// How a call's body is read, and where it comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// In process, frame by frame.
    InProcess,
    /// In process, into one buffer.
    Collected,
    /// Over 127.0.0.1, frame by frame.
    Loopback,
}

impl Transport {
    const ALL: [Transport; 3] = [
        Transport::InProcess,
        Transport::Collected,
        Transport::Loopback,
    ];

    fn name(self) -> &'static str {
        match self {
            Transport::InProcess => "in_process",
            Transport::Collected => "collected",
            Transport::Loopback => "loopback",
        }
    }
}

/// One call through `client`, reading the body to its end: frame by frame (each frame dropped
/// once read, as a streaming caller does), or (`collect`) into one buffer.
async fn call<S, B>(client: &mut S, url: &str, collect: bool) -> usize
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError>,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let request = Request::post(url).body(Full::default()).unwrap();
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    let mut body = response.into_body();
    if collect {
        let bytes = body.collect().await.unwrap().to_bytes();
        return std::hint::black_box(bytes).len();
    }
    // `USAGE_HOLD=1`: the caller keeps its last frame until the next one arrives, as the usage
    // reader does (so hyper cannot reuse its read buffer either way).
    let hold = std::env::var_os("USAGE_HOLD").is_some();
    let mut held = Bytes::new();
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            read += data.len();
            if hold {
                held = data.clone();
            }
        }
    }
    drop(held);
    read
}

/// Makes the given number of calls on one client, and times them.
type Calls = Box<dyn FnMut(&tokio::runtime::Runtime, u64) -> Duration>;

/// A client of `transport` answering `body`: rounds of `calls` calls, timed.
fn client(
    rt: &tokio::runtime::Runtime,
    telemetry: &Telemetry,
    transport: Transport,
    body: &Bytes,
    addr: SocketAddr,
    on: bool,
) -> Calls {
    let collect = transport == Transport::Collected;
    if transport == Transport::Loopback {
        let mut client = {
            let _guard = rt.enter();
            layer(telemetry, on).layer(
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Full<Bytes>>(),
            )
        };
        let url = format!("http://{addr}{PATH}");
        return Box::new(move |rt, calls| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..calls {
                    std::hint::black_box(call(&mut client, &url, collect).await);
                }
                start.elapsed()
            })
        });
    }
    let mut client = in_process(telemetry, body, on);
    let url = format!("http://127.0.0.1{PATH}");
    Box::new(move |rt, calls| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..calls {
                std::hint::black_box(call(&mut client, &url, collect).await);
            }
            start.elapsed()
        })
    })
}

/// The layer over a `service_fn` answering `body` in frames.
fn in_process(
    telemetry: &Telemetry,
    body: &Bytes,
    on: bool,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<kasal_telemetry::TelemetryBody<Body>>,
    Error = BoxError,
> + use<> {
    let served = body.clone();
    layer(telemetry, on).layer(tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let body = framed(&served);
        async move { Ok::<_, Infallible>(Response::new(body)) }
    }))
}

async fn serve(body: Bytes) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(framed(&body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let telemetry = common::noop_telemetry(&rt);
    let bodies = [("json_1mb", json_body(MB)), ("sse_1mb", sse_body(MB))];
    let mut group = c.benchmark_group("usage");
    for (name, body) in &bodies {
        let addr = rt.block_on(serve(body.clone()));
        for transport in Transport::ALL {
            for on in [true, false] {
                let mut round = client(&rt, &telemetry, transport, body, addr, on);
                let id = format!(
                    "{}/{name}/{}",
                    transport.name(),
                    if on { "with_usage" } else { "without_usage" }
                );
                group.bench_function(id, |b| b.iter_custom(|iters| round(&rt, iters)));
            }
        }
    }
    group.finish();
    let stats = telemetry.stats();
    assert_eq!(stats.usage_ignored, 0, "{stats:?}");

    if std::env::args().any(|arg| arg == "--profile-time") {
        return;
    }
    scanner_alone(&bodies);
    interleaved(&rt, &telemetry, &bodies);
    memory(&rt, &telemetry);
}

/// The scanner by itself, fed each body in 16 KiB frames: by reference (`feed_bytes`, what the
/// layers do with `Bytes` bodies) and copied (`feed`, for other buffers); with the most it held.
fn scanner_alone(bodies: &[(&str, Bytes)]) {
    println!("\nscanner alone (16 KiB frames, then finish): time per body, most bytes held");
    for (name, body) in bodies {
        const N: u32 = 2_000;
        let frames: Vec<Bytes> = (0..body.len())
            .step_by(FRAME)
            .map(|at| body.slice(at..(at + FRAME).min(body.len())))
            .collect();
        for by_ref in [true, false] {
            let mut held = 0;
            let mut run = |measure_held: bool| {
                let mut scanner = kasal_telemetry::usage::UsageScanner::new();
                for frame in &frames {
                    if by_ref {
                        scanner.feed_bytes(frame);
                    } else {
                        scanner.feed(frame);
                    }
                    if measure_held {
                        held = held.max(scanner.retained_bytes());
                    }
                }
                assert!(std::hint::black_box(scanner.finish()).usage.is_some());
            };
            run(true);
            let start = Instant::now();
            for _ in 0..N {
                run(false);
            }
            let per_body = start.elapsed() / N;
            println!(
                "  {name:8} {:10} {:>9.2?} per body ({:>6.1} ns per frame), held {held:>6} B",
                if by_ref { "feed_bytes" } else { "feed" },
                per_body,
                per_body.as_nanos() as f64 / frames.len() as f64,
            );
        }
    }
}

/// Alternating rounds of `calls` calls, usage on and off (who goes first alternates): the
/// ratio of the totals, the median, 10th and 90th percentiles of the per-round on/off ratios,
/// and the ratio of the fastest rounds.
///
/// `USAGE_INTERLEAVED=<rounds>,<calls>` runs only this check, with that many rounds of that
/// many calls (on a busy machine, many rounds of one call give the steadiest median);
/// `USAGE_AA=1` turns usage reading off on both sides (an A/A run: the ratios' own bias);
/// `USAGE_HOLD=1` makes the streaming caller keep its last frame (see [`call`]);
/// `USAGE_SIZED=1` gives the JSON body its length (see [`framed`]), here and in every mode.
fn interleaved(rt: &tokio::runtime::Runtime, telemetry: &Telemetry, bodies: &[(&str, Bytes)]) {
    let (rounds, calls) = std::env::var("USAGE_INTERLEAVED")
        .ok()
        .and_then(|spec| {
            let (rounds, calls) = spec.split_once(',')?;
            Some((rounds.parse().ok()?, calls.parse().ok()?))
        })
        .unwrap_or((101usize, 10u64));
    println!("\ninterleaved: {rounds} rounds of {calls} calls, time with usage / without");
    for (name, body) in bodies {
        let addr = rt.block_on(serve(body.clone()));
        for transport in Transport::ALL {
            // `USAGE_AA=1`: usage off on both sides, to see the measurement's own bias.
            let aa = std::env::var_os("USAGE_AA").is_some();
            let mut on = client(rt, telemetry, transport, body, addr, !aa);
            let mut off = client(rt, telemetry, transport, body, addr, false);
            let mut ratios = Vec::with_capacity(rounds);
            let (mut on_total, mut off_total) = (Duration::ZERO, Duration::ZERO);
            // The fastest round of each: the least disturbed by other work on the machine.
            let (mut on_min, mut off_min) = (Duration::MAX, Duration::MAX);
            for round in 0..rounds {
                let (t_on, t_off) = if round % 2 == 0 {
                    let t_on = on(rt, calls);
                    (t_on, off(rt, calls))
                } else {
                    let t_off = off(rt, calls);
                    (on(rt, calls), t_off)
                };
                on_total += t_on;
                off_total += t_off;
                on_min = on_min.min(t_on);
                off_min = off_min.min(t_off);
                ratios.push(t_on.as_secs_f64() / t_off.as_secs_f64());
            }
            ratios.sort_by(f64::total_cmp);
            let per_call = |total: Duration| total / (rounds as u32 * calls as u32);
            println!(
                "  {:10} {name:8}  with {:>9.1?}/call  without {:>9.1?}/call  ratio of totals {:.3}  median {:.3}  p10 {:.3}  p90 {:.3}  fastest rounds {:.3}",
                transport.name(),
                per_call(on_total),
                per_call(off_total),
                on_total.as_secs_f64() / off_total.as_secs_f64(),
                ratios[rounds / 2],
                ratios[rounds / 10],
                ratios[rounds * 9 / 10],
                on_min.as_secs_f64() / off_min.as_secs_f64(),
            );
        }
    }
}

/// Peak bytes live (above the level just before) during one in-process call.
fn memory(rt: &tokio::runtime::Runtime, telemetry: &Telemetry) {
    println!("\npeak bytes allocated during one call (body buffers excluded: allocated before)");
    for (name, make) in [("json", json_body as fn(usize) -> Bytes), ("sse", sse_body)] {
        for size in [64 * 1024, MB, 5 * MB] {
            let body = make(size);
            let mut peaks = Vec::new();
            for on in [true, false] {
                let mut client = in_process(telemetry, &body, on);
                let url = format!("http://127.0.0.1{PATH}");
                // Warm up (first-call allocations: the rollup key, the thread's shard).
                rt.block_on(call(&mut client, &url, false));
                let before = reset_peak();
                rt.block_on(call(&mut client, &url, false));
                peaks.push(peak_above(before));
            }
            println!(
                "  {name:4} {:>8} bytes: with usage {:>8} B, without {:>8} B, scanner share {:>6} B",
                body.len(),
                peaks[0],
                peaks[1],
                peaks[0].saturating_sub(peaks[1]),
            );
        }
    }
}

/// For instruction counts (stable on a busy machine): `USAGE_CALLS=<json|sse>,<on|off>,<n>`
/// makes `n` in-process calls read frame by frame and nothing else; `…,<n>,collected` reads
/// each body into one buffer, `…,<n>,loopback` calls a server on 127.0.0.1 (in the same
/// thread: the kernel's share is not counted, so the ratio is an upper bound). Run it under
/// `valgrind --tool=callgrind` for two `n` and both settings: the differences give the
/// instructions per call of the floor and of usage reading.
fn instructions(spec: &str) {
    let parts: Vec<&str> = spec.split(',').collect();
    let (kind, on, n, transport) = match parts[..] {
        [kind, on, n] => (kind, on, n, Transport::InProcess),
        [kind, on, n, "collected"] => (kind, on, n, Transport::Collected),
        [kind, on, n, "loopback"] => (kind, on, n, Transport::Loopback),
        _ => panic!("USAGE_CALLS=<json|sse>,<on|off>,<n>[,collected|loopback]"),
    };
    let body = if kind == "json" {
        json_body(MB)
    } else {
        sse_body(MB)
    };
    let n: u64 = n.parse().unwrap();
    let rt = runtime();
    let telemetry = common::noop_telemetry(&rt);
    let addr = rt.block_on(serve(body.clone()));
    let mut calls = client(&rt, &telemetry, transport, &body, addr, on == "on");
    calls(&rt, n);
    let stats = telemetry.stats();
    assert_eq!(stats.usage_read, if on == "on" { n } else { 0 });
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(spec) = std::env::var("USAGE_CALLS") {
        instructions(&spec);
        return;
    }
    if std::env::var_os("USAGE_INTERLEAVED").is_some() {
        let rt = runtime();
        let telemetry = common::noop_telemetry(&rt);
        interleaved(
            &rt,
            &telemetry,
            &[("json_1mb", json_body(MB)), ("sse_1mb", sse_body(MB))],
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
