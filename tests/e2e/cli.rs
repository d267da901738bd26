//! The CLI of the order example, driven as a script would: real processes, a temporary
//! `--db`, a worker child process for the runs.
//!
//! Exit codes under test: 0 success, 1 the run failed, 2 an error, 3 a time-out.

use crate::support::{
    ChildGuard, CliOutput, DbSnapshot, TestRng, example_input, order, order_raw, settle, temp_dir,
    worker,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `result --wait` may wait for a run the worker is processing.
const RESULT_TIMEOUT: &str = "30";
/// The process deadline around `result --wait --timeout 30`.
const RESULT_DEADLINE: Duration = Duration::from_secs(40);

/// A sample input as the `--input` argument.
fn input(name: &str) -> String {
    example_input(name).to_string()
}

/// `start order --input <sample> --id <id>`, which must print the id.
fn start(db: &Path, id: &str, sample: &str) {
    let out = order(
        db,
        &["start", "order", "--input", &input(sample), "--id", id],
    )
    .run();
    assert_eq!(out.ok().trim(), id, "start prints the workflow id");
}

/// Starts a worker on `db` with its log in `dir`; it dies with the guard.
fn start_worker(dir: &Path, db: &Path) -> ChildGuard {
    worker(db, &[]).spawn(&dir.join("worker.log"))
}

/// `result <id> --wait --timeout 30`.
fn wait_result(db: &Path, id: &str) -> CliOutput {
    order(db, &["result", id, "--wait", "--timeout", RESULT_TIMEOUT])
        .timeout(RESULT_DEADLINE)
        .run()
}

/// `list --json`, one object per run.
fn list_json(db: &Path) -> Vec<Value> {
    order(db, &["list", "--json"])
        .run()
        .expect_code(0)
        .json_lines()
}

/// The run id `list --json` shows for a workflow id.
fn run_id_of(db: &Path, id: &str) -> String {
    list_json(db)
        .iter()
        .find(|r| r["workflow_id"] == id)
        .and_then(|r| r["run_id"].as_str())
        .unwrap_or_else(|| panic!("list --json has no run {id}"))
        .to_owned()
}

#[test]
fn start_prints_the_id_and_the_same_id_twice_is_one_run() {
    let dir = temp_dir();
    let db = dir.path().join("orders.db");

    start(&db, "order-1", "order-ok");
    let again = order(
        &db,
        &[
            "start",
            "order",
            "--input",
            &input("order-ok"),
            "--id",
            "order-1",
        ],
    )
    .run();
    assert_eq!(
        again.ok().trim(),
        "order-1",
        "starting the same id prints it again"
    );
    assert!(
        again.stderr.contains("already exists"),
        "and says it did not start another: {}",
        again.stderr
    );

    let runs = list_json(&db);
    assert_eq!(
        runs.len(),
        1,
        "the second start must not create a run: {runs:?}"
    );
    assert_eq!(runs[0]["workflow_id"], "order-1");
    assert_eq!(runs[0]["status"], "running", "no worker has run it yet");

    // Without --id, start makes up an id and prints it.
    let fresh = order(&db, &["start", "order", "--input", &input("order-ok")]).run();
    let id = fresh.ok().trim().to_owned();
    assert!(!id.is_empty() && id != "order-1", "start printed {id:?}");
    let ids: Vec<Value> = list_json(&db)
        .into_iter()
        .map(|r| r["workflow_id"].clone())
        .collect();
    assert!(
        ids.contains(&json!(id)),
        "list shows the new run {id}: {ids:?}"
    );
    assert_eq!(ids.len(), 2);
}

#[test]
fn result_wait_prints_the_output_or_the_failure_kind() {
    let dir = temp_dir();
    let db = dir.path().join("orders.db");
    start(&db, "ok", "order-ok");
    start(&db, "invalid", "order-invalid");
    start(&db, "declined", "order-declined");
    let _worker = start_worker(dir.path(), &db);

    let ok = wait_result(&db, "ok");
    let output: Value = serde_json::from_str(ok.ok().trim())
        .unwrap_or_else(|e| panic!("result prints JSON ({e}): {}", ok.stdout));
    let run_id = run_id_of(&db, "ok");
    assert_eq!(
        output,
        json!({
            "order_id": "A-1001",
            // The payment's idempotency key is workflow id / run id / command 3.
            "transaction_id": format!("txn-ok-{run_id}-3"),
            "tracking_number": "TRACK-A-1001-6",
        })
    );

    for (id, kind) in [
        ("invalid", "ValidationException"),
        ("declined", "PaymentFailed"),
    ] {
        let out = wait_result(&db, id);
        out.expect_one_error_line(1, kind);
        assert!(
            out.stdout.trim().is_empty(),
            "a failed run prints no output: {}",
            out.stdout
        );
        // Without --wait, a finished run answers the same.
        order(&db, &["result", id])
            .run()
            .expect_one_error_line(1, kind);
    }
}

#[test]
fn result_wait_times_out_without_a_worker() {
    let dir = temp_dir();
    let db = dir.path().join("orders.db");
    start(&db, "lonely", "order-ok");

    let began = Instant::now();
    let out = order(&db, &["result", "lonely", "--wait", "--timeout", "0.5"]).run();
    out.expect_one_error_line(3, "lonely");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "gave up after {took:?}, before the 0.5 s timeout"
    );

    // Without --wait, a running run is reported at once, with the same exit code.
    order(&db, &["result", "lonely"])
        .run()
        .expect_one_error_line(3, "--wait");
}

#[test]
fn list_json_prints_one_object_per_run() {
    let dir = temp_dir();
    let db = dir.path().join("orders.db");
    start(&db, "ok", "order-ok");
    start(&db, "declined", "order-declined");
    start(&db, "waiting", "order-ok");
    {
        let _worker = start_worker(dir.path(), &db);
        wait_result(&db, "ok").expect_code(0);
        wait_result(&db, "declined").expect_code(1);
        wait_result(&db, "waiting").expect_code(0);
    }
    start(&db, "later", "order-ok");

    let out = order(&db, &["list", "--json"]).run();
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 4, "one line per run:\n{}", out.stdout);
    let mut seen: Vec<(String, String)> = Vec::new();
    for line in lines {
        let run: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("list --json line is not JSON ({e}): {line}"));
        for key in ["workflow_id", "run_id", "workflow", "status"] {
            assert!(run[key].is_string(), "list --json line lacks {key}: {line}");
        }
        assert_eq!(run["workflow"], "order");
        assert!(!run["run_id"].as_str().unwrap_or_default().is_empty());
        seen.push((
            run["workflow_id"].as_str().unwrap_or_default().to_owned(),
            run["status"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    seen.sort();
    let expected: Vec<(String, String)> = [
        ("declined", "failed"),
        ("later", "running"),
        ("ok", "completed"),
        ("waiting", "completed"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(seen, expected);

    let failed = order(&db, &["list", "--json", "--status", "failed"])
        .run()
        .expect_code(0)
        .json_lines();
    assert_eq!(failed.len(), 1, "--status failed: {failed:?}");
    assert_eq!(failed[0]["workflow_id"], "declined");
}

#[test]
fn history_json_shows_compensation_after_payment_failed() {
    let dir = temp_dir();
    let db = dir.path().join("orders.db");
    start(&db, "declined", "order-declined");
    let _worker = start_worker(dir.path(), &db);
    wait_result(&db, "declined").expect_one_error_line(1, "PaymentFailed");

    let events = order(&db, &["history", "declined", "--json"])
        .run()
        .expect_code(0)
        .json_lines();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["event_id"], json!(i + 1), "event ids run 1..n: {e}");
        assert!(e["kind"].is_string(), "every event has a kind: {e}");
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default())
        .collect();

    // The input comes back decoded, not as bytes.
    assert_eq!(kinds[0], "RunStarted");
    let started = &events[0]["payload"];
    assert_eq!(started["order_id"], "A-1003");
    assert_eq!(started["card_number"], "4000000000000002");
    assert_eq!(started["items"][0]["sku"], "KB-01");

    let reservation = events
        .iter()
        .find(|e| e["kind"] == "ActivityCompleted" && e["seq"] == 2)
        .unwrap_or_else(|| panic!("check_inventory (command 2) completed: {kinds:?}"));
    assert_eq!(
        reservation["payload"],
        json!({ "reservation_id": "res-A-1003", "units": 1 })
    );

    let failed_at = events
        .iter()
        .position(|e| e["kind"] == "ActivityFailed" && e["error"]["kind"] == "PaymentFailed")
        .unwrap_or_else(|| panic!("history has the PaymentFailed failure: {kinds:?}"));
    let after: Vec<(&str, &Value)> = events[failed_at + 1..]
        .iter()
        .filter(|e| e["kind"] == "ActivityScheduled")
        .map(|e| (e["name"].as_str().unwrap_or_default(), &e["payload"]))
        .collect();
    let names: Vec<&str> = after.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["release_inventory", "notify_customer_failed"],
        "compensation, in order"
    );
    assert_eq!(
        *after[0].1, reservation["payload"],
        "the reservation made is the one released"
    );
    for seq in [4, 5] {
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "ActivityCompleted" && e["seq"] == seq),
            "compensation command {seq} completed: {kinds:?}"
        );
    }
    let last = events.last().expect("history is not empty");
    assert_eq!(last["kind"], "RunFailed");
    assert_eq!(last["error"]["kind"], "PaymentFailed");

    // The table form says the same things to a person.
    let table = order(&db, &["history", "declined"]).run();
    assert!(table.ok().contains("release_inventory"), "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), events.len());

    let status = order(&db, &["status", "declined"]).run();
    let text = status.ok();
    assert!(
        text.contains("declined") && text.contains("failed"),
        "status:\n{text}"
    );
    let status_json: Value = serde_json::from_str(
        order(&db, &["status", "declined", "--json"])
            .run()
            .ok()
            .trim(),
    )
    .expect("status --json prints JSON");
    assert_eq!(status_json["run"]["status"], "failed");
    assert_eq!(status_json["run"]["workflow_id"], "declined");
}

/// Runs one bad command against `db` and checks the error contract: exit 2, one
/// `error:` line mentioning each of `needles`, no panic, and `db` (with its WAL) byte
/// for byte as before.
#[track_caller]
fn assert_refused(db: &Path, args: &[&str], needles: &[&str]) {
    let before = DbSnapshot::take(db);
    let out = order(db, args).run();
    let line = out.expect_one_error_line(2, needles[0]);
    for needle in &needles[1..] {
        assert!(
            line.contains(needle),
            "`{}`: the error line should mention {needle:?}: {line}",
            out.what
        );
    }
    DbSnapshot::take(db).assert_unchanged_since(&before, &out.what);
}

/// [`assert_refused`] on a durable database, its WAL checkpointed first.
#[track_caller]
fn assert_refused_settled(db: &Path, args: &[&str], needles: &[&str]) {
    settle(db);
    assert_refused(db, args, needles);
}

#[test]
fn bad_input_is_one_error_line_and_writes_nothing() {
    let dir = temp_dir();
    let db = dir.path().join("orders.db");
    start(&db, "r1", "order-ok");
    let ok = input("order-ok");

    let cases: &[(&[&str], &str)] = &[
        (&["start", "order", "--input", "{\"order_id\": "], "--input"),
        (&["start", "order", "--input", "not json"], "--input"),
        (&["start", "order", "--input", "[1, 2]"], "--input"),
        (
            &["start", "order", "--input", "{\"order_id\": 7}"],
            "--input",
        ),
        (&["start", "order", "--input", ""], "--input"),
        (
            &["start", "no_such_workflow", "--input", &ok],
            "unknown workflow",
        ),
        (
            &["start", "order", "--input", &ok, "--id", ""],
            "workflow id",
        ),
        (&["run", "order", "--input", "{bad"], "--input"),
        (&["result", "nope"], "no run with id 'nope'"),
        (
            &["result", "nope", "--wait", "--timeout", "1"],
            "no run with id 'nope'",
        ),
        (&["status", "nope"], "no run with id 'nope'"),
        (&["status", "nope", "--json"], "no run with id 'nope'"),
        (&["history", "nope"], "no run with id 'nope'"),
        (&["history", "nope", "--json"], "no run with id 'nope'"),
        (
            &["signal", "nope", "approved", "--payload", "true"],
            "no run with id 'nope'",
        ),
        (&["cancel", "nope"], "no run with id 'nope'"),
        (
            &["signal", "r1", "approved", "--payload", "{bad"],
            "--payload",
        ),
        (&["result", "r1", "--wait", "--timeout=-1"], "--timeout"),
        (&["result", "r1", "--wait", "--timeout", "NaN"], "--timeout"),
        (
            &["result", "r1", "--wait", "--timeout", "1e12"],
            "--timeout",
        ),
        (&["list", "--status", "bogus"], "unknown status"),
        (&["list", "--stuck", "soon"], "--stuck"),
    ];
    for (args, needle) in cases {
        assert_refused_settled(&db, args, &[needle]);
    }

    // The snapshot does see a write: a good start changes the files.
    let before = DbSnapshot::take(&db);
    start(&db, "r2", "order-ok");
    assert_ne!(
        DbSnapshot::take(&db),
        before,
        "a start that succeeds writes the database"
    );

    // The run that was there is still there, untouched.
    let runs = list_json(&db);
    let r1: Vec<&Value> = runs.iter().filter(|r| r["workflow_id"] == "r1").collect();
    assert_eq!((runs.len(), r1.len()), (2, 1), "{runs:?}");
    assert_eq!(r1[0]["status"], "running");
    assert_eq!(r1[0]["events"], 1, "only RunStarted: {:?}", r1[0]);
}

/// `--timeout -1`, as a person types it: clap takes `-1` for a flag unless the argument
/// allows negative numbers, and then prints a usage block that never mentions the
/// timeout.
#[test]
fn negative_timeout_is_one_error_line() {
    let dir = temp_dir();
    let db = dir.path().join("orders.db");
    start(&db, "r1", "order-ok");
    assert_refused_settled(
        &db,
        &["result", "r1", "--wait", "--timeout", "-1"],
        &["--timeout"],
    );
    let ok = input("order-ok");
    assert_refused_settled(
        &db,
        &["run", "order", "--input", &ok, "--timeout", "-1"],
        &["--timeout"],
    );
}

/// What a path passed as `--db` holds.
enum NotADb {
    RandomBytes,
    Empty,
    ForeignSqlite,
    Directory,
    Missing,
}

impl NotADb {
    fn create(&self, dir: &Path) -> PathBuf {
        match self {
            NotADb::RandomBytes => {
                let path = dir.join("random.bin");
                let mut rng = TestRng::new(0x00d0_ab1e);
                let bytes: Vec<u8> = (0..8192)
                    .flat_map(|_| rng.next_u64().to_le_bytes())
                    .collect();
                std::fs::write(&path, bytes).expect("write random bytes");
                path
            }
            NotADb::Empty => {
                let path = dir.join("empty.db");
                std::fs::write(&path, b"").expect("create an empty file");
                path
            }
            NotADb::ForeignSqlite => {
                let path = dir.join("notes.sqlite");
                let conn = rusqlite::Connection::open(&path).expect("create a SQLite file");
                conn.execute_batch(
                    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
                     INSERT INTO notes (body) VALUES ('buy milk'), ('call bob');",
                )
                .expect("fill the foreign database");
                drop(conn);
                path
            }
            NotADb::Directory => {
                let path = dir.join("a-directory.db");
                std::fs::create_dir(&path).expect("create a directory");
                std::fs::write(path.join("keep.txt"), b"keep me").expect("a file in it");
                path
            }
            NotADb::Missing => dir.join("missing.db"),
        }
    }

    fn needle(&self) -> &'static str {
        match self {
            NotADb::Missing => "no database at",
            _ => "not a durable database",
        }
    }
}

#[test]
fn non_database_files_are_refused_and_left_unchanged() {
    let dir = temp_dir();
    let ok = input("order-ok");
    let reading: &[&[&str]] = &[
        &["list"],
        &["list", "--json"],
        &["status", "x"],
        &["history", "x", "--json"],
        &["result", "x", "--wait", "--timeout", "1"],
        &["signal", "x", "approved"],
        &["cancel", "x"],
    ];
    let creating: &[&[&str]] = &[
        &["start", "order", "--input", &ok, "--id", "x"],
        &["run", "order", "--input", &ok, "--timeout", "5"],
        &["worker", "--poll-ms", "20"],
    ];
    for kind in [
        NotADb::RandomBytes,
        NotADb::Empty,
        NotADb::ForeignSqlite,
        NotADb::Directory,
        NotADb::Missing,
    ] {
        let db = kind.create(dir.path());
        let name = db
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a file name")
            .to_owned();
        for args in reading {
            assert_refused(&db, args, &[kind.needle(), &name]);
        }
        // Commands that create a database on a fresh path must still refuse a path
        // that holds something else.
        if !matches!(kind, NotADb::Missing) {
            for args in creating {
                assert_refused(&db, args, &[kind.needle(), &name]);
            }
        }
        // Bad input is caught before the database is touched, whatever --db holds.
        assert_refused(&db, &["start", "order", "--input", "{bad"], &["--input"]);
    }
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read the temp dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(
        !left.iter().any(|n| n.starts_with("missing.db")),
        "nothing created for a missing --db: {left:?}"
    );
}

/// `cargo run --example order` with no arguments: the happy path against `./durable.db`.
#[test]
fn no_arguments_runs_the_happy_path_in_the_current_dir() {
    let dir = temp_dir();
    let out = order_raw::<&str>(&[])
        .current_dir(dir.path())
        .timeout(Duration::from_secs(60))
        .run();
    let output: Value = serde_json::from_str(out.ok().trim())
        .unwrap_or_else(|e| panic!("prints the OrderResult as JSON ({e}): {}", out.stdout));
    assert_eq!(output["order_id"], "A-1001");
    assert_eq!(output["tracking_number"], "TRACK-A-1001-6");
    assert!(
        output["transaction_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("txn-")),
        "{output}"
    );
    let db = dir.path().join("durable.db");
    assert!(
        db.is_file(),
        "creates ./durable.db in the current directory"
    );
    let runs = list_json(&db);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "completed");
}
