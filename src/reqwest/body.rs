//! The one place a reqwest response body becomes a traced body: reqwest's body is wrapped in
//! kasal-trace's [`TracedBody`] (which keeps the call's span open, shows each chunk to the
//! [`OnBodyChunk`] hook and records the call once), without copying a byte.

use http::response::Builder;
use kasal_classify::DefaultClassifier;
use kasal_trace::{CallSpan, OnBodyChunk, SharedHooks, TracedBody};
use reqwest::{Body, ResponseBuilderExt};

use crate::Telemetry;

/// Rebuilds `response` with its body wrapped in a [`TracedBody`] that records `call` into the
/// pipeline of `hooks` when the body ends, fails or is dropped.
///
/// reqwest converts both ways between its `Response` and `http::Response<reqwest::Body>`; the
/// body moves (boxed, never copied) and the status, version, headers and extensions stay. Only
/// the response URL has to be carried over by hand: the `http` form has no field for it.
pub(super) fn trace_response<H>(
    response: reqwest::Response,
    call: Box<CallSpan>,
    hooks: &SharedHooks<DefaultClassifier, Telemetry>,
    on_body_chunk: H,
) -> reqwest::Response
where
    H: OnBodyChunk<bytes::Bytes> + Sync,
{
    let url = response.url().clone();
    let (mut parts, body) = http::Response::<Body>::from(response).into_parts();
    let traced = TracedBody::with_shared_hooks(body, call, hooks.clone(), on_body_chunk);
    // `ResponseBuilderExt::url` is the one way to store the URL where `reqwest::Response::from`
    // looks for it (an extension of a type private to reqwest). The builder is lent the
    // response's own extensions for it, so the URL joins them in place (no second map).
    let mut head = Builder::new();
    if let Some(extensions) = head.extensions_mut() {
        std::mem::swap(extensions, &mut parts.extensions);
    }
    let mut head = head.url(url);
    if let Some(extensions) = head.extensions_mut() {
        std::mem::swap(extensions, &mut parts.extensions);
    }
    reqwest::Response::from(http::Response::from_parts(parts, Body::wrap(traced)))
}
