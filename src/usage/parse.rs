//! Turning the bytes a scanner kept (a top-level object, or the raw `usage` and `model` values)
//! into a [`Usage`] and a model name. The inputs are small and bounded; serde_json does the
//! parsing, so escapes, duplicates and types are handled as JSON says.

use std::sync::Arc;

use kasal_trace::{Usage, valid_model};
use serde::Deserialize;
use serde_json::Number;

use super::Ignored;

/// The largest count taken as real: anything above is a broken or hostile server.
pub const MAX_TOKENS: u64 = 1_000_000_000;

/// The two top-level members we read; every other member is skipped (and validated) by serde.
#[derive(Deserialize)]
pub(crate) struct Top {
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

/// The OpenAI-compatible `usage` object (Chat Completions and Embeddings), plus the Responses
/// API's `input_tokens` / `output_tokens` spelling.
#[derive(Deserialize)]
pub(crate) struct RawUsage {
    prompt_tokens: Option<Number>,
    completion_tokens: Option<Number>,
    total_tokens: Option<Number>,
    input_tokens: Option<Number>,
    output_tokens: Option<Number>,
    prompt_tokens_details: Option<Details>,
    completion_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
    output_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    cached_tokens: Option<Number>,
    reasoning_tokens: Option<Number>,
}

/// What a whole body (or SSE event) said: its usage and its model, each independently.
pub(crate) struct Parsed {
    pub(crate) usage: Result<Usage, Ignored>,
    pub(crate) model: Option<Arc<str>>,
}

/// Parses a complete top-level JSON object.
pub(crate) fn parse_top(bytes: &[u8]) -> Parsed {
    match serde_json::from_slice::<Top>(bytes) {
        Ok(top) => Parsed {
            usage: match top.usage {
                Some(raw) => raw.to_usage(),
                None => Err(Ignored::NoUsage),
            },
            model: top.model.as_ref().and_then(model_from_value),
        },
        Err(error) => Parsed {
            usage: Err(if error.is_eof() {
                Ignored::Incomplete
            } else {
                Ignored::Malformed
            }),
            model: None,
        },
    }
}

/// Parses the raw bytes of a `usage` value (`null` means none).
pub(crate) fn parse_usage(bytes: &[u8]) -> Result<Usage, Ignored> {
    if let Some(raw) = plain_usage(bytes) {
        return match raw {
            Some(raw) => raw.to_usage(),
            None => Err(Ignored::NoUsage),
        };
    }
    match serde_json::from_slice::<Option<RawUsage>>(bytes) {
        Ok(Some(raw)) => raw.to_usage(),
        Ok(None) => Err(Ignored::NoUsage),
        Err(_) => Err(Ignored::Malformed),
    }
}

/// Parses the raw bytes of a `model` value: a string, else nothing.
pub(crate) fn parse_model(bytes: &[u8]) -> Option<Arc<str>> {
    // A string without escapes or control characters is its own content: no parser needed.
    if let [b'"', inner @ .., b'"'] = bytes {
        if !inner.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) {
            return std::str::from_utf8(inner)
                .ok()
                .and_then(valid_model)
                .map(Arc::from);
        }
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .as_ref()
        .and_then(model_from_value)
}

fn model_from_value(value: &serde_json::Value) -> Option<Arc<str>> {
    value.as_str().and_then(valid_model).map(Arc::from)
}

/// The usual `usage` object read without serde: `null`, or an object whose keys have no
/// escapes and whose values are `null`, integers without sign, fraction or exponent, or (for
/// the `*_details` members) such objects. `None` for anything else, a repeated member included:
/// serde then reads it and decides, so the result is serde's either way.
fn plain_usage(bytes: &[u8]) -> Option<Option<RawUsage>> {
    let mut at = Cursor { bytes, i: 0 };
    at.ws();
    if at.rest().starts_with(b"null") {
        at.i += 4;
        at.ws();
        return at.done().then_some(None);
    }
    let mut raw = RawUsage {
        prompt_tokens: None,
        completion_tokens: None,
        total_tokens: None,
        input_tokens: None,
        output_tokens: None,
        prompt_tokens_details: None,
        completion_tokens_details: None,
        input_tokens_details: None,
        output_tokens_details: None,
    };
    at.object(|at, key| {
        let slot = match key {
            b"prompt_tokens" => &mut raw.prompt_tokens,
            b"completion_tokens" => &mut raw.completion_tokens,
            b"total_tokens" => &mut raw.total_tokens,
            b"input_tokens" => &mut raw.input_tokens,
            b"output_tokens" => &mut raw.output_tokens,
            _ => {
                let details = match key {
                    b"prompt_tokens_details" => &mut raw.prompt_tokens_details,
                    b"completion_tokens_details" => &mut raw.completion_tokens_details,
                    b"input_tokens_details" => &mut raw.input_tokens_details,
                    b"output_tokens_details" => &mut raw.output_tokens_details,
                    _ => return at.count().map(drop),
                };
                return at.details(details);
            }
        };
        at.set(slot)
    })?;
    at.ws();
    at.done().then_some(Some(raw))
}

/// A position in a small JSON text, for [`plain_usage`].
struct Cursor<'a> {
    bytes: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.i.min(self.bytes.len())..]
    }

    fn done(&self) -> bool {
        self.i == self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.ws();
        (self.peek() == Some(byte)).then(|| self.i += 1)
    }

    /// `{ "key": value, ... }`, each value read by `member`.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let rest = self.rest();
            let end = memchr::memchr2(b'"', b'\\', rest)?;
            if rest[end] != b'"' {
                return None;
            }
            self.i += end + 1;
            self.eat(b':')?;
            self.ws();
            member(self, &rest[..end])?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// `null` or a plain integer.
    fn count(&mut self) -> Option<Option<u64>> {
        let rest = self.rest();
        if rest.starts_with(b"null") {
            self.i += 4;
            return Some(None);
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 19 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        if matches!(rest.get(digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut n = 0u64;
        for &digit in &rest[..digits] {
            n = n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
        }
        self.i += digits;
        Some(Some(n))
    }

    /// A count into `slot`, which must not be set yet (serde refuses a repeated member).
    fn set(&mut self, slot: &mut Option<Number>) -> Option<()> {
        let value = self.count()?;
        if slot.is_some() {
            return None;
        }
        *slot = value.map(Number::from);
        Some(())
    }

    /// `null` or `{"cached_tokens": n, "reasoning_tokens": n, ...}` into `slot`.
    fn details(&mut self, slot: &mut Option<Details>) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        if self.rest().starts_with(b"null") {
            self.i += 4;
            return Some(());
        }
        let mut details = Details {
            cached_tokens: None,
            reasoning_tokens: None,
        };
        let (mut cached, mut reasoning) = (false, false);
        self.object(|at, key| match key {
            b"cached_tokens" if !cached => {
                cached = true;
                at.set(&mut details.cached_tokens)
            }
            b"reasoning_tokens" if !reasoning => {
                reasoning = true;
                at.set(&mut details.reasoning_tokens)
            }
            b"cached_tokens" | b"reasoning_tokens" => None,
            _ => at.count().map(drop),
        })?;
        *slot = Some(details);
        Some(())
    }
}

impl RawUsage {
    fn to_usage(&self) -> Result<Usage, Ignored> {
        let input = count(self.prompt_tokens.as_ref().or(self.input_tokens.as_ref()))?;
        let output = count(
            self.completion_tokens
                .as_ref()
                .or(self.output_tokens.as_ref()),
        )?;
        let total = count(self.total_tokens.as_ref())?;
        let input_details = self
            .prompt_tokens_details
            .as_ref()
            .or(self.input_tokens_details.as_ref());
        let output_details = self
            .completion_tokens_details
            .as_ref()
            .or(self.output_tokens_details.as_ref());
        let cached = count(input_details.and_then(|d| d.cached_tokens.as_ref()))?;
        let reasoning = count(output_details.and_then(|d| d.reasoning_tokens.as_ref()))?;
        if input.is_none() && output.is_none() && total.is_none() {
            return Err(Ignored::NoUsage);
        }
        let (input, output) = (input.unwrap_or(0), output.unwrap_or(0));
        Ok(Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: total.unwrap_or(input + output),
            cached_input_tokens: cached.unwrap_or(0),
            reasoning_tokens: reasoning.unwrap_or(0),
        })
    }
}

/// A count: an integer in `0..=MAX_TOKENS`. Negative or larger is out of range; a fraction is
/// malformed.
fn count(number: Option<&Number>) -> Result<Option<u64>, Ignored> {
    let Some(number) = number else {
        return Ok(None);
    };
    match number.as_u64() {
        Some(n) if n <= MAX_TOKENS => Ok(Some(n)),
        Some(_) => Err(Ignored::OutOfRange),
        None if number.as_i64().is_some() => Err(Ignored::OutOfRange),
        None => match number.as_f64() {
            Some(f) if !(0.0..=MAX_TOKENS as f64).contains(&f) => Err(Ignored::OutOfRange),
            _ => Err(Ignored::Malformed),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kasal_trace::MAX_MODEL_LEN;

    #[test]
    fn chat_usage_with_details() {
        let usage = parse_usage(
            br#"{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,
                "prompt_tokens_details":{"cached_tokens":4},
                "completion_tokens_details":{"reasoning_tokens":3}}"#,
        )
        .unwrap();
        assert_eq!(
            usage,
            Usage {
                input_tokens: 19,
                output_tokens: 10,
                total_tokens: 29,
                cached_input_tokens: 4,
                reasoning_tokens: 3
            }
        );
    }

    #[test]
    fn embedding_usage_and_responses_spelling() {
        let usage = parse_usage(br#"{"prompt_tokens":8,"total_tokens":8}"#).unwrap();
        assert_eq!(usage, Usage::new(8, 0));
        let usage = parse_usage(br#"{"input_tokens":5,"output_tokens":7}"#).unwrap();
        assert_eq!(usage, Usage::new(5, 7));
    }

    #[test]
    fn bad_counts_are_ignored_with_a_reason() {
        assert_eq!(parse_usage(b"null"), Err(Ignored::NoUsage));
        assert_eq!(parse_usage(b"{}"), Err(Ignored::NoUsage));
        assert_eq!(
            parse_usage(br#"{"prompt_tokens":-1}"#),
            Err(Ignored::OutOfRange)
        );
        assert_eq!(
            parse_usage(br#"{"prompt_tokens":1000000001}"#),
            Err(Ignored::OutOfRange)
        );
        assert_eq!(
            parse_usage(br#"{"prompt_tokens":1e300}"#),
            Err(Ignored::OutOfRange)
        );
        assert_eq!(
            parse_usage(br#"{"prompt_tokens":1.5}"#),
            Err(Ignored::Malformed)
        );
        assert_eq!(
            parse_usage(br#"{"prompt_tokens":"5"}"#),
            Err(Ignored::Malformed)
        );
        assert_eq!(parse_usage(b"{\"prompt_tokens\":"), Err(Ignored::Malformed));
        assert_eq!(parse_usage(b"[1]"), Err(Ignored::Malformed));
    }

    #[test]
    fn the_plain_reader_agrees_with_serde() {
        let cases: &[&[u8]] = &[
            b"null",
            b" null ",
            b"{}",
            br#"{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}"#,
            br#"{ "prompt_tokens" : 1 , "completion_tokens" : null }"#,
            br#"{"prompt_tokens":3,"prompt_tokens":4}"#,
            br#"{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":1,"audio_tokens":0}}"#,
            br#"{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":2}}"#,
            br#"{"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":7}}"#,
            br#"{"prompt_tokens_details":{},"prompt_tokens_details":{}}"#,
            br#"{"input_tokens":5,"output_tokens":7,"output_tokens_details":{"reasoning_tokens":2}}"#,
            br#"{"prompt_tokens":-1}"#,
            br#"{"prompt_tokens":1000000001}"#,
            br#"{"prompt_tokens":99999999999999999999}"#,
            br#"{"prompt_tokens":1e3}"#,
            br#"{"prompt_tokens":1.0}"#,
            br#"{"prompt_tokens":01}"#,
            br#"{"prompt_tokens":"5"}"#,
            br#"{"prompt_tokens":5,"x":"y"}"#,
            br#"{"prompt_tokens":5,"x":[1]}"#,
            br#"{"prompt_tokens":5,"x":7}"#,
            br#"{"prompt_\u0074okens":5}"#,
            br#"{"prompt_tokens":5,}"#,
            br#"{"prompt_tokens":5} x"#,
            br#"{"prompt_tokens":5"#,
            br#"{"prompt_tokens" 5}"#,
            b"[1]",
            b"",
            b"nul",
        ];
        for case in cases {
            let serde = match serde_json::from_slice::<Option<RawUsage>>(case) {
                Ok(Some(raw)) => raw.to_usage(),
                Ok(None) => Err(Ignored::NoUsage),
                Err(_) => Err(Ignored::Malformed),
            };
            assert_eq!(
                parse_usage(case),
                serde,
                "{}",
                String::from_utf8_lossy(case)
            );
        }
        // The usual objects take the plain path.
        assert!(
            plain_usage(
                br#"{"prompt_tokens":1,"completion_tokens_details":{"reasoning_tokens":0}}"#
            )
            .is_some()
        );
        assert!(plain_usage(br#"{"prompt_tokens":1,"prompt_tokens":2}"#).is_none());
    }

    #[test]
    fn models_are_bounded_strings() {
        assert_eq!(parse_model(br#""gpt-4o""#).as_deref(), Some("gpt-4o"));
        assert_eq!(parse_model(b"7"), None);
        assert_eq!(parse_model(br#""a b""#), None);
        assert_eq!(parse_model(br#""""#), None);
        assert_eq!(parse_model(br#""gpt\u002d4o""#).as_deref(), Some("gpt-4o"));
        assert_eq!(parse_model(b"\"\xff\""), None);
        let long = format!("\"{}\"", "m".repeat(MAX_MODEL_LEN + 1));
        assert_eq!(parse_model(long.as_bytes()), None);
    }
}
