//! Timestamps as every exporter writes them. A leaf: it imports nothing from the crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: saturating, and 0 for a time before the epoch (a clock set
/// wrong must not fail an export).
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}
