//! The execution context on spans and records: task-local scope, request-extension override,
//! isolation between 1,000 concurrent tasks, and no token text anywhere.
#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/common/spans.rs"]
mod spans;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Reply, TestServer};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use kasal_trace::{
    CallRecord, ExecutionContext, ExecutionMode, OperationId, SecretToken, SpanLayer,
};
use kasal_user_agent::Product;
use spans::SpanCapture;
use tower::{Layer, Service, ServiceExt};
use tracing::instrument::WithSubscriber;

const TOKEN: &str = "dapiSECRET";

fn recorder() -> (
    Arc<Mutex<Vec<CallRecord>>>,
    impl Fn(CallRecord) + Clone + Send + Sync,
) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    (records, move |record| sink.lock().unwrap().push(record))
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

#[tokio::test]
async fn user_context_is_on_the_span_and_the_token_nowhere() {
    let (dispatch, captured) = SpanCapture::dispatch();
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let server = TestServer::start(|_, _| Reply::text(200, "{}")).await;
    let (records, record) = recorder();
    let mut client = SpanLayer::new(Product::Genie)
        .recorder(record)
        .layer(common::client::<Empty<Bytes>>());

    let ctx = ExecutionContext::user("alice@x")
        .with_user_token(SecretToken::new(TOKEN))
        .with_obo_dev_fallback(true);
    let url = server.url("/api");
    ctx.scope(async {
        assert_eq!(
            ExecutionContext::current().caller_id.as_deref(),
            Some("alice@x")
        );
        let response = client.ready().await.unwrap().call(get(&url)).await.unwrap();
        response.into_body().collect().await.unwrap();
    })
    .await;

    let span = captured.only_span("HTTP");
    assert_eq!(span.field("execution.context").as_deref(), Some("user"));
    assert_eq!(span.field("caller.id").as_deref(), Some("alice@x"));
    assert_eq!(
        span.field("execution.obo_dev_fallback").as_deref(),
        Some("true")
    );
    let texts = captured.all_text();
    assert!(texts.len() > 10);
    assert!(texts.iter().all(|t| !t.contains(TOKEN)), "{texts:?}");

    let records = records.lock().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].mode, ExecutionMode::User);
    assert_eq!(records[0].caller_id.as_deref(), Some("alice@x"));
    assert!(records[0].obo_dev_fallback);
    assert!(!format!("{:?}", records[0]).contains(TOKEN));
    // Outside the scope: the service context again.
    assert_eq!(ExecutionContext::try_current(), None);
    assert_eq!(ExecutionContext::current().mode, ExecutionMode::Service);
}

#[tokio::test]
async fn request_extension_overrides_the_task_local() {
    let (dispatch, captured) = SpanCapture::dispatch();
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let (records, record) = recorder();
    let inner = tower::service_fn(|_request: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let mut service = SpanLayer::new(Product::Agent).recorder(record).layer(inner);

    let mut request = get("http://h/");
    request
        .extensions_mut()
        .insert(ExecutionContext::user("bob@y").with_operation_id(OperationId::new("op-bob")));
    ExecutionContext::user("alice@x")
        .with_operation_id(OperationId::new("op-alice"))
        .scope(async {
            drop(service.ready().await.unwrap().call(request).await.unwrap());
            // An `OperationId` extension alone overrides only the operation.
            let mut request = get("http://h/");
            request
                .extensions_mut()
                .insert(OperationId::new("op-explicit"));
            drop(service.ready().await.unwrap().call(request).await.unwrap());
        })
        .await;

    let spans = captured.spans_named("HTTP");
    assert_eq!(spans[0].field("caller.id").as_deref(), Some("bob@y"));
    assert_eq!(
        spans[0].field("kasal.operation_id").as_deref(),
        Some("op-bob")
    );
    assert_eq!(spans[1].field("caller.id").as_deref(), Some("alice@x"));
    assert_eq!(
        spans[1].field("kasal.operation_id").as_deref(),
        Some("op-explicit")
    );
    let records = records.lock().unwrap();
    assert_eq!(records[0].caller_id.as_deref(), Some("bob@y"));
    assert_eq!(
        records[1].operation_id,
        Some(OperationId::new("op-explicit"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_tasks_keep_their_own_context() {
    const TASKS: usize = 1000;
    let (dispatch, captured) = SpanCapture::dispatch();
    let (records, record) = recorder();
    let inner = tower::service_fn(|request: Request<Empty<Bytes>>| async move {
        // Interleave the tasks, then answer with who the inner service thinks it runs for.
        tokio::task::yield_now().await;
        let ctx = ExecutionContext::current();
        let who = format!(
            "{}|{}",
            ctx.caller_id.as_deref().unwrap_or("-"),
            request.uri().path()
        );
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who))))
    });
    let service = SpanLayer::new(Product::Mcp).recorder(record).layer(inner);

    let mut tasks = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let mut service = service.clone();
        let ctx = ExecutionContext::user(format!("user{i}@x"))
            .with_user_token(SecretToken::new(format!("{TOKEN}{i}")))
            .with_operation_id(OperationId::new(format!("op{i}")));
        let task = ctx.scope(async move {
            let response = service
                .ready()
                .await
                .unwrap()
                .call(get(&format!("http://h/{i}")))
                .await
                .unwrap();
            tokio::task::yield_now().await;
            response.into_body().collect().await.unwrap().to_bytes()
        });
        tasks.push(tokio::spawn(task.with_subscriber(dispatch.clone())));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), format!("user{i}@x|/{i}"));
    }

    let records = records.lock().unwrap();
    assert_eq!(records.len(), TASKS);
    let mut seen = vec![false; TASKS];
    for record in records.iter() {
        let op = record.operation_id.as_ref().expect("operation id");
        let i: usize = op.as_str().trim_start_matches("op").parse().unwrap();
        assert_eq!(
            record.caller_id.as_deref(),
            Some(format!("user{i}@x").as_str())
        );
        assert_eq!(record.mode, ExecutionMode::User);
        assert!(
            !std::mem::replace(&mut seen[i], true),
            "op{i} recorded twice"
        );
        assert!(!format!("{record:?}").contains(TOKEN));
    }
    assert!(seen.iter().all(|s| *s));

    let spans = captured.spans_named("HTTP");
    assert_eq!(spans.len(), TASKS);
    for span in &spans {
        let op = span.field("kasal.operation_id").unwrap();
        let i = op.trim_start_matches("op");
        assert_eq!(span.field("caller.id"), Some(format!("user{i}@x")));
        // The template is inferred from the path, the id collapsed.
        assert_eq!(span.field("otel.name").as_deref(), Some("GET /{id}"));
        assert!(span.field("url.full").unwrap().ends_with(&format!("/{i}")));
        assert!(span.closed);
    }
    assert!(captured.all_text().iter().all(|t| !t.contains(TOKEN)));
}

#[test]
fn sync_scope_and_defaults() {
    assert_eq!(ExecutionContext::current(), ExecutionContext::service());
    let ctx = ExecutionContext::service()
        .with_caller_id("sp-123")
        .with_operation_id(OperationId::new("op"));
    let seen = ctx.clone().sync_scope(ExecutionContext::try_current);
    assert_eq!(seen, Some(ctx.clone()));
    let mut extensions = http::Extensions::new();
    let from_task = ctx
        .clone()
        .sync_scope(|| ExecutionContext::for_request(&extensions));
    assert_eq!(from_task, ctx);
    extensions.insert(ExecutionContext::user("bob"));
    let from_request = ctx.sync_scope(|| ExecutionContext::for_request(&extensions));
    assert_eq!(from_request.caller_id.as_deref(), Some("bob"));
    assert_eq!(ExecutionContext::try_current(), None);
    let token = SecretToken::new(TOKEN);
    assert_eq!(format!("{token} {token:?}"), "*** ***");
    let debug = format!("{:?}", ExecutionContext::user("a").with_user_token(token));
    assert!(!debug.contains(TOKEN), "{debug}");
    let a = OperationId::generate();
    assert_eq!(a.as_str().len(), 36);
    assert_ne!(a, OperationId::generate());
}
