//! The Databricks exporter against a real local HTTP server: payload shape, endpoints,
//! credentials, faults (5xx, 429, 401, resets, hangs), the circuit breaker, id stability,
//! redaction, the feature flag and host validation.

mod common;
#[path = "common/telemetry_endpoint.rs"]
mod telemetry_endpoint;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Recorded, Reply, TestServer};
use http::HeaderValue;
use kasal_telemetry::credentials::{BoxError, StaticToken};
use kasal_telemetry::export::databricks::{
    DatabricksExporter, DatabricksExporterBuilder, ExportError, ExporterError, HostError,
};
use kasal_telemetry::flags::FeatureFlagCache;
use kasal_telemetry::{Batch, validate_host};
use telemetry_endpoint::{batch, decode, event_ids, flag_body, flag_path, now_ms, operation};
use tower::ServiceExt;

const PAT: &str = "dapi0123456789abcdef0123456789ab";

/// An exporter for `server`, export forced on, fast retries.
fn exporter(server: &TestServer) -> DatabricksExporterBuilder {
    DatabricksExporter::builder(server.url(""))
        .allow_private_hosts(true)
        .force_enabled(true)
        .timeout(Duration::from_secs(2))
}

async fn export(exporter: &DatabricksExporter, batch: Batch) -> Result<(), ExportError> {
    exporter.clone().oneshot(batch).await
}

fn telemetry_requests(server: &TestServer) -> Vec<Recorded> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.uri.path().starts_with("/telemetry"))
        .collect()
}

#[tokio::test]
async fn authenticated_upload_has_the_driver_shape() {
    let server = TestServer::always(200).await;
    let exporter = exporter(&server)
        .credentials(StaticToken::new(PAT).unwrap())
        .workspace_id(1234567890123456)
        .build()
        .unwrap();
    let before = now_ms();
    export(&exporter, batch("session-1/statement-7"))
        .await
        .unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, http::Method::POST);
    assert_eq!(request.uri.path(), "/telemetry-ext");
    assert_eq!(
        request.header("authorization").unwrap(),
        format!("Bearer {PAT}")
    );
    assert_eq!(request.header("content-type").unwrap(), "application/json");
    let user_agent = request.header("user-agent").unwrap();
    assert!(user_agent.starts_with("kasal_telemetry/"), "{user_agent}");

    let (upload, logs) = decode(request);
    let upload_time = upload["uploadTime"]
        .as_u64()
        .expect("uploadTime is a number");
    assert!(upload_time >= before && upload_time <= now_ms());
    assert_eq!(upload["items"], serde_json::json!([]));
    assert!(
        upload["protoLogs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l.is_string())
    );
    assert_eq!(logs.len(), 2);

    for log in &logs {
        assert_eq!(log["workspace_id"], 1234567890123456u64);
        let id = log["frontend_log_event_id"].as_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
        let client = &log["context"]["client_context"];
        assert!(client["timestamp_millis"].is_u64());
        assert_eq!(client["user_agent"], user_agent.as_str());
        let system = &log["entry"]["sql_driver_log"]["system_configuration"];
        for field in [
            "driver_name",
            "driver_version",
            "os_name",
            "os_version",
            "os_arch",
            "runtime_name",
            "runtime_version",
            "process_name",
        ] {
            assert!(system[field].is_string(), "system_configuration.{field}");
        }
        assert_eq!(system["driver_name"], "kasal-telemetry");
    }

    let op = &logs[0]["entry"]["sql_driver_log"];
    assert_eq!(op["session_id"], "session-1");
    assert_eq!(op["sql_statement_id"], "session-1/statement-7");
    assert_eq!(op["operation_latency_ms"], 250);
    assert_eq!(op["sql_operation"]["retry_count"], 1);
    assert_eq!(op["sql_operation"]["kasal_operation"]["calls"], 2);
    assert_eq!(op["error_info"]["error_name"], "500");
    assert_eq!(op["error_info"]["stack_trace"], "1x 500: upstream said no");

    let rollup = &logs[1]["entry"]["sql_driver_log"]["sql_operation"]["kasal_rollup"];
    assert_eq!(rollup["count"], 4);
    assert_eq!(rollup["product"], "vectorsearch");
    assert_eq!(rollup["latency_min_ms"], 10);

    // The caller's identity is never exported.
    assert!(!String::from_utf8_lossy(&request.body).contains("someone@example.com"));
    let stats = exporter.stats();
    assert_eq!(
        (stats.sent, stats.logs_sent, stats.unauthenticated),
        (1, 2, 0)
    );
}

#[tokio::test]
async fn without_credentials_the_upload_is_anonymous() {
    let server = TestServer::always(200).await;
    let exporter = exporter(&server).workspace_id(42).build().unwrap();
    export(&exporter, batch("session-1/statement-7"))
        .await
        .unwrap();

    let request = &server.requests()[0];
    assert_eq!(request.uri.path(), "/telemetry-unauth");
    assert!(request.header("authorization").is_none());
    let raw = String::from_utf8_lossy(&request.body);
    assert!(!raw.contains("session-1") && !raw.contains("upstream said no"));
    let (_, logs) = decode(request);
    assert_eq!(logs.len(), 2);
    for log in &logs {
        assert!(log.get("workspace_id").is_none());
        assert!(log["frontend_log_event_id"].is_string());
        let driver = &log["entry"]["sql_driver_log"];
        assert!(driver.get("session_id").is_none());
        assert!(driver.get("sql_statement_id").is_none());
        assert!(driver.get("system_configuration").is_none());
    }
    let error = &logs[0]["entry"]["sql_driver_log"]["error_info"];
    assert_eq!(error["error_name"], "500");
    assert!(error.get("stack_trace").is_none());
    assert_eq!(exporter.stats().unauthenticated, 1);
}

#[tokio::test]
async fn failing_or_slow_credentials_fall_back_to_anonymous() {
    let server = TestServer::always(200).await;
    let failing = exporter(&server)
        .credentials(|| async { Err::<Option<HeaderValue>, BoxError>("token source down".into()) })
        .build()
        .unwrap();
    export(&failing, batch("a")).await.unwrap();

    let slow = exporter(&server)
        .credentials(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Some(HeaderValue::from_static("Bearer late")))
        })
        .credentials_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let started = Instant::now();
    export(&slow, batch("b")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));

    let none = exporter(&server)
        .credentials(|| async { Ok(None) })
        .build()
        .unwrap();
    export(&none, batch("c")).await.unwrap();

    let paths: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.uri.path().to_owned())
        .collect();
    assert_eq!(paths, ["/telemetry-unauth"; 3]);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_none())
    );
}

#[tokio::test]
async fn unauthorized_is_one_attempt_and_the_batch_is_dropped() {
    for status in [401, 403, 400, 404] {
        let server = TestServer::always(status).await;
        let exporter = exporter(&server)
            .credentials(StaticToken::new(PAT).unwrap())
            .build()
            .unwrap();
        let result = export(&exporter, batch("x")).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // would-be retries have time to land
        assert_eq!(server.hits(), 1, "{status}: one attempt");
        let stats = exporter.stats();
        if status == 401 || status == 403 {
            assert!(matches!(result, Err(ExportError::Unauthorized(s)) if s == status));
            assert_eq!(stats.dropped_unauthorized, 1);
        } else {
            assert!(matches!(result, Err(ExportError::Rejected(s)) if s == status));
            assert_eq!(stats.dropped_rejected, 1);
        }
        assert_eq!(stats.sent, 0);
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_ids_and_delivered_once() {
    let server = TestServer::start(|_, n| Reply::status(if n < 2 { 500 } else { 200 })).await;
    let exporter = exporter(&server)
        .credentials(StaticToken::new(PAT).unwrap())
        .build()
        .unwrap();
    export(&exporter, batch("retry-me")).await.unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 3, "500, 500, then 200");
    let first = event_ids(&requests[0]);
    assert_eq!(first.len(), 2);
    for retry in &requests[1..] {
        assert_eq!(event_ids(retry), first, "a retried batch keeps its ids");
        assert_eq!(retry.body, requests[0].body);
    }
    let stats = exporter.stats();
    assert_eq!((stats.sent, stats.failed), (1, 0));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = TestServer::start(|_, n| {
        if n == 0 {
            Reply::status(429).header("retry-after", "1")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let exporter = exporter(&server).build().unwrap();
    let started = Instant::now();
    export(&exporter, batch("slow-down")).await.unwrap();
    let waited = started.elapsed();
    eprintln!("Retry-After: 1 -> export took {waited:?}");
    assert_eq!(server.hits(), 2);
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
}

#[tokio::test]
async fn frontend_log_event_ids_are_unique_across_batches() {
    let server = TestServer::start(|_, n| Reply::status(if n % 3 == 0 { 500 } else { 200 })).await;
    let exporter = exporter(&server).build().unwrap();
    for i in 0..6 {
        export(&exporter, batch(&format!("op-{i}"))).await.unwrap();
    }
    let requests = server.requests();
    // Distinct batches never share an id; retries of one batch share all of theirs.
    let mut per_batch: Vec<Vec<String>> = Vec::new();
    for request in &requests {
        let ids = event_ids(request);
        if per_batch.last() != Some(&ids) {
            per_batch.push(ids);
        }
    }
    assert_eq!(per_batch.len(), 6);
    let all: Vec<_> = per_batch.concat();
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
    assert!(requests.len() > 6, "some batches were retried");
}

#[tokio::test]
async fn secrets_reach_the_server_only_redacted() {
    let server = TestServer::always(200).await;
    let exporter = exporter(&server)
        .credentials(StaticToken::new(PAT).unwrap())
        .build()
        .unwrap();
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let message = format!(
        "call failed: Authorization: Bearer abc.def; token dapi0123456789abcdef; jwt {jwt}; \
         url https://adb.example/api?token=s3cr3tvalue&x=1"
    );
    let mut batch = Batch::default();
    batch.operations.push(operation("op-secret", &message));
    export(&exporter, batch).await.unwrap();

    let raw = String::from_utf8_lossy(&server.requests()[0].body).into_owned();
    let (_, logs) = decode(&server.requests()[0]);
    eprintln!(
        "redacted: {}",
        logs[0]["entry"]["sql_driver_log"]["error_info"]["stack_trace"]
    );
    for secret in ["abc.def", "dapi0123456789abcdef", jwt, "s3cr3tvalue"] {
        assert!(!raw.contains(secret), "{secret} leaked: {raw}");
    }
    // The message itself still arrives, redacted.
    assert!(raw.contains("call failed"), "{raw}");
}

#[tokio::test]
async fn an_unreachable_endpoint_opens_the_breaker_then_recovers() {
    // Resets for the first five requests, then healthy.
    let server = TestServer::start(|_, n| {
        if n < 5 {
            Reply::Reset
        } else {
            Reply::status(200)
        }
    })
    .await;
    let exporter = exporter(&server)
        .max_retries(0)
        .circuit_breaker(5, Duration::from_millis(400), 2)
        .build()
        .unwrap();
    for i in 0..5 {
        let result = export(&exporter, batch(&format!("down-{i}"))).await;
        assert!(
            matches!(result, Err(ExportError::Transport(_))),
            "{result:?}"
        );
    }
    assert_eq!(server.hits(), 5);

    // Open: rejected at once, nothing sent.
    let started = Instant::now();
    for i in 0..3 {
        let result = export(&exporter, batch(&format!("open-{i}"))).await;
        assert!(
            matches!(result, Err(ExportError::CircuitOpen)),
            "{result:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(server.hits(), 5, "no request while open");
    assert_eq!(exporter.stats().dropped_circuit_open, 3);

    // After the open period: a probe goes through, then the breaker closes.
    tokio::time::sleep(Duration::from_millis(450)).await;
    export(&exporter, batch("probe")).await.unwrap();
    export(&exporter, batch("second")).await.unwrap();
    export(&exporter, batch("closed")).await.unwrap();
    assert_eq!(server.hits(), 8);
    assert_eq!(exporter.stats().sent, 3);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = TestServer::start(|_, _| Reply::Hang).await;
    let exporter = exporter(&server)
        .timeout(Duration::from_millis(200))
        .export_deadline(Duration::from_millis(600))
        .build()
        .unwrap();
    let started = Instant::now();
    let result = export(&exporter, batch("hang")).await;
    let took = started.elapsed();
    eprintln!(
        "never-answering server: {result:?} after {took:?}, {} attempt(s)",
        server.hits()
    );
    assert!(
        matches!(
            result,
            Err(ExportError::Timeout | ExportError::Transport(_))
        ),
        "{result:?}"
    );
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(900), "{took:?}");
    assert_eq!(exporter.stats().failed, 1);
}

/// A fake workspace answering the flag endpoint from `flag` and telemetry with 200.
async fn workspace(flag: impl Fn(usize) -> Reply + Send + Sync + 'static) -> TestServer {
    let flag_path = flag_path();
    let flag_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    TestServer::start(move |request, _| {
        if request.uri.path() == flag_path {
            flag(flag_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
        } else {
            Reply::status(200)
        }
    })
    .await
}

fn flag_cache() -> FeatureFlagCache {
    FeatureFlagCache::builder()
        .client(common::client())
        .credentials(StaticToken::new(PAT).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn flag_off_exports_nothing_and_flag_on_exports() {
    let off = workspace(|_| Reply::text(200, &flag_body(false, None))).await;
    let exporter = DatabricksExporter::builder(off.url(""))
        .allow_private_hosts(true)
        .credentials(StaticToken::new(PAT).unwrap())
        .build()
        .unwrap();
    for i in 0..3 {
        export(&exporter, batch(&format!("off-{i}"))).await.unwrap();
    }
    assert!(telemetry_requests(&off).is_empty());
    assert_eq!(off.hits(), 1, "the flag was fetched once and cached");
    let flag_request = &off.requests()[0];
    assert_eq!(flag_request.method, http::Method::GET);
    assert_eq!(
        flag_request.header("authorization").unwrap(),
        format!("Bearer {PAT}")
    );
    assert!(
        flag_request
            .header("user-agent")
            .unwrap()
            .starts_with("kasal_telemetry/")
    );
    assert_eq!(exporter.stats().skipped_flag_off, 3);

    let on = workspace(|_| Reply::text(200, &flag_body(true, Some(900)))).await;
    let exporter = DatabricksExporter::builder(on.url(""))
        .allow_private_hosts(true)
        .credentials(StaticToken::new(PAT).unwrap())
        .build()
        .unwrap();
    export(&exporter, batch("on")).await.unwrap();
    assert_eq!(telemetry_requests(&on).len(), 1);
    assert_eq!(exporter.stats().sent, 1);
}

#[tokio::test]
async fn flag_failures_keep_the_last_known_value() {
    // On (ttl 0 -> clamped to the 100 ms floor configured below), then failing, then garbage.
    let server = workspace(|n| match n {
        0 => Reply::text(200, &flag_body(true, Some(0))),
        1 => Reply::status(500),
        _ => Reply::text(200, r#"{"unexpected": true}"#),
    })
    .await;
    let host = validate_host(&server.url(""), true).unwrap();
    let flags = FeatureFlagCache::builder()
        .client(common::client())
        .ttl_bounds(Duration::from_millis(100), Duration::from_secs(3600))
        .failure_backoff(Duration::from_millis(100))
        .build()
        .unwrap();
    assert!(flags.is_enabled(&host).await);
    assert_eq!(
        flags.state(&host).unwrap().ttl,
        Some(Duration::from_millis(100))
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(flags.is_enabled(&host).await, "500: last known value kept");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        flags.is_enabled(&host).await,
        "malformed: last known value kept"
    );
    let stats = flags.stats();
    assert_eq!((stats.fetches, stats.failures, stats.malformed), (3, 1, 1));

    // With nothing known, a failure means off.
    let down = workspace(|_| Reply::status(503)).await;
    let down_host = validate_host(&down.url(""), true).unwrap();
    assert!(!flag_cache().is_enabled(&down_host).await);
}

#[tokio::test]
async fn server_ttl_is_clamped() {
    for (ttl, expected) in [(1, 60), (900, 900), (86_400, 3600)] {
        let server = workspace(move |_| Reply::text(200, &flag_body(true, Some(ttl)))).await;
        let host = validate_host(&server.url(""), true).unwrap();
        let flags = flag_cache();
        assert!(flags.is_enabled(&host).await);
        let state = flags.state(&host).unwrap();
        assert_eq!(
            state.ttl,
            Some(Duration::from_secs(expected)),
            "ttl_seconds {ttl}"
        );
        assert!(state.fresh);
    }
    // Absent: the 15 minute default.
    let server = workspace(|_| Reply::text(200, &flag_body(true, None))).await;
    let host = validate_host(&server.url(""), true).unwrap();
    let flags = flag_cache();
    flags.is_enabled(&host).await;
    assert_eq!(
        flags.state(&host).unwrap().ttl,
        Some(Duration::from_secs(900))
    );
}

#[tokio::test]
async fn one_flag_fetch_in_flight_per_host() {
    let server =
        workspace(|_| Reply::text(200, &flag_body(true, None)).delayed(Duration::from_millis(200)))
            .await;
    let host = validate_host(&server.url(""), true).unwrap();
    let flags = flag_cache();
    let lookups = (0..32).map(|_| {
        let (flags, host) = (flags.clone(), host.clone());
        tokio::spawn(async move { flags.is_enabled(&host).await })
    });
    for lookup in lookups.collect::<Vec<_>>() {
        assert!(lookup.await.unwrap());
    }
    assert_eq!(server.hits(), 1);
    assert_eq!(flags.stats().fetches, 1);
}

#[tokio::test]
async fn bad_hosts_are_rejected_at_build_time() {
    let build = |host: &str| {
        DatabricksExporter::builder(host)
            .force_enabled(true)
            .build()
    };
    let cases: &[(&str, HostError)] = &[
        (
            "https://user:pass@adb-1.2.azuredatabricks.net",
            HostError::Userinfo,
        ),
        (
            "https://adb-1.2.azuredatabricks.net/api/2.0",
            HostError::Path,
        ),
        ("https://adb-1.2.azuredatabricks.net?x=1", HostError::Query),
        (
            "https://169.254.169.254",
            HostError::Metadata("169.254.169.254".into()),
        ),
        ("localhost", HostError::Loopback("localhost".into())),
        (
            "http://127.0.0.1:8080",
            HostError::Loopback("127.0.0.1".into()),
        ),
        ("10.0.0.5", HostError::Private("10.0.0.5".into())),
        ("adb-1.2.azuredatabricks.net ", HostError::Whitespace),
        ("adb-1.2.azure\tdatabricks.net", HostError::Whitespace),
        (
            "adb-1.2.azure\u{200B}databricks.net",
            HostError::ZeroWidth(0x200B),
        ),
        (
            "\u{FEFF}adb-1.2.azuredatabricks.net",
            HostError::ZeroWidth(0xFEFF),
        ),
        (
            "ftp://adb-1.2.azuredatabricks.net",
            HostError::Scheme("ftp".into()),
        ),
    ];
    for (host, expected) in cases {
        let error = build(host).unwrap_err();
        assert_eq!(error, ExporterError::Host(expected.clone()), "{host:?}");
        assert!(
            error.to_string().starts_with("invalid workspace host: "),
            "{error}"
        );
    }
    let message = build("https://user:pass@adb-1.2.azuredatabricks.net")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("userinfo") && !message.contains("pass"),
        "{message}"
    );
    assert!(build("https://adb-1.2.azuredatabricks.net").is_ok());
    assert!(build("adb-1.2.azuredatabricks.net").is_ok());
    // The opt-in admits local hosts, as tests and the local demo need.
    assert!(
        DatabricksExporter::builder("localhost:8080")
            .allow_private_hosts(true)
            .force_enabled(true)
            .build()
            .is_ok()
    );
}

#[cfg(feature = "gzip")]
#[tokio::test]
async fn gzip_uploads_decode_to_the_same_shape() {
    use std::io::Read;
    let server = TestServer::always(200).await;
    let exporter = exporter(&server).gzip(true).build().unwrap();
    export(&exporter, batch("zipped")).await.unwrap();
    let mut request = server.requests().remove(0);
    assert_eq!(request.header("content-encoding").unwrap(), "gzip");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&request.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    request.body = plain.into();
    assert_eq!(decode(&request).1.len(), 2);
}

#[cfg(not(feature = "gzip"))]
#[tokio::test]
async fn gzip_without_the_feature_is_a_build_error() {
    let server = TestServer::always(200).await;
    let error = exporter(&server).gzip(true).build().unwrap_err();
    assert_eq!(error, ExporterError::GzipUnavailable);
}

// ---- Through the pipeline: `Telemetry` hands the exporter its batches. ----

mod through_the_pipeline {
    use super::*;
    use http::uri::Authority;
    use http::{Method, StatusCode};
    use kasal_telemetry::Telemetry;
    use kasal_telemetry::classify::Outcome;
    use kasal_telemetry::trace::{CallRecord, Direction, ExecutionMode};
    use kasal_telemetry::user_agent::Product;
    use std::time::SystemTime;

    fn call(route: &str) -> CallRecord {
        CallRecord {
            direction: Direction::Client,
            product: Product::Genie,
            method: Method::GET,
            host: Some(Authority::from_static("adb-1.2.azuredatabricks.net")),
            route: Some(route.into()),
            status: Some(StatusCode::OK),
            outcome: Outcome::Success,
            started_at: SystemTime::now(),
            latency: Duration::from_millis(12),
            attempts: 1,
            response_bytes: 100,
            mode: ExecutionMode::Service,
            caller_id: None,
            obo_dev_fallback: false,
            operation_id: None,
            error: None,
        }
    }

    fn rollup_counts(request: &Recorded) -> u64 {
        decode(request)
            .1
            .iter()
            .map(|log| {
                log["entry"]["sql_driver_log"]["sql_operation"]["kasal_rollup"]["count"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum()
    }

    #[tokio::test]
    async fn a_batch_retried_after_500s_is_delivered_once() {
        let server = TestServer::start(|_, n| Reply::status(if n < 2 { 500 } else { 200 })).await;
        let exporter = exporter(&server).build().unwrap();
        let telemetry = Telemetry::builder()
            .exporter(exporter.clone())
            .ignore_env()
            .build();
        for _ in 0..10 {
            telemetry.record(call("/api/2.0/genie/spaces/{id}"));
        }
        telemetry.flush().await;
        let requests = server.requests();
        assert_eq!(requests.len(), 3);
        assert!(
            requests
                .windows(2)
                .all(|w| event_ids(&w[0]) == event_ids(&w[1]))
        );
        assert_eq!(rollup_counts(&requests[2]), 10);
        let stats = telemetry.shutdown().await;
        assert_eq!(stats.export_failures, 0);
        assert_eq!(exporter.stats().sent, 1);
    }

    #[tokio::test]
    async fn breaker_opens_then_delivers_what_was_buffered_after_recovery() {
        let server = TestServer::start(|_, n| {
            if n < 5 {
                Reply::Reset
            } else {
                Reply::status(200)
            }
        })
        .await;
        let exporter = exporter(&server)
            .max_retries(0)
            .circuit_breaker(5, Duration::from_millis(500), 2)
            .build()
            .unwrap();
        let telemetry = Telemetry::builder()
            .exporter(exporter.clone())
            .ignore_env()
            .build();
        for _ in 0..5 {
            telemetry.record(call("/down"));
            telemetry.flush().await;
        }
        assert_eq!(server.hits(), 5);
        assert_eq!(telemetry.stats().export_failures, 5);

        // Open: the batch is refused without a request.
        telemetry.record(call("/while-open"));
        telemetry.flush().await;
        assert_eq!(server.hits(), 5, "no request while the breaker is open");
        assert_eq!(exporter.stats().dropped_circuit_open, 1);

        // Buffered in the pipeline while the breaker cools down, delivered by the probe.
        for _ in 0..7 {
            telemetry.record(call("/buffered"));
        }
        tokio::time::sleep(Duration::from_millis(550)).await;
        telemetry.flush().await;
        let requests = server.wait_for(6, Duration::from_secs(2)).await;
        assert_eq!(requests.len(), 6, "one probe");
        assert_eq!(rollup_counts(&requests[5]), 7);
        let raw = String::from_utf8_lossy(&requests[5].body);
        assert!(raw.contains("/buffered") && !raw.contains("/while-open"));

        telemetry.record(call("/after"));
        telemetry.flush().await;
        assert_eq!(server.hits(), 7);
        assert_eq!(exporter.stats().sent, 2);
    }

    #[tokio::test]
    async fn shutdown_returns_within_its_deadline_when_the_endpoint_never_answers() {
        let server = TestServer::start(|_, _| Reply::Hang).await;
        let exporter = exporter(&server)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let telemetry = Telemetry::builder()
            .exporter(exporter)
            .ignore_env()
            .shutdown_deadline(Duration::from_millis(500))
            .build();
        for _ in 0..3 {
            telemetry.record(call("/hang"));
        }
        let started = Instant::now();
        let stats = telemetry.shutdown().await;
        let took = started.elapsed();
        eprintln!("shutdown with a hanging endpoint took {took:?}: {stats:?}");
        assert!(took < Duration::from_millis(900), "{took:?}");
        assert_eq!(stats.exported, 0);
        assert_eq!(server.hits(), 1, "the request was sent and never answered");
    }
}
