//! Replay: running workflow code against a recorded history.
//!
//! [`restore`] is what a worker does after a crash or an eviction, and what
//! [`Replayer`] does for a developer or a test: the same function, with no tokio and no
//! database, so a breakpoint in the workflow body stops there during a replay.

use crate::command::Command;
use crate::error::{ReplayError, WorkflowError};
use crate::event::{Event, EventKind};
use crate::executor::{ContinuedAsNew, RunIdentity, RunMachine};
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
    machine.check_history_end()?;
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
    /// The history records that the run continued as new, and the code asked for the
    /// same workflow and input.
    ContinuedAsNew(ContinuedAsNew),
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
    /// The code would now continue as new, which history does not hold yet (after any
    /// new `commands`).
    WouldContinueAsNew {
        /// The new commands.
        commands: Vec<(CommandSeq, Command)>,
        /// The run the code continues as.
        next: ContinuedAsNew,
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
        let continues = machine.take_continue_as_new();
        let outcome = match (terminal, machine.outcome()) {
            (Some(_), Some(Ok(out))) => ReplayOutcome::Completed(out.clone()),
            (Some(_), Some(Err(e))) => ReplayOutcome::Failed(e.clone()),
            (Some(_), None) if machine.continued_as_new().is_some() => {
                ReplayOutcome::ContinuedAsNew(
                    machine
                        .continued_as_new()
                        .cloned()
                        .expect("checked just above"),
                )
            }
            (None, _) if continues.is_some() => ReplayOutcome::WouldContinueAsNew {
                commands,
                next: continues.expect("checked just above"),
            },
            _ if !commands.is_empty() || finished.is_some() => {
                ReplayOutcome::WouldContinue { commands, finished }
            }
            _ => ReplayOutcome::Waiting(machine.pending()),
        };
        Ok(ReplayReport {
            workflow: name,
            events: history.len(),
            outcome,
        })
    }
}

/// A history file that did not replay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayFileError {
    /// The file could not be read or is not a well-formed history.
    #[error(transparent)]
    File(#[from] crate::history::HistoryFileError),
    /// The code diverged from the history, or could not run it.
    #[error("{path}: {source}")]
    Replay {
        /// The file.
        path: String,
        /// The divergence.
        #[source]
        source: ReplayError,
        /// The events around the divergence, diff style.
        report: String,
    },
}

impl Replayer {
    /// Replays one history file (see [`crate::history::HistoryFile`]).
    ///
    /// # Errors
    ///
    /// [`ReplayFileError::File`] for an unreadable or malformed file,
    /// [`ReplayFileError::Replay`] with a report when the code diverges.
    pub fn replay_file(&self, path: &std::path::Path) -> Result<ReplayReport, ReplayFileError> {
        let file = crate::history::HistoryFile::read(path)?;
        let identity = RunIdentity {
            workflow_id: file.workflow_id.clone(),
            run_id: file.run_id.clone(),
        };
        self.replay(identity, &file.events)
            .map_err(|source| ReplayFileError::Replay {
                path: path.display().to_string(),
                report: divergence_report(&file.events, &source),
                source,
            })
    }

    /// Replays every `*.json` history file in a folder, in name order; returns each
    /// file's outcome, so a test can assert that all of them replay.
    ///
    /// # Errors
    ///
    /// An I/O error when the folder cannot be listed.
    pub fn replay_dir(
        &self,
        dir: &std::path::Path,
    ) -> std::io::Result<Vec<(std::path::PathBuf, Result<ReplayReport, ReplayFileError>)>> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        Ok(paths
            .into_iter()
            .map(|p| {
                let r = self.replay_file(&p);
                (p, r)
            })
            .collect())
    }
}

fn event_line(e: &Event) -> String {
    let seq = e.kind.seq().map(|s| format!(" #{s}")).unwrap_or_default();
    let label = e.kind.label().map(|l| format!(" {l}")).unwrap_or_default();
    format!("{:>5}  {}{seq}{label}", e.id.0, e.kind.name())
}

/// The events around a divergence, diff style: `-` marks what history recorded, `+` what
/// the code did instead, two spaces the unchanged context.
pub fn divergence_report(history: &[Event], err: &ReplayError) -> String {
    let (center, issued): (Option<EventId>, Option<String>) = match err {
        ReplayError::Nondeterminism { seq, issued, .. } => (
            history
                .iter()
                .find(|e| e.kind.is_command() && e.kind.seq() == Some(*seq))
                .map(|e| e.id),
            Some(format!("{issued} (command {seq})")),
        ),
        ReplayError::ExtraCommand {
            seq, event, issued, ..
        } => (Some(*event), Some(format!("{issued} (command {seq})"))),
        ReplayError::MissingCommand { event, .. } => {
            (Some(*event), Some("(the code issued nothing here)".into()))
        }
        ReplayError::UnfinishedRun { event, .. } => {
            (Some(*event), Some("(the code is still waiting)".into()))
        }
        ReplayError::DifferentOutcome { event, code, .. } => {
            (Some(*event), Some(format!("(the code {code} here)")))
        }
        ReplayError::EarlyFinish { event, .. } => (
            Some(*event),
            Some("(the code finished the run here)".into()),
        ),
        ReplayError::Malformed { event, .. } | ReplayError::Corrupt { event, .. } => {
            (Some(*event), None)
        }
        _ => (None, None),
    };
    let Some(center) = center else {
        return String::new();
    };
    let mut out = String::new();
    for e in history {
        if e.id.0 + 3 < center.0 || e.id.0 > center.0 + 3 {
            continue;
        }
        if e.id == center {
            out.push_str(&format!("- {}\n", event_line(e)));
            if let Some(issued) = &issued {
                out.push_str(&format!("+ {:>5}  {issued}\n", e.id.0));
            }
        } else {
            out.push_str(&format!("  {}\n", event_line(e)));
        }
    }
    out
}
