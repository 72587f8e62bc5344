//! What every request of every service of one [`ServerTelemetryLayer`](super::ServerTelemetryLayer)
//! shares: the layer's settings and counters, read by the service and by its future.

use kasal_classify::DefaultClassifier;
use kasal_trace::{ForwardedHeaders, SharedHooks};
use kasal_user_agent::Product;

use super::rejections::RejectionCounters;

/// What every request of every service of one layer shares, behind one `Arc`.
#[derive(Clone)]
pub(super) struct Shared<R> {
    pub(super) product: Product,
    pub(super) forwarded: ForwardedHeaders,
    pub(super) on_behalf_of: bool,
    /// The classifier and the recorder, shared as they are by each request's response body.
    pub(super) hooks: SharedHooks<DefaultClassifier, R>,
    pub(super) rejections: RejectionCounters,
}
