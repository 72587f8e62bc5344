//! Issue 3, benchmark (b): `record` throughput.
//!
//! 1,000,000 plain records (no operation id) from 2 producer threads into `Telemetry` at its
//! default settings, side by side with OpenTelemetry's `BatchLogProcessor` (default settings,
//! `SdkLoggerProvider` + a counting no-op `LogExporter`) fed the same number of log records
//! carrying the same fields from 2 threads. Timed: from the producers' start until both return
//! (flush and shutdown are not timed). Reported: accepted/s and dropped for both, and the ratio.
//!
//! Run: `cargo bench --bench pipeline -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::future::ready;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::uri::Authority;
use http::{Method, StatusCode};
use kasal_telemetry::trace::{CallRecord, Direction};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{Batch, Telemetry};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLoggerProvider};

const RECORDS: usize = 1_000_000;
const PRODUCERS: usize = 2;
const ROUTES: [&str; 4] = [
    "/api/2.0/serving-endpoints/{name}/invocations",
    "/api/2.0/vector-search/indexes/{index}/query",
    "/api/2.0/sql/statements",
    "/api/2.1/jobs/runs/get",
];
const HOST: &str = "adb-1234567890123456.7.azuredatabricks.net";

/// One measured run.
#[derive(Clone, Copy, Debug)]
struct Run {
    elapsed: Duration,
    accepted: u64,
    dropped: u64,
}

impl Run {
    fn accepted_per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

/// Each producer's own records (its own `Arc`s: no refcount shared across threads).
fn templates(latency_ms: u64) -> Vec<CallRecord> {
    ROUTES
        .iter()
        .map(|route| {
            let mut record = CallRecord::new(
                Direction::Client,
                Product::VectorSearch,
                Method::POST,
                SystemTime::now(),
            );
            record.host = Some(Authority::from_static(HOST));
            record.route = Some(Arc::from(*route));
            record.status = Some(StatusCode::OK);
            record.latency = Duration::from_millis(latency_ms);
            record.response_bytes = 2_048;
            record.caller_id = Some(Arc::from("service-principal-1"));
            record
        })
        .collect()
}

/// Runs `produce(thread)` on `PRODUCERS` threads started together; returns the wall time.
fn produce(produce: impl Fn(usize) + Sync) -> Duration {
    let barrier = Barrier::new(PRODUCERS + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|thread| {
                let barrier = &barrier;
                let produce = &produce;
                scope.spawn(move || {
                    barrier.wait();
                    produce(thread);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for handle in handles {
            handle.join().unwrap();
        }
        start.elapsed()
    })
}

fn run_ours(runtime: &tokio::runtime::Runtime) -> Run {
    let exported = Arc::new(AtomicU64::new(0));
    let counted = exported.clone();
    let exporter = tower::service_fn(move |batch: Batch| {
        counted.fetch_add(batch.calls(), Relaxed);
        ready(Ok::<(), Infallible>(()))
    });
    let telemetry = {
        let _entered = runtime.enter();
        Telemetry::builder().exporter(exporter).ignore_env().build()
    };
    let elapsed = produce(|thread| {
        let records = templates(5 + thread as u64);
        for i in 0..RECORDS / PRODUCERS {
            telemetry.record(records[i % records.len()].clone());
        }
    });
    let stats = runtime.block_on(telemetry.shutdown());
    assert_eq!(stats.accepted + stats.dropped, RECORDS as u64);
    assert_eq!(exported.load(Relaxed), stats.accepted, "exported calls");
    Run {
        elapsed,
        accepted: stats.accepted,
        dropped: stats.dropped,
    }
}

/// A `LogExporter` that only counts.
#[derive(Debug, Clone, Default)]
struct CountingLogExporter(Arc<AtomicU64>);

impl LogExporter for CountingLogExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        self.0.fetch_add(batch.iter().count() as u64, Relaxed);
        Ok(())
    }
}

fn run_otel() -> Run {
    let exporter = CountingLogExporter::default();
    let exported = exporter.0.clone();
    let provider = SdkLoggerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let logger = provider.logger("kasal-bench");
    let elapsed = produce(|thread| {
        let latency = 5 + thread as i64;
        for i in 0..RECORDS / PRODUCERS {
            // The same fields the CallRecord carries into the rollup key and counters.
            let mut record = logger.create_log_record();
            record.set_severity_number(Severity::Info);
            record.set_body(AnyValue::from("http.client.call"));
            record.add_attribute("kasal.product", "vectorsearch");
            record.add_attribute("http.request.method", "POST");
            record.add_attribute("server.address", HOST);
            record.add_attribute("url.template", ROUTES[i % ROUTES.len()]);
            record.add_attribute("http.response.status_code", 200_i64);
            record.add_attribute("kasal.outcome", "success");
            record.add_attribute("duration_ms", latency);
            logger.emit(record);
        }
    });
    let _ = provider.shutdown();
    let accepted = exported.load(Relaxed);
    Run {
        elapsed,
        accepted,
        dropped: RECORDS as u64 - accepted,
    }
}

fn median(runs: &[Run]) -> Run {
    let mut runs = runs.to_vec();
    runs.sort_by(|a, b| a.accepted_per_sec().total_cmp(&b.accepted_per_sec()));
    runs[runs.len() / 2]
}

fn record_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ours = Mutex::new(Vec::new());
    let otel = Mutex::new(Vec::new());
    let mut group = c.benchmark_group("record_1M_plain_2_threads");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    group.bench_function("kasal_telemetry", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let run = run_ours(&runtime);
                    ours.lock().unwrap().push(run);
                    run.elapsed
                })
                .sum()
        })
    });
    group.bench_function("otel_batch_log_processor", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let run = run_otel();
                    otel.lock().unwrap().push(run);
                    run.elapsed
                })
                .sum()
        })
    });
    group.finish();

    let ours = ours.into_inner().unwrap();
    let otel = otel.into_inner().unwrap();
    let (o, t) = (median(&ours), median(&otel));
    let ours_dropped: u64 = ours.iter().map(|run| run.dropped).sum();
    let otel_dropped: u64 = otel.iter().map(|run| run.dropped).sum();
    println!("\n(b) record throughput, {RECORDS} plain records from {PRODUCERS} threads, medians:");
    println!(
        "  kasal Telemetry (defaults):   {:>7.2} M accepted/s, {:>7} dropped/run (max {} over {} runs)",
        o.accepted_per_sec() / 1e6,
        o.dropped,
        ours.iter().map(|run| run.dropped).max().unwrap_or(0),
        ours.len(),
    );
    println!(
        "  OTel BatchLogProcessor:       {:>7.2} M accepted/s, {:>7} dropped/run (mean {} over {} runs)",
        t.accepted_per_sec() / 1e6,
        t.dropped,
        otel_dropped / otel.len().max(1) as u64,
        otel.len(),
    );
    println!(
        "  ratio (accepted/s, ours / OTel): {:.1}x; total dropped: ours {ours_dropped}, OTel {otel_dropped}",
        o.accepted_per_sec() / t.accepted_per_sec()
    );
}

criterion_group!(benches, record_throughput);
criterion_main!(benches);
