//! Routing runs to the workers that can run them: two services (the order and the
//! schedule examples' binaries, with disjoint workflows) share one SQLite file, and
//! neither takes, fails or suspends the other's runs.

use crate::support::{ChildGuard, example_input, example_raw, order, temp_dir, wait_until};
use std::path::Path;
use std::time::Duration;

/// How long the runs of one phase may take on a loaded machine.
const PHASE: Duration = Duration::from_secs(90);

/// `schedule --db <db> <args...>`: the binary that registers only `report`.
fn report_service(db: &Path, args: &[&str]) -> crate::support::OrderCmd {
    let mut all = vec!["--db".to_owned(), db.display().to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    example_raw("schedule", &all)
}

fn start_order(db: &Path, id: &str) {
    let input = example_input("order-ok").to_string();
    let out = order(db, &["start", "order", "--id", id, "--input", &input]).run();
    assert_eq!(out.ok().trim(), id, "start prints the workflow id");
}

fn start_report(db: &Path, id: &str) {
    let out = report_service(
        db,
        &[
            "start",
            "report",
            "--id",
            id,
            "--input",
            r#"{"region":"eu"}"#,
        ],
    )
    .run();
    assert_eq!(out.ok().trim(), id, "start prints the workflow id");
}

/// Every run's workflow id, workflow, status and activation failures, read from the file.
fn runs(db: &Path) -> Vec<(String, String, String, i64)> {
    let conn = rusqlite::Connection::open(db)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()));
    let mut stmt = conn
        .prepare(
            "SELECT workflow_id, workflow, status, activation_failures FROM runs ORDER BY workflow_id",
        )
        .expect("the runs table");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("reading runs")
        .collect::<Result<_, _>>()
        .expect("reading runs")
}

/// Waits until every run of `workflow` completed; any other end fails the test at once.
fn wait_completed(db: &Path, workflow: &str, n: usize, workers: &mut [&mut ChildGuard]) {
    wait_until(PHASE, &format!("the {workflow} runs to complete"), || {
        for w in workers.iter_mut() {
            w.assert_running();
        }
        let all = runs(db);
        let mine: Vec<_> = all.iter().filter(|r| r.1 == workflow).collect();
        if let Some(bad) = mine.iter().find(|r| r.2 != "running" && r.2 != "completed") {
            panic!(
                "run {} ended {} instead of completing: {all:?}",
                bad.0, bad.2
            );
        }
        if mine.len() == n && mine.iter().all(|r| r.2 == "completed") {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    });
}

fn assert_untouched(db: &Path, what: &str) {
    let all = runs(db);
    for (id, workflow, status, failures) in &all {
        assert_eq!(
            *failures, 0,
            "{what}: run {id} ({workflow}) counts activation failures: {all:?}"
        );
        assert_ne!(
            status, "suspended",
            "{what}: run {id} was suspended: {all:?}"
        );
    }
}

#[test]
fn two_services_sharing_a_database_run_only_their_own_workflows() {
    let dir = temp_dir();
    let db = dir.path().join("shared.db");
    let log = dir.path().join("workers.log");
    let orders = ["o-1", "o-2", "o-3"];
    let reports = ["r-1", "r-2", "r-3"];
    for id in orders {
        start_order(&db, id);
    }
    for id in reports {
        start_report(&db, id);
    }

    // The order service alone: it runs its orders and leaves the reports waiting, ready
    // and never tried (before routing it claimed them too, failed each activation with an
    // unknown workflow and, after a few, suspended them).
    let mut order_worker = order(&db, &["worker", "--poll-ms", "20"]).spawn(&log);
    wait_completed(&db, "order", orders.len(), &mut [&mut order_worker]);
    // Give it more polls over the waiting reports.
    std::thread::sleep(Duration::from_millis(500));
    assert_untouched(&db, "with only the order service running");
    let waiting: Vec<_> = runs(&db).into_iter().filter(|r| r.1 == "report").collect();
    assert!(
        waiting.iter().all(|r| r.2 == "running"),
        "the reports wait for their service: {waiting:?}"
    );

    // The report service joins: it runs the reports, and both keep to their own as new
    // runs of each arrive while both poll.
    let mut report_worker = report_service(&db, &["worker", "--poll-ms", "20"]).spawn(&log);
    wait_completed(
        &db,
        "report",
        reports.len(),
        &mut [&mut order_worker, &mut report_worker],
    );
    for i in 4..=6 {
        start_order(&db, &format!("o-{i}"));
        start_report(&db, &format!("r-{i}"));
    }
    wait_completed(
        &db,
        "order",
        6,
        &mut [&mut order_worker, &mut report_worker],
    );
    wait_completed(
        &db,
        "report",
        6,
        &mut [&mut order_worker, &mut report_worker],
    );
    assert_untouched(&db, "with both services running");
    order_worker.kill();
    report_worker.kill();
}

#[test]
fn a_run_on_a_named_task_queue_runs_only_on_a_worker_serving_it() {
    let dir = temp_dir();
    let db = dir.path().join("queues.db");
    let log = dir.path().join("workers.log");
    let input = example_input("order-ok").to_string();

    // Bad input: one error line, exit 2, no run.
    order(
        &db,
        &[
            "start",
            "order",
            "--id",
            "bad",
            "--input",
            &input,
            "--task-queue",
            "",
        ],
    )
    .run()
    .expect_one_error_line(2, "--task-queue");
    assert!(!db.exists(), "a refused start creates no database");

    let out = order(
        &db,
        &[
            "start",
            "order",
            "--id",
            "vip-1",
            "--input",
            &input,
            "--task-queue",
            "vip",
        ],
    )
    .run();
    assert_eq!(out.ok().trim(), "vip-1");
    start_order(&db, "plain-1");

    // A worker of the default queue runs the plain order only.
    let mut general = order(&db, &["worker", "--poll-ms", "20"]).spawn(&log);
    wait_until(PHASE, "the default-queue order to complete", || {
        general.assert_running();
        let all = runs(&db);
        match all.iter().find(|r| r.0 == "plain-1") {
            Some(r) if r.2 == "completed" => Ok(()),
            _ => Err(format!("{all:?}")),
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_untouched(&db, "with only a default-queue worker");
    let status = order(&db, &["status", "vip-1"]).run();
    let shown = status.ok();
    assert!(shown.contains("running"), "vip-1 waits: {shown}");
    assert!(
        shown.contains("task queue:   vip"),
        "status shows the queue: {shown}"
    );
    let listed = order(&db, &["list", "--json"])
        .run()
        .expect_code(0)
        .json_lines();
    let by_id = |id: &str| {
        listed
            .iter()
            .find(|r| r["workflow_id"] == id)
            .unwrap_or_else(|| panic!("list --json has no run {id}: {listed:?}"))
            .clone()
    };
    assert_eq!(by_id("vip-1")["task_queue"], "vip");
    assert_eq!(by_id("vip-1")["status"], "running");
    assert!(
        by_id("plain-1").get("task_queue").is_none(),
        "a run on the default queue shows no queue"
    );

    // A worker serving vip takes it.
    let mut vip = order(&db, &["worker", "--poll-ms", "20", "--task-queue", "vip"]).spawn(&log);
    wait_completed(&db, "order", 2, &mut [&mut general, &mut vip]);
    assert_untouched(&db, "with both workers");
    general.kill();
    vip.kill();

    // `run --task-queue` starts its run on the queue its own worker serves (it used to
    // start it on the default queue and wait for it until the timeout).
    let out = order(
        &db,
        &[
            "run",
            "order",
            "--id",
            "vip-2",
            "--input",
            &input,
            "--task-queue",
            "vip",
            "--poll-ms",
            "20",
            "--timeout",
            "60",
        ],
    )
    .run();
    assert!(
        out.ok().contains("tracking_number"),
        "run prints the order's result: {}",
        out.stdout
    );
    let status = order(&db, &["status", "vip-2"]).run();
    let shown = status.ok();
    assert!(
        shown.contains("task queue:   vip"),
        "the run went on the worker's queue: {shown}"
    );
}
