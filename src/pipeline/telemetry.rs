//! `Telemetry`: the cheap, cloneable handle every layer records into.
//!
//! Must never block, fail or panic on the recording path: a plain call is folded into the
//! caller's rollup shard, a call with an operation id is `try_send`-ed to the aggregator, and
//! anything that does not fit is dropped and counted.

use std::fmt;
use std::sync::Arc;

use kasal_classify::Outcome;
use kasal_trace::{OperationId, RecordCall, Usage};
use kasal_user_agent::Product;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use super::aggregator::{self, Shared};
use super::config::{BoxExporter, Config};
use super::message::Message;
use super::stats::{Stats, add};
use crate::event::CallRecord;
use crate::usage::valid_model;

/// The handle to a telemetry pipeline: record calls, complete operations, flush, shut down.
///
/// Cloning is cheap (an `Arc`); all clones feed the same aggregator. When the last clone is
/// dropped the aggregator flushes (with the shutdown deadline) and stops.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::Method;
/// use kasal_telemetry::trace::{CallRecord, Direction};
/// use kasal_telemetry::user_agent::Product;
/// use kasal_telemetry::{InMemoryExporter, Telemetry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let exporter = InMemoryExporter::new();
/// let telemetry = Telemetry::builder().exporter(exporter.clone()).ignore_env().build();
/// let mut record = CallRecord::new(Direction::Client, Product::Genie, Method::GET, SystemTime::now());
/// record.status = Some(http::StatusCode::OK);
/// record.latency = Duration::from_millis(12);
/// record.response_bytes = 512;
/// telemetry.record(record);
/// telemetry.flush().await;
/// assert_eq!(exporter.total_calls(), 1);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    shutdown_deadline: std::time::Duration,
    flush_deadline: std::time::Duration,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.is_enabled())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Telemetry {
    /// A handle that records nothing and exports nothing.
    pub fn disabled() -> Telemetry {
        Telemetry { inner: None }
    }

    /// Whether this handle feeds a running pipeline.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Spawns the aggregator on `runtime` and returns its handle.
    pub(crate) fn start(
        config: Config,
        exporter: BoxExporter,
        runtime: &tokio::runtime::Handle,
    ) -> Telemetry {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let (shared, finished) = Shared::new(&config);
        let shared = Arc::new(shared);
        let shutdown_deadline = config.shutdown_deadline;
        let flush_deadline = config.flush_deadline();
        runtime.spawn(aggregator::run(
            config,
            rx,
            shared.clone(),
            finished,
            exporter,
        ));
        Telemetry {
            inner: Some(Arc::new(Inner {
                tx,
                shared,
                shutdown_deadline,
                flush_deadline,
            })),
        }
    }

    /// Records one finished call. Never blocks, fails or panics.
    ///
    /// A call without an operation id is folded into the current window's rollup right here,
    /// on the caller's thread (a few atomic adds). A call with one is queued for the
    /// aggregator; if the queue is full it is dropped and counted in `Stats::dropped`.
    /// A terminal call is exported without waiting for a flush.
    #[inline]
    pub fn record(&self, mut record: CallRecord) {
        if let Some(inner) = &self.inner {
            // Folded where it lies; moved only to be queued.
            if !inner.fold(&mut record) {
                inner.queue(record);
            }
        }
    }

    /// Adds model token usage that the caller counted itself (a model called outside an
    /// instrumented client, or through an SDK that reports usage) to the current window's
    /// per-(product, model) sums. Never blocks, fails or panics.
    ///
    /// Calls made through `TelemetryLayer` or the reqwest middleware are counted already:
    /// reporting them here too would count them twice.
    ///
    /// ```
    /// use kasal_telemetry::trace::Usage;
    /// use kasal_telemetry::user_agent::Product;
    /// use kasal_telemetry::{InMemoryExporter, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let exporter = InMemoryExporter::new();
    /// let telemetry = Telemetry::builder().exporter(exporter.clone()).ignore_env().build();
    /// telemetry.record_usage(Product::Llm, "databricks-claude-sonnet", Usage::new(1200, 300));
    /// telemetry.flush().await;
    /// let usage = exporter.usage();
    /// assert_eq!(usage[0].usage.total_tokens, 1500);
    /// # }
    /// ```
    pub fn record_usage(&self, product: Product, model: &str, usage: Usage) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.shared.rollups.is_closed() {
            return;
        }
        let model = valid_model(model).map(Arc::from);
        inner.shared.usage.fold(&product, model.as_ref(), usage);
    }

    /// Counts a response scanned for usage: read (`true`) or ignored (`false`).
    pub(crate) fn count_usage_scan(&self, read: bool) {
        if let Some(inner) = &self.inner {
            let counters = &inner.shared.counters;
            add(
                if read {
                    &counters.usage_read
                } else {
                    &counters.usage_ignored
                },
                1,
            );
        }
    }

    /// Marks an operation complete: its summary is emitted and exported with the next batch.
    /// Never blocks; if the queue is full the completion is lost (and counted), and the
    /// operation is emitted incomplete later.
    pub fn complete_operation(&self, id: &OperationId) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.tx.try_send(Message::Complete(id.clone())).is_err() {
            add(&inner.shared.counters.completions_dropped, 1);
        }
    }

    /// Declares an operation that only [`complete_operation`](Self::complete_operation) ends
    /// (or the TTL, eviction or shutdown, incomplete): its terminal calls are counted in its
    /// summary like any other but do not emit it. For an operation that outlives a failed call,
    /// such as an MCP session, where one failed tool call does not end the session. Call it
    /// before its first call is recorded. Never blocks; if the queue is full the declaration is
    /// lost (and counted with the lost completions), and a terminal call ends the operation as
    /// usual. At most `max_pending_operations` are held open at once.
    pub fn open_operation(&self, id: &OperationId) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.tx.try_send(Message::Open(id.clone())).is_err() {
            add(&inner.shared.counters.completions_dropped, 1);
        }
    }

    /// Waits until everything recorded before the call has been handed to the exporter and the
    /// exporter call returned (or timed out), or until the flush deadline passed (the shutdown
    /// deadline by default, see [`TelemetryBuilder::flush_deadline`](crate::TelemetryBuilder::flush_deadline)),
    /// whichever comes first, and returns the stats at that moment. Past the deadline the
    /// export goes on in the background. Pending operations stay pending; rollups are closed
    /// early. Returns at once on a disabled or shut down pipeline.
    pub async fn flush(&self) -> Stats {
        let Some(inner) = &self.inner else {
            return Stats::default();
        };
        let deadline = Instant::now() + inner.flush_deadline;
        let (done, answered) = oneshot::channel();
        // Both waits share the deadline: a full queue cannot stretch it.
        if let Ok(Ok(())) = timeout_at(deadline, inner.tx.send(Message::Flush(done))).await {
            let _ = timeout_at(deadline, answered).await;
        }
        self.stats()
    }

    /// Stops accepting records, emits every pending operation (incomplete), exports everything
    /// within the shutdown deadline, and returns the final stats. Later records are dropped
    /// and counted. Calling it again waits for the first shutdown and returns the stats.
    pub async fn shutdown(&self) -> Stats {
        let Some(inner) = &self.inner else {
            return Stats::default();
        };
        let deadline = Instant::now() + inner.shutdown_deadline;
        // Wait out plain calls being folded, and refuse later ones.
        inner.shared.rollups.close();
        let (done, answered) = oneshot::channel();
        // The aggregator answers by the deadline, and its task ending answers too.
        if inner
            .tx
            .send(Message::Shutdown { deadline, done })
            .await
            .is_ok()
        {
            let _ = answered.await;
        } else {
            // The aggregator is gone (shut down already, or its runtime was dropped).
            let mut finished = inner.shared.finished.clone();
            let _ = finished.wait_for(|finished| *finished).await;
        }
        self.stats()
    }

    /// The counters so far. Cheap: relaxed atomic loads, plus a brief read lock per rollup
    /// shard to count the calls in the current window.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        if let Some(inner) = &self.inner {
            let (accepted, dropped, overflow) = inner.shared.rollups.counts();
            stats.accepted = accepted;
            stats.dropped = dropped;
            stats.rollup_overflow = overflow;
            inner.shared.counters.fill(&mut stats);
        }
        stats
    }
}

impl Inner {
    /// Bounds the record's text and counts its usage; folds a plain call (no operation id)
    /// into the rollups, or drops it, and says so (`true`); a call with an operation id is
    /// left for [`queue`](Self::queue).
    #[inline]
    fn fold(&self, record: &mut CallRecord) -> bool {
        bound_text(record);
        let shared = &*self.shared;
        if let Some(usage) = record.usage {
            if !shared.rollups.is_closed() {
                shared
                    .usage
                    .fold(&record.product, record.model.as_ref(), usage);
            }
        }
        if record.operation_id.is_none() {
            let terminal = matches!(record.outcome, Outcome::Terminal { .. });
            if shared.rollups.fold(record) && terminal {
                shared.urgent.notify_one();
            }
            return true;
        }
        false
    }

    /// Queues a call with an operation id for the aggregator, or drops it (counted).
    fn queue(&self, record: CallRecord) {
        let shared = &*self.shared;
        if shared.rollups.is_closed() {
            shared.rollups.count_dropped();
            return;
        }
        match self.tx.try_send(Message::Call(record)) {
            Ok(()) => shared.rollups.count_accepted(),
            Err(_) => shared.rollups.count_dropped(),
        }
    }
}

impl RecordCall for Telemetry {
    #[inline]
    fn record_call(&self, record: CallRecord) {
        self.record(record);
    }
}

/// The longest `caller_id` kept, in bytes.
const MAX_CALLER_ID_LEN: usize = 256;
/// The longest `host` kept (a DNS name, `:` and a port); a longer one is dropped.
const MAX_HOST_LEN: usize = 261;

/// Cuts every text field of a record from the public API to its bound, so the queue and the
/// aggregator stay bounded in bytes whatever a caller passes: `error` to
/// [`MAX_REDACTED_LEN`](kasal_trace::MAX_REDACTED_LEN), `route` to `Route::MAX_LEN`,
/// `caller_id` to 256 bytes (on char boundaries); a `host` with userinfo or over 261 bytes is
/// dropped. Operation ids are bounded by `OperationId::new`. Costs a few length checks when
/// nothing is over.
#[inline]
fn bound_text(record: &mut CallRecord) {
    #[inline]
    fn cut(text: &mut Option<Arc<str>>, max: usize) {
        if let Some(long) = text.as_deref().filter(|t| t.len() > max) {
            let mut end = max;
            while !long.is_char_boundary(end) {
                end -= 1;
            }
            *text = Some(Arc::from(&long[..end]));
        }
    }
    cut(&mut record.error, kasal_trace::MAX_REDACTED_LEN);
    cut(&mut record.route, kasal_trace::Route::MAX_LEN);
    cut(&mut record.caller_id, MAX_CALLER_ID_LEN);
    if record
        .host
        .as_ref()
        // `memchr`: a few vector compares for a host name, where `str::contains` starts with
        // a byte loop.
        .is_some_and(|host| {
            host.as_str().len() > MAX_HOST_LEN
                || memchr::memchr(b'@', host.as_str().as_bytes()).is_some()
        })
    {
        record.host = None;
    }
}
