//! [`OnBodyChunk`]: the per-chunk observer hook of [`TracedBody`](crate::TracedBody).

use http_body::SizeHint;

use crate::CallSpan;

/// Observes each data chunk of a traced response body as it passes, without buffering it, and
/// may add what it learns to the call (its span fields, its [`CallRecord`](crate::CallRecord)
/// through [`CallSpan::record_mut`]). Modelled on tower-http's `OnBodyChunk`: implemented for
/// `()` (does nothing) and for closures `FnMut(&D, &mut CallSpan)`.
///
/// `D` is the body's `Data` type (an `impl bytes::Buf`, usually `Bytes`). Each response body
/// gets its own hook value (a clone of the one given to
/// [`SpanLayer::on_body_chunk`](crate::SpanLayer::on_body_chunk)), so per-call state (a parser
/// part-way through a JSON or SSE stream) lives in `self`.
///
/// When are the callbacks called:
///
/// - [`on_body_start`](Self::on_body_start): once, when the body is wrapped, before any chunk,
///   with the body's size hint (exact when the response gave its length: `Content-Length`);
/// - [`on_body_chunk`](Self::on_body_chunk): for every data frame, in order, before it is
///   handed to the caller (trailers are not shown);
/// - [`on_finish`](Self::on_finish): exactly once, just before the record is taken: at the end
///   of the body, after a body error, or when the body is dropped before its end (then
///   `kasal.body_cut_short` is already set). Not called when the call fails without a response
///   (there is no body then).
///
/// Both run on the request path, inside the call's span: keep them short, never block, never
/// panic, and never copy a token into the span or the record.
///
/// ```
/// use bytes::{Buf, Bytes};
/// use kasal_trace::{CallSpan, OnBodyChunk};
///
/// /// Counts the frames of each response.
/// #[derive(Clone, Default)]
/// struct Frames(u64);
///
/// impl OnBodyChunk<Bytes> for Frames {
///     fn on_body_chunk(&mut self, _chunk: &Bytes, _call: &mut CallSpan) {
///         self.0 += 1;
///     }
///
///     fn on_finish(&mut self, call: &mut CallSpan) {
///         call.span().record("frames", self.0);
///     }
/// }
///
/// // Or a closure, when only the chunks matter:
/// let _hook = |chunk: &Bytes, _call: &mut CallSpan| assert!(chunk.remaining() > 0);
/// ```
pub trait OnBodyChunk<D>: Send + 'static {
    /// Sees the body's size hint before its first chunk. Does nothing by default.
    #[inline]
    fn on_body_start(&mut self, size_hint: &SizeHint) {
        let _ = size_hint;
    }

    /// Sees one data chunk of the body.
    fn on_body_chunk(&mut self, chunk: &D, call: &mut CallSpan);

    /// Called once, just before the call's record is taken (end, error or drop of the body).
    fn on_finish(&mut self, call: &mut CallSpan) {
        let _ = call;
    }
}

/// No hook.
impl<D> OnBodyChunk<D> for () {
    #[inline]
    fn on_body_chunk(&mut self, _chunk: &D, _call: &mut CallSpan) {}
}

/// A closure sees every chunk; `on_finish` does nothing.
impl<D, F> OnBodyChunk<D> for F
where
    F: FnMut(&D, &mut CallSpan) + Send + 'static,
{
    #[inline]
    fn on_body_chunk(&mut self, chunk: &D, call: &mut CallSpan) {
        self(chunk, call)
    }
}
