//! The server-sent-events scanner: keeps the last [`EVENT_WINDOW`] bytes of the stream, never
//! more, and reads its last data event once, at the end.
//!
//! OpenAI-compatible streams (with `stream_options.include_usage`) send the usage in the last
//! data event before `data: [DONE]`; every event names the model. So only the end of the stream
//! matters. Per chunk the scanner only notes the chunk (the newest one by reference, see
//! [`Tail`]): no byte is looked at before the stream ends. Then the events at the end are
//! walked backwards (blank lines found with `memrchr`), past `[DONE]` and events without data,
//! to the last data event: only that one is parsed (its data borrowed when it is one line, as
//! it always is in practice), and only its `usage` and `model` members are built. The last data
//! event and everything after it must lie within the window: an event that starts before it is
//! [`Ignored::OutOfWindow`]. Lines may end in `\n` or `\r\n` (a stream using bare `\r` line
//! ends is not read: no usage, counted).

use std::borrow::Cow;

use memchr::memrchr;

use super::Ignored;
use super::parse::{Read, parse_top};
use super::tail::Tail;

/// The bytes at the end of a stream that are read, in bytes: the last data event (a final usage
/// event is a few hundred) and what follows it must fit.
pub const EVENT_WINDOW: usize = 16 * 1024;

/// Reads the usage and the model from the end of a stream: `tail` holds its last bytes,
/// `total` bytes in all.
pub(crate) fn finish(tail: &Tail, total: u64) -> Read {
    // Look at the last KiB first (where the usage event and `[DONE]` are; the newest chunk
    // alone when it is shorter, so as not to copy), and further back only when no data event
    // was found in it: the result is the window's either way.
    let mut look = tail.first_look(FIRST_LOOK);
    loop {
        let suffix = tail.suffix(look);
        let whole = total <= suffix.len() as u64;
        match read_events(&suffix, whole) {
            Some(result) => return result,
            None if look >= EVENT_WINDOW => return (Err(Ignored::OutOfWindow), None),
            None => look = (4 * look).min(EVENT_WINDOW),
        }
    }
}

/// Bytes of the stream's end looked at first.
const FIRST_LOOK: usize = 1024;

/// Reads the events of `bytes`: the whole stream, or (`whole` false) its end, whose first
/// event is skipped (it may have started earlier). `None` when the end holds no data event
/// (one may lie further back).
///
/// Walks backwards from the end: the bytes after the last blank line (an event not closed by
/// one is taken if its last line is complete, as some servers end the stream after `data: …\n`;
/// a stream cut mid-line is incomplete), then each event before it, to the first one with data
/// that is not `[DONE]`. Only that event is parsed.
fn read_events(bytes: &[u8], whole: bool) -> Option<Read> {
    let bytes = if whole {
        bytes
    } else {
        &bytes[first_event(bytes)?..]
    };
    let last_blank = last_blank_line(bytes, bytes.len());
    let pending = &bytes[last_blank.map_or(0, |lf| lf + 1)..];
    let mut cut = false;
    if pending.last() == Some(&b'\n') {
        if let Event::Data(data) = event(pending) {
            return Some(read_data(&data, false));
        }
    } else if !pending.iter().all(u8::is_ascii_whitespace) {
        cut = true;
    }
    // The complete events, newest first. `[DONE]` after the data event means the stream
    // ended properly, whatever is cut after it.
    let mut saw_done = false;
    let mut end = last_blank;
    while let Some(lf) = end {
        let start = last_blank_line(bytes, lf).map_or(0, |before| before + 1);
        match event(&bytes[start..lf]) {
            Event::Data(data) => return Some(read_data(&data, cut && !saw_done)),
            Event::Done => saw_done = true,
            Event::NoData => {}
        }
        end = start.checked_sub(1);
    }
    whole.then(|| {
        let none = if cut && !saw_done {
            Ignored::Incomplete
        } else {
            Ignored::NoUsage
        };
        (Err(none), None)
    })
}

/// Parses the last data event's data. A stream cut after it (`cut_after`, and no `[DONE]`
/// between) that gave no usage is incomplete: the usage may have been in the part cut off.
fn read_data(data: &[u8], cut_after: bool) -> Read {
    let parsed = parse_top(data);
    let usage = match parsed.usage {
        Err(Ignored::NoUsage) if cut_after => Err(Ignored::Incomplete),
        other => other,
    };
    (usage, parsed.model)
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

/// The index of the `\n` ending the last blank line in `bytes[..end]`; `bytes` starts at the
/// start of a line (what comes before it counts as a blank line).
fn last_blank_line(bytes: &[u8], end: usize) -> Option<usize> {
    let mut end = end;
    loop {
        let lf = memrchr(b'\n', &bytes[..end])?;
        let before = |back: usize| lf.checked_sub(back).map_or(b'\n', |at| bytes[at]);
        if before(1) == b'\n' || (before(1) == b'\r' && before(2) == b'\n') {
            return Some(lf);
        }
        end = lf;
    }
}

/// What an event holds.
enum Event<'a> {
    /// No data lines (a comment, a keep-alive, an `event:` only).
    NoData,
    /// `data: [DONE]`.
    Done,
    /// Data: its `data` lines' values joined with `\n`.
    Data(Cow<'a, [u8]>),
}

/// Reads one event (its lines, without the blank line closing it).
fn event(event: &[u8]) -> Event<'_> {
    match event_data(event) {
        None => Event::NoData,
        Some(data) if data.trim_ascii() == b"[DONE]" => Event::Done,
        Some(data) => Event::Data(data),
    }
}

/// The data of an event: its `data` field values joined with `\n` (borrowed when there is
/// one), or `None` without any.
fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut data: Option<Cow<'_, [u8]>> = None;
    let mut rest = event;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(lf) => (&rest[..lf], &rest[lf + 1..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = data_value(line) else {
            continue;
        };
        match &mut data {
            None => data = Some(Cow::Borrowed(value)),
            Some(joined) => {
                let joined = joined.to_mut();
                joined.push(b'\n');
                joined.extend_from_slice(value);
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
    use bytes::Bytes;
    use kasal_trace::Usage;

    use super::*;
    use crate::usage::UsageScanner;

    /// Scans the chunks copied, and by reference: both must agree.
    fn scan(chunks: &[&[u8]]) -> Read {
        let mut copied = UsageScanner::new();
        let mut by_ref = UsageScanner::new();
        for chunk in chunks {
            copied.feed(chunk);
            assert!(copied.retained_bytes() <= EVENT_WINDOW);
            let chunk = Bytes::copy_from_slice(chunk);
            by_ref.feed_bytes(&chunk);
            // The ring, and the pieces kept by reference (under two windows, or one large chunk).
            assert!(by_ref.retained_bytes() <= 3 * EVENT_WINDOW + chunk.len());
        }
        let result = copied.finish_read();
        assert_eq!(by_ref.finish_read(), result);
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
    fn done_with_other_fields_and_fields_named_like_data_are_passed() {
        let usage =
            "data: {\"model\":\"m\",\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n";
        let long_done = format!("id: {}\ndata: [DONE]\n\n", "7".repeat(80));
        let dataish = format!("database: {}\n\n", "x".repeat(80));
        for end in [long_done, dataish] {
            let body = format!("{usage}{end}");
            assert_eq!(scan(&[body.as_bytes()]).0, Ok(Usage::new(2, 3)), "{end}");
            // Cut after them: the usage before is still the last data event.
            let cut = format!("{body}data: {{\"usage\":nu");
            assert_eq!(scan(&[cut.as_bytes()]).0, Ok(Usage::new(2, 3)), "{end}");
        }
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
