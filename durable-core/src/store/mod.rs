//! The [`Store`] trait: everything the engine persists, with no SQL in sight.
//!
//! # Invariants every store keeps
//!
//! - Event ids of a run are contiguous from 1, allocated inside the appending
//!   transaction; history is append-only.
//! - An append with a stale fencing token fails with [`StoreError::Fenced`] and writes
//!   nothing. A commit is all or nothing.
//! - Every other table (status, task queues, timers) changes in the same transaction as
//!   the events that explain it.
//! - Due times and lease expiry are judged by the store's clock.
//! - Every query is scoped by the store handle's namespace.
//! - A commit that continues a run as new ends it and starts the next run of its
//!   workflow id in the same transaction (see [`Commit::finish`]): the workflow id always
//!   has exactly one latest run, and nothing sent to it falls between the two.
//! - A task queue's limits are judged and taken in the transaction that starts an
//!   attempt (a claim, or the commit creating a local one), never from a cached view.
//! - A child run is created by the commit that records its `ChildStarted` event, in the
//!   same transaction, in the parent's namespace. Whatever ends a run (its commit, its
//!   execution timeout, a reset) delivers its outcome to its parent's inbox and asks its
//!   children with the `request_cancel` policy to cancel, in that same transaction.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod continuation;
#[cfg(feature = "postgres")]
pub mod postgres;
mod queues;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod schedule_rows;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sealing;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use crate::error::{ActivityError, StoreError};
use crate::event::{ActivityOptions, ChildCancelPolicy, Event, EventKind};
use crate::ids::{CommandSeq, EventId, FencingToken, RunId, RunKey, WorkerId, WorkflowId};
use crate::payload::Payload;
use crate::schedule::{NewSchedule, ScheduleFire, ScheduleInfo};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

pub use queues::{QueueInfo, QueueLimit, RateLimit};

/// The namespace used when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The state of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// In flight.
    Running,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped by an activation failure (a panic, non-determinism); `retry` resumes it.
    Suspended,
    /// Ended by `ctx.continue_as_new(..)`: a newer run of the same workflow id carries
    /// on (its id is in this run's last event, `RunContinuedAsNew`).
    Continued,
}

impl RunStatus {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Suspended => "suspended",
            RunStatus::Continued => "continued",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "suspended" => RunStatus::Suspended,
            "continued" => RunStatus::Continued,
            _ => return None,
        })
    }

    /// True for completed and failed runs, and runs that continued as new (the run is
    /// over; its workflow id goes on in the next run).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Continued
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to start a run.
#[derive(Clone, Debug)]
pub struct StartRequest {
    /// The workflow id; a second start with the same id returns the existing run.
    pub workflow_id: WorkflowId,
    /// The registered workflow name.
    pub workflow: String,
    /// The encoded input.
    pub input: Payload,
    /// The seed of the run's random source.
    pub seed: u64,
    /// End the run as failed if it is still running (or suspended) this long after it
    /// started, by the store's clock. Must be longer than zero.
    pub execution_timeout: Option<Duration>,
    /// The workflow task queue: only workers serving it claim the run (empty: the
    /// default queue). Runs continued as new, reset runs and child runs keep it.
    pub task_queue: String,
}

impl StartRequest {
    /// The execution timeout in milliseconds, checked.
    pub(crate) fn execution_timeout_ms(&self) -> Result<Option<i64>, StoreError> {
        match self.execution_timeout {
            None => Ok(None),
            Some(t) if t.is_zero() => Err(StoreError::Invalid(
                "the execution timeout must be longer than zero".into(),
            )),
            Some(t) => Ok(Some(
                i64::try_from(t.as_millis()).unwrap_or(i64::MAX).max(1),
            )),
        }
    }
}

/// What a start did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartOutcome {
    /// The run's store key.
    pub key: RunKey,
    /// The run id.
    pub run_id: RunId,
    /// The workflow of the run (of the existing one when not created).
    pub workflow: String,
    /// False when a run with this workflow id already existed.
    pub created: bool,
}

/// A run as listed and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The store key.
    pub key: RunKey,
    /// The workflow id.
    pub workflow_id: WorkflowId,
    /// The run id.
    pub run_id: RunId,
    /// The workflow name.
    pub workflow: String,
    /// The status.
    pub status: RunStatus,
    /// When the run was created (ms since the epoch).
    pub created_at_ms: i64,
    /// When anything was last appended (ms since the epoch).
    pub updated_at_ms: i64,
    /// The number of the last event.
    pub last_event_id: EventId,
    /// The worker holding the lease, if any.
    pub owner: Option<String>,
    /// When the lease expires (ms since the epoch).
    pub lease_expires_at_ms: i64,
    /// Why the run is suspended.
    pub reason: Option<String>,
    /// Activations that failed in a row (panics, divergence, crashes).
    pub activation_failures: u32,
    /// When the run's execution timeout ends it (ms since the epoch), if it has one.
    #[serde(default)]
    pub execution_deadline_ms: Option<i64>,
    /// The workflow task queue the run is on (empty: the default queue).
    #[serde(default)]
    pub task_queue: String,
}

/// Which runs to list.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs with no event appended since this time (ms since the epoch).
    pub updated_before_ms: Option<i64>,
    /// Only runs created at or after this time (ms since the epoch).
    pub created_after_ms: Option<i64>,
    /// Only runs of this workflow id: the runs it went through (resets,
    /// continue-as-new), newest first.
    pub workflow_id: Option<WorkflowId>,
    /// At most this many (newest first); 0 means 1,000.
    pub limit: usize,
}

/// A run a worker claimed for an activation.
#[derive(Clone, Debug)]
pub struct ClaimedRun {
    /// The store key.
    pub key: RunKey,
    /// The workflow id.
    pub workflow_id: WorkflowId,
    /// The run id.
    pub run_id: RunId,
    /// The workflow name.
    pub workflow: String,
    /// The fencing token to commit with.
    pub fence: FencingToken,
    /// The last event at claim time.
    pub last_event_id: EventId,
    /// Activations that failed in a row, including crashed ones.
    pub activation_failures: u32,
}

/// An activity task the commit creates, for an `ActivityScheduled` event of the commit.
#[derive(Clone, Debug)]
pub struct NewActivityTask {
    /// The command number.
    pub seq: CommandSeq,
    /// The activity name.
    pub name: String,
    /// The task queue (empty: default).
    pub task_queue: String,
    /// True when the committing worker runs it at once (attempt 1, leased to it).
    pub local: bool,
}

/// An inbound event waiting for the run's owner to apply it.
#[derive(Clone, Debug)]
pub struct InboxItem {
    /// The inbox entry's id (increasing in arrival order).
    pub id: i64,
    /// When it arrived (ms since the epoch).
    pub time_ms: i64,
    /// The event.
    pub kind: EventKind,
}

/// Everything one activation (or several, in order) of a run appends, atomically.
#[derive(Clone, Debug)]
pub struct Commit {
    /// The run.
    pub key: RunKey,
    /// The committing worker.
    pub worker: WorkerId,
    /// The fencing token from the claim.
    pub fence: FencingToken,
    /// The run's last event as the committer knows it; `events` are numbered from the
    /// next one. A mismatch means another writer appended: the commit is refused.
    pub after: EventId,
    /// The events to append, in order, with their times.
    pub events: Vec<(i64, EventKind)>,
    /// Inbox entries applied by this commit (moved into `events`).
    pub consumed_inbox: Vec<i64>,
    /// The lease of local activity attempts created by this commit.
    pub lease: Duration,
    /// Activity tasks to create.
    pub activities: Vec<NewActivityTask>,
    /// Local activity attempts whose results are among `events`: (command, attempt).
    pub finished_activities: Vec<(CommandSeq, u32)>,
    /// Local timers whose firing is among `events`.
    pub fired_timers: Vec<CommandSeq>,
    /// Set when the run finishes with this commit.
    ///
    /// [`RunStatus::Continued`] needs the last of `events` to be a
    /// [`EventKind::RunContinuedAsNew`] (and that event needs it): the same transaction
    /// starts the run it names, with its workflow, input and seed, as the latest run of
    /// the workflow id. Signals and cancel requests waiting in the old run's inbox move
    /// to the new run (a signal sent during the last activation is not lost); the old
    /// run's pending activities, timers and other inbox entries are dropped. The new run
    /// keeps the old run's execution deadline (the timeout spans the chain) and its
    /// published status until it publishes its own.
    pub finish: Option<RunStatus>,
    /// Keep the lease after the commit (false releases it).
    pub keep_lease: bool,
    /// The status the workflow published during the activation (`ctx.set_status`), to
    /// replace the run's previous one; `None` leaves that as it is.
    pub published_status: Option<Payload>,
}

/// Where a commit's events landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The first appended event.
    pub first: EventId,
    /// The last appended event.
    pub last: EventId,
    /// Activities asked for as local ([`NewActivityTask::local`]) that the commit queued
    /// instead, because their task queue was at its concurrency or rate limit: the
    /// committing worker must not run them; a claim starts them when the queue has room.
    pub queued: Vec<CommandSeq>,
}

/// An activity attempt a worker claimed.
#[derive(Clone, Debug)]
pub struct ActivityTask {
    /// The run.
    pub key: RunKey,
    /// The workflow id.
    pub workflow_id: WorkflowId,
    /// The run id.
    pub run_id: RunId,
    /// The command number.
    pub seq: CommandSeq,
    /// The activity name.
    pub name: String,
    /// The encoded input.
    pub input: Payload,
    /// The options from the schedule.
    pub options: ActivityOptions,
    /// This attempt's number (the fencing token of the attempt).
    pub attempt: u32,
    /// When the activity was scheduled (ms since the epoch).
    pub scheduled_at_ms: i64,
    /// The details of the last heartbeat an earlier attempt recorded, if any.
    pub last_heartbeat: Option<Payload>,
}

/// How an activity attempt ended.
#[derive(Clone, Debug)]
pub enum AttemptResult {
    /// It succeeded.
    Completed(Payload),
    /// It failed for good.
    Failed(ActivityError),
    /// It failed and will be tried again at this time.
    Retry {
        /// The attempt's error.
        error: ActivityError,
        /// When the next attempt may start (ms since the epoch).
        next_attempt_at_ms: i64,
    },
}

/// An activity still to finish, for `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingActivity {
    /// The command number.
    pub seq: CommandSeq,
    /// The activity name.
    pub name: String,
    /// The task queue.
    pub task_queue: String,
    /// Attempts started so far.
    pub attempt: u32,
    /// The worker running it, if any.
    pub owner: Option<String>,
    /// When the next attempt may start (ms since the epoch).
    pub available_at_ms: i64,
    /// The last attempt's error, if any.
    pub last_error: Option<String>,
    /// When the current (or last) attempt last sent a heartbeat (ms since the epoch).
    #[serde(default)]
    pub last_heartbeat_at_ms: Option<i64>,
}

/// A timer still to fire, for `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingTimer {
    /// The command number.
    pub seq: CommandSeq,
    /// When it is due (ms since the epoch).
    pub fire_at_ms: i64,
}

/// The run that started a run as its child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRun {
    /// The parent's workflow id.
    pub workflow_id: WorkflowId,
    /// The parent's run id.
    pub run_id: RunId,
    /// The command number of the parent's `ChildStarted` event.
    pub seq: CommandSeq,
}

/// A child run of a run, for `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRun {
    /// The command number of the parent's `ChildStarted` event.
    pub seq: CommandSeq,
    /// The child's workflow id.
    pub workflow_id: WorkflowId,
    /// The child's run id.
    pub run_id: RunId,
    /// The child's workflow name.
    pub workflow: String,
    /// The child's status.
    pub status: RunStatus,
    /// What the parent's cancellation (or end) does to the child.
    pub cancel_policy: ChildCancelPolicy,
}

/// Where a run sits among child runs: the run that started it, and the runs it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFamily {
    /// The parent, when the run is a child run.
    pub parent: Option<ParentRun>,
    /// The child runs, by command number.
    pub children: Vec<ChildRun>,
}

/// The inbound event a parent receives at its child's end: the child's terminal event
/// (`RunCompleted` or `RunFailed`) as `ChildCompleted` or `ChildFailed` for the parent's
/// command `seq`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn outcome_for_parent(seq: CommandSeq, terminal: &EventKind) -> Option<EventKind> {
    match terminal {
        EventKind::RunCompleted { output } => Some(EventKind::ChildCompleted {
            seq,
            output: output.clone(),
        }),
        EventKind::RunFailed { error } => Some(EventKind::ChildFailed {
            seq,
            error: error.clone(),
        }),
        _ => None,
    }
}

/// The persistence the engine needs. One implementation per database; the same
/// conformance tests run against each.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The namespace this handle is scoped to.
    fn namespace(&self) -> &str;

    /// Starts a run, or returns the latest run of the same workflow id.
    async fn start_run(&self, req: StartRequest) -> Result<StartOutcome, StoreError>;

    /// Claims up to `limit` runs that have unapplied events and no live owner (or are
    /// owned by `worker` already), leasing them for `lease`. Only runs of a workflow named
    /// in `workflows` (the ones the worker registers) on a task queue in `queues` (the
    /// ones it serves; the empty string is the default queue) are claimed: any other run
    /// stays ready, unowned and uncounted, for a worker that can run it.
    async fn claim_runs(
        &self,
        worker: &WorkerId,
        workflows: &[String],
        queues: &[String],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedRun>, StoreError>;

    /// The events of a run after `after`, in order.
    async fn read_history(&self, key: RunKey, after: EventId) -> Result<Vec<Event>, StoreError>;

    /// The inbound events waiting for the run's owner, in arrival order.
    async fn read_inbox(&self, key: RunKey) -> Result<Vec<InboxItem>, StoreError>;

    /// Appends an activation's events and index changes, checking the fencing token.
    /// A local activity on a queue with limits starts only when the queue has room (and
    /// takes it); otherwise it is queued for a claim and listed in
    /// [`CommitOutcome::queued`].
    ///
    /// Each `ChildStarted` event among `events` starts its child run in the same
    /// transaction (in this namespace, with the parent, the command number and the
    /// cancel policy recorded); when its workflow id is taken by any run, no child starts
    /// and a `ChildFailed` of kind `WorkflowIdInUse` waits in the parent's inbox instead.
    /// A commit that finishes the run delivers its outcome to its parent's inbox (as
    /// `ChildCompleted` or `ChildFailed`) and asks its running children with the
    /// `request_cancel` policy to cancel, recursively.
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError>;

    /// Records that an activation of the run failed; after too many in a row the run is
    /// suspended with `reason`. Releases the lease either way.
    async fn activation_failed(
        &self,
        key: RunKey,
        worker: &WorkerId,
        fence: FencingToken,
        reason: &str,
        suspend: bool,
    ) -> Result<(), StoreError>;

    /// Hands back leases (graceful shutdown, cache eviction).
    async fn release_runs(&self, worker: &WorkerId, keys: &[RunKey]) -> Result<(), StoreError>;

    /// Extends the leases of the runs `worker` owns and of `attempts`, the activity
    /// attempts it is running or holds a result of. An attempt leased to `worker` but not
    /// in `attempts` (a claim whose answer was lost, a commit reported failed that
    /// landed) is not renewed: it expires and is claimed again, rather than staying
    /// leased to a worker that will never run it.
    async fn renew_leases(
        &self,
        worker: &WorkerId,
        lease: Duration,
        attempts: &[(RunKey, CommandSeq)],
    ) -> Result<(), StoreError>;

    /// Claims up to `limit` due activity attempts whose name is in `names` and whose
    /// task queue is in `queues` (the empty string is the default queue), so a pool of
    /// workers can serve only some queues. Attempts of a queue with limits
    /// ([`Store::set_queue_limit`]) start only while it has room, judged and taken in the
    /// claiming transaction, so workers sharing the store never exceed the limits
    /// together.
    async fn claim_activities(
        &self,
        worker: &WorkerId,
        names: &[String],
        queues: &[String],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ActivityTask>, StoreError>;

    /// Records how an attempt claimed with [`Store::claim_activities`] (or created
    /// local) ended. A superseded attempt gets [`StoreError::Conflict`].
    async fn report_attempt(
        &self,
        worker: &WorkerId,
        key: RunKey,
        seq: CommandSeq,
        attempt: u32,
        result: AttemptResult,
    ) -> Result<(), StoreError>;

    /// Records a heartbeat of an attempt claimed by `worker` (or created local for it):
    /// keeps `details` for the next attempt and pushes the attempt's heartbeat deadline
    /// (when it has a heartbeat timeout) to the store's clock now plus the timeout.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when the attempt is no longer current (it timed out, was
    /// superseded, or the activity finished); nothing is written.
    async fn record_heartbeat(
        &self,
        worker: &WorkerId,
        key: RunKey,
        seq: CommandSeq,
        attempt: u32,
        details: Payload,
    ) -> Result<(), StoreError>;

    /// Ends up to `limit` attempts whose heartbeat deadline (their start or last
    /// heartbeat plus the heartbeat timeout, by the store's clock) has passed: each is
    /// failed with an error of kind `HeartbeatTimeout` and retried by its retry policy,
    /// or, when the policy says no more, its activity fails (into the run's inbox). The
    /// attempt's owner is fenced out: its heartbeats and its report are refused. Returns
    /// how many attempts were ended.
    async fn time_out_heartbeats(&self, limit: usize) -> Result<usize, StoreError>;

    /// Ends up to `limit` runs, running or suspended, whose execution deadline (their
    /// start plus their execution timeout, by the store's clock) has passed: each gets a
    /// `RunTimedOut` and a `RunFailed` event (kind `ExecutionTimeout`), its pending
    /// activity tasks, timers and inbox are removed, and its owner is fenced out.
    /// Returns how many runs were ended.
    async fn time_out_runs(&self, limit: usize) -> Result<usize, StoreError>;

    /// Fires due timers of runs without a live owner (and any overdue by more than
    /// `grace`); returns how many fired.
    async fn fire_due_timers(&self, limit: usize, grace: Duration) -> Result<usize, StoreError>;

    /// Appends a signal to the latest run of `workflow_id`.
    async fn signal(
        &self,
        workflow_id: &WorkflowId,
        name: &str,
        payload: Payload,
    ) -> Result<(), StoreError>;

    /// Asks the latest run of `workflow_id` to cancel, and with it, in the same
    /// transaction, its running child runs with the `request_cancel` policy and theirs,
    /// recursively (each is asked once).
    async fn request_cancel(
        &self,
        workflow_id: &WorkflowId,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// Starts a new run of `workflow_id` whose history is the latest run's, cut after
    /// event `to`; activities and timers pending at that point are scheduled again and
    /// unapplied signals move over. The old run, if not finished, ends as failed with
    /// kind `Reset` (which its parent, if it is a child run, receives; the new run has
    /// no parent). Child runs started before the cut and unfinished at it belong to the
    /// new run (an outcome they already had is delivered to it again); the old run's
    /// other children are treated as at any end of their parent.
    async fn reset_run(
        &self,
        workflow_id: &WorkflowId,
        to: EventId,
    ) -> Result<StartOutcome, StoreError>;

    /// Puts a suspended run back in line for an activation.
    async fn resume(&self, workflow_id: &WorkflowId) -> Result<(), StoreError>;

    /// The latest run of `workflow_id`.
    async fn find_run(&self, workflow_id: &WorkflowId) -> Result<Option<RunInfo>, StoreError>;

    /// Runs matching `filter`, newest first.
    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunInfo>, StoreError>;

    /// Activities of a run still to finish.
    async fn pending_activities(&self, key: RunKey) -> Result<Vec<PendingActivity>, StoreError>;

    /// Timers of a run still to fire.
    async fn pending_timers(&self, key: RunKey) -> Result<Vec<PendingTimer>, StoreError>;

    /// The status the run last published with `ctx.set_status` (written by
    /// [`Store::commit`]), decoded from the store's codec; `None` when it published none.
    /// A finished run keeps its last value.
    async fn published_status(&self, key: RunKey) -> Result<Option<Payload>, StoreError>;

    /// Sets the limits of task queue `queue` (the empty string is the default queue),
    /// replacing any it had, for every worker sharing this store and namespace. The rate
    /// limit's bucket starts full. Attempts already running count against the new
    /// concurrency limit; none is stopped.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for a limit [`QueueLimit::validate`] refuses or a bad
    /// queue name; nothing is written.
    async fn set_queue_limit(&self, queue: &str, limit: QueueLimit) -> Result<(), StoreError>;

    /// Removes the limits of `queue`; false when it had none.
    async fn clear_queue_limit(&self, queue: &str) -> Result<bool, StoreError>;

    /// The limits of `queue` and its running and waiting attempts, by the store's clock
    /// (a queue never used shows no limit and zero attempts).
    async fn queue_info(&self, queue: &str) -> Result<QueueInfo, StoreError>;

    /// Every queue with a limit or with attempts, ordered by name.
    async fn list_queues(&self) -> Result<Vec<QueueInfo>, StoreError>;

    /// The run's parent (when it is a child run) and its child runs, in this namespace.
    async fn run_family(&self, key: RunKey) -> Result<RunFamily, StoreError>;

    /// A handle that is notified when this process makes new work available, so workers
    /// in the same process need not wait for their next poll.
    fn work_notifier(&self) -> Arc<tokio::sync::Notify>;

    // Schedules (see [`crate::schedule`]).

    /// Creates a schedule; its first tick is the first one of its spec after the store's
    /// clock now. With `replace`, an existing schedule of the same id takes the new
    /// definition (and a fresh next tick; its record of ticks stays).
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleExists`] when the id is taken and `replace` is false;
    /// [`StoreError::Invalid`] for a definition [`NewSchedule::validate`] refuses.
    async fn create_schedule(
        &self,
        schedule: NewSchedule,
        replace: bool,
    ) -> Result<ScheduleInfo, StoreError>;

    /// The schedule of this id, if any.
    async fn get_schedule(&self, id: &str) -> Result<Option<ScheduleInfo>, StoreError>;

    /// Every schedule of the namespace, by id.
    async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError>;

    /// Pauses (`paused`) or resumes a schedule. A paused schedule starts nothing; on
    /// resume its next tick is the first after the store's clock now, so ticks that came
    /// while it was paused are not caught up.
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleNotFound`].
    async fn set_schedule_paused(&self, id: &str, paused: bool)
    -> Result<ScheduleInfo, StoreError>;

    /// Deletes a schedule and its record of ticks; the runs it started stay.
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleNotFound`].
    async fn delete_schedule(&self, id: &str) -> Result<(), StoreError>;

    /// Starts a run of the schedule now (tick = the store's clock), paused or not and
    /// whatever its overlap policy, in one transaction with its record.
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleNotFound`].
    async fn trigger_schedule(&self, id: &str) -> Result<ScheduleFire, StoreError>;

    /// Fires up to `limit` schedules that are due by the store's clock and not paused:
    /// for each, in one transaction, starts the runs its [`plan_fires`](crate::schedule::plan_fires)
    /// says (workflow id [`tick_workflow_id`](crate::schedule::tick_workflow_id), so a
    /// tick never starts two runs), records each tick, counts the missed ones, and moves
    /// its next fire time past now. Workers racing for the same schedule start each
    /// tick's run once. Returns how many schedules were handled.
    async fn fire_due_schedules(&self, limit: usize) -> Result<usize, StoreError>;

    /// The ticks recorded for a schedule, newest first, at most `limit` (0: 1,000).
    ///
    /// # Errors
    ///
    /// [`StoreError::ScheduleNotFound`].
    async fn schedule_fires(&self, id: &str, limit: usize)
    -> Result<Vec<ScheduleFire>, StoreError>;
}

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;
