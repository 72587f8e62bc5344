//! The server-sent-events scanner: keeps the event being received and the data of the last
//! complete data event, each at most [`EVENT_WINDOW`] bytes, never more.
//!
//! OpenAI-compatible streams (with `stream_options.include_usage`) send the usage in the last
//! data event before `data: [DONE]`; every event names the model. So only the last data event
//! matters, and it is parsed once, at the end. Per chunk, the scanner finds the chunk's last
//! blank line searching backwards, and looks only at the event(s) just before it: the cost per
//! chunk is the size of its last events, not of the chunk. Lines may end in `\n` or `\r\n`
//! (a stream using bare `\r` line ends is not read: no usage, counted).

use std::sync::Arc;

use kasal_trace::Usage;
use memchr::memrchr;

use super::Ignored;
use super::parse::parse_top;

/// The largest event (and event data) kept, in bytes. A final usage event is a few hundred.
pub const EVENT_WINDOW: usize = 16 * 1024;

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

/// The SSE scanner's state.
#[derive(Debug)]
pub(crate) struct SseScan {
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

impl Default for SseScan {
    fn default() -> Self {
        SseScan {
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

impl SseScan {
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
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

    pub(crate) fn retained_bytes(&self) -> usize {
        self.pending.capacity() + self.last.capacity()
    }

    pub(crate) fn finish(&mut self) -> (Result<Usage, Ignored>, Option<Arc<str>>) {
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
            Last::Data => {
                let parsed = parse_top(&self.last);
                (parsed.usage, parsed.model)
            }
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

    /// Classifies one event (its lines, without the closing blank line), keeping its data as
    /// the last data event if it has some.
    fn take_event(&mut self, event: &[u8]) -> Kind {
        if event.len() > EVENT_WINDOW {
            return if has_data_line(event) {
                Kind::Oversized
            } else {
                Kind::NoData
            };
        }
        let lines = || {
            event
                .split(|&b| b == b'\n')
                .filter_map(|line| data_value(line.strip_suffix(b"\r").unwrap_or(line)))
        };
        let mut values = lines();
        let Some(first) = values.next() else {
            return Kind::NoData;
        };
        if values.next().is_none() && first.trim_ascii() == b"[DONE]" {
            return Kind::Done;
        }
        let mut data = std::mem::take(&mut self.last);
        data.clear();
        for (i, value) in lines().enumerate() {
            if i > 0 {
                data.push(b'\n');
            }
            data.extend_from_slice(value);
        }
        self.last = data;
        self.last_state = Last::Data;
        Kind::Data
    }
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

fn has_data_line(event: &[u8]) -> bool {
    event
        .split(|&b| b == b'\n')
        .any(|line| data_value(line).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> (Result<Usage, Ignored>, Option<Arc<str>>) {
        let mut scan = SseScan::default();
        for chunk in chunks {
            scan.feed(chunk);
            assert!(scan.retained_bytes() <= 3 * EVENT_WINDOW);
        }
        scan.finish()
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
