//! Bounds on every path into the pipeline, and parsers that never panic (the hardening issue).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;
use kasal_telemetry::classify::{Outcome, Reason, parse_retry_after};
use kasal_telemetry::trace::{CallRecord, Direction, ExecutionMode, OperationId, Route};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{InMemoryExporter, Telemetry, validate_host};
use proptest::prelude::*;

/// A terminal call (exported at once) carrying `error`, `route` and `caller_id` as given.
fn call(id: &OperationId, error: &str, route: &str, caller: &str) -> CallRecord {
    let status = http::StatusCode::FORBIDDEN;
    let mut record = CallRecord::new(
        Direction::Client,
        Product::Jobs,
        Method::GET,
        SystemTime::now(),
    );
    record.route = Some(Arc::from(route));
    record.status = Some(status);
    record.outcome = Outcome::Terminal {
        reason: Reason::Status(status),
    };
    record.latency = Duration::from_millis(1);
    record.mode = ExecutionMode::User;
    record.caller_id = Some(Arc::from(caller));
    record.operation_id = Some(id.clone());
    record.error = Some(Arc::from(error));
    record
}

#[tokio::test]
async fn record_bounds_every_text_field() {
    let exporter = InMemoryExporter::new();
    let telemetry = Telemetry::builder()
        .exporter(exporter.clone())
        .ignore_env()
        .build();
    let id = OperationId::new("op-".repeat(4096));
    assert!(id.as_str().len() <= OperationId::MAX_LEN);
    let error = "é".repeat(256 * 1024 / 2);
    telemetry.record(call(&id, &error, &"/r".repeat(4096), &"c".repeat(8192)));
    telemetry.flush().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1);
    let summary = &operations[0];
    assert!(summary.operation_id.as_str().len() <= OperationId::MAX_LEN);
    assert!(summary.caller_id.as_deref().unwrap().len() <= 256);
    let message = &summary.errors[0].message;
    assert!(message.len() <= kasal_telemetry::trace::MAX_REDACTED_LEN);
    assert!(message.starts_with("éé"));
    assert!(Route::new("/r".repeat(4096)).as_str().len() <= Route::MAX_LEN);
    telemetry.shutdown().await;
}

proptest! {
    #[test]
    fn retry_after_never_panics(value in any::<Vec<u8>>(), text in "\\PC{0,40}") {
        for bytes in [value, text.into_bytes()] {
            if let Ok(header) = http::HeaderValue::from_bytes(&bytes) {
                let _ = parse_retry_after(&header, SystemTime::now());
            }
        }
    }

    #[test]
    fn user_agent_parsing_never_panics(text in "\\PC{0,80}") {
        let _ = Product::from_user_agent(&text);
        let _ = text.parse::<Product>();
        let _ = kasal_telemetry::user_agent::UserAgent::new(Product::Jobs).with_extra(&text, &text);
    }

    #[test]
    fn validate_host_never_panics(text in "\\PC{0,60}", private in any::<bool>()) {
        let _ = validate_host(&text, private);
        let _ = validate_host(&format!("https://[{text}]"), private);
    }
}
