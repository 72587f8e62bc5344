//! Read a Databricks secret through the telemetry stack (hyper-util client, `Product::Secret`),
//! without ever printing its value.
//!
//! ```sh
//! cargo run --example secrets                             # against a local workspace
//! DATABRICKS_HOST=https://adb-….azuredatabricks.net DATABRICKS_TOKEN=dapi… \
//!   SECRET_SCOPE=my-scope SECRET_KEY=my-key cargo run --example secrets
//! ```
//!
//! Lists the secret scopes, then gets one secret and prints only its length. The token, the
//! secret and the Authorization header never appear in the output or in telemetry.

use base64::Engine;
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
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A real workspace when both variables are set, else a local one.
    let Target { host, token, local } = Target::from_env().await?;
    let scope = std::env::var("SECRET_SCOPE").unwrap_or_else(|_| "kasal".into());
    let key = std::env::var("SECRET_KEY").unwrap_or_else(|_| "openai_api_key".into());

    let exporter = DatabricksExporter::builder(host.as_str())
        .credentials(StaticToken::new(&token)?)
        .allow_private_hosts(local.is_some())
        .build()?;
    let telemetry = Telemetry::builder().exporter(exporter).build();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = ServiceBuilder::new()
        .layer(TelemetryLayer::new(Product::Secret, telemetry.clone()).retry(RetryPolicy::new()))
        .service(Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector));

    let get = |path: String, route: &'static str| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let mut request = Request::get(path)
                .header("authorization", format!("Bearer {token}"))
                .body(Full::default())?;
            request.extensions_mut().insert(Route::new(route));
            let response = client.oneshot(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                // Error bodies name the scope and key, never the value.
                return Err::<Value, BoxError>(
                    format!("{route}: {status} {}", String::from_utf8_lossy(&body)).into(),
                );
            }
            Ok(serde_json::from_slice(&body)?)
        }
    };

    let scopes = get(
        format!("{host}/api/2.0/secrets/scopes/list"),
        "/api/2.0/secrets/scopes/list",
    )
    .await?;
    let names: Vec<&str> = scopes["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    println!("secret scopes: {}", names.join(", "));

    let secret = get(
        format!("{host}/api/2.0/secrets/get?scope={scope}&key={key}"),
        "/api/2.0/secrets/get",
    )
    .await?;
    let value = base64::engine::general_purpose::STANDARD
        .decode(secret["value"].as_str().unwrap_or_default())?;
    println!(
        "secret {scope}/{key}: {} bytes (value not printed)",
        value.len()
    );
    drop(value);

    let stats = telemetry.shutdown().await;
    println!(
        "telemetry: {} calls recorded, {} dropped, {} items exported in {} batches",
        stats.accepted, stats.dropped, stats.exported, stats.batches
    );
    if let Some(workspace) = local {
        println!(
            "the workspace saw {} calls and received {} telemetry batches",
            workspace.calls().len(),
            workspace.telemetry_batches().len()
        );
        workspace.shutdown().await;
    }
    Ok(())
}
