//! The telemetry pipeline end to end: records in, batches out through `InMemoryExporter` and
//! `JsonLinesExporter`. Records are built directly (the layers that build them have their own
//! tests); synchronisation is by `flush`, `shutdown` and `InMemoryExporter::wait_for_batches`.

#[path = "common/spans.rs"]
mod spans;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::Authority;
use http::{Method, StatusCode};
use kasal_telemetry::classify::{Outcome, Reason};
use kasal_telemetry::trace::{CallRecord, Direction, ExecutionMode, OperationId};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{InMemoryExporter, JsonLinesExporter, Telemetry, TelemetryBuilder};
use tokio::time::{Instant, timeout};

fn builder(exporter: &InMemoryExporter) -> TelemetryBuilder {
    Telemetry::builder().exporter(exporter.clone()).ignore_env()
}

fn call(route: &str, status: u16, latency_ms: u64) -> CallRecord {
    let status = StatusCode::from_u16(status).unwrap();
    let outcome = match status.as_u16() {
        100..=399 => Outcome::Success,
        429 | 500 | 502 | 503 | 504 => Outcome::Retryable {
            reason: Reason::Status(status),
            retry_after: None,
        },
        _ => Outcome::Terminal {
            reason: Reason::Status(status),
        },
    };
    let mut record = CallRecord::new(
        Direction::Client,
        Product::VectorSearch,
        Method::POST,
        SystemTime::now(),
    );
    record.host = Some(Authority::from_static("adb-1.azuredatabricks.net"));
    record.route = Some(Arc::from(route));
    record.status = Some(status);
    record.outcome = outcome;
    record.latency = Duration::from_millis(latency_ms);
    record.response_bytes = 10;
    record.mode = ExecutionMode::User;
    record.caller_id = Some(Arc::from("alice@example.com"));
    record
}

fn op_call(op: &str, status: u16, error: Option<&str>) -> CallRecord {
    let mut record = call("/api/2.0/sql/statements", status, 20);
    record.operation_id = Some(OperationId::new(op));
    record.error = error.map(Arc::from);
    record
}

#[tokio::test]
async fn plain_calls_roll_up_to_exact_counts() {
    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter).build();
    let routes = ["/a", "/b", "/c"];
    for i in 0..3_000 {
        telemetry.record(call(routes[i % 3], if i % 10 == 0 { 503 } else { 200 }, 7));
    }
    telemetry.flush().await;
    let rollups = exporter.rollups();
    // 3 routes x (200 success, 503 retryable).
    assert_eq!(rollups.len(), 6);
    assert_eq!(rollups.iter().map(|r| r.count).sum::<u64>(), 3_000);
    let a_ok = rollups
        .iter()
        .find(|r| r.key.route.as_deref() == Some("/a") && r.key.status_class == 2)
        .unwrap();
    assert_eq!(a_ok.key.outcome, "success");
    assert_eq!(a_ok.key.product, Product::VectorSearch);
    assert_eq!(a_ok.count, 900);
    assert_eq!(a_ok.latency_sum, Duration::from_millis(7 * 900));
    assert_eq!(a_ok.latency_min, Duration::from_millis(7));
    assert_eq!(a_ok.histogram[1], 900); // 5 < 7 ms <= 10
    let stats = telemetry.stats();
    assert_eq!((stats.accepted, stats.dropped), (3_000, 0));
    assert_eq!(stats.exported, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_calls_from_threads_are_all_exported() {
    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter)
        .flush_interval(Duration::from_millis(5))
        .build();
    let producers: Vec<_> = (0..3)
        .map(|t| {
            let telemetry = telemetry.clone();
            std::thread::spawn(move || {
                for i in 0..50_000 {
                    telemetry.record(call(["/x", "/y"][(i + t) % 2], 200, (i % 50) as u64));
                }
            })
        })
        .collect();
    // Windows close and flushes happen while the producers run.
    while producers.iter().any(|p| !p.is_finished()) {
        telemetry.flush().await;
    }
    for producer in producers {
        producer.join().unwrap();
    }
    telemetry.flush().await;
    assert_eq!(exporter.total_calls(), 150_000);
    let stats = telemetry.stats();
    assert_eq!((stats.accepted, stats.dropped), (150_000, 0));
}

#[tokio::test]
async fn operation_folds_into_one_summary_on_complete() {
    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter).build();
    let id = OperationId::new("stmt-1");
    let mut retried = op_call("stmt-1", 200, None);
    retried.attempts = 3;
    retried.latency = Duration::from_millis(90);
    retried.response_bytes = 1_000;
    telemetry.record(op_call("stmt-1", 503, Some("warehouse starting")));
    telemetry.record(op_call("stmt-1", 503, Some("warehouse starting")));
    telemetry.record(op_call("stmt-1", 429, Some("slow down")));
    telemetry.record(retried);
    telemetry.flush().await;
    assert!(
        exporter.operations().is_empty(),
        "emitted before completion"
    );
    telemetry.complete_operation(&id);
    telemetry.flush().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1);
    let op = &operations[0];
    assert_eq!(op.operation_id, id);
    assert!(op.complete);
    assert_eq!(op.calls, 4);
    assert_eq!(op.retries, 2);
    assert_eq!(op.latency_sum, Duration::from_millis(20 * 3 + 90));
    assert_eq!(op.latency_max, Duration::from_millis(90));
    assert_eq!(op.bytes, 30 + 1_000);
    assert_eq!(
        (
            op.outcomes.success,
            op.outcomes.retryable,
            op.outcomes.terminal
        ),
        (1, 3, 0)
    );
    let errors: Vec<_> = op
        .errors
        .iter()
        .map(|e| (&*e.error_type, &*e.message, e.count))
        .collect();
    assert_eq!(
        errors,
        [("503", "warehouse starting", 2), ("429", "slow down", 1)]
    );
    assert_eq!(op.mode, ExecutionMode::User);
    assert_eq!(op.caller_id.as_deref(), Some("alice@example.com"));
    assert!(
        exporter.rollups().is_empty(),
        "operation calls are not rolled up"
    );
}

#[tokio::test]
async fn terminal_error_is_exported_without_flush() {
    let exporter = InMemoryExporter::new();
    // A long interval: only the terminal error can trigger the export.
    let telemetry = builder(&exporter)
        .flush_interval(Duration::from_secs(3600))
        .build();
    telemetry.record(op_call("waits", 503, Some("retry me")));
    telemetry.record(op_call("fails", 503, Some("first try")));
    telemetry.record(op_call("fails", 403, Some("forbidden")));
    let start = Instant::now();
    timeout(Duration::from_millis(100), exporter.wait_for_batches(1))
        .await
        .expect("terminal error exported within 100 ms");
    assert!(start.elapsed() < Duration::from_millis(100));
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1, "the retryable operation waits");
    assert_eq!(operations[0].operation_id.as_str(), "fails");
    assert!(operations[0].complete);
    assert_eq!(operations[0].outcomes.terminal, 1);
    assert_eq!(operations[0].errors.len(), 2);

    // A plain terminal call is exported the same way.
    telemetry.record(call("/plain", 404, 3));
    timeout(Duration::from_millis(100), exporter.wait_for_batches(2))
        .await
        .expect("plain terminal call exported within 100 ms");
    let rollups = exporter.rollups();
    assert_eq!(rollups.len(), 1);
    assert_eq!(rollups[0].key.outcome, "terminal");

    // The retryable operation is exported on completion only.
    telemetry.flush().await;
    assert_eq!(exporter.operations().len(), 1);
    telemetry.complete_operation(&OperationId::new("waits"));
    telemetry.flush().await;
    assert_eq!(exporter.operations().len(), 2);
}

#[tokio::test]
async fn batch_size_and_interval_trigger_exports() {
    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter)
        .batch_size(3)
        .flush_interval(Duration::from_secs(3600))
        .build();
    for op in ["a", "b", "c"] {
        telemetry.record(op_call(op, 200, None));
        telemetry.complete_operation(&OperationId::new(op));
    }
    timeout(Duration::from_secs(2), exporter.wait_for_batches(1))
        .await
        .expect("a full batch is exported");
    assert_eq!(exporter.batches()[0].operations.len(), 3);

    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter)
        .flush_interval(Duration::from_millis(20))
        .build();
    telemetry.record(call("/tick", 200, 1));
    timeout(Duration::from_secs(2), exporter.wait_for_batches(1))
        .await
        .expect("the interval exports the window");
    assert_eq!(exporter.total_calls(), 1);
}

#[tokio::test]
async fn shutdown_exports_everything_accepted() {
    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter).build();
    for i in 0..100 {
        telemetry.record(call("/plain", 200, 1));
        telemetry.record(op_call(&format!("op-{}", i % 10), 200, None));
    }
    telemetry.complete_operation(&OperationId::new("op-0"));
    let stats = telemetry.shutdown().await;
    assert_eq!(stats.accepted, 200);
    assert_eq!(stats.dropped, 0);
    assert_eq!(exporter.total_calls(), 200);
    let operations = exporter.operations();
    assert_eq!(operations.len(), 10);
    assert_eq!(operations.iter().filter(|op| op.complete).count(), 1);
    assert_eq!(stats.exported, 11);
    assert_eq!((stats.export_failures, stats.export_dropped), (0, 0));

    // Later records are dropped and counted; flush and shutdown return at once.
    telemetry.record(call("/late", 200, 1));
    telemetry.record(op_call("late", 200, None));
    telemetry.flush().await;
    let again = telemetry.shutdown().await;
    assert_eq!((again.accepted, again.dropped), (200, 2));
}

#[tokio::test]
async fn shutdown_meets_its_deadline_with_a_stalled_exporter() {
    let exporter = InMemoryExporter::paused();
    let deadline = Duration::from_millis(200);
    let telemetry = builder(&exporter)
        .batch_size(1)
        .shutdown_deadline(deadline)
        .build();
    for i in 0..5 {
        telemetry.record(op_call(&format!("op-{i}"), 200, None));
    }
    telemetry.record(call("/plain", 200, 1));
    let start = Instant::now();
    let stats = telemetry.shutdown().await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= deadline - Duration::from_millis(5),
        "{elapsed:?}"
    );
    assert!(
        elapsed < deadline + Duration::from_millis(150),
        "{elapsed:?}"
    );
    assert_eq!(stats.accepted, 6);
    // Nothing got through: one call timed out, the rest was dropped at the deadline.
    assert_eq!(stats.exported, 0);
    assert_eq!(stats.export_failures, 1);
    assert_eq!(stats.export_dropped, 5);
    assert_eq!(exporter.batch_count(), 0);
}

#[tokio::test]
async fn shutdown_meets_its_deadline_with_an_export_already_in_flight() {
    // An exporter that never answers, and says when it was called.
    let (called, mut calls) = tokio::sync::mpsc::unbounded_channel();
    let exporter = tower::service_fn(move |_: kasal_telemetry::Batch| {
        let _ = called.send(());
        std::future::pending::<Result<(), std::convert::Infallible>>()
    });
    let deadline = Duration::from_millis(200);
    let telemetry = Telemetry::builder()
        .exporter(exporter)
        .ignore_env()
        .shutdown_deadline(deadline)
        // Far longer than the deadline: shutdown must not wait it out.
        .export_timeout(Duration::from_secs(30))
        .build();
    // A terminal call is exported at once: the exporter is busy before shutdown starts.
    telemetry.record(call("/plain", 404, 3));
    calls.recv().await.expect("the export started");
    let start = Instant::now();
    let stats = timeout(Duration::from_secs(5), telemetry.shutdown())
        .await
        .expect("shutdown returned");
    let elapsed = start.elapsed();
    assert!(
        elapsed < deadline + Duration::from_millis(150),
        "{elapsed:?}"
    );
    assert_eq!(stats.export_failures, 1);
    assert_eq!(stats.exported, 0);
}

#[tokio::test]
async fn full_queue_drops_exactly_what_was_lost() {
    let exporter = InMemoryExporter::paused();
    let telemetry = builder(&exporter).queue_capacity(4).build();
    // The aggregator cannot run while this (single-threaded) test loops: the queue fills.
    let offered = 1_000;
    let start = std::time::Instant::now();
    for i in 0..offered {
        telemetry.record(op_call(&format!("op-{}", i % 7), 200, None));
    }
    let per_record = start.elapsed() / offered;
    assert!(per_record < Duration::from_millis(1), "{per_record:?}");
    let stats = telemetry.stats();
    assert_eq!(stats.accepted, 4);
    assert_eq!(stats.accepted + stats.dropped, u64::from(offered));

    // What was accepted is exported once the exporter recovers.
    exporter.resume();
    let stats = telemetry.shutdown().await;
    assert_eq!(stats.accepted + stats.dropped, u64::from(offered));
    assert_eq!(exporter.total_calls(), stats.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_accounting_holds_across_threads() {
    let exporter = InMemoryExporter::paused();
    let telemetry = builder(&exporter).queue_capacity(8).build();
    let producers: Vec<_> = (0..2)
        .map(|t| {
            let telemetry = telemetry.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    telemetry.record(op_call(&format!("op-{t}-{}", i % 100), 200, None));
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    exporter.resume();
    let stats = telemetry.shutdown().await;
    assert_eq!(stats.accepted + stats.dropped, 40_000);
    assert_eq!(exporter.total_calls(), stats.accepted);
}

#[tokio::test]
async fn errors_are_deduplicated_and_capped_per_operation() {
    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter).build();
    for _ in 0..2 {
        for i in 0..60 {
            telemetry.record(op_call("noisy", 503, Some(&format!("error {i}"))));
        }
    }
    // Longer than the 2048-char cap.
    telemetry.record(op_call("long", 503, Some(&"é".repeat(5_000))));
    telemetry.complete_operation(&OperationId::new("noisy"));
    telemetry.complete_operation(&OperationId::new("long"));
    let stats = telemetry.shutdown().await;
    let operations = exporter.operations();
    let noisy = operations
        .iter()
        .find(|op| op.operation_id.as_str() == "noisy")
        .unwrap();
    assert_eq!(noisy.calls, 120);
    assert_eq!(noisy.errors.len(), 50);
    assert!(noisy.errors.iter().all(|e| e.count == 2));
    assert_eq!(noisy.errors_dropped, 20);
    let long = operations
        .iter()
        .find(|op| op.operation_id.as_str() == "long")
        .unwrap();
    // Cut by `record` to 2048 bytes (the pipeline is bounded in bytes), on a char boundary.
    assert_eq!(long.errors[0].message.len(), 2048);
    assert_eq!(long.errors[0].message.chars().count(), 1024);
    assert_eq!(stats.errors_dropped, 20);
}

#[tokio::test]
async fn retained_error_text_stays_under_its_byte_bound() {
    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter).build();
    let message = "x".repeat(4_000);
    // 12 pending operations x 50 distinct messages x 2048 chars would be ~1.2 MB.
    for op in 0..12 {
        for i in 0..50 {
            let text = format!("{i:02}{message}");
            telemetry.record(op_call(&format!("op-{op}"), 500, Some(&text)));
        }
    }
    for op in 0..12 {
        telemetry.complete_operation(&OperationId::new(format!("op-{op}")));
    }
    let stats = telemetry.shutdown().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 12);
    let text: usize = operations
        .iter()
        .flat_map(|op| &op.errors)
        .map(|e| e.error_type.len() + e.message.len())
        .sum();
    assert!(text <= 1 << 20, "{text}");
    assert!(text > (1 << 20) - 2_100, "{text}");
    let kept: u64 = operations.iter().map(|op| op.errors.len() as u64).sum();
    assert_eq!(kept + stats.errors_dropped, 600);
    assert!(operations[11].errors_dropped > 0);
}

#[tokio::test]
async fn oldest_operation_is_evicted_with_its_errors() {
    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter).max_pending_operations(2).build();
    telemetry.record(op_call("a", 503, Some("a failed")));
    telemetry.record(op_call("b", 200, None));
    telemetry.record(op_call("c", 200, None));
    telemetry.flush().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1);
    assert_eq!(operations[0].operation_id.as_str(), "a");
    assert!(!operations[0].complete);
    assert_eq!(&*operations[0].errors[0].message, "a failed");
    assert_eq!(telemetry.stats().operations_evicted, 1);
}

#[tokio::test]
async fn operation_expires_after_ttl() {
    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter)
        .operation_ttl(Duration::from_millis(30))
        .flush_interval(Duration::from_millis(60))
        .build();
    telemetry.record(op_call("slow", 503, Some("still waiting")));
    timeout(Duration::from_secs(2), exporter.wait_for_batches(1))
        .await
        .expect("the expired operation is exported");
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1);
    assert!(!operations[0].complete);
    assert_eq!(operations[0].errors.len(), 1);
    assert_eq!(telemetry.stats().operations_expired, 1);
    // Completing it later is a no-op.
    telemetry.complete_operation(&OperationId::new("slow"));
    telemetry.flush().await;
    assert_eq!(exporter.operations().len(), 1);
}

#[tokio::test]
async fn stalled_exporter_backlog_is_bounded() {
    let exporter = InMemoryExporter::paused();
    let telemetry = builder(&exporter)
        .batch_size(10)
        .max_export_backlog_bytes(64 * 1024)
        .export_timeout(Duration::from_millis(50))
        .build();
    let message = "e".repeat(1_000);
    for i in 0..2_000 {
        // Terminal: each operation is emitted at once.
        telemetry.record(op_call(&format!("op-{i}"), 403, Some(&message)));
    }
    // Returns once every batch was tried (and timed out) or dropped from the backlog.
    telemetry.flush().await;
    let stats = telemetry.stats();
    assert_eq!(stats.accepted, 2_000);
    assert_eq!((stats.exported, exporter.batch_count()), (0, 0));
    // Only a few batches were attempted: the rest was dropped from the bounded backlog, not
    // queued behind the stalled exporter. How many depends on how fast the aggregator drains
    // the queue against the 50 ms timeouts, so on the machine's load: 8 or 9 on a busy 2-core
    // machine, and once more than 20; the bound is a quarter of the 200 batches.
    assert!((1..=50).contains(&stats.export_failures), "{stats:?}");
    assert!(
        stats.export_dropped >= 2_000 - 10 * stats.export_failures,
        "{stats:?}"
    );

    // Once the exporter recovers, new items flow again.
    exporter.resume();
    telemetry.record(op_call("after", 403, Some("late")));
    telemetry.flush().await;
    assert_eq!(
        exporter.operations().last().unwrap().operation_id.as_str(),
        "after"
    );
}

#[tokio::test]
async fn dropping_every_handle_flushes() {
    let exporter = InMemoryExporter::new();
    let telemetry = builder(&exporter).build();
    let clone = telemetry.clone();
    telemetry.record(call("/a", 200, 1));
    clone.record(op_call("op", 200, None));
    drop(telemetry);
    drop(clone);
    timeout(Duration::from_secs(2), exporter.wait_for_batches(1))
        .await
        .expect("exported when the last handle drops");
    assert_eq!(exporter.total_calls(), 2);
}

#[tokio::test]
async fn disabled_handle_does_nothing() {
    let telemetry = Telemetry::disabled();
    assert!(!telemetry.is_enabled());
    telemetry.record(call("/a", 200, 1));
    telemetry.complete_operation(&OperationId::new("x"));
    telemetry.flush().await;
    assert_eq!(telemetry.shutdown().await, Default::default());
}

#[tokio::test]
async fn json_lines_exporter_writes_one_object_per_item() {
    let path = std::env::temp_dir().join(format!("kasal-{}.jsonl", uuid::Uuid::new_v4()));
    let telemetry = Telemetry::builder()
        .exporter(JsonLinesExporter::file(&path).unwrap())
        .ignore_env()
        .build();
    telemetry.record(call("/api/2.0/serving-endpoints/{name}", 200, 12));
    telemetry.record(op_call("stmt-9", 503, Some("busy \"quoted\"\nnewline")));
    telemetry.complete_operation(&OperationId::new("stmt-9"));
    telemetry.shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let op = lines.iter().find(|l| l["kind"] == "operation").unwrap();
    assert_eq!(op["operation_id"], "stmt-9");
    assert_eq!(op["product"], "vectorsearch");
    assert_eq!(op["execution_context"], "user");
    assert_eq!(op["complete"], true);
    assert_eq!(op["calls"], 1);
    assert_eq!(op["outcomes"]["retryable"], 1);
    assert_eq!(op["errors"][0]["error_type"], "503");
    assert_eq!(op["errors"][0]["message"], "busy \"quoted\"\nnewline");
    assert_eq!(op["latency_sum_ms"], 20.0);
    let rollup = lines.iter().find(|l| l["kind"] == "rollup").unwrap();
    assert_eq!(rollup["route"], "/api/2.0/serving-endpoints/{name}");
    assert_eq!(rollup["host"], "adb-1.azuredatabricks.net");
    assert_eq!(rollup["method"], "POST");
    assert_eq!(rollup["direction"], "client");
    assert_eq!(rollup["status_class"], 2);
    assert_eq!(rollup["outcome"], "success");
    assert_eq!(rollup["count"], 1);
    assert_eq!(rollup["latency_max_ms"], 12.0);
    assert_eq!(rollup["histogram"].as_array().unwrap().len(), 15);
    assert_eq!(rollup["histogram_bounds_ms"][0], 5);
}

#[tokio::test]
async fn flush_with_a_stalled_exporter_returns_at_its_deadline_with_the_stats() {
    let exporter = InMemoryExporter::paused();
    let deadline = Duration::from_millis(200);
    let telemetry = builder(&exporter)
        .flush_deadline(deadline)
        .shutdown_deadline(Duration::from_secs(60))
        .build();
    for i in 0..1000 {
        telemetry.record(op_call(&format!("op-{i}"), 404, Some("gone")));
    }
    let start = Instant::now();
    let stats = telemetry.flush().await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= deadline - Duration::from_millis(5),
        "{elapsed:?}"
    );
    assert!(
        elapsed < deadline + Duration::from_millis(150),
        "{elapsed:?}"
    );
    assert_eq!((stats.accepted, stats.exported), (1000, 0));

    // Once the exporter moves, the same flush call completes the work and tells so.
    exporter.resume();
    let stats = timeout(Duration::from_secs(5), async {
        loop {
            let stats = telemetry.flush().await;
            if stats.exported == 1000 {
                return stats;
            }
        }
    })
    .await
    .expect("everything exported once the exporter resumed");
    assert_eq!((stats.export_failures, stats.skipped), (0, 0));
}

/// An exporter answering each call with the next of `answers` (then `Ok`), as an exporter
/// that skips or delivers in part would.
fn scripted_exporter(
    answers: Vec<Result<(), kasal_telemetry::export::Undelivered>>,
) -> impl tower::Service<
    kasal_telemetry::Batch,
    Response = (),
    Error = kasal_telemetry::BoxError,
    Future = impl Send + 'static,
> + Send
+ 'static {
    let answers = Arc::new(std::sync::Mutex::new(answers.into_iter()));
    tower::service_fn(move |_: kasal_telemetry::Batch| {
        let answer = answers.lock().unwrap().next().unwrap_or(Ok(()));
        async move { answer.map_err(kasal_telemetry::BoxError::from) }
    })
}

#[tokio::test]
async fn skipped_and_partly_delivered_batches_are_never_counted_as_exported() {
    use kasal_telemetry::export::{SkipReason, Undelivered};
    let telemetry = Telemetry::builder()
        .exporter(scripted_exporter(vec![
            Err(Undelivered::Skipped(SkipReason::FlagOff)),
            Err(Undelivered::Skipped(SkipReason::FlagUnknown)),
            Err(Undelivered::Partial {
                delivered: 1,
                rejected: 1,
                not_supported: 1,
            }),
        ]))
        .ignore_env()
        .build();
    let round = |n: usize| {
        for i in 0..2 {
            let op = format!("{n}-{i}");
            telemetry.record(op_call(&op, 200, None));
            telemetry.complete_operation(&OperationId::new(op));
        }
        telemetry.record(call("/plain", 200, 1));
        telemetry.flush()
    };
    let stats = round(0).await;
    assert_eq!(
        (stats.exported, stats.skipped, stats.export_failures),
        (0, 3, 0)
    );
    assert_eq!(stats.skipped_by.flag_off, 3);
    let stats = round(1).await;
    assert_eq!((stats.exported, stats.skipped), (0, 6));
    assert_eq!(stats.skipped_by.flag_unknown, 3);
    let stats = round(2).await;
    assert_eq!(
        (
            stats.exported,
            stats.export_rejected,
            stats.skipped_by.not_supported
        ),
        (1, 1, 1)
    );
    assert_eq!((stats.batches, stats.export_failures), (1, 0));
    let stats = round(3).await;
    assert_eq!((stats.exported, stats.batches), (4, 2));
    assert_eq!(stats.skipped, stats.skipped_by.total());
}

#[test]
fn work_lost_to_a_dropped_runtime_is_counted() {
    let exporter = InMemoryExporter::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let telemetry = runtime.block_on(async {
        let telemetry = builder(&exporter).build();
        // Three operations pending and one window of plain calls (one rollup key), nothing
        // exported yet: the interval is 5 s away.
        for i in 0..3 {
            telemetry.record(op_call(&format!("op-{i}"), 200, None));
        }
        for _ in 0..5 {
            telemetry.record(call("/plain", 200, 1));
        }
        tokio::task::yield_now().await;
        telemetry
    });
    assert!(telemetry.is_enabled());
    drop(runtime);

    let stats = telemetry.stats();
    assert_eq!((stats.accepted, stats.dropped), (8, 0));
    assert_eq!(stats.lost, 4, "3 operations and 1 rollup: {stats:?}");
    assert_eq!(stats.exported, 0);
    assert_eq!(exporter.batch_count(), 0);

    // Later records are dropped and counted; shutdown returns at once.
    telemetry.record(call("/plain", 200, 1));
    telemetry.record(op_call("late", 200, None));
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stats = other.block_on(async {
        timeout(Duration::from_secs(2), telemetry.shutdown())
            .await
            .expect("shutdown returns at once")
    });
    assert_eq!((stats.accepted, stats.dropped, stats.lost), (8, 2, 4));
}

#[test]
fn try_build_outside_a_runtime_is_an_error_and_build_warns_once() {
    let error = builder(&InMemoryExporter::new()).try_build().unwrap_err();
    assert_eq!(error, kasal_telemetry::ConfigError::NoRuntime);
    let (dispatch, captured) = spans::SpanCapture::dispatch();
    let telemetry =
        tracing::dispatcher::with_default(&dispatch, || builder(&InMemoryExporter::new()).build());
    assert!(!telemetry.is_enabled());
    let warnings = captured.events_with_message("telemetry disabled");
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .field("error")
            .is_some_and(|e| e.contains("tokio runtime")),
        "{warnings:?}"
    );
}
