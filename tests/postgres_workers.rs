//! Many worker processes on one PostgreSQL database: four processes of
//! `tests/bin/pg_test_worker.rs` (three serving the default task queue, one serving only
//! `payments`) run hundreds of fan-out runs and a few thousand activities. Every run must
//! complete with every activity result recorded once; a worker killed with SIGKILL
//! mid-run must hand its runs to the others once its leases expire, and not before; and
//! `charge` must run only on the `payments` worker.
//!
//! Needs `DURABLE_TEST_DATABASE_URL` (e.g. postgres://postgres@127.0.0.1:5432/test) and
//! a reachable server; without them it prints why it skipped and passes. Each run uses a
//! schema of its own, dropped at the end.
//!
//! `DURABLE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test --test postgres_workers -- --nocapture`

use durable::store::{RunFilter, RunInfo, RunStatus, Store};
use durable::{Client, EventKind, Payload, PostgresOptions, PostgresStore, WorkflowId};
use futures::FutureExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_pg-test-worker");
/// Runs started.
const RUNS: usize = 300;
/// `step` activities per run (plus one `charge`).
const STEPS: u32 = 10;
/// The lease of the worker processes: a killed worker's runs move after this long.
const LEASE: Duration = Duration::from_secs(3);
/// How long the whole workload may take on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(400);

/// The input of `fan_out`, as the test worker defines it.
#[derive(Serialize)]
struct FanOut {
    steps: u32,
    step_ms: u64,
}

/// The server to test against, or why there is none.
async fn server() -> Result<String, String> {
    let url = std::env::var("DURABLE_TEST_DATABASE_URL")
        .map_err(|_| "DURABLE_TEST_DATABASE_URL is not set".to_owned())?;
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(&url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| format!("no answer from {url} within 5 s"))?
    .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    drop(connected);
    Ok(url)
}

async fn drop_schema(url: &str, schema: &str) {
    let dropped = async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
        drop(client);
        let _ = driver.await;
        result
    }
    .await;
    if let Err(e) = dropped {
        eprintln!("could not drop test schema {schema}: {e}");
    }
}

/// Worker processes that die with the test.
struct Workers {
    children: Vec<(String, Child)>,
}

impl Workers {
    fn spawn(&mut self, url: &str, schema: &str, role: &str, dir: &Path, extra: &[&str]) -> u32 {
        let name = format!("{role}-{}", self.children.len());
        let log = std::fs::File::create(dir.join(format!("{name}.log")))
            .expect("creating a worker log file");
        let mut command = Command::new(WORKER_BIN);
        for (key, _) in std::env::vars() {
            if key.starts_with("DURABLE_") {
                command.env_remove(key);
            }
        }
        let lease_ms = LEASE.as_millis().to_string();
        let child = command
            .args(["--database-url", url, "--database-schema", schema, "worker"])
            .args(["--lease-ms", &lease_ms, "--poll-ms", "100"])
            // A small cache spreads the runs over the workers.
            .args(["--max-cached-runs", "60"])
            .args(extra)
            .env("DURABLE_LOG", "warn")
            .env("PG_TEST_LEDGER", dir.join("ledger.tsv"))
            .env("PG_TEST_ROLE", role)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting a worker process");
        let pid = child.id();
        self.children.push((name, child));
        pid
    }

    /// SIGKILL: no graceful shutdown, leases stay until they expire.
    fn kill(&mut self, pid: u32) {
        for (_, child) in &mut self.children {
            if child.id() == pid {
                child.kill().expect("killing a worker");
                child.wait().expect("reaping a worker");
            }
        }
    }

    /// Fails if a worker that should be running has exited.
    fn check_alive(&mut self, killed: Option<u32>, dir: &Path) {
        for (name, child) in &mut self.children {
            if Some(child.id()) == killed {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
                panic!("worker {name} exited with {status}; its log:\n{log}");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn runs_with(store: &PostgresStore, status: RunStatus) -> Vec<RunInfo> {
    store
        .list_runs(RunFilter {
            status: Some(status),
            limit: 100_000,
            ..RunFilter::default()
        })
        .await
        .expect("listing runs")
}

/// Waits until `done` runs completed, failing at once on a failed or suspended run.
async fn wait_completed(
    store: &PostgresStore,
    done: usize,
    workers: &mut Workers,
    killed: Option<u32>,
    dir: &Path,
    started: Instant,
) {
    loop {
        let completed = runs_with(store, RunStatus::Completed).await.len();
        if completed >= done {
            return;
        }
        for status in [RunStatus::Failed, RunStatus::Suspended] {
            let bad = runs_with(store, status).await;
            assert!(
                bad.is_empty(),
                "{} runs are {status}, e.g. {:?}",
                bad.len(),
                bad[0]
            );
        }
        workers.check_alive(killed, dir);
        assert!(
            started.elapsed() < DEADLINE,
            "only {completed} of {done} runs completed after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_one_database_and_survive_a_kill() {
    let url = match server().await {
        Ok(url) => url,
        Err(reason) => {
            println!("skipping PostgreSQL worker tests: {reason}");
            return;
        }
    };
    let schema = format!("workers_{}", uuid_like());
    let outcome = std::panic::AssertUnwindSafe(workload(&url, &schema))
        .catch_unwind()
        .await;
    drop_schema(&url, &schema).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A fresh lower-case name part, unique enough for parallel test runs.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}_{}", nanos, std::process::id())
}

async fn workload(url: &str, schema: &str) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    // All four start on an empty schema at once: migrating is their race to win safely.
    let mut workers = Workers {
        children: Vec::new(),
    };
    let mut general = Vec::new();
    for _ in 0..3 {
        general.push(workers.spawn(url, schema, "general", dir.path(), &[]));
    }
    let payments = workers.spawn(
        url,
        schema,
        "payments",
        dir.path(),
        &["--task-queue", "payments"],
    );

    let store = Arc::new(
        PostgresStore::connect(
            url,
            PostgresOptions {
                schema: Some(schema.to_owned()),
                ..PostgresOptions::default()
            },
        )
        .await
        .expect("connecting the test's client"),
    );
    let client = Client::new(store.clone());
    let started = Instant::now();
    let input = Payload::encode(&FanOut {
        steps: STEPS,
        step_ms: 20,
    })
    .expect("encoding the input");
    let ids: Vec<WorkflowId> = (0..RUNS).map(|i| WorkflowId(format!("fan-{i}"))).collect();
    for chunk in ids.chunks(50) {
        let starts = chunk
            .iter()
            .map(|id| client.start_encoded("fan_out", id.clone(), input.clone()));
        for outcome in futures::future::join_all(starts).await {
            assert!(outcome.expect("starting a run").created);
        }
    }

    // Kill the general worker holding the most runs, mid-run.
    wait_completed(&store, RUNS / 3, &mut workers, None, dir.path(), started).await;
    let owned_by = |runs: &[RunInfo], pid: u32| -> Vec<RunInfo> {
        let prefix = format!("worker-{pid}-");
        runs.iter()
            .filter(|r| r.owner.as_deref().is_some_and(|o| o.starts_with(&prefix)))
            .cloned()
            .collect()
    };
    let running = runs_with(&store, RunStatus::Running).await;
    let victim = general
        .iter()
        .copied()
        .max_by_key(|pid| owned_by(&running, *pid).len())
        .expect("three general workers");
    workers.kill(victim);
    // What it held once its last transactions are over.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = owned_by(&runs_with(&store, RunStatus::Running).await, victim);
    println!(
        "killed worker {victim} after {:?} holding {} running runs",
        started.elapsed(),
        held.len()
    );
    assert!(
        !held.is_empty(),
        "the killed worker held no run; the kill proves nothing"
    );
    // Its leases hold until they expire (by the database's clock, which is this host's):
    // no one else takes a run or commits to it before.
    tokio::time::sleep(LEASE / 4).await;
    let mut checked = 0;
    for run in &held {
        let before = durable::clock::now_ms();
        let now = client.status(&run.workflow_id).await.expect("status");
        if run.lease_expires_at_ms > before + 100 {
            checked += 1;
            assert_eq!(
                (now.owner.as_deref(), now.last_event_id),
                (run.owner.as_deref(), run.last_event_id),
                "run {} moved on before the dead worker's lease expired",
                run.workflow_id
            );
        }
    }
    assert!(
        checked > 0,
        "no lease of the dead worker was still live to check"
    );
    wait_completed(
        &store,
        RUNS,
        &mut workers,
        Some(victim),
        dir.path(),
        started,
    )
    .await;
    let elapsed = started.elapsed();
    for run in &held {
        let now = client.status(&run.workflow_id).await.expect("status");
        assert_eq!(now.status, RunStatus::Completed);
    }

    // Every run completed with every activity result recorded exactly once.
    let mut events = 0;
    for id in &ids {
        let history = client.history(id).await.expect("reading a history");
        events += history.len();
        let mut scheduled = BTreeMap::new();
        let mut completed = BTreeSet::new();
        for e in &history {
            match &e.kind {
                EventKind::ActivityScheduled { seq, name, .. } => {
                    scheduled.insert(*seq, name.clone());
                }
                EventKind::ActivityCompleted { seq, .. } => {
                    assert!(
                        completed.insert(*seq),
                        "run {id}: command {seq} completed twice"
                    );
                }
                EventKind::ActivityFailed { seq, error } => {
                    panic!("run {id}: activity {seq} failed: {error}")
                }
                _ => {}
            }
        }
        assert_eq!(
            scheduled.len(),
            STEPS as usize + 1,
            "run {id} scheduled every activity"
        );
        assert_eq!(
            completed,
            scheduled.keys().copied().collect::<BTreeSet<_>>(),
            "run {id}: every scheduled activity has its result"
        );
        let outcome = client.outcome(id).await.expect("outcome");
        let expected: u64 = (0..u64::from(STEPS)).map(|i| i * 2).sum();
        match outcome {
            durable::RunOutcome::Completed(p) => {
                let sum: u64 = p.decode().expect("decoding the output");
                assert_eq!(sum, expected, "run {id} summed its steps");
            }
            other => panic!("run {id} did not complete: {other:?}"),
        }
    }

    // Routing: `charge` ran only on the payments worker, `step` never there.
    let ledger =
        std::fs::read_to_string(dir.path().join("ledger.tsv")).expect("reading the ledger");
    let mut ran = BTreeSet::new();
    let mut attempts = 0;
    let mut by_role: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in ledger.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 5, "a ledger line has 5 fields: {line:?}");
        let (activity, key, role, pid) = (fields[0], fields[1], fields[3], fields[4]);
        attempts += 1;
        ran.insert(key.to_owned());
        *by_role
            .entry((activity.to_owned(), role.to_owned()))
            .or_default() += 1;
        if activity == "charge" {
            assert_eq!(
                pid,
                payments.to_string(),
                "charge ran outside the payments pool: {line}"
            );
        } else {
            assert_eq!(role, "general", "a step ran on the payments worker: {line}");
        }
    }
    let activities = RUNS * (STEPS as usize + 1);
    assert_eq!(ran.len(), activities, "every activity ran at least once");
    println!(
        "{RUNS} runs, {activities} activities ({attempts} attempts), {events} events in {elapsed:?}: \
         {:.0} events/s, {:.0} activities/s; attempts by (activity, role): {by_role:?}",
        events as f64 / elapsed.as_secs_f64(),
        activities as f64 / elapsed.as_secs_f64(),
    );
    drop(workers);
}

/// Three worker processes sweep one schedule (every second, overlap allowed) on one
/// PostgreSQL database: each tick starts exactly one run, whichever process claims it,
/// and the runs complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_start_each_schedule_tick_once() {
    let url = match server().await {
        Ok(url) => url,
        Err(reason) => {
            println!("skipping PostgreSQL schedule test: {reason}");
            return;
        }
    };
    let schema = format!("schedules_{}", uuid_like());
    let outcome = std::panic::AssertUnwindSafe(schedule_workload(&url, &schema))
        .catch_unwind()
        .await;
    drop_schema(&url, &schema).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn schedule_workload(url: &str, schema: &str) {
    use durable::ScheduleOptions;
    use durable::schedule::{FireOutcome, OverlapPolicy, ScheduleSpec};
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let store = Arc::new(
        PostgresStore::connect(
            url,
            PostgresOptions {
                schema: Some(schema.to_owned()),
                ..PostgresOptions::default()
            },
        )
        .await
        .expect("connecting the test's client"),
    );
    let client = Client::new(store.clone());
    let input = Payload::encode(&FanOut {
        steps: 2,
        step_ms: 0,
    })
    .expect("encoding the input");
    let options = ScheduleOptions::new(ScheduleSpec::every(Duration::from_secs(1)).expect("1 s"))
        .overlap(OverlapPolicy::Allow);
    client
        .create_schedule_encoded("fan_out", "pg-pulse", input, options)
        .await
        .expect("creating the schedule");
    let mut workers = Workers {
        children: Vec::new(),
    };
    for _ in 0..2 {
        workers.spawn(url, schema, "general", dir.path(), &[]);
    }
    workers.spawn(
        url,
        schema,
        "payments",
        dir.path(),
        &["--task-queue", "payments"],
    );
    let started = Instant::now();
    loop {
        let info = client.schedule("pg-pulse").await.expect("the schedule");
        if info.runs_started >= 5 {
            break;
        }
        workers.check_alive(None, dir.path());
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} ticks fired: {info:?}",
            info.runs_started
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .pause_schedule("pg-pulse")
        .await
        .expect("pausing the schedule");
    let fires = client
        .schedule_runs("pg-pulse", 0)
        .await
        .expect("the ticks");
    let info = client.schedule("pg-pulse").await.expect("the schedule");
    assert_eq!(fires.len() as u64, info.runs_started);
    assert!(fires.iter().all(|f| f.outcome == FireOutcome::Started));
    let ticks: BTreeSet<i64> = fires.iter().map(|f| f.tick_ms).collect();
    assert_eq!(ticks.len(), fires.len(), "each tick once");
    let runs = store
        .list_runs(RunFilter {
            workflow: Some("fan_out".to_owned()),
            limit: 10_000,
            ..RunFilter::default()
        })
        .await
        .expect("listing runs");
    assert_eq!(runs.len(), fires.len(), "one run per tick: {runs:?}");
    let deadline = Instant::now() + Duration::from_secs(120);
    for fire in &fires {
        let out = client
            .wait_encoded(
                &fire.workflow_id,
                Some(deadline.saturating_duration_since(Instant::now())),
            )
            .await
            .unwrap_or_else(|e| panic!("run {}: {e}", fire.workflow_id));
        let steps: u64 = out.decode().expect("the output");
        assert_eq!(steps, 2);
    }
}
