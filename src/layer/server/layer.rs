//! [`ServerTelemetryLayer`]: wraps a server (an axum `Router`, any tower HTTP service) in
//! [`ServerTelemetryService`].

use std::fmt;
use std::sync::Arc;

use kasal_classify::DefaultClassifier;
use kasal_trace::{ForwardedHeaders, RecordCall, SharedHooks};
use kasal_user_agent::Product;
use tower_layer::Layer;

use super::rejections::{HeaderRejections, RejectionCounters};
use super::service::ServerTelemetryService;
use super::shared::Shared;
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
    /// Built once: axum may call `layer` for every request (a router whose state is not
    /// finalized with `with_state`), so building a service is one reference count.
    shared: Arc<Shared<R>>,
}

impl ServerTelemetryLayer {
    /// Attributes requests to `product` (`kasal.product` on spans and records) and records
    /// them into `telemetry`. No service-principal id, development mode off, every route
    /// on-behalf-of.
    pub fn new(product: Product, telemetry: Telemetry) -> Self {
        ServerTelemetryLayer {
            shared: Arc::new(Shared {
                product,
                forwarded: ForwardedHeaders::new(),
                on_behalf_of: true,
                hooks: SharedHooks::new(DefaultClassifier::default(), telemetry),
                rejections: RejectionCounters::default(),
            }),
        }
    }
}

impl<R: Clone> ServerTelemetryLayer<R> {
    /// Changes a setting (copying the shared settings only if a clone of the layer holds them).
    fn set(mut self, change: impl FnOnce(&mut Shared<R>)) -> Self {
        change(Arc::make_mut(&mut self.shared));
        self
    }

    /// The `caller.id` of requests served as the service (no forwarded user token).
    pub fn service_principal_id(self, id: impl Into<Arc<str>>) -> Self {
        let id = id.into();
        self.set(|shared| shared.forwarded = shared.forwarded.clone().service_principal_id(id))
    }

    /// Development mode (off by default): a request without a forwarded token, on a route
    /// this layer treats as on-behalf-of, runs as the service with
    /// `execution.obo_dev_fallback = true` (local runs on the developer's own credentials).
    pub fn development_mode(self, on: bool) -> Self {
        self.set(|shared| shared.forwarded = shared.forwarded.clone().development_mode(on))
    }

    /// Whether the routes under this layer act on behalf of the user (default `true`). Only
    /// matters in development mode. For an app with both kinds, put one layer on each group
    /// with `route_layer`.
    pub fn on_behalf_of(self, on: bool) -> Self {
        self.set(|shared| shared.on_behalf_of = on)
    }

    /// Sends every finished server call to `recorder` instead (a closure, a fan-out, a test
    /// sink). Rejection counters are kept.
    pub fn recorder<R2: RecordCall>(self, recorder: R2) -> ServerTelemetryLayer<R2> {
        let shared = Arc::unwrap_or_clone(self.shared);
        ServerTelemetryLayer {
            shared: Arc::new(Shared {
                product: shared.product,
                forwarded: shared.forwarded,
                on_behalf_of: shared.on_behalf_of,
                hooks: SharedHooks::new(shared.hooks.classifier().clone(), recorder),
                rejections: shared.rejections,
            }),
        }
    }
}

impl<R> ServerTelemetryLayer<R> {
    /// Forwarded headers rejected so far by every service this layer (or a clone of it) built.
    pub fn rejections(&self) -> HeaderRejections {
        self.shared.rejections.snapshot()
    }
}

impl<S, R> Layer<S> for ServerTelemetryLayer<R> {
    type Service = ServerTelemetryService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTelemetryService::new(inner, self.shared.clone())
    }
}

impl<R> fmt::Debug for ServerTelemetryLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTelemetryLayer")
            .field("product", &self.shared.product)
            .field("forwarded", &self.shared.forwarded)
            .field("on_behalf_of", &self.shared.on_behalf_of)
            .field("rejections", &self.shared.rejections.snapshot())
            .finish_non_exhaustive()
    }
}
