//! The workflow engine thread: owns the cached runs' machines and runs activations.
//!
//! Workflow code runs here, on a plain thread with no tokio runtime, so a stray
//! `tokio::time::sleep` or `tokio::spawn` in workflow code fails with a clear error
//! instead of silently breaking determinism.

use durable_core::command::Command;
use durable_core::error::ReplayError;
use durable_core::event::{Event, EventKind};
use durable_core::ids::{CommandSeq, EventId, RunKey};
use durable_core::payload::Payload;
use durable_core::registry::Registry;
use durable_core::{RunIdentity, RunMachine, clock, replay};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

/// What an activation produced: the events to append, in order, from `after + 1`.
#[derive(Debug)]
pub(crate) struct Activation {
    pub(crate) after: EventId,
    pub(crate) events: Vec<(i64, EventKind)>,
    /// How the run ended in this activation, if it did.
    pub(crate) finished: Option<durable_core::store::RunStatus>,
    /// The latest status the code published (`ctx.set_status`) during the activation,
    /// restore included; `None` when it published none.
    pub(crate) published_status: Option<Payload>,
    /// How many of the request's inbound events were recorded. All of them, unless the
    /// code continued as new: what came after that stays in the inbox, for the store to
    /// move to the next run.
    pub(crate) applied_inbound: usize,
}

pub(crate) struct ActivateRequest {
    pub(crate) key: RunKey,
    pub(crate) fence: durable_core::FencingToken,
    pub(crate) identity: RunIdentity,
    pub(crate) workflow: String,
    /// The full history, when the engine has no machine for the run.
    pub(crate) restore: Option<Vec<Event>>,
    /// Inbound events to apply, with their times.
    pub(crate) inbound: Vec<(i64, EventKind)>,
    pub(crate) max_payload: usize,
    pub(crate) reply: oneshot::Sender<Result<Activation, ReplayError>>,
}

pub(crate) enum EngineMsg {
    Activate(Box<ActivateRequest>),
    /// Drops the run's machine if it belongs to the actor with this fencing token: the
    /// late eviction of an actor that was replaced must not drop its successor's.
    Evict(RunKey, durable_core::FencingToken),
}

/// What the engine thread is doing, for the watchdog.
#[derive(Default)]
pub(crate) struct Busy {
    /// When the current activation started (ms since the epoch), 0 when idle.
    pub(crate) since_ms: AtomicI64,
    /// The run being activated.
    pub(crate) key: AtomicI64,
    /// Its fencing token.
    pub(crate) fence: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct EngineHandle {
    tx: mpsc::Sender<EngineMsg>,
    pub(crate) busy: Arc<Busy>,
}

impl EngineHandle {
    pub(crate) fn spawn(registry: Registry) -> Self {
        let (tx, rx) = mpsc::channel();
        let busy = Arc::new(Busy::default());
        let b = busy.clone();
        std::thread::Builder::new()
            .name("durable-workflows".into())
            .spawn(move || engine_loop(registry, rx, &b))
            .expect("spawning the workflow engine thread");
        EngineHandle { tx, busy }
    }

    pub(crate) fn send(&self, msg: EngineMsg) -> bool {
        self.tx.send(msg).is_ok()
    }
}

fn engine_loop(registry: Registry, rx: mpsc::Receiver<EngineMsg>, busy: &Busy) {
    let mut machines: HashMap<RunKey, RunMachine> = HashMap::new();
    // The fencing token of the actor each machine belongs to. Tokens grow with every
    // change of owner, so a lower one comes from an actor that was replaced.
    let mut owners: HashMap<RunKey, durable_core::FencingToken> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            EngineMsg::Evict(key, fence) => {
                if owners.get(&key) == Some(&fence) {
                    machines.remove(&key);
                    owners.remove(&key);
                }
            }
            EngineMsg::Activate(req) => {
                let req = *req;
                let key = req.key;
                if owners.get(&key).is_some_and(|f| *f > req.fence) {
                    let _ = req.reply.send(Err(ReplayError::Malformed {
                        event: EventId(0),
                        reason: "the run changed hands; this activation is stale".into(),
                    }));
                    continue;
                }
                if req.restore.is_some() {
                    owners.insert(key, req.fence);
                }
                busy.key.store(key.0, Ordering::Release);
                busy.fence.store(req.fence.0, Ordering::Release);
                busy.since_ms.store(clock::now_ms(), Ordering::Release);
                let result = activate(
                    &registry,
                    &mut machines,
                    req.key,
                    req.identity,
                    &req.workflow,
                    req.restore,
                    req.inbound,
                    req.max_payload,
                );
                busy.since_ms.store(0, Ordering::Release);
                if result.is_err() {
                    machines.remove(&key);
                    owners.remove(&key);
                }
                let _ = req.reply.send(result);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)] // one call site, all parts of one request
fn activate(
    registry: &Registry,
    machines: &mut HashMap<RunKey, RunMachine>,
    key: RunKey,
    identity: RunIdentity,
    workflow: &str,
    restore: Option<Vec<Event>>,
    inbound: Vec<(i64, EventKind)>,
    max_payload: usize,
) -> Result<Activation, ReplayError> {
    let mut out = Vec::new();
    if let Some(history) = restore {
        let wf = registry
            .find_workflow(workflow)
            .ok_or_else(|| ReplayError::UnknownWorkflow {
                name: workflow.to_owned(),
            })?;
        let machine = replay::restore(wf.as_ref(), identity, &history)?;
        machines.insert(key, machine);
    }
    let machine = machines
        .get_mut(&key)
        .ok_or_else(|| ReplayError::Malformed {
            event: EventId(0),
            reason: "the engine holds no state for this run".into(),
        })?;
    let after = machine.last_applied();
    let now = clock::now_ms();
    // Commands the restore produced (history ended before they were recorded).
    record_commands(machine, now, &mut out, max_payload)?;
    let mut applied_inbound = 0;
    for (time, kind) in inbound {
        // Once the code has returned, the rest of the batch is still recorded (the
        // machine does not poll the code for it), so that no signal the store
        // acknowledged is dropped; the run's end follows them, below.
        if machine.continued_as_new().is_some() {
            break;
        }
        applied_inbound += 1;
        let event = Event {
            id: EventId(machine.last_applied().0 + 1),
            time_ms: time,
            kind,
        };
        machine.apply(&event)?;
        out.push((event.time_ms, event.kind));
        record_commands(machine, time, &mut out, max_payload)?;
    }
    let end_time = machine.finish_time().unwrap_or(now);
    record_end(machine, end_time, &mut out, max_payload)?;
    let published_status = machine.take_published_status();
    if let Some(status) = &published_status
        && status.len() > max_payload
    {
        return Err(ReplayError::Panicked {
            message: format!(
                "the published status is {} bytes, over the payload limit of {max_payload} bytes",
                status.len()
            ),
        });
    }
    // A run that continues as a workflow this binary does not know would start a run
    // no worker of this build can activate: stop here, and the run is suspended with
    // the reason until a build that has it retries it.
    if let Some((_, EventKind::RunContinuedAsNew { workflow, .. })) = out.last()
        && registry.find_workflow(workflow).is_none()
    {
        return Err(ReplayError::UnknownWorkflow {
            name: workflow.clone(),
        });
    }
    let finished = out.iter().rev().find_map(|(_, k)| match k {
        EventKind::RunCompleted { .. } => Some(durable_core::store::RunStatus::Completed),
        EventKind::RunFailed { .. } => Some(durable_core::store::RunStatus::Failed),
        EventKind::RunContinuedAsNew { .. } => Some(durable_core::store::RunStatus::Continued),
        _ => None,
    });
    Ok(Activation {
        after,
        events: out,
        finished,
        published_status,
        applied_inbound,
    })
}

fn record_commands(
    machine: &mut RunMachine,
    time: i64,
    out: &mut Vec<(i64, EventKind)>,
    max_payload: usize,
) -> Result<(), ReplayError> {
    let commands: Vec<(CommandSeq, Command)> = machine.take_commands();
    for (seq, cmd) in commands {
        if let Command::ScheduleActivity { name, input, .. } = &cmd
            && input.len() > max_payload
        {
            return Err(ReplayError::PayloadTooLarge {
                what: format!("the input of activity {name} (command {seq})"),
                size: input.len(),
                limit: max_payload,
            });
        }
        if let Command::StartChild {
            workflow, input, ..
        } = &cmd
            && input.len() > max_payload
        {
            return Err(ReplayError::PayloadTooLarge {
                what: format!("the input of child workflow {workflow} (command {seq})"),
                size: input.len(),
                limit: max_payload,
            });
        }
        let event = Event {
            id: EventId(machine.last_applied().0 + 1),
            time_ms: time,
            kind: cmd.into_event(seq),
        };
        machine.apply(&event)?;
        out.push((event.time_ms, event.kind));
    }
    Ok(())
}

/// Records the run's end, if the code finished: after every inbound event of the
/// activation, with the time of the one the code finished in (replay checks both).
fn record_end(
    machine: &mut RunMachine,
    time: i64,
    out: &mut Vec<(i64, EventKind)>,
    max_payload: usize,
) -> Result<(), ReplayError> {
    if let Some(outcome) = machine.take_outcome() {
        let kind = match outcome {
            Ok(output) if output.len() > max_payload => {
                return Err(ReplayError::PayloadTooLarge {
                    what: "the workflow's output".to_owned(),
                    size: output.len(),
                    limit: max_payload,
                });
            }
            Ok(output) => EventKind::RunCompleted { output },
            Err(error) => EventKind::RunFailed { error },
        };
        let event = Event {
            id: EventId(machine.last_applied().0 + 1),
            time_ms: time,
            kind,
        };
        machine.apply(&event)?;
        out.push((event.time_ms, event.kind));
    }
    if let Some(next) = machine.take_continue_as_new() {
        if next.input.len() > max_payload {
            return Err(ReplayError::PayloadTooLarge {
                what: format!("the input to continue as new ({})", next.workflow),
                size: next.input.len(),
                limit: max_payload,
            });
        }
        // The new run's id is allocated here, by the engine, like every id the store
        // is given; replay compares the workflow and input, not the id.
        let event = Event {
            id: EventId(machine.last_applied().0 + 1),
            time_ms: time,
            kind: next.into_event(durable_core::ids::RunId::generate()),
        };
        machine.apply(&event)?;
        out.push((event.time_ms, event.kind));
    }
    Ok(())
}
