//! [`ServerTelemetryLayer`]: wraps a server (an axum `Router`, any tower HTTP service) in
//! [`ServerTelemetryService`].

use std::fmt;
use std::sync::{Arc, OnceLock};

use kasal_classify::DefaultClassifier;
use kasal_trace::{ForwardedHeaders, RecordCall};
use kasal_user_agent::Product;
use tower_layer::Layer;

use super::rejections::{HeaderRejections, RejectionCounters};
use super::service::{ServerTelemetryService, Shared};
use crate::Telemetry;

/// Layer for servers: the request's execution context from its forwarded headers, one server
/// span and one server [`CallRecord`](crate::CallRecord) per request. See the
/// [module docs](super) for what it does per request.
///
/// ```
/// # use kasal_telemetry::user_agent::Product;
/// # use kasal_telemetry::{ServerTelemetryLayer, Telemetry};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let telemetry = Telemetry::disabled();
/// let layer = ServerTelemetryLayer::new(Product::Agent, telemetry)
///     .service_principal_id("6f1c…-sp")  // `caller.id` of requests without a user token
///     .development_mode(cfg!(debug_assertions)); // flag on-behalf-of calls made without a token
/// let app: axum::Router = axum::Router::new()
///     .route("/chat", axum::routing::post(|| async { "hi" }))
///     .layer(layer.clone());
/// // later: layer.rejections() counts the bad forwarded headers seen by `app`.
/// # let _ = app;
/// # }
/// ```
///
/// Cloning shares the rejection counters: keep a clone to read them.
#[derive(Clone)]
pub struct ServerTelemetryLayer<R = Telemetry> {
    product: Product,
    forwarded: ForwardedHeaders,
    on_behalf_of: bool,
    recorder: R,
    rejections: RejectionCounters,
}

impl ServerTelemetryLayer {
    /// Attributes requests to `product` (`kasal.product` on spans and records) and records
    /// them into `telemetry`. No service-principal id, development mode off, every route
    /// on-behalf-of.
    pub fn new(product: Product, telemetry: Telemetry) -> Self {
        ServerTelemetryLayer {
            product,
            forwarded: ForwardedHeaders::new(),
            on_behalf_of: true,
            recorder: telemetry,
            rejections: RejectionCounters::default(),
        }
    }
}

impl<R> ServerTelemetryLayer<R> {
    /// The `caller.id` of requests served as the service (no forwarded user token).
    pub fn service_principal_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.forwarded = self.forwarded.service_principal_id(id);
        self
    }

    /// Development mode (off by default): a request without a forwarded token, on a route
    /// this layer treats as on-behalf-of, runs as the service with
    /// `execution.obo_dev_fallback = true` (local runs on the developer's own credentials).
    pub fn development_mode(mut self, on: bool) -> Self {
        self.forwarded = self.forwarded.development_mode(on);
        self
    }

    /// Whether the routes under this layer act on behalf of the user (default `true`). Only
    /// matters in development mode. For an app with both kinds, put one layer on each group
    /// with `route_layer`.
    pub fn on_behalf_of(mut self, on: bool) -> Self {
        self.on_behalf_of = on;
        self
    }

    /// Sends every finished server call to `recorder` instead (a closure, a fan-out, a test
    /// sink). Rejection counters are kept.
    pub fn recorder<R2: RecordCall>(self, recorder: R2) -> ServerTelemetryLayer<R2> {
        ServerTelemetryLayer {
            product: self.product,
            forwarded: self.forwarded,
            on_behalf_of: self.on_behalf_of,
            recorder,
            rejections: self.rejections,
        }
    }

    /// Forwarded headers rejected so far by every service this layer (or a clone of it) built.
    pub fn rejections(&self) -> HeaderRejections {
        self.rejections.snapshot()
    }
}

impl<S, R: Clone> Layer<S> for ServerTelemetryLayer<R> {
    type Service = ServerTelemetryService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTelemetryService::new(
            inner,
            Arc::new(Shared {
                product: self.product.clone(),
                forwarded: self.forwarded.clone(),
                on_behalf_of: self.on_behalf_of,
                classifier: DefaultClassifier::default(),
                recorder: self.recorder.clone(),
                rejections: self.rejections.clone(),
                route: OnceLock::new(),
            }),
        )
    }
}

impl<R> fmt::Debug for ServerTelemetryLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTelemetryLayer")
            .field("product", &self.product)
            .field("forwarded", &self.forwarded)
            .field("on_behalf_of", &self.on_behalf_of)
            .field("rejections", &self.rejections.snapshot())
            .finish_non_exhaustive()
    }
}
