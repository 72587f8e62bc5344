//! The JSON body scanner: keeps the first and the last [`WINDOW`] bytes of the body, never more.
//!
//! Per chunk it only notes the chunk: the head is copied once (or read in place when the first
//! chunk holds it), the tail is the newest chunk by reference ([`Tail`]), and nothing is parsed
//! before the body ends. So a large body costs a few operations per chunk, not per byte.
//!
//! A body that fits in the window is parsed whole (serde_json validates it and reads the
//! top-level `usage` and `model`). A larger body is read from both ends: the top-level scalar
//! members before the first array or object (where OpenAI-compatible servers put `model`) from
//! the head, and the top-level members walked backwards from the closing `}` (where they put
//! `usage`) from the tail. Walking backwards is exact for JSON: strings cannot hold a bare `"`,
//! so a quote preceded by an even number of backslashes always delimits a string, and a `usage`
//! key inside a string value, or nested below the top level, is never taken for the member.
//! The middle of a large body is never looked at: a body broken only there still gives its
//! usage.

use std::ops::Range;

use memchr::memrchr;

use super::Ignored;
use super::parse::{ModelName, Read, parse_model, parse_top, parse_usage};
use super::tail::Tail;

/// Bytes kept from each end of a JSON body.
pub const WINDOW: usize = 4 * 1024;

/// The JSON scanner's own state: the head. The tail (the last `WINDOW` bytes) and the byte
/// count are the [`UsageScanner`](super::UsageScanner)'s.
#[derive(Debug, Default)]
pub(crate) struct JsonScan {
    /// The first bytes, copied, until the body outgrows `WINDOW` (a small body is parsed whole).
    head: Vec<u8>,
    /// What the first `WINDOW` bytes gave, once the body outgrew them.
    head_read: Option<Head>,
}

impl JsonScan {
    /// Keeps or reads what of `chunk` falls in the first `WINDOW` bytes, `before` being the
    /// body's length before it. Nothing to do once `before` reaches `WINDOW`.
    pub(crate) fn feed_head(&mut self, before: u64, chunk: &[u8]) {
        if before >= WINDOW as u64 {
            return;
        }
        if before == 0 && chunk.len() > WINDOW {
            // The first chunk holds the whole head: read it in place.
            self.head_read = Some(head_members(&chunk[..WINDOW]));
            return;
        }
        let take = (WINDOW - before as usize).min(chunk.len());
        if self.head.capacity() == 0 {
            self.head.reserve_exact(WINDOW);
        }
        self.head.extend_from_slice(&chunk[..take]);
        if before + chunk.len() as u64 > WINDOW as u64 {
            self.head_read = Some(head_members(&self.head));
            self.head = Vec::new();
        }
    }

    pub(crate) fn retained_bytes(&self) -> usize {
        self.head.capacity()
    }

    /// The result, from the head and `tail` (the body's last bytes; `total` bytes in all).
    pub(crate) fn finish(&mut self, tail: &Tail, total: u64) -> Read {
        if total <= WINDOW as u64 {
            let parsed = parse_top(&self.head);
            return (parsed.usage, parsed.model);
        }
        let head = self
            .head_read
            .take()
            .unwrap_or_else(|| head_members(&self.head));
        // Walk the last KiB first (the newest chunk alone when it is shorter, so as not to
        // copy), further back only when it runs out: the result is the window's either way.
        let mut look = tail.first_look(FIRST_LOOK);
        let (tail, walk) = loop {
            let tail = tail.suffix(look);
            // The model named in the head spares walking the tail past the usage.
            let walk = tail_members(&tail, head.model.is_none());
            let ran_out = walk.end == End::Exhausted || tail.trim_ascii_end().is_empty();
            if !ran_out || look >= WINDOW {
                break (tail, walk);
            }
            look = (4 * look).min(WINDOW);
        };
        let model = walk
            .model
            .and_then(|range| parse_model(&tail[range]))
            .or(head.model);
        if head.malformed {
            return (Err(Ignored::Malformed), model);
        }
        let usage = match (walk.usage, walk.end) {
            (Some(range), _) => parse_usage(&tail[range]),
            (None, End::Start) => Err(Ignored::NoUsage),
            (None, End::Exhausted) => Err(Ignored::OutOfWindow),
            (None, End::Malformed) => Err(Ignored::Malformed),
            (None, End::Incomplete) => Err(Ignored::Incomplete),
        };
        (usage, model)
    }
}

/// Bytes of the body's end walked first.
const FIRST_LOOK: usize = 1024;

/// What the head gave.
#[derive(Debug)]
struct Head {
    model: Option<ModelName>,
    malformed: bool,
}

/// Reads the top-level members of the head up to the first array or object value (or the end
/// of the head): the `model` string, and whether what was read is valid.
fn head_members(head: &[u8]) -> Head {
    let mut out = Head {
        model: None,
        malformed: false,
    };
    let mut i = skip_ws(head, 0);
    if head.get(i) != Some(&b'{') {
        out.malformed = true;
        return out;
    }
    i += 1;
    loop {
        i = skip_ws(head, i);
        match head.get(i) {
            None => return out,
            Some(b'"') => {}
            Some(b'}') => return out,
            Some(_) => {
                out.malformed = true;
                return out;
            }
        }
        let Some(key_end) = string_end(head, i) else {
            return out;
        };
        let key = &head[i + 1..key_end];
        i = skip_ws(head, key_end + 1);
        match head.get(i) {
            None => return out,
            Some(b':') => i = skip_ws(head, i + 1),
            Some(_) => {
                out.malformed = true;
                return out;
            }
        }
        let value_start = i;
        match head.get(i) {
            None | Some(b'{') | Some(b'[') => return out,
            Some(b'"') => {
                let Some(end) = string_end(head, i) else {
                    return out;
                };
                if key == b"model" {
                    out.model = parse_model(&head[value_start..=end]);
                }
                i = end + 1;
            }
            Some(_) => {
                while head.get(i).is_some_and(|b| is_scalar_byte(*b)) {
                    i += 1;
                }
                if i == value_start {
                    out.malformed = true;
                    return out;
                }
            }
        }
        i = skip_ws(head, i);
        match head.get(i) {
            None => return out,
            Some(b',') => i += 1,
            Some(b'}') => return out,
            Some(_) => {
                out.malformed = true;
                return out;
            }
        }
    }
}

/// The index of the quote closing the string whose opening quote is at `open`.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', &bytes[i..])?;
        if bytes[at] == b'"' {
            return Some(at);
        }
        i = at + 2;
        if i > bytes.len() {
            return None;
        }
    }
}

/// How the backward walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// It reached the object's opening `{`, or found both members.
    Start,
    /// The tail ran out first.
    Exhausted,
    /// Not JSON.
    Malformed,
    /// The body does not end with the closing `}`: cut off.
    Incomplete,
}

struct Walk {
    usage: Option<Range<usize>>,
    model: Option<Range<usize>>,
    end: End,
}

/// Walks the top-level members backwards from the closing `}` of `tail` (the end of a body
/// whose start is not in `tail`), noting where the `usage` and `model` values are.
fn tail_members(tail: &[u8], need_model: bool) -> Walk {
    let mut walk = Walk {
        usage: None,
        model: None,
        end: End::Start,
    };
    walk.end = match walk_back(tail, need_model, &mut walk) {
        Ok(()) => End::Start,
        Err(end) => end,
    };
    walk
}

fn walk_back(t: &[u8], need_model: bool, walk: &mut Walk) -> Result<(), End> {
    let mut i = skip_ws_back(t, t.len());
    match i.checked_sub(1).map(|j| t[j]) {
        Some(b'}') => i -= 1,
        _ => return Err(End::Incomplete),
    }
    i = skip_ws_back(t, i);
    if i > 0 && t[i - 1] == b'{' {
        return Ok(()); // `{}`
    }
    loop {
        i = skip_ws_back(t, i);
        let value_end = i;
        let value_start = value_back(t, i)?;
        i = skip_ws_back(t, value_start);
        if i == 0 {
            return Err(End::Exhausted);
        }
        if t[i - 1] != b':' {
            return Err(End::Malformed);
        }
        i = skip_ws_back(t, i - 1);
        if i == 0 {
            return Err(End::Exhausted);
        }
        if t[i - 1] != b'"' {
            return Err(End::Malformed);
        }
        let key_open = string_open(t, i - 1)?;
        let key = &t[key_open + 1..i - 1];
        if key == b"usage" && walk.usage.is_none() {
            walk.usage = Some(value_start..value_end);
        } else if key == b"model" && walk.model.is_none() {
            walk.model = Some(value_start..value_end);
        }
        if walk.usage.is_some() && (walk.model.is_some() || !need_model) {
            return Ok(());
        }
        i = skip_ws_back(t, key_open);
        if i == 0 {
            return Err(End::Exhausted);
        }
        match t[i - 1] {
            b',' => i -= 1,
            b'{' => return Ok(()),
            _ => return Err(End::Malformed),
        }
    }
}

/// The start of the value that ends at `end` (exclusive).
fn value_back(t: &[u8], end: usize) -> Result<usize, End> {
    if end == 0 {
        return Err(End::Exhausted);
    }
    match t[end - 1] {
        b'"' => string_open(t, end - 1),
        b'}' | b']' => {
            let mut depth = 0usize;
            let mut i = end;
            loop {
                if i == 0 {
                    return Err(End::Exhausted);
                }
                i -= 1;
                match t[i] {
                    b'"' => i = string_open(t, i)?,
                    b'}' | b']' => depth += 1,
                    b'{' | b'[' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        b if is_scalar_byte(b) => {
            let mut i = end;
            while i > 0 && is_scalar_byte(t[i - 1]) {
                i -= 1;
            }
            if i == 0 { Err(End::Exhausted) } else { Ok(i) }
        }
        _ => Err(End::Malformed),
    }
}

/// The index of the quote opening the string whose closing quote is at `close`: the nearest
/// quote before it that is not escaped (preceded by an even number of backslashes).
fn string_open(t: &[u8], close: usize) -> Result<usize, End> {
    let mut j = close;
    loop {
        let quote = memrchr(b'"', &t[..j]).ok_or(End::Exhausted)?;
        let backslashes = t[..quote].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes == quote {
            // The run of backslashes reaches the start of the tail: escaped or not is unknown.
            return Err(End::Exhausted);
        }
        if backslashes % 2 == 0 {
            return Ok(quote);
        }
        j = quote;
    }
}

fn is_scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-')
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(t: &[u8], mut i: usize) -> usize {
    while t.get(i).is_some_and(|b| is_ws(*b)) {
        i += 1;
    }
    i
}

fn skip_ws_back(t: &[u8], mut i: usize) -> usize {
    while i > 0 && is_ws(t[i - 1]) {
        i -= 1;
    }
    i
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
            assert!(copied.retained_bytes() <= 3 * WINDOW);
            let chunk = Bytes::copy_from_slice(chunk);
            by_ref.feed_bytes(&chunk);
            // Head, ring, and the pieces kept by reference (under two windows, or one large chunk).
            assert!(by_ref.retained_bytes() <= 4 * WINDOW + chunk.len());
        }
        let result = copied.finish_read();
        assert_eq!(by_ref.finish_read(), result);
        result
    }

    fn big(content_len: usize, after: &str) -> String {
        format!(
            r#"{{"id":"x","object":"chat.completion","created":1,"model":"m-1","choices":[{{"message":{{"content":"{}"}}}}]{after}}}"#,
            "a\\\"{}[]".repeat(content_len / 8)
        )
    }

    #[test]
    fn large_body_reads_both_ends() {
        let body = big(
            100_000,
            r#","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7},"system_fingerprint":"fp""#,
        );
        let (usage, model) = scan(&[body.as_bytes()]);
        assert_eq!(usage, Ok(Usage::new(3, 4)));
        assert_eq!(model.as_deref(), Some("m-1"));
    }

    #[test]
    fn large_body_without_usage_or_cut() {
        // The last member is larger than the window: whether a usage came before it is unknown.
        let body = big(100_000, "");
        assert_eq!(scan(&[body.as_bytes()]).0, Err(Ignored::OutOfWindow));
        let body = big(100_000, r#","usage":null,"x":1"#);
        assert_eq!(scan(&[body.as_bytes()]).0, Err(Ignored::NoUsage));
        let cut = &body.as_bytes()[..body.len() - 1];
        assert_eq!(scan(&[cut]).0, Err(Ignored::Incomplete));
        let garbage = format!("x{body}");
        assert_eq!(scan(&[garbage.as_bytes()]).0, Err(Ignored::Malformed));
    }

    #[test]
    fn usage_inside_a_string_is_not_the_member() {
        let content = r#"\"usage\": {\"prompt_tokens\": 5, \"completion_tokens\": 6}"#;
        let body = format!(
            r#"{{"model":"m","choices":[{{"message":{{"content":"{}{content}"}}}}]}}"#,
            "z".repeat(10_000)
        );
        assert_eq!(scan(&[body.as_bytes()]).0, Err(Ignored::OutOfWindow));
        let small = format!(r#"{{"choices":[{{"message":{{"content":"{content}"}}}}]}}"#);
        assert_eq!(scan(&[small.as_bytes()]).0, Err(Ignored::NoUsage));
        let nested = format!(
            r#"{{"x":"{}","choices":[{{"usage":{{"prompt_tokens":1}}}}]}}"#,
            "z".repeat(10_000)
        );
        assert_eq!(scan(&[nested.as_bytes()]).0, Err(Ignored::OutOfWindow));
    }

    #[test]
    fn a_huge_member_after_usage_is_out_of_window() {
        let body = format!(
            r#"{{"model":"m","usage":{{"prompt_tokens":1}},"extra":"{}"}}"#,
            "z".repeat(3 * WINDOW)
        );
        let (usage, model) = scan(&[body.as_bytes()]);
        assert_eq!(usage, Err(Ignored::OutOfWindow));
        assert_eq!(model.as_deref(), Some("m"));
    }

    #[test]
    fn chunking_does_not_matter() {
        let body = big(
            20_000,
            r#","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}"#,
        );
        let whole = scan(&[body.as_bytes()]);
        assert_eq!(whole.0, Ok(Usage::new(3, 4)));
        assert_eq!(whole.1.as_deref(), Some("m-1"));
        for size in [1, 7, 100, 4095, 4096, 4097, 9000] {
            let chunks: Vec<&[u8]> = body.as_bytes().chunks(size).collect();
            assert_eq!(scan(&chunks), whole, "{size}");
        }
    }
}
