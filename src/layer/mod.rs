//! The client telemetry stack as one layer: [`TelemetryLayer`] and its service
//! [`TelemetryService`], plus [`ServiceBuilderExt`] for `ServiceBuilder` users.
//!
//! It composes the layer crates and adds nothing of its own at request time but, with retry on,
//! an [`AttemptCounter`](kasal_classify::AttemptCounter) request extension per call (so a call
//! that fails after retries reports its attempts): no locks, no way to fail a call because of
//! telemetry.

pub(crate) mod attempt;
mod box_error;
mod ext;
// One file per role, as in tower-http: `layer.rs` holds the `Layer`.
#[allow(clippy::module_inception)]
mod layer;
pub(crate) mod propagation;
mod retry_mode;
#[cfg(feature = "axum")]
pub mod server;
mod service;

pub use ext::ServiceBuilderExt;
pub use layer::TelemetryLayer;
pub use service::{TelemetryBody, TelemetryService};
