use std::sync::Arc;

/// A Kasal product: the `<product>` in `kasal_<product>/<version>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Product {
    /// `jobs`
    Jobs,
    /// `genie`
    Genie,
    /// `vectorsearch`
    VectorSearch,
    /// `mcp`
    Mcp,
    /// `lakebase`
    Lakebase,
    /// `mlflow`
    Mlflow,
    /// `secret`
    Secret,
    /// `agent`
    Agent,
    /// `guardrail`
    Guardrail,
    /// `embedding`
    Embedding,
    /// `llm`
    Llm,
    /// `name_gen`
    NameGen,
    /// `task_gen`
    TaskGen,
    /// `agent_gen`
    AgentGen,
    /// `crew_gen`
    CrewGen,
    /// `template_gen`
    TemplateGen,
    /// `prompt_improve`
    PromptImprove,
    /// `intent`
    Intent,
    /// `conn_test`
    ConnTest,
    /// `agentbricks`
    AgentBricks,
    /// `deployment`
    Deployment,
    /// `volume`
    Volume,
    /// `dashboard`
    Dashboard,
    /// `powerbi`
    PowerBi,
    /// `telemetry`: the telemetry exporter's own calls.
    Telemetry,
    /// A validated custom product (`^[0-9a-z_]+$`), built with `Product::custom`.
    Custom(Arc<str>),
}

impl Product {
    /// The exact token, e.g. `"crew_gen"`.
    pub fn as_str(&self) -> &str {
        match self {
            Product::Jobs => "jobs",
            Product::Genie => "genie",
            Product::VectorSearch => "vectorsearch",
            Product::Mcp => "mcp",
            Product::Lakebase => "lakebase",
            Product::Mlflow => "mlflow",
            Product::Secret => "secret",
            Product::Agent => "agent",
            Product::Guardrail => "guardrail",
            Product::Embedding => "embedding",
            Product::Llm => "llm",
            Product::NameGen => "name_gen",
            Product::TaskGen => "task_gen",
            Product::AgentGen => "agent_gen",
            Product::CrewGen => "crew_gen",
            Product::TemplateGen => "template_gen",
            Product::PromptImprove => "prompt_improve",
            Product::Intent => "intent",
            Product::ConnTest => "conn_test",
            Product::AgentBricks => "agentbricks",
            Product::Deployment => "deployment",
            Product::Volume => "volume",
            Product::Dashboard => "dashboard",
            Product::PowerBi => "powerbi",
            Product::Telemetry => "telemetry",
            Product::Custom(name) => name,
        }
    }
}
