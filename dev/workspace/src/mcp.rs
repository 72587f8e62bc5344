//! The MCP endpoint: the official `rmcp` server's streamable-HTTP service with three tools,
//! mounted on the workspace's router where Databricks serves managed MCP servers
//! (`/api/2.0/mcp/functions/{catalog}/{schema}`).
//!
//! `echo` and `add` have the same names and arguments as the Python server in
//! `dev/mcp_server.py`, so one client runs against both.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

/// Where the MCP endpoint is mounted.
pub const MCP_PATH: &str = "/api/2.0/mcp/functions/system/ai";

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct EchoRequest {
    /// The text to return.
    text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct AddRequest {
    /// Left operand.
    a: i64,
    /// Right operand.
    b: i64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct SearchRequest {
    /// What to look for.
    query: String,
    /// How many hits (default 3, at most 10).
    num_results: Option<u32>,
}

/// The tools the workspace's MCP server offers.
#[derive(Clone, Debug)]
pub(crate) struct WorkspaceTools {
    tool_router: ToolRouter<Self>,
}

impl WorkspaceTools {
    pub(crate) fn new() -> Self {
        WorkspaceTools {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl WorkspaceTools {
    #[tool(description = "Return the text unchanged.")]
    fn echo(&self, Parameters(EchoRequest { text }): Parameters<EchoRequest>) -> String {
        text
    }

    #[tool(description = "Add two integers.")]
    fn add(&self, Parameters(AddRequest { a, b }): Parameters<AddRequest>) -> String {
        a.saturating_add(b).to_string()
    }

    #[tool(description = "Search the workspace's documentation index.")]
    fn search_docs(
        &self,
        Parameters(SearchRequest { query, num_results }): Parameters<SearchRequest>,
    ) -> String {
        let n = num_results.unwrap_or(3).min(10);
        (1..=n)
            .map(|i| format!("{i}. docs page {i} about {query}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for WorkspaceTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "The local Databricks workspace's MCP server: echo, add, search_docs.",
        )
    }
}
