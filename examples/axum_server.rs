//! An axum app behind `ServerTelemetryLayer` whose handler calls a downstream service through a
//! `TelemetryLayer` client three ways: from the handler, from a task spawned with
//! `kasal_telemetry::spawn`, and while streaming its response. Runs offline:
//!
//! ```sh
//! cargo run --example axum_server --features axum
//! ```
//!
//! It starts the downstream service and the app on 127.0.0.1, sends one request as a Databricks
//! Apps proxy would (`X-Forwarded-Access-Token`, `X-Forwarded-Email`), and prints:
//!
//! - on stderr, each span as it closes: the three client spans are nested under the server span
//!   (`HTTP{otel.kind="server" …}:HTTP{otel.kind="client" …}`), all with `caller.id`;
//! - on stdout, the records exported at shutdown, as JSON lines (one rollup per route).
//!
//! It checks what it prints (the downstream got alice's token three times, the token is in no
//! exported line) and exits 0.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kasal_telemetry::trace::ExecutionContext;
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{
    BoxError, JsonLinesExporter, ServerTelemetryLayer, Telemetry, TelemetryLayer, TelemetryService,
};
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};
use tracing_subscriber::fmt::format::FmtSpan;

const TOKEN: &str = "dapi0123456789abcdef-never-exported";

/// The app's client to the downstream service.
type Downstream = TelemetryService<Client<HttpConnector, Full<Bytes>>>;

#[derive(Clone)]
struct App {
    client: Downstream,
    downstream: String,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Spans on stderr, printed as they close, inside their parents.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .init();

    // The exported records, as JSON lines, into a buffer we print (and check) at the end.
    let exported = SharedBuffer::default();
    let telemetry = Telemetry::builder()
        .exporter(JsonLinesExporter::new(exported.clone()))
        .build();

    let (downstream_addr, tokens_seen) = serve(downstream()).await?;
    let app = App {
        client: TelemetryLayer::new(Product::Llm, telemetry.clone())
            .layer(Client::builder(TokioExecutor::new()).build_http()),
        downstream: format!("http://{downstream_addr}/serving-endpoints/chat/invocations"),
    };
    let router = Router::new()
        .route("/ask/{topic}", get(ask))
        .with_state(app)
        .layer(
            ServerTelemetryLayer::new(Product::Agent, telemetry.clone())
                .service_principal_id("sp-kasal-example"),
        );
    let (app_addr, ()) = serve((router, ())).await?;

    // One request, as the Databricks Apps proxy forwards it.
    let request = Request::get(format!("http://{app_addr}/ask/weather"))
        .header("x-forwarded-access-token", TOKEN)
        .header("x-forwarded-email", "alice@example.com")
        .body(Full::<Bytes>::default())?;
    let response = Client::builder(TokioExecutor::new())
        .build_http()
        .request(request)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    eprintln!("app answered {status}: {}", String::from_utf8_lossy(&body));

    let stats = telemetry.shutdown().await;
    let exported = exported.text();
    print!("{exported}");
    eprintln!(
        "accepted {}, dropped {}, exported {}",
        stats.accepted, stats.dropped, stats.exported
    );

    // What the example promises.
    assert!(status.is_success(), "{status}");
    let tokens = tokens_seen.lock().unwrap().clone();
    assert_eq!(tokens.len(), 3, "three downstream calls: {tokens:?}");
    assert!(tokens.iter().all(|t| t == &format!("Bearer {TOKEN}")));
    assert!(!exported.contains(TOKEN), "the token was exported");
    assert!(
        exported.contains("/ask/{topic}"),
        "the server rollup: {exported}"
    );
    Ok(())
}

/// The handler: one downstream call here, one from a spawned task, one while streaming.
async fn ask(State(app): State<App>) -> Body {
    let here = call_downstream(&app, "handler").await;
    let spawned = kasal_telemetry::spawn({
        let app = app.clone();
        async move { call_downstream(&app, "spawned task").await }
    })
    .await
    .unwrap_or_else(|_| "task failed".into());
    let chunks = futures_util::stream::iter([here, spawned])
        .map(|line| Ok::<_, Infallible>(Bytes::from(line + "\n")))
        .chain(futures_util::stream::once(async move {
            // Produced while the response streams: still in the request's span and context.
            Ok(Bytes::from(call_downstream(&app, "stream").await + "\n"))
        }));
    Body::from_stream(chunks)
}

/// Calls the downstream service for the current user, with their token.
async fn call_downstream(app: &App, from: &str) -> String {
    let context = ExecutionContext::current();
    let mut request = match Request::post(&app.downstream).body(Full::new(Bytes::from_static(
        br#"{"messages":[{"role":"user","content":"hi"}]}"#,
    ))) {
        Ok(request) => request,
        Err(error) => return format!("{from}: {error}"),
    };
    if let Some(token) = &context.user_token {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())) {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
    }
    let answer = match app.client.clone().oneshot(request).await {
        Ok(response) => match response.into_body().collect().await {
            Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            Err(error) => error.to_string(),
        },
        Err(error) => error.to_string(),
    };
    let caller = context.caller_id.as_deref().unwrap_or("-");
    format!("{from} for {caller}: {answer}")
}

/// The downstream service: answers every call, and remembers the Authorization it got.
fn downstream() -> (Router, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let router = Router::new().route(
        "/serving-endpoints/chat/invocations",
        axum::routing::post(move |request: Request<Body>| {
            let log = log.clone();
            async move {
                let authorization = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                log.lock().unwrap().push(authorization);
                r#"{"choices":[{"message":{"content":"sunny"}}]}"#
            }
        }),
    );
    (router, seen)
}

/// Serves `router` on 127.0.0.1:0.
async fn serve<T>((router, extra): (Router, T)) -> std::io::Result<(SocketAddr, T)>
where
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, extra))
}

/// A `Write` shared between the exporter and `main`.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
