//! `redact_uri` never panics and stays under the cap.
#![no_main]
use kasal_telemetry::trace::{MAX_REDACTED_LEN, redact_uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(uri) = http::Uri::try_from(data) {
        assert!(redact_uri(&uri).len() <= MAX_REDACTED_LEN);
    }
});
