//! The aggregator task: folds queued records into operation summaries, closes rollup windows,
//! batches, and drives the exporter.
//!
//! One tokio task per `Telemetry`, like `tower::buffer`'s worker: it owns the exporter and the
//! receiving end of the bounded queue. Exporting runs concurrently with receiving (one exporter
//! call in flight, polled in the same `select!`), so a slow or stalled exporter never stops
//! the queue from draining; emitted items wait in the bounded `Outbox` instead.
//!
//! Flushes happen on batch size, on the flush interval, on a terminal error (as soon as the
//! exporter is free), on `flush()` and on `shutdown()`. Every exporter call has a timeout; its
//! errors are counted and logged at debug.
//!
//! Must never: block the runtime (`block_on`, blocking I/O), hold a lock across an `.await`,
//! panic, or return an error anywhere the app can see it.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::{Instant, Sleep, sleep_until};
use tower::{BoxError, Service};

use super::config::{BoxExporter, Config};
use super::message::Message;
use super::operations::{Folded, Limits, Operations};
use super::outbox::{Outbox, Sealed};
use super::rollup::RollupTable;
use super::stats::{Counters, add};
use super::usage::UsageTable;
use crate::event::{Batch, OperationSummary};
use crate::export::undelivered::{SkipReason, Undelivered};

/// What the handles and the aggregator share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) rollups: RollupTable,
    /// Model token usage of the current window.
    pub(crate) usage: UsageTable,
    pub(crate) counters: Counters,
    /// Woken by a plain terminal call: export the rollups now.
    pub(crate) urgent: Notify,
    /// Becomes true when the aggregator finished (errors if the task is gone).
    pub(crate) finished: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn new(config: &Config) -> (Shared, watch::Sender<bool>) {
        let (finished_tx, finished) = watch::channel(false);
        let shared = Shared {
            rollups: RollupTable::new(config.max_rollup_keys),
            usage: UsageTable::default(),
            counters: Counters::default(),
            urgent: Notify::new(),
            finished,
        };
        (shared, finished_tx)
    }
}

/// Runs the aggregator until shutdown or until every handle is dropped.
pub(crate) async fn run(
    config: Config,
    rx: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
    finished: watch::Sender<bool>,
    exporter: BoxExporter,
) {
    let now = Instant::now();
    let limits = Limits {
        max_pending: config.max_pending_operations,
        ttl: config.operation_ttl,
        max_errors: config.max_errors_per_operation,
        max_error_text: config.max_error_text_bytes,
        max_message_chars: config.max_message_chars,
    };
    let mut aggregator = Aggregator {
        operations: Operations::new(limits),
        outbox: Outbox::new(config.batch_size, config.max_export_backlog_bytes),
        dispatch: Dispatch::new(exporter),
        rx,
        shared,
        flush_waiters: Vec::new(),
        shutdown_waiters: Vec::new(),
        window_start: SystemTime::now(),
        next_window: now + config.flush_interval,
        urgent_rollups: false,
        urgent_operations: false,
        emitted: Vec::new(),
        finished,
        config,
    };
    let deadline = aggregator.run().await;
    aggregator.finish(deadline).await;
    // Dropping the aggregator answers `shutdown()` and marks the pipeline finished.
}

struct Aggregator {
    config: Config,
    rx: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
    operations: Operations,
    outbox: Outbox,
    dispatch: Dispatch,
    /// `flush()` callers: answered once every batch up to the number is out of our hands.
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    window_start: SystemTime,
    next_window: Instant,
    /// A plain terminal call was folded: close the window and export when the exporter is free.
    urgent_rollups: bool,
    /// A terminal call emitted its operation: export when the exporter is free.
    urgent_operations: bool,
    /// Scratch space for emitted operations.
    emitted: Vec<OperationSummary>,
    /// Set to true when the aggregator is dropped, after a shutdown or with its runtime.
    finished: watch::Sender<bool>,
}

impl Drop for Aggregator {
    /// Runs after a shutdown (nothing is left then) and when the task is dropped with its
    /// runtime: everything still held is counted in `Stats::lost`.
    fn drop(&mut self) {
        let lost = self.take_everything();
        if lost > 0 {
            add(&self.shared.counters.lost, lost);
            tracing::warn!(
                lost,
                "telemetry pipeline dropped with its runtime: records and items lost \
                 (call Telemetry::shutdown before dropping the runtime)"
            );
        }
        self.finished.send_replace(true);
        for done in self.shutdown_waiters.drain(..) {
            let _ = done.send(());
        }
    }
}

impl Aggregator {
    /// The main loop; returns the shutdown deadline.
    async fn run(&mut self) -> Instant {
        let mut timer_at = self.next_deadline();
        let timer = sleep_until(timer_at);
        tokio::pin!(timer);
        loop {
            self.pump();
            let deadline = self.next_deadline();
            if deadline != timer_at {
                timer_at = deadline;
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                message = self.rx.recv() => match message {
                    Some(Message::Shutdown { deadline, done }) => {
                        self.shutdown_waiters.push(done);
                        return deadline;
                    }
                    Some(message) => self.handle(message),
                    // Every handle is gone.
                    None => return Instant::now() + self.config.shutdown_deadline,
                },
                done = poll_fn(|cx| self.dispatch.poll_done(cx)), if self.dispatch.is_busy() => {
                    self.on_done(done);
                }
                () = &mut timer => self.on_timer(timer_at),
                () = self.shared.urgent.notified() => self.urgent_rollups = true,
            }
        }
    }

    /// Takes everything the aggregator still holds and returns how many records and items that
    /// was. Refuses later plain calls (they are counted as dropped).
    fn take_everything(&mut self) -> u64 {
        let mut held = 0;
        self.rx.close();
        while let Ok(message) = self.rx.try_recv() {
            match message {
                Message::Call(_) => held += 1,
                Message::Shutdown { done, .. } => self.shutdown_waiters.push(done),
                Message::Complete(_) | Message::Open(_) | Message::Flush(_) => {}
            }
        }
        self.shared.rollups.close();
        held += self
            .shared
            .rollups
            .drain(self.window_start, SystemTime::now())
            .len();
        self.operations.drain(&mut self.emitted);
        held += self.emitted.drain(..).count();
        held += self.outbox.take_all();
        held += self.dispatch.abandon();
        held as u64
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Call(record) => {
                let counters = &self.shared.counters;
                let folded = self.operations.fold(
                    record,
                    Instant::now().into_std(),
                    counters,
                    &mut self.emitted,
                );
                if folded == Folded::Emitted {
                    self.urgent_operations = true;
                }
                self.outbox
                    .push_operations(self.emitted.drain(..), counters);
            }
            Message::Complete(id) => {
                if let Some(summary) = self.operations.complete(&id) {
                    self.outbox
                        .push_operations([summary], &self.shared.counters);
                }
            }
            Message::Open(id) => self.operations.open(id),
            Message::Flush(done) => {
                self.close_window();
                self.outbox.seal_ready();
                self.flush_waiters.push((self.outbox.last_sealed(), done));
            }
            Message::Shutdown { done, .. } => self.shutdown_waiters.push(done),
        }
    }

    /// The next timer: the end of the rollup window or the next operation's TTL.
    fn next_deadline(&self) -> Instant {
        match self.operations.next_expiry() {
            Some(expiry) => self.next_window.min(Instant::from_std(expiry)),
            None => self.next_window,
        }
    }

    fn on_timer(&mut self, fired_at: Instant) {
        let now = Instant::now().max(fired_at);
        if now >= self.next_window {
            self.close_window();
            self.outbox.seal_ready();
            self.next_window = now + self.config.flush_interval;
        }
        let counters = &self.shared.counters;
        self.operations
            .expire(now.into_std(), counters, &mut self.emitted);
        self.outbox
            .push_operations(self.emitted.drain(..), counters);
    }

    /// Drains the caller-side rollups into the outbox and starts a new window.
    fn close_window(&mut self) {
        let end = SystemTime::now();
        let rollups = self.shared.rollups.drain(self.window_start, end);
        let usage = self.shared.usage.drain(self.window_start, end);
        self.window_start = end;
        self.outbox.push_rollups(rollups, &self.shared.counters);
        self.outbox.push_usage(usage, &self.shared.counters);
    }

    /// Starts exports and answers flushes; handles terminal errors once the exporter is free
    /// (so a burst of them coalesces instead of producing a batch each).
    fn pump(&mut self) {
        if !self.dispatch.is_busy() && !self.outbox.has_sealed() {
            if self.urgent_rollups {
                self.close_window();
            }
            if self.urgent_rollups || self.urgent_operations {
                self.outbox.seal_ready();
            }
            self.urgent_rollups = false;
            self.urgent_operations = false;
        }
        self.start_exports(None);
        self.answer_flushes();
    }

    /// Hands sealed batches to the exporter while it is free.
    fn start_exports(&mut self, shutdown_deadline: Option<Instant>) {
        while !self.dispatch.is_busy() {
            let Some(sealed) = self.outbox.pop() else {
                return;
            };
            if self.config.export_disabled_by_env {
                let items = sealed.batch.len() as u64;
                self.shared.counters.skip(SkipReason::DisabledByEnv, items);
                continue;
            }
            if self.dispatch.broken {
                add(&self.shared.counters.export_failures, 1);
                continue;
            }
            let mut deadline = Instant::now() + self.config.export_timeout;
            if let Some(shutdown) = shutdown_deadline {
                deadline = deadline.min(shutdown);
            }
            self.dispatch.start(sealed, deadline);
        }
    }

    fn on_done(&mut self, done: Done) {
        let counters = &self.shared.counters;
        let items = done.items as u64;
        match done.result {
            Ok(()) => {
                add(&counters.exported, items);
                add(&counters.batches, 1);
            }
            Err(Failure::Error(error)) => match Undelivered::find(&*error) {
                // Not a failure: nothing was sent, on purpose.
                Some(Undelivered::Skipped(reason)) => counters.skip(*reason, items),
                Some(Undelivered::Partial {
                    delivered,
                    rejected,
                    not_supported,
                }) => {
                    // An exporter cannot account for more items than it was given; items it
                    // does not account for are never counted as exported.
                    let delivered = (*delivered).min(items);
                    let rejected = (*rejected).min(items - delivered);
                    let not_supported = (*not_supported).min(items - delivered - rejected);
                    add(&counters.exported, delivered);
                    add(&counters.export_rejected, rejected);
                    counters.skip(SkipReason::NotSupported, not_supported);
                    if delivered + rejected > 0 {
                        add(&counters.batches, 1);
                    }
                }
                None => {
                    add(&counters.export_failures, 1);
                    tracing::debug!(%error, items, "telemetry export failed");
                }
            },
            Err(Failure::TimedOut) => {
                add(&counters.export_failures, 1);
                tracing::debug!(items, "telemetry export timed out");
            }
        }
    }

    /// Answers the flushes whose batches all left (exported, failed or dropped).
    fn answer_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let outstanding = self.dispatch.in_flight().or(self.outbox.oldest_sealed());
        let mut i = 0;
        while i < self.flush_waiters.len() {
            if outstanding.is_some_and(|oldest| oldest <= self.flush_waiters[i].0) {
                i += 1;
            } else {
                let (_, done) = self.flush_waiters.swap_remove(i);
                let _ = done.send(());
            }
        }
    }

    /// Shutdown: takes what is still queued, emits every pending operation incomplete, closes
    /// the window, and exports until done or the deadline.
    async fn finish(&mut self, deadline: Instant) {
        self.rx.close();
        while let Some(message) = self.rx.recv().await {
            self.handle(message);
        }
        self.shared.rollups.close();
        let counters = &self.shared.counters;
        self.operations.drain(&mut self.emitted);
        self.outbox
            .push_operations(self.emitted.drain(..), counters);
        self.close_window();
        self.outbox.seal_ready();
        // An export started before shutdown has the export timeout, which may be later.
        self.dispatch.end_by(deadline);
        // Past the deadline, what is left is dropped rather than started and timed out.
        while Instant::now() < deadline {
            self.start_exports(Some(deadline));
            self.answer_flushes();
            if !self.dispatch.is_busy() {
                break;
            }
            // The dispatch's own timer ends the call at the deadline at the latest.
            let done = poll_fn(|cx| self.dispatch.poll_done(cx)).await;
            self.on_done(done);
        }
        let abandoned = self.dispatch.abandon();
        add(&self.shared.counters.export_dropped, abandoned as u64);
        self.outbox.drop_all(&self.shared.counters);
        self.flush_waiters.clear();
    }
}

/// The export future, boxed by `BoxService`.
type ExportFuture = <BoxExporter as Service<Batch>>::Future;

/// Drives one exporter call at a time: readiness, the call, and its timeout.
struct Dispatch {
    exporter: BoxExporter,
    state: State,
    timer: Pin<Box<Sleep>>,
    /// `poll_ready` failed: the exporter may not be used again.
    broken: bool,
}

enum State {
    Idle,
    /// Waiting for `poll_ready`.
    Ready(Sealed),
    /// The call is in flight.
    Calling {
        seq: u64,
        items: usize,
        future: ExportFuture,
    },
}

/// How one exporter call ended.
struct Done {
    items: usize,
    result: Result<(), Failure>,
}

enum Failure {
    Error(BoxError),
    TimedOut,
}

impl Dispatch {
    fn new(exporter: BoxExporter) -> Dispatch {
        Dispatch {
            exporter,
            state: State::Idle,
            timer: Box::pin(sleep_until(Instant::now())),
            broken: false,
        }
    }

    fn is_busy(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// The batch being exported.
    fn in_flight(&self) -> Option<u64> {
        match &self.state {
            State::Idle => None,
            State::Ready(sealed) => Some(sealed.seq),
            State::Calling { seq, .. } => Some(*seq),
        }
    }

    fn start(&mut self, sealed: Sealed, deadline: Instant) {
        self.timer.as_mut().reset(deadline);
        self.state = State::Ready(sealed);
    }

    /// Drops the call in progress, if any, and returns its items.
    fn abandon(&mut self) -> usize {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => 0,
            State::Ready(sealed) => sealed.batch.len(),
            State::Calling { items, .. } => items,
        }
    }

    /// Brings the current call's timeout forward to `deadline`, if it is later.
    fn end_by(&mut self, deadline: Instant) {
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
        }
    }

    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Done> {
        loop {
            match std::mem::replace(&mut self.state, State::Idle) {
                State::Idle => return Poll::Pending,
                State::Ready(sealed) => match self.exporter.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let items = sealed.batch.len();
                        let future = self.exporter.call(sealed.batch);
                        self.state = State::Calling {
                            seq: sealed.seq,
                            items,
                            future,
                        };
                        continue;
                    }
                    Poll::Ready(Err(error)) => {
                        self.broken = true;
                        return Poll::Ready(Done {
                            items: sealed.batch.len(),
                            result: Err(Failure::Error(error)),
                        });
                    }
                    Poll::Pending => self.state = State::Ready(sealed),
                },
                State::Calling {
                    seq,
                    items,
                    mut future,
                } => match future.as_mut().poll(cx) {
                    Poll::Ready(result) => {
                        return Poll::Ready(Done {
                            items,
                            result: result.map_err(Failure::Error),
                        });
                    }
                    Poll::Pending => self.state = State::Calling { seq, items, future },
                },
            }
            if self.timer.as_mut().poll(cx).is_ready() {
                let items = match std::mem::replace(&mut self.state, State::Idle) {
                    State::Idle => 0,
                    State::Ready(sealed) => sealed.batch.len(),
                    State::Calling { items, .. } => items,
                };
                return Poll::Ready(Done {
                    items,
                    result: Err(Failure::TimedOut),
                });
            }
            return Poll::Pending;
        }
    }
}
