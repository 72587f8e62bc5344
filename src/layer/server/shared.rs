//! What every request of every service of one [`ServerTelemetryLayer`](super::ServerTelemetryLayer)
//! shares: the layer's settings and counters, read by the service and by its future.

use kasal_classify::DefaultClassifier;
use kasal_trace::ForwardedHeaders;
use kasal_user_agent::Product;

use super::rejections::RejectionCounters;

/// What every request of every service of one layer shares, behind one `Arc`.
#[derive(Clone)]
pub(super) struct Shared<R> {
    pub(super) product: Product,
    pub(super) forwarded: ForwardedHeaders,
    pub(super) on_behalf_of: bool,
    pub(super) classifier: DefaultClassifier,
    pub(super) recorder: R,
    pub(super) rejections: RejectionCounters,
}
