//! MCP end to end (feature `mcp`): the official Rust SDK's client (rmcp) with the kasal stack
//! (`McpClient`) against the SDK's streamable-HTTP server on 127.0.0.1, spans captured per test
//! and the pipeline exporting into an `InMemoryExporter`.
mod common;
#[path = "../examples/mcp_client.rs"]
mod example;
#[path = "common/mcp_server.rs"]
mod mcp_server;
#[path = "common/spans.rs"]
mod spans;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http::{Method, StatusCode};
use kasal_telemetry::mcp::McpClient;
use kasal_telemetry::trace::OperationId;
use kasal_telemetry::{InMemoryExporter, Telemetry};
use mcp_server::McpServer;
use rmcp::model::{
    CallToolRequestParams, ClientConfig, ClientJsonRpcMessage, ClientRequest, InitializeRequest,
    RequestId,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpPostResponse,
};
use rmcp::{RoleClient, ServiceExt};
use spans::{Captured, SpanCapture, SpanData};

fn capture() -> (tracing::dispatcher::DefaultGuard, Captured) {
    let (dispatch, captured) = SpanCapture::dispatch();
    (tracing::dispatcher::set_default(&dispatch), captured)
}

fn pipeline() -> (Telemetry, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    let telemetry = Telemetry::builder()
        .exporter(exporter.clone())
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
        .build();
    (telemetry, exporter)
}

async fn connect(
    server: &McpServer,
    telemetry: &Telemetry,
) -> RunningService<RoleClient, ClientConfig> {
    let transport = StreamableHttpClientTransport::with_client(
        McpClient::new(telemetry),
        StreamableHttpClientTransportConfig::with_uri(server.url()),
    );
    ClientConfig::default().serve(transport).await.unwrap()
}

fn arguments(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans
        .iter()
        .map(|span| span.field("otel.name").unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn the_example_runs_one_session_into_one_summary() {
    let report = tokio::time::timeout(Duration::from_secs(30), example::run())
        .await
        .unwrap()
        .unwrap();
    // The local workspace's rmcp server.
    for tool in ["add", "echo", "search_docs"] {
        assert!(report.tools.iter().any(|t| t == tool), "{:?}", report.tools);
    }
    assert_eq!(report.answer, "42");
    assert_eq!(report.operations.len(), 1, "{:#?}", report.operations);
    assert!(report.operations[0].complete);
    assert!(report.operations[0].calls >= 5, "{:#?}", report.operations);
    assert!(report.rollups.is_empty(), "{:#?}", report.rollups);
}

#[tokio::test]
async fn a_session_carries_kasal_mcp_and_folds_into_one_summary_with_every_call() {
    let (_guard, captured) = capture();
    let server = McpServer::start().await;
    let (telemetry, exporter) = pipeline();
    let client = connect(&server, &telemetry).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 3);
    let result = client
        .call_tool(
            CallToolRequestParams::new("sum")
                .with_arguments(arguments(serde_json::json!({"a": 1, "b": 2}))),
        )
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true));
    client.cancel().await.unwrap();
    telemetry.flush().await;

    let seen = server.seen();
    for request in &seen {
        let user_agent = request.user_agent.as_deref().unwrap_or_default();
        assert!(user_agent.starts_with("kasal_mcp/"), "{request:?}");
    }
    let session = seen
        .iter()
        .find_map(|request| request.session.clone())
        .expect("a session");
    assert!(seen.iter().any(|r| r.method == Method::DELETE));

    let operations = exporter.operations();
    assert_eq!(operations.len(), 1, "{operations:#?}");
    let summary = &operations[0];
    assert_eq!(summary.operation_id, OperationId::new(session.as_str()));
    assert_eq!(summary.calls, seen.len() as u64, "{seen:#?}");
    assert_eq!(summary.outcomes.success, summary.calls);
    assert!(summary.complete);
    assert!(exporter.rollups().is_empty(), "{:#?}", exporter.rollups());

    let spans = captured.spans_named("HTTP");
    assert_eq!(spans.len(), seen.len());
    assert!(spans.iter().all(|span| span.closed), "{spans:#?}");
    let names = names(&spans);
    for expected in [
        "POST initialize",
        "POST notifications/initialized",
        "POST tools/list",
        "POST tools/call",
        // No JSON-RPC method: named by the URL template inferred from the path.
        "DELETE ",
    ] {
        assert!(
            names
                .iter()
                .any(|n| n == expected || (expected.ends_with(' ') && n.starts_with(expected))),
            "{expected} in {names:?}"
        );
    }
    for span in &spans {
        assert_eq!(span.field("kasal.product").as_deref(), Some("mcp"));
        assert_eq!(span.field("kasal.operation_id").as_deref(), Some(&*session));
    }
}

#[tokio::test]
async fn a_503_answered_once_is_retried_and_counted() {
    let (_guard, captured) = capture();
    // The front refuses the first tools/call only.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = calls.clone();
    let server = McpServer::start_with(move |seen, _| {
        if seen.rpc_method.as_deref() != Some("tools/call") {
            return None;
        }
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (n == 0).then_some(StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    let (telemetry, exporter) = pipeline();
    let client = connect(&server, &telemetry).await;
    let result = client
        .call_tool(
            CallToolRequestParams::new("sum")
                .with_arguments(arguments(serde_json::json!({"a": 20, "b": 22}))),
        )
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true));
    client.cancel().await.unwrap();
    telemetry.flush().await;

    let tool_calls: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|r| r.rpc_method.as_deref() == Some("tools/call"))
        .collect();
    assert_eq!(tool_calls.len(), 2, "{tool_calls:#?}");
    assert_eq!(
        tool_calls[0].answered,
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1, "{operations:#?}");
    assert_eq!(operations[0].retries, 1);
    assert_eq!(operations[0].calls, server.seen().len() as u64 - 1);
    let span = captured
        .spans_named("HTTP")
        .into_iter()
        .find(|s| s.field("otel.name").as_deref() == Some("POST tools/call"))
        .unwrap();
    assert_eq!(
        span.field("http.request.resend_count").as_deref(),
        Some("1")
    );
    assert_eq!(span.field("kasal.outcome").as_deref(), Some("success"));
}

#[tokio::test]
async fn a_failing_tool_call_is_recorded_with_its_error_type() {
    let (_guard, captured) = capture();
    let server = McpServer::start().await;
    let (telemetry, exporter) = pipeline();
    let client = connect(&server, &telemetry).await;
    let failed = client
        .call_tool(CallToolRequestParams::new("fail"))
        .await
        .unwrap();
    assert_eq!(failed.is_error, Some(true));
    let refused = client
        .call_tool(CallToolRequestParams::new("invalid"))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    client.cancel().await.unwrap();
    telemetry.flush().await;

    let tool_spans: Vec<_> = captured
        .spans_named("HTTP")
        .into_iter()
        .filter(|s| s.field("otel.name").as_deref() == Some("POST tools/call"))
        .collect();
    assert_eq!(tool_spans.len(), 2);
    let errors: Vec<_> = tool_spans
        .iter()
        .map(|s| (s.field("kasal.outcome"), s.field("error.type")))
        .collect();
    assert_eq!(
        errors,
        [
            (Some("terminal".to_owned()), Some("tool_error".to_owned())),
            (Some("terminal".to_owned()), Some("-32602".to_owned())),
        ]
    );
    // One summary for the session: the failed calls do not end it, every call is counted
    // and each failure is there with its error.type.
    let seen = server.seen();
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1, "{operations:#?}");
    let summary = &operations[0];
    assert!(summary.complete);
    assert_eq!(summary.calls, seen.len() as u64, "{seen:#?}");
    assert_eq!(summary.outcomes.terminal, 2, "{summary:#?}");
    assert_eq!(summary.outcomes.success, summary.calls - 2, "{summary:#?}");
    let error_types: Vec<_> = summary
        .errors
        .iter()
        .map(|e| (e.error_type.to_string(), e.count))
        .collect();
    assert_eq!(
        error_types,
        [("tool_error".to_owned(), 1), ("-32602".to_owned(), 1)]
    );
    assert!(exporter.rollups().is_empty(), "{:#?}", exporter.rollups());
}

fn initialize() -> ClientJsonRpcMessage {
    ClientJsonRpcMessage::request(
        ClientRequest::InitializeRequest(InitializeRequest::new(ClientConfig::default())),
        RequestId::Number(1),
    )
}

#[tokio::test]
async fn a_cancelled_stream_is_recorded_and_a_deleted_session_waits_for_its_streams() {
    let (_guard, captured) = capture();
    let server = McpServer::start().await;
    let (telemetry, exporter) = pipeline();
    let client = McpClient::new(&telemetry);
    let uri: Arc<str> = Arc::from(server.url());

    let response = client
        .post_message(uri.clone(), initialize(), None, None, HashMap::new())
        .await
        .unwrap();
    let StreamableHttpPostResponse::Sse(mut events, Some(session)) = response else {
        panic!("an SSE answer with a session: {response:?}");
    };
    assert!(events.next().await.is_some(), "the initialize result");
    drop(events);
    let session: Arc<str> = Arc::from(session);

    // A long-lived GET stream, cancelled: recorded at once, its span closed.
    let stream = client
        .get_stream(
            uri.clone(),
            Some(session.clone()),
            None,
            None,
            HashMap::new(),
        )
        .await
        .unwrap();
    drop(stream);
    let get = captured
        .spans_named("HTTP")
        .into_iter()
        .find(|s| s.field("http.request.method").as_deref() == Some("GET"))
        .unwrap();
    assert!(get.closed);
    assert_eq!(get.field("kasal.body_cut_short").as_deref(), Some("true"));

    // A stream still open when the session is deleted: the summary waits for it.
    let stream = client
        .get_stream(
            uri.clone(),
            Some(session.clone()),
            None,
            None,
            HashMap::new(),
        )
        .await
        .unwrap();
    client
        .delete_session(uri.clone(), session.clone(), None, HashMap::new())
        .await
        .unwrap();
    telemetry.flush().await;
    assert!(
        exporter.operations().is_empty(),
        "{:#?}",
        exporter.operations()
    );
    drop(stream);
    telemetry.flush().await;
    let operations = exporter.operations();
    assert_eq!(operations.len(), 1, "{operations:#?}");
    // initialize, two GET streams, DELETE.
    assert_eq!(operations[0].calls, 4);
    assert!(operations[0].complete);
    assert_eq!(telemetry.stats().accepted, 4);
    assert!(captured.spans_named("HTTP").iter().all(|s| s.closed));
}
