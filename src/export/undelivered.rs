//! How an exporter tells the pipeline that a batch was not (all) delivered, without failing.
//!
//! An exporter is a `tower::Service<Batch, Response = ()>`: `Ok(())` means every item of the
//! batch reached its destination, and any error means the export failed. Two outcomes are
//! neither, and the pipeline must not count them as either:
//!
//! - the batch was **skipped** on purpose (the workspace's feature flag is off or unknown, its
//!   fetch failed, the environment disabled export): nothing left the process;
//! - the batch was delivered **in part**: the server refused some logs (its `numProtoSuccess` was
//!   lower than what was sent), or the exporter does not send some kinds of item at all (the
//!   Databricks exporter sends no rollups).
//!
//! The exporter returns an error whose source chain holds an [`Undelivered`]; the pipeline finds
//! it and counts the items in [`Stats`](crate::Stats) (`skipped` by reason, `export_rejected`),
//! never in `exported` nor in `export_failures`. Any exporter may do the same.
//!
//! A leaf module: it imports nothing from the crate, so both the exporters and the pipeline can
//! depend on it.

use std::fmt;

/// Why a batch (or part of one) was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The workspace's telemetry feature flag is off.
    FlagOff,
    /// The flag endpoint does not know the flag (404, or a response without it), and the
    /// unknown-flag policy says "do not export".
    FlagUnknown,
    /// The flag could not be fetched (transport error, 5xx, malformed answer) and no earlier
    /// value is known.
    FlagUnavailable,
    /// `DATABRICKS_TELEMETRY_DISABLED` or `KASAL_TELEMETRY_DISABLED` is set.
    DisabledByEnv,
    /// The exporter does not send this kind of item (the Databricks exporter and rollups).
    NotSupported,
}

impl SkipReason {
    /// Every reason, in a fixed order.
    pub const ALL: [SkipReason; 5] = [
        SkipReason::FlagOff,
        SkipReason::FlagUnknown,
        SkipReason::FlagUnavailable,
        SkipReason::DisabledByEnv,
        SkipReason::NotSupported,
    ];

    /// A short, stable name: `flag_off`, `flag_unknown`, `flag_unavailable`, `disabled_by_env`,
    /// `not_supported`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::FlagOff => "flag_off",
            SkipReason::FlagUnknown => "flag_unknown",
            SkipReason::FlagUnavailable => "flag_unavailable",
            SkipReason::DisabledByEnv => "disabled_by_env",
            SkipReason::NotSupported => "not_supported",
        }
    }

    /// The position of this reason in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        match self {
            SkipReason::FlagOff => 0,
            SkipReason::FlagUnknown => 1,
            SkipReason::FlagUnavailable => 2,
            SkipReason::DisabledByEnv => 3,
            SkipReason::NotSupported => 4,
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A batch not (all) delivered, and not because the export failed.
///
/// An exporter is a `tower::Service<Batch, Response = ()>`: `Ok(())` means every item of the
/// batch reached its destination, and any other error means the export failed. A batch
/// **skipped** on purpose (feature flag off or unknown, its fetch failed, export disabled by the
/// environment) or delivered **in part** (the server refused some logs, or the exporter does not
/// send some kinds of item) is neither. The exporter then returns an error whose source chain
/// holds an `Undelivered` ([`find`](Self::find) looks for it); the pipeline counts the items in
/// [`Stats`](crate::Stats) as `skipped` (by reason) or `export_rejected`, never as `exported`
/// nor in `export_failures`. Any exporter may do the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Undelivered {
    /// Nothing was sent: every item of the batch is skipped for `0`.
    #[error("batch skipped ({0})")]
    Skipped(SkipReason),
    /// The batch was sent in part, or accepted in part.
    #[error(
        "batch delivered in part: {delivered} delivered, {rejected} rejected by the server, \
         {not_supported} not supported by the exporter"
    )]
    Partial {
        /// Items the destination accepted.
        delivered: u64,
        /// Items sent but refused by the destination.
        rejected: u64,
        /// Items the exporter does not send (skipped as [`SkipReason::NotSupported`]).
        not_supported: u64,
    },
}

impl Undelivered {
    /// The `Undelivered` in `error` or its source chain (at most 32 deep), if any.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Undelivered> {
        std::iter::successors(Some(error), |&error| error.source())
            .take(32)
            .find_map(|error| error.downcast_ref::<Undelivered>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] Undelivered);

    #[test]
    fn found_anywhere_in_the_chain() {
        let skipped = Undelivered::Skipped(SkipReason::FlagOff);
        assert_eq!(Undelivered::find(&skipped), Some(&skipped));
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Wrapper(skipped));
        assert_eq!(Undelivered::find(&*boxed), Some(&skipped));
        let other: Box<dyn std::error::Error + Send + Sync> = "boom".into();
        assert_eq!(Undelivered::find(&*other), None);
    }

    #[test]
    fn reasons_are_indexed_in_order() {
        for (i, reason) in SkipReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }
}
