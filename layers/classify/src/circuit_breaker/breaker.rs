use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::CircuitOpen;
use crate::classify::{Classify, DefaultClassifier};
use crate::outcome::{Outcome, Reason};

/// The thresholds and timings of a [`CircuitBreaker`].
///
/// Defaults (those of the Databricks drivers): 5 consecutive failures open the circuit,
/// it stays open 60 s, then one probe at a time is let through and 2 successful probes close it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    failure_threshold: u32,
    open_for: Duration,
    success_threshold: u32,
    max_hosts: usize,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(60),
            success_threshold: 2,
            max_hosts: 1024,
        }
    }
}

impl CircuitBreakerConfig {
    /// The defaults: 5 failures, 60 s open, 2 successes, 1024 hosts tracked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consecutive failures that open a closed circuit (default 5; 0 is treated as 1).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// How long an open circuit rejects calls before letting a probe through (default 60 s;
    /// `Duration::MAX` keeps it open for good).
    pub fn open_for(mut self, period: Duration) -> Self {
        self.open_for = period;
        self
    }

    /// Successful probes that close a half-open circuit (default 2; 0 is treated as 1).
    pub fn success_threshold(mut self, successes: u32) -> Self {
        self.success_threshold = successes.max(1);
        self
    }

    /// How many hosts are tracked at most (default 1024). Healthy hosts are forgotten first; past
    /// the bound, calls to new hosts pass unguarded rather than grow memory without limit.
    pub fn max_hosts(mut self, hosts: usize) -> Self {
        self.max_hosts = hosts;
        self
    }
}

/// The state of one host's circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls pass; consecutive failures are counted.
    Closed,
    /// Calls are rejected with [`CircuitOpen`] until the open period ends.
    Open,
    /// The open period is over: one probe at a time is let through.
    HalfOpen,
}

#[derive(Debug)]
enum Phase {
    Closed {
        failures: u32,
    },
    /// Opened at `since`; rejects while less than `open_for` has passed (a subtraction that
    /// saturates, so no `open_for` can overflow an `Instant`).
    Open {
        since: Instant,
    },
    HalfOpen {
        probing: bool,
        successes: u32,
    },
}

#[derive(Debug)]
struct Host {
    /// The map key, kept here too so a permit gets it without a second lookup.
    key: Arc<str>,
    phase: Phase,
    /// Bumped on every transition, so results of calls admitted earlier are ignored.
    generation: u64,
}

impl Host {
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
    }
}

#[derive(Debug)]
struct Shared {
    config: CircuitBreakerConfig,
    hosts: Mutex<HashMap<Arc<str>, Host>>,
}

impl Shared {
    /// The lock is held for a few map operations only, never across an `.await`. A poisoned lock
    /// still holds consistent data (no user code runs under it), so it is used as is.
    fn hosts(&self) -> MutexGuard<'_, HashMap<Arc<str>, Host>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `host` without any `user:password@` before it: circuits are never keyed by credentials.
pub(crate) fn without_userinfo(host: &str) -> &str {
    host.rsplit_once('@').map_or(host, |(_, host)| host)
}

/// A per-host circuit breaker: the sans-IO state machine behind [`CircuitBreakerLayer`].
///
/// Cheap to clone; clones share state. Hosts are `host:port` (the service fills in the
/// scheme's default port); userinfo given to any method is ignored.
///
/// - **Closed**: calls pass. 5 consecutive failures (a retryable outcome, any 5xx, a transport
///   error) open the circuit. Successes reset the count; other 4xx (401, 403, 404, ...) neither
///   count nor reset.
/// - **Open**: [`try_acquire`](Self::try_acquire) fails at once with [`CircuitOpen`] for 60 s.
/// - **Half-open**: exactly one probe in flight, others rejected. 2 successful probes close the
///   circuit; any failed probe reopens it. A probe whose [`Permit`] is dropped without a result
///   (a cancelled call) frees the slot for the next caller.
///
/// ```
/// use std::time::Duration;
/// use kasal_classify::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
///
/// let breaker = CircuitBreaker::new(CircuitBreakerConfig::new().failure_threshold(2));
/// for _ in 0..2 {
///     let permit = breaker.try_acquire("api.example.com").unwrap();
///     breaker.record(permit, false);
/// }
/// assert_eq!(breaker.state("api.example.com"), CircuitState::Open);
/// assert!(breaker.try_acquire("api.example.com").is_err());
/// assert!(breaker.try_acquire("other.example.com").is_ok());
/// ```
///
/// [`CircuitBreakerLayer`]: crate::CircuitBreakerLayer
#[derive(Clone, Debug)]
pub struct CircuitBreaker<C = DefaultClassifier> {
    shared: Arc<Shared>,
    classifier: C,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker::new(CircuitBreakerConfig::default())
    }
}

impl CircuitBreaker {
    /// A breaker judging responses with the [`DefaultClassifier`].
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreaker::with_classifier(config, DefaultClassifier::new())
    }
}

impl<C> CircuitBreaker<C> {
    /// A breaker judging responses with `classifier`.
    pub fn with_classifier(config: CircuitBreakerConfig, classifier: C) -> Self {
        CircuitBreaker {
            shared: Arc::new(Shared {
                config,
                hosts: Mutex::new(HashMap::new()),
            }),
            classifier,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.shared.config
    }

    /// The classifier used by [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
    pub fn classifier(&self) -> &C {
        &self.classifier
    }

    /// Asks to send one call to `host`: a [`Permit`] to report the result with, or [`CircuitOpen`].
    pub fn try_acquire(&self, host: &str) -> Result<Permit, CircuitOpen> {
        self.acquire(host, Instant::now)
    }

    /// [`try_acquire`](Self::try_acquire) at a given instant.
    pub fn try_acquire_at(&self, host: &str, now: Instant) -> Result<Permit, CircuitOpen> {
        self.acquire(host, || now)
    }

    /// The clock is read only for an open circuit: a closed one, the common case, needs no time.
    fn acquire(&self, host: &str, now: impl FnOnce() -> Instant) -> Result<Permit, CircuitOpen> {
        let host = without_userinfo(host);
        let mut hosts = self.shared.hosts();
        let Some(state) = self.entry(&mut hosts, host) else {
            return Ok(Permit::untracked());
        };
        let open_for = self.shared.config.open_for;
        let probe = match &mut state.phase {
            Phase::Closed { .. } => false,
            Phase::Open { since } if now().saturating_duration_since(*since) < open_for => {
                return Err(CircuitOpen {
                    host: state.key.clone(),
                });
            }
            Phase::Open { .. } => {
                state.enter(Phase::HalfOpen {
                    probing: true,
                    successes: 0,
                });
                true
            }
            Phase::HalfOpen { probing: true, .. } => {
                return Err(CircuitOpen {
                    host: state.key.clone(),
                });
            }
            Phase::HalfOpen { probing, .. } => {
                *probing = true;
                true
            }
        };
        Ok(Permit {
            slot: Some(Slot {
                shared: self.shared.clone(),
                host: state.key.clone(),
                generation: state.generation,
                probe,
            }),
        })
    }

    /// Reports the result of the call `permit` admitted.
    pub fn record(&self, permit: Permit, success: bool) {
        Self::settle(permit, success, Instant::now);
    }

    /// [`record`](Self::record) at a given instant.
    pub fn record_at(&self, permit: Permit, success: bool, now: Instant) {
        Self::settle(permit, success, || now);
    }

    /// The clock is read only when the result opens the circuit.
    fn settle(mut permit: Permit, success: bool, now: impl FnOnce() -> Instant) {
        let Some(slot) = permit.slot.take() else {
            return;
        };
        let config = &slot.shared.config;
        let mut hosts = slot.shared.hosts();
        let Some(state) = hosts.get_mut(&*slot.host) else {
            return;
        };
        if state.generation != slot.generation {
            return; // admitted before the last transition: stale news
        }
        let open = || Phase::Open { since: now() };
        match (&mut state.phase, success) {
            (Phase::Closed { failures }, true) => *failures = 0,
            (Phase::Closed { failures }, false) => {
                *failures += 1;
                if *failures >= config.failure_threshold {
                    state.enter(open());
                }
            }
            (Phase::HalfOpen { probing, successes }, true) => {
                *successes += 1;
                *probing = false;
                if *successes >= config.success_threshold {
                    state.enter(Phase::Closed { failures: 0 });
                }
            }
            (Phase::HalfOpen { .. }, false) => state.enter(open()),
            (Phase::Open { .. }, _) => {}
        }
    }

    /// The state of `host`'s circuit now (an open circuit whose period has ended is `HalfOpen`).
    pub fn state(&self, host: &str) -> CircuitState {
        self.state_at(host, Instant::now())
    }

    /// [`state`](Self::state) at a given instant.
    pub fn state_at(&self, host: &str, now: Instant) -> CircuitState {
        let open_for = self.shared.config.open_for;
        match self
            .shared
            .hosts()
            .get(without_userinfo(host))
            .map(|s| &s.phase)
        {
            None | Some(Phase::Closed { .. }) => CircuitState::Closed,
            Some(Phase::Open { since }) if now.saturating_duration_since(*since) < open_for => {
                CircuitState::Open
            }
            Some(Phase::Open { .. } | Phase::HalfOpen { .. }) => CircuitState::HalfOpen,
        }
    }

    /// The entry for `host`, created (once per host) if there is room.
    fn entry<'m>(
        &self,
        hosts: &'m mut HashMap<Arc<str>, Host>,
        host: &str,
    ) -> Option<&'m mut Host> {
        // Two lookups on the common path: `get_mut` cannot hand its borrow back conditionally.
        if hosts.contains_key(host) {
            return hosts.get_mut(host);
        }
        if hosts.len() >= self.shared.config.max_hosts {
            hosts.retain(|_, s| !matches!(s.phase, Phase::Closed { failures: 0 }));
            if hosts.len() >= self.shared.config.max_hosts {
                return None;
            }
        }
        let key: Arc<str> = Arc::from(host);
        Some(hosts.entry(key.clone()).or_insert(Host {
            key,
            phase: Phase::Closed { failures: 0 },
            generation: 0,
        }))
    }
}

impl<C: Classify> CircuitBreaker<C> {
    /// How a response counts: `Some(false)` a failure (retryable outcome or any 5xx),
    /// `Some(true)` a success, `None` neither (other 4xx: the host is answering).
    pub fn judge_response(
        &self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
    ) -> Option<bool> {
        if status.is_server_error() {
            return Some(false);
        }
        match self.classifier.classify_response(status, headers) {
            Outcome::Success => Some(true),
            Outcome::Retryable { .. } => Some(false),
            Outcome::Terminal { .. } => None,
        }
    }

    /// How an error counts: a failure for transport errors, neither for errors of our own making
    /// (an invalid URL, a body that could not be built, another breaker's rejection).
    pub fn judge_error(&self, error: &(dyn std::error::Error + 'static)) -> Option<bool> {
        match self.classifier.classify_error(error).reason() {
            Some(Reason::InvalidUrl | Reason::Body | Reason::CircuitOpen) => None,
            _ => Some(false),
        }
    }
}

/// The right to send one call, from [`CircuitBreaker::try_acquire`].
///
/// Hand it back with [`CircuitBreaker::record`]. Dropping it records nothing; if it was the
/// half-open probe, the probe slot is freed for the next caller.
#[derive(Debug)]
#[must_use = "record the result with CircuitBreaker::record"]
pub struct Permit {
    slot: Option<Slot>,
}

#[derive(Debug)]
struct Slot {
    shared: Arc<Shared>,
    host: Arc<str>,
    generation: u64,
    probe: bool,
}

impl Permit {
    fn untracked() -> Self {
        Permit { slot: None }
    }

    /// `true` if this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.slot.as_ref().is_some_and(|s| s.probe)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if !slot.probe {
            return;
        }
        let mut hosts = slot.shared.hosts();
        if let Some(state) = hosts.get_mut(&*slot.host) {
            if state.generation == slot.generation {
                if let Phase::HalfOpen { probing, .. } = &mut state.phase {
                    *probing = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "example.com:443";

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(CircuitBreakerConfig::new().open_for(Duration::from_secs(60)))
    }

    fn fail(b: &CircuitBreaker, n: usize, now: Instant) {
        for _ in 0..n {
            let permit = b.try_acquire_at(HOST, now).expect("admitted");
            b.record_at(permit, false, now);
        }
    }

    #[test]
    fn five_consecutive_failures_open() {
        let b = breaker();
        let now = Instant::now();
        fail(&b, 4, now);
        assert_eq!(b.state_at(HOST, now), CircuitState::Closed);
        fail(&b, 1, now);
        assert_eq!(b.state_at(HOST, now), CircuitState::Open);
        let err = b.try_acquire_at(HOST, now).unwrap_err();
        assert_eq!(&*err.host, HOST);
        // Other hosts are unaffected.
        assert!(b.try_acquire_at("other:443", now).is_ok());
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breaker();
        let now = Instant::now();
        fail(&b, 4, now);
        let permit = b.try_acquire_at(HOST, now).unwrap();
        b.record_at(permit, true, now);
        fail(&b, 4, now);
        assert_eq!(b.state_at(HOST, now), CircuitState::Closed);
        fail(&b, 1, now);
        assert_eq!(b.state_at(HOST, now), CircuitState::Open);
    }

    #[test]
    fn dropped_permits_in_closed_state_count_for_nothing() {
        let b = breaker();
        let now = Instant::now();
        fail(&b, 4, now);
        drop(b.try_acquire_at(HOST, now).unwrap());
        assert_eq!(b.state_at(HOST, now), CircuitState::Closed);
        fail(&b, 1, now);
        assert_eq!(b.state_at(HOST, now), CircuitState::Open);
    }

    #[test]
    fn half_open_admits_exactly_one_probe_and_closes_after_two_successes() {
        let b = breaker();
        let t0 = Instant::now();
        fail(&b, 5, t0);
        assert!(
            b.try_acquire_at(HOST, t0 + Duration::from_secs(59))
                .is_err()
        );

        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(b.state_at(HOST, t1), CircuitState::HalfOpen);
        let probe = b.try_acquire_at(HOST, t1).expect("first probe");
        assert!(probe.is_probe());
        assert!(
            b.try_acquire_at(HOST, t1).is_err(),
            "second concurrent probe"
        );
        b.record_at(probe, true, t1);
        assert_eq!(b.state_at(HOST, t1), CircuitState::HalfOpen);

        let probe = b.try_acquire_at(HOST, t1).expect("second probe");
        assert!(b.try_acquire_at(HOST, t1).is_err());
        b.record_at(probe, true, t1);
        assert_eq!(b.state_at(HOST, t1), CircuitState::Closed);
        let permit = b.try_acquire_at(HOST, t1).unwrap();
        assert!(!permit.is_probe());
        assert!(b.try_acquire_at(HOST, t1).is_ok(), "closed: no limit");
        drop(permit);
    }

    #[test]
    fn a_half_open_failure_reopens() {
        let b = breaker();
        let t0 = Instant::now();
        fail(&b, 5, t0);
        let t1 = t0 + Duration::from_secs(60);
        let probe = b.try_acquire_at(HOST, t1).unwrap();
        b.record_at(probe, true, t1);
        let probe = b.try_acquire_at(HOST, t1).unwrap();
        b.record_at(probe, false, t1);
        assert_eq!(b.state_at(HOST, t1), CircuitState::Open);
        assert!(
            b.try_acquire_at(HOST, t1 + Duration::from_secs(59))
                .is_err()
        );
        // A fresh open period, then a fresh half-open with its success count reset.
        let t2 = t1 + Duration::from_secs(60);
        let probe = b.try_acquire_at(HOST, t2).unwrap();
        b.record_at(probe, true, t2);
        assert_eq!(b.state_at(HOST, t2), CircuitState::HalfOpen);
    }

    #[test]
    fn a_cancelled_probe_frees_the_slot() {
        let b = breaker();
        let t0 = Instant::now();
        fail(&b, 5, t0);
        let t1 = t0 + Duration::from_secs(60);
        let probe = b.try_acquire_at(HOST, t1).unwrap();
        assert!(b.try_acquire_at(HOST, t1).is_err());
        drop(probe);
        let probe = b.try_acquire_at(HOST, t1).expect("slot freed");
        assert!(probe.is_probe());
    }

    #[test]
    fn results_from_before_a_transition_are_ignored() {
        let b = breaker();
        let t0 = Instant::now();
        let slow = b.try_acquire_at(HOST, t0).unwrap(); // admitted while closed
        fail(&b, 5, t0);
        let t1 = t0 + Duration::from_secs(60);
        let probe = b.try_acquire_at(HOST, t1).unwrap();
        // The slow closed-era call fails late: it must not reopen the half-open circuit...
        b.record_at(slow, false, t1);
        assert_eq!(b.state_at(HOST, t1), CircuitState::HalfOpen);
        // ...and the probe slot is still taken.
        assert!(b.try_acquire_at(HOST, t1).is_err());
        b.record_at(probe, true, t1);
    }

    #[test]
    fn an_open_period_of_duration_max_never_panics_and_never_ends() {
        let b = CircuitBreaker::new(CircuitBreakerConfig::new().open_for(Duration::MAX));
        let now = Instant::now();
        let permit = b.try_acquire_at(HOST, now).unwrap();
        b.record_at(permit, true, now);
        fail(&b, 5, now);
        let later = now + Duration::from_secs(365 * 24 * 3600);
        assert_eq!(b.state_at(HOST, later), CircuitState::Open);
        assert!(b.try_acquire_at(HOST, later).is_err());
    }

    #[test]
    fn host_table_is_bounded() {
        let b = CircuitBreaker::new(CircuitBreakerConfig::new().max_hosts(2));
        let now = Instant::now();
        for host in ["a:1", "b:1"] {
            let p = b.try_acquire_at(host, now).unwrap();
            b.record_at(p, false, now);
        }
        // Both tracked hosts have failures: a third host passes unguarded.
        let p = b.try_acquire_at("c:1", now).unwrap();
        b.record_at(p, false, now);
        assert_eq!(b.shared.hosts().len(), 2);
        // Once a host is healthy again it can be forgotten to make room.
        let p = b.try_acquire_at("a:1", now).unwrap();
        b.record_at(p, true, now);
        drop(b.try_acquire_at("c:1", now).unwrap());
        assert!(b.shared.hosts().contains_key("c:1"));
        assert!(!b.shared.hosts().contains_key("a:1"));
    }

    #[test]
    fn judging_responses() {
        use http::{HeaderMap, StatusCode};
        let b = breaker();
        let h = HeaderMap::new();
        for (code, verdict) in [
            (200, Some(true)),
            (304, Some(true)),
            (401, None),
            (403, None),
            (404, None),
            (429, Some(false)),
            (408, Some(false)),
            (500, Some(false)),
            (501, Some(false)),
            (503, Some(false)),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(b.judge_response(status, &h), verdict, "{code}");
        }
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(b.judge_error(&refused), Some(false));
        assert_eq!(b.judge_error(&CircuitOpen::new("x")), None);
    }
}
