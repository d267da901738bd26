//! One test per engine bug the reliability suite found, each small and deterministic.

use crate::inproc::{InProcClient, LedgerGuard, RunningWorker};
use crate::support::{self, TestDir};
use crate::workload::Job;
use durable::store::{RunStatus, SharedStore};
use durable::{SqliteOptions, SqliteStore, WorkerOptions, WorkflowId};
use std::sync::Arc;
use std::time::Duration;

/// Bug: a timer started in the first activation of a run actor (every new run whose
/// code sleeps before anything else, and every restored run that starts one) was armed
/// twice: once as a new timer, once as a pending one of the restored run. Its second
/// wake-up applied `TimerFired` again, the activation failed as malformed history, and
/// the run was suspended. Fixed in `durable-worker/src/worker/run.rs`: the actor keeps
/// the set of armed timers and drops any wake-up for a timer not armed.
#[test]
fn a_timer_started_in_the_first_activation_fires_once() {
    let _serial = support::serial();
    let dir = TestDir::new("regression-timer");
    let db = dir.path().join("timer.db");
    let _ledger = LedgerGuard::set(&dir.path().join("ledger.db"));
    let rt = support::runtime();
    rt.block_on(async {
        let store: SharedStore =
            Arc::new(SqliteStore::open(&db, SqliteOptions::default()).expect("the store opens"));
        let worker = RunningWorker::start(
            store.clone(),
            WorkerOptions {
                poll_interval: Duration::from_millis(10),
                ..WorkerOptions::default()
            },
        );
        let mut client = InProcClient::new(store.clone(), 1);
        for i in 0..5 {
            client
                .start(&Job {
                    id: format!("sleeps-first-{i}"),
                    workflow: "timers",
                    input: serde_json::json!({ "x": i, "delays_ms": [20, 10] }),
                    votes: 0,
                })
                .await;
        }
        let left = crate::inproc::drive_to_completion(
            &mut client,
            store.as_ref(),
            Duration::from_secs(20),
        )
        .await;
        worker.stop().await.expect("the worker stops");
        assert!(left.is_empty(), "runs still running: {left:?}");
        let runs = store
            .list_runs(Default::default())
            .await
            .expect("the store reads");
        assert_eq!(runs.len(), 5);
        for r in runs {
            assert_eq!(
                r.status,
                RunStatus::Completed,
                "run '{}' ended {} ({:?})",
                r.workflow_id,
                r.status,
                r.reason
            );
        }
        let info = store
            .find_run(&WorkflowId("sleeps-first-0".into()))
            .await
            .expect("the store reads")
            .expect("the run exists");
        assert_eq!(info.status, RunStatus::Completed);
    });
}

/// Runs three runs of `workflow` through a worker whose store answers as `script` sets
/// it up (3 scripted ambiguous answers), and checks that none is left stranded.
fn three_runs_survive_scripted_ambiguity(
    name: &str,
    workflow: &'static str,
    input: fn(u64) -> serde_json::Value,
    script: fn(&crate::fault_store::FaultStore<SqliteStore>),
) {
    let _serial = support::serial();
    let dir = TestDir::new(&format!("regression-{name}"));
    let db = dir.path().join(format!("{name}.db"));
    let _ledger = LedgerGuard::set(&dir.path().join("ledger.db"));
    let rt = support::runtime();
    rt.block_on(async {
        let inner =
            Arc::new(SqliteStore::open(&db, SqliteOptions::default()).expect("the store opens"));
        let faulty = Arc::new(crate::fault_store::FaultStore::new(
            inner.clone(),
            1,
            0,
            Duration::ZERO,
        ));
        script(&faulty);
        let worker = RunningWorker::start(
            faulty.clone() as SharedStore,
            WorkerOptions {
                lease: Duration::from_millis(600),
                poll_interval: Duration::from_millis(10),
                ..WorkerOptions::default()
            },
        );
        let mut client = InProcClient::new(inner.clone() as SharedStore, 1);
        for i in 0..3 {
            client
                .start(&Job {
                    id: format!("{name}-{i}"),
                    workflow,
                    input: input(i),
                    votes: 0,
                })
                .await;
        }
        let left = crate::inproc::drive_to_completion(
            &mut client,
            inner.as_ref(),
            Duration::from_secs(15),
        )
        .await;
        worker.stop().await.expect("the worker stops");
        assert_eq!(faulty.counts().get(crate::fault_store::Fault::Ambiguous), 3);
        assert!(left.is_empty(), "runs stranded ({name}): {left:?}");
    });
    let (report, _) = crate::check::check_sqlite(&db).expect("the database reads");
    report.assert_clean(name);
}

/// An activation whose commit succeeded but reported an error (an fsync error after the
/// commit frame, for example) must not strand the local activity attempts it created:
/// they are leased to this worker, which will never run them, and its lease renewal
/// kept them leased forever, so the run never moved again.
#[test]
fn an_ambiguous_commit_does_not_strand_its_activities() {
    three_runs_survive_scripted_ambiguity(
        "ambiguous-commit",
        "sequential",
        |i| serde_json::json!({ "x": i, "n": 3 }),
        |faulty| faulty.script_ambiguous_local_commits(3),
    );
}

/// A local attempt that outlived its lease while another attempt of the same activity
/// finished and was recorded through the inbox still delivered its result to the run
/// actor, which applied it as a second answer to the command: the activation failed as
/// malformed history and the run was suspended. Fixed in
/// `durable-worker/src/worker/run.rs`: the actor applies a local result only for a local
/// attempt still pending, and hands any other to the store, which refuses it.
#[test]
fn a_superseded_local_attempt_does_not_answer_its_command_twice() {
    let _serial = support::serial();
    let dir = TestDir::new("regression-superseded");
    let db = dir.path().join("superseded.db");
    let _ledger = LedgerGuard::set(&dir.path().join("ledger.db"));
    let rt = support::runtime();
    rt.block_on(async {
        let inner =
            Arc::new(SqliteStore::open(&db, SqliteOptions::default()).expect("the store opens"));
        let faulty = Arc::new(crate::fault_store::FaultStore::new(
            inner.clone(),
            1,
            0,
            Duration::ZERO,
        ));
        let worker = RunningWorker::start(
            faulty.clone() as SharedStore,
            WorkerOptions {
                lease: Duration::from_millis(150),
                poll_interval: Duration::from_millis(10),
                ..WorkerOptions::default()
            },
        );
        let mut client = InProcClient::new(inner.clone() as SharedStore, 1);
        // The first nap's first attempt sleeps 800 ms; renewals fail for 400 ms, so its
        // lease runs out, a second attempt finishes at once, the run goes on to wait on a
        // timer, and then the first attempt's result arrives.
        faulty.fail_renewals(true);
        client
            .start(&Job {
                id: "napper".into(),
                workflow: "napper",
                input: serde_json::json!({ "x": 5, "first_ms": 800 }),
                votes: 0,
            })
            .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        faulty.fail_renewals(false);
        let left = crate::inproc::drive_to_completion(
            &mut client,
            inner.as_ref(),
            Duration::from_secs(15),
        )
        .await;
        worker.stop().await.expect("the worker stops");
        assert!(left.is_empty(), "the run did not finish: {left:?}");
    });
    let (report, runs) = crate::check::check_sqlite(&db).expect("the database reads");
    report.assert_clean("after a superseded local attempt");
    assert_eq!(
        runs[0].info.status,
        RunStatus::Completed,
        "{:?}",
        runs[0].info.reason
    );
    let attempts: i64 = crate::ledger::open(&dir.path().join("ledger.db"))
        .expect("the ledger opens")
        .query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
        .expect("the ledger reads");
    assert!(
        attempts >= 3,
        "the first nap ran only once: the lease never ran out"
    );
}

/// Bug: a crash counted against every ready run the dead worker held, so a run that
/// aborts the process in each activation got the innocent runs claimed with it
/// suspended too (27 of 28 suspended runs were bystanders in the reproduction). Fixed in
/// `durable-worker/src/worker/run.rs`: runs claimed with failures are on probation and
/// are activated in ever smaller groups (alone after three failures), the others handed
/// back meanwhile, so only the run that brings the process down reaches the limit.
#[test]
fn a_process_aborting_run_does_not_get_its_bystanders_suspended() {
    let _serial = support::serial();
    let dir = TestDir::new("regression-bystanders");
    let db = dir.path().join("abort.db");
    let ledger = dir.path().join("ledger.db");
    let start = |workflow: &str, id: &str, input: String| {
        let out = support::chaos(&db, &ledger)
            .args(["start", workflow, "--id", id, "--input", &input])
            .output()
            .expect("chaos-worker runs");
        assert!(
            out.status.success(),
            "start {id} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for i in 0..20 {
        start(
            "sequential",
            &format!("s{i}"),
            format!(r#"{{"x":{i},"n":4}}"#),
        );
    }
    start("aborter", "poison", r#"{"x":1,"spin_ms":0}"#.to_owned());
    for i in 0..20 {
        start(
            "sequential",
            &format!("t{i}"),
            format!(r#"{{"x":{i},"n":4}}"#),
        );
    }
    let mut aborts = 0;
    let mut settled = false;
    for round in 0..12 {
        let log = dir.path().join(format!("worker-{round}.log"));
        let mut worker = support::WorkerProc::spawn(
            support::chaos(&db, &ledger),
            &["--lease-ms", "200", "--poll-ms", "20"],
            &log,
        );
        // The worker either aborts on the poison run or, once that is suspended,
        // finishes the rest and idles.
        let outcome = support::wait_until(Duration::from_secs(15), || {
            if let Some(status) = worker.try_wait() {
                return Ok(Some(status));
            }
            let counts = support::status_counts(&db);
            let running = counts.get("running").copied().unwrap_or(0);
            if running == 0 {
                Ok(None)
            } else {
                Err(format!("{counts:?}"))
            }
        });
        match outcome {
            Ok(Some(status)) => {
                assert_eq!(
                    support::exit_signal(Some(status)),
                    Some(6),
                    "the worker ended {} instead of aborting: {}",
                    support::describe_exit(Some(status)),
                    worker.log_tail(20)
                );
                aborts += 1;
            }
            Ok(None) => {
                settled = true;
                break;
            }
            Err(state) => panic!("round {round}: runs neither finished nor aborted: {state}"),
        }
    }
    assert!(
        settled,
        "the poison run was never suspended after {aborts} aborts"
    );
    let conn = support::read_only(&db);
    let mut stmt = conn
        .prepare("SELECT workflow_id, status, activation_failures FROM runs ORDER BY workflow_id")
        .expect("the runs table exists");
    let rows: Vec<(String, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("the query runs")
        .collect::<Result<_, _>>()
        .expect("the rows read");
    assert_eq!(rows.len(), 41);
    for (id, status, failures) in &rows {
        if id == "poison" {
            assert_eq!(status, "suspended", "the poison run ended {status}");
        } else {
            assert_eq!(
                status, "completed",
                "bystander {id} ended {status} with {failures} failures ({aborts} aborts)"
            );
        }
    }
    assert!(
        aborts >= 5,
        "the poison run was suspended after only {aborts} aborts"
    );
}

/// Bug: an activity claim that took attempts but reported an error (its answer lost)
/// left them leased to the worker, which never ran them, while its lease renewal
/// extended every attempt leased to it: the runs waited forever. Fixed in
/// `durable-worker` and both stores: a worker renews only the attempts it runs or holds
/// a result of, so the lost ones expire and are claimed again.
#[test]
fn an_ambiguous_activity_claim_does_not_strand_its_attempts() {
    // A retried attempt is claimed through `claim_activities`; lose the first answers.
    three_runs_survive_scripted_ambiguity(
        "lost-claim",
        "retrying",
        |i| serde_json::json!({ "x": i, "fail_first": 2 }),
        |faulty| faulty.script_ambiguous_claims(3),
    );
}
