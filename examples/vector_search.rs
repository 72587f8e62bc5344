//! Query a Databricks Vector Search index through the telemetry stack (hyper-util client,
//! `Product::VectorSearch`).
//!
//! ```sh
//! cargo run --example vector_search                       # against a local workspace
//! DATABRICKS_HOST=https://adb-….azuredatabricks.net DATABRICKS_TOKEN=dapi… \
//!   VECTOR_SEARCH_INDEX=main.default.docs_index cargo run --example vector_search
//! ```
//!
//! Without `DATABRICKS_HOST` and `DATABRICKS_TOKEN` it starts the local development workspace
//! (`kasal-dev-workspace`) and queries that. It prints the rows, then what the telemetry
//! pipeline did; the process exits non-zero if the query fails.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kasal_dev_workspace::Target;
use kasal_telemetry::classify::RetryPolicy;
use kasal_telemetry::trace::Route;
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{BoxError, DatabricksExporter, StaticToken, Telemetry, TelemetryLayer};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A real workspace when both variables are set, else a local one.
    let Target { host, token, local } = Target::from_env().await?;
    let index =
        std::env::var("VECTOR_SEARCH_INDEX").unwrap_or_else(|_| "main.default.docs_index".into());

    // One pipeline per process, exporting to the workspace's telemetry endpoint (only when the
    // workspace's feature flag turns it on).
    let exporter = DatabricksExporter::builder(host.as_str())
        .credentials(StaticToken::new(&token)?)
        .allow_private_hosts(local.is_some())
        .build()?;
    let telemetry = Telemetry::builder().exporter(exporter).build();

    // hyper-util over rustls (https) or plain http (the local workspace).
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = ServiceBuilder::new()
        .layer(
            TelemetryLayer::new(Product::VectorSearch, telemetry.clone()).retry(RetryPolicy::new()),
        )
        .service(Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector));

    let query = json!({"query_text": "how do I create a delta table", "columns": ["id", "text"], "num_results": 3});
    let mut request = Request::post(format!(
        "{host}/api/2.0/vector-search/indexes/{index}/query"
    ))
    .header("authorization", format!("Bearer {token}"))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from(query.to_string())))?;
    // The index name is an id: the route template keeps it out of the telemetry keys.
    request.extensions_mut().insert(Route::new(
        "/api/2.0/vector-search/indexes/{index_name}/query",
    ));
    let response = client.oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("query failed: {status} {}", String::from_utf8_lossy(&body)).into());
    }
    let answer: Value = serde_json::from_slice(&body)?;
    let rows = answer["result"]["data_array"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!("{} rows from {index}:", rows.len());
    for row in &rows {
        println!("  {row}");
    }

    let stats = telemetry.shutdown().await;
    println!(
        "telemetry: {} calls recorded, {} dropped, {} items exported in {} batches",
        stats.accepted, stats.dropped, stats.exported, stats.batches
    );
    if let Some(workspace) = local {
        let seen = workspace.calls();
        let query = seen
            .iter()
            .find(|c| c.path.ends_with("/query"))
            .ok_or("the workspace saw no query")?;
        println!(
            "the workspace saw User-Agent {:?} and received {} telemetry batches",
            query.user_agent.as_deref().unwrap_or("-"),
            workspace.telemetry_batches().len()
        );
        workspace.shutdown().await;
    }
    Ok(())
}
