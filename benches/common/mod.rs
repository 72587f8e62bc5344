//! What the benches share: a counting global allocator, for peak-memory figures.
//!
//! A bench installs it with
//! `#[global_allocator] static GLOBAL: common::CountingAllocator = common::CountingAllocator;`
//! and reads [`LIVE`] (bytes allocated now) and [`PEAK`] (the most since it was last reset).
// The one place `unsafe` is needed: a `GlobalAlloc` implementation that forwards to `System`.
#![allow(unsafe_code, dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Forwards to `System`, counting live bytes and their peak.
pub struct CountingAllocator;

/// Bytes allocated and not yet freed.
pub static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most `LIVE` reached since it was last reset (see [`reset_peak`]).
pub static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Resets the peak to the bytes live now, and returns them (the baseline).
pub fn reset_peak() -> usize {
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    live
}

/// The peak since `baseline` was taken, above it.
pub fn peak_above(baseline: usize) -> usize {
    PEAK.load(Relaxed).saturating_sub(baseline)
}

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it upholds
// `GlobalAlloc`'s contract exactly as `System` does; the counters do not touch the memory.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        new
    }
}

/// A real `Telemetry` pipeline (default settings, no environment) whose exporter drops every
/// batch: what each bench records into, so the record path is measured and nothing is sent.
pub fn noop_telemetry(rt: &tokio::runtime::Runtime) -> kasal_telemetry::Telemetry {
    rt.block_on(async {
        kasal_telemetry::Telemetry::builder()
            .exporter(tower::service_fn(|_: kasal_telemetry::Batch| async {
                Ok::<_, std::convert::Infallible>(())
            }))
            .ignore_env()
            .build()
    })
}
