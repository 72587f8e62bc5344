//! The Databricks exporter against a real local HTTP server: payload shape, endpoints,
//! credentials, faults (5xx, 429, 401, resets, hangs), the circuit breaker, id stability,
//! redaction, the feature flag and host validation.

mod common;
#[path = "common/spans.rs"]
mod spans;
#[path = "common/telemetry_endpoint.rs"]
mod telemetry_endpoint;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Recorded, Reply, TestServer};
use http::HeaderValue;
use kasal_telemetry::BoxError;
use kasal_telemetry::credentials::StaticToken;
use kasal_telemetry::export::databricks::{
    DatabricksExporter, DatabricksExporterBuilder, ExportError, ExporterBuildError, FlagValue,
    HostError,
};
use kasal_telemetry::export::{SkipReason, Undelivered};
use kasal_telemetry::{Batch, FeatureFlagCache, validate_host};
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
    assert_eq!(logs.len(), 1);

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
        assert_eq!(system["driver_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(system["client_app_name"], "kasal_genie");
    }

    let op = &logs[0]["entry"]["sql_driver_log"];
    assert_eq!(op["session_id"], "session-1");
    assert_eq!(op["sql_statement_id"], "session-1/statement-7");
    assert_eq!(op["operation_latency_ms"], 250);
    assert_eq!(op["sql_operation"], serde_json::json!({"retry_count": 1}));
    assert_eq!(op["error_info"]["error_name"], "500");
    assert_eq!(op["error_info"]["stack_trace"], "1x 500: upstream said no");

    // The caller's identity is never exported.
    assert!(!String::from_utf8_lossy(&request.body).contains("someone@example.com"));
    let stats = exporter.stats();
    assert_eq!(
        (stats.sent, stats.logs_sent, stats.unauthenticated),
        (1, 1, 0)
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
    assert_eq!(logs.len(), 1);
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
async fn other_4xx_are_one_attempt_and_the_batch_is_dropped() {
    // 401 through the whole stack: `faults_while_the_app_calls::unauthorized_...`.
    for status in [403, 400, 404] {
        let server = TestServer::always(status).await;
        let exporter = exporter(&server)
            .credentials(StaticToken::new(PAT).unwrap())
            .build()
            .unwrap();
        // Retries happen inside the export: once it returned, no attempt is left to come.
        let result = export(&exporter, batch("x")).await;
        assert_eq!(server.hits(), 1, "{status}: one attempt");
        let stats = exporter.stats();
        if status == 403 {
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
        let skipped = export(&exporter, batch(&format!("off-{i}"))).await;
        assert!(
            matches!(
                skipped,
                Err(ExportError::Undelivered(Undelivered::Skipped(
                    SkipReason::FlagOff
                )))
            ),
            "{skipped:?}"
        );
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

    // With nothing known, a failure means unavailable, which never enables export.
    let down = workspace(|_| Reply::status(503)).await;
    let down_host = validate_host(&down.url(""), true).unwrap();
    let flags = flag_cache();
    assert_eq!(flags.check(&down_host).await, FlagValue::Unavailable);
    assert!(!flags.is_enabled(&down_host).await);
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
        assert_eq!(
            error,
            ExporterBuildError::Host(expected.clone()),
            "{host:?}"
        );
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
    assert_eq!(decode(&request).1.len(), 1);
}

#[cfg(not(feature = "gzip"))]
#[tokio::test]
async fn gzip_without_the_feature_is_a_build_error() {
    let server = TestServer::always(200).await;
    let error = exporter(&server).gzip(true).build().unwrap_err();
    assert_eq!(error, ExporterBuildError::GzipUnavailable);
}

// ---- Faults, through the whole stack, while the application keeps calling. ----

/// Each fault runs the real stack: the app's own client (hyper-util behind `TelemetryLayer`)
/// calls a healthy server before, during and after the fault, while the `Telemetry` pipeline
/// exports those very calls through a `DatabricksExporter` to a telemetry endpoint told to fail.
/// The app must see every answer unchanged, promptly and without an error, and neither side
/// may see the other's traffic.
mod faults_while_the_app_calls {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use common::ReplyBody;
    use http::{Request, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::{Client, connect::HttpConnector};
    use kasal_telemetry::classify::{CircuitBreakerConfig, RetryPolicy};
    use kasal_telemetry::trace::{OperationId, Route};
    use kasal_telemetry::user_agent::Product;
    use kasal_telemetry::{BoxError, Telemetry, TelemetryLayer, TelemetryService};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tower::Layer;

    /// The app's product token, and the exporter's.
    const APP_UA: &str = "kasal_genie/";
    const TELEMETRY_UA: &str = "kasal_telemetry/";
    /// Generous: the assertion is that an app call never waits on telemetry, not its speed.
    const APP_CALL_BOUND: Duration = Duration::from_secs(2);
    const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(500);

    type AppClient = TelemetryService<Client<HttpConnector, Full<Bytes>>>;

    /// The app's server and client, the pipeline, the exporter and its faulty endpoint.
    struct Stack {
        app_server: TestServer,
        app: AppClient,
        app_calls: AtomicUsize,
        endpoint: TestServer,
        exporter: DatabricksExporter,
        telemetry: Telemetry,
        /// Every error the pipeline got from the exporter (`Debug`), in order.
        export_errors: Arc<Mutex<Vec<String>>>,
    }

    impl Stack {
        /// Starts the stack; the exporter (authenticated, export forced, 2 s per attempt) is
        /// further configured by `configure`. Exports happen on `flush`/`shutdown` only.
        async fn start(
            endpoint: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
            configure: impl FnOnce(DatabricksExporterBuilder) -> DatabricksExporterBuilder,
        ) -> Stack {
            let app_server = TestServer::start(|request, _| {
                Reply::text(200, &format!("healthy {}", request.uri.path()))
            })
            .await;
            let endpoint = TestServer::start(endpoint).await;
            let exporter =
                configure(exporter(&endpoint).credentials(StaticToken::new(PAT).unwrap()))
                    .build()
                    .unwrap();
            let export_errors = Arc::new(Mutex::new(Vec::new()));
            let log = export_errors.clone();
            let logged = exporter.clone().map_err(move |error: ExportError| {
                log.lock().unwrap().push(format!("{error:?}"));
                error
            });
            let telemetry = Telemetry::builder()
                .exporter(logged)
                .ignore_env()
                .flush_interval(Duration::from_secs(3600))
                .shutdown_deadline(SHUTDOWN_DEADLINE)
                // These tests wait for stalled exports on purpose.
                .flush_deadline(Duration::from_secs(30))
                .build();
            let app = TelemetryLayer::new(Product::Genie, telemetry.clone())
                .layer(common::client::<Full<Bytes>>());
            Stack {
                app_server,
                app,
                app_calls: AtomicUsize::new(0),
                endpoint,
                exporter,
                telemetry,
                export_errors,
            }
        }

        /// `n` concurrent app calls in `phase` (route `/{phase}/{i}`, one operation named
        /// `phase`, completed once they all returned), each answered by the healthy server with
        /// its status and body unchanged, no error, within the bound.
        async fn calls(&self, phase: &str, n: usize) {
            self.app_calls.fetch_add(n, Ordering::SeqCst);
            let calls: Vec<_> = (0..n)
                .map(|i| {
                    let path = format!("/{phase}/{i}");
                    let mut request = Request::get(self.app_server.url(&path))
                        .body(Full::default())
                        .unwrap();
                    request.extensions_mut().insert(Route::new(route(phase)));
                    request.extensions_mut().insert(OperationId::new(phase));
                    let app = self.app.clone();
                    let call = async move {
                        let response = app.oneshot(request).await?;
                        let status = response.status();
                        let body = response.into_body().collect().await?.to_bytes();
                        Ok::<_, BoxError>((status, body))
                    };
                    (
                        path,
                        tokio::spawn(tokio::time::timeout(APP_CALL_BOUND, call)),
                    )
                })
                .collect();
            for (path, call) in calls {
                let answer = call.await.unwrap();
                let (status, body) = answer
                    .unwrap_or_else(|_| panic!("{path}: blocked over {APP_CALL_BOUND:?}"))
                    .unwrap_or_else(|error| panic!("{path}: error surfaced: {error}"));
                assert_eq!(status, StatusCode::OK, "{path}");
                assert_eq!(body, format!("healthy {path}"), "{path}");
            }
            self.telemetry.complete_operation(&OperationId::new(phase));
        }

        /// Flushes in the background and returns once the endpoint has received `requests`
        /// requests in all: the exporter is then provably mid-export.
        async fn flush_meanwhile(&self, requests: usize) -> JoinHandle<()> {
            let telemetry = self.telemetry.clone();
            let flush = tokio::spawn(async move {
                telemetry.flush().await;
            });
            let seen = self
                .endpoint
                .wait_for(requests, Duration::from_secs(2))
                .await;
            assert_eq!(seen.len(), requests, "the export reached the endpoint");
            flush
        }

        /// For an endpoint scripted by [`first_held`]: 5 app calls ("before"), their export
        /// started in the background, 5 more ("during") while its first reply is held, then
        /// the reply released. Returns the export, still under way.
        async fn export_through_held_reply(&self, release: mpsc::Sender<Bytes>) -> JoinHandle<()> {
            self.calls("before", 5).await;
            let flush = self.flush_meanwhile(1).await;
            self.calls("during", 5).await;
            assert!(!flush.is_finished(), "the export stayed stalled meanwhile");
            drop(release);
            flush
        }

        fn export_errors(&self) -> Vec<String> {
            self.export_errors.lock().unwrap().clone()
        }

        /// The healthy server saw exactly the app's calls, all with the app's User-Agent and
        /// nothing of telemetry's; the endpoint saw telemetry's own requests only.
        fn assert_traffic_kept_apart(&self) {
            let app_requests = self.app_server.requests();
            assert_eq!(app_requests.len(), self.app_calls.load(Ordering::SeqCst));
            for request in &app_requests {
                let user_agent = request.header("user-agent").unwrap();
                assert!(user_agent.starts_with(APP_UA), "{user_agent}");
                assert!(!user_agent.contains(TELEMETRY_UA), "{user_agent}");
                assert!(request.header("authorization").is_none());
            }
            for request in &self.endpoint.requests() {
                let user_agent = request.header("user-agent").unwrap();
                assert!(user_agent.starts_with(TELEMETRY_UA), "{user_agent}");
                assert!(!user_agent.contains(APP_UA), "{user_agent}");
                assert!(!String::from_utf8_lossy(&request.body).contains(APP_UA));
            }
        }
    }

    fn route(phase: &str) -> String {
        format!("/{phase}/{{i}}")
    }

    /// The operations (phases) an upload reports: only the app's product, without errors.
    fn exported_calls(request: &Recorded) -> BTreeSet<String> {
        let mut phases = BTreeSet::new();
        for log in decode(request).1 {
            let driver = &log["entry"]["sql_driver_log"];
            assert_eq!(
                driver["system_configuration"]["client_app_name"],
                "kasal_genie"
            );
            assert!(driver.get("error_info").is_none(), "{driver}");
            phases.insert(driver["sql_statement_id"].as_str().unwrap().to_owned());
        }
        phases
    }

    /// The phases expected (the call counts are the app's, checked by `Stats::accepted`).
    fn phases(expected: &[(&str, u64)]) -> BTreeSet<String> {
        expected.iter().map(|(p, _)| p.to_string()).collect()
    }

    /// A reply body held open until the sender is dropped: the attempt stalls meanwhile.
    fn held_body() -> (mpsc::Sender<Bytes>, ReplyBody) {
        let (release, body) = mpsc::channel(1);
        (
            release,
            ReplyBody::Channel(Arc::new(Mutex::new(Some(body)))),
        )
    }

    /// `first` (its body held until the returned sender is dropped) for request 0, then
    /// `rest(n)`.
    fn first_held(
        first: Reply,
        rest: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> (
        mpsc::Sender<Bytes>,
        impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) {
        let (release, body) = held_body();
        let first = Mutex::new(Some(first.body(body)));
        let script = move |_: &Recorded, n| match n {
            0 => first
                .lock()
                .unwrap()
                .take()
                .expect("request 0 answered once"),
            n => rest(n),
        };
        (release, script)
    }

    #[tokio::test]
    async fn server_errors_500_500_200_deliver_once_in_three_attempts() {
        let (release, script) = first_held(Reply::status(500), |n| {
            Reply::status(if n < 2 { 500 } else { 200 })
        });
        let stack = Stack::start(script, |exporter| exporter).await;
        let flush = stack.export_through_held_reply(release).await;
        flush.await.unwrap();
        stack.calls("after", 5).await;

        let requests = stack.endpoint.requests();
        assert_eq!(requests.len(), 3, "500, 500, then 200");
        assert!(!event_ids(&requests[0]).is_empty());
        for retry in &requests[1..] {
            assert_eq!(event_ids(retry), event_ids(&requests[0]), "ids kept");
            assert_eq!(retry.body, requests[0].body, "the same upload re-sent");
        }
        assert_eq!(exported_calls(&requests[2]), phases(&[("before", 5)]));
        let stats = stack.exporter.stats();
        assert_eq!((stats.sent, stats.failed), (1, 0));
        assert!(stack.export_errors().is_empty());

        // The calls made meanwhile and after are delivered at shutdown, in one upload.
        let stats = stack.telemetry.shutdown().await;
        let requests = stack.endpoint.requests();
        assert_eq!(requests.len(), 4);
        assert_eq!(
            exported_calls(&requests[3]),
            phases(&[("during", 5), ("after", 5)])
        );
        assert_eq!((stats.accepted, stats.dropped), (15, 0));
        assert_eq!((stats.batches, stats.export_failures), (2, 0));
        stack.assert_traffic_kept_apart();
    }

    #[tokio::test]
    async fn unauthorized_is_one_attempt_then_the_batch_is_dropped_and_counted() {
        let (release, script) = first_held(Reply::status(401), |_| Reply::status(401));
        let stack = Stack::start(script, |exporter| exporter).await;
        let flush = stack.export_through_held_reply(release).await;
        flush.await.unwrap();
        // `flush` returned once the export did, retries included: none is left to come.
        assert_eq!(stack.endpoint.hits(), 1, "one attempt");
        let stats = stack.exporter.stats();
        assert_eq!((stats.dropped_unauthorized, stats.sent), (1, 0));
        let stats = stack.telemetry.stats();
        assert_eq!((stats.export_failures, stats.exported), (1, 0));
        assert_eq!(stack.export_errors(), ["Unauthorized(401)"]);
        stack.calls("after", 5).await;

        // The next batch gets one attempt too.
        let stats = stack.telemetry.shutdown().await;
        assert_eq!(stack.endpoint.hits(), 2);
        assert_eq!(stack.exporter.stats().dropped_unauthorized, 2);
        assert_eq!((stats.accepted, stats.export_failures), (15, 2));
        stack.assert_traffic_kept_apart();
    }

    #[tokio::test]
    async fn too_many_requests_waits_out_retry_after() {
        let (release, script) = first_held(Reply::status(429).header("retry-after", "1"), |_| {
            Reply::status(200)
        });
        let stack = Stack::start(script, |exporter| exporter).await;
        let flush = stack.export_through_held_reply(release).await;
        let released = Instant::now();
        stack.calls("waiting", 5).await; // the exporter waits out Retry-After: 1
        flush.await.unwrap();
        let waited = released.elapsed();
        eprintln!("Retry-After: 1 -> retried after {waited:?}");
        assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
        assert!(waited < Duration::from_secs(3), "waited {waited:?}");

        let requests = stack.endpoint.requests();
        assert_eq!(requests.len(), 2, "429, then 200");
        assert_eq!(requests[1].body, requests[0].body);
        assert_eq!(exported_calls(&requests[1]), phases(&[("before", 5)]));
        assert_eq!(stack.exporter.stats().sent, 1);
        assert!(stack.export_errors().is_empty());
        stack.calls("after", 5).await;
        assert_eq!(stack.telemetry.stats().accepted, 20);
        stack.assert_traffic_kept_apart();
    }

    #[tokio::test]
    async fn endpoint_down_opens_the_breaker_then_a_probe_delivers_what_was_buffered() {
        const OPEN_FOR: Duration = Duration::from_millis(600);
        // Resets for the first five requests, then healthy.
        let stack = Stack::start(
            |_, n| {
                if n < 5 {
                    Reply::Reset
                } else {
                    Reply::status(200)
                }
            },
            |exporter| {
                exporter
                    .retry(RetryPolicy::new().max_retries(0))
                    .circuit_breaker(CircuitBreakerConfig::new().open_for(OPEN_FOR))
            },
        )
        .await;
        for i in 0..5 {
            // Each failing export carries calls; more calls run while it fails.
            let (before, during) = (format!("before-{i}"), format!("during-{i}"));
            let export = async {
                stack.calls(&before, 2).await;
                stack.telemetry.flush().await;
            };
            tokio::join!(export, stack.calls(&during, 2));
        }
        assert_eq!(stack.endpoint.hits(), 5);
        let errors = stack.export_errors();
        assert_eq!(errors.len(), 5);
        assert!(
            errors.iter().all(|e| e.starts_with("Transport(")),
            "{errors:?}"
        );

        // Open: the app keeps calling; the batch is refused without a request.
        stack.calls("open", 3).await;
        stack.telemetry.flush().await;
        assert_eq!(
            stack.endpoint.hits(),
            5,
            "no request while the breaker is open"
        );
        assert_eq!(stack.exporter.stats().dropped_circuit_open, 1);
        assert_eq!(stack.export_errors().last().unwrap(), "CircuitOpen");

        // Buffered in the pipeline while the breaker cools down, delivered by the probe.
        stack.calls("buffered", 7).await;
        tokio::time::sleep(OPEN_FOR + Duration::from_millis(100)).await;
        stack.telemetry.flush().await;
        let requests = stack.endpoint.requests();
        assert_eq!(requests.len(), 6, "one probe");
        assert_eq!(exported_calls(&requests[5]), phases(&[("buffered", 7)]));

        // A second success closes the breaker.
        stack.calls("after", 5).await;
        stack.telemetry.flush().await;
        let requests = stack.endpoint.requests();
        assert_eq!(requests.len(), 7);
        assert_eq!(exported_calls(&requests[6]), phases(&[("after", 5)]));
        let stats = stack.exporter.stats();
        assert_eq!((stats.sent, stats.failed), (2, 5));
        assert_eq!(stack.export_errors().len(), 6);
        assert_eq!(stack.telemetry.stats().accepted, 35);
        stack.assert_traffic_kept_apart();
    }

    #[tokio::test]
    async fn endpoint_never_answers_export_times_out_and_shutdown_keeps_its_deadline() {
        const EXPORT_DEADLINE: Duration = Duration::from_millis(600);
        let stack = Stack::start(
            |_, _| Reply::Hang,
            |exporter| {
                exporter
                    .timeout(Duration::from_millis(250))
                    .export_deadline(EXPORT_DEADLINE)
            },
        )
        .await;
        stack.calls("before", 5).await;
        let started = Instant::now();
        let flush = stack.flush_meanwhile(1).await;
        stack.calls("during", 5).await; // the exporter is waiting on a silent endpoint
        flush.await.unwrap();
        let took = started.elapsed();
        eprintln!("export to a silent endpoint gave up after {took:?}");
        assert!(took >= EXPORT_DEADLINE, "{took:?}");
        assert!(took < EXPORT_DEADLINE + Duration::from_secs(1), "{took:?}");
        assert_eq!(stack.export_errors(), ["Timeout"]);
        assert_eq!(stack.exporter.stats().failed, 1);

        // Shutdown exports the rest to the same silent endpoint, and keeps its own deadline
        // (shorter than the exporter's); the app calls on, during and after it.
        stack.calls("after", 5).await;
        let hits = stack.endpoint.hits();
        let telemetry = stack.telemetry.clone();
        let started = Instant::now();
        let shutdown = tokio::spawn(async move { telemetry.shutdown().await });
        stack
            .endpoint
            .wait_for(hits + 1, Duration::from_secs(2))
            .await;
        assert!(stack.endpoint.hits() > hits, "shutdown is exporting");
        stack.calls("shutting-down", 5).await;
        let stats = shutdown.await.unwrap();
        let took = started.elapsed();
        eprintln!("shutdown with a silent endpoint took {took:?}: {stats:?}");
        assert!(
            took < SHUTDOWN_DEADLINE + Duration::from_millis(300),
            "{took:?}"
        );
        assert_eq!(stats.exported, 0);
        // Calls after the shutdown began are dropped by telemetry, not by the app.
        assert_eq!((stats.accepted, stats.dropped), (15, 5));
        stack.calls("shut-down", 5).await;
        stack.assert_traffic_kept_apart();
    }
}

// ---- The drivers' schema, what the server stored, skips, the breaker, flush deadlines. ----

mod truthful_export {
    use super::*;

    use std::time::SystemTime;

    use common::black_hole::BlackHole;
    use http::uri::Authority;
    use http::{Method, StatusCode};
    use kasal_telemetry::classify::{CircuitState, Outcome, Reason};
    use kasal_telemetry::export::databricks::UnknownFlag;
    use kasal_telemetry::export::databricks::payload::{FRONTEND_LOG_FIELDS, JsonType};
    use kasal_telemetry::trace::{CallRecord, Direction, ExecutionMode, OperationId};
    use kasal_telemetry::user_agent::Product;
    use kasal_telemetry::{ErrorEntry, OperationSummary, Telemetry};
    use serde_json::Value;
    use telemetry_endpoint::{batch_with_rollup, rollup};

    /// One call of operation `op`; terminal (a 400) when `terminal`, else a success. The only
    /// place these tests build a `CallRecord`.
    fn op_call(op: &str, terminal: bool) -> CallRecord {
        let (status, outcome) = if terminal {
            (
                StatusCode::BAD_REQUEST,
                Outcome::Terminal {
                    reason: Reason::Status(StatusCode::BAD_REQUEST),
                },
            )
        } else {
            (StatusCode::OK, Outcome::Success)
        };
        let mut record = CallRecord::new(
            Direction::Client,
            Product::Genie,
            Method::POST,
            SystemTime::now(),
        );
        record.host = Some(Authority::from_static("adb-1.2.azuredatabricks.net"));
        record.route = Some(Arc::from("/api/2.0/genie/spaces/{id}"));
        record.status = Some(status);
        record.outcome = outcome;
        record.latency = Duration::from_millis(12);
        record.response_bytes = 64;
        record.mode = ExecutionMode::User;
        record.caller_id = Some(Arc::from("alice@example.com"));
        record.operation_id = Some(OperationId::new(op));
        record.error = terminal.then(|| Arc::from("bad request"));
        record
    }

    /// Every violation of the drivers' closed schema in `log`: unknown keys, wrong JSON types.
    fn schema_violations(log: &Value) -> Vec<String> {
        fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
            let Some(object) = value.as_object() else {
                out.push(format!("`{prefix}` is not an object"));
                return;
            };
            for (key, value) in object {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                let Some((_, expected)) = FRONTEND_LOG_FIELDS.iter().find(|(p, _)| *p == path)
                else {
                    out.push(format!("unknown field `{path}`"));
                    continue;
                };
                let fits = match expected {
                    JsonType::Object => value.is_object(),
                    JsonType::String => value.is_string(),
                    JsonType::Integer => value.is_u64() || value.is_i64(),
                    JsonType::Boolean => value.is_boolean(),
                };
                if !fits {
                    out.push(format!("`{path}` = {value} is not {expected:?}"));
                } else if value.is_object() {
                    walk(&path, value, out);
                }
            }
        }
        let mut out = Vec::new();
        walk("", log, &mut out);
        out
    }

    /// Every kind of operation summary the pipeline emits.
    fn every_kind() -> Vec<OperationSummary> {
        let with_error = operation("session-1/statement-7", "upstream said no");
        let mut clean = operation("clean", "");
        clean.errors.clear();
        clean.retries = 0;
        let mut incomplete = operation("evicted-or-expired", "timeout");
        incomplete.complete = false;
        incomplete.mode = ExecutionMode::Service;
        incomplete.caller_id = None;
        incomplete.obo_dev_fallback = true;
        let mut many = operation("many-errors", "first");
        many.errors.push(ErrorEntry {
            error_type: "timeout".into(),
            message: "read timed out token=s3cr3t".into(),
            count: 7,
        });
        many.errors_dropped = 12;
        let mut extreme = operation("extreme", "x");
        extreme.latency_sum = Duration::MAX;
        extreme.started_at = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        extreme.product = Product::custom("my_tool").unwrap();
        let products = [Product::Mcp, Product::CrewGen, Product::Telemetry]
            .into_iter()
            .map(|product| {
                let mut op = operation(&format!("product-{}", product.as_str()), "e");
                op.product = product;
                op
            });
        [with_error, clean, incomplete, many, extreme]
            .into_iter()
            .chain(products)
            .collect()
    }

    #[tokio::test]
    async fn every_log_sent_fits_the_drivers_closed_schema() {
        let server = TestServer::start(|_, _| {
            Reply::text(200, r#"{"errors":[],"numSuccess":0,"numProtoSuccess":8}"#)
        })
        .await;
        let kinds = every_kind();
        for authenticated in [true, false] {
            let mut builder = exporter(&server).workspace_id(1234567890123456);
            if authenticated {
                builder = builder.credentials(StaticToken::new(PAT).unwrap());
            }
            let exporter = builder.build().unwrap();
            let batch = Batch {
                operations: kinds.clone(),
                rollups: vec![rollup(), rollup()],
                usage: Vec::new(),
            };
            let result = export(&exporter, batch).await;
            // The rollups are not sent: they have no place in the schema.
            assert!(
                matches!(
                    result,
                    Err(ExportError::Undelivered(Undelivered::Partial {
                        delivered: 8,
                        rejected: 0,
                        not_supported: 2
                    }))
                ),
                "{result:?}"
            );
            assert_eq!(exporter.stats().rollups_not_sent, 2);
        }
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].uri.path(), "/telemetry-ext");
        assert_eq!(requests[1].uri.path(), "/telemetry-unauth");
        for request in &requests {
            let (_, logs) = decode(request);
            assert_eq!(logs.len(), kinds.len());
            for log in &logs {
                let violations = schema_violations(log);
                assert!(violations.is_empty(), "{violations:?} in {log}");
            }
        }
        // Kasal's data sits in defined fields.
        let (_, logs) = decode(&requests[0]);
        let driver = &logs[0]["entry"]["sql_driver_log"];
        assert_eq!(
            driver["system_configuration"]["client_app_name"],
            "kasal_genie"
        );
        assert_eq!(driver["operation_latency_ms"], 250);
        assert_eq!(driver["sql_operation"]["retry_count"], 1);
        assert_eq!(driver["error_info"]["error_name"], "500");
        let custom = &logs[4]["entry"]["sql_driver_log"];
        assert_eq!(
            custom["system_configuration"]["client_app_name"],
            "kasal_my_tool"
        );
        assert_eq!(custom["operation_latency_ms"], u64::MAX);
        assert_eq!(logs[4]["context"]["client_context"]["timestamp_millis"], 0);
        let raw = String::from_utf8_lossy(&requests[0].body);
        assert!(!raw.contains("s3cr3t") && !raw.contains("alice@example.com"));
    }

    #[tokio::test]
    async fn logs_the_server_did_not_store_are_counted_as_rejected() {
        let server = TestServer::start(|_, _| {
            Reply::text(
                200,
                r#"{"errors":["protoLogs[1]: unknown field"],"numSuccess":0,"numProtoSuccess":1}"#,
            )
        })
        .await;
        let exporter = exporter(&server)
            .credentials(StaticToken::new(PAT).unwrap())
            .build()
            .unwrap();
        let mut batch = batch("a");
        batch.operations.push(operation("b", "x"));
        batch.operations.push(operation("c", "x"));
        let result = export(&exporter, batch).await;
        assert!(
            matches!(
                result,
                Err(ExportError::Undelivered(Undelivered::Partial {
                    delivered: 1,
                    rejected: 2,
                    not_supported: 0
                }))
            ),
            "{result:?}"
        );
        let stats = exporter.stats();
        assert_eq!(
            (stats.sent, stats.logs_sent, stats.logs_rejected),
            (1, 1, 2)
        );

        // Through the pipeline: the rejected logs are not called exported.
        let telemetry = Telemetry::builder()
            .exporter(exporter.clone())
            .ignore_env()
            .flush_interval(Duration::from_secs(3600))
            .build();
        for op in ["d", "e", "f"] {
            telemetry.record(op_call(op, false));
            telemetry.complete_operation(&OperationId::new(op));
        }
        let stats = telemetry.flush().await;
        assert_eq!(
            (stats.exported, stats.export_rejected, stats.export_failures),
            (1, 2, 0)
        );
        assert_eq!(stats.batches, 1);
        assert_eq!(exporter.stats().logs_rejected, 4);

        // An answer without numProtoSuccess: every log counts as stored (and it is counted).
        let silent = TestServer::always(200).await;
        let exporter = super::exporter(&silent).build().unwrap();
        export(&exporter, batch_with_rollup("g")).await.unwrap_err();
        let stats = exporter.stats();
        assert_eq!(
            (
                stats.logs_sent,
                stats.logs_rejected,
                stats.unreadable_answers
            ),
            (1, 0, 1)
        );
    }

    /// The skip WARNs (`telemetry export skipped: …`) captured, as (reason, setting).
    fn skip_warnings(captured: &spans::Captured) -> Vec<(String, String)> {
        captured
            .events()
            .into_iter()
            .filter(|event| {
                event
                    .field("message")
                    .is_some_and(|m| m.starts_with("telemetry export skipped:"))
            })
            .map(|event| {
                (
                    event.field("reason").unwrap_or_default(),
                    event.field("setting").unwrap_or_default(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn skipped_batches_are_counted_by_reason_never_exported_and_warned_once() {
        let flag_without_ours = r#"{"flags":[{"name":"other.flag","value":"true"}]}"#;
        let cases: Vec<(&str, SkipReason, Reply)> = vec![
            (
                "flag off",
                SkipReason::FlagOff,
                Reply::text(200, &flag_body(false, None)),
            ),
            (
                "flag unknown (404)",
                SkipReason::FlagUnknown,
                Reply::status(404),
            ),
            (
                "flag unknown (absent)",
                SkipReason::FlagUnknown,
                Reply::text(200, flag_without_ours),
            ),
            (
                "flag endpoint failing",
                SkipReason::FlagUnavailable,
                Reply::status(503),
            ),
        ];
        for (case, reason, reply) in cases {
            let (dispatch, captured) = spans::SpanCapture::dispatch();
            let _guard = tracing::dispatcher::set_default(&dispatch);
            let reply = std::sync::Mutex::new(Some(reply));
            let server = workspace(move |_| {
                reply
                    .lock()
                    .unwrap()
                    .take()
                    .expect("the flag is fetched once (cached, or backed off)")
            })
            .await;
            let exporter = DatabricksExporter::builder(server.url(""))
                .allow_private_hosts(true)
                .credentials(StaticToken::new(PAT).unwrap())
                .build()
                .unwrap();
            let telemetry = Telemetry::builder()
                .exporter(exporter.clone())
                .ignore_env()
                .flush_interval(Duration::from_secs(3600))
                .build();
            let mut stats = telemetry.stats();
            for round in 0..3 {
                for i in 0..2 {
                    let op = format!("{round}-{i}");
                    telemetry.record(op_call(&op, false));
                    telemetry.complete_operation(&OperationId::new(op));
                }
                stats = telemetry.flush().await;
            }
            assert!(
                telemetry_requests(&server).is_empty(),
                "{case}: nothing sent"
            );
            assert_eq!(server.hits(), 1, "{case}: one flag fetch");
            assert_eq!(
                (stats.exported, stats.export_failures, stats.batches),
                (0, 0, 0),
                "{case}"
            );
            assert_eq!(stats.skipped, 6, "{case}");
            assert_eq!(stats.skipped_by.get(reason), 6, "{case}: {stats:?}");
            let exporter_stats = exporter.stats();
            let by_reason = match reason {
                SkipReason::FlagOff => exporter_stats.skipped_flag_off,
                SkipReason::FlagUnknown => exporter_stats.skipped_flag_unknown,
                _ => exporter_stats.skipped_flag_unavailable,
            };
            assert_eq!(by_reason, 3, "{case}: three batches");
            assert_eq!(exporter_stats.sent, 0);
            let warnings = skip_warnings(&captured);
            assert_eq!(warnings.len(), 1, "{case}: exactly one WARN: {warnings:?}");
            assert_eq!(warnings[0].0, reason.as_str(), "{case}");
            assert!(!warnings[0].1.is_empty(), "{case}: names its setting");
        }
    }

    #[tokio::test]
    async fn an_unknown_flag_exports_when_the_policy_says_so() {
        let server = workspace(|_| Reply::status(404)).await;
        let flags = FeatureFlagCache::builder()
            .client(common::client())
            .unknown_flag(UnknownFlag::Export)
            .build()
            .unwrap();
        let exporter = DatabricksExporter::builder(server.url(""))
            .allow_private_hosts(true)
            .feature_flags(flags.clone())
            .build()
            .unwrap();
        export(&exporter, batch("a")).await.unwrap();
        assert_eq!(telemetry_requests(&server).len(), 1);
        let host = validate_host(&server.url(""), true).unwrap();
        assert_eq!(flags.state(&host).unwrap().value, FlagValue::Unknown);
        assert_eq!(flags.stats().unknown, 1);
    }

    #[tokio::test]
    async fn the_flag_client_version_and_name_are_settings() {
        let server = TestServer::start(|request, _| {
            if request.uri.path() == "/api/2.0/connector-service/feature-flags/NODEJS/1.12.0" {
                Reply::text(
                    200,
                    r#"{"flags":[{"name":"my.flag","value":"true"}],"ttl_seconds":900}"#,
                )
            } else {
                Reply::status(404)
            }
        })
        .await;
        let flags = FeatureFlagCache::builder()
            .client(common::client())
            .client_name("NODEJS")
            .client_version("1.12.0")
            .flag("my.flag")
            .build()
            .unwrap();
        let host = validate_host(&server.url(""), true).unwrap();
        assert_eq!(flags.check(&host).await, FlagValue::On);
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn export_errors_warn_once_per_change_of_state() {
        let (dispatch, captured) = spans::SpanCapture::dispatch();
        let _guard = tracing::dispatcher::set_default(&dispatch);
        // Per export: fail, fail, ok, ok, fail, ok (no retries, so one request each).
        let answers = [500, 503, 200, 200, 400, 200];
        let server = TestServer::start(move |_, n| Reply::status(answers[n.min(5)])).await;
        let exporter = exporter(&server)
            .retry(kasal_telemetry::classify::RetryPolicy::new().max_retries(0))
            .build()
            .unwrap();
        for i in 0..answers.len() {
            let _ = export(&exporter, batch(&format!("op-{i}"))).await;
        }
        let warnings: Vec<String> = captured
            .events()
            .into_iter()
            .filter_map(|event| event.field("message"))
            .filter(|message| {
                message.starts_with("telemetry export failing")
                    || message == "telemetry export recovered"
            })
            .map(|message| message.split(';').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            warnings,
            [
                "telemetry export failing",
                "telemetry export recovered",
                "telemetry export failing",
                "telemetry export recovered"
            ]
        );
        // The second failure in a row is at debug, never hidden from the counters.
        let stats = exporter.stats();
        assert_eq!(
            (stats.failed, stats.dropped_rejected, stats.sent),
            (2, 1, 3)
        );
    }

    /// The defaults, scaled down: 5 failures open the breaker (default), the attempt timeout
    /// 10 s → 50 ms, the export deadline 30 s → 300 ms.
    #[tokio::test]
    async fn black_holed_endpoint_opens_the_breaker_after_five_exports() {
        let hole = BlackHole::start().await;
        let exporter = DatabricksExporter::builder(hole.url(""))
            .allow_private_hosts(true)
            .force_enabled(true)
            .credentials(StaticToken::new(PAT).unwrap())
            .timeout(Duration::from_millis(50))
            .export_deadline(Duration::from_millis(300))
            .build()
            .unwrap();
        for i in 0..5 {
            assert_eq!(
                exporter.circuit_breaker().state(&hole.authority()),
                CircuitState::Closed,
                "closed before export {i}"
            );
            let result = export(&exporter, batch(&format!("op-{i}"))).await;
            assert!(
                matches!(
                    result,
                    Err(ExportError::Timeout | ExportError::Transport(_))
                ),
                "{result:?}"
            );
        }
        assert_eq!(
            exporter.circuit_breaker().state(&hole.authority()),
            CircuitState::Open
        );
        let connections = hole.connections();
        assert!(connections >= 5, "{connections}");
        for i in 0..3 {
            let result = export(&exporter, batch(&format!("open-{i}"))).await;
            assert!(
                matches!(result, Err(ExportError::CircuitOpen)),
                "{result:?}"
            );
        }
        assert_eq!(
            hole.connections(),
            connections,
            "nothing reaches it while open"
        );
        let stats = exporter.stats();
        assert_eq!((stats.failed, stats.dropped_circuit_open), (5, 3));
    }

    /// The exporter's own deadlines left at their defaults (10 s, 30 s): only the pipeline's
    /// export timeout ends each export, by dropping it. The breaker still sees the failure.
    #[tokio::test]
    async fn an_export_dropped_by_the_pipeline_deadline_counts_for_the_breaker() {
        let hole = BlackHole::start().await;
        let exporter = DatabricksExporter::builder(hole.url(""))
            .allow_private_hosts(true)
            .force_enabled(true)
            .build()
            .unwrap();
        let telemetry = Telemetry::builder()
            .exporter(exporter.clone())
            .ignore_env()
            .flush_interval(Duration::from_secs(3600))
            .export_timeout(Duration::from_millis(150))
            .flush_deadline(Duration::from_secs(5))
            .build();
        let mut stats = telemetry.stats();
        for i in 0..5 {
            telemetry.record(op_call(&format!("op-{i}"), true));
            stats = telemetry.flush().await;
        }
        assert_eq!(stats.export_failures, 5);
        assert_eq!(
            exporter.circuit_breaker().state(&hole.authority()),
            CircuitState::Open
        );
        let connections = hole.connections();
        for i in 0..2 {
            telemetry.record(op_call(&format!("open-{i}"), true));
            stats = telemetry.flush().await;
        }
        assert_eq!(
            hole.connections(),
            connections,
            "nothing reaches it while open"
        );
        assert_eq!((stats.export_failures, stats.exported), (7, 0));
        assert_eq!(exporter.stats().dropped_circuit_open, 2);
    }

    #[tokio::test]
    async fn flush_returns_within_its_deadline_with_a_stalled_endpoint_and_1000_terminal_operations()
     {
        const DEADLINE: Duration = Duration::from_millis(500);
        let hole = BlackHole::start().await;
        let exporter = DatabricksExporter::builder(hole.url(""))
            .allow_private_hosts(true)
            .force_enabled(true)
            .build()
            .unwrap();
        // The flush deadline defaults to the shutdown deadline.
        let telemetry = Telemetry::builder()
            .exporter(exporter)
            .ignore_env()
            .shutdown_deadline(DEADLINE)
            .build();
        for i in 0..1000 {
            telemetry.record(op_call(&format!("op-{i}"), true));
        }
        let started = Instant::now();
        let stats = telemetry.flush().await;
        let took = started.elapsed();
        eprintln!("flush with a stalled endpoint and 1,000 terminal operations: {took:?}");
        assert!(took < DEADLINE + Duration::from_millis(300), "{took:?}");
        assert_eq!((stats.accepted, stats.dropped), (1000, 0));
        assert_eq!(stats.exported, 0);
        assert!(hole.connections() >= 1, "an export was under way");

        // Its own setting wins.
        let telemetry = Telemetry::builder()
            .exporter(
                DatabricksExporter::builder(hole.url(""))
                    .allow_private_hosts(true)
                    .force_enabled(true)
                    .build()
                    .unwrap(),
            )
            .ignore_env()
            .flush_deadline(Duration::from_millis(100))
            .build();
        for i in 0..1000 {
            telemetry.record(op_call(&format!("op-{i}"), true));
        }
        let started = Instant::now();
        telemetry.flush().await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(400), "{took:?}");
    }
}
