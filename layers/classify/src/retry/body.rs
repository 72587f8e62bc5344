use bytes::Bytes;
use http::Request;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{Either, Empty, Full, StreamBody};

/// A request body that can be copied for a retry, or says it cannot.
///
/// Buffered bodies clone; streaming bodies (`BoxBody`, `StreamBody`, `hyper::body::Incoming`)
/// return `None`, and [`RetryLayer`](crate::RetryLayer) then sends the request once.
/// Implement it for your own body type to make it retryable.
pub trait TryCloneBody: Sized {
    /// A copy of the body that replays the same bytes, or `None` if that is not possible.
    fn try_clone_body(&self) -> Option<Self>;
}

impl<D: Clone> TryCloneBody for Full<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> TryCloneBody for Empty<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(Empty::new())
    }
}

impl TryCloneBody for String {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for Vec<u8> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

/// A stream: axum's body cannot be replayed, so a request with it is sent once.
#[cfg(feature = "axum")]
impl TryCloneBody for axum::body::Body {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

/// A buffered reqwest body (from bytes, a `String`, a `Vec`) is copied; a streaming one is not.
#[cfg(feature = "reqwest")]
impl TryCloneBody for reqwest::Body {
    fn try_clone_body(&self) -> Option<Self> {
        self.as_bytes()
            .map(|bytes| reqwest::Body::from(Bytes::copy_from_slice(bytes)))
    }
}

impl TryCloneBody for Bytes {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for () {
    fn try_clone_body(&self) -> Option<Self> {
        Some(())
    }
}

impl<L: TryCloneBody, R: TryCloneBody> TryCloneBody for Either<L, R> {
    fn try_clone_body(&self) -> Option<Self> {
        match self {
            Either::Left(left) => left.try_clone_body().map(Either::Left),
            Either::Right(right) => right.try_clone_body().map(Either::Right),
        }
    }
}

impl<D, E> TryCloneBody for BoxBody<D, E> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl<D, E> TryCloneBody for UnsyncBoxBody<D, E> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl<S> TryCloneBody for StreamBody<S> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl TryCloneBody for hyper::body::Incoming {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

/// A copy of `req` (method, URI, version, headers, extensions and body) if its body can be copied.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use kasal_classify::clone_request;
///
/// let req = http::Request::post("http://example.com/api")
///     .header("content-type", "application/json")
///     .body(Full::new(Bytes::from_static(b"{}")))
///     .unwrap();
/// let copy = clone_request(&req).unwrap();
/// assert_eq!(copy.uri(), req.uri());
/// assert_eq!(copy.headers(), req.headers());
/// ```
pub fn clone_request<B: TryCloneBody>(req: &Request<B>) -> Option<Request<B>> {
    let mut copy = Request::new(req.body().try_clone_body()?);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;

    #[derive(Clone, Debug, PartialEq)]
    struct Marker(u32);

    #[test]
    fn clones_every_part() {
        let mut req = Request::put("http://example.com/a?b=c")
            .version(http::Version::HTTP_2)
            .header("x-one", "1")
            .header("x-one", "2")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        req.extensions_mut().insert(Marker(7));
        let copy = clone_request(&req).unwrap();
        assert_eq!(copy.method(), http::Method::PUT);
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.version(), http::Version::HTTP_2);
        assert_eq!(copy.headers().get_all("x-one").iter().count(), 2);
        assert_eq!(copy.extensions().get::<Marker>(), Some(&Marker(7)));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(copy.into_body().collect()).unwrap().to_bytes();
        assert_eq!(&bytes[..], b"payload");
    }

    #[test]
    fn buffered_bodies_clone_streaming_bodies_do_not() {
        assert!(Empty::<Bytes>::new().try_clone_body().is_some());
        assert!(String::from("x").try_clone_body().is_some());
        assert!(Bytes::new().try_clone_body().is_some());
        assert_eq!(vec![1u8, 2].try_clone_body(), Some(vec![1u8, 2]));
        assert!(().try_clone_body().is_some());
        let left: Either<Full<Bytes>, BoxBody<Bytes, Infallible>> = Either::Left(Full::default());
        assert!(left.try_clone_body().is_some());
        let right: Either<Full<Bytes>, BoxBody<Bytes, Infallible>> =
            Either::Right(Full::new(Bytes::new()).boxed());
        assert!(right.try_clone_body().is_none());
        assert!(
            Full::new(Bytes::new())
                .boxed_unsync()
                .try_clone_body()
                .is_none()
        );
        let stream = StreamBody::new(futures_util::stream::empty::<
            Result<http_body::Frame<Bytes>, Infallible>,
        >());
        assert!(stream.try_clone_body().is_none());
        let req = Request::new(Full::new(Bytes::new()).boxed());
        assert!(clone_request(&req).is_none());
    }

    #[cfg(feature = "axum")]
    #[test]
    fn axum_bodies_are_sent_once() {
        assert!(axum::body::Body::from("x").try_clone_body().is_none());
        assert!(axum::body::Body::empty().try_clone_body().is_none());
        let req = Request::new(axum::body::Body::from("payload"));
        assert!(clone_request(&req).is_none());
    }

    #[cfg(feature = "reqwest")]
    #[test]
    fn buffered_reqwest_bodies_clone_streaming_ones_do_not() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let body = reqwest::Body::from("payload");
        let copy = body.try_clone_body().expect("buffered");
        assert_eq!(copy.as_bytes(), Some(&b"payload"[..]));
        let bytes = rt.block_on(copy.collect()).unwrap().to_bytes();
        assert_eq!(&bytes[..], b"payload");
        // Any other body is a stream to reqwest, even a buffered one wrapped.
        let wrapped = reqwest::Body::wrap(Full::new(Bytes::from("x")));
        assert!(wrapped.try_clone_body().is_none());
    }
}
