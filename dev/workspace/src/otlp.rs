//! An OTLP/HTTP receiver: `POST /v1/metrics`, `/v1/traces` and `/v1/logs` with binary protobuf
//! bodies (`application/x-protobuf`, gzip allowed), decoded with `opentelemetry-proto` and kept
//! as counts. JSON-encoded OTLP is answered `415` and counted as malformed.

use std::io::Read;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use prost::Message;

use crate::recorded::OtlpReceived;
use crate::state::Shared;

const MAX_BODY: u64 = 16 * 1024 * 1024;

impl OtlpReceived {
    /// Data points received over every metric.
    pub fn data_points(&self) -> u64 {
        self.metric_points.values().sum()
    }

    fn add_metrics(&mut self, request: &ExportMetricsServiceRequest) {
        let metrics = request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics);
        for metric in metrics {
            let (points, sum) = match &metric.data {
                Some(Data::Gauge(g)) => (g.data_points.len(), number_sum(&g.data_points)),
                Some(Data::Sum(s)) => (s.data_points.len(), number_sum(&s.data_points)),
                Some(Data::Histogram(h)) => (
                    h.data_points.len(),
                    h.data_points.iter().filter_map(|p| p.sum).sum(),
                ),
                Some(Data::ExponentialHistogram(h)) => (
                    h.data_points.len(),
                    h.data_points.iter().filter_map(|p| p.sum).sum(),
                ),
                Some(Data::Summary(s)) => (
                    s.data_points.len(),
                    s.data_points.iter().map(|p| p.sum).sum(),
                ),
                None => (0, 0.0),
            };
            *self.metric_points.entry(metric.name.clone()).or_default() += points as u64;
            *self.metric_sums.entry(metric.name.clone()).or_default() += sum;
            self.metric_units
                .insert(metric.name.clone(), metric.unit.clone());
        }
    }
}

fn number_sum(points: &[opentelemetry_proto::tonic::metrics::v1::NumberDataPoint]) -> f64 {
    points
        .iter()
        .map(|p| match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => 0.0,
        })
        .sum()
}

fn body_bytes(headers: &HeaderMap, body: &Bytes) -> Option<Vec<u8>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    if !content_type.starts_with("application/x-protobuf") {
        return None;
    }
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Some(body.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .take(MAX_BODY + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= MAX_BODY).then_some(out)
}

fn protobuf(message: impl Message) -> Response {
    let mut response = message.encode_to_vec().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

fn refuse(shared: &Shared) -> Response {
    shared.with_otlp(|o| o.malformed += 1);
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "binary protobuf OTLP only (application/x-protobuf)",
    )
        .into_response()
}

pub(crate) async fn metrics(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(request) = body_bytes(&headers, &body)
        .and_then(|b| ExportMetricsServiceRequest::decode(b.as_slice()).ok())
    else {
        return refuse(&shared);
    };
    shared.with_otlp(|o| {
        o.requests += 1;
        o.add_metrics(&request);
    });
    protobuf(ExportMetricsServiceResponse::default())
}

pub(crate) async fn traces(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(request) = body_bytes(&headers, &body)
        .and_then(|b| ExportTraceServiceRequest::decode(b.as_slice()).ok())
    else {
        return refuse(&shared);
    };
    shared.with_otlp(|o| {
        o.requests += 1;
        let spans = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans);
        for span in spans {
            *o.spans.entry(span.name.clone()).or_default() += 1;
        }
    });
    protobuf(ExportTraceServiceResponse::default())
}

pub(crate) async fn logs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(request) = body_bytes(&headers, &body)
        .and_then(|b| ExportLogsServiceRequest::decode(b.as_slice()).ok())
    else {
        return refuse(&shared);
    };
    shared.with_otlp(|o| {
        o.requests += 1;
        o.log_records += request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum::<u64>();
    });
    protobuf(ExportLogsServiceResponse::default())
}
