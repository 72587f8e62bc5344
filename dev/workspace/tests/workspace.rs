//! The local workspace over real HTTP on 127.0.0.1: every route, fault injection and the record.

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kasal_dev_workspace::{DEFAULT_TELEMETRY_FLAG, Fault, MCP_PATH, Workspace};
use serde_json::{Value, json};

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(body.into())).unwrap())
        .await
        .expect("the workspace answers");
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn post_json(url: &str, headers: &[(&str, &str)], body: Value) -> Answer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(Method::POST, url, &all, body.to_string()).await
}

#[tokio::test]
async fn chat_completion_has_usage_and_the_call_is_recorded() {
    let ws = Workspace::builder()
        .user("dapi-alice", "alice@example.com")
        .start()
        .await
        .unwrap();
    let url = format!(
        "{}/serving-endpoints/databricks-llama/invocations",
        ws.url()
    );
    let answer = post_json(
        &url,
        &[
            ("user-agent", "kasal_llm/0.1.0 app/1"),
            ("authorization", "Bearer dapi-alice"),
            ("x-forwarded-email", "alice@example.com"),
        ],
        json!({"messages": [{"role": "user", "content": "what is a lakehouse"}]}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "databricks-llama");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("lakehouse")
    );
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], 3 + 4);
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!(completion > 0);
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), 7 + completion);

    let served = ws.usage_served();
    assert_eq!(served["databricks-llama"].prompt_tokens, 7);
    assert_eq!(served["databricks-llama"].completion_tokens, completion);
    assert_eq!(served["databricks-llama"].responses, 1);

    let calls = ws.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, Method::POST);
    assert_eq!(call.path, "/serving-endpoints/databricks-llama/invocations");
    assert_eq!(
        call.route.as_deref(),
        Some("/serving-endpoints/{name}/invocations")
    );
    assert_eq!(call.product(), Some("llm"));
    assert_eq!(call.forwarded_user.as_deref(), Some("alice@example.com"));
    assert_eq!(call.caller.as_deref(), Some("alice@example.com"));
    assert!(call.authenticated);
    assert!(!call.injected);
    assert_eq!(call.status, StatusCode::OK);
    ws.shutdown().await;
}

#[tokio::test]
async fn streamed_completion_ends_with_usage_then_done() {
    let ws = Workspace::start().await.unwrap();
    let url = format!("{}/serving-endpoints/chat-model/invocations", ws.url());
    let answer = post_json(
        &url,
        &[],
        json!({"stream": true, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"}]}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    let text = answer.text();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data lines only"))
        .collect();
    assert!(events.len() > 3, "{text}");
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["prompt_tokens"], 3 + 2 + 3 + 2);
    let content: String = events[..events.len() - 2]
        .iter()
        .map(|e| {
            let chunk: Value = serde_json::from_str(e).unwrap();
            assert!(chunk.get("usage").is_none(), "usage only in the last chunk");
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        last["usage"]["completion_tokens"].as_u64().unwrap(),
        content.split_whitespace().count() as u64
    );
    assert_eq!(
        ws.usage_served()["chat-model"].total_tokens,
        last["usage"]["total_tokens"].as_u64().unwrap()
    );
    ws.shutdown().await;
}

#[tokio::test]
async fn embeddings_and_bad_requests() {
    let ws = Workspace::start().await.unwrap();
    let url = format!(
        "{}/serving-endpoints/databricks-gte-large-en/invocations",
        ws.url()
    );
    let answer = post_json(&url, &[], json!({"input": ["one two", "three"]})).await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 3);

    let bad = post_json(&url, &[], json!({"neither": 1})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error_code"], "INVALID_PARAMETER_VALUE");
    let not_json = send(Method::POST, &url, &[], "{").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(ws.usage_served()["databricks-gte-large-en"].responses, 1);
    ws.shutdown().await;
}

#[tokio::test]
async fn vector_search_query_rows() {
    let ws = Workspace::start().await.unwrap();
    let url = format!(
        "{}/api/2.0/vector-search/indexes/main.docs.idx/query",
        ws.url()
    );
    let answer = post_json(
        &url,
        &[],
        json!({"query_text": "delta tables", "columns": ["id", "text"], "num_results": 2}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["manifest"]["column_count"], 3);
    assert_eq!(body["manifest"]["columns"][2]["name"], "score");
    assert_eq!(body["result"]["row_count"], 2);
    let rows = body["result"]["data_array"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], 1);
    assert!(rows[0][1].as_str().unwrap().contains("delta tables"));

    let missing = post_json(&url, &[], json!({"columns": ["id"]})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    ws.shutdown().await;
}

#[tokio::test]
async fn secrets_get_list_and_scopes() {
    let ws = Workspace::builder()
        .secret("team", "db_password", "hunter2")
        .start()
        .await
        .unwrap();
    let get = send(
        Method::GET,
        &format!(
            "{}/api/2.0/secrets/get?scope=team&key=db_password",
            ws.url()
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(get.status, StatusCode::OK);
    let body = get.json();
    assert_eq!(body["key"], "db_password");
    let value = base64::engine::general_purpose::STANDARD
        .decode(body["value"].as_str().unwrap())
        .unwrap();
    assert_eq!(value, b"hunter2");

    let unknown = send(
        Method::GET,
        &format!("{}/api/2.0/secrets/get?scope=team&key=nope", ws.url()),
        &[],
        "",
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error_code"], "RESOURCE_DOES_NOT_EXIST");

    let scopes = send(
        Method::GET,
        &format!("{}/api/2.0/secrets/scopes/list", ws.url()),
        &[],
        "",
    )
    .await
    .json();
    let names: Vec<&str> = scopes["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kasal", "team"]);

    let list = send(
        Method::GET,
        &format!("{}/api/2.0/secrets/list?scope=team", ws.url()),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(list["secrets"][0]["key"], "db_password");
    ws.shutdown().await;
}

#[tokio::test]
async fn feature_flags_are_a_setting() {
    let ws = Workspace::start().await.unwrap();
    let url = format!(
        "{}/api/2.0/connector-service/feature-flags/KASAL/0.1.0",
        ws.url()
    );
    let body = send(Method::GET, &url, &[], "").await.json();
    assert_eq!(body["ttl_seconds"], 900);
    assert_eq!(body["flags"][0]["name"], DEFAULT_TELEMETRY_FLAG);
    assert_eq!(body["flags"][0]["value"], "true");
    ws.set_flag(DEFAULT_TELEMETRY_FLAG, "false");
    let body = send(Method::GET, &url, &[], "").await.json();
    assert_eq!(body["flags"][0]["value"], "false");
    ws.shutdown().await;

    let ws = Workspace::builder()
        .flags([("other.client.flag", "true")])
        .flag_ttl_seconds(60)
        .start()
        .await
        .unwrap();
    let url = format!(
        "{}/api/2.0/connector-service/feature-flags/OTHER/2.0.0",
        ws.url()
    );
    let body = send(Method::GET, &url, &[], "").await.json();
    assert_eq!(
        body,
        json!({"flags": [{"name": "other.client.flag", "value": "true"}], "ttl_seconds": 60})
    );
    ws.shutdown().await;
}

#[tokio::test]
async fn telemetry_uploads_are_decoded_and_kept() {
    let ws = Workspace::start().await.unwrap();
    let log = json!({"frontend_log_event_id": "x", "entry": {"sql_driver_log": {"operation_latency_ms": 12}}});
    let upload = json!({
        "uploadTime": 1_700_000_000_000i64,
        "items": [],
        "protoLogs": [log.to_string(), "not json"],
    });
    let answer = post_json(
        &format!("{}/telemetry-ext", ws.url()),
        &[
            ("authorization", "Bearer dapi-x"),
            ("user-agent", "kasal_telemetry/0.1.0"),
        ],
        upload.clone(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["numProtoSuccess"], 1);
    assert_eq!(answer.json()["errors"].as_array().unwrap().len(), 1);

    // gzip, unauthenticated
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(upload.to_string().as_bytes()).unwrap();
    let gz = encoder.finish().unwrap();
    let gz_len = gz.len();
    let answer = send(
        Method::POST,
        &format!("{}/telemetry-unauth", ws.url()),
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        gz,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);

    let bad = send(
        Method::POST,
        &format!("{}/telemetry-ext", ws.url()),
        &[],
        "nope",
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(ws.malformed_uploads(), 1);

    let batches = ws.telemetry_batches();
    assert_eq!(batches.len(), 2);
    assert!(batches[0].authenticated);
    assert_eq!(batches[0].path, "/telemetry-ext");
    assert_eq!(
        batches[0].user_agent.as_deref(),
        Some("kasal_telemetry/0.1.0")
    );
    assert_eq!(batches[0].upload_time, Some(1_700_000_000_000));
    assert_eq!(batches[0].proto_logs, vec![log]);
    assert_eq!(batches[0].rejected_logs, 1);
    assert!(!batches[1].authenticated);
    assert!(batches[1].gzip);
    assert_eq!(batches[1].bytes, gz_len);
    assert_eq!(batches[1].proto_logs.len(), 1);
    ws.shutdown().await;
}

#[tokio::test]
async fn otlp_metrics_are_decoded() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, metric::Data,
    };
    use prost::Message;

    let ws = Workspace::start().await.unwrap();
    let point = |sum: f64| HistogramDataPoint {
        count: 1,
        sum: Some(sum),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "gen_ai.client.token.usage".into(),
                    unit: "{token}".into(),
                    data: Some(Data::Histogram(Histogram {
                        data_points: vec![point(10.0), point(32.0)],
                        aggregation_temporality: 1,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let answer = send(
        Method::POST,
        &ws.otlp_metrics_url(),
        &[("content-type", "application/x-protobuf")],
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/x-protobuf");

    let json = send(
        Method::POST,
        &ws.otlp_metrics_url(),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let otlp = ws.otlp();
    assert_eq!(otlp.requests, 1);
    assert_eq!(otlp.malformed, 1);
    assert_eq!(otlp.metric_points["gen_ai.client.token.usage"], 2);
    assert_eq!(otlp.metric_sums["gen_ai.client.token.usage"], 42.0);
    assert_eq!(otlp.metric_units["gen_ai.client.token.usage"], "{token}");
    assert_eq!(otlp.data_points(), 2);
    ws.shutdown().await;
}

/// The JSON-RPC messages of an MCP answer (a JSON body or SSE `data:` lines).
fn rpc_messages(answer: &Answer) -> Vec<Value> {
    let text = answer.text();
    if answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json")
    {
        return vec![serde_json::from_str(&text).unwrap()];
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

#[tokio::test]
async fn mcp_streamable_http_tools() {
    let ws = Workspace::start().await.unwrap();
    let url = ws.mcp_url();
    assert!(url.ends_with(MCP_PATH));
    let accept = ("accept", "application/json, text/event-stream");
    let init = post_json(
        &url,
        &[accept, ("user-agent", "kasal_mcp/0.1.0")],
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1.0"}}}),
    )
    .await;
    assert_eq!(init.status, StatusCode::OK, "{}", init.text());
    let session = init.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let result = &rpc_messages(&init)[0]["result"];
    assert!(result["capabilities"]["tools"].is_object(), "{result}");

    let session_header = ("mcp-session-id", session.as_str());
    let initialized = post_json(
        &url,
        &[accept, session_header],
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(initialized.status, StatusCode::ACCEPTED);

    let list = post_json(
        &url,
        &[accept, session_header],
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let tools: Vec<String> = rpc_messages(&list)[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    for name in ["echo", "add", "search_docs"] {
        assert!(tools.iter().any(|t| t == name), "{tools:?}");
    }

    let call = post_json(
        &url,
        &[accept, session_header],
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "add", "arguments": {"a": 2, "b": 40}}}),
    )
    .await;
    let result = &rpc_messages(&call)[0]["result"];
    assert_eq!(result["content"][0]["text"], "42", "{result}");

    let calls = ws.calls();
    assert!(calls.len() >= 4);
    assert!(calls.iter().all(|c| c.path == MCP_PATH));
    assert_eq!(calls[0].product(), Some("mcp"));
    ws.shutdown().await;
}

#[tokio::test]
async fn injected_faults_answer_then_clear() {
    let ws = Workspace::start().await.unwrap();
    let url = format!("{}/api/2.0/secrets/scopes/list", ws.url());
    ws.inject(
        "/api/2.0/secrets/",
        1,
        Fault::too_many_requests(Duration::from_secs(2)),
    );
    ws.inject("/api/2.0/secrets/", 1, Fault::unavailable());
    ws.inject("/api/2.0/secrets/", 1, Fault::forbidden());
    ws.inject(
        "/api/2.0/secrets/",
        1,
        Fault::delay(Duration::from_millis(100)),
    );
    ws.inject("/serving-endpoints/", 5, Fault::unavailable());

    let first = send(Method::GET, &url, &[], "").await;
    assert_eq!(first.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.headers["retry-after"], "2");
    assert_eq!(first.json()["error_code"], "REQUEST_LIMIT_EXCEEDED");
    let second = send(Method::GET, &url, &[], "").await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers.get("retry-after").is_none());
    let third = send(Method::GET, &url, &[], "").await;
    assert_eq!(third.status, StatusCode::FORBIDDEN);
    assert_eq!(third.json()["error_code"], "PERMISSION_DENIED");
    let slow = send(Method::GET, &url, &[], "").await;
    assert_eq!(slow.status, StatusCode::OK);
    let fine = send(Method::GET, &url, &[], "").await;
    assert_eq!(fine.status, StatusCode::OK);

    assert_eq!(ws.faults_remaining(), 5);
    ws.clear_faults();
    assert_eq!(ws.faults_remaining(), 0);

    let calls = ws.calls();
    let statuses: Vec<u16> = calls.iter().map(|c| c.status.as_u16()).collect();
    assert_eq!(statuses, [429, 503, 403, 200, 200]);
    let injected: Vec<bool> = calls.iter().map(|c| c.injected).collect();
    assert_eq!(injected, [true, true, true, false, false]);
    assert!(calls[3].latency >= Duration::from_millis(100));
    ws.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_recorded_and_wait_for_sees_them() {
    let ws = Workspace::start().await.unwrap();
    let url = format!("{}/api/2.0/no/such/api", ws.url());
    let waiter = ws.wait_for(Duration::from_secs(5), |ws| ws.calls().len() == 1);
    let (held, answer) = tokio::join!(waiter, send(Method::GET, &url, &[], ""));
    assert!(held);
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(ws.calls()[0].path, "/api/2.0/no/such/api");
    assert!(
        !ws.wait_for(Duration::from_millis(20), |ws| ws.calls().len() == 2)
            .await
    );
    ws.shutdown().await;
}
