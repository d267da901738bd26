//! Events: the vocabulary of a run's history.

use crate::error::{ActivityError, CommandSummary, WorkflowError};
use crate::ids::{CommandSeq, EventId, RunId, WorkflowId};
use crate::payload::Payload;
use crate::retry::RetryPolicy;
use serde::{Deserialize, Serialize};

/// How an activity call is executed: retries, timeouts and the task queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityOptions {
    /// The retry policy; the engine's default when not set.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Timeout of each attempt, in milliseconds.
    #[serde(default)]
    pub start_to_close_ms: Option<u64>,
    /// Timeout of all attempts together, in milliseconds.
    #[serde(default)]
    pub schedule_to_close_ms: Option<u64>,
    /// An attempt that does not heartbeat for this long is considered lost.
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
    /// The task queue; `None` is the default queue.
    #[serde(default)]
    pub task_queue: Option<String>,
}

/// What happens to a child run when its parent is cancelled, or finishes while the child
/// still runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildCancelPolicy {
    /// Ask the child to cancel, and its own children by their policies (the default).
    #[default]
    RequestCancel,
    /// Leave the child running: it finishes on its own and nobody waits for it.
    Abandon,
}

impl ChildCancelPolicy {
    /// The stored and shown name: `request_cancel` or `abandon`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildCancelPolicy::RequestCancel => "request_cancel",
            ChildCancelPolicy::Abandon => "abandon",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "request_cancel" => Some(ChildCancelPolicy::RequestCancel),
            "abandon" => Some(ChildCancelPolicy::Abandon),
            _ => None,
        }
    }
}

impl std::fmt::Display for ChildCancelPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a child run is started: what its parent's cancellation does to it, its own
/// execution timeout and its workflow task queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChildOptions {
    /// What the parent's cancellation (or end) does to the child.
    #[serde(default)]
    pub cancel_policy: ChildCancelPolicy,
    /// The child's execution timeout, in milliseconds; none when not set.
    #[serde(default)]
    pub execution_timeout_ms: Option<u64>,
    /// The child's workflow task queue (empty: the default queue); none: its parent's.
    /// Routing only, like an activity's queue: not compared on replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_queue: Option<String>,
}

/// One entry of a run's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event number, from 1.
    pub id: EventId,
    /// When the event was recorded, in milliseconds since the Unix epoch. For inbound
    /// events this is what `ctx.now()` returns while the event is applied.
    pub time_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

/// What an event records. Past tense: each is a fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// The run was started with this input.
    RunStarted {
        /// The registered workflow name.
        workflow: String,
        /// The encoded input.
        input: Payload,
        /// The seed of the run's random source.
        seed: u64,
    },
    /// The code scheduled an activity (a command).
    ActivityScheduled {
        /// The command number.
        seq: CommandSeq,
        /// The activity name.
        name: String,
        /// The encoded input.
        input: Payload,
        /// Retries, timeouts, task queue.
        options: ActivityOptions,
    },
    /// An activity attempt succeeded (inbound).
    ActivityCompleted {
        /// The command number of the schedule.
        seq: CommandSeq,
        /// The encoded output.
        output: Payload,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// An activity failed for good: not retryable, or out of attempts (inbound).
    ActivityFailed {
        /// The command number of the schedule.
        seq: CommandSeq,
        /// The last attempt's error.
        error: ActivityError,
    },
    /// The code started a durable timer (a command).
    TimerStarted {
        /// The command number.
        seq: CommandSeq,
        /// How long, in milliseconds.
        duration_ms: u64,
    },
    /// A timer fired (inbound).
    TimerFired {
        /// The command number of the timer.
        seq: CommandSeq,
    },
    /// The code started waiting for a signal (a command).
    SignalAwaited {
        /// The command number.
        seq: CommandSeq,
        /// The signal name.
        name: String,
    },
    /// A signal arrived (inbound).
    SignalReceived {
        /// The signal name.
        name: String,
        /// The encoded body.
        payload: Payload,
    },
    /// The code recorded a value: a random number, a uuid, a side effect, a patch (a command).
    MarkerRecorded {
        /// The command number.
        seq: CommandSeq,
        /// What kind of marker, e.g. `random`, `uuid`, `side_effect:label`, `patch:id`.
        name: String,
        /// The recorded value.
        value: Payload,
    },
    /// The code started a child run (a command). The store creates the child in the
    /// same transaction that records this event.
    ChildStarted {
        /// The command number.
        seq: CommandSeq,
        /// The child's registered workflow name.
        workflow: String,
        /// The child's workflow id.
        workflow_id: WorkflowId,
        /// The child's encoded input.
        input: Payload,
        /// The seed of the child's random source.
        seed: u64,
        /// Cancellation policy and execution timeout.
        options: ChildOptions,
    },
    /// A child run completed with this output (inbound).
    ChildCompleted {
        /// The command number of the child's start.
        seq: CommandSeq,
        /// The child's encoded output.
        output: Payload,
    },
    /// A child run failed, timed out, was cancelled or reset, or could not start
    /// (inbound).
    ChildFailed {
        /// The command number of the child's start.
        seq: CommandSeq,
        /// The child's error: its kind and message as the child ended with them.
        error: WorkflowError,
    },
    /// Somebody asked the run to cancel (inbound).
    CancelRequested {
        /// Why, as given by the caller.
        reason: String,
    },
    /// The run ran past its execution timeout (inbound, recorded by the store, which
    /// records the run's `RunFailed` right after it): the code is stopped where it
    /// waits.
    RunTimedOut {
        /// The run's execution timeout, in milliseconds.
        timeout_ms: u64,
    },
    /// The run finished with this output.
    RunCompleted {
        /// The encoded output.
        output: Payload,
    },
    /// The run finished with this error.
    RunFailed {
        /// The error.
        error: WorkflowError,
    },
    /// The code ended the run with `ctx.continue_as_new(..)`: the run is over (status
    /// `continued`), and the store started, in the same transaction, the run `run_id` of
    /// the same workflow id with this workflow and input and an empty history.
    RunContinuedAsNew {
        /// The workflow of the new run (usually the same).
        workflow: String,
        /// The encoded input of the new run.
        input: Payload,
        /// The seed of the new run's random source.
        seed: u64,
        /// The new run's id.
        run_id: RunId,
        /// Signals this run received that the code had not taken when it continued, by
        /// name in arrival order: they are delivered to the new run first.
        #[serde(default)]
        signals: Vec<(String, Payload)>,
    },
}

impl EventKind {
    /// The kind's name, as stored and shown: `ActivityCompleted`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "RunStarted",
            EventKind::ActivityScheduled { .. } => "ActivityScheduled",
            EventKind::ActivityCompleted { .. } => "ActivityCompleted",
            EventKind::ActivityFailed { .. } => "ActivityFailed",
            EventKind::TimerStarted { .. } => "TimerStarted",
            EventKind::TimerFired { .. } => "TimerFired",
            EventKind::SignalAwaited { .. } => "SignalAwaited",
            EventKind::SignalReceived { .. } => "SignalReceived",
            EventKind::MarkerRecorded { .. } => "MarkerRecorded",
            EventKind::ChildStarted { .. } => "ChildStarted",
            EventKind::ChildCompleted { .. } => "ChildCompleted",
            EventKind::ChildFailed { .. } => "ChildFailed",
            EventKind::CancelRequested { .. } => "CancelRequested",
            EventKind::RunTimedOut { .. } => "RunTimedOut",
            EventKind::RunCompleted { .. } => "RunCompleted",
            EventKind::RunFailed { .. } => "RunFailed",
            EventKind::RunContinuedAsNew { .. } => "RunContinuedAsNew",
        }
    }

    /// The command number this event records or answers, if any.
    pub fn seq(&self) -> Option<CommandSeq> {
        match self {
            EventKind::ActivityScheduled { seq, .. }
            | EventKind::ActivityCompleted { seq, .. }
            | EventKind::ActivityFailed { seq, .. }
            | EventKind::TimerStarted { seq, .. }
            | EventKind::TimerFired { seq }
            | EventKind::SignalAwaited { seq, .. }
            | EventKind::MarkerRecorded { seq, .. }
            | EventKind::ChildStarted { seq, .. }
            | EventKind::ChildCompleted { seq, .. }
            | EventKind::ChildFailed { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// True for events that record a command the code issued.
    pub fn is_command(&self) -> bool {
        matches!(
            self,
            EventKind::ActivityScheduled { .. }
                | EventKind::TimerStarted { .. }
                | EventKind::SignalAwaited { .. }
                | EventKind::MarkerRecorded { .. }
                | EventKind::ChildStarted { .. }
        )
    }

    /// True for events the workflow is activated by (everything from outside the code).
    pub fn is_inbound(&self) -> bool {
        matches!(
            self,
            EventKind::RunStarted { .. }
                | EventKind::ActivityCompleted { .. }
                | EventKind::ActivityFailed { .. }
                | EventKind::TimerFired { .. }
                | EventKind::SignalReceived { .. }
                | EventKind::ChildCompleted { .. }
                | EventKind::ChildFailed { .. }
                | EventKind::CancelRequested { .. }
                | EventKind::RunTimedOut { .. }
        )
    }

    /// True for the events that end a run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::RunCompleted { .. }
                | EventKind::RunFailed { .. }
                | EventKind::RunContinuedAsNew { .. }
        )
    }

    /// The activity, timer, signal or marker name, for listings.
    pub fn label(&self) -> Option<String> {
        match self {
            EventKind::RunStarted { workflow, .. } => Some(workflow.clone()),
            EventKind::ChildStarted {
                workflow,
                workflow_id,
                ..
            } => Some(format!("{workflow} {workflow_id}")),
            EventKind::ChildFailed { error, .. } => Some(error.kind().to_owned()),
            EventKind::ActivityScheduled { name, .. }
            | EventKind::SignalAwaited { name, .. }
            | EventKind::SignalReceived { name, .. }
            | EventKind::MarkerRecorded { name, .. } => Some(name.clone()),
            EventKind::TimerStarted { duration_ms, .. } => Some(format!("{duration_ms}ms")),
            EventKind::RunTimedOut { timeout_ms } => Some(format!("{timeout_ms}ms")),
            EventKind::ActivityFailed { error, .. } => Some(error.kind().to_owned()),
            EventKind::RunFailed { error } => Some(error.kind().to_owned()),
            EventKind::RunContinuedAsNew {
                workflow, run_id, ..
            } => Some(format!("{workflow} as run {run_id}")),
            _ => None,
        }
    }

    /// The summary used to compare a recorded command with an issued one.
    pub fn command_summary(&self) -> Option<CommandSummary> {
        let (kind, name, digest) = match self {
            EventKind::ActivityScheduled { name, input, .. } => {
                ("ScheduleActivity", name.clone(), Some(input.digest()))
            }
            EventKind::TimerStarted { duration_ms, .. } => {
                ("StartTimer", format!("{duration_ms}ms"), None)
            }
            EventKind::SignalAwaited { name, .. } => ("WaitSignal", name.clone(), None),
            EventKind::MarkerRecorded { name, .. } => ("RecordMarker", name.clone(), None),
            EventKind::ChildStarted {
                workflow, input, ..
            } => ("StartChild", workflow.clone(), Some(input.digest())),
            _ => return None,
        };
        Some(CommandSummary {
            kind: kind.to_owned(),
            name,
            input_digest: digest,
        })
    }
}
