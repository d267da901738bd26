//! The public error types of workflow and activity code, replay and the stores.

use crate::ids::{CommandSeq, EventId, FencingToken, RunId, WorkflowId};
use crate::payload::PayloadError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind given to a failure caused by a panic in an activity.
pub const KIND_PANIC: &str = "Panic";
/// The kind of an attempt that ran past its start-to-close timeout.
pub const KIND_TIMEOUT: &str = "StartToCloseTimeout";
/// The kind of an activity that ran past its schedule-to-close timeout.
pub const KIND_SCHEDULE_TIMEOUT: &str = "ScheduleToCloseTimeout";
/// The kind of an attempt that did not heartbeat within its heartbeat timeout.
pub const KIND_HEARTBEAT_TIMEOUT: &str = "HeartbeatTimeout";
/// The kind [`ActivityContext::heartbeat`](crate::ActivityContext::heartbeat) returns once
/// the attempt is no longer current (timed out, superseded, abandoned by the worker).
pub const KIND_ATTEMPT_LOST: &str = "AttemptLost";
/// The kind of a run that ran past its execution timeout.
pub const KIND_EXECUTION_TIMEOUT: &str = "ExecutionTimeout";
/// The kind of a failure to decode an input or output.
pub const KIND_PAYLOAD: &str = "PayloadError";
/// The kind of a run that was cancelled.
pub const KIND_CANCELLED: &str = "Cancelled";
/// The kind of a run ended by a reset (its history goes on in a new run).
pub const KIND_RESET: &str = "Reset";
/// The kind a parent gets when the workflow id it chose for a child run is taken by
/// another run.
pub const KIND_WORKFLOW_ID_IN_USE: &str = "WorkflowIdInUse";
/// The kind a parent gets when the workflow id it chose for a child run is not a valid
/// id (empty, over 1,000 bytes, or with a NUL byte).
pub const KIND_INVALID_WORKFLOW_ID: &str = "InvalidWorkflowId";

/// How an activity attempt failed: a kind (what a workflow matches on), a message, whether
/// the engine may retry it, and optional details.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityError {
    kind: String,
    message: String,
    retryable: bool,
    #[serde(default)]
    details: Option<serde_json::Value>,
    /// How many attempts were made before the failure was final (set by the engine).
    #[serde(default)]
    attempts: u32,
}

impl ActivityError {
    /// A failure the engine may retry (an outage, a timeout, a busy service).
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
            details: None,
            attempts: 0,
        }
    }

    /// A failure no retry can fix (a declined card, an invalid order).
    pub fn non_retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            retryable: false,
            ..Self::retryable(kind, message)
        }
    }

    /// Wraps any error as a retryable failure of kind `Error`.
    pub fn from_error(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Self::retryable("Error", message)
    }

    /// Attaches structured details (any serde value).
    #[must_use]
    pub fn with_details(mut self, details: impl Serialize) -> Self {
        self.details = serde_json::to_value(details).ok();
        self
    }

    /// The error kind, e.g. `"PaymentFailed"`.
    pub fn kind(&self) -> &str {
        &self.kind
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Whether the engine may retry the attempt.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
    /// The structured details, if any.
    pub fn details(&self) -> Option<&serde_json::Value> {
        self.details.as_ref()
    }
    /// The number of attempts made when the failure became final.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    /// True when the kind is `kind`.
    pub fn is(&self, kind: &str) -> bool {
        self.kind == kind
    }

    pub(crate) fn set_attempts(&mut self, attempts: u32) {
        self.attempts = attempts;
    }

    /// The same error with the number of attempts made (the engine sets this when the
    /// failure becomes final).
    #[must_use]
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }
}

impl fmt::Display for ActivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ActivityError {}

impl From<PayloadError> for ActivityError {
    fn from(e: PayloadError) -> Self {
        ActivityError::non_retryable(KIND_PAYLOAD, e.to_string())
    }
}

/// How a run failed: a kind, a message and optional details. An activity failure
/// converts with `?`, keeping its kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowError {
    kind: String,
    message: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

impl WorkflowError {
    /// A failure of the given kind.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        WorkflowError {
            kind: kind.into(),
            message: message.into(),
            details: None,
        }
    }

    /// The failure of a run that was cancelled.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(KIND_CANCELLED, message)
    }

    /// The failure of a run that ran past its execution timeout: kind
    /// `ExecutionTimeout`, message `execution timeout of 30s exceeded`.
    pub fn execution_timeout(timeout: std::time::Duration) -> Self {
        Self::new(
            KIND_EXECUTION_TIMEOUT,
            format!(
                "execution timeout of {} exceeded",
                humantime::format_duration(timeout)
            ),
        )
    }

    /// Attaches structured details.
    #[must_use]
    pub fn with_details(mut self, details: impl Serialize) -> Self {
        self.details = serde_json::to_value(details).ok();
        self
    }

    /// The error kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The structured details, if any.
    pub fn details(&self) -> Option<&serde_json::Value> {
        self.details.as_ref()
    }
    /// True when the kind is `kind`.
    pub fn is(&self, kind: &str) -> bool {
        self.kind == kind
    }
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for WorkflowError {}

impl From<ActivityError> for WorkflowError {
    fn from(e: ActivityError) -> Self {
        WorkflowError {
            kind: e.kind,
            message: e.message,
            details: e.details,
        }
    }
}

impl From<PayloadError> for WorkflowError {
    fn from(e: PayloadError) -> Self {
        WorkflowError::new(KIND_PAYLOAD, e.to_string())
    }
}

/// A short description of a command, for divergence reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSummary {
    /// The command kind, e.g. `ScheduleActivity`.
    pub kind: String,
    /// The activity, signal or marker name, or the timer duration.
    pub name: String,
    /// A digest of the input, when the command has one.
    pub input_digest: Option<String>,
}

impl fmt::Display for CommandSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind, self.name)?;
        if let Some(d) = &self.input_digest {
            write!(f, " (input {d})")?;
        }
        Ok(())
    }
}

/// Replay of a history through workflow code failed. Nothing is appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The code issued a different command than history recorded at the same number.
    #[error("non-determinism at command {seq}: history has {recorded}, the code issued {issued}")]
    Nondeterminism {
        /// The command number.
        seq: CommandSeq,
        /// What history recorded.
        recorded: CommandSummary,
        /// What the code issued now.
        issued: CommandSummary,
    },
    /// History recorded a command the code did not issue by the time it should have.
    #[error(
        "non-determinism at command {seq}: history has {recorded} at event {event}, the code did not issue it"
    )]
    MissingCommand {
        /// The command number.
        seq: CommandSeq,
        /// The event that recorded it.
        event: EventId,
        /// What history recorded.
        recorded: CommandSummary,
    },
    /// The code issued a command where history records none: history goes on with
    /// another event (or ends the run) without it.
    #[error(
        "non-determinism at command {seq}: the code issued {issued}, history has no command there (event {event} is {recorded})"
    )]
    ExtraCommand {
        /// The command number.
        seq: CommandSeq,
        /// The event history has where the command would have been recorded.
        event: EventId,
        /// What the code issued.
        issued: CommandSummary,
        /// The kind of that event, e.g. `RunCompleted`.
        recorded: String,
    },
    /// History records the run as finished, but the code did not finish.
    #[error(
        "non-determinism at event {event}: history says the run {recorded}, the code is still waiting"
    )]
    UnfinishedRun {
        /// The terminal event.
        event: EventId,
        /// "completed", "failed" or "was cancelled".
        recorded: String,
    },
    /// The code finished but history does not end there. Inbound events recorded after
    /// the event the code returned in are not this error when the run's end follows them
    /// in the same activation (the rest of that activation's batch); `event` is then the
    /// first of them.
    #[error("non-determinism at event {event}: the code finished the run, history has {recorded}")]
    EarlyFinish {
        /// The first event the code did not account for.
        event: EventId,
        /// What history has there.
        recorded: String,
    },
    /// The code ended the run another way than history records: it completed where the
    /// run failed, or the reverse.
    #[error("non-determinism at event {event}: history says the run {recorded}, the code {code}")]
    DifferentOutcome {
        /// The terminal event.
        event: EventId,
        /// How history ends the run, e.g. "failed (PaymentDeclined: card expired)".
        recorded: String,
        /// How the code ended it, e.g. "completed".
        code: String,
    },
    /// A recorded payload could not be decoded.
    #[error("history of run {run} is unreadable at event {event}")]
    Corrupt {
        /// The run.
        run: RunId,
        /// The event.
        event: EventId,
        /// Why.
        #[source]
        source: PayloadError,
    },
    /// The history is not well formed (gaps, no start event, an event for an unknown command).
    #[error("history is malformed at event {event}: {reason}")]
    Malformed {
        /// The event.
        event: EventId,
        /// What is wrong.
        reason: String,
    },
    /// The workflow named in history is not registered in this binary.
    #[error("workflow {name:?} is not registered in this binary")]
    UnknownWorkflow {
        /// The name history records.
        name: String,
    },
    /// Workflow code panicked.
    #[error("workflow code panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// Workflow code produced a payload (an activity's input, the run's output) over
    /// the worker's size limit; nothing of the activation is recorded.
    #[error("{what} is {size} bytes, over the payload limit of {limit} bytes")]
    PayloadTooLarge {
        /// Which payload, e.g. "the input of activity charge (command 3)".
        what: String,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl ReplayError {
    /// True for the divergence errors (as opposed to corrupt input or a panic).
    pub fn is_nondeterminism(&self) -> bool {
        matches!(
            self,
            ReplayError::Nondeterminism { .. }
                | ReplayError::MissingCommand { .. }
                | ReplayError::ExtraCommand { .. }
                | ReplayError::UnfinishedRun { .. }
                | ReplayError::EarlyFinish { .. }
                | ReplayError::DifferentOutcome { .. }
        )
    }
}

/// A store operation failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store is busy or locked; the operation may be retried.
    #[error("the store is busy: {0}")]
    Busy(String),
    /// An I/O failure (including a full disk).
    #[error("store i/o error: {0}")]
    Io(String),
    /// Another worker holds the run now: the fencing token is stale. Nothing was written.
    #[error("run {run} is owned by another worker now (fencing token {fence} is stale)")]
    Fenced {
        /// The run.
        run: String,
        /// The stale token.
        fence: FencingToken,
    },
    /// The write conflicts with what is stored (an activity attempt was superseded, a
    /// timer already fired). Nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No run with this id.
    #[error("no run with id '{0}'")]
    NotFound(WorkflowId),
    /// The file is not a durable database.
    #[error("{path} is not a durable database ({reason}); check --db")]
    Foreign {
        /// The file.
        path: String,
        /// What was found instead.
        reason: String,
    },
    /// The database was written by a newer version of durable.
    #[error(
        "{path} has schema version {found}, newer than this binary supports ({supported}); upgrade durable"
    )]
    TooNew {
        /// The file.
        path: String,
        /// The version found.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// Stored data is damaged.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The caller passed something the store refuses (an empty id, a NUL byte...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The run is finished; the operation needs a running run.
    #[error("run '{0}' is already finished")]
    Finished(WorkflowId),
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
    /// No schedule with this id (in this namespace).
    #[error("no schedule with id '{0}'")]
    ScheduleNotFound(String),
    /// A schedule with this id exists already.
    #[error("schedule '{0}' already exists; delete it first or ask to replace it")]
    ScheduleExists(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Other(String),
}

impl StoreError {
    /// True when the same call may succeed if tried again (busy, locked, i/o hiccup).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Busy(_) | StoreError::Io(_))
    }
}
