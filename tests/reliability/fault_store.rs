//! [`FaultStore`]: a [`Store`] wrapper that makes a seeded share of calls fail the ways a
//! real database can.
//!
//! Before the call: `Busy` (the lock was not had), `Io` (an i/o error), `Full` (an i/o
//! error saying the disk is full), a latency spike of up to twice the lease. After the
//! call: an *ambiguous commit*: the inner call committed, and the wrapper reports an i/o
//! error anyway (FoundationDB's `commit_unknown_result`). For commits only: a *lost
//! lease*: just before the commit, another owner takes the run (through
//! [`FaultStore::with_thief`]), so the store itself refuses the commit by its fencing
//! token.
//!
//! The injected errors say `injected` so logs tell them from real ones.

use crate::support::Rng;
use async_trait::async_trait;
use durable::store::{
    ActivityTask, AttemptResult, ClaimedRun, Commit, CommitOutcome, InboxItem, PendingActivity,
    PendingTimer, QueueInfo, QueueLimit, RunFilter, RunInfo, StartOutcome, StartRequest, Store,
};
use durable::{Event, EventId, Payload, StoreError, WorkflowId};
use durable_core::ids::{CommandSeq, FencingToken, RunKey, WorkerId};
use durable_core::schedule::{NewSchedule, ScheduleFire, ScheduleInfo};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The kinds of fault, in the order of [`FaultCounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `StoreError::Busy` before the call.
    Busy,
    /// `StoreError::Io` before the call.
    Io,
    /// `StoreError::Io("disk full")` before the call.
    Full,
    /// The call commits; the caller gets `StoreError::Io`.
    Ambiguous,
    /// The call is delayed (up to twice the lease) and then made.
    Latency,
    /// The run's lease is taken by another owner just before the commit.
    LostLease,
}

/// Every fault kind.
pub(crate) const KINDS: [Fault; 6] = [
    Fault::Busy,
    Fault::Io,
    Fault::Full,
    Fault::Ambiguous,
    Fault::Latency,
    Fault::LostLease,
];

/// Faults injected so far, by kind.
#[derive(Debug, Default)]
pub(crate) struct FaultCounts([AtomicU64; 6]);

impl FaultCounts {
    /// How many of `kind`.
    pub(crate) fn get(&self, kind: Fault) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }

    /// All of them.
    pub(crate) fn total(&self) -> u64 {
        KINDS.iter().map(|k| self.get(*k)).sum()
    }

    /// `kind=n` for each kind.
    pub(crate) fn describe(&self) -> String {
        KINDS
            .iter()
            .map(|k| format!("{k:?}={}", self.get(*k)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Steals a run's lease (used for [`Fault::LostLease`]).
pub(crate) type Thief = Box<dyn Fn(RunKey) + Send + Sync>;

/// The wrapper.
pub(crate) struct FaultStore<S: Store + ?Sized> {
    inner: Arc<S>,
    rng: Mutex<Rng>,
    /// Faults per thousand calls.
    per_mille: u64,
    max_latency: Duration,
    enabled: AtomicBool,
    counts: Arc<FaultCounts>,
    thief: Option<Thief>,
    /// Commits that create local activity attempts still to be made ambiguous, whatever
    /// the rate (a scripted fault for regression tests).
    scripted_ambiguous: AtomicU64,
    /// Activity claims that took attempts still to be reported as failed.
    scripted_ambiguous_claims: AtomicU64,
    /// Lease renewals fail (busy) while set.
    fail_renewals: AtomicBool,
}

/// Whether a call writes (and so can commit ambiguously) or only reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Write,
    Commit,
}

impl<S: Store + ?Sized> FaultStore<S> {
    /// Wraps `inner`; `per_mille` of the calls fail, with latency spikes up to
    /// `max_latency`.
    pub(crate) fn new(inner: Arc<S>, seed: u64, per_mille: u64, max_latency: Duration) -> Self {
        FaultStore {
            inner,
            rng: Mutex::new(Rng::new(seed)),
            per_mille,
            max_latency,
            enabled: AtomicBool::new(true),
            counts: Arc::new(FaultCounts::default()),
            thief: None,
            scripted_ambiguous: AtomicU64::new(0),
            scripted_ambiguous_claims: AtomicU64::new(0),
            fail_renewals: AtomicBool::new(false),
        }
    }

    /// Makes every lease renewal fail (busy) while `on`.
    pub(crate) fn fail_renewals(&self, on: bool) {
        self.fail_renewals.store(on, Ordering::SeqCst);
    }

    /// Makes the next `n` commits that create local activity attempts ambiguous.
    pub(crate) fn script_ambiguous_local_commits(&self, n: u64) {
        self.scripted_ambiguous.store(n, Ordering::SeqCst);
    }

    /// Makes the next `n` activity claims that take attempts report an error after
    /// taking them (the answer lost on the way back).
    pub(crate) fn script_ambiguous_claims(&self, n: u64) {
        self.scripted_ambiguous_claims.store(n, Ordering::SeqCst);
    }

    /// Lets the wrapper take leases away (for [`Fault::LostLease`]).
    pub(crate) fn with_thief(mut self, thief: Thief) -> Self {
        self.thief = Some(thief);
        self
    }

    /// The counters (shared, so they can be read while the store is in use).
    pub(crate) fn counts(&self) -> Arc<FaultCounts> {
        self.counts.clone()
    }

    /// Turns injection on or off.
    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    fn pick(&self, call: Call) -> Option<(Fault, Duration)> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if rng.range(0, 1000) >= self.per_mille {
            return None;
        }
        let kinds: &[Fault] = match call {
            Call::Read => &[Fault::Busy, Fault::Io, Fault::Latency],
            Call::Write => &[
                Fault::Busy,
                Fault::Io,
                Fault::Full,
                Fault::Ambiguous,
                Fault::Latency,
            ],
            Call::Commit => &KINDS,
        };
        let kind = kinds[usize::try_from(rng.range(0, kinds.len() as u64)).unwrap_or(0)];
        let max = u64::try_from(self.max_latency.as_millis()).unwrap_or(u64::MAX);
        let delay = Duration::from_millis(rng.range(max / 4, max + 1));
        self.counts.0[kind as usize].fetch_add(1, Ordering::Relaxed);
        Some((kind, delay))
    }

    /// Runs `f` with whatever fault `pick` chose.
    async fn around<T, F>(&self, call: Call, key: Option<RunKey>, f: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        match self.pick(call) {
            None => f.await,
            Some((Fault::Busy, _)) => Err(StoreError::Busy("injected: database is locked".into())),
            Some((Fault::Io, _)) => Err(StoreError::Io("injected: disk i/o error".into())),
            Some((Fault::Full, _)) => {
                Err(StoreError::Io("injected: database or disk is full".into()))
            }
            Some((Fault::Latency, d)) => {
                tokio::time::sleep(d).await;
                f.await
            }
            Some((Fault::Ambiguous, _)) => {
                f.await?;
                Err(StoreError::Io(
                    "injected: the commit's outcome is unknown (it committed)".into(),
                ))
            }
            Some((Fault::LostLease, _)) => {
                if let (Some(thief), Some(key)) = (&self.thief, key) {
                    thief(key);
                }
                f.await
            }
        }
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for FaultStore<S> {
    fn namespace(&self) -> &str {
        self.inner.namespace()
    }

    async fn start_run(&self, req: StartRequest) -> Result<StartOutcome, StoreError> {
        self.around(Call::Write, None, self.inner.start_run(req))
            .await
    }

    async fn claim_runs(
        &self,
        worker: &WorkerId,
        workflows: &[String],
        queues: &[String],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        self.around(
            Call::Write,
            None,
            self.inner
                .claim_runs(worker, workflows, queues, limit, lease),
        )
        .await
    }

    async fn read_history(&self, key: RunKey, after: EventId) -> Result<Vec<Event>, StoreError> {
        self.around(Call::Read, None, self.inner.read_history(key, after))
            .await
    }

    async fn read_inbox(&self, key: RunKey) -> Result<Vec<InboxItem>, StoreError> {
        self.around(Call::Read, None, self.inner.read_inbox(key))
            .await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        let key = commit.key;
        if commit.activities.iter().any(|a| a.local)
            && self
                .scripted_ambiguous
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            self.counts.0[Fault::Ambiguous as usize].fetch_add(1, Ordering::Relaxed);
            self.inner.commit(commit).await?;
            return Err(StoreError::Io(
                "injected: the commit's outcome is unknown (it committed)".into(),
            ));
        }
        self.around(Call::Commit, Some(key), self.inner.commit(commit))
            .await
    }

    async fn activation_failed(
        &self,
        key: RunKey,
        worker: &WorkerId,
        fence: FencingToken,
        reason: &str,
        suspend: bool,
    ) -> Result<(), StoreError> {
        self.around(
            Call::Write,
            None,
            self.inner
                .activation_failed(key, worker, fence, reason, suspend),
        )
        .await
    }

    async fn release_runs(&self, worker: &WorkerId, keys: &[RunKey]) -> Result<(), StoreError> {
        self.around(Call::Write, None, self.inner.release_runs(worker, keys))
            .await
    }

    async fn renew_leases(
        &self,
        worker: &WorkerId,
        lease: Duration,
        attempts: &[(RunKey, CommandSeq)],
    ) -> Result<(), StoreError> {
        if self.fail_renewals.load(Ordering::SeqCst) {
            return Err(StoreError::Busy("injected: renewals fail".into()));
        }
        self.around(
            Call::Write,
            None,
            self.inner.renew_leases(worker, lease, attempts),
        )
        .await
    }

    async fn claim_activities(
        &self,
        worker: &WorkerId,
        names: &[String],
        queues: &[String],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ActivityTask>, StoreError> {
        let tasks = self
            .around(
                Call::Write,
                None,
                self.inner
                    .claim_activities(worker, names, queues, limit, lease),
            )
            .await?;
        if !tasks.is_empty()
            && self
                .scripted_ambiguous_claims
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            self.counts.0[Fault::Ambiguous as usize].fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Io(
                "injected: the claim's answer was lost (it took the attempts)".into(),
            ));
        }
        Ok(tasks)
    }

    async fn report_attempt(
        &self,
        worker: &WorkerId,
        key: RunKey,
        seq: CommandSeq,
        attempt: u32,
        result: AttemptResult,
    ) -> Result<(), StoreError> {
        self.around(
            Call::Write,
            None,
            self.inner.report_attempt(worker, key, seq, attempt, result),
        )
        .await
    }

    async fn record_heartbeat(
        &self,
        worker: &WorkerId,
        key: RunKey,
        seq: CommandSeq,
        attempt: u32,
        details: Payload,
    ) -> Result<(), StoreError> {
        self.around(
            Call::Write,
            None,
            self.inner
                .record_heartbeat(worker, key, seq, attempt, details),
        )
        .await
    }

    async fn time_out_heartbeats(&self, limit: usize) -> Result<usize, StoreError> {
        self.around(Call::Write, None, self.inner.time_out_heartbeats(limit))
            .await
    }

    async fn time_out_runs(&self, limit: usize) -> Result<usize, StoreError> {
        self.around(Call::Write, None, self.inner.time_out_runs(limit))
            .await
    }

    async fn fire_due_timers(&self, limit: usize, grace: Duration) -> Result<usize, StoreError> {
        self.around(Call::Write, None, self.inner.fire_due_timers(limit, grace))
            .await
    }

    async fn signal(
        &self,
        workflow_id: &WorkflowId,
        name: &str,
        payload: Payload,
    ) -> Result<(), StoreError> {
        self.around(
            Call::Write,
            None,
            self.inner.signal(workflow_id, name, payload),
        )
        .await
    }

    async fn request_cancel(
        &self,
        workflow_id: &WorkflowId,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.around(
            Call::Write,
            None,
            self.inner.request_cancel(workflow_id, reason),
        )
        .await
    }

    async fn reset_run(
        &self,
        workflow_id: &WorkflowId,
        to: EventId,
    ) -> Result<StartOutcome, StoreError> {
        self.around(Call::Write, None, self.inner.reset_run(workflow_id, to))
            .await
    }

    async fn resume(&self, workflow_id: &WorkflowId) -> Result<(), StoreError> {
        self.around(Call::Write, None, self.inner.resume(workflow_id))
            .await
    }

    async fn find_run(&self, workflow_id: &WorkflowId) -> Result<Option<RunInfo>, StoreError> {
        self.around(Call::Read, None, self.inner.find_run(workflow_id))
            .await
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunInfo>, StoreError> {
        self.around(Call::Read, None, self.inner.list_runs(filter))
            .await
    }

    async fn pending_activities(&self, key: RunKey) -> Result<Vec<PendingActivity>, StoreError> {
        self.around(Call::Read, None, self.inner.pending_activities(key))
            .await
    }

    async fn pending_timers(&self, key: RunKey) -> Result<Vec<PendingTimer>, StoreError> {
        self.around(Call::Read, None, self.inner.pending_timers(key))
            .await
    }

    async fn published_status(&self, key: RunKey) -> Result<Option<Payload>, StoreError> {
        self.around(Call::Read, None, self.inner.published_status(key))
            .await
    }

    async fn set_queue_limit(&self, queue: &str, limit: QueueLimit) -> Result<(), StoreError> {
        self.around(Call::Write, None, self.inner.set_queue_limit(queue, limit))
            .await
    }

    async fn clear_queue_limit(&self, queue: &str) -> Result<bool, StoreError> {
        self.around(Call::Write, None, self.inner.clear_queue_limit(queue))
            .await
    }

    async fn queue_info(&self, queue: &str) -> Result<QueueInfo, StoreError> {
        self.around(Call::Read, None, self.inner.queue_info(queue))
            .await
    }

    async fn list_queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.around(Call::Read, None, self.inner.list_queues())
            .await
    }

    async fn run_family(&self, key: RunKey) -> Result<durable::store::RunFamily, StoreError> {
        self.around(Call::Read, None, self.inner.run_family(key))
            .await
    }

    fn work_notifier(&self) -> Arc<tokio::sync::Notify> {
        self.inner.work_notifier()
    }

    async fn create_schedule(
        &self,
        schedule: NewSchedule,
        replace: bool,
    ) -> Result<ScheduleInfo, StoreError> {
        self.around(
            Call::Write,
            None,
            self.inner.create_schedule(schedule, replace),
        )
        .await
    }

    async fn get_schedule(&self, id: &str) -> Result<Option<ScheduleInfo>, StoreError> {
        self.around(Call::Read, None, self.inner.get_schedule(id))
            .await
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        self.around(Call::Read, None, self.inner.list_schedules())
            .await
    }

    async fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<ScheduleInfo, StoreError> {
        self.around(
            Call::Write,
            None,
            self.inner.set_schedule_paused(id, paused),
        )
        .await
    }

    async fn delete_schedule(&self, id: &str) -> Result<(), StoreError> {
        self.around(Call::Write, None, self.inner.delete_schedule(id))
            .await
    }

    async fn trigger_schedule(&self, id: &str) -> Result<ScheduleFire, StoreError> {
        self.around(Call::Write, None, self.inner.trigger_schedule(id))
            .await
    }

    async fn fire_due_schedules(&self, limit: usize) -> Result<usize, StoreError> {
        self.around(Call::Write, None, self.inner.fire_due_schedules(limit))
            .await
    }

    async fn schedule_fires(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<ScheduleFire>, StoreError> {
        self.around(Call::Read, None, self.inner.schedule_fires(id, limit))
            .await
    }
}
