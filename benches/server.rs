//! The server side: an axum `Router` behind `ServerTelemetryLayer` side by side with the same
//! router behind tower-http's `TraceLayer::new_for_http()`, called in-process with `oneshot`,
//! body read to its end, in one criterion group per subscriber.
//!
//! Each request carries the headers a Databricks Apps proxy forwards (a token and an email), so
//! ours does its whole job: the execution context from the headers, the server span with
//! `http.route` from `MatchedPath`, the handler in the context's scope, the record into a real
//! `Telemetry` pipeline (no-op exporter) at the end of the body.
//!
//! Subscribers (each set as the thread's default for its group, the same for both sides):
//!
//! - `recording`: a registry with a layer, filtered at DEBUG (tower-http's span level; ours is
//!   INFO), that visits every field of every span, record and event;
//! - `info`: the same layer behind a global INFO filter, where tower-http's DEBUG span is
//!   disabled and costs nothing.
//!
//! Bench ids: `server/{subscriber}/{kasal_server_layer,tower_http_trace,no_layer}`. After each
//! group, `cargo bench` prints an interleaved check (short alternating rounds, median ratio),
//! the figure to trust on a shared machine.
mod common;

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use http_body_util::BodyExt;
use kasal_telemetry::ServerTelemetryLayer;
use kasal_telemetry::user_agent::Product;
use tower::{Service, ServiceExt};
use tower_http::trace::TraceLayer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer as _, registry::LookupSpan};

const REPLY: &str = r#"{"id":"42","name":"answer"}"#;

thread_local! {
    static FIELDS: Cell<u64> = const { Cell::new(0) };
}

/// Visits every field the way a recording subscriber must.
struct Counting;

impl Visit for Counting {
    fn record_str(&mut self, _field: &Field, value: &str) {
        FIELDS.with(|c| c.set(c.get() + 1));
        black_box(value.len());
    }
    fn record_debug(&mut self, _field: &Field, value: &dyn std::fmt::Debug) {
        FIELDS.with(|c| c.set(c.get() + 1));
        black_box(format_args!("{value:?}"));
    }
}

/// The span-recording layer both sides run under.
struct Recording;

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recording {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        attrs.record(&mut Counting);
    }
    fn on_record(&self, _id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        values.record(&mut Counting);
    }
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        event.record(&mut Counting);
    }
}

fn router() -> Router {
    Router::new().route("/api/items/{id}", get(|| async { REPLY }))
}

fn request() -> Request<Body> {
    Request::get("/api/items/42?verbose=true")
        .header("host", "app.example.databricksapps.com")
        .header("user-agent", "bench/1.0")
        .header(
            "x-forwarded-access-token",
            "dapi0123456789abcdef0123456789abcdef",
        )
        .header("x-forwarded-email", "alice@example.com")
        .body(Body::empty())
        .expect("valid request")
}

/// One request through `router`, body read to its end.
async fn call_once<S, B>(router: &S) -> usize
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = router
        .clone()
        .oneshot(black_box(request()))
        .await
        .expect("answer");
    let body = response.into_body().collect().await.expect("body");
    body.to_bytes().len()
}

/// Nanoseconds per call over `iters` back-to-back calls.
fn per_call<S, B>(rt: &tokio::runtime::Runtime, router: &S, iters: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(call_once(router).await);
        }
        start.elapsed()
    })
}

fn group(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, dispatch: tracing::Dispatch) {
    let _default = tracing::dispatcher::set_default(&dispatch);
    let telemetry = common::noop_telemetry(rt);
    assert!(telemetry.is_enabled());
    // Finalized with `with_state`, as `axum::serve` does: routes and layers are built once.
    let ours = router()
        .layer(ServerTelemetryLayer::new(Product::Agent, telemetry.clone()))
        .with_state(());
    let peer = router().layer(TraceLayer::new_for_http()).with_state(());
    let floor = router().with_state(());
    for router in [&ours, &peer, &floor] {
        assert_eq!(rt.block_on(call_once(router)), REPLY.len());
    }

    let mut group = c.benchmark_group(format!("server/{name}"));
    group.bench_function("kasal_server_layer", |b| {
        b.iter_custom(|iters| per_call(rt, &ours, iters))
    });
    group.bench_function("tower_http_trace", |b| {
        b.iter_custom(|iters| per_call(rt, &peer, iters))
    });
    group.bench_function("no_layer", |b| {
        b.iter_custom(|iters| per_call(rt, &floor, iters))
    });
    group.finish();

    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "--profile-time") {
        interleaved(rt, name, &ours, &peer, &floor);
    }
    let stats = rt.block_on(telemetry.shutdown());
    assert_eq!(stats.dropped, 0, "{stats:?}");
}

/// Ours, the peer and the floor alternating in short rounds; medians and the ratio printed.
fn interleaved(
    rt: &tokio::runtime::Runtime,
    name: &str,
    ours: &Router,
    peer: &Router,
    floor: &Router,
) {
    const ROUNDS: usize = 41;
    const ITERS: u64 = 3_000;
    let ns = |d: Duration| d.as_nanos() as f64 / ITERS as f64;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut a, mut p, mut f) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            a.push(ns(per_call(rt, ours, ITERS)));
            p.push(ns(per_call(rt, peer, ITERS)));
        } else {
            p.push(ns(per_call(rt, peer, ITERS)));
            a.push(ns(per_call(rt, ours, ITERS)));
        }
        f.push(ns(per_call(rt, floor, ITERS)));
    }
    let (a, p, f) = (median(a), median(p), median(f));
    println!(
        "interleaved server/{name} (median): ours {a:7.1} ns  tower-http {p:7.1} ns  \
         floor {f:7.1} ns  ours/tower-http {:.3}  (above floor: {:.3})",
        a / p,
        (a - f) / (p - f),
    );
}

fn server(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let recording = tracing_subscriber::registry().with(Recording.with_filter(LevelFilter::DEBUG));
    group(c, &rt, "recording", tracing::Dispatch::new(recording));
    let info = tracing_subscriber::registry().with(Recording.with_filter(LevelFilter::INFO));
    group(c, &rt, "info", tracing::Dispatch::new(info));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = server
}

/// Instruction counts: with `KASAL_BENCH_CALLS=<subscriber>/<service>/<calls>` (subscriber
/// `recording` or `info`; service `ours`, `tower_http` or `floor`), makes that many calls
/// (after 100 to warm up) and exits, without criterion. Run it under
/// `valgrind --tool=callgrind` with two call counts: the difference of the totals divided by
/// the difference of the counts is the exact cost of one call.
fn count_calls(spec: &str) {
    let mut parts = spec.split('/');
    let (Some(subscriber), Some(service), Some(calls)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("KASAL_BENCH_CALLS=<recording|info>/<ours|tower_http|floor>/<calls>");
    };
    let calls: u64 = calls.parse().expect("a call count");
    let level = match subscriber {
        "recording" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        other => panic!("unknown subscriber {other}"),
    };
    let dispatch =
        tracing::Dispatch::new(tracing_subscriber::registry().with(Recording.with_filter(level)));
    let _default = tracing::dispatcher::set_default(&dispatch);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let telemetry = common::noop_telemetry(&rt);
    let router = match service {
        "ours" => router()
            .layer(ServerTelemetryLayer::new(Product::Agent, telemetry.clone()))
            .with_state(()),
        "tower_http" => router().layer(TraceLayer::new_for_http()).with_state(()),
        "floor" => router().with_state(()),
        other => panic!("unknown service {other}"),
    };
    per_call(&rt, &router, 100);
    let elapsed = per_call(&rt, &router, calls);
    println!(
        "{spec}: {:.1} ns per call",
        elapsed.as_nanos() as f64 / calls.max(1) as f64
    );
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
