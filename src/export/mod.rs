//! Exporters: where batches go. Each is a `tower::Service<Batch, Response = ()>`, so it can be
//! wrapped in tower layers (retry, timeout, concurrency limits) before it is given to
//! [`TelemetryBuilder::exporter`](crate::TelemetryBuilder::exporter).
//!
//! - [`DatabricksExporter`] posts operation summaries to the workspace telemetry service
//!   (`/telemetry-ext`, `/telemetry-unauth`) in the Databricks drivers' frontend-log format.
//! - [`InMemoryExporter`] keeps every batch, for tests (yours and ours); it can be paused to
//!   simulate a stalled backend.
//! - [`JsonLinesExporter`] writes one JSON object per operation summary or rollup to stdout or
//!   a file.
//! - `OtlpExporter` (feature `otlp`) sends the rollups as OpenTelemetry metrics to a Collector
//!   over OTLP/HTTP; the `otlp` module is the page "Sending to OpenTelemetry".
//! - [`FanOut`] runs several exporters side by side on one pipeline.
//!
//! `Ok(())` means every item was delivered. An exporter that skips a batch on purpose, or
//! delivers only part of it, says so with an error holding an [`Undelivered`], which the
//! pipeline counts as skipped (by [`SkipReason`]) or rejected, never as exported nor failed.
//!
//! An exporter runs on the aggregator task: it must never block the runtime (blocking I/O goes
//! to `spawn_blocking`), and its errors are counted by the pipeline, never shown to the app.

pub(crate) mod clock;
pub mod databricks;
mod fanout;
mod jsonl;
mod memory;
#[cfg(feature = "otlp")]
pub mod otlp;
pub(crate) mod undelivered;

pub use databricks::{
    DatabricksExporter, DatabricksExporterBuilder, ExportError, ExporterBuildError, Transport,
};
pub use fanout::{FanOut, FanOutError};
pub use jsonl::JsonLinesExporter;
pub use memory::InMemoryExporter;
#[cfg(feature = "otlp")]
pub use otlp::{OtlpConfigError, OtlpError, OtlpExporter, OtlpExporterBuilder, OtlpStats};
pub use undelivered::{SkipReason, Undelivered};
