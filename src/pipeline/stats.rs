//! What the pipeline did so far: counters read by `Telemetry::stats()`.
//!
//! Counting must stay cheap enough for the hot path: plain atomics, relaxed ordering, and the
//! per-record counters live in the caller's shard (see `rollup.rs`) so that two producer threads
//! never write the same cache line. Nothing here may lock or allocate.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::export::undelivered::SkipReason;

/// A snapshot of the pipeline's counters, from `Telemetry::stats()` or `Telemetry::shutdown()`.
///
/// Every record offered to `record` ends up in exactly one of `accepted` or `dropped`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Records taken in: folded into a rollup, or queued for the aggregator.
    pub accepted: u64,
    /// Records lost: the queue was full, the pipeline was shut down, or the rollup key table
    /// was full (see `rollup_overflow`).
    pub dropped: u64,
    /// Items (operation summaries + rollups) the exporter delivered. Never counts an item that
    /// did not leave the process, nor one the server refused.
    pub exported: u64,
    /// Items the exporter sent but the server refused (e.g. the Databricks endpoint's
    /// `numProtoSuccess` was lower than the logs sent).
    pub export_rejected: u64,
    /// Items not sent on purpose (feature flag off or unknown, flag unavailable, export
    /// disabled by the environment, not supported by the exporter): the sum of `skipped_by`.
    pub skipped: u64,
    /// `skipped`, by reason.
    pub skipped_by: SkipCounts,
    /// Batches the exporter accepted.
    pub batches: u64,
    /// Exporter calls that failed or timed out (their items are lost).
    pub export_failures: u64,
    /// Items discarded before reaching the exporter because the export backlog was over its byte
    /// bound (slow or stalled exporter) or the shutdown deadline passed.
    pub export_dropped: u64,
    /// Operations emitted incomplete because there were too many pending.
    pub operations_evicted: u64,
    /// Operations emitted incomplete because they outlived the operation TTL.
    pub operations_expired: u64,
    /// Error occurrences not kept in an `OperationSummary` (per-operation or byte bound).
    pub errors_dropped: u64,
    /// `complete_operation` calls lost because the queue was full (the operation is still
    /// emitted later, incomplete, by TTL, eviction or shutdown).
    pub completions_dropped: u64,
    /// Plain calls whose rollup key did not fit in the key table (also counted in `dropped`).
    pub rollup_overflow: u64,
    /// Records and items the aggregator held when its task was dropped without `shutdown()`
    /// (its runtime was dropped): queued records, pending operations, emitted items waiting
    /// for or in the middle of an export, the open window's rollups.
    pub lost: u64,
    /// Model calls whose token usage was read from the response body.
    pub usage_read: u64,
    /// Model calls whose response was scanned for usage but gave none that could be trusted
    /// (none reported, malformed, cut off, out of range): ignored, the response unchanged.
    pub usage_ignored: u64,
}

/// Items skipped, by [`SkipReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkipCounts {
    /// The workspace's telemetry feature flag was off.
    pub flag_off: u64,
    /// The flag was unknown to the workspace (404 or absent) and the policy said no.
    pub flag_unknown: u64,
    /// The flag could not be fetched and no earlier value was known.
    pub flag_unavailable: u64,
    /// `DATABRICKS_TELEMETRY_DISABLED` / `KASAL_TELEMETRY_DISABLED`.
    pub disabled_by_env: u64,
    /// The exporter does not send that kind of item (the Databricks exporter and rollups).
    pub not_supported: u64,
}

impl SkipCounts {
    /// The count for one reason.
    pub fn get(&self, reason: SkipReason) -> u64 {
        match reason {
            SkipReason::FlagOff => self.flag_off,
            SkipReason::FlagUnknown => self.flag_unknown,
            SkipReason::FlagUnavailable => self.flag_unavailable,
            SkipReason::DisabledByEnv => self.disabled_by_env,
            SkipReason::NotSupported => self.not_supported,
        }
    }

    /// The sum over every reason.
    pub fn total(&self) -> u64 {
        SkipReason::ALL.iter().map(|reason| self.get(*reason)).sum()
    }
}

/// The aggregator's counters (one writer, any number of readers).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) exported: AtomicU64,
    pub(crate) export_rejected: AtomicU64,
    /// Indexed by `SkipReason::index`.
    pub(crate) skipped: [AtomicU64; SkipReason::ALL.len()],
    pub(crate) lost: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) export_failures: AtomicU64,
    pub(crate) export_dropped: AtomicU64,
    pub(crate) operations_evicted: AtomicU64,
    pub(crate) operations_expired: AtomicU64,
    pub(crate) errors_dropped: AtomicU64,
    pub(crate) completions_dropped: AtomicU64,
    pub(crate) usage_read: AtomicU64,
    pub(crate) usage_ignored: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// Counts `items` skipped for `reason`.
    pub(crate) fn skip(&self, reason: SkipReason, items: u64) {
        add(&self.skipped[reason.index()], items);
    }

    /// Copies the aggregator's counters into `stats` (the record counters come from the shards).
    pub(crate) fn fill(&self, stats: &mut Stats) {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        stats.exported = get(&self.exported);
        stats.export_rejected = get(&self.export_rejected);
        let skipped = |reason: SkipReason| get(&self.skipped[reason.index()]);
        stats.skipped_by = SkipCounts {
            flag_off: skipped(SkipReason::FlagOff),
            flag_unknown: skipped(SkipReason::FlagUnknown),
            flag_unavailable: skipped(SkipReason::FlagUnavailable),
            disabled_by_env: skipped(SkipReason::DisabledByEnv),
            not_supported: skipped(SkipReason::NotSupported),
        };
        stats.skipped = stats.skipped_by.total();
        stats.lost = get(&self.lost);
        stats.batches = get(&self.batches);
        stats.export_failures = get(&self.export_failures);
        stats.export_dropped = get(&self.export_dropped);
        stats.operations_evicted = get(&self.operations_evicted);
        stats.operations_expired = get(&self.operations_expired);
        stats.errors_dropped = get(&self.errors_dropped);
        stats.completions_dropped = get(&self.completions_dropped);
        stats.usage_read = get(&self.usage_read);
        stats.usage_ignored = get(&self.usage_ignored);
    }
}
