//! An MCP client on the official Rust SDK (rmcp) with the kasal telemetry stack: `initialize`,
//! `tools/list`, one `tools/call`, then what the pipeline recorded, as JSON lines.
//!
//! ```text
//! cargo run --example mcp_client --features mcp                 # the local workspace's MCP server
//! MCP_URL=http://127.0.0.1:8000/mcp cargo run --example mcp_client --features mcp   # any server
//! DATABRICKS_HOST=https://adb-….azuredatabricks.net DATABRICKS_TOKEN=dapi… \
//!   cargo run --example mcp_client --features mcp               # system.ai on a real workspace
//! ```
//!
//! By default it starts the local development workspace (`kasal-dev-workspace`, whose MCP
//! endpoint is the official rmcp server) and exits 0 when the session worked. It also runs
//! against servers written elsewhere: `tests/mcp_python.rs` points it at the Python `mcp`
//! package's streamable-HTTP server (`dev/mcp_server.py`).

use std::time::Duration;

use kasal_dev_workspace::Workspace;
use kasal_telemetry::mcp::McpClient;
use kasal_telemetry::{InMemoryExporter, OperationSummary, Rollup, Telemetry};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

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

/// Runs one MCP session against the local workspace's MCP endpoint.
pub async fn run() -> Result<Report, Box<dyn std::error::Error + Send + Sync>> {
    let workspace = Workspace::start().await?;
    let report = run_against(&workspace.mcp_url(), None).await;
    workspace.shutdown().await;
    report
}

/// Runs one MCP session through the telemetry stack against `url` (with `token` as a bearer
/// token, if any) and returns what was recorded. Calls `add(40, 2)` when the server has it,
/// else `echo`.
pub async fn run_against(
    url: &str,
    token: Option<&str>,
) -> Result<Report, Box<dyn std::error::Error + Send + Sync>> {
    let exporter = InMemoryExporter::new();
    let telemetry = Telemetry::builder()
        .exporter(exporter.clone())
        .ignore_env()
        .build();

    // The official SDK's transport, over the telemetry stack: `kasal_mcp/<version>`, one span
    // and one record per request, the session as the operation.
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::with_client(McpClient::new(&telemetry), config);
    let client = ClientConfig::default().serve(transport).await?; // initialize
    let tools = client.list_all_tools().await?; // tools/list
    let has = |name: &str| tools.iter().any(|tool| tool.name == name);
    let call = if has("add") {
        Some(
            CallToolRequestParams::new("add")
                .with_arguments(arguments(serde_json::json!({"a": 40, "b": 2}))),
        )
    } else if has("echo") {
        Some(
            CallToolRequestParams::new("echo")
                .with_arguments(arguments(serde_json::json!({"text": "42"}))),
        )
    } else {
        None
    };
    let mut answer = String::new();
    if let Some(call) = call {
        let result = client.call_tool(call).await?; // tools/call
        answer = result
            .content
            .iter()
            .filter_map(|content| content.as_text().map(|text| text.text.clone()))
            .collect::<String>();
    }
    client.cancel().await?; // DELETE: the session's operation completes

    telemetry.shutdown().await;
    Ok(Report {
        tools: tools.iter().map(|tool| tool.name.to_string()).collect(),
        answer,
        operations: exporter.operations(),
        rollups: exporter.rollups(),
    })
}

fn arguments(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    value.as_object().cloned().unwrap_or_default()
}

#[allow(dead_code)] // also compiled into `tests/mcp.rs`, which calls `run` only
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // A real workspace's system.ai MCP server, any server at MCP_URL, else the local workspace.
    let real = match kasal_dev_workspace::Target::real_from_env() {
        Some((host, token)) => Some((
            format!("{host}{}", kasal_dev_workspace::MCP_PATH),
            Some(token),
        )),
        None => std::env::var("MCP_URL").ok().map(|url| (url, None)),
    };
    let session = async {
        match &real {
            Some((url, token)) => run_against(url, token.as_deref()).await,
            None => run().await,
        }
    };
    let report = tokio::time::timeout(Duration::from_secs(30), session).await??;
    println!("tools: {:?}; answer: {}", report.tools, report.answer);
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
