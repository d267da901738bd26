//! Checks of task queue limits: several claimers (handles like separate processes) never
//! start more attempts than a queue's concurrency limit or rate limit allows, local
//! attempts of a commit count too, limits changed at runtime take effect, queues without
//! limits are unaffected, and limits are scoped by namespace.

use super::*;
use crate::store::{QueueLimit, RateLimit};

/// The lease of the attempts whose expiry frees a slot: long enough that a loaded
/// machine does not expire it before the check means it to.
const SLOT_LEASE: Duration = Duration::from_secs(3);

/// Schedules `count` activities named `call` on `queue` in a new run `id` (remote
/// tasks, commands 1 to `count`); returns the run and its claim.
async fn schedule(
    store: &SharedStore,
    id: &str,
    queue: &str,
    count: u32,
) -> (StartOutcome, ClaimedRun) {
    let w = worker("scheduler");
    let run = start(store, id).await;
    let claimed = must_claim(store, &w, &run, LONG_LEASE).await;
    let q = (!queue.is_empty()).then_some(queue);
    store
        .commit(Commit {
            activities: (1..=count).map(|s| task(s, "call", queue, false)).collect(),
            ..commit(
                &claimed,
                &w,
                1,
                (1..=count).map(|s| scheduled(s, "call", q)).collect(),
            )
        })
        .await
        .unwrap_or_else(|e| panic!("scheduling {count} activities on {queue:?}: {e}"));
    (run, claimed)
}

/// Every handle claims at once, as separate processes would; the tasks each got.
async fn claim_all(
    handles: &[SharedStore],
    queue: &str,
    lease: Duration,
) -> Vec<Vec<crate::store::ActivityTask>> {
    let names = strings(&["call"]);
    let queues = strings(&[queue]);
    let claims = handles.iter().enumerate().map(|(i, h)| {
        let names = names.clone();
        let queues = queues.clone();
        async move {
            h.claim_activities(&worker(&format!("w{i}")), &names, &queues, 10, lease)
                .await
                .unwrap_or_else(|e| panic!("claim_activities by w{i}: {e}"))
        }
    });
    join_all(claims).await
}

fn total(claims: &[Vec<crate::store::ActivityTask>]) -> usize {
    claims.iter().map(Vec::len).sum()
}

async fn complete(store: &SharedStore, who: usize, task: &crate::store::ActivityTask) {
    store
        .report_attempt(
            &worker(&format!("w{who}")),
            task.key,
            task.seq,
            task.attempt,
            AttemptResult::Completed(payload("done")),
        )
        .await
        .unwrap_or_else(|e| panic!("reporting {}: {e}", task.seq));
}

/// Three claimers together start no more attempts than the concurrency limit; a finished
/// attempt, an expired lease, a raised limit and a cleared limit each make room; a local
/// attempt of a commit takes room or is queued; an unlimited queue is unaffected.
pub async fn queue_concurrency_limit_holds_across_claimers(open: Opener<'_>) {
    let handles = vec![
        open("qlimit-c").await,
        open("qlimit-c").await,
        open("qlimit-c").await,
    ];
    let store = &handles[0];
    store
        .set_queue_limit("limited", QueueLimit::new().concurrency(2))
        .await
        .expect("setting a concurrency limit");
    schedule(store, "qc-1", "limited", 8).await;
    schedule(store, "qc-2", "free", 6).await;

    let got = claim_all(&handles, "limited", SLOT_LEASE).await;
    assert_eq!(
        total(&got),
        2,
        "three claimers together start only the limit of 2: {:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(
        total(&claim_all(&handles, "limited", LONG_LEASE).await),
        0,
        "a full queue starts nothing more"
    );
    let free = claim_all(&handles, "free", LONG_LEASE).await;
    assert_eq!(total(&free), 6, "a queue without limits is unaffected");
    let shown = store.queue_info("limited").await.expect("queue_info");
    assert_eq!((shown.running, shown.waiting), (2, 6), "{shown:?}");
    assert_eq!(shown.limit, Some(QueueLimit::new().concurrency(2)));

    // A finished attempt frees its slot.
    let (who, first) = got
        .iter()
        .enumerate()
        .find_map(|(i, tasks)| tasks.first().map(|t| (i, t.clone())))
        .expect("two tasks were claimed");
    complete(&handles[who], who, &first).await;
    let next = claim_all(&handles, "limited", LONG_LEASE).await;
    assert_eq!(total(&next), 1, "one finished, one more starts");

    // The other first attempt's lease (SLOT_LEASE) expires: its slot is free again.
    eventually(
        "the expired attempt's slot is freed",
        Duration::from_secs(15),
        || {
            let handles = handles.clone();
            async move {
                let n = total(&claim_all(&handles, "limited", LONG_LEASE).await);
                assert!(n <= 1, "only one slot came free, {n} started");
                (n == 1).then_some(())
            }
        },
    )
    .await;
    assert_eq!(store.queue_info("limited").await.expect("info").running, 2);

    // A local attempt of a commit counts: with the queue full it is queued, not started.
    let w = worker("local");
    let run = start(store, "qc-3").await;
    let claimed = must_claim(store, &w, &run, LONG_LEASE).await;
    let outcome = store
        .commit(Commit {
            activities: vec![
                task(1, "call", "limited", true),
                task(2, "call", "free", true),
            ],
            ..commit(
                &claimed,
                &w,
                1,
                vec![
                    scheduled(1, "call", Some("limited")),
                    scheduled(2, "call", Some("free")),
                ],
            )
        })
        .await
        .expect("a commit with local attempts");
    assert_eq!(
        outcome.queued,
        [CommandSeq(1)],
        "the limited queue is full: its local attempt is queued, the free one starts"
    );
    let pending = store.pending_activities(run.key).await.expect("pending");
    assert_eq!(pending[0].owner, None, "the queued attempt has no owner");
    assert_eq!(pending[0].attempt, 0);
    assert_eq!(pending[1].owner.as_deref(), Some("local"));

    // Raising the limit at runtime makes room at once.
    store
        .set_queue_limit("limited", QueueLimit::new().concurrency(3))
        .await
        .expect("raising the limit");
    assert_eq!(
        total(&claim_all(&handles, "limited", LONG_LEASE).await),
        1,
        "a limit raised to 3 starts one more"
    );
    // With room, a local attempt starts where it was scheduled, and takes the room.
    store
        .set_queue_limit("limited", QueueLimit::new().concurrency(5))
        .await
        .expect("raising the limit again");
    let outcome = store
        .commit(Commit {
            activities: vec![task(3, "call", "limited", true)],
            ..commit(
                &claimed,
                &w,
                outcome.last.0,
                vec![scheduled(3, "call", Some("limited"))],
            )
        })
        .await
        .expect("a local attempt with room");
    assert!(
        outcome.queued.is_empty(),
        "with room the local attempt starts"
    );
    assert_eq!(
        total(&claim_all(&handles, "limited", LONG_LEASE).await),
        1,
        "the local attempt took one of the two free slots"
    );

    // Clearing the limit lets everything waiting start.
    assert!(store.clear_queue_limit("limited").await.expect("clearing"));
    assert!(
        !store
            .clear_queue_limit("limited")
            .await
            .expect("clearing again"),
        "a second clear finds no limit"
    );
    let rest = claim_all(&handles, "limited", LONG_LEASE).await;
    assert_eq!(total(&rest), 4, "without limits the 4 waiting start");
    let shown = store.queue_info("limited").await.expect("queue_info");
    assert_eq!(shown.limit, None);
    assert_eq!(shown.waiting, 0);
}

/// Three claimers together start no more attempts than the rate limit's bucket allows
/// by the store's clock: the burst at once, then the rate.
pub async fn queue_rate_limit_spaces_starts_by_the_store_clock(open: Opener<'_>) {
    let handles = vec![
        open("qlimit-r").await,
        open("qlimit-r").await,
        open("qlimit-r").await,
    ];
    let store = &handles[0];
    schedule(store, "qr-1", "paced", 40).await;
    // Taken before the bucket fills, so the bound below holds whatever the delays.
    let began = clock::now_ms();
    store
        .set_queue_limit("paced", QueueLimit::new().rate(RateLimit::per_second(5)))
        .await
        .expect("setting a rate limit");
    let burst = total(&claim_all(&handles, "paced", LONG_LEASE).await);
    assert!(
        (1..=5).contains(&burst),
        "the first claims start at most the burst of 5, got {burst}"
    );
    let mut started = burst;
    let mut samples = Vec::new();
    while clock::now_ms() - began < 1_600 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        started += total(&claim_all(&handles, "paced", LONG_LEASE).await);
        samples.push((clock::now_ms() - began, started));
    }
    for (elapsed, n) in &samples {
        // burst + rate * elapsed, plus one for a start at the edge of the measured span.
        let bound = 5 + usize::try_from(elapsed * 5 / 1000).unwrap_or(0) + 1;
        assert!(
            *n <= bound,
            "{n} attempts started within {elapsed} ms; the rate allows at most {bound}"
        );
    }
    assert!(
        started >= 9,
        "over 1.6 s at 5/s with a burst of 5 about 13 start, got {started}"
    );
    let shown = store.queue_info("paced").await.expect("queue_info");
    assert_eq!(shown.running, u64::try_from(started).expect("small"));
    assert!(shown.tokens.is_some_and(|t| t <= 5), "{shown:?}");

    // A rate changed at runtime takes effect: 1 per hour after the new burst of 1.
    store
        .set_queue_limit(
            "paced",
            QueueLimit::new().rate(RateLimit::parse("1/h").expect("1/h")),
        )
        .await
        .expect("lowering the rate");
    assert_eq!(total(&claim_all(&handles, "paced", LONG_LEASE).await), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        total(&claim_all(&handles, "paced", LONG_LEASE).await),
        0,
        "1/h allows nothing more for now"
    );
}

/// Limits are checked, shown and listed, and scoped by namespace: another namespace's
/// queue of the same name is unlimited.
pub async fn queue_limits_are_validated_listed_and_scoped_by_namespace(open: Opener<'_>) {
    let a = open("qlimit-a").await;
    let b = open("qlimit-b").await;
    for (bad, why) in [
        (QueueLimit::new(), "needs a concurrency or a rate"),
        (QueueLimit::new().concurrency(0), "at least 1"),
        (
            QueueLimit::new().rate(RateLimit::per_second(0)),
            "at least 1 start",
        ),
        (
            QueueLimit::new().rate(RateLimit::per_second(3).burst(0)),
            "burst",
        ),
    ] {
        match a.set_queue_limit("q", bad).await {
            Err(StoreError::Invalid(msg)) => assert!(msg.contains(why), "{msg}"),
            other => panic!("{bad:?} should be refused as invalid, got {other:?}"),
        }
    }
    assert!(
        matches!(
            a.set_queue_limit("a\0b", QueueLimit::new().concurrency(1))
                .await,
            Err(StoreError::Invalid(_))
        ),
        "a queue name with NUL is refused"
    );
    assert_eq!(
        a.list_queues().await.expect("list_queues"),
        [],
        "refused limits write nothing"
    );
    let unused = a.queue_info("never-used").await.expect("queue_info");
    assert_eq!(
        (unused.limit, unused.running, unused.waiting, unused.tokens),
        (None, 0, 0, None)
    );

    let limit = QueueLimit::new()
        .concurrency(1)
        .rate(RateLimit::per_second(10).burst(3));
    a.set_queue_limit("shared-name", limit)
        .await
        .expect("setting a limit");
    a.set_queue_limit("", QueueLimit::new().concurrency(4))
        .await
        .expect("a limit on the default queue");
    let listed = a.list_queues().await.expect("list_queues");
    assert_eq!(
        listed.iter().map(|q| q.queue.as_str()).collect::<Vec<_>>(),
        ["", "shared-name"],
        "listed by name"
    );
    assert_eq!(listed[1].limit, Some(limit));
    assert_eq!(listed[1].tokens, Some(3), "the bucket starts full");
    assert_eq!(b.list_queues().await.expect("list_queues"), []);

    schedule(&b, "qn-1", "shared-name", 3).await;
    let names = strings(&["call"]);
    let got = b
        .claim_activities(
            &worker("b"),
            &names,
            &strings(&["shared-name"]),
            10,
            LONG_LEASE,
        )
        .await
        .expect("claim_activities");
    assert_eq!(got.len(), 3, "namespace b's queue has no limit");
    let shown = b.queue_info("shared-name").await.expect("queue_info");
    assert_eq!((shown.limit, shown.running), (None, 3));
    assert_eq!(
        a.queue_info("shared-name")
            .await
            .expect("queue_info")
            .running,
        0,
        "namespace a sees none of b's attempts"
    );
}
