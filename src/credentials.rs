//! Where the telemetry exporter gets its `Authorization` header.
//!
//! A [`Credentials`] provider answers, asynchronously, with the header value to send, or `None`
//! when it has nothing. The exporter asks once per batch, in the pipeline's own task: a slow or
//! failing provider delays only telemetry, never the application's calls. A failure or `None`
//! sends the batch to the unauthenticated endpoint, stripped of ids (see
//! [`DatabricksExporter`](crate::export::databricks::DatabricksExporter)).
//!
//! Implementations provided: [`StaticToken`] (a personal access token), [`EnvToken`]
//! (`DATABRICKS_TOKEN`), and any closure `Fn() -> impl Future<Output = Result<Option<HeaderValue>,
//! BoxError>>`, which covers OAuth token sources.
//!
//! A provider must never log or print its token: the values it returns are marked sensitive and
//! [`StaticToken`]'s `Debug` prints `***`. User tokens (on-behalf-of) must never be used here.
//!
//! ```
//! use http::HeaderValue;
//! use kasal_telemetry::credentials::{Credentials, StaticToken};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let pat = StaticToken::new("dapi0123456789abcdef").unwrap();
//! assert_eq!(format!("{pat:?}"), "StaticToken(***)");
//! let header = pat.authorization().await.unwrap().unwrap();
//! assert!(header.is_sensitive());
//!
//! // A closure works too, e.g. over an OAuth token source.
//! let oauth = || async { Ok(Some(HeaderValue::from_static("Bearer from-oauth"))) };
//! assert!(oauth.authorization().await.unwrap().is_some());
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::HeaderValue;

use crate::BoxError;

/// The future a [`Credentials`] provider returns.
pub type CredentialsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<HeaderValue>, BoxError>> + Send + 'a>>;

/// Supplies the `Authorization` header for telemetry uploads.
///
/// `Ok(None)` and `Err(_)` both mean "send unauthenticated".
pub trait Credentials: Send + Sync + 'static {
    /// The full header value (`Bearer …`), or `None`.
    fn authorization(&self) -> CredentialsFuture<'_>;
}

impl<F, Fut> Credentials for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<HeaderValue>, BoxError>> + Send + 'static,
{
    fn authorization(&self) -> CredentialsFuture<'_> {
        Box::pin(self())
    }
}

impl<C: Credentials + ?Sized> Credentials for Arc<C> {
    fn authorization(&self) -> CredentialsFuture<'_> {
        (**self).authorization()
    }
}

/// Why a token could not be turned into a header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The token was empty.
    #[error("token is empty")]
    Empty,
    /// The token had characters a header cannot carry.
    #[error("token contains characters not allowed in an HTTP header")]
    InvalidCharacters,
}

fn bearer(token: &str) -> Result<HeaderValue, CredentialsError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(CredentialsError::Empty);
    }
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| CredentialsError::InvalidCharacters)?;
    value.set_sensitive(true);
    Ok(value)
}

/// A fixed token, typically a personal access token (`dapi…`), sent as `Bearer <token>`.
///
/// `Debug` prints `StaticToken(***)`.
#[derive(Clone)]
pub struct StaticToken {
    header: HeaderValue,
}

impl StaticToken {
    /// Wraps `token` (without the `Bearer ` prefix). Fails if it is empty or not header-safe.
    pub fn new(token: impl AsRef<str>) -> Result<Self, CredentialsError> {
        Ok(StaticToken {
            header: bearer(token.as_ref())?,
        })
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(***)")
    }
}

impl Credentials for StaticToken {
    fn authorization(&self) -> CredentialsFuture<'_> {
        let header = self.header.clone();
        Box::pin(async move { Ok(Some(header)) })
    }
}

/// Reads a token from an environment variable (`DATABRICKS_TOKEN` by default) on every call,
/// so a rotated token is picked up. Unset or empty means `None`.
#[derive(Clone, Debug)]
pub struct EnvToken {
    var: Arc<str>,
}

impl EnvToken {
    /// The variable Databricks tools use: `DATABRICKS_TOKEN`.
    pub const DEFAULT_VAR: &'static str = "DATABRICKS_TOKEN";

    /// Reads `DATABRICKS_TOKEN`.
    pub fn new() -> Self {
        EnvToken::var(EnvToken::DEFAULT_VAR)
    }

    /// Reads the named variable instead.
    pub fn var(name: impl Into<Arc<str>>) -> Self {
        EnvToken { var: name.into() }
    }
}

impl Default for EnvToken {
    fn default() -> Self {
        EnvToken::new()
    }
}

impl Credentials for EnvToken {
    fn authorization(&self) -> CredentialsFuture<'_> {
        let value = std::env::var(&*self.var);
        Box::pin(async move {
            match value {
                Ok(token) if !token.trim().is_empty() => Ok(Some(bearer(&token)?)),
                _ => Ok(None),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_token_is_a_sensitive_bearer_header() {
        let pat = StaticToken::new("dapi0123456789abcdef").unwrap();
        let header = pat.authorization().await.unwrap().unwrap();
        assert_eq!(header, "Bearer dapi0123456789abcdef");
        assert!(header.is_sensitive());
        assert_eq!(format!("{pat:?}"), "StaticToken(***)");
        assert!(!format!("{pat:?}").contains("dapi"));
    }

    #[test]
    fn static_token_rejects_bad_input() {
        assert_eq!(StaticToken::new("  ").unwrap_err(), CredentialsError::Empty);
        assert_eq!(
            StaticToken::new("a\nb").unwrap_err(),
            CredentialsError::InvalidCharacters
        );
    }

    #[tokio::test]
    async fn env_token_reads_the_variable_each_time() {
        // A variable name unique to this test: no other test reads or writes it.
        let var = "KASAL_TELEMETRY_TEST_ENV_TOKEN_7f3a";
        let creds = EnvToken::var(var);
        assert!(creds.authorization().await.unwrap().is_none());
        // `set_var` is unsafe in edition 2024 (and the crate denies unsafe code), so the "set"
        // path reads PATH, which every test process has.
        let path = EnvToken::var("PATH");
        let header = path.authorization().await.unwrap().unwrap();
        assert!(header.to_str().unwrap().starts_with("Bearer "));
    }

    #[tokio::test]
    async fn closures_and_arcs_are_credentials() {
        let failing = || async { Err::<Option<HeaderValue>, BoxError>("no token".into()) };
        assert!(failing.authorization().await.is_err());
        let shared: Arc<dyn Credentials> = Arc::new(StaticToken::new("t").unwrap());
        assert!(shared.authorization().await.unwrap().is_some());
    }
}
