//! [`ReadUsage`]: the body hook that runs a [`UsageScanner`] over a model call's response and
//! puts what it finds on the call (`gen_ai.*` span fields, `CallRecord::usage` and `model`).

use std::any::Any;
use std::fmt;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http_body::SizeHint;
use kasal_trace::{CallSpan, OnBodyChunk};
use kasal_user_agent::Product;

use super::{UsageScanner, reads_usage_by_default};
use crate::Telemetry;

/// Which calls a layer reads token usage from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UsageReading {
    /// Calls of the `llm`, `embedding` and `agent` products to a model-serving path
    /// (`…/serving-endpoints/{name}/invocations`, `…/chat/completions`, `…/completions`,
    /// `…/embeddings`, `…/responses`). The default.
    #[default]
    Auto,
    /// Every call with a successful response, whatever its product and path.
    Always,
    /// None.
    Never,
}

impl UsageReading {
    /// Whether a layer for `product` reads any call's usage.
    pub(crate) fn reads(self, product: &Product) -> bool {
        match self {
            UsageReading::Auto => reads_usage_by_default(product),
            UsageReading::Always => true,
            UsageReading::Never => false,
        }
    }
}

/// The [`OnBodyChunk`] hook of the telemetry layers: each response body of a model call is fed
/// through a fresh [`UsageScanner`] as it passes (never changed or held back from the caller;
/// `Bytes` chunks are kept by reference while they hold the body's last bytes, other buffers
/// copied up to a window); when the body ends (or is dropped or fails) the usage and model go
/// on the call, and the scan is counted in [`Stats::usage_read`](crate::Stats::usage_read) or
/// [`Stats::usage_ignored`](crate::Stats::usage_ignored). Responses that are not 2xx are not
/// counted.
///
/// Cloned for each call: off, it is a `None` and costs nothing; on, a clone is a fresh scanner
/// and a [`Telemetry`] handle.
#[derive(Default)]
pub struct ReadUsage {
    state: Option<Box<State>>,
}

struct State {
    telemetry: Telemetry,
    /// Every path (`UsageReading::Always`), not only model-serving ones.
    all_paths: bool,
    scanner: UsageScanner,
    /// Decided on the first chunk: the call is one to read.
    active: Option<bool>,
}

impl ReadUsage {
    /// A hook for a layer of `product` recording into `telemetry`: on or off per `reading`.
    pub fn new(product: &Product, reading: UsageReading, telemetry: &Telemetry) -> ReadUsage {
        if !reading.reads(product) || !telemetry.is_enabled() {
            return ReadUsage::default();
        }
        ReadUsage {
            state: Some(Box::new(State {
                telemetry: telemetry.clone(),
                all_paths: reading == UsageReading::Always,
                scanner: UsageScanner::new(),
                active: None,
            })),
        }
    }

    /// Whether the hook reads anything.
    pub fn is_on(&self) -> bool {
        self.state.is_some()
    }
}

impl Clone for ReadUsage {
    fn clone(&self) -> Self {
        ReadUsage {
            state: self.state.as_ref().map(|state| {
                Box::new(State {
                    telemetry: state.telemetry.clone(),
                    all_paths: state.all_paths,
                    scanner: UsageScanner::new(),
                    active: None,
                })
            }),
        }
    }
}

impl fmt::Debug for ReadUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadUsage")
            .field("on", &self.is_on())
            .finish_non_exhaustive()
    }
}

impl State {
    fn active(&mut self, call: &CallSpan) -> bool {
        *self
            .active
            .get_or_insert_with(|| self.all_paths || call.is_model_call())
    }
}

impl ReadUsage {
    /// Any chunk but a large `Bytes` one after the first: decides on the first whether the
    /// call is read.
    #[inline(never)]
    fn other_chunk<D: Buf>(&mut self, chunk: &D, bytes: Option<&Bytes>, call: &CallSpan) {
        let Some(state) = self.state.as_deref_mut() else {
            return;
        };
        if !state.active(call) {
            self.state = None;
            return;
        }
        if let Some(bytes) = bytes {
            state.scanner.feed_bytes(bytes);
            return;
        }
        let first = chunk.chunk();
        if first.len() == chunk.remaining() {
            state.scanner.feed(first);
        } else {
            // A buffer made of several slices (not `Bytes`): read them all, in order.
            let mut slices = [IoSlice::new(&[]); 16];
            let n = chunk.chunks_vectored(&mut slices);
            for slice in &slices[..n] {
                state.scanner.feed(slice);
            }
        }
    }
}

/// `D: 'static` so that `Bytes` chunks (every hyper, axum and reqwest body) are recognised and
/// kept by reference; other buffers are copied (at most a window of each).
impl<D: Buf + 'static> OnBodyChunk<D> for ReadUsage {
    /// A body of known length is read without keeping any chunk by reference (see
    /// [`UsageScanner::set_len`]).
    fn on_body_start(&mut self, size_hint: &SizeHint) {
        if let (Some(state), Some(len)) = (self.state.as_deref_mut(), size_hint.exact()) {
            state.scanner.set_len(len);
        }
    }

    #[inline]
    fn on_body_chunk(&mut self, chunk: &D, call: &mut CallSpan) {
        let Some(state) = self.state.as_deref_mut() else {
            return;
        };
        let bytes = (chunk as &dyn Any).downcast_ref::<Bytes>();
        if let Some(bytes) = bytes {
            // After the first chunk, a large `Bytes` chunk is one clone and one drop (the
            // scanner takes none this way before it was fed, so before the call was found to
            // be one to read).
            if state.scanner.feed_bytes_fast(bytes) {
                return;
            }
        }
        self.other_chunk(chunk, bytes, call);
    }

    fn on_finish(&mut self, call: &mut CallSpan) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        if !state.active(call) || !call.record().status.is_some_and(|s| s.is_success()) {
            return;
        }
        let (usage, model) = state.scanner.finish_read();
        if let Some(model) = model {
            // The record's model so far (the serving endpoint's name) is shared when the body
            // names the same one; a new name is allocated once, here.
            let model = match call.model() {
                Some(known) if known.as_bytes() == model.as_bytes() => known.clone(),
                _ => Arc::from(model.as_str()),
            };
            call.set_response_model(model);
        }
        match usage {
            Ok(usage) => {
                call.set_usage(usage);
                state.telemetry.count_usage_scan(true);
            }
            Err(reason) => {
                state.telemetry.count_usage_scan(false);
                tracing::debug!(
                    reason = reason.as_str(),
                    "no token usage read from the response"
                );
            }
        }
    }
}
