//! reqwest's errors, read by their kind (feature `reqwest`).
//!
//! reqwest keeps what went wrong on the outer `reqwest::Error` (`is_builder`, `is_redirect`,
//! `is_timeout`, `is_connect`), not only in its sources, so the classifier asks it before it
//! walks further down the chain, where a deeper, more specific link still wins (a refused
//! connection under a connect error, a TLS failure, an incomplete message under a body error).

use crate::outcome::{Outcome, Reason};

/// What a `reqwest::Error` says by its kind alone, if anything.
///
/// | kind | outcome |
/// |---|---|
/// | builder (at send time: a URL reqwest cannot send, e.g. a scheme other than http/https) | terminal `invalid_url` |
/// | redirect (too many redirects, a loop) | terminal `redirect` |
/// | timeout (connect, whole request, or reading the body) | retryable `timeout` |
/// | connect | retryable `connect` |
/// | request, body, decode | the source chain decides (reset, incomplete message, ...), else terminal `other` |
pub(crate) fn classify_reqwest(error: &reqwest::Error) -> Option<Outcome> {
    if error.is_builder() {
        return Some(Outcome::Terminal {
            reason: Reason::InvalidUrl,
        });
    }
    if error.is_redirect() {
        return Some(Outcome::Terminal {
            reason: Reason::Redirect,
        });
    }
    if error.is_timeout() {
        return Some(Outcome::Retryable {
            reason: Reason::Timeout,
            retry_after: None,
        });
    }
    if error.is_connect() {
        return Some(Outcome::Retryable {
            reason: Reason::Connect,
            retry_after: None,
        });
    }
    None
}
