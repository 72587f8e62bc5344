//! The local Databricks workspace, on its own, for poking at with curl or a client:
//!
//! ```sh
//! cargo run --example workspace                 # a free port
//! cargo run --example workspace -- --port 8080  # a chosen port
//! cargo run --example workspace -- --serve-for 5 # stop after 5 s (CI uses this)
//! ```
//!
//! It serves until Ctrl-C (or `--serve-for`), printing one line per call it answers. Inject
//! faults with `--fail ROUTE:TIMES:STATUS`, e.g. `--fail /serving-endpoints/:2:429`.

use std::time::Duration;

use http::StatusCode;
use kasal_dev_workspace::{Fault, Workspace};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 0u16;
    let mut serve_for = None;
    let mut faults = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = value()?.parse()?,
            "--serve-for" => serve_for = Some(Duration::from_secs_f64(value()?.parse()?)),
            "--fail" => faults.push(parse_fault(&value()?)?),
            "-h" | "--help" => {
                println!(
                    "usage: workspace [--port N] [--serve-for SECONDS] [--fail ROUTE:TIMES:STATUS]..."
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other} (try --help)").into()),
        }
    }

    let workspace = Workspace::builder()
        .port(port)
        .user("dapi-local-alice", "alice@example.com")
        .user("dapi-local-bob", "bob@example.com")
        .start()
        .await?;
    for (route, times, status) in faults {
        let fault = match status {
            StatusCode::TOO_MANY_REQUESTS => Fault::too_many_requests(Duration::from_secs(1)),
            status => Fault::status(status),
        };
        workspace.inject(&route, times, fault);
    }
    let url = workspace.url();
    println!("local Databricks workspace at {url}");
    println!(
        "  POST {url}/serving-endpoints/{{name}}/invocations   (chat, \"stream\": true, embeddings)"
    );
    println!("  POST {url}/api/2.0/vector-search/indexes/{{name}}/query");
    println!("  GET  {url}/api/2.0/secrets/get?scope=kasal&key=openai_api_key");
    println!("  GET  {url}/api/2.0/secrets/scopes/list");
    println!("  MCP  {}", workspace.mcp_url());
    println!("  GET  {url}/api/2.0/connector-service/feature-flags/KASAL/0.1.0");
    println!("  POST {url}/telemetry-ext, {url}/telemetry-unauth");
    println!("  POST {url}/v1/metrics (OTLP/HTTP protobuf)");
    println!("tokens dapi-local-alice and dapi-local-bob belong to alice@ and bob@example.com");
    println!(
        "try: curl -s {url}/serving-endpoints/databricks-claude/invocations -H 'content-type: application/json' -d '{{\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
    );

    // One line per call, as they come.
    let printer = async {
        let mut printed = 0;
        loop {
            workspace
                .wait_for(Duration::from_secs(3600), |w| w.calls().len() > printed)
                .await;
            for call in workspace.calls().iter().skip(printed) {
                println!(
                    "{} {} {} -> {}{} ua={:?} user={:?} ({} ms)",
                    call.method,
                    call.path,
                    call.route.as_deref().unwrap_or("-"),
                    call.status.as_u16(),
                    if call.injected { " (injected)" } else { "" },
                    call.user_agent.as_deref().unwrap_or("-"),
                    call.caller.as_deref().or(call.forwarded_user.as_deref()),
                    call.latency.as_millis(),
                );
                printed += 1;
            }
        }
    };
    let stop = async {
        match serve_for {
            Some(duration) => tokio::time::sleep(duration).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::select! {
        () = printer => {}
        () = stop => {}
    }
    let batches = workspace.telemetry_batches();
    println!(
        "answered {} calls; received {} telemetry batches ({} bytes); {} OTLP requests",
        workspace.calls().len(),
        batches.len(),
        batches.iter().map(|b| b.bytes).sum::<usize>(),
        workspace.otlp().requests,
    );
    workspace.shutdown().await;
    Ok(())
}

fn parse_fault(text: &str) -> Result<(String, usize, StatusCode), Box<dyn std::error::Error>> {
    let mut parts = text.rsplitn(3, ':');
    let (Some(status), Some(times), Some(route)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("--fail wants ROUTE:TIMES:STATUS, got {text}").into());
    };
    Ok((route.to_owned(), times.parse()?, status.parse()?))
}
