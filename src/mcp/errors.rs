//! [`JsonRpcErrors`]: finds a failed JSON-RPC exchange in an MCP response body as it passes,
//! so the call is recorded as failed, with the error's `error.type`.

use std::fmt;

use bytes::Bytes;
use http::Method;
use kasal_classify::{Outcome, Reason};
use kasal_trace::{CallSpan, OnBodyChunk};
use serde::Deserialize;

/// Bytes of one JSON document or SSE event kept for the check; a larger message is not read
/// (the call keeps the outcome of its HTTP status).
const MAX_MESSAGE: usize = 64 * 1024;

/// The body hook of the MCP client's [`TelemetryMiddleware`](crate::reqwest::TelemetryMiddleware).
///
/// An MCP server answers a failed request with HTTP 200 and the failure in the body: a
/// JSON-RPC error (`{"error": {"code": -32602, ...}}`), or a `tools/call` result with
/// `"isError": true`. This hook reads the JSON-RPC messages of a `POST`'s response (a JSON body,
/// or the events of an SSE body) as they pass, each up to 64 KiB, and at the end of the body
/// records the first failure on the call: outcome terminal, `error.type` the JSON-RPC error code
/// (`"-32602"`) or `"tool_error"`, as the OpenTelemetry MCP conventions name them. The error
/// message kept is the JSON-RPC error's message (redacted like every error), never tool output.
///
/// A call whose HTTP status already failed keeps that failure.
#[derive(Clone, Debug, Default)]
pub struct JsonRpcErrors {
    scan: Scan,
    /// The failure found, if any; then nothing more is read.
    found: Option<Failure>,
}

#[derive(Clone, Debug, Default)]
enum Scan {
    /// Nothing but whitespace seen yet.
    #[default]
    Start,
    /// A JSON body: its bytes so far (up to `MAX_MESSAGE`).
    Json(Vec<u8>),
    /// An SSE body: the current line and the current event's data.
    Sse {
        line: Vec<u8>,
        data: Vec<u8>,
        skip: bool,
    },
    /// Too large or not JSON-RPC: ignored.
    Off,
}

impl OnBodyChunk<Bytes> for JsonRpcErrors {
    fn on_body_chunk(&mut self, chunk: &Bytes, call: &mut CallSpan) {
        if self.found.is_some() || call.record().method != Method::POST {
            return;
        }
        let mut chunk: &[u8] = chunk;
        if let Scan::Start = self.scan {
            let start = chunk.iter().position(|b| !b.is_ascii_whitespace());
            let Some(start) = start else { return };
            chunk = &chunk[start..];
            self.scan = match chunk[0] {
                b'{' | b'[' => Scan::Json(Vec::new()),
                _ => Scan::Sse {
                    line: Vec::new(),
                    data: Vec::new(),
                    skip: false,
                },
            };
        }
        match &mut self.scan {
            Scan::Json(body) => {
                if body.len() + chunk.len() > MAX_MESSAGE {
                    self.scan = Scan::Off;
                } else {
                    body.extend_from_slice(chunk);
                }
            }
            Scan::Sse { line, data, skip } => {
                for &byte in chunk {
                    if byte != b'\n' {
                        if line.len() < MAX_MESSAGE {
                            line.push(byte);
                        } else {
                            *skip = true;
                        }
                        continue;
                    }
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.is_empty() {
                        // End of an event.
                        if !*skip {
                            self.found = failure(data);
                        }
                        data.clear();
                        *skip = false;
                        if self.found.is_some() {
                            return;
                        }
                    } else if let Some(value) = line.strip_prefix(b"data:") {
                        let value = value.strip_prefix(b" ").unwrap_or(value);
                        if data.len() + value.len() + 1 > MAX_MESSAGE {
                            *skip = true;
                        } else if !*skip {
                            if !data.is_empty() {
                                data.push(b'\n');
                            }
                            data.extend_from_slice(value);
                        }
                    }
                    line.clear();
                }
            }
            Scan::Start | Scan::Off => {}
        }
    }

    fn on_finish(&mut self, call: &mut CallSpan) {
        if self.found.is_none() {
            if let Scan::Json(body) = &self.scan {
                self.found = failure(body);
            }
        }
        let Some(found) = self.found.take() else {
            return;
        };
        if !call.record().outcome.is_success() {
            return;
        }
        let reason = Reason::Application(found.error_type());
        call.on_error(&found, Outcome::Terminal { reason });
    }
}

/// A JSON-RPC message, read only as far as a failure shows.
#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    result: Option<ResultObject>,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct ResultObject {
    #[serde(default, rename = "isError")]
    is_error: Option<bool>,
}

/// A failure the body reported.
#[derive(Clone, Debug)]
enum Failure {
    /// A JSON-RPC error response.
    Rpc { code: i64, message: String },
    /// A `tools/call` result with `isError: true`.
    Tool,
}

impl Failure {
    fn error_type(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Failure::Rpc { code, .. } => code.to_string().into(),
            Failure::Tool => "tool_error".into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Rpc { code, message } => write!(f, "JSON-RPC error {code}: {message}"),
            Failure::Tool => f.write_str("the tool reported an error (isError)"),
        }
    }
}

impl std::error::Error for Failure {}

/// The failure in one JSON-RPC message (or the first of a batch), if any.
fn failure(json: &[u8]) -> Option<Failure> {
    if json.is_empty() {
        return None;
    }
    let from = |message: Message| match (message.error, message.result) {
        (Some(error), _) => Some(Failure::Rpc {
            code: error.code,
            message: error.message,
        }),
        (
            None,
            Some(ResultObject {
                is_error: Some(true),
            }),
        ) => Some(Failure::Tool),
        _ => None,
    };
    match json.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice::<Vec<Message>>(json)
            .ok()?
            .into_iter()
            .find_map(from),
        _ => serde_json::from_slice::<Message>(json).ok().and_then(from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rpc_errors_and_tool_errors() {
        let rpc = failure(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}"#);
        assert!(matches!(rpc, Some(Failure::Rpc { code: -32602, .. })));
        let tool = failure(br#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"isError":true}}"#);
        assert!(matches!(tool, Some(Failure::Tool)));
        assert!(failure(br#"{"jsonrpc":"2.0","id":3,"result":{"isError":false}}"#).is_none());
        assert!(
            failure(br#"{"jsonrpc":"2.0","id":3,"result":{"text":"\"isError\":true"}}"#).is_none()
        );
        assert!(failure(b"not json").is_none());
        assert_eq!(Failure::Tool.error_type(), "tool_error");
    }
}
