//! The server-side switch for telemetry export: a per-host cache of the workspace's connector
//! feature flags.
//!
//! [`FeatureFlagCache::is_enabled`] answers whether the workspace wants telemetry from this
//! client, asking the server at most once per TTL per host:
//!
//! - `GET {host}/api/2.0/connector-service/feature-flags/{CLIENT}/{version}` where
//!   [`FeatureFlagCache::CLIENT`] is `KASAL` and the version is this crate's semver triplet;
//! - response `{"flags": [{"name": "...", "value": "true"}], "ttl_seconds": 900}`; the flag read is
//!   [`FeatureFlagCache::FLAG`]; a response without it means off;
//! - the value is cached for `ttl_seconds` clamped to 60–3600 s (15 min when absent);
//! - one fetch in flight per host: concurrent callers wait for the same fetch;
//! - on failure (transport error, non-2xx, malformed body) the last known value is kept (off if
//!   there is none) and the next fetch is attempted after a short back-off (60 s by default);
//!   malformed bodies are counted in [`FlagStats::malformed`].
//!
//! It must never block or fail the caller: every error becomes "last known value". It runs in the
//! telemetry pipeline's task, not on the application's request path.
//!
//! [`disabled_by_env`] reads `DATABRICKS_TELEMETRY_DISABLED` / `KASAL_TELEMETRY_DISABLED`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::credentials::Credentials;
use crate::export::databricks::client::{self, HttpClient};
use crate::export::databricks::{ExporterError, WorkspaceHost};
use crate::pipeline::MAX_DURATION;

/// True when one of [`DISABLE_ENV_VARS`](crate::pipeline::DISABLE_ENV_VARS)
/// (`DATABRICKS_TELEMETRY_DISABLED`, `KASAL_TELEMETRY_DISABLED`) is `1`, `true`, `yes` or `on`
/// (any case). The same rule the pipeline's builder applies.
pub fn disabled_by_env() -> bool {
    crate::pipeline::disabled_by(|name| std::env::var(name).ok())
}

/// Counters of a [`FeatureFlagCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlagStats {
    /// Requests sent to the flag endpoint.
    pub fetches: u64,
    /// Fetches that failed (transport error, timeout, non-2xx).
    pub failures: u64,
    /// 2xx responses whose body was not `{flags: [...]}`: ignored.
    pub malformed: u64,
}

/// What the cache currently holds for one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagState {
    /// The flag's value (false when never fetched successfully).
    pub enabled: bool,
    /// The TTL applied at the last successful fetch, after clamping.
    pub ttl: Option<Duration>,
    /// Whether the value is still fresh.
    pub fresh: bool,
}

#[derive(Default)]
struct Snapshot {
    value: Option<bool>,
    ttl: Option<Duration>,
    expires: Option<Instant>,
}

impl Snapshot {
    fn fresh(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now < at)
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
    flag: Arc<str>,
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
}

/// A per-host cache of the telemetry feature flag. Cheap to clone; clones share the cache.
///
/// ```no_run
/// use kasal_telemetry::credentials::EnvToken;
/// use kasal_telemetry::export::databricks::validate_host;
/// use kasal_telemetry::flags::FeatureFlagCache;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let flags = FeatureFlagCache::builder().credentials(EnvToken::new()).build().unwrap();
/// let host = validate_host("adb-123.4.azuredatabricks.net", false).unwrap();
/// if flags.is_enabled(&host).await {
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
            .field("flag", &self.inner.flag)
            .field("default_ttl", &self.inner.default_ttl)
            .finish_non_exhaustive()
    }
}

impl FeatureFlagCache {
    /// The client name in the flag endpoint's path.
    pub const CLIENT: &'static str = "KASAL";
    /// The flag that turns export on.
    pub const FLAG: &'static str =
        "databricks.partnerplatform.clientConfigsFeatureFlags.enableTelemetryForKasal";
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

    /// Whether telemetry export is enabled for `host`: the cached value if fresh, else the result
    /// of one fetch shared with every concurrent caller. Never fails.
    pub async fn is_enabled(&self, host: &WorkspaceHost) -> bool {
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
        snapshot.value.unwrap_or(false)
    }

    /// What the cache holds for `host`, without fetching.
    pub fn state(&self, host: &WorkspaceHost) -> Option<FlagState> {
        let entry = lock(&self.inner.hosts).get(host).cloned()?;
        let snapshot = lock(&entry.snapshot);
        Some(FlagState {
            enabled: snapshot.value.unwrap_or(false),
            ttl: snapshot.ttl,
            fresh: snapshot.fresh(Instant::now()),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> FlagStats {
        FlagStats {
            fetches: self.inner.fetches.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            malformed: self.inner.malformed.load(Ordering::Relaxed),
        }
    }

    fn entry(&self, host: &WorkspaceHost) -> Arc<HostEntry> {
        lock(&self.inner.hosts)
            .entry(host.clone())
            .or_default()
            .clone()
    }

    fn fresh_value(&self, entry: &HostEntry) -> Option<bool> {
        let snapshot = lock(&entry.snapshot);
        snapshot
            .fresh(Instant::now())
            .then(|| snapshot.value.unwrap_or(false))
    }

    async fn fetch(&self, host: &WorkspaceHost) -> Result<(bool, Duration), ()> {
        let inner = &self.inner;
        inner.fetches.fetch_add(1, Ordering::Relaxed);
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
            inner.failures.fetch_add(1, Ordering::Relaxed);
            return Err(());
        };
        let response = match inner.client.clone().oneshot(request).await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                tracing::debug!(status = %response.status(), %host, "feature flag fetch failed");
                inner.failures.fetch_add(1, Ordering::Relaxed);
                return Err(());
            }
            Err(error) => {
                tracing::debug!(error = %kasal_trace::redact_error(&*error), %host, "feature flag fetch failed");
                inner.failures.fetch_add(1, Ordering::Relaxed);
                return Err(());
            }
        };
        match parse_flags(response.body(), &inner.flag) {
            Some((value, ttl)) => {
                let ttl = ttl
                    .map(|secs| Duration::from_secs(secs).clamp(inner.min_ttl, inner.max_ttl))
                    .unwrap_or(inner.default_ttl);
                tracing::debug!(flag = %inner.flag, value, ?ttl, %host, "feature flag fetched");
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

/// `Some((value, ttl_seconds))` for a well-formed body; the flag is false when absent.
fn parse_flags(body: &[u8], flag: &str) -> Option<(bool, Option<u64>)> {
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
        .is_some_and(|f| match &f.value {
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
    flag: Arc<str>,
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
            flag: FeatureFlagCache::FLAG.into(),
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
            .field("flag", &self.flag)
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
    pub fn client<S, B>(mut self, service: S) -> Self
    where
        S: tower::Service<Request<Full<Bytes>>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<crate::BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::BoxError>,
    {
        self.client = Some(client::boxed(service));
        self
    }

    pub(crate) fn transport(mut self, transport: HttpClient) -> Self {
        self.client = Some(transport);
        self
    }

    /// The flag to read (default [`FeatureFlagCache::FLAG`]).
    pub fn flag(mut self, name: impl Into<Arc<str>>) -> Self {
        self.flag = name.into();
        self
    }

    /// TTL when the server sends none (default 15 min).
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

    /// Builds the cache. Fails only when the default TLS client cannot be set up. Durations
    /// longer than about a year are capped, so that expiry arithmetic never overflows.
    pub fn build(self) -> Result<FeatureFlagCache, ExporterError> {
        let cap = |duration: Duration| duration.min(MAX_DURATION);
        let transport = match self.client {
            Some(client) => client,
            None => client::https_transport().map_err(|e| ExporterError::Tls(e.to_string()))?,
        };
        Ok(FeatureFlagCache {
            inner: Arc::new(Inner {
                client: client::flag_stack(transport, self.timeout),
                credentials: self.credentials,
                flag: self.flag,
                path: format!(
                    "/api/2.0/connector-service/feature-flags/{}/{}",
                    FeatureFlagCache::CLIENT,
                    env!("CARGO_PKG_VERSION")
                )
                .into(),
                default_ttl: cap(self.default_ttl),
                min_ttl: cap(self.min_ttl),
                max_ttl: cap(self.max_ttl),
                failure_backoff: cap(self.failure_backoff),
                timeout: self.timeout,
                hosts: Mutex::new(HashMap::new()),
                fetches: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                malformed: AtomicU64::new(0),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn huge_durations_never_overflow_the_clock() {
        use crate::export::databricks::validate_host;
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
            FeatureFlagCache::FLAG
        );
        // The failure back-off, the server's TTL and the default TTL.
        assert!(!cache(None).is_enabled(&host).await);
        let huge_ttl = format!(r#"{{{flags},"ttl_seconds":{}}}"#, u64::MAX);
        assert!(cache(Some(huge_ttl)).is_enabled(&host).await);
        assert!(cache(Some(format!("{{{flags}}}"))).is_enabled(&host).await);
    }

    #[test]
    fn parses_flags_and_ttl() {
        let flag = FeatureFlagCache::FLAG;
        let body = format!(r#"{{"flags":[{{"name":"{flag}","value":"true"}}],"ttl_seconds":120}}"#);
        assert_eq!(parse_flags(body.as_bytes(), flag), Some((true, Some(120))));
        let body = format!(r#"{{"flags":[{{"name":"{flag}","value":"FALSE"}}]}}"#);
        assert_eq!(parse_flags(body.as_bytes(), flag), Some((false, None)));
        let body = format!(r#"{{"flags":[{{"name":"{flag}","value":true}}],"ttl_seconds":1.5}}"#);
        assert_eq!(parse_flags(body.as_bytes(), flag), Some((true, Some(1))));
        assert_eq!(parse_flags(br#"{"flags":[]}"#, flag), Some((false, None)));
        assert_eq!(parse_flags(br#"{"flag":[]}"#, flag), None);
        assert_eq!(parse_flags(b"<html>", flag), None);
        assert_eq!(parse_flags(br#"{"flags":{"a":1}}"#, flag), None);
    }
}
