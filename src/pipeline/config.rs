//! The pipeline's settings and the environment switch: a leaf module (it imports nothing from
//! the pipeline), shared by the builder, the handle and the aggregator, as `tower::buffer`
//! keeps its message types apart from the worker and the service.
//!
//! The environment switch lives here and nowhere else: `DATABRICKS_TELEMETRY_DISABLED` or
//! `KASAL_TELEMETRY_DISABLED` set to `1`, `true`, `yes` or `on` (any case, surrounding
//! whitespace ignored) disables export. The pipeline reads it once, when it is built; the
//! [`DatabricksExporter`](crate::DatabricksExporter) reads it before every batch (it can be used
//! without the pipeline).

use std::time::Duration;

use tower::BoxError;
use tower::util::BoxService;

use crate::event::Batch;

/// Environment variables that disable telemetry export when set to `1`, `true`, `yes` or `on`
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
    /// `None`: the shutdown deadline.
    pub(crate) flush_deadline: Option<Duration>,
    pub(crate) export_timeout: Duration,
    pub(crate) max_export_backlog_bytes: usize,
    pub(crate) max_rollup_keys: usize,
    /// The environment switch was on at build time: every batch is skipped, none exported.
    pub(crate) export_disabled_by_env: bool,
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
            flush_deadline: None,
            export_timeout: Duration::from_secs(30),
            max_export_backlog_bytes: 1 << 20,
            max_rollup_keys: 128,
            export_disabled_by_env: false,
        }
    }
}

impl Config {
    /// How long `flush()` waits: its own setting, else the shutdown deadline.
    pub(crate) fn flush_deadline(&self) -> Duration {
        self.flush_deadline.unwrap_or(self.shutdown_deadline)
    }
}

/// Whether the environment switch disables export now: one of [`DISABLE_ENV_VARS`] is `1`,
/// `true`, `yes` or `on` (any case).
pub fn disabled_by_env() -> bool {
    disabled_by(|name| std::env::var(name).ok())
}

/// The variable that disables export now, if any (for the log line that names it).
pub(crate) fn disabling_var() -> Option<&'static str> {
    DISABLE_ENV_VARS.iter().copied().find(|name| {
        std::env::var(name)
            .ok()
            .is_some_and(|value| is_truthy(&value))
    })
}

/// Whether one of [`DISABLE_ENV_VARS`] disables export, reading variables with `lookup`.
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
}
