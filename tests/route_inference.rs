//! Route inference through the whole pipeline: 10,000 calls to distinct raw paths (ids, names,
//! e-mails, file paths) fold into a bounded number of rollup keys, none holding a raw path.
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use kasal_telemetry::user_agent::Product;
use kasal_telemetry::{InMemoryExporter, Telemetry, TelemetryLayer};
use tower::{ServiceBuilder, ServiceExt};

const HOST: &str = "https://adb-1234567890123456.7.azuredatabricks.net";

fn raw_path(i: u32) -> String {
    match i % 10 {
        0 => format!("/serving-endpoints/endpoint-{}/invocations", i % 977),
        1 => format!("/api/2.0/sql/statements/{:08x}-aaaa-4bbb-8ccc-{i:012}", i),
        2 => format!("/api/2.0/genie/spaces/{i:x}ab/conversations/{i}/messages/m{i}x"),
        3 => format!("/api/2.0/fs/files/Volumes/main/raw/user{i}/file-{i}.csv"),
        4 => format!("/api/2.1/unity-catalog/tables/main.schema_{i}.table_{i}"),
        5 => format!("/api/2.0/vector-search/indexes/main.docs.idx_{i}/query"),
        6 => format!("/v1/orders/{i}/items/{}", i * 7),
        7 => format!("/users/user{i}@example.com/settings"),
        8 => format!(
            "/blobs/{:016x}",
            u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
        ),
        _ => format!("/api/2.0/secrets/get?scope=team{i}&key=k{i}"),
    }
}

#[tokio::test]
async fn ten_thousand_raw_paths_fold_into_few_rollup_keys() {
    let exporter = InMemoryExporter::new();
    let telemetry = Telemetry::builder()
        .exporter(exporter.clone())
        .ignore_env()
        .flush_interval(Duration::from_secs(3600))
        .build();
    let inner = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let client = ServiceBuilder::new()
        .layer(TelemetryLayer::new(Product::Agent, telemetry.clone()))
        .service(inner);
    for i in 0..10_000 {
        let request = Request::post(format!("{HOST}{}", raw_path(i)))
            .body(Full::default())
            .unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    telemetry.flush().await;
    let rollups = exporter.rollups();
    assert_eq!(rollups.iter().map(|r| r.count).sum::<u64>(), 10_000);
    assert_eq!(telemetry.stats().rollup_overflow, 0);
    let mut routes: Vec<_> = rollups
        .iter()
        .map(|r| r.key.route.as_deref().unwrap().to_owned())
        .collect();
    routes.sort();
    routes.dedup();
    assert_eq!(
        routes,
        [
            "/api/2.0/fs/files/{path}",
            "/api/2.0/genie/spaces/{space_id}/conversations/{conversation_id}/messages/{message_id}",
            "/api/2.0/secrets/get",
            "/api/2.0/sql/statements/{statement_id}",
            "/api/2.0/vector-search/indexes/{index_name}/query",
            "/api/2.1/unity-catalog/tables/{full_name}",
            "/blobs/{id}",
            "/serving-endpoints/{name}/invocations",
            "/users/{id}/settings",
            "/v1/orders/{id}/items/{id}",
        ]
    );
    // Nothing raw: no id, name or e-mail of any call.
    for route in &routes {
        assert!(
            route
                .split('/')
                .all(|segment| segment.starts_with('{')
                    || !kasal_telemetry::route::is_id_like(segment)),
            "{route}"
        );
        assert!(
            !route.contains("user1") && !route.contains("endpoint-"),
            "{route}"
        );
    }
    telemetry.shutdown().await;
}
