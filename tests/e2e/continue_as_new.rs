//! Continue-as-new end to end, with the subscription example: signals sent while the
//! chain of runs switches are each applied once, workers SIGKILLed across switches bill
//! every period once, and the CLI shows the chain.

use crate::subscription_example::{self, Subscription, Summary, subscription};
use crate::support::{ChildGuard, subscription as sub_cli, temp_dir, wait_until};
use crate::workflows::{Running, open};
use durable::prelude::*;
use durable::store::{RunFilter, RunInfo, RunStatus, SharedStore};
use durable::{EventId, EventKind, Replayer};
use futures::FutureExt;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Every run of `id`, oldest first, with its history.
async fn chain(store: &SharedStore, id: &str) -> Vec<(RunInfo, Vec<durable::Event>)> {
    let mut runs = store
        .list_runs(RunFilter {
            workflow_id: Some(WorkflowId::from(id)),
            ..RunFilter::default()
        })
        .await
        .expect("list the runs of the workflow id");
    runs.reverse();
    let mut out = Vec::new();
    for run in runs {
        let history = store
            .read_history(run.key, EventId(0))
            .await
            .expect("read_history");
        out.push((run, history));
    }
    out
}

/// Checks the links of a chain: every run but the last continued as new into the next
/// one, which starts with the input the continue recorded.
fn assert_linked(chain: &[(RunInfo, Vec<durable::Event>)]) {
    for pair in chain.windows(2) {
        let ((old, old_history), (new, new_history)) = (&pair[0], &pair[1]);
        assert_eq!(old.status, RunStatus::Continued, "{old:?}");
        match (
            old_history.last().map(|e| &e.kind),
            new_history.first().map(|e| &e.kind),
        ) {
            (
                Some(EventKind::RunContinuedAsNew { input, run_id, .. }),
                Some(EventKind::RunStarted { input: started, .. }),
            ) => {
                assert_eq!(run_id, &new.run_id, "the continue names the next run");
                assert_eq!(
                    input, started,
                    "the next run starts with the recorded input"
                );
            }
            other => panic!(
                "run {} does not link to run {}: {other:?}",
                old.run_id, new.run_id
            ),
        }
    }
}

/// The `credit` amounts recorded over the whole chain, sorted: each received signal,
/// less those a run handed on to the next one without taking them (recorded again
/// there).
fn credits_applied(chain: &[(RunInfo, Vec<durable::Event>)]) -> Vec<u64> {
    let mut received = Vec::new();
    let mut handed_on = Vec::new();
    for e in chain.iter().flat_map(|(_, h)| h.iter()) {
        match &e.kind {
            EventKind::SignalReceived { name, payload } if name == "credit" => {
                received.push(payload.decode::<u64>().expect("a credit decodes"));
            }
            EventKind::RunContinuedAsNew { signals, .. } => {
                handed_on.extend(
                    signals
                        .iter()
                        .filter(|(name, _)| name == "credit")
                        .map(|(_, p)| p.decode::<u64>().expect("a credit decodes")),
                );
            }
            _ => {}
        }
    }
    for credit in handed_on {
        let at = received
            .iter()
            .position(|c| *c == credit)
            .expect("a handed-on credit was received first");
        received.remove(at);
    }
    received.sort_unstable();
    received
}

/// A client sends 120 credits from two tasks at once while the subscription continues as
/// new every two 10 ms periods: each credit lands in exactly one run's history, the total
/// the chain computed is their sum, and `Client::result` follows the chain to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_sent_while_runs_switch_are_each_applied_once() {
    let dir = temp_dir();
    credits_while_runs_switch(open(&dir.path().join("sub.db"))).await;
}

/// The same on PostgreSQL, in a schema of its own (dropped after); skipped, saying why,
/// without `DURABLE_TEST_DATABASE_URL`.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_sent_while_runs_switch_are_each_applied_once_on_postgres() {
    let Ok(url) = std::env::var("DURABLE_TEST_DATABASE_URL") else {
        println!(
            "skipping the PostgreSQL continue-as-new test: DURABLE_TEST_DATABASE_URL is not set"
        );
        return;
    };
    let schema = format!("can_{}", durable::RunId::generate().0.replace('-', "_"));
    let options = durable::PostgresOptions {
        schema: Some(schema.clone()),
        ..durable::PostgresOptions::default()
    };
    let store = match durable::PostgresStore::connect(&url, options).await {
        Ok(s) => s,
        Err(e) => {
            println!("skipping the PostgreSQL continue-as-new test: {e}");
            return;
        }
    };
    let outcome =
        std::panic::AssertUnwindSafe(credits_while_runs_switch(std::sync::Arc::new(store)))
            .catch_unwind()
            .await;
    if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        let driver = tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
        drop(client);
        let _ = driver.await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn credits_while_runs_switch(store: SharedStore) {
    let worker = Running::start(store.clone(), subscription_example::registry());
    let client = Client::new(store.clone());
    let id = WorkflowId::from("sub-signals");
    client
        .start::<subscription>(
            "sub-signals",
            &Subscription {
                customer: "ada".into(),
                plan_cents: 100,
                period_ms: 10,
                periods_per_run: 2,
                max_periods: None,
                so_far: Summary::default(),
            },
        )
        .await
        .expect("start");
    let senders: Vec<_> = [(1u64, 61u64), (61, 121)]
        .into_iter()
        .map(|(from, to)| {
            let client = client.clone();
            let id = id.clone();
            tokio::spawn(async move {
                for cents in from..to {
                    client
                        .signal(&id, "credit", &cents)
                        .await
                        .expect("a credit is accepted by the current run");
                    if cents % 8 == 0 {
                        tokio::time::sleep(Duration::from_millis(7)).await;
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.await.expect("a sender task");
    }
    // Let the chain move on a few more runs before it is cancelled.
    let runs_now = chain(&store, "sub-signals").await.len();
    wait_until_async(Duration::from_secs(30), "three more runs", || {
        let store = store.clone();
        async move { chain(&store, "sub-signals").await.len() >= runs_now + 3 }
    })
    .await;
    client
        .signal(&id, "cancel", &"test over".to_owned())
        .await
        .expect("cancel signal");
    let summary = client
        .result::<subscription>("sub-signals", Some(Duration::from_secs(30)))
        .await
        .expect("the chain ends with the last run's output");
    let expected: u64 = (1..121).sum();
    assert_eq!(summary.credits_received, expected, "{summary:?}");
    assert_eq!(summary.cancelled.as_deref(), Some("test over"));

    let runs = chain(&store, "sub-signals").await;
    assert!(
        runs.len() >= 4,
        "the run continued as new: {} runs",
        runs.len()
    );
    assert_eq!(
        usize::try_from(summary.runs).expect("small"),
        runs.len(),
        "the summary counted every run of the chain"
    );
    assert_eq!(
        runs.last().map(|(r, _)| r.status),
        Some(RunStatus::Completed)
    );
    assert_linked(&runs);
    let applied = credits_applied(&runs);
    assert_eq!(
        applied,
        (1..121).collect::<Vec<_>>(),
        "each credit recorded once, in one run"
    );
    // Every run's history replays with the example's code.
    let replayer = Replayer::new(subscription_example::registry());
    for (run, history) in &runs {
        let identity = durable::RunIdentity {
            workflow_id: run.workflow_id.clone(),
            run_id: run.run_id.clone(),
        };
        let report = replayer.replay(identity, history).expect("replays");
        let continued = matches!(report.outcome, durable::ReplayOutcome::ContinuedAsNew(_));
        assert_eq!(continued, run.status == RunStatus::Continued, "{report:?}");
    }
    worker.stop().await;
}

async fn wait_until_async<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The run ids of `id`'s chain, newest first, as `list --id` prints them.
fn listed_runs(db: &Path, id: &str) -> Vec<serde_json::Value> {
    sub_cli(db, &["list", "--id", id, "--json"])
        .run()
        .json_lines()
}

fn spawn_worker(db: &Path, log: &Path) -> ChildGuard {
    sub_cli(db, &["worker", "--poll-ms", "20", "--lease-ms", "1000"]).spawn(log)
}

/// Worker processes are SIGKILLed three times while a subscription continues as new every
/// two periods: the next worker takes over, every period is billed once (one recorded
/// charge per period, across the chain), credits sent through the CLI all along from
/// another thread are applied once, and `result --wait` prints the last run's summary. Then the CLI shows
/// the chain: `list --id`, `status` (continued from/as), `history --run`, and clear errors
/// for a run id that is not there.
#[test]
fn workers_killed_across_switches_bill_every_period_once() {
    let dir = temp_dir();
    let db = dir.path().join("sub.db");
    let log = dir.path().join("workers.log");
    let input = r#"{"customer":"kim","plan_cents":500,"period_ms":80,"periods_per_run":2,"max_periods":16}"#;
    let out = sub_cli(
        &db,
        &[
            "start",
            "subscription",
            "--id",
            "sub-kill",
            "--input",
            input,
        ],
    )
    .run();
    assert_eq!(out.ok().trim(), "sub-kill");
    // Credits through the CLI all along, from another thread; a credit refused because
    // the subscription had ended by then is not counted.
    let sender = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut accepted = 0u64;
            for cents in 1..=25u64 {
                let out = sub_cli(
                    &db,
                    &[
                        "signal",
                        "sub-kill",
                        "credit",
                        "--payload",
                        &cents.to_string(),
                    ],
                )
                .run();
                match out.code {
                    Some(0) => accepted += cents,
                    _ => assert!(
                        out.stderr.contains("finished"),
                        "a credit was refused for another reason: {}",
                        out.stderr
                    ),
                }
                std::thread::sleep(Duration::from_millis(30));
            }
            accepted
        })
    };
    let mut credits = 0u64;
    for kill in 0..3 {
        let mut w = spawn_worker(&db, &log);
        let before = listed_runs(&db, "sub-kill").len();
        wait_until(
            Duration::from_secs(30),
            "the chain to grow by a run",
            || {
                let n = listed_runs(&db, "sub-kill").len();
                if n > before {
                    Ok(())
                } else {
                    Err(format!("{n} run(s)"))
                }
            },
        );
        let cents = 10 * (kill + 1);
        sub_cli(
            &db,
            &[
                "signal",
                "sub-kill",
                "credit",
                "--payload",
                &cents.to_string(),
            ],
        )
        .run()
        .ok();
        credits += cents;
        std::thread::sleep(Duration::from_millis(40 * kill));
        w.assert_running();
        w.kill();
    }
    let _last = spawn_worker(&db, &log);
    credits += sender.join().expect("the credit sender");
    let out = sub_cli(&db, &["result", "sub-kill", "--wait", "--timeout", "60"])
        .timeout(Duration::from_secs(90))
        .run();
    let summary: Summary =
        serde_json::from_str(out.ok().trim()).expect("result prints the summary");
    assert_eq!(summary.periods_billed, 16, "{summary:?}");
    assert_eq!(summary.runs, 8, "two periods per run");
    assert_eq!(summary.credits_received, credits);
    assert_eq!(
        summary.cents_billed + (credits - summary.credit_left),
        16 * 500,
        "the credits used came off the bills"
    );

    // The store's view: a linked chain, each period charged once.
    let store = open(&db);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let runs = runtime.block_on(chain(&store, "sub-kill"));
    assert_eq!(runs.len(), 8);
    assert_linked(&runs);
    let mut charged: BTreeMap<u32, usize> = BTreeMap::new();
    for (_, history) in &runs {
        let mut periods = BTreeMap::new();
        for e in history {
            match &e.kind {
                EventKind::ActivityScheduled { seq, input, .. } => {
                    let bill: subscription_example::Bill = input.decode().expect("a bill");
                    periods.insert(*seq, bill.period);
                }
                EventKind::ActivityCompleted { seq, .. } => {
                    *charged.entry(periods[seq]).or_default() += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!(
        charged,
        (1..=16).map(|p| (p, 1)).collect::<BTreeMap<_, _>>(),
        "every period recorded as charged exactly once"
    );
    assert_eq!(
        credits_applied(&runs).iter().sum::<u64>(),
        credits,
        "every accepted credit recorded once"
    );

    // The CLI shows the chain.
    let listed = listed_runs(&db, "sub-kill");
    assert_eq!(listed.len(), 8);
    assert_eq!(listed[0]["status"], "completed");
    assert!(listed[1..].iter().all(|r| r["status"] == "continued"));
    let continued = sub_cli(&db, &["list", "--status", "continued", "--json"])
        .run()
        .json_lines();
    assert_eq!(continued.len(), 7);
    let newest = listed[0]["run_id"].as_str().expect("a run id").to_owned();
    let second = listed[1]["run_id"].as_str().expect("a run id").to_owned();
    let third = listed[2]["run_id"].as_str().expect("a run id").to_owned();
    let status = sub_cli(&db, &["status", "sub-kill"]).run();
    assert!(
        status
            .ok()
            .contains(&format!("continued from run {second}")),
        "{}",
        status.stdout
    );
    let status = sub_cli(&db, &["status", "sub-kill", "--run", &second]).run();
    let text = status.ok();
    assert!(text.contains("status:       continued"), "{text}");
    assert!(
        text.contains(&format!("continued from run {third}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("continued as run {newest}")),
        "{text}"
    );
    let status = sub_cli(&db, &["status", "sub-kill", "--run", &second, "--json"]).run();
    let v: serde_json::Value = serde_json::from_str(status.ok().trim()).expect("JSON");
    assert_eq!(v["continued_as"], newest.as_str());
    assert_eq!(v["continued_from"], third.as_str());
    let history = sub_cli(&db, &["history", "sub-kill", "--run", &second, "--json"]).run();
    let events = history.json_lines();
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "RunContinuedAsNew");
    assert_eq!(last["next_run_id"], newest.as_str());
    assert_eq!(last["payload"]["so_far"]["periods_billed"], 14);
    let history = sub_cli(&db, &["history", "sub-kill"]).run();
    assert!(
        history
            .ok()
            .lines()
            .next()
            .is_some_and(|l| l.contains("RunStarted"))
    );
    // A continued run exported replays with the binary's code.
    let file = dir.path().join("continued.json");
    sub_cli(
        &db,
        &[
            "history",
            "sub-kill",
            "--run",
            &second,
            "--export",
            file.to_str().expect("utf-8"),
        ],
    )
    .run()
    .ok();
    let replay = sub_cli(&db, &["replay", "--file", file.to_str().expect("utf-8")]).run();
    assert!(
        replay
            .ok()
            .contains("ends continued as new (subscription), as recorded"),
        "{}",
        replay.stdout
    );

    // Errors: one line, exit 2, nothing written.
    sub_cli(&db, &["history", "sub-kill", "--run", "no-such-run"])
        .run()
        .expect_one_error_line(2, "has no run 'no-such-run'");
    sub_cli(&db, &["status", "nobody", "--run", "x"])
        .run()
        .expect_one_error_line(2, "nobody");
    sub_cli(&db, &["list", "--status", "paused"])
        .run()
        .expect_one_error_line(2, "continued");
    sub_cli(&db, &["signal", "sub-kill", "credit", "--payload", "5"])
        .run()
        .expect_one_error_line(2, "sub-kill");
}

#[workflow]
async fn hands_over(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    ctx.continue_as_new::<takes_over>(n * 2).await?;
    unreachable!("continue_as_new never resolves to Ok")
}

#[workflow]
async fn takes_over(_ctx: WorkflowContext, n: u32) -> Result<String, WorkflowError> {
    Ok(format!("took over with {n}"))
}

/// A run may continue as another workflow. A worker that does not have that workflow
/// suspends the run with the reason instead of starting a run nobody can activate; once
/// a worker that has it retries the run, the chain ends with the other workflow's
/// output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuing_as_another_workflow_needs_it_registered() {
    let dir = temp_dir();
    let store = open(&dir.path().join("other.db"));
    let client = Client::new(store.clone());
    let id = WorkflowId::from("hand-over");
    client
        .start::<hands_over>("hand-over", &21)
        .await
        .expect("start");
    let partial = Running::start(store.clone(), Registry::new().workflow::<hands_over>());
    wait_until_async(Duration::from_secs(20), "the run to be suspended", || {
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .status(&id)
                .await
                .is_ok_and(|r| r.status == RunStatus::Suspended)
        }
    })
    .await;
    let info = client.status(&id).await.expect("status");
    assert!(
        info.reason
            .as_deref()
            .is_some_and(|r| r.contains("\"takes_over\" is not registered")),
        "{info:?}"
    );
    assert_eq!(
        chain(&store, "hand-over").await.len(),
        1,
        "no run was started"
    );
    partial.stop().await;

    let full = Running::start(
        store.clone(),
        Registry::new()
            .workflow::<hands_over>()
            .workflow::<takes_over>(),
    );
    store.resume(&id).await.expect("retry the suspended run");
    let out = client
        .result::<takes_over>("hand-over", Some(Duration::from_secs(20)))
        .await
        .expect("the chain ends with takes_over's output");
    assert_eq!(out, "took over with 42");
    let runs = chain(&store, "hand-over").await;
    assert_eq!(
        runs.iter()
            .map(|(r, _)| (r.workflow.as_str(), r.status))
            .collect::<Vec<_>>(),
        [
            ("hands_over", RunStatus::Continued),
            ("takes_over", RunStatus::Completed)
        ]
    );
    assert_linked(&runs);
    full.stop().await;
}
