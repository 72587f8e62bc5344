//! The quickstart's workload, shared by `examples/quickstart` and `tests/quickstart.rs`: an
//! agent-like run through the whole stack against the local workspace, then a [`Summary`] that
//! puts what the pipeline recorded next to what the workspace saw, with the checks that must
//! hold between them.
#![allow(dead_code)] // each includer uses a different part

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Json, State};
use axum::routing::post as route_post;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kasal_dev_workspace::{Fault, RecordedCall, Workspace};
use kasal_telemetry::classify::RetryPolicy;
use kasal_telemetry::mcp::McpClient;
use kasal_telemetry::trace::{ExecutionContext, OperationId, Route};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{
    Batch, BoxError, DatabricksExporter, InMemoryExporter, Rollup, ServerTelemetryLayer,
    StaticToken, Stats, Telemetry, TelemetryLayer, TelemetryService,
};
use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt};

/// The two users whose requests the agent serves: (email, their token at the workspace).
pub const USERS: [(&str, &str); 2] = [
    ("alice@example.com", "dapi-local-alice"),
    ("bob@example.com", "dapi-local-bob"),
];
/// The service principal's token (calls made for no user).
const SERVICE_TOKEN: &str = "dapi-local-service";
const SERVICE: &str = "kasal-service@example.com";
const CHAT_MODEL: &str = "databricks-meta-llama-3-3-70b-instruct";
const EMBEDDING_MODEL: &str = "databricks-gte-large-en";
const INDEX: &str = "main.kasal.docs_index";

/// What the workload reports while it runs.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The phase running.
    pub phase: &'static str,
    /// Calls finished so far.
    pub done: usize,
    /// Calls the workload makes in all.
    pub total: usize,
}

/// One product's line of the summary.
#[derive(Clone, Debug, Default)]
pub struct ProductLine {
    /// Distinct User-Agents the workspace saw for this product.
    pub user_agents: BTreeSet<String>,
    /// HTTP requests the workspace answered for this product (retries included).
    pub requests: u64,
    /// Logical calls the pipeline recorded.
    pub calls: u64,
    /// Retries the pipeline recorded (operations), or requests − calls where calls were rolled up.
    pub retries: u64,
    /// Retryable faults the workload injected on this product's routes.
    pub injected_retryable: u64,
    /// Outcomes of the pipeline's calls: success, retryable, terminal.
    pub outcomes: [u64; 3],
    /// Latency histogram of the rolled-up calls (`Rollup::BUCKETS_MS` bounds).
    pub histogram: [u64; Rollup::BUCKETS],
    /// Longest latency the pipeline recorded.
    pub latency_max: Duration,
}

impl ProductLine {
    /// The bucket bound under which `quantile` of the rolled-up calls fall (`None`: no rollup,
    /// or beyond the last bound).
    pub fn quantile_bound(&self, quantile: f64) -> Option<Duration> {
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * quantile).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Rollup::BUCKETS_MS
                    .get(i)
                    .map(|ms| Duration::from_millis(*ms));
            }
        }
        None
    }
}

/// Per model: tokens as the app read them from the answers, and as the workspace served them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelTokens {
    /// Prompt (input) tokens the app read.
    pub input: u64,
    /// Completion (output) tokens the app read.
    pub output: u64,
    /// Total tokens the workspace's serving endpoint answered.
    pub served_total: u64,
    /// Tokens the pipeline read from the answers' bodies and exported (input, output, total).
    pub pipeline: (u64, u64, u64),
    /// Calls the pipeline's usage rollups account for.
    pub pipeline_calls: u64,
}

/// One user's line: what they sent, what the workspace attributed to them, what the pipeline
/// recorded for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserLine {
    /// Calls made on the user's behalf.
    pub sent: u64,
    /// Requests the workspace attributed to the user's token.
    pub workspace_saw: u64,
    /// Calls in the pipeline's operation summaries whose caller is the user.
    pub pipeline_calls: u64,
    /// Operation summaries naming the user that also hold someone else's calls (must be 0).
    pub mixed: u64,
}

/// One named check: holds or not, and why.
#[derive(Clone, Debug)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it holds.
    pub ok: bool,
    /// The numbers behind it.
    pub detail: String,
}

/// Everything the quickstart prints.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Per product token (`vectorsearch`, `llm`, …).
    pub products: BTreeMap<String, ProductLine>,
    /// Per model.
    pub tokens: BTreeMap<String, ModelTokens>,
    /// Per user email.
    pub users: BTreeMap<String, UserLine>,
    /// Telemetry uploads the workspace received.
    pub batches_received: usize,
    /// Their bytes on the wire.
    pub bytes_received: usize,
    /// protoLogs received in all.
    pub proto_logs: usize,
    /// One decoded protoLog.
    pub sample_log: Option<Value>,
    /// The pipeline's counters at shutdown.
    pub stats: Stats,
    /// Every check.
    pub checks: Vec<Check>,
    /// Wall time of the workload.
    pub elapsed: Duration,
}

impl Summary {
    /// Whether every check holds.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }
}

type Http = Client<HttpConnector, Full<Bytes>>;
type Stack = TelemetryService<Http, RetryPolicy>;

struct Clients {
    /// The reqwest stack (`kasal_telemetry::reqwest::client`).
    vector_search: reqwest_middleware::ClientWithMiddleware,
    secret: Stack,
    llm: Stack,
    embedding: Stack,
}

/// The agent: an axum app behind `ServerTelemetryLayer`, answering users' questions with the
/// model, on each user's own token (on-behalf-of).
#[derive(Clone)]
struct AgentApp {
    llm: Stack,
    workspace: String,
}

/// `POST /agent/ask {"step", "stream"}`: one model call for the user the proxy forwarded, in
/// their run's operation; answers with the usage the model reported.
async fn ask(
    State(app): State<AgentApp>,
    Json(question): Json<Value>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let fail = |e: BoxError| (StatusCode::BAD_GATEWAY, e.to_string());
    let context = ExecutionContext::current();
    let (Some(caller), Some(token)) = (context.caller_id.clone(), context.user_token.clone())
    else {
        return Err((StatusCode::UNAUTHORIZED, "no forwarded user".into()));
    };
    let user = caller.split('@').next().unwrap_or_default().to_owned();
    let streamed = question["stream"].as_bool() == Some(true);
    let body = json!({
        "stream": streamed,
        "messages": [
            {"role": "system", "content": "You are a Kasal agent."},
            {"role": "user", "content": format!("step {} of the plan for {user}", question["step"])},
        ],
    });
    let request = post(
        &app.workspace,
        &format!("/serving-endpoints/{CHAT_MODEL}/invocations"),
        "/serving-endpoints/{name}/invocations",
        token.expose_secret(),
        &body,
    )
    .map_err(fail)?;
    let run = context.with_operation_id(OperationId::new(format!("agent-run-{user}")));
    let llm = app.llm.clone();
    let (status, answer) = run
        .scope(async move { collect(llm.oneshot(request).await?).await })
        .await
        .map_err(fail)?;
    if !status.is_success() {
        return Err((status, String::from_utf8_lossy(&answer).into_owned()));
    }
    let usage = if streamed {
        sse_usage(&answer)
    } else {
        serde_json::from_slice::<Value>(&answer).map_err(|e| fail(e.into()))?["usage"].clone()
    };
    Ok(Json(json!({ "usage": usage })))
}

/// Tokens read from answers, per model: (input, output).
#[derive(Default)]
struct AppUsage(BTreeMap<String, (u64, u64)>);

impl AppUsage {
    fn add(&mut self, model: &str, usage: &Value) {
        let entry = self.0.entry(model.to_owned()).or_default();
        entry.0 += usage["prompt_tokens"].as_u64().unwrap_or(0);
        entry.1 += usage["completion_tokens"].as_u64().unwrap_or(0);
    }
}

struct Run {
    workspace: Workspace,
    url: String,
    done: usize,
    total: usize,
    usage: AppUsage,
    /// (email) → calls sent on their behalf.
    sent: BTreeMap<String, u64>,
    /// product → retryable faults injected.
    injected_retryable: BTreeMap<String, u64>,
}

/// Calls the workload makes (progress total).
const VECTOR_QUERIES: usize = 6;
const SECRET_CALLS: usize = 6;
const EMBEDDING_CALLS: usize = 4;
const MCP_SESSIONS: usize = 1;
/// Per user: chat calls (the last one streamed).
const USER_CHATS: [usize; 2] = [5, 3];

/// Run the workload against a fresh local workspace and summarise it. `progress` is called after
/// every call.
pub async fn run(progress: &(dyn Fn(&Progress) + Sync)) -> Result<Summary, BoxError> {
    let started = Instant::now();
    let mut builder = Workspace::builder().user(SERVICE_TOKEN, SERVICE);
    for (email, token) in USERS {
        builder = builder.user(token, email);
    }
    let workspace = builder.start().await?;
    let url = workspace.url();

    // One pipeline: every batch goes to the workspace's telemetry endpoint and into memory (to
    // summarise what was exported).
    let memory = InMemoryExporter::new();
    let databricks = DatabricksExporter::builder(url.as_str())
        .credentials(StaticToken::new(SERVICE_TOKEN)?)
        .allow_private_hosts(true)
        .build()?;
    let exporter = {
        let memory = memory.clone();
        tower::service_fn(move |batch: Batch| {
            let mut memory = memory.clone();
            let databricks = databricks.clone();
            async move {
                memory.call(batch.clone()).await?;
                databricks.oneshot(batch).await.map_err(BoxError::from)
            }
        })
    };
    let telemetry = Telemetry::builder().ignore_env().exporter(exporter).build();

    // The hyper stack: one hyper-util client, one TelemetryLayer per product.
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let retry = || RetryPolicy::new().max_retries(3);
    let stack = |product: Product| {
        ServiceBuilder::new()
            .layer(TelemetryLayer::new(product, telemetry.clone()).retry(retry()))
            .service(http.clone())
    };
    let clients = Clients {
        vector_search: kasal_telemetry::reqwest::client(Product::VectorSearch, &telemetry),
        secret: stack(Product::Secret),
        llm: stack(Product::Llm),
        embedding: stack(Product::Embedding),
    };

    let mut run = Run {
        workspace,
        url,
        done: 0,
        total: VECTOR_QUERIES
            + SECRET_CALLS
            + EMBEDDING_CALLS
            + MCP_SESSIONS
            + USER_CHATS.iter().sum::<usize>(),
        usage: AppUsage::default(),
        sent: BTreeMap::new(),
        injected_retryable: BTreeMap::new(),
    };

    // Faults: two rate limits and a slow answer on vector search, an outage on embeddings, and
    // one permission error on secrets.
    run.inject(
        "vectorsearch",
        "/api/2.0/vector-search/",
        2,
        Fault::too_many_requests(Duration::ZERO),
    );
    run.workspace.inject(
        "/api/2.0/vector-search/",
        1,
        Fault::delay(Duration::from_millis(30)),
    );
    run.inject(
        "embedding",
        "/serving-endpoints/databricks-gte",
        1,
        Fault::unavailable(),
    );
    run.workspace
        .inject("/api/2.0/secrets/get", 1, Fault::forbidden());

    // 1. Service calls: retrieval, secrets, embeddings.
    for i in 0..VECTOR_QUERIES {
        // Through the reqwest stack.
        let body = json!({"query_text": format!("agent question {i}"), "columns": ["id", "text"], "num_results": 3});
        let response = clients
            .vector_search
            .post(format!(
                "{}/api/2.0/vector-search/indexes/{INDEX}/query",
                run.url
            ))
            .bearer_auth(SERVICE_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .with_extension(Route::new(
                "/api/2.0/vector-search/indexes/{index_name}/query",
            ))
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        expect(status, StatusCode::OK, "vector search")?;
        run.tick(progress, "vector search");
    }
    for i in 0..SECRET_CALLS / 2 {
        let (status, _) = run
            .send(
                &clients.secret,
                get(&run.url, "/api/2.0/secrets/scopes/list", SERVICE_TOKEN)?,
            )
            .await?;
        expect(status, StatusCode::OK, "secret scopes")?;
        run.tick(progress, "secrets");
        let (status, body) = run
            .send(
                &clients.secret,
                get(
                    &run.url,
                    "/api/2.0/secrets/get?scope=kasal&key=openai_api_key",
                    SERVICE_TOKEN,
                )?,
            )
            .await?;
        // The first get meets the injected 403: terminal, not retried.
        expect(
            status,
            if i == 0 {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::OK
            },
            "secret get",
        )?;
        if status.is_success() {
            // Read, never printed.
            let value: Value = serde_json::from_slice(&body)?;
            debug_assert!(value["value"].is_string());
        }
        run.tick(progress, "secrets");
    }
    for i in 0..EMBEDDING_CALLS {
        let body = json!({"input": [format!("chunk {i} of the docs"), "another chunk"]});
        let (status, answer) = run
            .send(
                &clients.embedding,
                post(
                    &run.url,
                    &format!("/serving-endpoints/{EMBEDDING_MODEL}/invocations"),
                    "/serving-endpoints/{name}/invocations",
                    SERVICE_TOKEN,
                    &body,
                )?,
            )
            .await?;
        expect(status, StatusCode::OK, "embeddings")?;
        let answer: Value = serde_json::from_slice(&answer)?;
        run.usage.add(EMBEDDING_MODEL, &answer["usage"]);
        run.tick(progress, "embeddings");
    }

    // 2. An MCP session (rmcp's client over the reqwest stack) with the workspace's MCP server.
    let transport = StreamableHttpClientTransport::with_client(
        McpClient::new(&telemetry),
        StreamableHttpClientTransportConfig::with_uri(run.workspace.mcp_url())
            .auth_header(SERVICE_TOKEN),
    );
    let mcp = ClientConfig::default().serve(transport).await?;
    let tools = mcp.list_all_tools().await?;
    let sum = mcp
        .call_tool(
            CallToolRequestParams::new("add").with_arguments(
                json!({"a": 40, "b": 2})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
        )
        .await?;
    let answer: String = sum
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    mcp.cancel().await?;
    if answer != "42" || tools.is_empty() {
        return Err(format!("mcp: add(40, 2) = {answer:?} from {} tools", tools.len()).into());
    }
    run.tick(progress, "mcp session");

    // 3. The agent app (axum + ServerTelemetryLayer) serves two users, interleaved, as the
    // Databricks Apps proxy forwards them (X-Forwarded-Access-Token / -Email); each answer is a
    // model call on the user's own token, in the user's run.
    let agent = AgentApp {
        llm: clients.llm.clone(),
        workspace: run.url.clone(),
    };
    let router = Router::new()
        .route("/agent/ask", route_post(ask))
        .with_state(agent)
        .layer(ServerTelemetryLayer::new(Product::Agent, telemetry.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app_url = format!("http://{}", listener.local_addr()?);
    let (stop_app, app_stopped) = tokio::sync::oneshot::channel::<()>();
    let app = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = app_stopped.await;
            })
            .await
    });
    // The users' side (a browser behind the Apps proxy): plain reqwest, no telemetry of ours.
    let proxy = kasal_telemetry::reqwest::http_client().build()?;
    let most = USER_CHATS.iter().copied().max().unwrap_or(0);
    for round in 0..most {
        for ((email, token), chats) in USERS.into_iter().zip(USER_CHATS) {
            if round >= chats {
                continue;
            }
            let streamed = round + 1 == chats;
            let response = proxy
                .post(format!("{app_url}/agent/ask"))
                .header("x-forwarded-access-token", token)
                .header("x-forwarded-email", email)
                .header("content-type", "application/json")
                .body(json!({"step": round, "stream": streamed}).to_string())
                .send()
                .await?;
            let status = response.status();
            let answer = response.bytes().await?;
            expect(status, StatusCode::OK, "agent")?;
            let answer: Value = serde_json::from_slice(&answer)?;
            run.usage.add(CHAT_MODEL, &answer["usage"]);
            *run.sent.entry(email.to_owned()).or_default() += 1;
            run.tick(
                progress,
                if streamed {
                    "agent (streamed)"
                } else {
                    "agent"
                },
            );
        }
    }
    let _ = stop_app.send(());
    app.await??;
    for (email, _) in USERS {
        let user = email.split('@').next().unwrap_or(email);
        telemetry.complete_operation(&OperationId::new(format!("agent-run-{user}")));
    }

    // 4. Shut the pipeline down: everything left is exported to the workspace.
    progress(&Progress {
        phase: "exporting telemetry",
        done: run.done,
        total: run.total,
    });
    let stats = telemetry.shutdown().await;
    let summary = summarise(&run, &memory.batches(), stats, started.elapsed());
    run.workspace.shutdown().await;
    Ok(summary)
}

impl Run {
    fn inject(&mut self, product: &str, route: &str, times: usize, fault: Fault) {
        self.workspace.inject(route, times, fault);
        *self
            .injected_retryable
            .entry(product.to_owned())
            .or_default() += times as u64;
    }

    async fn send(
        &self,
        client: &Stack,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        collect(client.clone().oneshot(request).await?).await
    }

    fn tick(&mut self, progress: &(dyn Fn(&Progress) + Sync), phase: &'static str) {
        self.done += 1;
        progress(&Progress {
            phase,
            done: self.done,
            total: self.total,
        });
    }
}

async fn collect<B>(response: http::Response<B>) -> Result<(StatusCode, Bytes), BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(Into::into)?
        .to_bytes();
    Ok((status, body))
}

fn post(
    url: &str,
    path: &str,
    route: &'static str,
    token: &str,
    body: &Value,
) -> Result<Request<Full<Bytes>>, BoxError> {
    let mut request = Request::post(format!("{url}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    request.extensions_mut().insert(Route::new(route));
    Ok(request)
}

fn get(url: &str, path_and_query: &str, token: &str) -> Result<Request<Full<Bytes>>, BoxError> {
    Ok(Request::get(format!("{url}{path_and_query}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())?)
}

fn expect(status: StatusCode, wanted: StatusCode, what: &str) -> Result<(), BoxError> {
    if status == wanted {
        Ok(())
    } else {
        Err(format!("{what}: expected {wanted}, got {status}").into())
    }
}

/// The usage object of the last SSE chunk that has one.
fn sse_usage(body: &[u8]) -> Value {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .filter_map(|chunk| chunk.get("usage").cloned())
        .next_back()
        .unwrap_or(Value::Null)
}

/// The product a call to `path` must carry in its User-Agent.
fn expected_product(path: &str) -> Option<&'static str> {
    Some(match path {
        p if p.starts_with("/api/2.0/vector-search/") => "vectorsearch",
        p if p.starts_with("/api/2.0/secrets/") => "secret",
        p if p.starts_with("/api/2.0/mcp/") => "mcp",
        p if p.starts_with("/serving-endpoints/databricks-gte") => "embedding",
        p if p.starts_with("/serving-endpoints/") => "llm",
        p if p.starts_with("/telemetry-") || p.starts_with("/api/2.0/connector-service/") => {
            "telemetry"
        }
        _ => return None,
    })
}

fn summarise(run: &Run, exported: &[Batch], stats: Stats, elapsed: Duration) -> Summary {
    let calls: Vec<RecordedCall> = run.workspace.calls();
    let mut summary = Summary {
        stats,
        elapsed,
        ..Summary::default()
    };

    // What the workspace saw, per product.
    let mut wrong_ua = Vec::new();
    for call in &calls {
        let product = call.product().unwrap_or("(none)").to_owned();
        if expected_product(&call.path) != call.product() {
            wrong_ua.push(format!("{} {:?}", call.path, call.user_agent));
        }
        let line = summary.products.entry(product).or_default();
        line.requests += 1;
        if let Some(ua) = &call.user_agent {
            line.user_agents.insert(ua.clone());
        }
    }
    // What the pipeline recorded, per product.
    for batch in exported {
        for rollup in &batch.rollups {
            let line = summary
                .products
                .entry(rollup.key.product.as_str().to_owned())
                .or_default();
            line.calls += rollup.count;
            line.outcomes[outcome_index(rollup.key.outcome)] += rollup.count;
            for (bucket, count) in line.histogram.iter_mut().zip(rollup.histogram) {
                *bucket += count;
            }
            line.latency_max = line.latency_max.max(rollup.latency_max);
        }
        for operation in &batch.operations {
            let line = summary
                .products
                .entry(operation.product.as_str().to_owned())
                .or_default();
            line.calls += operation.calls;
            line.retries += operation.retries;
            line.outcomes[0] += operation.outcomes.success;
            line.outcomes[1] += operation.outcomes.retryable;
            line.outcomes[2] += operation.outcomes.terminal;
            line.latency_max = line.latency_max.max(operation.latency_max);
        }
    }
    // The agent is our own axum app, not the workspace: its requests are the users' requests.
    if let Some(agent) = summary.products.get_mut("agent") {
        agent.requests = run.sent.values().sum();
        agent
            .user_agents
            .insert("(served by the agent app, ServerTelemetryLayer)".into());
    }
    for (product, line) in &mut summary.products {
        line.injected_retryable = run.injected_retryable.get(product).copied().unwrap_or(0);
        if product != "telemetry" && product != "agent" && line.retries == 0 {
            // Rolled-up calls do not carry their attempts: the workspace's count does.
            line.retries = line.requests.saturating_sub(line.calls);
        }
    }

    // Per user.
    for (email, _) in USERS {
        let line = summary.users.entry(email.to_owned()).or_default();
        line.sent = run.sent.get(email).copied().unwrap_or(0);
        line.workspace_saw = calls
            .iter()
            .filter(|c| c.caller.as_deref() == Some(email))
            .count() as u64;
    }
    for operation in exported.iter().flat_map(|b| &b.operations) {
        if let Some(caller) = operation.caller_id.as_deref() {
            if let Some(line) = summary.users.get_mut(caller) {
                line.pipeline_calls += operation.calls;
                // An operation is one user's run: its id names the user.
                if !operation
                    .operation_id
                    .as_str()
                    .contains(caller.split('@').next().unwrap_or(caller))
                {
                    line.mixed += 1;
                }
            }
        }
    }

    // Tokens per model.
    let served = run.workspace.usage_served();
    for (model, (input, output)) in &run.usage.0 {
        let line = summary.tokens.entry(model.clone()).or_default();
        line.input = *input;
        line.output = *output;
        line.served_total = served.get(model).map_or(0, |u| u.total_tokens);
    }

    for usage in exported.iter().flat_map(|b| &b.usage) {
        let line = summary.tokens.entry(usage.model.to_string()).or_default();
        line.pipeline.0 += usage.usage.input_tokens;
        line.pipeline.1 += usage.usage.output_tokens;
        line.pipeline.2 += usage.usage.total_tokens;
        line.pipeline_calls += usage.calls;
    }

    // Telemetry the workspace received.
    let batches = run.workspace.telemetry_batches();
    summary.batches_received = batches.len();
    summary.bytes_received = batches.iter().map(|b| b.bytes).sum();
    summary.proto_logs = batches.iter().map(|b| b.proto_logs.len()).sum();
    summary.sample_log = batches
        .iter()
        .flat_map(|b| &b.proto_logs)
        .find(|log| {
            log.pointer("/entry/sql_driver_log/operation_latency_ms")
                .is_some()
        })
        .or_else(|| batches.iter().flat_map(|b| &b.proto_logs).next())
        .cloned();
    let rejected: usize = batches.iter().map(|b| b.rejected_logs).sum();

    // The checks.
    summary.check(
        "every User-Agent names the right product",
        wrong_ua.is_empty(),
        if wrong_ua.is_empty() {
            format!("{} requests", calls.len())
        } else {
            wrong_ua.join("; ")
        },
    );
    let products: Vec<(String, ProductLine)> = summary
        .products
        .iter()
        .map(|(p, l)| (p.clone(), l.clone()))
        .collect();
    for (product, line) in &products {
        if product == "telemetry" {
            continue;
        }
        summary.check(
            format!("{product}: requests received = pipeline calls + injected retries"),
            line.requests == line.calls + line.injected_retryable,
            format!(
                "{} = {} + {}",
                line.requests, line.calls, line.injected_retryable
            ),
        );
    }
    let secret_terminal = summary.products.get("secret").map_or(0, |l| l.outcomes[2]);
    summary.check(
        "the one 403 is the one terminal outcome",
        secret_terminal == 1,
        format!("{secret_terminal} terminal"),
    );
    for (email, line) in summary.users.clone() {
        summary.check(
            format!("{email}: sent = workspace saw = pipeline recorded, unmixed"),
            line.sent > 0
                && line.sent == line.workspace_saw
                && line.sent == line.pipeline_calls
                && line.mixed == 0,
            format!(
                "{} / {} / {}, {} mixed",
                line.sent, line.workspace_saw, line.pipeline_calls, line.mixed
            ),
        );
    }
    for (model, line) in summary.tokens.clone() {
        summary.check(
            format!("{model}: tokens served = read by the app = recorded by the pipeline"),
            line.served_total > 0
                && line.input + line.output == line.served_total
                && line.pipeline == (line.input, line.output, line.served_total),
            format!(
                "{} vs {} + {} vs {}",
                line.served_total, line.input, line.output, line.pipeline.2
            ),
        );
    }
    summary.check(
        "the workspace received telemetry",
        summary.batches_received >= 1 && summary.proto_logs >= 1 && rejected == 0,
        format!(
            "{} batches, {} protoLogs, {} rejected",
            summary.batches_received, summary.proto_logs, rejected
        ),
    );
    summary.check(
        "nothing dropped",
        stats.dropped == 0 && stats.export_failures == 0 && stats.export_dropped == 0,
        format!(
            "dropped {}, export failures {}, export dropped {}",
            stats.dropped, stats.export_failures, stats.export_dropped
        ),
    );
    summary.check(
        "every injected fault was met",
        run.workspace.faults_remaining() == 0,
        format!("{} left", run.workspace.faults_remaining()),
    );
    summary
}

fn outcome_index(outcome: &str) -> usize {
    match outcome {
        "success" => 0,
        "retryable" => 1,
        _ => 2,
    }
}

/// Pretty JSON, but any value whose compact form is short stays on one line.
fn compact_pretty(value: &Value, depth: usize, out: &mut String) {
    let compact = value.to_string();
    if compact.len() + depth * 2 <= 96 {
        out.push_str(&compact);
        return;
    }
    let pad = "  ".repeat(depth + 1);
    let (open, close, items): (char, char, Vec<(Option<&String>, &Value)>) = match value {
        Value::Object(map) => ('{', '}', map.iter().map(|(k, v)| (Some(k), v)).collect()),
        Value::Array(items) => ('[', ']', items.iter().map(|v| (None, v)).collect()),
        _ => {
            out.push_str(&compact);
            return;
        }
    };
    out.push(open);
    for (i, (key, item)) in items.iter().enumerate() {
        out.push('\n');
        out.push_str(&pad);
        if let Some(key) = key {
            out.push_str(&Value::String((*key).clone()).to_string());
            out.push_str(": ");
        }
        compact_pretty(item, depth + 1, out);
        if i + 1 < items.len() {
            out.push(',');
        }
    }
    out.push('\n');
    out.push_str(&"  ".repeat(depth));
    out.push(close);
}

fn ms(duration: Option<Duration>) -> String {
    duration.map_or("-".to_owned(), |d| format!("≤{}ms", d.as_millis()))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Per product (the workspace's view | the pipeline's):")?;
        writeln!(
            f,
            "  {:<13} {:>8} {:>6} {:>7}  {:>21}  {:>6} {:>6} {:>7}  User-Agent seen",
            "product",
            "requests",
            "calls",
            "retries",
            "success/retry/terminal",
            "p50",
            "p99",
            "max"
        )?;
        for (product, line) in &self.products {
            writeln!(
                f,
                "  {:<13} {:>8} {:>6} {:>7}  {:>21}  {:>6} {:>6} {:>5}ms  {}",
                product,
                line.requests,
                line.calls,
                line.retries,
                format!(
                    "{}/{}/{}",
                    line.outcomes[0], line.outcomes[1], line.outcomes[2]
                ),
                ms(line.quantile_bound(0.5)),
                ms(line.quantile_bound(0.99)),
                line.latency_max.as_millis(),
                line.user_agents
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            )?;
        }
        writeln!(
            f,
            "Token usage per model (the pipeline recorded | the endpoint served | the app read):"
        )?;
        for (model, line) in &self.tokens {
            writeln!(
                f,
                "  {model:<40} {:>3} calls  in {:>5}  out {:>5}  total {:>5} | {:>5} | {:>5}",
                line.pipeline_calls,
                line.pipeline.0,
                line.pipeline.1,
                line.pipeline.2,
                line.served_total,
                line.input + line.output,
            )?;
        }
        writeln!(
            f,
            "Per user (sent | the workspace saw for their token | the pipeline recorded):"
        )?;
        for (email, line) in &self.users {
            writeln!(
                f,
                "  {email:<20} {:>3} | {:>3} | {:>3}   mixed operations: {}",
                line.sent, line.workspace_saw, line.pipeline_calls, line.mixed
            )?;
        }
        writeln!(
            f,
            "Telemetry: the workspace received {} batches ({} bytes, {} protoLogs); pipeline accepted {}, dropped {}, exported {} items in {} batches",
            self.batches_received,
            self.bytes_received,
            self.proto_logs,
            self.stats.accepted,
            self.stats.dropped,
            self.stats.exported,
            self.stats.batches
        )?;
        if let Some(log) = &self.sample_log {
            writeln!(f, "One protoLog, as the workspace decoded it:")?;
            let mut text = String::new();
            compact_pretty(log, 1, &mut text);
            writeln!(f, "  {text}")?;
        }
        writeln!(f, "Checks:")?;
        for check in &self.checks {
            writeln!(
                f,
                "  [{}] {} ({})",
                if check.ok { "ok" } else { "FAIL" },
                check.name,
                check.detail
            )?;
        }
        write!(
            f,
            "{} in {:.1} s",
            if self.ok() {
                "all checks hold"
            } else {
                "SOME CHECKS FAILED"
            },
            self.elapsed.as_secs_f64()
        )
    }
}
