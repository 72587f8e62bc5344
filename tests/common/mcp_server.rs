//! An MCP server from the official SDK (rmcp's streamable-HTTP server, legacy sessions) on
//! 127.0.0.1, behind a front that logs every request (method, User-Agent, session id,
//! JSON-RPC method) and can answer a chosen request itself (a 503) instead of the server.
//! Include it with `#[path = "common/mcp_server.rs"] mod mcp_server;` (feature `mcp`).
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ErrorData, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use tokio::net::TcpListener;
use tower::ServiceExt;

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct SumRequest {
    pub a: i64,
    pub b: i64,
}

/// The tools: `sum` succeeds, `fail` reports a tool error (`isError`), `invalid` answers with a
/// JSON-RPC error (-32602).
#[derive(Debug, Clone)]
pub struct Tools {
    tool_router: ToolRouter<Self>,
}

impl Tools {
    pub fn new() -> Self {
        Tools {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl Tools {
    #[tool(description = "Sum two numbers")]
    fn sum(&self, Parameters(SumRequest { a, b }): Parameters<SumRequest>) -> String {
        (a + b).to_string()
    }

    #[tool(description = "Always fails, as a tool result")]
    fn fail(&self) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::error(vec![ContentBlock::text("boom")]))
    }

    #[tool(description = "Always fails, as a JSON-RPC error")]
    fn invalid(&self) -> Result<CallToolResult, ErrorData> {
        Err(ErrorData::invalid_params("no such thing", None))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// A request as the front saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub user_agent: Option<String>,
    pub session: Option<String>,
    /// The JSON-RPC method of a `POST`.
    pub rpc_method: Option<String>,
    /// What the front answered itself, if it did.
    pub answered: Option<StatusCode>,
}

type Front = dyn Fn(&Seen, usize) -> Option<StatusCode> + Send + Sync;

/// A running MCP server; it stops with the test's runtime.
pub struct McpServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl McpServer {
    /// A server that answers every request.
    pub async fn start() -> Self {
        McpServer::start_with(|_, _| None).await
    }

    /// A server whose front answers a request itself with `front(&seen, n)`'s status, if any
    /// (`n` counts requests from 0).
    pub async fn start_with(
        front: impl Fn(&Seen, usize) -> Option<StatusCode> + Send + Sync + 'static,
    ) -> Self {
        let service: StreamableHttpService<Tools, LocalSessionManager> = StreamableHttpService::new(
            || Ok(Tools::new()),
            Default::default(),
            StreamableHttpServerConfig::default().with_sse_keep_alive(None),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let front: Arc<Front> = Arc::new(front);
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (service, log, front) = (service.clone(), log.clone(), front.clone());
                let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
                    serve(service.clone(), log.clone(), front.clone(), request)
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), handler)
                        .await;
                });
            }
        });
        McpServer { addr, seen }
    }

    /// The MCP endpoint, `http://127.0.0.1:port/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    service: StreamableHttpService<Tools, LocalSessionManager>,
    log: Arc<Mutex<Vec<Seen>>>,
    front: Arc<Front>,
    request: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut seen = Seen {
        method: parts.method.clone(),
        user_agent: header("user-agent"),
        session: header("mcp-session-id"),
        rpc_method: serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("method")?.as_str().map(str::to_owned)),
        answered: None,
    };
    let n = log.lock().unwrap().len();
    seen.answered = front(&seen, n);
    log.lock().unwrap().push(seen.clone());
    if let Some(status) = seen.answered {
        let mut response = Response::new(Full::new(Bytes::new()).boxed());
        *response.status_mut() = status;
        return Ok(response);
    }
    let request = Request::from_parts(parts, Full::new(body));
    let response = service.oneshot(request).await?;
    Ok(response.map(|body| body.boxed()))
}
