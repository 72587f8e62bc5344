//! `POST /serving-endpoints/{name}/invocations`: OpenAI-compatible chat completions (JSON or
//! SSE with `"stream": true`) and embeddings, with a `usage` object, as Databricks Foundation
//! Model APIs answer. Token counts are deterministic (one token per whitespace-separated word,
//! plus 3 per chat message), and every answer's usage is added to the workspace's tally.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::error::error_response;
use crate::recorded::ServedUsage;
use crate::state::Shared;

impl ServedUsage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> ServedUsage {
        ServedUsage {
            responses: 1,
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }

    pub(crate) fn add(&mut self, other: ServedUsage) {
        self.responses += other.responses;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }

    fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        })
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        // The content-parts form: [{"type": "text", "text": "..."}].
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

pub(crate) async fn invocations(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error_response(StatusCode::BAD_REQUEST, "request body is not JSON", None);
    };
    if let Some(input) = request.get("input") {
        return embeddings(&shared, &name, input);
    }
    if let Some(messages) = request.get("messages").and_then(Value::as_array) {
        let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
        return chat(&shared, &name, messages, stream);
    }
    error_response(
        StatusCode::BAD_REQUEST,
        "expected `messages` (chat) or `input` (embeddings)",
        None,
    )
}

fn embeddings(shared: &Shared, model: &str, input: &Value) -> Response {
    let inputs: Vec<String> = match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "`input` must be a string or an array of strings",
                None,
            );
        }
    };
    let prompt_tokens = inputs.iter().map(|i| words(i).max(1)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": embedding(text)})
        })
        .collect();
    let usage = ServedUsage::new(prompt_tokens, 0);
    shared.served(model, usage);
    Json(json!({
        "object": "list",
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response()
}

/// An 8-dimensional unit vector that depends only on the text.
fn embedding(text: &str) -> Vec<f64> {
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    let mut vector: Vec<f64> = (0..8)
        .map(|i| {
            for b in text.bytes().chain([i as u8]) {
                state = (state ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect();
    let norm = vector
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::EPSILON);
    for x in &mut vector {
        *x = (*x / norm * 1e6).round() / 1e6;
    }
    vector
}

fn reply_to(messages: &[Value]) -> String {
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(text_of)
        .unwrap_or_default();
    let topic: Vec<&str> = last_user.split_whitespace().take(6).collect();
    if topic.is_empty() {
        "Hello from the local Databricks workspace.".to_owned()
    } else {
        format!(
            "The local workspace read your question about {} and answers it here.",
            topic.join(" ")
        )
    }
}

fn chat(shared: &Arc<Shared>, model: &str, messages: &[Value], stream: bool) -> Response {
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| 3 + m.get("content").map_or(0, |c| words(&text_of(c))))
        .sum();
    let reply = reply_to(messages);
    let usage = ServedUsage::new(prompt_tokens, words(&reply));
    shared.served(model, usage);
    let id = format!("chatcmpl-local-{}", shared.call_count());
    if stream {
        return sse(
            id,
            model.to_owned(),
            reply,
            usage,
            shared.settings.stream_chunk_delay,
        );
    }
    Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "finish_reason": "stop",
        }],
        "usage": usage.json(),
    }))
    .into_response()
}

/// The completion as `text/event-stream`: one chunk per word, then a last chunk with
/// `finish_reason` and `usage`, then `data: [DONE]`.
fn sse(id: String, model: String, reply: String, usage: ServedUsage, delay: Duration) -> Response {
    let created = now_secs();
    let chunk = move |delta: Value, finish: Option<&str>, usage: Option<Value>| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let mut events: Vec<Bytes> = Vec::new();
    for (i, word) in reply.split_whitespace().enumerate() {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": word})
        } else {
            json!({"content": format!(" {word}")})
        };
        events.push(chunk(delta, None, None));
    }
    events.push(chunk(json!({}), Some("stop"), Some(usage.json())));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));

    let stream = futures_util::stream::unfold(
        (events.into_iter(), true),
        move |(mut events, first)| async move {
            let event = events.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, std::convert::Infallible>(event), (events, false)))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello");
        assert_eq!(a, embedding("hello"));
        assert_ne!(a, embedding("world"));
        let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }

    #[test]
    fn content_parts_are_text() {
        let parts = json!([{"type": "text", "text": "a b"}, {"type": "image_url"}]);
        assert_eq!(text_of(&parts), "a b");
        assert_eq!(text_of(&json!(3)), "");
    }
}
