//! Databricks-style error answers: `{"error_code": "...", "message": "..."}`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// The Databricks REST `error_code` for a status.
pub(crate) fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_PARAMETER_VALUE",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "RESOURCE_DOES_NOT_EXIST",
        409 => "RESOURCE_CONFLICT",
        429 => "REQUEST_LIMIT_EXCEEDED",
        501 => "NOT_IMPLEMENTED",
        503 => "TEMPORARILY_UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL_ERROR",
        _ => "BAD_REQUEST",
    }
}

/// An error answer, with `Retry-After: <seconds>` when given.
pub(crate) fn error_response(
    status: StatusCode,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let body = json!({ "error_code": error_code(status), "message": message });
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
