//! Issue 3, benchmark (c): peak memory with a stalled exporter.
//!
//! 1,000,000 calls spread over 100,000 operation ids (call `i` belongs to operation
//! `i % 100_000`), each failing with its own 1 KB error message (every tenth terminal, the rest
//! retryable), recorded into `Telemetry` at its default settings while the exporter is stalled
//! for the whole run (shutdown included). A counting global allocator tracks the bytes live;
//! reported: the peak above the baseline taken just before the first call. Target < 10 MiB.
//!
//! Run: `cargo bench --bench memory`
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::uri::Authority;
use http::{Method, StatusCode};
use kasal_telemetry::classify::{Outcome, Reason};
use kasal_telemetry::trace::{CallRecord, Direction, OperationId};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{InMemoryExporter, Telemetry};

use common::{peak_above, reset_peak};

#[global_allocator]
static GLOBAL: common::CountingAllocator = common::CountingAllocator;

const CALLS: usize = 1_000_000;
const OPERATIONS: usize = 100_000;
const MESSAGE_BYTES: usize = 1_024;
const LIMIT: usize = 10 << 20;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn failing_call(i: usize, filler: &str) -> CallRecord {
    let op = i % OPERATIONS;
    let terminal = i % 10 == 9;
    let status = if terminal {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // The layer allocates each redacted message; so do we, 1 KB each.
    let head = format!("statement op-{op} call {i} failed: ");
    let message: String = head
        .chars()
        .chain(filler.chars())
        .take(MESSAGE_BYTES)
        .collect();
    let mut record = CallRecord::new(
        Direction::Client,
        Product::Jobs,
        Method::POST,
        SystemTime::now(),
    );
    record.host = Some(Authority::from_static("adb-1.azuredatabricks.net"));
    record.status = Some(status);
    record.outcome = if terminal {
        Outcome::Terminal {
            reason: Reason::Status(status),
        }
    } else {
        Outcome::Retryable {
            reason: Reason::Status(status),
            retry_after: None,
        }
    };
    record.latency = Duration::from_millis(30);
    record.operation_id = Some(OperationId::new(format!("op-{op}")));
    record.error = Some(Arc::from(message));
    record
}

/// One run at default settings; returns the peak bytes above the baseline.
fn run(runtime: &tokio::runtime::Runtime, paced: bool) -> usize {
    let exporter = InMemoryExporter::paused();
    let telemetry = {
        let _entered = runtime.enter();
        Telemetry::builder()
            .exporter(exporter.clone())
            .ignore_env()
            .build()
    };
    let filler = "x".repeat(MESSAGE_BYTES);
    // Let the aggregator task start and settle before the baseline.
    runtime.block_on(tokio::task::yield_now());
    let baseline = reset_peak();

    let start = Instant::now();
    for i in 0..CALLS {
        telemetry.record(failing_call(i, &filler));
        if paced && i % 100 == 99 {
            // Give the aggregator (on the runtime's worker) a chance, as real traffic would.
            std::thread::yield_now();
        }
    }
    let recorded = start.elapsed();
    let peak_before_shutdown = peak_above(baseline);
    let stats = runtime.block_on(telemetry.shutdown());
    let peak = peak_above(baseline);
    drop(telemetry);

    println!(
        "  {}: recorded in {:.2} s; peak above baseline {:.2} MiB ({peak} B), before shutdown {:.2} MiB",
        if paced {
            "paced (yield every 100 calls)"
        } else {
            "burst (no yield)            "
        },
        recorded.as_secs_f64(),
        mib(peak),
        mib(peak_before_shutdown),
    );
    println!(
        "    accepted {}, dropped {}, evicted {}, errors_dropped {}, export_failures {}, export_dropped {}, exported {} (batches seen by exporter: {})",
        stats.accepted,
        stats.dropped,
        stats.operations_evicted,
        stats.errors_dropped,
        stats.export_failures,
        stats.export_dropped,
        stats.exported,
        exporter.batch_count(),
    );
    assert_eq!(stats.accepted + stats.dropped, CALLS as u64);
    peak
}

/// The hardening issue's case: 2,048 records carrying 256 KiB errors, then 100,000
/// operations with 4 KiB ids, recorded through the public API with the exporter stalled.
/// Returns the peak bytes above the baseline.
fn oversized(runtime: &tokio::runtime::Runtime) -> usize {
    let exporter = InMemoryExporter::paused();
    let telemetry = {
        let _entered = runtime.enter();
        Telemetry::builder()
            .exporter(exporter.clone())
            .ignore_env()
            .build()
    };
    let filler = "x".repeat(MESSAGE_BYTES);
    let huge: Arc<str> = Arc::from("e".repeat(256 * 1024));
    let long_id = "i".repeat(4096);
    runtime.block_on(tokio::task::yield_now());
    let baseline = reset_peak();
    for i in 0..2048 {
        let mut record = failing_call(i, &filler);
        // The caller's 256 KiB allocation is shared, not counted as the pipeline's.
        record.error = Some(huge.clone());
        telemetry.record(record);
    }
    for i in 0..100_000 {
        let mut record = failing_call(i, &filler);
        record.operation_id = Some(OperationId::new(format!("{long_id}{i}")));
        telemetry.record(record);
        if i % 100 == 99 {
            std::thread::yield_now();
        }
    }
    let before_shutdown = peak_above(baseline);
    runtime.block_on(telemetry.shutdown());
    let peak = peak_above(baseline);
    drop(telemetry);
    println!(
        "  2,048 x 256 KiB errors + 100,000 x 4 KiB ids: peak above baseline {:.2} MiB, before shutdown {:.2} MiB",
        mib(peak),
        mib(before_shutdown)
    );
    peak
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!("(c) peak memory, exporter stalled for the whole run, default settings:");
    println!(
        "  {CALLS} calls over {OPERATIONS} operation ids, a distinct {MESSAGE_BYTES} B error each"
    );
    let peak = run(&runtime, true).max(run(&runtime, false));
    println!("(d) oversized input through the public API, exporter stalled:");
    let peak = peak.max(oversized(&runtime));
    println!(
        "  worst peak {:.2} MiB, limit {:.0} MiB -> {}",
        mib(peak),
        mib(LIMIT),
        if peak < LIMIT { "PASS" } else { "FAIL" }
    );
    drop(runtime);
    if peak >= LIMIT {
        std::process::exit(1);
    }
}
