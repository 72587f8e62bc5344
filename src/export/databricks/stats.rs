//! What a [`DatabricksExporter`](super::DatabricksExporter) reports: its counters
//! ([`ExporterStats`]) and its log lines.
//!
//! Logging rule: an operator sees one WARN per change of state, never one per batch. The first
//! batch skipped for each reason logs one WARN naming the reason and the setting that changes
//! it; export going from healthy to failing logs one WARN, and back to healthy one more;
//! everything else is `debug`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::export::undelivered::SkipReason;

/// Counters of a [`DatabricksExporter`](super::DatabricksExporter) (shared by its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExporterStats {
    /// Uploads the endpoint answered with 2xx.
    pub sent: u64,
    /// Logs (one per operation summary) the endpoint stored (its `numProtoSuccess`, or every
    /// log sent when the answer does not say).
    pub logs_sent: u64,
    /// Logs sent in a 2xx upload that the endpoint did not store (`numProtoSuccess` lower than
    /// the logs sent).
    pub logs_rejected: u64,
    /// 2xx answers whose body could not be read as `{numProtoSuccess, errors}`: their logs are
    /// counted as stored.
    pub unreadable_answers: u64,
    /// Uploads sent unauthenticated (to `/telemetry-unauth`), delivered or not.
    pub unauthenticated: u64,
    /// Uploads lost to 5xx/429 after retries, transport errors, timeouts, or abandoned by the
    /// caller (a deadline outside the exporter) before they finished.
    pub failed: u64,
    /// Uploads dropped on 401/403.
    pub dropped_unauthorized: u64,
    /// Uploads dropped on another 4xx.
    pub dropped_rejected: u64,
    /// Batches dropped because the circuit breaker was open (nothing sent).
    pub dropped_circuit_open: u64,
    /// Batches skipped because the feature flag was off.
    pub skipped_flag_off: u64,
    /// Batches skipped because the flag was unknown to the workspace (404 or absent).
    pub skipped_flag_unknown: u64,
    /// Batches skipped because the flag could not be fetched and no value was known.
    pub skipped_flag_unavailable: u64,
    /// Batches skipped because of `DATABRICKS_TELEMETRY_DISABLED` / `KASAL_TELEMETRY_DISABLED`.
    pub skipped_disabled: u64,
    /// Rollups not sent: the endpoint's schema has no place for them.
    pub rollups_not_sent: u64,
    /// Usage beacon requests answered 2xx (see
    /// [`usage_beacon`](super::DatabricksExporterBuilder::usage_beacon)).
    pub beacons_sent: u64,
    /// Usage beacon requests that failed (after retries) or were not answered 2xx.
    pub beacons_failed: u64,
}

/// The counters and the logging state behind [`ExporterStats`].
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) sent: AtomicU64,
    pub(super) logs_sent: AtomicU64,
    pub(super) logs_rejected: AtomicU64,
    pub(super) unreadable_answers: AtomicU64,
    pub(super) unauthenticated: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) dropped_unauthorized: AtomicU64,
    pub(super) dropped_rejected: AtomicU64,
    pub(super) dropped_circuit_open: AtomicU64,
    /// Batches, indexed by `SkipReason::index`.
    skipped: [AtomicU64; SkipReason::ALL.len()],
    pub(super) rollups_not_sent: AtomicU64,
    /// Whether the first skip for each reason was logged.
    skip_warned: [AtomicBool; SkipReason::ALL.len()],
    /// Whether the first rejected log was logged.
    rejection_warned: AtomicBool,
    /// Whether export is failing (the last upload failed).
    failing: AtomicBool,
}

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Report {
    pub(super) fn snapshot(&self) -> ExporterStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let skipped = |reason: SkipReason| get(&self.skipped[reason.index()]);
        ExporterStats {
            sent: get(&self.sent),
            logs_sent: get(&self.logs_sent),
            logs_rejected: get(&self.logs_rejected),
            unreadable_answers: get(&self.unreadable_answers),
            unauthenticated: get(&self.unauthenticated),
            failed: get(&self.failed),
            dropped_unauthorized: get(&self.dropped_unauthorized),
            dropped_rejected: get(&self.dropped_rejected),
            dropped_circuit_open: get(&self.dropped_circuit_open),
            skipped_flag_off: skipped(SkipReason::FlagOff),
            skipped_flag_unknown: skipped(SkipReason::FlagUnknown),
            skipped_flag_unavailable: skipped(SkipReason::FlagUnavailable),
            skipped_disabled: skipped(SkipReason::DisabledByEnv),
            rollups_not_sent: get(&self.rollups_not_sent),
            beacons_sent: 0,
            beacons_failed: 0,
        }
    }

    /// Counts a skipped batch; the first one for `reason` logs one WARN naming `setting`, the
    /// rest debug.
    pub(super) fn skipped(&self, reason: SkipReason, items: usize, setting: &str, why: &str) {
        bump(&self.skipped[reason.index()]);
        if !self.skip_warned[reason.index()].swap(true, Ordering::Relaxed) {
            tracing::warn!(
                reason = reason.as_str(),
                setting,
                "telemetry export skipped: {why}; batches are counted as skipped, not sent, \
                 until `{setting}` changes"
            );
        } else {
            tracing::debug!(reason = reason.as_str(), items, "telemetry batch skipped");
        }
    }

    /// Counts logs the endpoint did not store; the first time, one WARN.
    pub(super) fn rejected(&self, rejected: u64, sent: u64, first_error: Option<&str>) {
        self.logs_rejected.fetch_add(rejected, Ordering::Relaxed);
        if !self.rejection_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                rejected,
                sent,
                error = first_error.unwrap_or(""),
                "telemetry endpoint stored fewer logs than were sent (numProtoSuccess); the \
                 rest are counted as rejected"
            );
        } else {
            tracing::debug!(rejected, sent, "telemetry endpoint rejected logs");
        }
    }

    /// An upload failed (`what` is redacted): one WARN when export goes from healthy to
    /// failing, debug while it stays failing.
    pub(super) fn failing(&self, what: &str) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = what,
                "telemetry export failing; further failures are logged at debug until it \
                 recovers"
            );
        } else {
            tracing::debug!(error = what, "telemetry export failed");
        }
    }

    /// An upload succeeded: one WARN if export was failing.
    pub(super) fn healthy(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::warn!("telemetry export recovered");
        }
    }
}
