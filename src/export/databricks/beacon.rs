//! Kasal's compatibility beacon: the model token sums of a window, reported the way Kasal's
//! Python telemetry does, in the User-Agent of a `GET {host}/api/2.0/serving-endpoints`:
//!
//! ```text
//! User-Agent: kasal_telemetry/<version>/<product>/model=<model>/input_tokens=<n>/output_tokens=<n>
//! ```
//!
//! One request per (product, model) per window (one per [`UsageRollup`]), never one per
//! completion, through the exporter's own client (circuit breaker, retry, timeout). Off unless
//! [`usage_beacon(true)`](super::DatabricksExporterBuilder::usage_beacon). The answer is not read;
//! a failure is counted and forgotten. Must never carry anything but the product, the model
//! name and the two sums.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;
use tower::ServiceExt;

use super::client::HttpClient;
use crate::event::UsageRollup;

/// The beacon of one exporter: where it goes and what happened so far.
#[derive(Debug)]
pub(crate) struct Beacon {
    uri: Uri,
    pub(crate) sent: AtomicU64,
    pub(crate) failed: AtomicU64,
}

impl Beacon {
    pub(crate) fn new(uri: Uri) -> Beacon {
        Beacon {
            uri,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Sends one request per usage rollup, concurrently, all within `deadline`.
    pub(crate) async fn send(
        &self,
        client: &HttpClient,
        prefix: &str,
        usage: &[UsageRollup],
        authorization: Option<&HeaderValue>,
        deadline: Duration,
    ) {
        let requests = usage.iter().filter_map(|rollup| {
            let user_agent = HeaderValue::from_str(&user_agent(prefix, rollup)).ok()?;
            let mut request = Request::builder()
                .method(Method::GET)
                .uri(self.uri.clone())
                .header(header::USER_AGENT, user_agent);
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value.clone());
            }
            let request = request.body(Full::new(Bytes::new())).ok()?;
            Some(async move {
                let sent = matches!(
                    client.clone().oneshot(request).await,
                    Ok(response) if response.status().is_success()
                );
                let counter = if sent { &self.sent } else { &self.failed };
                counter.fetch_add(1, Ordering::Relaxed);
            })
        });
        let all = futures_util::future::join_all(requests);
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::debug!("telemetry usage beacon timed out");
        }
    }
}

/// `<prefix>/<product>/model=<model>/input_tokens=<n>/output_tokens=<n>`, where `prefix` is
/// `kasal_telemetry/<version>`. Characters of the model outside `[0-9A-Za-z_.+-]` (a `/` in
/// `org/model`) become `_`, so the value stays one User-Agent token.
pub(crate) fn user_agent(prefix: &str, rollup: &UsageRollup) -> String {
    let model: String = rollup
        .model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{prefix}/{}/model={model}/input_tokens={}/output_tokens={}",
        rollup.product.as_str(),
        rollup.usage.input_tokens,
        rollup.usage.output_tokens
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use kasal_trace::Usage;
    use kasal_user_agent::Product;

    use super::*;

    #[test]
    fn the_exact_format() {
        let rollup = UsageRollup {
            product: Product::Llm,
            model: Arc::from("org/llama-3.3 70b"),
            window_start: SystemTime::UNIX_EPOCH,
            window_end: SystemTime::UNIX_EPOCH,
            calls: 3,
            usage: Usage::new(1200, 345),
            input_histogram: Default::default(),
            output_histogram: Default::default(),
        };
        assert_eq!(
            user_agent("kasal_telemetry/0.1.0", &rollup),
            "kasal_telemetry/0.1.0/llm/model=org_llama-3.3_70b/input_tokens=1200/output_tokens=345"
        );
    }
}
