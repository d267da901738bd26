//! The deterministic, single-threaded executor that drives workflow code.
//!
//! A [`RunMachine`] owns one run's workflow future. It is fed the run's events in log
//! order: an inbound event (run started, activity finished, timer fired, signal, cancel)
//! is delivered and the future is polled until it can make no more progress; an event
//! that records a command is checked against what the code issued. The same machine
//! serves a live worker (fed new events one activation at a time) and replay (fed a
//! whole recorded history), so recovery and debugging run exactly the code path
//! production ran. Nothing here touches tokio or a database.

pub(crate) mod state;
#[cfg(test)]
mod tests;

use crate::command::Command;
use crate::context::workflow::WorkflowContext;
use crate::error::{ReplayError, WorkflowError};
use crate::event::{Event, EventKind};
use crate::ids::{CommandSeq, EventId, RunId, WorkflowId};
use crate::payload::Payload;
use crate::registry::{ErasedWorkflow, ErasedWorkflowFuture};
use state::{Resolution, RunState};
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// Polls of one activation before the engine decides the code is spinning.
const MAX_POLLS_PER_ACTIVATION: usize = 100_000;

struct WakeFlag(AtomicBool);

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// Who a run is, as workflow code sees it.
#[derive(Clone, Debug)]
pub struct RunIdentity {
    /// The workflow id.
    pub workflow_id: WorkflowId,
    /// The run id.
    pub run_id: RunId,
}

/// How the code ended a run with `ctx.continue_as_new(..)`: the run to start next.
#[derive(Clone, Debug, PartialEq)]
pub struct ContinuedAsNew {
    /// The workflow of the next run.
    pub workflow: String,
    /// Its encoded input.
    pub input: Payload,
    /// The seed of its random source, derived from this run's seed.
    pub seed: u64,
    /// Signals this run received that the code had not taken, for the next run.
    pub signals: Vec<(String, Payload)>,
}

impl ContinuedAsNew {
    /// The event that records this ending, naming the new run's id.
    pub fn into_event(self, run_id: RunId) -> EventKind {
        EventKind::RunContinuedAsNew {
            workflow: self.workflow,
            input: self.input,
            seed: self.seed,
            run_id,
            signals: self.signals,
        }
    }

    fn describe(workflow: &str, input: &Payload) -> String {
        format!(
            "continued as new (workflow {workflow:?}, input {})",
            input.digest()
        )
    }
}

/// One run's workflow future and the bookkeeping that makes it replayable.
pub struct RunMachine {
    state: Rc<RefCell<RunState>>,
    root: Option<ErasedWorkflowFuture>,
    flag: Arc<WakeFlag>,
    waker: Waker,
    outcome: Option<Result<Payload, WorkflowError>>,
    /// Set instead of `outcome` when the code continued as new.
    continued: Option<ContinuedAsNew>,
    outcome_taken: bool,
    last_applied: EventId,
    started: bool,
    /// The number of the last command event applied: command events follow issue order.
    last_command: u32,
    /// The terminal event, once applied: nothing may follow it.
    finished_at: Option<EventId>,
    /// The time of the event whose activation the code finished in: the terminal event
    /// is recorded with it, after the rest of that activation's inbound events.
    finish_time: Option<i64>,
    /// The first inbound event applied after the code finished (recorded, not given to
    /// the code), with its name: the terminal event must close that same activation.
    after_finish: Option<(EventId, &'static str)>,
    /// The last event of the recorded history being replayed (0 when live).
    history_end: EventId,
}

impl std::fmt::Debug for RunMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunMachine")
            .field("last_applied", &self.last_applied)
            .field("finished", &self.outcome.is_some())
            .finish()
    }
}

/// Renders a caught panic payload as text, with a hint when tokio was used from
/// workflow code (which has no runtime on the workflow executor).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    };
    if text.contains("Tokio") || text.contains("tokio") || text.contains("reactor") {
        format!(
            "{text} (workflow code runs on durable's deterministic executor, not on tokio: \
             use ctx.sleep(..) instead of tokio timers and futures::join! instead of spawning)"
        )
    } else {
        text
    }
}

impl RunMachine {
    /// Creates the machine for a run from its `RunStarted` event. The code does not run
    /// until that event is applied with [`RunMachine::apply`].
    ///
    /// # Errors
    ///
    /// [`ReplayError::Malformed`] when `started` is not a `RunStarted` event numbered 1.
    pub fn new(
        workflow: &dyn ErasedWorkflow,
        identity: RunIdentity,
        started: &Event,
    ) -> Result<Self, ReplayError> {
        let EventKind::RunStarted {
            workflow: name,
            input,
            seed,
        } = &started.kind
        else {
            return Err(ReplayError::Malformed {
                event: started.id,
                reason: format!(
                    "history starts with {}, not RunStarted",
                    started.kind.name()
                ),
            });
        };
        if started.id != EventId(1) {
            return Err(ReplayError::Malformed {
                event: started.id,
                reason: "the RunStarted event must be number 1".into(),
            });
        }
        if name != workflow.name() {
            return Err(ReplayError::Malformed {
                event: started.id,
                reason: format!(
                    "history is of workflow {name:?}, the code is workflow {:?}",
                    workflow.name()
                ),
            });
        }
        let state = Rc::new(RefCell::new(RunState::new(
            identity,
            name.clone(),
            *seed,
            started.time_ms,
        )));
        let ctx = WorkflowContext::from_state(state.clone());
        let root: ErasedWorkflowFuture = match workflow.start(ctx, input) {
            Ok(fut) => fut,
            Err(e) => {
                let err = WorkflowError::from(e);
                Box::pin(async move { Err(err) })
            }
        };
        let flag = Arc::new(WakeFlag(AtomicBool::new(false)));
        Ok(RunMachine {
            state,
            root: Some(root),
            waker: Waker::from(flag.clone()),
            flag,
            outcome: None,
            continued: None,
            outcome_taken: false,
            last_applied: EventId(0),
            started: false,
            last_command: 0,
            finished_at: None,
            finish_time: None,
            after_finish: None,
            history_end: EventId(0),
        })
    }

    /// Indexes the commands a recorded history holds, so the code's commands are matched
    /// by number and recorded values (random numbers, side effects, patches) are returned
    /// as recorded. Call before applying a recorded history.
    pub fn preload(&mut self, history: &[Event]) {
        self.history_end = history.last().map_or(EventId(0), |e| e.id);
        let mut state = self.state.borrow_mut();
        for event in history {
            if event.kind.is_command()
                && let Some(seq) = event.kind.seq()
            {
                state.recorded.insert(seq.0, (event.id, event.kind.clone()));
            }
        }
    }

    /// Applies one event of the run's history, in log order.
    ///
    /// Take the commands the previous event made the code issue
    /// ([`RunMachine::take_commands`]) and record them before applying the next event: a
    /// command still untaken when the next event arrives is one the history lacks.
    ///
    /// Once the code has finished (returned, not continued as new), further inbound
    /// events of the same activation are applied as records only: the code is not polled
    /// for them, and the run's end is recorded after them with [`RunMachine::finish_time`]
    /// as its time. On replay such events must be followed by that end; see
    /// [`RunMachine::check_history_end`].
    ///
    /// # Errors
    ///
    /// A [`ReplayError`] when the code diverges from history, the history is malformed,
    /// or the code panicked. The machine must then be discarded.
    pub fn apply(&mut self, event: &Event) -> Result<(), ReplayError> {
        if event.id.0 != self.last_applied.0 + 1 {
            return Err(ReplayError::Malformed {
                event: event.id,
                reason: format!(
                    "expected event {}, the history skips or repeats numbers",
                    self.last_applied.0 + 1
                ),
            });
        }
        if let Some(end) = self.finished_at {
            return Err(ReplayError::Malformed {
                event: event.id,
                reason: format!("an event after the run finished at event {end}"),
            });
        }
        self.last_applied = event.id;
        let kind = &event.kind;
        // A command event may follow untaken commands: they come after it in the same
        // activation, in a history that ends within it (`reset --to` cuts anywhere).
        if !kind.is_command()
            && let Some((seq, command)) = self.state.borrow().new_commands.first()
        {
            // History records an activation's commands right after its event, so the
            // code issued a command here that the recorded run did not.
            return Err(ReplayError::ExtraCommand {
                seq: *seq,
                event: event.id,
                issued: command.summary(),
                recorded: kind.name().to_owned(),
            });
        }
        if kind.is_command() {
            // Commands of the finishing activation come right after its event, before
            // the inbound events left over: one after them means the recorded run went
            // on running where the code had finished.
            self.check_no_leftovers()?;
            let seq = kind.seq().expect("command events carry a command number");
            if seq.0 != self.last_command + 1 {
                return Err(ReplayError::Malformed {
                    event: event.id,
                    reason: format!(
                        "command {seq} is recorded where command {} belongs; commands are \
                         recorded in issue order",
                        self.last_command + 1
                    ),
                });
            }
            self.last_command = seq.0;
            let state = self.state.borrow();
            if seq.0 >= state.next_seq {
                return Err(ReplayError::MissingCommand {
                    seq,
                    event: event.id,
                    recorded: kind
                        .command_summary()
                        .expect("command events have a summary"),
                });
            }
            return Ok(());
        }
        if let EventKind::RunContinuedAsNew {
            workflow, input, ..
        } = kind
        {
            // A run that continues as new records nothing after the code's end: what is
            // left of its activation moves to the next run.
            self.check_no_leftovers()?;
            let recorded = ContinuedAsNew::describe(workflow, input);
            let code = match (&self.outcome, &self.continued) {
                (_, Some(c)) if c.workflow == *workflow && c.input == *input => {
                    self.outcome_taken = true;
                    self.finished_at = Some(event.id);
                    return Ok(());
                }
                (_, Some(c)) => ContinuedAsNew::describe(&c.workflow, &c.input),
                (Some(Ok(_)), None) => "completed".to_owned(),
                (Some(Err(e)), None) => format!("failed ({e})"),
                (None, None) => {
                    return Err(ReplayError::UnfinishedRun {
                        event: event.id,
                        recorded,
                    });
                }
            };
            return Err(ReplayError::DifferentOutcome {
                event: event.id,
                recorded,
                code,
            });
        }
        if kind.is_terminal() {
            if self.after_finish.is_some() && Some(event.time_ms) != self.finish_time {
                // The recorded end does not close the activation the code finished in.
                self.check_no_leftovers()?;
            }
            if let Some(c) = &self.continued {
                return Err(ReplayError::DifferentOutcome {
                    event: event.id,
                    recorded: match kind {
                        EventKind::RunFailed { error } => format!("failed ({error})"),
                        _ => "completed".into(),
                    },
                    code: ContinuedAsNew::describe(&c.workflow, &c.input),
                });
            }
            return match (&self.outcome, kind) {
                (None, _) => Err(ReplayError::UnfinishedRun {
                    event: event.id,
                    recorded: if matches!(kind, EventKind::RunCompleted { .. }) {
                        "completed".into()
                    } else {
                        "failed".into()
                    },
                }),
                (Some(outcome), kind) => {
                    let describe = |ok: bool, error: Option<&WorkflowError>| match (ok, error) {
                        (true, _) => "completed".to_owned(),
                        (false, Some(e)) => format!("failed ({e})"),
                        (false, None) => "failed".to_owned(),
                    };
                    let recorded_ok = matches!(kind, EventKind::RunCompleted { .. });
                    if outcome.is_ok() != recorded_ok {
                        let recorded_error = match kind {
                            EventKind::RunFailed { error } => Some(error),
                            _ => None,
                        };
                        return Err(ReplayError::DifferentOutcome {
                            event: event.id,
                            recorded: describe(recorded_ok, recorded_error),
                            code: describe(outcome.is_ok(), outcome.as_ref().err()),
                        });
                    }
                    self.outcome_taken = true;
                    self.finished_at = Some(event.id);
                    Ok(())
                }
            };
        }
        if self.is_finished() {
            // The run's end is recorded in the activation where the code finished, after
            // that activation's other inbound events: they are recorded, and the code is
            // not polled for them. The terminal event must follow (checked there, and by
            // `check_history_end`), or the recorded run applied this one while still
            // running: it diverged. A run that continues as new hands them on instead.
            if self.continued.is_some()
                || !kind.is_inbound()
                || matches!(kind, EventKind::RunStarted { .. })
            {
                return Err(ReplayError::EarlyFinish {
                    event: event.id,
                    recorded: kind.name().to_owned(),
                });
            }
            if self.after_finish.is_none() {
                self.after_finish = Some((event.id, kind.name()));
            }
            return Ok(());
        }
        {
            let mut state = self.state.borrow_mut();
            state.now_ms = event.time_ms;
            state.more_history = event.id < self.history_end;
            match kind {
                EventKind::RunStarted { .. } => {
                    if self.started {
                        return Err(ReplayError::Malformed {
                            event: event.id,
                            reason: "a second RunStarted event".into(),
                        });
                    }
                    self.started = true;
                }
                EventKind::ActivityCompleted { seq, output, .. } => {
                    state.resolve(event.id, *seq, Resolution::ActivityOk(output.clone()))?;
                }
                EventKind::ActivityFailed { seq, error } => {
                    state.resolve(event.id, *seq, Resolution::ActivityErr(error.clone()))?;
                }
                EventKind::TimerFired { seq } => {
                    state.resolve(event.id, *seq, Resolution::TimerFired)?;
                }
                EventKind::ChildCompleted { seq, output } => {
                    state.resolve(event.id, *seq, Resolution::ChildOk(output.clone()))?;
                }
                EventKind::ChildFailed { seq, error } => {
                    state.resolve(event.id, *seq, Resolution::ChildErr(error.clone()))?;
                }
                EventKind::SignalReceived { name, payload } => {
                    state.deliver_signal(name, payload.clone());
                }
                EventKind::CancelRequested { reason } => {
                    state.request_cancel(reason.clone());
                }
                _ => {}
            }
        }
        if !self.started {
            return Err(ReplayError::Malformed {
                event: event.id,
                reason: "event before RunStarted".into(),
            });
        }
        if let EventKind::RunTimedOut { timeout_ms } = kind {
            // The store ended the run: the code is not polled again, whatever it waits
            // for, and its pending commands are dropped. The `RunFailed` that follows
            // records this outcome.
            self.root = None;
            self.outcome = Some(Err(WorkflowError::execution_timeout(
                std::time::Duration::from_millis(*timeout_ms),
            )));
            self.finish_time = Some(event.time_ms);
            return Ok(());
        }
        self.poll_until_quiescent()?;
        if let EventKind::CancelRequested { reason } = kind {
            let aware = self.state.borrow().cancel_aware;
            if !self.is_finished() && !aware {
                // The code does not handle cancellation: end the run here. Dropping the
                // future drops its pending commands; their answers are discarded.
                self.root = None;
                self.outcome = Some(Err(WorkflowError::cancelled(format!(
                    "the run was cancelled: {reason}"
                ))));
            }
        }
        if self.is_finished() {
            self.finish_time = Some(event.time_ms);
        }
        Ok(())
    }

    /// Fails with [`ReplayError::EarlyFinish`] when inbound events were applied after the
    /// code finished (the first of them is named).
    fn check_no_leftovers(&self) -> Result<(), ReplayError> {
        match self.after_finish {
            Some((event, name)) => Err(ReplayError::EarlyFinish {
                event,
                recorded: name.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Checks the end of a recorded history: inbound events recorded after the code
    /// finished must be followed by the run's terminal event in the same activation, so
    /// a history that stops after them (without the end) ran on where the code finished.
    ///
    /// # Errors
    ///
    /// [`ReplayError::EarlyFinish`] naming the first such event.
    pub fn check_history_end(&self) -> Result<(), ReplayError> {
        if self.finished_at.is_some() {
            return Ok(());
        }
        self.check_no_leftovers()
    }

    fn poll_until_quiescent(&mut self) -> Result<(), ReplayError> {
        let Some(root) = self.root.as_mut() else {
            return Ok(());
        };
        let mut cx = Context::from_waker(&self.waker);
        for _ in 0..MAX_POLLS_PER_ACTIVATION {
            self.flag.0.store(false, Ordering::Release);
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| root.as_mut().poll(&mut cx)));
            if let Some(err) = self.state.borrow_mut().error.take() {
                return Err(err);
            }
            let request = self.state.borrow_mut().continue_as_new.take();
            if let Some((workflow, input)) = request {
                // The code asked to continue as new: the run ends here, whatever else the
                // poll did. Dropping the future drops its pending commands, and hands
                // back to the buffer any signal a dropped wait was given.
                if let Err(payload) = polled {
                    return Err(ReplayError::Panicked {
                        message: panic_message(payload.as_ref()),
                    });
                }
                self.root = None;
                let mut state = self.state.borrow_mut();
                self.continued = Some(ContinuedAsNew {
                    workflow,
                    input,
                    seed: state.successor_seed(),
                    signals: state.take_unconsumed_signals(),
                });
                return Ok(());
            }
            match polled {
                Err(payload) => {
                    return Err(ReplayError::Panicked {
                        message: panic_message(payload.as_ref()),
                    });
                }
                Ok(Poll::Ready(outcome)) => {
                    self.outcome = Some(outcome);
                    self.root = None;
                    return Ok(());
                }
                Ok(Poll::Pending) => {
                    if !self.flag.0.load(Ordering::Acquire) {
                        return Ok(());
                    }
                }
            }
        }
        Err(ReplayError::Panicked {
            message: format!(
                "workflow code was woken {MAX_POLLS_PER_ACTIVATION} times in one activation \
                 without waiting on anything durable"
            ),
        })
    }

    /// The commands issued since the last call that history does not hold yet.
    pub fn take_commands(&mut self) -> Vec<(CommandSeq, Command)> {
        std::mem::take(&mut self.state.borrow_mut().new_commands)
    }

    /// The status the code published with `ctx.set_status(..)` since the last call, if
    /// any: the latest value wins. It is not part of history; the engine stores it with
    /// the activation's commit.
    pub fn take_published_status(&mut self) -> Option<Payload> {
        self.state.borrow_mut().published_status.take()
    }

    /// The run's outcome, once, if the code finished and history does not record it yet.
    pub fn take_outcome(&mut self) -> Option<Result<Payload, WorkflowError>> {
        if self.outcome_taken {
            return None;
        }
        let out = self.outcome.clone()?;
        self.outcome_taken = true;
        Some(out)
    }

    /// The outcome, if the code finished by returning (not by continuing as new).
    pub fn outcome(&self) -> Option<&Result<Payload, WorkflowError>> {
        self.outcome.as_ref()
    }

    /// The run to continue as, once, if the code ended the run with
    /// `ctx.continue_as_new(..)` and history does not record it yet. Record it with
    /// [`ContinuedAsNew::into_event`] and a fresh run id.
    pub fn take_continue_as_new(&mut self) -> Option<ContinuedAsNew> {
        if self.outcome_taken {
            return None;
        }
        let out = self.continued.clone()?;
        self.outcome_taken = true;
        Some(out)
    }

    /// How the code continued as new, if it did.
    pub fn continued_as_new(&self) -> Option<&ContinuedAsNew> {
        self.continued.as_ref()
    }

    /// The time of the event in whose activation the code finished, if it did: the
    /// time to record the terminal event with, after the activation's other events.
    pub fn finish_time(&self) -> Option<i64> {
        self.finish_time
    }

    /// The last event applied.
    pub fn last_applied(&self) -> EventId {
        self.last_applied
    }

    /// Whether the code has finished: returned, or continued as new.
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some() || self.continued.is_some()
    }

    /// Marks whether events being applied are a replay of recorded history (for
    /// `ctx.is_replaying()`, e.g. to silence logs).
    pub fn set_replaying(&mut self, replaying: bool) {
        self.state.borrow_mut().replaying = replaying;
    }

    /// What the run is waiting for now, for `status`: pending commands by number.
    pub fn pending(&self) -> Vec<CommandSeq> {
        self.state.borrow().pending()
    }
}
