//! rmcp's `StreamableHttpClient` over the reqwest telemetry stack.
//!
//! Follows rmcp's own implementation for `reqwest::Client` (the same requests, headers, status
//! handling and body limits), so a transport behaves the same with either client; the
//! difference is that every request goes through the reqwest-middleware stack and carries the
//! MCP session as its operation and the JSON-RPC method as its route.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::BoxStream;
use http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use kasal_trace::Route;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, ErrorData, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, HttpStatusError, InsufficientScopeError, SseError, StreamableHttpClient,
    StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use sse_stream::Sse;

use super::McpClient;
use super::sse::sse_events;
use crate::reqwest::OperationIdHeader;

type Error = StreamableHttpError<reqwest_middleware::Error>;

const SESSION_ID: &str = "mcp-session-id";
const LAST_EVENT_ID: &str = "last-event-id";
const PROTOCOL_VERSION: &str = "mcp-protocol-version";
const EVENT_STREAM: &str = "text/event-stream";
const JSON: &str = "application/json";
const ACCEPT_BOTH: &str = "text/event-stream, application/json";
/// rmcp's default per-event SSE limit, for the methods called without one.
const DEFAULT_MAX_SSE_EVENT_SIZE: usize = 16 * 1024 * 1024;
/// Longest `Retry-After` value kept in an `HttpStatusError` (as rmcp).
const MAX_RETRY_AFTER_BYTES: usize = 128;
/// Bytes of an unusable JSON body quoted in an error (as rmcp).
const BODY_PREVIEW: usize = 256;

impl StreamableHttpClient for McpClient {
    type Error = reqwest_middleware::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let limits = StreamableHttpResponseLimits::default();
        self.post(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let mut limits = StreamableHttpResponseLimits::default();
        limits.max_sse_event_size = max_sse_event_size;
        self.post(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, Error> {
        self.post(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
        .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Error> {
        let session = self.sessions.hold(&session_id);
        let mut request = self
            .client
            .delete(uri.as_ref())
            .header(SESSION_ID, session_id.as_ref())
            .with_extension(session.operation_id().clone());
        if let Some(token) = auth_header {
            request = request.bearer_auth(token);
        }
        request = with_custom_headers(request, custom_headers)?;
        let result = request.send().await;
        // Over from our side whatever the answer: the operation completes once the calls still
        // open (an SSE stream being torn down) are recorded.
        self.sessions.close(&session_id);
        drop(session);
        let response = result.map_err(StreamableHttpError::Client)?;
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            tracing::debug!("this server doesn't support deleting session");
            return Ok(());
        }
        response
            .error_for_status()
            .map_err(|error| StreamableHttpError::Client(error.into()))?;
        Ok(())
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Error> {
        self.stream(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            DEFAULT_MAX_SSE_EVENT_SIZE,
        )
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Error> {
        self.stream(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        )
        .await
    }
}

impl McpClient {
    /// One JSON-RPC message, `POST`ed: one call, routed by its method, in its session.
    async fn post(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let body = serde_json::to_vec(&message)?;
        let mut request = self
            .client
            .post(uri.as_ref())
            .header(ACCEPT, ACCEPT_BOTH)
            .header(CONTENT_TYPE, JSON);
        if let Some(route) = route(&message, &body) {
            request = request.with_extension(route);
        }
        if let Some(token) = auth_header {
            request = request.bearer_auth(token);
        }
        request = with_custom_headers(request, custom_headers)?;
        let session_was_attached = session_id.is_some();
        let mut session = session_id.as_ref().map(|id| self.sessions.hold(id));
        request = match (&session_id, &session) {
            (Some(id), Some(session)) => request
                .header(SESSION_ID, id.as_ref())
                .with_extension(session.operation_id().clone()),
            // `initialize`: the server names the session in its answer.
            _ => request.with_extension(OperationIdHeader(HeaderName::from_static(SESSION_ID))),
        };
        let response = request
            .body(body)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;

        let status = response.status();
        if let Some(error) = auth_error(status, response.headers())? {
            return Err(error);
        }
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && session_was_attached {
            if let Some(id) = &session_id {
                self.sessions.close(id);
            }
            return Err(StreamableHttpError::SessionExpired);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|ct| String::from_utf8_lossy(ct.as_bytes()).into_owned());
        let is_json = content_type
            .as_deref()
            .is_some_and(|ct| media_type_is(ct.as_bytes(), JSON));
        let status_error = match (http_status_error(status, response.headers()), is_json) {
            (Some(error), is_json) if !is_json || status == StatusCode::TOO_MANY_REQUESTS => {
                return Err(error.into());
            }
            (error, _) => error,
        };
        let content_length = response.content_length();
        let new_session_id = response
            .headers()
            .get(SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if session.is_none() {
            session = new_session_id
                .as_deref()
                .map(|id| self.sessions.hold(&Arc::from(id)));
        }
        let awaits_no_response = matches!(
            message,
            ClientJsonRpcMessage::Notification(_)
                | ClientJsonRpcMessage::Response(_)
                | ClientJsonRpcMessage::Error(_)
        );
        if status.is_success() && content_length == Some(0) && awaits_no_response {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if !status.is_success() {
            let is_auth_failure =
                matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            let body = if is_json && !is_auth_failure {
                match read_bounded(response, limits.max_json_response_size).await {
                    Ok(body) => {
                        let text = String::from_utf8_lossy(&body);
                        if let Ok(error @ ServerJsonRpcMessage::Error(_)) =
                            serde_json::from_str::<ServerJsonRpcMessage>(&text)
                        {
                            if let Some(response) =
                                discover_rejection(&message, session_was_attached, status, &text)
                            {
                                return Ok(response);
                            }
                            return Ok(StreamableHttpPostResponse::Json(error, new_session_id));
                        }
                        truncate(text.into_owned(), limits.max_error_response_size)
                    }
                    Err(error @ StreamableHttpError::ResponseBodyTooLarge { .. }) => {
                        return Err(status_error.map(StreamableHttpError::from).unwrap_or(error));
                    }
                    Err(_) => String::from("<failed to read response body>"),
                }
            } else {
                match read_prefix(response, limits.max_error_response_size).await {
                    Ok(prefix) => String::from_utf8_lossy(&prefix).into_owned(),
                    Err(_) => String::from("<failed to read response body>"),
                }
            };
            if let Some(response) =
                discover_rejection(&message, session_was_attached, status, &body)
            {
                return Ok(response);
            }
            if let Some(error) = status_error {
                return Err(error.into());
            }
            return Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                format!("HTTP {status}: {body}"),
            )));
        }
        match content_type.as_deref() {
            Some(ct) if media_type_is(ct.as_bytes(), EVENT_STREAM) => {
                let events = sse_events(response, limits.max_sse_event_size, session);
                Ok(StreamableHttpPostResponse::Sse(events, new_session_id))
            }
            Some(ct) if media_type_is(ct.as_bytes(), JSON) => {
                let body = read_bounded(response, limits.max_json_response_size).await?;
                match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                    Ok(parsed) => Ok(StreamableHttpPostResponse::Json(parsed, new_session_id)),
                    Err(error) if awaits_no_response => {
                        tracing::warn!(
                            "could not parse JSON response as ServerJsonRpcMessage, treating as accepted: {error}"
                        );
                        Ok(StreamableHttpPostResponse::Accepted)
                    }
                    Err(error) => Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                        format!(
                            "could not parse JSON response as ServerJsonRpcMessage: {error}: {}",
                            preview(&body)
                        ),
                    ))),
                }
            }
            _ if awaits_no_response => Ok(StreamableHttpPostResponse::Accepted),
            _ => Err(StreamableHttpError::UnexpectedContentType(content_type)),
        }
    }

    /// A `GET` SSE stream: one call, open as long as the stream.
    async fn stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Error> {
        let mut request = self.client.get(uri.as_ref()).header(ACCEPT, ACCEPT_BOTH);
        let session = session_id.as_ref().map(|id| self.sessions.hold(id));
        if let (Some(id), Some(session)) = (&session_id, &session) {
            request = request
                .header(SESSION_ID, id.as_ref())
                .with_extension(session.operation_id().clone());
        }
        if let Some(last_event_id) = last_event_id {
            request = request.header(LAST_EVENT_ID, last_event_id);
        }
        if let Some(token) = auth_header {
            request = request.bearer_auth(token);
        }
        request = with_custom_headers(request, custom_headers)?;
        let response = request.send().await.map_err(StreamableHttpError::Client)?;
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if let Some(error) = auth_error(status, response.headers())? {
            return Err(error);
        }
        if let Some(error) = http_status_error(status, response.headers()) {
            return Err(error.into());
        }
        let response = response
            .error_for_status()
            .map_err(|error| StreamableHttpError::Client(error.into()))?;
        match response.headers().get(CONTENT_TYPE) {
            Some(ct)
                if media_type_is(ct.as_bytes(), EVENT_STREAM)
                    || media_type_is(ct.as_bytes(), JSON) => {}
            Some(ct) => {
                return Err(StreamableHttpError::UnexpectedContentType(Some(
                    String::from_utf8_lossy(ct.as_bytes()).into_owned(),
                )));
            }
            None => return Err(StreamableHttpError::UnexpectedContentType(None)),
        }
        Ok(sse_events(response, max_sse_event_size, session))
    }
}

/// The route of a message: the JSON-RPC method of a request or a notification.
fn route(message: &ClientJsonRpcMessage, body: &[u8]) -> Option<Route> {
    match message {
        ClientJsonRpcMessage::Request(request) => Some(Route::new(request.request.method())),
        // Notifications have no method accessor; serde wrote it first, as `"method":"..."`.
        ClientJsonRpcMessage::Notification(_) => notification_method(body).map(Route::new),
        _ => None,
    }
}

/// The value of the first `"method":"..."` of a serialized notification, if it is a plain name.
fn notification_method(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"method\":\"";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = body.get(start..)?;
    let end = rest.iter().take(128).position(|&b| b == b'"')?;
    let method = std::str::from_utf8(&rest[..end]).ok()?;
    method
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.' | b'$'))
        .then_some(method)
}

/// Custom headers, refusing the ones the transport sets itself (as rmcp).
fn with_custom_headers(
    mut request: reqwest_middleware::RequestBuilder,
    custom_headers: HashMap<HeaderName, HeaderValue>,
) -> Result<reqwest_middleware::RequestBuilder, Error> {
    for (name, value) in custom_headers {
        let reserved = [ACCEPT.as_str(), SESSION_ID, LAST_EVENT_ID];
        if reserved
            .iter()
            .any(|r| name.as_str().eq_ignore_ascii_case(r))
            && !name.as_str().eq_ignore_ascii_case(PROTOCOL_VERSION)
        {
            return Err(StreamableHttpError::ReservedHeaderConflict(
                name.to_string(),
            ));
        }
        request = request.header(name, value);
    }
    Ok(request)
}

/// 401 and 403 with a `WWW-Authenticate` challenge (as rmcp).
fn auth_error(status: StatusCode, headers: &HeaderMap) -> Result<Option<Error>, Error> {
    let Some(header) = headers.get(WWW_AUTHENTICATE) else {
        return Ok(None);
    };
    let invalid = || {
        StreamableHttpError::UnexpectedServerResponse(Cow::from(
            "invalid www-authenticate header value",
        ))
    };
    Ok(match status {
        StatusCode::UNAUTHORIZED => {
            let header = header.to_str().map_err(|_| invalid())?.to_owned();
            Some(StreamableHttpError::AuthRequired(AuthRequiredError::new(
                header,
            )))
        }
        StatusCode::FORBIDDEN => {
            let header = header.to_str().map_err(|_| invalid())?;
            let scope = scope_of(header);
            Some(StreamableHttpError::InsufficientScope(
                InsufficientScopeError::new(header.to_owned(), scope),
            ))
        }
        _ => None,
    })
}

/// The `scope=` parameter of a `WWW-Authenticate` value, quoted or not.
fn scope_of(header: &str) -> Option<String> {
    let at = header.to_ascii_lowercase().find("scope=")? + "scope=".len();
    let value = header.get(at..)?;
    if let Some(quoted) = value.strip_prefix('"') {
        return quoted.find('"').map(|end| quoted[..end].to_owned());
    }
    let end = value
        .find(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .unwrap_or(value.len());
    (end > 0).then(|| value[..end].to_owned())
}

/// 429 and 5xx, with a short `Retry-After` (as rmcp).
fn http_status_error(status: StatusCode, headers: &HeaderMap) -> Option<HttpStatusError> {
    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
        return None;
    }
    let retry_after = headers
        .get(RETRY_AFTER)
        .filter(|value| value.as_bytes().len() <= MAX_RETRY_AFTER_BYTES)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Some(HttpStatusError::new(status.as_u16(), retry_after))
}

/// A `server/discover` probe rejected by a server without a session: the rejection as a
/// JSON-RPC error correlated with the probe, so rmcp can fall back to `initialize` (as rmcp).
fn discover_rejection(
    message: &ClientJsonRpcMessage,
    session_was_attached: bool,
    status: StatusCode,
    body: &str,
) -> Option<StreamableHttpPostResponse> {
    if session_was_attached
        || !status.is_client_error()
        || matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
    {
        return None;
    }
    let ClientJsonRpcMessage::Request(request) = message else {
        return None;
    };
    if !matches!(request.request, ClientRequest::DiscoverRequest(_)) {
        return None;
    }
    let error = match serde_json::from_str::<ServerJsonRpcMessage>(body) {
        Ok(ServerJsonRpcMessage::Error(error)) => error.error,
        _ => ErrorData::invalid_request(
            format!("server/discover rejected with HTTP {status}: {body}"),
            None,
        ),
    };
    Some(StreamableHttpPostResponse::Json(
        ServerJsonRpcMessage::error(error, Some(request.id.clone())),
        None,
    ))
}

/// The whole body, refused past `max` bytes (declared or read).
async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, Error> {
    if response
        .content_length()
        .is_some_and(|length| length > max as u64)
    {
        return Err(StreamableHttpError::ResponseBodyTooLarge { max_size: max });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| StreamableHttpError::Client(error.into()))?
    {
        if chunk.len() > max - body.len() {
            return Err(StreamableHttpError::ResponseBodyTooLarge { max_size: max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most `max` bytes of the body, for a diagnostic; the rest is not read.
async fn read_prefix(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    while body.len() < max {
        let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| StreamableHttpError::Client(error.into()))?
        else {
            break;
        };
        let count = chunk.len().min(max - body.len());
        body.extend_from_slice(&chunk[..count]);
    }
    Ok(body)
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while end > 0 && !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn preview(body: &[u8]) -> String {
    if body.is_empty() {
        return "<empty>".to_owned();
    }
    truncate(String::from_utf8_lossy(body).into_owned(), BODY_PREVIEW)
}

/// The media type of a `Content-Type` value, without parameters, case-insensitive.
fn media_type_is(value: &[u8], expected: &str) -> bool {
    value
        .split(|byte| *byte == b';')
        .next()
        .and_then(|essence| std::str::from_utf8(essence).ok())
        .is_some_and(|essence| {
            essence
                .trim_matches([' ', '\t'])
                .eq_ignore_ascii_case(expected)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_ignore_case_and_parameters() {
        assert!(media_type_is(b"Application/JSON; charset=utf-8", JSON));
        assert!(media_type_is(b"text/event-stream", EVENT_STREAM));
        assert!(!media_type_is(b"application/jsonl", JSON));
    }

    #[test]
    fn notification_methods_are_plain_names_only() {
        let body = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        assert_eq!(notification_method(body), Some("notifications/initialized"));
        assert_eq!(notification_method(br#"{"method":"a b"}"#), None);
        assert_eq!(notification_method(b"{}"), None);
    }

    #[test]
    fn scopes_quoted_or_not() {
        assert_eq!(
            scope_of(r#"Bearer error="insufficient_scope", scope="a b""#).as_deref(),
            Some("a b")
        );
        assert_eq!(scope_of("Bearer scope=read, x").as_deref(), Some("read"));
        assert_eq!(scope_of("Bearer"), None);
    }
}
