//! Host validation never panics; an accepted public host is never a loopback literal.
#![no_main]
use kasal_telemetry::validate_host;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(host) = validate_host(text, false) {
        assert!(!host.authority().starts_with("127."));
    }
    let _ = validate_host(text, true);
});
