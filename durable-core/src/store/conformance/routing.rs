//! Checks of run routing: a worker claims only runs of the workflows it registers.

use super::*;

async fn start_of(store: &SharedStore, id: &str, workflow: &str) -> StartOutcome {
    store
        .start_run(StartRequest {
            workflow: workflow.to_owned(),
            ..start_request(id)
        })
        .await
        .unwrap_or_else(|e| panic!("starting run {id:?} of {workflow:?}: {e}"))
}

async fn claimed_keys(
    store: &SharedStore,
    worker: &WorkerId,
    workflows: &[String],
) -> Vec<crate::ids::RunKey> {
    let mut keys: Vec<_> = store
        .claim_runs(worker, workflows, &strings(DEFAULT_QUEUE), 1000, LONG_LEASE)
        .await
        .unwrap_or_else(|e| panic!("claim_runs by {worker} for {workflows:?}: {e}"))
        .into_iter()
        .map(|c| c.key)
        .collect();
    keys.sort();
    keys
}

async fn info(store: &SharedStore, id: &str) -> crate::store::RunInfo {
    store
        .find_run(&WorkflowId::from(id))
        .await
        .expect("find_run")
        .unwrap_or_else(|| panic!("run {id:?} exists"))
}

/// `claim_runs` hands a worker only runs of the workflows it names; a run of any other
/// workflow stays ready, unowned and with no activation failure counted, until a worker
/// that names it claims it. A worker naming no workflow claims nothing, one naming many
/// claims by any of them, and the filter stays within the handle's namespace.
pub async fn runs_are_claimed_only_by_workers_of_their_workflow(open: Opener<'_>) {
    let store = open("routing").await;
    let other_ns = open("routing-other").await;
    let order = start_of(&store, "route-order", "route-order").await;
    let approval = start_of(&store, "route-approval", "route-approval").await;
    let elsewhere = start_of(&other_ns, "route-elsewhere", "route-order").await;

    assert!(
        claimed_keys(&store, &worker("nobody"), &[])
            .await
            .is_empty(),
        "a worker registering no workflow claims no run"
    );
    assert!(
        claimed_keys(&store, &worker("stranger"), &strings(&["route-unknown"]))
            .await
            .is_empty(),
        "a worker registering other workflows claims none of these runs"
    );

    let orders = worker("orders");
    assert_eq!(
        claimed_keys(&store, &orders, &strings(&["route-order"])).await,
        [order.key],
        "the order worker claims the order run only, not the approval run nor the other namespace's order run"
    );
    let waiting = info(&store, "route-approval").await;
    assert_eq!(waiting.status, RunStatus::Running, "left for its workers");
    assert_eq!(waiting.owner, None, "an unclaimed run has no owner");
    assert_eq!(
        waiting.activation_failures, 0,
        "a run no worker could take counts no activation failure"
    );
    // Claimed again by the order worker, the approval run is still not among its claims.
    assert_eq!(
        claimed_keys(&store, &orders, &strings(&["route-order"])).await,
        [order.key],
        "re-claiming keeps the order run and still leaves the approval run"
    );

    // A worker registering many workflows (more than any fixed parameter list) claims by
    // any of them.
    let mut many: Vec<String> = (0..600).map(|i| format!("route-filler-{i}")).collect();
    many.push("route-approval".to_owned());
    let approvals = worker("approvals");
    assert_eq!(
        claimed_keys(&store, &approvals, &many).await,
        [approval.key],
        "the approval worker claims the approval run (the order run is leased)"
    );
    let claimed = info(&store, "route-approval").await;
    assert_eq!(claimed.owner.as_deref(), Some("approvals"));
    assert_eq!(claimed.activation_failures, 0);

    assert_eq!(
        claimed_keys(&other_ns, &worker("other"), &strings(&["route-order"])).await,
        [elsewhere.key],
        "the other namespace's order run waits for its own namespace's workers"
    );
}

async fn claimed_on(store: &SharedStore, worker: &WorkerId, queues: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = store
        .claim_runs(
            worker,
            &strings(&["route-q", "route-q-child"]),
            &strings(queues),
            1000,
            LONG_LEASE,
        )
        .await
        .unwrap_or_else(|e| panic!("claim_runs by {worker} on {queues:?}: {e}"))
        .into_iter()
        .map(|c| c.workflow_id.0)
        .collect();
    ids.sort();
    ids
}

/// `claim_runs` hands a worker only runs on the task queues it names (the empty string
/// is the default queue); a run on another queue stays ready and unowned. The queue is
/// shown with the run, and the run that continues it as new, a reset of it and the child
/// runs it starts keep it (a child started with a queue of its own is on that one), all
/// within the handle's namespace.
pub async fn runs_are_claimed_only_on_their_task_queue(open: Opener<'_>) {
    let store = open("run-queues").await;
    let other_ns = open("run-queues-other").await;
    let start_on = |id: &'static str, queue: &'static str| StartRequest {
        workflow: "route-q".to_owned(),
        task_queue: queue.to_owned(),
        ..start_request(id)
    };
    let on_payments = store
        .start_run(start_on("q-pay", "payments"))
        .await
        .expect("start on payments");
    store
        .start_run(start_on("q-default", ""))
        .await
        .expect("start on the default queue");
    other_ns
        .start_run(start_on("q-pay-elsewhere", "payments"))
        .await
        .expect("start in another namespace");
    match store.start_run(start_on("q-bad", "pay\0ments")).await {
        Err(StoreError::Invalid(message)) => assert!(message.contains("task queue"), "{message}"),
        other => panic!("a task queue with a NUL byte: expected Invalid, got {other:?}"),
    }
    assert!(
        store
            .find_run(&WorkflowId::from("q-bad"))
            .await
            .expect("find_run")
            .is_none(),
        "a refused start writes no run"
    );
    assert_eq!(info(&store, "q-pay").await.task_queue, "payments");
    assert_eq!(info(&store, "q-default").await.task_queue, "");

    assert!(
        claimed_on(&store, &worker("none"), &[]).await.is_empty(),
        "a worker serving no queue claims no run"
    );
    assert!(
        claimed_on(&store, &worker("api"), &["api"])
            .await
            .is_empty(),
        "a worker serving another queue claims neither run"
    );
    assert_eq!(
        claimed_on(&store, &worker("general"), &[""]).await,
        ["q-default"],
        "a default-queue worker claims the default queue's run only"
    );
    let waiting = info(&store, "q-pay").await;
    assert_eq!(waiting.owner, None, "the payments run waits, unowned");
    assert_eq!(waiting.activation_failures, 0);

    // The payments worker starts a child and continues the run as new: both are on
    // payments too, and only a payments worker claims them.
    let pay = worker("pay");
    let claimed = store
        .claim_runs(
            &pay,
            &strings(&["route-q"]),
            &strings(&["payments"]),
            10,
            LONG_LEASE,
        )
        .await
        .expect("claim_runs")
        .into_iter()
        .find(|c| c.key == on_payments.key)
        .expect("a payments worker claims the payments run");
    let next_run = crate::ids::RunId::generate();
    store
        .commit(Commit {
            finish: Some(RunStatus::Continued),
            keep_lease: false,
            ..commit(
                &claimed,
                &pay,
                1,
                vec![
                    EventKind::ChildStarted {
                        seq: CommandSeq(1),
                        workflow: "route-q-child".to_owned(),
                        workflow_id: WorkflowId::from("q-pay-child"),
                        input: payload("child"),
                        seed: 3,
                        options: crate::event::ChildOptions {
                            cancel_policy: crate::event::ChildCancelPolicy::Abandon,
                            execution_timeout_ms: None,
                            task_queue: None,
                        },
                    },
                    EventKind::ChildStarted {
                        seq: CommandSeq(2),
                        workflow: "route-q-child".to_owned(),
                        workflow_id: WorkflowId::from("q-pay-child-default"),
                        input: payload("child on the default queue"),
                        seed: 4,
                        options: crate::event::ChildOptions {
                            cancel_policy: crate::event::ChildCancelPolicy::Abandon,
                            execution_timeout_ms: None,
                            task_queue: Some(String::new()),
                        },
                    },
                    EventKind::RunContinuedAsNew {
                        workflow: "route-q".to_owned(),
                        input: payload("next"),
                        seed: 5,
                        run_id: next_run.clone(),
                        signals: Vec::new(),
                    },
                ],
            )
        })
        .await
        .expect("a commit starting a child and continuing as new");
    let next = info(&store, "q-pay").await;
    assert_eq!(next.run_id, next_run, "the run continued as new");
    assert_eq!(next.task_queue, "payments", "the next run keeps the queue");
    assert_eq!(
        info(&store, "q-pay-child").await.task_queue,
        "payments",
        "a child run is on its parent's queue"
    );
    assert_eq!(
        info(&store, "q-pay-child-default").await.task_queue,
        "",
        "a child started with a queue is on that queue"
    );
    assert_eq!(
        claimed_on(&store, &worker("general-1"), &[""]).await,
        ["q-pay-child-default"],
        "a default-queue worker takes only the child put on the default queue"
    );
    assert_eq!(
        claimed_on(&store, &pay, &["payments"]).await,
        ["q-pay", "q-pay-child"],
        "the payments worker takes both"
    );

    // A reset starts a new run on the same queue.
    store
        .reset_run(&WorkflowId::from("q-pay"), EventId(1))
        .await
        .expect("reset_run");
    let reset = info(&store, "q-pay").await;
    assert_ne!(reset.run_id, next_run, "the reset started a new run");
    assert_eq!(reset.task_queue, "payments", "a reset run keeps the queue");
    assert!(
        claimed_on(&store, &worker("general-2"), &[""])
            .await
            .is_empty(),
        "the reset run is not on the default queue"
    );
    assert_eq!(
        claimed_on(&store, &worker("pay-2"), &["payments"]).await,
        ["q-pay"],
        "a payments worker takes the reset run (the child stays leased to the first)"
    );

    assert_eq!(
        claimed_on(&other_ns, &worker("elsewhere"), &["payments"]).await,
        ["q-pay-elsewhere"],
        "the other namespace's payments run is claimed there only"
    );
}
