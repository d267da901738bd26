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
        .claim_runs(worker, workflows, 1000, LONG_LEASE)
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
