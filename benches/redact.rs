//! `redact` on clean text, text with secrets and adversarial text, side by side with the
//! regex implementation it replaced (one `regex` pass, kept here for the comparison only).
//!
//! Reported by criterion per input; `ns per KiB` = time / (input bytes / 1024). After the
//! group, a summary prints ns/KiB for each input and the adversarial / clean ratio.
//!
//! Run: `cargo bench --bench redact -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::LazyLock;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group};
use kasal_telemetry::trace::redact;
use regex::Regex;

/// The previous implementation's pattern (one regex, `replace_all`), for comparison.
static OLD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i:(?P<scheme>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+)",
        r"|(?i:(?P<header>\bx-forwarded-access-token\s*[:=]\s*)[^\s,;]+)",
        r"|\b(?:dapi|dkea|dose)[0-9A-Za-z_-]{6,}",
        r"|(?:dapi|dkea|dose)[0-9a-f]{16,}(?:-[0-9]+)?",
        r"|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
        r"|(?i:(?P<key>\b[a-z0-9_]*(?:token|password|secret)=)[^&\s,;'\x22]+)",
        r"|(?i:(?P<colon>\b[a-z0-9_]*(?:token|password|secret)\x22?\s*:\s*\x22?)[^\x22\s,;}&']+)",
        r"|(?i:(?P<url>\b[a-z][a-z0-9+.-]*://)[^/?#\s@]+@)",
        r"|(?:/home/|/Users/|(?i:[a-z]:\\{1,2}users\\{1,2}))[^/\\\s]+",
    ))
    .unwrap()
});

fn old_redact(text: &str) -> String {
    OLD.replace_all(text, "REDACTED").into_owned()
}

const SIZE: usize = 20 * 1024;

fn repeat_to(piece: &str) -> String {
    piece.repeat(SIZE / piece.len() + 1)[..SIZE].to_owned()
}

/// The inputs: name and text, each 20 KiB.
fn inputs() -> Vec<(&'static str, String)> {
    vec![
        (
            "clean",
            repeat_to(
                "error sending request for url (https://adb-1.2.azuredatabricks.net/api/2.0/serving-endpoints/model/invocations): connection closed before message completed; retrying the statement as planned ",
            ),
        ),
        (
            "secrets",
            repeat_to(
                "GET https://alice:pw123@ws.cloud.databricks.com/api?access_token=tok1&x=1 failed: Authorization: Bearer dapi0123456789abcdef0123456789abcdef-2 {\"client_secret\": \"s3\"} file /home/alice/.databrickscfg ",
            ),
        ),
        // Every byte starts a matcher that fails late: keys glued into one run with a
        // separator run after them, `//x:` userinfo prefixes with no `@`, schemes without
        // credentials, token prefixes one hex digit short, `eyJ` three characters short.
        (
            "adversarial: keys",
            repeat_to("tokenpasswordsecretapi_key\"\"  "),
        ),
        ("adversarial: userinfo", repeat_to("//a:b//c:d")),
        (
            "adversarial: prefixes",
            repeat_to("dapi0123456789abcdeBearer eyJabc."),
        ),
        (
            "adversarial: mixed",
            repeat_to("tto/home/~//~:%2F%2Fbasic\t%20dosee%3Dpwd\"'\\ "),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("redact");
    for (name, text) in inputs() {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("ours/{name}"), |b| {
            b.iter(|| redact(black_box(&text)))
        });
        group.bench_function(format!("regex (before)/{name}"), |b| {
            b.iter(|| old_redact(black_box(&text)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

/// ns per KiB of `f` over `text`, the median of a few timed runs.
fn ns_per_kib(text: &str, f: &dyn Fn(&str)) -> f64 {
    let mut runs: Vec<f64> = (0..15)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..20 {
                f(black_box(text));
            }
            start.elapsed().as_nanos() as f64 / 20.0 / (text.len() as f64 / 1024.0)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    println!("\nns per KiB of input (20 KiB each), median of 15 runs:");
    let ours = |text: &str| drop(black_box(redact(text)));
    let old = |text: &str| drop(black_box(old_redact(text)));
    let mut clean = 0.0;
    for (name, text) in inputs() {
        let (a, b) = (ns_per_kib(&text, &ours), ns_per_kib(&text, &old));
        if name == "clean" {
            clean = a;
        }
        println!(
            "  {name:<24} ours {a:>9.0} ns/KiB   regex before {b:>9.0} ns/KiB   ours vs clean {:>5.2}x",
            a / clean
        );
    }
    // The same inputs cut to 2 KiB (below the output cap), where every byte is scanned.
    println!("\n2 KiB inputs (every byte scanned: no early stop at the output cap):");
    for (name, text) in inputs() {
        let text = &text[..2048];
        let (a, b) = (ns_per_kib(text, &ours), ns_per_kib(text, &old));
        if name == "clean" {
            clean = a;
        }
        println!(
            "  {name:<24} ours {a:>9.0} ns/KiB   regex before {b:>9.0} ns/KiB   ours vs clean {:>5.2}x",
            a / clean
        );
    }
}
