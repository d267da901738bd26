//! Run execution timeouts end to end, on a real SQLite file: a run still waiting past its
//! timeout is ended as failed with a clear reason, by whichever worker is alive, also
//! when none was running at the deadline; its history replays to the same failure.

use crate::approval_example;
use crate::support::{order, temp_dir, worker};
use crate::workflows::{Running, WAIT, open};
use durable::prelude::*;
use durable::store::RunStatus;
use durable::{ClientError, EventKind, ReplayOutcome, Replayer, RunIdentity, StartOptions};
use std::time::{Duration, Instant};

fn waiting_request(id: &str) -> approval_example::Request {
    approval_example::Request {
        request_id: id.to_owned(),
        amount_cents: 500,
        approver: "lee@example.com".into(),
        timeout_secs: 3600,
    }
}

async fn expect_timed_out(client: &Client, id: &str, message: &str) {
    match client.result::<approval_example::approval>(id, WAIT).await {
        Err(ClientError::Failed { error, .. }) => {
            assert_eq!(error.kind(), "ExecutionTimeout");
            assert_eq!(error.message(), message);
        }
        other => panic!("expected an execution timeout, got {other:?}"),
    }
    let info = client.status(&WorkflowId::from(id)).await.expect("status");
    assert_eq!(info.status, RunStatus::Failed);
    assert_eq!(info.reason.as_deref(), Some(message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_execution_timeout_fails_and_replays_to_that_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), approval_example::registry());
    let client = Client::new(store.clone());
    let started = Instant::now();
    client
        .start_with::<approval_example::approval>(
            "slow",
            &waiting_request("slow"),
            StartOptions::new().execution_timeout(Duration::from_secs(1)),
        )
        .await
        .expect("start");
    client
        .start::<approval_example::approval>("patient", &waiting_request("patient"))
        .await
        .expect("start");
    expect_timed_out(&client, "slow", "execution timeout of 1s exceeded").await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before its deadline"
    );
    let history = client
        .history(&WorkflowId::from("slow"))
        .await
        .expect("history");
    let tail: Vec<&str> = history
        .iter()
        .rev()
        .take(2)
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(tail, ["RunFailed", "RunTimedOut"]);
    assert!(
        history.iter().any(|e| e.kind.name() == "TimerStarted"),
        "the run was waiting on its timer: {history:?}"
    );
    let info = client
        .status(&WorkflowId::from("slow"))
        .await
        .expect("status");
    assert!(
        store
            .pending_timers(info.key)
            .await
            .expect("timers")
            .is_empty()
    );
    let report = Replayer::new(approval_example::registry())
        .replay(
            RunIdentity {
                workflow_id: info.workflow_id.clone(),
                run_id: info.run_id.clone(),
            },
            &history,
        )
        .expect("the timed-out run replays");
    match report.outcome {
        ReplayOutcome::Failed(e) => assert_eq!(e.kind(), "ExecutionTimeout"),
        other => panic!("expected the recorded failure, got {other:?}"),
    }
    // The run without a timeout goes on waiting.
    let patient = client
        .status(&WorkflowId::from("patient"))
        .await
        .expect("status");
    assert_eq!(patient.status, RunStatus::Running);
    assert_eq!(patient.execution_deadline_ms, None);
    client
        .signal(
            &WorkflowId::from("patient"),
            "decision",
            &approval_example::Decision {
                approved: true,
                by: "lee".into(),
            },
        )
        .await
        .expect("signal");
    let out = client
        .result::<approval_example::approval>("patient", WAIT)
        .await
        .expect("completes");
    assert_eq!(out.status, "approved");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_holds_when_no_worker_ran_at_the_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let client = Client::new(store.clone());
    client
        .start_with::<approval_example::approval>(
            "late",
            &waiting_request("late"),
            StartOptions::new().execution_timeout(Duration::from_millis(300)),
        )
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A worker started after the deadline ends the run rather than running it.
    let worker = Running::start(store.clone(), approval_example::registry());
    expect_timed_out(&client, "late", "execution timeout of 300ms exceeded").await;
    let history = client
        .history(&WorkflowId::from("late"))
        .await
        .expect("history");
    assert!(
        matches!(
            history.last().map(|e| &e.kind),
            Some(EventKind::RunFailed { .. })
        ),
        "{history:?}"
    );
    worker.stop().await;
}

#[test]
fn start_takes_an_execution_timeout_on_the_command_line() {
    let dir = temp_dir();
    let db = dir.path().join("orders.db");
    let input = crate::support::example_input("order-inventory-flaky").to_string();
    order(
        &db,
        &[
            "start",
            "order",
            "--id",
            "x",
            "--input",
            &input,
            "--execution-timeout",
            "soon",
        ],
    )
    .run()
    .expect_one_error_line(2, "--execution-timeout");
    order(
        &db,
        &[
            "start",
            "order",
            "--id",
            "x",
            "--input",
            &input,
            "--execution-timeout",
            "0s",
        ],
    )
    .run()
    .expect_one_error_line(2, "longer than zero");
    assert!(!db.exists(), "refused input writes nothing");
    // The inventory service fails the first attempt and the retry waits 2 s: past 1 s.
    order(
        &db,
        &[
            "start",
            "order",
            "--id",
            "t1",
            "--input",
            &input,
            "--execution-timeout",
            "1s",
        ],
    )
    .run()
    .ok();
    let mut w = worker(&db, &[]).spawn(&dir.path().join("worker.log"));
    order(&db, &["result", "t1", "--wait", "--timeout", "30"])
        .timeout(Duration::from_secs(40))
        .run()
        .expect_one_error_line(1, "execution timeout of 1s exceeded");
    let out = order(&db, &["status", "t1"]).run();
    let text = out.ok();
    assert!(text.contains("failed"), "{text}");
    assert!(text.contains("execution timeout of 1s exceeded"), "{text}");
    assert!(text.contains("deadline:"), "{text}");
    w.kill();
}
