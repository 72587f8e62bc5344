//! Caller-side folding of plain calls (no operation id) into sharded rollup counters.
//!
//! This is the hot path: `Telemetry::record` folds a plain call here on the caller's thread
//! instead of queueing it, as metrics libraries do. Each thread is assigned one of [`SHARDS`]
//! shards; a shard is a small hash table from `RollupKey` to a cell of atomic counters behind a
//! read-mostly lock. A call that finds its key takes the read lock and does a handful of relaxed
//! atomic adds; only a new key takes the write lock. The aggregator drains every shard once per
//! window under the write lock, so each call lands in exactly one window and the exported counts
//! sum to the calls accepted.
//!
//! Must never: block for longer than another thread's fold or one drain of a shard, allocate
//! when the key is known, or grow without bound (keys per shard are capped; beyond the cap calls
//! fold into an overflow key per product/method/status/outcome, and beyond that they are dropped
//! and counted).

use std::cell::Cell as ThreadCell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use hashbrown::{DefaultHashBuilder, HashTable};
use http::uri::Authority;

use crate::event::{CallRecord, Rollup, RollupKey, status_class};

/// Number of shards. Threads are spread over them round-robin, so up to this many producer
/// threads never share a lock or a counter cache line.
pub(crate) const SHARDS: usize = 16;

/// Extra keys a shard may hold beyond its cap, for the overflow keys.
const OVERFLOW_KEYS: usize = 32;

/// The route of the overflow keys, which also have no host.
const OVERFLOW_ROUTE: &str = "<other>";

/// The sharded rollup table, plus the per-shard record counters.
#[derive(Debug)]
pub(crate) struct RollupTable {
    shards: Box<[Shard]>,
    hasher: DefaultHashBuilder,
    max_keys: usize,
    overflow_route: Arc<str>,
    closed: AtomicBool,
}

/// One shard: its own cache lines, so threads on different shards never contend.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    cells: RwLock<HashTable<Cell>>,
    /// Plain calls drained from this shard's cells so far (updated under the write lock). With
    /// the calls still in the cells, the plain calls accepted: no extra counter on the hot path.
    drained: AtomicU64,
    /// Calls with an operation id queued from this shard's threads.
    queued: AtomicU64,
    dropped: AtomicU64,
    overflow: AtomicU64,
}

/// One key's counters for the current window. The count is the histogram's sum: one atomic
/// add fewer per call.
#[derive(Debug)]
struct Cell {
    hash: u64,
    key: RollupKey,
    sum_ns: AtomicU64,
    min_ns: AtomicU64,
    max_ns: AtomicU64,
    histogram: [AtomicU64; Rollup::BUCKETS],
}

/// What a call contributes to a cell.
#[derive(Clone, Copy)]
struct Sample {
    nanos: u64,
    bucket: usize,
}

impl Sample {
    #[inline]
    fn of(latency: Duration) -> Sample {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = Rollup::BOUNDS_NS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(Rollup::BUCKETS - 1);
        Sample { nanos, bucket }
    }
}

impl Cell {
    fn new(hash: u64, key: RollupKey) -> Cell {
        Cell {
            hash,
            key,
            sum_ns: AtomicU64::new(0),
            min_ns: AtomicU64::new(u64::MAX),
            max_ns: AtomicU64::new(0),
            histogram: Default::default(),
        }
    }

    /// Adds one call. Relaxed is enough: the drain takes the write lock, which orders it after
    /// every fold that held the read lock.
    #[inline]
    fn add(&self, sample: Sample) {
        self.sum_ns.fetch_add(sample.nanos, Relaxed);
        // Load first: the read-modify-write is rarely needed once the window has a few calls.
        if sample.nanos < self.min_ns.load(Relaxed) {
            self.min_ns.fetch_min(sample.nanos, Relaxed);
        }
        if sample.nanos > self.max_ns.load(Relaxed) {
            self.max_ns.fetch_max(sample.nanos, Relaxed);
        }
        self.histogram[sample.bucket].fetch_add(1, Relaxed);
    }

    /// Calls in the current window so far.
    fn count(&self) -> u64 {
        self.histogram
            .iter()
            .map(|bucket| bucket.load(Relaxed))
            .sum()
    }

    #[inline]
    fn matches(&self, view: &KeyView<'_>) -> bool {
        let key = &self.key;
        key.status_class == view.status_class
            && key.outcome == view.outcome
            && key.status == view.record.status
            && key.error_type.as_deref() == view.error_type
            && key.direction == view.record.direction
            && key.method == view.record.method
            && key.route.as_deref() == view.route
            // Case-sensitive, like the hash: differently cased hosts get separate cells here
            // and are merged by `RollupKey`'s own (case-insensitive) equality at drain time.
            && key.host.as_ref().map(Authority::as_str) == view.host.map(Authority::as_str)
            && key.product == view.record.product
    }

    /// Takes the window's counters, leaving the cell empty. Returns `None` if it saw no call.
    fn take(&mut self, window_start: SystemTime, window_end: SystemTime) -> Option<Rollup> {
        let mut histogram = [0; Rollup::BUCKETS];
        for (out, bucket) in histogram.iter_mut().zip(&mut self.histogram) {
            *out = std::mem::take(bucket.get_mut());
        }
        let count = histogram.iter().sum();
        if count == 0 {
            return None;
        }
        Some(Rollup {
            key: self.key.clone(),
            window_start,
            window_end,
            count,
            latency_sum: Duration::from_nanos(std::mem::take(self.sum_ns.get_mut())),
            latency_min: Duration::from_nanos(std::mem::replace(self.min_ns.get_mut(), u64::MAX)),
            latency_max: Duration::from_nanos(std::mem::take(self.max_ns.get_mut())),
            histogram,
        })
    }
}

/// A `RollupKey` borrowed from a `CallRecord`: looked up without cloning anything.
struct KeyView<'a> {
    record: &'a CallRecord,
    host: Option<&'a Authority>,
    route: Option<&'a str>,
    status_class: u8,
    outcome: &'static str,
    error_type: Option<&'a str>,
}

impl<'a> KeyView<'a> {
    #[inline]
    fn of(record: &'a CallRecord) -> KeyView<'a> {
        KeyView {
            record,
            host: record.host.as_ref(),
            route: record.route.as_deref(),
            status_class: status_class(record.status),
            outcome: record.outcome.as_str(),
            error_type: record.outcome.error_type(),
        }
    }

    /// The same call's overflow key: no host, the overflow route.
    fn overflow(&self, route: &'a str) -> KeyView<'a> {
        KeyView {
            host: None,
            route: Some(route),
            ..*self
        }
    }

    fn to_key(&self) -> RollupKey {
        RollupKey {
            product: self.record.product.clone(),
            direction: self.record.direction,
            method: self.record.method.clone(),
            host: self.host.cloned(),
            route: self.route.map(Arc::from),
            status_class: self.status_class,
            outcome: self.outcome,
            status: self.record.status,
            error_type: self.error_type.map(Arc::from),
        }
    }
}

impl RollupTable {
    /// A table whose shards hold at most `max_keys` keys each (plus a few overflow keys).
    pub(crate) fn new(max_keys: usize) -> RollupTable {
        RollupTable {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    cells: RwLock::new(HashTable::new()),
                    drained: AtomicU64::new(0),
                    queued: AtomicU64::new(0),
                    dropped: AtomicU64::new(0),
                    overflow: AtomicU64::new(0),
                })
                .collect(),
            hasher: DefaultHashBuilder::default(),
            max_keys,
            overflow_route: Arc::from(OVERFLOW_ROUTE),
            closed: AtomicBool::new(false),
        }
    }

    #[inline]
    fn hash(&self, view: &KeyView<'_>) -> u64 {
        let record = view.record;
        self.hasher.hash_one((
            &record.product,
            record.direction,
            &record.method,
            // As one string: `Authority`'s own `Hash` feeds the hasher a byte at a time.
            view.host.map(Authority::as_str),
            view.route,
            view.status_class,
            view.outcome,
            view.record.status.map(|status| status.as_u16()),
            view.error_type,
        ))
    }

    /// Folds a plain call into the current thread's shard. Returns false (and counts a drop) if
    /// the table is closed or full.
    ///
    /// The key is first looked up with the hash of this thread's previous fold: a thread tends to
    /// call the same endpoint again, and then no hashing is needed. A wrong guess is harmless: a
    /// cell is only taken if its key equals the call's, and on a miss the call's own hash is
    /// computed and looked up (one extra probe of the table).
    #[inline]
    pub(crate) fn fold(&self, record: &CallRecord) -> bool {
        let (index, guess) = thread_state();
        let shard = &self.shards[index];
        let view = KeyView::of(record);
        let sample = Sample::of(record.latency);
        let hash = {
            let cells = shard.cells.read().unwrap_or_else(PoisonError::into_inner);
            // Checked under the lock: `close` takes every write lock after setting the flag, so
            // a fold either completes before `close` returns or sees the flag.
            if self.closed.load(Relaxed) {
                drop(cells);
                shard.dropped.fetch_add(1, Relaxed);
                return false;
            }
            if let Some(cell) = cells.find(guess, |cell| cell.matches(&view)) {
                cell.add(sample);
                return true;
            }
            let hash = self.hash(&view);
            if let Some(cell) = cells.find(hash, |cell| cell.matches(&view)) {
                cell.add(sample);
                remember_hash(hash);
                return true;
            }
            hash
        };
        let folded = self.fold_new_key(shard, &view, hash, sample);
        remember_hash(hash);
        folded
    }

    /// The slow path: the key was not in the shard.
    #[cold]
    fn fold_new_key(&self, shard: &Shard, view: &KeyView<'_>, hash: u64, sample: Sample) -> bool {
        let mut cells = shard.cells.write().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Relaxed) {
            drop(cells);
            shard.dropped.fetch_add(1, Relaxed);
            return false;
        }
        let overflow = view.overflow(&self.overflow_route);
        let (view, hash) = if cells.find(hash, |cell| cell.matches(view)).is_some()
            || cells.len() < self.max_keys
        {
            (view, hash)
        } else {
            let overflow_hash = self.hash(&overflow);
            let known = cells.find(overflow_hash, |cell| cell.matches(&overflow));
            if known.is_none() && cells.len() >= self.max_keys + OVERFLOW_KEYS {
                drop(cells);
                shard.dropped.fetch_add(1, Relaxed);
                shard.overflow.fetch_add(1, Relaxed);
                return false;
            }
            (&overflow, overflow_hash)
        };
        match cells.find(hash, |cell| cell.matches(view)) {
            Some(cell) => cell.add(sample),
            None => {
                let cell = Cell::new(hash, view.to_key());
                cells
                    .insert_unique(hash, cell, |cell| cell.hash)
                    .get()
                    .add(sample);
            }
        }
        true
    }

    /// Drains every shard into one `Rollup` per key for the window, and forgets keys that saw
    /// no call in it.
    pub(crate) fn drain(&self, window_start: SystemTime, window_end: SystemTime) -> Vec<Rollup> {
        let mut merged: HashMap<RollupKey, Rollup> = HashMap::new();
        for shard in self.shards.iter() {
            let mut cells = shard.cells.write().unwrap_or_else(PoisonError::into_inner);
            let mut drained = 0;
            cells.retain(|cell| match cell.take(window_start, window_end) {
                None => false,
                Some(rollup) => {
                    drained += rollup.count;
                    merge(&mut merged, rollup);
                    true
                }
            });
            shard.drained.fetch_add(drained, Relaxed);
        }
        merged.into_values().collect()
    }

    /// Refuses every later fold, and waits for folds already under way to finish.
    pub(crate) fn close(&self) {
        self.closed.store(true, Relaxed);
        for shard in self.shards.iter() {
            // Taking the write lock waits out the readers that did not see the flag.
            drop(shard.cells.write().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Whether `close` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Counts a record accepted elsewhere (queued), on the current thread's shard.
    pub(crate) fn count_accepted(&self) {
        self.shard().queued.fetch_add(1, Relaxed);
    }

    /// Counts a record dropped elsewhere (queue full or closed), on the current thread's shard.
    pub(crate) fn count_dropped(&self) {
        self.shard().dropped.fetch_add(1, Relaxed);
    }

    /// (accepted, dropped, overflow) summed over the shards. Takes each shard's read lock
    /// briefly to count the calls still in its cells.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        self.shards.iter().fold((0, 0, 0), |(a, d, o), shard| {
            let cells = shard.cells.read().unwrap_or_else(PoisonError::into_inner);
            // Under the read lock: a drain cannot move calls from the cells to `drained` now.
            let live: u64 = cells.iter().map(Cell::count).sum();
            let accepted = live + shard.drained.load(Relaxed) + shard.queued.load(Relaxed);
            drop(cells);
            (
                a + accepted,
                d + shard.dropped.load(Relaxed),
                o + shard.overflow.load(Relaxed),
            )
        })
    }

    #[inline]
    fn shard(&self) -> &Shard {
        &self.shards[shard_index()]
    }
}

/// Adds a shard's rollup to the window's rollup for the same key.
fn merge(merged: &mut HashMap<RollupKey, Rollup>, rollup: Rollup) {
    match merged.get_mut(&rollup.key) {
        None => {
            merged.insert(rollup.key.clone(), rollup);
        }
        Some(into) => {
            into.count += rollup.count;
            into.latency_sum += rollup.latency_sum;
            into.latency_min = into.latency_min.min(rollup.latency_min);
            into.latency_max = into.latency_max.max(rollup.latency_max);
            for (into, from) in into.histogram.iter_mut().zip(rollup.histogram) {
                *into += from;
            }
        }
    }
}

thread_local! {
    /// This thread's shard (assigned round-robin on first use; `usize::MAX` before) and the hash
    /// of the key it folded last.
    static THREAD: ThreadCell<(usize, u64)> = const { ThreadCell::new((usize::MAX, 0)) };
}

/// The current thread's shard, and the hash of the key it folded last (0 at first).
#[inline]
fn thread_state() -> (usize, u64) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    THREAD
        .try_with(|state| {
            let (mut index, hash) = state.get();
            if index == usize::MAX {
                index = NEXT.fetch_add(1, Relaxed) % SHARDS;
                state.set((index, hash));
            }
            (index, hash)
        })
        // During thread teardown the thread-local is gone: any shard will do.
        .unwrap_or((0, 0))
}

/// The current thread's shard.
#[inline]
fn shard_index() -> usize {
    thread_state().0
}

/// Notes the hash of the key this thread folded, for its next fold's first lookup.
#[inline]
fn remember_hash(hash: u64) {
    let _ = THREAD.try_with(|state| state.set((state.get().0, hash)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, StatusCode};
    use kasal_classify::{Outcome, Reason};
    use kasal_trace::Direction;
    use kasal_user_agent::Product;

    fn call(route: &str, latency_ms: u64, status: u16) -> CallRecord {
        let status = StatusCode::from_u16(status).unwrap();
        let mut record = CallRecord::new(
            Direction::Client,
            Product::Genie,
            Method::GET,
            SystemTime::now(),
        );
        record.host = Some(Authority::from_static("example.cloud.databricks.com"));
        record.route = Some(Arc::from(route));
        record.status = Some(status);
        record.outcome = if status.is_success() {
            Outcome::Success
        } else {
            Outcome::Terminal {
                reason: Reason::Status(status),
            }
        };
        record.latency = Duration::from_millis(latency_ms);
        record
    }

    fn drain(table: &RollupTable) -> Vec<Rollup> {
        let now = SystemTime::now();
        table.drain(now, now)
    }

    #[test]
    fn folds_per_key_with_latency_and_histogram() {
        let table = RollupTable::new(8);
        assert!(table.fold(&call("/a", 3, 200)));
        assert!(table.fold(&call("/a", 30, 200)));
        assert!(table.fold(&call("/a", 20_000, 200)));
        assert!(table.fold(&call("/a", 3, 404)));
        let mut rollups = drain(&table);
        rollups.sort_by_key(|r| r.key.status_class);
        assert_eq!(rollups.len(), 2);
        let ok = &rollups[0];
        assert_eq!(ok.key.status_class, 2);
        assert_eq!(ok.key.outcome, "success");
        assert_eq!(ok.count, 3);
        assert_eq!(ok.latency_sum, Duration::from_millis(20_033));
        assert_eq!(ok.latency_min, Duration::from_millis(3));
        assert_eq!(ok.latency_max, Duration::from_millis(20_000));
        assert_eq!(ok.histogram[0], 1); // <= 5 ms
        assert_eq!(ok.histogram[3], 1); // <= 50 ms
        assert_eq!(ok.histogram[Rollup::BUCKETS - 1], 1); // unbounded
        assert_eq!(rollups[1].key.outcome, "terminal");
        assert_eq!(rollups[1].count, 1);
        assert_eq!(table.counts(), (4, 0, 0));
    }

    #[test]
    fn a_stale_hash_guess_never_misfolds() {
        // Two tables (different hashers) and alternating keys on one thread: every fold starts
        // from another key's or another table's hash.
        let (one, two) = (RollupTable::new(8), RollupTable::new(8));
        for i in 0..30 {
            let route = ["/a", "/b", "/c"][i % 3];
            assert!(one.fold(&call(route, 1, 200)));
            assert!(two.fold(&call(route, 2, if i % 2 == 0 { 200 } else { 503 })));
        }
        let mut rollups = drain(&one);
        rollups.sort_by(|a, b| a.key.route.cmp(&b.key.route));
        let counts: Vec<_> = rollups.iter().map(|r| r.count).collect();
        assert_eq!(counts, [10, 10, 10]);
        let mut rollups = drain(&two);
        rollups.sort_by_key(|r| (r.key.route.clone(), r.key.status_class));
        let counts: Vec<_> = rollups
            .iter()
            .map(|r| (r.key.status_class, r.count))
            .collect();
        assert_eq!(counts, [(2, 5), (5, 5), (2, 5), (5, 5), (2, 5), (5, 5)]);
        assert!(
            rollups
                .iter()
                .all(|r| r.latency_max == Duration::from_millis(2))
        );
    }

    #[test]
    fn drain_empties_and_forgets_idle_keys() {
        let table = RollupTable::new(8);
        table.fold(&call("/a", 1, 200));
        assert_eq!(drain(&table).len(), 1);
        // Nothing new: the key had a call last window, so it is reported empty-free and dropped.
        assert!(drain(&table).is_empty());
        table.fold(&call("/a", 1, 200));
        let rollups = drain(&table);
        assert_eq!(rollups[0].count, 1);
        assert_eq!(rollups[0].latency_min, Duration::from_millis(1));
    }

    #[test]
    fn full_shard_folds_into_overflow_then_drops() {
        let table = RollupTable::new(2);
        for i in 0..(2 + OVERFLOW_KEYS + 5) {
            // Same product/method/status: every extra route shares one overflow key.
            table.fold(&call(&format!("/r{i}"), 1, 200));
        }
        let rollups = drain(&table);
        let total: u64 = rollups.iter().map(|r| r.count).sum();
        assert_eq!(total, (2 + OVERFLOW_KEYS + 5) as u64);
        let other = rollups
            .iter()
            .find(|r| r.key.route.as_deref() == Some(OVERFLOW_ROUTE))
            .unwrap();
        assert_eq!(other.count, (OVERFLOW_KEYS + 5) as u64);
        assert_eq!(other.key.host, None);
    }

    #[test]
    fn differently_cased_hosts_merge_at_drain() {
        let table = RollupTable::new(8);
        let mut upper = call("/a", 1, 200);
        upper.host = Some(Authority::from_static("EXAMPLE.cloud.databricks.com"));
        table.fold(&upper);
        table.fold(&call("/a", 1, 200));
        let rollups = drain(&table);
        assert_eq!(rollups.len(), 1);
        assert_eq!(rollups[0].count, 2);
    }

    #[test]
    fn closed_table_drops_and_counts() {
        let table = RollupTable::new(8);
        table.fold(&call("/a", 1, 200));
        table.close();
        assert!(!table.fold(&call("/a", 1, 200)));
        assert_eq!(table.counts(), (1, 1, 0));
        assert_eq!(drain(&table)[0].count, 1);
    }

    #[test]
    fn concurrent_folds_are_all_counted() {
        let table = Arc::new(RollupTable::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let table = table.clone();
                std::thread::spawn(move || {
                    let records: Vec<_> = (0..4).map(|k| call(&format!("/k{k}"), t, 200)).collect();
                    for i in 0..10_000 {
                        table.fold(&records[i % 4]);
                    }
                })
            })
            .collect();
        let mut total = 0;
        // Drain while folding: each call lands in exactly one window.
        while threads.iter().any(|t| !t.is_finished()) {
            total += drain(&table).iter().map(|r| r.count).sum::<u64>();
        }
        for thread in threads {
            thread.join().unwrap();
        }
        total += drain(&table).iter().map(|r| r.count).sum::<u64>();
        assert_eq!(total, 40_000);
        assert_eq!(table.counts().0, 40_000);
    }
}
