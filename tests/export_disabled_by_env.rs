//! `DATABRICKS_TELEMETRY_DISABLED` set: nothing is sent, nothing is counted as exported, every
//! batch is counted as skipped (`disabled_by_env`), and one WARN says so.
//!
//! Its own test binary with a single test, because the variable is process-wide: no other test
//! may run while it is set.

mod common;
#[path = "common/spans.rs"]
mod spans;

use std::time::{Duration, SystemTime};

use common::{Reply, TestServer};
use http::{Method, StatusCode};
use kasal_telemetry::credentials::StaticToken;
use kasal_telemetry::export::SkipReason;
use kasal_telemetry::export::databricks::DatabricksExporter;
use kasal_telemetry::trace::{CallRecord, Direction, OperationId};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{Batch, Telemetry};
use tower::ServiceExt;

/// One successful call of operation `op` (the only place this test builds a `CallRecord`).
fn op_call(op: &str) -> CallRecord {
    let mut record = CallRecord::new(
        Direction::Client,
        Product::Genie,
        Method::GET,
        SystemTime::now(),
    );
    record.status = Some(StatusCode::OK);
    record.latency = Duration::from_millis(5);
    record.response_bytes = 10;
    record.operation_id = Some(OperationId::new(op));
    record
}

fn warnings_for(captured: &spans::Captured, reason: SkipReason) -> usize {
    captured
        .events()
        .iter()
        .filter(|event| {
            event.field("reason").as_deref() == Some(reason.as_str())
                && event
                    .field("message")
                    .is_some_and(|m| m.starts_with("telemetry export"))
        })
        .count()
}

#[tokio::test]
async fn export_disabled_by_the_environment_is_counted_as_skipped() {
    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("DATABRICKS_TELEMETRY_DISABLED", "true") };
    let (dispatch, captured) = spans::SpanCapture::dispatch();
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let server = TestServer::start(|_, _| Reply::status(200)).await;
    let exporter = || {
        DatabricksExporter::builder(server.url(""))
            .allow_private_hosts(true)
            .force_enabled(true)
            .credentials(StaticToken::new("dapi0123456789abcdef").unwrap())
            .build()
            .unwrap()
    };

    // The pipeline: runs, never calls the exporter, counts every batch as skipped.
    let databricks = exporter();
    let telemetry = Telemetry::builder()
        .exporter(databricks.clone())
        .flush_interval(Duration::from_secs(3600))
        .build();
    assert!(telemetry.is_enabled());
    let mut stats = telemetry.stats();
    for round in 0..3 {
        for i in 0..2 {
            let op = format!("{round}-{i}");
            telemetry.record(op_call(&op));
            telemetry.complete_operation(&OperationId::new(op));
        }
        stats = telemetry.flush().await;
    }
    assert_eq!(server.hits(), 0, "nothing sent");
    assert_eq!(
        (stats.accepted, stats.exported, stats.export_failures),
        (6, 0, 0)
    );
    assert_eq!((stats.skipped, stats.skipped_by.disabled_by_env), (6, 6));
    assert_eq!(databricks.stats().skipped_disabled, 0, "never called");
    assert_eq!(warnings_for(&captured, SkipReason::DisabledByEnv), 1);

    // The exporter on its own (or under `ignore_env`) checks the same switch.
    captured.clear();
    let databricks = exporter();
    let telemetry = Telemetry::builder()
        .exporter(databricks.clone())
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
        .build();
    for round in 0..3 {
        let op = format!("ignored-env-{round}");
        telemetry.record(op_call(&op));
        telemetry.complete_operation(&OperationId::new(op));
        stats = telemetry.flush().await;
    }
    assert_eq!(server.hits(), 0, "nothing sent");
    assert_eq!((stats.exported, stats.skipped_by.disabled_by_env), (0, 3));
    assert_eq!(databricks.stats().skipped_disabled, 3);
    let direct = databricks.clone().oneshot(Batch::default()).await;
    assert!(direct.is_ok(), "an empty batch is nothing to skip");
    assert_eq!(warnings_for(&captured, SkipReason::DisabledByEnv), 1);
}
