//! A real OTLP/HTTP metrics receiver on 127.0.0.1: hyper, protobuf decoded with
//! `opentelemetry-proto`, gzip understood. It can answer an error status, go down (stop
//! listening and drop its connections) and come back on the same port, and it keeps totals of
//! what it accepted, per metric, plus a count of bodies received twice.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 200 with an empty `ExportMetricsServiceResponse`.
    Accept,
    /// This status, nothing kept.
    Fail(u16),
}

/// What one metric added up to over the accepted requests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricTotals {
    pub points: u64,
    pub count: u64,
    pub sum: f64,
    pub buckets: Vec<u64>,
}

/// Everything accepted so far.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Requests that reached the handler (accepted or not).
    pub requests: u64,
    /// Requests accepted (decoded and answered 200).
    pub accepted: u64,
    /// Accepted bodies identical to an earlier accepted body.
    pub duplicates: u64,
    /// Requests with `Content-Encoding: gzip`.
    pub gzipped: u64,
    /// Per metric name.
    pub metrics: BTreeMap<String, MetricTotals>,
    /// Every accepted request, decoded.
    pub decoded: Vec<ExportMetricsServiceRequest>,
    /// The last request's headers.
    pub last_headers: Option<http::HeaderMap>,
}

impl Totals {
    /// Calls (histogram counts) over every metric.
    pub fn calls(&self) -> u64 {
        self.metrics.values().map(|m| m.count).sum()
    }
}

struct State {
    mode: Mutex<Mode>,
    totals: Mutex<Totals>,
    seen: Mutex<HashSet<u64>>,
    arrived: Notify,
}

/// The receiver. `stop` and `restart` keep the port.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    tasks: Option<JoinSet<()>>,
}

impl OtlpReceiver {
    /// Starts accepting on an ephemeral port.
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Accept),
            totals: Mutex::new(Totals::default()),
            seen: Mutex::new(HashSet::new()),
            arrived: Notify::new(),
        });
        let mut receiver = OtlpReceiver {
            addr,
            state,
            tasks: None,
        };
        receiver.serve(listener);
        receiver
    }

    /// `http://127.0.0.1:port/v1/metrics`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/metrics", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn totals(&self) -> Totals {
        self.state.totals.lock().unwrap().clone()
    }

    /// Stops listening and drops every open connection: connects are refused.
    pub async fn stop(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.serve(listener);
    }

    /// Waits until `accepted` requests were accepted (or `timeout`).
    pub async fn wait_accepted(&self, accepted: u64, timeout: Duration) -> Totals {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let totals = self.totals();
            if totals.accepted >= accepted
                || tokio::time::timeout_at(deadline, notified).await.is_err()
            {
                return self.totals();
            }
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        let state = self.state.clone();
        let mut tasks = JoinSet::new();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept_connections = connections.clone();
        tasks.spawn(async move {
            // The connections live in a set owned by this task: aborting it drops them all.
            let _keep = DropAbort(accept_connections.clone());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                accept_connections.lock().unwrap().spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        self.tasks = Some(tasks);
    }
}

struct DropAbort(Arc<Mutex<JoinSet<()>>>);

impl Drop for DropAbort {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.lock() {
            set.abort_all();
        }
    }
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mode = *state.mode.lock().unwrap();
    let gzipped = parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    {
        let mut totals = state.totals.lock().unwrap();
        totals.requests += 1;
        totals.last_headers = Some(parts.headers.clone());
    }
    let answer = match mode {
        Mode::Fail(status) => Response::builder()
            .status(status)
            .body(Full::default())
            .unwrap(),
        Mode::Accept => {
            let raw = if gzipped {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut out)
                    .expect("gzip body");
                Bytes::from(out)
            } else {
                body
            };
            match ExportMetricsServiceRequest::decode(raw.clone()) {
                Err(_) => Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .body(Full::default())
                    .unwrap(),
                Ok(decoded) => {
                    let mut hasher = DefaultHasher::new();
                    raw.hash(&mut hasher);
                    let fresh = state.seen.lock().unwrap().insert(hasher.finish());
                    let mut totals = state.totals.lock().unwrap();
                    totals.accepted += 1;
                    totals.gzipped += u64::from(gzipped);
                    totals.duplicates += u64::from(!fresh);
                    add(&mut totals, &decoded);
                    totals.decoded.push(decoded);
                    drop(totals);
                    Response::new(Full::new(Bytes::from(
                        ExportMetricsServiceResponse::default().encode_to_vec(),
                    )))
                }
            }
        }
    };
    state.arrived.notify_waiters();
    answer
}

fn add(totals: &mut Totals, request: &ExportMetricsServiceRequest) {
    for resource in &request.resource_metrics {
        for scope in &resource.scope_metrics {
            for metric in &scope.metrics {
                let Some(Data::Histogram(histogram)) = &metric.data else {
                    continue;
                };
                let entry = totals.metrics.entry(metric.name.clone()).or_default();
                for point in &histogram.data_points {
                    entry.points += 1;
                    entry.count += point.count;
                    entry.sum += point.sum.unwrap_or(0.0);
                    if entry.buckets.len() < point.bucket_counts.len() {
                        entry.buckets.resize(point.bucket_counts.len(), 0);
                    }
                    for (into, from) in entry.buckets.iter_mut().zip(&point.bucket_counts) {
                        *into += from;
                    }
                }
            }
        }
    }
}
