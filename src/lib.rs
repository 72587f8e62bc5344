//! SKELETON: kasal-telemetry facade. To be completed.
#![deny(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod credentials;
pub mod event;
pub mod export;
pub mod flags;
pub mod pipeline;

pub use credentials::{Credentials, EnvToken, StaticToken};
pub use event::{
    Batch, CallRecord, ErrorEntry, OperationSummary, OutcomeCounts, Rollup, RollupKey,
};
pub use export::databricks::{DatabricksExporter, validate_host};
pub use export::{InMemoryExporter, JsonLinesExporter};
pub use flags::FeatureFlagCache;
pub use kasal_classify as classify;
pub use kasal_trace as trace;
pub use kasal_user_agent as user_agent;
pub use pipeline::{ConfigError, Stats, Telemetry, TelemetryBuilder};
pub use tower::BoxError;
