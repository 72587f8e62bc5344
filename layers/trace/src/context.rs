use std::fmt;
use std::sync::Arc;

/// Who a call is made for: a signed-in user (on-behalf-of) or the service itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExecutionMode {
    /// On behalf of a user (`execution.context = "user"`).
    User,
    /// As the service principal (`execution.context = "service"`).
    #[default]
    Service,
}

impl ExecutionMode {
    /// `"user"` or `"service"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::User => "user",
            ExecutionMode::Service => "service",
        }
    }
}

/// A bearer token that never prints: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(Arc<str>);

impl SecretToken {
    /// Wraps a token.
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        SecretToken(token.into())
    }

    /// The token itself. Only for building an Authorization header.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Groups calls into one operation (a SQL statement, an MCP session, an agent run).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(Arc<str>);

impl OperationId {
    /// An operation id from the caller's own identifier.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        OperationId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who the current work runs for. Carried in a tokio task-local (see `scope`) or as a request
/// extension, which overrides it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutionContext {
    /// User (on-behalf-of) or service.
    pub mode: ExecutionMode,
    /// The caller's identity (an email or a service principal id); never a token.
    pub caller_id: Option<Arc<str>>,
    /// True when a user call fell back to the developer's own credentials (local development).
    pub obo_dev_fallback: bool,
    /// The user's forwarded token, for the app's own calls. Never recorded or exported.
    pub user_token: Option<SecretToken>,
    /// The operation the current work belongs to, if any.
    pub operation_id: Option<OperationId>,
}
