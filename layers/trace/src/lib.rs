//! SKELETON: kasal-trace. To be completed (see the owning helper's task).
#![deny(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(missing_docs, rust_2018_idioms)]

mod context;
mod record;

pub use context::{ExecutionContext, ExecutionMode, OperationId, SecretToken};
pub use record::{CallRecord, Direction, RecordCall};
