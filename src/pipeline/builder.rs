//! `TelemetryBuilder`: the pipeline's settings, the exporter, and the environment switch.
//!
//! Building never panics: without a tokio runtime, with telemetry disabled by the environment,
//! or (for `build`) with an invalid setting, it returns a disabled handle and logs at debug.
//! `try_build` reports invalid settings as a typed error instead.

use std::fmt;
use std::time::Duration;

use tower::util::BoxService;
use tower::{BoxError, Service, ServiceExt};

use super::telemetry::Telemetry;
use crate::event::Batch;

/// Environment variables that disable telemetry when set to `1`, `true`, `yes` or `on`
/// (any case).
pub const DISABLE_ENV_VARS: [&str; 2] =
    ["DATABRICKS_TELEMETRY_DISABLED", "KASAL_TELEMETRY_DISABLED"];

/// The longest duration a setting takes (longer ones are capped): about a year.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The exporter, boxed once at build time.
pub(crate) type BoxExporter = BoxService<Batch, (), BoxError>;

/// The pipeline's settings, validated.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) max_pending_operations: usize,
    pub(crate) operation_ttl: Duration,
    pub(crate) max_errors_per_operation: usize,
    pub(crate) max_error_text_bytes: usize,
    pub(crate) max_message_chars: usize,
    pub(crate) shutdown_deadline: Duration,
    pub(crate) export_timeout: Duration,
    pub(crate) max_export_backlog_bytes: usize,
    pub(crate) max_rollup_keys: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            batch_size: 100,
            flush_interval: Duration::from_secs(5),
            queue_capacity: 2048,
            max_pending_operations: 5000,
            operation_ttl: Duration::from_secs(3600),
            max_errors_per_operation: 50,
            max_error_text_bytes: 1 << 20,
            max_message_chars: 2048,
            shutdown_deadline: Duration::from_secs(2),
            export_timeout: Duration::from_secs(30),
            max_export_backlog_bytes: 1 << 20,
            max_rollup_keys: 128,
        }
    }
}

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
    /// are counted and logged at debug, never returned to the app.
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
    /// Returns a disabled handle (and logs at debug) if telemetry is disabled by the
    /// environment, a setting is invalid, no exporter was given, or there is no runtime.
    pub fn build(self) -> Telemetry {
        match self.try_build() {
            Ok(telemetry) => telemetry,
            Err(error) => {
                tracing::debug!(%error, "telemetry disabled");
                Telemetry::disabled()
            }
        }
    }

    /// Like `build`, but an invalid setting or a missing exporter is an error. Telemetry
    /// disabled by the environment or the lack of a runtime still gives `Ok(disabled handle)`.
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
        if !self.ignore_env && disabled_by(|name| std::env::var(name).ok()) {
            tracing::debug!("telemetry disabled by the environment");
            return Ok(Telemetry::disabled());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("telemetry disabled: no tokio runtime to run the aggregator on");
            return Ok(Telemetry::disabled());
        };
        Ok(Telemetry::start(config, exporter, &runtime))
    }
}

/// Whether one of [`DISABLE_ENV_VARS`] disables telemetry, reading variables with `lookup`.
pub(crate) fn disabled_by(lookup: impl Fn(&str) -> Option<String>) -> bool {
    DISABLE_ENV_VARS
        .iter()
        .any(|name| lookup(name).is_some_and(|value| is_truthy(&value)))
}

/// `1`, `true`, `yes` or `on`, in any case, surrounding whitespace ignored.
pub(crate) fn is_truthy(value: &str) -> bool {
    let value = value.trim();
    ["1", "true", "yes", "on"]
        .iter()
        .any(|truthy| value.eq_ignore_ascii_case(truthy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthy_values() {
        for value in ["1", "true", "TRUE", "Yes", "on", " On "] {
            assert!(is_truthy(value), "{value}");
        }
        for value in ["", "0", "false", "no", "off", "enabled", "2"] {
            assert!(!is_truthy(value), "{value}");
        }
    }

    #[test]
    fn either_variable_disables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        assert!(!disabled_by(env(&[])));
        assert!(disabled_by(env(&[(
            "DATABRICKS_TELEMETRY_DISABLED",
            "true"
        )])));
        assert!(disabled_by(env(&[("KASAL_TELEMETRY_DISABLED", "1")])));
        assert!(!disabled_by(env(&[("KASAL_TELEMETRY_DISABLED", "false")])));
        assert!(disabled_by(env(&[
            ("DATABRICKS_TELEMETRY_DISABLED", "no"),
            ("KASAL_TELEMETRY_DISABLED", "ON"),
        ])));
    }

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
    fn no_runtime_gives_a_disabled_handle() {
        let exporter = tower::service_fn(|_: Batch| async { Ok::<_, BoxError>(()) });
        let telemetry = TelemetryBuilder::new()
            .exporter(exporter)
            .ignore_env()
            .build();
        assert!(!telemetry.is_enabled());
    }
}
