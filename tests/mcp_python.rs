//! The MCP example against an MCP server from another project: the Python `mcp` package's
//! streamable-HTTP server (`dev/mcp_server.py`, `pip install 'mcp==2.3.0'`). Skipped, with the
//! reason printed, only where there is no Python; a Python without the package fails the test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "../examples/mcp_client.rs"]
#[allow(dead_code)]
mod example;

/// The Python server, killed when dropped.
struct PythonServer(Child);

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> Option<&'static str> {
    ["python3", "python"].into_iter().find(|python| {
        Command::new(python)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Starts `dev/mcp_server.py` on a free port and returns it with its URL (the script prints
/// the URL once its socket is bound).
fn start(python: &str) -> (PythonServer, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/dev/mcp_server.py");
    let mut child = Command::new(python)
        .args([script, "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = PythonServer(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints its URL");
    let url = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| {
            panic!(
                "dev/mcp_server.py did not start (is `pip install 'mcp==2.3.0'` done?): {line:?}"
            )
        })
        .to_owned();
    (server, url)
}

#[tokio::test]
async fn the_mcp_example_works_against_the_python_sdk_server() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no python3 on this machine, so no Python MCP server to test against");
        return;
    };
    let (_server, url) = start(python);
    let report = tokio::time::timeout(Duration::from_secs(30), example::run_against(&url, None))
        .await
        .expect("the session ends in time")
        .expect("the session works");
    assert!(
        report.tools.iter().any(|t| t == "add"),
        "{:?}",
        report.tools
    );
    assert!(
        report.tools.iter().any(|t| t == "echo"),
        "{:?}",
        report.tools
    );
    assert_eq!(report.answer, "42");
    // One session, one operation: initialize, notifications, tools/list, tools/call, DELETE.
    assert_eq!(report.operations.len(), 1, "{:#?}", report.operations);
    let operation = &report.operations[0];
    assert!(operation.complete);
    assert!(operation.calls >= 4, "{operation:#?}");
    assert_eq!(operation.outcomes.terminal, 0, "{operation:#?}");
    assert_eq!(operation.product.as_str(), "mcp");
}
