//! User-Agent parsing and building never panic.
#![no_main]
use kasal_telemetry::user_agent::{Product, UserAgent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = Product::from_user_agent(text);
    let _ = text.parse::<Product>();
    let _ = UserAgent::new(Product::Jobs).with_version(text);
    let middle = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i);
    let (key, value) = text.split_at(middle);
    let _ = UserAgent::new(Product::Jobs).with_extra(key, value);
});
