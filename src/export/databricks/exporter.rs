//! [`DatabricksExporter`]: the `tower::Service<Batch>` that uploads one batch, and the circuit
//! breaker held around each upload.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use kasal_classify::{CircuitBreaker, Permit};
use kasal_trace::redact_error;
use tower::ServiceExt;

use super::beacon::Beacon;
use super::client::HttpClient;
use super::errors::ExportError;
use super::flags::{FeatureFlagCache, FlagValue};
use super::host::WorkspaceHost;
use super::payload::{PayloadOptions, SystemConfiguration, encode_upload, parse_response};
use super::stats::{ExporterStats, Report, bump};
use crate::credentials::Credentials;
use crate::event::Batch;
use crate::export::undelivered::{SkipReason, Undelivered};
use crate::pipeline::config::disabling_var;

/// Exports [`Batch`]es to a Databricks workspace. Cheap to clone; clones share the client, the
/// circuit breaker and the counters. See the [module docs](super).
#[derive(Clone)]
pub struct DatabricksExporter {
    inner: Arc<Inner>,
}

/// Everything an export needs, set once by the builder.
pub(super) struct Inner {
    pub(super) host: WorkspaceHost,
    pub(super) ext_uri: Uri,
    pub(super) unauth_uri: Uri,
    pub(super) client: HttpClient,
    pub(super) breaker: CircuitBreaker,
    pub(super) credentials: Option<Arc<dyn Credentials>>,
    pub(super) flags: Option<FeatureFlagCache>,
    pub(super) gzip: bool,
    pub(super) credentials_timeout: Duration,
    pub(super) deadline: Duration,
    pub(super) workspace_id: Option<u64>,
    pub(super) user_agent: Arc<str>,
    pub(super) system: Arc<SystemConfiguration>,
    pub(super) report: Report,
    /// The usage beacon, when on.
    pub(super) beacon: Option<Beacon>,
}

impl fmt::Debug for DatabricksExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabricksExporter")
            .field("host", &self.inner.host)
            .field("authenticated", &self.inner.credentials.is_some())
            .field("forced", &self.inner.flags.is_none())
            .finish_non_exhaustive()
    }
}

impl DatabricksExporter {
    pub(super) fn from_inner(inner: Inner) -> DatabricksExporter {
        DatabricksExporter {
            inner: Arc::new(inner),
        }
    }

    /// The validated host.
    pub fn host(&self) -> &WorkspaceHost {
        &self.inner.host
    }

    /// The circuit breaker guarding the uploads (its state per host).
    pub fn circuit_breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// Counters so far.
    pub fn stats(&self) -> ExporterStats {
        let mut stats = self.inner.report.snapshot();
        if let Some(beacon) = &self.inner.beacon {
            stats.beacons_sent = beacon.sent.load(Ordering::Relaxed);
            stats.beacons_failed = beacon.failed.load(Ordering::Relaxed);
        }
        stats
    }
}

/// The breaker's permit for one upload, settled exactly once: by the upload's outcome, or, if
/// the upload is dropped before it ends (a deadline outside the exporter, a runtime shutting
/// down), as a failure. A timeout at any layer is therefore a failure the breaker sees.
struct Upload<'a> {
    inner: &'a Inner,
    permit: Option<Permit>,
}

impl Upload<'_> {
    /// `Some(true)` success, `Some(false)` failure, `None` neither (the host answered).
    fn settle(&mut self, verdict: Option<bool>) {
        if let Some(permit) = self.permit.take() {
            match verdict {
                Some(success) => self.inner.breaker.record(permit, success),
                None => drop(permit),
            }
        }
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.inner.breaker.record(permit, false);
            bump(&self.inner.report.failed);
            self.inner
                .report
                .failing("export abandoned before it finished (a deadline outside the exporter)");
        }
    }
}

impl Inner {
    async fn export(&self, mut batch: Batch) -> Result<(), ExportError> {
        // The drivers' schema has no field for model tokens: they leave by the beacon, if on.
        let usage = std::mem::take(&mut batch.usage);
        let beacon = self.beacon.as_ref().filter(|_| !usage.is_empty());
        if batch.is_empty() && beacon.is_none() {
            return Ok(());
        }
        let rollups = batch.rollups.len() as u64;
        if let Some(variable) = disabling_var() {
            return Err(self.skip(SkipReason::DisabledByEnv, &batch, variable, || {
                format!("export is disabled by {variable}")
            }));
        }
        let mut authorization = None;
        if let Some(beacon) = beacon {
            let credentials = self.authorization().await;
            beacon
                .send(
                    &self.client,
                    &self.user_agent,
                    &usage,
                    credentials.as_ref(),
                    self.deadline,
                )
                .await;
            if batch.is_empty() {
                return Ok(());
            }
            authorization = Some(credentials);
        }
        if batch.operations.is_empty() {
            // Only rollups: nothing this endpoint takes (see the payload module).
            self.report
                .rollups_not_sent
                .fetch_add(rollups, Ordering::Relaxed);
            return Err(Undelivered::Partial {
                delivered: 0,
                rejected: 0,
                not_supported: rollups,
            }
            .into());
        }
        if let Some(flags) = &self.flags {
            let value = flags.check(&self.host).await;
            if !flags.allows(value) {
                return Err(self.skip_for_flag(flags, value, &batch));
            }
        }
        let authorization = match authorization {
            Some(known) => known,
            None => self.authorization().await,
        };
        let authenticated = authorization.is_some();
        let options = PayloadOptions {
            authenticated,
            workspace_id: self.workspace_id,
            user_agent: self.user_agent.clone(),
            system: self.system.clone(),
        };
        // Encoded once: retries re-send these exact bytes (and ids).
        let body = encode_upload(&batch, &options, SystemTime::now());
        let logs = batch.operations.len() as u64;
        let request = self.request(body, authorization)?;
        // From here to the answer, every way the export ends is recorded by the breaker.
        let Ok(permit) = self.breaker.try_acquire(self.host.authority()) else {
            bump(&self.report.dropped_circuit_open);
            self.report.failing("circuit breaker open");
            return Err(ExportError::CircuitOpen);
        };
        let mut upload = Upload {
            inner: self,
            permit: Some(permit),
        };
        if !authenticated {
            bump(&self.report.unauthenticated);
        }

        let outcome =
            tokio::time::timeout(self.deadline, self.client.clone().oneshot(request)).await;
        let report = &self.report;
        let response = match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                upload.settle(self.breaker.judge_error(&*error));
                bump(&report.failed);
                let message = redact_error(&*error);
                report.failing(&message);
                return Err(ExportError::Transport(message));
            }
            Err(_elapsed) => {
                upload.settle(Some(false));
                bump(&report.failed);
                report.failing("export deadline passed");
                return Err(ExportError::Timeout);
            }
        };
        let status = response.status();
        upload.settle(self.breaker.judge_response(status, response.headers()));
        if !status.is_success() {
            let error = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                bump(&report.dropped_unauthorized);
                ExportError::Unauthorized(status)
            } else if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                bump(&report.dropped_rejected);
                ExportError::Rejected(status)
            } else {
                bump(&report.failed);
                ExportError::Status(status)
            };
            report.failing(&error.to_string());
            return Err(error);
        }

        bump(&report.sent);
        report.healthy();
        let answer = parse_response(response.body());
        let stored = match answer.as_ref().and_then(|a| a.num_proto_success) {
            Some(stored) => stored.min(logs),
            None => {
                bump(&report.unreadable_answers);
                logs
            }
        };
        let rejected = logs - stored;
        report.logs_sent.fetch_add(stored, Ordering::Relaxed);
        if rejected > 0 {
            let first_error = answer.as_ref().and_then(|a| a.errors.first());
            report.rejected(rejected, logs, first_error.map(String::as_str));
        }
        report
            .rollups_not_sent
            .fetch_add(rollups, Ordering::Relaxed);
        tracing::debug!(logs, stored, authenticated, "telemetry batch exported");
        if rejected == 0 && rollups == 0 {
            Ok(())
        } else {
            Err(Undelivered::Partial {
                delivered: stored,
                rejected,
                not_supported: rollups,
            }
            .into())
        }
    }

    /// Counts a skipped batch (the first per reason logs one WARN naming `setting`).
    fn skip(
        &self,
        reason: SkipReason,
        batch: &Batch,
        setting: &str,
        why: impl FnOnce() -> String,
    ) -> ExportError {
        self.report.skipped(reason, batch.len(), setting, &why());
        Undelivered::Skipped(reason).into()
    }

    fn skip_for_flag(
        &self,
        flags: &FeatureFlagCache,
        value: FlagValue,
        batch: &Batch,
    ) -> ExportError {
        let flag = flags.flag();
        let (client, version) = (flags.client(), flags.client_version());
        match value {
            FlagValue::Off => self.skip(
                SkipReason::FlagOff,
                batch,
                "DatabricksExporterBuilder::force_enabled",
                || format!("the workspace's feature flag `{flag}` is off"),
            ),
            FlagValue::Unknown => self.skip(
                SkipReason::FlagUnknown,
                batch,
                "FeatureFlagCacheBuilder::unknown_flag",
                || {
                    format!(
                        "the workspace does not know the feature flag `{flag}` for client \
                         `{client}` version `{version}` (404 or absent; see also \
                         FeatureFlagCacheBuilder::client_name, client_version, flag)"
                    )
                },
            ),
            _ => self.skip(
                SkipReason::FlagUnavailable,
                batch,
                "DatabricksExporterBuilder::force_enabled",
                || {
                    format!(
                        "the feature flag `{flag}` could not be fetched and no earlier value \
                         is known (retried after FeatureFlagCacheBuilder::failure_backoff)"
                    )
                },
            ),
        }
    }

    /// The Authorization value, or `None` (none configured, `None`, an error, or too slow).
    async fn authorization(&self) -> Option<HeaderValue> {
        let credentials = self.credentials.as_ref()?;
        match tokio::time::timeout(self.credentials_timeout, credentials.authorization()).await {
            Ok(Ok(Some(mut value))) => {
                value.set_sensitive(true);
                Some(value)
            }
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::debug!(error = %redact_error(&*error), "telemetry credentials failed; sending unauthenticated");
                None
            }
            Err(_) => {
                tracing::debug!("telemetry credentials timed out; sending unauthenticated");
                None
            }
        }
    }

    fn request(
        &self,
        body: Bytes,
        authorization: Option<HeaderValue>,
    ) -> Result<Request<Full<Bytes>>, ExportError> {
        let uri = if authorization.is_some() {
            self.ext_uri.clone()
        } else {
            self.unauth_uri.clone()
        };
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let body = if self.gzip {
            builder = builder.header(header::CONTENT_ENCODING, "gzip");
            gzip(&body)
        } else {
            body
        };
        builder
            .body(Full::new(body))
            .map_err(|e| ExportError::Transport(e.to_string()))
    }
}

#[cfg(feature = "gzip")]
fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

#[cfg(not(feature = "gzip"))]
fn gzip(body: &[u8]) -> Bytes {
    // Unreachable: `build` refuses gzip(true) without the feature.
    Bytes::copy_from_slice(body)
}

/// The future of [`DatabricksExporter::call`](tower::Service::call).
pub struct ExportFuture {
    inner: Pin<Box<dyn Future<Output = Result<(), ExportError>> + Send>>,
}

impl fmt::Debug for ExportFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportFuture")
    }
}

impl Future for ExportFuture {
    type Output = Result<(), ExportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl tower::Service<Batch> for DatabricksExporter {
    type Response = ();
    type Error = ExportError;
    type Future = ExportFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        let inner = self.inner.clone();
        ExportFuture {
            inner: Box::pin(async move { inner.export(batch).await }),
        }
    }
}
