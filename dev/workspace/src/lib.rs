//! A local Databricks workspace for development: a small axum app on 127.0.0.1 that answers the
//! APIs a Kasal service calls, with realistic JSON, records every call it sees, and fails on
//! request.
//!
//! | route | answers |
//! |---|---|
//! | `POST /serving-endpoints/{name}/invocations` | chat completion (`messages`; SSE when `"stream": true`, usage in the last chunk before `[DONE]`) or embeddings (`input`), each with an OpenAI-compatible `usage` |
//! | `POST /api/2.0/vector-search/indexes/{name}/query` | `manifest` + `result.data_array` rows |
//! | `GET /api/2.0/secrets/get`, `/secrets/list`, `/secrets/scopes/list` | the Secrets API (`value` base64) |
//! | `/api/2.0/mcp/functions/system/ai` ([`MCP_PATH`]) | an MCP streamable-HTTP server (official `rmcp`): tools `echo`, `add`, `search_docs` |
//! | `GET /api/2.0/connector-service/feature-flags/{client}/{version}` | `{flags: [{name, value}], ttl_seconds}` ([`WorkspaceBuilder::flag`]) |
//! | `POST /telemetry-ext`, `/telemetry-unauth` | decodes and keeps every upload ([`TelemetryBatch`]) |
//! | `POST /v1/metrics`, `/v1/traces`, `/v1/logs` | an OTLP/HTTP receiver (protobuf), kept as counts ([`OtlpReceived`]) |
//!
//! Every call is recorded ([`RecordedCall`]: method, path, route, User-Agent, forwarded user,
//! the user its token belongs to, status, latency), and [`Workspace::inject`] makes the next N
//! calls to a route answer 429 (with `Retry-After`), 503, 403 or wait first.
//!
//! ```
//! use std::time::Duration;
//! use kasal_dev_workspace::{Fault, Workspace};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let workspace = Workspace::builder()
//!     .user("dapi-local-alice", "alice@example.com")
//!     .start()
//!     .await?;
//! assert!(workspace.url().starts_with("http://127.0.0.1:"));
//!
//! // The next two model calls are rate limited, the one after that is slow.
//! workspace.inject("/serving-endpoints/", 2, Fault::too_many_requests(Duration::ZERO));
//! workspace.inject("/serving-endpoints/", 1, Fault::delay(Duration::from_millis(50)));
//! assert_eq!(workspace.faults_remaining(), 3);
//!
//! // ... point a client at workspace.url(), then look at what the server saw:
//! assert!(workspace.calls().is_empty());
//! workspace.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! It never leaves 127.0.0.1, keeps no token it receives (only whether there was one and whose
//! it is), and is for development and tests only (`publish = false`).
#![deny(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(missing_docs, rust_2018_idioms)]

mod error;
mod fault;
mod flags;
mod mcp;
mod otlp;
mod record;
mod recorded;
mod secrets;
mod serving;
mod state;
mod target;
mod telemetry;
mod vector_search;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use http::StatusCode;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use fault::Fault;
pub use mcp::MCP_PATH;
pub use record::product_of;
pub use recorded::{OtlpReceived, RecordedCall, ServedUsage, TelemetryBatch};
pub use target::Target;

use state::{Settings, Shared};

/// The flag the `kasal-telemetry` exporter asks for by default (`FeatureFlagCache::DEFAULT_FLAG`,
/// the Python connector's), served as `"true"` unless the builder says
/// otherwise.
pub const DEFAULT_TELEMETRY_FLAG: &str =
    "databricks.partnerplatform.clientConfigsFeatureFlags.enableTelemetryForPythonDriver";

/// The secret scope served by default, with [`DEFAULT_SECRET_KEYS`].
pub const DEFAULT_SECRET_SCOPE: &str = "kasal";

/// The keys of [`DEFAULT_SECRET_SCOPE`] (values are fake and never worth printing anyway).
pub const DEFAULT_SECRET_KEYS: [&str; 2] = ["openai_api_key", "search_service_token"];

/// Settings for a [`Workspace`]; [`start`](Self::start) binds and serves.
#[derive(Clone, Debug)]
#[must_use]
pub struct WorkspaceBuilder {
    port: u16,
    flags: Vec<(String, String)>,
    flag_ttl_seconds: u64,
    secrets: BTreeMap<(String, String), String>,
    users: HashMap<String, String>,
    stream_chunk_delay: Duration,
}

impl Default for WorkspaceBuilder {
    fn default() -> Self {
        let secrets = DEFAULT_SECRET_KEYS
            .iter()
            .map(|key| {
                (
                    (DEFAULT_SECRET_SCOPE.to_owned(), (*key).to_owned()),
                    format!("local-fake-{key}-value"),
                )
            })
            .collect();
        WorkspaceBuilder {
            port: 0,
            flags: vec![(DEFAULT_TELEMETRY_FLAG.to_owned(), "true".to_owned())],
            flag_ttl_seconds: 900,
            secrets,
            users: HashMap::new(),
            stream_chunk_delay: Duration::from_millis(2),
        }
    }
}

impl WorkspaceBuilder {
    /// The port on 127.0.0.1 (default 0: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Serve flag `name` with `value` (replacing a flag of that name; the default set is
    /// [`DEFAULT_TELEMETRY_FLAG`] = `"true"`).
    pub fn flag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        match self.flags.iter_mut().find(|(n, _)| *n == name) {
            Some(flag) => flag.1 = value,
            None => self.flags.push((name, value)),
        }
        self
    }

    /// Serve exactly these flags (none: the endpoint answers `{"flags": []}`).
    pub fn flags<N: Into<String>, V: Into<String>>(
        mut self,
        flags: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        self.flags = flags
            .into_iter()
            .map(|(n, v)| (n.into(), v.into()))
            .collect();
        self
    }

    /// The `ttl_seconds` of the flag answer (default 900).
    pub fn flag_ttl_seconds(mut self, ttl: u64) -> Self {
        self.flag_ttl_seconds = ttl;
        self
    }

    /// Add a secret.
    pub fn secret(
        mut self,
        scope: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.secrets
            .insert((scope.into(), key.into()), value.into());
        self
    }

    /// Say whose a bearer token is: calls with `Authorization: Bearer <token>` are recorded with
    /// [`RecordedCall::caller`] = `user`.
    pub fn user(mut self, token: impl Into<String>, user: impl Into<String>) -> Self {
        self.users.insert(token.into(), user.into());
        self
    }

    /// Pause between two chunks of a streamed completion (default 2 ms).
    pub fn stream_chunk_delay(mut self, delay: Duration) -> Self {
        self.stream_chunk_delay = delay;
        self
    }

    /// Bind 127.0.0.1 and serve on the current tokio runtime until
    /// [`Workspace::shutdown`] (or drop).
    pub async fn start(self) -> std::io::Result<Workspace> {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))
                .await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(Settings {
            flags: self.flags,
            flag_ttl_seconds: self.flag_ttl_seconds,
            secrets: self.secrets,
            users: self.users,
            stream_chunk_delay: self.stream_chunk_delay,
        }));
        let cancel = CancellationToken::new();
        let app = router(shared.clone(), cancel.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                eprintln!("local workspace stopped: {error}");
            }
        });
        Ok(Workspace {
            shared,
            addr,
            stop: Some(stop),
            server: Some(server),
            cancel,
        })
    }
}

fn router(shared: Arc<Shared>, cancel: CancellationToken) -> Router {
    let mut config = StreamableHttpServerConfig::default();
    config.cancellation_token = cancel;
    let mcp = StreamableHttpService::new(
        || Ok(mcp::WorkspaceTools::new()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .route(
            "/serving-endpoints/{name}/invocations",
            post(serving::invocations),
        )
        .route(
            "/api/2.0/vector-search/indexes/{name}/query",
            post(vector_search::query),
        )
        .route("/api/2.0/secrets/get", get(secrets::get))
        .route("/api/2.0/secrets/list", get(secrets::list))
        .route("/api/2.0/secrets/scopes/list", get(secrets::scopes))
        .route(
            "/api/2.0/connector-service/feature-flags/{client}/{version}",
            get(flags::feature_flags),
        )
        .route("/telemetry-ext", post(telemetry::upload))
        .route("/telemetry-unauth", post(telemetry::upload))
        .route("/v1/metrics", post(otlp::metrics))
        .route("/v1/traces", post(otlp::traces))
        .route("/v1/logs", post(otlp::logs))
        .nest_service(MCP_PATH, mcp)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            record::record,
        ))
        .with_state(shared)
}

async fn not_found(uri: http::Uri) -> axum::response::Response {
    error::error_response(
        StatusCode::NOT_FOUND,
        &format!("no such API in the local workspace: {}", uri.path()),
        None,
    )
}

/// A running local workspace. Dropping it stops the server; [`shutdown`](Self::shutdown) also
/// waits for it to stop.
pub struct Workspace {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    cancel: CancellationToken,
}

impl fmt::Debug for Workspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Workspace {
    /// Start a workspace with the default settings on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Workspace> {
        WorkspaceBuilder::default().start().await
    }

    /// Settings first.
    pub fn builder() -> WorkspaceBuilder {
        WorkspaceBuilder::default()
    }

    /// `http://127.0.0.1:<port>`: the workspace host to give a client or exporter.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP endpoint's URL (`{url}/api/2.0/mcp/functions/system/ai`).
    pub fn mcp_url(&self) -> String {
        format!("{}{MCP_PATH}", self.url())
    }

    /// The OTLP/HTTP metrics endpoint's URL (`{url}/v1/metrics`).
    pub fn otlp_metrics_url(&self) -> String {
        format!("{}/v1/metrics", self.url())
    }

    /// Every call answered so far, in the order the answers were made.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.calls()
    }

    /// Every telemetry upload decoded so far.
    pub fn telemetry_batches(&self) -> Vec<TelemetryBatch> {
        self.shared.batches()
    }

    /// Telemetry uploads refused as malformed (not JSON, bad gzip).
    pub fn malformed_uploads(&self) -> u64 {
        self.shared.malformed_uploads()
    }

    /// What the OTLP receiver decoded.
    pub fn otlp(&self) -> OtlpReceived {
        self.shared.otlp()
    }

    /// Token usage the serving endpoint answered, per model (the endpoint name).
    pub fn usage_served(&self) -> BTreeMap<String, ServedUsage> {
        self.shared.usage()
    }

    /// Make the next `times` calls whose path starts with `route` meet `fault` (in the order
    /// injected: an earlier injection for a matching route is used up first).
    pub fn inject(&self, route: &str, times: usize, fault: Fault) {
        self.shared.inject(route, times, fault);
    }

    /// Faults injected and not yet met.
    pub fn faults_remaining(&self) -> usize {
        self.shared.faults_remaining()
    }

    /// Drop every pending fault.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Serve flag `name` with `value` from now on.
    pub fn set_flag(&self, name: &str, value: &str) {
        self.shared.set_flag(name, value);
    }

    /// Wait until `done(self)` holds (checked whenever something is recorded), at most
    /// `timeout`. Returns whether it held.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Workspace) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(self);
            }
        }
    }

    /// Stop serving: close the MCP sessions, finish the calls in flight (at most 2 s), stop.
    pub async fn shutdown(mut self) {
        self.stop_serving();
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }

    fn stop_serving(&mut self) {
        self.cancel.cancel();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        self.stop_serving();
    }
}
