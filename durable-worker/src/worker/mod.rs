//! The tokio worker: claims runs and activity attempts from the store, drives workflow
//! code on the engine thread, runs activities, fires timers, starts the runs of due
//! schedules and keeps leases alive.

mod activities;
mod engine;
mod heartbeat;
mod run;
mod schedules;

use crate::error::WorkerError;
use durable_core::ids::{CommandSeq, RunKey, WorkerId};
use durable_core::payload::DEFAULT_MAX_PAYLOAD_BYTES;
use durable_core::registry::Registry;
use durable_core::store::SharedStore;
use engine::EngineHandle;
use run::RunHandle;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// Settings of a [`Worker`].
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// How long a lease lasts without renewal; a dead worker's runs are taken over after
    /// this long.
    pub lease: Duration,
    /// How often the store is polled for work made by other processes.
    pub poll_interval: Duration,
    /// Activities running at once in this worker.
    pub max_concurrent_activities: usize,
    /// Live runs kept in memory (sticky execution); beyond this the least recently
    /// active are handed back and replayed when needed again.
    pub max_cached_runs: usize,
    /// The start-to-close timeout of attempts that set none.
    pub default_start_to_close: Duration,
    /// The largest payload (input, output, signal) accepted.
    pub max_payload_bytes: usize,
    /// Task queues this worker serves; empty means only the default queue.
    pub task_queues: Vec<String>,
    /// How long a graceful shutdown waits for running activities.
    pub shutdown_grace: Duration,
    /// An activation that runs this long without yielding (workflow code stuck in a
    /// loop) suspends its run; the engine thread is replaced and the stuck one abandoned.
    pub activation_deadline: Duration,
    /// A run whose activations were cut short this many times in a row (panics,
    /// crashed workers) is suspended instead of tried again.
    pub max_activation_failures: u32,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            lease: Duration::from_secs(10),
            poll_interval: Duration::from_millis(50),
            max_concurrent_activities: 1000,
            max_cached_runs: 10_000,
            default_start_to_close: Duration::from_secs(300),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            task_queues: Vec::new(),
            shutdown_grace: Duration::from_secs(10),
            activation_deadline: Duration::from_secs(30),
            max_activation_failures: 5,
        }
    }
}

/// Counters a worker keeps, for tests and the benchmark.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Activations committed.
    pub activations: AtomicU64,
    /// Activity attempts started.
    pub activity_attempts: AtomicU64,
    /// Runs whose history this worker read to build their state: every first activation
    /// of a run here (a new run, a takeover, a restart) and every one after an eviction.
    pub restores: AtomicU64,
    /// Commits refused because another worker owns the run now.
    pub fenced: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) id: WorkerId,
    pub(crate) store: SharedStore,
    pub(crate) registry: Registry,
    pub(crate) options: WorkerOptions,
    engine: Mutex<EngineHandle>,
    pub(crate) runs: Mutex<HashMap<RunKey, RunHandle>>,
    pub(crate) activity_slots: Arc<Semaphore>,
    /// Slots for runs on probation (claimed with `activation_failures > 0`), see
    /// `run::PROBATION_SLOTS`.
    pub(crate) probation: Arc<Semaphore>,
    /// The activity attempts this worker runs, or holds a result of that is not yet
    /// recorded: the only attempts whose leases it renews.
    /// Counted, since a superseded attempt and its successor can both be here.
    pub(crate) attempts: Mutex<HashMap<(RunKey, CommandSeq), u32>>,
    pub(crate) activity_names: Vec<String>,
    /// The workflows this worker registers: the only runs it claims.
    pub(crate) workflow_names: Vec<String>,
    /// The task queues this worker serves, as the store names them (see
    /// `activities::served_queues`): for runs as for activity attempts.
    pub(crate) served_queues: Vec<String>,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) clock_tick: AtomicU64,
}

impl Shared {
    /// Whether this worker runs `activity` on `queue` itself.
    pub(crate) fn runs_locally(&self, activity: &str, queue: Option<&str>) -> bool {
        let queue_ok = match queue {
            None | Some("") => {
                self.options.task_queues.is_empty()
                    || self
                        .options
                        .task_queues
                        .iter()
                        .any(|q| q.is_empty() || q == "default")
            }
            Some(q) => self.options.task_queues.iter().any(|t| t == q),
        };
        queue_ok && self.registry.find_activity(activity).is_some()
    }

    /// The current engine thread.
    pub(crate) fn engine(&self) -> EngineHandle {
        match self.engine.lock() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Notes that this worker runs (or holds the result of) an activity attempt.
    pub(crate) fn hold_attempt(&self, key: RunKey, seq: CommandSeq) {
        if let Ok(mut held) = self.attempts.lock() {
            *held.entry((key, seq)).or_insert(0) += 1;
        }
    }

    /// Notes that an attempt's result was recorded or handed on.
    pub(crate) fn drop_attempt(&self, key: RunKey, seq: CommandSeq) {
        if let Ok(mut held) = self.attempts.lock()
            && let std::collections::hash_map::Entry::Occupied(mut e) = held.entry((key, seq))
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) fn tick(&self) -> u64 {
        self.clock_tick.fetch_add(1, Ordering::Relaxed)
    }
}

/// A worker: runs the workflows and activities of a [`Registry`] against a store until
/// told to stop.
pub struct Worker {
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.id)
            .finish()
    }
}

/// Stops a running worker gracefully when dropped or when [`ShutdownHandle::shutdown`]
/// is called.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    tx: watch::Sender<bool>,
}

impl ShutdownHandle {
    /// Asks the worker to stop: it stops claiming, lets running activities finish (up to
    /// the grace period) and hands back its leases.
    pub fn shutdown(&self) {
        let _ = self.tx.send(true);
    }
}

impl Worker {
    /// A worker for `registry` on `store`.
    pub fn new(store: SharedStore, registry: Registry, options: WorkerOptions) -> Self {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut activity_names: Vec<String> = registry
            .activity_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        activity_names.sort();
        let workflow_names: Vec<String> = registry
            .workflow_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let served_queues = activities::served_queues(&options.task_queues);
        let shared = Arc::new(Shared {
            id: WorkerId::generate(),
            engine: Mutex::new(EngineHandle::spawn(registry.clone())),
            store,
            registry,
            activity_slots: Arc::new(Semaphore::new(options.max_concurrent_activities.max(1))),
            probation: Arc::new(Semaphore::new(run::PROBATION_SLOTS as usize)),
            attempts: Mutex::new(HashMap::new()),
            options,
            runs: Mutex::new(HashMap::new()),
            activity_names,
            workflow_names,
            served_queues,
            stats: Arc::new(WorkerStats::default()),
            shutdown: shutdown_rx,
            clock_tick: AtomicU64::new(0),
        });
        Worker {
            shared,
            shutdown_tx,
        }
    }

    /// This worker's id (the owner recorded on its leases).
    pub fn id(&self) -> &WorkerId {
        &self.shared.id
    }

    /// Counters of what this worker did.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.shared.stats.clone()
    }

    /// A handle that stops the worker.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            tx: self.shutdown_tx.clone(),
        }
    }

    /// Runs until [`ShutdownHandle::shutdown`] is called, then stops gracefully.
    ///
    /// # Errors
    ///
    /// [`WorkerError`] when the store fails in a way retrying cannot fix (a foreign or
    /// corrupt database).
    pub async fn run(self) -> Result<(), WorkerError> {
        let shared = self.shared.clone();
        tracing::info!(worker = %shared.id, workflows = ?shared.registry.workflow_names(),
            activities = ?shared.registry.activity_names(), "worker started");
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(run::claim_loop(shared.clone()));
        tasks.spawn(activities::claim_loop(shared.clone()));
        tasks.spawn(timer_loop(shared.clone()));
        tasks.spawn(timeout_loop(shared.clone()));
        tasks.spawn(schedules::schedule_loop(shared.clone()));
        tasks.spawn(lease_loop(shared.clone()));
        tasks.spawn(watchdog_loop(shared.clone()));
        let mut shutdown = shared.shutdown.clone();
        let mut fatal = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                done = tasks.join_next() => {
                    match done {
                        Some(Ok(Err(e))) => { fatal = Some(e); break; }
                        Some(Ok(Ok(()))) => {}
                        Some(Err(e)) => { fatal = Some(WorkerError::Internal(e.to_string())); break; }
                        None => break,
                    }
                }
            }
        }
        let _ = self.shutdown_tx.send(true);
        // Let running activities finish, then hand back every lease.
        let grace = shared.options.shutdown_grace;
        let slots = shared.activity_slots.clone();
        let total =
            u32::try_from(shared.options.max_concurrent_activities.max(1)).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, slots.acquire_many(total)).await;
        tasks.shutdown().await;
        let handles: Vec<(RunKey, RunHandle)> = shared
            .runs
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default();
        for (_, h) in &handles {
            h.evict();
        }
        let keys: Vec<RunKey> = handles.iter().map(|(k, _)| *k).collect();
        if let Err(e) = shared.store.release_runs(&shared.id, &keys).await {
            tracing::warn!(error = %e, "could not hand back leases at shutdown");
        }
        tracing::info!(worker = %shared.id, "worker stopped");
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

async fn timer_loop(shared: Arc<Shared>) -> Result<(), WorkerError> {
    let notify = shared.store.work_notifier();
    loop {
        if shared.is_shutting_down() {
            return Ok(());
        }
        match shared
            .store
            .fire_due_timers(256, shared.options.lease.min(Duration::from_secs(2)))
            .await
        {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) if !e.is_retryable() && !matches!(e, durable_core::StoreError::Conflict(_)) => {
                tracing::warn!(error = %e, "firing timers failed");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.options.poll_interval) => {}
            _ = notify.notified() => {}
        }
    }
}

/// Ends what ran past its timeout by the store's clock: activity attempts that missed
/// their heartbeat timeout (retried by their policy) and runs past their execution
/// timeout (failed). Every worker sweeps, so the timeouts hold with any worker alive,
/// across restarts.
async fn timeout_loop(shared: Arc<Shared>) -> Result<(), WorkerError> {
    let mut shutdown = shared.shutdown.clone();
    loop {
        if shared.is_shutting_down() {
            return Ok(());
        }
        let attempts = shared.store.time_out_heartbeats(256).await;
        let runs = shared.store.time_out_runs(256).await;
        let mut more = false;
        for (what, swept) in [
            ("attempts past their heartbeat timeout", attempts),
            ("runs past their execution timeout", runs),
        ] {
            match swept {
                Ok(n) => more |= n == 256,
                Err(e)
                    if !e.is_retryable() && !matches!(e, durable_core::StoreError::Conflict(_)) =>
                {
                    tracing::warn!(error = %e, "ending {what} failed");
                }
                Err(_) => {}
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.options.poll_interval) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Suspends a run whose activation spins without yielding and replaces the engine
/// thread, so one bad run cannot stall every other.
async fn watchdog_loop(shared: Arc<Shared>) -> Result<(), WorkerError> {
    let deadline = clock_ms(shared.options.activation_deadline);
    let every = (shared.options.activation_deadline / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        if shared.is_shutting_down() {
            return Ok(());
        }
        let engine = shared.engine();
        let since = engine.busy.since_ms.load(Ordering::Acquire);
        if since == 0 || durable_core::clock::now_ms() - since < deadline {
            continue;
        }
        let key = RunKey(engine.busy.key.load(Ordering::Acquire));
        let fence = durable_core::FencingToken(engine.busy.fence.load(Ordering::Acquire));
        let reason = format!(
            "an activation ran for more than {} ms without yielding (an endless loop in workflow code?)",
            deadline
        );
        tracing::error!(run = %key, reason, "suspending the run and abandoning its engine thread, which keeps a CPU busy until this process restarts");
        if let Ok(mut e) = shared.engine.lock() {
            *e = EngineHandle::spawn(shared.registry.clone());
        }
        // Every cached machine lived on the old thread: hand all runs back.
        let handles: Vec<RunHandle> = shared
            .runs
            .lock()
            .map(|mut m| m.drain().map(|(_, h)| h).collect())
            .unwrap_or_default();
        for h in &handles {
            h.evict();
        }
        if let Err(e) = shared
            .store
            .activation_failed(key, &shared.id, fence, &reason, true)
            .await
        {
            tracing::warn!(error = %e, "could not suspend the stuck run");
        }
    }
}

fn clock_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn lease_loop(shared: Arc<Shared>) -> Result<(), WorkerError> {
    let every = shared.options.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        if shared.is_shutting_down() {
            return Ok(());
        }
        let attempts: Vec<(RunKey, CommandSeq)> = match shared.attempts.lock() {
            Ok(held) => held.keys().copied().collect(),
            Err(poisoned) => poisoned.into_inner().keys().copied().collect(),
        };
        if let Err(e) = shared
            .store
            .renew_leases(&shared.id, shared.options.lease, &attempts)
            .await
        {
            tracing::warn!(error = %e, "renewing leases failed");
        }
    }
}
