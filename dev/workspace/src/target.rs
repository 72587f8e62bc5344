//! Where an example sends its calls: a real workspace named by the environment, else a local one.

use crate::Workspace;

/// The workspace an example talks to: a real one when `DATABRICKS_HOST` and `DATABRICKS_TOKEN`
/// are both set and non-empty, else a local [`Workspace`] started on 127.0.0.1.
#[derive(Debug)]
pub struct Target {
    /// The workspace URL, with a scheme (`https://` is added to a bare host) and no trailing `/`.
    pub host: String,
    /// The token to call it with (`dapi-local-dev` for the local workspace).
    pub token: String,
    /// The local workspace, when one was started: keep it alive while calling, shut it down at
    /// the end.
    pub local: Option<Workspace>,
}

impl Target {
    /// The token the local workspace is called with.
    pub const LOCAL_TOKEN: &'static str = "dapi-local-dev";

    /// A real workspace from `DATABRICKS_HOST` + `DATABRICKS_TOKEN`, if both are set, else a
    /// local workspace with the default settings.
    pub async fn from_env() -> std::io::Result<Target> {
        match Self::real_from_env() {
            Some((host, token)) => Ok(Target {
                host,
                token,
                local: None,
            }),
            None => {
                let workspace = Workspace::start().await?;
                Ok(Target {
                    host: workspace.url(),
                    token: Self::LOCAL_TOKEN.to_owned(),
                    local: Some(workspace),
                })
            }
        }
    }

    /// `(host, token)` of a real workspace from `DATABRICKS_HOST` + `DATABRICKS_TOKEN`, when both
    /// are set and non-empty; the host gets `https://` when it has no scheme.
    pub fn real_from_env() -> Option<(String, String)> {
        let host = std::env::var("DATABRICKS_HOST").ok()?;
        let token = std::env::var("DATABRICKS_TOKEN").ok()?;
        if host.is_empty() || token.is_empty() {
            return None;
        }
        let host = host.trim_end_matches('/');
        let host = match host.contains("://") {
            true => host.to_owned(),
            false => format!("https://{host}"),
        };
        Some((host, token))
    }

    /// Whether the calls go to the local workspace (private addresses must be allowed then).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }
}
