//! [`SpanLayer`]: wraps a service in [`Traced`].

use std::fmt;
use std::sync::Arc;

use kasal_classify::{Classify, DefaultClassifier};
use kasal_user_agent::Product;
use tower_layer::Layer;

use crate::service::Hooks;
use crate::{Direction, RecordCall, Traced};

/// Layer that opens one span per HTTP call and records each call. See the [crate docs](crate).
///
/// `SpanLayer::new(product)` traces outgoing calls with the [`DefaultClassifier`] and records
/// nowhere (`()`); set a pipeline with [`recorder`](Self::recorder).
#[derive(Clone)]
pub struct SpanLayer<C = DefaultClassifier, R = ()> {
    product: Product,
    direction: Direction,
    classifier: C,
    recorder: R,
}

impl SpanLayer {
    /// Client-side layer for `product`, classifying with [`DefaultClassifier`], recording nowhere.
    pub fn new(product: Product) -> Self {
        SpanLayer {
            product,
            direction: Direction::Client,
            classifier: DefaultClassifier::default(),
            recorder: (),
        }
    }
}

impl<C, R> SpanLayer<C, R> {
    /// Classifies responses and errors with `classifier`.
    pub fn classifier<C2: Classify>(self, classifier: C2) -> SpanLayer<C2, R> {
        SpanLayer {
            product: self.product,
            direction: self.direction,
            classifier,
            recorder: self.recorder,
        }
    }

    /// Sends every finished call to `recorder` (the telemetry pipeline, or a closure).
    pub fn recorder<R2: RecordCall>(self, recorder: R2) -> SpanLayer<C, R2> {
        SpanLayer {
            product: self.product,
            direction: self.direction,
            classifier: self.classifier,
            recorder,
        }
    }

    /// Client (default: `otel.kind = client`) or server spans.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for SpanLayer<C, R> {
    type Service = Traced<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced {
            inner,
            product: self.product.clone(),
            direction: self.direction,
            hooks: Arc::new(Hooks {
                classifier: self.classifier.clone(),
                recorder: self.recorder.clone(),
            }),
        }
    }
}

impl<C: fmt::Debug, R> fmt::Debug for SpanLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanLayer")
            .field("product", &self.product)
            .field("direction", &self.direction)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}
