//! Benchmark (a): the full `TelemetryLayer` side by side with tower-http doing the closest job,
//! `SetRequestHeaderLayer::overriding(USER_AGENT, ..)` + `TraceLayer::new_for_http()`, in one
//! criterion group.
//!
//! Both wrap the same in-process `tower::service_fn` answering a small `Full<Bytes>` body; each
//! iteration builds a request, calls through the stack and reads the body to its end with
//! `BodyExt::collect` (so tower-http's end-of-stream work and our record happen inside the
//! measurement). Ours also records each call into a real `Telemetry` pipeline (default settings,
//! a no-op exporter): the call is folded into the caller-side rollup.
//!
//! The three services run under three subscribers in turn, each the only one alive while its
//! group runs (so callsite interest and the max level are its own): (2) and (3) as scoped
//! defaults, then (1) as the global default, as an application would (a scoped default costs a
//! thread-local lookup per dispatch, on both sides): (1) `telemetry_layer`: a registry with a small layer, filtered at DEBUG (tower-http's
//! default level; ours is INFO), that visits every field of every span, record and event
//! (formatting `%`/`?` values into a reused buffer, as a real exporter must) and counts into
//! thread-locals; (2) `telemetry_layer_fmt`: a `tracing_subscriber::fmt` layer at DEBUG writing
//! to `io::sink()`; (3) `telemetry_layer_info`: the counting layer under a global INFO filter,
//! where tower-http's DEBUG span and events are disabled at their callsites. Everything runs on
//! a current-thread tokio runtime, one `block_on` per sample (`iter_custom`).
//!
//! Bench ids: `{telemetry_layer,telemetry_layer_fmt,telemetry_layer_info}/{kasal_telemetry_layer,
//! tower_http_ua_trace,no_layer}`; `no_layer` is the shared floor (service call + body collect).
//!
//! After each group, `cargo bench` prints an interleaved check of the same three services: short
//! rounds (5,000 calls) alternating ours and tower-http (who goes first alternates) and the floor,
//! 101 rounds, with the median and 10th-percentile ratios. Criterion measures the three seconds
//! apart, so on a shared machine load drift moves its ratio by several percent; the interleaved
//! ratio is the one to trust. Not printed under `--profile-time`.
mod common;

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::header::USER_AGENT;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use kasal_telemetry::TelemetryLayer;
use kasal_telemetry::user_agent::{Product, UserAgent};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer as _, registry::LookupSpan};

const URL: &str = "https://adb-1234567890123456.7.azuredatabricks.net/api/2.0/genie/spaces/01ef/start-conversation?page=2";
const REPLY: &[u8] = br#"{"conversation_id":"01ef","message_id":"01f0"}"#;

thread_local! {
    static SPANS: Cell<u64> = const { Cell::new(0) };
    static EVENTS: Cell<u64> = const { Cell::new(0) };
    static FIELDS: Cell<u64> = const { Cell::new(0) };
    static CLOSED: Cell<u64> = const { Cell::new(0) };
    static BUF: RefCell<String> = const { RefCell::new(String::new()) };
}

fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    counter.with(|c| c.set(c.get() + 1));
}

/// Visits every field the way a recording subscriber must: counts it and touches its value.
struct Counting;

impl Visit for Counting {
    fn record_str(&mut self, _field: &Field, value: &str) {
        bump(&FIELDS);
        black_box(value.len());
    }
    fn record_u64(&mut self, _field: &Field, value: u64) {
        bump(&FIELDS);
        black_box(value);
    }
    fn record_i64(&mut self, _field: &Field, value: i64) {
        bump(&FIELDS);
        black_box(value);
    }
    fn record_bool(&mut self, _field: &Field, value: bool) {
        bump(&FIELDS);
        black_box(value);
    }
    fn record_debug(&mut self, _field: &Field, value: &dyn std::fmt::Debug) {
        bump(&FIELDS);
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            let _ = write!(buf, "{value:?}");
            black_box(buf.len());
        });
    }
}

/// The span-recording layer both sides run under.
struct Recording;

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recording {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        bump(&SPANS);
        attrs.record(&mut Counting);
    }
    fn on_record(&self, _id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        values.record(&mut Counting);
    }
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        bump(&EVENTS);
        event.record(&mut Counting);
    }
    fn on_close(&self, _id: Id, _ctx: Context<'_, S>) {
        bump(&CLOSED);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    spans: u64,
    events: u64,
    fields: u64,
    closed: u64,
}

fn counts() -> Counts {
    Counts {
        spans: SPANS.with(Cell::get),
        events: EVENTS.with(Cell::get),
        fields: FIELDS.with(Cell::get),
        closed: CLOSED.with(Cell::get),
    }
}

fn answer(
    _request: Request<Full<Bytes>>,
) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(REPLY)))))
}

fn request() -> Request<Full<Bytes>> {
    Request::get(URL)
        .body(Full::default())
        .expect("valid request")
}

/// One call through `service`, body read to its end.
async fn call_once<S, B>(service: &mut S) -> usize
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .expect("ready")
        .call(black_box(request()))
        .await
        .expect("answer");
    let body = response.into_body().collect().await.expect("body");
    body.to_bytes().len()
}

fn bench<S, B>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group: &str,
    id: &str,
    service: &mut S,
) where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    // Sanity: one call, counted, before measuring.
    let before = counts();
    assert_eq!(rt.block_on(call_once(service)), REPLY.len());
    let after = counts();
    println!(
        "{group}/{id}: per call {} spans, {} events, {} fields visited, {} closed (Recording layer)",
        after.spans - before.spans,
        after.events - before.events,
        after.fields - before.fields,
        after.closed - before.closed,
    );
    c.benchmark_group(group).bench_function(id, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(call_once(service).await);
                }
                start.elapsed()
            })
        })
    });
}

/// Nanoseconds per call over `iters` back-to-back calls (one `block_on`, as in criterion).
fn per_call<S, B>(rt: &tokio::runtime::Runtime, service: &mut S, iters: u32) -> f64
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(call_once(service).await);
        }
        start.elapsed().as_nanos() as f64 / f64::from(iters)
    })
}

/// Ours, the peer and the floor alternating in short rounds; medians and the ratio printed. On a
/// shared machine the load drifts between criterion's back-to-back measurements (seconds apart);
/// here all three see the same load, so this ratio is the figure to trust.
fn interleaved<A, AB, P, PB, F, FB>(
    rt: &tokio::runtime::Runtime,
    group: &str,
    ours: &mut A,
    peer: &mut P,
    floor: &mut F,
) where
    A: Service<Request<Full<Bytes>>, Response = Response<AB>>,
    A::Error: std::fmt::Debug,
    AB: http_body::Body<Data = Bytes>,
    AB::Error: std::fmt::Debug,
    P: Service<Request<Full<Bytes>>, Response = Response<PB>>,
    P::Error: std::fmt::Debug,
    PB: http_body::Body<Data = Bytes>,
    PB::Error: std::fmt::Debug,
    F: Service<Request<Full<Bytes>>, Response = Response<FB>>,
    F::Error: std::fmt::Debug,
    FB: http_body::Body<Data = Bytes>,
    FB::Error: std::fmt::Debug,
{
    const ROUNDS: usize = 101;
    const ITERS: u32 = 5_000;
    // The median, and the 10th percentile: the least disturbed rounds, for a second opinion.
    let quantiles = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() / 10])
    };
    let (mut a, mut p, mut f) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate who goes first, so neither side always follows the other.
        if round % 2 == 0 {
            a.push(per_call(rt, ours, ITERS));
            p.push(per_call(rt, peer, ITERS));
        } else {
            p.push(per_call(rt, peer, ITERS));
            a.push(per_call(rt, ours, ITERS));
        }
        f.push(per_call(rt, floor, ITERS));
    }
    let ((a, a10), (p, p10), (f, f10)) = (quantiles(a), quantiles(p), quantiles(f));
    println!(
        "interleaved {group} (median): ours {a:7.1} ns  tower-http {p:7.1} ns  \
         floor {f:7.1} ns  ours/tower-http {:.3}  (above floor: {:.3})",
        a / p,
        (a - f) / (p - f),
    );
    println!(
        "interleaved {group} (p10):    ours {a10:7.1} ns  tower-http {p10:7.1} ns  \
         floor {f10:7.1} ns  ours/tower-http {:.3}  (above floor: {:.3})",
        a10 / p10,
        (a10 - f10) / (p10 - f10),
    );
}

/// Builds one of the subscribers.
type MakeDispatch = fn() -> tracing::Dispatch;

/// The three subscribers the layers run under, one after the other: recording, `fmt`, INFO.
fn subscribers() -> [(&'static str, MakeDispatch); 3] {
    [
        // Every span, record and event visited, at DEBUG (tower-http's level).
        ("telemetry_layer", || {
            tracing::Dispatch::new(
                tracing_subscriber::registry().with(Recording.with_filter(LevelFilter::DEBUG)),
            )
        }),
        // A `fmt` layer at DEBUG writing to `io::sink()`: formats span fields and events.
        ("telemetry_layer_fmt", || {
            tracing::Dispatch::new(
                tracing_subscriber::registry().with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::sink)
                        .with_filter(LevelFilter::DEBUG),
                ),
            )
        }),
        // A global INFO filter: tower-http's DEBUG span and events are disabled at the callsite.
        ("telemetry_layer_info", || {
            tracing::Dispatch::new(
                tracing_subscriber::registry()
                    .with(LevelFilter::INFO)
                    .with(Recording),
            )
        }),
    ]
}

fn telemetry_layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `fmt` and INFO first, each as the scoped default and dropped before the next registers
    // (so it no longer counts in callsite interest); then the recording one as the global
    // default, as before, so its figures compare with earlier runs (no scoped lookup per
    // dispatch once no scoped default is left).
    let [recording, rest @ ..] = subscribers();
    for (group, subscriber) in rest {
        let dispatch = subscriber();
        tracing::dispatcher::with_default(&dispatch, || under_subscriber(c, &rt, group));
        drop(dispatch);
    }
    let (group, subscriber) = recording;
    tracing::dispatcher::set_global_default(subscriber()).expect("first global subscriber");
    under_subscriber(c, &rt, group);

    #[cfg(feature = "otel")]
    otel_metrics(c, &rt);
}

/// Ours, tower-http and the floor under the current subscriber, as criterion group `group`, then
/// (under `cargo bench`) interleaved.
fn under_subscriber(c: &mut Criterion, rt: &tokio::runtime::Runtime, group: &str) {
    let telemetry = common::noop_telemetry(rt);
    assert!(telemetry.is_enabled());
    let mut ours =
        TelemetryLayer::new(Product::Genie, telemetry.clone()).layer(tower::service_fn(answer));
    let value = UserAgent::new(Product::Genie).header_value().clone();
    let mut tower_http = ServiceBuilder::new()
        .layer(SetRequestHeaderLayer::overriding(USER_AGENT, value))
        .layer(TraceLayer::new_for_http())
        .service(tower::service_fn(answer));
    let mut floor = tower::service_fn(answer);

    bench(c, rt, group, "kasal_telemetry_layer", &mut ours);
    bench(c, rt, group, "tower_http_ua_trace", &mut tower_http);
    bench(c, rt, group, "no_layer", &mut floor);

    // Only under `cargo bench` (which passes `--bench`), not when tests run the bench once nor
    // under `--profile-time` (profiling one function).
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "--profile-time") {
        interleaved(rt, group, &mut ours, &mut tower_http, &mut floor);
    }

    let stats = rt.block_on(telemetry.shutdown());
    assert_eq!(stats.dropped, 0, "{stats:?}");
    println!("{group} pipeline: {stats:?}");
}

/// Feature `otel`: the same layer on a pipeline whose exporter also feeds `HttpMetrics` (an SDK
/// `MeterProvider` with a periodic reader) vs the plain pipeline; both on the current-thread
/// runtime, so the aggregator's replay of the rollups into the histograms (every window) is
/// inside the measured time. Bench ids `telemetry_layer/otel_metrics_{off,on}`, plus an
/// interleaved ratio.
#[cfg(feature = "otel")]
fn otel_metrics(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use kasal_telemetry::event::Batch;
    use kasal_telemetry::export::FanOut;
    use kasal_telemetry::metrics::HttpMetrics;
    use kasal_telemetry::{BoxError, Telemetry};
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let noop = || tower::service_fn(|_: Batch| async { Ok::<_, BoxError>(()) });
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(InMemoryMetricExporter::default()).build())
        .build();
    let metrics = HttpMetrics::new(&provider.meter("bench"));
    // A short window so that several replays fall inside each measurement.
    let (off, on) = rt.block_on(async {
        let off = Telemetry::builder()
            .exporter(FanOut::new().exporter(noop()))
            .flush_interval(Duration::from_millis(200))
            .ignore_env()
            .build();
        let on = Telemetry::builder()
            .exporter(FanOut::new().exporter(noop()).exporter(metrics))
            .flush_interval(Duration::from_millis(200))
            .ignore_env()
            .build();
        (off, on)
    });
    let mut without =
        TelemetryLayer::new(Product::Genie, off.clone()).layer(tower::service_fn(answer));
    let mut with = TelemetryLayer::new(Product::Genie, on.clone()).layer(tower::service_fn(answer));
    bench(c, rt, "telemetry_layer", "otel_metrics_off", &mut without);
    bench(c, rt, "telemetry_layer", "otel_metrics_on", &mut with);

    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "--profile-time") {
        let mut ratios = Vec::new();
        let (mut offs, mut ons) = (Vec::new(), Vec::new());
        for round in 0..41 {
            let (a, b) = if round % 2 == 0 {
                let a = per_call(rt, &mut without, 20_000);
                (a, per_call(rt, &mut with, 20_000))
            } else {
                let b = per_call(rt, &mut with, 20_000);
                (per_call(rt, &mut without, 20_000), b)
            };
            offs.push(a);
            ons.push(b);
            ratios.push(b / a);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "interleaved otel metrics (median): off {:7.1} ns  on {:7.1} ns  on/off {:.3}",
            median(&mut offs),
            median(&mut ons),
            median(&mut ratios),
        );
    }
    let (off, on) = rt.block_on(async { (off.shutdown().await, on.shutdown().await) });
    assert_eq!((off.dropped, on.dropped), (0, 0));
    let _ = provider.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = telemetry_layer
}

/// The floor plus the least an enabled INFO span costs: one `info_span!` with three fields,
/// entered three times (as a call, its future and its body enter theirs) and closed.
fn bare_span(
    request: Request<Full<Bytes>>,
) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    let span = tracing::info_span!(
        target: "kasal_trace",
        "HTTP",
        otel.kind = "client",
        http.request.method = "GET",
        kasal.product = "genie",
    );
    for _ in 0..3 {
        let _entered = span.enter();
    }
    answer(request)
}

/// Instruction counts: with `KASAL_BENCH_CALLS=<subscriber>/<service>/<calls>` (subscriber
/// `recording`, `fmt` or `info`; service `ours`, `tower_http`, `floor` or `bare_span`: the floor
/// with an empty enabled INFO span, the least an INFO span costs), makes that many
/// calls (after 100 to warm up) and exits, without criterion. Run it under
/// `valgrind --tool=callgrind` with two call counts: the difference of the totals divided by
/// the difference of the counts is the exact cost of one call.
fn count_calls(spec: &str) {
    let mut parts = spec.split('/');
    let (Some(subscriber), Some(service), Some(calls)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("KASAL_BENCH_CALLS=<recording|fmt|info>/<ours|tower_http|floor>/<calls>");
    };
    let calls: u32 = calls.parse().expect("a call count");
    let [recording, fmt, info] = subscribers();
    let make = match subscriber {
        "recording" => recording.1,
        "fmt" => fmt.1,
        "info" => info.1,
        other => panic!("unknown subscriber {other}"),
    };
    tracing::dispatcher::set_global_default(make()).expect("first global subscriber");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let telemetry = common::noop_telemetry(&rt);
    let mut ours =
        TelemetryLayer::new(Product::Genie, telemetry.clone()).layer(tower::service_fn(answer));
    let value = UserAgent::new(Product::Genie).header_value().clone();
    let mut tower_http = ServiceBuilder::new()
        .layer(SetRequestHeaderLayer::overriding(USER_AGENT, value))
        .layer(TraceLayer::new_for_http())
        .service(tower::service_fn(answer));
    let mut floor = tower::service_fn(answer);
    let elapsed = match service {
        "ours" => {
            per_call(&rt, &mut ours, 100);
            per_call(&rt, &mut ours, calls)
        }
        "tower_http" => {
            per_call(&rt, &mut tower_http, 100);
            per_call(&rt, &mut tower_http, calls)
        }
        "floor" => {
            per_call(&rt, &mut floor, 100);
            per_call(&rt, &mut floor, calls)
        }
        "bare_span" => {
            let mut bare = tower::service_fn(bare_span);
            per_call(&rt, &mut bare, 100);
            per_call(&rt, &mut bare, calls)
        }
        other => panic!("unknown service {other}"),
    };
    println!("{spec}: {elapsed:.1} ns per call");
    rt.block_on(telemetry.shutdown());
}

fn main() {
    if let Ok(spec) = std::env::var("KASAL_BENCH_CALLS") {
        count_calls(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
