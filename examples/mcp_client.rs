//! An MCP client on the official Rust SDK (rmcp) with the kasal telemetry stack, against an
//! rmcp streamable-HTTP server started in-process on 127.0.0.1: `initialize`, `tools/list`,
//! one `tools/call`, then what the pipeline recorded, as JSON lines. Offline; exits 0.
//!
//! ```text
//! cargo run --example mcp_client --features mcp
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use kasal_telemetry::mcp::McpClient;
use kasal_telemetry::{InMemoryExporter, OperationSummary, Rollup, Telemetry};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolRequestParams, ClientConfig, ServerCapabilities, ServerConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};

/// The server: one tool.
#[derive(Debug, Clone)]
struct Calculator {
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct SumRequest {
    a: i64,
    b: i64,
}

#[tool_router]
impl Calculator {
    #[tool(description = "Sum two numbers")]
    fn sum(&self, Parameters(SumRequest { a, b }): Parameters<SumRequest>) -> String {
        (a + b).to_string()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Calculator {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// Serves rmcp's streamable-HTTP service at `http://127.0.0.1:port/mcp` (any path, here).
async fn start_server() -> std::io::Result<SocketAddr> {
    let service: StreamableHttpService<Calculator, LocalSessionManager> =
        StreamableHttpService::new(
            || {
                Ok(Calculator {
                    tool_router: Calculator::tool_router(),
                })
            },
            Default::default(),
            StreamableHttpServerConfig::default().with_sse_keep_alive(None),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service.clone();
            let handler = hyper::service::service_fn(move |request| {
                let service = service.clone();
                async move {
                    let response = tower::ServiceExt::oneshot(service, request).await?;
                    Ok::<_, Infallible>(response.map(BoxBody::<Bytes, Infallible>::new))
                }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, handler)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// What one session left in the pipeline.
#[derive(Debug)]
pub struct Report {
    /// The tools the server listed.
    pub tools: Vec<String>,
    /// The `sum` tool's answer.
    pub answer: String,
    /// The session's operation summaries (one expected).
    pub operations: Vec<OperationSummary>,
    /// Calls outside any operation.
    pub rollups: Vec<Rollup>,
}

/// Runs one MCP session through the telemetry stack and returns what was recorded.
pub async fn run() -> Result<Report, Box<dyn std::error::Error + Send + Sync>> {
    let addr = start_server().await?;
    let exporter = InMemoryExporter::new();
    let telemetry = Telemetry::builder()
        .exporter(exporter.clone())
        .ignore_env()
        .build();

    // The official SDK's transport, over the telemetry stack: `kasal_mcp/<version>`, one span
    // and one record per request, the session as the operation.
    let transport = StreamableHttpClientTransport::with_client(
        McpClient::new(&telemetry),
        StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp")),
    );
    let client = ClientConfig::default().serve(transport).await?; // initialize
    let tools = client.list_all_tools().await?; // tools/list
    let arguments = serde_json::json!({ "a": 40, "b": 2 });
    let result = client
        .call_tool(
            CallToolRequestParams::new("sum")
                .with_arguments(arguments.as_object().cloned().unwrap_or_default()),
        )
        .await?; // tools/call
    let answer = result
        .content
        .iter()
        .filter_map(|content| content.as_text().map(|text| text.text.clone()))
        .collect::<String>();
    client.cancel().await?; // DELETE: the session's operation completes

    telemetry.shutdown().await;
    Ok(Report {
        tools: tools.iter().map(|tool| tool.name.to_string()).collect(),
        answer,
        operations: exporter.operations(),
        rollups: exporter.rollups(),
    })
}

#[allow(dead_code)] // also compiled into `tests/mcp.rs`, which calls `run` only
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let report = tokio::time::timeout(Duration::from_secs(30), run()).await??;
    println!("tools: {:?}; sum(40, 2) = {}", report.tools, report.answer);
    for operation in &report.operations {
        println!(
            "{}",
            serde_json::json!({
                "operation_id": operation.operation_id.as_str(),
                "product": operation.product.as_str(),
                "calls": operation.calls,
                "retries": operation.retries,
                "success": operation.outcomes.success,
                "latency_ms": operation.latency_sum.as_secs_f64() * 1000.0,
                "bytes": operation.bytes,
                "complete": operation.complete,
            })
        );
    }
    for rollup in &report.rollups {
        println!(
            "{}",
            serde_json::json!({
                "rollup": rollup.key.route.as_deref(),
                "method": rollup.key.method.as_str(),
                "outcome": rollup.key.outcome,
                "count": rollup.count,
            })
        );
    }
    Ok(())
}
