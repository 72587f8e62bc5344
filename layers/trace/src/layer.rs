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
/// `SpanLayer::new(product)` traces outgoing calls with the [`DefaultClassifier`], records
/// nowhere (`()`) and observes no body chunks (`()`); set a pipeline with
/// [`recorder`](Self::recorder) and a body hook with [`on_body_chunk`](Self::on_body_chunk).
#[derive(Clone)]
pub struct SpanLayer<C = DefaultClassifier, R = (), H = ()> {
    product: Product,
    direction: Direction,
    classifier: C,
    recorder: R,
    on_body_chunk: H,
    body_sizes: bool,
}

impl SpanLayer {
    /// Client-side layer for `product`, classifying with [`DefaultClassifier`], recording nowhere.
    pub fn new(product: Product) -> Self {
        SpanLayer {
            product,
            direction: Direction::Client,
            classifier: DefaultClassifier::default(),
            recorder: (),
            on_body_chunk: (),
            body_sizes: false,
        }
    }
}

impl<C, R, H> SpanLayer<C, R, H> {
    /// Classifies responses and errors with `classifier`.
    pub fn classifier<C2: Classify>(self, classifier: C2) -> SpanLayer<C2, R, H> {
        SpanLayer {
            product: self.product,
            direction: self.direction,
            classifier,
            recorder: self.recorder,
            on_body_chunk: self.on_body_chunk,
            body_sizes: self.body_sizes,
        }
    }

    /// Sends every finished call to `recorder` (the telemetry pipeline, or a closure).
    pub fn recorder<R2: RecordCall>(self, recorder: R2) -> SpanLayer<C, R2, H> {
        SpanLayer {
            product: self.product,
            direction: self.direction,
            classifier: self.classifier,
            recorder,
            on_body_chunk: self.on_body_chunk,
            body_sizes: self.body_sizes,
        }
    }

    /// Shows every data chunk of every response body to a clone of `hook` (one per call),
    /// an [`OnBodyChunk`](crate::OnBodyChunk): a closure `FnMut(&Bytes, &mut CallSpan)` or a
    /// type with per-call state. `H2: Clone`; the clone is made when the call starts.
    pub fn on_body_chunk<H2: Clone + Send + 'static>(self, hook: H2) -> SpanLayer<C, R, H2> {
        SpanLayer {
            product: self.product,
            direction: self.direction,
            classifier: self.classifier,
            recorder: self.recorder,
            on_body_chunk: hook,
            body_sizes: self.body_sizes,
        }
    }

    /// Records `http.request.body.size` (from `Content-Length`) and `http.response.body.size`
    /// (bytes read) on the span: off by default, as the conventions make them opt-in (the
    /// record always has `response_bytes`).
    pub fn body_sizes(mut self, on: bool) -> Self {
        self.body_sizes = on;
        self
    }

    /// Client (default: `otel.kind = client`) or server spans.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }
}

impl<S, C: Clone, R: Clone, H: Clone> Layer<S> for SpanLayer<C, R, H> {
    type Service = Traced<S, C, R, H>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced {
            inner,
            product: self.product.clone(),
            direction: self.direction,
            hooks: Arc::new(Hooks {
                classifier: self.classifier.clone(),
                recorder: self.recorder.clone(),
            }),
            on_body_chunk: self.on_body_chunk.clone(),
            body_sizes: self.body_sizes,
        }
    }
}

impl<C: fmt::Debug, R, H> fmt::Debug for SpanLayer<C, R, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanLayer")
            .field("product", &self.product)
            .field("direction", &self.direction)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}
