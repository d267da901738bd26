//! Checks of run execution timeouts: a run (running or suspended) past its deadline is
//! ended as failed by the store's sweep, with its history saying why, its pending work
//! removed and its owner fenced out; runs without a deadline, or before it, are left
//! alone.

use super::*;
use crate::error::{KIND_EXECUTION_TIMEOUT, WorkflowError};

/// The checks' execution timeout.
const TIMEOUT: Duration = Duration::from_millis(800);

async fn start_with(store: &SharedStore, id: &str, timeout: Option<Duration>) -> StartOutcome {
    store
        .start_run(StartRequest {
            execution_timeout: timeout,
            ..start_request(id)
        })
        .await
        .unwrap_or_else(|e| panic!("starting run {id:?}: {e}"))
}

async fn status(store: &SharedStore, id: &str) -> crate::store::RunInfo {
    store
        .find_run(&WorkflowId::from(id))
        .await
        .expect("find_run")
        .unwrap_or_else(|| panic!("run {id:?} exists"))
}

/// Runs past their execution timeout are ended as failed, once, with `RunTimedOut` and
/// `RunFailed` in their history; the rest are left alone.
pub async fn runs_past_their_execution_timeout_are_ended(open: Opener<'_>) {
    let store = open("deadlines").await;
    let w1 = worker("w1");
    let timed = start_with(&store, "dl-1", Some(TIMEOUT)).await;
    let suspended = start_with(&store, "dl-2", Some(TIMEOUT)).await;
    start_with(&store, "dl-3", None).await;
    start_with(&store, "dl-4", Some(Duration::from_secs(3600))).await;
    let info = status(&store, "dl-1").await;
    let deadline = info
        .execution_deadline_ms
        .expect("a run with a timeout has a deadline");
    assert!(
        (deadline - info.created_at_ms - clock::duration_ms(TIMEOUT)).abs() < 1_000,
        "the deadline is the start plus the timeout: {deadline} vs {}",
        info.created_at_ms
    );
    assert_eq!(status(&store, "dl-3").await.execution_deadline_ms, None);
    match store
        .start_run(StartRequest {
            execution_timeout: Some(Duration::ZERO),
            ..start_request("dl-zero")
        })
        .await
    {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("a zero execution timeout: expected StoreError::Invalid, got {other:?}"),
    }

    // dl-1 is owned and has pending work of every kind; dl-2 is suspended.
    let claimed = must_claim(&store, &w1, &timed, LONG_LEASE).await;
    store
        .commit(Commit {
            activities: vec![task(1, "charge", "", false)],
            ..commit(
                &claimed,
                &w1,
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
        .expect("the owner's commit");
    store
        .signal(&WorkflowId::from("dl-1"), "go", payload(1))
        .await
        .expect("a signal waits in the inbox");
    let other = must_claim(&store, &w1, &suspended, LONG_LEASE).await;
    store
        .activation_failed(other.key, &w1, other.fence, "a panic", true)
        .await
        .expect("suspending dl-2");
    assert_eq!(
        store.time_out_runs(100).await.expect("time_out_runs"),
        0,
        "nothing is ended before its deadline"
    );

    let ended = std::sync::atomic::AtomicUsize::new(0);
    eventually("both runs to be ended", Duration::from_secs(10), || async {
        let n = store.time_out_runs(100).await.expect("time_out_runs");
        let total = ended.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        (total >= 2).then_some(())
    })
    .await;
    assert_eq!(
        ended.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "each run is ended once"
    );
    let expected = WorkflowError::execution_timeout(TIMEOUT);
    assert_eq!(expected.kind(), KIND_EXECUTION_TIMEOUT);
    for (id, run) in [("dl-1", &timed), ("dl-2", &suspended)] {
        let info = status(&store, id).await;
        assert_eq!(info.status, RunStatus::Failed, "{id} failed");
        assert_eq!(
            info.reason.as_deref(),
            Some("execution timeout of 800ms exceeded")
        );
        assert_eq!(info.owner, None);
        let h = history(&store, run).await;
        let tail: Vec<&EventKind> = h.iter().rev().take(2).rev().map(|e| &e.kind).collect();
        assert_eq!(
            tail,
            [
                &EventKind::RunTimedOut { timeout_ms: 800 },
                &EventKind::RunFailed {
                    error: expected.clone()
                }
            ],
            "{id}: the history ends with why"
        );
        assert_eq!(info.last_event_id.0, h.len() as u64);
    }
    assert!(
        store
            .pending_activities(timed.key)
            .await
            .expect("pending")
            .is_empty()
    );
    assert!(
        store
            .pending_timers(timed.key)
            .await
            .expect("pending")
            .is_empty()
    );
    assert!(
        inbox_kinds(&store, &timed).await.is_empty(),
        "the inbox is cleared"
    );
    assert_fenced(
        store
            .commit(commit(&claimed, &w1, 3, vec![marker(3)]))
            .await,
        "the former owner's commit",
    );
    match store
        .signal(&WorkflowId::from("dl-1"), "go", payload(2))
        .await
    {
        Err(StoreError::Finished(_)) => {}
        other => panic!("a signal to the ended run: expected Finished, got {other:?}"),
    }
    assert_eq!(store.time_out_runs(100).await.expect("time_out_runs"), 0);
    assert_eq!(status(&store, "dl-3").await.status, RunStatus::Running);
    assert_eq!(status(&store, "dl-4").await.status, RunStatus::Running);

    // A reset run gets a fresh deadline with the same timeout.
    let reset = store
        .reset_run(&WorkflowId::from("dl-1"), EventId(1))
        .await
        .expect("reset");
    let info = status(&store, "dl-1").await;
    assert_eq!(info.run_id, reset.run_id);
    assert_eq!(info.status, RunStatus::Running);
    let fresh = info
        .execution_deadline_ms
        .expect("the reset run has a deadline");
    assert!(
        fresh > deadline,
        "a fresh deadline: {fresh} after {deadline}"
    );
}
