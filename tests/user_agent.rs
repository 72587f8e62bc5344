//! `UserAgentLayer` over a real hyper-util client, against a real hyper server on 127.0.0.1:
//! what the server receives is what Databricks would see.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Recorded, Reply, TestServer};
use http::Request;
use http::header::USER_AGENT;
use http_body_util::Empty;
use kasal_telemetry::user_agent::{Product, UserAgent, UserAgentLayer};
use tower::{ServiceBuilder, ServiceExt};

async fn send_and_record(
    server: &TestServer,
    layers: usize,
    caller_user_agent: Option<&str>,
) -> Recorded {
    let user_agent = UserAgent::new(Product::Mcp);
    let mut client = tower::util::BoxCloneService::new(common::client::<Empty<Bytes>>());
    for _ in 0..layers {
        client = tower::util::BoxCloneService::new(
            ServiceBuilder::new()
                .layer(UserAgentLayer::new(user_agent.clone()))
                .service(client),
        );
    }
    let mut request = Request::builder().uri(server.url("/api/2.0/mcp"));
    if let Some(value) = caller_user_agent {
        request = request.header(USER_AGENT, value);
    }
    let before = server.hits();
    let response = client
        .oneshot(request.body(Empty::new()).unwrap())
        .await
        .expect("request reaches the server");
    assert_eq!(response.status(), 200);
    let seen = server.wait_for(before + 1, Duration::from_secs(5)).await;
    seen.last()
        .expect("the server recorded the request")
        .clone()
}

#[tokio::test]
async fn server_sees_one_user_agent_with_ours_first_and_the_callers_kept() {
    let server = TestServer::start(|_, _| Reply::status(200)).await;
    let seen = send_and_record(&server, 1, Some("their-ua/1.2")).await;
    assert_eq!(
        seen.header_all("user-agent"),
        ["kasal_mcp/0.1.0 their-ua/1.2"]
    );
    assert_eq!(
        Product::from_user_agent(&seen.header("user-agent").unwrap()),
        Some(Product::Mcp)
    );
}

#[tokio::test]
async fn request_without_user_agent_gets_ours() {
    let server = TestServer::start(|_, _| Reply::status(200)).await;
    let seen = send_and_record(&server, 1, None).await;
    assert_eq!(seen.header_all("user-agent"), ["kasal_mcp/0.1.0"]);
}

#[tokio::test]
async fn double_wrapped_stack_does_not_duplicate_the_token() {
    let server = TestServer::start(|_, _| Reply::status(200)).await;
    let with_caller = send_and_record(&server, 2, Some("their-ua/1.2")).await;
    assert_eq!(
        with_caller.header_all("user-agent"),
        ["kasal_mcp/0.1.0 their-ua/1.2"]
    );
    let without = send_and_record(&server, 2, None).await;
    assert_eq!(without.header_all("user-agent"), ["kasal_mcp/0.1.0"]);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn request_with_several_user_agent_values_leaves_with_one() {
    let server = TestServer::start(|_, _| Reply::status(200)).await;
    let client = ServiceBuilder::new()
        .layer(UserAgentLayer::new(UserAgent::new(Product::CrewGen)))
        .service(common::client::<Empty<Bytes>>());
    let request = Request::builder()
        .uri(server.url("/"))
        .header(USER_AGENT, "a/1")
        .header(USER_AGENT, "b/2")
        .body(Empty::new())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(
        seen[0].header_all("user-agent"),
        ["kasal_crew_gen/0.1.0 a/1 b/2"]
    );
}
