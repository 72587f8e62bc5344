//! What the pipeline did so far: counters read by `Telemetry::stats()`.
//!
//! Counting must stay cheap enough for the hot path: plain atomics, relaxed ordering, and the
//! per-record counters live in the caller's shard (see `rollup.rs`) so that two producer threads
//! never write the same cache line. Nothing here may lock or allocate.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Items (operation summaries + rollups) the exporter accepted.
    pub exported: u64,
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
    /// Model calls whose token usage was read from the response body.
    pub usage_read: u64,
    /// Model calls whose response was scanned for usage but gave none that could be trusted
    /// (none reported, malformed, cut off, out of range): ignored, the response unchanged.
    pub usage_ignored: u64,
}

/// The aggregator's counters (one writer, any number of readers).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) exported: AtomicU64,
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
    /// Copies the aggregator's counters into `stats` (the record counters come from the shards).
    pub(crate) fn fill(&self, stats: &mut Stats) {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        stats.exported = get(&self.exported);
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
