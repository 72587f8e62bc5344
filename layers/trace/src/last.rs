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
}
