//! The exporter's own HTTP client: a transport (hyper-util legacy client over rustls, or any tower
//! service the user supplies) with the telemetry User-Agent, a per-attempt timeout and
//! kasal-classify's retry. The circuit breaker is not a layer here: the exporter holds it
//! around the whole export, so that every way an export can end, a deadline dropping it
//! included, is recorded (see the exporter).
//!
//! It never carries a `TelemetryLayer`: telemetry must not instrument itself, and must never
//! re-enter the application's own auth path.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use kasal_classify::{RetryLayer, RetryPolicy};
use kasal_user_agent::{Product, UserAgent, UserAgentLayer};

use crate::BoxError;

/// What every request in this module goes through: a full body in, a collected body out.
pub(crate) type HttpClient = BoxCloneSyncService<Request<Full<Bytes>>, Response<Bytes>, BoxError>;

/// Telemetry and flag responses are tiny; anything larger is read up to here and dropped.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// An HTTP transport for the exporters and the feature-flag cache: any tower service taking an
/// `http::Request<Full<Bytes>>` and answering an `http::Response` whose body yields `Bytes`
/// (hyper-util's legacy client, a `tower::service_fn`, layers over either), cloneable, `Send`
/// and `Sync`, with a `Send` future and errors convertible into a [`BoxError`].
///
/// Implemented for every such service; it names those bounds once for
/// [`DatabricksExporterBuilder::client`](super::DatabricksExporterBuilder::client),
/// [`FeatureFlagCacheBuilder::client`](super::FeatureFlagCacheBuilder::client) and the OTLP
/// exporter's `client`. It cannot be implemented by hand.
pub trait Transport: sealed::Boxed {}

impl<T: sealed::Boxed> Transport for T {}

pub(crate) mod sealed {
    use super::*;

    /// The one blanket implementation behind [`Transport`](super::Transport).
    pub trait Boxed {
        /// Erases the service into an [`HttpClient`], collecting the response body.
        fn boxed(self) -> HttpClient;
    }

    impl<S, B> Boxed for S
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        fn boxed(self) -> HttpClient {
            let service = self
                .map_err(Into::into)
                .and_then(|response: Response<B>| async move {
                    let (parts, body) = response.into_parts();
                    let body = Limited::new(body, MAX_RESPONSE_BYTES)
                        .collect()
                        .await
                        .map(|collected| collected.to_bytes())
                        // An oversized or broken body does not change the outcome: the status
                        // decides.
                        .unwrap_or_default();
                    Ok::<_, BoxError>(Response::from_parts(parts, body))
                });
            BoxCloneSyncService::new(service)
        }
    }
}

/// Erases any [`Transport`] into an [`HttpClient`], collecting the response body.
pub(crate) fn boxed(service: impl Transport) -> HttpClient {
    sealed::Boxed::boxed(service)
}

/// The default transport: hyper-util's pooled legacy client, HTTP/1, rustls with the `ring`
/// provider and the Mozilla (webpki) roots. Plain `http` is only reachable for hosts that passed
/// validation with `allow_private_hosts(true)`.
pub(crate) fn https_transport() -> Result<HttpClient, rustls::Error> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    Ok(boxed(client))
}

/// The flag fetcher's stack: User-Agent and a timeout, one attempt (a failure keeps the last
/// known value; the next lookup after the back-off tries again).
pub(crate) fn flag_stack(transport: HttpClient, timeout: Duration) -> HttpClient {
    let stack = ServiceBuilder::new()
        .map_err(Into::<BoxError>::into)
        .timeout(timeout)
        .layer(user_agent_layer())
        .service(transport);
    BoxCloneSyncService::new(stack)
}

/// The export stack: retry (the builder's `RetryPolicy`: never on 4xx, Retry-After honoured) →
/// User-Agent → per-attempt timeout → transport.
pub(crate) fn export_stack(
    transport: HttpClient,
    timeout: Duration,
    retry: RetryPolicy,
) -> HttpClient {
    let stack = ServiceBuilder::new()
        .layer(RetryLayer::new(retry))
        .layer(user_agent_layer())
        .map_err(Into::<BoxError>::into)
        .timeout(timeout)
        .service(transport);
    BoxCloneSyncService::new(stack)
}

/// `kasal_telemetry/<version>`: the exporter's own product, never the application's.
fn user_agent_layer() -> UserAgentLayer {
    UserAgentLayer::new(UserAgent::new(Product::Telemetry))
}

/// The User-Agent value, for `client_context.user_agent`.
pub(crate) fn user_agent_string() -> std::sync::Arc<str> {
    UserAgent::new(Product::Telemetry).to_string().into()
}
