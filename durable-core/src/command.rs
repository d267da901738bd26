//! Commands: what workflow code asks the engine for, numbered in issue order.

use crate::error::CommandSummary;
use crate::event::{ActivityOptions, ChildOptions, EventKind};
use crate::ids::{CommandSeq, WorkflowId};
use crate::payload::Payload;

/// A request from workflow code, recorded as the matching event.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Run an activity.
    ScheduleActivity {
        /// The activity name.
        name: String,
        /// The encoded input.
        input: Payload,
        /// Retries, timeouts, queue.
        options: ActivityOptions,
    },
    /// Start a durable timer.
    StartTimer {
        /// How long, in milliseconds.
        duration_ms: u64,
    },
    /// Wait for a named signal.
    WaitSignal {
        /// The signal name.
        name: String,
    },
    /// Start a child run and wait for its outcome.
    StartChild {
        /// The child's registered workflow name.
        workflow: String,
        /// The child's workflow id.
        workflow_id: WorkflowId,
        /// The encoded input.
        input: Payload,
        /// The seed of the child's random source.
        seed: u64,
        /// Cancellation policy and execution timeout.
        options: ChildOptions,
    },
    /// Record a value (random, uuid, side effect, patch).
    RecordMarker {
        /// The marker name.
        name: String,
        /// The value.
        value: Payload,
    },
}

impl Command {
    /// The event that records this command under number `seq`.
    pub fn into_event(self, seq: CommandSeq) -> EventKind {
        match self {
            Command::ScheduleActivity {
                name,
                input,
                options,
            } => EventKind::ActivityScheduled {
                seq,
                name,
                input,
                options,
            },
            Command::StartTimer { duration_ms } => EventKind::TimerStarted { seq, duration_ms },
            Command::WaitSignal { name } => EventKind::SignalAwaited { seq, name },
            Command::RecordMarker { name, value } => EventKind::MarkerRecorded { seq, name, value },
            Command::StartChild {
                workflow,
                workflow_id,
                input,
                seed,
                options,
            } => EventKind::ChildStarted {
                seq,
                workflow,
                workflow_id,
                input,
                seed,
                options,
            },
        }
    }

    /// Whether `recorded` (a command event of history) records this command: the same
    /// kind, name and input (activity, child run), duration (timer), signal name or
    /// marker name. A child's workflow id, seed and options are not compared: the
    /// recorded ones stand.
    /// The same test as comparing [`Command::summary`] with the event's summary, without
    /// allocating.
    pub fn matches(&self, recorded: &EventKind) -> bool {
        match (self, recorded) {
            (
                Command::ScheduleActivity { name, input, .. },
                EventKind::ActivityScheduled {
                    name: n, input: i, ..
                },
            ) => name == n && input == i,
            (
                Command::StartChild {
                    workflow, input, ..
                },
                EventKind::ChildStarted {
                    workflow: w,
                    input: i,
                    ..
                },
            ) => workflow == w && input == i,
            (
                Command::StartTimer { duration_ms },
                EventKind::TimerStarted { duration_ms: d, .. },
            ) => duration_ms == d,
            (Command::WaitSignal { name }, EventKind::SignalAwaited { name: n, .. })
            | (Command::RecordMarker { name, .. }, EventKind::MarkerRecorded { name: n, .. }) => {
                name == n
            }
            _ => false,
        }
    }

    /// The summary compared against history during replay.
    pub fn summary(&self) -> CommandSummary {
        self.clone()
            .into_event(CommandSeq(0))
            .command_summary()
            .expect("every command maps to a command event")
    }
}
