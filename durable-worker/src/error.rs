//! Errors of the worker and the client.

use durable_core::error::{StoreError, WorkflowError};
use durable_core::ids::WorkflowId;
use durable_core::payload::PayloadError;

/// The worker stopped because of a failure it cannot retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The store failed.
    #[error("store failed")]
    Store(#[from] StoreError),
    /// A bug in the worker itself.
    #[error("internal worker error: {0}")]
    Internal(String),
}

/// A client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A payload could not be encoded or decoded.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// No run with this id.
    #[error("no run with id '{0}'")]
    NotFound(WorkflowId),
    /// The run failed.
    #[error("run '{id}' failed: {error}")]
    Failed {
        /// The workflow id.
        id: WorkflowId,
        /// Its error.
        error: WorkflowError,
    },
    /// The run is suspended (an activation failed) and needs `retry` after a fix.
    #[error("run '{id}' is suspended: {reason}")]
    Suspended {
        /// The workflow id.
        id: WorkflowId,
        /// Why.
        reason: String,
    },
    /// The wait ran out before the run finished.
    #[error("run '{0}' did not finish in time")]
    Timeout(WorkflowId),
    /// A run with this id exists but is of another workflow.
    #[error("run '{id}' is a run of workflow {existing:?}, not {requested:?}")]
    WorkflowMismatch {
        /// The workflow id.
        id: WorkflowId,
        /// The workflow of the existing run.
        existing: String,
        /// The workflow asked for.
        requested: String,
    },
    /// The workflow name is not known to this binary.
    #[error("unknown workflow {name:?}; this binary has: {known}")]
    UnknownWorkflow {
        /// The name given.
        name: String,
        /// The registered names.
        known: String,
    },
}
