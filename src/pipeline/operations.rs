//! Pending operations: calls that carry an `OperationId`, folded into `OperationSummary`s.
//!
//! Sans-IO: owned by the aggregator task, driven with the current `Instant`, and returns the
//! summaries it emits. An operation is emitted complete on `complete` or on a terminal error
//! (unless it was declared with `open`: then only on `complete`), and
//! incomplete when it outlives the TTL (counted from its first call), when it is the oldest and
//! room is needed for a new one, or at shutdown.
//!
//! Must never: keep more than `max_pending` operations, more than `max_errors` distinct errors in
//! one operation, or more than `max_error_text` bytes of error text across all pending
//! operations; anything over a bound is counted, never kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kasal_classify::Outcome;
use kasal_trace::OperationId;

use super::stats::{Counters, add};
use crate::event::{CallRecord, ErrorEntry, OperationSummary, OutcomeCounts};

/// The bounds on pending operations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_pending: usize,
    pub(crate) ttl: Duration,
    pub(crate) max_errors: usize,
    pub(crate) max_error_text: usize,
    pub(crate) max_message_chars: usize,
}

/// The pending operations, oldest first.
#[derive(Debug)]
pub(crate) struct Operations {
    limits: Limits,
    pending: HashMap<OperationId, Pending>,
    /// First-call order: sequence number -> operation. Gives the oldest for eviction and TTL.
    order: BTreeMap<u64, OperationId>,
    next_seq: u64,
    /// Error text retained across all pending operations, in bytes.
    error_text: usize,
    /// Interned `error.type`s (a handful of status codes and names), so each error entry does
    /// not allocate its own.
    error_types: Vec<Arc<str>>,
    /// Operations declared with `open`: a terminal call does not emit them (at most
    /// `max_pending`; cleared by `complete` and `drain`).
    held: HashSet<OperationId>,
}

/// At most this many interned error types.
const MAX_ERROR_TYPES: usize = 64;

#[derive(Debug)]
struct Pending {
    seq: u64,
    first_seen: Instant,
    error_text: usize,
    /// Boxed: keeps the hash table's slots small (it runs at most 7/8 full).
    summary: Box<OperationSummary>,
}

/// What folding one call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Folded {
    /// The call was folded into a pending operation.
    Pending,
    /// The call was terminal: its operation was emitted.
    Emitted,
}

impl Operations {
    pub(crate) fn new(limits: Limits) -> Operations {
        Operations {
            limits,
            pending: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            error_text: 0,
            error_types: Vec::new(),
            held: HashSet::new(),
        }
    }

    /// Pending operations.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Retained error text, in bytes.
    #[cfg(test)]
    pub(crate) fn error_text(&self) -> usize {
        self.error_text
    }

    /// Folds a call carrying an operation id. Emits into `out` the oldest operation if room was
    /// needed, and the call's operation if the call was terminal.
    pub(crate) fn fold(
        &mut self,
        record: CallRecord,
        now: Instant,
        counters: &Counters,
        out: &mut Vec<OperationSummary>,
    ) -> Folded {
        let Some(id) = record.operation_id.clone() else {
            return Folded::Pending;
        };
        if !self.pending.contains_key(&id) {
            while self.pending.len() >= self.limits.max_pending.max(1) {
                let Some((_, oldest)) = self.order.pop_first() else {
                    break;
                };
                if let Some(summary) = self.remove(&oldest, false) {
                    add(&counters.operations_evicted, 1);
                    out.push(summary);
                }
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.order.insert(seq, id.clone());
            self.pending.insert(
                id.clone(),
                Pending {
                    seq,
                    first_seen: now,
                    error_text: 0,
                    summary: Box::new(empty_summary(&record, id.clone())),
                },
            );
        }
        let terminal =
            matches!(record.outcome, Outcome::Terminal { .. }) && !self.held.contains(&id);
        self.fold_into(&id, record, counters);
        if terminal {
            if let Some(summary) = self.remove(&id, true) {
                out.push(summary);
            }
            return Folded::Emitted;
        }
        Folded::Pending
    }

    fn fold_into(&mut self, id: &OperationId, record: CallRecord, counters: &Counters) {
        let Some(pending) = self.pending.get_mut(id) else {
            return;
        };
        let summary = &mut *pending.summary;
        summary.calls += 1;
        summary.retries += u64::from(record.attempts.saturating_sub(1));
        summary.latency_sum = summary.latency_sum.saturating_add(record.latency);
        summary.latency_max = summary.latency_max.max(record.latency);
        summary.bytes = summary.bytes.saturating_add(record.response_bytes);
        if let Some(usage) = record.usage {
            summary.usage += usage;
        }
        summary.obo_dev_fallback |= record.obo_dev_fallback;
        match record.outcome {
            Outcome::Success => summary.outcomes.success += 1,
            Outcome::Retryable { .. } => summary.outcomes.retryable += 1,
            Outcome::Terminal { .. } => summary.outcomes.terminal += 1,
        }
        let error_type = record.outcome.error_type();
        if error_type.is_none() && record.error.is_none() {
            return;
        }
        let error_type = error_type.unwrap_or("error");
        let message = record.error.as_deref().unwrap_or("");
        let message = truncate(message, self.limits.max_message_chars);
        if let Some(entry) = summary
            .errors
            .iter_mut()
            .find(|entry| &*entry.error_type == error_type && &*entry.message == message)
        {
            entry.count += 1;
            return;
        }
        let text = error_type.len() + message.len();
        if summary.errors.len() >= self.limits.max_errors
            || self.error_text + text > self.limits.max_error_text
        {
            summary.errors_dropped += 1;
            add(&counters.errors_dropped, 1);
            return;
        }
        // Share the caller's allocation when the message was not truncated.
        let message: Arc<str> = match &record.error {
            Some(error) if error.len() == message.len() => error.clone(),
            _ => Arc::from(message),
        };
        // Grow one at a time: most operations keep one or two errors, not the default four.
        summary.errors.reserve_exact(1);
        summary.errors.push(ErrorEntry {
            error_type: intern(&mut self.error_types, error_type),
            message,
            count: 1,
        });
        pending.error_text += text;
        self.error_text += text;
    }

    /// Emits the operation as complete, if it is pending.
    pub(crate) fn complete(&mut self, id: &OperationId) -> Option<OperationSummary> {
        self.held.remove(id);
        self.remove(id, true)
    }

    /// Holds `id` open until `complete`: its terminal calls no longer emit it. Ignored past
    /// `max_pending` held operations.
    pub(crate) fn open(&mut self, id: OperationId) {
        if self.held.len() < self.limits.max_pending.max(1) {
            self.held.insert(id);
        }
    }

    /// Emits, incomplete, every operation whose first call is at least the TTL old.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        counters: &Counters,
        out: &mut Vec<OperationSummary>,
    ) {
        while let Some(deadline) = self.next_expiry() {
            if deadline > now {
                break;
            }
            let Some((_, id)) = self.order.pop_first() else {
                break;
            };
            if let Some(summary) = self.remove(&id, false) {
                add(&counters.operations_expired, 1);
                out.push(summary);
            }
        }
    }

    /// When the oldest pending operation expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        let (_, oldest) = self.order.first_key_value()?;
        let pending = self.pending.get(oldest)?;
        Some(pending.first_seen + self.limits.ttl)
    }

    /// Emits every pending operation, incomplete (shutdown).
    pub(crate) fn drain(&mut self, out: &mut Vec<OperationSummary>) {
        self.held.clear();
        while let Some((_, id)) = self.order.pop_first() {
            if let Some(summary) = self.remove(&id, false) {
                out.push(summary);
            }
        }
    }

    /// Removes a pending operation and its place in the order.
    fn remove(&mut self, id: &OperationId, complete: bool) -> Option<OperationSummary> {
        let pending = self.pending.remove(id)?;
        self.order.remove(&pending.seq);
        self.error_text -= pending.error_text;
        let mut summary = *pending.summary;
        summary.complete = complete;
        Some(summary)
    }
}

fn empty_summary(record: &CallRecord, operation_id: OperationId) -> OperationSummary {
    OperationSummary {
        operation_id,
        product: record.product.clone(),
        mode: record.mode,
        caller_id: record.caller_id.clone(),
        obo_dev_fallback: false,
        started_at: record.started_at,
        calls: 0,
        retries: 0,
        latency_sum: Duration::ZERO,
        latency_max: Duration::ZERO,
        bytes: 0,
        outcomes: OutcomeCounts::default(),
        errors: Vec::new(),
        errors_dropped: 0,
        complete: false,
        usage: Default::default(),
    }
}

/// The interned copy of `error_type`.
fn intern(types: &mut Vec<Arc<str>>, error_type: &str) -> Arc<str> {
    if let Some(known) = types.iter().find(|known| &***known == error_type) {
        return known.clone();
    }
    let interned: Arc<str> = Arc::from(error_type);
    if types.len() < MAX_ERROR_TYPES {
        types.push(interned.clone());
    }
    interned
}

/// The first `max_chars` characters of `text`.
fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, StatusCode};
    use kasal_classify::Reason;
    use kasal_trace::{Direction, ExecutionMode};
    use kasal_user_agent::Product;
    use std::time::SystemTime;

    fn limits() -> Limits {
        Limits {
            max_pending: 3,
            ttl: Duration::from_secs(60),
            max_errors: 50,
            max_error_text: 1 << 20,
            max_message_chars: 2048,
        }
    }

    fn call(op: &str, outcome: Outcome, error: Option<&str>) -> CallRecord {
        let mut record = CallRecord::new(
            Direction::Client,
            Product::Mcp,
            Method::POST,
            SystemTime::UNIX_EPOCH,
        );
        record.outcome = outcome;
        record.latency = Duration::from_millis(10);
        record.response_bytes = 100;
        record.mode = ExecutionMode::User;
        record.caller_id = Some(Arc::from("alice@example.com"));
        record.operation_id = Some(OperationId::new(op));
        record.error = error.map(Arc::from);
        record
    }

    fn retryable() -> Outcome {
        Outcome::Retryable {
            reason: Reason::Status(StatusCode::SERVICE_UNAVAILABLE),
            retry_after: None,
        }
    }

    #[test]
    fn folds_calls_and_completes() {
        let counters = Counters::default();
        let mut ops = Operations::new(limits());
        let now = Instant::now();
        let mut out = Vec::new();
        let mut first = call("op", retryable(), Some("busy"));
        first.attempts = 3;
        first.latency = Duration::from_millis(40);
        ops.fold(first, now, &counters, &mut out);
        ops.fold(
            call("op", retryable(), Some("busy")),
            now,
            &counters,
            &mut out,
        );
        ops.fold(call("op", Outcome::Success, None), now, &counters, &mut out);
        assert!(out.is_empty());
        let summary = ops.complete(&OperationId::new("op")).unwrap();
        assert!(summary.complete);
        assert_eq!(summary.calls, 3);
        assert_eq!(summary.retries, 2);
        assert_eq!(summary.latency_sum, Duration::from_millis(60));
        assert_eq!(summary.latency_max, Duration::from_millis(40));
        assert_eq!(summary.bytes, 300);
        assert_eq!(summary.outcomes.retryable, 2);
        assert_eq!(summary.outcomes.success, 1);
        assert_eq!(summary.errors.len(), 1);
        assert_eq!(&*summary.errors[0].error_type, "503");
        assert_eq!(summary.errors[0].count, 2);
        assert_eq!(summary.caller_id.as_deref(), Some("alice@example.com"));
        assert_eq!(ops.len(), 0);
        assert_eq!(ops.error_text(), 0);
        assert!(ops.complete(&OperationId::new("op")).is_none());
    }

    #[test]
    fn terminal_emits_at_once() {
        let counters = Counters::default();
        let mut ops = Operations::new(limits());
        let mut out = Vec::new();
        let terminal = Outcome::Terminal {
            reason: Reason::Status(StatusCode::FORBIDDEN),
        };
        let folded = ops.fold(
            call("op", terminal, Some("no")),
            Instant::now(),
            &counters,
            &mut out,
        );
        assert_eq!(folded, Folded::Emitted);
        assert_eq!(out.len(), 1);
        assert!(out[0].complete);
        assert_eq!(out[0].outcomes.terminal, 1);
        assert_eq!(ops.len(), 0);
    }

    #[test]
    fn an_open_operation_counts_terminal_calls_until_complete() {
        let counters = Counters::default();
        let mut ops = Operations::new(limits());
        let mut out = Vec::new();
        let id = OperationId::new("session");
        ops.open(id.clone());
        let terminal = Outcome::Terminal {
            reason: Reason::ToolError,
        };
        for outcome in [Outcome::Success, terminal, Outcome::Success] {
            let folded = ops.fold(
                call("session", outcome, None),
                Instant::now(),
                &counters,
                &mut out,
            );
            assert_eq!(folded, Folded::Pending);
        }
        assert!(out.is_empty());
        let summary = ops.complete(&id).unwrap();
        assert_eq!((summary.calls, summary.outcomes.terminal), (3, 1));
        assert_eq!(&*summary.errors[0].error_type, "tool_error");
        assert!(summary.complete);
        // Completed: no longer held, a terminal call ends it again.
        let terminal = Outcome::Terminal {
            reason: Reason::ToolError,
        };
        let folded = ops.fold(
            call("session", terminal, None),
            Instant::now(),
            &counters,
            &mut out,
        );
        assert_eq!(folded, Folded::Emitted);
    }

    #[test]
    fn dedups_caps_distinct_errors_and_truncates() {
        let counters = Counters::default();
        let mut ops = Operations::new(Limits {
            max_errors: 2,
            max_message_chars: 4,
            ..limits()
        });
        let now = Instant::now();
        let mut out = Vec::new();
        for message in ["aaaa-1", "aaaa-2", "bbbb", "cccc", "dddd"] {
            ops.fold(
                call("op", retryable(), Some(message)),
                now,
                &counters,
                &mut out,
            );
        }
        let summary = ops.complete(&OperationId::new("op")).unwrap();
        // "aaaa-1" and "aaaa-2" truncate to the same message.
        assert_eq!(summary.errors.len(), 2);
        assert_eq!(&*summary.errors[0].message, "aaaa");
        assert_eq!(summary.errors[0].count, 2);
        assert_eq!(summary.errors_dropped, 2);
        assert_eq!(
            counters
                .errors_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hé", 5), "hé");
    }

    #[test]
    fn error_text_is_bounded_across_operations() {
        let counters = Counters::default();
        let mut ops = Operations::new(Limits {
            max_error_text: 10,
            ..limits()
        });
        let now = Instant::now();
        let mut out = Vec::new();
        // "503" + "abcd" = 7 bytes each.
        ops.fold(
            call("a", retryable(), Some("abcd")),
            now,
            &counters,
            &mut out,
        );
        ops.fold(
            call("b", retryable(), Some("abcd")),
            now,
            &counters,
            &mut out,
        );
        assert_eq!(ops.error_text(), 7);
        let b = ops.complete(&OperationId::new("b")).unwrap();
        assert!(b.errors.is_empty());
        assert_eq!(b.errors_dropped, 1);
        // Emitting "a" frees its text for others.
        ops.complete(&OperationId::new("a")).unwrap();
        assert_eq!(ops.error_text(), 0);
        ops.fold(
            call("c", retryable(), Some("abcd")),
            now,
            &counters,
            &mut out,
        );
        assert_eq!(
            ops.complete(&OperationId::new("c")).unwrap().errors.len(),
            1
        );
    }

    #[test]
    fn evicts_oldest_with_its_errors() {
        let counters = Counters::default();
        let mut ops = Operations::new(limits());
        let now = Instant::now();
        let mut out = Vec::new();
        ops.fold(
            call("a", retryable(), Some("first")),
            now,
            &counters,
            &mut out,
        );
        ops.fold(call("b", Outcome::Success, None), now, &counters, &mut out);
        ops.fold(call("c", Outcome::Success, None), now, &counters, &mut out);
        // A later call to "a" does not make it younger.
        ops.fold(call("a", Outcome::Success, None), now, &counters, &mut out);
        assert!(out.is_empty());
        ops.fold(call("d", Outcome::Success, None), now, &counters, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].operation_id.as_str(), "a");
        assert!(!out[0].complete);
        assert_eq!(out[0].calls, 2);
        assert_eq!(&*out[0].errors[0].message, "first");
        assert_eq!(ops.len(), 3);
        assert_eq!(
            counters
                .operations_evicted
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn expires_after_ttl() {
        let counters = Counters::default();
        let mut ops = Operations::new(limits());
        let start = Instant::now();
        let mut out = Vec::new();
        ops.fold(
            call("a", Outcome::Success, None),
            start,
            &counters,
            &mut out,
        );
        ops.fold(
            call("b", Outcome::Success, None),
            start + Duration::from_secs(30),
            &counters,
            &mut out,
        );
        assert_eq!(ops.next_expiry(), Some(start + Duration::from_secs(60)));
        ops.expire(start + Duration::from_secs(59), &counters, &mut out);
        assert!(out.is_empty());
        ops.expire(start + Duration::from_secs(60), &counters, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].operation_id.as_str(), "a");
        assert!(!out[0].complete);
        assert_eq!(ops.next_expiry(), Some(start + Duration::from_secs(90)));
    }
}
