//! [`ServiceBuilderExt`]: `.kasal_telemetry(product, telemetry)` on a `tower::ServiceBuilder`.

use kasal_user_agent::Product;
use tower::ServiceBuilder;
use tower::layer::util::Stack;

use super::TelemetryLayer;
use crate::Telemetry;

/// Adds [`TelemetryLayer`] to a [`ServiceBuilder`].
///
/// ```
/// use kasal_telemetry::user_agent::Product;
/// use kasal_telemetry::{InMemoryExporter, ServiceBuilderExt, Telemetry};
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let telemetry = Telemetry::builder().exporter(InMemoryExporter::new()).build();
/// let builder = ServiceBuilder::new().kasal_telemetry(Product::Genie, telemetry);
/// # let _ = builder;
/// # }
/// ```
///
/// Sealed: implemented for `ServiceBuilder` only.
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Adds `TelemetryLayer::new(product, telemetry)`.
    fn kasal_telemetry(
        self,
        product: Product,
        telemetry: Telemetry,
    ) -> ServiceBuilder<Stack<TelemetryLayer, L>>;

    /// Adds a configured [`TelemetryLayer`] (retry, circuit breaker, custom User-Agent).
    fn kasal_telemetry_layer<R>(
        self,
        layer: TelemetryLayer<R>,
    ) -> ServiceBuilder<Stack<TelemetryLayer<R>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn kasal_telemetry(
        self,
        product: Product,
        telemetry: Telemetry,
    ) -> ServiceBuilder<Stack<TelemetryLayer, L>> {
        self.layer(TelemetryLayer::new(product, telemetry))
    }

    fn kasal_telemetry_layer<R>(
        self,
        layer: TelemetryLayer<R>,
    ) -> ServiceBuilder<Stack<TelemetryLayer<R>, L>> {
        self.layer(layer)
    }
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}
