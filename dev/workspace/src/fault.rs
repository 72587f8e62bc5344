//! Fault injection: "the next N calls to route R answer S (after a delay)".

use std::time::Duration;

use http::StatusCode;

/// What an injected fault does to one call: wait, then answer with a status instead of the
/// handler (or, with no status, let the handler answer after the wait).
///
/// ```
/// use std::time::Duration;
/// use kasal_dev_workspace::Fault;
///
/// let rate_limited = Fault::too_many_requests(Duration::from_secs(1));
/// let slow = Fault::delay(Duration::from_millis(200));
/// let slow_and_down = Fault::unavailable().with_delay(Duration::from_millis(50));
/// # let _ = (rate_limited, slow, slow_and_down);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub(crate) status: Option<StatusCode>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) delay: Duration,
}

impl Fault {
    /// Answer `status` with a Databricks-style error body (`{"error_code", "message"}`).
    pub fn status(status: StatusCode) -> Fault {
        Fault {
            status: Some(status),
            retry_after: None,
            delay: Duration::ZERO,
        }
    }

    /// `429 Too Many Requests` with `Retry-After` in whole seconds (rounded down).
    pub fn too_many_requests(retry_after: Duration) -> Fault {
        Fault::status(StatusCode::TOO_MANY_REQUESTS).retry_after(retry_after)
    }

    /// `503 Service Unavailable`, no `Retry-After`.
    pub fn unavailable() -> Fault {
        Fault::status(StatusCode::SERVICE_UNAVAILABLE)
    }

    /// `403 Forbidden` (`PERMISSION_DENIED`): terminal, never worth a retry.
    pub fn forbidden() -> Fault {
        Fault::status(StatusCode::FORBIDDEN)
    }

    /// Latency only: wait `delay`, then let the route answer normally.
    pub fn delay(delay: Duration) -> Fault {
        Fault {
            status: None,
            retry_after: None,
            delay,
        }
    }

    /// Add a `Retry-After` header (whole seconds) to the answer.
    pub fn retry_after(mut self, retry_after: Duration) -> Fault {
        self.retry_after = Some(retry_after.as_secs());
        self
    }

    /// Wait `delay` before answering.
    pub fn with_delay(mut self, delay: Duration) -> Fault {
        self.delay = delay;
        self
    }
}

/// Pending faults, consumed first-in first-out by the calls whose path they match.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pending: Vec<Pending>,
}

#[derive(Debug)]
struct Pending {
    route: String,
    remaining: usize,
    fault: Fault,
}

impl Faults {
    pub(crate) fn push(&mut self, route: &str, times: usize, fault: Fault) {
        if times > 0 {
            self.pending.push(Pending {
                route: route.to_owned(),
                remaining: times,
                fault,
            });
        }
    }

    /// The fault for a call to `path`, if one is pending: the oldest whose route is a prefix of
    /// the path.
    pub(crate) fn take(&mut self, path: &str) -> Option<Fault> {
        let index = self
            .pending
            .iter()
            .position(|p| path.starts_with(p.route.as_str()))?;
        let pending = &mut self.pending[index];
        pending.remaining -= 1;
        let fault = pending.fault.clone();
        if pending.remaining == 0 {
            self.pending.remove(index);
        }
        Some(fault)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.pending.iter().map(|p| p.remaining).sum()
    }

    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumed_in_order_by_prefix_then_gone() {
        let mut faults = Faults::default();
        faults.push("/serving-endpoints/", 2, Fault::unavailable());
        faults.push("/api/2.0/secrets/get", 1, Fault::forbidden());
        assert_eq!(faults.remaining(), 3);
        assert_eq!(faults.take("/api/2.0/vector-search/indexes/x/query"), None);
        assert_eq!(
            faults.take("/api/2.0/secrets/get"),
            Some(Fault::forbidden())
        );
        assert_eq!(faults.take("/api/2.0/secrets/get"), None);
        for _ in 0..2 {
            assert_eq!(
                faults.take("/serving-endpoints/m/invocations"),
                Some(Fault::unavailable())
            );
        }
        assert_eq!(faults.take("/serving-endpoints/m/invocations"), None);
        assert_eq!(faults.remaining(), 0);
    }

    #[test]
    fn zero_times_is_nothing() {
        let mut faults = Faults::default();
        faults.push("/", 0, Fault::forbidden());
        assert_eq!(faults.take("/anything"), None);
    }
}
