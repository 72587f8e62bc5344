use std::task::{Context, Poll};

use http::{Request, Response};
use tower::BoxError;
use tower_service::Service;

use super::{CircuitBreaker, ResponseFuture};
use crate::classify::{Classify, DefaultClassifier};

/// A service guarded by a per-host [`CircuitBreaker`]; see [`CircuitBreakerLayer`].
///
/// The circuit is keyed by the request URI's host and port, the port defaulted from the scheme
/// (`https://h/` and `https://h:443/` share one circuit); userinfo never enters the key. While a host's circuit is open the call fails at
/// once with a [`CircuitOpen`](super::CircuitOpen) (boxed as `tower::BoxError`) and the inner
/// service is not called.
///
/// [`CircuitBreakerLayer`]: super::CircuitBreakerLayer
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S, C = DefaultClassifier> {
    inner: S,
    breaker: CircuitBreaker<C>,
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Guards `inner` with `breaker`.
    pub fn new(inner: S, breaker: CircuitBreaker<C>) -> Self {
        CircuitBreakerService { inner, breaker }
    }

    /// The shared breaker.
    pub fn breaker(&self) -> &CircuitBreaker<C> {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreakerService<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    C: Classify,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let mut buf = KeyBuf::default();
        match self.breaker.try_acquire(circuit_key(req.uri(), &mut buf)) {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.breaker.clone())
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}

/// Room for a `host:port` key on the stack: the per-request path does not allocate.
struct KeyBuf {
    bytes: [u8; 272],
    owned: String,
}

impl Default for KeyBuf {
    fn default() -> Self {
        KeyBuf {
            bytes: [0; 272],
            owned: String::new(),
        }
    }
}

/// `host:port` of `uri` without userinfo, the port defaulted from the scheme (80, 443); the
/// authority as it is when it has no userinfo and names its port; `""` without an authority.
fn circuit_key<'a>(uri: &'a http::Uri, buf: &'a mut KeyBuf) -> &'a str {
    let Some(authority) = uri.authority() else {
        return "";
    };
    let text = authority.as_str();
    let bare = text.rsplit_once('@').map_or(text, |(_, host)| host);
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => return bare,
    };
    if authority.port().is_some() {
        return bare;
    }
    let host = authority.host();
    let mut digits = [0u8; 5];
    let port = format_port(default_port, &mut digits);
    let len = host.len() + 1 + port.len();
    if len <= buf.bytes.len() {
        buf.bytes[..host.len()].copy_from_slice(host.as_bytes());
        buf.bytes[host.len()] = b':';
        buf.bytes[host.len() + 1..len].copy_from_slice(port.as_bytes());
        // ASCII pieces of a valid authority.
        return std::str::from_utf8(&buf.bytes[..len]).unwrap_or(bare);
    }
    buf.owned = format!("{host}:{port}");
    &buf.owned
}

fn format_port(port: u16, digits: &mut [u8; 5]) -> &str {
    let mut n = port;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&digits[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_host_and_port_without_userinfo() {
        let key = |uri: &str| {
            let uri: http::Uri = uri.parse().unwrap();
            let mut buf = KeyBuf::default();
            circuit_key(&uri, &mut buf).to_owned()
        };
        assert_eq!(key("https://bob:PW@h.example/x"), "h.example:443");
        assert_eq!(key("https://alice:other@h.example:443/x"), "h.example:443");
        assert_eq!(key("http://h.example/x"), "h.example:80");
        assert_eq!(key("http://u@127.0.0.1:8080/"), "127.0.0.1:8080");
        assert_eq!(key("/relative"), "");
        let long = format!("https://{}.example/", "a".repeat(300));
        assert_eq!(key(&long), format!("{}.example:443", "a".repeat(300)));
    }

    #[test]
    fn circuit_open_never_shows_userinfo() {
        let open = super::super::CircuitOpen::new("bob:PW@host:443");
        assert_eq!(&*open.host, "host:443");
        let forged = super::super::CircuitOpen {
            host: "bob:PW@host".into(),
        };
        assert_eq!(forged.to_string(), "circuit open for host");
    }
}
