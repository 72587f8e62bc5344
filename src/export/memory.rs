//! `InMemoryExporter`: keeps every batch in memory, for tests.
//!
//! Not for production: it grows without bound. It never fails; while paused, its calls wait
//! (as a stalled backend would) until `resume`, or until the pipeline's export timeout drops
//! them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::watch;
use tower::Service;

use crate::event::{Batch, OperationSummary, Rollup, UsageRollup};

/// An exporter that keeps what it receives. Clones share the same storage.
///
/// ```
/// use kasal_telemetry::{InMemoryExporter, Telemetry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let exporter = InMemoryExporter::new();
/// let telemetry = Telemetry::builder().exporter(exporter.clone()).ignore_env().build();
/// telemetry.flush().await;
/// assert_eq!(exporter.total_calls(), 0);
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct InMemoryExporter {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    batches: Mutex<Vec<Batch>>,
    paused: watch::Sender<bool>,
    received: watch::Sender<usize>,
}

impl InMemoryExporter {
    /// An exporter that accepts batches at once.
    pub fn new() -> InMemoryExporter {
        InMemoryExporter::default()
    }

    /// An exporter whose calls wait until [`resume`](InMemoryExporter::resume): a stalled
    /// backend.
    pub fn paused() -> InMemoryExporter {
        let exporter = InMemoryExporter::new();
        exporter.pause();
        exporter
    }

    /// Makes later and waiting calls wait until `resume`.
    pub fn pause(&self) {
        self.inner.paused.send_replace(true);
    }

    /// Lets waiting and later calls complete.
    pub fn resume(&self) {
        self.inner.paused.send_replace(false);
    }

    /// The batches received so far, in order.
    pub fn batches(&self) -> Vec<Batch> {
        self.lock().clone()
    }

    /// Every operation summary received so far, in order.
    pub fn operations(&self) -> Vec<OperationSummary> {
        self.lock()
            .iter()
            .flat_map(|batch| batch.operations.iter().cloned())
            .collect()
    }

    /// Every rollup received so far, in order.
    pub fn rollups(&self) -> Vec<Rollup> {
        self.lock()
            .iter()
            .flat_map(|batch| batch.rollups.iter().cloned())
            .collect()
    }

    /// Every usage rollup received so far, in order.
    pub fn usage(&self) -> Vec<UsageRollup> {
        self.lock()
            .iter()
            .flat_map(|batch| batch.usage.iter().cloned())
            .collect()
    }

    /// Calls accounted for so far: operations' calls plus rollups' counts.
    pub fn total_calls(&self) -> u64 {
        self.lock().iter().map(Batch::calls).sum()
    }

    /// Number of batches received so far.
    pub fn batch_count(&self) -> usize {
        self.lock().len()
    }

    /// Waits until at least `batches` batches have been received.
    pub async fn wait_for_batches(&self, batches: usize) {
        let mut received = self.inner.received.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = received.wait_for(|received| *received >= batches).await;
    }

    /// Forgets every batch received so far.
    pub fn clear(&self) {
        self.lock().clear();
        self.inner.received.send_replace(0);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Batch>> {
        self.inner
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Service<Batch> for InMemoryExporter {
    type Response = ();
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        let exporter = self.clone();
        Box::pin(async move {
            let mut paused = exporter.inner.paused.subscribe();
            let _ = paused.wait_for(|paused| !*paused).await;
            let received = {
                let mut batches = exporter.lock();
                batches.push(batch);
                batches.len()
            };
            exporter.inner.received.send_replace(received);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn paused_calls_wait_for_resume() {
        let exporter = InMemoryExporter::paused();
        let call = tokio::spawn(exporter.clone().oneshot(Batch::default()));
        tokio::task::yield_now().await;
        assert_eq!(exporter.batch_count(), 0);
        exporter.resume();
        call.await.unwrap().unwrap();
        exporter.wait_for_batches(1).await;
        assert_eq!(exporter.batch_count(), 1);
    }
}
