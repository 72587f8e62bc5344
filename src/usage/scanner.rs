//! [`UsageScanner`]: the sans-IO entry point. Sniffs the body (JSON object or event stream) from
//! its first byte and hands every chunk to the matching scanner.

use std::sync::Arc;

use bytes::Bytes;
use kasal_trace::Usage;

use super::Ignored;
use super::json::{JsonScan, WINDOW};
use super::parse::Read;
use super::sse::{self, EVENT_WINDOW};
use super::tail::Tail;

/// Reads the token usage and the model from a model-serving response body, chunk by chunk,
/// keeping a few KiB at most whatever the body's size.
///
/// Feed it every data chunk in order with [`feed_bytes`](Self::feed_bytes) (kept by
/// reference: a few operations per chunk, whatever its size) or [`feed`](Self::feed) (copied,
/// at most a window of each), then call [`finish`](Self::finish) once: the bytes kept are
/// parsed then. It never fails and never panics: what it cannot read is reported as
/// [`Ignored`]. It only reads: the chunks are never changed.
///
/// ```
/// use kasal_telemetry::trace::Usage;
/// use kasal_telemetry::usage::UsageScanner;
///
/// let mut scanner = UsageScanner::new();
/// scanner.feed(br#"{"model":"databricks-claude","choices":[],"usage":{"prompt_tokens":12,"#);
/// scanner.feed(br#""completion_tokens":30,"total_tokens":42}}"#);
/// let scan = scanner.finish();
/// assert_eq!(scan.usage, Some(Usage::new(12, 30)));
/// assert_eq!(scan.model.as_deref(), Some("databricks-claude"));
/// ```
#[derive(Debug)]
pub struct UsageScanner {
    /// Chunks given by reference that are at least this long only replace the newest chunk
    /// kept: they cover the tail's window alone, and nothing else is wanted from them.
    /// `usize::MAX` while something else is (the kind of body, the JSON head) or while the
    /// tail holds more than its newest chunk.
    fast_from: usize,
    /// The body's length so far.
    total: u64,
    /// Its last bytes: [`WINDOW`] of a JSON body, [`EVENT_WINDOW`] of an event stream.
    tail: Tail,
    kind: Kind,
    /// The body's length, when known ([`set_len`](Self::set_len)), less the whitespace
    /// before its first byte (not counted in `total`).
    len: Option<u64>,
    /// Chunks that end at or before this many bytes of a body of known length are only
    /// counted: they lie before its last window (and after a JSON body's head). 0 otherwise.
    skip_to: u64,
}

#[derive(Debug, Default)]
enum Kind {
    /// Nothing but whitespace so far.
    #[default]
    Sniffing,
    Json(JsonScan),
    Sse,
    /// Neither a JSON object nor an event stream: ignored.
    Other,
}

impl Default for UsageScanner {
    fn default() -> Self {
        UsageScanner {
            fast_from: usize::MAX,
            total: 0,
            tail: Tail::new(0),
            kind: Kind::Sniffing,
            len: None,
            skip_to: 0,
        }
    }
}

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageScan {
    /// The usage, when the body reported a valid one.
    pub usage: Option<Usage>,
    /// The model the body named, if any.
    pub model: Option<Arc<str>>,
    /// Why there is no usage, when there is none.
    pub ignored: Option<Ignored>,
}

impl UsageScanner {
    /// A scanner for one body.
    pub fn new() -> UsageScanner {
        UsageScanner::default()
    }

    /// Tells the scanner the body's length, before its first chunk (a response's
    /// `Content-Length`). The chunks before the body's last window are then only counted, not
    /// kept (so their reader, hyper say, can reuse its buffer for the next read); those in it
    /// are kept as without a length. A body that ends short of `len` was cut off: no usage
    /// ([`Ignored::Incomplete`]); one that goes on past it is read as without a length.
    pub fn set_len(&mut self, len: u64) {
        if matches!(self.kind, Kind::Sniffing) {
            self.len = Some(len);
        }
    }

    /// Reads the next chunk of the body, copying what it keeps of it.
    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.kind {
            Kind::Sniffing => {
                if let Some(first) = self.sniff(chunk) {
                    self.feed(&chunk[first..]);
                }
                return;
            }
            Kind::Other => return,
            Kind::Json(json) => json.feed_head(self.total, chunk),
            Kind::Sse => {}
        }
        if self.len.is_some() {
            return self.push_known(chunk, None);
        }
        self.total += chunk.len() as u64;
        self.tail.push_slice(chunk);
        // The tail's ring now holds bytes: the next chunks must go through `push_bytes`.
        self.fast_from = usize::MAX;
    }

    /// Keeps what of `chunk` lies in the last window of a body of known length: by reference
    /// when it is `bytes` (the last chunk or two: no read follows them that they could keep
    /// their reader from reusing its buffer for; and copying them would allocate), else copied.
    fn push_known(&mut self, chunk: &[u8], bytes: Option<&Bytes>) {
        let window = self.tail.window() as u64;
        let len = self.len.unwrap_or_default();
        let from = len.saturating_sub(window).saturating_sub(self.total);
        if from < chunk.len() as u64 {
            match bytes {
                Some(bytes) => self.tail.push_bytes(bytes),
                None => self.tail.push_slice(&chunk[from as usize..]),
            }
        }
        self.total += chunk.len() as u64;
        self.skip_to = if self.head_read() {
            len.saturating_sub(window)
        } else {
            0
        };
    }

    /// Reads the next chunk of the body, keeping it by reference (a clone of `chunk`, no copy)
    /// while it is among the last bytes: the cost does not grow with the chunk's size. The
    /// chunk's buffer stays allocated until newer chunks replace it.
    #[inline]
    pub fn feed_bytes(&mut self, chunk: &Bytes) {
        if !self.feed_bytes_fast(chunk) {
            self.feed_bytes_slow(chunk);
        }
    }

    /// The usual case for large bodies, once the first chunk has been read: a chunk that
    /// covers the window alone replaces the newest chunk kept (one clone, one drop); with the
    /// body's length known, a chunk before its last window is counted. False (and nothing
    /// done) for any other chunk.
    #[inline]
    pub(crate) fn feed_bytes_fast(&mut self, chunk: &Bytes) -> bool {
        if chunk.len() >= self.fast_from {
            self.total += chunk.len() as u64;
            self.tail.replace_last(chunk);
            return true;
        }
        let end = self.total + chunk.len() as u64;
        if end <= self.skip_to {
            // Before the last window of a body of known length (`fast_from` is then never
            // reached): only counted.
            self.total = end;
            return true;
        }
        false
    }

    fn feed_bytes_slow(&mut self, chunk: &Bytes) {
        match &mut self.kind {
            Kind::Sniffing => {
                if let Some(first) = self.sniff(chunk) {
                    if first == 0 {
                        self.feed_bytes_slow(chunk);
                    } else {
                        self.feed_bytes_slow(&chunk.slice(first..));
                    }
                }
                return;
            }
            Kind::Other => return,
            Kind::Json(json) => json.feed_head(self.total, chunk),
            Kind::Sse => {}
        }
        if self.len.is_some() {
            return self.push_known(chunk, Some(chunk));
        }
        self.total += chunk.len() as u64;
        self.tail.push_bytes(chunk);
        self.fast_from = if self.head_read() && self.tail.holds_last_only() {
            self.tail.window()
        } else {
            usize::MAX
        };
    }

    /// Whether nothing more is wanted from the body's head: it is not JSON (whose head window
    /// holds the model), or that window has been read.
    #[inline]
    fn head_read(&self) -> bool {
        !matches!(self.kind, Kind::Json(_)) || self.total >= WINDOW as u64
    }

    /// Picks the body's kind from its first byte that is not whitespace; returns where that
    /// byte is, `None` while there is none.
    fn sniff(&mut self, chunk: &[u8]) -> Option<usize> {
        let found = chunk.iter().position(|b| !b.is_ascii_whitespace());
        if let Some(len) = &mut self.len {
            *len = len.saturating_sub(found.unwrap_or(chunk.len()) as u64);
        }
        let first = found?;
        self.kind = match chunk[first] {
            b'{' | b'[' => {
                self.tail = Tail::new(WINDOW);
                Kind::Json(JsonScan::default())
            }
            // An event stream starts with a field name or a comment.
            b'd' | b'e' | b'i' | b'r' | b':' => {
                self.tail = Tail::new(EVENT_WINDOW);
                Kind::Sse
            }
            _ => Kind::Other,
        };
        Some(first)
    }

    /// The bytes the scanner holds on to (its buffers' capacity, and the length of the chunks
    /// it keeps by reference): bounded by twice [`WINDOW`](super::WINDOW) or by
    /// [`EVENT_WINDOW`](super::EVENT_WINDOW), plus the chunks kept by reference (those that
    /// hold the window), whatever was fed.
    pub fn retained_bytes(&self) -> usize {
        let head = match &self.kind {
            Kind::Json(json) => json.retained_bytes(),
            _ => 0,
        };
        head + self.tail.retained_bytes()
    }

    /// The result, once the body has ended (or was cut off).
    pub fn finish(&mut self) -> UsageScan {
        let (usage, model) = self.finish_read();
        let model = model.map(|model| Arc::from(model.as_str()));
        match usage {
            Ok(usage) => UsageScan {
                usage: Some(usage),
                model,
                ignored: None,
            },
            Err(ignored) => UsageScan {
                usage: None,
                model,
                ignored: Some(ignored),
            },
        }
    }

    /// As [`finish`](Self::finish), with the model as read (not yet allocated).
    pub(crate) fn finish_read(&mut self) -> Read {
        let mut read = match &mut self.kind {
            Kind::Sniffing => (Err(Ignored::NoUsage), None),
            Kind::Other => (Err(Ignored::Malformed), None),
            Kind::Json(json) => json.finish(&self.tail, self.total),
            Kind::Sse => sse::finish(&self.tail, self.total),
        };
        let read_body = matches!(self.kind, Kind::Json(_) | Kind::Sse);
        if read_body && self.len.is_some_and(|len| self.total < len) {
            // Shorter than its length: cut off (what was read may end like a whole body).
            read.0 = Err(Ignored::Incomplete);
        }
        *self = UsageScanner {
            kind: Kind::Other,
            ..UsageScanner::default()
        };
        read
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::usage::Ignored;

    /// Feeds `body` split at the given cut points (positions, any order, any range), copied
    /// and by reference (alternating per chunk): both must agree.
    fn scan_split(body: &[u8], cuts: &[usize]) -> UsageScan {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut copied = UsageScanner::new();
        let mut mixed = UsageScanner::new();
        // Told the body's length: by reference and copied, alternating the other way.
        let mut sized = UsageScanner::new();
        sized.set_len(body.len() as u64);
        let mut at = 0;
        for (i, cut) in cuts.into_iter().chain([body.len()]).enumerate() {
            copied.feed(&body[at..cut]);
            if i % 2 == 0 {
                mixed.feed_bytes(&Bytes::copy_from_slice(&body[at..cut]));
                sized.feed(&body[at..cut]);
            } else {
                mixed.feed(&body[at..cut]);
                sized.feed_bytes(&Bytes::copy_from_slice(&body[at..cut]));
            }
            at = cut;
            assert!(copied.retained_bytes() <= 3 * super::super::EVENT_WINDOW);
        }
        let result = copied.finish();
        assert_eq!(mixed.finish(), result);
        assert_eq!(sized.finish(), result);
        result
    }

    #[test]
    fn a_body_of_known_length_keeps_nothing_before_its_last_window() {
        let usage = r#""usage":{"prompt_tokens":3,"completion_tokens":4}"#;
        let json = format!(
            r#"{{"model":"m","choices":[{{"text":"{}"}}],{usage}}}"#,
            "x".repeat(200_000)
        );
        let sse = format!(
            "{}data: {{\"model\":\"m\",{usage}}}\n\ndata: [DONE]\n\n",
            "data: {\"model\":\"m\",\"usage\":null}\n\n".repeat(5_000)
        );
        const FRAME: usize = 16 * 1024;
        for body in [json, sse] {
            let body = Bytes::from(format!("  \n{body}"));
            // Fed in frames, slices of one buffer (kept by reference when the length is not
            // known): what was held before the frames that reach the last window.
            let read = |len: u64, end: usize| {
                let mut scanner = UsageScanner::new();
                scanner.set_len(len);
                let mut held_before = 0;
                for at in (0..end).step_by(FRAME) {
                    scanner.feed_bytes(&body.slice(at..(at + FRAME).min(end)));
                    if at + 2 * FRAME < body.len() {
                        held_before = held_before.max(scanner.retained_bytes());
                    }
                }
                (scanner.finish(), held_before)
            };
            let len = body.len() as u64;
            let (whole, held_before) = read(len, body.len());
            assert_eq!(whole.usage, Some(Usage::new(3, 4)));
            assert_eq!(whole.model.as_deref(), Some("m"));
            assert_eq!(held_before, 0);
            let mut unknown = UsageScanner::new();
            unknown.feed_bytes(&body.slice(..FRAME));
            assert!(unknown.retained_bytes() > FRAME - 4, "kept by reference");
            // Cut off: shorter than its length (even cut where a body could end).
            let end = body.len() - "data: [DONE]\n\n".len();
            let (cut, _) = read(len, end);
            assert_eq!(cut.ignored, Some(Ignored::Incomplete));
            // Longer than its length said: read as without one.
            let (longer, _) = read(len - 1000, body.len());
            assert_eq!(longer, whole);
        }
    }

    /// Bytes that look like responses often enough to reach the deep states.
    fn bodyish() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b"[".to_vec()),
            Just(b"]".to_vec()),
            Just(b"\"".to_vec()),
            Just(b"\\".to_vec()),
            Just(b":".to_vec()),
            Just(b",".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n\n".to_vec()),
            Just(b"data: ".to_vec()),
            Just(b"[DONE]".to_vec()),
            Just(b"\"usage\"".to_vec()),
            Just(b"\"model\"".to_vec()),
            Just(b"null".to_vec()),
            Just(br#"{"prompt_tokens":3,"completion_tokens":4}"#.to_vec()),
            Just(b"-7".to_vec()),
            Just(b"1000000001".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::collection::vec(b'a'..=b'z', 0..600),
        ];
        proptest::collection::vec(token, 0..120).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_bytes_any_chunking_same_result(
            body in prop_oneof![proptest::collection::vec(any::<u8>(), 0..2000), bodyish()],
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = scan_split(&body, &[]);
            let split = scan_split(&body, &cuts);
            prop_assert_eq!(&whole, &split);
            prop_assert!(whole.usage.is_some() != whole.ignored.is_some());
        }

        #[test]
        fn generated_responses_give_their_usage(
            input in 0u64..=500_000_000,
            output in 0u64..=500_000_000,
            cached in 0u64..1000,
            filler in "[ -~]{0,3000}",
            sse in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let filler = serde_json::to_string(&filler).unwrap();
            let usage = format!(
                r#"{{"prompt_tokens":{input},"completion_tokens":{output},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{cached}}}}}"#,
                input + output
            );
            let body = if sse {
                format!(
                    "data: {{\"model\":\"m\",\"choices\":[{{\"delta\":{{\"content\":{filler}}}}}],\"usage\":null}}\n\n\
                     data: {{\"model\":\"m\",\"choices\":[],\"usage\":{usage}}}\n\ndata: [DONE]\n\n"
                )
            } else {
                format!(r#"{{"id":"x","model":"m","choices":[{{"message":{{"content":{filler}}}}}],"usage":{usage}}}"#)
            };
            let scan = scan_split(body.as_bytes(), &cuts);
            let mut expected = Usage::new(input, output);
            expected.cached_input_tokens = cached;
            prop_assert_eq!(scan.usage, Some(expected));
            prop_assert_eq!(scan.model.as_deref(), Some("m"));
        }
    }
}
