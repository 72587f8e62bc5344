//! The record of every call the workspace answered, and the middleware that writes it (and
//! applies injected faults first).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};
use tokio::time::Instant;

use crate::error::error_response;
use crate::recorded::RecordedCall;
use crate::state::Shared;

impl RecordedCall {
    /// The Kasal product named by the User-Agent: `vectorsearch` for
    /// `kasal_vectorsearch/0.1.0 …`, `crew_gen` for `kasal_crew_gen/0.1.0`. `None` when the
    /// User-Agent has no `kasal_<product>/` token.
    pub fn product(&self) -> Option<&str> {
        self.user_agent.as_deref().and_then(product_of)
    }
}

/// The product token of a Kasal User-Agent (the first `kasal_<product>/<version>` token).
pub fn product_of(user_agent: &str) -> Option<&str> {
    user_agent.split_ascii_whitespace().find_map(|token| {
        let (name, _version) = token.split_once('/')?;
        let product = name.strip_prefix("kasal_")?;
        let valid = !product.is_empty()
            && product
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        valid.then_some(product)
    })
}

pub(crate) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Axum middleware: apply a pending fault, else run the route; then record the call.
pub(crate) async fn record(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let headers = request.headers();
    let token = bearer(headers);
    let mut call = RecordedCall {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        route: request
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_owned()),
        user_agent: header_str(headers, "user-agent"),
        forwarded_user: header_str(headers, "x-forwarded-email")
            .or_else(|| header_str(headers, "x-forwarded-user")),
        caller: token.and_then(|t| shared.caller_of(t)),
        authenticated: token.is_some(),
        status: StatusCode::OK,
        injected: false,
        latency: Duration::ZERO,
    };

    let fault = shared.take_fault(&call.path);
    let response = match fault {
        Some(fault) => {
            if !fault.delay.is_zero() {
                tokio::time::sleep(fault.delay).await;
            }
            match fault.status {
                Some(status) => {
                    call.injected = true;
                    error_response(status, "injected by the local workspace", fault.retry_after)
                }
                None => next.run(request).await,
            }
        }
        None => next.run(request).await,
    };
    call.status = response.status();
    call.latency = started.elapsed();
    shared.push_call(call);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_from_user_agent() {
        assert_eq!(product_of("kasal_vectorsearch/0.1.0"), Some("vectorsearch"));
        assert_eq!(
            product_of("kasal_crew_gen/0.1.0 os/linux"),
            Some("crew_gen")
        );
        assert_eq!(
            product_of("rmcp/3 kasal_mcp/0.1.0 client/claude"),
            Some("mcp")
        );
        assert_eq!(product_of("curl/8.0"), None);
        assert_eq!(product_of("kasal_/1"), None);
        assert_eq!(product_of("kasal_Bad/1"), None);
        assert_eq!(product_of(""), None);
    }

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer dapi123".parse().unwrap());
        assert_eq!(bearer(&headers), Some("dapi123"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "bearer  ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
