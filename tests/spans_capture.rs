//! The shared span-capture layer (`tests/common/spans.rs`) records what tests assert on.
#[path = "common/spans.rs"]
mod spans;

use spans::SpanCapture;

#[test]
fn captures_names_fields_parents_events_and_closing() {
    let (dispatch, captured) = SpanCapture::dispatch();
    tracing::dispatcher::with_default(&dispatch, || {
        let outer = tracing::info_span!("outer", a = 1u64, b = tracing::field::Empty);
        outer.in_scope(|| {
            let inner = tracing::info_span!("inner", name = "x");
            inner.in_scope(|| tracing::info!(n = 3i64, "hello"));
            outer.record("b", "late");
        });
        drop(outer);
        // Ids are reused by the registry once spans close: the index stays distinct.
        let again = tracing::info_span!("again");
        let _entered = again.enter();
        tracing::warn!("after");
    });

    let spans = captured.spans();
    assert_eq!(spans.len(), 3);
    let (outer, inner, again) = (&spans[0], &spans[1], &spans[2]);
    assert_eq!(
        (outer.name, inner.name, again.name),
        ("outer", "inner", "again")
    );
    assert_eq!(outer.field("a").as_deref(), Some("1"));
    assert_eq!(outer.field("b").as_deref(), Some("late"));
    assert_eq!(inner.field("name").as_deref(), Some("x"));
    assert_eq!(inner.parent, Some(outer.index));
    assert_eq!(outer.parent, None);
    assert_eq!(again.parent, None);
    assert!(outer.closed && inner.closed && again.closed);

    let hello = &captured.events_with_message("hello")[0];
    assert_eq!(hello.parent, Some(inner.index));
    assert_eq!(hello.field("n").as_deref(), Some("3"));
    assert_eq!(
        captured.events_with_message("after")[0].parent,
        Some(again.index)
    );
}
