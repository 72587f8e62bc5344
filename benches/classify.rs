//! `DefaultClassifier::classify_response` per call, side by side with tower-http's
//! `ServerErrorsAsFailures` classifying the same responses.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Response, StatusCode, header::RETRY_AFTER};
use kasal_classify::{Classify, DefaultClassifier};
use tower_http::classify::{ClassifiedResponse, ClassifyResponse, ServerErrorsAsFailures};

fn responses() -> Vec<(&'static str, Response<()>)> {
    let ok = Response::new(());
    let unavailable = Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .body(())
        .unwrap();
    let throttled = Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header(RETRY_AFTER, "5")
        .body(())
        .unwrap();
    vec![
        ("200", ok),
        ("503", unavailable),
        ("429 retry-after 5", throttled),
    ]
}

fn classify(c: &mut Criterion) {
    let classifier = DefaultClassifier::new();
    for (name, res) in responses() {
        let mut group = c.benchmark_group(format!("classify_response/{name}"));
        group.bench_function("kasal DefaultClassifier", |b| {
            b.iter(|| {
                let res = black_box(&res);
                black_box(classifier.classify_response(res.status(), res.headers()))
            })
        });
        group.bench_function("tower-http ServerErrorsAsFailures", |b| {
            b.iter(|| {
                let res = black_box(&res);
                match ServerErrorsAsFailures::new().classify_response(res) {
                    ClassifiedResponse::Ready(result) => black_box(result.is_ok()),
                    ClassifiedResponse::RequiresEos(_) => unreachable!(),
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, classify);
criterion_main!(benches);
