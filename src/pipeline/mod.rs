//! The telemetry pipeline: a cheap [`Telemetry`] handle, an aggregator task, and an exporter.
//!
//! ```text
//!  record(CallRecord) ──┬── no operation id ──► caller-side sharded rollups (atomic counters)
//!                       │                                  │ drained per window
//!                       └── operation id ──► bounded queue ─► aggregator task ─► outbox ─► exporter
//!  complete_operation / flush / shutdown ──► same queue (ordering)        (bounded in bytes)
//! ```
//!
//! - Plain calls (no `OperationId`) are folded on the caller's thread into one of a fixed set of
//!   shards, each a small table from `RollupKey` to atomic counters (count, latency sum, min,
//!   max, histogram). Nothing is queued for them, so a burst never fills the queue; the
//!   aggregator closes a window every `flush_interval` and the exported counts sum exactly to
//!   the plain calls accepted.
//! - Calls with an operation id, completions and control messages go through a bounded queue
//!   (`try_send`; full means dropped and counted). The aggregator folds them into one
//!   [`OperationSummary`](crate::OperationSummary) per operation, emitted on
//!   [`Telemetry::complete_operation`], at once on a terminal error, after the TTL or when
//!   evicted (incomplete, with its errors).
//! - Emitted items are batched (`batch_size`) and exported on batch size, interval, terminal
//!   error, [`Telemetry::flush`] and [`Telemetry::shutdown`], one exporter call at a time, each
//!   with a timeout. While the exporter is slow, batches wait in a backlog bounded in bytes.
//!
//! Every bound (queue, pending operations, errors per operation, error text, message length,
//! rollup keys, export backlog) keeps the whole pipeline under about 10 MiB whatever the traffic.
//!
//! This module must never block or panic on the recording path, never `block_on` in the
//! aggregator, and never surface an exporter error to the app: everything is counted in
//! [`Stats`] and logged at debug.
//!
//! Telemetry is off when `DATABRICKS_TELEMETRY_DISABLED` or `KASAL_TELEMETRY_DISABLED` is `1`,
//! `true`, `yes` or `on` (any case): `build()` then returns [`Telemetry::disabled`].

mod aggregator;
mod builder;
mod operations;
mod outbox;
mod rollup;
mod stats;
mod telemetry;
mod usage;

pub use builder::{ConfigError, DISABLE_ENV_VARS, TelemetryBuilder};
pub(crate) use builder::{MAX_DURATION, disabled_by};
pub use stats::Stats;
pub use telemetry::Telemetry;
