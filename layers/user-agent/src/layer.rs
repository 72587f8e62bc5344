//! `UserAgentLayer`: wraps a service in [`SetUserAgent`].

use tower_layer::Layer;

use crate::{SetUserAgent, UserAgent};

/// Applies a [`UserAgent`] to every request of the wrapped service (see [`UserAgent::apply`]).
#[derive(Clone, Debug)]
pub struct UserAgentLayer {
    user_agent: UserAgent,
}

impl UserAgentLayer {
    /// A layer that applies `user_agent`.
    pub fn new(user_agent: UserAgent) -> Self {
        UserAgentLayer { user_agent }
    }
}

impl From<UserAgent> for UserAgentLayer {
    fn from(user_agent: UserAgent) -> Self {
        UserAgentLayer::new(user_agent)
    }
}

impl<S> Layer<S> for UserAgentLayer {
    type Service = SetUserAgent<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetUserAgent::new(inner, self.user_agent.clone())
    }
}
