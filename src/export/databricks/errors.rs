//! The errors of the Databricks export wing, each named for what fails: building the exporter
//! ([`ExporterBuildError`]), building the feature-flag cache ([`FlagCacheBuildError`]), one
//! export ([`ExportError`]). A leaf module but for the host check's own error.

use http::StatusCode;

use super::host::HostError;
use crate::export::undelivered::Undelivered;

/// The default TLS client (rustls with the `ring` provider and the webpki roots) could not be
/// set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TLS setup failed: {0}")]
pub struct TlsError(pub(crate) String);

/// A setting [`DatabricksExporterBuilder::build`](super::DatabricksExporterBuilder::build)
/// refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExporterBuildError {
    /// The workspace host was refused.
    #[error("invalid workspace host: {0}")]
    Host(#[from] HostError),
    /// The default TLS client could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `gzip(true)` without the crate's `gzip` feature.
    #[error("gzip(true) needs the `gzip` feature of kasal-telemetry")]
    GzipUnavailable,
    /// A setting was out of range.
    #[error("invalid exporter setting: {0}")]
    Setting(&'static str),
    /// The private feature-flag cache could not be built.
    #[error(transparent)]
    FlagCache(#[from] FlagCacheBuildError),
}

/// A setting [`FeatureFlagCacheBuilder::build`](super::FeatureFlagCacheBuilder::build) refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlagCacheBuildError {
    /// The default TLS client could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The client name is not `[A-Za-z0-9_]+` (it is a path segment of the flag endpoint).
    #[error("feature-flag client name must match [A-Za-z0-9_]+")]
    Client,
    /// The client version is not a `MAJOR.MINOR.PATCH` triplet (the flag endpoint keys off the
    /// triplet only; anything appended is answered 404).
    #[error("feature-flag client version must be MAJOR.MINOR.PATCH")]
    Version,
    /// The flag name is empty or holds whitespace.
    #[error("feature-flag name must be non-empty, without whitespace")]
    Flag,
}

/// Why one export did not deliver its batch. Seen only by the pipeline, which counts it;
/// nothing reaches the application.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Not a failure: the batch was skipped, or delivered in part (the pipeline counts the
    /// items as skipped or rejected, never as failed nor as exported).
    #[error("{0}")]
    Undelivered(#[source] Undelivered),
    /// 401 or 403: the batch was dropped after one attempt.
    #[error("telemetry endpoint refused the credentials ({0})")]
    Unauthorized(StatusCode),
    /// Another 4xx: the batch was dropped after one attempt.
    #[error("telemetry endpoint rejected the upload ({0})")]
    Rejected(StatusCode),
    /// A 5xx or 429 that outlasted the retries.
    #[error("telemetry endpoint failed ({0})")]
    Status(StatusCode),
    /// The circuit breaker is open: nothing was sent.
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

impl From<Undelivered> for ExportError {
    fn from(undelivered: Undelivered) -> Self {
        ExportError::Undelivered(undelivered)
    }
}
