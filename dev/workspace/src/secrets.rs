//! `GET /api/2.0/secrets/get`, `/api/2.0/secrets/list` and `/api/2.0/secrets/scopes/list`, as
//! the Databricks Secrets API answers them (`value` base64-encoded).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::error::error_response;
use crate::state::Shared;

#[derive(Deserialize)]
pub(crate) struct SecretQuery {
    scope: Option<String>,
    key: Option<String>,
}

pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<SecretQuery>,
) -> Response {
    let (Some(scope), Some(key)) = (query.scope, query.key) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "`scope` and `key` are required",
            None,
        );
    };
    match shared.settings.secrets.get(&(scope.clone(), key.clone())) {
        Some(value) => Json(json!({
            "key": key,
            "value": base64::engine::general_purpose::STANDARD.encode(value),
        }))
        .into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            &format!("Failed to get secret {key} for scope {scope}."),
            None,
        ),
    }
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<SecretQuery>,
) -> Response {
    let Some(scope) = query.scope else {
        return error_response(StatusCode::BAD_REQUEST, "`scope` is required", None);
    };
    let secrets: Vec<_> = shared
        .settings
        .secrets
        .keys()
        .filter(|(s, _)| *s == scope)
        .map(|(_, key)| json!({"key": key, "last_updated_timestamp": 1_700_000_000_000u64}))
        .collect();
    if secrets.is_empty() {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("Scope {scope} does not exist!"),
            None,
        );
    }
    Json(json!({ "secrets": secrets })).into_response()
}

pub(crate) async fn scopes(State(shared): State<Arc<Shared>>) -> Response {
    let names: BTreeMap<&str, ()> = shared
        .settings
        .secrets
        .keys()
        .map(|(scope, _)| (scope.as_str(), ()))
        .collect();
    let scopes: Vec<_> = names
        .keys()
        .map(|name| json!({"name": name, "backend_type": "DATABRICKS"}))
        .collect();
    Json(json!({ "scopes": scopes })).into_response()
}
