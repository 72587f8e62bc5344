//! Spans through tracing-opentelemetry into the OpenTelemetry SDK's in-memory exporter, with
//! the W3C trace context propagator set globally: what the `traceparent` tests of both stacks
//! read.
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

/// Sets this thread's subscriber to one exporting every span to the returned exporter (while
/// the guard lives), and the global propagator to W3C trace context.
pub fn otel_subscriber() -> (
    tracing::dispatcher::DefaultGuard,
    InMemorySpanExporter,
    SdkTracerProvider,
) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(subscriber));
    (guard, exporter, provider)
}

/// The spans finished so far.
pub fn finished(exporter: &InMemorySpanExporter, provider: &SdkTracerProvider) -> Vec<SpanData> {
    let _ = provider.force_flush();
    exporter.get_finished_spans().expect("finished spans")
}
