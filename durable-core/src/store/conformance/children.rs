//! Checks of child runs: a child starts with the commit that records its start and only
//! then; whatever ends it delivers its outcome to the parent's inbox; a parent's
//! cancellation, or its end, reaches its children by their policy, recursively; all of it
//! within one namespace.

use super::*;
use crate::error::{KIND_EXECUTION_TIMEOUT, KIND_RESET, KIND_WORKFLOW_ID_IN_USE, WorkflowError};
use crate::event::{ChildCancelPolicy, ChildOptions};
use crate::store::{ChildRun, RunFamily};

fn child_started(
    seq: u32,
    id: &str,
    policy: ChildCancelPolicy,
    timeout_ms: Option<u64>,
) -> EventKind {
    EventKind::ChildStarted {
        seq: CommandSeq(seq),
        workflow: "conformance-child".to_owned(),
        workflow_id: WorkflowId::from(id),
        input: payload(format!("input of {id}")),
        seed: 40 + u64::from(seq),
        options: ChildOptions {
            cancel_policy: policy,
            execution_timeout_ms: timeout_ms,
            task_queue: None,
        },
    }
}

/// The run of `id` as a start outcome, so the helpers can claim it.
async fn run_of(store: &SharedStore, id: &str) -> StartOutcome {
    let info = store
        .find_run(&WorkflowId::from(id))
        .await
        .expect("find_run")
        .unwrap_or_else(|| panic!("run {id:?} should exist"));
    StartOutcome {
        key: info.key,
        run_id: info.run_id,
        workflow: info.workflow,
        created: false,
    }
}

async fn family(store: &SharedStore, run: &StartOutcome) -> RunFamily {
    store.run_family(run.key).await.expect("run_family")
}

/// Claims `run` and commits `events` after `after` (see [`commit_on`]); returns the claim.
async fn commit_run(
    store: &SharedStore,
    w: &WorkerId,
    run: &StartOutcome,
    after: u64,
    events: Vec<EventKind>,
) -> ClaimedRun {
    let claimed = must_claim(store, w, run, LONG_LEASE).await;
    commit_on(store, w, &claimed, after, events).await;
    claimed
}

/// Commits `events` after `after` on a claim, finishing the run when the last is
/// terminal.
async fn commit_on(
    store: &SharedStore,
    w: &WorkerId,
    claimed: &ClaimedRun,
    after: u64,
    events: Vec<EventKind>,
) {
    let finish = match events.last() {
        Some(EventKind::RunCompleted { .. }) => Some(RunStatus::Completed),
        Some(EventKind::RunFailed { .. }) => Some(RunStatus::Failed),
        _ => None,
    };
    store
        .commit(Commit {
            finish,
            keep_lease: finish.is_none(),
            ..commit(claimed, w, after, events)
        })
        .await
        .unwrap_or_else(|e| panic!("commit of run {}: {e}", claimed.key));
}

fn is_cancel(kind: &EventKind) -> bool {
    matches!(kind, EventKind::CancelRequested { .. })
}

/// A commit with `ChildStarted` events creates each child in the same transaction (in
/// the parent's namespace, with its input and seed, ready to claim); a refused commit
/// creates none; a taken workflow id starts nothing and tells the parent.
pub async fn child_runs_start_with_the_parent_commit(open: Opener<'_>) {
    let store = open("children-start").await;
    let elsewhere = open("children-start-2").await;
    let w = worker("w1");
    let parent = start(&store, "cs-parent").await;
    let taken = start(&store, "cs-taken").await;
    // The same id in another namespace does not count as taken.
    start(&elsewhere, "cs-child-1").await;
    let claimed = must_claim(&store, &w, &parent, LONG_LEASE).await;

    let stale = store
        .commit(commit(
            &claimed,
            &w,
            0,
            vec![child_started(
                1,
                "cs-never",
                ChildCancelPolicy::RequestCancel,
                None,
            )],
        ))
        .await;
    assert_fenced(stale, "a commit at a stale position");
    assert!(
        store
            .find_run(&WorkflowId::from("cs-never"))
            .await
            .expect("find_run")
            .is_none(),
        "a refused commit starts no child"
    );

    store
        .commit(commit(
            &claimed,
            &w,
            1,
            vec![
                child_started(1, "cs-child-1", ChildCancelPolicy::RequestCancel, None),
                child_started(2, "cs-child-2", ChildCancelPolicy::Abandon, Some(60_000)),
                child_started(3, "cs-taken", ChildCancelPolicy::RequestCancel, None),
            ],
        ))
        .await
        .expect("the commit that starts the children");

    let child = run_of(&store, "cs-child-1").await;
    let h = history(&store, &child).await;
    assert_eq!(ids(&h), [1], "a child starts with its RunStarted event");
    assert_eq!(
        h[0].kind,
        EventKind::RunStarted {
            workflow: "conformance-child".to_owned(),
            input: payload("input of cs-child-1"),
            seed: 41,
        }
    );
    let info = status_of(&store, "cs-child-2").await;
    assert_eq!(info.status, RunStatus::Running);
    assert!(
        info.execution_deadline_ms.is_some(),
        "the child's execution timeout gives it a deadline"
    );
    let claimable = store
        .claim_runs(
            &w,
            &strings(WORKFLOWS),
            &strings(DEFAULT_QUEUE),
            100,
            LONG_LEASE,
        )
        .await
        .expect("claim_runs");
    assert!(
        claimable.iter().any(|c| c.key == child.key),
        "a new child is ready to claim"
    );

    // The taken id: no second run, and the parent is told.
    let runs = store
        .list_runs(RunFilter::default())
        .await
        .expect("list_runs");
    assert_eq!(
        runs.iter()
            .filter(|r| r.workflow_id.as_str() == "cs-taken")
            .count(),
        1,
        "a taken workflow id starts nothing"
    );
    assert_eq!(taken.key, run_of(&store, "cs-taken").await.key);
    let inbox = inbox_kinds(&store, &parent).await;
    match inbox.as_slice() {
        [EventKind::ChildFailed { seq, error }] => {
            assert_eq!(*seq, CommandSeq(3));
            assert_eq!(error.kind(), KIND_WORKFLOW_ID_IN_USE);
            assert!(error.message().contains("cs-taken"), "{}", error.message());
        }
        other => panic!("expected one ChildFailed in the parent's inbox, got {other:?}"),
    }
    let claimed_again = must_claim(&store, &w, &parent, LONG_LEASE).await;
    assert_eq!(
        claimed_again.last_event_id,
        EventId(4),
        "the parent is ready for it"
    );

    // The family, both ways.
    let fam = family(&store, &parent).await;
    assert_eq!(fam.parent, None);
    let listed: Vec<(u32, &str, ChildCancelPolicy)> = fam
        .children
        .iter()
        .map(|c: &ChildRun| (c.seq.0, c.workflow_id.as_str(), c.cancel_policy))
        .collect();
    assert_eq!(
        listed,
        [
            (1, "cs-child-1", ChildCancelPolicy::RequestCancel),
            (2, "cs-child-2", ChildCancelPolicy::Abandon)
        ]
    );
    assert!(
        fam.children
            .iter()
            .all(|c| c.workflow == "conformance-child" && c.status == RunStatus::Running)
    );
    let up = family(&store, &child).await;
    let p = up.parent.expect("the child knows its parent");
    assert_eq!(p.workflow_id.as_str(), "cs-parent");
    assert_eq!(p.run_id, parent.run_id);
    assert_eq!(p.seq, CommandSeq(1));
    assert!(up.children.is_empty());
    // Another namespace sees neither the family nor the children.
    assert_eq!(
        elsewhere.run_family(parent.key).await.expect("run_family"),
        RunFamily::default(),
        "run_family is scoped by namespace"
    );
    assert!(
        elsewhere
            .find_run(&WorkflowId::from("cs-child-2"))
            .await
            .expect("find_run")
            .is_none()
    );
}

async fn status_of(store: &SharedStore, id: &str) -> crate::store::RunInfo {
    store
        .find_run(&WorkflowId::from(id))
        .await
        .expect("find_run")
        .unwrap_or_else(|| panic!("run {id:?} should exist"))
}

/// However a child ends (completed, failed, past its execution timeout, reset), its
/// outcome reaches its parent's inbox in the same transaction, and the parent is ready.
pub async fn child_outcomes_reach_the_parent(open: Opener<'_>) {
    let store = open("children-outcome").await;
    let w = worker("w1");
    let parent = start(&store, "co-parent").await;
    commit_run(
        &store,
        &w,
        &parent,
        1,
        vec![
            child_started(1, "co-ok", ChildCancelPolicy::RequestCancel, None),
            child_started(2, "co-bad", ChildCancelPolicy::RequestCancel, None),
            child_started(3, "co-slow", ChildCancelPolicy::RequestCancel, Some(300)),
            child_started(4, "co-reset", ChildCancelPolicy::RequestCancel, None),
        ],
    )
    .await;
    store
        .release_runs(&w, &[parent.key])
        .await
        .expect("release the parent");

    let ok = run_of(&store, "co-ok").await;
    commit_run(
        &store,
        &w,
        &ok,
        1,
        vec![EventKind::RunCompleted {
            output: payload("shipped"),
        }],
    )
    .await;
    let bad = run_of(&store, "co-bad").await;
    let failure = WorkflowError::new("OutOfStock", "sku 7 is gone");
    commit_run(
        &store,
        &w,
        &bad,
        1,
        vec![EventKind::RunFailed {
            error: failure.clone(),
        }],
    )
    .await;
    assert_eq!(
        inbox_kinds(&store, &parent).await,
        [
            EventKind::ChildCompleted {
                seq: CommandSeq(1),
                output: payload("shipped")
            },
            EventKind::ChildFailed {
                seq: CommandSeq(2),
                error: failure
            },
        ],
        "each outcome waits in the parent's inbox"
    );
    must_claim(&store, &w, &parent, LONG_LEASE).await;
    store
        .release_runs(&w, &[parent.key])
        .await
        .expect("release");

    eventually(
        "the slow child to time out",
        Duration::from_secs(10),
        || async { (store.time_out_runs(100).await.expect("time_out_runs") > 0).then_some(()) },
    )
    .await;
    let reset = run_of(&store, "co-reset").await;
    commit_run(&store, &w, &reset, 1, vec![marker(1)]).await;
    let new_run = store
        .reset_run(&WorkflowId::from("co-reset"), EventId(1))
        .await
        .expect("reset of a child");
    let inbox = inbox_kinds(&store, &parent).await;
    assert_eq!(inbox.len(), 4, "{inbox:?}");
    match (&inbox[2], &inbox[3]) {
        (
            EventKind::ChildFailed { seq: s3, error: e3 },
            EventKind::ChildFailed { seq: s4, error: e4 },
        ) => {
            assert_eq!((*s3, e3.kind()), (CommandSeq(3), KIND_EXECUTION_TIMEOUT));
            assert_eq!((*s4, e4.kind()), (CommandSeq(4), KIND_RESET));
        }
        other => panic!("expected a timeout and a reset, got {other:?}"),
    }
    assert_eq!(
        store
            .run_family(new_run.key)
            .await
            .expect("run_family")
            .parent,
        None,
        "the run a reset starts has no parent"
    );
    // A finished parent takes no more outcomes, and the finishing is not refused.
    let claimed = must_claim(&store, &w, &parent, LONG_LEASE).await;
    let ids: Vec<i64> = store
        .read_inbox(parent.key)
        .await
        .expect("read_inbox")
        .iter()
        .map(|i| i.id)
        .collect();
    store
        .commit(Commit {
            consumed_inbox: ids,
            finish: Some(RunStatus::Completed),
            keep_lease: false,
            ..commit(
                &claimed,
                &w,
                5,
                inbox
                    .into_iter()
                    .chain([EventKind::RunCompleted {
                        output: payload(()),
                    }])
                    .collect(),
            )
        })
        .await
        .expect("the parent finishes");
    assert_eq!(
        status_of(&store, "co-parent").await.status,
        RunStatus::Completed
    );
}

/// A cancel request reaches the parent's running children with the `request_cancel`
/// policy and their children, once each, never `abandon` children or finished ones; a
/// parent that ends while such children run asks them to cancel too.
pub async fn cancellation_reaches_children_by_policy(open: Opener<'_>) {
    let store = open("children-cancel").await;
    let w = worker("w1");
    let parent = start(&store, "cc-parent").await;
    commit_run(
        &store,
        &w,
        &parent,
        1,
        vec![
            child_started(1, "cc-cancel", ChildCancelPolicy::RequestCancel, None),
            child_started(2, "cc-abandon", ChildCancelPolicy::Abandon, None),
            child_started(3, "cc-done", ChildCancelPolicy::RequestCancel, None),
        ],
    )
    .await;
    let cancel = run_of(&store, "cc-cancel").await;
    commit_run(
        &store,
        &w,
        &cancel,
        1,
        vec![child_started(
            1,
            "cc-grandchild",
            ChildCancelPolicy::RequestCancel,
            None,
        )],
    )
    .await;
    let abandon = run_of(&store, "cc-abandon").await;
    commit_run(
        &store,
        &w,
        &abandon,
        1,
        vec![child_started(
            1,
            "cc-abandon-child",
            ChildCancelPolicy::RequestCancel,
            None,
        )],
    )
    .await;
    let done = run_of(&store, "cc-done").await;
    commit_run(
        &store,
        &w,
        &done,
        1,
        vec![EventKind::RunCompleted { output: payload(1) }],
    )
    .await;

    store
        .request_cancel(&WorkflowId::from("cc-parent"), "customer left")
        .await
        .expect("request_cancel");
    store
        .request_cancel(&WorkflowId::from("cc-parent"), "again")
        .await
        .expect("a second request");
    let cancels = |kinds: Vec<EventKind>| kinds.iter().filter(|k| is_cancel(k)).count();
    assert_eq!(
        cancels(inbox_kinds(&store, &parent).await),
        2,
        "the parent gets both"
    );
    for (id, expected) in [
        ("cc-cancel", 1),
        ("cc-grandchild", 1),
        ("cc-abandon", 0),
        ("cc-abandon-child", 0),
    ] {
        let run = run_of(&store, id).await;
        let inbox = inbox_kinds(&store, &run).await;
        assert_eq!(cancels(inbox.clone()), expected, "{id}: {inbox:?}");
        if let Some(EventKind::CancelRequested { reason }) = inbox.iter().find(|k| is_cancel(k)) {
            assert!(
                reason.contains("cc-") && reason.contains("customer left"),
                "{id}: the reason names the parent and its reason: {reason}"
            );
        }
    }
    let grandchild = run_of(&store, "cc-grandchild").await;
    must_claim(&store, &w, &grandchild, LONG_LEASE).await;

    // The end of a parent: its running request_cancel children are asked, once.
    let other = start(&store, "cc-ending").await;
    let claimed = commit_run(
        &store,
        &w,
        &other,
        1,
        vec![
            child_started(1, "cc-ending-child", ChildCancelPolicy::RequestCancel, None),
            child_started(2, "cc-ending-free", ChildCancelPolicy::Abandon, None),
        ],
    )
    .await;
    commit_on(
        &store,
        &w,
        &claimed,
        3,
        vec![EventKind::RunFailed {
            error: WorkflowError::new("Boom", "the parent failed"),
        }],
    )
    .await;
    let ending_child = run_of(&store, "cc-ending-child").await;
    let inbox = inbox_kinds(&store, &ending_child).await;
    assert_eq!(cancels(inbox.clone()), 1, "{inbox:?}");
    let free = run_of(&store, "cc-ending-free").await;
    assert_eq!(cancels(inbox_kinds(&store, &free).await), 0);
    // The cancelled child ends; its (finished) parent takes no outcome, and nothing fails.
    commit_run(
        &store,
        &w,
        &ending_child,
        1,
        vec![
            inbox[0].clone(),
            EventKind::RunFailed {
                error: WorkflowError::cancelled("the run was cancelled"),
            },
        ],
    )
    .await;
    assert_eq!(
        status_of(&store, "cc-ending").await.status,
        RunStatus::Failed
    );

    // Children started by the very commit that finishes their parent: the
    // request_cancel one is asked at once, the abandon one runs on (fire and forget).
    let firing = start(&store, "cc-fire").await;
    commit_run(
        &store,
        &w,
        &firing,
        1,
        vec![
            child_started(1, "cc-fire-cancel", ChildCancelPolicy::RequestCancel, None),
            child_started(2, "cc-fire-forget", ChildCancelPolicy::Abandon, None),
            EventKind::RunCompleted {
                output: payload("fired"),
            },
        ],
    )
    .await;
    let asked = run_of(&store, "cc-fire-cancel").await;
    assert_eq!(cancels(inbox_kinds(&store, &asked).await), 1);
    let forgotten = run_of(&store, "cc-fire-forget").await;
    assert_eq!(cancels(inbox_kinds(&store, &forgotten).await), 0);
    assert_eq!(
        status_of(&store, "cc-fire-forget").await.status,
        RunStatus::Running
    );
}

/// A reset of a parent gives the new run the children started before the cut and not
/// finished at it (with an outcome that came since), and asks the others to cancel.
pub async fn a_reset_parent_keeps_its_pending_children(open: Opener<'_>) {
    let store = open("children-reset").await;
    let w = worker("w1");
    let parent = start(&store, "cr-parent").await;
    let claimed = commit_run(
        &store,
        &w,
        &parent,
        1,
        vec![child_started(
            1,
            "cr-before",
            ChildCancelPolicy::RequestCancel,
            None,
        )],
    )
    .await;
    commit_on(
        &store,
        &w,
        &claimed,
        2,
        vec![
            marker(2),
            child_started(3, "cr-after", ChildCancelPolicy::RequestCancel, None),
        ],
    )
    .await;
    store
        .release_runs(&w, &[parent.key])
        .await
        .expect("release");
    let before = run_of(&store, "cr-before").await;
    commit_run(
        &store,
        &w,
        &before,
        1,
        vec![EventKind::RunCompleted {
            output: payload("b"),
        }],
    )
    .await;
    assert_eq!(inbox_kinds(&store, &parent).await.len(), 1);

    let new_run = store
        .reset_run(&WorkflowId::from("cr-parent"), EventId(2))
        .await
        .expect("reset after the first child's start");
    assert_eq!(
        inbox_kinds(&store, &new_run).await,
        [EventKind::ChildCompleted {
            seq: CommandSeq(1),
            output: payload("b")
        }],
        "the new run gets the outcome of the child started before the cut, once"
    );
    let fam = store.run_family(new_run.key).await.expect("run_family");
    assert_eq!(
        fam.children
            .iter()
            .map(|c| c.workflow_id.as_str())
            .collect::<Vec<_>>(),
        ["cr-before"]
    );
    let after = run_of(&store, "cr-after").await;
    assert_eq!(
        inbox_kinds(&store, &after)
            .await
            .iter()
            .filter(|k| is_cancel(k))
            .count(),
        1,
        "a child started after the cut belongs to the old run, which ended: it is asked to cancel"
    );
}
