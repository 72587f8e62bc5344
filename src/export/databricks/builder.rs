//! [`DatabricksExporterBuilder`]: the exporter's settings, checked once in `build`.
//!
//! Retry and circuit-breaker settings are the very values the layers take
//! ([`RetryPolicy`], [`CircuitBreakerConfig`] from kasal-classify): one vocabulary for both.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kasal_classify::{CircuitBreaker, CircuitBreakerConfig, Jitter, RetryPolicy};

use super::beacon::Beacon;
use super::client::{self, HttpClient, Transport};
use super::errors::{ExporterBuildError, TlsError};
use super::exporter::{DatabricksExporter, Inner};
use super::flags::FeatureFlagCache;
use super::host::validate_host;
use super::payload::SystemConfiguration;
use super::stats::Report;
use crate::credentials::Credentials;

impl DatabricksExporter {
    /// Starts a builder for `host` (`https://adb-….azuredatabricks.net` or the bare name).
    pub fn builder(host: impl Into<String>) -> DatabricksExporterBuilder {
        DatabricksExporterBuilder::new(host.into())
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
    retry: RetryPolicy,
    breaker: CircuitBreakerConfig,
    system: Option<SystemConfiguration>,
    usage_beacon: bool,
}

impl fmt::Debug for DatabricksExporterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabricksExporterBuilder")
            .field("allow_private_hosts", &self.allow_private_hosts)
            .field("authenticated", &self.credentials.is_some())
            .field("retry", &self.retry)
            .field("circuit_breaker", &self.breaker)
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
            retry: Self::default_retry(),
            breaker: CircuitBreakerConfig::new(),
            system: None,
            usage_beacon: false,
        }
    }

    /// The default retry policy: the drivers' (3 retries, 100 ms base doubling to a 1 s cap,
    /// plus up to 100 ms of jitter; Retry-After honoured; never on 4xx).
    pub fn default_retry() -> RetryPolicy {
        RetryPolicy::new()
            .max_retries(3)
            .base_delay(Duration::from_millis(100))
            .max_delay(Duration::from_secs(1))
            .jitter(Jitter::Up(Duration::from_millis(100)))
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

    /// Deadline of one whole export, retries included (default 30 s). A timed-out export is a
    /// failure for the circuit breaker, as is one dropped by a shorter deadline outside.
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

    /// The feature-flag cache to consult (share one across exporters; its client name,
    /// version, flag and unknown-flag policy are its settings). Default: a private cache with
    /// the default settings over this exporter's transport and credentials.
    pub fn feature_flags(mut self, flags: FeatureFlagCache) -> Self {
        self.flags = Some(flags);
        self
    }

    /// The transport: any tower HTTP service (default: hyper-util legacy client over rustls).
    /// The User-Agent, timeout and retry are added on top.
    pub fn client(mut self, service: impl Transport) -> Self {
        self.transport = Some(client::boxed(service));
        self
    }

    /// How uploads are retried: the same [`RetryPolicy`] the `RetryLayer` takes (default
    /// [`default_retry`](Self::default_retry)). Whatever its classifier, a 4xx other than 408
    /// and 429 is never retried by the default one.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The circuit breaker around each export: the same [`CircuitBreakerConfig`] the
    /// `CircuitBreakerLayer` takes (default: open after 5 consecutive failed exports, 60 s
    /// open, 2 successful probes close it). Each export, all its retries included, counts once.
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Kasal's compatibility beacon (off by default): for each window's model usage, one
    /// `GET {host}/api/2.0/serving-endpoints` per (product, model) with the User-Agent
    /// `kasal_telemetry/<version>/<product>/model=<model>/input_tokens=<n>/output_tokens=<n>`
    /// (the window's sums), through this exporter's retry, with its credentials. Model usage is
    /// otherwise not sent to Databricks: the drivers' log schema has no field for it.
    pub fn usage_beacon(mut self, on: bool) -> Self {
        self.usage_beacon = on;
        self
    }

    /// Overrides the detected `system_configuration`.
    pub fn system_configuration(mut self, system: SystemConfiguration) -> Self {
        self.system = Some(system);
        self
    }

    /// Validates the settings and builds the exporter.
    pub fn build(self) -> Result<DatabricksExporter, ExporterBuildError> {
        let host = validate_host(&self.host, self.allow_private_hosts)?;
        if self.gzip && !cfg!(feature = "gzip") {
            return Err(ExporterBuildError::GzipUnavailable);
        }
        if self.timeout.is_zero() || self.deadline.is_zero() {
            return Err(ExporterBuildError::Setting(
                "timeouts must be greater than zero",
            ));
        }
        let transport = match self.transport {
            Some(transport) => transport,
            None => client::https_transport().map_err(|e| TlsError(e.to_string()))?,
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
        let client = client::export_stack(transport, self.timeout, self.retry);
        let beacon = self
            .usage_beacon
            .then(|| Beacon::new(host.uri("/api/2.0/serving-endpoints")));
        Ok(DatabricksExporter::from_inner(Inner {
            ext_uri: host.uri("/telemetry-ext"),
            unauth_uri: host.uri("/telemetry-unauth"),
            host,
            client,
            breaker: CircuitBreaker::new(self.breaker),
            credentials: self.credentials,
            flags,
            gzip: self.gzip,
            credentials_timeout: self.credentials_timeout,
            deadline: self.deadline,
            workspace_id: self.workspace_id,
            user_agent: client::user_agent_string(),
            system: Arc::new(self.system.unwrap_or_else(SystemConfiguration::detect)),
            report: Report::default(),
            beacon,
        }))
    }
}
