//! Real HTTP servers on 127.0.0.1 for the whole-stack tests.
//!
//! `TestServer::start(script)` binds an ephemeral port, records every request it receives and
//! answers each from `script(&request, n)` (n counts requests from 0). Replies can be normal
//! responses (optionally slow or streamed in chunks), a connection reset, or no answer at all.
#![allow(dead_code, unreachable_pub)]

pub mod raw_server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// Every value of `name`, as text.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The single value of `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// How the server answers one request.
pub enum Reply {
    /// A response.
    Respond {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: ReplyBody,
        /// Wait this long before sending the head.
        delay: Duration,
    },
    /// Close the connection abruptly (RST) without answering.
    Reset,
    /// Never answer (the connection stays open until the server is dropped).
    Hang,
}

/// A response body.
pub enum ReplyBody {
    /// All at once.
    Full(Bytes),
    /// Chunk by chunk, with a pause before each chunk.
    Chunks(Vec<Bytes>, Duration),
    /// Chunks pushed by the test through the sender; the body ends when the sender is dropped.
    Channel(Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>),
}

impl Reply {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply::text(status, "")
    }

    /// `status` with a text body.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::Respond {
            status: StatusCode::from_u16(status).expect("valid status"),
            headers: Vec::new(),
            body: ReplyBody::Full(Bytes::copy_from_slice(body.as_bytes())),
            delay: Duration::ZERO,
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        if let Reply::Respond { headers, .. } = &mut self {
            headers.push((
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("valid header value"),
            ));
        }
        self
    }

    /// Waits `delay` before answering.
    pub fn delayed(mut self, by: Duration) -> Reply {
        if let Reply::Respond { delay, .. } = &mut self {
            *delay = by;
        }
        self
    }

    /// Replaces the body with a streamed one.
    pub fn body(mut self, new: ReplyBody) -> Reply {
        if let Reply::Respond { body, .. } = &mut self {
            *body = new;
        }
        self
    }
}

type Script = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

struct Shared {
    script: Box<Script>,
    seen: Mutex<Vec<Recorded>>,
    arrived: Notify,
}

/// A running server. Dropping it stops accepting (connections in flight end with the runtime).
pub struct TestServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
}

impl TestServer {
    /// Starts a server answering from `script`.
    pub async fn start(script: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            script: Box::new(script),
            seen: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let stop = Arc::new(Notify::new());
        let (accept_shared, accept_stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(_) => continue,
                    },
                    _ = accept_stop.notified() => return,
                };
                let shared = accept_shared.clone();
                tokio::spawn(serve_connection(stream, shared));
            }
        });
        TestServer { addr, shared, stop }
    }

    /// A server that always answers `status` with an empty body.
    pub async fn always(status: u16) -> Self {
        TestServer::start(move |_, _| Reply::status(status)).await
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `127.0.0.1:port`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many requests arrived so far.
    pub fn hits(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// Waits until at least `n` requests have arrived (or `timeout` passes) and returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            if self.hits() >= n {
                return self.requests();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.requests();
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    // Keep a handle on the socket so a `Reset` reply can abort the connection with RST.
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(_) => return,
    };
    let reset_handle = std_stream.try_clone().ok();
    let stream = match tokio::net::TcpStream::from_std(std_stream) {
        Ok(s) => s,
        Err(_) => return,
    };
    let reset_handle = Arc::new(Mutex::new(reset_handle));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let reset_handle = reset_handle.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let recorded = Recorded {
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
                body,
            };
            let n = {
                let mut seen = shared.seen.lock().unwrap();
                seen.push(recorded.clone());
                seen.len() - 1
            };
            shared.arrived.notify_waiters();
            match (shared.script)(&recorded, n) {
                Reply::Respond {
                    status,
                    headers,
                    body,
                    delay,
                } => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let mut response = Response::new(into_body(body));
                    *response.status_mut() = status;
                    for (name, value) in headers {
                        response.headers_mut().append(name, value);
                    }
                    Ok::<_, Infallible>(response)
                }
                Reply::Reset => {
                    if let Some(socket) = reset_handle.lock().unwrap().take() {
                        let socket = socket2_like_reset(socket);
                        drop(socket);
                    }
                    std::future::pending().await
                }
                Reply::Hang => std::future::pending().await,
            }
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Sets SO_LINGER to zero and shuts the socket down so the peer sees a connection reset.
fn socket2_like_reset(socket: std::net::TcpStream) -> std::net::TcpStream {
    let tokio_socket =
        tokio::net::TcpStream::from_std(socket.try_clone().expect("clone")).expect("tokio socket");
    #[allow(deprecated)]
    let _ = tokio_socket.set_linger(Some(Duration::ZERO));
    drop(tokio_socket);
    let _ = socket.shutdown(std::net::Shutdown::Both);
    socket
}

fn into_body(body: ReplyBody) -> BoxBody<Bytes, Infallible> {
    match body {
        ReplyBody::Full(bytes) => Full::new(bytes).boxed(),
        ReplyBody::Chunks(chunks, pause) => {
            let stream =
                futures_util::stream::unfold(chunks.into_iter(), move |mut it| async move {
                    let chunk = it.next()?;
                    tokio::time::sleep(pause).await;
                    Some((Ok::<_, Infallible>(Frame::data(chunk)), it))
                });
            StreamBody::new(stream).boxed()
        }
        ReplyBody::Channel(rx) => {
            let rx = rx.lock().unwrap().take().expect("channel body used once");
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
            });
            StreamBody::new(stream).boxed()
        }
    }
}

/// A hyper-util legacy client over plain HTTP/1 for any body type.
pub fn client<B>()
-> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}
