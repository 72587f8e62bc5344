//! The main job: the whole stack against a local Databricks workspace, in one command.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! It starts the local development workspace (`kasal-dev-workspace`) on 127.0.0.1, runs an
//! agent-like workload through the telemetry stack (retrieval, secrets, embeddings, and two
//! users' chat runs with a streamed completion, meeting injected 429s, a 503 and a 403), shuts
//! the pipeline down, and prints what happened: per product the User-Agent the workspace saw,
//! requests, calls, retries, outcomes and latency; tokens per model; per-user counts; the
//! telemetry the workspace received, with one decoded protoLog; and the checks between them.
//! It exits non-zero when a check fails. Nothing leaves the machine.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;

mod workload;

#[tokio::main]
async fn main() -> ExitCode {
    // One progress line, rewritten in place on a terminal; one line per phase otherwise.
    let terminal = std::io::stderr().is_terminal();
    let last_phase = Mutex::new("");
    let progress = |p: &workload::Progress| {
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(
                err,
                "\r\x1b[2Kquickstart: {:<20} {:>3}/{} calls",
                p.phase, p.done, p.total
            );
            let _ = err.flush();
        } else if let Ok(mut last) = last_phase.lock() {
            if *last != p.phase {
                *last = p.phase;
                let _ = writeln!(
                    err,
                    "quickstart: {} ({}/{} calls done)",
                    p.phase, p.done, p.total
                );
            }
        }
    };
    let result = workload::run(&progress).await;
    if terminal {
        eprintln!();
    }
    match result {
        Ok(summary) => {
            println!("{summary}");
            if summary.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("quickstart failed: {error}");
            ExitCode::FAILURE
        }
    }
}
