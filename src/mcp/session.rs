//! The MCP sessions a client has open, each an operation in the telemetry pipeline.
//!
//! A session's operation is opened with the pipeline (`Telemetry::open_operation`) when the session
//! is first seen, so a failed call does not end it, and completed once the session is over
//! (deleted, expired, or the client dropped) and every call of it has been recorded: each in-flight call and each open SSE stream
//! holds its session, and the last holder to let go completes the operation. So a stream that
//! outlives the `DELETE` is still counted in the summary, and no call lands after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kasal_trace::OperationId;

use crate::Telemetry;

/// At most this many sessions are tracked per client; past it a session is still recorded and
/// completed when its calls end, it just cannot be found again by id.
const MAX_SESSIONS: usize = 1024;

/// One open session: completes its operation when the last holder drops it.
#[derive(Debug)]
pub(super) struct Session {
    telemetry: Telemetry,
    id: OperationId,
}

impl Session {
    /// The session's operation id (its `Mcp-Session-Id`).
    pub(super) fn operation_id(&self) -> &OperationId {
        &self.id
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.telemetry.complete_operation(&self.id);
    }
}

/// The sessions of one client (shared by its clones).
#[derive(Debug)]
pub(super) struct Sessions {
    telemetry: Telemetry,
    open: Mutex<HashMap<Arc<str>, Arc<Session>>>,
}

impl Sessions {
    pub(super) fn new(telemetry: Telemetry) -> Self {
        Sessions {
            telemetry,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The session `id`, opened if it is new. The lock is held for one map operation.
    pub(super) fn hold(&self, id: &Arc<str>) -> Arc<Session> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(session) = open.get(id) {
            return session.clone();
        }
        let session = Arc::new(Session {
            telemetry: self.telemetry.clone(),
            id: OperationId::new(id.clone()),
        });
        // A failed call (a tool error, a JSON-RPC error) does not end the session: only its
        // end completes the operation, so the session has one summary with every call.
        self.telemetry.open_operation(&session.id);
        if open.len() < MAX_SESSIONS {
            open.insert(id.clone(), session.clone());
        }
        session
    }

    /// Ends session `id`: its operation completes when its last call has been recorded.
    pub(super) fn close(&self, id: &str) {
        let closed = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        // Dropped outside the lock: the last drop sends the completion.
        drop(closed);
    }
}
