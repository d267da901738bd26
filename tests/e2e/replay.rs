//! Replay, versioning and repair: saved histories replay against today's code, a patched
//! change keeps old runs working while an unpatched one is caught, a run suspended by a
//! workflow bug resumes after the fix, and reset re-runs from a chosen event.

use crate::approval_example;
use crate::fan_out_example;
use crate::order_example;
use crate::queues_example;
use crate::routing_example;
use crate::schedule_example;
use crate::subscription_example;

use durable::prelude::*;
use durable::store::{RunStatus, SharedStore};
use durable::{
    EventId, EventKind, HistoryFile, ReplayError, ReplayFileError, ReplayOutcome, Replayer,
    SqliteOptions, SqliteStore,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn histories_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories")
}

fn all_examples() -> Registry {
    order_example::registry()
        .merge(approval_example::registry())
        .merge(subscription_example::registry())
        .merge(schedule_example::registry())
        .merge(queues_example::registry())
        .merge(fan_out_example::registry())
        .merge(routing_example::registry())
}

#[test]
fn every_saved_history_replays_against_todays_code() {
    let results = Replayer::new(all_examples())
        .replay_dir(&histories_dir())
        .expect("the fixtures folder is readable");
    assert!(
        results.len() >= 5,
        "expected the saved fixtures, found {}",
        results.len()
    );
    for (path, result) in &results {
        if let Err(e) = result {
            panic!("{} no longer replays: {e}", path.display());
        }
    }
}

#[test]
fn unchanged_code_replays_a_thousand_times_without_a_false_positive() {
    let replayer = Replayer::new(all_examples());
    let files: Vec<HistoryFile> = std::fs::read_dir(histories_dir())
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| HistoryFile::read(&p).expect("fixture parses"))
        .collect();
    let mut replays = 0;
    while replays < 1000 {
        for f in &files {
            let identity = durable::RunIdentity {
                workflow_id: f.workflow_id.clone(),
                run_id: f.run_id.clone(),
            };
            replayer
                .replay(identity, &f.events)
                .expect("unchanged code replays");
            replays += 1;
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

#[test]
fn bad_history_files_are_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let replayer = Replayer::new(all_examples());
    let good =
        std::fs::read_to_string(histories_dir().join("order-declined.json")).expect("fixture");

    let truncated = write(dir.path(), "truncated.json", &good[..good.len() / 2]);
    let err = replayer.replay_file(&truncated).unwrap_err();
    assert!(matches!(err, ReplayFileError::File(_)), "{err}");
    assert!(
        err.to_string().contains("not a durable history file"),
        "{err}"
    );

    let not_ours = write(dir.path(), "other.json", r#"{"hello": "world"}"#);
    let err = replayer.replay_file(&not_ours).unwrap_err();
    assert!(err.to_string().contains("no \"format\" field"), "{err}");

    // An edited file: the activity renamed at command 3.
    let renamed = write(
        dir.path(),
        "renamed.json",
        &good.replacen("\"process_payment\"", "\"charge_card\"", 1),
    );
    match replayer.replay_file(&renamed) {
        Err(ReplayFileError::Replay {
            source: ReplayError::Nondeterminism { seq, .. },
            report,
            ..
        }) => {
            assert_eq!(seq.0, 3);
            assert!(report.contains("- ") && report.contains("+ "), "{report}");
            assert!(
                report.contains("charge_card") && report.contains("process_payment"),
                "{report}"
            );
        }
        other => panic!("expected a divergence at command 3, got {other:?}"),
    }

    // Event numbers edited so that one repeats.
    let mut file: HistoryFile = HistoryFile::parse(&good, "good").expect("fixture parses");
    file.events[4].id = EventId(4);
    let gap = write(dir.path(), "gap.json", &file.to_json());
    let err = replayer.replay_file(&gap).unwrap_err();
    assert!(err.to_string().contains("skip or repeat"), "{err}");

    // A history of a workflow this binary does not have.
    let other = Replayer::new(approval_example::registry());
    match other.replay_file(&histories_dir().join("order-ok.json")) {
        Err(ReplayFileError::Replay {
            source: ReplayError::UnknownWorkflow { name },
            ..
        }) => {
            assert_eq!(name, "order")
        }
        other => panic!("expected an unknown workflow, got {other:?}"),
    }
}

// --- versioning -------------------------------------------------------------------

/// A step.
#[activity]
async fn step(_ctx: ActivityContext, name: String) -> Result<String, ActivityError> {
    Ok(name)
}

/// Version 1: prepare, wait for "go", finish.
#[workflow(name = "shipping")]
async fn shipping_v1(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let a = ctx.activity::<step>("prepare".into()).await?;
    let _: () = ctx.signal("go").await?;
    let b = ctx.activity::<step>("finish".into()).await?;
    Ok(vec![a, b])
}

/// Version 2 with a patch: new runs also audit after preparing.
#[workflow(name = "shipping")]
async fn shipping_v2_patched(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let mut done = vec![ctx.activity::<step>("prepare".into()).await?];
    if ctx.patched("audit-after-prepare") {
        done.push(ctx.activity::<step>("audit".into()).await?);
    }
    let _: () = ctx.signal("go").await?;
    done.push(ctx.activity::<step>("finish".into()).await?);
    Ok(done)
}

/// Version 2 without the patch: the same change, unguarded.
#[workflow(name = "shipping")]
async fn shipping_v2_unpatched(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let mut done = vec![ctx.activity::<step>("prepare".into()).await?];
    done.push(ctx.activity::<step>("audit".into()).await?);
    let _: () = ctx.signal("go").await?;
    done.push(ctx.activity::<step>("finish".into()).await?);
    Ok(done)
}

fn open(path: &Path) -> SharedStore {
    Arc::new(SqliteStore::open(path, SqliteOptions::default()).expect("open"))
}

async fn with_worker<F, Fut, T>(store: &SharedStore, registry: Registry, f: F) -> T
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let worker = Worker::new(
        store.clone(),
        registry,
        WorkerOptions {
            poll_interval: Duration::from_millis(10),
            ..WorkerOptions::default()
        },
    );
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    let out = f(Client::new(store.clone())).await;
    stop.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the worker stops");
    out
}

async fn wait_until<F: Fn(&[durable::Event]) -> bool>(
    client: &Client,
    id: &str,
    what: &str,
    pred: F,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(h) = client.history(&WorkflowId::from(id)).await
            && pred(&h)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {id}: {what} did not happen in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn steps(history: &[durable::Event]) -> Vec<String> {
    history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityScheduled { input, .. } => input.decode::<String>().ok(),
            _ => None,
        })
        .collect()
}

fn awaiting_go(h: &[durable::Event]) -> bool {
    h.iter()
        .any(|e| matches!(&e.kind, EventKind::SignalAwaited { name, .. } if name == "go"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patched_change_keeps_old_runs_on_the_old_path_and_new_runs_on_the_new() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let v1 = Registry::new().workflow::<shipping_v1>().activity::<step>();
    let v2 = Registry::new()
        .workflow::<shipping_v2_patched>()
        .activity::<step>();

    with_worker(&store, v1, |client| async move {
        client
            .start::<shipping_v1>("old", &())
            .await
            .expect("start");
        wait_until(&client, "old", "waiting for go", awaiting_go).await;
    })
    .await;

    let out = with_worker(&store, v2, |client| async move {
        client
            .signal(&WorkflowId::from("old"), "go", &())
            .await
            .expect("signal");
        let old = client
            .result::<shipping_v2_patched>("old", Some(Duration::from_secs(20)))
            .await
            .expect("the old run completes with the new binary");
        client
            .start::<shipping_v2_patched>("new", &())
            .await
            .expect("start");
        wait_until(&client, "new", "waiting for go", awaiting_go).await;
        client
            .signal(&WorkflowId::from("new"), "go", &())
            .await
            .expect("signal");
        let new = client
            .result::<shipping_v2_patched>("new", Some(Duration::from_secs(20)))
            .await
            .expect("the new run completes");
        (old, new)
    })
    .await;
    assert_eq!(out.0, ["prepare", "finish"]);
    assert_eq!(out.1, ["prepare", "audit", "finish"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_change_without_a_patch_is_caught_and_the_run_is_not_corrupted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let v1 = Registry::new().workflow::<shipping_v1>().activity::<step>();
    let bad = Registry::new()
        .workflow::<shipping_v2_unpatched>()
        .activity::<step>();

    with_worker(&store, v1, |client| async move {
        client
            .start::<shipping_v1>("old", &())
            .await
            .expect("start");
        wait_until(&client, "old", "waiting for go", awaiting_go).await;
    })
    .await;
    let before = Client::new(store.clone())
        .history(&WorkflowId::from("old"))
        .await
        .expect("history");

    // The deploy gate: replaying the open run against the new code reports it.
    let identity = {
        let info = Client::new(store.clone())
            .status(&WorkflowId::from("old"))
            .await
            .expect("status");
        durable::RunIdentity {
            workflow_id: info.workflow_id,
            run_id: info.run_id,
        }
    };
    match Replayer::new(bad.clone()).replay(identity, &before) {
        Err(ReplayError::Nondeterminism {
            seq,
            recorded,
            issued,
        }) => {
            assert_eq!(seq.0, 2);
            assert_eq!(recorded.kind, "WaitSignal");
            assert_eq!(issued.kind, "ScheduleActivity");
        }
        other => panic!("expected non-determinism at command 2, got {other:?}"),
    }

    // Deployed anyway: the run is suspended with the reason, its history untouched.
    let info = with_worker(&store, bad, |client| async move {
        client
            .signal(&WorkflowId::from("old"), "go", &())
            .await
            .expect("signal");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = client
                .status(&WorkflowId::from("old"))
                .await
                .expect("status");
            if info.status == RunStatus::Suspended {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "the run was not suspended: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let reason = info.reason.unwrap_or_default();
    assert!(reason.contains("non-determinism at command 2"), "{reason}");
    let after = Client::new(store.clone())
        .history(&WorkflowId::from("old"))
        .await
        .expect("history");
    assert_eq!(
        before, after,
        "nothing may be appended by a diverging activation"
    );

    // Rolling back to the old code and retrying finishes the run.
    store
        .resume(&WorkflowId::from("old"))
        .await
        .expect("resume");
    let v1 = Registry::new().workflow::<shipping_v1>().activity::<step>();
    let out = with_worker(&store, v1, |client| async move {
        client
            .result::<shipping_v1>("old", Some(Duration::from_secs(20)))
            .await
            .expect("completes with the old code")
    })
    .await;
    assert_eq!(out, ["prepare", "finish"]);
}

// --- fix and resume ------------------------------------------------------------------

/// Has a bug: it panics after the first step.
#[workflow(name = "report")]
async fn report_buggy(ctx: WorkflowContext, items: Vec<u32>) -> Result<u32, WorkflowError> {
    ctx.activity::<step>("load".into()).await?;
    let first = items[10]; // the bug: an index out of bounds
    Ok(first)
}

/// The fix.
#[workflow(name = "report")]
async fn report_fixed(ctx: WorkflowContext, items: Vec<u32>) -> Result<u32, WorkflowError> {
    ctx.activity::<step>("load".into()).await?;
    Ok(items.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_suspended_by_a_workflow_bug_resumes_after_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let buggy = Registry::new()
        .workflow::<report_buggy>()
        .activity::<step>();
    let info = with_worker(&store, buggy, |client| async move {
        client
            .start::<report_buggy>("r-1", &vec![1, 2, 3])
            .await
            .expect("start");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = client
                .status(&WorkflowId::from("r-1"))
                .await
                .expect("status");
            if info.status == RunStatus::Suspended {
                return info;
            }
            assert!(Instant::now() < deadline, "not suspended: {info:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let reason = info.reason.unwrap_or_default();
    assert!(
        reason.contains("panicked") && reason.contains("index out of bounds"),
        "{reason}"
    );

    store
        .resume(&WorkflowId::from("r-1"))
        .await
        .expect("resume");
    let fixed = Registry::new()
        .workflow::<report_fixed>()
        .activity::<step>();
    let (sum, history) = with_worker(&store, fixed, |client| async move {
        let sum = client
            .result::<report_fixed>("r-1", Some(Duration::from_secs(20)))
            .await
            .expect("completes after the fix");
        (
            sum,
            client
                .history(&WorkflowId::from("r-1"))
                .await
                .expect("history"),
        )
    })
    .await;
    assert_eq!(sum, 6);
    // The load step ran once: its recorded result was reused.
    assert_eq!(steps(&history), ["load"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reruns_from_the_chosen_event_without_repeating_earlier_steps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("d.db"));
    let registry = order_example::registry();
    let input: order_example::Order = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/order-ok.json"),
        )
        .expect("input"),
    )
    .expect("parses");
    let first = with_worker(&store, registry.clone(), |client| async move {
        client
            .start::<order_example::order>("o-1", &input)
            .await
            .expect("start");
        client
            .result::<order_example::order>("o-1", Some(Duration::from_secs(20)))
            .await
            .expect("ships")
    })
    .await;

    // Bad input writes nothing.
    let runs_before = Client::new(store.clone())
        .list(Default::default())
        .await
        .expect("list")
        .len();
    let err = store
        .reset_run(&WorkflowId::from("o-1"), EventId(999))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has no event 999"), "{err}");
    let err = store
        .reset_run(&WorkflowId::from("nope"), EventId(3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no run with id 'nope'"), "{err}");
    let last = Client::new(store.clone())
        .status(&WorkflowId::from("o-1"))
        .await
        .expect("status")
        .last_event_id;
    let err = store
        .reset_run(&WorkflowId::from("o-1"), last)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ends the run"), "{err}");
    assert_eq!(
        Client::new(store.clone())
            .list(Default::default())
            .await
            .expect("list")
            .len(),
        runs_before
    );

    // Event 5 is check_inventory's completion: validate and inventory are kept.
    let new_run = store
        .reset_run(&WorkflowId::from("o-1"), EventId(5))
        .await
        .expect("reset");
    let (second, history) = with_worker(&store, registry, |client| async move {
        let out = client
            .result::<order_example::order>("o-1", Some(Duration::from_secs(20)))
            .await
            .expect("the reset run ships");
        (
            out,
            client
                .history(&WorkflowId::from("o-1"))
                .await
                .expect("history"),
        )
    })
    .await;
    let info = Client::new(store.clone())
        .status(&WorkflowId::from("o-1"))
        .await
        .expect("status");
    assert_eq!(info.run_id, new_run.run_id);
    assert_ne!(
        first.transaction_id, second.transaction_id,
        "a new run charges under its own key"
    );
    // Only the steps after event 5 were executed again (each once).
    let completed_attempts: Vec<u32> = history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityCompleted { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(completed_attempts.len(), 6);
    assert!(history[..5].iter().all(|e| e.time_ms <= history[4].time_ms));
}

/// The saved run that passed its execution timeout (`RunTimedOut`, then `RunFailed`)
/// replays to the same failure, with the code stopped where it waited.
#[test]
fn a_saved_execution_timeout_replays_to_its_recorded_failure() {
    let report = Replayer::new(all_examples())
        .replay_file(&histories_dir().join("approval-timed-out.json"))
        .expect("the fixture replays");
    match report.outcome {
        durable::ReplayOutcome::Failed(error) => {
            assert_eq!(error.kind(), "ExecutionTimeout");
            assert_eq!(error.message(), "execution timeout of 1s exceeded");
        }
        other => panic!("expected the recorded failure, got {other:?}"),
    }
}

/// The saved run that continued as new replays to its recorded continue (the next run's
/// input, and the signals handed on, as recorded); the same history with another input
/// to continue with is a `DifferentOutcome` divergence at the last event, with a report.
#[test]
fn a_saved_continue_as_new_replays_and_a_changed_input_diverges() {
    let path = histories_dir().join("subscription-continued.json");
    let replayer = Replayer::new(all_examples());
    let report = replayer.replay_file(&path).expect("the fixture replays");
    let next = match report.outcome {
        durable::ReplayOutcome::ContinuedAsNew(next) => next,
        other => panic!("expected the recorded continue, got {other:?}"),
    };
    let input: subscription_example::Subscription = next.input.decode().expect("decodes");
    assert_eq!(input.so_far.periods_billed, 2);
    assert_eq!(input.so_far.runs, 1);

    let mut file = HistoryFile::read(&path).expect("fixture parses");
    let last = file.events.last_mut().expect("events");
    let EventKind::RunContinuedAsNew { input, .. } = &mut last.kind else {
        panic!(
            "the fixture ends with RunContinuedAsNew, not {:?}",
            last.kind
        );
    };
    let mut changed: subscription_example::Subscription = input.decode().expect("decodes");
    changed.so_far.periods_billed = 99;
    *input = durable::Payload::encode(&changed).expect("encodes");
    let identity = durable::RunIdentity {
        workflow_id: file.workflow_id.clone(),
        run_id: file.run_id.clone(),
    };
    let err = replayer
        .replay(identity, &file.events)
        .expect_err("a different input to continue with diverges");
    match &err {
        ReplayError::DifferentOutcome {
            event,
            recorded,
            code,
        } => {
            assert_eq!(event.0, 17);
            assert!(recorded.starts_with("continued as new"), "{recorded}");
            assert!(code.starts_with("continued as new"), "{code}");
            assert_ne!(recorded, code);
        }
        other => panic!("expected DifferentOutcome, got {other:?}"),
    }
    let report = durable::divergence_report(&file.events, &err);
    assert!(report.contains("-    17  RunContinuedAsNew"), "{report}");
    assert!(report.contains("(the code continued as new"), "{report}");
}

/// The report workflow, changed to wait before compiling: runs started by a schedule
/// under the old code must not replay with it.
#[workflow(name = "report")]
async fn report_with_a_delay(
    ctx: WorkflowContext,
    request: schedule_example::ReportRequest,
) -> Result<String, WorkflowError> {
    ctx.sleep(Duration::from_secs(1)).await;
    Ok(request.region)
}

/// A run a schedule started (`report-scheduled.json`, workflow id `<schedule>@<tick>`)
/// replays to its recorded output with today's code, and a changed step is caught at
/// its command.
#[test]
fn a_saved_scheduled_run_replays_and_a_changed_step_is_caught() {
    let path = histories_dir().join("report-scheduled.json");
    let report = Replayer::new(schedule_example::registry())
        .replay_file(&path)
        .expect("the fixture replays");
    match report.outcome {
        durable::ReplayOutcome::Completed(output) => {
            let text: String = output.decode().expect("a string");
            assert!(text.starts_with("report for eu at "), "{text}");
        }
        other => panic!("expected the recorded output, got {other:?}"),
    }
    let file = HistoryFile::parse(
        &std::fs::read_to_string(&path).expect("fixture"),
        "report-scheduled",
    )
    .expect("fixture parses");
    assert!(
        file.workflow_id.as_str().starts_with("report-eu@2026-"),
        "a scheduled run's id names its schedule and tick: {}",
        file.workflow_id
    );
    let changed = Replayer::new(Registry::new().workflow::<report_with_a_delay>());
    match changed.replay_file(&path) {
        Err(ReplayFileError::Replay {
            source: ReplayError::Nondeterminism { seq, .. },
            ..
        }) => assert_eq!(seq.0, 1),
        other => panic!("expected a divergence at command 1, got {other:?}"),
    }
}

// --- child runs -----------------------------------------------------------------------

/// The fan-out batch as a careless later version writes it: every part's work time is
/// doubled, so each child starts with a different input.
#[workflow(name = "batch")]
async fn batch_doubled(
    ctx: WorkflowContext,
    batch: fan_out_example::Batch,
) -> Result<fan_out_example::BatchResult, WorkflowError> {
    let children = (1..=batch.parts).map(|index| {
        ctx.child::<fan_out_example::make_part>(fan_out_example::Part {
            batch_id: batch.batch_id.clone(),
            index,
            work_ms: batch.work_ms * 2,
            defective: batch.fail_part == Some(index),
        })
        .workflow_id(format!("{}/part-{index}", ctx.workflow_id()))
    });
    let made = futures::future::try_join_all(children).await?;
    Ok(fan_out_example::BatchResult {
        batch_id: batch.batch_id,
        made,
        cancelled: Vec::new(),
    })
}

/// The saved batch histories (fan-out, a failed child, a child cancelled on its own)
/// replay to their recorded outcomes; code that starts its children with another input
/// is caught at the first child, with both sides in the report.
#[test]
fn saved_fan_out_histories_replay_and_a_changed_child_start_is_caught() {
    let replayer = Replayer::new(fan_out_example::registry());
    let ok = replayer
        .replay_file(&histories_dir().join("batch-ok.json"))
        .expect("the fan-out replays");
    assert!(matches!(ok.outcome, ReplayOutcome::Completed(_)), "{ok:?}");
    let defect = replayer
        .replay_file(&histories_dir().join("batch-part-defect.json"))
        .expect("the failed child replays");
    match defect.outcome {
        ReplayOutcome::Failed(e) => assert_eq!(e.kind(), "PartDefect"),
        other => panic!("expected the child's failure, got {other:?}"),
    }
    let cancelled = replayer
        .replay_file(&histories_dir().join("batch-part-cancelled.json"))
        .expect("the cancelled child replays");
    match cancelled.outcome {
        ReplayOutcome::Completed(p) => {
            let r: fan_out_example::BatchResult = p.decode().expect("a batch result");
            assert_eq!(r.cancelled, [1]);
        }
        other => panic!("expected a completed batch, got {other:?}"),
    }

    let changed = Replayer::new(
        Registry::new()
            .workflow::<batch_doubled>()
            .workflow::<fan_out_example::make_part>(),
    );
    match changed.replay_file(&histories_dir().join("batch-ok.json")) {
        Err(ReplayFileError::Replay {
            source:
                ReplayError::Nondeterminism {
                    seq,
                    recorded,
                    issued,
                },
            report,
            ..
        }) => {
            assert_eq!(seq.0, 1);
            assert_eq!(recorded.kind, "StartChild");
            assert_eq!(recorded.name, "make_part");
            assert_ne!(recorded.input_digest, issued.input_digest);
            assert!(report.contains("- ") && report.contains("+ "), "{report}");
        }
        other => panic!("expected a divergence at the first child, got {other:?}"),
    }
}
