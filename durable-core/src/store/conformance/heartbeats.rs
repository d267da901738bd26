//! Checks of activity heartbeats: details kept for the next attempt, heartbeats of an
//! attempt that is no longer current refused, and attempts past their heartbeat timeout
//! ended by the store's sweep and retried by their policy.

use super::*;
use crate::error::KIND_HEARTBEAT_TIMEOUT;
use crate::retry::RetryPolicy;

/// How long the checks' attempts may go without a heartbeat.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(800);

fn scheduled_with(seq: u32, name: &str, options: ActivityOptions) -> EventKind {
    EventKind::ActivityScheduled {
        seq: CommandSeq(seq),
        name: name.to_owned(),
        input: payload(format!("input-{seq}")),
        options,
    }
}

fn heartbeating(max_attempts: u32) -> ActivityOptions {
    ActivityOptions {
        retry: Some(RetryPolicy::exponential(Duration::from_millis(10)).max_attempts(max_attempts)),
        heartbeat_timeout_ms: Some(u64::try_from(HEARTBEAT_TIMEOUT.as_millis()).unwrap_or(800)),
        ..ActivityOptions::default()
    }
}

/// A heartbeat keeps its details for the next attempt; one from an attempt that is not
/// (or no longer) the current one is refused and writes nothing.
pub async fn heartbeats_are_kept_for_the_next_attempt(open: Opener<'_>) {
    let store = open("heartbeats").await;
    let (w1, w2, w3) = (worker("w1"), worker("w2"), worker("w3"));
    let run = start(&store, "hb-1").await;
    let claimed = must_claim(&store, &w1, &run, LONG_LEASE).await;
    store
        .commit(Commit {
            activities: vec![task(1, "upload", "", false)],
            ..commit(&claimed, &w1, 1, vec![scheduled(1, "upload", None)])
        })
        .await
        .expect("scheduling the upload");
    let names = strings(&["upload"]);
    let default = strings(DEFAULT_QUEUE);
    let first = store
        .claim_activities(&w2, &names, &default, 10, LONG_LEASE)
        .await
        .expect("claim_activities")
        .pop()
        .expect("the upload is claimed");
    assert_eq!(first.attempt, 1);
    assert_eq!(
        first.last_heartbeat, None,
        "a first attempt has no heartbeat"
    );
    let beat = |w: &WorkerId, attempt: u32, part: u32| {
        let (store, w) = (store.clone(), w.clone());
        async move {
            store
                .record_heartbeat(&w, run.key, CommandSeq(1), attempt, payload(part))
                .await
        }
    };
    beat(&w2, 1, 1).await.expect("the owner's heartbeat");
    beat(&w2, 1, 2).await.expect("the owner's second heartbeat");
    assert_conflict(beat(&w3, 1, 9).await, "a heartbeat from another worker");
    assert_conflict(
        beat(&w2, 2, 9).await,
        "a heartbeat of an attempt not started",
    );
    let pending = store.pending_activities(run.key).await.expect("pending");
    assert!(
        pending[0].last_heartbeat_at_ms.is_some(),
        "status shows when the attempt last heartbeated"
    );
    store
        .report_attempt(
            &w2,
            run.key,
            CommandSeq(1),
            1,
            AttemptResult::Retry {
                error: ActivityError::retryable("Busy", "try later"),
                next_attempt_at_ms: clock::now_ms(),
            },
        )
        .await
        .expect("reporting a retry");
    assert_conflict(beat(&w2, 1, 9).await, "a heartbeat after the attempt ended");
    let second = eventually(
        "the retry to be claimed",
        Duration::from_secs(10),
        || async {
            store
                .claim_activities(&w3, &names, &default, 10, LONG_LEASE)
                .await
                .expect("claim_activities")
                .pop()
        },
    )
    .await;
    assert_eq!(second.attempt, 2);
    assert_eq!(
        second.last_heartbeat,
        Some(payload(2u32)),
        "the next attempt gets the last heartbeat's details"
    );
    assert_eq!(
        store
            .time_out_heartbeats(100)
            .await
            .expect("time_out_heartbeats"),
        0,
        "a call without a heartbeat timeout never times out"
    );
    store
        .report_attempt(
            &w3,
            run.key,
            CommandSeq(1),
            2,
            AttemptResult::Completed(payload("uploaded")),
        )
        .await
        .expect("the current attempt reports");
    assert_conflict(
        beat(&w3, 2, 9).await,
        "a heartbeat after the activity finished",
    );
}

/// An attempt (claimed, or local to the committer) that does not heartbeat within its
/// timeout is ended by the sweep and retried; its owner is fenced out; heartbeats keep
/// an attempt alive; out of attempts, the activity fails with `HeartbeatTimeout`.
pub async fn attempts_past_their_heartbeat_timeout_are_retried(open: Opener<'_>) {
    let store = open("heartbeat-timeouts").await;
    let (w1, w2, w3) = (worker("w1"), worker("w2"), worker("w3"));
    let run = start(&store, "hbt-1").await;
    let claimed = must_claim(&store, &w1, &run, LONG_LEASE).await;
    store
        .commit(Commit {
            activities: vec![task(1, "upload", "", false), task(2, "local", "", true)],
            ..commit(
                &claimed,
                &w1,
                1,
                vec![
                    scheduled_with(1, "upload", heartbeating(2)),
                    scheduled_with(2, "local", heartbeating(5)),
                ],
            )
        })
        .await
        .expect("scheduling activities with a heartbeat timeout");
    let names = strings(&["upload"]);
    let default = strings(DEFAULT_QUEUE);
    let first = store
        .claim_activities(&w2, &names, &default, 10, LONG_LEASE)
        .await
        .expect("claim_activities")
        .pop()
        .expect("the upload is claimed");
    assert_eq!(first.attempt, 1);
    let beat = |w: &WorkerId, attempt: u32, part: &str| {
        let (store, w, part) = (store.clone(), w.clone(), part.to_owned());
        async move {
            store
                .record_heartbeat(&w, run.key, CommandSeq(1), attempt, payload(part))
                .await
        }
    };
    // Heartbeats keep the attempt alive past its timeout; the local attempt, which
    // sends none, is ended meanwhile.
    let began = clock::now_ms();
    let mut local_ended = false;
    while clock::now_ms() - began < clock::duration_ms(HEARTBEAT_TIMEOUT) * 2 {
        beat(&w2, 1, "part-1")
            .await
            .expect("a live attempt's heartbeat");
        local_ended |= store
            .time_out_heartbeats(100)
            .await
            .expect("time_out_heartbeats")
            > 0;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending = store.pending_activities(run.key).await.expect("pending");
    assert_eq!(
        (pending[0].attempt, pending[0].owner.as_deref()),
        (1, Some("w2")),
        "a heartbeating attempt is not ended"
    );
    assert!(local_ended, "the silent local attempt was ended");
    assert_eq!(pending[1].owner, None, "the local attempt is handed back");
    assert!(
        pending[1]
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with(KIND_HEARTBEAT_TIMEOUT)),
        "{:?}",
        pending[1].last_error
    );
    assert_conflict(
        store
            .report_attempt(
                &w1,
                run.key,
                CommandSeq(2),
                1,
                AttemptResult::Completed(payload("late")),
            )
            .await,
        "a report of the timed-out local attempt",
    );

    // Now w2 goes silent: its attempt is ended and w3 takes over with its details.
    eventually(
        "the silent attempt to be ended",
        Duration::from_secs(10),
        || async {
            let n = store
                .time_out_heartbeats(100)
                .await
                .expect("time_out_heartbeats");
            (n > 0).then_some(())
        },
    )
    .await;
    assert_conflict(
        beat(&w2, 1, "part-2").await,
        "a heartbeat of the ended attempt",
    );
    assert_conflict(
        store
            .report_attempt(
                &w2,
                run.key,
                CommandSeq(1),
                1,
                AttemptResult::Completed(payload("late")),
            )
            .await,
        "a report of the ended attempt",
    );
    let second = eventually(
        "the retry to be claimed",
        Duration::from_secs(10),
        || async {
            store
                .claim_activities(&w3, &names, &default, 10, LONG_LEASE)
                .await
                .expect("claim_activities")
                .pop()
        },
    )
    .await;
    assert_eq!(second.attempt, 2);
    assert_eq!(second.last_heartbeat, Some(payload("part-1")));

    // The second attempt is the last the policy allows: its timeout fails the activity.
    eventually(
        "the last attempt to time out",
        Duration::from_secs(10),
        || async {
            let n = store
                .time_out_heartbeats(100)
                .await
                .expect("time_out_heartbeats");
            (n > 0).then_some(())
        },
    )
    .await;
    let inbox = inbox_kinds(&store, &run).await;
    let failure = inbox.iter().find_map(|k| match k {
        EventKind::ActivityFailed { seq, error } if seq.0 == 1 => Some(error.clone()),
        _ => None,
    });
    let failure = failure.unwrap_or_else(|| panic!("an ActivityFailed in the inbox: {inbox:?}"));
    assert_eq!(failure.kind(), KIND_HEARTBEAT_TIMEOUT);
    assert_eq!(failure.attempts(), 2);
    let pending = store.pending_activities(run.key).await.expect("pending");
    assert!(
        pending.iter().all(|p| p.seq != CommandSeq(1)),
        "the failed activity has no task left"
    );
}
