//! SSE responses: the byte stream of a response, bounded per event, parsed into events, and
//! holding its session until it ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use rmcp::transport::streamable_http_client::SseError;
use sse_stream::{Sse, SseStream};

use super::session::Session;

/// The SSE events of `response`, each at most `max_event_size` bytes. The response body (and
/// with it the call's span and record) and the session live as long as the stream.
pub(super) fn sse_events(
    response: reqwest::Response,
    max_event_size: usize,
    session: Option<Arc<Session>>,
) -> BoxStream<'static, Result<Sse, SseError>> {
    SseStream::new(BoundedEvents {
        inner: reqwest::Body::from(response),
        limiter: EventSize::new(max_event_size),
        failed: false,
        _session: session,
    })
    .boxed()
}

/// Why the event stream stopped: the body failed, or an event grew past the limit.
#[derive(Debug)]
enum StreamError {
    Body(reqwest::Error),
    EventTooLarge { max_size: usize },
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Body(error) => error.fmt(f),
            StreamError::EventTooLarge { max_size } => {
                write!(f, "SSE event exceeded the maximum size of {max_size} bytes")
            }
        }
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::Body(error) => Some(error),
            StreamError::EventTooLarge { .. } => None,
        }
    }
}

pin_project! {
    /// The response body, failing once an event grows past the limit (before the parser
    /// buffers it). Fields drop in order: the body (recording the call) before the session.
    struct BoundedEvents {
        #[pin]
        inner: reqwest::Body,
        limiter: EventSize,
        failed: bool,
        _session: Option<Arc<Session>>,
    }
}

impl Body for BoundedEvents {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if !this.limiter.observe(data) {
                        *this.failed = true;
                        let max_size = this.limiter.max_size;
                        return Poll::Ready(Some(Err(StreamError::EventTooLarge { max_size })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                *this.failed = true;
                Poll::Ready(Some(Err(StreamError::Body(error))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts the bytes of the SSE event being received: the lines since the last blank line.
#[derive(Debug)]
struct EventSize {
    max_size: usize,
    event: usize,
    line: usize,
    after_cr: bool,
}

impl EventSize {
    fn new(max_size: usize) -> Self {
        EventSize {
            max_size,
            event: 0,
            line: 0,
            after_cr: false,
        }
    }

    /// Reads `chunk`; `false` once the current event is over the limit.
    fn observe(&mut self, chunk: &[u8]) -> bool {
        for &byte in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match byte {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    if self.line == 0 {
                        self.event = 0; // a blank line ends the event
                    } else {
                        self.event = self.event.saturating_add(self.line + 1);
                        self.line = 0;
                    }
                }
                _ => self.line = self.line.saturating_add(1),
            }
            if self.event.saturating_add(self.line) > self.max_size {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::EventSize;

    #[test]
    fn counts_per_event_and_resets_on_a_blank_line() {
        let mut size = EventSize::new(16);
        assert!(size.observe(b"data: 12345\n\n"));
        assert!(size.observe(b"data: 12345\r\n\r\n"));
        assert!(size.observe(b"data: 1234"));
        assert!(size.observe(b"56\n"));
        assert!(!size.observe(b"data: 1\n"));
    }

    #[test]
    fn one_long_line_is_caught_before_it_ends() {
        let mut size = EventSize::new(8);
        assert!(!size.observe(&[b'x'; 9]));
    }
}
