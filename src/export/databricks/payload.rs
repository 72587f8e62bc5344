//! The upload body: a [`Batch`] turned into the frontend-log JSON the Databricks drivers send to
//! `/telemetry-ext` and `/telemetry-unauth`, and the service's answer read back.
//!
//! Sans-IO: [`encode_upload`] is a pure function of the batch, the options and the clock. It is
//! called once per batch, so the `frontend_log_event_id`s it generates are fixed for every retry
//! of that upload (the server can deduplicate). [`parse_response`] reads the answer.
//!
//! # The schema: only fields the drivers send
//!
//! The telemetry service stores a log only when it decodes into its protobuf; a field the
//! protobuf does not define can get the log rejected. So every field written here is one the
//! Databricks drivers themselves send, under the same name and JSON type. The complete list,
//! as [`FRONTEND_LOG_FIELDS`] (a test validates every encoded log against it, no other key
//! allowed):
//!
//! | field | type | where the drivers define it |
//! |---|---|---|
//! | `workspace_id` | integer | JDBC `TelemetryFrontendLog.workspaceId` (Long); Go `TelemetryFrontendLog.WorkspaceID` (int64); Python `TelemetryFrontendLog.workspace_id` (int) |
//! | `frontend_log_event_id` | string | all four |
//! | `context.client_context.timestamp_millis` | integer | Node.js `DatabricksTelemetryLog`; Python `TelemetryClientContext` |
//! | `context.client_context.user_agent` | string | Node.js, Python (as above) |
//! | `entry.sql_driver_log.session_id`, `.sql_statement_id` | string | JDBC `TelemetryEvent`; Go `TelemetryEvent`; Python `TelemetryEvent`; Node.js |
//! | `entry.sql_driver_log.operation_latency_ms` | integer | Go, Python, Node.js |
//! | `entry.sql_driver_log.auth_type` | string | Go, Python |
//! | `entry.sql_driver_log.system_configuration.{driver_name, driver_version, os_name, os_version, os_arch, runtime_name, runtime_version, runtime_vendor, client_app_name, locale_name, char_set_encoding, process_name}` | string | JDBC `DriverSystemConfiguration`; Go `DriverSystemConfiguration`; Python `DriverSystemConfiguration`; Node.js `system_configuration` |
//! | `entry.sql_driver_log.sql_operation.{statement_type, execution_result}` | string | JDBC `SqlExecutionEvent`; Go `SQLExecutionEvent`; Python `SqlExecutionEvent` |
//! | `entry.sql_driver_log.sql_operation.is_compressed` | boolean | as above |
//! | `entry.sql_driver_log.sql_operation.{chunk_id, retry_count}` | integer | as above |
//! | `entry.sql_driver_log.sql_operation.chunk_details.{initial_chunk_latency_millis, slowest_chunk_latency_millis, total_chunks_present, total_chunks_iterated, sum_chunks_download_time_millis}` | integer | Go `ChunkDetails`; Python `ChunkDetails`; Node.js `chunk_details` |
//! | `entry.sql_driver_log.sql_operation.result_latency.{result_set_ready_latency_millis, result_set_consumption_latency_millis}` | integer | Go `ResultLatency`; Python `ResultLatency` |
//! | `entry.sql_driver_log.sql_operation.operation_detail.{n_operation_status_calls, operation_status_latency_millis}` | integer | Go `OperationDetail`; Python `OperationDetail` |
//! | `entry.sql_driver_log.sql_operation.operation_detail.operation_type` | string | as above |
//! | `entry.sql_driver_log.sql_operation.operation_detail.is_internal_call` | boolean | as above |
//! | `entry.sql_driver_log.error_info.{error_name, stack_trace}` | string | JDBC `DriverErrorInfo`; Go `DriverErrorInfo`; Python `DriverErrorInfo`; Node.js `error_info` |
//!
//! Sources: databricks-jdbc `src/main/java/com/databricks/jdbc/model/telemetry/`,
//! databricks-sql-go `telemetry/request.go`, databricks-sql-python
//! `src/databricks/sql/telemetry/models/{event,frontend_logs}.py`, databricks-sql-nodejs
//! `lib/telemetry/DatabricksTelemetryExporter.ts`. (The Go driver writes
//! `client_context.{client_type, client_version}` instead of `timestamp_millis`/`user_agent`;
//! we follow Node.js and Python. The drivers' `driver_connection_params` and `vol_operation`
//! describe JDBC/ODBC connections and volume commands; nothing of ours maps onto them, so they
//! are not listed.)
//!
//! # Body
//!
//! ```text
//! {"uploadTime": <ms since epoch>, "items": [], "protoLogs": ["<log as a JSON string>", ...]}
//! ```
//!
//! # One log per operation summary
//!
//! | source | field |
//! |---|---|
//! | configured workspace id (authenticated only) | `workspace_id` |
//! | fresh UUID v4 | `frontend_log_event_id` |
//! | `OperationSummary.started_at` | `context.client_context.timestamp_millis` |
//! | the exporter's User-Agent, `kasal_telemetry/<version>` | `context.client_context.user_agent` |
//! | `OperationSummary.operation_id` (authenticated only) | `sql_statement_id`; `session_id` is the part before the first `/` of an id shaped `session/statement`, else the whole id |
//! | this crate (authenticated only) | `system_configuration.driver_name` = `kasal-telemetry`, `driver_version`, `os_*`, `runtime_name` = `rust`, `runtime_version`, `process_name` |
//! | `OperationSummary.product` (authenticated only) | `system_configuration.client_app_name` = `kasal_<product>` (`kasal_genie`) |
//! | `OperationSummary.latency_sum` | `operation_latency_ms` (time spent in the operation's calls) |
//! | `OperationSummary.retries` | `sql_operation.retry_count` |
//! | `OperationSummary.errors[0].error_type` | `error_info.error_name` |
//! | every error, `"<count>x <type>: <message>"` per line, redacted (authenticated only) | `error_info.stack_trace` |
//!
//! Never exported: the caller id (an email or principal), tokens, raw paths. Unauthenticated
//! logs leave out the workspace id, the session and statement ids, the system configuration
//! and stack traces, as the Node.js driver does. Every message passes through `redact` before
//! it is written. The rest of an operation summary (calls, bytes, outcome counts, execution
//! mode, completeness) has no field in the schema and is not sent here; the JSON-lines and
//! OpenTelemetry exporters carry it.
//!
//! # Rollups are not sent to this endpoint
//!
//! A rollup counts many plain calls (count, latency sum, min, max, histogram) per product,
//! method, route and status class. The frontend-log schema describes one driver operation: it
//! has no field for a count or a histogram, so a rollup could only be sent by inventing fields
//! (which gets the log rejected) or by passing N calls off as one operation (which corrupts the
//! service's statistics). And it is not needed there: every plain call to a Databricks API
//! already reaches the workspace's own request logs with its `kasal_<product>/<version>`
//! User-Agent, which attributes it. So [`encode_upload`] encodes operation summaries only, and
//! the exporter reports rollups as skipped (`not_supported`); send them to the JSON-lines or
//! OpenTelemetry exporters.
//!
//! # The answer
//!
//! `{"errors": [...], "numSuccess": n, "numProtoSuccess": n, "numRealtimeSuccess": n}` (Go
//! `TelemetryResponse`, JDBC `TelemetryResponse`, Python `TelemetryResponse`).
//! `numProtoSuccess` is how many `protoLogs` were stored; the rest were rejected.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::event::{Batch, OperationSummary};
use crate::export::clock::unix_millis;

/// The JSON type of a field in [`FRONTEND_LOG_FIELDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonType {
    /// A JSON object (its keys are listed separately).
    Object,
    /// A JSON string.
    String,
    /// A JSON integer.
    Integer,
    /// `true` or `false`.
    Boolean,
}

/// Every field of a frontend log the Databricks drivers send, as a dotted path with its JSON
/// type (see the table in the [module docs](self)). A log we send holds only these.
pub const FRONTEND_LOG_FIELDS: &[(&str, JsonType)] = {
    use JsonType::{Boolean as B, Integer as I, Object as O, String as S};
    &[
        ("workspace_id", I),
        ("frontend_log_event_id", S),
        ("context", O),
        ("context.client_context", O),
        ("context.client_context.timestamp_millis", I),
        ("context.client_context.user_agent", S),
        ("entry", O),
        ("entry.sql_driver_log", O),
        ("entry.sql_driver_log.session_id", S),
        ("entry.sql_driver_log.sql_statement_id", S),
        ("entry.sql_driver_log.operation_latency_ms", I),
        ("entry.sql_driver_log.auth_type", S),
        ("entry.sql_driver_log.system_configuration", O),
        ("entry.sql_driver_log.system_configuration.driver_name", S),
        (
            "entry.sql_driver_log.system_configuration.driver_version",
            S,
        ),
        ("entry.sql_driver_log.system_configuration.os_name", S),
        ("entry.sql_driver_log.system_configuration.os_version", S),
        ("entry.sql_driver_log.system_configuration.os_arch", S),
        ("entry.sql_driver_log.system_configuration.runtime_name", S),
        (
            "entry.sql_driver_log.system_configuration.runtime_version",
            S,
        ),
        (
            "entry.sql_driver_log.system_configuration.runtime_vendor",
            S,
        ),
        (
            "entry.sql_driver_log.system_configuration.client_app_name",
            S,
        ),
        ("entry.sql_driver_log.system_configuration.locale_name", S),
        (
            "entry.sql_driver_log.system_configuration.char_set_encoding",
            S,
        ),
        ("entry.sql_driver_log.system_configuration.process_name", S),
        ("entry.sql_driver_log.sql_operation", O),
        ("entry.sql_driver_log.sql_operation.statement_type", S),
        ("entry.sql_driver_log.sql_operation.is_compressed", B),
        ("entry.sql_driver_log.sql_operation.execution_result", S),
        ("entry.sql_driver_log.sql_operation.chunk_id", I),
        ("entry.sql_driver_log.sql_operation.retry_count", I),
        ("entry.sql_driver_log.sql_operation.chunk_details", O),
        (
            "entry.sql_driver_log.sql_operation.chunk_details.initial_chunk_latency_millis",
            I,
        ),
        (
            "entry.sql_driver_log.sql_operation.chunk_details.slowest_chunk_latency_millis",
            I,
        ),
        (
            "entry.sql_driver_log.sql_operation.chunk_details.total_chunks_present",
            I,
        ),
        (
            "entry.sql_driver_log.sql_operation.chunk_details.total_chunks_iterated",
            I,
        ),
        (
            "entry.sql_driver_log.sql_operation.chunk_details.sum_chunks_download_time_millis",
            I,
        ),
        ("entry.sql_driver_log.sql_operation.result_latency", O),
        (
            "entry.sql_driver_log.sql_operation.result_latency.result_set_ready_latency_millis",
            I,
        ),
        (
            "entry.sql_driver_log.sql_operation.result_latency.result_set_consumption_latency_millis",
            I,
        ),
        ("entry.sql_driver_log.sql_operation.operation_detail", O),
        (
            "entry.sql_driver_log.sql_operation.operation_detail.n_operation_status_calls",
            I,
        ),
        (
            "entry.sql_driver_log.sql_operation.operation_detail.operation_status_latency_millis",
            I,
        ),
        (
            "entry.sql_driver_log.sql_operation.operation_detail.operation_type",
            S,
        ),
        (
            "entry.sql_driver_log.sql_operation.operation_detail.is_internal_call",
            B,
        ),
        ("entry.sql_driver_log.error_info", O),
        ("entry.sql_driver_log.error_info.error_name", S),
        ("entry.sql_driver_log.error_info.stack_trace", S),
    ]
};

/// What the client says about itself in `system_configuration` (authenticated uploads only).
/// `client_app_name` is added per log, from the operation's product.
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

/// Encodes the operation summaries of `batch` as an upload body (uncompressed JSON), one log
/// each with a fresh `frontend_log_event_id`. Rollups are not encoded (see the [module
/// docs](self)).
pub fn encode_upload(batch: &Batch, options: &PayloadOptions, now: SystemTime) -> Bytes {
    let proto_logs: Vec<String> = batch
        .operations
        .iter()
        .map(|op| to_json(&operation_log(op, options)))
        .collect();
    let body = Upload {
        upload_time: unix_millis(now),
        items: [],
        proto_logs,
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The telemetry service's answer to an upload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadResponse {
    /// `numProtoSuccess`: how many `protoLogs` were stored (absent in the answer: `None`).
    pub num_proto_success: Option<u64>,
    /// `errors`, each redacted and cut to 256 characters; at most 8 are kept.
    pub errors: Vec<String>,
    /// How many errors the answer listed in all.
    pub error_count: usize,
}

/// Reads the answer to an upload; `None` when it is not a JSON object.
pub fn parse_response(body: &[u8]) -> Option<UploadResponse> {
    const MAX_ERRORS: usize = 8;
    const MAX_ERROR_CHARS: usize = 256;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let num_proto_success = object.get("numProtoSuccess").and_then(|n| {
        n.as_u64()
            .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
    });
    let listed = object
        .get("errors")
        .and_then(|errors| errors.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let errors = listed
        .iter()
        .take(MAX_ERRORS)
        .map(|error| {
            let text = match error {
                serde_json::Value::String(text) => Cow::Borrowed(text.as_str()),
                other => Cow::Owned(other.to_string()),
            };
            kasal_trace::redact(&text)
                .chars()
                .take(MAX_ERROR_CHARS)
                .collect()
        })
        .collect();
    Some(UploadResponse {
        num_proto_success,
        errors,
        error_count: listed.len(),
    })
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
    system_configuration: Option<SystemConfigurationLog<'a>>,
    operation_latency_ms: u64,
    sql_operation: SqlOperation,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_info: Option<ErrorInfo<'a>>,
}

#[derive(Serialize)]
struct SystemConfigurationLog<'a> {
    #[serde(flatten)]
    system: &'a SystemConfiguration,
    client_app_name: String,
}

#[derive(Serialize)]
struct SqlOperation {
    retry_count: u64,
}

#[derive(Serialize)]
struct ErrorInfo<'a> {
    error_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack_trace: Option<String>,
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
                system_configuration: auth.then(|| SystemConfigurationLog {
                    system: &options.system,
                    client_app_name: format!("kasal_{}", op.product.as_str()),
                }),
                operation_latency_ms: duration_ms(op.latency_sum),
                sql_operation: SqlOperation {
                    retry_count: op.retries,
                },
                error_info,
            },
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{ErrorEntry, OutcomeCounts, Rollup, RollupKey};
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
                status: Some(http::StatusCode::OK),
                error_type: None,
            },
            window_start: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            window_end: UNIX_EPOCH + Duration::from_secs(1_700_000_005),
            count: 4,
            latency_sum: Duration::from_millis(100),
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(50),
            histogram: [0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
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

    /// Checks `log` against [`FRONTEND_LOG_FIELDS`]: every key listed, every value of its type.
    pub(crate) fn validate(log: &Value) -> Result<(), String> {
        fn walk(prefix: &str, object: &serde_json::Map<String, Value>) -> Result<(), String> {
            for (key, value) in object {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                let Some((_, expected)) = FRONTEND_LOG_FIELDS.iter().find(|(p, _)| *p == path)
                else {
                    return Err(format!("unknown field `{path}`"));
                };
                let ok = match expected {
                    JsonType::Object => value.is_object(),
                    JsonType::String => value.is_string(),
                    JsonType::Integer => value.is_i64() || value.is_u64(),
                    JsonType::Boolean => value.is_boolean(),
                };
                if !ok {
                    return Err(format!("`{path}` is {value}, not {expected:?}"));
                }
                if let Value::Object(inner) = value {
                    walk(&path, inner)?;
                }
            }
            Ok(())
        }
        walk("", log.as_object().ok_or("a log is a JSON object")?)
    }

    #[test]
    fn the_field_list_is_closed_under_prefixes() {
        for (path, _) in FRONTEND_LOG_FIELDS {
            if let Some((parent, _)) = path.rsplit_once('.') {
                assert!(
                    FRONTEND_LOG_FIELDS
                        .iter()
                        .any(|(p, t)| *p == parent && *t == JsonType::Object),
                    "{path}: parent {parent} is not an object in the list"
                );
            }
        }
    }

    #[test]
    fn the_validator_refuses_unknown_keys_and_wrong_types() {
        let good = serde_json::json!({"frontend_log_event_id": "x", "entry": {"sql_driver_log": {"operation_latency_ms": 3}}});
        assert_eq!(validate(&good), Ok(()));
        let unknown = serde_json::json!({"entry": {"sql_driver_log": {"sql_operation": {"kasal_operation": {}}}}});
        assert!(validate(&unknown).unwrap_err().contains("kasal_operation"));
        let wrong = serde_json::json!({"workspace_id": "123"});
        assert!(validate(&wrong).unwrap_err().contains("workspace_id"));
        let float = serde_json::json!({"entry": {"sql_driver_log": {"operation_latency_ms": 1.5}}});
        assert!(validate(&float).is_err());
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
        assert_eq!(logs.len(), 1, "rollups are not sent");

        let op = &logs[0];
        assert_eq!(validate(op), Ok(()));
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
        let system = &log["system_configuration"];
        assert_eq!(system["driver_name"], "kasal-telemetry");
        assert_eq!(system["driver_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(system["client_app_name"], "kasal_genie");
        for field in [
            "os_name",
            "os_version",
            "os_arch",
            "runtime_name",
            "runtime_version",
            "process_name",
        ] {
            assert!(system[field].is_string(), "{field}");
        }
        assert_eq!(log["operation_latency_ms"], 420);
        assert_eq!(log["sql_operation"], serde_json::json!({"retry_count": 1}));
        assert_eq!(log["error_info"]["error_name"], "503");
        assert_eq!(
            log["error_info"]["stack_trace"],
            "1x 503: upstream unavailable"
        );
        assert!(!op.to_string().contains("someone@example.com"));
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
        assert_eq!(logs.len(), 1);
        for log in &logs {
            assert_eq!(validate(log), Ok(()));
            assert!(log.get("workspace_id").is_none());
            let d = &log["entry"]["sql_driver_log"];
            assert!(d.get("session_id").is_none());
            assert!(d.get("sql_statement_id").is_none());
            assert!(d.get("system_configuration").is_none());
            assert!(d["error_info"].get("stack_trace").is_none());
            assert_eq!(d["error_info"]["error_name"], "503");
        }
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
        assert_eq!(ids.len(), 50);
    }

    #[test]
    fn reads_the_answer() {
        let answer = parse_response(
            br#"{"errors":["bad log 1: token=dapi0123456789abcdef0123456789abcdef", {"x":1}],"numSuccess":0,"numProtoSuccess":3}"#,
        )
        .unwrap();
        assert_eq!(answer.num_proto_success, Some(3));
        assert_eq!(answer.error_count, 2);
        assert!(
            !answer.errors[0].contains("dapi0123"),
            "{:?}",
            answer.errors
        );
        assert_eq!(answer.errors[1], r#"{"x":1}"#);
        let empty = parse_response(b"{}").unwrap();
        assert_eq!((empty.num_proto_success, empty.error_count), (None, 0));
        assert_eq!(parse_response(b"<html>"), None);
        assert_eq!(parse_response(b"[1]"), None);
        let text = parse_response(br#"{"numProtoSuccess":"2"}"#).unwrap();
        assert_eq!(text.num_proto_success, Some(2));
    }
}
