//! [`RecordInvalidUrls`]: records a request whose URL does not parse, which reqwest-middleware
//! fails in `RequestBuilder::send` before any middleware runs.

use std::fmt::{self, Write as _};

use http::{Extensions, HeaderMap, Method, Uri};
use kasal_classify::{Outcome, Reason};
use kasal_trace::{CallSpan, Direction};
use kasal_user_agent::Product;
use reqwest_middleware::{RequestBuilder, RequestInitialiser};

use crate::Telemetry;

/// A reqwest-middleware `RequestInitialiser` that records, once, a call whose URL cannot be
/// built (`client.get("http://[::1")`): outcome terminal, `error.type` `invalid_url`, method
/// `_OTHER` (reqwest keeps neither the method nor the URL of such a builder). The builder is
/// returned unchanged, so `send` still fails with reqwest's own builder error, before any
/// middleware runs; the call is recorded when the request is created, since nothing later
/// sees it.
///
/// [`builder_with`](super::builder_with) (and so [`client`](super::client)) adds it; add it
/// yourself with `ClientBuilder::with_init` if you compose the stack by hand.
#[derive(Clone, Debug)]
pub struct RecordInvalidUrls {
    product: Product,
    telemetry: Telemetry,
}

impl RecordInvalidUrls {
    /// Records into `telemetry`, attributed to `product`.
    pub fn new(product: Product, telemetry: Telemetry) -> Self {
        RecordInvalidUrls { product, telemetry }
    }
}

impl RequestInitialiser for RecordInvalidUrls {
    fn init(&self, request: RequestBuilder) -> RequestBuilder {
        if builder_failed(&request) == Some(true) {
            let method = Method::from_bytes(b"_OTHER").unwrap_or_default();
            let mut call = CallSpan::start(
                &self.product,
                Direction::Client,
                &method,
                &Uri::default(),
                &HeaderMap::new(),
                &Extensions::new(),
            );
            call.on_error(
                &UnparsableUrl,
                Outcome::Terminal {
                    reason: Reason::InvalidUrl,
                },
            );
            self.telemetry.record(call.finish());
        }
        request
    }
}

/// The error recorded: the URL itself is never kept (it may carry a token).
#[derive(Debug)]
struct UnparsableUrl;

impl fmt::Display for UnparsableUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("builder error: the URL does not parse")
    }
}

impl std::error::Error for UnparsableUrl {}

/// Whether `request` holds reqwest's builder error rather than a request, read from the start
/// of its `Debug` output (`RequestBuilder { inner: RequestBuilder { error: .. }` against
/// `.. { method: ..`), which is cut off as soon as it tells: no request is cloned or built.
/// `None` if the output does not look as expected (a test guards the format).
///
/// Right after `ClientWithMiddleware::request`, the only error a builder can hold is its URL's:
/// `reqwest::Client::request` fails on nothing else.
pub(super) fn builder_failed(request: &RequestBuilder) -> Option<bool> {
    let mut probe = Probe {
        seen: 0,
        answer: None,
    };
    let _ = write!(probe, "{request:?}");
    probe.answer
}

/// Reads the field names of the `Debug` output and stops it at the inner builder's first field.
struct Probe {
    /// Field-like pieces seen: `inner`, then the inner builder's first field.
    seen: u8,
    answer: Option<bool>,
}

impl fmt::Write for Probe {
    fn write_str(&mut self, piece: &str) -> fmt::Result {
        if self.answer.is_some() {
            return Err(fmt::Error);
        }
        match piece {
            "RequestBuilder" | " { " | ": " => Ok(()),
            "inner" if self.seen == 0 => {
                self.seen = 1;
                Ok(())
            }
            "error" | "method" if self.seen == 1 => {
                self.answer = Some(piece == "error");
                Err(fmt::Error)
            }
            // Anything else: not the format this reads; stop, undecided.
            _ => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails loudly if reqwest or reqwest-middleware change the `Debug` output read above.
    #[test]
    fn the_debug_output_tells_a_failed_builder_from_a_request() {
        let client = reqwest_middleware::ClientWithMiddleware::from(
            super::super::http_client().build().unwrap(),
        );
        assert_eq!(builder_failed(&client.get("http://[::1")), Some(true));
        assert_eq!(builder_failed(&client.get("not a url")), Some(true));
        assert_eq!(
            builder_failed(&client.post("http://127.0.0.1:1/a?b=c")),
            Some(false)
        );
        assert_eq!(
            builder_failed(&client.get("http://127.0.0.1:1/").header("x-a", "b")),
            Some(false)
        );
    }
}
