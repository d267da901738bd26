//! Run actors: one tokio task per cached run that serializes its activations, commits
//! them, and dispatches the activities and timers they schedule.

use super::Shared;
use super::activities::{self, AttemptSpec, Reporter};
use super::engine::{ActivateRequest, Activation, EngineMsg};
use crate::error::WorkerError;
use durable_core::RunIdentity;
use durable_core::clock;
use durable_core::error::{ActivityError, StoreError};
use durable_core::event::EventKind;
use durable_core::ids::{CommandSeq, EventId, FencingToken, RunKey};
use durable_core::payload::Payload;
use durable_core::store::{AttemptResult, ClaimedRun, Commit, NewActivityTask};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A message to a run actor.
#[derive(Debug)]
pub(crate) enum RunMsg {
    /// The run has inbox entries (or was just claimed).
    Wake,
    /// A local activity attempt finished for good.
    ActivityDone {
        seq: CommandSeq,
        attempt: u32,
        result: Result<Payload, ActivityError>,
    },
    /// A local timer is due.
    TimerDue(CommandSeq),
    /// Hand the run back.
    Evict,
}

/// The worker's handle on a run actor.
#[derive(Clone, Debug)]
pub(crate) struct RunHandle {
    tx: mpsc::UnboundedSender<RunMsg>,
    pub(crate) fence: FencingToken,
    pub(crate) actor: u64,
    pub(crate) last_active: Arc<AtomicU64>,
}

impl RunHandle {
    pub(crate) fn send(&self, msg: RunMsg) -> bool {
        self.tx.send(msg).is_ok()
    }
    pub(crate) fn evict(&self) {
        let _ = self.tx.send(RunMsg::Evict);
    }
}

static NEXT_ACTOR: AtomicU64 = AtomicU64::new(1);

struct Local {
    time_ms: i64,
    kind: EventKind,
    finished_activity: Option<(CommandSeq, u32)>,
    fired_timer: Option<CommandSeq>,
}

struct RunActor {
    shared: Arc<Shared>,
    key: RunKey,
    identity: RunIdentity,
    workflow: String,
    fence: FencingToken,
    fresh: bool,
    handle: RunHandle,
    /// Timers with a local wake-up pending; a wake-up for any other timer is a
    /// duplicate (armed twice, or fired meanwhile through the store's sweep) and is
    /// dropped, since applying a second `TimerFired` would fail the activation.
    armed: std::collections::HashSet<CommandSeq>,
    /// Activities with a local attempt this actor started and whose result it has not
    /// applied. A local result for any other command is stale (the attempt was
    /// superseded and another one's result came through the inbox): applying it would
    /// answer the command twice and fail the activation.
    local_pending: std::collections::HashSet<CommandSeq>,
    /// The sleeping tasks of local timers, aborted when the actor ends so an evicted
    /// run keeps nothing in memory.
    timer_tasks: Vec<tokio::task::AbortHandle>,
    /// Held through the first activation of a run claimed as a suspect.
    probation: Option<tokio::sync::OwnedSemaphorePermit>,
}

enum Next {
    Continue,
    Finished,
    Stop,
}

/// Claims runs with work and hands each to its actor, creating actors as needed.
pub(crate) async fn claim_loop(shared: Arc<Shared>) -> Result<(), WorkerError> {
    let notify = shared.store.work_notifier();
    let mut backoff = Duration::from_millis(10);
    loop {
        if shared.is_shutting_down() {
            return Ok(());
        }
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let limit = 256;
        match shared
            .store
            .claim_runs(
                &shared.id,
                &shared.workflow_names,
                &shared.served_queues,
                limit,
                shared.options.lease,
            )
            .await
        {
            Ok(claimed) => {
                backoff = Duration::from_millis(10);
                let n = claimed.len();
                let (admitted, deferred) = admit(&shared, claimed);
                if !deferred.is_empty() {
                    // Hand these back before any suspect runs, so that if one of them
                    // takes the process down, they are not held and not counted.
                    if let Err(e) = shared.store.release_runs(&shared.id, &deferred).await {
                        tracing::warn!(error = %e, "could not hand back runs waiting for probation");
                    }
                }
                for (c, permit) in admitted {
                    dispatch(&shared, c, permit);
                }
                evict_over_capacity(&shared);
                if !deferred.is_empty() {
                    // Claim again once the runs on probation are through, rather than
                    // claiming (and handing back) the same runs in a tight loop.
                    let wait = shared
                        .options
                        .activation_deadline
                        .saturating_mul(2)
                        .saturating_add(Duration::from_secs(1));
                    let mut shutdown = shared.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::timeout(wait, shared.probation.acquire_many(PROBATION_SLOTS)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                if n == limit {
                    continue;
                }
            }
            Err(
                e @ (StoreError::Foreign { .. }
                | StoreError::TooNew { .. }
                | StoreError::Corrupt(_)),
            ) => {
                return Err(WorkerError::Store(e));
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming runs failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        }
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(shared.options.poll_interval) => {}
            _ = &mut notified => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// How many probation slots a worker has. A run claimed with `activation_failures > 0`
/// is a suspect: its last owners died (or gave up) while holding it, perhaps because of
/// it, perhaps because of another run they held. Every run a dead worker held counts a
/// failure at the takeover, so to tell the poison run from the bystanders, suspects are
/// activated in ever smaller groups: up to 16 at once after one failure, 4 after two,
/// and alone after three. A bystander is cleared (its count goes back to 0) by its next
/// commit; a run that brings the process down even alone reaches the limit and is
/// suspended, while the bystanders it took down with it stop at three.
pub(crate) const PROBATION_SLOTS: u32 = 16;

fn probation_weight(failures: u32) -> u32 {
    match failures {
        0 => 0,
        1 => 1,
        2 => 4,
        _ => PROBATION_SLOTS,
    }
}

/// Splits a claim into the runs to activate now, each with its probation permit if it
/// is a suspect, and the suspects to hand back because the probation slots are taken.
fn admit(
    shared: &Arc<Shared>,
    claimed: Vec<ClaimedRun>,
) -> (
    Vec<(ClaimedRun, Option<tokio::sync::OwnedSemaphorePermit>)>,
    Vec<RunKey>,
) {
    let mut admitted = Vec::with_capacity(claimed.len());
    let mut deferred = Vec::new();
    for c in claimed {
        let weight = probation_weight(c.activation_failures);
        let cached = shared
            .runs
            .lock()
            .is_ok_and(|runs| runs.get(&c.key).is_some_and(|h| h.fence == c.fence));
        if weight == 0 || cached || c.activation_failures >= shared.options.max_activation_failures
        {
            admitted.push((c, None));
            continue;
        }
        match shared.probation.clone().try_acquire_many_owned(weight) {
            Ok(permit) => admitted.push((c, Some(permit))),
            Err(_) => deferred.push(c.key),
        }
    }
    (admitted, deferred)
}

fn dispatch(
    shared: &Arc<Shared>,
    c: ClaimedRun,
    probation: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    if c.activation_failures >= shared.options.max_activation_failures {
        // Its owners kept dying mid-activation: stop feeding it workers.
        let shared = shared.clone();
        tokio::spawn(async move {
            let reason = format!(
                "{} activations in a row were cut short (crashed workers or stuck code); fix the cause, then `retry`",
                c.activation_failures
            );
            tracing::error!(workflow_id = %c.workflow_id, reason, "suspending the run");
            if let Err(e) = shared
                .store
                .activation_failed(c.key, &shared.id, c.fence, &reason, true)
                .await
            {
                tracing::warn!(error = %e, "could not suspend the run");
            }
        });
        return;
    }
    let Ok(mut runs) = shared.runs.lock() else {
        return;
    };
    if let Some(h) = runs.get(&c.key) {
        if h.fence == c.fence && h.send(RunMsg::Wake) {
            return;
        }
        // The run changed hands since this actor was made: its state is stale.
        h.evict();
        runs.remove(&c.key);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = RunHandle {
        tx,
        fence: c.fence,
        actor: NEXT_ACTOR.fetch_add(1, Ordering::Relaxed),
        last_active: Arc::new(AtomicU64::new(shared.tick())),
    };
    let actor = RunActor {
        shared: shared.clone(),
        key: c.key,
        identity: RunIdentity {
            workflow_id: c.workflow_id,
            run_id: c.run_id,
        },
        workflow: c.workflow,
        fence: c.fence,
        fresh: true,
        handle: handle.clone(),
        armed: std::collections::HashSet::new(),
        local_pending: std::collections::HashSet::new(),
        timer_tasks: Vec::new(),
        probation,
    };
    handle.send(RunMsg::Wake);
    runs.insert(c.key, handle);
    tokio::spawn(actor.run(rx));
}

fn evict_over_capacity(shared: &Arc<Shared>) {
    let Ok(runs) = shared.runs.lock() else {
        return;
    };
    let max = shared.options.max_cached_runs.max(1);
    if runs.len() <= max {
        return;
    }
    let excess = runs.len() - max + max / 10;
    let mut by_age: Vec<(u64, &RunHandle)> = runs
        .values()
        .map(|h| (h.last_active.load(Ordering::Relaxed), h))
        .collect();
    by_age.sort_by_key(|(t, _)| *t);
    for (_, h) in by_age.into_iter().take(excess) {
        h.evict();
    }
}

impl RunActor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<RunMsg>) {
        let mut release = false;
        while let Some(first) = rx.recv().await {
            let mut wake = false;
            let mut evict = false;
            let mut locals = Vec::new();
            let mut take = |msg: RunMsg, wake: &mut bool, evict: &mut bool| match msg {
                RunMsg::Wake => *wake = true,
                RunMsg::Evict => *evict = true,
                RunMsg::ActivityDone {
                    seq,
                    attempt,
                    result,
                } => {
                    let kind = match result {
                        Ok(output) => EventKind::ActivityCompleted {
                            seq,
                            output,
                            attempt,
                        },
                        Err(error) => EventKind::ActivityFailed {
                            seq,
                            error: error.with_attempts(attempt),
                        },
                    };
                    locals.push(Local {
                        time_ms: clock::now_ms(),
                        kind,
                        finished_activity: Some((seq, attempt)),
                        fired_timer: None,
                    });
                }
                RunMsg::TimerDue(seq) => locals.push(Local {
                    time_ms: clock::now_ms(),
                    kind: EventKind::TimerFired { seq },
                    finished_activity: None,
                    fired_timer: Some(seq),
                }),
            };
            take(first, &mut wake, &mut evict);
            while let Ok(msg) = rx.try_recv() {
                take(msg, &mut wake, &mut evict);
            }
            if evict {
                self.fallback(locals).await;
                release = true;
                break;
            }
            if !wake && locals.is_empty() && !self.fresh {
                continue;
            }
            self.handle
                .last_active
                .store(self.shared.tick(), Ordering::Relaxed);
            let next = self.activate(wake, locals).await;
            self.probation = None;
            match next {
                Next::Continue => {}
                Next::Finished => break,
                Next::Stop => {
                    release = true;
                    break;
                }
            }
        }
        for t in self.timer_tasks.drain(..) {
            t.abort();
        }
        self.shared
            .engine()
            .send(EngineMsg::Evict(self.key, self.fence));
        if let Ok(mut runs) = self.shared.runs.lock()
            && runs.get(&self.key).map(|h| h.actor) == Some(self.handle.actor)
        {
            runs.remove(&self.key);
        }
        // Anything that arrived after we decided to stop goes the remote way.
        let mut late = Vec::new();
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            if let RunMsg::ActivityDone {
                seq,
                attempt,
                result,
            } = msg
            {
                late.push((seq, attempt, result));
            }
        }
        for (seq, attempt, result) in late {
            report_remote(&self.shared, self.key, seq, attempt, result).await;
        }
        if release {
            let _ = self
                .shared
                .store
                .release_runs(&self.shared.id, &[self.key])
                .await;
        }
    }

    /// Persists local results that could not be committed through the run, so they are
    /// not lost: they go to the run's inbox like a result from another worker.
    async fn fallback(&self, locals: Vec<Local>) {
        for local in locals {
            if let Some((seq, attempt)) = local.finished_activity {
                let result = match local.kind {
                    EventKind::ActivityCompleted { output, .. } => Ok(output),
                    EventKind::ActivityFailed { error, .. } => Err(error),
                    _ => continue,
                };
                report_remote(&self.shared, self.key, seq, attempt, result).await;
            }
        }
    }

    async fn activate(&mut self, wake: bool, locals: Vec<Local>) -> Next {
        let store = &self.shared.store;
        let history = if self.fresh {
            match store.read_history(self.key, EventId(0)).await {
                Ok(h) => Some(h),
                Err(e) => return self.store_failed(e, locals).await,
            }
        } else {
            None
        };
        let inbox = if wake || self.fresh {
            match store.read_inbox(self.key).await {
                Ok(i) => i,
                Err(e) => return self.store_failed(e, locals).await,
            }
        } else {
            Vec::new()
        };
        let mut consumed: Vec<i64> = inbox.iter().map(|i| i.id).collect();
        let mut inbound: Vec<(i64, EventKind)> =
            inbox.into_iter().map(|i| (i.time_ms, i.kind)).collect();
        for (_, kind) in &inbound {
            match kind {
                EventKind::TimerFired { seq } => {
                    self.armed.remove(seq);
                }
                EventKind::ActivityCompleted { seq, .. }
                | EventKind::ActivityFailed { seq, .. } => {
                    self.local_pending.remove(seq);
                }
                _ => {}
            }
        }
        let mut finished_activities = Vec::new();
        let mut fired_timers = Vec::new();
        let mut local_results = Vec::new();
        let mut stale = Vec::new();
        for l in locals {
            if l.fired_timer.is_some_and(|seq| !self.armed.remove(&seq)) {
                continue;
            }
            if l.finished_activity
                .is_some_and(|(seq, _)| !self.local_pending.remove(&seq))
            {
                // Let the store refuse it (or, should it still be current, record it).
                stale.push(l);
                continue;
            }
            finished_activities.extend(l.finished_activity);
            fired_timers.extend(l.fired_timer);
            if l.finished_activity.is_some() {
                local_results.push(Local {
                    time_ms: l.time_ms,
                    kind: l.kind.clone(),
                    finished_activity: l.finished_activity,
                    fired_timer: None,
                });
            }
            inbound.push((l.time_ms, l.kind));
        }
        self.fallback(stale).await;
        if history.is_none() && inbound.is_empty() {
            return Next::Continue;
        }
        if history.is_some() {
            self.shared.stats.restores.fetch_add(1, Ordering::Relaxed);
        }
        let (reply, answer) = oneshot::channel();
        let sent = self
            .shared
            .engine()
            .send(EngineMsg::Activate(Box::new(ActivateRequest {
                key: self.key,
                fence: self.fence,
                identity: self.identity.clone(),
                workflow: self.workflow.clone(),
                restore: history,
                inbound,
                max_payload: self.shared.options.max_payload_bytes,
                reply,
            })));
        // The watchdog replaces a stuck engine; a request queued behind the stuck
        // activation is never answered, so give up after the deadline and start over.
        let wait = self
            .shared
            .options
            .activation_deadline
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(1));
        let answer = match tokio::time::timeout(wait, answer).await {
            Ok(a) => a,
            Err(_) => {
                self.fallback(local_results).await;
                return Next::Stop;
            }
        };
        let activation: Activation = match answer {
            Ok(Ok(a)) if sent => a,
            Ok(Err(e)) => {
                tracing::error!(workflow_id = %self.identity.workflow_id, run_id = %self.identity.run_id,
                    error = %e, "activation failed; suspending the run");
                self.fallback(local_results).await;
                if let Err(se) = store
                    .activation_failed(self.key, &self.shared.id, self.fence, &e.to_string(), true)
                    .await
                {
                    tracing::warn!(error = %se, "could not record the activation failure");
                }
                return Next::Stop;
            }
            _ => {
                self.fallback(local_results).await;
                return Next::Stop;
            }
        };
        let mut activities = Vec::new();
        let mut local_tasks = Vec::new();
        let mut timers = Vec::new();
        for (i, (_, kind)) in activation.events.iter().enumerate() {
            match kind {
                EventKind::ActivityScheduled {
                    seq,
                    name,
                    input,
                    options,
                } => {
                    let local = self
                        .shared
                        .runs_locally(name, options.task_queue.as_deref())
                        && !self.shared.is_shutting_down();
                    activities.push(NewActivityTask {
                        seq: *seq,
                        name: name.clone(),
                        // `.task_queue("default")` is the default queue, stored as "", so
                        // its limits (`queue set-limit default`) apply to it.
                        task_queue: crate::client::queue_name(
                            options.task_queue.as_deref().unwrap_or_default(),
                        )
                        .to_owned(),
                        local,
                    });
                    if local {
                        local_tasks.push((i, *seq, name.clone(), input.clone(), options.clone()));
                    }
                }
                EventKind::TimerStarted { seq, duration_ms } => timers.push((*seq, *duration_ms)),
                _ => {}
            }
        }
        let finish = activation.finished;
        if finish == Some(durable_core::store::RunStatus::Continued) {
            // Inbox entries that came after the code continued as new (they come first
            // in `inbound`) are not recorded in this run: they stay where they are, and
            // the store moves the signals and cancel requests among them to the new run.
            // Every other ending records the whole batch, so everything is consumed.
            consumed.truncate(activation.applied_inbound);
        }
        let commit = Commit {
            key: self.key,
            worker: self.shared.id.clone(),
            fence: self.fence,
            after: activation.after,
            events: activation.events,
            consumed_inbox: consumed,
            lease: self.shared.options.lease,
            activities,
            finished_activities,
            fired_timers,
            finish,
            keep_lease: finish.is_none(),
            published_status: activation.published_status,
        };
        let was_fresh = self.fresh;
        let recorded: Vec<CommandSeq> =
            commit.finished_activities.iter().map(|(s, _)| *s).collect();
        let outcome = match store.commit(commit).await {
            Ok(o) => {
                for seq in recorded {
                    self.shared.drop_attempt(self.key, seq);
                }
                o
            }
            Err(e) => {
                self.shared
                    .engine()
                    .send(EngineMsg::Evict(self.key, self.fence));
                if matches!(e, StoreError::Io(_) | StoreError::Other(_)) {
                    // The commit may have landed all the same (an error after the commit
                    // frame): its local attempts would then stay leased to this worker,
                    // which will not run them, and its renewals would keep them leased.
                    // Hand them back; one that does not exist is refused, harmlessly.
                    for (_, seq, ..) in &local_tasks {
                        let error = ActivityError::retryable(
                            "CommitUnknown",
                            "the activation that scheduled this attempt may not have been recorded",
                        );
                        let retry = AttemptResult::Retry {
                            error,
                            next_attempt_at_ms: clock::now_ms(),
                        };
                        activities::report(&self.shared, self.key, *seq, 1, retry).await;
                    }
                }
                return self.store_failed(e, local_results).await;
            }
        };
        self.fresh = false;
        self.shared
            .stats
            .activations
            .fetch_add(1, Ordering::Relaxed);
        if finish.is_some() {
            return Next::Finished;
        }
        let now = clock::now_ms();
        for (i, seq, name, input, options) in local_tasks {
            let _ = i;
            if outcome.queued.contains(&seq) {
                // Its task queue was at its limit: the store queued it, and a claim
                // (here or on another worker) starts it when the queue has room.
                continue;
            }
            self.local_pending.insert(seq);
            activities::spawn_attempt(
                self.shared.clone(),
                AttemptSpec {
                    key: self.key,
                    workflow_id: self.identity.workflow_id.clone(),
                    run_id: self.identity.run_id.clone(),
                    seq,
                    name,
                    input,
                    options,
                    attempt: 1,
                    scheduled_at_ms: now,
                },
                Reporter::Local(self.handle.clone()),
            );
        }
        for (seq, duration_ms) in timers {
            self.local_timer(seq, Duration::from_millis(duration_ms));
        }
        if was_fresh {
            // A restored run may have timers started before: keep them on time here
            // rather than waiting for the store's sweep.
            if let Ok(pending) = self.shared.store.pending_timers(self.key).await {
                for t in pending {
                    let wait = u64::try_from(t.fire_at_ms - clock::host_now_ms()).unwrap_or(0);
                    self.local_timer(t.seq, Duration::from_millis(wait));
                }
            }
        }
        Next::Continue
    }

    fn local_timer(&mut self, seq: CommandSeq, wait: Duration) {
        if !self.armed.insert(seq) {
            return;
        }
        let handle = self.handle.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            handle.send(RunMsg::TimerDue(seq));
        });
        if self.timer_tasks.len() >= 64 {
            self.timer_tasks.retain(|t| !t.is_finished());
        }
        self.timer_tasks.push(task.abort_handle());
    }

    async fn store_failed(&self, e: StoreError, locals: Vec<Local>) -> Next {
        match &e {
            StoreError::Fenced { .. } | StoreError::Conflict(_) => {
                self.shared.stats.fenced.fetch_add(1, Ordering::Relaxed);
                tracing::info!(workflow_id = %self.identity.workflow_id, error = %e, "run taken over; dropping its cached state");
            }
            _ => {
                tracing::warn!(workflow_id = %self.identity.workflow_id, error = %e, "store failed during an activation; the run will be retried");
            }
        }
        self.fallback(locals).await;
        Next::Stop
    }
}

/// Records an activity result through the store's inbox, retrying briefly on a busy
/// store; as a last resort the attempt is handed back so another one runs.
pub(crate) async fn report_remote(
    shared: &Arc<Shared>,
    key: RunKey,
    seq: CommandSeq,
    attempt: u32,
    result: Result<Payload, ActivityError>,
) {
    let result = match result {
        Ok(p) => AttemptResult::Completed(p),
        Err(e) => AttemptResult::Failed(e),
    };
    activities::report(shared, key, seq, attempt, result).await;
}
