//! Token usage of model calls: read from model-serving responses as they stream past, and
//! carried on the [`CallRecord`](crate::CallRecord) as a [`Usage`](crate::trace::Usage) and a
//! model name.
//!
//! [`UsageScanner`] is the sans-IO reader: fed the response body chunk by chunk, it keeps only
//! the bytes it needs (the two ends of a JSON body, the end of a stream: a few KiB, whatever
//! the body's size; the newest chunks by reference, so a chunk costs a few operations however
//! large it is), parses them once at the end, and gives the OpenAI-compatible `usage` object
//! (`prompt_tokens`, `completion_tokens`, `total_tokens`, `prompt_tokens_details.cached_tokens`,
//! `completion_tokens_details.reasoning_tokens`) and the `model`:
//!
//! - from a JSON body: the top-level `usage` and `model` members (chat completions,
//!   embeddings, `/serving-endpoints/{name}/invocations`);
//! - from a server-sent-events stream: the last data event before `data: [DONE]`, where the
//!   usage arrives with `stream_options: {"include_usage": true}` (within the stream's last
//!   [`EVENT_WINDOW`] bytes).
//!
//! It must never change, hold back or buffer the body, and never panic: a body it cannot read
//! (malformed, cut off, no usage, `usage: null`, negative counts or counts over
//! [`MAX_TOKENS`]) gives no usage and an [`Ignored`] reason, which the layers count in
//! [`Stats::usage_ignored`](crate::Stats::usage_ignored).
//!
//! When the response names no model, the model is the serving endpoint's name from the path
//! ([`serving_endpoint_model`]).

mod hook;
mod json;
mod parse;
mod scanner;
mod sse;
mod tail;

pub use hook::{ReadUsage, UsageReading};
pub use json::WINDOW;
pub use kasal_trace::{is_model_serving_path, serving_endpoint_model, valid_model};
pub use parse::MAX_TOKENS;
pub use scanner::{UsageScan, UsageScanner};
pub use sse::EVENT_WINDOW;

use kasal_user_agent::Product;

/// Why a body gave no usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ignored {
    /// The body reported none: no `usage` member, `usage: null`, an empty body, or a stream
    /// whose last data event has none.
    NoUsage,
    /// Not a JSON object or an event stream, invalid JSON, or a `usage` of the wrong shape.
    Malformed,
    /// A count was negative or over [`MAX_TOKENS`].
    OutOfRange,
    /// The body ended early (cut off mid-object or mid-event).
    Incomplete,
    /// The usage, if any, lies outside what the scanner keeps (a member of several KiB after
    /// it, a last event over [`EVENT_WINDOW`]).
    OutOfWindow,
}

impl Ignored {
    /// A short name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::NoUsage => "no_usage",
            Ignored::Malformed => "malformed",
            Ignored::OutOfRange => "out_of_range",
            Ignored::Incomplete => "incomplete",
            Ignored::OutOfWindow => "out_of_window",
        }
    }
}

/// The products whose calls are read for usage by default: `llm`, `embedding` and `agent`.
pub fn reads_usage_by_default(product: &Product) -> bool {
    matches!(product, Product::Llm | Product::Embedding | Product::Agent)
}
