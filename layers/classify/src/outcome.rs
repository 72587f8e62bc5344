//! The result of classifying a call: [`Outcome`] and its [`Reason`].
//!
//! Plain data, no I/O: every adapter (tower-http, tower retry, the circuit breaker, the span layer)
//! reads the same values. Nothing here may allocate or look at a clock.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// How a call went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The call did what was asked (1xx, 2xx, 3xx).
    Success,
    /// The call failed in a way that may succeed if tried again.
    Retryable {
        /// Why it failed.
        reason: Reason,
        /// How long the server asked us to wait (Retry-After), capped.
        retry_after: Option<Duration>,
    },
    /// The call failed and trying again will not help.
    Terminal {
        /// Why it failed.
        reason: Reason,
    },
}

impl Outcome {
    /// `"success"`, `"retryable"` or `"terminal"`: the `kasal.outcome` span field.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retryable { .. } => "retryable",
            Outcome::Terminal { .. } => "terminal",
        }
    }

    /// The failure reason, if the call failed.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Outcome::Success => None,
            Outcome::Retryable { reason, .. } | Outcome::Terminal { reason } => Some(reason),
        }
    }

    /// The `error.type` span field: the status code as text or a short error name.
    pub fn error_type(&self) -> Option<&str> {
        self.reason().map(Reason::as_str)
    }

    /// `true` for [`Outcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// `true` for [`Outcome::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Retryable { .. })
    }

    /// `true` for [`Outcome::Terminal`].
    pub fn is_terminal(&self) -> bool {
        matches!(self, Outcome::Terminal { .. })
    }

    /// The delay the server asked for (Retry-After), if the call is retryable and it asked.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    /// `success`, `retryable: 503`, `terminal: tls`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            None => f.write_str(self.as_str()),
            Some(reason) => write!(f, "{}: {}", self.as_str(), reason.as_str()),
        }
    }
}

/// Why a call failed. `as_str` is the OpenTelemetry `error.type`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The server answered with this (non-success) status.
    Status(StatusCode),
    /// The call or a part of it timed out: `"timeout"`.
    Timeout,
    /// The connection could not be established (refused, unreachable): `"connect"`.
    Connect,
    /// The connection was reset or aborted mid-call: `"connection_reset"`.
    ConnectionReset,
    /// The peer closed before a whole message arrived: `"incomplete_message"`.
    IncompleteMessage,
    /// Name resolution failed: `"dns"`.
    Dns,
    /// TLS handshake or certificate failure: `"tls"`.
    Tls,
    /// The URL could not be used: `"invalid_url"`.
    InvalidUrl,
    /// The request body could not be built or sent: `"body"`.
    Body,
    /// A circuit breaker rejected the call: `"circuit_open"`.
    CircuitOpen,
    /// Too many redirects, or a redirect loop: `"redirect"`.
    Redirect,
    /// The server answered, but the protocol carried over HTTP reports a failure, named by it:
    /// an MCP tool result with `isError` (`"tool_error"`), a JSON-RPC error (its code,
    /// `"-32602"`), as the OpenTelemetry MCP conventions name them.
    Application(std::borrow::Cow<'static, str>),
    /// Anything else: `"other"`.
    Other,
}

impl Reason {
    /// The OpenTelemetry `error.type`: `"503"`, `"timeout"`, `"connect"`, ...
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Status(status) => status.as_str(),
            Reason::Timeout => "timeout",
            Reason::Connect => "connect",
            Reason::ConnectionReset => "connection_reset",
            Reason::IncompleteMessage => "incomplete_message",
            Reason::Dns => "dns",
            Reason::Tls => "tls",
            Reason::InvalidUrl => "invalid_url",
            Reason::Body => "body",
            Reason::CircuitOpen => "circuit_open",
            Reason::Redirect => "redirect",
            Reason::Application(name) => name,
            Reason::Other => "other",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
