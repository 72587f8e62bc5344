//! The server-side switch for telemetry export: a per-host cache of the workspace's connector
//! feature flags.
//!
//! [`FeatureFlagCache::check`] says what the workspace answered for the flag, asking the server
//! at most once per TTL per host:
//!
//! - `GET {host}/api/2.0/connector-service/feature-flags/{client}/{version}`;
//! - response `{"flags": [{"name": "...", "value": "true"}], "ttl_seconds": 900}`;
//! - the value is cached for `ttl_seconds` clamped to 60–3600 s (15 min when absent);
//! - one fetch in flight per host: concurrent callers wait for the same fetch;
//! - a 404, or a 2xx without the flag, means the server does not know the flag:
//!   [`FlagValue::Unknown`], whose meaning is the [`UnknownFlag`] policy;
//! - on failure (transport error, other non-2xx, malformed body) the last known value is kept
//!   ([`FlagValue::Unavailable`] if there is none) and the next fetch is attempted after a short
//!   back-off (60 s by default); malformed bodies are counted in [`FlagStats::malformed`].
//!
//! # The settings and their defaults
//!
//! The server only knows the clients and flags the Databricks drivers registered: `NODEJS`
//! (`…enableTelemetryForNodeJs`), `GOLANG` (`…enableTelemetryForGoDriver`), `PYTHON`
//! (`…enableTelemetryForPythonDriver`), `OSS_JDBC` (`…enableTelemetryForJdbc`), `ADBC`. A client
//! it does not know is answered 404, and the flag then never turns on. The defaults are the
//! Python connector's client and flag ([`FeatureFlagCache::DEFAULT_CLIENT`],
//! [`FeatureFlagCache::DEFAULT_FLAG`]), because Kasal's services run beside the Python connector
//! and the workspace's answer for it is the closest consent the server can give; the version
//! is this crate's `MAJOR.MINOR.PATCH` (the server keys off the triplet only: the Node.js
//! driver strips its `-oss` suffix because "anything appended would 404"). A workspace whose
//! server keys flags by driver version may not know ours: that is answered 404 or without the
//! flag, which is [`FlagValue::Unknown`], and the [`UnknownFlag`] policy (default
//! [`UnknownFlag::Skip`]) decides. Every one of these is a setting of
//! [`FeatureFlagCacheBuilder`]: [`client`](FeatureFlagCacheBuilder::client),
//! [`client_version`](FeatureFlagCacheBuilder::client_version),
//! [`flag`](FeatureFlagCacheBuilder::flag), [`unknown_flag`](FeatureFlagCacheBuilder::unknown_flag).
//!
//! It must never block or fail the caller: every error becomes "last known value". It runs in the
//! telemetry pipeline's task, not on the application's request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use tokio::time::Instant;
use tower::ServiceExt;

use super::client::{self, HttpClient, Transport};
use super::errors::{FlagCacheBuildError, TlsError};
use super::host::WorkspaceHost;
use crate::credentials::Credentials;
use crate::pipeline::config::MAX_DURATION;

/// Counters of a [`FeatureFlagCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlagStats {
    /// Requests sent to the flag endpoint.
    pub fetches: u64,
    /// Fetches that failed (transport error, timeout, non-2xx other than 404).
    pub failures: u64,
    /// 2xx responses whose body was not `{flags: [...]}`: ignored.
    pub malformed: u64,
    /// Answers that did not know the flag (404, or a 2xx without it).
    pub unknown: u64,
}

/// What the workspace says about the flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlagValue {
    /// The flag is `true`.
    On,
    /// The flag is anything else.
    Off,
    /// The server does not know the flag: the flag endpoint answered 404 (an unregistered
    /// client or version), or its answer did not list the flag.
    Unknown,
    /// The flag could not be fetched and no earlier answer is known.
    Unavailable,
}

/// What [`FlagValue::Unknown`] means for export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownFlag {
    /// Do not export; batches are counted as skipped (`flag_unknown`). The default: the
    /// workspace has not said yes.
    #[default]
    Skip,
    /// Export, as if the flag were on (for workspaces that have not registered a flag and whose
    /// owner agreed to telemetry otherwise).
    Export,
}

/// What the cache currently holds for one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlagState {
    /// The last answer ([`FlagValue::Unavailable`] when never fetched successfully).
    pub value: FlagValue,
    /// The TTL applied at the last successful fetch, after clamping.
    pub ttl: Option<Duration>,
    /// Whether the value is still fresh.
    pub fresh: bool,
}

#[derive(Default)]
struct Snapshot {
    /// Never `Unavailable`: `None` until the first successful fetch.
    value: Option<FlagValue>,
    ttl: Option<Duration>,
    expires: Option<Instant>,
}

impl Snapshot {
    fn fresh(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now < at)
    }

    fn value(&self) -> FlagValue {
        self.value.unwrap_or(FlagValue::Unavailable)
    }
}

#[derive(Default)]
struct HostEntry {
    /// Read without waiting; never held across an await.
    snapshot: Mutex<Snapshot>,
    /// Held while a fetch is in flight, so there is at most one per host.
    fetching: tokio::sync::Mutex<()>,
}

struct Inner {
    client: HttpClient,
    credentials: Option<Arc<dyn Credentials>>,
    client_name: Arc<str>,
    client_version: Arc<str>,
    flag: Arc<str>,
    unknown_flag: UnknownFlag,
    path: Arc<str>,
    default_ttl: Duration,
    min_ttl: Duration,
    max_ttl: Duration,
    failure_backoff: Duration,
    timeout: Duration,
    hosts: Mutex<HashMap<WorkspaceHost, Arc<HostEntry>>>,
    fetches: AtomicU64,
    failures: AtomicU64,
    malformed: AtomicU64,
    unknown: AtomicU64,
}

/// A per-host cache of the telemetry feature flag. Cheap to clone; clones share the cache.
///
/// ```no_run
/// use kasal_telemetry::credentials::EnvToken;
/// use kasal_telemetry::export::databricks::{FlagValue, validate_host};
/// use kasal_telemetry::FeatureFlagCache;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let flags = FeatureFlagCache::builder().credentials(EnvToken::new()).build().unwrap();
/// let host = validate_host("adb-123.4.azuredatabricks.net", false).unwrap();
/// if flags.check(&host).await == FlagValue::On {
///     // export
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct FeatureFlagCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FeatureFlagCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureFlagCache")
            .field("client", &self.inner.client_name)
            .field("client_version", &self.inner.client_version)
            .field("flag", &self.inner.flag)
            .field("unknown_flag", &self.inner.unknown_flag)
            .field("default_ttl", &self.inner.default_ttl)
            .finish_non_exhaustive()
    }
}

impl FeatureFlagCache {
    /// The default client name in the flag endpoint's path: the Python connector's.
    pub const DEFAULT_CLIENT: &'static str = "PYTHON";
    /// The default flag that turns export on: the Python connector's.
    pub const DEFAULT_FLAG: &'static str =
        "databricks.partnerplatform.clientConfigsFeatureFlags.enableTelemetryForPythonDriver";
    /// TTL when the server does not send one.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
    /// Lower bound for the server's `ttl_seconds`.
    pub const MIN_TTL: Duration = Duration::from_secs(60);
    /// Upper bound for the server's `ttl_seconds`.
    pub const MAX_TTL: Duration = Duration::from_secs(3600);

    /// A builder with the defaults above.
    pub fn builder() -> FeatureFlagCacheBuilder {
        FeatureFlagCacheBuilder::default()
    }

    /// The default client version: this crate's `MAJOR.MINOR.PATCH` (anything after it cut).
    pub fn default_client_version() -> &'static str {
        let version = env!("CARGO_PKG_VERSION");
        version.split(['-', '+']).next().unwrap_or(version)
    }

    /// What the workspace says about the flag for `host`: the cached answer if fresh, else the
    /// result of one fetch shared with every concurrent caller. Never fails.
    pub async fn check(&self, host: &WorkspaceHost) -> FlagValue {
        let entry = self.entry(host);
        if let Some(value) = self.fresh_value(&entry) {
            return value;
        }
        let _in_flight = entry.fetching.lock().await;
        // Whoever held the lock before us may have refreshed it.
        if let Some(value) = self.fresh_value(&entry) {
            return value;
        }
        let fetched = self.fetch(host).await;
        let mut snapshot = lock(&entry.snapshot);
        let now = Instant::now();
        match fetched {
            Ok((value, ttl)) => {
                snapshot.value = Some(value);
                snapshot.ttl = Some(ttl);
                snapshot.expires = Some(now + ttl);
            }
            Err(()) => snapshot.expires = Some(now + self.inner.failure_backoff),
        }
        snapshot.value()
    }

    /// Whether export is enabled for `host`: the flag is on, or unknown and the
    /// [`UnknownFlag`] policy says export.
    pub async fn is_enabled(&self, host: &WorkspaceHost) -> bool {
        self.allows(self.check(host).await)
    }

    /// Whether `value` allows export under this cache's [`UnknownFlag`] policy.
    pub fn allows(&self, value: FlagValue) -> bool {
        match value {
            FlagValue::On => true,
            FlagValue::Unknown => self.inner.unknown_flag == UnknownFlag::Export,
            _ => false,
        }
    }

    /// The flag read.
    pub fn flag(&self) -> &str {
        &self.inner.flag
    }

    /// The client name in the flag endpoint's path.
    pub fn client(&self) -> &str {
        &self.inner.client_name
    }

    /// The client version in the flag endpoint's path.
    pub fn client_version(&self) -> &str {
        &self.inner.client_version
    }

    /// What the cache holds for `host`, without fetching.
    pub fn state(&self, host: &WorkspaceHost) -> Option<FlagState> {
        let entry = lock(&self.inner.hosts).get(host).cloned()?;
        let snapshot = lock(&entry.snapshot);
        Some(FlagState {
            value: snapshot.value(),
            ttl: snapshot.ttl,
            fresh: snapshot.fresh(Instant::now()),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> FlagStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FlagStats {
            fetches: get(&self.inner.fetches),
            failures: get(&self.inner.failures),
            malformed: get(&self.inner.malformed),
            unknown: get(&self.inner.unknown),
        }
    }

    fn entry(&self, host: &WorkspaceHost) -> Arc<HostEntry> {
        lock(&self.inner.hosts)
            .entry(host.clone())
            .or_default()
            .clone()
    }

    fn fresh_value(&self, entry: &HostEntry) -> Option<FlagValue> {
        let snapshot = lock(&entry.snapshot);
        snapshot.fresh(Instant::now()).then(|| snapshot.value())
    }

    async fn fetch(&self, host: &WorkspaceHost) -> Result<(FlagValue, Duration), ()> {
        let inner = &self.inner;
        inner.fetches.fetch_add(1, Ordering::Relaxed);
        let failed = || {
            inner.failures.fetch_add(1, Ordering::Relaxed);
            Err(())
        };
        let authorization = match &inner.credentials {
            Some(credentials) => {
                match tokio::time::timeout(inner.timeout, credentials.authorization()).await {
                    Ok(Ok(value)) => value,
                    _ => None,
                }
            }
            None => None,
        };
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(host.uri(&inner.path))
            .header(header::ACCEPT, "application/json");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let Ok(request) = request.body(Full::new(Bytes::new())) else {
            return failed();
        };
        let response = match inner.client.clone().oneshot(request).await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                tracing::debug!(%host, client = %inner.client_name, version = %inner.client_version, "feature flag endpoint does not know this client (404)");
                inner.unknown.fetch_add(1, Ordering::Relaxed);
                return Ok((FlagValue::Unknown, inner.default_ttl));
            }
            Ok(response) => {
                tracing::debug!(status = %response.status(), %host, "feature flag fetch failed");
                return failed();
            }
            Err(error) => {
                tracing::debug!(error = %kasal_trace::redact_error(&*error), %host, "feature flag fetch failed");
                return failed();
            }
        };
        match parse_flags(response.body(), &inner.flag) {
            Some((found, ttl)) => {
                let ttl = ttl
                    .map(|secs| Duration::from_secs(secs).clamp(inner.min_ttl, inner.max_ttl))
                    .unwrap_or(inner.default_ttl);
                let value = match found {
                    Some(true) => FlagValue::On,
                    Some(false) => FlagValue::Off,
                    None => {
                        inner.unknown.fetch_add(1, Ordering::Relaxed);
                        FlagValue::Unknown
                    }
                };
                tracing::debug!(flag = %inner.flag, ?value, ?ttl, %host, "feature flag fetched");
                Ok((value, ttl))
            }
            None => {
                tracing::debug!(%host, "feature flag response malformed; ignored");
                inner.malformed.fetch_add(1, Ordering::Relaxed);
                Err(())
            }
        }
    }
}

/// `Some((value, ttl_seconds))` for a well-formed body; the value is `None` when the flag is
/// not listed.
fn parse_flags(body: &[u8], flag: &str) -> Option<(Option<bool>, Option<u64>)> {
    #[derive(serde::Deserialize)]
    struct Response {
        flags: Vec<Flag>,
        #[serde(default)]
        ttl_seconds: Option<serde_json::Number>,
    }
    #[derive(serde::Deserialize)]
    struct Flag {
        name: String,
        value: serde_json::Value,
    }
    let response: Response = serde_json::from_slice(body).ok()?;
    let value = response
        .flags
        .iter()
        .find(|f| f.name == flag)
        .map(|f| match &f.value {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::String(s) => s.eq_ignore_ascii_case("true"),
            _ => false,
        });
    let ttl = response.ttl_seconds.and_then(|n| {
        n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        })
    });
    Some((value, ttl))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another caller panicked mid-update of plain data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Builds a [`FeatureFlagCache`].
#[must_use]
pub struct FeatureFlagCacheBuilder {
    client: Option<HttpClient>,
    credentials: Option<Arc<dyn Credentials>>,
    client_name: Arc<str>,
    client_version: Arc<str>,
    flag: Arc<str>,
    unknown_flag: UnknownFlag,
    default_ttl: Duration,
    min_ttl: Duration,
    max_ttl: Duration,
    failure_backoff: Duration,
    timeout: Duration,
}

impl Default for FeatureFlagCacheBuilder {
    fn default() -> Self {
        FeatureFlagCacheBuilder {
            client: None,
            credentials: None,
            client_name: FeatureFlagCache::DEFAULT_CLIENT.into(),
            client_version: FeatureFlagCache::default_client_version().into(),
            flag: FeatureFlagCache::DEFAULT_FLAG.into(),
            unknown_flag: UnknownFlag::default(),
            default_ttl: FeatureFlagCache::DEFAULT_TTL,
            min_ttl: FeatureFlagCache::MIN_TTL,
            max_ttl: FeatureFlagCache::MAX_TTL,
            failure_backoff: FeatureFlagCache::MIN_TTL,
            timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for FeatureFlagCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureFlagCacheBuilder")
            .field("client", &self.client_name)
            .field("client_version", &self.client_version)
            .field("flag", &self.flag)
            .field("unknown_flag", &self.unknown_flag)
            .finish_non_exhaustive()
    }
}

impl FeatureFlagCacheBuilder {
    /// Credentials for the flag request (sent without when absent or failing).
    pub fn credentials(mut self, credentials: impl Credentials) -> Self {
        self.credentials = Some(Arc::new(credentials));
        self
    }

    pub(crate) fn shared_credentials(mut self, credentials: Option<Arc<dyn Credentials>>) -> Self {
        self.credentials = credentials;
        self
    }

    /// The transport: any tower HTTP service (default: hyper-util + rustls). A User-Agent and a
    /// timeout are added on top.
    pub fn client(mut self, service: impl Transport) -> Self {
        self.client = Some(client::boxed(service));
        self
    }

    pub(crate) fn transport(mut self, transport: HttpClient) -> Self {
        self.client = Some(transport);
        self
    }

    /// The client name in the endpoint's path (default [`FeatureFlagCache::DEFAULT_CLIENT`],
    /// `PYTHON`). Must match `[A-Za-z0-9_]+`.
    pub fn client_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.client_name = name.into();
        self
    }

    /// The client version in the endpoint's path (default
    /// [`FeatureFlagCache::default_client_version`]). Must be `MAJOR.MINOR.PATCH`.
    pub fn client_version(mut self, version: impl Into<Arc<str>>) -> Self {
        self.client_version = version.into();
        self
    }

    /// The flag to read (default [`FeatureFlagCache::DEFAULT_FLAG`]).
    pub fn flag(mut self, name: impl Into<Arc<str>>) -> Self {
        self.flag = name.into();
        self
    }

    /// What a flag the server does not know (404, or absent from its answer) means (default
    /// [`UnknownFlag::Skip`]).
    pub fn unknown_flag(mut self, policy: UnknownFlag) -> Self {
        self.unknown_flag = policy;
        self
    }

    /// TTL when the server sends none (default 15 min; also how long a 404 is remembered).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Bounds for the server's `ttl_seconds` (default 60–3600 s).
    pub fn ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_ttl = min.min(max);
        self.max_ttl = max.max(min);
        self
    }

    /// How long a failed fetch keeps the last known value before trying again (default 60 s).
    pub fn failure_backoff(mut self, backoff: Duration) -> Self {
        self.failure_backoff = backoff;
        self
    }

    /// Timeout of the credentials lookup and, separately, of the flag request (default 10 s
    /// each).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the cache. Fails when a name is malformed or the default TLS client cannot be set
    /// up. Durations longer than about a year are capped, so that expiry arithmetic never
    /// overflows.
    pub fn build(self) -> Result<FeatureFlagCache, FlagCacheBuildError> {
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if self.client_name.is_empty() || !self.client_name.chars().all(is_name) {
            return Err(FlagCacheBuildError::Client);
        }
        let triplet = self.client_version.split('.').collect::<Vec<_>>();
        if triplet.len() != 3
            || triplet
                .iter()
                .any(|part| part.is_empty() || !part.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(FlagCacheBuildError::Version);
        }
        if self.flag.is_empty() || self.flag.chars().any(char::is_whitespace) {
            return Err(FlagCacheBuildError::Flag);
        }
        let cap = |duration: Duration| duration.min(MAX_DURATION);
        let transport = match self.client {
            Some(client) => client,
            None => client::https_transport().map_err(|e| TlsError(e.to_string()))?,
        };
        let path = format!(
            "/api/2.0/connector-service/feature-flags/{}/{}",
            self.client_name, self.client_version
        );
        Ok(FeatureFlagCache {
            inner: Arc::new(Inner {
                client: client::flag_stack(transport, self.timeout),
                credentials: self.credentials,
                client_name: self.client_name,
                client_version: self.client_version,
                flag: self.flag,
                unknown_flag: self.unknown_flag,
                path: path.into(),
                default_ttl: cap(self.default_ttl),
                min_ttl: cap(self.min_ttl),
                max_ttl: cap(self.max_ttl),
                failure_backoff: cap(self.failure_backoff),
                timeout: self.timeout,
                hosts: Mutex::new(HashMap::new()),
                fetches: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                malformed: AtomicU64::new(0),
                unknown: AtomicU64::new(0),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn huge_durations_never_overflow_the_clock() {
        use super::super::host::validate_host;
        let host = validate_host("adb-1.2.azuredatabricks.net", false).unwrap();
        // A cache whose server answers every request with `body` (a 500 without one).
        let cache = |body: Option<String>| {
            let server = tower::service_fn(move |_: Request<Full<Bytes>>| {
                let response = http::Response::builder()
                    .status(if body.is_some() { 200 } else { 500 })
                    .body(Full::new(Bytes::from(body.clone().unwrap_or_default())));
                async move { Ok::<_, crate::BoxError>(response?) }
            });
            FeatureFlagCache::builder()
                .client(server)
                .default_ttl(Duration::MAX)
                .ttl_bounds(Duration::ZERO, Duration::MAX)
                .failure_backoff(Duration::MAX)
                .build()
                .unwrap()
        };
        let flags = format!(
            r#""flags":[{{"name":"{}","value":"true"}}]"#,
            FeatureFlagCache::DEFAULT_FLAG
        );
        // The failure back-off, the server's TTL and the default TTL.
        assert_eq!(cache(None).check(&host).await, FlagValue::Unavailable);
        let huge_ttl = format!(r#"{{{flags},"ttl_seconds":{}}}"#, u64::MAX);
        assert!(cache(Some(huge_ttl)).is_enabled(&host).await);
        assert!(cache(Some(format!("{{{flags}}}"))).is_enabled(&host).await);
    }

    #[test]
    fn settings_are_checked() {
        let build = |builder: FeatureFlagCacheBuilder| {
            let server = tower::service_fn(|_: Request<Full<Bytes>>| async {
                Ok::<_, crate::BoxError>(http::Response::new(Full::new(Bytes::new())))
            });
            builder.client(server).build().map(|_| ())
        };
        assert_eq!(build(FeatureFlagCache::builder()), Ok(()));
        assert_eq!(
            build(FeatureFlagCache::builder().client_name("KASAL/x")),
            Err(FlagCacheBuildError::Client)
        );
        assert_eq!(
            build(FeatureFlagCache::builder().client_version("1.2.3-oss")),
            Err(FlagCacheBuildError::Version)
        );
        assert_eq!(
            build(FeatureFlagCache::builder().flag("")),
            Err(FlagCacheBuildError::Flag)
        );
        assert_eq!(FeatureFlagCache::default_client_version(), "0.1.0");
    }

    #[test]
    fn parses_flags_and_ttl() {
        let flag = FeatureFlagCache::DEFAULT_FLAG;
        let body = format!(r#"{{"flags":[{{"name":"{flag}","value":"true"}}],"ttl_seconds":120}}"#);
        assert_eq!(
            parse_flags(body.as_bytes(), flag),
            Some((Some(true), Some(120)))
        );
        let body = format!(r#"{{"flags":[{{"name":"{flag}","value":"FALSE"}}]}}"#);
        assert_eq!(
            parse_flags(body.as_bytes(), flag),
            Some((Some(false), None))
        );
        let body = format!(r#"{{"flags":[{{"name":"{flag}","value":true}}],"ttl_seconds":1.5}}"#);
        assert_eq!(
            parse_flags(body.as_bytes(), flag),
            Some((Some(true), Some(1)))
        );
        assert_eq!(parse_flags(br#"{"flags":[]}"#, flag), Some((None, None)));
        assert_eq!(parse_flags(br#"{"flag":[]}"#, flag), None);
        assert_eq!(parse_flags(b"<html>", flag), None);
        assert_eq!(parse_flags(br#"{"flags":{"a":1}}"#, flag), None);
    }
}
