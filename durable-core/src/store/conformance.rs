//! The store conformance suite: what every [`Store`](super::Store) must do, written once
//! and run against each store (feature `testing`).
//!
//! Each check is an `async fn` that takes an [`Opener`]: a function that opens a handle
//! on one database for a namespace. A check opens the handles it needs (several when it
//! tests namespaces or two processes), uses namespaces of its own and panics with a
//! message naming the broken rule. Give each check a fresh database, or run them all on
//! one with [`run_all`]: the namespaces keep them apart.
//!
//! Checks that need time to pass (lease expiry, timers, retry backoff) use leases and
//! timers of a few hundred milliseconds and wait them out, polling with a deadline.
//!
//! ```no_run
//! # async fn demo() {
//! use durable_core::store::SharedStore;
//! use durable_core::store::conformance;
//! use durable_core::store::sqlite::{SqliteOptions, SqliteStore};
//! use std::sync::Arc;
//!
//! let path = std::env::temp_dir().join("conformance-demo.db");
//! let open = move |namespace: &str| -> futures::future::BoxFuture<'static, SharedStore> {
//!     let options = SqliteOptions { namespace: namespace.to_owned(), ..SqliteOptions::default() };
//!     let store = SqliteStore::open(&path, options).expect("opening the test database");
//!     Box::pin(async move { Arc::new(store) as SharedStore })
//! };
//! conformance::run_all(&open).await;
//! # }
//! ```

use super::{
    AttemptResult, ClaimedRun, Commit, NewActivityTask, RunFilter, RunStatus, SharedStore,
    StartOutcome, StartRequest,
};
use crate::clock;
use crate::error::{ActivityError, StoreError};
use crate::event::{ActivityOptions, Event, EventKind};
use crate::ids::{CommandSeq, EventId, FencingToken, WorkerId, WorkflowId};
use crate::payload::Payload;
use futures::future::{BoxFuture, join_all};
use std::time::Duration;

mod children;
mod continue_as_new;
mod deadlines;
mod heartbeats;
mod listing;
mod queues;
mod routing;
mod schedules;
mod status;

pub use children::{
    a_reset_parent_keeps_its_pending_children, cancellation_reaches_children_by_policy,
    child_outcomes_reach_the_parent, child_runs_start_with_the_parent_commit,
};
pub use continue_as_new::{
    continue_as_new_commits_are_checked, continue_as_new_starts_the_next_run_atomically,
};
pub use deadlines::runs_past_their_execution_timeout_are_ended;
pub use heartbeats::{
    attempts_past_their_heartbeat_timeout_are_retried, heartbeats_are_kept_for_the_next_attempt,
};
pub use listing::runs_are_listed_by_every_filter;
pub use queues::{
    queue_concurrency_limit_holds_across_claimers,
    queue_limits_are_validated_listed_and_scoped_by_namespace,
    queue_rate_limit_spaces_starts_by_the_store_clock,
};
pub use routing::{
    runs_are_claimed_only_by_workers_of_their_workflow, runs_are_claimed_only_on_their_task_queue,
};
pub use schedules::{
    due_schedules_start_one_run_per_tick, missed_ticks_follow_the_catch_up_policy,
    overlapping_ticks_are_skipped_or_allowed, schedules_are_created_paused_resumed_and_deleted,
};
pub use status::published_status_is_written_by_commits;

/// Opens a handle on the database under test, scoped to the given namespace. Handles
/// opened for the same namespace see the same runs, like two processes would.
pub type Opener<'a> = &'a (dyn Fn(&str) -> BoxFuture<'static, SharedStore> + Sync);

/// The names of the checks, in the order [`run_all`] runs them; [`run`] runs one.
pub const CHECKS: &[&str] = &[
    "append_numbers_events_contiguously",
    "stale_fence_or_position_is_refused_and_writes_nothing",
    "expired_lease_is_taken_over_with_a_new_fence",
    "timers_fire_when_due_and_once",
    "signals_wait_in_the_inbox_and_make_the_run_ready",
    "finished_run_refuses_signals",
    "a_run_does_not_finish_over_a_waiting_signal",
    "start_is_idempotent",
    "concurrent_commits_all_land",
    "activities_are_claimed_reported_and_retried",
    "activities_are_routed_by_task_queue",
    "renewal_extends_only_the_listed_attempts",
    "reset_run_and_resume",
    "namespaces_isolate_runs",
    "heartbeats_are_kept_for_the_next_attempt",
    "attempts_past_their_heartbeat_timeout_are_retried",
    "runs_past_their_execution_timeout_are_ended",
    "published_status_is_written_by_commits",
    "continue_as_new_starts_the_next_run_atomically",
    "continue_as_new_commits_are_checked",
    "schedules_are_created_paused_resumed_and_deleted",
    "due_schedules_start_one_run_per_tick",
    "missed_ticks_follow_the_catch_up_policy",
    "overlapping_ticks_are_skipped_or_allowed",
    "queue_concurrency_limit_holds_across_claimers",
    "queue_rate_limit_spaces_starts_by_the_store_clock",
    "queue_limits_are_validated_listed_and_scoped_by_namespace",
    "child_runs_start_with_the_parent_commit",
    "child_outcomes_reach_the_parent",
    "cancellation_reaches_children_by_policy",
    "a_reset_parent_keeps_its_pending_children",
    "runs_are_claimed_only_by_workers_of_their_workflow",
    "runs_are_claimed_only_on_their_task_queue",
    "runs_are_listed_by_every_filter",
];

/// Runs every check in turn on one database.
///
/// # Panics
///
/// When a check fails, with a message naming the broken rule.
pub async fn run_all(open: Opener<'_>) {
    for name in CHECKS {
        run(name, open).await;
    }
}

/// Runs the check called `name` (one of [`CHECKS`]).
///
/// # Panics
///
/// When the check fails, or when there is no check of that name.
pub async fn run(name: &str, open: Opener<'_>) {
    match name {
        "append_numbers_events_contiguously" => append_numbers_events_contiguously(open).await,
        "stale_fence_or_position_is_refused_and_writes_nothing" => {
            stale_fence_or_position_is_refused_and_writes_nothing(open).await
        }
        "expired_lease_is_taken_over_with_a_new_fence" => {
            expired_lease_is_taken_over_with_a_new_fence(open).await
        }
        "timers_fire_when_due_and_once" => timers_fire_when_due_and_once(open).await,
        "signals_wait_in_the_inbox_and_make_the_run_ready" => {
            signals_wait_in_the_inbox_and_make_the_run_ready(open).await
        }
        "finished_run_refuses_signals" => finished_run_refuses_signals(open).await,
        "a_run_does_not_finish_over_a_waiting_signal" => {
            a_run_does_not_finish_over_a_waiting_signal(open).await
        }
        "start_is_idempotent" => start_is_idempotent(open).await,
        "concurrent_commits_all_land" => concurrent_commits_all_land(open).await,
        "activities_are_claimed_reported_and_retried" => {
            activities_are_claimed_reported_and_retried(open).await
        }
        "activities_are_routed_by_task_queue" => activities_are_routed_by_task_queue(open).await,
        "renewal_extends_only_the_listed_attempts" => {
            renewal_extends_only_the_listed_attempts(open).await
        }
        "reset_run_and_resume" => reset_run_and_resume(open).await,
        "namespaces_isolate_runs" => namespaces_isolate_runs(open).await,
        "heartbeats_are_kept_for_the_next_attempt" => {
            heartbeats::heartbeats_are_kept_for_the_next_attempt(open).await
        }
        "attempts_past_their_heartbeat_timeout_are_retried" => {
            heartbeats::attempts_past_their_heartbeat_timeout_are_retried(open).await
        }
        "runs_past_their_execution_timeout_are_ended" => {
            deadlines::runs_past_their_execution_timeout_are_ended(open).await
        }
        "published_status_is_written_by_commits" => {
            status::published_status_is_written_by_commits(open).await
        }
        "continue_as_new_starts_the_next_run_atomically" => {
            continue_as_new::continue_as_new_starts_the_next_run_atomically(open).await
        }
        "continue_as_new_commits_are_checked" => {
            continue_as_new::continue_as_new_commits_are_checked(open).await
        }
        "schedules_are_created_paused_resumed_and_deleted" => {
            schedules::schedules_are_created_paused_resumed_and_deleted(open).await
        }
        "due_schedules_start_one_run_per_tick" => {
            schedules::due_schedules_start_one_run_per_tick(open).await
        }
        "missed_ticks_follow_the_catch_up_policy" => {
            schedules::missed_ticks_follow_the_catch_up_policy(open).await
        }
        "overlapping_ticks_are_skipped_or_allowed" => {
            schedules::overlapping_ticks_are_skipped_or_allowed(open).await
        }
        "queue_concurrency_limit_holds_across_claimers" => {
            queues::queue_concurrency_limit_holds_across_claimers(open).await
        }
        "queue_rate_limit_spaces_starts_by_the_store_clock" => {
            queues::queue_rate_limit_spaces_starts_by_the_store_clock(open).await
        }
        "queue_limits_are_validated_listed_and_scoped_by_namespace" => {
            queues::queue_limits_are_validated_listed_and_scoped_by_namespace(open).await
        }
        "child_runs_start_with_the_parent_commit" => {
            children::child_runs_start_with_the_parent_commit(open).await
        }
        "child_outcomes_reach_the_parent" => children::child_outcomes_reach_the_parent(open).await,
        "cancellation_reaches_children_by_policy" => {
            children::cancellation_reaches_children_by_policy(open).await
        }
        "a_reset_parent_keeps_its_pending_children" => {
            children::a_reset_parent_keeps_its_pending_children(open).await
        }
        "runs_are_claimed_only_by_workers_of_their_workflow" => {
            runs_are_claimed_only_by_workers_of_their_workflow(open).await
        }
        "runs_are_claimed_only_on_their_task_queue" => {
            runs_are_claimed_only_on_their_task_queue(open).await
        }
        "runs_are_listed_by_every_filter" => runs_are_listed_by_every_filter(open).await,
        other => panic!("no conformance check named {other:?}; see CHECKS"),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

const LONG_LEASE: Duration = Duration::from_secs(30);
/// Short enough to wait out, long enough that a loaded machine does not expire it
/// between two calls that expect it live.
const SHORT_LEASE: Duration = Duration::from_millis(800);
const DEFAULT_QUEUE: &[&str] = &[""];
/// Every workflow the checks start runs of: a worker claiming with these claims them all.
const WORKFLOWS: &[&str] = &[
    "conformance",
    "another",
    "conformance-child",
    "conformance-next",
    "tick-wf",
    "ov-skip",
    "ov-allow",
];

fn worker(name: &str) -> WorkerId {
    WorkerId(name.to_owned())
}

fn payload(value: impl serde::Serialize) -> Payload {
    Payload::encode(&value).expect("test payloads encode")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn start_request(id: &str) -> StartRequest {
    StartRequest {
        workflow_id: WorkflowId::from(id),
        workflow: "conformance".to_owned(),
        input: payload(id),
        seed: 7,
        execution_timeout: None,
        task_queue: String::new(),
    }
}

async fn start(store: &SharedStore, id: &str) -> StartOutcome {
    store
        .start_run(start_request(id))
        .await
        .unwrap_or_else(|e| panic!("starting run {id:?}: {e}"))
}

/// Claims runs for `worker` and returns the one with `key`'s claim, if claimed.
async fn claim(
    store: &SharedStore,
    worker: &WorkerId,
    started: &StartOutcome,
    lease: Duration,
) -> Option<ClaimedRun> {
    store
        .claim_runs(
            worker,
            &strings(WORKFLOWS),
            &strings(DEFAULT_QUEUE),
            1000,
            lease,
        )
        .await
        .unwrap_or_else(|e| panic!("claim_runs by {worker}: {e}"))
        .into_iter()
        .find(|c| c.key == started.key)
}

async fn must_claim(
    store: &SharedStore,
    worker: &WorkerId,
    started: &StartOutcome,
    lease: Duration,
) -> ClaimedRun {
    claim(store, worker, started, lease)
        .await
        .unwrap_or_else(|| panic!("{worker} should be able to claim run {}", started.key))
}

/// A commit of `events` by `worker` on a claim, after event `after`, keeping the lease.
fn commit(run: &ClaimedRun, worker: &WorkerId, after: u64, events: Vec<EventKind>) -> Commit {
    let now = clock::now_ms();
    Commit {
        key: run.key,
        worker: worker.clone(),
        fence: run.fence,
        after: EventId(after),
        events: events.into_iter().map(|k| (now, k)).collect(),
        consumed_inbox: Vec::new(),
        lease: LONG_LEASE,
        activities: Vec::new(),
        finished_activities: Vec::new(),
        fired_timers: Vec::new(),
        finish: None,
        keep_lease: true,
        published_status: None,
    }
}

/// Completes a claimed run at its first event (the commit after event 1).
async fn complete(store: &SharedStore, worker: &WorkerId, claimed: &ClaimedRun) {
    store
        .commit(Commit {
            finish: Some(RunStatus::Completed),
            keep_lease: false,
            ..commit(
                claimed,
                worker,
                1,
                vec![EventKind::RunCompleted {
                    output: payload("ok"),
                }],
            )
        })
        .await
        .unwrap_or_else(|e| panic!("completing run {}: {e}", claimed.key));
}

fn marker(seq: u32) -> EventKind {
    EventKind::MarkerRecorded {
        seq: CommandSeq(seq),
        name: "random".to_owned(),
        value: payload(seq),
    }
}

fn scheduled(seq: u32, name: &str, queue: Option<&str>) -> EventKind {
    EventKind::ActivityScheduled {
        seq: CommandSeq(seq),
        name: name.to_owned(),
        input: payload(format!("input-{seq}")),
        options: ActivityOptions {
            task_queue: queue.map(str::to_owned),
            ..ActivityOptions::default()
        },
    }
}

fn task(seq: u32, name: &str, queue: &str, local: bool) -> NewActivityTask {
    NewActivityTask {
        seq: CommandSeq(seq),
        name: name.to_owned(),
        task_queue: queue.to_owned(),
        local,
    }
}

async fn history(store: &SharedStore, started: &StartOutcome) -> Vec<Event> {
    store
        .read_history(started.key, EventId(0))
        .await
        .unwrap_or_else(|e| panic!("read_history of run {}: {e}", started.key))
}

fn ids(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.id.0).collect()
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

async fn inbox_kinds(store: &SharedStore, started: &StartOutcome) -> Vec<EventKind> {
    store
        .read_inbox(started.key)
        .await
        .unwrap_or_else(|e| panic!("read_inbox of run {}: {e}", started.key))
        .into_iter()
        .map(|i| i.kind)
        .collect()
}

/// Polls `f` until it returns `Some`, failing with `what` after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = clock::now_ms() + clock::duration_ms(limit);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(clock::now_ms() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn assert_fenced<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Fenced { .. }) => {}
        other => panic!("{what}: expected StoreError::Fenced, got {other:?}"),
    }
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected StoreError::Conflict, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Checks

/// Events are numbered from 1 without gaps, in commit order, and read back as written.
pub async fn append_numbers_events_contiguously(open: Opener<'_>) {
    let store = open("append").await;
    let w = worker("w1");
    let run = start(&store, "append-1").await;
    assert!(run.created, "a first start creates the run");
    let h = history(&store, &run).await;
    assert_eq!(
        ids(&h),
        [1],
        "a started run has its RunStarted event as event 1"
    );
    assert!(
        matches!(&h[0].kind, EventKind::RunStarted { workflow, seed: 7, .. } if workflow == "conformance"),
        "event 1 records the start: {:?}",
        h[0].kind
    );
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    assert_eq!(claimed.last_event_id, EventId(1));
    let out = store
        .commit(commit(
            &claimed,
            &w,
            1,
            vec![marker(1), marker(2), marker(3)],
        ))
        .await
        .expect("the owner's commit lands");
    assert_eq!((out.first, out.last), (EventId(2), EventId(4)));
    let out = store
        .commit(commit(&claimed, &w, 4, vec![marker(4), marker(5)]))
        .await
        .expect("the owner's second commit lands");
    assert_eq!((out.first, out.last), (EventId(5), EventId(6)));
    let h = history(&store, &run).await;
    assert_eq!(ids(&h), [1, 2, 3, 4, 5, 6]);
    assert_eq!(h[3].kind, marker(3), "events read back as written");
    let tail = store
        .read_history(run.key, EventId(4))
        .await
        .expect("reading after an event");
    assert_eq!(
        ids(&tail),
        [5, 6],
        "read_history returns the events after `after`"
    );
    let info = store
        .find_run(&WorkflowId::from("append-1"))
        .await
        .expect("find_run")
        .expect("the run is found");
    assert_eq!(info.last_event_id, EventId(6));
    assert_eq!(info.status, RunStatus::Running);
    assert_eq!(info.owner.as_deref(), Some("w1"));
    let listed = store
        .list_runs(RunFilter::default())
        .await
        .expect("list_runs");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, run.key);
}

/// A commit with a stale fencing token, another owner, a wrong position or an inbox entry
/// already applied is refused, and nothing of it is written.
pub async fn stale_fence_or_position_is_refused_and_writes_nothing(open: Opener<'_>) {
    let store = open("fencing").await;
    let (w1, w2) = (worker("w1"), worker("w2"));
    let run = start(&store, "fence-1").await;
    let claimed = must_claim(&store, &w1, &run, LONG_LEASE).await;

    assert_fenced(
        store
            .commit(commit(&claimed, &w1, 0, vec![marker(1)]))
            .await,
        "a commit after an event that is not the last",
    );
    assert_fenced(
        store
            .commit(commit(&claimed, &w1, 2, vec![marker(1)]))
            .await,
        "a commit after an event that does not exist yet",
    );
    let stale = ClaimedRun {
        fence: FencingToken(claimed.fence.0 + 1),
        ..claimed.clone()
    };
    assert_fenced(
        store.commit(commit(&stale, &w1, 1, vec![marker(1)])).await,
        "a commit with another fencing token",
    );
    assert_fenced(
        store
            .commit(commit(&claimed, &w2, 1, vec![marker(1)]))
            .await,
        "a commit by a worker that does not own the run",
    );
    let bad_inbox = Commit {
        consumed_inbox: vec![12345],
        activities: vec![task(2, "charge", "", false)],
        ..commit(
            &claimed,
            &w1,
            1,
            vec![marker(1), scheduled(2, "charge", None)],
        )
    };
    assert_conflict(
        store.commit(bad_inbox).await,
        "a commit consuming an inbox entry that does not exist",
    );
    assert_eq!(
        ids(&history(&store, &run).await),
        [1],
        "refused commits write no event"
    );
    assert!(
        store
            .pending_activities(run.key)
            .await
            .expect("pending_activities")
            .is_empty(),
        "a refused commit creates no activity task"
    );

    store
        .commit(Commit {
            keep_lease: false,
            ..commit(&claimed, &w1, 1, vec![marker(1)])
        })
        .await
        .expect("the owner's commit lands");
    assert_fenced(
        store
            .commit(commit(&claimed, &w1, 2, vec![marker(2)]))
            .await,
        "a commit after the lease was released",
    );
    assert_eq!(ids(&history(&store, &run).await), [1, 2]);
}

/// A lease that is renewed stays; one that expires is taken over by another worker with a
/// higher fencing token, and the old owner is fenced out. Re-claiming one's own run keeps
/// the token.
pub async fn expired_lease_is_taken_over_with_a_new_fence(open: Opener<'_>) {
    let store = open("leases").await;
    let other_process = open("leases").await;
    let (w1, w2) = (worker("w1"), worker("w2"));
    let run = start(&store, "lease-1").await;
    let first = must_claim(&store, &w1, &run, SHORT_LEASE).await;
    assert!(
        claim(&other_process, &w2, &run, SHORT_LEASE)
            .await
            .is_none(),
        "a live lease keeps other workers out"
    );
    let again = must_claim(&store, &w1, &run, SHORT_LEASE).await;
    assert_eq!(
        again.fence, first.fence,
        "re-claiming one's own run keeps the fencing token"
    );

    // Renewed leases hold past their first expiry.
    store
        .renew_leases(&w1, Duration::from_secs(3), &[])
        .await
        .expect("renew_leases");
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(300)).await;
    assert!(
        claim(&other_process, &w2, &run, SHORT_LEASE)
            .await
            .is_none(),
        "a renewed lease keeps other workers out"
    );
    store
        .renew_leases(&w1, SHORT_LEASE, &[])
        .await
        .expect("renew_leases");

    let taken = eventually(
        "the expired lease to be taken over",
        Duration::from_secs(10),
        || async { claim(&other_process, &w2, &run, LONG_LEASE).await },
    )
    .await;
    assert!(
        taken.fence > first.fence,
        "a takeover raises the fencing token ({} -> {})",
        first.fence,
        taken.fence
    );
    assert_fenced(
        store.commit(commit(&first, &w1, 1, vec![marker(1)])).await,
        "the old owner's commit after a takeover",
    );
    other_process
        .commit(commit(&taken, &w2, 1, vec![marker(1)]))
        .await
        .expect("the new owner's commit lands");
    assert_eq!(ids(&history(&store, &run).await), [1, 2]);

    // Handing a run back lets another worker claim it at once, with a new token.
    other_process
        .signal(&WorkflowId::from("lease-1"), "poke", payload(1))
        .await
        .expect("signal");
    other_process
        .release_runs(&w2, &[run.key])
        .await
        .expect("release_runs");
    let back = must_claim(&store, &w1, &run, LONG_LEASE).await;
    assert!(back.fence > taken.fence, "a new owner gets a new token");
}

/// A timer fires by the store's clock once it is due, exactly once; the owner that fires
/// it itself races the store's sweep without a double firing.
pub async fn timers_fire_when_due_and_once(open: Opener<'_>) {
    let store = open("timers").await;
    let other_process = open("timers").await;
    let w = worker("w1");
    let run = start(&store, "timer-1").await;
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    let started = EventKind::TimerStarted {
        seq: CommandSeq(1),
        duration_ms: 700,
    };
    store
        .commit(Commit {
            keep_lease: false,
            ..commit(&claimed, &w, 1, vec![started])
        })
        .await
        .expect("committing a timer");
    let pending = store.pending_timers(run.key).await.expect("pending_timers");
    assert_eq!(pending.len(), 1, "the timer is pending");
    assert_eq!(pending[0].seq, CommandSeq(1));
    assert!(
        claim(&store, &w, &run, LONG_LEASE).await.is_none(),
        "a run waiting for a timer is not ready"
    );
    assert_eq!(
        store
            .fire_due_timers(100, Duration::ZERO)
            .await
            .expect("fire_due_timers"),
        0,
        "a timer does not fire before it is due"
    );
    eventually("the due timer to fire", Duration::from_secs(10), || async {
        let (a, b) = futures::join!(
            store.fire_due_timers(100, Duration::ZERO),
            other_process.fire_due_timers(100, Duration::ZERO)
        );
        let fired = a.expect("fire_due_timers") + b.expect("fire_due_timers");
        assert!(fired <= 1, "two sweeps fired one timer {fired} times");
        (fired == 1).then_some(())
    })
    .await;
    assert_eq!(
        store
            .fire_due_timers(100, Duration::ZERO)
            .await
            .expect("fire_due_timers"),
        0,
        "a fired timer does not fire again"
    );
    assert!(
        store
            .pending_timers(run.key)
            .await
            .expect("pending")
            .is_empty()
    );
    assert_eq!(
        inbox_kinds(&store, &run).await,
        [EventKind::TimerFired { seq: CommandSeq(1) }],
        "the firing waits in the inbox"
    );
    assert_eq!(
        ids(&history(&store, &run).await),
        [1, 2],
        "only the owner appends"
    );
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    let inbox = store.read_inbox(run.key).await.expect("read_inbox");

    // The owner holds a live lease and fires the next timer itself; the sweep leaves
    // it alone until it is overdue by more than the grace.
    let second = EventKind::TimerStarted {
        seq: CommandSeq(2),
        duration_ms: 100,
    };
    store
        .commit(Commit {
            consumed_inbox: inbox.iter().map(|i| i.id).collect(),
            ..commit(
                &claimed,
                &w,
                2,
                vec![EventKind::TimerFired { seq: CommandSeq(1) }, second],
            )
        })
        .await
        .expect("applying the firing and starting another timer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store
            .fire_due_timers(100, Duration::from_secs(60))
            .await
            .expect("fire_due_timers"),
        0,
        "the sweep leaves a live owner's due timer alone within the grace"
    );
    store
        .commit(Commit {
            fired_timers: vec![CommandSeq(2)],
            ..commit(
                &claimed,
                &w,
                4,
                vec![EventKind::TimerFired { seq: CommandSeq(2) }],
            )
        })
        .await
        .expect("the owner fires its own timer");
    assert_conflict(
        store
            .commit(Commit {
                fired_timers: vec![CommandSeq(2)],
                ..commit(
                    &claimed,
                    &w,
                    5,
                    vec![EventKind::TimerFired { seq: CommandSeq(2) }],
                )
            })
            .await,
        "firing the same timer twice",
    );
    assert_eq!(
        store
            .fire_due_timers(100, Duration::ZERO)
            .await
            .expect("fire_due_timers"),
        0,
        "a timer the owner fired is gone"
    );
    assert_eq!(ids(&history(&store, &run).await), [1, 2, 3, 4, 5]);
}

/// A signal waits in the run's inbox and makes the run ready; the owner moves it into the
/// history, and the run is idle again.
pub async fn signals_wait_in_the_inbox_and_make_the_run_ready(open: Opener<'_>) {
    let store = open("signals").await;
    let client = open("signals").await;
    let w = worker("w1");
    let run = start(&store, "signal-1").await;
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    let awaited = EventKind::SignalAwaited {
        seq: CommandSeq(1),
        name: "approve".to_owned(),
    };
    store
        .commit(Commit {
            keep_lease: false,
            ..commit(&claimed, &w, 1, vec![awaited])
        })
        .await
        .expect("committing a wait");
    assert!(
        claim(&store, &w, &run, LONG_LEASE).await.is_none(),
        "a run with nothing to apply is not ready"
    );
    let id = WorkflowId::from("signal-1");
    client
        .signal(&id, "approve", payload("yes"))
        .await
        .expect("signalling a running run");
    client
        .signal(&id, "note", payload(2))
        .await
        .expect("a second signal");
    let inbox = store.read_inbox(run.key).await.expect("read_inbox");
    assert_eq!(inbox.len(), 2, "both signals wait in the inbox");
    assert!(inbox[0].id < inbox[1].id, "inbox ids grow in arrival order");
    assert_eq!(
        inbox[0].kind,
        EventKind::SignalReceived {
            name: "approve".to_owned(),
            payload: payload("yes"),
        }
    );
    assert_eq!(
        ids(&history(&store, &run).await),
        [1, 2],
        "a signal is not appended by its sender"
    );
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    // Applying only the first leaves the run ready for the second.
    store
        .commit(Commit {
            consumed_inbox: vec![inbox[0].id],
            ..commit(&claimed, &w, 2, vec![inbox[0].kind.clone()])
        })
        .await
        .expect("applying the first signal");
    store
        .release_runs(&w, &[run.key])
        .await
        .expect("release_runs");
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    assert_eq!(claimed.last_event_id, EventId(3));
    store
        .commit(Commit {
            consumed_inbox: vec![inbox[1].id],
            keep_lease: false,
            ..commit(&claimed, &w, 3, vec![inbox[1].kind.clone()])
        })
        .await
        .expect("applying the second signal");
    assert!(
        store
            .read_inbox(run.key)
            .await
            .expect("read_inbox")
            .is_empty()
    );
    assert!(
        claim(&store, &w, &run, LONG_LEASE).await.is_none(),
        "with the inbox empty the run is idle"
    );
    let h = history(&store, &run).await;
    assert_eq!(
        kinds(&h),
        [
            "RunStarted",
            "SignalAwaited",
            "SignalReceived",
            "SignalReceived"
        ]
    );
    match client
        .signal(&WorkflowId::from("nobody"), "x", payload(1))
        .await
    {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("a signal to an unknown id: expected NotFound, got {other:?}"),
    }
    match client.signal(&id, "", payload(1)).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("a signal without a name: expected Invalid, got {other:?}"),
    }
}

/// A finished run accepts no signal or cancel request, holds no lease and is never
/// claimed again.
pub async fn finished_run_refuses_signals(open: Opener<'_>) {
    let store = open("finished").await;
    let w = worker("w1");
    let run = start(&store, "done-1").await;
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    complete(&store, &w, &claimed).await;
    let id = WorkflowId::from("done-1");
    match store.signal(&id, "late", payload(1)).await {
        Err(StoreError::Finished(_)) => {}
        other => panic!("a signal to a finished run: expected Finished, got {other:?}"),
    }
    match store.request_cancel(&id, "too late").await {
        Err(StoreError::Finished(_)) => {}
        other => panic!("cancelling a finished run: expected Finished, got {other:?}"),
    }
    let info = store
        .find_run(&id)
        .await
        .expect("find_run")
        .expect("the run is found");
    assert_eq!(info.status, RunStatus::Completed);
    assert_eq!(info.owner, None, "a finished run holds no lease");
    assert!(
        store
            .read_inbox(run.key)
            .await
            .expect("read_inbox")
            .is_empty()
    );
    assert!(claim(&store, &w, &run, LONG_LEASE).await.is_none());
    assert_fenced(
        store.commit(commit(&claimed, &w, 2, vec![marker(1)])).await,
        "a commit to a finished run",
    );
    let completed = store
        .list_runs(RunFilter {
            status: Some(RunStatus::Completed),
            ..RunFilter::default()
        })
        .await
        .expect("list_runs");
    assert_eq!(completed.len(), 1);
    let running = store
        .list_runs(RunFilter {
            status: Some(RunStatus::Running),
            ..RunFilter::default()
        })
        .await
        .expect("list_runs");
    assert!(running.is_empty());
}

/// A signal acknowledged while the run's last activation ran is not dropped with the
/// inbox: the finishing commit is refused and writes nothing, and once the run has
/// recorded the signal it finishes.
pub async fn a_run_does_not_finish_over_a_waiting_signal(open: Opener<'_>) {
    let store = open("finish-signal").await;
    let w = worker("w1");
    let run = start(&store, "finish-signal-1").await;
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    let id = WorkflowId::from("finish-signal-1");
    store
        .signal(&id, "vote", payload(7))
        .await
        .expect("the run is running: the signal is taken");
    let finishing = |events: Vec<EventKind>, after: u64, consumed: Vec<i64>| Commit {
        finish: Some(RunStatus::Completed),
        keep_lease: false,
        consumed_inbox: consumed,
        ..commit(&claimed, &w, after, events)
    };
    assert_conflict(
        store
            .commit(finishing(
                vec![EventKind::RunCompleted {
                    output: payload("ok"),
                }],
                1,
                Vec::new(),
            ))
            .await,
        "finishing with an unseen signal in the inbox",
    );
    assert_eq!(history(&store, &run).await.len(), 1, "nothing was written");
    let inbox = store.read_inbox(run.key).await.expect("read_inbox");
    assert_eq!(inbox.len(), 1, "the signal still waits");
    let signal = inbox[0].kind.clone();
    store
        .commit(finishing(
            vec![
                signal,
                EventKind::RunCompleted {
                    output: payload("ok"),
                },
            ],
            1,
            vec![inbox[0].id],
        ))
        .await
        .expect("finishing once the signal is recorded");
    let events = history(&store, &run).await;
    assert_eq!(
        events.iter().map(|e| e.kind.name()).collect::<Vec<_>>(),
        ["RunStarted", "SignalReceived", "RunCompleted"]
    );
}

/// Starting the same workflow id twice, even from many clients at once, makes one run.
pub async fn start_is_idempotent(open: Opener<'_>) {
    let store = open("idempotent").await;
    let first = start(&store, "same-1").await;
    let second = store
        .start_run(StartRequest {
            workflow_id: WorkflowId::from("same-1"),
            workflow: "another".to_owned(),
            input: payload(0),
            seed: 1,
            execution_timeout: None,
            task_queue: String::new(),
        })
        .await
        .expect("a second start");
    assert!(!second.created, "a second start creates nothing");
    assert_eq!(second.key, first.key);
    assert_eq!(second.run_id, first.run_id);
    assert_eq!(
        second.workflow, "conformance",
        "the existing run's workflow is returned"
    );

    let clients: Vec<SharedStore> = join_all((0..4).map(|_| open("idempotent"))).await;
    let outcomes = join_all((0..16).map(|i| start(&clients[i % clients.len()], "racing-1"))).await;
    assert_eq!(
        outcomes.iter().filter(|o| o.created).count(),
        1,
        "of 16 racing starts exactly one creates the run"
    );
    assert!(outcomes.iter().all(|o| o.key == outcomes[0].key));
    let listed = store
        .list_runs(RunFilter::default())
        .await
        .expect("list_runs");
    assert_eq!(listed.len(), 2, "two workflow ids, two runs");
    assert_eq!(ids(&history(&store, &outcomes[0]).await), [1]);
}

/// Many runs committing at once from many tasks (the group commit path) all land, each
/// history contiguous.
pub async fn concurrent_commits_all_land(open: Opener<'_>) {
    let stores: Vec<SharedStore> = join_all((0..2).map(|_| open("group"))).await;
    let w = worker("w1");
    let names: Vec<String> = (0..40).map(|i| format!("group-{i}")).collect();
    let runs = join_all(
        names
            .iter()
            .enumerate()
            .map(|(i, id)| start(&stores[i % 2], id)),
    )
    .await;
    let claimed = stores[0]
        .claim_runs(
            &w,
            &strings(WORKFLOWS),
            &strings(DEFAULT_QUEUE),
            1000,
            LONG_LEASE,
        )
        .await
        .expect("claim_runs");
    assert_eq!(claimed.len(), runs.len(), "every started run is claimable");
    let rounds = 5;
    join_all(claimed.iter().enumerate().map(|(i, c)| {
        let store = stores[i % 2].clone();
        let w = w.clone();
        async move {
            let mut after = 1;
            for round in 0..rounds {
                let out = store
                    .commit(commit(
                        c,
                        &w,
                        after,
                        vec![marker(round * 2 + 1), marker(round * 2 + 2)],
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("commit {round} of run {}: {e}", c.key));
                assert_eq!(out.first, EventId(after + 1));
                after = out.last.0;
            }
        }
    }))
    .await;
    for run in &runs {
        let h = history(&stores[1], run).await;
        let want: Vec<u64> = (1..=1 + 2 * u64::from(rounds)).collect();
        assert_eq!(
            ids(&h),
            want,
            "run {} has every event once, in order",
            run.key
        );
    }
}

/// A remote activity is claimed by one worker at a time; a retry waits for its time; a
/// superseded attempt's report is refused; the result goes to the run's inbox. Local
/// attempts are leased to the committer and finished by its commit.
pub async fn activities_are_claimed_reported_and_retried(open: Opener<'_>) {
    let store = open("activities").await;
    let pool = open("activities").await;
    let (w1, w2, w3) = (worker("w1"), worker("w2"), worker("w3"));
    let run = start(&store, "act-1").await;
    let claimed = must_claim(&store, &w1, &run, LONG_LEASE).await;
    store
        .commit(Commit {
            activities: vec![task(1, "charge", "", false), task(2, "ship", "", true)],
            lease: LONG_LEASE,
            ..commit(
                &claimed,
                &w1,
                1,
                vec![scheduled(1, "charge", None), scheduled(2, "ship", None)],
            )
        })
        .await
        .expect("scheduling activities");
    let pending = store.pending_activities(run.key).await.expect("pending");
    assert_eq!(pending.len(), 2);
    assert_eq!(
        (pending[1].attempt, pending[1].owner.as_deref()),
        (1, Some("w1")),
        "a local activity starts as attempt 1, leased to the committer"
    );
    assert_eq!((pending[0].attempt, pending[0].owner.as_deref()), (0, None));

    let names = strings(&["charge", "ship"]);
    let default = strings(DEFAULT_QUEUE);
    assert!(
        pool.claim_activities(&w2, &strings(&["other"]), &default, 10, SHORT_LEASE)
            .await
            .expect("claim_activities")
            .is_empty(),
        "only registered names are claimed"
    );
    let got = pool
        .claim_activities(&w2, &names, &default, 10, SHORT_LEASE)
        .await
        .expect("claim_activities");
    assert_eq!(
        got.len(),
        1,
        "the remote activity is claimed, the leased local one is not"
    );
    let t = &got[0];
    assert_eq!(
        (t.seq, t.attempt, t.name.as_str()),
        (CommandSeq(1), 1, "charge")
    );
    assert_eq!(t.input, payload("input-1"));
    assert_eq!(t.workflow_id, WorkflowId::from("act-1"));
    assert_eq!(t.run_id, run.run_id);
    assert!(
        store
            .claim_activities(&w3, &names, &default, 10, SHORT_LEASE)
            .await
            .expect("claim_activities")
            .is_empty(),
        "a leased attempt is not claimed twice"
    );

    // The attempt fails and is retried later: not before its time.
    let soon = clock::now_ms() + 500;
    pool.report_attempt(
        &w2,
        run.key,
        CommandSeq(1),
        1,
        AttemptResult::Retry {
            error: ActivityError::retryable("Busy", "try later"),
            next_attempt_at_ms: soon,
        },
    )
    .await
    .expect("reporting a retry");
    assert!(
        pool.claim_activities(&w2, &names, &default, 10, SHORT_LEASE)
            .await
            .expect("claim_activities")
            .is_empty(),
        "a retry is not claimed before its time"
    );
    let retried = eventually(
        "the retry to become due",
        Duration::from_secs(10),
        || async {
            let got = pool
                .claim_activities(&w2, &names, &default, 10, SHORT_LEASE)
                .await
                .expect("claim_activities");
            got.into_iter().next()
        },
    )
    .await;
    assert_eq!(retried.attempt, 2, "the retry is attempt 2");
    let pending = store.pending_activities(run.key).await.expect("pending");
    assert_eq!(pending[0].last_error.as_deref(), Some("Busy: try later"));

    // w2 stalls; its lease expires and w3 takes the attempt over.
    let taken = eventually(
        "the attempt's lease to expire",
        Duration::from_secs(10),
        || async {
            let got = store
                .claim_activities(&w3, &names, &default, 10, LONG_LEASE)
                .await
                .expect("claim_activities");
            got.into_iter().next()
        },
    )
    .await;
    assert_eq!(taken.attempt, 3);
    assert_conflict(
        pool.report_attempt(
            &w2,
            run.key,
            CommandSeq(1),
            2,
            AttemptResult::Completed(payload("late")),
        )
        .await,
        "a report from a superseded attempt",
    );
    store
        .report_attempt(
            &w3,
            run.key,
            CommandSeq(1),
            3,
            AttemptResult::Completed(payload("paid")),
        )
        .await
        .expect("the current attempt reports");
    assert_conflict(
        store
            .report_attempt(
                &w3,
                run.key,
                CommandSeq(1),
                3,
                AttemptResult::Completed(payload("again")),
            )
            .await,
        "a second report of the same attempt",
    );
    assert_eq!(
        inbox_kinds(&store, &run).await,
        [EventKind::ActivityCompleted {
            seq: CommandSeq(1),
            output: payload("paid"),
            attempt: 3,
        }],
        "one result, recorded once, waits in the inbox"
    );

    // The local attempt finishes with the owner's commit, once.
    let inbox = store.read_inbox(run.key).await.expect("read_inbox");
    let local_done = EventKind::ActivityCompleted {
        seq: CommandSeq(2),
        output: payload("shipped"),
        attempt: 1,
    };
    store
        .commit(Commit {
            consumed_inbox: vec![inbox[0].id],
            finished_activities: vec![(CommandSeq(2), 1)],
            ..commit(
                &claimed,
                &w1,
                3,
                vec![inbox[0].kind.clone(), local_done.clone()],
            )
        })
        .await
        .expect("applying both results");
    assert!(
        store
            .pending_activities(run.key)
            .await
            .expect("pending")
            .is_empty()
    );
    assert_conflict(
        store
            .commit(Commit {
                finished_activities: vec![(CommandSeq(2), 1)],
                ..commit(&claimed, &w1, 5, vec![local_done])
            })
            .await,
        "finishing a local attempt twice",
    );

    // A failure for good carries the number of attempts.
    store
        .commit(Commit {
            activities: vec![task(3, "charge", "", false)],
            ..commit(&claimed, &w1, 5, vec![scheduled(3, "charge", None)])
        })
        .await
        .expect("scheduling another");
    let got = pool
        .claim_activities(&w2, &names, &default, 10, LONG_LEASE)
        .await
        .expect("claim_activities");
    assert_eq!(got.len(), 1);
    pool.report_attempt(
        &w2,
        run.key,
        CommandSeq(3),
        1,
        AttemptResult::Failed(ActivityError::non_retryable("Declined", "card declined")),
    )
    .await
    .expect("reporting a failure");
    match &inbox_kinds(&store, &run).await[..] {
        [EventKind::ActivityFailed { seq, error }] => {
            assert_eq!(*seq, CommandSeq(3));
            assert_eq!((error.kind(), error.attempts()), ("Declined", 1));
        }
        other => panic!("expected one ActivityFailed in the inbox, got {other:?}"),
    }
    assert_eq!(
        must_claim(&store, &w1, &run, LONG_LEASE).await.fence,
        claimed.fence,
        "a result makes the run ready for its owner"
    );
}

/// A worker renews the runs it owns and the attempts it names; an attempt leased to it
/// that it does not name (a claim whose answer it never got) expires and is claimed
/// again.
pub async fn renewal_extends_only_the_listed_attempts(open: Opener<'_>) {
    let store = open("renewal").await;
    let (w1, w2, w3) = (worker("w1"), worker("w2"), worker("w3"));
    let run = start(&store, "renew-1").await;
    let claimed = must_claim(&store, &w1, &run, LONG_LEASE).await;
    store
        .commit(Commit {
            activities: vec![task(1, "charge", "", false), task(2, "ship", "", false)],
            lease: LONG_LEASE,
            ..commit(
                &claimed,
                &w1,
                1,
                vec![scheduled(1, "charge", None), scheduled(2, "ship", None)],
            )
        })
        .await
        .expect("scheduling activities");
    let names = strings(&["charge", "ship"]);
    let default = strings(DEFAULT_QUEUE);
    let got = store
        .claim_activities(&w2, &names, &default, 10, SHORT_LEASE)
        .await
        .expect("claim_activities");
    assert_eq!(got.len(), 2, "w2 holds both attempts");
    // w2 knows of the first only.
    store
        .renew_leases(&w2, LONG_LEASE, &[(run.key, CommandSeq(1))])
        .await
        .expect("renew_leases");
    let taken = eventually(
        "the unnamed attempt's lease to expire",
        Duration::from_secs(10),
        || async {
            let got = store
                .claim_activities(&w3, &names, &default, 10, LONG_LEASE)
                .await
                .expect("claim_activities");
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    assert_eq!(
        taken.iter().map(|t| t.seq).collect::<Vec<_>>(),
        vec![CommandSeq(2)],
        "only the attempt w2 did not name is taken over; the named one stays w2's"
    );
    assert_eq!(taken[0].attempt, 2);
}

/// Activities on a named task queue are claimed only by workers serving that queue.
pub async fn activities_are_routed_by_task_queue(open: Opener<'_>) {
    let store = open("queues").await;
    let w = worker("w1");
    let run = start(&store, "queue-1").await;
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    store
        .commit(Commit {
            activities: vec![
                task(1, "charge", "payments", false),
                task(2, "charge", "", false),
            ],
            ..commit(
                &claimed,
                &w,
                1,
                vec![
                    scheduled(1, "charge", Some("payments")),
                    scheduled(2, "charge", None),
                ],
            )
        })
        .await
        .expect("scheduling on two queues");
    let names = strings(&["charge"]);
    let general = store
        .claim_activities(
            &worker("general"),
            &names,
            &strings(DEFAULT_QUEUE),
            10,
            LONG_LEASE,
        )
        .await
        .expect("claim_activities");
    assert_eq!(
        general.iter().map(|t| t.seq).collect::<Vec<_>>(),
        [CommandSeq(2)],
        "a default-queue worker takes only the default queue's task"
    );
    let payments = store
        .claim_activities(
            &worker("payments"),
            &names,
            &strings(&["payments"]),
            10,
            LONG_LEASE,
        )
        .await
        .expect("claim_activities");
    assert_eq!(
        payments.iter().map(|t| t.seq).collect::<Vec<_>>(),
        [CommandSeq(1)],
        "a payments worker takes the payments task"
    );
    assert!(
        store
            .claim_activities(&worker("none"), &names, &[], 10, LONG_LEASE)
            .await
            .expect("claim_activities")
            .is_empty(),
        "a worker serving no queue claims nothing"
    );
    let pending = store.pending_activities(run.key).await.expect("pending");
    assert_eq!(pending[0].task_queue, "payments");
}

/// `reset_run` starts a new run from a cut of the latest run's history, rescheduling what
/// was pending there and moving unapplied signals; `resume` puts a suspended run back in
/// line.
pub async fn reset_run_and_resume(open: Opener<'_>) {
    let store = open("reset").await;
    let w = worker("w1");
    let id = WorkflowId::from("reset-1");
    let run = start(&store, "reset-1").await;
    let claimed = must_claim(&store, &w, &run, LONG_LEASE).await;
    store
        .commit(Commit {
            activities: vec![task(1, "charge", "", false)],
            ..commit(&claimed, &w, 1, vec![scheduled(1, "charge", None)])
        })
        .await
        .expect("event 2");
    let got = store
        .claim_activities(
            &w,
            &strings(&["charge"]),
            &strings(DEFAULT_QUEUE),
            10,
            LONG_LEASE,
        )
        .await
        .expect("claim_activities");
    assert_eq!(got.len(), 1);
    store
        .report_attempt(
            &w,
            run.key,
            CommandSeq(1),
            1,
            AttemptResult::Completed(payload("paid")),
        )
        .await
        .expect("report");
    let inbox = store.read_inbox(run.key).await.expect("read_inbox");
    store
        .commit(Commit {
            consumed_inbox: vec![inbox[0].id],
            activities: vec![task(3, "ship", "", false)],
            ..commit(
                &claimed,
                &w,
                2,
                vec![
                    inbox[0].kind.clone(),
                    EventKind::TimerStarted {
                        seq: CommandSeq(2),
                        duration_ms: 3_600_000,
                    },
                    scheduled(3, "ship", None),
                ],
            )
        })
        .await
        .expect("events 3 to 5");
    store
        .signal(&id, "later", payload(1))
        .await
        .expect("an unapplied signal");

    for bad in [0, 6] {
        match store.reset_run(&id, EventId(bad)).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("reset to event {bad} of 5: expected Invalid, got {other:?}"),
        }
    }
    match store
        .reset_run(&WorkflowId::from("nobody"), EventId(1))
        .await
    {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("reset of an unknown id: expected NotFound, got {other:?}"),
    }
    let reset = store.reset_run(&id, EventId(4)).await.expect("reset_run");
    assert!(reset.created);
    assert_ne!(reset.key, run.key);
    assert_ne!(reset.run_id, run.run_id);
    let new_history = history(&store, &reset).await;
    assert_eq!(
        ids(&new_history),
        [1, 2, 3, 4],
        "the new run has the history up to event 4"
    );
    assert_eq!(
        new_history,
        history(&store, &run).await[..4],
        "copied as it was"
    );
    assert!(
        store
            .pending_activities(reset.key)
            .await
            .expect("pending")
            .is_empty(),
        "the activity completed before the cut is not scheduled again"
    );
    let timers = store.pending_timers(reset.key).await.expect("timers");
    assert_eq!(
        timers.iter().map(|t| t.seq).collect::<Vec<_>>(),
        [CommandSeq(2)]
    );
    assert_eq!(
        kinds_of(&inbox_kinds(&store, &reset).await),
        ["SignalReceived"],
        "unapplied signals move to the new run"
    );
    let old = history(&store, &run).await;
    assert_eq!(ids(&old), [1, 2, 3, 4, 5, 6]);
    match &old[5].kind {
        EventKind::RunFailed { error } => assert_eq!(error.kind(), "Reset"),
        other => panic!("the old run should end with RunFailed(Reset), got {other:?}"),
    }
    assert!(
        store
            .pending_activities(run.key)
            .await
            .expect("pending")
            .is_empty()
    );
    assert_fenced(
        store.commit(commit(&claimed, &w, 5, vec![marker(9)])).await,
        "the old run's owner after a reset",
    );
    let latest = store.find_run(&id).await.expect("find_run").expect("found");
    assert_eq!(
        latest.key, reset.key,
        "the workflow id now names the new run"
    );
    assert_eq!(latest.status, RunStatus::Running);
    let again = start(&store, "reset-1").await;
    assert_eq!((again.key, again.created), (reset.key, false));

    // Suspend and resume the new run.
    let claimed = must_claim(&store, &w, &reset, LONG_LEASE).await;
    assert_fenced(
        store
            .activation_failed(
                reset.key,
                &w,
                FencingToken(claimed.fence.0 + 1),
                "boom",
                true,
            )
            .await,
        "activation_failed with a stale token",
    );
    store
        .activation_failed(reset.key, &w, claimed.fence, "the code panicked", true)
        .await
        .expect("activation_failed");
    let info = store.find_run(&id).await.expect("find_run").expect("found");
    assert_eq!(info.status, RunStatus::Suspended);
    assert_eq!(info.reason.as_deref(), Some("the code panicked"));
    assert_eq!(info.activation_failures, 1);
    assert!(
        claim(&store, &w, &reset, LONG_LEASE).await.is_none(),
        "a suspended run is not claimed"
    );
    store
        .signal(&id, "while-suspended", payload(2))
        .await
        .expect("a suspended run still takes signals");
    store.resume(&id).await.expect("resume");
    let info = store.find_run(&id).await.expect("find_run").expect("found");
    assert_eq!(
        (info.status, info.activation_failures, info.reason),
        (RunStatus::Running, 0, None)
    );
    let back = must_claim(&store, &w, &reset, LONG_LEASE).await;
    assert_eq!(back.last_event_id, EventId(4));
    match store.resume(&id).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("resuming a running run: expected Invalid, got {other:?}"),
    }
    match store.resume(&WorkflowId::from("nobody")).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("resuming an unknown id: expected NotFound, got {other:?}"),
    }
}

fn kinds_of(events: &[EventKind]) -> Vec<&'static str> {
    events.iter().map(EventKind::name).collect()
}

/// Handles on two namespaces of one database see nothing of each other: runs, claims,
/// signals, timers, activities.
pub async fn namespaces_isolate_runs(open: Opener<'_>) {
    let a = open("team-a").await;
    let b = open("team-b").await;
    assert_eq!((a.namespace(), b.namespace()), ("team-a", "team-b"));
    let w = worker("w1");
    let in_a = start(&a, "shared-id").await;
    let in_b = start(&b, "shared-id").await;
    assert!(
        in_a.created && in_b.created,
        "the same workflow id is free in each namespace"
    );
    assert_ne!(in_a.key, in_b.key);
    let only_a = start(&a, "only-a").await;

    assert_eq!(
        b.list_runs(RunFilter::default())
            .await
            .expect("list_runs")
            .len(),
        1,
        "b lists only its own run"
    );
    assert!(
        b.find_run(&WorkflowId::from("only-a"))
            .await
            .expect("find_run")
            .is_none()
    );
    match b.signal(&WorkflowId::from("only-a"), "x", payload(1)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("a signal across namespaces: expected NotFound, got {other:?}"),
    }
    let claimed_b = b
        .claim_runs(
            &w,
            &strings(WORKFLOWS),
            &strings(DEFAULT_QUEUE),
            1000,
            LONG_LEASE,
        )
        .await
        .expect("claim_runs");
    assert_eq!(
        claimed_b.iter().map(|c| c.key).collect::<Vec<_>>(),
        [in_b.key],
        "b claims only its own runs"
    );

    let claimed = must_claim(&a, &w, &only_a, LONG_LEASE).await;
    a.commit(Commit {
        activities: vec![task(1, "charge", "", false)],
        keep_lease: false,
        ..commit(
            &claimed,
            &w,
            1,
            vec![
                scheduled(1, "charge", None),
                EventKind::TimerStarted {
                    seq: CommandSeq(2),
                    duration_ms: 0,
                },
            ],
        )
    })
    .await
    .expect("scheduling in a");
    let names = strings(&["charge"]);
    let queues = strings(DEFAULT_QUEUE);
    assert!(
        b.claim_activities(&w, &names, &queues, 10, LONG_LEASE)
            .await
            .expect("claim_activities")
            .is_empty(),
        "b claims none of a's activities"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        b.fire_due_timers(100, Duration::ZERO)
            .await
            .expect("fire_due_timers"),
        0,
        "b fires none of a's timers"
    );
    assert_eq!(
        a.claim_activities(&w, &names, &queues, 10, LONG_LEASE)
            .await
            .expect("claim")
            .len(),
        1
    );
    let fired = eventually(
        "a's timer to fire in a",
        Duration::from_secs(10),
        || async {
            let n = a
                .fire_due_timers(100, Duration::ZERO)
                .await
                .expect("fire_due_timers");
            (n > 0).then_some(n)
        },
    )
    .await;
    assert_eq!(fired, 1);
}
