//! Child runs: workflow code starts another workflow's run and waits for its outcome.

use crate::command::Command;
use crate::context::workflow::WorkflowContext;
use crate::error::{KIND_INVALID_WORKFLOW_ID, KIND_PAYLOAD, WorkflowError};
use crate::event::{ChildCancelPolicy, ChildOptions};
use crate::executor::state::{Resolution, RunState};
use crate::ids::{CommandSeq, WorkflowId};
use crate::payload::{Payload, PayloadError};
use crate::registry::Workflow;
use rand::Rng;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The longest workflow id a store accepts, in bytes.
const MAX_WORKFLOW_ID_BYTES: usize = 1000;

impl WorkflowContext {
    /// Starts a run of the workflow `W` as a child of this run, with type-checked input
    /// and output, and waits for its outcome.
    ///
    /// Returns a builder: choose the child's workflow id, its cancellation policy or its
    /// execution timeout, then `.await` it. The child runs on any worker that registers
    /// `W`, like any other run; its outcome comes back to this run as an event.
    ///
    /// ```ignore
    /// let tracking = ctx.child::<ship_order>(order.clone()).await?;
    /// // Fan out: every child starts in the same activation.
    /// let calls = parts.into_iter().map(|p| ctx.child::<make_part>(p));
    /// let made = futures::future::join_all(calls).await;
    /// ```
    ///
    /// The child's workflow id defaults to `{this workflow id}/{first 8 characters of this
    /// run id}/{command number}`: deterministic, and fresh for a run started by a reset.
    ///
    /// # Errors
    ///
    /// The child's failure, with the kind and message it ended with: its own error kinds,
    /// `Cancelled` when it was cancelled (by this run's cancellation too),
    /// `ExecutionTimeout`, `Reset`. `WorkflowIdInUse` when another run already has the
    /// workflow id chosen with [`ChildCall::workflow_id`]; `InvalidWorkflowId` for an id
    /// no store accepts; `PayloadError` when the input does not encode or the output
    /// does not decode as `W::Output`.
    ///
    /// # Determinism
    ///
    /// The start is a command, recorded with the child's workflow name and input when the
    /// future is first polled; the store creates the child in the same transaction that
    /// records it, so a crash never leaves a child without its record or the reverse.
    /// On replay the recorded outcome is returned and no child starts again; starting a
    /// different workflow or with a different input for a run in flight is reported as
    /// non-determinism.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after it was polled (a lost select) does not stop the child:
    /// it runs on, and its outcome, when it comes, is discarded.
    pub fn child<W: Workflow>(&self, input: W::Input) -> ChildCall<W::Output> {
        ChildCall {
            state: self.run_state(),
            workflow: W::NAME,
            input: Payload::encode(&input),
            workflow_id: None,
            options: ChildOptions::default(),
            seq: None,
            _output: PhantomData,
        }
    }
}

/// A pending child run; set options, then `.await` it. See [`WorkflowContext::child`].
#[must_use = "a child run does nothing until awaited"]
pub struct ChildCall<O> {
    state: Rc<RefCell<RunState>>,
    workflow: &'static str,
    input: Result<Payload, PayloadError>,
    workflow_id: Option<String>,
    options: ChildOptions,
    seq: Option<CommandSeq>,
    _output: PhantomData<fn() -> O>,
}

impl<O> std::fmt::Debug for ChildCall<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildCall")
            .field("workflow", &self.workflow)
            .field("workflow_id", &self.workflow_id)
            .field("options", &self.options)
            .field("seq", &self.seq)
            .finish()
    }
}

impl<O> ChildCall<O> {
    /// Gives the child this workflow id instead of the derived one. A workflow id taken
    /// by any other run (running or finished) makes the call fail with kind
    /// `WorkflowIdInUse`; no child starts.
    pub fn workflow_id(mut self, id: impl Into<String>) -> Self {
        self.workflow_id = Some(id.into());
        self
    }

    /// What this run's cancellation, or its end while the child still runs, does to the
    /// child: [`ChildCancelPolicy::RequestCancel`] (the default) or
    /// [`ChildCancelPolicy::Abandon`].
    pub fn cancel_policy(mut self, policy: ChildCancelPolicy) -> Self {
        self.options.cancel_policy = policy;
        self
    }

    /// Ends the child as failed (kind `ExecutionTimeout`) if it still runs this long
    /// after it started.
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.options.execution_timeout_ms = Some(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        self
    }

    /// Starts the child on this workflow task queue, for the workers serving it; by
    /// default the child is on its parent's queue. The empty name and `"default"` are
    /// the default queue.
    pub fn task_queue(mut self, queue: impl Into<String>) -> Self {
        let queue = queue.into();
        self.options.task_queue = Some(if queue == "default" {
            String::new()
        } else {
            queue
        });
        self
    }
}

fn check_workflow_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        Err("the workflow id of a child run must not be empty".to_owned())
    } else if id.contains('\0') {
        Err("the workflow id of a child run must not contain NUL bytes".to_owned())
    } else if id.len() > MAX_WORKFLOW_ID_BYTES {
        Err(format!(
            "the workflow id of a child run is {} bytes long; the limit is {MAX_WORKFLOW_ID_BYTES}",
            id.len()
        ))
    } else {
        Ok(())
    }
}

impl<O: DeserializeOwned> Future for ChildCall<O> {
    type Output = Result<O, WorkflowError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = this.state.borrow_mut();
        let seq = match this.seq {
            Some(seq) => seq,
            None => {
                let input = match &this.input {
                    Ok(p) => p.clone(),
                    Err(e) => {
                        return Poll::Ready(Err(WorkflowError::new(
                            KIND_PAYLOAD,
                            format!(
                                "cannot encode the input of child workflow {}: {e}",
                                this.workflow
                            ),
                        )));
                    }
                };
                let seq = CommandSeq(state.next_seq);
                let workflow_id = match this.workflow_id.take() {
                    Some(id) => id,
                    None => {
                        let run_id = state.identity.run_id.as_str();
                        let short = run_id.get(..8).unwrap_or(run_id);
                        format!("{}/{short}/{seq}", state.identity.workflow_id)
                    }
                };
                if let Err(message) = check_workflow_id(&workflow_id) {
                    return Poll::Ready(Err(WorkflowError::new(KIND_INVALID_WORKFLOW_ID, message)));
                }
                // The child's seed comes from this run's stream for the command number,
                // like a recorded random value; replay keeps the recorded one.
                state.reseed_for_next();
                let seed = state.rng.random::<u64>();
                let seq = state.issue(Command::StartChild {
                    workflow: this.workflow.to_owned(),
                    workflow_id: WorkflowId(workflow_id),
                    input,
                    seed,
                    options: std::mem::take(&mut this.options),
                });
                this.seq = Some(seq);
                seq
            }
        };
        match state.take_result(seq) {
            Some(Resolution::ChildOk(p)) => Poll::Ready(p.decode::<O>().map_err(|e| {
                WorkflowError::new(
                    KIND_PAYLOAD,
                    format!("the output of child workflow {}: {e}", this.workflow),
                )
            })),
            Some(Resolution::ChildErr(e)) => Poll::Ready(Err(e)),
            Some(_) => Poll::Ready(Err(WorkflowError::new(
                "Nondeterminism",
                format!(
                    "command {seq} was answered with something other than a child run's outcome"
                ),
            ))),
            None => {
                state.register_waker(seq, cx.waker());
                Poll::Pending
            }
        }
    }
}

/// The policy names users see in the CLI.
impl std::str::FromStr for ChildCancelPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChildCancelPolicy::parse(s).ok_or_else(|| {
            format!("unknown cancel policy {s:?}; expected request_cancel or abandon")
        })
    }
}
