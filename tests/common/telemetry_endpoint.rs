//! Helpers for tests against a fake Databricks telemetry service: batches to export, the
//! feature-flag response, and decoding what the server received.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kasal_telemetry::trace::{Direction, ExecutionMode, OperationId};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{Batch, ErrorEntry, OperationSummary, OutcomeCounts, Rollup, RollupKey};
use serde_json::Value;

use super::Recorded;

/// The flag path for this crate's version.
pub fn flag_path() -> String {
    format!(
        "/api/2.0/connector-service/feature-flags/KASAL/{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// A flag endpoint body turning export on or off, with an optional `ttl_seconds`.
pub fn flag_body(enabled: bool, ttl_seconds: Option<u64>) -> String {
    let ttl = ttl_seconds.map_or(String::new(), |t| format!(r#","ttl_seconds":{t}"#));
    format!(
        r#"{{"flags":[{{"name":"other.flag","value":"true"}},{{"name":"{}","value":"{enabled}"}}]{ttl}}}"#,
        kasal_telemetry::FeatureFlagCache::FLAG
    )
}

/// A finished operation with one error carrying `message`.
pub fn operation(id: &str, message: &str) -> OperationSummary {
    OperationSummary {
        operation_id: OperationId::new(id),
        product: Product::Genie,
        mode: ExecutionMode::User,
        caller_id: Some("someone@example.com".into()),
        obo_dev_fallback: false,
        started_at: SystemTime::now(),
        calls: 2,
        retries: 1,
        latency_sum: Duration::from_millis(250),
        latency_max: Duration::from_millis(200),
        bytes: 512,
        outcomes: OutcomeCounts {
            success: 1,
            retryable: 0,
            terminal: 1,
        },
        errors: vec![ErrorEntry {
            error_type: "500".into(),
            message: message.into(),
            count: 1,
        }],
        errors_dropped: 0,
        complete: true,
        usage: Default::default(),
    }
}

/// A rollup of four successful calls.
pub fn rollup() -> Rollup {
    let start = SystemTime::now();
    Rollup {
        key: RollupKey {
            product: Product::VectorSearch,
            direction: Direction::Client,
            method: http::Method::POST,
            host: Some("adb-1.2.azuredatabricks.net".parse().unwrap()),
            route: Some("/api/2.0/vector-search/indexes/{name}/query".into()),
            status_class: 2,
            outcome: "success",
        },
        window_start: start,
        window_end: start + Duration::from_secs(5),
        count: 4,
        latency_sum: Duration::from_millis(100),
        latency_min: Duration::from_millis(10),
        latency_max: Duration::from_millis(50),
        histogram: [0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    }
}

/// One operation and one rollup.
pub fn batch(id: &str) -> Batch {
    Batch {
        operations: vec![operation(id, "upstream said no")],
        rollups: vec![rollup()],
        usage: Vec::new(),
    }
}

/// The upload body as JSON, and each protoLogs entry decoded from its JSON string. Panics (fails
/// the test) when any entry is not a string holding JSON.
pub fn decode(request: &Recorded) -> (Value, Vec<Value>) {
    let upload: Value = serde_json::from_slice(&request.body).expect("upload body is JSON");
    let logs = upload["protoLogs"]
        .as_array()
        .expect("protoLogs is an array")
        .iter()
        .map(|entry| {
            let text = entry
                .as_str()
                .expect("each protoLogs entry is a JSON string");
            serde_json::from_str(text).expect("each protoLogs string holds JSON")
        })
        .collect();
    (upload, logs)
}

/// Every `frontend_log_event_id` in a request.
pub fn event_ids(request: &Recorded) -> Vec<String> {
    decode(request)
        .1
        .iter()
        .map(|log| log["frontend_log_event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
