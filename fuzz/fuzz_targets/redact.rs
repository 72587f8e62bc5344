//! `redact` never panics, stays under the cap and is idempotent.
#![no_main]
use kasal_telemetry::trace::{MAX_REDACTED_LEN, redact};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let once = redact(text);
    assert!(once.len() <= MAX_REDACTED_LEN);
    assert_eq!(redact(&once), once);
});
