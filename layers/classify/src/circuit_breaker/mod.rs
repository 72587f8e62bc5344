//! A per-host circuit breaker: stop calling a host that keeps failing, probe it again later.
//!
//! [`CircuitBreaker`] is the sans-IO state machine (`try_acquire`, `record`, `state`);
//! [`CircuitBreakerLayer`] puts it in front of any `Service<http::Request<B>>`. While a host's
//! circuit is open, calls fail at once with [`CircuitOpen`] and never reach the network.
//!
//! It must never hold its lock across an `.await`, never block, and never panic: the lock guards
//! a few map operations, and a cancelled call gives its probe slot back when its future drops.
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use kasal_classify::{CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitOpen};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), tower::BoxError> {
//! # let client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> = unimplemented!();
//! let breaker = CircuitBreaker::new(CircuitBreakerConfig::new().open_for(Duration::from_secs(30)));
//! let mut svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .service(client);
//! let req = http::Request::get("http://127.0.0.1:8080/").body(Empty::new())?;
//! match svc.ready().await?.call(req).await {
//!     Ok(res) => println!("{}", res.status()),
//!     Err(err) if err.is::<CircuitOpen>() => println!("host is cooling down"),
//!     Err(err) => return Err(err),
//! }
//! # Ok(()) }
//! ```

mod breaker;
mod error;
mod future;
mod layer;
mod service;

pub use self::breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitState, Permit};
pub use self::error::CircuitOpen;
pub use self::future::ResponseFuture;
pub use self::layer::CircuitBreakerLayer;
pub use self::service::CircuitBreakerService;
