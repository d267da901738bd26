//! Checks of continue-as-new: a commit that ends a run with `RunContinuedAsNew` starts
//! the next run of the workflow id in the same transaction, carries the signals over and
//! is fenced like any commit.

use super::*;
use crate::ids::RunId;

fn continued(input: &str, run_id: &RunId) -> EventKind {
    EventKind::RunContinuedAsNew {
        workflow: "conformance-next".to_owned(),
        input: payload(input),
        seed: 11,
        run_id: run_id.clone(),
        signals: vec![("carried".to_owned(), payload("handed on"))],
    }
}

/// A commit that continues `claimed` as the run `run_id`, after event `after`.
fn continuing(
    claimed: &ClaimedRun,
    w: &WorkerId,
    after: u64,
    mut events: Vec<EventKind>,
    run_id: &RunId,
) -> Commit {
    events.push(continued("next", run_id));
    Commit {
        finish: Some(RunStatus::Continued),
        keep_lease: false,
        ..commit(claimed, w, after, events)
    }
}

async fn runs_of(store: &SharedStore, id: &str) -> Vec<crate::store::RunInfo> {
    store
        .list_runs(RunFilter {
            workflow_id: Some(WorkflowId::from(id)),
            ..RunFilter::default()
        })
        .await
        .expect("list_runs by workflow id")
}

/// The old run ends as `continued` with its event last, and the new run (the id the
/// event names) is the latest of the workflow id: started with the event's workflow,
/// input and seed, ready, holding the signals and cancel requests the old run had not
/// applied, the old run's execution deadline and published status, and none of its
/// activities or timers. Signals, starts and lists reach it.
pub async fn continue_as_new_starts_the_next_run_atomically(open: Opener<'_>) {
    let store = open("continue").await;
    let w = worker("w1");
    let id = WorkflowId::from("can-1");
    let run = store
        .start_run(StartRequest {
            execution_timeout: Some(Duration::from_secs(3600)),
            ..start_request("can-1")
        })
        .await
        .expect("start");
    let other = start(&store, "can-other").await;
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    store
        .commit(Commit {
            activities: vec![task(1, "charge", "", false)],
            published_status: Some(payload("period 1")),
            ..commit(
                &claimed,
                &w,
                1,
                vec![
                    scheduled(1, "charge", None),
                    EventKind::TimerStarted {
                        seq: CommandSeq(2),
                        duration_ms: 3_600_000,
                    },
                ],
            )
        })
        .await
        .expect("a step with an activity and a timer pending");
    // Arrive while the last activation runs: not applied by it.
    store
        .signal(&id, "extend", payload(1))
        .await
        .expect("a signal to the running run");
    store
        .request_cancel(&id, "customer left")
        .await
        .expect("a cancel request");
    let before = store
        .find_run(&id)
        .await
        .expect("find_run")
        .expect("the run exists");
    let next_id = RunId::generate();
    store
        .commit(continuing(&claimed, &w, 3, vec![marker(3)], &next_id))
        .await
        .expect("the continuing commit");

    let old = history(&store, &run).await;
    assert_eq!(
        kinds(&old),
        [
            "RunStarted",
            "ActivityScheduled",
            "TimerStarted",
            "MarkerRecorded",
            "RunContinuedAsNew"
        ],
        "the old run's history ends with its continue event"
    );
    let runs = runs_of(&store, "can-1").await;
    assert_eq!(runs.len(), 2, "two runs of the workflow id: {runs:?}");
    let (new, old_info) = (&runs[0], &runs[1]);
    assert_eq!(old_info.key, run.key, "newest first");
    assert_eq!(old_info.status, RunStatus::Continued);
    assert_eq!(old_info.owner, None, "the old run's lease is released");
    assert!(old_info.status.is_finished());
    assert_eq!(
        new.run_id, next_id,
        "the new run has the id the event names"
    );
    assert_eq!(new.status, RunStatus::Running);
    assert_eq!(new.workflow, "conformance-next");
    assert_eq!(new.last_event_id, EventId(1));
    assert_eq!(
        new.execution_deadline_ms, before.execution_deadline_ms,
        "the execution deadline spans the chain"
    );
    assert!(new.execution_deadline_ms.is_some());
    let latest = store
        .find_run(&id)
        .await
        .expect("find_run")
        .expect("the workflow id has runs");
    assert_eq!(latest.key, new.key, "the new run is the latest");
    let new_run = StartOutcome {
        key: new.key,
        run_id: new.run_id.clone(),
        workflow: new.workflow.clone(),
        created: true,
    };
    let h = history(&store, &new_run).await;
    assert_eq!(ids(&h), [1], "the new run's history starts afresh");
    match &h[0].kind {
        EventKind::RunStarted {
            workflow,
            input,
            seed,
        } => {
            assert_eq!(workflow, "conformance-next");
            assert_eq!(input.decode::<String>().expect("decodes"), "next");
            assert_eq!(*seed, 11);
        }
        other => panic!("the new run starts with RunStarted, not {other:?}"),
    }
    assert_eq!(h[0].time_ms, old.last().expect("events").time_ms);

    // The signal the old run's code had not taken comes first, then what waited for the
    // old run, in order; its activity and timer did not move.
    assert!(inbox_kinds(&store, &run).await.is_empty());
    let moved = inbox_kinds(&store, &new_run).await;
    match moved.as_slice() {
        [
            EventKind::SignalReceived {
                name: first,
                payload,
            },
            EventKind::SignalReceived { name: second, .. },
            EventKind::CancelRequested { reason },
        ] => {
            assert_eq!(first, "carried");
            assert_eq!(payload.decode::<String>().expect("decodes"), "handed on");
            assert_eq!(second, "extend");
            assert_eq!(reason, "customer left");
        }
        other => panic!("the new run's inbox, in order: {other:?}"),
    }
    let ids: Vec<i64> = store
        .read_inbox(new.key)
        .await
        .expect("read_inbox")
        .iter()
        .map(|i| i.id)
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "inbox ids increase: {ids:?}"
    );
    for key in [run.key, new.key] {
        assert!(
            store
                .pending_activities(key)
                .await
                .expect("pending")
                .is_empty()
        );
        assert!(store.pending_timers(key).await.expect("timers").is_empty());
    }
    assert_eq!(
        store
            .published_status(new.key)
            .await
            .expect("published_status")
            .map(|p| p.decode::<String>().expect("decodes")),
        Some("period 1".to_owned()),
        "the new run shows the old run's status until it publishes its own"
    );

    // The workflow id now means the new run.
    store
        .signal(&id, "extend", payload(2))
        .await
        .expect("a signal after the switch");
    assert_eq!(inbox_kinds(&store, &new_run).await.len(), 4);
    let again = start(&store, "can-1").await;
    assert!(
        !again.created,
        "a second start of the id is the running chain"
    );
    assert_eq!(again.key, new.key);
    let claimed_new = must_claim(&store, &w, &new_run, LONG_LEASE).await;
    assert_eq!(claimed_new.last_event_id, EventId(1));
    assert_eq!(claimed_new.workflow, "conformance-next");
    assert_eq!(runs_of(&store, "can-other").await.len(), 1);
    assert_eq!(
        history(&store, &other).await.len(),
        1,
        "other runs untouched"
    );

    // A run can continue again: the chain grows one run at a time.
    let inbox = store.read_inbox(new.key).await.expect("read_inbox");
    let third = RunId::generate();
    store
        .commit(Commit {
            consumed_inbox: inbox.iter().map(|i| i.id).collect(),
            ..continuing(
                &claimed_new,
                &w,
                1,
                inbox.iter().map(|i| i.kind.clone()).collect(),
                &third,
            )
        })
        .await
        .expect("continuing the second run");
    let runs = runs_of(&store, "can-1").await;
    assert_eq!(
        runs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [
            RunStatus::Running,
            RunStatus::Continued,
            RunStatus::Continued
        ]
    );
    assert_eq!(runs[0].run_id, third);
    let third_inbox = store.read_inbox(runs[0].key).await.expect("read_inbox");
    assert_eq!(
        third_inbox.len(),
        1,
        "applied entries do not move; only the handed-on signal waits: {third_inbox:?}"
    );
    // A signal sent now is numbered after the handed-on one.
    store
        .signal(&id, "extend", payload(3))
        .await
        .expect("a signal to the third run");
    let third_inbox = store.read_inbox(runs[0].key).await.expect("read_inbox");
    assert_eq!(third_inbox.len(), 2);
    assert!(third_inbox[0].id < third_inbox[1].id);
}

/// A continuing commit is fenced like any other (a stale fence, a stale position, a run
/// that was reset) and writes nothing when refused; a `Continued` finish without its
/// event, or the event without the finish, is refused as invalid.
pub async fn continue_as_new_commits_are_checked(open: Opener<'_>) {
    let store = open("continue-checks").await;
    let w = worker("w1");
    let id = WorkflowId::from("can-2");
    let run = start(&store, "can-2").await;
    let claimed = must_claim(&store, &w, &run, SHORT_LEASE).await;

    let invalid = store
        .commit(Commit {
            finish: Some(RunStatus::Continued),
            keep_lease: false,
            ..commit(&claimed, &w, 1, vec![marker(1)])
        })
        .await;
    assert!(
        matches!(invalid, Err(StoreError::Invalid(_))),
        "continued without its event: {invalid:?}"
    );
    let invalid = store
        .commit(commit(
            &claimed,
            &w,
            1,
            vec![continued("x", &RunId::generate()), marker(1)],
        ))
        .await;
    assert!(
        matches!(invalid, Err(StoreError::Invalid(_))),
        "the event without the finish: {invalid:?}"
    );
    assert_fenced(
        store
            .commit(continuing(&claimed, &w, 5, Vec::new(), &RunId::generate()))
            .await,
        "a continuing commit at a stale position",
    );
    assert_eq!(history(&store, &run).await.len(), 1, "nothing was written");
    assert_eq!(
        runs_of(&store, "can-2").await.len(),
        1,
        "no run was started"
    );

    // Another worker takes the run over; the first one's continue is refused.
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(200)).await;
    let w2 = worker("w2");
    let taken = eventually("w2 takes the run over", Duration::from_secs(10), || {
        let store = store.clone();
        let w2 = w2.clone();
        let run = run.clone();
        async move { claim(&store, &w2, &run, LONG_LEASE).await }
    })
    .await;
    assert_fenced(
        store
            .commit(continuing(&claimed, &w, 1, Vec::new(), &RunId::generate()))
            .await,
        "a continuing commit with a stale fence",
    );
    assert_eq!(
        runs_of(&store, "can-2").await.len(),
        1,
        "no run was started"
    );
    assert_eq!(
        store
            .find_run(&id)
            .await
            .expect("find_run")
            .map(|r| r.status),
        Some(RunStatus::Running)
    );

    // A reset ends the run: its owner's continue is refused too.
    store
        .reset_run(&id, EventId(1))
        .await
        .expect("reset to the start");
    assert_fenced(
        store
            .commit(continuing(&taken, &w2, 1, Vec::new(), &RunId::generate()))
            .await,
        "continuing a run that was reset",
    );
    let runs = runs_of(&store, "can-2").await;
    assert_eq!(
        runs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [RunStatus::Running, RunStatus::Failed],
        "the reset's run is the latest; nothing was continued"
    );
}
