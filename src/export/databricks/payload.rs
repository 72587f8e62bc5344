//! The upload body: a [`Batch`] turned into the frontend-log JSON the Databricks JDBC and
//! Node.js drivers send to `/telemetry-ext` and `/telemetry-unauth`.
//!
//! Sans-IO: [`encode_upload`] is a pure function of the batch, the options and the clock. It is
//! called once per batch, so the `frontend_log_event_id`s it generates are fixed for every retry
//! of that upload (the server can deduplicate).
//!
//! # Body
//!
//! ```text
//! {"uploadTime": <ms since epoch>, "items": [], "protoLogs": ["<log as a JSON string>", ...]}
//! ```
//!
//! # One log
//!
//! ```text
//! { workspace_id?,                       // authenticated only, when configured
//!   frontend_log_event_id,               // fresh UUID v4 per log
//!   context: { client_context: { timestamp_millis, user_agent } },
//!   entry: { sql_driver_log: {
//!     session_id?, sql_statement_id?,    // authenticated only
//!     system_configuration?,             // authenticated only
//!     operation_latency_ms,
//!     sql_operation: { retry_count?, kasal_operation? | kasal_rollup? },
//!     error_info?: { error_name, stack_trace? } } } }   // stack_trace authenticated only
//! ```
//!
//! # Mapping
//!
//! | source | field |
//! |---|---|
//! | `OperationSummary.operation_id` | `sql_statement_id`; `session_id` is the part before the first `/` of an id shaped `session/statement`, else the whole id |
//! | `OperationSummary.started_at` | `client_context.timestamp_millis` |
//! | `OperationSummary.latency_sum` | `operation_latency_ms` (time spent in the operation's calls) |
//! | `OperationSummary.retries` | `sql_operation.retry_count` |
//! | product, mode, calls, bytes, latency max, outcomes, complete, dev fallback, error counts | `sql_operation.kasal_operation` |
//! | `OperationSummary.errors[0].error_type` | `error_info.error_name` |
//! | every error, `"<count>x <type>: <message>"` per line, redacted | `error_info.stack_trace` |
//! | `Rollup` (one log each) | `sql_operation.kasal_rollup` (key, window, count, latency sum/min/max, histogram); `operation_latency_ms` = mean latency; `timestamp_millis` = window end |
//!
//! Never exported: the caller id (an email or principal), tokens, raw paths. On the
//! unauthenticated endpoint the rollup's `host` is left out as well, since it names the
//! workspace. Every message passes through `redact` before it is written.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::event::{Batch, OperationSummary, Rollup};
use crate::export::unix_millis;

/// What the client says about itself in `system_configuration` (authenticated uploads only).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SystemConfiguration {
    /// `kasal-telemetry`.
    pub driver_name: Cow<'static, str>,
    /// This crate's version.
    pub driver_version: Cow<'static, str>,
    /// `linux`, `macos`, `windows`, ...
    pub os_name: Cow<'static, str>,
    /// The kernel release on Linux (`/proc/sys/kernel/osrelease`), else empty.
    pub os_version: Cow<'static, str>,
    /// `x86_64`, `aarch64`, ...
    pub os_arch: Cow<'static, str>,
    /// `rust`.
    pub runtime_name: Cow<'static, str>,
    /// The crate's minimum supported Rust version (the compiler version is not known at run time).
    pub runtime_version: Cow<'static, str>,
    /// The executable's file name (never its path, which may hold a home directory).
    pub process_name: Cow<'static, str>,
}

impl SystemConfiguration {
    /// Detects the values for this process (once; later calls clone the cached value).
    pub fn detect() -> SystemConfiguration {
        static DETECTED: OnceLock<SystemConfiguration> = OnceLock::new();
        DETECTED
            .get_or_init(|| SystemConfiguration {
                driver_name: Cow::Borrowed(env!("CARGO_PKG_NAME")),
                driver_version: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
                os_name: Cow::Borrowed(std::env::consts::OS),
                os_version: Cow::Owned(
                    std::fs::read_to_string("/proc/sys/kernel/osrelease")
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_default(),
                ),
                os_arch: Cow::Borrowed(std::env::consts::ARCH),
                runtime_name: Cow::Borrowed("rust"),
                runtime_version: Cow::Borrowed(env!("CARGO_PKG_RUST_VERSION")),
                process_name: Cow::Owned(
                    std::env::current_exe()
                        .ok()
                        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .unwrap_or_default(),
                ),
            })
            .clone()
    }
}

/// How to encode one upload.
#[derive(Clone, Debug)]
pub struct PayloadOptions {
    /// True for `/telemetry-ext` (ids, system configuration and stack traces included); false for
    /// `/telemetry-unauth` (all of those left out).
    pub authenticated: bool,
    /// The workspace id, sent on authenticated uploads.
    pub workspace_id: Option<u64>,
    /// `client_context.user_agent`.
    pub user_agent: Arc<str>,
    /// `system_configuration`, sent on authenticated uploads.
    pub system: Arc<SystemConfiguration>,
}

/// Encodes `batch` as an upload body (uncompressed JSON). One log per operation and per rollup;
/// each gets a fresh `frontend_log_event_id`.
pub fn encode_upload(batch: &Batch, options: &PayloadOptions, now: SystemTime) -> Bytes {
    let mut proto_logs = Vec::with_capacity(batch.len());
    for op in &batch.operations {
        proto_logs.push(to_json(&operation_log(op, options)));
    }
    for rollup in &batch.rollups {
        proto_logs.push(to_json(&rollup_log(rollup, options)));
    }
    let body = Upload {
        upload_time: unix_millis(now),
        items: [],
        proto_logs,
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Upload {
    upload_time: u64,
    items: [(); 0],
    proto_logs: Vec<String>,
}

#[derive(Serialize)]
struct FrontendLog<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace_id: Option<u64>,
    frontend_log_event_id: String,
    context: LogContext<'a>,
    entry: LogEntry<'a>,
}

#[derive(Serialize)]
struct LogContext<'a> {
    client_context: ClientContext<'a>,
}

#[derive(Serialize)]
struct ClientContext<'a> {
    timestamp_millis: u64,
    user_agent: &'a str,
}

#[derive(Serialize)]
struct LogEntry<'a> {
    sql_driver_log: SqlDriverLog<'a>,
}

#[derive(Serialize)]
struct SqlDriverLog<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sql_statement_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_configuration: Option<&'a SystemConfiguration>,
    operation_latency_ms: u64,
    sql_operation: SqlOperation<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_info: Option<ErrorInfo<'a>>,
}

#[derive(Serialize)]
struct SqlOperation<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kasal_operation: Option<KasalOperation<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kasal_rollup: Option<KasalRollup<'a>>,
}

#[derive(Serialize)]
struct ErrorInfo<'a> {
    error_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack_trace: Option<String>,
}

#[derive(Serialize)]
struct KasalOperation<'a> {
    product: &'a str,
    execution_mode: &'static str,
    complete: bool,
    calls: u64,
    retries: u64,
    bytes: u64,
    latency_sum_ms: u64,
    latency_max_ms: u64,
    outcomes: Outcomes,
    obo_dev_fallback: bool,
    errors: Vec<ErrorCount<'a>>,
    errors_dropped: u64,
}

#[derive(Serialize)]
struct Outcomes {
    success: u64,
    retryable: u64,
    terminal: u64,
}

#[derive(Serialize)]
struct ErrorCount<'a> {
    error_name: &'a str,
    count: u64,
}

#[derive(Serialize)]
struct KasalRollup<'a> {
    product: &'a str,
    direction: &'static str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    status_class: u8,
    outcome: &'static str,
    window_start_ms: u64,
    window_end_ms: u64,
    count: u64,
    latency_sum_ms: u64,
    latency_min_ms: u64,
    latency_max_ms: u64,
    histogram_bounds_ms: &'static [u64],
    histogram: &'a [u64],
}

fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn operation_log<'a>(op: &'a OperationSummary, options: &'a PayloadOptions) -> FrontendLog<'a> {
    let auth = options.authenticated;
    let id = op.operation_id.as_str();
    let session = id.split_once('/').map_or(id, |(session, _)| session);
    let error_info = op.errors.first().map(|first| ErrorInfo {
        error_name: &first.error_type,
        stack_trace: auth.then(|| {
            let lines: Vec<String> = op
                .errors
                .iter()
                .map(|e| format!("{}x {}: {}", e.count, e.error_type, e.message))
                .collect();
            kasal_trace::redact(&lines.join("\n")).into_owned()
        }),
    });
    FrontendLog {
        workspace_id: options.workspace_id.filter(|_| auth),
        frontend_log_event_id: new_event_id(),
        context: LogContext {
            client_context: ClientContext {
                timestamp_millis: unix_millis(op.started_at),
                user_agent: &options.user_agent,
            },
        },
        entry: LogEntry {
            sql_driver_log: SqlDriverLog {
                session_id: auth.then_some(session),
                sql_statement_id: auth.then_some(id),
                system_configuration: auth.then_some(&*options.system),
                operation_latency_ms: duration_ms(op.latency_sum),
                sql_operation: SqlOperation {
                    retry_count: Some(op.retries),
                    kasal_operation: Some(KasalOperation {
                        product: op.product.as_str(),
                        execution_mode: op.mode.as_str(),
                        complete: op.complete,
                        calls: op.calls,
                        retries: op.retries,
                        bytes: op.bytes,
                        latency_sum_ms: duration_ms(op.latency_sum),
                        latency_max_ms: duration_ms(op.latency_max),
                        outcomes: Outcomes {
                            success: op.outcomes.success,
                            retryable: op.outcomes.retryable,
                            terminal: op.outcomes.terminal,
                        },
                        obo_dev_fallback: op.obo_dev_fallback,
                        errors: op
                            .errors
                            .iter()
                            .map(|e| ErrorCount {
                                error_name: &e.error_type,
                                count: e.count,
                            })
                            .collect(),
                        errors_dropped: op.errors_dropped,
                    }),
                    kasal_rollup: None,
                },
                error_info,
            },
        },
    }
}

fn rollup_log<'a>(rollup: &'a Rollup, options: &'a PayloadOptions) -> FrontendLog<'a> {
    let auth = options.authenticated;
    let key = &rollup.key;
    let mean = duration_ms(rollup.latency_sum)
        .checked_div(rollup.count)
        .unwrap_or(0);
    FrontendLog {
        workspace_id: options.workspace_id.filter(|_| auth),
        frontend_log_event_id: new_event_id(),
        context: LogContext {
            client_context: ClientContext {
                timestamp_millis: unix_millis(rollup.window_end),
                user_agent: &options.user_agent,
            },
        },
        entry: LogEntry {
            sql_driver_log: SqlDriverLog {
                session_id: None,
                sql_statement_id: None,
                system_configuration: auth.then_some(&*options.system),
                operation_latency_ms: mean,
                sql_operation: SqlOperation {
                    retry_count: None,
                    kasal_operation: None,
                    kasal_rollup: Some(KasalRollup {
                        product: key.product.as_str(),
                        direction: key.direction.as_str(),
                        method: key.method.as_str(),
                        host: key.host.as_ref().map(|h| h.as_str()).filter(|_| auth),
                        route: key.route.as_deref(),
                        status_class: key.status_class,
                        outcome: key.outcome,
                        window_start_ms: unix_millis(rollup.window_start),
                        window_end_ms: unix_millis(rollup.window_end),
                        count: rollup.count,
                        latency_sum_ms: duration_ms(rollup.latency_sum),
                        latency_min_ms: duration_ms(rollup.latency_min),
                        latency_max_ms: duration_ms(rollup.latency_max),
                        histogram_bounds_ms: &Rollup::BUCKETS_MS,
                        histogram: &rollup.histogram,
                    }),
                },
                error_info: None,
            },
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{ErrorEntry, OutcomeCounts, RollupKey};
    use kasal_trace::{Direction, ExecutionMode, OperationId};
    use kasal_user_agent::Product;
    use serde_json::Value;
    use std::time::UNIX_EPOCH;

    pub(crate) fn operation(id: &str, message: &str) -> OperationSummary {
        OperationSummary {
            operation_id: OperationId::new(id),
            product: Product::Genie,
            mode: ExecutionMode::User,
            caller_id: Some("someone@example.com".into()),
            obo_dev_fallback: false,
            started_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            calls: 3,
            retries: 1,
            latency_sum: Duration::from_millis(420),
            latency_max: Duration::from_millis(300),
            bytes: 1024,
            outcomes: OutcomeCounts {
                success: 2,
                retryable: 1,
                terminal: 0,
            },
            errors: vec![ErrorEntry {
                error_type: "503".into(),
                message: message.into(),
                count: 1,
            }],
            errors_dropped: 0,
            complete: true,
            usage: Default::default(),
        }
    }

    pub(crate) fn rollup() -> Rollup {
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
            window_start: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            window_end: UNIX_EPOCH + Duration::from_secs(1_700_000_005),
            count: 4,
            latency_sum: Duration::from_millis(100),
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(50),
            histogram: [0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    fn options(authenticated: bool) -> PayloadOptions {
        PayloadOptions {
            authenticated,
            workspace_id: Some(1234567890123456),
            user_agent: "kasal_telemetry/0.1.0".into(),
            system: Arc::new(SystemConfiguration::detect()),
        }
    }

    fn logs(body: &Bytes) -> (Value, Vec<Value>) {
        let upload: Value = serde_json::from_slice(body).unwrap();
        let logs = upload["protoLogs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| serde_json::from_str(s.as_str().expect("a JSON string")).unwrap())
            .collect();
        (upload, logs)
    }

    #[test]
    fn authenticated_upload_has_the_driver_shape() {
        let batch = Batch {
            operations: vec![operation("sess-1/stmt-9", "upstream unavailable")],
            rollups: vec![rollup()],
            usage: Vec::new(),
        };
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_009_000);
        let body = encode_upload(&batch, &options(true), now);
        let (upload, logs) = logs(&body);
        assert_eq!(upload["uploadTime"], 1_700_000_009_000u64);
        assert_eq!(upload["items"], serde_json::json!([]));
        assert_eq!(logs.len(), 2);

        let op = &logs[0];
        assert_eq!(op["workspace_id"], 1234567890123456u64);
        assert_eq!(
            uuid::Uuid::parse_str(op["frontend_log_event_id"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(
            op["context"]["client_context"]["timestamp_millis"],
            1_700_000_000_123u64
        );
        assert_eq!(
            op["context"]["client_context"]["user_agent"],
            "kasal_telemetry/0.1.0"
        );
        let log = &op["entry"]["sql_driver_log"];
        assert_eq!(log["session_id"], "sess-1");
        assert_eq!(log["sql_statement_id"], "sess-1/stmt-9");
        assert_eq!(
            log["system_configuration"]["driver_name"],
            "kasal-telemetry"
        );
        for field in [
            "driver_version",
            "os_name",
            "os_version",
            "os_arch",
            "runtime_name",
            "runtime_version",
            "process_name",
        ] {
            assert!(log["system_configuration"][field].is_string(), "{field}");
        }
        assert_eq!(log["operation_latency_ms"], 420);
        assert_eq!(log["sql_operation"]["retry_count"], 1);
        assert_eq!(log["sql_operation"]["kasal_operation"]["product"], "genie");
        assert_eq!(
            log["sql_operation"]["kasal_operation"]["outcomes"]["retryable"],
            1
        );
        assert_eq!(log["error_info"]["error_name"], "503");
        assert_eq!(
            log["error_info"]["stack_trace"],
            "1x 503: upstream unavailable"
        );
        assert!(!op.to_string().contains("someone@example.com"));

        let r = &logs[1]["entry"]["sql_driver_log"];
        assert_eq!(r["operation_latency_ms"], 25);
        let k = &r["sql_operation"]["kasal_rollup"];
        assert_eq!(k["count"], 4);
        assert_eq!(k["host"], "adb-1.2.azuredatabricks.net");
        assert_eq!(k["histogram"].as_array().unwrap().len(), Rollup::BUCKETS);
        assert_eq!(
            k["histogram_bounds_ms"].as_array().unwrap().len(),
            Rollup::BUCKETS - 1
        );
    }

    #[test]
    fn unauthenticated_upload_leaves_out_ids_configuration_and_traces() {
        let batch = Batch {
            operations: vec![operation("sess-1/stmt-9", "boom")],
            rollups: vec![rollup()],
            usage: Vec::new(),
        };
        let body = encode_upload(&batch, &options(false), SystemTime::now());
        let (_, logs) = logs(&body);
        for log in &logs {
            assert!(log.get("workspace_id").is_none());
            let d = &log["entry"]["sql_driver_log"];
            assert!(d.get("session_id").is_none());
            assert!(d.get("sql_statement_id").is_none());
            assert!(d.get("system_configuration").is_none());
            assert!(d["error_info"].get("stack_trace").is_none());
        }
        assert_eq!(
            logs[0]["entry"]["sql_driver_log"]["error_info"]["error_name"],
            "503"
        );
        assert!(
            logs[1]["entry"]["sql_driver_log"]["sql_operation"]["kasal_rollup"]
                .get("host")
                .is_none()
        );
        let raw = String::from_utf8_lossy(&body);
        assert!(!raw.contains("sess-1") && !raw.contains("boom"));
    }

    #[test]
    fn every_log_gets_its_own_id() {
        let batch = Batch {
            operations: (0..50)
                .map(|i| operation(&format!("op-{i}"), "x"))
                .collect(),
            rollups: vec![rollup(); 50],
            usage: Vec::new(),
        };
        let (_, logs) = logs(&encode_upload(&batch, &options(true), SystemTime::now()));
        let ids: std::collections::HashSet<_> = logs
            .iter()
            .map(|l| l["frontend_log_event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 100);
    }
}
