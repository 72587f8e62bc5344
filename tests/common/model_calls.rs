//! A fixed mix of model calls (chat completions, streams, embeddings, a call inside an
//! operation, a `record_usage`) through `TelemetryLayer` to the local model-serving server,
//! and the tokens they carried per (product, model): what a token-usage metric must add up to.
//! Include with `#[path]` next to `common` and `model_serving`.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use kasal_telemetry::trace::{ExecutionContext, OperationId, Usage};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{Telemetry, TelemetryLayer};
use tower::{Layer, ServiceExt};

use super::model_serving::{Ask, ModelServer};

/// Per (product, model): (calls, input tokens, output tokens).
pub type Carried = BTreeMap<(String, String), (u64, u64, u64)>;

/// Makes the calls (every body read to its end) and returns what they carried. The server's own
/// count ([`ModelServer::reported`]) covers the HTTP calls; `record_usage` adds
/// `agent`/`external-model` (3, 4).
pub async fn make_model_calls(telemetry: &Telemetry, server: &ModelServer) -> Carried {
    let client = |product| {
        TelemetryLayer::new(product, telemetry.clone())
            .layer(super::common::client::<Full<Bytes>>())
    };
    let (llm, embedding, agent) = (
        client(Product::Llm),
        client(Product::Embedding),
        client(Product::Agent),
    );
    let call = |client: kasal_telemetry::TelemetryService<_>, path: &str, ask: Ask| {
        let request = Request::post(server.url(path))
            .header("content-type", "application/json")
            .body(Full::new(ask.to_json()))
            .unwrap();
        async move {
            let response = client.oneshot(request).await.expect("response");
            assert!(response.status().is_success());
            response.into_body().collect().await.expect("body");
        }
    };
    let chat = "/serving-endpoints/chat-endpoint/invocations";
    for (input, output) in [(100, 20), (7, 300), (5000, 1)] {
        call(llm.clone(), chat, Ask::chat(input, output)).await;
    }
    for (input, output) in [(11, 50), (12, 51)] {
        call(
            llm.clone(),
            "/serving-endpoints/chat/completions",
            Ask::stream(input, output),
        )
        .await;
    }
    for input in [8, 9] {
        call(
            embedding.clone(),
            "/serving-endpoints/gte-endpoint/invocations",
            Ask::embedding(input),
        )
        .await;
    }
    let run = OperationId::new("agent-run-metrics");
    ExecutionContext::service()
        .with_operation_id(run.clone())
        .scope(call(agent.clone(), chat, Ask::chat(40, 4)))
        .await;
    telemetry.complete_operation(&run);
    telemetry.record_usage(Product::Agent, "external-model", Usage::new(3, 4));

    let key = |product: &str, model: &str| (product.to_owned(), model.to_owned());
    BTreeMap::from([
        (key("llm", "databricks-claude-sonnet"), (3, 5107, 321)),
        (key("llm", "databricks-llama-stream"), (2, 23, 101)),
        (key("embedding", "gte-endpoint"), (2, 17, 0)),
        (key("agent", "databricks-claude-sonnet"), (1, 40, 4)),
        (key("agent", "external-model"), (1, 3, 4)),
    ])
}

/// Per (product, model): the input and output token counts of each call [`make_model_calls`]
/// makes (a call without output tokens, an embedding, has no output value): what the
/// `gen_ai.client.token.usage` buckets, min, max and sum must show.
pub fn per_call() -> BTreeMap<(String, String), (Vec<u64>, Vec<u64>)> {
    let key = |product: &str, model: &str| (product.to_owned(), model.to_owned());
    BTreeMap::from([
        (
            key("llm", "databricks-claude-sonnet"),
            (vec![100, 7, 5000], vec![20, 300, 1]),
        ),
        (
            key("llm", "databricks-llama-stream"),
            (vec![11, 12], vec![50, 51]),
        ),
        (key("embedding", "gte-endpoint"), (vec![8, 9], vec![])),
        (
            key("agent", "databricks-claude-sonnet"),
            (vec![40], vec![4]),
        ),
        (key("agent", "external-model"), (vec![3], vec![4])),
    ])
}
