//! Replay: running workflow code against a recorded history.
//!
//! [`restore`] is what a worker does after a crash or an eviction, and what
//! [`Replayer`] does for a developer or a test: the same function, with no tokio and no
//! database, so a breakpoint in the workflow body stops there during a replay.

use crate::command::Command;
use crate::error::{ReplayError, WorkflowError};
use crate::event::{Event, EventKind};
use crate::executor::{RunIdentity, RunMachine};
use crate::ids::{CommandSeq, EventId};
use crate::payload::Payload;
use crate::registry::{ErasedWorkflow, Registry};

/// Rebuilds a run's machine by replaying its recorded history through the code.
///
/// # Errors
///
/// A [`ReplayError`] at the first divergence, malformed event or panic.
pub fn restore(
    workflow: &dyn ErasedWorkflow,
    identity: RunIdentity,
    history: &[Event],
) -> Result<RunMachine, ReplayError> {
    let first = history.first().ok_or(ReplayError::Malformed {
        event: EventId(1),
        reason: "the history is empty".into(),
    })?;
    let mut machine = RunMachine::new(workflow, identity, first)?;
    machine.preload(history);
    machine.set_replaying(true);
    for event in history {
        machine.apply(event)?;
    }
    machine.set_replaying(false);
    Ok(machine)
}

/// How a replay ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayOutcome {
    /// The history records the run's completion and the code completed the same way.
    Completed(Payload),
    /// The history records the run's failure and the code failed too.
    Failed(WorkflowError),
    /// The run is still in flight: the code is waiting on these commands.
    Waiting(Vec<CommandSeq>),
    /// The code would now issue commands (or finish) that history does not hold yet,
    /// which a worker would append.
    WouldContinue {
        /// The new commands.
        commands: Vec<(CommandSeq, Command)>,
        /// The outcome the code reached, if it finished.
        finished: Option<Result<Payload, WorkflowError>>,
    },
}

/// The result of a clean replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    /// The workflow name.
    pub workflow: String,
    /// Events replayed.
    pub events: usize,
    /// How it ended.
    pub outcome: ReplayOutcome,
}

/// Replays histories against the workflows of a [`Registry`], e.g. in a test that
/// guards saved production histories against incompatible code changes.
#[derive(Debug, Clone)]
pub struct Replayer {
    registry: Registry,
}

impl Replayer {
    /// A replayer for the workflows of `registry`.
    pub fn new(registry: Registry) -> Self {
        Replayer { registry }
    }

    /// Replays one history.
    ///
    /// # Errors
    ///
    /// [`ReplayError::UnknownWorkflow`] when the workflow is not registered, otherwise
    /// the first divergence, malformed event or panic.
    pub fn replay(
        &self,
        identity: RunIdentity,
        history: &[Event],
    ) -> Result<ReplayReport, ReplayError> {
        let name = match history.first().map(|e| &e.kind) {
            Some(EventKind::RunStarted { workflow, .. }) => workflow.clone(),
            Some(other) => {
                return Err(ReplayError::Malformed {
                    event: history[0].id,
                    reason: format!("history starts with {}, not RunStarted", other.name()),
                });
            }
            None => {
                return Err(ReplayError::Malformed {
                    event: EventId(1),
                    reason: "the history is empty".into(),
                });
            }
        };
        let workflow = self
            .registry
            .find_workflow(&name)
            .ok_or_else(|| ReplayError::UnknownWorkflow { name: name.clone() })?;
        let mut machine = restore(workflow.as_ref(), identity, history)?;
        let terminal = history.last().filter(|e| e.kind.is_terminal());
        let commands = machine.take_commands();
        let finished = machine.take_outcome();
        let outcome = match (terminal, machine.outcome()) {
            (Some(_), Some(Ok(out))) => ReplayOutcome::Completed(out.clone()),
            (Some(_), Some(Err(e))) => ReplayOutcome::Failed(e.clone()),
            _ if !commands.is_empty() || finished.is_some() => ReplayOutcome::WouldContinue {
                commands,
                finished,
            },
            _ => ReplayOutcome::Waiting(machine.pending()),
        };
        Ok(ReplayReport {
            workflow: name,
            events: history.len(),
            outcome,
        })
    }
}
