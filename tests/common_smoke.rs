//! The shared test server answers, records, resets and streams.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Reply, ReplyBody, TestServer};
use http_body_util::{BodyExt, Empty};

#[tokio::test]
async fn records_and_answers_from_script() {
    let server = TestServer::start(|_, n| {
        if n == 0 {
            Reply::text(503, "busy").header("retry-after", "1")
        } else {
            Reply::status(200).body(ReplyBody::Chunks(
                vec![Bytes::from("a"), Bytes::from("b")],
                Duration::from_millis(1),
            ))
        }
    })
    .await;
    let client = common::client::<Empty<Bytes>>();
    let first = client
        .get(server.url("/x?y=1").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(first.status(), 503);
    assert_eq!(first.headers()["retry-after"], "1");
    let second = client.get(server.url("/z").parse().unwrap()).await.unwrap();
    let body = second.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ab");
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri.path_and_query().unwrap().as_str(), "/x?y=1");
}

#[tokio::test]
async fn reset_is_an_error_for_the_client() {
    let server = TestServer::start(|_, _| Reply::Reset).await;
    let client = common::client::<Empty<Bytes>>();
    let err = client
        .get(server.url("/").parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(server.hits(), 1);
    let chain = format!("{err:?}");
    assert!(
        chain.contains("reset") || chain.contains("IncompleteMessage"),
        "{chain}"
    );
}
