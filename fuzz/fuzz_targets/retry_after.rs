//! Retry-After parsing never panics.
#![no_main]
use kasal_telemetry::classify::parse_retry_after;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let _ = parse_retry_after(&value, std::time::SystemTime::now());
    }
});
