//! The exporter's own HTTP client: a transport (hyper-util legacy client over rustls, or any tower
//! service the user supplies) with the telemetry User-Agent, a per-attempt timeout, kasal-classify's
//! retry and a per-host circuit breaker.
//!
//! It never carries a `TelemetryLayer`: telemetry must not instrument itself, and must never
//! re-enter the application's own auth path.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::credentials::BoxError;

/// What every request in this module goes through: a full body in, a collected body out.
pub(crate) type HttpClient = BoxCloneSyncService<Request<Full<Bytes>>, Response<Bytes>, BoxError>;

/// Telemetry and flag responses are tiny; anything larger is read up to here and dropped.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Erases any tower HTTP service into an [`HttpClient`], collecting the response body.
pub(crate) fn boxed<S, B>(service: S) -> HttpClient
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let service = service
        .map_err(Into::into)
        .and_then(|response: Response<B>| async move {
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                // An oversized or broken body does not change the outcome: the status decides.
                .unwrap_or_default();
            Ok::<_, BoxError>(Response::from_parts(parts, body))
        });
    BoxCloneSyncService::new(service)
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

/// Retry and circuit-breaker settings of the export stack.
#[derive(Clone, Debug)]
pub(crate) struct ExportStackConfig {
    pub(crate) timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) breaker: super::BreakerSettings,
}

/// The export stack: circuit breaker (per host, outermost, so one failed export counts once)
/// → retry → User-Agent → per-attempt timeout → transport.
pub(crate) fn export_stack(transport: HttpClient, config: &ExportStackConfig) -> HttpClient {
    // TODO(classify): CircuitBreakerLayer and RetryLayer when kasal-classify lands.
    let _ = (&config.max_retries, &config.breaker);
    let stack = ServiceBuilder::new()
        .layer(user_agent_layer())
        .map_err(Into::<BoxError>::into)
        .timeout(config.timeout)
        .service(transport);
    BoxCloneSyncService::new(stack)
}

/// `UserAgent::new(Product::Telemetry)` as a layer.
fn user_agent_layer()
-> tower::util::MapRequestLayer<fn(Request<Full<Bytes>>) -> Request<Full<Bytes>>> {
    // TODO(user-agent): UserAgentLayer::new(UserAgent::new(Product::Telemetry)) when it lands.
    fn set(mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
        request.headers_mut().insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("kasal_telemetry/", env!("CARGO_PKG_VERSION"))),
        );
        request
    }
    tower::util::MapRequestLayer::new(set as fn(_) -> _)
}

/// The User-Agent value, for `client_context.user_agent`.
pub(crate) fn user_agent_string() -> std::sync::Arc<str> {
    // TODO(user-agent): UserAgent::new(Product::Telemetry).to_string().
    concat!("kasal_telemetry/", env!("CARGO_PKG_VERSION")).into()
}
