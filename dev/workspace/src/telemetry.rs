//! `POST /telemetry-ext` (with credentials) and `POST /telemetry-unauth` (without): the
//! Databricks frontend-log upload `{"uploadTime", "items", "protoLogs": ["<json>", …]}`. Every
//! upload is decoded (gzip too) and kept, each protoLog parsed as JSON; the answer is what the
//! service answers: `{"errors": [], "numSuccess": 0, "numProtoSuccess": N, …}`.

use std::io::Read;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::error::error_response;
use crate::record::{bearer, header_str};
use crate::recorded::TelemetryBatch;
use crate::state::Shared;

/// Decompressed uploads larger than this are refused (a gzip bomb must not take the server).
const MAX_UPLOAD: u64 = 16 * 1024 * 1024;

pub(crate) async fn upload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: http::Uri,
    body: Bytes,
) -> Response {
    match decode(&headers, &body) {
        Ok(upload) => {
            let mut batch = TelemetryBatch {
                path: uri.path().to_owned(),
                authenticated: bearer(&headers).is_some(),
                user_agent: header_str(&headers, header::USER_AGENT.as_str()),
                bytes: body.len(),
                gzip: is_gzip(&headers),
                upload_time: upload.get("uploadTime").and_then(Value::as_i64),
                items: upload
                    .get("items")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len),
                proto_logs: Vec::new(),
                rejected_logs: 0,
            };
            for log in upload
                .get("protoLogs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match log.as_str().map(serde_json::from_str::<Value>) {
                    Some(Ok(parsed)) if parsed.is_object() => batch.proto_logs.push(parsed),
                    _ => batch.rejected_logs += 1,
                }
            }
            let accepted = batch.proto_logs.len();
            let errors: Vec<Value> = (0..batch.rejected_logs)
                .map(|_| json!({"message": "protoLog is not a JSON object"}))
                .collect();
            shared.push_batch(batch);
            Json(json!({
                "errors": errors,
                "numSuccess": 0,
                "numProtoSuccess": accepted,
                "numRealtimeSuccess": 0,
            }))
            .into_response()
        }
        Err(message) => {
            shared.malformed_upload();
            error_response(StatusCode::BAD_REQUEST, message, None)
        }
    }
}

fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
}

fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Value, &'static str> {
    let text = if is_gzip(headers) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(MAX_UPLOAD + 1)
            .read_to_end(&mut out)
            .map_err(|_| "body is not valid gzip")?;
        if out.len() as u64 > MAX_UPLOAD {
            return Err("decompressed upload is too large");
        }
        out
    } else {
        body.to_vec()
    };
    let value: Value = serde_json::from_slice(&text).map_err(|_| "body is not JSON")?;
    if !value.is_object() {
        return Err("body is not a JSON object");
    }
    Ok(value)
}
