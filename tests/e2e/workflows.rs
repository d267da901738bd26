//! In-process end-to-end tests: a worker and a client on a real SQLite file, running the
//! examples' workflows and a few small ones written here.

use crate::approval_example;
use crate::order_example;

use durable::prelude::*;
use durable::store::SharedStore;
use durable::{ClientError, EventKind, SqliteOptions, SqliteStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const WAIT: Option<Duration> = Some(Duration::from_secs(30));

pub(crate) fn open(path: &std::path::Path) -> SharedStore {
    Arc::new(SqliteStore::open(path, SqliteOptions::default()).expect("open the test database"))
}

pub(crate) fn fast_options() -> WorkerOptions {
    WorkerOptions {
        poll_interval: Duration::from_millis(10),
        lease: Duration::from_secs(2),
        ..WorkerOptions::default()
    }
}

/// A worker running in the background until dropped.
pub(crate) struct Running {
    stop: durable::worker::ShutdownHandle,
    task: Option<tokio::task::JoinHandle<Result<(), durable::WorkerError>>>,
}

impl Running {
    pub(crate) fn start(store: SharedStore, registry: Registry) -> Self {
        let worker = Worker::new(store, registry, fast_options());
        let stop = worker.shutdown_handle();
        Running {
            stop,
            task: Some(tokio::spawn(worker.run())),
        }
    }

    pub(crate) async fn stop(mut self) {
        self.stop.shutdown();
        if let Some(t) = self.task.take() {
            let done = tokio::time::timeout(Duration::from_secs(20), t).await;
            assert!(done.is_ok(), "the worker did not stop within 20 s");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
    }
}

fn order_input(file: &str) -> order_example::Order {
    let path = format!("{}/examples/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("sample input exists");
    serde_json::from_str(&text).expect("sample input parses")
}

pub(crate) fn scheduled(history: &[durable::Event]) -> Vec<String> {
    history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityScheduled { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_happy_path_ships_with_email_and_analytics_in_parallel() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), order_example::registry());
    let client = Client::new(store);
    let input = order_input("order-ok.json");
    client
        .start::<order_example::order>("ok-1", &input)
        .await
        .expect("start");
    let out = client
        .result::<order_example::order>("ok-1", WAIT)
        .await
        .expect("the order ships");
    assert_eq!(out.order_id, "A-1001");
    assert!(out.tracking_number.starts_with("TRACK-A-1001-"));
    let history = client
        .history(&WorkflowId::from("ok-1"))
        .await
        .expect("history");
    assert_eq!(
        scheduled(&history),
        [
            "validate_order",
            "check_inventory",
            "process_payment",
            "send_email",
            "update_analytics",
            "schedule_shipment"
        ]
    );
    // Both parallel activities were scheduled before either completed.
    let pos = |pred: &dyn Fn(&EventKind) -> bool| history.iter().position(|e| pred(&e.kind));
    let email_scheduled =
        pos(&|k| matches!(k, EventKind::ActivityScheduled { name, .. } if name == "send_email"));
    let analytics_scheduled = pos(
        &|k| matches!(k, EventKind::ActivityScheduled { name, .. } if name == "update_analytics"),
    );
    let first_parallel_done =
        pos(&|k| matches!(k, EventKind::ActivityCompleted { seq, .. } if seq.0 == 4 || seq.0 == 5));
    assert!(email_scheduled < first_parallel_done && analytics_scheduled < first_parallel_done);
    // The charge's transaction id comes from the stable idempotency key.
    let info = client
        .status(&WorkflowId::from("ok-1"))
        .await
        .expect("status");
    assert_eq!(out.transaction_id, format!("txn-ok-1-{}-3", info.run_id));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_failure_paths_notify_and_compensate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), order_example::registry());
    let client = Client::new(store);
    client
        .start::<order_example::order>("invalid", &order_input("order-invalid.json"))
        .await
        .expect("start");
    client
        .start::<order_example::order>("declined", &order_input("order-declined.json"))
        .await
        .expect("start");

    match client.result::<order_example::order>("invalid", WAIT).await {
        Err(ClientError::Failed { error, .. }) => {
            assert_eq!(error.kind(), "ValidationException");
            assert!(error.message().contains("no items"), "{error}");
        }
        other => panic!("expected a ValidationException failure, got {other:?}"),
    }
    let history = client
        .history(&WorkflowId::from("invalid"))
        .await
        .expect("history");
    assert_eq!(
        scheduled(&history),
        ["validate_order", "notify_customer_invalid"]
    );

    match client
        .result::<order_example::order>("declined", WAIT)
        .await
    {
        Err(ClientError::Failed { error, .. }) => assert_eq!(error.kind(), "PaymentFailed"),
        other => panic!("expected a PaymentFailed failure, got {other:?}"),
    }
    let history = client
        .history(&WorkflowId::from("declined"))
        .await
        .expect("history");
    assert_eq!(
        scheduled(&history),
        [
            "validate_order",
            "check_inventory",
            "process_payment",
            "release_inventory",
            "notify_customer_failed"
        ]
    );
    // The declined charge was not retried: it is not retryable.
    let failed = history
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ActivityFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .expect("a failed activity");
    assert_eq!(failed.attempts(), 1);
    assert!(!failed.is_retryable());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_retries_an_unavailable_inventory_service_with_backoff() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), order_example::registry());
    let client = Client::new(store);
    let started = Instant::now();
    client
        .start::<order_example::order>("flaky", &order_input("order-inventory-flaky.json"))
        .await
        .expect("start");
    client
        .result::<order_example::order>("flaky", WAIT)
        .await
        .expect("the order ships after one retry");
    // One retry after the policy's 2 s initial interval.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let history = client
        .history(&WorkflowId::from("flaky"))
        .await
        .expect("history");
    let inventory_attempt = history.iter().find_map(|e| match &e.kind {
        EventKind::ActivityCompleted { seq, attempt, .. } if seq.0 == 2 => Some(*attempt),
        _ => None,
    });
    assert_eq!(inventory_attempt, Some(2));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_outage_beyond_the_retry_policy_fails_the_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), order_example::registry());
    let client = Client::new(store);
    let mut input = order_input("order-inventory-flaky.json");
    // retry_only(["ServiceUnavailable"]) with 3 attempts: 2 s + 4 s of backoff would make
    // this test slow, so check the policy's decision on a kind it must not retry instead.
    input.inventory_unavailable_for = 0;
    input.items[0].quantity = 0;
    client
        .start::<order_example::order>("zero", &input)
        .await
        .expect("start");
    match client.result::<order_example::order>("zero", WAIT).await {
        Err(ClientError::Failed { error, .. }) => assert_eq!(error.kind(), "ValidationException"),
        other => panic!("expected a failure, got {other:?}"),
    }
    worker.stop().await;
}

fn approval_request(id: &str, timeout_secs: u64) -> approval_example::Request {
    approval_example::Request {
        request_id: id.to_owned(),
        amount_cents: 12_000,
        approver: "lee@example.com".into(),
        timeout_secs,
    }
}

pub(crate) async fn wait_for_event(client: &Client, id: &str, kind: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(h) = client.history(&WorkflowId::from(id)).await
            && h.iter().any(|e| e.kind.name() == kind)
        {
            return;
        }
        assert!(Instant::now() < deadline, "run {id} never recorded {kind}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_signal_arrives_before_the_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), approval_example::registry());
    let client = Client::new(store);
    client
        .start::<approval_example::approval>("exp-1", &approval_request("exp-1", 3600))
        .await
        .expect("start");
    wait_for_event(&client, "exp-1", "SignalAwaited").await;
    client
        .signal(
            &WorkflowId::from("exp-1"),
            "decision",
            &approval_example::Decision {
                approved: true,
                by: "lee".into(),
            },
        )
        .await
        .expect("signal");
    let out = client
        .result::<approval_example::approval>("exp-1", WAIT)
        .await
        .expect("approved");
    assert_eq!(out.status, "approved");
    assert_eq!(out.decided_by.as_deref(), Some("lee"));
    let history = client
        .history(&WorkflowId::from("exp-1"))
        .await
        .expect("history");
    assert_eq!(scheduled(&history), ["notify_approver", "execute_request"]);
    assert!(
        !history.iter().any(|e| e.kind.name() == "TimerFired"),
        "the timeout must not fire"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_without_a_signal_escalates_when_the_timeout_fires() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), approval_example::registry());
    let client = Client::new(store);
    let started = Instant::now();
    client
        .start::<approval_example::approval>("exp-2", &approval_request("exp-2", 1))
        .await
        .expect("start");
    let out = client
        .result::<approval_example::approval>("exp-2", WAIT)
        .await
        .expect("escalated");
    assert_eq!(out.status, "escalated");
    assert!(started.elapsed() >= Duration::from_secs(1));
    // A signal that comes after the run finished is refused, not silently dropped.
    let late = client
        .signal(
            &WorkflowId::from("exp-2"),
            "decision",
            &approval_example::Decision {
                approved: true,
                by: "late".into(),
            },
        )
        .await;
    assert!(
        matches!(
            late,
            Err(ClientError::Store(durable::StoreError::Finished(_)))
        ),
        "{late:?}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_sent_before_the_wait_are_buffered_and_delivered_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let client = Client::new(store.clone());
    client
        .start::<approval_example::approval>("exp-3", &approval_request("exp-3", 3600))
        .await
        .expect("start");
    // Two decisions before any worker runs: the first is delivered, the second stays
    // buffered (the workflow waits once).
    for by in ["first", "second"] {
        client
            .signal(
                &WorkflowId::from("exp-3"),
                "decision",
                &approval_example::Decision {
                    approved: false,
                    by: by.into(),
                },
            )
            .await
            .expect("signal");
    }
    let worker = Running::start(store, approval_example::registry());
    let out = client
        .result::<approval_example::approval>("exp-3", WAIT)
        .await
        .expect("rejected");
    assert_eq!(out.status, "rejected");
    assert_eq!(out.decided_by.as_deref(), Some("first"));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_outlives_a_worker_restart_and_fires_on_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("d.db");
    let store = open(&path);
    let client = Client::new(store.clone());
    let worker = Running::start(store.clone(), approval_example::registry());
    client
        .start::<approval_example::approval>("exp-4", &approval_request("exp-4", 2))
        .await
        .expect("start");
    wait_for_event(&client, "exp-4", "TimerStarted").await;
    // Stop the worker and close the database while the run sleeps.
    worker.stop().await;
    drop(client);
    drop(store);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let store = open(&path);
    let client = Client::new(store.clone());
    let worker = Running::start(store, approval_example::registry());
    let out = client
        .result::<approval_example::approval>("exp-4", WAIT)
        .await
        .expect("escalated after the restart");
    assert_eq!(out.status, "escalated");
    let history = client
        .history(&WorkflowId::from("exp-4"))
        .await
        .expect("history");
    let started = history
        .iter()
        .find(|e| e.kind.name() == "TimerStarted")
        .expect("timer started");
    let fired = history
        .iter()
        .find(|e| e.kind.name() == "TimerFired")
        .expect("timer fired");
    assert!(
        fired.time_ms - started.time_ms >= 2000,
        "fired after {} ms, before its 2 s were up",
        fired.time_ms - started.time_ms
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_the_same_id_twice_returns_the_existing_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let client = Client::new(store);
    let first = client
        .start::<approval_example::approval>("same", &approval_request("same", 60))
        .await
        .expect("start");
    let second = client
        .start::<approval_example::approval>("same", &approval_request("other input", 60))
        .await
        .expect("start again");
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.run_id, second.run_id);
    let wrong = client
        .start::<order_example::order>("same", &order_input("order-ok.json"))
        .await;
    assert!(
        matches!(wrong, Err(ClientError::WorkflowMismatch { .. })),
        "{wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_that_ignores_cancellation_ends_it_as_cancelled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let worker = Running::start(store.clone(), approval_example::registry());
    let client = Client::new(store);
    client
        .start::<approval_example::approval>("exp-5", &approval_request("exp-5", 3600))
        .await
        .expect("start");
    wait_for_event(&client, "exp-5", "SignalAwaited").await;
    client
        .cancel(&WorkflowId::from("exp-5"), "request withdrawn")
        .await
        .expect("cancel");
    match client
        .result::<approval_example::approval>("exp-5", WAIT)
        .await
    {
        Err(ClientError::Failed { error, .. }) => {
            assert_eq!(error.kind(), "Cancelled");
            assert!(error.message().contains("request withdrawn"), "{error}");
        }
        other => panic!("expected a cancelled run, got {other:?}"),
    }
    // Cancelling a finished run is refused.
    let again = client.cancel(&WorkflowId::from("exp-5"), "again").await;
    assert!(again.is_err());
    worker.stop().await;
}

/// Undoes a step after a cancellation.
#[activity]
async fn compensate(_ctx: ActivityContext, reason: String) -> Result<String, ActivityError> {
    Ok(format!("compensated: {reason}"))
}

/// Waits an hour unless cancelled, in which case it compensates.
#[workflow]
async fn cancel_aware(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let cancelled = ctx.cancelled();
    let sleep = ctx.sleep(Duration::from_secs(3600));
    match futures::future::select(cancelled, sleep).await {
        futures::future::Either::Left((reason, _)) => {
            Ok(ctx.activity::<compensate>(reason).await?)
        }
        futures::future::Either::Right(_) => Ok("slept".to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_aware_workflow_runs_its_compensation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let registry = Registry::new()
        .workflow::<cancel_aware>()
        .activity::<compensate>();
    let worker = Running::start(store.clone(), registry);
    let client = Client::new(store);
    client
        .start::<cancel_aware>("c-1", &())
        .await
        .expect("start");
    wait_for_event(&client, "c-1", "TimerStarted").await;
    client
        .cancel(&WorkflowId::from("c-1"), "customer asked")
        .await
        .expect("cancel");
    let out = client
        .result::<cancel_aware>("c-1", WAIT)
        .await
        .expect("completes with its compensation");
    assert_eq!(out, "compensated: customer asked");
    worker.stop().await;
}

/// A bug hidden in a helper the workflow calls: a loop that does not yield (bounded here
/// so the abandoned thread ends with the test).
fn busy_loop(ms: u64) {
    let begin = Instant::now();
    while begin.elapsed() < Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
}

/// Workflow code stuck in a loop for `spin_ms`.
#[workflow]
async fn spins(_ctx: WorkflowContext, spin_ms: u64) -> Result<(), WorkflowError> {
    busy_loop(spin_ms);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_stuck_in_a_loop_is_suspended_and_other_runs_go_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let registry = approval_example::registry().workflow::<spins>();
    let worker = Worker::new(
        store.clone(),
        registry,
        WorkerOptions {
            activation_deadline: Duration::from_millis(300),
            ..fast_options()
        },
    );
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    let client = Client::new(store);
    client.start::<spins>("stuck", &3000).await.expect("start");
    client
        .start::<approval_example::approval>("fine", &approval_request("fine", 1))
        .await
        .expect("start");
    let out = client
        .result::<approval_example::approval>("fine", WAIT)
        .await
        .expect("the other run completes");
    assert_eq!(out.status, "escalated");
    match client.result::<spins>("stuck", WAIT).await {
        Err(ClientError::Suspended { reason, .. }) => {
            assert!(reason.contains("without yielding"), "{reason}")
        }
        other => panic!("expected the stuck run to be suspended, got {other:?}"),
    }
    stop.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
}
