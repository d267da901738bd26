//! The measurements that need a worker in another process: recovery after a SIGKILL, and
//! the resident memory of a worker holding many runs.
//!
//! The benchmark binary is its own worker: `durable-bench __worker --db PATH --lease-ms N`
//! (or `--database-url URL --database-schema S` for PostgreSQL, see `pg.rs`) runs a
//! worker with the benchmark's registry until its standard input closes, then prints its
//! counters as one `stats {...}` line.

use crate::engine::{open_store, wait_finished};
use crate::sys;
use crate::workloads::{self, sleeper, slow_chain};
use anyhow::{Context as _, bail};
use durable::store::{RunFilter, RunInfo, RunStatus, SharedStore};
use durable::{
    Client, EventId, EventKind, PostgresOptions, PostgresStore, SqliteOptions, SqliteStore,
    Synchronous, Worker, WorkerOptions,
};
use durable_core::Workflow;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The hidden subcommand that runs a worker.
pub(crate) const WORKER_COMMAND: &str = "__worker";

/// What a worker process did, from its `WorkerStats`, printed when it stops.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct WorkerCounters {
    /// Activations committed.
    pub(crate) activations: u64,
    /// Activity attempts started.
    pub(crate) activity_attempts: u64,
    /// Runs restored from history (taken over, evicted or restarted).
    pub(crate) restores: u64,
    /// Commits refused because another worker owned the run.
    pub(crate) fenced: u64,
}

/// `durable-bench __worker (--db PATH | --database-url URL [--database-schema S])
/// [--lease-ms N]`: runs a worker until stdin closes, then prints `stats {...}`.
pub(crate) async fn worker_main(args: &[String]) -> anyhow::Result<()> {
    let mut db = None;
    let mut url = None;
    let mut schema = None;
    let mut lease = WorkerOptions::default().lease;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--db" => db = Some(value.clone()),
            "--database-url" => url = Some(value.clone()),
            "--database-schema" => schema = Some(value.clone()),
            "--lease-ms" => lease = Duration::from_millis(value.parse()?),
            other => bail!("unknown worker argument {other:?}"),
        }
    }
    let store: SharedStore = match (url, db) {
        (Some(url), None) => Arc::new(
            PostgresStore::connect(
                &url,
                PostgresOptions {
                    schema,
                    ..PostgresOptions::default()
                },
            )
            .await?,
        ),
        (None, Some(db)) => Arc::new(SqliteStore::open(
            &db,
            SqliteOptions {
                create: false,
                ..SqliteOptions::default()
            },
        )?),
        _ => bail!("a worker needs exactly one of --db and --database-url"),
    };
    let worker = Worker::new(
        store,
        workloads::registry(),
        WorkerOptions {
            lease,
            ..WorkerOptions::default()
        },
    );
    let shutdown = worker.shutdown_handle();
    let stats = worker.stats();
    std::thread::spawn(move || {
        // The parent closes our stdin to ask for a graceful stop.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        shutdown.shutdown();
    });
    let run = tokio::spawn(worker.run());
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    run.await??;
    let counters = WorkerCounters {
        activations: stats.activations.load(Ordering::Relaxed),
        activity_attempts: stats.activity_attempts.load(Ordering::Relaxed),
        restores: stats.restores.load(Ordering::Relaxed),
        fenced: stats.fenced.load(Ordering::Relaxed),
    };
    writeln!(out, "stats {}", serde_json::to_string(&counters)?)?;
    out.flush()?;
    Ok(())
}

/// A worker subprocess.
pub(crate) struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The rest of its standard output, after "ready".
    stdout: Option<BufReader<ChildStdout>>,
}

impl WorkerProcess {
    /// Starts a worker on the SQLite file `db` and waits until it says it runs.
    fn spawn(db: &Path, lease: Duration) -> anyhow::Result<Self> {
        Self::spawn_with(vec![
            "--db".into(),
            db.into(),
            "--lease-ms".into(),
            lease.as_millis().to_string().into(),
        ])
    }

    /// Starts a worker on the PostgreSQL database at `url`, in `schema`, with the default
    /// worker options, and waits until it says it runs.
    pub(crate) fn spawn_postgres(url: &str, schema: &str) -> anyhow::Result<Self> {
        Self::spawn_with(vec![
            "--database-url".into(),
            url.into(),
            "--database-schema".into(),
            schema.into(),
        ])
    }

    fn spawn_with(args: Vec<OsString>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(WORKER_COMMAND)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker process")?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
        let mut line = String::new();
        tokio::task::block_in_place(|| stdout.read_line(&mut line))?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the worker process did not start (it said {line:?})");
        }
        Ok(WorkerProcess {
            child,
            stdin,
            stdout: Some(stdout),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended, if it has.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, then reap.
    fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Asks for a graceful stop; kills the process if it has not stopped in `grace`.
    /// Returns the counters it printed on its way out (`None` when it printed none, as
    /// when it had to be killed).
    pub(crate) async fn stop(mut self, grace: Duration) -> anyhow::Result<Option<WorkerCounters>> {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The process is gone, so this reads to the end at once.
        let mut rest = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            tokio::task::block_in_place(|| stdout.read_to_string(&mut rest))?;
        }
        let stats = rest.lines().find_map(|l| l.strip_prefix("stats "));
        Ok(stats.map(serde_json::from_str).transpose()?)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // Never leave a worker behind on an error path.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts runs `ids` of `W` with `input`, up to 256 at a time.
async fn start_many<W: Workflow>(
    client: &Client,
    ids: std::ops::Range<usize>,
    input: &W::Input,
) -> anyhow::Result<()> {
    let mut starts = futures::stream::iter(ids)
        .map(|i| client.start::<W>(format!("{}-{i}", W::NAME), input))
        .buffer_unordered(256);
    while let Some(started) = starts.next().await {
        started?;
    }
    Ok(())
}

/// Polls the runs of `W` until `done` holds for all `n` of them.
async fn wait_runs<W: Workflow>(
    client: &Client,
    n: usize,
    every: Duration,
    timeout: Duration,
    done: impl Fn(&RunInfo) -> bool,
) -> anyhow::Result<Vec<RunInfo>> {
    let deadline = Instant::now() + timeout;
    loop {
        let runs = client
            .list(RunFilter {
                workflow: Some(W::NAME.to_owned()),
                limit: n,
                ..RunFilter::default()
            })
            .await?;
        if let Some(bad) = runs
            .iter()
            .find(|r| matches!(r.status, RunStatus::Failed | RunStatus::Suspended))
        {
            bail!("run {} ended {}", bad.workflow_id, bad.status);
        }
        let ready = runs.iter().filter(|r| done(r)).count();
        if ready == n {
            return Ok(runs);
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {n} runs of {} got there in time", W::NAME);
        }
        tokio::time::sleep(every).await;
    }
}

/// What the recovery measurement found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecoveryFigures {
    /// Runs in flight at the kill.
    pub(crate) runs: usize,
    /// The lease of both workers.
    pub(crate) lease_ms: u64,
    /// Steps already completed at the kill, over all runs.
    pub(crate) steps_done_at_kill: u64,
    /// From the SIGKILL until the replacement process was up.
    pub(crate) replacement_up_ms: f64,
    /// From the SIGKILL until the first step completed by the replacement.
    pub(crate) first_step_ms: i64,
    /// From the SIGKILL until every run finished.
    pub(crate) all_done_ms: i64,
}

/// Steps of a recovery run, and the time each takes.
const RECOVERY_STEPS: u32 = 20;
const RECOVERY_STEP_MS: u64 = 25;

/// Recovery: a worker process holding `runs` runs in flight is killed with SIGKILL and a
/// replacement started at once; times the first step the replacement completes and the
/// end of the last run. Both figures include waiting for the dead worker's leases to
/// expire, which is the point of a lease.
pub(crate) async fn recovery(
    dir: &Path,
    runs: usize,
    lease: Duration,
) -> anyhow::Result<RecoveryFigures> {
    let path = dir.join("recovery.db");
    let store = open_store(&path, Synchronous::Full)?;
    let client = Client::new(store.clone());
    let first = WorkerProcess::spawn(&path, lease)?;
    start_many::<slow_chain>(&client, 0..runs, &(RECOVERY_STEPS, RECOVERY_STEP_MS)).await?;
    // In flight: every run has completed a step and scheduled the next one.
    let at_kill = wait_runs::<slow_chain>(
        &client,
        runs,
        Duration::from_millis(5),
        Duration::from_secs(60),
        |r| r.last_event_id.0 >= 4,
    )
    .await?;
    if at_kill.iter().any(|r| r.status != RunStatus::Running) {
        bail!("a recovery run finished before the kill; make the runs longer");
    }
    let steps_done_at_kill = at_kill.iter().map(|r| (r.last_event_id.0 - 1) / 2).sum();
    let t_kill = durable::clock::now_ms();
    let killed_at = Instant::now();
    first.kill()?;
    // Only the replacement can append after this instant.
    let t_dead = durable::clock::now_ms();
    let second = WorkerProcess::spawn(&path, lease)?;
    let replacement_up_ms = killed_at.elapsed().as_secs_f64() * 1000.0;
    let done = wait_finished(
        &client,
        slow_chain::NAME,
        runs,
        Duration::from_millis(10),
        Duration::from_secs(120),
    )
    .await?;
    second.stop(Duration::from_secs(10)).await?;
    let mut first_step = i64::MAX;
    for run in &done {
        for event in store.read_history(run.key, EventId(0)).await? {
            if matches!(event.kind, EventKind::ActivityCompleted { .. }) && event.time_ms > t_dead {
                first_step = first_step.min(event.time_ms);
            }
        }
    }
    if first_step == i64::MAX {
        bail!("the replacement completed no step");
    }
    let last = done.iter().map(|r| r.updated_at_ms).max().unwrap_or(t_kill);
    Ok(RecoveryFigures {
        runs,
        lease_ms: u64::try_from(lease.as_millis())?,
        steps_done_at_kill,
        replacement_up_ms,
        first_step_ms: first_step - t_kill,
        all_done_ms: last - t_kill,
    })
}

/// What the memory measurement found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryFigures {
    /// RSS of the idle worker process (KiB).
    pub(crate) idle_kib: u64,
    /// Live runs cached by the worker in the first phase.
    pub(crate) cached_runs: usize,
    /// RSS holding them (KiB).
    pub(crate) cached_kib: u64,
    /// Runs sleeping on timers in the second phase.
    pub(crate) backlog_runs: usize,
    /// RSS at the end of the second phase (KiB).
    pub(crate) backlog_kib: u64,
    /// Highest and lowest RSS sampled over the end of the second phase (KiB).
    pub(crate) backlog_max_kib: u64,
    pub(crate) backlog_min_kib: u64,
}

impl MemoryFigures {
    /// Resident memory per cached live run (KiB).
    pub(crate) fn kib_per_cached_run(&self) -> f64 {
        self.cached_kib.saturating_sub(self.idle_kib) as f64 / self.cached_runs.max(1) as f64
    }
}

/// Memory: a worker process takes `cached` runs that sleep an hour on a durable timer
/// (all within its run cache), then more up to `backlog`; its RSS is read at each stage.
pub(crate) async fn memory(
    dir: &Path,
    cached: usize,
    backlog: usize,
) -> anyhow::Result<MemoryFigures> {
    let path = dir.join("memory.db");
    let store = open_store(&path, Synchronous::Full)?;
    let client = Client::new(store);
    let worker = WorkerProcess::spawn(&path, WorkerOptions::default().lease)?;
    let pid = worker.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = sys::rss_kib(pid)?;
    let timer_started = |r: &RunInfo| r.last_event_id.0 >= 2;
    let hour = 3600u64;
    start_many::<sleeper>(&client, 0..cached, &hour).await?;
    wait_runs::<sleeper>(
        &client,
        cached,
        Duration::from_millis(100),
        Duration::from_secs(300),
        timer_started,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cached_kib = sys::rss_kib(pid)?;
    start_many::<sleeper>(&client, cached..backlog, &hour).await?;
    wait_runs::<sleeper>(
        &client,
        backlog,
        Duration::from_millis(1000),
        Duration::from_secs(600),
        timer_started,
    )
    .await?;
    let mut samples = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push(sys::rss_kib(pid)?);
    }
    worker.stop(Duration::from_secs(15)).await?;
    Ok(MemoryFigures {
        idle_kib,
        cached_runs: cached,
        cached_kib,
        backlog_runs: backlog,
        backlog_kib: samples.last().copied().unwrap_or(0),
        backlog_max_kib: samples.iter().copied().max().unwrap_or(0),
        backlog_min_kib: samples.iter().copied().min().unwrap_or(0),
    })
}
