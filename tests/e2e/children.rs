//! Child workflows end to end, with the fan-out example's worker processes on a real
//! SQLite file: a batch fans out to twenty child runs; a worker SIGKILLed in the middle
//! of a fan-out is replaced and each child is started exactly once; cancelling a batch
//! cancels its children (or leaves them, by policy); a child cancelled on its own is a
//! `Cancelled` failure the batch handles; `status` shows the family. The kill and cancel
//! tests run on PostgreSQL too when `DURABLE_TEST_DATABASE_URL` names a server (in a
//! schema of their own, dropped after); without it they print why they skip.

use crate::support::{ChildGuard, Target, fan_out, temp_dir, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Generous for a loaded 2-core machine: twenty children of a few dozen milliseconds.
const FINISH: Duration = Duration::from_secs(60);

fn spawn_worker(db: &Target, log: &Path, lease_ms: &str) -> ChildGuard {
    fan_out(db, &["worker", "--poll-ms", "20"])
        .env("DURABLE_LEASE_MS", lease_ms)
        .spawn(log)
}

fn start_batch(db: &Target, id: &str, input: Value) {
    fan_out(
        db,
        &["start", "batch", "--id", id, "--input", &input.to_string()],
    )
    .run()
    .ok();
}

/// The runs of workflow `make_part`, as `list --json` shows them.
fn parts(db: &Target) -> Vec<Value> {
    fan_out(
        db,
        &[
            "list",
            "--workflow",
            "make_part",
            "--json",
            "--limit",
            "1000",
        ],
    )
    .run()
    .json_lines()
}

fn status_json(db: &Target, id: &str) -> Value {
    let out = fan_out(db, &["status", id, "--json"]).run();
    out.expect_code(0);
    serde_json::from_str(out.stdout.trim()).expect("status --json prints one object")
}

fn history(db: &Target, id: &str) -> Vec<Value> {
    fan_out(db, &["history", id, "--json"]).run().json_lines()
}

fn count_kind(history: &[Value], kind: &str) -> usize {
    history.iter().filter(|e| e["kind"] == kind).count()
}

#[test]
fn a_batch_fans_out_to_twenty_children_and_joins_them_in_order() {
    let dir = temp_dir();
    let db = Target::Sqlite(dir.path().join("fan.db"));
    let log = dir.path().join("workers.log");
    let _w1 = spawn_worker(&db, &log, "10000");
    let _w2 = spawn_worker(&db, &log, "10000");
    start_batch(
        &db,
        "fo-20",
        json!({"batch_id": "b20", "parts": 20, "work_ms": 20}),
    );
    let out = fan_out(&db, &["result", "fo-20", "--wait", "--timeout", "60"])
        .timeout(FINISH)
        .run();
    out.expect_code(0);
    let result: Value = serde_json::from_str(out.stdout.trim()).expect("the result is JSON");
    let expected: Vec<String> = (1..=20).map(|i| format!("b20-part-{i}")).collect();
    assert_eq!(result["made"], json!(expected));
    assert_eq!(result["cancelled"], json!([]));

    let children = parts(&db);
    assert_eq!(children.len(), 20, "one child run per part");
    assert!(children.iter().all(|c| c["status"] == "completed"));
    let status = status_json(&db, "fo-20");
    let listed: Vec<&str> = status["children"]
        .as_array()
        .expect("status lists the children")
        .iter()
        .map(|c| c["workflow_id"].as_str().expect("an id"))
        .collect();
    let expected_ids: Vec<String> = (1..=20).map(|i| format!("fo-20/part-{i}")).collect();
    assert_eq!(listed, expected_ids, "by command number");
    let child = status_json(&db, "fo-20/part-7");
    assert_eq!(child["parent"]["workflow_id"], "fo-20");
    assert_eq!(child["parent"]["seq"], 7);
    // The table form names the parent too.
    let text = fan_out(&db, &["status", "fo-20/part-7"]).run();
    assert!(
        text.ok().contains("parent:       fo-20 (run "),
        "{}",
        text.stdout
    );
    let h = history(&db, "fo-20");
    assert_eq!(count_kind(&h, "ChildStarted"), 20);
    assert_eq!(count_kind(&h, "ChildCompleted"), 20);
    assert_eq!(
        h.iter().position(|e| e["kind"] == "ChildCompleted"),
        Some(21),
        "every child starts in the first activation, before any outcome"
    );
}

#[test]
fn a_worker_killed_mid_fan_out_is_replaced_and_each_child_starts_once() {
    let dir = temp_dir();
    let db = Target::Sqlite(dir.path().join("fan.db"));
    killed_worker_mid_fan_out(&db, dir.path());
}

/// The kill test on any store: a worker SIGKILLed once some children finished, a
/// replacement finishing the batch, one run and one start per child.
fn killed_worker_mid_fan_out(db: &Target, dir: &Path) {
    let log = dir.join("workers.log");
    let ledger = dir.join("ledger.tsv");
    let mut first = fan_out(db, &["worker", "--poll-ms", "20", "--max-activities", "4"])
        .env("DURABLE_LEASE_MS", "1000")
        .env("DURABLE_EXAMPLE_LEDGER", &ledger)
        .spawn(&log);
    start_batch(
        db,
        "fo-kill",
        json!({"batch_id": "bk", "parts": 20, "work_ms": 150}),
    );
    // Kill it once some children finished and others have not.
    wait_until(FINISH, "a few children to complete", || {
        let done = parts(db)
            .iter()
            .filter(|c| c["status"] == "completed")
            .count();
        if (3..20).contains(&done) {
            Ok(done)
        } else {
            Err(format!("{done} completed"))
        }
    });
    first.kill();
    let done_at_kill = parts(db)
        .iter()
        .filter(|c| c["status"] == "completed")
        .count();
    assert!(done_at_kill < 20, "the kill came mid fan-out");

    let _second = fan_out(db, &["worker", "--poll-ms", "20"])
        .env("DURABLE_LEASE_MS", "1000")
        .env("DURABLE_EXAMPLE_LEDGER", &ledger)
        .spawn(&log);
    let out = fan_out(db, &["result", "fo-kill", "--wait", "--timeout", "60"])
        .timeout(FINISH)
        .run();
    out.expect_code(0);
    let result: Value = serde_json::from_str(out.stdout.trim()).expect("the result is JSON");
    assert_eq!(
        result["made"].as_array().map(Vec::len),
        Some(20),
        "{result}"
    );

    // Each child was started exactly once: one run per part id, and the parent recorded
    // one start and one outcome per part.
    let children = parts(db);
    let ids: BTreeSet<&str> = children
        .iter()
        .map(|c| c["workflow_id"].as_str().expect("an id"))
        .collect();
    assert_eq!(children.len(), 20, "no child run was started twice");
    assert_eq!(ids.len(), 20);
    let h = history(db, "fo-kill");
    assert_eq!(count_kind(&h, "ChildStarted"), 20);
    assert_eq!(count_kind(&h, "ChildCompleted"), 20);
    for part in 1..=20 {
        let ch = history(db, &format!("fo-kill/part-{part}"));
        assert_eq!(count_kind(&ch, "RunStarted"), 1);
        assert_eq!(count_kind(&ch, "RunCompleted"), 1, "part {part}");
    }
    // Every part was built, and no attempt ran twice: a build cut short by the kill (or
    // whose 1 s lease ran out on a loaded machine before its result was recorded) runs
    // again as a new attempt, never as the same one.
    let ledger = std::fs::read_to_string(&ledger).unwrap_or_default();
    let attempts: BTreeSet<&str> = ledger.lines().collect();
    assert_eq!(
        attempts.len(),
        ledger.lines().count(),
        "an attempt ran twice:\n{ledger}"
    );
    for part in 1..=20 {
        let prefix = format!("fo-kill/part-{part}/");
        assert!(
            ledger.lines().any(|l| l.starts_with(&prefix)),
            "part {part} was never built:\n{ledger}"
        );
    }
}

#[test]
fn cancelling_a_batch_cancels_its_children_by_policy() {
    let dir = temp_dir();
    let db = Target::Sqlite(dir.path().join("fan.db"));
    cancel_by_policy(&db, dir.path());
}

/// The cancel test on any store: request_cancel children are cancelled with the batch,
/// abandon children run on.
fn cancel_by_policy(db: &Target, dir: &Path) {
    let log = dir.join("workers.log");
    let _w = spawn_worker(db, &log, "10000");
    start_batch(
        db,
        "fo-cancel",
        json!({"batch_id": "bc", "parts": 3, "work_ms": 60000}),
    );
    start_batch(
        db,
        "fo-abandon",
        json!({"batch_id": "ba", "parts": 2, "work_ms": 60000, "abandon": true}),
    );
    wait_until(FINISH, "the five children to be running", || {
        let n = parts(db)
            .iter()
            .filter(|c| c["status"] == "running")
            .count();
        if n == 5 {
            Ok(())
        } else {
            Err(format!("{n} running"))
        }
    });
    let status = fan_out(db, &["status", "fo-cancel"]).run();
    assert!(
        status
            .ok()
            .contains("why:          waiting for child run fo-cancel/part-1"),
        "{}",
        status.stdout
    );
    for id in ["fo-cancel", "fo-abandon"] {
        fan_out(db, &["cancel", id, "--reason", "order withdrawn"])
            .run()
            .expect_code(0);
    }
    for id in ["fo-cancel", "fo-abandon"] {
        let out = fan_out(db, &["result", id, "--wait", "--timeout", "30"])
            .timeout(FINISH)
            .run();
        assert_ne!(out.code, Some(0), "{id} was cancelled: {}", out.stdout);
        assert!(out.stderr.contains("Cancelled"), "{id}: {}", out.stderr);
    }
    wait_until(
        FINISH,
        "the request_cancel children to be cancelled",
        || {
            let states: Vec<(String, String)> = parts(db)
                .iter()
                .map(|c| {
                    (
                        c["workflow_id"].as_str().unwrap_or_default().to_owned(),
                        c["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let cancelled = states
                .iter()
                .filter(|(id, s)| id.starts_with("fo-cancel/") && s == "failed")
                .count();
            if cancelled == 3 {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        },
    );
    for part in 1..=3 {
        let h = history(db, &format!("fo-cancel/part-{part}"));
        let cancel = h
            .iter()
            .find(|e| e["kind"] == "CancelRequested")
            .expect("the child got the request");
        assert!(
            cancel["reason"]
                .as_str()
                .is_some_and(|r| r.contains("fo-cancel") && r.contains("order withdrawn")),
            "{cancel}"
        );
        let last = h.last().expect("a history");
        assert_eq!(last["kind"], "RunFailed");
        assert_eq!(last["error"]["kind"], "Cancelled");
    }
    // Abandoned children run on, untouched.
    for part in 1..=2 {
        let s = status_json(db, &format!("fo-abandon/part-{part}"));
        assert_eq!(s["run"]["status"], "running");
        assert_eq!(
            count_kind(
                &history(db, &format!("fo-abandon/part-{part}")),
                "CancelRequested"
            ),
            0
        );
    }
    let family = status_json(db, "fo-abandon");
    assert!(
        family["children"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["cancel_policy"] == "abandon")),
        "{family}"
    );
}

#[test]
fn a_child_cancelled_on_its_own_is_a_failure_the_batch_handles() {
    let dir = temp_dir();
    let db = Target::Sqlite(dir.path().join("fan.db"));
    let log = dir.path().join("workers.log");
    let _w = spawn_worker(&db, &log, "10000");
    start_batch(
        &db,
        "fo-one",
        json!({"batch_id": "b1", "parts": 3, "work_ms": 1500}),
    );
    wait_until(FINISH, "part 2 to be running", || {
        let s = fan_out(&db, &["status", "fo-one/part-2", "--json"]).run();
        if s.code == Some(0) {
            Ok(())
        } else {
            Err(s.stderr)
        }
    });
    fan_out(&db, &["cancel", "fo-one/part-2"])
        .run()
        .expect_code(0);
    let out = fan_out(&db, &["result", "fo-one", "--wait", "--timeout", "30"])
        .timeout(FINISH)
        .run();
    out.expect_code(0);
    let result: Value = serde_json::from_str(out.stdout.trim()).expect("the result is JSON");
    assert_eq!(result["made"], json!(["b1-part-1", "b1-part-3"]));
    assert_eq!(result["cancelled"], json!([2]));
    let h = history(&db, "fo-one");
    let failed = h
        .iter()
        .find(|e| e["kind"] == "ChildFailed")
        .expect("the cancellation reached the batch");
    assert_eq!(failed["seq"], 2);
    assert_eq!(failed["error"]["kind"], "Cancelled");
}

#[test]
fn a_failed_child_fails_the_batch_with_its_kind() {
    let dir = temp_dir();
    let db = Target::Sqlite(dir.path().join("fan.db"));
    let out = fan_out(
        &db,
        &[
            "run",
            "batch",
            "--id",
            "fo-defect",
            "--input",
            &json!({"batch_id": "bd", "parts": 3, "work_ms": 10, "fail_part": 2}).to_string(),
        ],
    )
    .timeout(FINISH)
    .run();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect::<Vec<_>>(),
        ["error: run 'fo-defect' failed: PartDefect: part 2 of bd failed inspection"],
        "the child's kind and message reach the batch's failure"
    );
    let h = history(&db, "fo-defect");
    let last = h.last().expect("a history");
    assert_eq!(last["kind"], "RunFailed");
    assert_eq!(last["error"]["kind"], "PartDefect");
}

// --- the same on PostgreSQL --------------------------------------------------------

/// The server of `DURABLE_TEST_DATABASE_URL` and a fresh schema name, or why the
/// PostgreSQL tests skip. The schema is dropped when the guard drops.
fn postgres(test: &str) -> Option<(Target, SchemaGuard)> {
    let Ok(url) = std::env::var("DURABLE_TEST_DATABASE_URL") else {
        println!("skipping {test} on PostgreSQL: DURABLE_TEST_DATABASE_URL is not set");
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let schema = format!("e2e_children_{}_{nanos}", std::process::id());
    let guard = SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    if let Err(e) = guard.execute("SELECT 1") {
        println!("skipping {test} on PostgreSQL: cannot reach {url}: {e}");
        return None;
    }
    Some((Target::Postgres { url, schema }, guard))
}

/// Drops a test schema when dropped.
struct SchemaGuard {
    url: String,
    schema: String,
}

impl SchemaGuard {
    fn execute(&self, sql: &str) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, connection) = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_postgres::connect(&self.url, tokio_postgres::NoTls),
            )
            .await
            .map_err(|_| "no answer within 5 s".to_owned())?
            .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(connection);
            let result = client.batch_execute(sql).await.map_err(|e| e.to_string());
            drop(client);
            let _ = driver.await;
            result
        })
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        if let Err(e) = self.execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)) {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

#[test]
fn on_postgres_a_killed_worker_is_replaced_and_each_child_starts_once() {
    let Some((db, _schema)) = postgres("the fan-out kill test") else {
        return;
    };
    let dir = temp_dir();
    killed_worker_mid_fan_out(&db, dir.path());
}

#[test]
fn on_postgres_cancelling_a_batch_cancels_its_children_by_policy() {
    let Some((db, _schema)) = postgres("the fan-out cancel test") else {
        return;
    };
    let dir = temp_dir();
    cancel_by_policy(&db, dir.path());
}

// --- in process, through the Client ---------------------------------------------------

mod in_process {
    use crate::workflows::{Running, WAIT, open};
    use durable::prelude::*;
    use durable::{ClientError, EventKind};
    use std::time::Duration;

    /// A chain of `depth` nested children; the innermost waits for a signal that never
    /// comes.
    #[workflow]
    async fn chain(ctx: WorkflowContext, depth: u32) -> Result<u32, WorkflowError> {
        if depth == 0 {
            let () = ctx.signal("never").await?;
            return Ok(0);
        }
        Ok(ctx.child::<chain>(depth - 1).await? + 1)
    }

    /// Starts a child `chain(0)` under the given id and reports how it ended.
    #[workflow]
    async fn supervise(
        ctx: WorkflowContext,
        (id, timeout_ms): (String, u64),
    ) -> Result<String, WorkflowError> {
        let mut call = ctx.child::<chain>(0).workflow_id(id);
        if timeout_ms > 0 {
            call = call.execution_timeout(Duration::from_millis(timeout_ms));
        }
        match call.await {
            Ok(n) => Ok(format!("finished with {n}")),
            Err(e) if e.is("ExecutionTimeout") => Ok(format!("gave up: {}", e.message())),
            Err(e) => Err(e),
        }
    }

    /// Answers its input's length.
    #[workflow]
    async fn measure(_ctx: WorkflowContext, text: String) -> Result<usize, WorkflowError> {
        Ok(text.len())
    }

    /// Starts `measure` with a text of `len` bytes.
    #[workflow]
    async fn oversized(ctx: WorkflowContext, len: usize) -> Result<usize, WorkflowError> {
        ctx.child::<measure>("x".repeat(len)).await
    }

    /// Continues as new `n` times, then answers 100; with `wait`, it then waits for a
    /// signal that never comes instead.
    #[workflow]
    async fn countdown(ctx: WorkflowContext, (n, wait): (u32, bool)) -> Result<u32, WorkflowError> {
        if n > 0 {
            return ctx.continue_as_new::<countdown>((n - 1, wait)).await;
        }
        if wait {
            let () = ctx.signal("never").await?;
        }
        Ok(100)
    }

    /// Awaits a `countdown` child.
    #[workflow]
    async fn await_countdown(
        ctx: WorkflowContext,
        (n, wait): (u32, bool),
    ) -> Result<u32, WorkflowError> {
        ctx.child::<countdown>((n, wait))
            .workflow_id(format!("{}/countdown", ctx.workflow_id()))
            .await
    }

    fn registry() -> Registry {
        Registry::new()
            .workflow::<chain>()
            .workflow::<supervise>()
            .workflow::<measure>()
            .workflow::<oversized>()
            .workflow::<countdown>()
            .workflow::<await_countdown>()
    }

    /// A child that continues as new answers its parent from its last run: the runs it
    /// continued from say nothing to the parent, and the last one still knows its parent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_that_continues_as_new_answers_its_parent_from_its_last_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir.path().join("c.db"));
        let worker = Running::start(store.clone(), registry());
        let client = Client::new(store);
        client
            .start::<await_countdown>("parent", &(3, false))
            .await
            .expect("start");
        let out = client
            .result::<await_countdown>("parent", WAIT)
            .await
            .expect("the parent gets the last run's answer");
        assert_eq!(out, 100);
        let child = WorkflowId::from("parent/countdown");
        let runs = client
            .list(durable::store::RunFilter {
                workflow_id: Some(child.clone()),
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(runs.len(), 4, "the child ran 4 times: {runs:?}");
        let family = client.family(&child).await.expect("family");
        assert_eq!(
            family
                .parent
                .expect("the last run knows its parent")
                .workflow_id,
            WorkflowId::from("parent")
        );
        let parent_history = client
            .history(&WorkflowId::from("parent"))
            .await
            .expect("history");
        let answers = parent_history
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::ChildCompleted { .. } | EventKind::ChildFailed { .. }
                )
            })
            .count();
        assert_eq!(
            answers, 1,
            "one answer, from the last run: {parent_history:?}"
        );
        worker.stop().await;
    }

    /// Cancelling a parent reaches its child's latest run after the child continued as
    /// new.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_a_parent_reaches_a_child_that_continued_as_new() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir.path().join("c.db"));
        let worker = Running::start(store.clone(), registry());
        let client = Client::new(store);
        client
            .start::<await_countdown>("p2", &(2, true))
            .await
            .expect("start");
        let child = WorkflowId::from("p2/countdown");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let runs = client
                .list(durable::store::RunFilter {
                    workflow_id: Some(child.clone()),
                    ..Default::default()
                })
                .await
                .expect("list");
            if runs.len() == 3 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "child runs: {runs:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client
            .cancel(&WorkflowId::from("p2"), "no longer needed")
            .await
            .expect("cancel");
        match client.result::<await_countdown>("p2", WAIT).await {
            Err(ClientError::Failed { error, .. }) => assert_eq!(error.kind(), "Cancelled"),
            other => panic!("expected the parent cancelled, got {other:?}"),
        }
        match client.result::<countdown>(child.as_str(), WAIT).await {
            Err(ClientError::Failed { error, .. }) => assert_eq!(error.kind(), "Cancelled"),
            other => panic!("expected the child's last run cancelled, got {other:?}"),
        }
        worker.stop().await;
    }

    async fn wait_for_family(
        client: &Client,
        id: &str,
        children: usize,
    ) -> durable::store::RunFamily {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(f) = client.family(&WorkflowId::from(id)).await
                && f.children.len() == children
            {
                return f;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "run {id} never had {children} children"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn failure(client: &Client, id: &str) -> WorkflowError {
        match client.result::<chain>(id, WAIT).await {
            Err(ClientError::Failed { error, .. }) => error,
            other => panic!("expected run {id} to fail, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_the_root_cancels_children_and_grandchildren() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir.path().join("c.db"));
        let worker = Running::start(store.clone(), registry());
        let client = Client::new(store);
        client.start::<chain>("root", &2).await.expect("start");
        let child = wait_for_family(&client, "root", 1).await.children[0].clone();
        assert_eq!(child.workflow, "chain");
        let grandchild = wait_for_family(&client, child.workflow_id.as_str(), 1)
            .await
            .children[0]
            .clone();
        assert!(
            grandchild
                .workflow_id
                .as_str()
                .starts_with(child.workflow_id.as_str()),
            "derived ids nest: {} under {}",
            grandchild.workflow_id,
            child.workflow_id
        );
        let up = client
            .family(&grandchild.workflow_id)
            .await
            .expect("family");
        assert_eq!(up.parent.expect("a parent").workflow_id, child.workflow_id);

        client
            .cancel(&WorkflowId::from("root"), "shutting the line down")
            .await
            .expect("cancel");
        for id in [
            "root",
            child.workflow_id.as_str(),
            grandchild.workflow_id.as_str(),
        ] {
            let error = failure(&client, id).await;
            assert_eq!(error.kind(), "Cancelled", "{id}: {error}");
        }
        let history = client
            .history(&grandchild.workflow_id)
            .await
            .expect("history");
        let reason = history
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::CancelRequested { reason } => Some(reason.clone()),
                _ => None,
            })
            .expect("the grandchild was asked");
        assert!(reason.contains("shutting the line down"), "{reason}");
        worker.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_id_in_use_fails_the_parent_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir.path().join("c.db"));
        let worker = Running::start(store.clone(), registry());
        let client = Client::new(store);
        client.start::<chain>("taken", &0).await.expect("start");
        client
            .start::<supervise>("sup", &("taken".to_owned(), 0))
            .await
            .expect("start");
        match client.result::<supervise>("sup", WAIT).await {
            Err(ClientError::Failed { error, .. }) => {
                assert_eq!(error.kind(), "WorkflowIdInUse");
                assert!(error.message().contains("'taken'"), "{error}");
            }
            other => panic!("expected WorkflowIdInUse, got {other:?}"),
        }
        let runs = client
            .list(durable::store::RunFilter::default())
            .await
            .expect("list");
        assert_eq!(
            runs.iter()
                .filter(|r| r.workflow_id.as_str() == "taken")
                .count(),
            1,
            "the taken id was left alone"
        );
        assert!(
            client
                .family(&WorkflowId::from("sup"))
                .await
                .expect("family")
                .children
                .is_empty()
        );
        worker.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_past_its_execution_timeout_is_a_failure_the_parent_sees() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir.path().join("c.db"));
        let worker = Running::start(store.clone(), registry());
        let client = Client::new(store);
        client
            .start::<supervise>("slow", &("slow/child".to_owned(), 300))
            .await
            .expect("start");
        let out = client
            .result::<supervise>("slow", WAIT)
            .await
            .expect("the parent handles the timeout");
        assert_eq!(out, "gave up: execution timeout of 300ms exceeded");
        let info = client
            .status(&WorkflowId::from("slow/child"))
            .await
            .expect("status");
        assert_eq!(info.status, durable::store::RunStatus::Failed);
        worker.stop().await;
    }

    /// A child input over the worker's payload limit suspends the parent with the reason,
    /// like an activity input would, and starts no child.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_input_over_the_payload_limit_suspends_the_parent() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir.path().join("c.db"));
        let options = WorkerOptions {
            max_payload_bytes: 2048,
            ..crate::workflows::fast_options()
        };
        let worker = Worker::new(store.clone(), registry(), options);
        let stop = worker.shutdown_handle();
        let task = tokio::spawn(worker.run());
        let client = Client::new(store);
        client
            .start::<oversized>("big", &10_000)
            .await
            .expect("start");
        client
            .start::<oversized>("small", &100)
            .await
            .expect("start");
        assert_eq!(
            client
                .result::<oversized>("small", WAIT)
                .await
                .expect("small fits"),
            100
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let info = loop {
            let info = client
                .status(&WorkflowId::from("big"))
                .await
                .expect("status");
            if info.status == durable::store::RunStatus::Suspended {
                break info;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never suspended: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let reason = info.reason.unwrap_or_default();
        assert!(
            reason.contains("the input of child workflow measure (command 1)"),
            "{reason}"
        );
        assert!(
            client
                .family(&WorkflowId::from("big"))
                .await
                .expect("family")
                .children
                .is_empty(),
            "no child was started"
        );
        stop.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    }
}
