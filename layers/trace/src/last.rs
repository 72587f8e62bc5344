//! A per-thread "same as last time" cache: a server sees the same `Host`, caller and route on
//! request after request, and a client calls the same few hosts. Sharing the thread's last value
//! while it repeats saves a parse, an allocation and a copy per call.

use std::cell::RefCell;
use std::thread::LocalKey;

/// The thread's last value in `slot` if `same` says it is the one wanted, else `make()`'s value,
/// which becomes the last one. `None` when `make` gives none (nothing is kept then).
///
/// Never fails: a slot already borrowed (re-entered from `make`) or gone (thread teardown)
/// only means the value is made afresh.
#[inline]
pub(crate) fn shared<T: Clone>(
    slot: &'static LocalKey<RefCell<Option<T>>>,
    same: impl Fn(&T) -> bool,
    make: impl FnOnce() -> Option<T>,
) -> Option<T> {
    let mut make = Some(make);
    let kept = slot
        .try_with(|last| {
            let mut last = last.try_borrow_mut().ok()?;
            if let Some(value) = last.as_ref().filter(|value| same(value)) {
                return Some(value.clone());
            }
            let value = make.take()?()?;
            *last = Some(value.clone());
            Some(value)
        })
        .ok()
        .flatten();
    // `make` is still here only if the slot could not be used.
    kept.or_else(|| make.take().and_then(|make| make()))
}

/// A thread's last text whose answer was kept, and that answer: the slot of [`answer`].
pub(crate) struct LastText<T> {
    text: String,
    answer: Option<T>,
}

impl<T> LastText<T> {
    /// Nothing kept yet.
    pub(crate) const fn new() -> Self {
        LastText {
            text: String::new(),
            answer: None,
        }
    }

    /// The text kept, if an answer is.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> Option<&str> {
        self.answer.as_ref().map(|_| self.text.as_str())
    }
}

/// What `text` gives: from the thread's kept answer (handed to `hit`) when `text` is the last
/// text kept in `slot`, else `work()`'s result, whose second part, if any, is kept with `text`
/// (a text of at most `max` bytes). For answers that cost a read of the text (a redaction, a
/// table walk) on inputs that repeat call after call. The text stays in the thread: keep an
/// answer only for a text known to hold no secret.
///
/// Never fails: a slot already borrowed or gone only means `work` runs.
#[inline]
pub(crate) fn answer<T: Copy, R>(
    slot: &'static LocalKey<RefCell<LastText<T>>>,
    text: &str,
    max: usize,
    hit: impl FnOnce(T) -> R,
    work: impl FnOnce() -> (R, Option<T>),
) -> R {
    if text.len() > max {
        return work().0;
    }
    let kept = slot
        .try_with(|last| {
            let last = last.try_borrow().ok()?;
            last.answer.filter(|_| last.text == text)
        })
        .ok()
        .flatten();
    if let Some(answer) = kept {
        return hit(answer);
    }
    let (result, keep) = work();
    if let Some(answer) = keep {
        let _ = slot.try_with(|last| {
            if let Ok(mut last) = last.try_borrow_mut() {
                last.text.clear();
                last.text.push_str(text);
                last.answer = Some(answer);
            }
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    #[test]
    fn repeats_are_shared_and_changes_replace_the_last_value() {
        let mut made = 0;
        let mut get = |text: &str| {
            shared(
                &SLOT,
                |last| last == text,
                || {
                    made += 1;
                    (!text.is_empty()).then(|| text.to_owned())
                },
            )
        };
        assert_eq!(get("a").as_deref(), Some("a"));
        assert_eq!(get("a").as_deref(), Some("a"));
        assert_eq!(get("b").as_deref(), Some("b"));
        // Nothing made is nothing kept: "b" stays the last value.
        assert_eq!(get(""), None);
        assert_eq!(get("b").as_deref(), Some("b"));
        assert_eq!(made, 3);
    }

    #[test]
    fn a_busy_slot_makes_the_value_afresh() {
        let outer = shared(
            &SLOT,
            |_| false,
            || {
                // Re-entered while the slot is borrowed: made without the cache.
                let inner = shared(&SLOT, |_| true, || Some("inner".to_owned()));
                assert_eq!(inner.as_deref(), Some("inner"));
                Some("outer".to_owned())
            },
        );
        assert_eq!(outer.as_deref(), Some("outer"));
        assert_eq!(
            SLOT.with(|slot| slot.borrow().clone()).as_deref(),
            Some("outer")
        );
    }

    thread_local! {
        static TEXT: RefCell<LastText<usize>> = const { RefCell::new(LastText::new()) };
    }

    #[test]
    fn a_kept_answer_serves_only_the_same_text() {
        let mut worked = 0;
        let mut len_if_short = |text: &str| {
            answer(
                &TEXT,
                text,
                8,
                |kept| (kept, true),
                || {
                    worked += 1;
                    (
                        (text.len(), false),
                        (!text.contains('!')).then_some(text.len()),
                    )
                },
            )
        };
        assert_eq!(len_if_short("abc"), (3, false));
        assert_eq!(len_if_short("abc"), (3, true));
        // An answer not kept (`!`) leaves the last one kept.
        assert_eq!(len_if_short("ab!"), (3, false));
        assert_eq!(len_if_short("ab!"), (3, false));
        assert_eq!(
            TEXT.with(|t| t.borrow().kept().map(str::to_owned))
                .as_deref(),
            Some("abc")
        );
        // Longer than `max`: worked out each time, never kept.
        assert_eq!(len_if_short("abcdefghij"), (10, false));
        assert_eq!(len_if_short("abcdefghij"), (10, false));
        assert_eq!(len_if_short("abc"), (3, true));
        assert_eq!(worked, 5);
    }
}
