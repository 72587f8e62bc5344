//! A `tracing` layer that captures spans and events for assertions.
//!
//! `SpanCapture::new()` returns the layer and a `Captured` handle sharing one
//! `Arc<Mutex<..>>`. Every span keeps its name, target, all fields with their latest values, its
//! parent (as an index into `spans()`), and whether it has closed; every event keeps its fields
//! and its parent span. Install it per test (`tracing::subscriber::set_default` or
//! `WithSubscriber::with_subscriber`), never globally, so tests run in parallel.
//!
//! Self-contained: depends on `tracing` and `tracing-subscriber` only. Include it with
//! `#[path = "common/spans.rs"] mod spans;` (root tests) or
//! `#[path = "../../../tests/common/spans.rs"] mod spans;` (a layer crate's tests).
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A field value, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    Bool(bool),
    F64(f64),
    /// Recorded with `%` or `?`: the formatted text.
    Debug(String),
}

impl Value {
    /// The value as text, whatever its kind.
    pub fn text(&self) -> String {
        match self {
            Value::Str(s) | Value::Debug(s) => s.clone(),
            Value::I64(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
        }
    }
}

/// One span.
#[derive(Clone, Debug)]
pub struct SpanData {
    /// Position in `Captured::spans()`.
    pub index: usize,
    pub name: &'static str,
    pub target: String,
    pub fields: BTreeMap<String, Value>,
    /// Index of the parent span, if it was captured.
    pub parent: Option<usize>,
    pub closed: bool,
}

impl SpanData {
    /// A field's latest value as text.
    pub fn field(&self, name: &str) -> Option<String> {
        self.fields.get(name).map(Value::text)
    }
}

/// One event.
#[derive(Clone, Debug)]
pub struct EventData {
    pub target: String,
    pub fields: BTreeMap<String, Value>,
    /// Index of the span the event happened in, if any.
    pub parent: Option<usize>,
}

impl EventData {
    /// A field's value as text (`message` for the event's message).
    pub fn field(&self, name: &str) -> Option<String> {
        self.fields.get(name).map(Value::text)
    }
}

#[derive(Default)]
struct State {
    spans: Vec<SpanData>,
    events: Vec<EventData>,
    /// Live span ids to their index: ids are reused by the registry once a span closes.
    live: HashMap<u64, usize>,
}

/// The capturing layer.
#[derive(Clone, Default)]
pub struct SpanCapture {
    state: Arc<Mutex<State>>,
}

/// The captured spans and events.
#[derive(Clone)]
pub struct Captured {
    state: Arc<Mutex<State>>,
}

impl SpanCapture {
    /// A layer and the handle to read what it captures.
    pub fn new() -> (SpanCapture, Captured) {
        let layer = SpanCapture::default();
        let captured = Captured {
            state: layer.state.clone(),
        };
        (layer, captured)
    }

    /// A registry with only this layer, and the handle.
    pub fn subscriber() -> (impl Subscriber + Send + Sync + 'static, Captured) {
        let (layer, captured) = SpanCapture::new();
        (Registry::default().with(layer), captured)
    }

    /// A `Dispatch` with only this layer (for `set_default` or `with_subscriber`), and the handle.
    pub fn dispatch() -> (tracing::Dispatch, Captured) {
        let (subscriber, captured) = SpanCapture::subscriber();
        (tracing::Dispatch::new(subscriber), captured)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Captured {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every span so far, in creation order.
    pub fn spans(&self) -> Vec<SpanData> {
        self.lock().spans.clone()
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<EventData> {
        self.lock().events.clone()
    }

    /// Spans named `name`.
    pub fn spans_named(&self, name: &str) -> Vec<SpanData> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    /// The only span named `name`; panics if there is not exactly one.
    pub fn only_span(&self, name: &str) -> SpanData {
        let spans = self.spans_named(name);
        assert_eq!(spans.len(), 1, "spans named {name}: {spans:#?}");
        spans.into_iter().next().unwrap()
    }

    /// Events whose message is `message`.
    pub fn events_with_message(&self, message: &str) -> Vec<EventData> {
        self.events()
            .into_iter()
            .filter(|e| e.field("message").as_deref() == Some(message))
            .collect()
    }

    /// Every field value of every span and event, as text (to search for leaked secrets).
    pub fn all_text(&self) -> Vec<String> {
        let state = self.lock();
        let spans = state.spans.iter().flat_map(|s| s.fields.values());
        let events = state.events.iter().flat_map(|e| e.fields.values());
        spans.chain(events).map(Value::text).collect()
    }

    /// Forgets everything captured so far.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.spans.clear();
        state.events.clear();
    }
}

struct FieldVisitor<'a>(&'a mut BTreeMap<String, Value>);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::Str(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::U64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::F64(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::Debug(format!("{value:?}")));
    }
}

impl<S> Layer<S> for SpanCapture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        let parent_id = if let Some(parent) = attrs.parent() {
            Some(parent.clone())
        } else if attrs.is_contextual() {
            ctx.current_span().id().cloned()
        } else {
            None
        };
        let mut state = self.lock();
        let parent = parent_id.and_then(|p| state.live.get(&p.into_u64()).copied());
        let index = state.spans.len();
        state.spans.push(SpanData {
            index,
            name: attrs.metadata().name(),
            target: attrs.metadata().target().to_owned(),
            fields,
            parent,
            closed: false,
        });
        state.live.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut state = self.lock();
        if let Some(&index) = state.live.get(&id.into_u64()) {
            values.record(&mut FieldVisitor(&mut state.spans[index].fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut FieldVisitor(&mut fields));
        let parent_id = if let Some(parent) = event.parent() {
            Some(parent.clone())
        } else if event.is_contextual() {
            ctx.current_span().id().cloned()
        } else {
            None
        };
        let mut state = self.lock();
        let parent = parent_id.and_then(|p| state.live.get(&p.into_u64()).copied());
        state.events.push(EventData {
            target: event.metadata().target().to_owned(),
            fields,
            parent,
        });
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut state = self.lock();
        if let Some(index) = state.live.remove(&id.into_u64()) {
            state.spans[index].closed = true;
        }
    }
}
