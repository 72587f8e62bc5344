//! One call, made the same way through the tower stack (`TelemetryLayer` over hyper-util) and
//! the reqwest stack (`TelemetryMiddleware` + `RetryMiddleware` over reqwest), so behaviour
//! tests are written once and run through both. Include it with
//! `#[path = "common/stacks.rs"] mod stacks;` next to `mod common;` (feature `reqwest`).
#![allow(dead_code, unreachable_pub)]

use std::fmt::Display;
use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use kasal_telemetry::Telemetry;
use kasal_telemetry::classify::RetryPolicy;
use kasal_telemetry::reqwest::{RetryMiddleware, TelemetryMiddleware, http_client};
use kasal_telemetry::trace::{ExecutionContext, OperationId, Route};
use kasal_telemetry::user_agent::Product;
use reqwest_middleware::ClientWithMiddleware;
use tower::{Layer, Service, ServiceExt};

/// A GET to make, with what the caller attaches to it.
#[derive(Clone, Debug, Default)]
pub struct Call {
    pub url: String,
    pub user_agent: Option<&'static str>,
    pub route: Option<&'static str>,
    pub operation: Option<String>,
    pub context: Option<ExecutionContext>,
}

impl Call {
    pub fn get(url: impl Into<String>) -> Call {
        Call {
            url: url.into(),
            ..Call::default()
        }
    }

    pub fn user_agent(mut self, user_agent: &'static str) -> Call {
        self.user_agent = Some(user_agent);
        self
    }

    pub fn route(mut self, route: &'static str) -> Call {
        self.route = Some(route);
        self
    }

    pub fn operation(mut self, id: impl Into<String>) -> Call {
        self.operation = Some(id.into());
        self
    }

    pub fn context(mut self, context: ExecutionContext) -> Call {
        self.context = Some(context);
        self
    }
}

/// What the caller got: a status and the whole body, or an error.
#[derive(Debug)]
pub struct Answer {
    pub status: Option<u16>,
    pub body: Bytes,
    pub error: Option<String>,
}

/// A client stack that makes a [`Call`] and reads the answer to its end.
pub trait Stack {
    fn call(&self, call: Call) -> impl Future<Output = Answer> + Send;
}

/// The tower stack over hyper-util's client.
pub struct Tower<S>(pub S);

/// hyper-util's legacy client for the tower stack.
pub type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// `layer` (a `TelemetryLayer`, with or without retry) over hyper-util's legacy client.
pub fn tower<L: Layer<HyperClient>>(layer: L) -> Tower<L::Service> {
    Tower(layer.layer(crate::common::client::<Full<Bytes>>()))
}

impl<S, B> Stack for Tower<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync,
    S::Future: Send,
    S::Error: Display + Send,
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Display + Send,
{
    fn call(&self, call: Call) -> impl Future<Output = Answer> + Send {
        let service = self.0.clone();
        async move {
            let mut request = Request::get(&call.url)
                .body(Full::default())
                .expect("valid test request");
            if let Some(user_agent) = call.user_agent {
                request
                    .headers_mut()
                    .insert("user-agent", user_agent.parse().expect("valid header"));
            }
            if let Some(route) = call.route {
                request.extensions_mut().insert(Route::new(route));
            }
            if let Some(id) = call.operation {
                request.extensions_mut().insert(OperationId::new(id));
            }
            if let Some(context) = call.context {
                request.extensions_mut().insert(context);
            }
            match service.oneshot(request).await {
                Err(error) => Answer {
                    status: None,
                    body: Bytes::new(),
                    error: Some(error.to_string()),
                },
                Ok(response) => {
                    let status = Some(response.status().as_u16());
                    match response.into_body().collect().await {
                        Ok(body) => Answer {
                            status,
                            body: body.to_bytes(),
                            error: None,
                        },
                        Err(error) => Answer {
                            status,
                            body: Bytes::new(),
                            error: Some(error.to_string()),
                        },
                    }
                }
            }
        }
    }
}

/// The reqwest stack.
pub struct Reqwest(pub ClientWithMiddleware);

/// `TelemetryMiddleware` and `RetryMiddleware(policy)` over reqwest (rustls, as `client()`).
pub fn reqwest(product: Product, telemetry: &Telemetry, policy: RetryPolicy) -> Reqwest {
    let http = http_client().build().expect("reqwest client");
    Reqwest(
        reqwest_middleware::ClientBuilder::new(http)
            .with(TelemetryMiddleware::new(product, telemetry.clone()))
            .with(RetryMiddleware::new(policy))
            .build(),
    )
}

impl Stack for Reqwest {
    fn call(&self, call: Call) -> impl Future<Output = Answer> + Send {
        let client = self.0.clone();
        async move {
            let mut request = client.get(&call.url);
            if let Some(user_agent) = call.user_agent {
                request = request.header("user-agent", user_agent);
            }
            if let Some(route) = call.route {
                request = request.with_extension(Route::new(route));
            }
            if let Some(id) = call.operation {
                request = request.with_extension(OperationId::new(id));
            }
            if let Some(context) = call.context {
                request = request.with_extension(context);
            }
            match request.send().await {
                Err(error) => Answer {
                    status: None,
                    body: Bytes::new(),
                    error: Some(error.to_string()),
                },
                Ok(response) => {
                    let status = Some(response.status().as_u16());
                    match response.bytes().await {
                        Ok(body) => Answer {
                            status,
                            body,
                            error: None,
                        },
                        Err(error) => Answer {
                            status,
                            body: Bytes::new(),
                            error: Some(error.to_string()),
                        },
                    }
                }
            }
        }
    }
}
