//! reqwest-middleware's error, read by the classifier.
//!
//! What a reqwest error means (timeout, connect, an invalid URL, a redirect loop, a body cut
//! short) is decided in one place, kasal-classify's `DefaultClassifier` (its `reqwest`
//! feature), for every stack alike. This module only opens reqwest-middleware's wrapper so the
//! classifier sees the error inside, and gives the middlewares one function for a whole result.

use std::error::Error;

use kasal_classify::{Classify, Outcome};

/// The error inside: reqwest's own, or a middleware's (a `CircuitOpen`, or anything a user's
/// middleware returned), with its source chain.
///
/// `reqwest_middleware::Error` is `#[error(transparent)]`: as a `dyn Error` it would hide the
/// `reqwest::Error` itself and show only its sources, losing the kind (timeout, builder,
/// redirect) that reqwest keeps on the outer value.
pub(crate) fn inner_error(error: &reqwest_middleware::Error) -> &(dyn Error + 'static) {
    match error {
        reqwest_middleware::Error::Reqwest(error) => error,
        reqwest_middleware::Error::Middleware(error) => {
            let error: &(dyn Error + Send + Sync + 'static) = error.as_ref();
            error
        }
    }
}

/// The outcome of one attempt: the response's status and headers, or the error.
pub(crate) fn classify_result<C: Classify>(
    classifier: &C,
    result: &reqwest_middleware::Result<reqwest::Response>,
) -> Outcome {
    match result {
        Ok(response) => classifier.classify_response(response.status(), response.headers()),
        Err(error) => classifier.classify_error(inner_error(error)),
    }
}
