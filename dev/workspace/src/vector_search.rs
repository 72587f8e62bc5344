//! `POST /api/2.0/vector-search/indexes/{name}/query`: the Databricks Vector Search query
//! answer (`manifest` + `result.data_array`), with deterministic rows.

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use crate::error::error_response;

/// At most this many rows per query, whatever `num_results` asks.
const MAX_ROWS: u64 = 20;

pub(crate) async fn query(Path(index): Path<String>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error_response(StatusCode::BAD_REQUEST, "request body is not JSON", None);
    };
    let text = request.get("query_text").and_then(Value::as_str);
    let vector = request.get("query_vector").and_then(Value::as_array);
    if text.is_none() && vector.is_none() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "one of `query_text` or `query_vector` is required",
            None,
        );
    }
    let columns: Vec<String> = request
        .get("columns")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .filter(|c: &Vec<String>| !c.is_empty())
        .unwrap_or_else(|| vec!["id".to_owned(), "text".to_owned()]);
    let rows = request
        .get("num_results")
        .and_then(Value::as_u64)
        .unwrap_or(3)
        .min(MAX_ROWS);
    let about = text.unwrap_or("the query vector");

    let data: Vec<Value> = (0..rows)
        .map(|row| {
            let mut values: Vec<Value> = columns
                .iter()
                .map(|column| match column.as_str() {
                    "id" => json!(row + 1),
                    _ => json!(format!("{index} document {} about {about}", row + 1)),
                })
                .collect();
            values.push(json!(1.0 - row as f64 * 0.05)); // the score column comes last
            Value::Array(values)
        })
        .collect();
    let mut manifest: Vec<Value> = columns.iter().map(|c| json!({"name": c})).collect();
    manifest.push(json!({"name": "score"}));
    Json(json!({
        "manifest": {"column_count": manifest.len(), "columns": manifest},
        "result": {"row_count": rows, "data_array": data},
        "next_page_token": "",
    }))
    .into_response()
}
