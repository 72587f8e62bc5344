//! Export to the Databricks workspace telemetry service, in the frontend-log format the
//! Databricks drivers use.
//!
//! [`DatabricksExporter`] is a `tower::Service<Batch, Response = ()>`: the telemetry pipeline hands
//! it one [`Batch`](crate::Batch) at a time from its own task. For each batch it
//!
//! 1. skips it when `DATABRICKS_TELEMETRY_DISABLED` / `KASAL_TELEMETRY_DISABLED` is set, or when
//!    the workspace's feature flag ([`FeatureFlagCache`]) is off, unknown (under the default
//!    [`UnknownFlag::Skip`] policy) or could not be fetched, unless export was forced with
//!    [`force_enabled(true)`](DatabricksExporterBuilder::force_enabled);
//! 2. asks its [`Credentials`](crate::credentials::Credentials) for an `Authorization` value:
//!    with one it POSTs to `{host}/telemetry-ext`, without (none configured, `None`, an error or
//!    a timeout) to `{host}/telemetry-unauth` with ids, system configuration and stack traces
//!    left out;
//! 3. encodes the batch's operation summaries once ([`encode_upload`](payload::encode_upload);
//!    the schema, field by field with its source in the drivers, is in the [`payload`] module;
//!    rollups have no place in it and are not sent), so every retry re-sends the same
//!    `frontend_log_event_id`s;
//! 4. asks the circuit breaker for a permit (open: nothing is sent, [`ExportError::CircuitOpen`]);
//! 5. sends it through its own client: retry (the builder's [`RetryPolicy`](crate::classify::RetryPolicy),
//!    by default the drivers' 3 retries, 100 ms base, 1 s cap, 100 ms jitter, Retry-After
//!    honoured, never on 4xx) → `User-Agent: kasal_telemetry/<version>` → per-attempt timeout →
//!    hyper-util + rustls (or the transport given to [`client`](DatabricksExporterBuilder::client)),
//!    all within the export deadline;
//! 6. reads the answer: `numProtoSuccess` lower than the logs sent counts the rest as rejected.
//!
//! # What the pipeline sees
//!
//! `Ok(())` only when every item was delivered. A skipped batch, rejected logs and unsent
//! rollups come back as [`ExportError::Undelivered`], which the pipeline counts as skipped (by
//! reason) or rejected, never as exported nor as failed. 401 and 403 drop the batch after one
//! attempt ([`ExportError::Unauthorized`]); other 4xx drop it too ([`ExportError::Rejected`]).
//! Nothing reaches the application.
//!
//! # The circuit breaker sees every failure
//!
//! The breaker ([`CircuitBreakerConfig`](crate::classify::CircuitBreakerConfig), by default 5
//! consecutive failed exports open it for 60 s) is held around the whole export, not layered
//! under a deadline: a 5xx, a transport error, the export deadline, and an export dropped
//! before it ended (by the pipeline's export timeout, a shutdown deadline, a runtime going
//! away) all count as one failure. So an endpoint that accepts connections and never answers
//! opens it after 5 exports, and no request reaches it while it is open.
//!
//! # Logging
//!
//! One WARN per change of state: the first batch skipped for each reason (naming the setting
//! that changes it), export going from healthy to failing, and back, and the first logs the
//! server refused. Everything else is `debug`.
//!
//! What this module must never do: send a request to a host that did not pass
//! [`validate_host`], put a token or an unredacted message in a log or a payload, send a field
//! the drivers' schema does not define, or hold the application's calls: it has no
//! `TelemetryLayer` and shares nothing with the app's clients.
//!
//! ```no_run
//! use std::time::Duration;
//! use kasal_telemetry::classify::{CircuitBreakerConfig, RetryPolicy};
//! use kasal_telemetry::credentials::EnvToken;
//! use kasal_telemetry::export::databricks::DatabricksExporter;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let exporter = DatabricksExporter::builder("adb-123.4.azuredatabricks.net")
//!     .credentials(EnvToken::new())
//!     .workspace_id(1234567890123456)
//!     .timeout(Duration::from_secs(10))
//!     .retry(RetryPolicy::new().max_retries(2))
//!     .circuit_breaker(CircuitBreakerConfig::new().open_for(Duration::from_secs(30)))
//!     .build()?;
//! // Telemetry::builder().exporter(exporter)...
//! # let _ = exporter; Ok(()) }
//! ```

mod beacon;
mod builder;
pub(crate) mod client;
mod errors;
mod exporter;
mod flags;
mod host;
pub mod payload;
mod stats;

pub use builder::DatabricksExporterBuilder;
pub use client::Transport;
pub use errors::{ExportError, ExporterBuildError, FlagCacheBuildError, TlsError};
pub use exporter::{DatabricksExporter, ExportFuture};
pub use flags::{
    FeatureFlagCache, FeatureFlagCacheBuilder, FlagState, FlagStats, FlagValue, UnknownFlag,
};
pub use host::{HostError, WorkspaceHost, validate_host};
pub use stats::ExporterStats;
