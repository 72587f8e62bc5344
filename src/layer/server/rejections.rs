//! [`HeaderRejections`]: how many forwarded headers the server layer rejected, by reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kasal_trace::RejectReason;

/// Forwarded headers rejected so far, by reason (each rejected request counts once, for the
/// first bad header found). Read with [`ServerTelemetryLayer::rejections`](super::ServerTelemetryLayer::rejections).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderRejections {
    /// Longer than 8 KiB.
    pub oversized: u64,
    /// Not valid UTF-8.
    pub not_utf8: u64,
    /// Empty or only whitespace.
    pub empty: u64,
    /// Sent more than once.
    pub duplicated: u64,
}

impl HeaderRejections {
    /// All rejections.
    pub fn total(&self) -> u64 {
        self.oversized + self.not_utf8 + self.empty + self.duplicated
    }
}

/// The live counters, shared by a layer and every service it built (relaxed atomics: counts,
/// not synchronisation).
#[derive(Clone, Debug, Default)]
pub(super) struct RejectionCounters(Arc<[AtomicU64; 4]>);

impl RejectionCounters {
    pub(super) fn count(&self, reason: RejectReason) {
        let slot = match reason {
            RejectReason::Oversized => 0,
            RejectReason::NotUtf8 => 1,
            RejectReason::Empty => 2,
            RejectReason::Duplicated => 3,
            // `RejectReason` is non-exhaustive: a future reason counts as duplicated until it
            // gets its own counter.
            _ => 3,
        };
        self.0[slot].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> HeaderRejections {
        let get = |slot: usize| self.0[slot].load(Ordering::Relaxed);
        HeaderRejections {
            oversized: get(0),
            not_utf8: get(1),
            empty: get(2),
            duplicated: get(3),
        }
    }
}
