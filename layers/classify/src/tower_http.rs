//! An adapter from [`Classify`] to tower-http's `MakeClassifier` / `ClassifyResponse`, so
//! `tower_http::trace::TraceLayer` reports the same outcomes as every other layer here.
//!
//! Both tower-http 0.7 (feature `tower-http-07`, what `cargo add tower-http` gives) and 0.6
//! (feature `tower-http-06`) are supported; enable the one your `TraceLayer` comes from (or
//! both). The failure class is [`Outcome`] (its `Display` is `retryable: 503`, `terminal: tls`,
//! ...). It must never allocate for a successful response.
//!
//! ```
//! # #[cfg(feature = "tower-http-07")]
//! # {
//! # extern crate tower_http_07 as tower_http;
//! use kasal_classify::{DefaultClassifier, TowerHttpClassifier};
//! use tower_http::trace::TraceLayer;
//!
//! let layer = TraceLayer::new(TowerHttpClassifier::new(DefaultClassifier::new()));
//! # let _ = layer;
//! # }
//! ```

use std::any::Any;
use std::fmt;

use crate::classify::{Classify, DefaultClassifier, downcast_error};
use crate::outcome::{Outcome, Reason};

/// A [`Classify`] usable wherever tower-http wants a classifier (`TraceLayer::new(..)`), with
/// tower-http 0.7 (feature `tower-http-07`) and 0.6 (feature `tower-http-06`).
#[derive(Clone, Debug, Default)]
pub struct TowerHttpClassifier<C = DefaultClassifier> {
    classifier: C,
}

impl<C> TowerHttpClassifier<C> {
    /// Wraps `classifier`.
    pub fn new(classifier: C) -> Self {
        TowerHttpClassifier { classifier }
    }

    /// The wrapped classifier.
    pub fn get_ref(&self) -> &C {
        &self.classifier
    }
}

impl<C: Classify> TowerHttpClassifier<C> {
    /// The outcome of a response: `Ok` for a success, else the failure class.
    fn response_outcome(
        &self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
    ) -> Result<(), Outcome> {
        match self.classifier.classify_response(status, headers) {
            Outcome::Success => Ok(()),
            failure => Err(failure),
        }
    }

    /// The outcome of an error tower-http only promises to be `Display`: reach the `dyn Error`
    /// behind the known error types; anything else is terminal.
    fn error_outcome<E: fmt::Display + 'static>(&self, error: &E) -> Outcome {
        match downcast_error(error as &dyn Any) {
            Some(err) => self.classifier.classify_error(err),
            None => Outcome::Terminal {
                reason: Reason::Other,
            },
        }
    }
}

/// Implements one tower-http version's classifier traits (the traits are the same in 0.6 and
/// 0.7, but they are distinct traits of distinct crates).
macro_rules! impl_tower_http {
    ($tower_http:ident) => {
        impl<C: Classify> ::$tower_http::classify::MakeClassifier for TowerHttpClassifier<C> {
            type Classifier = Self;
            type FailureClass = Outcome;
            type ClassifyEos = ::$tower_http::classify::NeverClassifyEos<Outcome>;

            fn make_classifier<B>(&self, _req: &http::Request<B>) -> Self::Classifier {
                self.clone()
            }
        }

        impl<C: Classify> ::$tower_http::classify::ClassifyResponse for TowerHttpClassifier<C> {
            type FailureClass = Outcome;
            type ClassifyEos = ::$tower_http::classify::NeverClassifyEos<Outcome>;

            fn classify_response<B>(
                self,
                res: &http::Response<B>,
            ) -> ::$tower_http::classify::ClassifiedResponse<Self::FailureClass, Self::ClassifyEos>
            {
                ::$tower_http::classify::ClassifiedResponse::Ready(
                    self.response_outcome(res.status(), res.headers()),
                )
            }

            fn classify_error<E>(self, error: &E) -> Self::FailureClass
            where
                E: fmt::Display + 'static,
            {
                self.error_outcome(error)
            }
        }
    };
}

#[cfg(feature = "tower-http-06")]
impl_tower_http!(tower_http_06);
#[cfg(feature = "tower-http-07")]
impl_tower_http!(tower_http_07);

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response, StatusCode};

    fn classifier() -> TowerHttpClassifier {
        TowerHttpClassifier::new(DefaultClassifier::new())
    }

    fn classify(code: u16) -> Result<(), Outcome> {
        let res = Response::builder().status(code).body(()).unwrap();
        classifier().response_outcome(res.status(), res.headers())
    }

    #[test]
    fn responses_follow_the_table() {
        assert_eq!(classify(200), Ok(()));
        assert_eq!(classify(302), Ok(()));
        let err = classify(503).unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.to_string(), "retryable: 503");
        let err = classify(404).unwrap_err();
        assert_eq!(
            err,
            Outcome::Terminal {
                reason: Reason::Status(StatusCode::NOT_FOUND)
            }
        );
    }

    #[test]
    fn errors_are_downcast_to_reach_the_chain() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classifier().error_outcome(&io).reason(),
            Some(&Reason::Connect)
        );
        let boxed: tower::BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(
            classifier().error_outcome(&boxed).reason(),
            Some(&Reason::Timeout)
        );
        // A type we cannot see into is terminal.
        assert_eq!(
            classifier().error_outcome(&"plain text"),
            Outcome::Terminal {
                reason: Reason::Other
            }
        );
    }

    /// A `TraceLayer` of one tower-http version, over a `service_fn` answering 200 then 503
    /// then failing, reports through our classifier: the 503 as retryable, the error (a
    /// timeout) as retryable timeout, the 200 as no failure.
    macro_rules! trace_layer_test {
        ($name:ident, $tower_http:ident) => {
            #[tokio::test]
            async fn $name() {
                use std::sync::atomic::{AtomicUsize, Ordering};
                use std::sync::{Arc, Mutex};
                use std::time::Duration;

                use ::$tower_http::trace::TraceLayer;
                use tower::{Service, ServiceBuilder, ServiceExt};

                let failures = Arc::new(Mutex::new(Vec::new()));
                let seen = failures.clone();
                let trace = TraceLayer::new(classifier()).on_failure(
                    move |class: Outcome, _latency: Duration, _span: &tracing::Span| {
                        seen.lock().unwrap().push(class);
                    },
                );
                let calls = Arc::new(AtomicUsize::new(0));
                let service = tower::service_fn(move |_request: Request<String>| {
                    let n = calls.fetch_add(1, Ordering::Relaxed);
                    async move {
                        match n {
                            0 => Ok(Response::new(String::new())),
                            1 => Ok(Response::builder()
                                .status(StatusCode::SERVICE_UNAVAILABLE)
                                .body(String::new())
                                .unwrap()),
                            _ => Err(tower::BoxError::from(tower::timeout::error::Elapsed::new())),
                        }
                    }
                });
                let mut service = ServiceBuilder::new().layer(trace).service(service);

                let ok = service
                    .ready()
                    .await
                    .unwrap()
                    .call(Request::default())
                    .await;
                assert_eq!(ok.unwrap().status(), StatusCode::OK);
                let busy = service
                    .ready()
                    .await
                    .unwrap()
                    .call(Request::default())
                    .await;
                assert_eq!(busy.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
                let err = service
                    .ready()
                    .await
                    .unwrap()
                    .call(Request::default())
                    .await;
                assert!(err.is_err());

                let failures = failures.lock().unwrap();
                assert_eq!(
                    failures[0],
                    Outcome::Retryable {
                        reason: Reason::Status(StatusCode::SERVICE_UNAVAILABLE),
                        retry_after: None
                    }
                );
                assert_eq!(failures[1].reason(), Some(&Reason::Timeout));
                assert!(failures[1].is_retryable());
                assert_eq!(failures.len(), 2);
            }
        };
    }

    #[cfg(feature = "tower-http-06")]
    trace_layer_test!(
        trace_layer_of_tower_http_06_uses_the_classifier,
        tower_http_06
    );
    #[cfg(feature = "tower-http-07")]
    trace_layer_test!(
        trace_layer_of_tower_http_07_uses_the_classifier,
        tower_http_07
    );
}
