//! `GET /api/2.0/connector-service/feature-flags/{client}/{version}`: the connector feature
//! flags, `{"flags": [{"name", "value"}], "ttl_seconds"}`, for any client and version. Which
//! flags are served is a setting ([`WorkspaceBuilder::flag`](crate::WorkspaceBuilder::flag),
//! [`Workspace::set_flag`](crate::Workspace::set_flag)).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::Shared;

pub(crate) async fn feature_flags(State(shared): State<Arc<Shared>>) -> Response {
    let flags: Vec<_> = shared
        .flags()
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    Json(json!({
        "flags": flags,
        "ttl_seconds": shared.settings.flag_ttl_seconds,
    }))
    .into_response()
}
