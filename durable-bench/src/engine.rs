//! The workloads that run durable in this process: W1, W2, W3 and replay.
//!
//! Each opens a fresh SQLite file, runs a worker beside a client on the benchmark's tokio
//! runtime, and reads its timings from the store: a run's `updated_at_ms` is written in
//! the transaction that finishes it, so the figures do not depend on how often the
//! client polls. Times run from just before the runs are started to their completion
//! (the peer's are taken the same way).

use crate::sys;
use crate::workloads::{self, chain, order};
use anyhow::{Context as _, bail};
use durable::store::{RunFilter, RunInfo, RunStatus, SharedStore};
use durable::{
    Client, EventKind, ReplayOutcome, Replayer, RunIdentity, SqliteOptions, SqliteStore,
    Synchronous, Worker, WorkerOptions, WorkflowId,
};
use durable_core::Workflow;
use durable_worker::ShutdownHandle;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long any one workload may take before the benchmark gives up on it.
pub(crate) const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Opens a fresh store at `path` with the given durability.
pub(crate) fn open_store(path: &Path, synchronous: Synchronous) -> anyhow::Result<SharedStore> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = SqliteStore::open(
        path,
        SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        },
    )
    .with_context(|| format!("opening {}", path.display()))?;
    Ok(Arc::new(store))
}

/// A worker running on the current runtime.
struct RunningWorker {
    shutdown: ShutdownHandle,
    task: tokio::task::JoinHandle<Result<(), durable::WorkerError>>,
}

impl RunningWorker {
    fn start(store: SharedStore) -> Self {
        let worker = Worker::new(store, workloads::registry(), WorkerOptions::default());
        let shutdown = worker.shutdown_handle();
        RunningWorker {
            shutdown,
            task: tokio::spawn(worker.run()),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.shutdown();
        self.task.await??;
        Ok(())
    }
}

/// W1: one run of `steps` sequential no-op activities; µs per step.
pub(crate) async fn w1(dir: &Path, steps: u32, synchronous: Synchronous) -> anyhow::Result<f64> {
    let store = open_store(&dir.join(format!("w1-{synchronous:?}.db")), synchronous)?;
    let worker = RunningWorker::start(store.clone());
    let client = Client::new(store);
    let id = WorkflowId::from("w1");
    let t0 = durable::clock::now_ms();
    client.start::<chain>(id.clone(), &steps).await?;
    client.wait_encoded(&id, Some(WORKLOAD_TIMEOUT)).await?;
    let info = client.status(&id).await?;
    worker.stop().await?;
    Ok((info.updated_at_ms - t0) as f64 * 1000.0 / f64::from(steps))
}

/// What a batch of runs started at once measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch {
    /// Runs per second, from the first start to the last finish.
    pub(crate) runs_per_s: f64,
    /// Median latency of a run, from the starts to its completion (ms).
    pub(crate) p50_ms: f64,
    /// 99th percentile latency (ms).
    pub(crate) p99_ms: f64,
}

/// Waits until none of the `n` runs of `workflow` is running, then returns them all.
///
/// While waiting it asks only for one running run, so that polling costs the engine
/// under test next to nothing (listing a thousand runs every few milliseconds took a
/// sixth of the CPU in a profile); the full list is read once, at the end.
///
/// # Errors
///
/// When a run failed or was suspended, or `timeout` passed.
pub(crate) async fn wait_finished(
    client: &Client,
    workflow: &str,
    n: usize,
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<Vec<RunInfo>> {
    let deadline = Instant::now() + timeout;
    loop {
        let running = client
            .list(RunFilter {
                workflow: Some(workflow.to_owned()),
                status: Some(RunStatus::Running),
                limit: 1,
                ..RunFilter::default()
            })
            .await?;
        if running.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "runs of {workflow} still running after {} s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(every).await;
    }
    let runs = client
        .list(RunFilter {
            workflow: Some(workflow.to_owned()),
            limit: n,
            ..RunFilter::default()
        })
        .await?;
    if let Some(bad) = runs.iter().find(|r| r.status != RunStatus::Completed) {
        bail!(
            "run {} of {workflow} ended {}: {}",
            bad.workflow_id,
            bad.status,
            bad.reason.clone().unwrap_or_default()
        );
    }
    if runs.len() != n {
        bail!("found {} runs of {workflow}, expected {n}", runs.len());
    }
    Ok(runs)
}

/// The `p`th percentile of sorted values (nearest rank).
pub(crate) fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil();
    // rank is in 0..=len, so the conversion is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = rank as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// Starts one run of `W` per input at once, waits for all of them, and measures.
async fn batch<W: Workflow>(client: &Client, inputs: Vec<W::Input>) -> anyhow::Result<Batch> {
    let n = inputs.len();
    let t0 = durable::clock::now_ms();
    let starts = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| client.start::<W>(format!("{}-{i}", W::NAME), input));
    for started in futures::future::join_all(starts).await {
        started?;
    }
    let runs = wait_finished(
        client,
        W::NAME,
        n,
        Duration::from_millis(10),
        WORKLOAD_TIMEOUT,
    )
    .await?;
    Ok(Batch::of(t0, &runs))
}

impl Batch {
    /// The figures of `runs`, all started at `t0` (ms, the clock of their `updated_at_ms`)
    /// and all finished.
    pub(crate) fn of(t0: i64, runs: &[RunInfo]) -> Batch {
        let last = runs.iter().map(|r| r.updated_at_ms).max().unwrap_or(t0);
        let mut latencies: Vec<i64> = runs.iter().map(|r| r.updated_at_ms - t0).collect();
        latencies.sort_unstable();
        let secs = ((last - t0).max(1)) as f64 / 1000.0;
        Batch {
            runs_per_s: runs.len() as f64 / secs,
            p50_ms: percentile(&latencies, 50.0),
            p99_ms: percentile(&latencies, 99.0),
        }
    }
}

/// W2: `runs` runs of `steps` no-op activities, all started at once.
pub(crate) async fn w2(
    dir: &Path,
    runs: usize,
    steps: u32,
    synchronous: Synchronous,
) -> anyhow::Result<Batch> {
    let store = open_store(&dir.join(format!("w2-{synchronous:?}.db")), synchronous)?;
    let worker = RunningWorker::start(store.clone());
    let client = Client::new(store);
    let result = batch::<chain>(&client, vec![steps; runs]).await;
    worker.stop().await?;
    result
}

/// W3: `orders` runs of the order workflow, all started at once.
pub(crate) async fn w3(
    dir: &Path,
    orders: usize,
    synchronous: Synchronous,
) -> anyhow::Result<Batch> {
    let store = open_store(&dir.join(format!("w3-{synchronous:?}.db")), synchronous)?;
    let worker = RunningWorker::start(store.clone());
    let client = Client::new(store);
    let inputs = (0..orders).map(workloads::sample_order).collect();
    let result = batch::<order>(&client, inputs).await;
    worker.stop().await?;
    result
}

/// What the replay measurement found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayFigures {
    /// Events replayed per second of wall time.
    pub(crate) events_per_s: f64,
    /// Events replayed per second of the replaying thread's CPU time (steadier on a busy
    /// machine).
    pub(crate) events_per_cpu_s: Option<f64>,
    /// Events in the history.
    pub(crate) events: usize,
    /// Replays timed.
    pub(crate) replays: u32,
}

/// Replay: records a run of `chain` with `events` events (`events / 2 - 1` steps), reads
/// its history back, and times `Replayer::replay` over it in memory.
pub(crate) async fn replay(
    dir: &Path,
    events: usize,
    min_time: Duration,
) -> anyhow::Result<ReplayFigures> {
    // Recording the history is set-up, not what is measured: no fsync needed.
    let store = open_store(&dir.join("replay.db"), Synchronous::Off)?;
    let worker = RunningWorker::start(store.clone());
    let client = Client::new(store);
    let id = WorkflowId::from("replay");
    let steps = u32::try_from(events / 2 - 1)?;
    client.start::<chain>(id.clone(), &steps).await?;
    client.wait_encoded(&id, Some(WORKLOAD_TIMEOUT)).await?;
    let info = client.status(&id).await?;
    let history = client.history(&id).await?;
    worker.stop().await?;
    let completed = history
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ActivityCompleted { .. }))
        .count();
    if completed != steps as usize {
        bail!("the recorded history has {completed} completed activities, expected {steps}");
    }
    let identity = RunIdentity {
        workflow_id: info.workflow_id,
        run_id: info.run_id,
    };
    let len = history.len();
    tokio::task::spawn_blocking(move || -> anyhow::Result<ReplayFigures> {
        let replayer = Replayer::new(workloads::registry());
        // One untimed pass: checks the outcome and warms the allocator.
        let report = replayer.replay(identity.clone(), &history)?;
        if !matches!(report.outcome, ReplayOutcome::Completed(_)) {
            bail!("replay ended {:?}, expected Completed", report.outcome);
        }
        let started = Instant::now();
        let cpu_before = sys::thread_cpu_time();
        let mut replays = 0u32;
        while replays < 5 || started.elapsed() < min_time {
            std::hint::black_box(replayer.replay(identity.clone(), &history)?);
            replays += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu_secs = sys::thread_cpu_time()
            .zip(cpu_before)
            .map(|(after, before)| (after - before).as_secs_f64());
        let events = f64::from(replays) * len as f64;
        Ok(ReplayFigures {
            events_per_s: events / secs,
            events_per_cpu_s: cpu_secs.filter(|s| *s > 0.0).map(|s| events / s),
            events: len,
            replays,
        })
    })
    .await?
}
