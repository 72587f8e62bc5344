//! Export to the Databricks workspace telemetry service, in the format the Databricks JDBC and
//! Node.js drivers use.
//!
//! [`DatabricksExporter`] is a `tower::Service<Batch, Response = ()>`: the telemetry pipeline hands
//! it one [`Batch`] at a time from its own task. For each batch it
//!
//! 1. skips it (`Ok`, counted) when `DATABRICKS_TELEMETRY_DISABLED` / `KASAL_TELEMETRY_DISABLED`
//!    is set, or when the workspace's feature flag ([`FeatureFlagCache`]) is off and export was
//!    not forced with [`force_enabled(true)`](DatabricksExporterBuilder::force_enabled);
//! 2. asks its [`Credentials`] for an `Authorization` value: with one it POSTs to
//!    `{host}/telemetry-ext`, without (none configured, `None`, an error or a timeout) to
//!    `{host}/telemetry-unauth` with ids, system configuration and stack traces left out;
//! 3. encodes the batch once ([`encode_upload`]; the field mapping is documented in the
//!    [`payload`] module), so every retry re-sends the same
//!    `frontend_log_event_id`s;
//! 4. sends it through its own client: per-host circuit breaker → retry (3 retries, 100 ms base,
//!    1 s cap, 100 ms jitter, Retry-After honoured, never on 4xx) → `User-Agent:
//!    kasal_telemetry/<version>` → per-attempt timeout → hyper-util + rustls (or the transport
//!    given to [`client`](DatabricksExporterBuilder::client)).
//!
//! 401 and 403 drop the batch after one attempt (`dropped_unauthorized`); other 4xx drop it too
//! (`dropped_rejected`). Failures come back as [`ExportError`], which only the pipeline sees (it
//! counts them); nothing reaches the application, and everything is logged at `debug` only.
//!
//! What this module must never do: send a request to a host that did not pass
//! [`validate_host`], put a token or an unredacted message in a log or a payload, or hold the
//! application's calls: it has no `TelemetryLayer` and shares nothing with the app's clients.
//!
//! ```no_run
//! use std::time::Duration;
//! use kasal_telemetry::credentials::EnvToken;
//! use kasal_telemetry::export::databricks::DatabricksExporter;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let exporter = DatabricksExporter::builder("adb-123.4.azuredatabricks.net")
//!     .credentials(EnvToken::new())
//!     .workspace_id(1234567890123456)
//!     .timeout(Duration::from_secs(10))
//!     .build()?;
//! // Telemetry::builder().exporter(exporter)...
//! # let _ = exporter; Ok(()) }
//! ```

mod beacon;
pub(crate) mod client;
mod host;
pub mod payload;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use kasal_trace::redact_error;
use tower::ServiceExt;

use client::HttpClient;
pub use host::{HostError, WorkspaceHost, validate_host};
pub use payload::{PayloadOptions, SystemConfiguration, encode_upload};

use crate::BoxError;
use crate::credentials::Credentials;
use crate::event::Batch;
use crate::flags::{self, FeatureFlagCache};

/// A configuration problem found by [`DatabricksExporterBuilder::build`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExporterError {
    /// The workspace host was refused.
    #[error("invalid workspace host: {0}")]
    Host(#[from] HostError),
    /// The default TLS client could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// `gzip(true)` without the crate's `gzip` feature.
    #[error("gzip(true) needs the `gzip` feature of kasal-telemetry")]
    GzipUnavailable,
    /// A setting was out of range.
    #[error("invalid exporter setting: {0}")]
    Setting(&'static str),
}

/// Why one export did not deliver its batch. Seen only by the pipeline, which counts it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// 401 or 403: the batch was dropped after one attempt.
    #[error("telemetry endpoint refused the credentials ({0})")]
    Unauthorized(StatusCode),
    /// Another 4xx: the batch was dropped after one attempt.
    #[error("telemetry endpoint rejected the upload ({0})")]
    Rejected(StatusCode),
    /// A 5xx or 429 that outlasted the retries.
    #[error("telemetry endpoint failed ({0})")]
    Status(StatusCode),
    /// The per-host circuit breaker is open: nothing was sent.
    #[error("telemetry circuit breaker open")]
    CircuitOpen,
    /// The export (all attempts) did not finish within its deadline.
    #[error("telemetry export timed out")]
    Timeout,
    /// The request could not be sent (connect, reset, per-attempt timeout, ...); the message is
    /// redacted.
    #[error("telemetry export failed: {0}")]
    Transport(String),
}

/// Counters of a [`DatabricksExporter`] (shared by its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExporterStats {
    /// Batches delivered (2xx).
    pub sent: u64,
    /// Logs (operations + rollups) delivered.
    pub logs_sent: u64,
    /// Batches sent unauthenticated (to `/telemetry-unauth`), delivered or not.
    pub unauthenticated: u64,
    /// Batches lost to 5xx/429 after retries, transport errors or timeouts.
    pub failed: u64,
    /// Batches dropped on 401/403.
    pub dropped_unauthorized: u64,
    /// Batches dropped on another 4xx.
    pub dropped_rejected: u64,
    /// Batches dropped because the circuit breaker was open.
    pub dropped_circuit_open: u64,
    /// Batches skipped because the feature flag was off.
    pub skipped_flag_off: u64,
    /// Batches skipped because of `DATABRICKS_TELEMETRY_DISABLED` / `KASAL_TELEMETRY_DISABLED`.
    pub skipped_disabled: u64,
    /// Usage beacon requests answered 2xx (see
    /// [`usage_beacon`](DatabricksExporterBuilder::usage_beacon)).
    pub beacons_sent: u64,
    /// Usage beacon requests that failed (after retries) or were not answered 2xx.
    pub beacons_failed: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    logs_sent: AtomicU64,
    unauthenticated: AtomicU64,
    failed: AtomicU64,
    dropped_unauthorized: AtomicU64,
    dropped_rejected: AtomicU64,
    dropped_circuit_open: AtomicU64,
    skipped_flag_off: AtomicU64,
    skipped_disabled: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Circuit-breaker settings of the export client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BreakerSettings {
    pub(crate) failures: u32,
    pub(crate) open_for: Duration,
    pub(crate) successes: u32,
}

/// Exports [`Batch`]es to a Databricks workspace. Cheap to clone; clones share the client, the
/// circuit breaker and the counters. See the [module docs](self).
#[derive(Clone)]
pub struct DatabricksExporter {
    inner: Arc<Inner>,
}

struct Inner {
    host: WorkspaceHost,
    ext_uri: Uri,
    unauth_uri: Uri,
    client: HttpClient,
    credentials: Option<Arc<dyn Credentials>>,
    flags: Option<FeatureFlagCache>,
    gzip: bool,
    credentials_timeout: Duration,
    deadline: Duration,
    workspace_id: Option<u64>,
    user_agent: Arc<str>,
    system: Arc<SystemConfiguration>,
    counters: Counters,
    /// The usage beacon, when on.
    beacon: Option<beacon::Beacon>,
}

impl fmt::Debug for DatabricksExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabricksExporter")
            .field("host", &self.inner.host)
            .field("authenticated", &self.inner.credentials.is_some())
            .field("forced", &self.inner.flags.is_none())
            .finish_non_exhaustive()
    }
}

impl DatabricksExporter {
    /// Starts a builder for `host` (`https://adb-….azuredatabricks.net` or the bare name).
    pub fn builder(host: impl Into<String>) -> DatabricksExporterBuilder {
        DatabricksExporterBuilder::new(host.into())
    }

    /// The validated host.
    pub fn host(&self) -> &WorkspaceHost {
        &self.inner.host
    }

    /// Counters so far.
    pub fn stats(&self) -> ExporterStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExporterStats {
            sent: get(&c.sent),
            logs_sent: get(&c.logs_sent),
            unauthenticated: get(&c.unauthenticated),
            failed: get(&c.failed),
            dropped_unauthorized: get(&c.dropped_unauthorized),
            dropped_rejected: get(&c.dropped_rejected),
            dropped_circuit_open: get(&c.dropped_circuit_open),
            skipped_flag_off: get(&c.skipped_flag_off),
            skipped_disabled: get(&c.skipped_disabled),
            beacons_sent: self.inner.beacon.as_ref().map_or(0, |b| get(&b.sent)),
            beacons_failed: self.inner.beacon.as_ref().map_or(0, |b| get(&b.failed)),
        }
    }
}

impl Inner {
    async fn export(&self, mut batch: Batch) -> Result<(), ExportError> {
        // The drivers' schema has no field for model tokens: they leave by the beacon, if on.
        let usage = std::mem::take(&mut batch.usage);
        let beacon = self.beacon.as_ref().filter(|_| !usage.is_empty());
        if batch.is_empty() && beacon.is_none() {
            return Ok(());
        }
        if flags::disabled_by_env() {
            bump(&self.counters.skipped_disabled);
            tracing::debug!(
                items = batch.len(),
                "telemetry export disabled by environment"
            );
            return Ok(());
        }
        if let Some(flags) = &self.flags {
            if !flags.is_enabled(&self.host).await {
                bump(&self.counters.skipped_flag_off);
                tracing::debug!(
                    items = batch.len(),
                    "telemetry feature flag off; batch skipped"
                );
                return Ok(());
            }
        }

        let authorization = self.authorization().await;
        if let Some(beacon) = beacon {
            let (client, prefix) = (&self.client, &self.user_agent);
            beacon
                .send(
                    client,
                    prefix,
                    &usage,
                    authorization.as_ref(),
                    self.deadline,
                )
                .await;
            if batch.is_empty() {
                return Ok(());
            }
        }
        let authenticated = authorization.is_some();
        let options = PayloadOptions {
            authenticated,
            workspace_id: self.workspace_id,
            user_agent: self.user_agent.clone(),
            system: self.system.clone(),
        };
        // Encoded once: retries below re-send these exact bytes (and ids).
        let body = encode_upload(&batch, &options, SystemTime::now());
        let request = self.request(body, authorization)?;
        if !authenticated {
            bump(&self.counters.unauthenticated);
        }

        let outcome =
            tokio::time::timeout(self.deadline, self.client.clone().oneshot(request)).await;
        let counters = &self.counters;
        match outcome {
            Ok(Ok(response)) => {
                let status = response.status();
                if status.is_success() {
                    bump(&counters.sent);
                    counters
                        .logs_sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::debug!(
                        items = batch.len(),
                        authenticated,
                        "telemetry batch exported"
                    );
                    Ok(())
                } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    bump(&counters.dropped_unauthorized);
                    tracing::debug!(%status, "telemetry credentials refused; batch dropped");
                    Err(ExportError::Unauthorized(status))
                } else if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                    bump(&counters.dropped_rejected);
                    tracing::debug!(%status, "telemetry upload rejected; batch dropped");
                    Err(ExportError::Rejected(status))
                } else {
                    bump(&counters.failed);
                    tracing::debug!(%status, "telemetry export failed after retries");
                    Err(ExportError::Status(status))
                }
            }
            Ok(Err(error)) => {
                if is_circuit_open(&*error) {
                    bump(&counters.dropped_circuit_open);
                    tracing::debug!("telemetry circuit breaker open; batch dropped");
                    return Err(ExportError::CircuitOpen);
                }
                bump(&counters.failed);
                let message = redact_error(&*error);
                tracing::debug!(error = %message, "telemetry export failed");
                Err(ExportError::Transport(message))
            }
            Err(_elapsed) => {
                bump(&counters.failed);
                tracing::debug!(deadline = ?self.deadline, "telemetry export timed out");
                Err(ExportError::Timeout)
            }
        }
    }

    /// The Authorization value, or `None` (none configured, `None`, an error, or too slow).
    async fn authorization(&self) -> Option<HeaderValue> {
        let credentials = self.credentials.as_ref()?;
        match tokio::time::timeout(self.credentials_timeout, credentials.authorization()).await {
            Ok(Ok(Some(mut value))) => {
                value.set_sensitive(true);
                Some(value)
            }
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::debug!(error = %redact_error(&*error), "telemetry credentials failed; sending unauthenticated");
                None
            }
            Err(_) => {
                tracing::debug!("telemetry credentials timed out; sending unauthenticated");
                None
            }
        }
    }

    fn request(
        &self,
        body: Bytes,
        authorization: Option<HeaderValue>,
    ) -> Result<Request<Full<Bytes>>, ExportError> {
        let uri = if authorization.is_some() {
            self.ext_uri.clone()
        } else {
            self.unauth_uri.clone()
        };
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let body = if self.gzip {
            builder = builder.header(header::CONTENT_ENCODING, "gzip");
            gzip(&body)
        } else {
            body
        };
        builder
            .body(Full::new(body))
            .map_err(|e| ExportError::Transport(e.to_string()))
    }
}

#[cfg(feature = "gzip")]
fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

#[cfg(not(feature = "gzip"))]
fn gzip(body: &[u8]) -> Bytes {
    // Unreachable: `build` refuses gzip(true) without the feature.
    Bytes::copy_from_slice(body)
}

fn is_circuit_open(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |&err| err.source())
        .take(kasal_trace::MAX_CHAIN_DEPTH)
        .any(|err| err.is::<kasal_classify::CircuitOpen>())
}

/// The future of [`DatabricksExporter::call`](tower::Service::call).
pub struct ExportFuture {
    inner: Pin<Box<dyn Future<Output = Result<(), ExportError>> + Send>>,
}

impl fmt::Debug for ExportFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportFuture")
    }
}

impl Future for ExportFuture {
    type Output = Result<(), ExportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl tower::Service<Batch> for DatabricksExporter {
    type Response = ();
    type Error = ExportError;
    type Future = ExportFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        let inner = self.inner.clone();
        ExportFuture {
            inner: Box::pin(async move { inner.export(batch).await }),
        }
    }
}

/// Builds a [`DatabricksExporter`]. Every setting is checked in [`build`](Self::build).
#[must_use]
pub struct DatabricksExporterBuilder {
    host: String,
    allow_private_hosts: bool,
    credentials: Option<Arc<dyn Credentials>>,
    workspace_id: Option<u64>,
    gzip: bool,
    timeout: Duration,
    deadline: Duration,
    credentials_timeout: Duration,
    force_enabled: bool,
    flags: Option<FeatureFlagCache>,
    transport: Option<HttpClient>,
    max_retries: u32,
    breaker: BreakerSettings,
    system: Option<SystemConfiguration>,
    usage_beacon: bool,
}

impl fmt::Debug for DatabricksExporterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabricksExporterBuilder")
            .field("allow_private_hosts", &self.allow_private_hosts)
            .field("authenticated", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl DatabricksExporterBuilder {
    fn new(host: String) -> Self {
        DatabricksExporterBuilder {
            host,
            allow_private_hosts: false,
            credentials: None,
            workspace_id: None,
            gzip: false,
            timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
            credentials_timeout: Duration::from_secs(5),
            force_enabled: false,
            flags: None,
            transport: None,
            max_retries: 3,
            breaker: BreakerSettings {
                failures: 5,
                open_for: Duration::from_secs(60),
                successes: 2,
            },
            system: None,
            usage_beacon: false,
        }
    }

    /// Kasal's compatibility beacon (off by default): for each window's model usage, one
    /// `GET {host}/api/2.0/serving-endpoints` per (product, model) with the User-Agent
    /// `kasal_telemetry/<version>/<product>/model=<model>/input_tokens=<n>/output_tokens=<n>`
    /// (the window's sums), through this exporter's retry and circuit breaker, with its
    /// credentials. Model usage is otherwise not sent to Databricks: the drivers' log schema has
    /// no field for it.
    pub fn usage_beacon(mut self, on: bool) -> Self {
        self.usage_beacon = on;
        self
    }

    /// Where the `Authorization` header comes from. Without credentials every upload goes to
    /// `/telemetry-unauth`.
    pub fn credentials(mut self, credentials: impl Credentials) -> Self {
        self.credentials = Some(Arc::new(credentials));
        self
    }

    /// Allows loopback, private, link-local and metadata hosts, and plain `http` (tests, local
    /// demos). Default false.
    pub fn allow_private_hosts(mut self, allow: bool) -> Self {
        self.allow_private_hosts = allow;
        self
    }

    /// The numeric workspace id, sent as `workspace_id` on authenticated uploads.
    pub fn workspace_id(mut self, id: u64) -> Self {
        self.workspace_id = Some(id);
        self
    }

    /// Gzip the upload (`Content-Encoding: gzip`). Needs the `gzip` feature. Default false.
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// Timeout of one attempt (default 10 s). Timed-out attempts are retried.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Deadline of one whole export, retries included (default 30 s).
    pub fn export_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// How long to wait for the credentials provider before sending unauthenticated (default
    /// 5 s).
    pub fn credentials_timeout(mut self, timeout: Duration) -> Self {
        self.credentials_timeout = timeout;
        self
    }

    /// Export whatever the feature flag says. Default false.
    pub fn force_enabled(mut self, force: bool) -> Self {
        self.force_enabled = force;
        self
    }

    /// The feature-flag cache to consult (share one across exporters). Default: a private cache
    /// over this exporter's transport and credentials.
    pub fn feature_flags(mut self, flags: FeatureFlagCache) -> Self {
        self.flags = Some(flags);
        self
    }

    /// The transport: any tower HTTP service (default: hyper-util legacy client over rustls).
    /// The User-Agent, timeout, retry and circuit breaker are added on top.
    pub fn client<S, B>(mut self, service: S) -> Self
    where
        S: tower::Service<Request<Full<Bytes>>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.transport = Some(client::boxed(service));
        self
    }

    /// Retries after the first attempt (default 3; 0 disables retrying).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Circuit breaker: open after `failures` consecutive failed exports, stay open `open_for`,
    /// close after `successes` successful probes (default 5 / 60 s / 2).
    pub fn circuit_breaker(mut self, failures: u32, open_for: Duration, successes: u32) -> Self {
        self.breaker = BreakerSettings {
            failures,
            open_for,
            successes,
        };
        self
    }

    /// Overrides the detected `system_configuration`.
    pub fn system_configuration(mut self, system: SystemConfiguration) -> Self {
        self.system = Some(system);
        self
    }

    /// Validates the settings and builds the exporter.
    pub fn build(self) -> Result<DatabricksExporter, ExporterError> {
        let host = validate_host(&self.host, self.allow_private_hosts)?;
        if self.gzip && !cfg!(feature = "gzip") {
            return Err(ExporterError::GzipUnavailable);
        }
        if self.timeout.is_zero() || self.deadline.is_zero() {
            return Err(ExporterError::Setting("timeouts must be greater than zero"));
        }
        if self.breaker.failures == 0 || self.breaker.successes == 0 {
            return Err(ExporterError::Setting(
                "circuit breaker thresholds must be at least 1",
            ));
        }
        let transport = match self.transport {
            Some(transport) => transport,
            None => client::https_transport().map_err(|e| ExporterError::Tls(e.to_string()))?,
        };
        let flags = match (self.force_enabled, self.flags) {
            (true, _) => None,
            (false, Some(flags)) => Some(flags),
            (false, None) => Some(
                FeatureFlagCache::builder()
                    .transport(transport.clone())
                    .shared_credentials(self.credentials.clone())
                    .timeout(self.timeout)
                    .build()?,
            ),
        };
        let client = client::export_stack(
            transport,
            &client::ExportStackConfig {
                timeout: self.timeout,
                max_retries: self.max_retries,
                breaker: self.breaker,
            },
        );
        let beacon = self
            .usage_beacon
            .then(|| beacon::Beacon::new(host.uri("/api/2.0/serving-endpoints")));
        Ok(DatabricksExporter {
            inner: Arc::new(Inner {
                ext_uri: host.uri("/telemetry-ext"),
                unauth_uri: host.uri("/telemetry-unauth"),
                host,
                client,
                credentials: self.credentials,
                flags,
                gzip: self.gzip,
                credentials_timeout: self.credentials_timeout,
                deadline: self.deadline,
                workspace_id: self.workspace_id,
                user_agent: client::user_agent_string(),
                system: Arc::new(self.system.unwrap_or_else(SystemConfiguration::detect)),
                counters: Counters::default(),
                beacon,
            }),
        })
    }
}
