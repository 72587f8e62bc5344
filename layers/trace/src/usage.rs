//! [`Usage`]: the tokens one model call consumed, as carried on a [`CallRecord`](crate::CallRecord)
//! and recorded on its span with the OpenTelemetry GenAI conventions.
//!
//! Plain data: counts only, never a prompt, a completion or a token of any other kind.

use std::ops::{Add, AddAssign};

/// Token counts of one model call (or a sum of calls), in the OpenAI-compatible terms model
/// serving answers with: `prompt_tokens` is `input_tokens`, `completion_tokens` is
/// `output_tokens`, `prompt_tokens_details.cached_tokens` is `cached_input_tokens`,
/// `completion_tokens_details.reasoning_tokens` is `reasoning_tokens`.
///
/// Sums saturate instead of overflowing.
///
/// ```
/// use kasal_trace::Usage;
///
/// let usage = Usage::new(120, 30) + Usage::new(5, 0);
/// assert_eq!(usage.input_tokens, 125);
/// assert_eq!(usage.total_tokens, 155);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Prompt (input) tokens, cached ones included.
    pub input_tokens: u64,
    /// Completion (output) tokens, reasoning ones included.
    pub output_tokens: u64,
    /// All tokens, as the server counted them (normally input + output).
    pub total_tokens: u64,
    /// Input tokens served from the prompt cache.
    pub cached_input_tokens: u64,
    /// Output tokens spent on reasoning.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// `input_tokens` and `output_tokens`, with `total_tokens` their sum and no cached or
    /// reasoning tokens.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens.saturating_add(output_tokens),
            cached_input_tokens: 0,
            reasoning_tokens: 0,
        }
    }

    /// True when every count is zero.
    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
    }
}

impl Add for Usage {
    type Output = Usage;

    fn add(mut self, other: Usage) -> Usage {
        self += other;
        self
    }
}

/// The longest model name kept, in bytes.
pub const MAX_MODEL_LEN: usize = 128;

/// `model` if it is worth keeping as a model name: non-empty, at most [`MAX_MODEL_LEN`] bytes,
/// no control characters or whitespace (model and endpoint names never have them, and a rollup
/// key must not be attacker-sized).
pub fn valid_model(model: &str) -> Option<&str> {
    let printable = if model.is_ascii() {
        // ASCII control characters and whitespace are the bytes up to the space, and DEL.
        model.bytes().all(|b| b > b' ' && b != 0x7f)
    } else {
        !model.chars().any(|c| c.is_control() || c.is_whitespace())
    };
    let ok = !model.is_empty() && model.len() <= MAX_MODEL_LEN && printable;
    ok.then_some(model)
}

/// The serving endpoint's name in a `…/serving-endpoints/{name}/invocations` path, if it is a
/// [`valid_model`]: the model of a call whose response names none.
///
/// ```
/// use kasal_trace::serving_endpoint_model;
///
/// assert_eq!(
///     serving_endpoint_model("/serving-endpoints/databricks-gte-large-en/invocations"),
///     Some("databricks-gte-large-en")
/// );
/// assert_eq!(serving_endpoint_model("/serving-endpoints/chat/completions"), None);
/// ```
pub fn serving_endpoint_model(path: &str) -> Option<&str> {
    let rest = path.strip_suffix("/invocations")?;
    let (before, name) = rest.rsplit_once('/')?;
    if !before.ends_with("/serving-endpoints") && before != "serving-endpoints" {
        return None;
    }
    valid_model(name)
}

/// Whether a path is a model-serving call whose answer may carry token usage: a serving
/// endpoint's `…/invocations`, or an OpenAI-compatible `…/completions` (chat or not),
/// `…/embeddings` or `…/responses`.
pub fn is_model_serving_path(path: &str) -> bool {
    path.ends_with("/invocations")
        || path.ends_with("/completions")
        || path.ends_with("/embeddings")
        || path.ends_with("/responses")
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Usage {
        iter.fold(Usage::default(), Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_serving_paths() {
        assert_eq!(
            serving_endpoint_model("/api/2.0/serving-endpoints/my-llm/invocations"),
            Some("my-llm")
        );
        assert_eq!(
            serving_endpoint_model("/serving-endpoints//invocations"),
            None
        );
        assert_eq!(serving_endpoint_model("/other/my-llm/invocations"), None);
        assert_eq!(
            serving_endpoint_model("/serving-endpoints/embeddings"),
            None
        );
        assert!(is_model_serving_path("/serving-endpoints/chat/completions"));
        assert!(is_model_serving_path("/v1/embeddings"));
        assert!(!is_model_serving_path("/api/2.0/jobs/list"));
        assert_eq!(valid_model("a b"), None);
        for bad in [
            "a\tb",
            "a\u{7f}",
            "a\u{1f}",
            "\u{a0}x",
            "a\u{2028}",
            "a\u{85}",
        ] {
            assert_eq!(valid_model(bad), None, "{bad:?}");
        }
        assert_eq!(
            valid_model("gpt-4o_mini.v2:latest"),
            Some("gpt-4o_mini.v2:latest")
        );
        assert_eq!(valid_model("modèle-ü"), Some("modèle-ü"));
        assert_eq!(valid_model(&"m".repeat(MAX_MODEL_LEN + 1)), None);
    }

    #[test]
    fn sums_saturate() {
        let mut usage = Usage::new(u64::MAX, 1);
        assert_eq!(usage.total_tokens, u64::MAX);
        usage += Usage::new(1, 1);
        assert_eq!(usage.input_tokens, u64::MAX);
        assert_eq!(usage.output_tokens, 2);
        assert!(!usage.is_zero());
        assert!(Usage::default().is_zero());
    }
}
