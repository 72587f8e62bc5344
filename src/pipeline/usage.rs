//! Model token usage summed per (product, model) over the current window, on the caller's side,
//! with each call's input and output tokens in a [`TokenHistogram`] (a few adds per call).
//!
//! Model calls are slow (hundreds of milliseconds each) and few, so one short-held mutex is
//! enough; nothing is queued for them. The aggregator drains the table when it closes a window,
//! so each report lands in exactly one `UsageRollup`. Must never: hold the lock across anything
//! but a hash-map update, or grow without bound (past `MAX_MODELS` keys, new models fold into
//! the product's [`OTHER_MODEL`] key).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use kasal_trace::Usage;
use kasal_user_agent::Product;

use crate::event::{TokenHistogram, UsageRollup};

/// Distinct (product, model) keys per window.
pub(crate) const MAX_MODELS: usize = 512;

/// The model of usage reported without one.
pub(crate) const UNKNOWN_MODEL: &str = "unknown";

/// The model of usage whose key did not fit in the table.
pub(crate) const OTHER_MODEL: &str = "other";

#[derive(Debug, Default)]
pub(crate) struct UsageTable {
    sums: Mutex<Sums>,
}

/// Per product, per model: calls, tokens and per-call histograms. The entry folded into last
/// is checked first, without hashing (a process mostly calls one model at a time); others are
/// found by reference through the index, without allocating.
#[derive(Debug, Default)]
struct Sums {
    /// Every (product, model) of the window, with its sums.
    entries: Vec<Entry>,
    /// Where each key's entry is.
    index: HashMap<Product, HashMap<Arc<str>, usize>>,
    /// The entry folded into last.
    last: usize,
}

#[derive(Debug)]
struct Entry {
    product: Product,
    model: Arc<str>,
    sum: Sum,
}

/// One (product, model)'s window so far.
#[derive(Debug, Default)]
struct Sum {
    calls: u64,
    usage: Usage,
    input: TokenHistogram,
    output: TokenHistogram,
}

impl UsageTable {
    /// Adds one call's usage: one call, its tokens, and its input and output counts to the
    /// histograms (a type the call reported none of, like an embedding's output, adds no value).
    pub(crate) fn fold(&self, product: &Product, model: Option<&Arc<str>>, usage: Usage) {
        let model = model.map_or(UNKNOWN_MODEL, |model| &**model);
        let mut guard = self.sums.lock().unwrap_or_else(PoisonError::into_inner);
        let sums = &mut *guard;
        let at = match sums.entries.get(sums.last) {
            Some(entry) if entry.product == *product && *entry.model == *model => sums.last,
            _ => sums.find_or_insert(product, model),
        };
        sums.last = at;
        let Some(Entry { sum, .. }) = sums.entries.get_mut(at) else {
            return;
        };
        sum.calls += 1;
        sum.usage += usage;
        if usage.input_tokens > 0 {
            sum.input.add(usage.input_tokens);
        }
        if usage.output_tokens > 0 {
            sum.output.add(usage.output_tokens);
        }
    }

    /// Takes the window's sums.
    pub(crate) fn drain(
        &self,
        window_start: SystemTime,
        window_end: SystemTime,
    ) -> Vec<UsageRollup> {
        let sums = std::mem::take(&mut *self.sums.lock().unwrap_or_else(PoisonError::into_inner));
        sums.entries
            .into_iter()
            .map(
                |Entry {
                     product,
                     model,
                     sum,
                 }| UsageRollup {
                    product,
                    model,
                    window_start,
                    window_end,
                    calls: sum.calls,
                    usage: sum.usage,
                    input_histogram: sum.input,
                    output_histogram: sum.output,
                },
            )
            .collect()
    }
}

impl Sums {
    /// The entry of (product, model), added if new: past [`MAX_MODELS`] keys, a new model
    /// is the product's [`OTHER_MODEL`].
    fn find_or_insert(&mut self, product: &Product, model: &str) -> usize {
        if !self.index.contains_key(product) {
            self.index.insert(product.clone(), HashMap::new());
        }
        let Some(models) = self.index.get_mut(product) else {
            return usize::MAX;
        };
        if let Some(&at) = models.get(model) {
            return at;
        }
        let model = if self.entries.len() < MAX_MODELS {
            model
        } else {
            OTHER_MODEL
        };
        if let Some(&at) = models.get(model) {
            return at;
        }
        let model: Arc<str> = Arc::from(model);
        let at = self.entries.len();
        models.insert(model.clone(), at);
        self.entries.push(Entry {
            product: product.clone(),
            model,
            sum: Sum::default(),
        });
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_product_and_model_and_bounds_keys() {
        let table = UsageTable::default();
        let m: Arc<str> = Arc::from("m");
        table.fold(&Product::Llm, Some(&m), Usage::new(1, 2));
        table.fold(&Product::Llm, Some(&m), Usage::new(3, 4));
        table.fold(&Product::Agent, Some(&m), Usage::new(5, 6));
        table.fold(&Product::Llm, None, Usage::new(7, 8));
        let now = SystemTime::now();
        let mut rollups = table.drain(now, now);
        rollups.sort_by(|a, b| (a.product.as_str(), &a.model).cmp(&(b.product.as_str(), &b.model)));
        let got: Vec<_> = rollups
            .iter()
            .map(|r| {
                (
                    r.product.as_str(),
                    &*r.model,
                    r.calls,
                    r.usage.input_tokens,
                    r.usage.output_tokens,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("agent", "m", 1, 5, 6),
                ("llm", "m", 2, 4, 6),
                ("llm", "unknown", 1, 7, 8)
            ]
        );
        let llm = &rollups[1];
        assert_eq!(
            (llm.input_histogram.count(), llm.input_histogram.sum),
            (2, 4)
        );
        assert_eq!((llm.input_histogram.min, llm.input_histogram.max), (1, 3));
        // 1 in [0, 1], 3 in (1, 4]; 2 and 4 both in (1, 4].
        assert_eq!(llm.input_histogram.buckets[..2], [1, 1]);
        assert_eq!(llm.output_histogram.buckets[1], 2);
        assert_eq!(llm.output_histogram.count(), 2);
        assert!(table.drain(now, now).is_empty());

        // A call without output tokens (an embedding) adds no output value.
        table.fold(&Product::Embedding, Some(&m), Usage::new(10, 0));
        table.fold(&Product::Embedding, Some(&m), Usage::new(1000, 0));
        let embedding = &table.drain(now, now)[0];
        assert_eq!(embedding.calls, 2);
        assert!(embedding.output_histogram.is_empty());
        let input = embedding.input_histogram;
        assert_eq!(
            (input.count(), input.sum, input.min, input.max),
            (2, 1010, 10, 1000)
        );
        assert_eq!((input.buckets[2], input.buckets[5]), (1, 1));

        for i in 0..MAX_MODELS + 10 {
            table.fold(
                &Product::Llm,
                Some(&Arc::from(format!("m{i}"))),
                Usage::new(1, 0),
            );
        }
        let rollups = table.drain(now, now);
        assert_eq!(rollups.len(), MAX_MODELS + 1);
        let other = rollups.iter().find(|r| &*r.model == OTHER_MODEL).unwrap();
        assert_eq!(other.calls, 10);
        assert_eq!(
            rollups.iter().map(|r| r.calls).sum::<u64>(),
            (MAX_MODELS + 10) as u64
        );
    }
}
