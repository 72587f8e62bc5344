//! A local model-serving server (hyper on 127.0.0.1) answering OpenAI-compatible chat
//! completions, embeddings and event streams, as Databricks model serving does, and counting the
//! tokens it reported.
//!
//! The request body says what to answer ([`Ask`], JSON): a chat completion, an embedding list,
//! an SSE stream with usage in its last data event, or raw bytes (for malformed answers),
//! optionally padded to a size and cut off (the connection aborted) after the body. Bodies go out
//! in 16 KiB frames; [`body_of`] gives the exact bytes of an answer, for comparisons.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// What to answer.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Ask {
    /// `chat`, `embedding`, `stream` or `raw`.
    pub reply: String,
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub reasoning: u64,
    /// The model the body names; none (the endpoint's name applies) when absent.
    pub model: Option<String>,
    /// Approximate body size to pad to, in bytes.
    pub pad: usize,
    /// For `raw`: the body.
    pub raw: String,
    /// Abort the connection after sending the body (no clean end).
    pub cut: bool,
}

impl Ask {
    pub fn chat(input: u64, output: u64) -> Ask {
        Ask {
            reply: "chat".into(),
            input,
            output,
            model: Some("databricks-claude-sonnet".into()),
            ..Ask::default()
        }
    }

    pub fn embedding(input: u64) -> Ask {
        Ask {
            reply: "embedding".into(),
            input,
            ..Ask::default()
        }
    }

    pub fn stream(input: u64, output: u64) -> Ask {
        Ask {
            reply: "stream".into(),
            input,
            output,
            model: Some("databricks-llama-stream".into()),
            ..Ask::default()
        }
    }

    pub fn raw(body: &str) -> Ask {
        Ask {
            reply: "raw".into(),
            raw: body.into(),
            ..Ask::default()
        }
    }

    pub fn padded(mut self, pad: usize) -> Ask {
        self.pad = pad;
        self
    }

    pub fn to_json(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("ask serializes"))
    }

    /// Whether the server counts this answer's tokens.
    fn reports_usage(&self) -> bool {
        matches!(self.reply.as_str(), "chat" | "embedding" | "stream")
    }
}

/// Text with everything a scanner could trip on: escaped quotes, backslashes, braces, and a
/// `usage` key inside a string.
const TRICKY: &str = r#"Sure: {"usage": {"prompt_tokens": 999}} \ "quoted" [x] "#;

fn content(len: usize) -> String {
    TRICKY.chars().cycle().take(len.max(1)).collect()
}

fn usage_json(ask: &Ask) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": ask.input,
        "completion_tokens": ask.output,
        "total_tokens": ask.input + ask.output,
        "prompt_tokens_details": {"cached_tokens": ask.cached},
        "completion_tokens_details": {"reasoning_tokens": ask.reasoning},
    })
}

/// The exact body of the answer to `ask`.
pub fn body_of(ask: &Ask) -> Vec<u8> {
    match ask.reply.as_str() {
        "chat" => {
            let mut body = serde_json::json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content(ask.pad)}, "finish_reason": "stop"}],
                "usage": usage_json(ask),
                "system_fingerprint": "fp_1",
            });
            if let Some(model) = &ask.model {
                body["model"] = model.clone().into();
            }
            serde_json::to_vec(&body).expect("serializes")
        }
        "embedding" => {
            let numbers = (ask.pad / 22).max(8);
            let embedding: Vec<f64> = (0..numbers).map(|i| (i as f64 * 0.37).sin()).collect();
            let mut body = serde_json::json!({
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
                "usage": {"prompt_tokens": ask.input, "total_tokens": ask.input},
            });
            if let Some(model) = &ask.model {
                body["model"] = model.clone().into();
            }
            serde_json::to_vec(&body).expect("serializes")
        }
        "stream" => {
            let model = ask.model.clone().unwrap_or_default();
            let mut out = Vec::new();
            let piece = content(200);
            let events = (ask.pad / 300).max(3);
            for i in 0..events {
                let event = serde_json::json!({
                    "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": {"content": format!("{i} {piece}")}, "finish_reason": null}],
                    "usage": null,
                });
                out.extend_from_slice(format!("data: {event}\n\n").as_bytes());
            }
            let last = serde_json::json!({
                "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [], "usage": usage_json(ask),
            });
            out.extend_from_slice(format!("data: {last}\n\ndata: [DONE]\n\n").as_bytes());
            out
        }
        _ => ask.raw.as_bytes().to_vec(),
    }
}

/// Tokens the server reported, summed.
#[derive(Debug, Default)]
pub struct Counts {
    pub calls: AtomicU64,
    pub input: AtomicU64,
    pub output: AtomicU64,
}

/// The running server.
pub struct ModelServer {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl ModelServer {
    pub async fn start() -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let served = counts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counts = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let counts = counts.clone();
                        async move { Ok::<_, Infallible>(answer(request, &counts).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ModelServer { addr, counts, task }
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// (calls, input tokens, output tokens) reported so far.
    pub fn reported(&self) -> (u64, u64, u64) {
        (
            self.counts.calls.load(Relaxed),
            self.counts.input.load(Relaxed),
            self.counts.output.load(Relaxed),
        )
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

async fn answer(request: Request<Incoming>, counts: &Counts) -> Response<Body> {
    let bytes = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Ok(ask) = serde_json::from_slice::<Ask>(&bytes) else {
        let mut response = Response::new(frames(b"bad ask".to_vec(), false));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    if ask.reports_usage() {
        counts.calls.fetch_add(1, Relaxed);
        counts.input.fetch_add(ask.input, Relaxed);
        counts.output.fetch_add(ask.output, Relaxed);
    }
    let content_type = if ask.reply == "stream" {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut response = Response::new(frames(body_of(&ask), ask.cut));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        content_type.parse().expect("valid"),
    );
    response
}

/// The body in 16 KiB frames, then an error (the connection is aborted) if `cut`.
fn frames(body: Vec<u8>, cut: bool) -> Body {
    let body = Bytes::from(body);
    let chunks: Vec<Bytes> = (0..body.len())
        .step_by(16 * 1024)
        .map(|at| body.slice(at..(at + 16 * 1024).min(body.len())))
        .collect();
    let items = chunks
        .into_iter()
        .map(|chunk| Ok(Frame::data(chunk)))
        .chain(cut.then(|| Err(std::io::Error::other("cut off"))));
    StreamBody::new(futures_util::stream::iter(items)).boxed()
}

/// A server that answers every request with `body` as a chunked 200 and then closes the
/// connection without the final chunk: the client gets every byte, then an error (a stream cut
/// off). Raw TCP, so the bytes are flushed before the cut, deterministically.
pub struct CutServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl CutServer {
    pub async fn start(body: Vec<u8>) -> CutServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let body = Arc::new(body);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    // Read the request: head, then Content-Length bytes.
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while request.len() < head_end + length {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                    for chunk in body.chunks(16 * 1024) {
                        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        out.extend_from_slice(chunk);
                        out.extend_from_slice(b"\r\n");
                    }
                    let _ = stream.write_all(&out).await;
                    let _ = stream.flush().await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        CutServer { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for CutServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
