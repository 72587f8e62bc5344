//! Turning the bytes a scanner kept (a top-level object, or the raw `usage` and `model` values)
//! into a [`Usage`] and a model name. The inputs are small and bounded; serde_json does the
//! parsing, so escapes, duplicates and types are handled as JSON says.

use std::borrow::Cow;
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
    match serde_json::from_slice::<Option<RawUsage>>(bytes) {
        Ok(Some(raw)) => raw.to_usage(),
        Ok(None) => Err(Ignored::NoUsage),
        Err(_) => Err(Ignored::Malformed),
    }
}

/// Parses the raw bytes of a `model` value: a string, else nothing.
pub(crate) fn parse_model(bytes: &[u8]) -> Option<Arc<str>> {
    serde_json::from_slice::<Cow<'_, str>>(bytes)
        .ok()
        .as_deref()
        .and_then(valid_model)
        .map(Arc::from)
}

fn model_from_value(value: &serde_json::Value) -> Option<Arc<str>> {
    value.as_str().and_then(valid_model).map(Arc::from)
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
