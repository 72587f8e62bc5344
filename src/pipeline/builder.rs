//! `TelemetryBuilder`: the pipeline's settings, the exporter, and the environment switch.
//!
//! `build` never panics and never fails: without a tokio runtime, or with an invalid setting, it
//! logs one WARN and returns a disabled handle. `try_build` reports the same problems as a typed
//! [`ConfigError`]. The environment switch (`DATABRICKS_TELEMETRY_DISABLED`,
//! `KASAL_TELEMETRY_DISABLED`) disables export only: the pipeline still runs and counts every
//! batch as skipped, so that `Stats` tells what was not sent and why.

use std::fmt;
use std::time::Duration;

use tower::util::BoxService;
use tower::{BoxError, Service, ServiceExt};

use super::config::{BoxExporter, Config, MAX_DURATION, disabling_var};
use super::telemetry::Telemetry;
use crate::event::Batch;

/// A setting `try_build` rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A size or duration that must be positive was zero.
    #[error("telemetry setting `{0}` must be greater than zero")]
    Zero(&'static str),
    /// A size was above what the underlying primitive accepts.
    #[error("telemetry setting `{setting}` must be at most {max}")]
    TooLarge {
        /// The setting, as its builder method is named.
        setting: &'static str,
        /// The largest value accepted.
        max: usize,
    },
    /// No exporter was given.
    #[error("telemetry needs an exporter: call `TelemetryBuilder::exporter`")]
    NoExporter,
    /// There is no tokio runtime to run the aggregator on: build inside one (`#[tokio::main]`,
    /// `Runtime::enter`).
    #[error("telemetry needs a tokio runtime: build it from inside one")]
    NoRuntime,
}

/// Builds a [`Telemetry`] handle. Start from [`Telemetry::builder`].
///
/// ```
/// use std::time::Duration;
/// use kasal_telemetry::{InMemoryExporter, Telemetry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let exporter = InMemoryExporter::new();
/// let telemetry = Telemetry::builder()
///     .batch_size(50)
///     .flush_interval(Duration::from_secs(1))
///     .exporter(exporter.clone())
///     .build();
/// assert!(telemetry.is_enabled());
/// let stats = telemetry.shutdown().await;
/// assert_eq!(stats.dropped, 0);
/// # }
/// ```
#[derive(Default)]
pub struct TelemetryBuilder {
    config: Config,
    exporter: Option<BoxExporter>,
    ignore_env: bool,
}

impl fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("config", &self.config)
            .field("exporter", &self.exporter.is_some())
            .field("ignore_env", &self.ignore_env)
            .finish()
    }
}

impl TelemetryBuilder {
    /// A builder with the default settings.
    pub fn new() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// Items (operation summaries + rollups) per exported batch; a full batch is exported at
    /// once. Default 100.
    pub fn batch_size(mut self, items: usize) -> Self {
        self.config.batch_size = items;
        self
    }

    /// How often rollups are closed and everything emitted is exported. Default 5 s.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.config.flush_interval = interval;
        self
    }

    /// Capacity of the queue to the aggregator (calls with an operation id, completions).
    /// When full, records are dropped and counted. Default 2048.
    pub fn queue_capacity(mut self, records: usize) -> Self {
        self.config.queue_capacity = records;
        self
    }

    /// Operations pending at once; beyond, the oldest is emitted incomplete. Default 5000.
    pub fn max_pending_operations(mut self, operations: usize) -> Self {
        self.config.max_pending_operations = operations;
        self
    }

    /// Age (from its first call) after which a pending operation is emitted incomplete.
    /// Default 1 h.
    pub fn operation_ttl(mut self, ttl: Duration) -> Self {
        self.config.operation_ttl = ttl;
        self
    }

    /// Distinct errors kept per operation; more are counted in `errors_dropped`. Default 50.
    pub fn max_errors_per_operation(mut self, errors: usize) -> Self {
        self.config.max_errors_per_operation = errors;
        self
    }

    /// Error text (type + message) kept across all pending operations. Default 1 MiB.
    pub fn max_error_text_bytes(mut self, bytes: usize) -> Self {
        self.config.max_error_text_bytes = bytes;
        self
    }

    /// Error messages are truncated to this many characters. Default 2048.
    pub fn max_message_chars(mut self, chars: usize) -> Self {
        self.config.max_message_chars = chars;
        self
    }

    /// How long `shutdown` may take, exports included. Default 2 s.
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.config.shutdown_deadline = deadline;
        self
    }

    /// How long `flush` waits for the export of what was recorded before it; it then returns
    /// the stats so far and the export goes on in the background. Default: the shutdown
    /// deadline (2 s).
    pub fn flush_deadline(mut self, deadline: Duration) -> Self {
        self.config.flush_deadline = Some(deadline);
        self
    }

    /// How long one exporter call (readiness included) may take before it is abandoned and
    /// counted as a failure. Default 30 s: a backstop no shorter than
    /// [`DatabricksExporter`](crate::DatabricksExporter)'s own export deadline (30 s, retries
    /// included), so the exporter's deadline is the one that applies. `shutdown` cuts a running
    /// export to its own deadline.
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.config.export_timeout = timeout;
        self
    }

    /// Estimated bytes of emitted items waiting for a slow exporter; beyond, the oldest are
    /// dropped and counted in `export_dropped`. Default 1 MiB.
    pub fn max_export_backlog_bytes(mut self, bytes: usize) -> Self {
        self.config.max_export_backlog_bytes = bytes;
        self
    }

    /// Distinct rollup keys per shard and window; beyond, calls fold into a per-product
    /// overflow key with route `<other>`. Default 128.
    pub fn max_rollup_keys(mut self, keys: usize) -> Self {
        self.config.max_rollup_keys = keys;
        self
    }

    /// The exporter: any `tower::Service<Batch>`, possibly wrapped in tower layers. Its errors
    /// are counted and logged at debug, never returned to the app; an error holding an
    /// [`Undelivered`](crate::export::Undelivered) (a skipped batch, a partial delivery) is
    /// counted as skipped or rejected instead of failed.
    pub fn exporter<E>(mut self, exporter: E) -> Self
    where
        E: Service<Batch, Response = ()> + Send + 'static,
        E::Error: Into<BoxError>,
        E::Future: Send + 'static,
    {
        self.exporter = Some(BoxService::new(exporter.map_err(Into::into)));
        self
    }

    /// Ignore `DATABRICKS_TELEMETRY_DISABLED` / `KASAL_TELEMETRY_DISABLED` (for tests).
    pub fn ignore_env(mut self) -> Self {
        self.ignore_env = true;
        self
    }

    /// Builds the handle and spawns the aggregator on the current tokio runtime.
    ///
    /// Never fails: if a setting is invalid, no exporter was given or there is no runtime, it
    /// logs one WARN saying why and returns a disabled handle ([`try_build`](Self::try_build)
    /// returns the reason instead).
    pub fn build(self) -> Telemetry {
        match self.try_build() {
            Ok(telemetry) => telemetry,
            Err(error) => {
                tracing::warn!(%error, "telemetry disabled");
                Telemetry::disabled()
            }
        }
    }

    /// Like `build`, but an invalid setting, a missing exporter or the lack of a tokio runtime
    /// is an error.
    ///
    /// With the environment switch on (and no [`ignore_env`](Self::ignore_env)) the pipeline is
    /// built and runs, but never calls the exporter: every batch is counted in
    /// `Stats::skipped` (`disabled_by_env`), and one WARN names the variable.
    pub fn try_build(self) -> Result<Telemetry, ConfigError> {
        let mut config = self.config;
        // Durations are capped so that deadline arithmetic can never overflow.
        for duration in [
            &mut config.flush_interval,
            &mut config.operation_ttl,
            &mut config.shutdown_deadline,
            &mut config.export_timeout,
        ] {
            *duration = (*duration).min(MAX_DURATION);
        }
        config.flush_deadline = config.flush_deadline.map(|d| d.min(MAX_DURATION));
        let positive = [
            ("batch_size", config.batch_size),
            ("queue_capacity", config.queue_capacity),
            ("max_pending_operations", config.max_pending_operations),
            ("max_rollup_keys", config.max_rollup_keys),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero(name));
        }
        // tokio's channel panics above its semaphore's limit; the other counts only bound
        // maps and vectors that grow one entry at a time.
        let max = tokio::sync::Semaphore::MAX_PERMITS;
        if config.queue_capacity > max {
            return Err(ConfigError::TooLarge {
                setting: "queue_capacity",
                max,
            });
        }
        let durations = [
            ("flush_interval", config.flush_interval),
            ("operation_ttl", config.operation_ttl),
            ("export_timeout", config.export_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, value)| value.is_zero()) {
            return Err(ConfigError::Zero(name));
        }
        let exporter = self.exporter.ok_or(ConfigError::NoExporter)?;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(ConfigError::NoRuntime);
        };
        if !self.ignore_env {
            if let Some(variable) = disabling_var() {
                tracing::warn!(
                    variable,
                    reason = "disabled_by_env",
                    "telemetry export disabled by the environment: batches are counted as \
                     skipped, not sent; unset the variable to export"
                );
                config.export_disabled_by_env = true;
            }
        }
        Ok(Telemetry::start(config, exporter, &runtime))
    }
}

impl Telemetry {
    /// A builder with the default settings.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_are_typed_errors() {
        let exporter = tower::service_fn(|_: Batch| async { Ok::<_, BoxError>(()) });
        let error = TelemetryBuilder::new()
            .queue_capacity(0)
            .exporter(exporter)
            .try_build()
            .unwrap_err();
        assert_eq!(error, ConfigError::Zero("queue_capacity"));
        let error = TelemetryBuilder::new().try_build().unwrap_err();
        assert_eq!(error, ConfigError::NoExporter);
    }

    #[tokio::test]
    async fn a_queue_above_tokios_limit_is_a_typed_error_not_a_panic() {
        let exporter = || tower::service_fn(|_: Batch| async { Ok::<_, BoxError>(()) });
        for capacity in [usize::MAX, (usize::MAX >> 3) + 1] {
            let error = TelemetryBuilder::new()
                .queue_capacity(capacity)
                .exporter(exporter())
                .ignore_env()
                .try_build()
                .unwrap_err();
            assert_eq!(
                error,
                ConfigError::TooLarge {
                    setting: "queue_capacity",
                    max: usize::MAX >> 3,
                }
            );
            assert!(error.to_string().contains("queue_capacity"));
        }
        // `build` turns it into a disabled handle, never a panic.
        let telemetry = TelemetryBuilder::new()
            .queue_capacity(usize::MAX)
            .exporter(exporter())
            .ignore_env()
            .build();
        assert!(!telemetry.is_enabled());
        // Every other count at its extreme builds and runs.
        let telemetry = TelemetryBuilder::new()
            .queue_capacity(usize::MAX >> 3)
            .batch_size(usize::MAX)
            .max_pending_operations(usize::MAX)
            .max_errors_per_operation(usize::MAX)
            .max_error_text_bytes(usize::MAX)
            .max_message_chars(usize::MAX)
            .max_export_backlog_bytes(usize::MAX)
            .max_rollup_keys(usize::MAX)
            .shutdown_deadline(Duration::ZERO)
            .exporter(exporter())
            .ignore_env()
            .build();
        assert!(telemetry.is_enabled());
        telemetry.flush().await;
        telemetry.shutdown().await;
    }

    #[tokio::test]
    async fn huge_durations_are_capped_not_overflowed() {
        let exporter = tower::service_fn(|_: Batch| async { Ok::<_, BoxError>(()) });
        let telemetry = TelemetryBuilder::new()
            .flush_interval(Duration::MAX)
            .operation_ttl(Duration::MAX)
            .shutdown_deadline(Duration::MAX)
            .export_timeout(Duration::MAX)
            .exporter(exporter)
            .ignore_env()
            .build();
        assert!(telemetry.is_enabled());
        telemetry.flush().await;
        assert_eq!(telemetry.shutdown().await.export_failures, 0);
    }

    #[test]
    fn no_runtime_is_an_error_and_build_gives_a_disabled_handle() {
        let exporter = || tower::service_fn(|_: Batch| async { Ok::<_, BoxError>(()) });
        let error = TelemetryBuilder::new()
            .exporter(exporter())
            .ignore_env()
            .try_build()
            .unwrap_err();
        assert_eq!(error, ConfigError::NoRuntime);
        let telemetry = TelemetryBuilder::new()
            .exporter(exporter())
            .ignore_env()
            .build();
        assert!(!telemetry.is_enabled());
    }
}
