//! Turning the bytes a scanner kept (a top-level object, or the raw `usage` and `model` values)
//! into a [`Usage`] and a model name. The inputs are small and bounded; serde_json does the
//! parsing, so escapes, duplicates and types are handled as JSON says. Only the two members
//! read are deserialized: every other member is skipped (and validated) without being built,
//! and the model is copied into a [`ModelName`] (no allocation).

use std::fmt;

use kasal_trace::{MAX_MODEL_LEN, Usage, valid_model};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Number;

use super::Ignored;

/// The largest count taken as real: anything above is a broken or hostile server.
pub const MAX_TOKENS: u64 = 1_000_000_000;

/// The two top-level members we read; every other member is skipped (and validated) by serde.
#[derive(Deserialize)]
pub(crate) struct Top {
    #[serde(default)]
    model: Option<ModelValue>,
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

/// A model name read from a body: a [`valid_model`], kept inline so that reading it allocates
/// nothing (the call's record gets an `Arc<str>` only when it differs from the one it has).
#[derive(Clone, Copy)]
pub(crate) struct ModelName {
    len: u8,
    bytes: [u8; MAX_MODEL_LEN],
}

impl ModelName {
    /// `model` if it is a [`valid_model`].
    pub(crate) fn new(model: &str) -> Option<ModelName> {
        let model = valid_model(model)?;
        let mut name = ModelName {
            len: model.len() as u8,
            bytes: [0; MAX_MODEL_LEN],
        };
        name.bytes[..model.len()].copy_from_slice(model.as_bytes());
        Some(name)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name (always valid UTF-8: it was copied from a `&str`; checked again, as this
    /// crate has no `unsafe`).
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

// The length is kept in a `u8`.
const _: () = assert!(MAX_MODEL_LEN <= u8::MAX as usize);

impl std::ops::Deref for ModelName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for ModelName {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ModelName {}

/// The value of a `model` member: any JSON value, of which a string that is a [`valid_model`]
/// is kept (copied, never allocated) and anything else skipped.
struct ModelValue(Option<ModelName>);

impl<'de> Deserialize<'de> for ModelValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ModelVisitor)
    }
}

struct ModelVisitor;

impl<'de> Visitor<'de> for ModelVisitor {
    type Value = ModelValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<ModelValue, E> {
        Ok(ModelValue(ModelName::new(value)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ModelValue, E> {
        Ok(ModelValue(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<ModelValue, E> {
        Ok(ModelValue(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<ModelValue, E> {
        Ok(ModelValue(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ModelValue, E> {
        Ok(ModelValue(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<ModelValue, E> {
        Ok(ModelValue(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ModelValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(ModelValue(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ModelValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(ModelValue(None))
    }
}

/// What a scan gave: the usage (or why none) and the model.
pub(crate) type Read = (Result<Usage, Ignored>, Option<ModelName>);

/// What a whole body (or SSE event) said: its usage and its model, each independently.
pub(crate) struct Parsed {
    pub(crate) usage: Result<Usage, Ignored>,
    pub(crate) model: Option<ModelName>,
}

/// Deserializes JSON text: UTF-8 is checked once for the whole input (`from_str`), not once per
/// string (`from_slice`); input that is not UTF-8 goes to `from_slice`, for its error.
fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// Parses a complete top-level JSON object.
pub(crate) fn parse_top(bytes: &[u8]) -> Parsed {
    match from_json::<Top>(bytes) {
        Ok(top) => Parsed {
            usage: match top.usage {
                Some(raw) => raw.to_usage(),
                None => Err(Ignored::NoUsage),
            },
            model: top.model.and_then(|model| model.0),
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
    match from_json::<Option<RawUsage>>(bytes) {
        Ok(Some(raw)) => raw.to_usage(),
        Ok(None) => Err(Ignored::NoUsage),
        Err(_) => Err(Ignored::Malformed),
    }
}

/// Parses the raw bytes of a `model` value: a string, else nothing.
pub(crate) fn parse_model(bytes: &[u8]) -> Option<ModelName> {
    from_json::<ModelValue>(bytes).ok()?.0
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
    fn models_are_bounded_strings() {
        assert_eq!(parse_model(br#""gpt-4o""#).as_deref(), Some("gpt-4o"));
        assert_eq!(parse_model(b"7"), None);
        assert_eq!(parse_model(br#""a b""#), None);
        assert_eq!(parse_model(br#""""#), None);
        assert_eq!(parse_model(br#""gpt\u002d4o""#).as_deref(), Some("gpt-4o"));
        assert_eq!(parse_model(br#"{"a":[1,"b"]}"#), None);
        assert_eq!(parse_model(b"null"), None);
        assert_eq!(parse_model(b"\"\xff\""), None);
        let long = format!("\"{}\"", "m".repeat(MAX_MODEL_LEN + 1));
        assert_eq!(parse_model(long.as_bytes()), None);
    }
}
