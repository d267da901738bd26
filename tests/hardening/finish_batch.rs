//! A signal in the same inbox batch as the result that lets the code return is recorded
//! before the run's end, not deleted with the inbox (found by reading the engine: its
//! commit consumed every inbox entry it read, applied or not).
//!
//! The race is made deterministic: the activity runs on a task queue no worker serves,
//! so with the worker stopped the test reports its result through the store and sends
//! the signal; a new worker then claims the run with both waiting in its inbox.

use crate::support;
use durable::prelude::*;
use durable::store::{AttemptResult, RunStatus};
use durable::{EventKind, Payload, Replayer};
use durable_core::ids::WorkerId;
use std::time::Duration;

/// Declared for the workflow below; no worker in this test runs it.
#[activity(name = "hd.far_step")]
pub(crate) async fn far_step(_ctx: ActivityContext, n: u32) -> Result<u32, ActivityError> {
    Ok(n)
}

/// Awaits one activity on the `far` task queue and returns its output. It never waits
/// for a signal.
#[workflow(name = "hd.one_far_call")]
pub(crate) async fn one_far_call(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    Ok(ctx.activity::<far_step>(n).task_queue("far").await?)
}

fn registry() -> Registry {
    Registry::new().workflow::<one_far_call>()
}

fn kinds(history: &[durable::Event]) -> Vec<&'static str> {
    history.iter().map(|e| e.kind.name()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_in_the_finishing_batch_is_recorded_before_the_end() {
    let dir = support::temp_dir();
    let db = dir.path().join("sigfix.db");
    let store = support::open(&db);
    let id = WorkflowId::from("sigfix");
    // 1. The run schedules its activity on `far`, then the worker stops.
    support::with_worker(
        &store,
        registry(),
        support::quick_options(),
        |client| async move {
            client
                .start::<one_far_call>("sigfix", &41)
                .await
                .expect("start");
            support::wait_history(&client, "sigfix", "the activity is scheduled", |h| {
                kinds(h).contains(&"ActivityScheduled")
            })
            .await;
        },
    )
    .await;
    // 2. With no worker running: the activity's result, then a signal, reach the inbox.
    let remote = WorkerId("far-worker".into());
    let tasks = store
        .claim_activities(
            &remote,
            &["hd.far_step".to_owned()],
            &["far".to_owned()],
            10,
            Duration::from_secs(30),
        )
        .await
        .expect("claim the activity");
    assert_eq!(tasks.len(), 1, "one attempt to run: {tasks:?}");
    let task = &tasks[0];
    store
        .report_attempt(
            &remote,
            task.key,
            task.seq,
            task.attempt,
            AttemptResult::Completed(Payload::encode(&42_u32).expect("encode")),
        )
        .await
        .expect("report the result");
    let client = Client::new(store.clone());
    client
        .signal(&id, "note", &"sent while the result waited")
        .await
        .expect("the store acknowledges the signal");
    let inbox = store.read_inbox(task.key).await.expect("read the inbox");
    assert_eq!(
        inbox.iter().map(|i| i.kind.name()).collect::<Vec<_>>(),
        ["ActivityCompleted", "SignalReceived"],
        "both wait in one batch, the result first"
    );
    // 3. A worker claims the run: the result lets the code return, the signal follows.
    let history = support::with_worker(
        &store,
        registry(),
        support::quick_options(),
        |client| async move {
            let info = support::wait_settled(&client, "sigfix").await;
            assert_eq!(info.status, RunStatus::Completed, "{info:?}");
            client.history(&id).await.expect("history")
        },
    )
    .await;
    assert_eq!(
        kinds(&history),
        [
            "RunStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "SignalReceived",
            "RunCompleted"
        ],
        "the acknowledged signal is in history, before the end"
    );
    match &history[3].kind {
        EventKind::SignalReceived { name, payload } => {
            assert_eq!(name, "note");
            assert_eq!(
                payload.decode::<String>().expect("decode"),
                "sent while the result waited"
            );
        }
        other => panic!("expected the signal, got {other:?}"),
    }
    assert!(
        store.read_inbox(task.key).await.expect("read").is_empty(),
        "nothing is left behind"
    );
    // The history replays through the same code.
    let report = Replayer::new(registry())
        .replay(
            durable::RunIdentity {
                workflow_id: WorkflowId::from("sigfix"),
                run_id: task.run_id.clone(),
            },
            &history,
        )
        .expect("the history replays");
    assert!(matches!(
        report.outcome,
        durable::ReplayOutcome::Completed(_)
    ));
    // `status` and `history` show it.
    drop((client, store));
    support::settle(&db);
    let status = support::host_cli("base", &db, &["status", "sigfix"]).run();
    assert!(status.ok().contains("completed"), "{}", status.stdout);
    let listed = support::host_cli("base", &db, &["history", "sigfix"]).run();
    let out = listed.ok();
    let signal_at = out
        .find("SignalReceived")
        .expect("history lists the signal");
    let end_at = out.find("RunCompleted").expect("history lists the end");
    assert!(signal_at < end_at, "{out}");
}
