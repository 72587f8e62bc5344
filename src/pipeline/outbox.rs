//! The export backlog: emitted items waiting to be batched, and sealed batches waiting for the
//! exporter.
//!
//! Sans-IO, owned by the aggregator task. It exists so that a slow or stalled exporter never
//! holds up aggregation: items pile up here instead, bounded in bytes (estimated from the items'
//! sizes and their error text). Over the bound the oldest items are dropped and counted.
//!
//! Must never: exceed its byte bound by more than one item, or reorder items.

use std::collections::VecDeque;
use std::mem::size_of;

use super::stats::{Counters, add};
use crate::event::{Batch, ErrorEntry, OperationSummary, Rollup, UsageRollup};

/// A batch ready for the exporter, numbered in sealing order (from 1).
#[derive(Debug)]
pub(crate) struct Sealed {
    pub(crate) seq: u64,
    pub(crate) batch: Batch,
    bytes: usize,
}

/// The bounded backlog.
#[derive(Debug)]
pub(crate) struct Outbox {
    batch_size: usize,
    max_bytes: usize,
    ready: Batch,
    ready_bytes: usize,
    sealed: VecDeque<Sealed>,
    sealed_bytes: usize,
    next_seq: u64,
}

impl Outbox {
    pub(crate) fn new(batch_size: usize, max_bytes: usize) -> Outbox {
        Outbox {
            batch_size: batch_size.max(1),
            max_bytes,
            ready: Batch::default(),
            ready_bytes: 0,
            sealed: VecDeque::new(),
            sealed_bytes: 0,
            next_seq: 1,
        }
    }

    /// Adds emitted operations; seals a batch whenever `batch_size` items (or a quarter of the
    /// byte bound) are ready.
    pub(crate) fn push_operations(
        &mut self,
        operations: impl IntoIterator<Item = OperationSummary>,
        counters: &Counters,
    ) {
        for operation in operations {
            self.ready_bytes += operation_bytes(&operation);
            self.ready.operations.push(operation);
            self.after_push(counters);
        }
    }

    /// Adds a window's rollups; seals like `push_operations`.
    pub(crate) fn push_rollups(
        &mut self,
        rollups: impl IntoIterator<Item = Rollup>,
        counters: &Counters,
    ) {
        for rollup in rollups {
            self.ready_bytes += rollup_bytes(&rollup);
            self.ready.rollups.push(rollup);
            self.after_push(counters);
        }
    }

    /// Adds a window's usage rollups; seals like `push_operations`.
    pub(crate) fn push_usage(
        &mut self,
        usage: impl IntoIterator<Item = UsageRollup>,
        counters: &Counters,
    ) {
        for rollup in usage {
            self.ready_bytes += size_of::<UsageRollup>() + rollup.model.len();
            self.ready.usage.push(rollup);
            self.after_push(counters);
        }
    }

    fn after_push(&mut self, counters: &Counters) {
        // A quarter of the bound per batch: big items (error text) are exported sooner rather
        // than dropped while a healthy exporter waits for the batch to fill.
        if self.ready.len() >= self.batch_size || self.ready_bytes >= self.max_bytes / 4 {
            self.seal_ready();
        }
        self.enforce(counters);
    }

    /// Seals whatever is ready into one batch (`ready` never holds `batch_size` items or more).
    pub(crate) fn seal_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.ready);
        let bytes = std::mem::take(&mut self.ready_bytes);
        self.sealed.push_back(Sealed {
            seq: self.next_seq,
            batch,
            bytes,
        });
        self.sealed_bytes += bytes;
        self.next_seq += 1;
    }

    /// Drops the oldest items until the backlog fits its bound.
    fn enforce(&mut self, counters: &Counters) {
        while self.ready_bytes + self.sealed_bytes > self.max_bytes {
            if let Some(oldest) = self.sealed.pop_front() {
                self.sealed_bytes -= oldest.bytes;
                add(&counters.export_dropped, oldest.batch.len() as u64);
            } else if !self.ready.operations.is_empty() {
                let operation = self.ready.operations.remove(0);
                self.ready_bytes -= operation_bytes(&operation);
                add(&counters.export_dropped, 1);
            } else if !self.ready.rollups.is_empty() {
                let rollup = self.ready.rollups.remove(0);
                self.ready_bytes -= rollup_bytes(&rollup);
                add(&counters.export_dropped, 1);
            } else if !self.ready.usage.is_empty() {
                let rollup = self.ready.usage.remove(0);
                self.ready_bytes -= size_of::<UsageRollup>() + rollup.model.len();
                add(&counters.export_dropped, 1);
            } else {
                break;
            }
        }
    }

    /// The oldest sealed batch.
    pub(crate) fn pop(&mut self) -> Option<Sealed> {
        let sealed = self.sealed.pop_front()?;
        self.sealed_bytes -= sealed.bytes;
        Some(sealed)
    }

    /// Whether there is a sealed batch.
    pub(crate) fn has_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    /// Whether items are ready but not sealed.
    #[cfg(test)]
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The number of the last batch sealed (0 before the first).
    pub(crate) fn last_sealed(&self) -> u64 {
        self.next_seq - 1
    }

    /// The number of the oldest sealed batch still here.
    pub(crate) fn oldest_sealed(&self) -> Option<u64> {
        self.sealed.front().map(|sealed| sealed.seq)
    }

    /// Drops everything, counting the items (shutdown deadline passed).
    pub(crate) fn drop_all(&mut self, counters: &Counters) {
        let ready = std::mem::take(&mut self.ready).len();
        let sealed: usize = self.sealed.drain(..).map(|sealed| sealed.batch.len()).sum();
        self.ready_bytes = 0;
        self.sealed_bytes = 0;
        add(&counters.export_dropped, (ready + sealed) as u64);
    }

    /// Estimated bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.ready_bytes + self.sealed_bytes
    }
}

/// Estimated heap and inline bytes of an operation summary.
pub(crate) fn operation_bytes(operation: &OperationSummary) -> usize {
    const ARC_HEADER: usize = 2 * size_of::<usize>();
    let errors: usize = operation
        .errors
        .iter()
        .map(|error| error.error_type.len() + error.message.len() + 2 * ARC_HEADER)
        .sum();
    size_of::<OperationSummary>()
        + operation.errors.capacity() * size_of::<ErrorEntry>()
        + errors
        + operation.caller_id.as_deref().map_or(0, str::len)
        + operation.operation_id.as_str().len()
}

/// Estimated heap and inline bytes of a rollup.
pub(crate) fn rollup_bytes(rollup: &Rollup) -> usize {
    size_of::<Rollup>()
        + rollup.key.route.as_deref().map_or(0, str::len)
        + rollup
            .key
            .host
            .as_ref()
            .map_or(0, |host| host.as_str().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::{Duration, SystemTime};

    use kasal_trace::{ExecutionMode, OperationId};
    use kasal_user_agent::Product;

    use crate::event::OutcomeCounts;

    fn operation(id: &str, error_len: usize) -> OperationSummary {
        OperationSummary {
            operation_id: OperationId::new(id),
            product: Product::Jobs,
            mode: ExecutionMode::Service,
            caller_id: None,
            obo_dev_fallback: false,
            started_at: SystemTime::UNIX_EPOCH,
            calls: 1,
            retries: 0,
            latency_sum: Duration::ZERO,
            latency_max: Duration::ZERO,
            bytes: 0,
            outcomes: OutcomeCounts::default(),
            errors: vec![ErrorEntry {
                error_type: Arc::from("500"),
                message: Arc::from("x".repeat(error_len)),
                count: 1,
            }],
            errors_dropped: 0,
            complete: true,
            usage: Default::default(),
        }
    }

    #[test]
    fn seals_on_batch_size_and_numbers_batches() {
        let counters = Counters::default();
        let mut outbox = Outbox::new(2, 1 << 20);
        outbox.push_operations((0..5).map(|i| operation(&i.to_string(), 1)), &counters);
        assert_eq!(outbox.last_sealed(), 2);
        assert!(outbox.has_ready());
        outbox.seal_ready();
        let sizes: Vec<_> = std::iter::from_fn(|| outbox.pop())
            .map(|sealed| (sealed.seq, sealed.batch.len()))
            .collect();
        assert_eq!(sizes, [(1, 2), (2, 2), (3, 1)]);
        assert_eq!(outbox.bytes(), 0);
    }

    #[test]
    fn drops_oldest_over_the_byte_bound() {
        let counters = Counters::default();
        let one = operation_bytes(&operation("0", 1_000));
        let mut outbox = Outbox::new(1, 3 * one);
        outbox.push_operations((0..10).map(|i| operation(&i.to_string(), 1_000)), &counters);
        assert!(outbox.bytes() <= 3 * one);
        assert_eq!(counters.export_dropped.load(Relaxed), 7);
        // Each item is over a quarter of the bound, so each is sealed alone; the newest are kept,
        // in order.
        let kept: Vec<_> = std::iter::from_fn(|| outbox.pop())
            .map(|sealed| sealed.batch.operations[0].operation_id.to_string())
            .collect();
        assert_eq!(kept, ["7", "8", "9"]);
    }
}
