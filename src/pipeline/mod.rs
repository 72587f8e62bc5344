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
//! # Counts that tell the truth
//!
//! Every item handed to the exporter ends in exactly one of `exported` (delivered),
//! `export_rejected` (delivered, refused by the server), `skipped` (not sent on purpose, by
//! [`SkipReason`](crate::export::SkipReason)), or a failed export (`export_failures` counts
//! the calls). Items that never reach the exporter are in `export_dropped` (backlog bound,
//! shutdown deadline) or `lost`.
//!
//! # Export disabled by the environment
//!
//! When `DATABRICKS_TELEMETRY_DISABLED` or `KASAL_TELEMETRY_DISABLED` is `1`, `true`, `yes` or
//! `on` (any case) at build time, the pipeline runs but never calls its exporter: every batch is
//! counted in `Stats::skipped` as `disabled_by_env`, and one WARN names the variable.
//!
//! # Deadlines
//!
//! [`Telemetry::flush`] waits at most its deadline (the shutdown deadline, 2 s, by default;
//! [`TelemetryBuilder::flush_deadline`]) and returns the stats so far; the export goes on in the
//! background. [`Telemetry::shutdown`] exports within the shutdown deadline and drops (and
//! counts) what is left.
//!
//! # A runtime dropped under the pipeline
//!
//! The aggregator is a task of the runtime it was built on. If that runtime is dropped without
//! `shutdown()`, the task is dropped with it: what it held (records still queued, pending
//! operations, emitted items waiting for or in the middle of an export, the open window's
//! rollups) is counted in `Stats::lost`, later plain calls are counted in `dropped`, and
//! `shutdown()` returns at once. What cannot be counted: an export in flight at that moment is
//! counted as lost although the server may have received it, and a process that ends without
//! dropping its runtime (`std::process::exit`, a signal, an abort) runs no code at all: call
//! `shutdown()` before exiting.

mod aggregator;
mod builder;
pub(crate) mod config;
mod message;
mod operations;
mod outbox;
mod rollup;
mod stats;
mod telemetry;
mod usage;

pub use builder::{ConfigError, TelemetryBuilder};
pub use config::{DISABLE_ENV_VARS, disabled_by_env};
pub use stats::{SkipCounts, Stats};
pub use telemetry::Telemetry;
