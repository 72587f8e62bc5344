//! The `Classify` trait and a minimal `DefaultClassifier`.
//!
//! Stand-in on the `trace` branch: the classify helper's full implementation replaces this file.

use std::error::Error;

use http::{HeaderMap, StatusCode};

use crate::{Outcome, Reason};

/// Decides how a call went, from its response head or its error.
pub trait Classify: Clone + Send + Sync + 'static {
    /// Classifies a response by its status and headers.
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome;
    /// Classifies an error, walking its source chain.
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome;
}

/// The DESIGN §4 rules (minimal stand-in).
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn classify_response(&self, status: StatusCode, _headers: &HeaderMap) -> Outcome {
        match status.as_u16() {
            100..=399 => Outcome::Success,
            408 | 429 | 500 | 502 | 503 | 504 => Outcome::Retryable {
                reason: Reason::Status(status),
                retry_after: None,
            },
            _ => Outcome::Terminal {
                reason: Reason::Status(status),
            },
        }
    }

    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        let mut next = Some(error);
        while let Some(err) = next {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    return Outcome::Retryable {
                        reason: Reason::Connect,
                        retry_after: None,
                    };
                }
            }
            next = err.source();
        }
        Outcome::Terminal {
            reason: Reason::Other,
        }
    }
}
