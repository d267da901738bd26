//! [`WorkflowContext`]: everything workflow code may do that the history records.

use crate::command::Command;
use crate::context::continue_as_new::ContinueAsNew;
use crate::error::{ActivityError, KIND_PAYLOAD, WorkflowError};
use crate::event::ActivityOptions;
use crate::executor::state::{Resolution, RunState};
use crate::ids::{CommandSeq, RunId, WorkflowId};
use crate::payload::{Payload, PayloadError};
use crate::registry::{Activity, Workflow};
use crate::retry::RetryPolicy;
use futures::future::{Either, LocalBoxFuture};
use rand::Rng;
use rand::distr::{Distribution, StandardUniform};
use serde::{Serialize, de::DeserializeOwned};
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

/// The handle workflow code uses for everything that must survive a restart: activities,
/// timers, signals, time, randomness and versioning.
///
/// Each call that waits produces a *command*, numbered in the order the code issues
/// it; the worker records it in the run's history. After a crash the history is
/// replayed through the same code, and each command is matched by its number.
///
/// The context is not `Send`: workflow code runs on durable's single-threaded,
/// deterministic executor, never on tokio.
#[derive(Clone)]
pub struct WorkflowContext {
    state: Rc<RefCell<RunState>>,
}

impl std::fmt::Debug for WorkflowContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.borrow();
        f.debug_struct("WorkflowContext")
            .field("workflow_id", &s.identity.workflow_id)
            .field("run_id", &s.identity.run_id)
            .finish()
    }
}

impl WorkflowContext {
    pub(crate) fn from_state(state: Rc<RefCell<RunState>>) -> Self {
        WorkflowContext { state }
    }

    /// The run's shared state, for the context's other modules (child runs).
    pub(crate) fn run_state(&self) -> Rc<RefCell<RunState>> {
        self.state.clone()
    }

    /// The workflow id of this run.
    pub fn workflow_id(&self) -> WorkflowId {
        self.state.borrow().identity.workflow_id.clone()
    }

    /// The run id.
    pub fn run_id(&self) -> RunId {
        self.state.borrow().identity.run_id.clone()
    }

    /// The registered name of the workflow.
    pub fn workflow_name(&self) -> String {
        self.state.borrow().workflow.clone()
    }

    /// The current time of the run: the recorded time of the event being applied.
    ///
    /// # Determinism
    ///
    /// Use this instead of `SystemTime::now()`. Replay returns exactly what the original
    /// execution saw.
    pub fn now(&self) -> SystemTime {
        crate::clock::to_system_time(self.state.borrow().now_ms)
    }

    /// [`WorkflowContext::now`] in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.state.borrow().now_ms
    }

    /// True while the code is re-executing recorded history (after a restart or in a
    /// debugger); use it to keep logs from repeating.
    pub fn is_replaying(&self) -> bool {
        self.state.borrow().replaying
    }

    /// Calls an activity with type-checked input and output.
    ///
    /// Returns a builder: set a retry policy or timeouts, then `.await` it.
    ///
    /// # Determinism
    ///
    /// The call is recorded with its name and input when first polled; on replay the
    /// recorded result is returned and the activity does not run again. Changing the
    /// activity or its input for a run in flight is reported as non-determinism.
    ///
    /// ```ignore
    /// let reservation = ctx.activity::<check_inventory>(order.items.clone()).await?;
    /// ```
    pub fn activity<A: Activity>(&self, input: A::Input) -> ActivityCall<A::Output> {
        ActivityCall {
            state: self.state.clone(),
            name: A::NAME,
            input: Payload::encode(&input),
            options: ActivityOptions::default(),
            seq: None,
            _output: PhantomData,
        }
    }

    /// Waits for `duration` of workflow time.
    ///
    /// The timer is recorded in the history, so it survives restarts: a run that sleeps
    /// three days wakes three days after the timer started, on whichever worker holds it
    /// then.
    ///
    /// # Determinism
    ///
    /// Use this instead of `tokio::time::sleep`, which the workflow executor refuses.
    /// During replay the timer resolves where history says it fired; no real time passes.
    pub fn sleep(&self, duration: Duration) -> Timer {
        Timer {
            state: self.state.clone(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            seq: None,
        }
    }

    /// Waits for the next signal named `name` and decodes its body as `T`.
    ///
    /// Signals that arrive before anyone waits are buffered in arrival order; each is
    /// delivered to exactly one wait.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves (for example when it loses a select)
    /// leaves any signal it was given in the buffer for the next wait.
    pub fn signal<T: DeserializeOwned>(&self, name: &str) -> SignalWait<T> {
        SignalWait {
            state: self.state.clone(),
            name: name.to_owned(),
            seq: None,
            done: false,
            _t: PhantomData,
        }
    }

    /// Waits for the signal `name` at most `timeout`; `Ok(None)` when the time ran out.
    ///
    /// # Errors
    ///
    /// A signal body that does not decode as `T`.
    pub fn signal_timeout<T: DeserializeOwned + 'static>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> LocalBoxFuture<'static, Result<Option<T>, WorkflowError>> {
        let signal = self.signal::<T>(name);
        let timer = self.sleep(timeout);
        Box::pin(async move {
            match futures::future::select(signal, timer).await {
                Either::Left((value, _timer)) => value.map(Some),
                Either::Right(((), _signal)) => Ok(None),
            }
        })
    }

    /// A random value, recorded in the history.
    ///
    /// # Determinism
    ///
    /// Use this instead of `rand::random()`: replay returns the recorded value.
    pub fn random<T>(&self) -> T
    where
        StandardUniform: Distribution<T>,
        T: Serialize + DeserializeOwned,
    {
        self.record("random", |ctx| {
            let mut state = ctx.state.borrow_mut();
            state.reseed_for_next();
            state.rng.random::<T>()
        })
    }

    /// A random (version 4) UUID, recorded in the history.
    pub fn uuid(&self) -> uuid::Uuid {
        let bytes: [u8; 16] = self.record("uuid", |ctx| {
            let mut state = ctx.state.borrow_mut();
            state.reseed_for_next();
            state.rng.random::<[u8; 16]>()
        });
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// Runs `f` once and records its result; on replay the recorded value is returned and
    /// `f` does not run. For quick, non-failing reads of the outside world (a config
    /// value, a feature flag); anything that can fail or take long is an activity.
    pub fn side_effect<T, F>(&self, label: &str, f: F) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> T,
    {
        self.record(&format!("side_effect:{label}"), |_| f())
    }

    /// Returns the value recorded for marker `name` on replay; otherwise produces it
    /// with `fresh` (holding no borrow of the run, so a side-effect closure may read the
    /// context) and records it.
    fn record<T, F>(&self, name: &str, fresh: F) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(&Self) -> T,
    {
        let recorded = self.state.borrow_mut().take_recorded_marker(name);
        let Some(payload) = recorded else {
            let value = fresh(self);
            let payload = Payload::encode(&value).unwrap_or_default();
            self.state
                .borrow_mut()
                .issue_marker(name.to_owned(), payload);
            return value;
        };
        match payload.decode::<T>() {
            Ok(v) => v,
            Err(e) => {
                let mut state = self.state.borrow_mut();
                let seq = CommandSeq(state.next_seq.saturating_sub(1));
                let event = state
                    .recorded
                    .get(&seq.0)
                    .map(|(id, _)| *id)
                    .unwrap_or_default();
                if state.error.is_none() {
                    state.error = Some(crate::error::ReplayError::Corrupt {
                        run: state.identity.run_id.clone(),
                        event,
                        source: e,
                    });
                }
                drop(state);
                // The error recorded above fails the activation; unwinding out of the
                // workflow body here keeps the unreadable value from being used. Not a
                // panic: the panic hook would print it as if the code had crashed.
                std::panic::resume_unwind(Box::new(format!(
                    "recorded value of marker {name:?} is unreadable"
                )))
            }
        }
    }

    /// Versioning: true for runs that reach this point with code that has the change
    /// `change_id`, false when replaying a run recorded before it.
    ///
    /// ```ignore
    /// if ctx.patched("send-receipt") {
    ///     ctx.activity(send_receipt, order.clone()).await?;
    /// }
    /// ```
    ///
    /// # Determinism
    ///
    /// The first time a run passes the call, a marker is recorded; replay returns true
    /// exactly where the marker is. Once no run recorded before the change remains,
    /// replace the call with [`WorkflowContext::deprecate_patch`], and later remove it.
    pub fn patched(&self, change_id: &str) -> bool {
        self.state.borrow_mut().patched(change_id)
    }

    /// Marks a patch whose old branch has been removed: runs that recorded its marker
    /// still replay, new runs record nothing.
    pub fn deprecate_patch(&self, change_id: &str) {
        self.state.borrow_mut().deprecate_patch(change_id);
    }

    /// True once somebody asked the run to cancel.
    ///
    /// Calling this (or [`WorkflowContext::cancelled`]) makes the workflow responsible for
    /// cancellation: a cancel request is then only a fact it can observe. A workflow that
    /// never looks is ended as failed with kind `Cancelled` when a cancel arrives.
    pub fn is_cancel_requested(&self) -> bool {
        let mut state = self.state.borrow_mut();
        state.cancel_aware = true;
        state.cancel_reason.is_some()
    }

    /// Resolves with the reason once somebody asks the run to cancel. Select on it to
    /// stop waiting and run compensations (see [`WorkflowContext::is_cancel_requested`]).
    pub fn cancelled(&self) -> CancelRequested {
        self.state.borrow_mut().cancel_aware = true;
        CancelRequested {
            state: self.state.clone(),
        }
    }

    /// Publishes what the run is doing now, for `Client::query_status` and the CLI's
    /// `status` and `query` to read from outside while the run goes on.
    ///
    /// ```ignore
    /// ctx.set_status(&format!("waiting for approval from {}", request.approver))?;
    /// ```
    ///
    /// The latest value set during an activation is stored when the activation is
    /// committed; an activation that sets none leaves the previous value, and a finished
    /// run keeps its last one.
    ///
    /// # Determinism
    ///
    /// Not a command and not recorded in the history: adding or removing calls never
    /// breaks replay of runs in flight. On replay the value is published again by the same
    /// code, so keep it a function of what the workflow knows (its input and what it was
    /// given), not of the outside world.
    ///
    /// # Errors
    ///
    /// The value cannot be encoded; nothing is published then.
    pub fn set_status<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), PayloadError> {
        let payload = Payload::encode(value)?;
        self.state.borrow_mut().published_status = Some(payload);
        Ok(())
    }

    /// Ends this run and continues the workflow id as a fresh run of `W` (usually the
    /// same workflow) with `input` and an empty history, so a workflow that loops
    /// forever (a subscription, a poller) keeps its history short:
    ///
    /// ```ignore
    /// if state.periods_in_this_run == 12 {
    ///     return ctx.continue_as_new::<subscription>(state.next_run()).await;
    /// }
    /// ```
    ///
    /// The run ends with a `RunContinuedAsNew` event and the status `continued`, and the
    /// new run starts in the same transaction as the latest run of the workflow id:
    /// signals, cancels, `status`, `result` and a second start with the id reach it.
    /// Signals the old run had not applied yet move to the new run; its pending
    /// activities and timers are dropped (their results would have nowhere to go), so
    /// await what must finish first. The new run keeps the old run's execution deadline
    /// and published status.
    ///
    /// The code stops at the poll that reaches this call: the future never resolves to
    /// `Ok`. It is typed as `W`'s result, so `return ctx.continue_as_new::<W>(..).await`
    /// type-checks in `W` itself, and `Client::result::<W>` reads the final run of the
    /// chain as `W`'s output. (To continue as a workflow with another output type, write
    /// `ctx.continue_as_new::<other>(input).await?;` followed by `unreachable!()`.)
    ///
    /// # Determinism
    ///
    /// The end is recorded with the workflow and input; replay compares both with what
    /// the code asks for, and a different input or a different ending (completing
    /// instead, or the reverse) is a `DifferentOutcome` divergence.
    ///
    /// # Errors
    ///
    /// Resolves to an error (kind `PayloadError`) only when `input` cannot be encoded.
    pub fn continue_as_new<W: Workflow>(&self, input: W::Input) -> ContinueAsNew<W::Output> {
        ContinueAsNew::new(self.state.clone(), W::NAME, Payload::encode(&input))
    }
}

/// A pending activity call; set options, then `.await` it.
#[must_use = "an activity call does nothing until awaited"]
pub struct ActivityCall<O> {
    state: Rc<RefCell<RunState>>,
    name: &'static str,
    input: Result<Payload, PayloadError>,
    options: ActivityOptions,
    seq: Option<CommandSeq>,
    _output: PhantomData<fn() -> O>,
}

impl<O> ActivityCall<O> {
    /// The name of the activity this call runs.
    pub(crate) fn activity_name(&self) -> &'static str {
        self.name
    }
    /// Sets the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.options.retry = Some(policy);
        self
    }
    /// Sets the timeout of each attempt.
    pub fn start_to_close(mut self, timeout: Duration) -> Self {
        self.options.start_to_close_ms = Some(ms(timeout));
        self
    }
    /// Sets the timeout of all attempts together.
    pub fn schedule_to_close(mut self, timeout: Duration) -> Self {
        self.options.schedule_to_close_ms = Some(ms(timeout));
        self
    }
    /// An attempt that does not heartbeat for this long is considered lost.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.options.heartbeat_timeout_ms = Some(ms(timeout));
        self
    }
    /// Runs the activity on the workers of this task queue, within its limits if it
    /// has any ([`QueueLimit`](crate::store::QueueLimit): at most N running at once, N
    /// starts per second, across every worker sharing the store).
    ///
    /// # Determinism
    ///
    /// The queue is recorded with the schedule but is routing, not part of what replay
    /// compares: moving a call to another queue does not break runs in flight (their
    /// attempts already scheduled keep the old queue).
    pub fn task_queue(mut self, queue: impl Into<String>) -> Self {
        self.options.task_queue = Some(queue.into());
        self
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<O: DeserializeOwned> Future for ActivityCall<O> {
    type Output = Result<O, ActivityError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = this.state.borrow_mut();
        let seq = match this.seq {
            Some(seq) => seq,
            None => {
                let input = match &this.input {
                    Ok(p) => p.clone(),
                    Err(e) => {
                        return Poll::Ready(Err(ActivityError::non_retryable(
                            KIND_PAYLOAD,
                            format!("cannot encode the input of activity {}: {e}", this.name),
                        )));
                    }
                };
                let seq = state.issue(Command::ScheduleActivity {
                    name: this.name.to_owned(),
                    input,
                    options: std::mem::take(&mut this.options),
                });
                this.seq = Some(seq);
                seq
            }
        };
        match state.take_result(seq) {
            Some(Resolution::ActivityOk(p)) => Poll::Ready(p.decode::<O>().map_err(|e| {
                ActivityError::non_retryable(
                    KIND_PAYLOAD,
                    format!("the output of activity {}: {e}", this.name),
                )
            })),
            Some(Resolution::ActivityErr(e)) => Poll::Ready(Err(e)),
            Some(_) => Poll::Ready(Err(ActivityError::non_retryable(
                "Nondeterminism",
                format!("command {seq} was answered with something other than an activity result"),
            ))),
            None => {
                state.register_waker(seq, cx.waker());
                Poll::Pending
            }
        }
    }
}

/// A durable timer; see [`WorkflowContext::sleep`].
#[must_use = "a timer does nothing until awaited"]
pub struct Timer {
    state: Rc<RefCell<RunState>>,
    duration_ms: u64,
    seq: Option<CommandSeq>,
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = this.state.borrow_mut();
        let seq = *this.seq.get_or_insert_with(|| {
            state.issue(Command::StartTimer {
                duration_ms: this.duration_ms,
            })
        });
        match state.take_result(seq) {
            Some(_) => Poll::Ready(()),
            None => {
                state.register_waker(seq, cx.waker());
                Poll::Pending
            }
        }
    }
}

/// A wait for a named signal; see [`WorkflowContext::signal`].
#[must_use = "a signal wait does nothing until awaited"]
pub struct SignalWait<T> {
    state: Rc<RefCell<RunState>>,
    name: String,
    seq: Option<CommandSeq>,
    done: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Future for SignalWait<T> {
    type Output = Result<T, WorkflowError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = this.state.borrow_mut();
        let payload = match this.seq {
            None => {
                let (seq, ready) = state.wait_signal(&this.name);
                this.seq = Some(seq);
                ready
            }
            Some(seq) => match state.take_result(seq) {
                Some(Resolution::Signal(p)) => Some(p),
                _ => None,
            },
        };
        match payload {
            Some(p) => {
                this.done = true;
                Poll::Ready(p.decode::<T>().map_err(|e| {
                    WorkflowError::new(KIND_PAYLOAD, format!("signal {:?}: {e}", this.name))
                }))
            }
            None => {
                if let Some(seq) = this.seq {
                    state.register_waker(seq, cx.waker());
                }
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for SignalWait<T> {
    fn drop(&mut self) {
        if let (Some(seq), false) = (self.seq, self.done)
            && let Ok(mut state) = self.state.try_borrow_mut()
        {
            state.abandon_signal(seq, &self.name);
        }
    }
}

/// Resolves when the run is asked to cancel; see [`WorkflowContext::cancelled`].
pub struct CancelRequested {
    state: Rc<RefCell<RunState>>,
}

impl Future for CancelRequested {
    type Output = String;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<String> {
        let mut state = self.state.borrow_mut();
        match &state.cancel_reason {
            Some(r) => Poll::Ready(r.clone()),
            None => {
                state.register_cancel_waker(cx.waker());
                Poll::Pending
            }
        }
    }
}
