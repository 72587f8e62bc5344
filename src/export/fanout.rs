//! [`FanOut`]: several exporters side by side on one pipeline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

use crate::BoxError;
use crate::event::Batch;

type Exporter = BoxCloneService<Batch, (), BoxError>;

/// [`FanOut`]: one pipeline, several exporters side by side (the Databricks exporter and an OTLP
/// exporter, or either with `metrics::HttpMetrics` of the feature `otel`).
///
/// Each batch is cloned to every exporter and the calls run concurrently; each exporter keeps
/// its own retry, circuit breaker and counters, so one failing backend never holds or fails the
/// others' deliveries. The fan-out succeeds when every exporter did; otherwise it fails with a
/// [`FanOutError`] saying how many did not (the pipeline counts it as one failed export, while
/// the exporters that succeeded have delivered the batch).
///
/// ```
/// use kasal_telemetry::export::FanOut;
/// use kasal_telemetry::user_agent::Product;
/// use kasal_telemetry::{InMemoryExporter, Telemetry, TelemetryLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), kasal_telemetry::BoxError> {
/// let (one, two) = (InMemoryExporter::new(), InMemoryExporter::new());
/// let telemetry = Telemetry::builder()
///     .exporter(FanOut::new().exporter(one.clone()).exporter(two.clone()))
///     .build();
///
/// let inner = tower::service_fn(|_: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// });
/// let client = ServiceBuilder::new()
///     .layer(TelemetryLayer::new(Product::Secret, telemetry.clone()))
///     .service(inner);
/// let request = http::Request::get("https://example.cloud.databricks.com/api/2.0/secrets/get")
///     .body(String::new())?;
/// drop(client.oneshot(request).await?); // the call is recorded when its body is dropped
///
/// telemetry.flush().await;
/// assert_eq!((one.total_calls(), two.total_calls()), (1, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct FanOut {
    exporters: Vec<Exporter>,
}

impl fmt::Debug for FanOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOut")
            .field("exporters", &self.exporters.len())
            .finish()
    }
}

impl FanOut {
    /// A fan-out to no exporter yet (every batch succeeds at once).
    pub fn new() -> FanOut {
        FanOut::default()
    }

    /// Adds an exporter: any cloneable `tower::Service<Batch>` (clones must share their state,
    /// as every exporter of this crate does).
    pub fn exporter<E>(mut self, exporter: E) -> FanOut
    where
        E: Service<Batch, Response = ()> + Clone + Send + 'static,
        E::Error: Into<BoxError>,
        E::Future: Send + 'static,
    {
        self.exporters
            .push(BoxCloneService::new(exporter.map_err(Into::into)));
        self
    }

    /// How many exporters there are.
    pub fn len(&self) -> usize {
        self.exporters.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.exporters.is_empty()
    }
}

/// Some exporters of a [`FanOut`] failed; the others delivered the batch.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {of} exporters failed; first: {first}")]
pub struct FanOutError {
    /// Exporters that failed.
    pub failed: usize,
    /// Exporters in the fan-out.
    pub of: usize,
    /// The first failure (in the order the exporters were added).
    pub first: BoxError,
}

impl Service<Batch> for FanOut {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    /// Always ready: each exporter's readiness is awaited inside the call, on its own clone.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        let of = self.exporters.len();
        let calls: Vec<_> = self
            .exporters
            .iter()
            .map(|exporter| exporter.clone().oneshot(batch.clone()))
            .collect();
        Box::pin(async move {
            let results = futures_util::future::join_all(calls).await;
            let mut failures = results.into_iter().filter_map(Result::err);
            match failures.next() {
                None => Ok(()),
                Some(first) => Err(Box::new(FanOutError {
                    failed: 1 + failures.count(),
                    of,
                    first,
                }) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InMemoryExporter;

    fn batch() -> Batch {
        Batch::default()
    }

    #[tokio::test]
    async fn every_exporter_gets_the_batch_and_failures_are_counted() {
        let (one, two) = (InMemoryExporter::new(), InMemoryExporter::new());
        let failing = tower::service_fn(|_: Batch| async { Err::<(), _>("backend down") });
        let mut fan_out = FanOut::new()
            .exporter(one.clone())
            .exporter(failing)
            .exporter(two.clone());
        assert_eq!(fan_out.len(), 3);
        let error = fan_out
            .ready()
            .await
            .unwrap()
            .call(batch())
            .await
            .unwrap_err();
        let error = error.downcast::<FanOutError>().unwrap();
        assert_eq!((error.failed, error.of), (1, 3));
        assert_eq!(error.first.to_string(), "backend down");
        // The healthy exporters delivered anyway.
        assert_eq!((one.batch_count(), two.batch_count()), (1, 1));

        let mut healthy = FanOut::new().exporter(one.clone());
        healthy.ready().await.unwrap().call(batch()).await.unwrap();
        assert_eq!(one.batch_count(), 2);
        assert!(FanOut::new().is_empty());
    }
}
