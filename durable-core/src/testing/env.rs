//! [`TestEnv`]: one run, in memory, on a virtual clock.

use super::activities::{Activities, Mock, next_attempt_at, virtual_ms};
use super::error::TestEnvError;
use super::timeline::{Due, Timeline};
use crate::clock;
use crate::command::Command;
use crate::context::activity::ActivityContext;
use crate::error::{ActivityError, WorkflowError};
use crate::event::{ActivityOptions, ChildCancelPolicy, ChildOptions, Event, EventKind};
use crate::executor::{RunIdentity, RunMachine};
use crate::ids::{CommandSeq, EventId, RunId, WorkflowId};
use crate::payload::{Payload, PayloadError};
use crate::registry::{Activity, ErasedWorkflow, Registry, Workflow};
use crate::replay::{ReplayReport, Replayer};
use futures::FutureExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime};

/// 2024-01-01T00:00:00Z: where virtual time starts unless [`TestEnv::start_time`] says
/// otherwise. Fixed, so a test sees the same times on every run.
const DEFAULT_START_MS: i64 = 1_704_067_200_000;

/// How many times a run in a test environment may continue as new: a workflow that
/// continues at once every time would otherwise loop forever.
const MAX_CONTINUED_RUNS: usize = 100_000;

/// The seed of the run's random source unless [`TestEnv::seed`] says otherwise.
const DEFAULT_SEED: u64 = 0x5eed;

/// Events a run may record before the environment calls it a loop that never ends.
const DEFAULT_MAX_EVENTS: usize = 100_000;

/// An in-memory environment that runs one workflow on a virtual clock, so a workflow
/// that sleeps for days or waits a week for a signal finishes in milliseconds of a
/// `cargo test`.
///
/// The run is driven the way a worker drives it: by the same [`RunMachine`], one
/// activation per inbound event, each command the code issues recorded as its event.
/// What differs is where time and activities come from:
///
/// - **Virtual time.** The clock starts at [`TestEnv::start_time`] (by default
///   2024-01-01T00:00:00Z) and only moves when nothing else can happen now: it then
///   jumps to the next timer, activity retry or scheduled signal. `ctx.now()` returns
///   this time, and each event records it.
/// - **Order.** Timers, retries, signals and cancellations happen in order of their
///   virtual time, and those due at the same instant in the order they were scheduled.
///   Activities take no virtual time: an attempt's result is recorded at the instant it
///   was due.
/// - **Activities.** An activity replaced with [`TestEnv::mock_activity`] (or its
///   `_with_context` and `_async` twins) calls the double; any other runs the body
///   registered in the [`Registry`], awaited on the caller's executor (e.g. the tokio
///   runtime of a `#[tokio::test]`). A failed attempt is retried as its recorded
///   [`RetryPolicy`](crate::RetryPolicy) says, after the backoff in virtual time; the
///   final failure is recorded as `ActivityFailed` with the attempts made. A panic is a
///   retryable failure of kind `Panic`, as on a worker.
/// - **Stuck runs.** When the run waits for a signal and nothing is scheduled to arrive,
///   [`TestEnv::run_to_completion`] returns [`TestEnvError::Stuck`] naming the wait,
///   instead of hanging.
///
/// The recorded history is [`TestEnv::history`]; it replays through the same code with
/// the [`Replayer`] (or [`TestEnv::replay`]), so a test can check the run both ways.
///
/// # Determinism
///
/// On a worker, workflow code is polled on a thread without a tokio runtime, so a stray
/// `tokio::time::sleep` in workflow code panics with a clear message. Here it is polled
/// inside whatever runtime awaits `run_to_completion`; a tokio timer in workflow code
/// then does not panic, but the environment sees a workflow waiting on nothing durable
/// and returns [`TestEnvError::NotDurableWait`].
///
/// - **Child runs.** A child the code starts with `ctx.child::<W>(..)` (its workflow
///   registered, or started once in this environment) runs in an environment of its own
///   from the virtual time it started, with the same activities and doubles, and its
///   outcome reaches the parent at the virtual time it finished. A cancel request
///   scheduled for the parent is scheduled for its children with the policy
///   `RequestCancel` too. [`TestEnv::child_history`] shows a child's history.
///
/// What a test environment does not simulate: start-to-close and heartbeat timeouts (an
/// attempt takes no virtual time), execution timeouts, payload size limits, task queues,
/// workflow ids taken by other runs, signals to child runs, and the cancellation of a
/// child because its parent finished first (the child then runs to its end).
///
/// # Example
///
/// A workflow that reminds an approver and waits up to a week for their decision,
/// tested with the decision arriving after two days. (With the `durable` facade,
/// `#[workflow]` and `#[activity]` write the trait implementations hidden here.)
///
/// ```
/// use durable_core::testing::TestEnv;
/// use durable_core::{EventKind, Registry, ReplayOutcome};
/// use std::time::Duration;
/// # use durable_core::{Activity, ActivityContext, ActivityError, Workflow, WorkflowContext,
/// #     WorkflowError};
/// # use futures::future::{BoxFuture, LocalBoxFuture};
/// #
/// # struct SendReminder;
/// # impl Activity for SendReminder {
/// #     type Input = String;
/// #     type Output = ();
/// #     const NAME: &'static str = "send_reminder";
/// #     fn run(_ctx: ActivityContext, _to: String) -> BoxFuture<'static, Result<(), ActivityError>> {
/// #         Box::pin(async { Err(ActivityError::non_retryable("NoMail", "no mail server in tests")) })
/// #     }
/// # }
/// # struct Approval;
/// # impl Workflow for Approval {
/// #     type Input = String;
/// #     type Output = String;
/// #     const NAME: &'static str = "approval";
/// #     fn run(ctx: WorkflowContext, approver: String)
/// #         -> LocalBoxFuture<'static, Result<String, WorkflowError>> {
/// #         Box::pin(async move {
/// // The body of `approval`:
/// ctx.activity::<SendReminder>(approver).await?;
/// let week = Duration::from_secs(7 * 24 * 3600);
/// Ok(match ctx.signal_timeout::<bool>("decision", week).await? {
///     Some(true) => "approved",
///     Some(false) => "rejected",
///     None => "expired",
/// }
/// .to_owned())
/// #         })
/// #     }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // In a #[tokio::test]:
/// let registry = Registry::new().workflow::<Approval>().activity::<SendReminder>();
/// let mut env = TestEnv::new(registry.clone())
///     .mock_activity::<SendReminder>(|approver| {
///         assert_eq!(approver, "lee@example.com");
///         Ok(())
///     });
/// let run = env.start::<Approval>(&"lee@example.com".to_owned())?;
/// env.signal_after(Duration::from_secs(2 * 24 * 3600), "decision", &true)?;
///
/// let outcome = env.run_to_completion::<Approval>().await?;
/// assert_eq!(outcome, Ok("approved".to_owned()));
/// assert_eq!(env.elapsed(), Duration::from_secs(2 * 24 * 3600));
///
/// // The history is what a worker would have recorded, and it replays cleanly.
/// assert!(matches!(env.history().last().map(|e| &e.kind),
///     Some(EventKind::RunCompleted { .. })));
/// let report = durable_core::Replayer::new(registry).replay(run, env.history())?;
/// assert!(matches!(report.outcome, ReplayOutcome::Completed(_)));
/// # Ok(())
/// # }
/// ```
pub struct TestEnv {
    activities: Activities,
    start_ms: i64,
    now_ms: i64,
    seed: u64,
    workflow_id: Option<WorkflowId>,
    max_events: usize,
    timeline: Timeline,
    jitter: ChaCha8Rng,
    run: Option<Run>,
    /// The histories of the runs that continued as new, oldest first.
    continued: Vec<Vec<Event>>,
    /// Histories of the child runs (and their children), by workflow id.
    child_histories: BTreeMap<WorkflowId, Vec<Event>>,
}

/// The run a [`TestEnv`] drives.
struct Run {
    identity: RunIdentity,
    workflow: &'static str,
    machine: RunMachine,
    history: Vec<Event>,
    /// Activities scheduled and not finished yet, by command number.
    activities: BTreeMap<u32, Scheduled>,
    /// An activation failed; the machine must not be used again.
    broken: bool,
    /// The latest value the code published with `ctx.set_status`, as a store keeps it.
    published_status: Option<Payload>,
    /// Child runs started and not run yet, by command number.
    children: BTreeMap<u32, ChildStart>,
}

/// A child run the code started.
struct ChildStart {
    workflow: String,
    workflow_id: WorkflowId,
    input: Payload,
    seed: u64,
    options: ChildOptions,
}

/// An activity call the code scheduled.
struct Scheduled {
    name: String,
    input: Payload,
    options: ActivityOptions,
    scheduled_at_ms: i64,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("now", &clock::format_ms(self.now_ms))
            .field("workflow", &self.run.as_ref().map(|r| r.workflow))
            .field("events", &self.history().len())
            .field("mocks", &self.activities.mocks.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TestEnv {
    /// An environment for the workflows and activities of `registry`.
    ///
    /// The workflow a test starts need not be registered; activities the code calls
    /// must be, or be replaced with a test double.
    pub fn new(registry: Registry) -> Self {
        TestEnv {
            activities: Activities {
                registry,
                mocks: BTreeMap::new(),
            },
            start_ms: DEFAULT_START_MS,
            now_ms: DEFAULT_START_MS,
            seed: DEFAULT_SEED,
            workflow_id: None,
            max_events: DEFAULT_MAX_EVENTS,
            timeline: Timeline::default(),
            jitter: ChaCha8Rng::seed_from_u64(DEFAULT_SEED),
            run: None,
            continued: Vec::new(),
            child_histories: BTreeMap::new(),
        }
    }

    /// Replaces activity `A` with a test double for this environment: every attempt
    /// calls `double` with the decoded input instead of running `A`'s body. A later
    /// double for the same activity replaces an earlier one.
    ///
    /// The double's errors are treated like the real activity's: retried as the call's
    /// retry policy says, recorded when final.
    ///
    /// ```
    /// # use durable_core::testing::TestEnv;
    /// # use durable_core::{Activity, ActivityContext, ActivityError, Registry};
    /// # use futures::future::BoxFuture;
    /// # struct ChargeCard;
    /// # impl Activity for ChargeCard {
    /// #     type Input = u64;
    /// #     type Output = String;
    /// #     const NAME: &'static str = "charge_card";
    /// #     fn run(_: ActivityContext, _: u64) -> BoxFuture<'static, Result<String, ActivityError>> {
    /// #         Box::pin(async { Ok(String::new()) })
    /// #     }
    /// # }
    /// let env = TestEnv::new(Registry::new())
    ///     .mock_activity::<ChargeCard>(|cents| Ok(format!("txn-{cents}")));
    /// ```
    #[must_use]
    pub fn mock_activity<A: Activity>(
        self,
        double: impl Fn(A::Input) -> Result<A::Output, ActivityError> + 'static,
    ) -> Self {
        self.mock_activity_with_context::<A>(move |_ctx, input| double(input))
    }

    /// Like [`TestEnv::mock_activity`], with the attempt's [`ActivityContext`]: its
    /// attempt number, command number and idempotency key. For doubles that fail the
    /// first attempts, say.
    #[must_use]
    pub fn mock_activity_with_context<A: Activity>(
        mut self,
        double: impl Fn(&ActivityContext, A::Input) -> Result<A::Output, ActivityError> + 'static,
    ) -> Self {
        let erased: Mock = Box::new(move |ctx, input| {
            let result = input
                .decode::<A::Input>()
                .map_err(ActivityError::from)
                .and_then(|input| double(&ctx, input))
                .and_then(|output| Payload::encode(&output).map_err(ActivityError::from));
            std::future::ready(result).boxed_local()
        });
        self.activities.mocks.insert(A::NAME.to_owned(), erased);
        self
    }

    /// Like [`TestEnv::mock_activity_with_context`], with an async double, awaited on the
    /// caller's executor: `.mock_activity_async::<A>(async |ctx, input| { .. })`.
    #[must_use]
    pub fn mock_activity_async<A: Activity>(
        mut self,
        double: impl AsyncFn(ActivityContext, A::Input) -> Result<A::Output, ActivityError> + 'static,
    ) -> Self {
        let double = Rc::new(double);
        let erased: Mock = Box::new(move |ctx, input| {
            let double = double.clone();
            async move {
                let input = input.decode::<A::Input>()?;
                let output = double(ctx, input).await?;
                Ok::<_, ActivityError>(Payload::encode(&output)?)
            }
            .boxed_local()
        });
        self.activities.mocks.insert(A::NAME.to_owned(), erased);
        self
    }

    /// Sets where virtual time starts (by default 2024-01-01T00:00:00Z); the run starts
    /// then, and `ctx.now()` returns it until the first timer fires.
    ///
    /// Times before the Unix epoch or past the year 292,000,000 are clamped.
    #[must_use]
    pub fn start_time(mut self, at: SystemTime) -> Self {
        self.start_ms = system_time_ms(at);
        self.now_ms = self.start_ms;
        self
    }

    /// Sets the seed of the run's random source (`ctx.random()`, `ctx.uuid()`) and of
    /// the retry jitter. Fixed by default, so a test sees the same values every time.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.jitter = ChaCha8Rng::seed_from_u64(seed);
        self
    }

    /// Sets the run's workflow id (by default the workflow's name), which activities see
    /// in their idempotency keys.
    #[must_use]
    pub fn workflow_id(mut self, id: impl Into<String>) -> Self {
        self.workflow_id = Some(WorkflowId(id.into()));
        self
    }

    /// Sets how many events the run may record before the environment stops it as a
    /// loop that never ends (by default 100,000).
    #[must_use]
    pub fn max_events(mut self, limit: usize) -> Self {
        self.max_events = limit;
        self
    }

    /// Starts the run of workflow `W` with `input` at the current virtual time, and runs
    /// its code up to its first wait. Activities it schedules run when the run is driven
    /// ([`TestEnv::run_to_completion`], [`TestEnv::run_for`]).
    ///
    /// Returns the run's identity, for a [`Replayer`] of the history. A workflow the
    /// registry lacks is added to the environment's copy of it, which
    /// [`TestEnv::replay`] uses; a `Replayer` of your own needs it registered.
    ///
    /// # Errors
    ///
    /// [`TestEnvError::AlreadyStarted`] for a second run in one environment,
    /// [`TestEnvError::Encode`] for an input that does not encode, and
    /// [`TestEnvError::Replay`] when the workflow code panics.
    pub fn start<W: Workflow>(&mut self, input: &W::Input) -> Result<RunIdentity, TestEnvError> {
        if let Some(run) = &self.run {
            return Err(TestEnvError::AlreadyStarted {
                workflow: run.workflow.to_owned(),
            });
        }
        if self.activities.registry.find_workflow(W::NAME).is_none() {
            self.activities.registry =
                std::mem::take(&mut self.activities.registry).workflow::<W>();
        }
        let workflow = self
            .activities
            .registry
            .find_workflow(W::NAME)
            .expect("the workflow was registered above")
            .clone();
        let input = Payload::encode(input).map_err(|source| TestEnvError::Encode {
            what: format!("the input of workflow {:?}", W::NAME),
            source,
        })?;
        self.start_erased(workflow, input)
    }

    /// Starts a run of a workflow given by its registry entry, with an encoded input.
    fn start_erased(
        &mut self,
        workflow: Arc<dyn ErasedWorkflow>,
        input: Payload,
    ) -> Result<RunIdentity, TestEnvError> {
        let name = workflow.name();
        let identity = RunIdentity {
            workflow_id: self
                .workflow_id
                .clone()
                .unwrap_or_else(|| WorkflowId(name.to_owned())),
            run_id: RunId("test-run".to_owned()),
        };
        let started = Event {
            id: EventId(1),
            time_ms: self.now_ms,
            kind: EventKind::RunStarted {
                workflow: name.to_owned(),
                input,
                seed: self.seed,
            },
        };
        let machine = RunMachine::new(workflow.as_ref(), identity.clone(), &started)?;
        self.run = Some(Run {
            identity: identity.clone(),
            workflow: name,
            machine,
            history: Vec::new(),
            activities: BTreeMap::new(),
            broken: false,
            published_status: None,
            children: BTreeMap::new(),
        });
        if let Err(e) = self.activate(started.kind) {
            if let Some(run) = self.run.as_mut() {
                run.broken = true;
            }
            return Err(e);
        }
        Ok(identity)
    }

    /// Schedules the signal `name` with body `payload` to arrive `delay` after the
    /// current virtual time. It may be scheduled before the run starts; the environment
    /// delivers it when the clock reaches its time, in order with timers and retries.
    ///
    /// # Errors
    ///
    /// [`TestEnvError::Encode`] when the body does not encode.
    pub fn signal_after<T: Serialize + ?Sized>(
        &mut self,
        delay: Duration,
        name: &str,
        payload: &T,
    ) -> Result<(), TestEnvError> {
        let at = self.now_ms.saturating_add(virtual_ms(delay));
        self.schedule_signal(at, name, payload)
    }

    /// Schedules the signal `name` to arrive at virtual time `at` (or now, if `at` has
    /// passed).
    ///
    /// # Errors
    ///
    /// [`TestEnvError::Encode`] when the body does not encode.
    pub fn signal_at<T: Serialize + ?Sized>(
        &mut self,
        at: SystemTime,
        name: &str,
        payload: &T,
    ) -> Result<(), TestEnvError> {
        self.schedule_signal(system_time_ms(at), name, payload)
    }

    /// Sends the signal `name` now; it is delivered when the run is next driven, before
    /// anything else due now that was scheduled after it.
    ///
    /// # Errors
    ///
    /// [`TestEnvError::Encode`] when the body does not encode.
    pub fn signal<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        payload: &T,
    ) -> Result<(), TestEnvError> {
        self.schedule_signal(self.now_ms, name, payload)
    }

    fn schedule_signal<T: Serialize + ?Sized>(
        &mut self,
        at_ms: i64,
        name: &str,
        payload: &T,
    ) -> Result<(), TestEnvError> {
        let payload = Payload::encode(payload).map_err(|source| TestEnvError::Encode {
            what: format!("the body of signal {name:?}"),
            source,
        })?;
        self.timeline.push(
            at_ms,
            Due::Signal {
                name: name.to_owned(),
                payload,
            },
        );
        Ok(())
    }

    /// Schedules a cancel request `delay` after the current virtual time (see
    /// [`WorkflowContext::cancelled`](crate::WorkflowContext::cancelled)).
    pub fn cancel_after(&mut self, delay: Duration, reason: impl Into<String>) {
        let at = self.now_ms.saturating_add(virtual_ms(delay));
        self.timeline.push(
            at,
            Due::Cancel {
                reason: reason.into(),
            },
        );
    }

    /// Drives the run until it finishes, advancing virtual time past every timer,
    /// retry backoff and scheduled signal it needs, and returns its outcome:
    /// `Ok(output)` or the `Err(WorkflowError)` it failed with. Once the run has
    /// finished, returns the same outcome again.
    ///
    /// Activity bodies that are not replaced by doubles are awaited here, so call it
    /// from the runtime they need (a `#[tokio::test]` for tokio-based activities).
    ///
    /// # Errors
    ///
    /// [`TestEnvError::Stuck`] or [`TestEnvError::NotDurableWait`] when the run waits
    /// for something that will never come (the environment can be given a signal and
    /// driven again); [`TestEnvError::UnknownActivity`], [`TestEnvError::TooManyEvents`]
    /// or [`TestEnvError::Replay`] (a panic in workflow code), after which the run
    /// cannot go on; [`TestEnvError::NotStarted`], [`TestEnvError::WrongWorkflow`] or
    /// [`TestEnvError::Decode`] for a `W` that is not the workflow started.
    pub async fn run_to_completion<W: Workflow>(
        &mut self,
    ) -> Result<Result<W::Output, WorkflowError>, TestEnvError> {
        let run = self.run.as_ref().ok_or(TestEnvError::NotStarted)?;
        if run.workflow != W::NAME {
            return Err(TestEnvError::WrongWorkflow {
                started: run.workflow.to_owned(),
                requested: W::NAME.to_owned(),
            });
        }
        self.drive(None).await?;
        let run = self.run.as_ref().ok_or(TestEnvError::NotStarted)?;
        if run.workflow != W::NAME {
            // The run continued as new as another workflow.
            return Err(TestEnvError::WrongWorkflow {
                started: run.workflow.to_owned(),
                requested: W::NAME.to_owned(),
            });
        }
        match run.machine.outcome() {
            Some(Ok(output)) => {
                output
                    .decode::<W::Output>()
                    .map(Ok)
                    .map_err(|source| TestEnvError::Decode {
                        workflow: W::NAME.to_owned(),
                        source,
                    })
            }
            Some(Err(error)) => Ok(Err(error.clone())),
            None => Err(self.stuck(run)),
        }
    }

    /// [`TestEnv::run_to_completion`] for a test without an async runtime: it blocks
    /// the current thread. Activity bodies that need a runtime (tokio timers, I/O) fail
    /// here; replace them with doubles or use the async form.
    ///
    /// # Errors
    ///
    /// As [`TestEnv::run_to_completion`].
    pub fn run_to_completion_blocking<W: Workflow>(
        &mut self,
    ) -> Result<Result<W::Output, WorkflowError>, TestEnvError> {
        block_on(self.run_to_completion::<W>())
    }

    /// Drives the run for `duration` of virtual time: everything due until then happens
    /// in order, and the clock then stands at the end of the duration, even when the
    /// run finished earlier or waits. For a test that looks at the run half-way, or
    /// sends a signal after inspecting it.
    ///
    /// # Errors
    ///
    /// [`TestEnvError::NotStarted`], and the errors after which the run cannot go on,
    /// as [`TestEnv::run_to_completion`]. A run that waits is not an error here.
    pub async fn run_for(&mut self, duration: Duration) -> Result<(), TestEnvError> {
        let until = self.now_ms.saturating_add(virtual_ms(duration));
        self.drive(Some(until)).await
    }

    /// Like [`TestEnv::run_for`], up to the virtual time `at` (nothing happens when
    /// `at` has passed).
    ///
    /// # Errors
    ///
    /// As [`TestEnv::run_for`].
    pub async fn run_until(&mut self, at: SystemTime) -> Result<(), TestEnvError> {
        self.drive(Some(system_time_ms(at))).await
    }

    /// [`TestEnv::run_for`] without an async runtime; see
    /// [`TestEnv::run_to_completion_blocking`].
    ///
    /// # Errors
    ///
    /// As [`TestEnv::run_for`].
    pub fn run_for_blocking(&mut self, duration: Duration) -> Result<(), TestEnvError> {
        block_on(self.run_for(duration))
    }

    /// The current virtual time.
    pub fn now(&self) -> SystemTime {
        clock::to_system_time(self.now_ms)
    }

    /// The current virtual time in milliseconds since the Unix epoch, as events record it.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Virtual time passed since the start time.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.now_ms.saturating_sub(self.start_ms).unsigned_abs())
    }

    /// The run's history so far: every event, numbered from 1, stamped with virtual time.
    /// Empty before the run starts.
    pub fn history(&self) -> &[Event] {
        self.run.as_ref().map_or(&[], |r| r.history.as_slice())
    }

    /// The histories of the runs that ended with `ctx.continue_as_new(..)`, oldest
    /// first; [`TestEnv::history`] is the current run's. Each ends with its
    /// `RunContinuedAsNew` event and replays on its own with [`Replayer::replay`].
    pub fn continued_histories(&self) -> &[Vec<Event>] {
        &self.continued
    }

    /// The history of the child run with workflow id `workflow_id` (a child of the run,
    /// or of one of its children), once it has run.
    pub fn child_history(&self, workflow_id: &str) -> Option<&[Event]> {
        self.child_histories
            .get(&WorkflowId(workflow_id.to_owned()))
            .map(Vec::as_slice)
    }

    /// The run's identity, once started (the current run's, after a continue-as-new).
    pub fn identity(&self) -> Option<&RunIdentity> {
        self.run.as_ref().map(|r| &r.identity)
    }

    /// What the run last published with `ctx.set_status(..)`, decoded as `T`, as
    /// `Client::query_status` would read it now; `None` before it published anything.
    ///
    /// # Errors
    ///
    /// The value does not decode as `T`.
    pub fn published_status<T: DeserializeOwned>(&self) -> Result<Option<T>, PayloadError> {
        self.run
            .as_ref()
            .and_then(|r| r.published_status.as_ref())
            .map(Payload::decode)
            .transpose()
    }

    /// True once the run has finished, completed or failed (a run that continued as
    /// new goes on in its successor).
    pub fn is_finished(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.machine.outcome().is_some())
    }

    /// Replays the history recorded so far through the workflow code, as
    /// [`Replayer::replay`] does with this environment's registry.
    ///
    /// # Errors
    ///
    /// [`TestEnvError::NotStarted`], or the replay's [`TestEnvError::Replay`] error.
    pub fn replay(&self) -> Result<ReplayReport, TestEnvError> {
        let run = self.run.as_ref().ok_or(TestEnvError::NotStarted)?;
        let replayer = Replayer::new(self.activities.registry.clone());
        Ok(replayer.replay(run.identity.clone(), &run.history)?)
    }

    /// Processes the timeline in order until the run finishes, nothing is left, or the
    /// next item is due after `until`.
    async fn drive(&mut self, until: Option<i64>) -> Result<(), TestEnvError> {
        loop {
            let run = self.run.as_ref().ok_or(TestEnvError::NotStarted)?;
            if run.broken {
                return Err(TestEnvError::Broken);
            }
            if run.machine.continued_as_new().is_some() {
                if let Err(e) = self.follow_chain() {
                    if let Some(run) = self.run.as_mut() {
                        run.broken = true;
                    }
                    return Err(e);
                }
                continue;
            }
            if run.machine.is_finished() {
                break;
            }
            match (self.timeline.next_at(), until) {
                (None, _) => break,
                (Some(at), Some(until)) if at > until => break,
                _ => {}
            }
            let (at, due) = self.timeline.pop().expect("the timeline has a next item");
            self.now_ms = self.now_ms.max(at);
            let step = match due {
                Due::Timer { seq } => self.activate(EventKind::TimerFired { seq }),
                Due::Signal { name, payload } => {
                    self.activate(EventKind::SignalReceived { name, payload })
                }
                Due::Cancel { reason } => self.activate(EventKind::CancelRequested { reason }),
                Due::Attempt { seq, attempt } => self.attempt(seq, attempt).await,
                Due::Child { seq } => self.run_child(seq).await,
                Due::ChildDone { seq, outcome } => self.activate(match outcome {
                    Ok(output) => EventKind::ChildCompleted { seq, output },
                    Err(error) => EventKind::ChildFailed { seq, error },
                }),
            };
            if let Err(e) = step {
                if let Some(run) = self.run.as_mut() {
                    run.broken = true;
                }
                return Err(e);
            }
        }
        if let Some(until) = until {
            self.now_ms = self.now_ms.max(until);
        }
        Ok(())
    }

    /// Runs the child started by command `seq` to its end in an environment of its own
    /// (sharing this one's activities and doubles), from the current virtual time, and
    /// schedules its outcome for the virtual time it finished.
    async fn run_child(&mut self, seq: CommandSeq) -> Result<(), TestEnvError> {
        let run = self.run.as_mut().ok_or(TestEnvError::NotStarted)?;
        let Some(start) = run.children.remove(&seq.0) else {
            return Ok(());
        };
        let Some(workflow) = self
            .activities
            .registry
            .find_workflow(&start.workflow)
            .cloned()
        else {
            self.timeline.push(
                self.now_ms,
                Due::ChildDone {
                    seq,
                    outcome: Err(WorkflowError::new(
                        "UnknownWorkflow",
                        format!(
                            "child workflow {:?} is not registered in this test environment",
                            start.workflow
                        ),
                    )),
                },
            );
            return Ok(());
        };
        let mut child = TestEnv::new(Registry::new());
        std::mem::swap(&mut child.activities, &mut self.activities);
        child.start_ms = self.now_ms;
        child.now_ms = self.now_ms;
        child.seed = start.seed;
        child.max_events = self.max_events;
        child.workflow_id = Some(start.workflow_id.clone());
        if start.options.cancel_policy == ChildCancelPolicy::RequestCancel {
            // The store passes a cancel request of the parent on to such children.
            for (at, reason) in self.timeline.cancels() {
                child.timeline.push(
                    at.max(self.now_ms),
                    Due::Cancel {
                        reason: format!("the parent run was cancelled: {reason}"),
                    },
                );
            }
        }
        let driven = match child.start_erased(workflow, start.input) {
            Ok(_) => Box::pin(child.drive(None)).await,
            Err(e) => Err(e),
        };
        std::mem::swap(&mut child.activities, &mut self.activities);
        driven?;
        let child_run = child.run.take().ok_or(TestEnvError::NotStarted)?;
        let Some(outcome) = child_run.machine.outcome().cloned() else {
            return Err(child.stuck(&child_run));
        };
        self.child_histories.append(&mut child.child_histories);
        self.child_histories
            .insert(start.workflow_id, child_run.history);
        self.timeline.push(
            child.now_ms.max(self.now_ms),
            Due::ChildDone { seq, outcome },
        );
        Ok(())
    }

    /// Runs one attempt of the activity of command `seq`; records its result, or
    /// schedules the next attempt after the backoff.
    async fn attempt(&mut self, seq: CommandSeq, attempt: u32) -> Result<(), TestEnvError> {
        let run = self.run.as_ref().ok_or(TestEnvError::NotStarted)?;
        let Some(call) = run.activities.get(&seq.0) else {
            return Ok(());
        };
        let ctx = ActivityContext::new(
            run.identity.workflow_id.clone(),
            run.identity.run_id.clone(),
            call.name.clone(),
            seq,
            attempt,
        );
        let future = self
            .activities
            .attempt(&call.name, ctx, call.input.clone())
            .ok_or_else(|| TestEnvError::UnknownActivity {
                name: call.name.clone(),
                seq,
            })?;
        let result = future.await;
        let run = self.run.as_mut().ok_or(TestEnvError::NotStarted)?;
        let error = match result {
            Ok(output) => {
                run.activities.remove(&seq.0);
                return self.activate(EventKind::ActivityCompleted {
                    seq,
                    output,
                    attempt,
                });
            }
            Err(error) => error,
        };
        let call = run
            .activities
            .get(&seq.0)
            .expect("only a finished activity leaves the table");
        let retry_at = next_attempt_at(
            &call.options,
            attempt,
            &error,
            call.scheduled_at_ms,
            self.now_ms,
            self.jitter.random::<f64>(),
        );
        match retry_at {
            Some(at) => {
                tracing::debug!(activity = %call.name, seq = seq.0, attempt, %error,
                    retry_at = %clock::format_ms(at), "activity attempt failed; retrying in virtual time");
                self.timeline.push(
                    at,
                    Due::Attempt {
                        seq,
                        attempt: attempt.saturating_add(1),
                    },
                );
                Ok(())
            }
            None => {
                run.activities.remove(&seq.0);
                self.activate(EventKind::ActivityFailed {
                    seq,
                    error: error.with_attempts(attempt),
                })
            }
        }
    }

    /// One activation: applies an inbound event at the current virtual time, then
    /// records the commands the code issued (scheduling their activities and timers),
    /// what else arrived by now if the code returned, and its outcome, each applied
    /// back, as a worker does.
    fn activate(&mut self, kind: EventKind) -> Result<(), TestEnvError> {
        let now = self.now_ms;
        let limit = self.max_events;
        let run = self.run.as_mut().ok_or(TestEnvError::NotStarted)?;
        run.append(now, kind, limit)?;
        for (seq, command) in run.machine.take_commands() {
            match &command {
                Command::ScheduleActivity {
                    name,
                    input,
                    options,
                } => {
                    run.activities.insert(
                        seq.0,
                        Scheduled {
                            name: name.clone(),
                            input: input.clone(),
                            options: options.clone(),
                            scheduled_at_ms: now,
                        },
                    );
                    self.timeline.push(now, Due::Attempt { seq, attempt: 1 });
                }
                Command::StartTimer { duration_ms } => {
                    let duration = i64::try_from(*duration_ms).unwrap_or(i64::MAX);
                    self.timeline
                        .push(now.saturating_add(duration), Due::Timer { seq });
                }
                Command::StartChild {
                    workflow,
                    workflow_id,
                    input,
                    seed,
                    options,
                } => {
                    run.children.insert(
                        seq.0,
                        ChildStart {
                            workflow: workflow.clone(),
                            workflow_id: workflow_id.clone(),
                            input: input.clone(),
                            seed: *seed,
                            options: options.clone(),
                        },
                    );
                    self.timeline.push(now, Due::Child { seq });
                }
                Command::WaitSignal { .. } | Command::RecordMarker { .. } => {}
            }
            run.append(now, command.into_event(seq), limit)?;
        }
        if let Some(status) = run.machine.take_published_status() {
            run.published_status = Some(status);
        }
        if run.machine.outcome().is_some() && run.machine.continued_as_new().is_none() {
            // As a worker does with the rest of an activation's batch: what else has
            // arrived by now (signals, cancel requests, timer firings, child outcomes) is
            // recorded before the run's end, without polling the code, so no signal is
            // dropped. Activity attempts and child runs still to run are not results:
            // they are dropped with the run.
            let arrived = self.timeline.take_due(now, |due| {
                !matches!(due, Due::Attempt { .. } | Due::Child { .. })
            });
            for (_, due) in arrived {
                let kind = match due {
                    Due::Timer { seq } => EventKind::TimerFired { seq },
                    Due::Signal { name, payload } => EventKind::SignalReceived { name, payload },
                    Due::Cancel { reason } => EventKind::CancelRequested { reason },
                    Due::ChildDone { seq, outcome } => match outcome {
                        Ok(output) => EventKind::ChildCompleted { seq, output },
                        Err(error) => EventKind::ChildFailed { seq, error },
                    },
                    Due::Attempt { .. } | Due::Child { .. } => continue,
                };
                run.append(now, kind, limit)?;
            }
        }
        if let Some(outcome) = run.machine.take_outcome() {
            let kind = match outcome {
                Ok(output) => EventKind::RunCompleted { output },
                Err(error) => EventKind::RunFailed { error },
            };
            run.append(now, kind, limit)?;
        }
        if let Some(next) = run.machine.take_continue_as_new() {
            let run_id = RunId(format!("test-run-{}", self.continued.len() + 2));
            run.append(now, next.into_event(run_id), limit)?;
        }
        Ok(())
    }

    /// While the current run has continued as new, starts the run it continued as.
    fn follow_chain(&mut self) -> Result<(), TestEnvError> {
        loop {
            let run = self.run.as_ref().ok_or(TestEnvError::NotStarted)?;
            let next = match (run.machine.continued_as_new(), run.history.last()) {
                (
                    Some(next),
                    Some(Event {
                        kind: EventKind::RunContinuedAsNew { run_id, .. },
                        ..
                    }),
                ) => (next.clone(), run_id.clone()),
                _ => return Ok(()),
            };
            if self.continued.len() >= MAX_CONTINUED_RUNS {
                return Err(TestEnvError::TooManyRuns {
                    limit: MAX_CONTINUED_RUNS,
                });
            }
            self.continue_as_new(next.0, next.1)?;
        }
    }

    /// Ends the current run (its history moves to [`TestEnv::continued_histories`]) and
    /// starts the run it continued as, as a store does in the same transaction: the
    /// signals its code had not taken, the workflow id's signals still to come and its
    /// published status carry over; its activities and timers are dropped.
    fn continue_as_new(
        &mut self,
        next: crate::executor::ContinuedAsNew,
        run_id: RunId,
    ) -> Result<(), TestEnvError> {
        let workflow = self
            .activities
            .registry
            .find_workflow(&next.workflow)
            .ok_or_else(|| TestEnvError::UnknownWorkflow {
                name: next.workflow.clone(),
            })?
            .clone();
        let old = self.run.take().ok_or(TestEnvError::NotStarted)?;
        self.timeline
            .retain(|due| matches!(due, Due::Signal { .. } | Due::Cancel { .. }));
        let identity = RunIdentity {
            workflow_id: old.identity.workflow_id.clone(),
            run_id,
        };
        let started = Event {
            id: EventId(1),
            time_ms: self.now_ms,
            kind: EventKind::RunStarted {
                workflow: next.workflow,
                input: next.input,
                seed: next.seed,
            },
        };
        let machine = RunMachine::new(workflow.as_ref(), identity.clone(), &started)?;
        self.continued.push(old.history);
        self.run = Some(Run {
            identity,
            workflow: workflow.name(),
            machine,
            history: Vec::new(),
            activities: BTreeMap::new(),
            children: BTreeMap::new(),
            broken: false,
            published_status: old.published_status,
        });
        // The signals the old run's code had not taken arrive first, as the store puts
        // them at the head of the new run's inbox (and they go on to the next run, like
        // any signal, should this one continue before they arrive).
        for (name, payload) in next.signals {
            self.timeline
                .push_first(self.now_ms, Due::Signal { name, payload });
        }
        self.activate(started.kind)
    }

    /// Why a run that is not finished cannot go on.
    fn stuck(&self, run: &Run) -> TestEnvError {
        let at = clock::format_ms(self.now_ms);
        let elapsed = self.elapsed();
        let waiting: Vec<String> = run
            .machine
            .pending()
            .into_iter()
            .map(|seq| run.describe(seq))
            .collect();
        if waiting.is_empty() {
            TestEnvError::NotDurableWait { at, elapsed }
        } else {
            TestEnvError::Stuck {
                at,
                elapsed,
                waiting,
            }
        }
    }
}

impl Run {
    /// Applies an event to the machine and appends it to the history.
    fn append(&mut self, time_ms: i64, kind: EventKind, limit: usize) -> Result<(), TestEnvError> {
        if self.history.len() >= limit {
            return Err(TestEnvError::TooManyEvents { limit });
        }
        let event = Event {
            id: EventId(self.machine.last_applied().0 + 1),
            time_ms,
            kind,
        };
        self.machine.apply(&event)?;
        self.history.push(event);
        Ok(())
    }

    /// A command the run waits on, for people: `signal "decision" (command 2)`.
    fn describe(&self, seq: CommandSeq) -> String {
        let recorded = self
            .history
            .iter()
            .find(|e| e.kind.is_command() && e.kind.seq() == Some(seq));
        match recorded.map(|e| &e.kind) {
            Some(EventKind::SignalAwaited { name, .. }) => {
                format!("signal {name:?} (command {seq})")
            }
            Some(EventKind::ActivityScheduled { name, .. }) => {
                format!("activity {name:?} (command {seq})")
            }
            Some(EventKind::ChildStarted {
                workflow,
                workflow_id,
                ..
            }) => format!("child run {workflow_id:?} of workflow {workflow:?} (command {seq})"),
            Some(EventKind::TimerStarted { duration_ms, .. }) => format!(
                "a timer of {} (command {seq})",
                humantime::format_duration(Duration::from_millis(*duration_ms))
            ),
            _ => format!("command {seq}"),
        }
    }
}

/// Milliseconds since the Unix epoch of `at`, clamped to the range events can record.
fn system_time_ms(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => clock::duration_ms(since),
        Err(_) => 0,
    }
}

/// Wakes the thread blocked in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` to completion on the current thread, parking between wake-ups.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}
