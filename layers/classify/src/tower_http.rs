//! An adapter from [`Classify`] to tower-http's [`MakeClassifier`] / [`ClassifyResponse`], so
//! `tower_http::trace::TraceLayer` reports the same outcomes as every other layer here.
//!
//! The failure class is [`Outcome`] (its `Display` is `retryable: 503`, `terminal: tls`, ...).
//! It must never allocate for a successful response.
//!
//! ```
//! use kasal_classify::{DefaultClassifier, TowerHttpClassifier};
//! use tower_http::trace::TraceLayer;
//!
//! let layer = TraceLayer::new(TowerHttpClassifier::new(DefaultClassifier::new()));
//! # let _ = layer;
//! ```

use std::any::Any;
use std::fmt;

use http::{Request, Response};
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, MakeClassifier, NeverClassifyEos,
};

use crate::classify::{Classify, DefaultClassifier, downcast_error};
use crate::outcome::{Outcome, Reason};

/// A [`Classify`] usable wherever tower-http wants a classifier (`TraceLayer::new(..)`).
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

impl<C: Classify> MakeClassifier for TowerHttpClassifier<C> {
    type Classifier = Self;
    type FailureClass = Outcome;
    type ClassifyEos = NeverClassifyEos<Outcome>;

    fn make_classifier<B>(&self, _req: &Request<B>) -> Self::Classifier {
        self.clone()
    }
}

impl<C: Classify> ClassifyResponse for TowerHttpClassifier<C> {
    type FailureClass = Outcome;
    type ClassifyEos = NeverClassifyEos<Outcome>;

    fn classify_response<B>(
        self,
        res: &Response<B>,
    ) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        match self
            .classifier
            .classify_response(res.status(), res.headers())
        {
            Outcome::Success => ClassifiedResponse::Ready(Ok(())),
            failure => ClassifiedResponse::Ready(Err(failure)),
        }
    }

    fn classify_error<E>(self, error: &E) -> Self::FailureClass
    where
        E: fmt::Display + 'static,
    {
        // tower-http only promises `Display`; reach the `dyn Error` behind the known error types.
        match downcast_error(error as &dyn Any) {
            Some(err) => self.classifier.classify_error(err),
            None => Outcome::Terminal {
                reason: Reason::Other,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn classifier() -> TowerHttpClassifier {
        TowerHttpClassifier::new(DefaultClassifier::new())
    }

    fn classify(code: u16) -> Result<(), Outcome> {
        let res = Response::builder().status(code).body(()).unwrap();
        let req = Request::new(());
        match classifier().make_classifier(&req).classify_response(&res) {
            ClassifiedResponse::Ready(result) => result,
            ClassifiedResponse::RequiresEos(_) => unreachable!("never requires eos"),
        }
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
            classifier().classify_error(&io).reason(),
            Some(&Reason::Connect)
        );
        let boxed: tower::BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(
            classifier().classify_error(&boxed).reason(),
            Some(&Reason::Timeout)
        );
        // A type we cannot see into is terminal.
        assert_eq!(
            classifier().classify_error(&"plain text"),
            Outcome::Terminal {
                reason: Reason::Other
            }
        );
    }
}
