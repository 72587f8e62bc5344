//! [`SharedHooks`]: what every call of one adapter needs once its response arrives, shared.

use std::fmt;
use std::sync::Arc;

use crate::service::Hooks;

/// The classifier and the recorder every call of one adapter shares, behind one `Arc`: build
/// it once (with the adapter's service or layer) and hand a clone to each call's
/// [`TracedBody`](crate::TracedBody) with
/// [`TracedBody::with_shared_hooks`](crate::TracedBody::with_shared_hooks). A clone is one
/// reference count, where [`TracedBody::new`](crate::TracedBody::new) allocates the pair for
/// each call.
///
/// ```
/// use kasal_classify::DefaultClassifier;
/// use kasal_trace::SharedHooks;
///
/// let hooks = SharedHooks::new(DefaultClassifier::new(), ());
/// let per_call = hooks.clone(); // one reference count
/// # let _ = (per_call.classifier(), per_call.recorder());
/// ```
pub struct SharedHooks<C, R>(pub(crate) Arc<Hooks<C, R>>);

impl<C, R> SharedHooks<C, R> {
    /// `classifier` classifies a body error, `recorder` receives each finished call.
    pub fn new(classifier: C, recorder: R) -> Self {
        SharedHooks(Arc::new(Hooks {
            classifier,
            recorder,
        }))
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.0.classifier
    }

    /// The recorder.
    pub fn recorder(&self) -> &R {
        &self.0.recorder
    }
}

impl<C, R> Clone for SharedHooks<C, R> {
    fn clone(&self) -> Self {
        SharedHooks(self.0.clone())
    }
}

impl<C: fmt::Debug, R> fmt::Debug for SharedHooks<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedHooks")
            .field("classifier", &self.0.classifier)
            .finish_non_exhaustive()
    }
}
