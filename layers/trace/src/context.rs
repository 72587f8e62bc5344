//! Who a call is made for ([`ExecutionContext`]) and which operation it belongs to
//! ([`OperationId`]).
//!
//! The context travels in a tokio task-local (`scope`, `sync_scope`, `current`) or as a request
//! extension, which wins over the task-local. There is no global mutable state: two tasks with
//! different contexts never see each other's. This module must never copy a [`SecretToken`] into
//! anything that is logged, traced or exported.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::task::futures::TaskLocalFuture;

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
    /// The longest id kept, in bytes. A longer one keeps its first bytes (cut on a char
    /// boundary) and ends in `~` and a 16-digit hex hash of the whole id, so distinct long ids
    /// stay distinct and the pipeline's memory stays bounded.
    pub const MAX_LEN: usize = 128;

    /// An operation id from the caller's own identifier (bounded to [`MAX_LEN`](Self::MAX_LEN)).
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        OperationId(bounded(id.into(), Self::MAX_LEN))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh random (UUID v4) operation id.
    pub fn generate() -> Self {
        let mut buf = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        OperationId(Arc::from(&*text))
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

tokio::task_local! {
    static CURRENT: ExecutionContext;
}

impl ExecutionContext {
    /// Work done on behalf of the user `caller_id` (an email or user name; never a token).
    pub fn user(caller_id: impl Into<Arc<str>>) -> Self {
        ExecutionContext {
            mode: ExecutionMode::User,
            caller_id: Some(caller_id.into()),
            ..ExecutionContext::default()
        }
    }

    /// Work done as the service itself: the default when no context is set.
    pub fn service() -> Self {
        ExecutionContext::default()
    }

    /// Sets the user's forwarded token. It is kept for the app's own calls and never recorded.
    pub fn with_user_token(mut self, token: SecretToken) -> Self {
        self.user_token = Some(token);
        self
    }

    /// Marks that a user call fell back to the developer's own credentials.
    pub fn with_obo_dev_fallback(mut self, fallback: bool) -> Self {
        self.obo_dev_fallback = fallback;
        self
    }

    /// Sets the caller's identity.
    pub fn with_caller_id(mut self, caller_id: impl Into<Arc<str>>) -> Self {
        self.caller_id = Some(caller_id.into());
        self
    }

    /// Sets the operation the work belongs to.
    pub fn with_operation_id(mut self, operation_id: OperationId) -> Self {
        self.operation_id = Some(operation_id);
        self
    }

    /// The context of the current task, or [`ExecutionContext::service()`] when none is set.
    pub fn current() -> Self {
        Self::try_current().unwrap_or_default()
    }

    /// The context of the current task, if one was set with [`scope`](Self::scope) or
    /// [`sync_scope`](Self::sync_scope).
    pub fn try_current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// The context for a request: an `ExecutionContext` request extension if present, else the
    /// current task's context, else the service context.
    pub fn for_request(extensions: &http::Extensions) -> Self {
        match extensions.get::<ExecutionContext>() {
            Some(ctx) => ctx.clone(),
            None => Self::current(),
        }
    }

    /// Reads the context for a request through `f`, borrowed, without cloning it (hot path).
    pub(crate) fn read_for_request<T>(
        extensions: &http::Extensions,
        f: impl Fn(&ExecutionContext) -> T,
    ) -> T {
        match extensions.get::<ExecutionContext>() {
            Some(ctx) => f(ctx),
            None => CURRENT
                .try_with(&f)
                .unwrap_or_else(|_| f(&ExecutionContext::default())),
        }
    }

    /// Runs `future` with this context as the task's current context.
    ///
    /// The context stays with the future wherever it is polled; tasks spawned from inside do not
    /// inherit it (scope them again).
    pub fn scope<F: Future>(self, future: F) -> TaskLocalFuture<ExecutionContext, F> {
        CURRENT.scope(self, future)
    }

    /// Runs the closure `f` with this context as the current context.
    pub fn sync_scope<T>(self, f: impl FnOnce() -> T) -> T {
        CURRENT.sync_scope(self, f)
    }
}

/// Request extension: the route template of the call (`/serving-endpoints/{name}/invocations`),
/// never the raw path. Used in the span's `otel.name` (`"POST /serving-endpoints/{name}/…"`),
/// `http.route` and `CallRecord::route`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route(pub Arc<str>);

impl Route {
    /// The longest template kept, in bytes; a longer one is shortened as
    /// [`OperationId::new`] shortens ids. (The pipeline also cuts a longer `CallRecord::route`
    /// built without this constructor.)
    pub const MAX_LEN: usize = 256;

    /// A route template (bounded to [`MAX_LEN`](Self::MAX_LEN)).
    pub fn new(template: impl Into<Arc<str>>) -> Self {
        Route(bounded(template.into(), Self::MAX_LEN))
    }

    /// The template as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// [`Route::new`] of `template`, shared from this thread's last one when the text is the
    /// same: a server adapter sees the same few matched routes request after request, and a
    /// repeat then costs a compare and a reference count instead of an allocation and a copy.
    pub fn shared(template: &str) -> Self {
        thread_local! {
            static LAST: RefCell<Option<Route>> = const { RefCell::new(None) };
        }
        let make = || Route::new(template);
        crate::last::shared(&LAST, |last| last.as_str() == template, || Some(make()))
            .unwrap_or_else(make)
    }
}

/// `text` if it is at most `max` bytes, else its head and `~` and a 64-bit FNV-1a hash of all
/// of it in hex, `max` bytes at most.
fn bounded(text: Arc<str>, max: usize) -> Arc<str> {
    if text.len() <= max {
        return text;
    }
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut head = max.saturating_sub(17);
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    Arc::from(format!("{}~{hash:016x}", &text[..head]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ids_and_routes_are_bounded_and_stay_distinct() {
        let a = OperationId::new("é".repeat(2048));
        let b = OperationId::new(format!("{}x", "é".repeat(2048)));
        assert!(a.as_str().len() <= OperationId::MAX_LEN);
        assert_ne!(a, b);
        assert_eq!(a, OperationId::new("é".repeat(2048)), "deterministic");
        let short = OperationId::new("stmt-1");
        assert_eq!(short.as_str(), "stmt-1");
        let route = Route::new("/x".repeat(4096));
        assert!(route.as_str().len() <= Route::MAX_LEN);
        assert!(route.as_str().starts_with("/x/x"));
    }

    #[test]
    fn a_repeated_route_is_shared_and_a_new_one_replaces_it() {
        let first = Route::shared("/api/items/{id}");
        let again = Route::shared("/api/items/{id}");
        assert!(Arc::ptr_eq(&first.0, &again.0));
        let other = Route::shared("/api/users/{id}");
        assert_eq!(other.as_str(), "/api/users/{id}");
        assert!(!Arc::ptr_eq(&first.0, &Route::shared("/api/items/{id}").0));
        let long = Route::shared(&"/x".repeat(4096));
        assert_eq!(long, Route::new("/x".repeat(4096)));
    }
}
