//! SKELETON: kasal-classify. To be completed (see the owning helper's task).
#![deny(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(missing_docs, rust_2018_idioms)]

mod outcome;

pub use outcome::{Outcome, Reason};
