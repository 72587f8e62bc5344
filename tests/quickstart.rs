//! The quickstart's workload (the same code `cargo run --example quickstart` runs), with its
//! summary's numbers asserted against the local workspace's record.

#[path = "../examples/quickstart/workload.rs"]
mod workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_summary_matches_what_the_workspace_saw() {
    let summary = workload::run(&|_| {}).await.expect("the workload runs");
    let failed: Vec<_> = summary.checks.iter().filter(|c| !c.ok).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}\n{summary}");

    // Calls per product equal what the workspace saw (its requests count every retry), and every
    // User-Agent it saw names the product.
    for product in ["vectorsearch", "secret", "embedding", "llm", "mcp"] {
        let line = &summary.products[product];
        assert!(line.calls > 0, "{product}");
        assert_eq!(
            line.requests,
            line.calls + line.injected_retryable,
            "{product}"
        );
        assert_eq!(line.retries, line.injected_retryable, "{product}");
        assert_eq!(line.outcomes.iter().sum::<u64>(), line.calls, "{product}");
        assert_eq!(
            line.user_agents.len(),
            1,
            "{product}: {:?}",
            line.user_agents
        );
        let ua = line.user_agents.iter().next().unwrap();
        assert!(ua.starts_with(&format!("kasal_{product}/")), "{ua}");
    }
    // The agent app's server records: one per request the users sent it.
    let agent = &summary.products["agent"];
    let sent: u64 = summary.users.values().map(|u| u.sent).sum();
    assert_eq!(agent.calls, sent);
    assert_eq!(agent.outcomes[0], sent);
    assert_eq!(summary.products["vectorsearch"].retries, 2);
    assert_eq!(summary.products["embedding"].retries, 1);
    assert_eq!(summary.products["secret"].outcomes[2], 1, "the one 403");
    // The exporter's own calls say telemetry, and the pipeline never records them.
    assert!(summary.products["telemetry"].requests >= 2);
    assert_eq!(summary.products["telemetry"].calls, 0);
    let unattributed = summary.products.get("(none)").map_or(0, |l| l.requests);
    assert_eq!(unattributed, 0);

    // Per-user counts match what each user sent, in the workspace and in the pipeline.
    for (email, _) in workload::USERS {
        let line = &summary.users[email];
        assert!(line.sent > 0);
        assert_eq!(line.workspace_saw, line.sent, "{email}");
        assert_eq!(line.pipeline_calls, line.sent, "{email}");
        assert_eq!(line.mixed, 0, "{email}");
    }
    assert_ne!(
        summary.users["alice@example.com"].sent, summary.users["bob@example.com"].sent,
        "different counts, so a mix-up would show"
    );

    // Token sums equal what the serving endpoint returned.
    assert_eq!(summary.tokens.len(), 2);
    for (model, line) in &summary.tokens {
        assert!(line.served_total > 0, "{model}");
        assert_eq!(line.input + line.output, line.served_total, "{model}");
        assert_eq!(
            line.pipeline.0, line.input,
            "{model}: pipeline input tokens"
        );
        assert_eq!(
            line.pipeline.1, line.output,
            "{model}: pipeline output tokens"
        );
        assert_eq!(
            line.pipeline.2, line.served_total,
            "{model}: pipeline total"
        );
        assert!(line.pipeline_calls > 0, "{model}");
    }

    // Telemetry reached the workspace; nothing was dropped.
    assert!(summary.batches_received >= 1);
    assert!(summary.bytes_received > 0);
    assert!(summary.sample_log.is_some());
    assert_eq!(summary.stats.dropped, 0);
    assert_eq!(summary.stats.export_failures, 0);
    assert_eq!(summary.stats.export_dropped, 0);
    let pipeline_calls: u64 = summary.products.values().map(|l| l.calls).sum();
    assert_eq!(summary.stats.accepted, pipeline_calls);

    let printed = summary.to_string();
    assert!(printed.contains("all checks hold"), "{printed}");
    assert!(!printed.contains("dapi-local"), "no token in the summary");
}
