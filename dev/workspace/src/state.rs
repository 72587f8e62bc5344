//! What the workspace holds: its settings and everything it has recorded. One mutex, never held
//! across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::fault::{Fault, Faults};
use crate::recorded::{OtlpReceived, RecordedCall, ServedUsage, TelemetryBatch};

/// The settings a [`WorkspaceBuilder`](crate::WorkspaceBuilder) gathers.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) flags: Vec<(String, String)>,
    pub(crate) flag_ttl_seconds: u64,
    /// (scope, key) → value.
    pub(crate) secrets: BTreeMap<(String, String), String>,
    /// token → user.
    pub(crate) users: HashMap<String, String>,
    /// Pause between two SSE chunks of a streamed completion.
    pub(crate) stream_chunk_delay: Duration,
}

#[derive(Default)]
struct Recorded {
    calls: Vec<RecordedCall>,
    batches: Vec<TelemetryBatch>,
    malformed_uploads: u64,
    otlp: OtlpReceived,
    usage: BTreeMap<String, ServedUsage>,
    faults: Faults,
    flags: Vec<(String, String)>,
}

pub(crate) struct Shared {
    pub(crate) settings: Settings,
    recorded: Mutex<Recorded>,
    /// Woken whenever something is recorded.
    pub(crate) changed: Notify,
}

impl Shared {
    pub(crate) fn new(settings: Settings) -> Shared {
        let recorded = Recorded {
            flags: settings.flags.clone(),
            ..Recorded::default()
        };
        Shared {
            settings,
            recorded: Mutex::new(recorded),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panic while holding the lock cannot leave the records half-written in a way that
        // matters to a development server: keep serving.
        self.recorded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed<T>(&self, value: T) -> T {
        self.changed.notify_waiters();
        value
    }

    pub(crate) fn caller_of(&self, token: &str) -> Option<String> {
        self.settings.users.get(token).cloned()
    }

    pub(crate) fn push_call(&self, call: RecordedCall) {
        self.lock().calls.push(call);
        self.changed(());
    }

    pub(crate) fn push_batch(&self, batch: TelemetryBatch) {
        self.lock().batches.push(batch);
        self.changed(());
    }

    pub(crate) fn malformed_upload(&self) {
        self.lock().malformed_uploads += 1;
        self.changed(());
    }

    pub(crate) fn with_otlp(&self, f: impl FnOnce(&mut OtlpReceived)) {
        f(&mut self.lock().otlp);
        self.changed(());
    }

    pub(crate) fn served(&self, model: &str, usage: ServedUsage) {
        self.lock()
            .usage
            .entry(model.to_owned())
            .or_default()
            .add(usage);
    }

    pub(crate) fn take_fault(&self, path: &str) -> Option<Fault> {
        self.lock().faults.take(path)
    }

    pub(crate) fn inject(&self, route: &str, times: usize, fault: Fault) {
        self.lock().faults.push(route, times, fault);
    }

    pub(crate) fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub(crate) fn faults_remaining(&self) -> usize {
        self.lock().faults.remaining()
    }

    pub(crate) fn flags(&self) -> Vec<(String, String)> {
        self.lock().flags.clone()
    }

    pub(crate) fn set_flag(&self, name: &str, value: &str) {
        let mut recorded = self.lock();
        match recorded.flags.iter_mut().find(|(n, _)| n == name) {
            Some(flag) => flag.1 = value.to_owned(),
            None => recorded.flags.push((name.to_owned(), value.to_owned())),
        }
    }

    pub(crate) fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    pub(crate) fn call_count(&self) -> usize {
        self.lock().calls.len()
    }

    pub(crate) fn batches(&self) -> Vec<TelemetryBatch> {
        self.lock().batches.clone()
    }

    pub(crate) fn malformed_uploads(&self) -> u64 {
        self.lock().malformed_uploads
    }

    pub(crate) fn otlp(&self) -> OtlpReceived {
        self.lock().otlp.clone()
    }

    pub(crate) fn usage(&self) -> BTreeMap<String, ServedUsage> {
        self.lock().usage.clone()
    }
}
