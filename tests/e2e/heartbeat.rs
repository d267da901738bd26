//! Activity heartbeats end to end, on a real SQLite file: a long activity that stops
//! heartbeating is retried and resumes from its last heartbeat's details, one that never
//! heartbeats fails with `HeartbeatTimeout` once its attempts are used up, and an attempt
//! that was timed out while stalled learns it through its context.

use crate::workflows::{Running, WAIT, open};
use durable::prelude::*;
use durable::{ClientError, EventKind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Parts of the simulated upload.
const PARTS: u32 = 10;

/// What an upload attempt did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Uploaded {
    attempt: u32,
    resumed_from: u32,
}

/// How the first attempt misbehaves.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
enum Stall {
    /// Hangs after five parts, without heartbeating again.
    Hang,
    /// Blocks its thread after five parts, then tries to carry on.
    Block,
    /// Never heartbeats and never finishes, on any attempt.
    Forever,
}

/// Attempts that learned from a refused heartbeat that they were lost.
static LOST: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Uploads `PARTS` parts, heartbeating the number done after each, starting from the
/// last heartbeat of an earlier attempt.
#[activity]
async fn upload(ctx: ActivityContext, stall: Stall) -> Result<Uploaded, ActivityError> {
    if stall == Stall::Forever {
        std::future::pending::<()>().await;
    }
    let resumed_from = ctx.last_heartbeat::<u32>().unwrap_or(0);
    for done in resumed_from + 1..=PARTS {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Err(e) = ctx.heartbeat(&done) {
            if let Ok(mut lost) = LOST.lock() {
                lost.push(format!("{}: {e}", ctx.idempotency_key()));
            }
            return Err(e);
        }
        if ctx.attempt() == 1 && done == 5 {
            match stall {
                Stall::Hang => std::future::pending::<()>().await,
                Stall::Block => {
                    tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(1500)));
                    // Carry on heartbeating (at once, then every 10 ms) until told the
                    // attempt is lost.
                    for _ in 0..500 {
                        if let Err(e) = ctx.heartbeat(&done) {
                            if let Ok(mut lost) = LOST.lock() {
                                lost.push(format!("{}: {e}", ctx.idempotency_key()));
                            }
                            return Err(e);
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                Stall::Forever => {}
            }
        }
    }
    Ok(Uploaded {
        attempt: ctx.attempt(),
        resumed_from,
    })
}

/// Calls `upload` with a heartbeat timeout of 400 ms and two attempts.
#[workflow]
async fn uploader(ctx: WorkflowContext, stall: Stall) -> Result<Uploaded, WorkflowError> {
    Ok(ctx
        .activity::<upload>(stall)
        .heartbeat_timeout(Duration::from_millis(400))
        .retry(RetryPolicy::exponential(Duration::from_millis(10)).max_attempts(2))
        .await?)
}

fn registry() -> Registry {
    Registry::new().workflow::<uploader>().activity::<upload>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_activity_is_retried_and_resumes_from_its_last_heartbeat() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), registry());
    let client = Client::new(store);
    client
        .start::<uploader>("up-hang", &Stall::Hang)
        .await
        .expect("start");
    let out = client
        .result::<uploader>("up-hang", WAIT)
        .await
        .expect("the second attempt finishes the upload");
    assert_eq!(
        out,
        Uploaded {
            attempt: 2,
            resumed_from: 5
        }
    );
    let history = client
        .history(&WorkflowId::from("up-hang"))
        .await
        .expect("history");
    assert!(
        history
            .iter()
            .any(|e| matches!(e.kind, EventKind::ActivityCompleted { attempt: 2, .. })),
        "{history:?}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_that_never_heartbeats_fails_with_heartbeat_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), registry());
    let client = Client::new(store);
    client
        .start::<uploader>("up-silent", &Stall::Forever)
        .await
        .expect("start");
    match client.result::<uploader>("up-silent", WAIT).await {
        Err(ClientError::Failed { error, .. }) => {
            assert_eq!(error.kind(), "HeartbeatTimeout");
            assert!(error.message().contains("400 ms"), "{error}");
        }
        other => panic!("expected a HeartbeatTimeout failure, got {other:?}"),
    }
    let history = client
        .history(&WorkflowId::from("up-silent"))
        .await
        .expect("history");
    let failed = history
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ActivityFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .expect("the activity failed");
    assert_eq!(failed.attempts(), 2, "both attempts timed out");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_learns_it_was_lost_from_its_next_heartbeat() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), registry());
    let client = Client::new(store);
    let started = client
        .start::<uploader>("up-block", &Stall::Block)
        .await
        .expect("start");
    // The store's sweep ends the blocked attempt; the second one finishes meanwhile.
    let out = client
        .result::<uploader>("up-block", WAIT)
        .await
        .expect("the second attempt finishes the upload");
    assert_eq!((out.attempt, out.resumed_from), (2, 5));
    // The first attempt wakes up, heartbeats, is refused and stops.
    let key = format!("up-block/{}/1", started.run_id);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lost = LOST.lock().map(|l| l.clone()).unwrap_or_default();
        if let Some(line) = lost.iter().find(|l| l.starts_with(&key)) {
            assert!(line.contains("AttemptLost"), "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled attempt never learned it was lost: {lost:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop().await;
}
