//! Queries: what a run published with `ctx.set_status(..)`, read through the Client and
//! through the CLI binary while the run waits for a signal, and after it finished; the
//! reads change nothing in its history.

use crate::approval_example::{self, Decision, Request, approval};
use crate::support::{CliOutput, order, temp_dir};
use crate::workflows::{Running, WAIT, open, wait_for_event};
use durable::prelude::*;
use durable::{ClientError, Replayer};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Runs the CLI off the async runtime, so the in-process worker keeps its threads.
async fn cli(db: &Path, args: &[&str]) -> CliOutput {
    let db: PathBuf = db.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        order(&db, &args).run()
    })
    .await
    .expect("the CLI thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_publishes_its_status_to_the_client_and_the_cli() {
    let dir = temp_dir();
    let db = dir.path().join("approvals.db");
    let store = open(&db);
    let worker = Running::start(store.clone(), approval_example::registry());
    let client = Client::new(store);
    let id = WorkflowId::from("exp-q");
    let request = Request {
        request_id: "exp-q".into(),
        amount_cents: 12_000,
        approver: "lee@example.com".into(),
        timeout_secs: 3600,
    };
    client
        .start::<approval>("exp-q", &request)
        .await
        .expect("start");
    wait_for_event(&client, "exp-q", "SignalAwaited").await;

    let waiting = "waiting for approval from lee@example.com";
    let status: Option<String> = client.query_status(&id).await.expect("query_status");
    assert_eq!(status.as_deref(), Some(waiting));
    let before = client.history(&id).await.expect("history");

    let out = cli(&db, &["query", "exp-q"]).await;
    assert_eq!(
        serde_json::from_str::<Value>(out.ok().trim()).expect("query prints JSON"),
        json!(waiting)
    );
    let out = cli(&db, &["status", "exp-q"]).await;
    assert!(
        out.ok()
            .lines()
            .any(|l| l == format!("published status: \"{waiting}\"")),
        "status shows the published value:\n{}",
        out.stdout
    );
    let out = cli(&db, &["status", "exp-q", "--json"]).await;
    let v: Value = serde_json::from_str(out.ok().trim()).expect("status --json prints JSON");
    assert_eq!(v["published_status"], json!(waiting));
    assert_eq!(
        client.history(&id).await.expect("history"),
        before,
        "queries add nothing to the history"
    );

    client
        .signal(
            &id,
            "decision",
            &Decision {
                approved: true,
                by: "lee".into(),
            },
        )
        .await
        .expect("signal");
    let out = client
        .result::<approval>("exp-q", WAIT)
        .await
        .expect("done");
    assert_eq!(out.status, "approved");
    // A finished run keeps its last value.
    let status: Option<String> = client.query_status(&id).await.expect("query_status");
    assert_eq!(status.as_deref(), Some("approved"));
    let out = cli(&db, &["query", "exp-q"]).await;
    assert_eq!(out.ok().trim(), "\"approved\"");
    worker.stop().await;

    // The history, recorded with the status calls, replays (they are not in it).
    let history = client.history(&id).await.expect("history");
    Replayer::new(approval_example::registry())
        .replay(
            durable::RunIdentity {
                workflow_id: id.clone(),
                run_id: client.status(&id).await.expect("status").run_id,
            },
            &history,
        )
        .expect("the recorded run replays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_id_is_a_clear_error_and_a_silent_run_publishes_null() {
    let dir = temp_dir();
    let db = dir.path().join("approvals.db");
    let store = open(&db);
    let client = Client::new(store);
    match client
        .query_status::<String>(&WorkflowId::from("nobody"))
        .await
    {
        Err(ClientError::NotFound(id)) => assert_eq!(id.0, "nobody"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    cli(&db, &["query", "nobody"])
        .await
        .expect_one_error_line(2, "no run with id 'nobody'");

    // Started, but no worker has run it yet: nothing published.
    client
        .start::<approval>(
            "quiet",
            &Request {
                request_id: "quiet".into(),
                amount_cents: 1,
                approver: "kim".into(),
                timeout_secs: 60,
            },
        )
        .await
        .expect("start");
    let status: Option<String> = client
        .query_status(&WorkflowId::from("quiet"))
        .await
        .expect("query_status");
    assert_eq!(status, None);
    assert_eq!(cli(&db, &["query", "quiet"]).await.ok().trim(), "null");
    let out = cli(&db, &["status", "quiet"]).await;
    assert!(
        !out.ok().contains("published status:"),
        "no line without a value:\n{}",
        out.stdout
    );
}
