//! The [`Classify`] trait and the [`DefaultClassifier`] that implements the classification table
//! shared by every layer (see [`DefaultClassifier`]).
//!
//! Classification is sans-IO: a status and headers, or an error value, in; an [`Outcome`] out.
//! Every adapter (tower-http, the retry policy, the circuit breaker) calls these functions, so they
//! all agree. A classifier must never panic, block or allocate on the response path; a malformed
//! `Retry-After` is ignored and counted, never reported to the application.

use std::error::Error;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};

use crate::circuit_breaker::CircuitOpen;
use crate::outcome::{Outcome, Reason};
use crate::retry_after::parse_with;

/// Decides whether a call succeeded, may be retried, or failed for good.
///
/// Implementations are cheap to clone and shared between tasks: adapters clone them per request.
pub trait Classify: Clone + Send + Sync + 'static {
    /// Classifies a response from its status and headers.
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome;

    /// Classifies an error returned instead of a response, walking its `source()` chain.
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome;
}

/// The longest `Retry-After` the [`DefaultClassifier`] reports unless told otherwise.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Errors nest at most this deep before the walk gives up (guards against cyclic `source()`).
const MAX_CHAIN_DEPTH: usize = 32;

/// The classification table every layer in this workspace shares (the one the Databricks drivers
/// use): transient failures are retryable, everything else that is not a success is terminal.
///
/// | input | outcome |
/// |---|---|
/// | 1xx, 2xx, 3xx | `Success` |
/// | 408, 429, 500, 502, 503, 504 | `Retryable`, `retry_after` from `Retry-After` (capped) |
/// | every other 4xx and 5xx (incl. 501, 505) | `Terminal` |
/// | timeout, connect refused/reset/aborted, incomplete message, DNS temporary failure | `Retryable` |
/// | TLS, invalid URL, body, circuit open, other DNS failures, anything unknown | `Terminal` |
///
/// Clones share the counter of malformed `Retry-After` values ([`malformed_retry_after`]).
///
/// [`malformed_retry_after`]: DefaultClassifier::malformed_retry_after
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderMap, HeaderValue, StatusCode};
/// use kasal_classify::{Classify, DefaultClassifier, Outcome, Reason};
///
/// let classifier = DefaultClassifier::new();
/// assert_eq!(classifier.classify_response(StatusCode::OK, &HeaderMap::new()), Outcome::Success);
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", HeaderValue::from_static("5"));
/// assert_eq!(
///     classifier.classify_response(StatusCode::TOO_MANY_REQUESTS, &headers),
///     Outcome::Retryable {
///         reason: Reason::Status(StatusCode::TOO_MANY_REQUESTS),
///         retry_after: Some(Duration::from_secs(5)),
///     },
/// );
/// ```
#[derive(Clone, Debug)]
pub struct DefaultClassifier {
    max_retry_after: Duration,
    malformed: Arc<AtomicU64>,
}

impl Default for DefaultClassifier {
    fn default() -> Self {
        DefaultClassifier::new()
    }
}

impl DefaultClassifier {
    /// The classifier with a 30 s cap on `Retry-After`.
    pub fn new() -> Self {
        DefaultClassifier {
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            malformed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Caps the `retry_after` reported for a response (default 30 s).
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// How many malformed `Retry-After` values this classifier and its clones have ignored.
    pub fn malformed_retry_after(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// [`Classify::classify_response`] with an explicit clock, for HTTP-date `Retry-After` values.
    pub fn classify_response_at(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Outcome {
        self.classify_with(status, headers, || now)
    }

    #[inline]
    fn classify_with(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        now: impl FnOnce() -> SystemTime,
    ) -> Outcome {
        if status.as_u16() < 400 {
            return Outcome::Success;
        }
        self.classify_failure(status, headers, now)
    }

    /// The cold half of the table, kept out of line so the success path inlines to a compare.
    #[inline(never)]
    fn classify_failure(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        now: impl FnOnce() -> SystemTime,
    ) -> Outcome {
        match status.as_u16() {
            408 | 429 | 500 | 502 | 503 | 504 => Outcome::Retryable {
                reason: Reason::Status(status),
                retry_after: self.retry_after(headers, now),
            },
            _ => Outcome::Terminal {
                reason: Reason::Status(status),
            },
        }
    }

    fn retry_after(
        &self,
        headers: &HeaderMap,
        now: impl FnOnce() -> SystemTime,
    ) -> Option<Duration> {
        // An empty map still hashes the name on `get`; most error responses carry no headers
        // worth reading, so skip the lookup outright.
        if headers.is_empty() {
            return None;
        }
        let value = headers.get(RETRY_AFTER)?;
        match parse_with(value.as_bytes(), now) {
            Ok(delay) => Some(delay.min(self.max_retry_after)),
            Err(_) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Classify for DefaultClassifier {
    #[inline]
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        self.classify_with(status, headers, SystemTime::now)
    }

    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        classify_error_chain(error)
    }
}

fn retryable(reason: Reason) -> Outcome {
    Outcome::Retryable {
        reason,
        retry_after: None,
    }
}

fn terminal(reason: Reason) -> Outcome {
    Outcome::Terminal { reason }
}

/// Walks `error` and its sources; the deepest recognised link wins, being the most specific
/// (a TLS failure under hyper-util's "connect" error is `tls`, not `connect`).
fn classify_error_chain(error: &(dyn Error + 'static)) -> Outcome {
    let mut best = None;
    let mut next = Some(error);
    for _ in 0..MAX_CHAIN_DEPTH {
        let Some(err) = next else { break };
        best = classify_link(err).or(best);
        // `io::Error::source()` skips its own payload; step into it instead.
        next = match err.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
            None => err.source(),
        };
    }
    best.unwrap_or(terminal(Reason::Other))
}

/// What one link of the chain says by itself, if anything.
fn classify_link(err: &(dyn Error + 'static)) -> Option<Outcome> {
    if err.is::<CircuitOpen>() {
        return Some(terminal(Reason::CircuitOpen));
    }
    if err.is::<http::uri::InvalidUri>() || err.is::<http::uri::InvalidUriParts>() {
        return Some(terminal(Reason::InvalidUrl));
    }
    if err.is::<tokio::time::error::Elapsed>() || err.is::<tower::timeout::error::Elapsed>() {
        return Some(retryable(Reason::Timeout));
    }
    if let Some(io) = err.downcast_ref::<io::Error>() {
        return classify_io(io);
    }
    #[cfg(feature = "reqwest")]
    if let Some(error) = err.downcast_ref::<reqwest::Error>() {
        if let Some(outcome) = crate::reqwest::classify_reqwest(error) {
            return Some(outcome);
        }
    }
    if let Some(hyper) = err.downcast_ref::<hyper::Error>() {
        return classify_hyper(hyper);
    }
    if let Some(client) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
        if client.is_connect() {
            return Some(retryable(Reason::Connect));
        }
    }
    classify_text(err)
}

fn classify_io(io: &io::Error) -> Option<Outcome> {
    use io::ErrorKind as K;
    Some(match io.kind() {
        K::TimedOut => retryable(Reason::Timeout),
        K::ConnectionRefused
        | K::NotConnected
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::AddrNotAvailable => retryable(Reason::Connect),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            retryable(Reason::ConnectionReset)
        }
        K::UnexpectedEof => retryable(Reason::IncompleteMessage),
        // A payload is classified as the next link; a bare message is read here.
        _ if io.get_ref().is_some() => return None,
        _ => return classify_text(io),
    })
}

fn classify_hyper(err: &hyper::Error) -> Option<Outcome> {
    Some(if err.is_timeout() {
        retryable(Reason::Timeout)
    } else if err.is_incomplete_message() {
        retryable(Reason::IncompleteMessage)
    } else if err.is_canceled() || err.is_closed() {
        // The connection went away before the request was written: safe to send again.
        retryable(Reason::ConnectionReset)
    } else if err.is_body_write_aborted() || err.is_user() {
        terminal(Reason::Body)
    } else if err.is_parse() {
        terminal(Reason::Other)
    } else {
        return None;
    })
}

/// Last resort for errors we cannot name by type (resolver, TLS stacks, wrapped messages).
fn classify_text(err: &(dyn Error + 'static)) -> Option<Outcome> {
    let mut text = err.to_string();
    text.make_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    Some(
        if has(&[
            "temporary failure in name resolution",
            "eai_again",
            "temporary error during hostname resolution",
        ]) {
            retryable(Reason::Dns)
        } else if has(&[
            "dns error",
            "failed to lookup address",
            "name or service not known",
            "nodename nor servname",
            "no such host",
            "name resolution",
        ]) {
            terminal(Reason::Dns)
        } else if has(&["certificate", "tls", "ssl"]) {
            terminal(Reason::Tls)
        } else if has(&[
            "invalid url",
            "invalid uri",
            "userabsoluteurirequired",
            "scheme is missing",
        ]) {
            terminal(Reason::InvalidUrl)
        } else if has(&["timed out", "deadline has elapsed"]) {
            retryable(Reason::Timeout)
        } else if has(&["connection refused"]) {
            retryable(Reason::Connect)
        } else if has(&["connection reset", "connection aborted", "broken pipe"]) {
            retryable(Reason::ConnectionReset)
        } else {
            return None;
        },
    )
}

/// Gives the classifier a `&dyn Error` for a service's error type.
///
/// `tower::BoxError` (`Box<dyn Error + Send + Sync>`) does not implement `Error`, so the retry
/// policy cannot bound on `E: Error`; it bounds on this trait instead, implemented for the error
/// types of the stacks we sit on. Implement it for your own error type in one line:
///
/// ```
/// # use std::error::Error;
/// #[derive(Debug)]
/// struct MyError;
/// # impl std::fmt::Display for MyError {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("mine") }
/// # }
/// # impl Error for MyError {}
/// impl kasal_classify::AsError for MyError {
///     fn as_error(&self) -> &(dyn Error + 'static) { self }
/// }
/// ```
pub trait AsError {
    /// This error as a trait object whose `source()` chain can be walked.
    fn as_error(&self) -> &(dyn Error + 'static);
}

macro_rules! as_error_for {
    (@one $ty:ty) => {
        impl AsError for $ty {
            fn as_error(&self) -> &(dyn Error + 'static) {
                self
            }
        }
    };
    ($($ty:ty),* $(,)?) => {
        $(
            impl AsError for $ty {
                fn as_error(&self) -> &(dyn Error + 'static) {
                    self
                }
            }
        )*

        /// Reaches a `&dyn Error` inside a value known only as `Any` (tower-http hands us
        /// `&E where E: Display`), for every type [`AsError`] is implemented for here.
        #[cfg_attr(
            not(any(feature = "tower-http-06", feature = "tower-http-07")),
            allow(dead_code)
        )]
        pub(crate) fn downcast_error(any: &dyn std::any::Any) -> Option<&(dyn Error + 'static)> {
            if let Some(boxed) = any.downcast_ref::<tower::BoxError>() {
                return Some(boxed.as_error());
            }
            if let Some(boxed) = any.downcast_ref::<Box<dyn Error + Send>>() {
                return Some(boxed.as_error());
            }
            if let Some(boxed) = any.downcast_ref::<Box<dyn Error>>() {
                return Some(boxed.as_error());
            }
            $(
                if let Some(err) = any.downcast_ref::<$ty>() {
                    return Some(err);
                }
            )*
            None
        }
    };
}

as_error_for!(
    hyper_util::client::legacy::Error,
    hyper::Error,
    io::Error,
    http::Error,
    http::uri::InvalidUri,
    tokio::time::error::Elapsed,
    tower::timeout::error::Elapsed,
    CircuitOpen,
    std::convert::Infallible,
);

#[cfg(feature = "axum")]
as_error_for!(@one axum::Error);
#[cfg(feature = "reqwest")]
as_error_for!(@one reqwest::Error);

impl AsError for tower::BoxError {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for Box<dyn Error + Send> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for Box<dyn Error> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::fmt;

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    fn classify(code: u16) -> Outcome {
        DefaultClassifier::new().classify_response(status(code), &HeaderMap::new())
    }

    fn with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn informational_success_and_redirects_are_success() {
        for code in [
            100, 101, 103, 200, 201, 202, 204, 206, 299, 300, 301, 302, 304, 307, 308,
        ] {
            assert_eq!(classify(code), Outcome::Success, "{code}");
        }
    }

    #[test]
    fn retryable_statuses() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                classify(code),
                Outcome::Retryable {
                    reason: Reason::Status(status(code)),
                    retry_after: None
                },
                "{code}"
            );
        }
    }

    #[test]
    fn terminal_statuses() {
        for code in [
            400, 401, 402, 403, 404, 405, 406, 409, 410, 411, 412, 413, 414, 415, 418, 422, 425,
            426, 428, 431, 451, 499, 501, 505, 506, 507, 508, 510, 511, 599,
        ] {
            assert_eq!(
                classify(code),
                Outcome::Terminal {
                    reason: Reason::Status(status(code))
                },
                "{code}"
            );
        }
        assert_eq!(classify(404).error_type(), Some("404"));
    }

    #[test]
    fn retry_after_delta_seconds_and_date() {
        let classifier = DefaultClassifier::new();
        let got = classifier.classify_response(status(429), &with_retry_after("5"));
        assert_eq!(got.retry_after(), Some(Duration::from_secs(5)));

        // 1445412480 = Wed, 21 Oct 2015 07:28:00 GMT
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480 - 12);
        let headers = with_retry_after("Wed, 21 Oct 2015 07:28:00 GMT");
        let got = classifier.classify_response_at(status(503), &headers, now);
        assert_eq!(got.retry_after(), Some(Duration::from_secs(12)));
        assert_eq!(classifier.malformed_retry_after(), 0);
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480 + 60);
        let got = DefaultClassifier::new().classify_response_at(
            status(503),
            &with_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            now,
        );
        assert_eq!(got.retry_after(), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_is_capped() {
        let classifier = DefaultClassifier::new();
        let got = classifier.classify_response(status(503), &with_retry_after("3600"));
        assert_eq!(got.retry_after(), Some(Duration::from_secs(30)));

        let classifier = classifier.max_retry_after(Duration::from_secs(2));
        let got = classifier.classify_response(status(503), &with_retry_after("3600"));
        assert_eq!(got.retry_after(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn malformed_retry_after_is_ignored_and_counted_across_clones() {
        let classifier = DefaultClassifier::new();
        let clone = classifier.clone();
        for bad in ["soon", "-5", "1.5", "Wed, 99 Oct 2015 07:28:00 GMT"] {
            let got = clone.classify_response(status(503), &with_retry_after(bad));
            assert_eq!(
                got,
                Outcome::Retryable {
                    reason: Reason::Status(status(503)),
                    retry_after: None
                }
            );
        }
        assert_eq!(classifier.malformed_retry_after(), 4);
        // Retry-After on a non-retryable status is not even read.
        classifier.classify_response(status(200), &with_retry_after("soon"));
        classifier.classify_response(status(404), &with_retry_after("soon"));
        assert_eq!(classifier.malformed_retry_after(), 4);
    }

    fn classify_err(err: &(dyn Error + 'static)) -> Outcome {
        DefaultClassifier::new().classify_error(err)
    }

    #[test]
    fn io_error_kinds() {
        use io::ErrorKind as K;
        let cases = [
            (K::TimedOut, retryable(Reason::Timeout)),
            (K::ConnectionRefused, retryable(Reason::Connect)),
            (K::ConnectionReset, retryable(Reason::ConnectionReset)),
            (K::ConnectionAborted, retryable(Reason::ConnectionReset)),
            (K::BrokenPipe, retryable(Reason::ConnectionReset)),
            (K::UnexpectedEof, retryable(Reason::IncompleteMessage)),
            (K::PermissionDenied, terminal(Reason::Other)),
            (K::InvalidData, terminal(Reason::Other)),
        ];
        for (kind, expected) in cases {
            assert_eq!(classify_err(&io::Error::from(kind)), expected, "{kind:?}");
        }
    }

    /// A wrapper that adds context, like `anyhow` or an application error would.
    #[derive(Debug)]
    struct Wrapped(Box<dyn Error + Send + Sync>);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("calling the workspace")
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn nested_wrappers_are_walked() {
        let inner = io::Error::new(io::ErrorKind::ConnectionReset, "peer reset");
        let err = Wrapped(Box::new(Wrapped(Box::new(inner))));
        assert_eq!(classify_err(&err), retryable(Reason::ConnectionReset));

        // io::Error carrying another io::Error as its payload.
        let err = io::Error::other(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(classify_err(&err), retryable(Reason::Timeout));
    }

    #[test]
    fn timeouts_from_tokio_and_tower() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let elapsed = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>()).await
            })
            .unwrap_err();
        assert_eq!(classify_err(&elapsed), retryable(Reason::Timeout));
        assert_eq!(
            classify_err(&Wrapped(Box::new(elapsed))),
            retryable(Reason::Timeout)
        );

        let boxed: tower::BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(classify_err(boxed.as_error()), retryable(Reason::Timeout));
    }

    #[test]
    fn circuit_open_is_terminal() {
        let err = CircuitOpen::new("example.com");
        assert_eq!(classify_err(&err), terminal(Reason::CircuitOpen));
        assert_eq!(
            classify_err(&Wrapped(Box::new(err))),
            terminal(Reason::CircuitOpen)
        );
    }

    #[test]
    fn invalid_uri_is_terminal() {
        let err = "http://exa mple.com".parse::<http::Uri>().unwrap_err();
        assert_eq!(classify_err(&err), terminal(Reason::InvalidUrl));
        let err = io::Error::other("invalid URL, scheme is missing");
        assert_eq!(classify_err(&err), terminal(Reason::InvalidUrl));
    }

    #[derive(Debug)]
    struct Message(&'static str);

    impl fmt::Display for Message {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Message {}

    #[test]
    fn dns_and_tls_by_message() {
        // The shape hyper-util's resolver produces: "dns error" over the resolver's io::Error.
        let temporary = Wrapped(Box::new(io::Error::other(
            "failed to lookup address information: Temporary failure in name resolution",
        )));
        assert_eq!(classify_err(&temporary), retryable(Reason::Dns));

        let unknown = Wrapped(Box::new(io::Error::other(
            "failed to lookup address information: Name or service not known",
        )));
        assert_eq!(classify_err(&unknown), terminal(Reason::Dns));

        let tls = Wrapped(Box::new(io::Error::other(Message(
            "invalid peer certificate: UnknownIssuer",
        ))));
        assert_eq!(classify_err(&tls), terminal(Reason::Tls));
    }

    #[test]
    fn the_deepest_recognised_link_wins() {
        // Outer links say "timed out" / "connect"; the cause underneath is more specific.
        let err = io::Error::new(
            io::ErrorKind::TimedOut,
            Message("invalid peer certificate: Expired"),
        );
        assert_eq!(classify_err(&err), terminal(Reason::Tls));
        let err = Wrapped(Box::new(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            io::Error::from(io::ErrorKind::UnexpectedEof),
        )));
        assert_eq!(classify_err(&err), retryable(Reason::IncompleteMessage));
    }

    #[test]
    fn unknown_is_terminal_other() {
        assert_eq!(
            classify_err(&Message("something odd")),
            terminal(Reason::Other)
        );
        assert_eq!(
            classify_err(&Wrapped(Box::new(Message("x")))),
            terminal(Reason::Other)
        );
    }

    /// The error hyper-util's client returns for a GET of `uri`.
    fn hyper_util_error(uri: http::Uri) -> hyper_util::client::legacy::Error {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<bytes::Bytes>>();
            client.get(uri).await.unwrap_err()
        })
    }

    #[test]
    fn hyper_util_connect_error_to_a_closed_port() {
        // Bind then drop: the port is closed, the connect is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = hyper_util_error(format!("http://127.0.0.1:{port}/").parse().unwrap());
        assert!(err.is_connect());
        assert_eq!(classify_err(&err), retryable(Reason::Connect));
        let boxed: tower::BoxError = Box::new(err);
        assert_eq!(classify_err(boxed.as_error()), retryable(Reason::Connect));
    }

    #[test]
    fn hyper_util_rejects_relative_uri_as_invalid_url() {
        let err = hyper_util_error(http::Uri::from_static("/relative"));
        assert_eq!(classify_err(&err), terminal(Reason::InvalidUrl));
    }
}
