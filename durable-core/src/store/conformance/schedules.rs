//! Checks of schedules: their rows (create, replace, pause, resume, delete, namespaces),
//! the sweep that starts a due tick's run once and moves the schedule on (two sweepers
//! racing included), the catch-up policies after a gap measured by the store's clock,
//! the overlap policies and triggers.
//!
//! Times are the store's clock: the host clock for SQLite, the server's for PostgreSQL
//! (on the same machine in our tests). Intervals are long enough (1 s) that a loaded
//! machine does not blur which tick is due.

use super::*;
use crate::schedule::{
    CatchUpPolicy, FireOutcome, NewSchedule, OverlapPolicy, ScheduleInfo, ScheduleSpec,
    tick_workflow_id,
};

const SECOND: i64 = 1000;

fn new_schedule(id: &str, workflow: &str, every: Duration) -> NewSchedule {
    NewSchedule {
        id: id.to_owned(),
        workflow: workflow.to_owned(),
        input: payload(format!("input of {id}")),
        spec: ScheduleSpec::every(every).expect("a valid interval"),
        catch_up: CatchUpPolicy::One,
        overlap: OverlapPolicy::Allow,
        execution_timeout: None,
        paused: false,
    }
}

async fn create(store: &SharedStore, schedule: NewSchedule) -> ScheduleInfo {
    let id = schedule.id.clone();
    store
        .create_schedule(schedule, false)
        .await
        .unwrap_or_else(|e| panic!("creating schedule {id:?}: {e}"))
}

async fn get(store: &SharedStore, id: &str) -> ScheduleInfo {
    store
        .get_schedule(id)
        .await
        .expect("get_schedule")
        .unwrap_or_else(|| panic!("schedule {id:?} exists"))
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::ScheduleNotFound(_)) => {}
        other => panic!("{what}: expected StoreError::ScheduleNotFound, got {other:?}"),
    }
}

/// Sleeps until the store's clock reaches `ms`.
async fn sleep_until(ms: i64) {
    let left = ms - clock::host_now_ms();
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(left).unwrap_or(0))).await;
    }
}

async fn runs_of(store: &SharedStore, workflow: &str) -> Vec<crate::store::RunInfo> {
    store
        .list_runs(RunFilter {
            workflow: Some(workflow.to_owned()),
            ..RunFilter::default()
        })
        .await
        .expect("list_runs")
}

/// Schedules are created (not twice under one id unless replaced), read, listed,
/// paused, resumed and deleted; bad definitions and unknown ids are refused with
/// nothing written; each namespace sees only its own.
pub async fn schedules_are_created_paused_resumed_and_deleted(open: Opener<'_>) {
    let store = open("sched-rows").await;
    let other = open("sched-rows-other").await;
    let before = clock::host_now_ms();
    let cron = NewSchedule {
        spec: ScheduleSpec::cron("0 2 * * *").expect("valid"),
        catch_up: CatchUpPolicy::All { max: 7 },
        overlap: OverlapPolicy::Skip,
        execution_timeout: Some(Duration::from_secs(90)),
        ..new_schedule("nightly", "report", Duration::from_secs(1))
    };
    let info = create(&store, cron.clone()).await;
    assert_eq!(info.id, "nightly");
    assert_eq!(info.workflow, "report");
    assert_eq!(info.input, payload("input of nightly"));
    assert_eq!(info.spec, cron.spec);
    assert_eq!(info.catch_up, CatchUpPolicy::All { max: 7 });
    assert_eq!(info.overlap, OverlapPolicy::Skip);
    assert_eq!(info.execution_timeout_ms, Some(90_000));
    assert!(!info.paused);
    assert_eq!((info.runs_started, info.ticks_skipped), (0, 0));
    let next = info.next_fire_at_ms.expect("a cron spec has a next tick");
    assert_eq!(
        Some(next),
        cron.spec.next_after(info.created_at_ms),
        "the first tick is the first after creation"
    );
    assert!(next > before && (next - before) <= 86_400 * SECOND);

    match store.create_schedule(cron.clone(), false).await {
        Err(StoreError::ScheduleExists(id)) => assert_eq!(id, "nightly"),
        other => panic!("a second create of one id: expected ScheduleExists, got {other:?}"),
    }
    let replaced = store
        .create_schedule(
            NewSchedule {
                workflow: "report-v2".to_owned(),
                ..new_schedule("nightly", "unused", Duration::from_secs(3600))
            },
            true,
        )
        .await
        .expect("replacing a schedule");
    assert_eq!(replaced.workflow, "report-v2");
    assert_eq!(replaced.catch_up, CatchUpPolicy::One);
    assert_eq!(replaced.created_at_ms, info.created_at_ms);
    assert!(matches!(
        replaced.spec,
        ScheduleSpec::Interval {
            every_ms: 3_600_000,
            ..
        }
    ));

    for (bad, what) in [
        (
            NewSchedule {
                spec: ScheduleSpec::Cron {
                    expression: "61 * * * *".to_owned(),
                },
                ..new_schedule("bad-cron", "w", Duration::from_secs(1))
            },
            "a bad cron expression",
        ),
        (
            NewSchedule {
                spec: ScheduleSpec::Interval {
                    every_ms: 5,
                    offset_ms: 0,
                },
                ..new_schedule("bad-interval", "w", Duration::from_secs(1))
            },
            "a 5 ms interval",
        ),
        (new_schedule("", "w", Duration::from_secs(1)), "an empty id"),
        (
            new_schedule("no-workflow", "", Duration::from_secs(1)),
            "an empty workflow name",
        ),
        (
            NewSchedule {
                execution_timeout: Some(Duration::ZERO),
                ..new_schedule("zero-timeout", "w", Duration::from_secs(1))
            },
            "a zero execution timeout",
        ),
    ] {
        let id = bad.id.clone();
        match store.create_schedule(bad, false).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("{what}: expected StoreError::Invalid, got {other:?}"),
        }
        assert!(
            store.get_schedule(&id).await.expect("get").is_none(),
            "{what}: nothing written"
        );
    }

    create(
        &store,
        new_schedule("every-1h", "w", Duration::from_secs(3600)),
    )
    .await;
    let ids: Vec<String> = store
        .list_schedules()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["every-1h", "nightly"], "listed by id");

    // Pause keeps the next tick; resume sets the first tick after now.
    let paused = store
        .set_schedule_paused("every-1h", true)
        .await
        .expect("pause");
    assert!(paused.paused);
    let again = store
        .set_schedule_paused("every-1h", true)
        .await
        .expect("pausing twice is harmless");
    assert!(again.paused);
    let resumed = store
        .set_schedule_paused("every-1h", false)
        .await
        .expect("resume");
    assert!(!resumed.paused);
    let next = resumed
        .next_fire_at_ms
        .expect("an interval always has a next tick");
    assert!(next > clock::host_now_ms() - 5 * SECOND && next % 3_600_000 == 0);

    // Another namespace sees none of it.
    assert!(other.list_schedules().await.expect("list").is_empty());
    assert!(other.get_schedule("nightly").await.expect("get").is_none());
    assert_not_found(
        other.set_schedule_paused("nightly", true).await,
        "pause elsewhere",
    );
    assert_not_found(other.delete_schedule("nightly").await, "delete elsewhere");
    assert_not_found(other.trigger_schedule("nightly").await, "trigger elsewhere");
    assert_not_found(other.schedule_fires("nightly", 10).await, "ticks elsewhere");
    create(
        &other,
        new_schedule("nightly", "theirs", Duration::from_secs(60)),
    )
    .await;
    assert_eq!(get(&store, "nightly").await.workflow, "report-v2");

    // Unknown ids.
    assert_not_found(store.set_schedule_paused("nope", true).await, "pause");
    assert_not_found(store.delete_schedule("nope").await, "delete");
    assert_not_found(store.trigger_schedule("nope").await, "trigger");
    assert_not_found(store.schedule_fires("nope", 10).await, "ticks");

    store.delete_schedule("nightly").await.expect("delete");
    assert!(store.get_schedule("nightly").await.expect("get").is_none());
    assert_not_found(store.delete_schedule("nightly").await, "a second delete");
    assert_eq!(
        get(&other, "nightly").await.workflow,
        "theirs",
        "a delete touches one namespace"
    );
}

/// A due schedule's sweep starts one run for the tick, with the schedule's workflow,
/// input and execution timeout and the tick's workflow id, records the tick and moves
/// the next fire time past now. Two handles sweeping at once (two workers) start each
/// tick's run once. A paused schedule starts nothing; a trigger starts a run at once.
pub async fn due_schedules_start_one_run_per_tick(open: Opener<'_>) {
    let store = open("sched-fire").await;
    let rival = open("sched-fire").await;
    let elsewhere = open("sched-fire-other").await;
    let created = create(
        &store,
        NewSchedule {
            execution_timeout: Some(Duration::from_secs(600)),
            ..new_schedule("tick", "tick-wf", Duration::from_secs(1))
        },
    )
    .await;
    let paused = create(
        &store,
        NewSchedule {
            paused: true,
            ..new_schedule("held", "held-wf", Duration::from_secs(1))
        },
    )
    .await;
    let first = created.next_fire_at_ms.expect("next tick");
    assert_eq!(first % SECOND, 0, "interval ticks are aligned");
    assert_eq!(
        store.fire_due_schedules(100).await.expect("sweep"),
        0,
        "nothing is due before the first tick"
    );
    sleep_until(first + 50).await;
    assert_eq!(
        elsewhere.fire_due_schedules(100).await.expect("sweep"),
        0,
        "another namespace's sweep leaves the schedule alone"
    );
    let handled = eventually(
        "the first tick to fire",
        Duration::from_secs(10),
        || async {
            let n = store.fire_due_schedules(100).await.expect("sweep");
            (n > 0).then_some(n)
        },
    )
    .await;
    assert_eq!(handled, 1, "only the unpaused schedule was due");
    let info = get(&store, "tick").await;
    assert_eq!(info.runs_started, 1);
    let next = info.next_fire_at_ms.expect("next tick");
    assert!(next > first && next > clock::host_now_ms() - SECOND);
    let fires = store.schedule_fires("tick", 0).await.expect("ticks");
    assert_eq!(fires.len(), 1);
    assert_eq!(fires[0].tick_ms, first);
    assert_eq!(fires[0].outcome, FireOutcome::Started);
    let wid = tick_workflow_id("tick", first);
    assert_eq!(fires[0].workflow_id, wid);
    let run = store
        .find_run(&wid)
        .await
        .expect("find_run")
        .expect("the tick's run exists");
    assert_eq!(run.workflow, "tick-wf");
    assert_eq!(run.status, RunStatus::Running);
    let deadline = run.execution_deadline_ms.expect("the schedule's timeout");
    assert!((deadline - run.created_at_ms - 600_000).abs() < 1000);
    let h = store
        .read_history(run.key, EventId(0))
        .await
        .expect("history");
    match &h[..] {
        [
            Event {
                kind:
                    EventKind::RunStarted {
                        workflow, input, ..
                    },
                ..
            },
        ] => {
            assert_eq!(workflow, "tick-wf");
            assert_eq!(input, &payload("input of tick"));
        }
        other => panic!("the run's history is its start: {other:?}"),
    }
    assert!(
        store
            .claim_runs(
                &worker("w"),
                &strings(&["tick-wf"]),
                &strings(DEFAULT_QUEUE),
                100,
                LONG_LEASE
            )
            .await
            .expect("claim")
            .iter()
            .any(|c| c.workflow_id == wid),
        "the started run is ready for a worker"
    );
    assert!(
        store.fire_due_schedules(100).await.expect("sweep") == 0
            || get(&store, "tick").await.runs_started == 2,
        "a second sweep of the same tick starts nothing"
    );
    assert!(
        runs_of(&store, "held-wf").await.is_empty(),
        "a paused schedule starts nothing"
    );
    assert_eq!(
        get(&store, "held").await.next_fire_at_ms,
        paused.next_fire_at_ms
    );

    // Two sweepers race over three more ticks.
    let until = clock::host_now_ms() + 3 * SECOND + 300;
    let sweep = |s: SharedStore| async move {
        while clock::host_now_ms() < until {
            s.fire_due_schedules(100).await.expect("sweep");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    };
    futures::join!(sweep(store.clone()), sweep(rival.clone()));
    let info = get(&store, "tick").await;
    let fires = store.schedule_fires("tick", 0).await.expect("ticks");
    let runs = runs_of(&store, "tick-wf").await;
    assert!(info.runs_started >= 3, "the ticks fired: {info:?}");
    assert_eq!(
        runs.len() as u64,
        info.runs_started,
        "one run per tick: {runs:?}"
    );
    assert_eq!(fires.len() as u64, info.runs_started);
    let mut ids: Vec<String> = runs.iter().map(|r| r.workflow_id.0.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), runs.len(), "no workflow id twice");
    for f in &fires {
        assert_eq!(f.workflow_id, tick_workflow_id("tick", f.tick_ms));
        assert_eq!(f.tick_ms % SECOND, 0);
    }

    // A trigger starts a run now, paused or not, and records it.
    let fire = store.trigger_schedule("held").await.expect("trigger");
    assert_eq!(fire.outcome, FireOutcome::Triggered);
    assert_eq!(fire.workflow_id, tick_workflow_id("held", fire.tick_ms));
    let runs = runs_of(&store, "held-wf").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].workflow_id, fire.workflow_id);
    let held = get(&store, "held").await;
    assert_eq!(held.runs_started, 1);
    assert!(held.paused, "a trigger does not resume");
    assert_eq!(
        store.schedule_fires("held", 0).await.expect("ticks"),
        vec![fire]
    );
}

/// After a gap with no sweep, measured by the store's clock, each catch-up policy
/// starts what it promises: `skip` nothing for missed ticks, `one` the latest tick,
/// `all` each missed tick up to its bound; the rest count as skipped, and the next tick
/// is the first after now.
pub async fn missed_ticks_follow_the_catch_up_policy(open: Opener<'_>) {
    let store = open("sched-catch-up").await;
    let mut firsts = Vec::new();
    for (id, policy) in [
        ("cu-skip", CatchUpPolicy::Skip),
        ("cu-one", CatchUpPolicy::One),
        ("cu-all", CatchUpPolicy::All { max: 3 }),
    ] {
        let info = create(
            &store,
            NewSchedule {
                catch_up: policy,
                ..new_schedule(id, id, Duration::from_secs(1))
            },
        )
        .await;
        firsts.push(info.next_fire_at_ms.expect("next tick"));
    }
    // No sweep for a while: at least four ticks of every schedule pass, and the sweep
    // comes 600 ms after a tick, past the half interval in which a tick is on time.
    let latest_first = firsts.iter().copied().max().expect("three");
    sleep_until(latest_first + 3 * SECOND + 600).await;
    assert_eq!(store.fire_due_schedules(100).await.expect("sweep"), 3);
    for ((id, first), expect_started) in ["cu-skip", "cu-one", "cu-all"]
        .into_iter()
        .zip(firsts)
        .zip([0u64, 1, 3])
    {
        let info = get(&store, id).await;
        let next = info.next_fire_at_ms.expect("next tick");
        let due = u64::try_from((next - first) / SECOND).expect("positive");
        assert!(due >= 4, "{id}: at least four ticks were due, got {due}");
        let now = clock::host_now_ms();
        assert!(
            next > now - 500 && next <= now + SECOND,
            "{id}: the next tick is the first after now"
        );
        assert_eq!(info.runs_started, expect_started, "{id}: {info:?}");
        assert_eq!(
            info.ticks_skipped,
            due - expect_started,
            "{id}: every other due tick counts as skipped"
        );
        let runs = runs_of(&store, id).await;
        let mut ticks: Vec<i64> = store
            .schedule_fires(id, 0)
            .await
            .expect("ticks")
            .into_iter()
            .map(|f| {
                assert_eq!(f.outcome, FireOutcome::Started);
                f.tick_ms
            })
            .collect();
        ticks.sort_unstable();
        let latest: Vec<i64> = (1..=i64::try_from(expect_started).expect("small"))
            .rev()
            .map(|k| next - k * SECOND)
            .collect();
        assert_eq!(ticks, latest, "{id}: the latest due ticks started");
        assert_eq!(runs.len() as u64, expect_started);
    }
}

/// With overlap `skip`, a tick that comes while the schedule's previous run is still
/// running starts nothing and is recorded as skipped; once that run finishes, the next
/// tick starts again. With `allow`, every tick starts its run.
pub async fn overlapping_ticks_are_skipped_or_allowed(open: Opener<'_>) {
    let store = open("sched-overlap").await;
    let w = worker("w-overlap");
    create(
        &store,
        NewSchedule {
            overlap: OverlapPolicy::Skip,
            ..new_schedule("ov-skip", "ov-skip", Duration::from_secs(1))
        },
    )
    .await;
    create(
        &store,
        NewSchedule {
            overlap: OverlapPolicy::Allow,
            ..new_schedule("ov-allow", "ov-allow", Duration::from_secs(1))
        },
    )
    .await;
    let sweep_until = |until: i64| {
        let store = store.clone();
        async move {
            while clock::host_now_ms() < until {
                store.fire_due_schedules(100).await.expect("sweep");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    sweep_until(clock::host_now_ms() + 2 * SECOND + 500).await;
    let skip = get(&store, "ov-skip").await;
    let allow = get(&store, "ov-allow").await;
    assert_eq!(skip.runs_started, 1, "one run while it runs: {skip:?}");
    assert!(skip.ticks_skipped >= 1, "{skip:?}");
    assert!(allow.runs_started >= 2, "{allow:?}");
    assert_eq!(allow.ticks_skipped, 0);
    let fires = store.schedule_fires("ov-skip", 0).await.expect("ticks");
    assert!(
        fires
            .iter()
            .any(|f| f.outcome == FireOutcome::SkippedOverlap),
        "{fires:?}"
    );
    let runs = runs_of(&store, "ov-skip").await;
    assert_eq!(runs.len(), 1);

    // Finish the run: the next tick starts a new one.
    let started = StartOutcome {
        key: runs[0].key,
        run_id: runs[0].run_id.clone(),
        workflow: runs[0].workflow.clone(),
        created: true,
    };
    let claimed = must_claim(&store, &w, &started, LONG_LEASE).await;
    complete(&store, &w, &claimed).await;
    let done = get(&store, "ov-skip").await.runs_started;
    let limit = Duration::from_secs(10);
    eventually("a tick after the run finished", limit, || async {
        store.fire_due_schedules(100).await.expect("sweep");
        (get(&store, "ov-skip").await.runs_started > done).then_some(())
    })
    .await;
    assert_eq!(runs_of(&store, "ov-skip").await.len(), 2);
}
