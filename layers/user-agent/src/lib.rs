//! Standardised `kasal_<product>/<version>` User-Agent for Databricks API calls, as a tower layer.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, header::USER_AGENT};
//! use kasal_user_agent::{Product, UserAgent, UserAgentLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Built once, validated once: bad names or versions are errors here, never at request time.
//! let user_agent = UserAgent::new(Product::Mcp)
//!     .with_version("1.2.0")?
//!     .with_extra("client", "claude")?;
//!
//! // Any `Service<http::Request<B>>`: a hyper-util client, a reqwest-based service, ...
//! let client = ServiceBuilder::new()
//!     .layer(UserAgentLayer::new(user_agent))
//!     .service(service_fn(|request: Request<()>| async move {
//!         Ok::<_, Infallible>(request.headers()[USER_AGENT].clone())
//!     }));
//!
//! // The caller's own User-Agent is kept, after ours.
//! let request = Request::builder().header(USER_AGENT, "their-ua/1.2").body(())?;
//! let sent = client.oneshot(request).await?;
//! assert_eq!(sent, "kasal_mcp/1.2.0 client/claude their-ua/1.2");
//!
//! // Services can recover the product from any User-Agent they receive.
//! assert_eq!(Product::from_user_agent(sent.to_str()?), Some(Product::Mcp));
//! # Ok(())
//! # }
//! ```
//!
//! # What it does
//!
//! Every Kasal product identifies its Databricks API calls with one User-Agent token,
//! `kasal_<product>/<version>`, optionally followed by ` key/value` extras. [`Product`] is the
//! complete product list; [`UserAgent`] renders the value once; [`UserAgentLayer`] (service
//! [`SetUserAgent`]) applies it to each request by the rule in [`UserAgent::apply`]:
//!
//! | request has                                   | request leaves with                   |
//! |-----------------------------------------------|---------------------------------------|
//! | no `User-Agent`                               | `kasal_mcp/0.1.0`                     |
//! | `User-Agent: their-ua/1.2`                    | `kasal_mcp/0.1.0 their-ua/1.2`        |
//! | `User-Agent: kasal_mcp/0.1.0 their-ua/1.2`    | unchanged (applying twice is a no-op) |
//!
//! Several `User-Agent` values are joined into one; a request always leaves with exactly one.
//! The same sans-IO function, [`UserAgent::apply`] on an `http::HeaderMap`, backs the tower layer
//! and any other client adapter, so they behave identically.
//!
//! # What it must never do
//!
//! - Panic or fail at request time: names, versions, keys and values are validated when the
//!   [`UserAgent`] is built and reported as [`UserAgentError`]. Applying it clones a precomputed
//!   `HeaderValue`.
//! - Drop or rewrite the caller's own User-Agent (bytes are kept, even non-UTF-8 ones), or send
//!   two `User-Agent` headers.
#![deny(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(missing_docs, rust_2018_idioms)]

mod error;
mod layer;
mod product;
mod service;
mod user_agent;

pub use error::{UserAgentError, Violation};
pub use layer::UserAgentLayer;
pub use product::{CustomProduct, Product};
pub use service::SetUserAgent;
pub use user_agent::UserAgent;
