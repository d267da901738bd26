//! A signal that reaches a run in the same inbox batch as the result that lets its code
//! return is recorded before the run's end, in a real approval run; the run's history is
//! the saved fixture `tests/histories/approval-signal-at-finish.json` (rewrite it with
//! `DURABLE_WRITE_FIXTURES=1 cargo test --test e2e finish_batch`).
//!
//! The run is on a task queue its worker serves and its activities are not on, so each
//! result is reported through the store while no worker runs, next to a signal: the
//! worker that claims the run then finds both in one batch, deterministically.

use crate::approval_example::{self, Decision, Request, approval};
use durable::prelude::*;
use durable::store::{AttemptResult, RunStatus, SharedStore};
use durable::{EventKind, HistoryFile, Payload, SqliteOptions, SqliteStore, StartOptions};
use durable_core::ids::WorkerId;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ID: &str = "approval-signal-at-finish";

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories/approval-signal-at-finish.json")
}

/// Runs a worker that serves only the `elsewhere` queue until `done` holds for the run's
/// history, then stops it; returns that history.
async fn activate_until(
    store: &SharedStore,
    what: &str,
    done: impl Fn(&[durable::Event]) -> bool,
) -> Vec<durable::Event> {
    let worker = Worker::new(
        store.clone(),
        approval_example::registry(),
        WorkerOptions {
            poll_interval: Duration::from_millis(10),
            lease: Duration::from_secs(1),
            task_queues: vec!["elsewhere".into()],
            ..WorkerOptions::default()
        },
    );
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    let client = Client::new(store.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let history = loop {
        if let Ok(h) = client.history(&WorkflowId::from(ID)).await
            && done(&h)
        {
            break h;
        }
        assert!(Instant::now() < deadline, "{what} did not happen in 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the worker stops")
        .expect("the worker task did not panic")
        .expect("the worker stopped cleanly");
    history
}

/// Runs the one pending attempt of `activity` as a remote worker would, and reports it.
async fn run_remotely(store: &SharedStore, activity: &str) {
    let remote = WorkerId("remote-activities".into());
    let tasks = store
        .claim_activities(
            &remote,
            &[activity.to_owned()],
            &[String::new()],
            10,
            Duration::from_secs(30),
        )
        .await
        .expect("claim");
    assert_eq!(tasks.len(), 1, "one attempt of {activity}: {tasks:?}");
    let t = &tasks[0];
    store
        .report_attempt(
            &remote,
            t.key,
            t.seq,
            t.attempt,
            AttemptResult::Completed(Payload::encode(&()).expect("encode")),
        )
        .await
        .expect("report");
}

fn scheduled(h: &[durable::Event], activity: &str) -> bool {
    h.iter()
        .any(|e| matches!(&e.kind, EventKind::ActivityScheduled { name, .. } if name == activity))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_decision_is_recorded_before_the_approval_completes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("approval.db");
    let store: SharedStore =
        Arc::new(SqliteStore::open(&db, SqliteOptions::default()).expect("open"));
    let history = late_decision(store.clone()).await;
    let info = store
        .find_run(&WorkflowId::from(ID))
        .await
        .expect("find")
        .expect("the run exists");
    let recorded = HistoryFile::new(WorkflowId::from(ID), info.run_id, history.clone());
    if std::env::var_os("DURABLE_WRITE_FIXTURES").is_some() {
        std::fs::write(fixture(), recorded.to_json()).expect("write the fixture");
    }
    // The saved fixture is a history of this same shape (its times and ids differ).
    let saved = HistoryFile::read(&fixture()).expect("the fixture parses");
    let kinds = |h: &[durable::Event]| h.iter().map(|e| e.kind.name()).collect::<Vec<_>>();
    assert_eq!(kinds(&saved.events), kinds(&history));
    let report = durable::Replayer::new(approval_example::registry())
        .replay_file(&fixture())
        .expect("the fixture replays");
    assert!(matches!(
        report.outcome,
        durable::ReplayOutcome::Completed(_)
    ));
}

/// The same on PostgreSQL, in a schema of its own (dropped after); skipped, saying why,
/// without `DURABLE_TEST_DATABASE_URL`.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_decision_is_recorded_before_the_approval_completes_on_postgres() {
    use futures::FutureExt;
    let Ok(url) = std::env::var("DURABLE_TEST_DATABASE_URL") else {
        println!(
            "skipping the PostgreSQL finishing-batch test: DURABLE_TEST_DATABASE_URL is not set"
        );
        return;
    };
    let schema = format!("sigfix_{}", durable::RunId::generate().0.replace('-', "_"));
    let options = durable::PostgresOptions {
        schema: Some(schema.clone()),
        ..durable::PostgresOptions::default()
    };
    let store = match durable::PostgresStore::connect(&url, options).await {
        Ok(s) => s,
        Err(e) => {
            println!("skipping the PostgreSQL finishing-batch test: {e}");
            return;
        }
    };
    let outcome = std::panic::AssertUnwindSafe(late_decision(Arc::new(store)))
        .catch_unwind()
        .await;
    if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        let driver = tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
        drop(client);
        let _ = driver.await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Runs the approval with each activity result and a signal waiting together, the last
/// signal a late second answer; checks that answer is recorded before the end and
/// returns the history.
async fn late_decision(store: SharedStore) -> Vec<durable::Event> {
    let client = Client::new(store.clone());
    let id = WorkflowId::from(ID);
    client
        .start_with::<approval>(
            ID,
            &Request {
                request_id: "r-4".into(),
                amount_cents: 7_000,
                approver: "lee@example.com".into(),
                timeout_secs: 3600,
            },
            // The run is on the queue the worker serves; its activities are not.
            StartOptions::new().task_queue("elsewhere"),
        )
        .await
        .expect("start");
    activate_until(&store, "notifying", |h| scheduled(h, "notify_approver")).await;
    // The approver is notified and approves: both wait for the next activation.
    run_remotely(&store, "notify_approver").await;
    let decide = |approved: bool, by: &str| Decision {
        approved,
        by: by.into(),
    };
    client
        .signal(&id, "decision", &decide(true, "lee"))
        .await
        .expect("signal");
    activate_until(&store, "executing", |h| scheduled(h, "execute_request")).await;
    // The request is executed, and a second approver's late answer arrives with it.
    run_remotely(&store, "execute_request").await;
    client
        .signal(&id, "decision", &decide(false, "sam"))
        .await
        .expect("the store acknowledges the late decision");
    let history = activate_until(&store, "the end", |h| {
        h.last().is_some_and(|e| e.kind.is_terminal())
    })
    .await;
    let info = client.status(&id).await.expect("status");
    assert_eq!(info.status, RunStatus::Completed);
    let tail: Vec<&str> = history[history.len() - 3..]
        .iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(
        tail,
        ["ActivityCompleted", "SignalReceived", "RunCompleted"]
    );
    match &history[history.len() - 2].kind {
        EventKind::SignalReceived { name, payload } => {
            assert_eq!(name, "decision");
            assert_eq!(
                payload.decode::<Decision>().expect("decode"),
                decide(false, "sam")
            );
        }
        other => panic!("expected the late decision, got {other:?}"),
    }
    let outcome: approval_example::Outcome = match &history[history.len() - 1].kind {
        EventKind::RunCompleted { output } => output.decode().expect("decode"),
        other => panic!("expected the end, got {other:?}"),
    };
    assert_eq!(outcome.status, "approved");
    assert_eq!(outcome.decided_by.as_deref(), Some("lee"));
    assert!(
        store
            .read_inbox(info_key(&store).await)
            .await
            .expect("read the inbox")
            .is_empty(),
        "nothing is left behind"
    );
    history
}

async fn info_key(store: &SharedStore) -> durable_core::ids::RunKey {
    store
        .find_run(&WorkflowId::from(ID))
        .await
        .expect("find")
        .expect("the run exists")
        .key
}
