//! The server-sent-events scanner: keeps the last [`EVENT_WINDOW`] bytes of the stream, never
//! more, and reads its last data event once, at the end.
//!
//! OpenAI-compatible streams (with `stream_options.include_usage`) send the usage in the last
//! data event before `data: [DONE]`; every event names the model. So only the end of the stream
//! matters. Per chunk the scanner only notes the chunk (the newest one by reference, see
//! [`Tail`]): no byte is looked at before the stream ends. Then the events of the window are
//! walked backwards from the end (blank lines found with `memrchr`), past `[DONE]` and events
//! without data, to the last data event, whose data is joined and parsed. The last data event
//! and everything after it must lie within the window: an event that starts before it is
//! [`Ignored::OutOfWindow`]. Lines may end in `\n` or `\r\n` (a stream using bare `\r` line
//! ends is not read: no usage, counted).

use std::sync::Arc;

use bytes::Bytes;
use kasal_trace::Usage;
use memchr::{memmem, memrchr};

use super::Ignored;
use super::parse::parse_top;
use super::tail::Tail;

/// The bytes at the end of a stream that are read, in bytes: the last data event (a final usage
/// event is a few hundred) and what follows it must fit.
pub const EVENT_WINDOW: usize = 16 * 1024;

/// The SSE scanner's state: the end of the stream.
#[derive(Debug)]
pub(crate) struct SseScan {
    tail: Tail,
    total: u64,
}

impl Default for SseScan {
    fn default() -> Self {
        SseScan {
            tail: Tail::new(EVENT_WINDOW),
            total: 0,
        }
    }
}

impl SseScan {
    /// Reads a chunk by copying what is needed of it.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        self.tail.push_slice(chunk);
    }

    /// Reads a chunk, keeping it by reference.
    #[inline]
    pub(crate) fn feed_bytes(&mut self, chunk: &Bytes) {
        self.total += chunk.len() as u64;
        self.tail.push_bytes(chunk);
    }

    pub(crate) fn retained_bytes(&self) -> usize {
        self.tail.retained_bytes()
    }

    pub(crate) fn finish(&mut self) -> (Result<Usage, Ignored>, Option<Arc<str>>) {
        // Look at the last KiB first (where the usage event and `[DONE]` are), and further back
        // only when no data event was found in it: the result is the window's either way.
        let mut look = FIRST_LOOK;
        loop {
            let suffix = self.tail.suffix(look);
            let whole = self.total <= suffix.len() as u64;
            match read_events(&suffix, whole) {
                Some(result) => return result,
                None if look >= EVENT_WINDOW => return (Err(Ignored::OutOfWindow), None),
                None => look = (4 * look).min(EVENT_WINDOW),
            }
        }
    }
}

/// Bytes of the stream's end looked at first.
const FIRST_LOOK: usize = 1024;

/// What a read gave: the usage (or why none) and the model.
type Read = (Result<Usage, Ignored>, Option<Arc<str>>);

/// Reads the events of `bytes`: the whole stream, or (`whole` false) its end, whose first
/// event is skipped (it may have started earlier). `None` when the end holds no data event
/// (one may lie further back).
fn read_events(bytes: &[u8], whole: bool) -> Option<Read> {
    let mut events = EventScan::default();
    if whole {
        events.feed(bytes);
        return Some(events.finish());
    }
    events.feed(&bytes[first_event(bytes)?..]);
    events.finish_end()
}

/// Where the first event that starts after a blank line begins.
fn first_event(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let lf = from + memchr::memchr(b'\n', &bytes[from..])?;
        match (bytes.get(lf + 1), bytes.get(lf + 2)) {
            (Some(b'\n'), _) => return Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
            _ => from = lf + 1,
        }
    }
}

/// What the last complete data event was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Last {
    #[default]
    None,
    /// Its data is in `last`.
    Data,
    /// It was larger than the window.
    Oversized,
}

/// Reads events in order, chunk by chunk, keeping the event being received and the last data
/// event (each at most [`EVENT_WINDOW`]): run once over the window at the end. Per chunk, it
/// finds the chunk's last blank line searching backwards and looks only at the event(s) just
/// before it.
#[derive(Debug)]
struct EventScan {
    /// The event being received: the bytes since the last blank line.
    pending: Vec<u8>,
    /// `pending` outgrew the window (its start is lost).
    pending_overflow: bool,
    /// The data of the last complete data event.
    last: Vec<u8>,
    last_state: Last,
    /// The two bytes before the current chunk (a blank line may straddle chunks).
    prev: [u8; 2],
    /// The last event with data was `data: [DONE]`.
    saw_done: bool,
}

impl Default for EventScan {
    fn default() -> Self {
        EventScan {
            pending: Vec::new(),
            pending_overflow: false,
            last: Vec::new(),
            last_state: Last::None,
            // The stream starts at the start of a line.
            prev: [b'\n', b'\n'],
            saw_done: false,
        }
    }
}

/// What an event holds.
enum Kind {
    /// No data lines (a comment, a keep-alive, an `event:` only).
    NoData,
    /// `data: [DONE]`.
    Done,
    /// Data: kept as the last data event.
    Data,
    /// Data, but over the window.
    Oversized,
}

impl EventScan {
    fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        match self.last_blank_line(chunk, chunk.len()) {
            None => self.push_pending(chunk),
            Some(end) => {
                self.complete_events(&chunk[..=end]);
                self.pending.clear();
                self.pending_overflow = false;
                self.push_pending(&chunk[end + 1..]);
            }
        }
        self.prev = match chunk.len() {
            1 => [self.prev[1], chunk[0]],
            n => [chunk[n - 2], chunk[n - 1]],
        };
    }

    /// As [`finish`](Self::finish), for events read from the end of a stream: `None` when
    /// they hold no data event.
    fn finish_end(&mut self) -> Option<Read> {
        let result = self.finish();
        (self.last_state != Last::None).then_some(result)
    }

    fn finish(&mut self) -> (Result<Usage, Ignored>, Option<Arc<str>>) {
        // An event not closed by a blank line: taken if its last line is complete (some servers
        // end the stream after `data: …\n`); a stream cut mid-line is incomplete.
        let mut cut = false;
        if !self.pending.is_empty() || self.pending_overflow {
            if self.pending.last() == Some(&b'\n') && !self.pending_overflow {
                let pending = std::mem::take(&mut self.pending);
                self.take_event(&pending);
            } else if !self.pending.iter().all(u8::is_ascii_whitespace) || self.pending_overflow {
                cut = true;
            }
        }
        let (usage, model) = match self.last_state {
            Last::Data => match event_data(&self.last) {
                Some(data) => {
                    let parsed = parse_top(&data);
                    (parsed.usage, parsed.model)
                }
                None => (Err(Ignored::NoUsage), None),
            },
            Last::Oversized => (Err(Ignored::OutOfWindow), None),
            Last::None => (Err(Ignored::NoUsage), None),
        };
        let usage = match usage {
            Err(Ignored::NoUsage) if cut && !self.saw_done => Err(Ignored::Incomplete),
            other => other,
        };
        (usage, model)
    }

    fn push_pending(&mut self, bytes: &[u8]) {
        if self.pending_overflow || bytes.is_empty() {
            return;
        }
        if self.pending.len() + bytes.len() > EVENT_WINDOW {
            self.pending_overflow = true;
            self.pending = Vec::new();
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    /// The byte at `i` of the chunk, where negative indices look back before it.
    fn byte(&self, chunk: &[u8], i: isize) -> u8 {
        match i {
            -2 => self.prev[0],
            -1 => self.prev[1],
            i => chunk[i as usize],
        }
    }

    /// The index of the `\n` ending the last blank line in `chunk[..end]`.
    fn last_blank_line(&self, chunk: &[u8], end: usize) -> Option<usize> {
        let mut end = end;
        loop {
            let lf = memrchr(b'\n', &chunk[..end])?;
            let at = lf as isize;
            let before = self.byte(chunk, at - 1);
            if before == b'\n' || (before == b'\r' && self.byte(chunk, at - 2) == b'\n') {
                return Some(lf);
            }
            end = lf;
        }
    }

    /// `region` ends with a blank line; `pending` holds the start of its first event. Finds the
    /// last event with data in it (looking backwards, past `[DONE]` and data-less events) and
    /// keeps its data.
    fn complete_events(&mut self, region: &[u8]) {
        let mut end = region.len() - 1; // the `\n` of the blank line closing the event
        let mut latest = true;
        loop {
            // The event's bytes run from just after the previous blank line to `end`.
            let start = if end == 0 {
                None
            } else {
                self.last_blank_line(region, end).map(|lf| lf + 1)
            };
            let kind = match start {
                Some(start) => self.take_event(&region[start..end]),
                None if self.pending_overflow => Kind::Oversized,
                None => {
                    let mut event = std::mem::take(&mut self.pending);
                    let kind = if event.len() + end > EVENT_WINDOW {
                        Kind::Oversized
                    } else {
                        event.extend_from_slice(&region[..end]);
                        self.take_event(&event)
                    };
                    self.pending = event;
                    kind
                }
            };
            match kind {
                Kind::Data => {
                    self.saw_done &= !latest;
                    return;
                }
                Kind::Oversized => {
                    self.saw_done &= !latest;
                    self.last_state = Last::Oversized;
                    return;
                }
                Kind::Done => {
                    if latest {
                        self.saw_done = true;
                        latest = false;
                    }
                }
                Kind::NoData => {}
            }
            match start {
                // Earlier events were seen by earlier chunks: `last` already holds the one
                // before.
                None => return,
                Some(start) => end = start - 1,
            }
        }
    }

    /// Classifies one event (its raw lines, without the closing blank line) and keeps its raw
    /// bytes as the last data event if it has data. Only searches (SIMD) and one copy here: the
    /// lines are split and the data joined once, at the end.
    fn take_event(&mut self, event: &[u8]) -> Kind {
        let has_data = event.starts_with(b"data") || memmem::find(event, b"\ndata").is_some();
        if !has_data {
            return Kind::NoData;
        }
        if event.len() > EVENT_WINDOW {
            return Kind::Oversized;
        }
        // `data: [DONE]` (alone, or with an id or a comment): small, so split it exactly.
        if event.len() <= 64 {
            let data = event_data(event);
            match data.as_deref().map(<[u8]>::trim_ascii) {
                None => return Kind::NoData,
                Some(b"[DONE]") => return Kind::Done,
                Some(_) => {}
            }
        }
        self.last.clear();
        self.last.extend_from_slice(event);
        self.last_state = Last::Data;
        Kind::Data
    }
}

/// The data of an event: its `data` field values joined with `\n`, or `None` without any.
fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = data_value(line) else {
            continue;
        };
        match &mut data {
            None => data = Some(value.to_vec()),
            Some(buf) => {
                buf.push(b'\n');
                buf.extend_from_slice(value);
            }
        }
    }
    data
}

/// The value of a `data` field line (`data: v`, `data:v`, or `data`), else `None`.
fn data_value(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"data")?;
    match rest.first() {
        None => Some(rest),
        Some(b':') => Some(rest[1..].strip_prefix(b" ").unwrap_or(&rest[1..])),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans the chunks copied, and by reference: both must agree.
    fn scan(chunks: &[&[u8]]) -> (Result<Usage, Ignored>, Option<Arc<str>>) {
        let mut copied = SseScan::default();
        let mut by_ref = SseScan::default();
        for chunk in chunks {
            copied.feed(chunk);
            assert!(copied.retained_bytes() <= EVENT_WINDOW);
            let chunk = Bytes::copy_from_slice(chunk);
            by_ref.feed_bytes(&chunk);
            // The ring, and the pieces kept by reference (under two windows, or one large chunk).
            assert!(by_ref.retained_bytes() <= 3 * EVENT_WINDOW + chunk.len());
        }
        let result = copied.finish();
        assert_eq!(by_ref.finish(), result);
        result
    }

    /// Whole-stream reading over many events (long streams): the window holds the end.
    #[test]
    fn a_long_stream_is_read_from_its_last_window() {
        let mut body = String::new();
        while body.len() < 5 * EVENT_WINDOW {
            body += "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\n";
        }
        let end = "data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n";
        let whole = format!("{body}{end}");
        for size in [1, 100, 4096, EVENT_WINDOW, whole.len()] {
            let chunks: Vec<&[u8]> = whole.as_bytes().chunks(size).collect();
            let (usage, model) = scan(&chunks);
            assert_eq!(usage, Ok(Usage::new(3, 4)), "{size}");
            assert_eq!(model.as_deref(), Some("m"));
        }
        // Keep-alives after the usage event, more than the window: out of window.
        let keep_alive = ": ping\n\n".repeat(EVENT_WINDOW / 8 + 1);
        let late = format!("{body}{end}{keep_alive}");
        assert_eq!(scan(&[late.as_bytes()]).0, Err(Ignored::OutOfWindow));
        // Not one blank line in the last window: out of window.
        let unterminated = format!("{body}{end}: {}", "z".repeat(EVENT_WINDOW));
        assert_eq!(
            scan(&[unterminated.as_bytes()]).0,
            Err(Ignored::OutOfWindow)
        );
        // A usage event that fills the window after the blank line before it is read; one
        // byte longer, its start is not in the window: out of window.
        let event = |len: usize| {
            let head = "data: {\"usage\":{\"prompt_tokens\":1},\"pad\":\"";
            let pad = "y".repeat(len - head.len() - "\"}\n\n".len());
            format!("{head}{pad}\"}}\n\n")
        };
        let comment = format!(": {}\n\n", "z".repeat(3 * EVENT_WINDOW));
        let fits = format!("{comment}{}", event(EVENT_WINDOW - 2));
        assert_eq!(scan(&[fits.as_bytes()]).0, Ok(Usage::new(1, 0)));
        let over = format!("{comment}{}", event(EVENT_WINDOW - 1));
        assert_eq!(scan(&[over.as_bytes()]).0, Err(Ignored::OutOfWindow));
    }

    fn stream(line_end: &str) -> String {
        let mut s = String::new();
        for i in 0..50 {
            s += &format!(
                r#"data: {{"id":"c","model":"m-s","choices":[{{"delta":{{"content":"tok{i} \"usage\":{{}}"}}}}],"usage":null}}{line_end}{line_end}"#
            );
        }
        s += &format!(": keep-alive{line_end}{line_end}");
        s += &format!(
            r#"data: {{"id":"c","model":"m-s","choices":[],"usage":{{"prompt_tokens":11,"completion_tokens":50,"total_tokens":61}}}}{line_end}{line_end}"#
        );
        s += &format!("data: [DONE]{line_end}{line_end}");
        s
    }

    #[test]
    fn usage_from_the_last_data_event_any_chunking() {
        for line_end in ["\n", "\r\n"] {
            let body = stream(line_end);
            for size in [1, 2, 3, 17, 64, 300, 4096, body.len()] {
                let chunks: Vec<&[u8]> = body.as_bytes().chunks(size).collect();
                let (usage, model) = scan(&chunks);
                assert_eq!(usage, Ok(Usage::new(11, 50)), "{size} {line_end:?}");
                assert_eq!(model.as_deref(), Some("m-s"));
            }
        }
    }

    #[test]
    fn no_usage_null_usage_and_cut_streams() {
        let body = stream("\n");
        let without = body.replace(
            r#""usage":{"prompt_tokens":11,"completion_tokens":50,"total_tokens":61}"#,
            r#""usage":null"#,
        );
        assert_eq!(scan(&[without.as_bytes()]).0, Err(Ignored::NoUsage));
        // Cut inside the usage event.
        let at = body.find("\"prompt_tokens\"").unwrap();
        assert_eq!(scan(&[&body.as_bytes()[..at]]).0, Err(Ignored::Incomplete));
        // Ends after the usage event's line, without blank line or [DONE]: still read.
        let at = body.find("\n\ndata: [DONE]").unwrap() + 1;
        assert_eq!(scan(&[&body.as_bytes()[..at]]).0, Ok(Usage::new(11, 50)));
        // Malformed JSON in the last event.
        let broken = "data: {\"usage\": {\"prompt_tokens\": 1}\n\ndata: [DONE]\n\n";
        assert_eq!(scan(&[broken.as_bytes()]).0, Err(Ignored::Incomplete));
        let broken = "data: {\"usage\": {\"prompt_tokens\": 1}]}\n\n";
        assert_eq!(scan(&[broken.as_bytes()]).0, Err(Ignored::Malformed));
    }

    #[test]
    fn multi_line_data_and_other_fields() {
        let body = "event: message\nid: 1\ndata: {\"model\":\"m\",\ndata: \"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\nretry: 10\n\n";
        let (usage, model) = scan(&[body.as_bytes()]);
        assert_eq!(usage, Ok(Usage::new(2, 3)));
        assert_eq!(model.as_deref(), Some("m"));
    }

    #[test]
    fn an_oversized_last_event_is_out_of_window() {
        let body = format!(
            "data: {{\"model\":\"m\",\"x\":\"{}\",\"usage\":{{\"prompt_tokens\":1}}}}\n\n",
            "z".repeat(EVENT_WINDOW)
        );
        for size in [100, 5000, body.len()] {
            let chunks: Vec<&[u8]> = body.as_bytes().chunks(size).collect();
            assert_eq!(scan(&chunks).0, Err(Ignored::OutOfWindow), "{size}");
        }
    }
}
