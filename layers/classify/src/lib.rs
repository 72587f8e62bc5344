//! SKELETON: kasal-classify. To be completed (see the owning helper's task).
#![deny(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(missing_docs, rust_2018_idioms)]

mod attempts;
mod classify;
mod outcome;

pub use attempts::Attempts;
pub use classify::{Classify, DefaultClassifier};
pub use outcome::{Outcome, Reason};
