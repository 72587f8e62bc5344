//! Call Databricks model serving through the telemetry stack: a chat completion
//! (`Product::Llm`), a streamed one (SSE), and embeddings (`Product::Embedding`), printing the
//! token usage each answer reports.
//!
//! ```sh
//! cargo run --example model_serving                       # against a local workspace
//! DATABRICKS_HOST=https://adb-….azuredatabricks.net DATABRICKS_TOKEN=dapi… \
//!   CHAT_ENDPOINT=databricks-meta-llama-3-3-70b-instruct \
//!   EMBEDDING_ENDPOINT=databricks-gte-large-en cargo run --example model_serving
//! ```

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kasal_dev_workspace::Target;
use kasal_telemetry::classify::RetryPolicy;
use kasal_telemetry::trace::Route;
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{
    Batch, BoxError, DatabricksExporter, InMemoryExporter, StaticToken, Telemetry, TelemetryLayer,
};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt};

const ROUTE: &str = "/serving-endpoints/{name}/invocations";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A real workspace when both variables are set, else a local one.
    let Target { host, token, local } = Target::from_env().await?;
    let chat_endpoint = std::env::var("CHAT_ENDPOINT")
        .unwrap_or_else(|_| "databricks-meta-llama-3-3-70b-instruct".into());
    let embedding_endpoint =
        std::env::var("EMBEDDING_ENDPOINT").unwrap_or_else(|_| "databricks-gte-large-en".into());

    let databricks = DatabricksExporter::builder(host.as_str())
        .credentials(StaticToken::new(&token)?)
        .allow_private_hosts(local.is_some())
        .build()?;
    // Every batch goes to the workspace and, to print what the stack recorded, into memory.
    let memory = InMemoryExporter::new();
    let exporter = {
        let memory = memory.clone();
        tower::service_fn(move |batch: Batch| {
            let (mut memory, databricks) = (memory.clone(), databricks.clone());
            async move {
                memory.call(batch.clone()).await?;
                databricks.oneshot(batch).await.map_err(BoxError::from)
            }
        })
    };
    let telemetry = Telemetry::builder().exporter(exporter).build();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let http = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    // One client per product: the User-Agent says which (kasal_llm/…, kasal_embedding/…).
    let llm = ServiceBuilder::new()
        .layer(TelemetryLayer::new(Product::Llm, telemetry.clone()).retry(RetryPolicy::new()))
        .service(http.clone());
    let embedding = ServiceBuilder::new()
        .layer(TelemetryLayer::new(Product::Embedding, telemetry.clone()).retry(RetryPolicy::new()))
        .service(http);

    let invocation = |endpoint: &str, body: Value| -> Result<Request<Full<Bytes>>, BoxError> {
        let mut request = Request::post(format!("{host}/serving-endpoints/{endpoint}/invocations"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        request.extensions_mut().insert(Route::new(ROUTE));
        Ok(request)
    };
    let check = |status: http::StatusCode, body: &Bytes| -> Result<(), BoxError> {
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{status} {}", String::from_utf8_lossy(body)).into())
        }
    };

    // 1. A chat completion.
    let question = json!({"messages": [{"role": "user", "content": "What is a lakehouse, in one sentence?"}], "max_tokens": 64});
    let response = llm
        .clone()
        .oneshot(invocation(&chat_endpoint, question)?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    check(status, &body)?;
    let answer: Value = serde_json::from_slice(&body)?;
    println!(
        "chat: {}",
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("-")
    );
    print_usage(&chat_endpoint, &answer["usage"]);

    // 2. The same, streamed: the usage comes in the last chunk before `data: [DONE]`.
    let question = json!({"stream": true, "messages": [{"role": "user", "content": "Name three Delta Lake features."}], "max_tokens": 64});
    let response = llm.oneshot(invocation(&chat_endpoint, question)?).await?;
    let status = response.status();
    let mut body = response.into_body();
    let (mut text, mut usage, mut pending) = (String::new(), Value::Null, String::new());
    let mut error = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if !status.is_success() {
            error.extend_from_slice(&data);
            continue;
        }
        pending.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            for line in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                let Ok(chunk) = serde_json::from_str::<Value>(line.trim()) else {
                    continue;
                }; // [DONE]
                if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
                    text.push_str(delta);
                }
                if chunk["usage"].is_object() {
                    usage = chunk["usage"].clone();
                }
            }
        }
    }
    check(status, &Bytes::from(error))?;
    println!("stream: {text}");
    print_usage(&chat_endpoint, &usage);

    // 3. Embeddings.
    let texts = json!({"input": ["Delta Lake", "Unity Catalog", "Vector Search"]});
    let response = embedding
        .oneshot(invocation(&embedding_endpoint, texts)?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    check(status, &body)?;
    let answer: Value = serde_json::from_slice(&body)?;
    let vectors = answer["data"].as_array().map_or(0, Vec::len);
    let dimensions = answer["data"][0]["embedding"]
        .as_array()
        .map_or(0, Vec::len);
    println!("embeddings: {vectors} vectors of {dimensions} dimensions");
    print_usage(&embedding_endpoint, &answer["usage"]);

    let stats = telemetry.shutdown().await;
    println!(
        "telemetry: {} calls recorded, {} dropped, {} items exported in {} batches",
        stats.accepted, stats.dropped, stats.exported, stats.batches
    );
    // The usage the stack read from the answers (JSON and SSE bodies), per model.
    for rollup in memory.usage() {
        println!(
            "recorded {} ({}): {} calls, {} in + {} out = {} tokens",
            rollup.model,
            rollup.product.as_str(),
            rollup.calls,
            rollup.usage.input_tokens,
            rollup.usage.output_tokens,
            rollup.usage.total_tokens
        );
    }
    if let Some(workspace) = local {
        for (model, usage) in workspace.usage_served() {
            println!(
                "the workspace served {model}: {} answers, {} tokens",
                usage.responses, usage.total_tokens
            );
        }
        workspace.shutdown().await;
    }
    Ok(())
}

fn print_usage(model: &str, usage: &Value) {
    println!(
        "  usage {model}: {} prompt + {} completion = {} tokens",
        usage["prompt_tokens"].as_u64().unwrap_or(0),
        usage["completion_tokens"].as_u64().unwrap_or(0),
        usage["total_tokens"].as_u64().unwrap_or(0),
    );
}
