//! What goes through the queue from the handles to the aggregator: a leaf module, imported by
//! both sides (as `tower::buffer::message`).

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::event::CallRecord;
use kasal_trace::OperationId;

/// Everything that needs ordering.
#[derive(Debug)]
// Nearly every message is a call: boxing the record would allocate once per call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Message {
    /// A call with an operation id.
    Call(CallRecord),
    /// `complete_operation`.
    Complete(OperationId),
    /// `open_operation`.
    Open(OperationId),
    /// `flush()`: answered once everything before it reached the exporter.
    Flush(oneshot::Sender<()>),
    /// `shutdown()`: answered once everything is exported or the deadline passed.
    Shutdown {
        deadline: Instant,
        done: oneshot::Sender<()>,
    },
}
