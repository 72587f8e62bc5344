//! MCP over the reqwest telemetry stack (feature `mcp`): rmcp's streamable-HTTP client
//! transport with the User-Agent, spans, classification, retries and records of
//! [`crate::reqwest`].
//!
//! rmcp implements its `StreamableHttpClient` trait only for a bare `reqwest::Client`.
//! [`McpClient`] implements it over a reqwest-middleware client, so
//! `StreamableHttpClientTransport::with_client(..)` sends every request through the stack:
//!
//! - `User-Agent: kasal_mcp/<version>` on every request;
//! - one span and one [`CallRecord`](crate::CallRecord) per JSON-RPC `POST` and per SSE stream
//!   (recorded when the response has been read, or the stream ends or is dropped);
//! - the JSON-RPC method (`initialize`, `tools/list`, `tools/call`) as the route, so the span is
//!   named `POST tools/call`;
//! - the MCP session id (`Mcp-Session-Id`) as the [`OperationId`](crate::trace::OperationId):
//!   every call of a session, from `initialize` to the `DELETE` that ends it, folds into one
//!   [`OperationSummary`](crate::OperationSummary), completed when the session is over and its
//!   last call has been recorded;
//! - a JSON-RPC error or a tool result with `isError: true` recorded as a failed call
//!   ([`JsonRpcErrors`]), with `error.type` the error code or `tool_error`;
//! - retries of 429 and 5xx answers (honouring `Retry-After`), counted on the span.
//!
//! ```no_run
//! use kasal_telemetry::mcp::McpClient;
//! use kasal_telemetry::{JsonLinesExporter, Telemetry};
//! use rmcp::ServiceExt;
//! use rmcp::transport::StreamableHttpClientTransport;
//! use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = Telemetry::builder().exporter(JsonLinesExporter::stdout()).build();
//! let transport = StreamableHttpClientTransport::with_client(
//!     McpClient::new(&telemetry),
//!     StreamableHttpClientTransportConfig::with_uri("http://127.0.0.1:8000/mcp"),
//! );
//! let client = ().serve(transport).await?;
//! let tools = client.list_tools(Default::default()).await?;
//! # let _ = tools;
//! client.cancel().await?; // deletes the session: its operation summary is complete
//! telemetry.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Streams
//!
//! An SSE stream's call stays open (its span too) while the stream is read, and is recorded
//! when it ends or is dropped: a cancelled stream (rmcp aborts its streams when the transport
//! closes) is recorded at once, marked `kasal.body_cut_short`, and its span closes. Nothing is
//! held past the stream: a long-lived `GET` stream is recorded when the session ends, since the
//! transport tears its streams down then.

mod client;
mod errors;
mod session;
mod sse;

use std::fmt;
use std::sync::Arc;

use kasal_user_agent::Product;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

pub use errors::JsonRpcErrors;

use crate::Telemetry;
use crate::reqwest::{RecordInvalidUrls, TelemetryMiddleware, http_client};
use kasal_classify::RetryPolicy;
use session::Sessions;

/// An rmcp `StreamableHttpClient` over a reqwest-middleware client, recording into the
/// [`Telemetry`] pipeline. Cheap to clone (clones share the client and the session table).
#[derive(Clone)]
pub struct McpClient {
    client: ClientWithMiddleware,
    sessions: Arc<Sessions>,
}

impl McpClient {
    /// The MCP stack ([`client`]) recording into `telemetry`.
    pub fn new(telemetry: &Telemetry) -> Self {
        McpClient::with_client(client(telemetry), telemetry)
    }

    /// Over your own `client`, which should carry a
    /// [`TelemetryMiddleware`] (with `Product::Mcp` and the [`JsonRpcErrors`] hook) for the
    /// spans and records; `telemetry` receives the completion of each session's operation.
    pub fn with_client(client: ClientWithMiddleware, telemetry: &Telemetry) -> Self {
        McpClient {
            client,
            sessions: Arc::new(Sessions::new(telemetry.clone())),
        }
    }

    /// The reqwest-middleware client requests go through.
    pub fn client(&self) -> &ClientWithMiddleware {
        &self.client
    }
}

impl fmt::Debug for McpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpClient")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// The MCP client stack: [`TelemetryMiddleware`] for [`Product::Mcp`] (User-Agent
/// `kasal_mcp/<version>`) with the [`JsonRpcErrors`] body hook and the default retry (as a
/// [`RetryMiddleware`](crate::reqwest::RetryMiddleware) after it), and
/// [`RecordInvalidUrls`], over [`http_client`] set up as rmcp sets up its own: no idle
/// connection pool (an SSE response dropped unread would stall a reused connection), and only
/// same-origin 307 and 308 redirects followed (others would lose the `POST` body or leak the
/// session).
pub fn client(telemetry: &Telemetry) -> ClientWithMiddleware {
    let http = http_client()
        .pool_max_idle_per_host(0)
        .redirect(same_origin_redirects())
        .build()
        .unwrap_or_else(|error| {
            // Unreachable, as in `kasal_telemetry::reqwest::builder`.
            tracing::warn!(target: "kasal_telemetry", %error, "reqwest client with rustls failed to build");
            reqwest::Client::default()
        });
    ClientBuilder::new(http)
        .with_init(RecordInvalidUrls::new(Product::Mcp, telemetry.clone()))
        .with(
            TelemetryMiddleware::new(Product::Mcp, telemetry.clone())
                .on_body_chunk(JsonRpcErrors::default())
                .retry(RetryPolicy::new()),
        )
        .build()
}

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// Same-origin 307 and 308 only, at most [`MAX_REDIRECTS`] (rmcp's default policy).
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let keeps_body = matches!(
            attempt.status(),
            reqwest::StatusCode::TEMPORARY_REDIRECT | reqwest::StatusCode::PERMANENT_REDIRECT
        );
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !keeps_body || !same_origin {
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("exceeded {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}
