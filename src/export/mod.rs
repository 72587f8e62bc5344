//! Exporters: where the pipeline's [`Batch`](crate::Batch)es go.
//!
//! An exporter is any `tower::Service<Batch, Response = ()>` whose error converts into a boxed
//! error; the pipeline calls it from its own task and only counts its errors.

pub mod databricks;

pub use databricks::{DatabricksExporter, DatabricksExporterBuilder, ExportError, ExporterError};
