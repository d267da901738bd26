//! Tests of the SQLite store against real database files in temporary directories.
//!
//! "Writes nothing" is checked by reading every table on a separate connection before
//! and after the refused call; "leaves the file alone" by comparing the file's bytes.

use super::{SqliteOptions, SqliteStore, Synchronous, schema};
use crate::clock;
use crate::error::{ActivityError, StoreError};
use crate::event::{ActivityOptions, Event, EventKind};
use crate::ids::{CommandSeq, EventId, FencingToken, RunKey, WorkerId, WorkflowId};
use crate::payload::Payload;
use crate::retry::RetryPolicy;
use crate::store::{
    AttemptResult, ClaimedRun, Commit, CommitOutcome, NewActivityTask, RunFilter, RunStatus,
    StartOutcome, StartRequest, Store,
};
use rusqlite::{Connection, OpenFlags};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Every store call in these tests finishes well within this, or the test fails.
const DEADLINE: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`DEADLINE`].
async fn timed<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

fn options() -> SqliteOptions {
    SqliteOptions {
        synchronous: Synchronous::Normal,
        ..SqliteOptions::default()
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("durable.db")
}

fn open(dir: &TempDir) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(db_path(dir), options())
}

fn enc<T: serde::Serialize + ?Sized>(value: &T) -> Payload {
    Payload::encode(value).expect("test values encode")
}

fn worker(name: &str) -> WorkerId {
    WorkerId(name.into())
}

fn wid(id: &str) -> WorkflowId {
    WorkflowId(id.into())
}

fn start_request(id: &str) -> StartRequest {
    StartRequest {
        workflow_id: wid(id),
        workflow: "order".into(),
        input: enc(id),
        seed: 7,
        execution_timeout: None,
        task_queue: String::new(),
    }
}

/// The workflows the tests start runs of, as a worker registering them claims with.
fn workflows() -> Vec<String> {
    vec!["order".to_owned(), "refund".to_owned()]
}

async fn start(store: &SqliteStore, id: &str) -> Result<StartOutcome, StoreError> {
    timed("start_run", store.start_run(start_request(id))).await
}

async fn claim(store: &SqliteStore, who: &str) -> Result<Vec<ClaimedRun>, StoreError> {
    timed(
        "claim_runs",
        store.claim_runs(&worker(who), &workflows(), &[String::new()], 256, LEASE),
    )
    .await
}

/// Claims the one run that should be claimable.
async fn claim_one(store: &SqliteStore, who: &str) -> Result<ClaimedRun, StoreError> {
    let mut claimed = claim(store, who).await?;
    assert_eq!(claimed.len(), 1, "expected exactly one claimable run");
    Ok(claimed.remove(0))
}

/// A commit of `events` by the claim's owner, keeping the lease.
fn commit_of(c: &ClaimedRun, who: &str, events: Vec<EventKind>) -> Commit {
    let now = clock::now_ms();
    Commit {
        key: c.key,
        worker: worker(who),
        fence: c.fence,
        after: c.last_event_id,
        events: events.into_iter().map(|k| (now, k)).collect(),
        consumed_inbox: Vec::new(),
        lease: LEASE,
        activities: Vec::new(),
        finished_activities: Vec::new(),
        fired_timers: Vec::new(),
        finish: None,
        keep_lease: true,
        published_status: None,
    }
}

fn scheduled(seq: u32, name: &str) -> EventKind {
    EventKind::ActivityScheduled {
        seq: CommandSeq(seq),
        name: name.into(),
        input: enc(&format!("input-{seq}")),
        options: ActivityOptions {
            retry: Some(RetryPolicy::default()),
            start_to_close_ms: Some(5_000),
            ..ActivityOptions::default()
        },
    }
}

fn remote_task(seq: u32, name: &str) -> NewActivityTask {
    NewActivityTask {
        seq: CommandSeq(seq),
        name: name.into(),
        task_queue: String::new(),
        local: false,
    }
}

fn timer_started(seq: u32, duration_ms: u64) -> EventKind {
    EventKind::TimerStarted {
        seq: CommandSeq(seq),
        duration_ms,
    }
}

fn signal_received(name: &str, value: u32) -> EventKind {
    EventKind::SignalReceived {
        name: name.into(),
        payload: enc(&value),
    }
}

fn ids(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.id.0).collect()
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

/// Opens a separate read-only connection, as an inspector would.
fn inspect(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the test db opens read-only")
}

const TABLES: [(&str, &str); 5] = [
    ("runs", "run_key"),
    ("events", "run_key, event_id"),
    ("inbox", "inbox_id"),
    ("activity_tasks", "run_key, seq"),
    ("timers", "run_key, seq"),
];

/// The number of rows of each table, in [`TABLES`] order.
fn row_counts(path: &Path) -> Vec<(&'static str, i64)> {
    let conn = inspect(path);
    TABLES
        .iter()
        .map(|(table, _)| {
            let n: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .expect("count rows");
            (*table, n)
        })
        .collect()
}

/// Every row of every table, rendered, in a fixed order.
fn snapshot(path: &Path) -> Vec<String> {
    let conn = inspect(path);
    let mut out = Vec::new();
    for (table, order) in TABLES {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .expect("prepare snapshot");
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("query snapshot");
        for row in rows {
            out.push(format!("{table}: {:?}", row.expect("read row")));
        }
    }
    out
}

fn fenced(err: &StoreError, key: RunKey, fence: FencingToken) -> bool {
    matches!(err, StoreError::Fenced { run, fence: f } if *run == key.to_string() && *f == fence)
}

// ---------------------------------------------------------------------------------------
// Runs and leases
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn start_run_is_idempotent_per_workflow_id() -> TestResult {
    let dir = TempDir::new()?;
    let store = open(&dir)?;
    let first = start(&store, "order-1").await?;
    assert!(first.created);
    assert_eq!(first.workflow, "order");

    // Same id, other workflow and input: the existing run, untouched.
    let again = timed(
        "start_run",
        store.start_run(StartRequest {
            workflow_id: wid("order-1"),
            workflow: "refund".into(),
            input: enc("other"),
            seed: 99,
            execution_timeout: None,
            task_queue: String::new(),
        }),
    )
    .await?;
    assert_eq!(
        again,
        StartOutcome {
            created: false,
            ..first.clone()
        }
    );
    let other = start(&store, "order-2").await?;
    assert!(other.created);
    assert_ne!(other.key, first.key);
    assert_ne!(other.run_id, first.run_id);

    let history = timed("read_history", store.read_history(first.key, EventId(0))).await?;
    assert_eq!(ids(&history), [1]);
    assert_eq!(
        history[0].kind,
        EventKind::RunStarted {
            workflow: "order".into(),
            input: enc("order-1"),
            seed: 7
        }
    );
    let info = timed("find_run", store.find_run(&wid("order-1")))
        .await?
        .ok_or("order-1 not found")?;
    assert_eq!(info.key, first.key);
    assert_eq!(info.run_id, first.run_id);
    assert_eq!(info.status, RunStatus::Running);
    assert_eq!(info.last_event_id, EventId(1));
    assert_eq!(info.owner, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_of_one_workflow_id_create_one_run() -> TestResult {
    let dir = TempDir::new()?;
    let store = Arc::new(open(&dir)?);
    let tasks = (0..16).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.start_run(start_request("same")).await })
    });
    let outcomes = timed("16 starts", futures::future::join_all(tasks)).await;
    let mut created = 0;
    let mut keys = Vec::new();
    for outcome in outcomes {
        let outcome = outcome??;
        created += usize::from(outcome.created);
        keys.push(outcome.key);
    }
    assert_eq!(created, 1);
    keys.dedup();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        row_counts(&db_path(&dir)),
        [
            ("runs", 1),
            ("events", 1),
            ("inbox", 0),
            ("activity_tasks", 0),
            ("timers", 0)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn claim_runs_leases_and_bumps_the_fence_only_when_the_owner_changes() -> TestResult {
    let dir = TempDir::new()?;
    let store = open(&dir)?;
    let run = start(&store, "order-1").await?;
    let before = clock::host_now_ms();

    let c1 = claim_one(&store, "w1").await?;
    assert_eq!(c1.key, run.key);
    assert_eq!(c1.workflow_id, wid("order-1"));
    assert_eq!(c1.run_id, run.run_id);
    assert_eq!(c1.workflow, "order");
    assert_eq!(c1.last_event_id, EventId(1));
    assert_eq!(c1.activation_failures, 0);
    let info = timed("find_run", store.find_run(&wid("order-1")))
        .await?
        .ok_or("not found")?;
    assert_eq!(info.owner.as_deref(), Some("w1"));
    assert!(info.lease_expires_at_ms >= before + 30_000, "{info:?}");

    // The owner claiming again keeps its token; another worker gets nothing.
    let again = claim_one(&store, "w1").await?;
    assert_eq!(again.fence, c1.fence);
    assert!(claim(&store, "w2").await?.is_empty());

    // Nothing to do after a commit that leaves no inbox: not claimable, even by w1.
    timed(
        "commit",
        store.commit(commit_of(&c1, "w1", vec![timer_started(1, 60_000)])),
    )
    .await?;
    assert!(claim(&store, "w1").await?.is_empty());

    // New work for a run w1 still holds: w1 gets it back with the same token.
    timed("signal", store.signal(&wid("order-1"), "go", enc(&1u32))).await?;
    assert!(claim(&store, "w2").await?.is_empty());
    let same = claim_one(&store, "w1").await?;
    assert_eq!(same.fence, c1.fence);
    assert_eq!(same.last_event_id, EventId(2));

    // Handed back, it goes to w2 under a new token.
    timed(
        "release_runs",
        store.release_runs(&worker("w1"), &[run.key]),
    )
    .await?;
    let c2 = claim_one(&store, "w2").await?;
    assert_eq!(c2.fence, FencingToken(c1.fence.0 + 1));
    assert_eq!(c2.activation_failures, 0, "a release is not a failure");
    Ok(())
}

#[tokio::test]
async fn commit_appends_contiguous_events_and_moves_inbox_entries() -> TestResult {
    let dir = TempDir::new()?;
    let store = open(&dir)?;
    let run = start(&store, "order-1").await?;
    let c = claim_one(&store, "w1").await?;
    for v in [1, 2] {
        timed("signal", store.signal(&wid("order-1"), "go", enc(&v))).await?;
    }
    let inbox = timed("read_inbox", store.read_inbox(run.key)).await?;
    assert_eq!(inbox.len(), 2);
    assert!(inbox[0].id < inbox[1].id);
    assert_eq!(inbox[0].kind, signal_received("go", 1));
    assert_eq!(inbox[1].kind, signal_received("go", 2));

    let mut commit = commit_of(
        &c,
        "w1",
        vec![
            inbox[0].kind.clone(),
            EventKind::SignalAwaited {
                seq: CommandSeq(1),
                name: "go".into(),
            },
            inbox[1].kind.clone(),
        ],
    );
    commit.events[0].0 = inbox[0].time_ms;
    commit.consumed_inbox = vec![inbox[0].id, inbox[1].id];
    let out = timed("commit", store.commit(commit)).await?;
    assert_eq!(
        out,
        CommitOutcome {
            first: EventId(2),
            last: EventId(4),
            queued: Vec::new()
        }
    );
    assert!(
        timed("read_inbox", store.read_inbox(run.key))
            .await?
            .is_empty()
    );
    let history = timed("read_history", store.read_history(run.key, EventId(0))).await?;
    assert_eq!(ids(&history), [1, 2, 3, 4]);
    assert_eq!(
        names(&history),
        [
            "RunStarted",
            "SignalReceived",
            "SignalAwaited",
            "SignalReceived"
        ]
    );
    assert_eq!(history[1].time_ms, inbox[0].time_ms);
    assert_eq!(history[3].kind, signal_received("go", 2));
    let tail = timed("read_history", store.read_history(run.key, EventId(2))).await?;
    assert_eq!(ids(&tail), [3, 4]);

    // The next commit continues the numbering.
    let c = ClaimedRun {
        last_event_id: EventId(4),
        ..c
    };
    let out = timed(
        "commit",
        store.commit(commit_of(&c, "w1", vec![timer_started(2, 1_000)])),
    )
    .await?;
    assert_eq!(
        out,
        CommitOutcome {
            first: EventId(5),
            last: EventId(5),
            queued: Vec::new()
        }
    );
    let info = timed("find_run", store.find_run(&wid("order-1")))
        .await?
        .ok_or("not found")?;
    assert_eq!(info.last_event_id, EventId(5));
    Ok(())
}

#[tokio::test]
async fn a_commit_with_a_stale_fence_or_wrong_after_is_fenced_and_writes_nothing() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = open(&dir)?;
    let run = start(&store, "order-1").await?;
    let c = claim_one(&store, "w1").await?;
    timed("signal", store.signal(&wid("order-1"), "go", enc(&1u32))).await?;
    let inbox = timed("read_inbox", store.read_inbox(run.key)).await?;

    // A commit that touches every table: it consumes the inbox and creates a task and
    // a timer.
    let full = |c: &ClaimedRun, who: &str| {
        let mut commit = commit_of(
            c,
            who,
            vec![
                inbox[0].kind.clone(),
                scheduled(1, "charge"),
                timer_started(2, 60_000),
            ],
        );
        commit.consumed_inbox = vec![inbox[0].id];
        commit.activities = vec![remote_task(1, "charge")];
        commit
    };
    let rows = row_counts(&path);
    assert_eq!(
        rows,
        [
            ("runs", 1),
            ("events", 1),
            ("inbox", 1),
            ("activity_tasks", 0),
            ("timers", 0)
        ]
    );
    let before = snapshot(&path);

    let stale = ClaimedRun {
        fence: FencingToken(c.fence.0 + 1),
        ..c.clone()
    };
    let err = timed("commit", store.commit(full(&stale, "w1")))
        .await
        .expect_err("a wrong fence is refused");
    assert!(fenced(&err, run.key, stale.fence), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "run {} is owned by another worker now (fencing token {} is stale)",
            run.key, stale.fence
        )
    );
    assert!(!err.is_retryable());

    for after in [0, 2] {
        let wrong = ClaimedRun {
            last_event_id: EventId(after),
            ..c.clone()
        };
        let err = timed("commit", store.commit(full(&wrong, "w1")))
            .await
            .expect_err("a wrong `after` is refused");
        assert!(fenced(&err, run.key, c.fence), "after {after}: {err:?}");
    }
    let err = timed("commit", store.commit(full(&c, "w2")))
        .await
        .expect_err("a commit by a worker that does not own the run is refused");
    assert!(fenced(&err, run.key, c.fence), "{err:?}");

    assert_eq!(row_counts(&path), rows);
    assert_eq!(snapshot(&path), before);

    // The same commit with the right token lands.
    timed("commit", store.commit(full(&c, "w1"))).await?;
    assert_eq!(
        row_counts(&path),
        [
            ("runs", 1),
            ("events", 4),
            ("inbox", 0),
            ("activity_tasks", 1),
            ("timers", 1)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_commit_that_fails_halfway_is_rolled_back_whole() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = open(&dir)?;
    let run = start(&store, "order-1").await?;
    let c = claim_one(&store, "w1").await?;
    timed("signal", store.signal(&wid("order-1"), "go", enc(&1u32))).await?;
    let inbox = timed("read_inbox", store.read_inbox(run.key)).await?;
    let before = snapshot(&path);

    // The first inbox entry exists and is deleted before the second is found missing.
    let mut commit = commit_of(&c, "w1", vec![inbox[0].kind.clone()]);
    commit.consumed_inbox = vec![inbox[0].id, inbox[0].id + 1_000];
    match timed("commit", store.commit(commit)).await {
        Err(StoreError::Conflict(msg)) => assert_eq!(
            msg,
            format!(
                "inbox entry {} of run {} was already applied",
                inbox[0].id + 1_000,
                run.key
            )
        ),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(snapshot(&path), before);

    // A task without its ActivityScheduled event is refused after the events were
    // inserted; they are rolled back too.
    let mut commit = commit_of(&c, "w1", vec![timer_started(1, 1_000)]);
    commit.activities = vec![remote_task(1, "charge")];
    match timed("commit", store.commit(commit)).await {
        Err(StoreError::Invalid(msg)) => {
            assert_eq!(msg, "activity task 1 without its ActivityScheduled event");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(snapshot(&path), before);
    Ok(())
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_owner_is_fenced_out() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = open(&dir)?;
    let run = start(&store, "order-1").await?;
    let old = timed(
        "claim_runs",
        store.claim_runs(
            &worker("w1"),
            &workflows(),
            &[String::new()],
            10,
            Duration::ZERO,
        ),
    )
    .await?;
    assert_eq!(old.len(), 1);
    let old = old[0].clone();

    // The lease ends at the claim's millisecond; poll until the store's clock passes it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let new = loop {
        let mut claimed = claim(&store, "w2").await?;
        if let Some(c) = claimed.pop() {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "w2 never took over the expired lease"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_eq!(new.key, run.key);
    assert_eq!(new.fence, FencingToken(old.fence.0 + 1));
    // The previous owner presumably crashed mid-activation.
    assert_eq!(new.activation_failures, 1);

    let before = snapshot(&path);
    let err = timed(
        "commit",
        store.commit(commit_of(&old, "w1", vec![timer_started(1, 1_000)])),
    )
    .await
    .expect_err("the old owner is fenced out");
    assert!(fenced(&err, run.key, old.fence), "{err:?}");
    let err = timed(
        "activation_failed",
        store.activation_failed(run.key, &worker("w1"), old.fence, "boom", true),
    )
    .await
    .expect_err("the old owner cannot suspend the run either");
    assert!(fenced(&err, run.key, old.fence), "{err:?}");
    // Renewing its leases does not give the run back to w1.
    timed(
        "renew_leases",
        store.renew_leases(&worker("w1"), LEASE, &[]),
    )
    .await?;
    timed(
        "release_runs",
        store.release_runs(&worker("w1"), &[run.key]),
    )
    .await?;
    assert_eq!(snapshot(&path), before);

    let out = timed(
        "commit",
        store.commit(commit_of(&new, "w2", vec![timer_started(1, 1_000)])),
    )
    .await?;
    assert_eq!(out.first, EventId(2));
    let info = timed("find_run", store.find_run(&wid("order-1")))
        .await?
        .ok_or("not found")?;
    assert_eq!(info.owner.as_deref(), Some("w2"));
    Ok(())
}

#[tokio::test]
async fn signals_to_finished_or_unknown_runs_are_refused() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = open(&dir)?;
    match timed("signal", store.signal(&wid("nope"), "go", enc(&1u32))).await {
        Err(StoreError::NotFound(id)) => assert_eq!(id, wid("nope")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(
        StoreError::NotFound(wid("nope")).to_string(),
        "no run with id 'nope'"
    );

    let run = start(&store, "order-1").await?;
    let c = claim_one(&store, "w1").await?;
    let mut done = commit_of(
        &c,
        "w1",
        vec![EventKind::RunCompleted { output: enc("ok") }],
    );
    done.finish = Some(RunStatus::Completed);
    timed("commit", store.commit(done)).await?;
    let info = timed("find_run", store.find_run(&wid("order-1")))
        .await?
        .ok_or("not found")?;
    assert_eq!(info.status, RunStatus::Completed);
    assert_eq!(info.owner, None);
    assert_eq!(info.last_event_id, EventId(2));

    let before = snapshot(&path);
    match timed("signal", store.signal(&wid("order-1"), "go", enc(&1u32))).await {
        Err(StoreError::Finished(id)) => assert_eq!(id, wid("order-1")),
        other => panic!("expected Finished, got {other:?}"),
    }
    match timed(
        "request_cancel",
        store.request_cancel(&wid("order-1"), "stop"),
    )
    .await
    {
        Err(StoreError::Finished(id)) => assert_eq!(id, wid("order-1")),
        other => panic!("expected Finished, got {other:?}"),
    }
    assert_eq!(
        StoreError::Finished(wid("order-1")).to_string(),
        "run 'order-1' is already finished"
    );
    assert_eq!(snapshot(&path), before);
    assert!(
        timed("read_inbox", store.read_inbox(run.key))
            .await?
            .is_empty()
    );
    assert!(claim(&store, "w1").await?.is_empty());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Activities and timers
// ---------------------------------------------------------------------------------------

async fn claim_activities(
    store: &SqliteStore,
    who: &str,
    names: &[&str],
    lease: Duration,
) -> Result<Vec<crate::store::ActivityTask>, StoreError> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    timed(
        "claim_activities",
        store.claim_activities(&worker(who), &names, &[String::new()], 10, lease),
    )
    .await
}

#[tokio::test]
async fn activity_attempts_are_leased_retried_superseded_and_reported_once() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = open(&dir)?;
    let run = start(&store, "order-1").await?;
    let c = claim_one(&store, "w1").await?;
    let mut commit = commit_of(
        &c,
        "w1",
        vec![
            scheduled(1, "charge"),
            scheduled(2, "charge"),
            scheduled(3, "charge"),
        ],
    );
    commit.activities = (1..=3).map(|s| remote_task(s, "charge")).collect();
    commit.keep_lease = false;
    timed("commit", store.commit(commit)).await?;
    let pending = timed("pending_activities", store.pending_activities(run.key)).await?;
    assert_eq!(pending.len(), 3);
    assert!(pending.iter().all(|p| p.attempt == 0 && p.owner.is_none()));

    // Only workers that registered the name, on a queue they serve, get the task.
    assert!(
        claim_activities(&store, "a1", &["refund"], LEASE)
            .await?
            .is_empty()
    );
    let other_queue = timed(
        "claim_activities",
        store.claim_activities(
            &worker("a1"),
            &["charge".to_owned()],
            &["payments".to_owned()],
            10,
            LEASE,
        ),
    )
    .await?;
    assert!(other_queue.is_empty());

    let mut tasks = claim_activities(&store, "a1", &["charge"], LEASE).await?;
    tasks.sort_by_key(|t| t.seq);
    let seqs: Vec<u32> = tasks.iter().map(|t| t.seq.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let t1 = &tasks[0];
    assert_eq!(t1.key, run.key);
    assert_eq!(t1.workflow_id, wid("order-1"));
    assert_eq!(t1.run_id, run.run_id);
    assert_eq!(t1.name, "charge");
    assert_eq!(t1.attempt, 1);
    assert_eq!(t1.input, enc("input-1"));
    assert_eq!(t1.options.start_to_close_ms, Some(5_000));
    assert!(
        claim_activities(&store, "a2", &["charge"], LEASE)
            .await?
            .is_empty()
    );

    // Not the owner, or not this attempt: superseded.
    for (who, attempt) in [("a2", 1), ("a1", 0), ("a1", 2)] {
        match timed(
            "report_attempt",
            store.report_attempt(
                &worker(who),
                run.key,
                CommandSeq(1),
                attempt,
                AttemptResult::Completed(enc("x")),
            ),
        )
        .await
        {
            Err(StoreError::Conflict(msg)) => assert_eq!(
                msg,
                format!(
                    "attempt {attempt} of command 1 of run {} was superseded",
                    run.key
                )
            ),
            other => panic!("expected Conflict for {who}/{attempt}, got {other:?}"),
        }
    }

    // Retry later: released, due at the given time, with the error kept.
    let now = clock::host_now_ms();
    let busy = ActivityError::retryable("Busy", "try later");
    for (seq, at) in [(1, now + 3_600_000), (2, now - 1)] {
        timed(
            "report_attempt",
            store.report_attempt(
                &worker("a1"),
                run.key,
                CommandSeq(seq),
                1,
                AttemptResult::Retry {
                    error: busy.clone(),
                    next_attempt_at_ms: at,
                },
            ),
        )
        .await?;
    }
    let pending = timed("pending_activities", store.pending_activities(run.key)).await?;
    assert_eq!(pending[0].seq, CommandSeq(1));
    assert_eq!(pending[0].owner, None);
    assert_eq!(pending[0].available_at_ms, now + 3_600_000);
    assert_eq!(pending[0].last_error.as_deref(), Some("Busy: try later"));
    assert_eq!(pending[0].attempt, 1);
    // A retry report releases the attempt: reporting it again is a conflict.
    assert!(matches!(
        timed(
            "report_attempt",
            store.report_attempt(
                &worker("a1"),
                run.key,
                CommandSeq(1),
                1,
                AttemptResult::Completed(enc("late")),
            ),
        )
        .await,
        Err(StoreError::Conflict(_))
    ));

    // Only the due one comes back, as attempt 2, and it supersedes attempt 1.
    let again = claim_activities(&store, "a2", &["charge"], LEASE).await?;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].seq, again[0].attempt), (CommandSeq(2), 2));
    assert!(matches!(
        timed(
            "report_attempt",
            store.report_attempt(
                &worker("a1"),
                run.key,
                CommandSeq(2),
                1,
                AttemptResult::Completed(enc("stale")),
            ),
        )
        .await,
        Err(StoreError::Conflict(_))
    ));

    // Completed: the result goes to the inbox once and the run is ready again.
    assert!(claim(&store, "w1").await?.is_empty());
    timed(
        "report_attempt",
        store.report_attempt(
            &worker("a2"),
            run.key,
            CommandSeq(2),
            2,
            AttemptResult::Completed(enc("receipt-2")),
        ),
    )
    .await?;
    let before_duplicate = snapshot(&path);
    assert!(matches!(
        timed(
            "report_attempt",
            store.report_attempt(
                &worker("a2"),
                run.key,
                CommandSeq(2),
                2,
                AttemptResult::Completed(enc("receipt-2")),
            ),
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(snapshot(&path), before_duplicate);

    // Failed for good: recorded with the number of attempts made.
    timed(
        "report_attempt",
        store.report_attempt(
            &worker("a1"),
            run.key,
            CommandSeq(3),
            1,
            AttemptResult::Failed(ActivityError::non_retryable("Declined", "card declined")),
        ),
    )
    .await?;
    let inbox = timed("read_inbox", store.read_inbox(run.key)).await?;
    let kinds: Vec<EventKind> = inbox.into_iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::ActivityCompleted {
                seq: CommandSeq(2),
                output: enc("receipt-2"),
                attempt: 2,
            },
            EventKind::ActivityFailed {
                seq: CommandSeq(3),
                error: ActivityError::non_retryable("Declined", "card declined").with_attempts(1),
            },
        ]
    );
    let pending = timed("pending_activities", store.pending_activities(run.key)).await?;
    let left: Vec<u32> = pending.iter().map(|p| p.seq.0).collect();
    assert_eq!(left, [1]);
    let ready = claim_one(&store, "w1").await?;
    assert_eq!(ready.key, run.key);
    Ok(())
}

#[tokio::test]
async fn an_activity_attempt_whose_lease_expired_is_claimed_again() -> TestResult {
    let dir = TempDir::new()?;
    let store = open(&dir)?;
    let run = start(&store, "order-1").await?;
    let c = claim_one(&store, "w1").await?;
    let mut commit = commit_of(&c, "w1", vec![scheduled(1, "charge")]);
    commit.activities = vec![remote_task(1, "charge")];
    timed("commit", store.commit(commit)).await?;
    let first = claim_activities(&store, "a1", &["charge"], Duration::ZERO).await?;
    assert_eq!(first.len(), 1);

    let deadline = tokio::time::Instant::now() + DEADLINE;
    let second = loop {
        let mut got = claim_activities(&store, "a2", &["charge"], LEASE).await?;
        if let Some(t) = got.pop() {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a2 never took over the expired attempt"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_eq!(second.attempt, 2);
    assert!(matches!(
        timed(
            "report_attempt",
            store.report_attempt(
                &worker("a1"),
                run.key,
                CommandSeq(1),
                1,
                AttemptResult::Completed(enc("late")),
            ),
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    timed(
        "report_attempt",
        store.report_attempt(
            &worker("a2"),
            run.key,
            CommandSeq(1),
            2,
            AttemptResult::Completed(enc("ok")),
        ),
    )
    .await?;
    assert_eq!(
        timed("read_inbox", store.read_inbox(run.key)).await?.len(),
        1
    );
    Ok(())
}

#[tokio::test]
async fn timers_fire_only_when_due_and_only_once() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = open(&dir)?;
    let run = start(&store, "order-1").await?;
    let c = claim_one(&store, "w1").await?;
    timed(
        "commit",
        store.commit(commit_of(
            &c,
            "w1",
            vec![timer_started(1, 0), timer_started(2, 3_600_000)],
        )),
    )
    .await?;
    let timers = timed("pending_timers", store.pending_timers(run.key)).await?;
    let seqs: Vec<u32> = timers.iter().map(|t| t.seq.0).collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(timers[1].fire_at_ms - timers[0].fire_at_ms, 3_600_000);

    // The owner holds a live lease and fires its own timers; the store waits out the grace.
    let hour = Duration::from_secs(3600);
    assert_eq!(
        timed("fire_due_timers", store.fire_due_timers(100, hour)).await?,
        0
    );
    timed(
        "release_runs",
        store.release_runs(&worker("w1"), &[run.key]),
    )
    .await?;
    assert_eq!(
        timed("fire_due_timers", store.fire_due_timers(100, hour)).await?,
        1
    );
    assert_eq!(
        timed("fire_due_timers", store.fire_due_timers(100, hour)).await?,
        0
    );
    let inbox = timed("read_inbox", store.read_inbox(run.key)).await?;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].kind, EventKind::TimerFired { seq: CommandSeq(1) });
    let timers = timed("pending_timers", store.pending_timers(run.key)).await?;
    let seqs: Vec<u32> = timers.iter().map(|t| t.seq.0).collect();
    assert_eq!(seqs, [2]);

    // An owner's timer overdue by more than the grace is fired by the store; the owner's
    // own firing of it afterwards is refused and writes nothing.
    let c = claim_one(&store, "w1").await?;
    let mut commit = commit_of(&c, "w1", vec![inbox[0].kind.clone(), timer_started(3, 0)]);
    commit.consumed_inbox = vec![inbox[0].id];
    timed("commit", store.commit(commit)).await?;
    assert_eq!(
        timed(
            "fire_due_timers",
            store.fire_due_timers(100, Duration::ZERO)
        )
        .await?,
        1
    );
    let before = snapshot(&path);
    let c = ClaimedRun {
        last_event_id: EventId(5),
        ..c
    };
    let mut commit = commit_of(&c, "w1", vec![EventKind::TimerFired { seq: CommandSeq(3) }]);
    commit.fired_timers = vec![CommandSeq(3)];
    match timed("commit", store.commit(commit)).await {
        Err(StoreError::Conflict(msg)) => {
            assert_eq!(msg, format!("timer 3 of run {} already fired", run.key));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(snapshot(&path), before);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Group commit and reopening
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_commits_all_land() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = Arc::new(open(&dir)?);
    let starts = (0..200).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.start_run(start_request(&format!("bulk-{i}"))).await })
    });
    for started in timed("200 starts", futures::future::join_all(starts)).await {
        assert!(started??.created);
    }
    let claimed = claim(&store, "w1").await?;
    assert_eq!(claimed.len(), 200);

    let commits = claimed.into_iter().map(|c| {
        let store = store.clone();
        tokio::spawn(async move {
            let events = vec![
                scheduled(1, "charge"),
                timer_started(2, 60_000),
                EventKind::SignalAwaited {
                    seq: CommandSeq(3),
                    name: "go".into(),
                },
            ];
            let out = store.commit(commit_of(&c, "w1", events)).await;
            (c.key, out)
        })
    });
    for joined in timed("200 commits", futures::future::join_all(commits)).await {
        let (key, out) = joined?;
        assert_eq!(
            out?,
            CommitOutcome {
                first: EventId(2),
                last: EventId(4),
                queued: Vec::new()
            },
            "run {key}"
        );
        let history = timed("read_history", store.read_history(key, EventId(0))).await?;
        assert_eq!(ids(&history), [1, 2, 3, 4], "run {key}");
    }
    assert_eq!(
        row_counts(&path),
        [
            ("runs", 200),
            ("events", 800),
            ("inbox", 0),
            ("activity_tasks", 0),
            ("timers", 200)
        ]
    );
    let runs = timed(
        "list_runs",
        store.list_runs(RunFilter {
            limit: 500,
            ..RunFilter::default()
        }),
    )
    .await?;
    assert_eq!(runs.len(), 200);
    assert!(runs.iter().all(|r| r.last_event_id == EventId(4)));
    Ok(())
}

#[tokio::test]
async fn a_reopened_store_sees_everything_committed_before_the_drop() -> TestResult {
    let dir = TempDir::new()?;
    let (key, history, inbox) = {
        let store = SqliteStore::open(db_path(&dir), SqliteOptions::default())?;
        let run = start(&store, "order-1").await?;
        let c = claim_one(&store, "w1").await?;
        timed(
            "commit",
            store.commit(commit_of(&c, "w1", vec![scheduled(1, "charge")])),
        )
        .await?;
        timed("signal", store.signal(&wid("order-1"), "go", enc(&5u32))).await?;
        let history = timed("read_history", store.read_history(run.key, EventId(0))).await?;
        let inbox = timed("read_inbox", store.read_inbox(run.key)).await?;
        (run.key, history, inbox)
    };
    assert_eq!(history.len(), 2);

    let store = SqliteStore::open(db_path(&dir), SqliteOptions::default())?;
    assert_eq!(
        timed("read_history", store.read_history(key, EventId(0))).await?,
        history
    );
    let reopened_inbox = timed("read_inbox", store.read_inbox(key)).await?;
    assert_eq!(reopened_inbox.len(), 1);
    assert_eq!(reopened_inbox[0].id, inbox[0].id);
    assert_eq!(reopened_inbox[0].kind, inbox[0].kind);
    let info = timed("find_run", store.find_run(&wid("order-1")))
        .await?
        .ok_or("not found")?;
    assert_eq!(info.last_event_id, EventId(2));
    assert_eq!(info.owner.as_deref(), Some("w1"));
    Ok(())
}

#[tokio::test]
async fn namespaces_sharing_a_file_do_not_see_each_other() -> TestResult {
    let dir = TempDir::new()?;
    let a = open(&dir)?;
    let b = SqliteStore::open(
        db_path(&dir),
        SqliteOptions {
            namespace: "team-b".into(),
            ..options()
        },
    )?;
    let ra = start(&a, "shared-id").await?;
    assert!(
        timed("find_run", b.find_run(&wid("shared-id")))
            .await?
            .is_none()
    );
    assert!(claim(&b, "wb").await?.is_empty());
    let rb = start(&b, "shared-id").await?;
    assert!(rb.created);
    assert_ne!(ra.key, rb.key);
    let claimed = claim_one(&b, "wb").await?;
    assert_eq!(claimed.key, rb.key);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Opening files
// ---------------------------------------------------------------------------------------

/// The names and bytes of every file in `dir`, sorted.
fn dir_contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("list the temp dir")
        .map(|e| {
            let e = e.expect("dir entry");
            let bytes = if e.path().is_file() {
                std::fs::read(e.path()).expect("read file")
            } else {
                Vec::new()
            };
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}

/// Opens `path` expecting a refusal; checks the directory is byte-for-byte unchanged:
/// no file changed, none was created.
fn refused(dir: &TempDir, path: &Path) -> StoreError {
    let before = dir_contents(dir.path());
    let err = match SqliteStore::open(path, options()) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    };
    assert_eq!(
        dir_contents(dir.path()),
        before,
        "opening {} changed files",
        path.display()
    );
    err
}

fn foreign(err: &StoreError, path: &Path, why: &str) {
    match err {
        StoreError::Foreign { path: p, reason } => {
            assert_eq!(p, &path.display().to_string());
            assert_eq!(reason, why);
        }
        other => panic!("expected Foreign, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not a durable database ({why}); check --db",
            path.display()
        )
    );
    assert!(!err.is_retryable());
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() -> TestResult {
    let dir = TempDir::new()?;
    let short = dir.path().join("notes.txt");
    std::fs::write(&short, "remember the milk\n")?;
    let err = refused(&dir, &short);
    foreign(&err, &short, "not a SQLite database");

    let long = dir.path().join("report.txt");
    std::fs::write(&long, "a line of text that is not sqlite\n".repeat(500))?;
    let err = refused(&dir, &long);
    foreign(&err, &long, "not a SQLite database");
    Ok(())
}

#[test]
fn an_empty_file_is_refused_and_left_alone() -> TestResult {
    let dir = TempDir::new()?;
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"")?;
    let err = refused(&dir, &path);
    foreign(&err, &path, "an empty file");
    Ok(())
}

#[test]
fn a_database_of_another_application_is_refused_and_left_alone() -> TestResult {
    let dir = TempDir::new()?;
    let path = dir.path().join("app.db");
    {
        let conn = Connection::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
             INSERT INTO notes (body) VALUES ('keep me');",
        )?;
    }
    let err = refused(&dir, &path);
    foreign(
        &err,
        &path,
        "a SQLite database of another application, tables: notes",
    );
    let conn = Connection::open(&path)?;
    let body: String = conn.query_row("SELECT body FROM notes", [], |r| r.get(0))?;
    assert_eq!(body, "keep me");
    Ok(())
}

#[test]
fn an_empty_sqlite_database_that_exists_is_not_taken_over() -> TestResult {
    let dir = TempDir::new()?;
    let path = dir.path().join("blank.db");
    {
        let conn = Connection::open(&path)?;
        // A valid database file with no schema at all.
        conn.execute_batch("CREATE TABLE t (x); DROP TABLE t; VACUUM;")?;
    }
    assert!(std::fs::metadata(&path)?.len() > 0);
    let err = refused(&dir, &path);
    foreign(&err, &path, "an empty SQLite database, no durable schema");
    Ok(())
}

#[tokio::test]
async fn a_database_from_a_newer_durable_is_refused_and_left_alone() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    {
        let store = open(&dir)?;
        start(&store, "order-1").await?;
    }
    let newer = schema::current_version() + 1;
    {
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "user_version", newer)?;
        // Move the change out of the WAL into the file, so the bytes compared below are
        // the whole database.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    let bytes = std::fs::read(&path)?;
    let err = match SqliteStore::open(&path, options()) {
        Ok(_) => panic!("a newer database opened"),
        Err(e) => e,
    };
    assert_eq!(std::fs::read(&path)?, bytes, "the refused file changed");
    match &err {
        StoreError::TooNew {
            path: p,
            found,
            supported,
        } => {
            assert_eq!(p, &path.display().to_string());
            assert_eq!(*found, newer);
            assert_eq!(*supported, schema::current_version());
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "{} has schema version {newer}, newer than this binary supports ({}); upgrade durable",
            path.display(),
            schema::current_version()
        )
    );
    Ok(())
}

/// Eight openers race to create one new file: each must open it (none may see the file
/// half made and refuse it as foreign), and the result is one database.
#[test]
fn concurrent_opens_of_a_new_path_all_succeed() -> TestResult {
    for round in 0..20 {
        let dir = TempDir::new()?;
        let path = db_path(&dir);
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let openers: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteStore::open(&path, options()).map(|_| ())
                })
            })
            .collect();
        for opener in openers {
            let result = opener.join().expect("opener thread");
            assert!(result.is_ok(), "round {round}: {result:?}");
        }
        // Only the database and SQLite's own side files remain: no temporary files.
        // (Names only: the stores' reader threads may still be closing the side files.)
        let names: Vec<String> = std::fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        assert!(
            names.iter().all(|n| n.starts_with("durable.db")),
            "round {round}: {names:?}"
        );
    }
    Ok(())
}

#[test]
fn a_directory_is_refused() -> TestResult {
    let dir = TempDir::new()?;
    let sub = dir.path().join("data");
    std::fs::create_dir(&sub)?;
    let err = refused(&dir, &sub);
    foreign(&err, &sub, "a directory");
    assert!(std::fs::read_dir(&sub)?.next().is_none());
    Ok(())
}

#[test]
fn a_missing_file_is_not_created_when_creation_is_off() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let err = SqliteStore::open(
        &path,
        SqliteOptions {
            create: false,
            ..options()
        },
    )
    .expect_err("nothing to open");
    match &err {
        StoreError::Io(msg) => assert_eq!(msg, &format!("no database at {}", path.display())),
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(!path.exists());
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_file_is_private_to_its_owner() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new()?;
    let store = open(&dir)?;
    start(&store, "order-1").await?;
    let mode = std::fs::metadata(db_path(&dir))?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    // SQLite gives its side files the database's permissions.
    for side in ["durable.db-wal", "durable.db-shm"] {
        let path = dir.path().join(side);
        if path.exists() {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            assert_eq!(mode & 0o077, 0, "{side} has mode {mode:o}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Workflow ids
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unusual_workflow_ids_round_trip() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = open(&dir)?;
    let unusual = [
        "it's \"quoted\"",
        "'; DROP TABLE events;--",
        "line one\nline two\r\n\ttabbed",
        "crab 🦀 clef 𝄞 cjk 𠜎",
        "100%_match\\escaped",
        " leading and trailing spaces ",
    ];
    let mut keys = Vec::new();
    for id in unusual {
        let run = start(&store, id).await?;
        assert!(run.created, "{id:?}");
        keys.push(run.key);
    }
    for (id, key) in unusual.iter().zip(&keys) {
        let info = timed("find_run", store.find_run(&wid(id)))
            .await?
            .ok_or_else(|| format!("{id:?} not found"))?;
        assert_eq!(info.workflow_id, wid(id));
        assert_eq!(info.key, *key);
        assert!(!start(&store, id).await?.created, "{id:?}");
        timed("signal", store.signal(&wid(id), "go", enc(&1u32))).await?;
        let history = timed("read_history", store.read_history(*key, EventId(0))).await?;
        assert_eq!(
            history[0].kind,
            EventKind::RunStarted {
                workflow: "order".into(),
                input: enc(id),
                seed: 7
            }
        );
    }
    let mut listed: Vec<String> = timed("list_runs", store.list_runs(RunFilter::default()))
        .await?
        .into_iter()
        .map(|r| r.workflow_id.0)
        .collect();
    listed.sort();
    let mut want: Vec<String> = unusual.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(listed, want);
    // A prefix or a LIKE pattern of an id finds nothing.
    assert!(
        timed("find_run", store.find_run(&wid("100%")))
            .await?
            .is_none()
    );
    assert!(
        timed("find_run", store.find_run(&wid("crab 🦀")))
            .await?
            .is_none()
    );
    assert_eq!(
        row_counts(&path),
        [
            ("runs", 6),
            ("events", 6),
            ("inbox", 6),
            ("activity_tasks", 0),
            ("timers", 0)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn empty_nul_and_oversized_ids_are_refused() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    let store = open(&dir)?;
    let long = "x".repeat(1001);
    let cases = [
        ("", "workflow id must not be empty"),
        ("a\0b", "workflow id must not contain NUL bytes"),
        ("\0", "workflow id must not contain NUL bytes"),
        (
            long.as_str(),
            "workflow id is 1001 bytes long; the limit is 1000",
        ),
    ];
    for (id, why) in cases {
        match start(&store, id).await {
            Err(StoreError::Invalid(msg)) => assert_eq!(msg, why, "{id:?}"),
            other => panic!("expected Invalid for {id:?}, got {other:?}"),
        }
    }
    assert!(start(&store, &"x".repeat(1000)).await?.created);
    match timed(
        "start_run",
        store.start_run(StartRequest {
            workflow: String::new(),
            ..start_request("ok")
        }),
    )
    .await
    {
        Err(StoreError::Invalid(msg)) => assert_eq!(msg, "workflow name must not be empty"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    match timed(
        "signal",
        store.signal(&wid(&"x".repeat(1000)), "a\0", enc(&1u32)),
    )
    .await
    {
        Err(StoreError::Invalid(msg)) => {
            assert_eq!(msg, "signal name must not contain NUL bytes");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(
        row_counts(&path),
        [
            ("runs", 1),
            ("events", 1),
            ("inbox", 0),
            ("activity_tasks", 0),
            ("timers", 0)
        ]
    );
    Ok(())
}

/// A file written by a durable with schema version 1 (before heartbeats) is migrated on
/// open: its rows stay, and the new columns work.
#[tokio::test]
async fn a_version_1_database_is_migrated_and_keeps_its_rows() -> TestResult {
    let dir = TempDir::new()?;
    let path = db_path(&dir);
    {
        let conn = Connection::open(&path)?;
        conn.execute_batch(include_str!("migrations/001_init.sql"))?;
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)?;
        conn.pragma_update(None, "user_version", 1)?;
        conn.execute(
            "INSERT INTO runs (run_key, namespace, workflow_id, run_id, workflow, status, created_at_ms,
             updated_at_ms, last_event_id, ready) VALUES (1, 'default', 'old-1', 'r-1', 'order', 'running', 0, 0, 2, 0)",
            [],
        )?;
        let started = rmp_serde::to_vec_named(&EventKind::RunStarted {
            workflow: "order".into(),
            input: enc("old-1"),
            seed: 7,
        })?;
        let upload = rmp_serde::to_vec_named(&scheduled(1, "upload"))?;
        conn.execute(
            "INSERT INTO events (run_key, event_id, time_ms, kind, seq, body) VALUES
             (1, 1, 0, 'RunStarted', NULL, ?1), (1, 2, 0, 'ActivityScheduled', 1, ?2)",
            rusqlite::params![started, upload],
        )?;
        conn.execute(
            "INSERT INTO activity_tasks (run_key, seq, namespace, name, task_queue, event_id, attempt,
             owner, lease_expires_at_ms, available_at_ms, scheduled_at_ms) VALUES
             (1, 1, 'default', 'upload', '', 2, 0, NULL, 0, 0, 0)",
            [],
        )?;
    }
    let store = open(&dir)?;
    {
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        assert_eq!(version, schema::current_version());
        let index: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'activity_tasks_by_owner'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(index, 0, "migration 4 drops the index");
    }
    let pending = timed("pending", store.pending_activities(RunKey(1))).await?;
    assert_eq!(pending.len(), 1, "the old task survived the migration");
    assert_eq!(pending[0].last_heartbeat_at_ms, None);
    let task = timed(
        "claim",
        store.claim_activities(&worker("w"), &["upload".into()], &[String::new()], 1, LEASE),
    )
    .await?
    .pop()
    .ok_or("the old task is claimable")?;
    assert_eq!((task.attempt, task.last_heartbeat), (1, None));
    timed(
        "heartbeat",
        store.record_heartbeat(&worker("w"), RunKey(1), CommandSeq(1), 1, enc(&5u32)),
    )
    .await?;
    Ok(())
}
