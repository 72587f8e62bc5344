//! The reqwest stack over loopback, side by side in one run with what a reqwest user has today:
//!
//! - `plain`: a bare `reqwest::Client` (the floor);
//! - `middleware`: the same client behind reqwest-middleware with no middleware (what
//!   reqwest-middleware itself costs, which both stacks below pay);
//! - `reqwest_tracing`: reqwest-middleware with a User-Agent middleware and reqwest-tracing's
//!   `TracingMiddleware` (span per call, no classification, no records);
//! - `kasal`: `kasal_telemetry::reqwest::client(..)`: User-Agent, span, classification, the
//!   retry, and a record into a real `Telemetry` pipeline (no-op exporter);
//! - `kasal_without_retry` (count mode and the interleaved run): the same stack without the
//!   retry.
//!
//! All use the same transport settings and call the same hyper server on 127.0.0.1 (its own
//! thread), reading each small JSON body to its end. The same subscriber is installed globally:
//! a registry with a layer that visits every field of every span at INFO (both middlewares open
//! INFO spans). Criterion measures each client; then, under `cargo bench`, an interleaved run
//! times single calls of the clients in turn (order rotating) and prints the median and p99
//! latency of each and the latency each adds over `plain`: the figures to trust on a shared
//! machine, since the clients see the same load.
//!
//! `KASAL_BENCH_LOOP=<plain|middleware|reqwest_tracing|kasal|kasal_without_retry>:<n>` runs
//! only n calls of one client, for instruction counts under `valgrind --tool=callgrind`: the
//! difference between two runs (n = 1500 and 500) divided by 1000 is the cost of one call,
//! stable on a loaded machine.
mod common;

use std::cell::Cell;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::USER_AGENT;
use http::{Extensions, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use kasal_telemetry::reqwest::{RecordInvalidUrls, TelemetryMiddleware};
use kasal_telemetry::user_agent::{Product, UserAgent};

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer as _, registry::LookupSpan};

const REPLY: &[u8] = br#"{"conversation_id":"01ef","message_id":"01f0"}"#;

thread_local! {
    static FIELDS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

impl Visit for Counting {
    fn record_debug(&mut self, _field: &Field, value: &dyn std::fmt::Debug) {
        FIELDS.with(|c| c.set(c.get() + 1));
        black_box(format_args!("{value:?}").as_str());
    }
}

/// Visits every field of every span, record and event.
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

/// The peer's User-Agent middleware: overwrite the header.
struct SetUserAgent(HeaderValue);

#[async_trait::async_trait]
impl Middleware for SetUserAgent {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        request.headers_mut().insert(USER_AGENT, self.0.clone());
        next.run(request, extensions).await
    }
}

/// A hyper server on its own thread answering `REPLY`.
fn start_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = hyper::service::service_fn(|_: Request<Incoming>| async {
                    let mut response = Response::new(Full::new(Bytes::from_static(REPLY)));
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(response)
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
    });
    rx.recv().expect("server address")
}

/// A client under test: a bare `reqwest::Client`, or one behind reqwest-middleware.
enum Client {
    Bare(reqwest::Client),
    Middleware(ClientWithMiddleware),
}

/// One GET, body read to its end.
async fn call(client: &Client, url: &str) -> usize {
    let response = match client {
        Client::Bare(client) => client.get(url).send().await.expect("answer"),
        Client::Middleware(client) => client.get(url).send().await.expect("answer"),
    };
    response.bytes().await.expect("body").len()
}

fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime, id: &str, client: &Client, url: &str) {
    assert_eq!(rt.block_on(call(client, url)), REPLY.len());
    c.benchmark_group("reqwest").bench_function(id, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(call(client, url).await);
                }
                start.elapsed()
            })
        })
    });
}

/// Single calls of each client in turn, the order rotating each round; per-client median and
/// p99, and what each stack adds over the plain client.
fn interleaved(rt: &tokio::runtime::Runtime, clients: &[(&str, &Client)], url: &str) {
    const ROUNDS: usize = 20_000;
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); clients.len()];
    rt.block_on(async {
        for round in 0..ROUNDS {
            for k in 0..clients.len() {
                let i = (round + k) % clients.len();
                let start = Instant::now();
                black_box(call(clients[i].1, url).await);
                samples[i].push(start.elapsed().as_nanos() as f64);
            }
        }
    });
    let quantile = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q) as usize]
    };
    let stats: Vec<(f64, f64)> = samples
        .iter_mut()
        .map(|v| (quantile(v, 0.5), quantile(v, 0.99)))
        .collect();
    let (plain_median, plain_p99) = stats[0];
    for ((name, _), (median, p99)) in clients.iter().zip(&stats) {
        println!(
            "interleaved reqwest/{name:<19} median {:8.1} µs  p99 {:8.1} µs  added over plain: median {:+7.1} µs  p99 {:+7.1} µs",
            median / 1e3,
            p99 / 1e3,
            (median - plain_median) / 1e3,
            (p99 - plain_p99) / 1e3,
        );
    }
    let added = |i: usize| (stats[i].0 - plain_median, stats[i].1 - plain_p99);
    let (ours, peer) = (added(3), added(2));
    println!(
        "interleaved reqwest: kasal added / reqwest-tracing added: median {:.2}  p99 {:.2}",
        ours.0 / peer.0,
        ours.1 / peer.1,
    );
}

fn reqwest_bench(c: &mut Criterion) {
    let subscriber = tracing_subscriber::registry().with(Recording.with_filter(LevelFilter::INFO));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!(
        "http://{}/api/2.0/genie/spaces/01ef/start-conversation?page=2",
        start_server()
    );
    let telemetry = common::noop_telemetry(&rt);
    let http = || {
        kasal_telemetry::reqwest::http_client()
            .build()
            .expect("reqwest client")
    };
    let plain = Client::Bare(http());
    let middleware = Client::Middleware(ClientWithMiddleware::from(http()));
    let user_agent = UserAgent::new(Product::Genie).header_value().clone();
    let peer = Client::Middleware(
        ClientBuilder::new(http())
            .with(SetUserAgent(user_agent))
            .with(reqwest_tracing::TracingMiddleware::default())
            .build(),
    );
    let ours = Client::Middleware(kasal_telemetry::reqwest::client(Product::Genie, &telemetry));
    // The same without the retry: what the retry costs a call answered at once.
    let ours_without_retry = Client::Middleware(
        ClientBuilder::new(http())
            .with_init(RecordInvalidUrls::new(Product::Genie, telemetry.clone()))
            .with(TelemetryMiddleware::new(Product::Genie, telemetry.clone()))
            .build(),
    );

    // `KASAL_BENCH_LOOP=<client>:<n>`: only n calls of that client, then exit (for instruction
    // counts under callgrind: the difference between two n gives the cost of one call).
    if let Ok(spec) = std::env::var("KASAL_BENCH_LOOP") {
        let (name, n) = spec.split_once(':').expect("KASAL_BENCH_LOOP=<client>:<n>");
        let n: usize = n.parse().expect("a count");
        let client = match name {
            "plain" => &plain,
            "middleware" => &middleware,
            "reqwest_tracing" => &peer,
            "kasal" => &ours,
            "kasal_without_retry" => &ours_without_retry,
            other => panic!("unknown client {other}"),
        };
        rt.block_on(async {
            for _ in 0..n {
                black_box(call(client, &url).await);
            }
        });
        rt.block_on(telemetry.shutdown());
        return;
    }
    bench(c, &rt, "plain", &plain, &url);
    bench(c, &rt, "middleware", &middleware, &url);
    bench(c, &rt, "reqwest_tracing", &peer, &url);
    bench(c, &rt, "kasal", &ours, &url);

    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "--profile-time") {
        interleaved(
            &rt,
            &[
                ("plain", &plain),
                ("middleware", &middleware),
                ("reqwest_tracing", &peer),
                ("kasal", &ours),
                ("kasal_without_retry", &ours_without_retry),
            ],
            &url,
        );
    }
    let stats = rt.block_on(telemetry.shutdown());
    assert_eq!(stats.dropped, 0, "{stats:?}");
    println!(
        "pipeline: accepted {} dropped {}",
        stats.accepted, stats.dropped
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = reqwest_bench
}
criterion_main!(benches);
