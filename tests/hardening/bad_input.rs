//! (e) Bad input: each case through the library API and, where a command applies, the
//! CLI of the order example. Every refusal is a typed error (API) or exit 2 with one
//! `error:` line (CLI), nothing panics, and the database and its `-wal` keep their
//! bytes. Cases that are accepted say so, and what happens next is checked.

#![allow(clippy::too_many_lines)]

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../examples/order.rs"]
mod order_example;

use crate::flows::{self, echo, flaky};
use crate::support::{self, Output, Snapshot};
use durable::prelude::*;
use durable::store::{RunStatus, SharedStore};
use durable::{
    ClientError, EventId, EventKind, HistoryFile, Payload, PayloadError, ReplayError,
    ReplayFileError, Replayer, SqliteOptions, SqliteStore, StoreError,
};
use futures::future::{Either, select};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The rows of the table, printed at the end of each test for RELIABILITY.md.
#[derive(Default)]
struct Table(Vec<(String, String, String)>);

impl Table {
    fn row(&mut self, case: &str, api: impl Into<String>, cli: impl Into<String>) {
        self.0.push((case.to_owned(), api.into(), cli.into()));
    }
    fn print(&self, title: &str) {
        eprintln!("{title}: {} cases", self.0.len());
        for (case, api, cli) in &self.0 {
            eprintln!("| {case} | {api} | {cli} |");
        }
    }
}

/// `order --db <db> args` must be refused with exit 2, one line mentioning `needle`,
/// and no byte of the database changed. Returns a short description for the table.
#[track_caller]
fn cli_refused(db: &Path, args: &[&str], needle: &str) -> String {
    let before = Snapshot::take(db);
    let out = support::order(db, args).run();
    let line = out.refused(2, needle);
    Snapshot::take(db).assert_same(&before, &out.what);
    short(&line)
}

fn short(line: &str) -> String {
    let line = line.replace('|', "\\|");
    let mut s: String = line.chars().take(90).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    format!("exit 2: `{s}`")
}

/// Runs `f` against `db` and checks that the database bytes did not change.
#[track_caller]
fn unchanged<T>(db: &Path, what: &str, f: impl FnOnce() -> T) -> T {
    let before = Snapshot::take(db);
    let out = f();
    Snapshot::take(db).assert_same(&before, what);
    out
}

// --- workflows for the accepted-then-handled cases ----------------------------------

/// Returns a string of `n` bytes.
#[activity]
async fn big(_ctx: ActivityContext, n: usize) -> Result<String, ActivityError> {
    Ok("x".repeat(n))
}

/// An activity whose output is over the worker's payload limit.
#[workflow(name = "bad.big_activity_output")]
async fn big_activity_output(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    Ok(ctx.activity::<big>(5_000).await?)
}

/// A run whose own output is over the limit.
#[workflow(name = "bad.big_output")]
async fn big_output(_ctx: WorkflowContext) -> Result<String, WorkflowError> {
    Ok("y".repeat(5_000))
}

/// An activity input over the limit.
#[workflow(name = "bad.big_activity_input")]
async fn big_activity_input(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    Ok(ctx.activity::<echo>("z".repeat(5_000)).await?)
}

/// Every duration at its largest, and a retry policy of NaNs.
#[workflow(name = "bad.extremes")]
async fn extremes(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let long = ctx.sleep(Duration::MAX);
    let short = ctx.sleep(Duration::from_millis(5));
    let first = match select(long, short).await {
        Either::Left(_) => "long",
        Either::Right(_) => "short",
    };
    let waited = ctx
        .signal_timeout::<u32>("never", Duration::from_millis(5))
        .await?;
    let forever = ctx.signal_timeout::<u32>("never", Duration::MAX);
    let quick = ctx.sleep(Duration::from_millis(1));
    let _ = select(forever, quick).await;
    let nan = RetryPolicy {
        backoff_coefficient: f64::NAN,
        jitter: f64::NAN,
        ..RetryPolicy::exponential(Duration::from_millis(1))
    };
    let a = ctx
        .activity::<echo>("e".into())
        .start_to_close(Duration::MAX)
        .schedule_to_close(Duration::MAX)
        .heartbeat_timeout(Duration::MAX)
        .retry(nan.clone())
        .await?;
    let b = ctx.activity::<flaky>("f".into()).retry(nan).await?;
    Ok(format!("{first} {waited:?} {a} {b}"))
}

/// A retry policy whose first interval is `u64::MAX` milliseconds.
#[workflow(name = "bad.forever_retry")]
async fn forever_retry(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let policy = RetryPolicy {
        initial_interval_ms: u64::MAX,
        maximum_interval_ms: u64::MAX,
        backoff_coefficient: f64::INFINITY,
        jitter: -1.0,
        maximum_attempts: 0,
        ..RetryPolicy::default()
    };
    Ok(ctx.activity::<flaky>("slow".into()).retry(policy).await?)
}

fn registry() -> Registry {
    flows::base_registry()
        .activity::<big>()
        .workflow::<big_activity_output>()
        .workflow::<big_output>()
        .workflow::<big_activity_input>()
        .workflow::<extremes>()
        .workflow::<forever_retry>()
}

/// A database with a completed, a failed and an open (waiting) run, closed and
/// checkpointed: `done` (hd.seq), `failed` (hd.failure), `open` (hd.signal).
async fn fixture(db: &Path) {
    let store = support::open(db);
    support::with_worker(
        &store,
        registry(),
        support::quick_options(),
        |client| async move {
            client
                .start::<flows::seq_v0>("done", &"x".to_owned())
                .await
                .expect("start");
            client
                .start::<flows::failure_v0>("failed", &())
                .await
                .expect("start");
            client
                .start::<flows::signal_v0>("open", &())
                .await
                .expect("start");
            support::wait_settled(&client, "done").await;
            support::wait_settled(&client, "failed").await;
            support::wait_history(&client, "open", "waiting for approve", |h| h.len() >= 4).await;
        },
    )
    .await;
    drop(store);
    support::settle(db);
}

fn order_input() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/order-ok.json"),
    )
    .expect("sample input")
}

fn store_err(e: ClientError) -> StoreError {
    match e {
        ClientError::Store(s) => s,
        ClientError::NotFound(id) => StoreError::NotFound(id),
        other => panic!("expected a store error, got {other:?}"),
    }
}

fn described(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string().replace('|', "\\|");
    let s: String = text.chars().take(80).collect();
    format!("`{s}`")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_write_nothing() {
    support::watch_panics();
    let dir = support::temp_dir();
    let db = dir.path().join("fixture.db");
    fixture(&db).await;
    let mut t = Table::default();
    let reg = registry();
    let seq = reg.find_workflow("hd.seq").expect("hd.seq");
    let orders = order_example::registry();
    let order_wf = orders.find_workflow("order").expect("order");
    let ok = order_input();

    // Inputs: the CLI checks them against the workflow's input type before opening the db.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for (case, json, needle) in [
        ("malformed JSON input", "{\"order_id\": ", "--input"),
        (
            "JSON of the wrong type (array for a struct)",
            "[1, 2]",
            "--input",
        ),
        (
            "JSON with a field of the wrong type",
            "{\"order_id\": 7}",
            "--input",
        ),
        ("JSON nested 10,000 deep", deep.as_str(), "--input"),
        ("empty input", "", "--input"),
    ] {
        let api = order_wf.input_from_json(json).unwrap_err();
        assert!(matches!(api, PayloadError::Json { .. }), "{case}: {api:?}");
        assert!(seq.input_from_json(json).is_err(), "{case}");
        let cli = cli_refused(&db, &["start", "order", "--input", json], needle);
        t.row(case, format!("PayloadError::Json {}", described(&api)), cli);
    }

    let store = support::open(&db);
    let client = Client::new(store.clone());

    // Names that do not exist.
    assert!(reg.find_workflow("no_such_workflow").is_none());
    t.row(
        "unknown workflow (start)",
        "`Registry::find_workflow` is None; a run started by name anyway is suspended by the worker (see the worker table)",
        cli_refused(&db, &["start", "no_such_workflow", "--input", "null"], "unknown workflow"),
    );
    let nope = WorkflowId::from("nope");
    macro_rules! api_unchanged {
        ($what:expr, $e:expr) => {{
            let before = Snapshot::take(&db);
            let r = $e;
            Snapshot::take(&db).assert_same(&before, $what);
            r
        }};
    }
    let e = api_unchanged!("status", client.status(&nope).await.unwrap_err());
    assert!(matches!(e, ClientError::NotFound(_)));
    t.row(
        "unknown run id: status",
        "ClientError::NotFound",
        cli_refused(&db, &["status", "nope"], "no run with id 'nope'"),
    );
    let e = api_unchanged!("history", client.history(&nope).await.unwrap_err());
    assert!(matches!(e, ClientError::NotFound(_)));
    t.row(
        "unknown run id: history",
        "ClientError::NotFound",
        cli_refused(&db, &["history", "nope", "--json"], "no run with id 'nope'"),
    );
    let e = api_unchanged!(
        "result",
        client
            .wait_encoded(&nope, Some(Duration::from_millis(10)))
            .await
            .unwrap_err()
    );
    assert!(matches!(e, ClientError::NotFound(_)));
    t.row(
        "unknown run id: result",
        "ClientError::NotFound",
        cli_refused(
            &db,
            &["result", "nope", "--wait", "--timeout", "1"],
            "no run with id 'nope'",
        ),
    );
    let e = api_unchanged!(
        "signal",
        client.signal(&nope, "approve", &1).await.unwrap_err()
    );
    assert!(matches!(e, ClientError::NotFound(_)));
    t.row(
        "unknown run id: signal",
        "ClientError::NotFound",
        cli_refused(
            &db,
            &["signal", "nope", "approve", "--payload", "1"],
            "no run with id 'nope'",
        ),
    );
    let e = api_unchanged!("cancel", client.cancel(&nope, "why").await.unwrap_err());
    assert!(matches!(e, ClientError::NotFound(_)));
    t.row(
        "unknown run id: cancel",
        "ClientError::NotFound",
        cli_refused(&db, &["cancel", "nope"], "no run with id 'nope'"),
    );
    let e = api_unchanged!("resume", store.resume(&nope).await.unwrap_err());
    assert!(matches!(e, StoreError::NotFound(_)));
    t.row(
        "unknown run id: retry",
        "StoreError::NotFound",
        cli_refused(&db, &["retry", "nope"], "no run with id 'nope'"),
    );
    let e = api_unchanged!(
        "reset",
        store.reset_run(&nope, EventId(1)).await.unwrap_err()
    );
    assert!(matches!(e, StoreError::NotFound(_)));
    t.row(
        "unknown run id: reset",
        "StoreError::NotFound",
        cli_refused(
            &db,
            &["reset", "nope", "--to", "1"],
            "no run with id 'nope'",
        ),
    );

    // Ids and names the store refuses.
    let long = "i".repeat(1_001);
    let e = api_unchanged!(
        "long id",
        store_err(
            client
                .start::<flows::seq_v0>(long.as_str(), &"x".into())
                .await
                .unwrap_err()
        )
    );
    assert!(
        matches!(&e, StoreError::Invalid(m) if m.contains("1000")),
        "{e:?}"
    );
    t.row(
        "id of 1,001 bytes (start)",
        format!("StoreError::Invalid {}", described(&e)),
        cli_refused(
            &db,
            &["start", "order", "--input", &ok, "--id", &long],
            "1000",
        ),
    );
    let e = api_unchanged!(
        "long id status",
        client
            .status(&WorkflowId::from(long.as_str()))
            .await
            .unwrap_err()
    );
    assert!(matches!(e, ClientError::NotFound(_)));
    t.row(
        "id of 1,001 bytes (status)",
        "ClientError::NotFound",
        cli_refused(&db, &["status", &long], "no run with id"),
    );
    let e = api_unchanged!(
        "empty id",
        store_err(
            client
                .start::<flows::seq_v0>("", &"x".into())
                .await
                .unwrap_err()
        )
    );
    assert!(
        matches!(&e, StoreError::Invalid(m) if m.contains("empty")),
        "{e:?}"
    );
    t.row(
        "empty id",
        format!("StoreError::Invalid {}", described(&e)),
        cli_refused(
            &db,
            &["start", "order", "--input", &ok, "--id", ""],
            "must not be empty",
        ),
    );
    let e = api_unchanged!(
        "NUL id",
        store_err(
            client
                .start::<flows::seq_v0>("a\0b", &"x".into())
                .await
                .unwrap_err()
        )
    );
    assert!(
        matches!(&e, StoreError::Invalid(m) if m.contains("NUL")),
        "{e:?}"
    );
    t.row(
        "id with a NUL byte",
        format!("StoreError::Invalid {}", described(&e)),
        "n/a: a NUL cannot be passed in argv",
    );
    let open = WorkflowId::from("open");
    for (case, name, cli_name, needle) in [
        (
            "empty signal name",
            String::new(),
            Some(String::new()),
            "must not be empty",
        ),
        (
            "signal name of 1,001 bytes",
            "s".repeat(1_001),
            Some("s".repeat(1_001)),
            "1000",
        ),
        (
            "signal name with a NUL byte",
            "a\0b".to_owned(),
            None,
            "NUL",
        ),
    ] {
        let e = api_unchanged!(
            case,
            store_err(client.signal(&open, &name, &1).await.unwrap_err())
        );
        assert!(
            matches!(&e, StoreError::Invalid(m) if m.contains(needle)),
            "{case}: {e:?}"
        );
        let cli = match cli_name {
            Some(n) => cli_refused(&db, &["signal", "open", &n, "--payload", "1"], needle),
            None => "n/a: a NUL cannot be passed in argv".to_owned(),
        };
        t.row(case, format!("StoreError::Invalid {}", described(&e)), cli);
    }

    // Finished runs.
    for (case, id, f) in [
        ("signal to a completed run", "done", 0),
        ("cancel a completed run", "done", 1),
        ("signal to a failed run", "failed", 0),
        ("cancel a failed run", "failed", 1),
    ] {
        let wid = WorkflowId::from(id);
        let e = api_unchanged!(
            case,
            if f == 0 {
                client.signal(&wid, "approve", &1).await.unwrap_err()
            } else {
                client.cancel(&wid, "late").await.unwrap_err()
            }
        );
        assert!(matches!(store_err(e), StoreError::Finished(_)), "{case}");
        let args: Vec<&str> = if f == 0 {
            vec!["signal", id, "approve", "--payload", "1"]
        } else {
            vec!["cancel", id]
        };
        t.row(
            case,
            "StoreError::Finished",
            cli_refused(&db, &args, "already finished"),
        );
    }
    let e = api_unchanged!(
        "retry",
        store.resume(&WorkflowId::from("done")).await.unwrap_err()
    );
    assert!(
        matches!(&e, StoreError::Invalid(m) if m.contains("not suspended")),
        "{e:?}"
    );
    t.row(
        "retry a run that is not suspended",
        format!("StoreError::Invalid {}", described(&e)),
        cli_refused(&db, &["retry", "done"], "not suspended"),
    );

    // Reset to events that do not exist or end the run.
    let last = client
        .status(&WorkflowId::from("done"))
        .await
        .expect("status")
        .last_event_id;
    for (case, to, needle) in [
        ("reset --to 0", 0, "has no event 0"),
        ("reset --to 18446744073709551615", u64::MAX, "has no event"),
        (
            "reset --to the event that ends the run",
            last.0,
            "ends the run",
        ),
    ] {
        let e = api_unchanged!(
            case,
            store
                .reset_run(&WorkflowId::from("done"), EventId(to))
                .await
                .unwrap_err()
        );
        assert!(
            matches!(&e, StoreError::Invalid(m) if m.contains(needle)),
            "{case}: {e:?}"
        );
        t.row(
            case,
            format!("StoreError::Invalid {}", described(&e)),
            cli_refused(&db, &["reset", "done", "--to", &to.to_string()], needle),
        );
    }
    t.row(
        "reset --to abc (not a number)",
        "n/a (typed)",
        cli_refused(&db, &["reset", "done", "--to", "abc"], "--to"),
    );
    t.row(
        "unknown subcommand",
        "n/a",
        cli_refused(&db, &["frobnicate"], "frobnicate"),
    );
    t.row(
        "missing required argument",
        "n/a",
        cli_refused(&db, &["signal", "done"], "<NAME>"),
    );

    // A payload exactly at the limit is accepted; one byte more is refused before
    // anything is written, and the run stays cancellable.
    let limit = 1_000;
    let at_limit = "p".repeat(997);
    assert_eq!(Payload::encode(&at_limit).expect("encode").len(), limit);
    let small = Client::new(store.clone()).with_max_payload(limit);
    let before = Snapshot::take(&db);
    let started = small
        .start::<flows::seq_v0>("limit-ok", &at_limit)
        .await
        .expect("a payload at the limit is accepted");
    assert!(started.created);
    let after = Snapshot::take(&db);
    assert_ne!(
        after,
        before,
        "the accepted start wrote; {:?}",
        std::fs::read_dir(dir.path()).map(|d| d
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name(), e.metadata().map(|m| m.len()).unwrap_or(0)))
            .collect::<Vec<_>>())
    );
    let over = "p".repeat(998);
    let e = api_unchanged!(
        "limit+1",
        small
            .start::<flows::seq_v0>("limit-over", &over)
            .await
            .unwrap_err()
    );
    assert!(
        matches!(
            e,
            ClientError::Payload(PayloadError::TooLarge {
                size: 1001,
                limit: 1000
            })
        ),
        "{e:?}"
    );
    assert!(matches!(
        client.status(&WorkflowId::from("limit-over")).await,
        Err(ClientError::NotFound(_))
    ));
    t.row(
        "input exactly at the payload limit (1,000 bytes)",
        "accepted, run created",
        "n/a: the CLI keeps the 2 MiB default, past argv's 128 KiB",
    );
    t.row(
        "input of limit + 1 bytes",
        format!("PayloadError::TooLarge {}", described(&e)),
        "n/a (as above)",
    );
    let e = api_unchanged!(
        "signal limit+1",
        small
            .signal(&WorkflowId::from("limit-ok"), "approve", &over)
            .await
            .unwrap_err()
    );
    assert!(
        matches!(e, ClientError::Payload(PayloadError::TooLarge { .. })),
        "{e:?}"
    );
    small
        .signal(&WorkflowId::from("limit-ok"), "approve", &at_limit)
        .await
        .expect("a signal at the limit");
    small
        .cancel(&WorkflowId::from("limit-ok"), "cancellable")
        .await
        .expect("the run stays cancellable");
    t.row(
        "signal body of limit + 1 bytes",
        "PayloadError::TooLarge; the run is still signalled at the limit and cancelled after",
        "n/a (as above)",
    );

    // A payload that does not decode into the declared type.
    let e = client
        .result::<flows::timer_v0>("done", Some(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Payload(PayloadError::Decode { .. })),
        "{e:?}"
    );
    t.row(
        "run output read as the wrong type",
        format!("ClientError::Payload {}", described(&e)),
        "n/a: the CLI renders through the registered type",
    );

    // Durations on the command line.
    for (case, args, needle) in [
        (
            "--timeout inf",
            vec!["result", "open", "--wait", "--timeout", "inf"],
            "--timeout",
        ),
        (
            "--timeout 1e400 (overflows f64)",
            vec!["result", "open", "--wait", "--timeout", "1e400"],
            "--timeout",
        ),
        (
            "--timeout=-0.5",
            vec!["result", "open", "--wait", "--timeout=-0.5"],
            "--timeout",
        ),
        ("--since soon", vec!["list", "--since", "soon"], "--since"),
        ("--since '' (empty)", vec!["list", "--since", ""], "--since"),
        (
            "--stuck 99999999999999999999999d (overflow)",
            vec!["list", "--stuck", "99999999999999999999999d"],
            "--stuck",
        ),
        (
            "--stuck=-5m (negative)",
            vec!["list", "--stuck=-5m"],
            "--stuck",
        ),
        (
            "--lease-ms -1",
            vec!["worker", "--lease-ms=-1"],
            "--lease-ms",
        ),
    ] {
        t.row(
            case,
            "n/a (Duration is typed)",
            cli_refused(&db, &args, needle),
        );
    }
    let huge = unchanged(&db, "--since 500000000years", || {
        support::order(&db, &["list", "--since", "500000000years", "--json"]).run()
    });
    assert_eq!(
        huge.ok().lines().count(),
        4,
        "every run is newer than that: {}",
        huge.stdout
    );
    t.row(
        "--since 500000000years (saturates)",
        "n/a",
        "exit 0, lists every run, nothing written",
    );

    // history --export never overwrites.
    let existing = dir.path().join("existing.json");
    std::fs::write(&existing, "keep me").expect("write");
    let cli = cli_refused(
        &db,
        &[
            "history",
            "done",
            "--export",
            &existing.display().to_string(),
        ],
        "cannot create",
    );
    assert_eq!(std::fs::read_to_string(&existing).expect("read"), "keep me");
    t.row("history --export onto an existing file", "n/a", cli);

    drop((client, small, store));
    support::assert_no_engine_panics();
    t.print("bad requests");
    assert!(t.0.len() >= 40, "{} cases", t.0.len());
}

// --- files that are not (quite) databases ---------------------------------------------

/// Opens `db` through the API and reads everything; returns the first error.
async fn api_read_all(db: &Path) -> Result<usize, StoreError> {
    let store: SharedStore = std::sync::Arc::new(SqliteStore::open(
        db,
        SqliteOptions {
            create: false,
            ..SqliteOptions::default()
        },
    )?);
    let runs = store.list_runs(Default::default()).await?;
    let mut events = 0;
    for r in &runs {
        events += store.read_history(r.key, EventId(0)).await?.len();
        store.read_inbox(r.key).await?;
        store.pending_activities(r.key).await?;
        store.pending_timers(r.key).await?;
    }
    Ok(events)
}

/// The CLI on a damaged file: success, or the error contract; never a panic or a write.
fn cli_reads(db: &Path) -> Vec<Output> {
    let mut outs = Vec::new();
    for args in [
        &["list", "--json"][..],
        &["history", "done", "--json"],
        &["status", "open"],
    ] {
        let before = Snapshot::take(db);
        let out = support::order(db, args).run();
        if out.code != Some(0) {
            out.refused(2, "");
        }
        out.no_panic();
        Snapshot::take(db).assert_same(&before, &out.what);
        outs.push(out);
    }
    outs
}

fn page_size(db: &Path) -> usize {
    let bytes = std::fs::read(db).expect("read");
    let raw = u16::from_be_bytes([bytes[16], bytes[17]]);
    if raw == 1 { 65_536 } else { usize::from(raw) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_are_not_durable_databases_are_refused_untouched() {
    support::watch_panics();
    let seed = support::seed("files_that_are_not_durable_databases_are_refused_untouched");
    let mut rng = support::Rng::new(seed);
    let dir = support::temp_dir();
    let good = dir.path().join("good.db");
    fixture(&good).await;
    let mut t = Table::default();
    let copy = |name: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::copy(&good, &p).expect("copy the fixture");
        p
    };
    let foreign_msg = "not a durable database";

    let check_refused = |t: &mut Table, case: &str, db: &Path, needle: &str| {
        let before = Snapshot::take(db);
        let rt = tokio::runtime::Handle::current();
        let api = std::thread::scope(|s| {
            s.spawn(|| rt.block_on(api_read_all(db)))
                .join()
                .expect("no panic")
        });
        let e = api.expect_err(case);
        assert!(e.to_string().contains(needle), "{case}: {e}");
        Snapshot::take(db).assert_same(&before, case);
        let list = cli_refused(db, &["list"], needle);
        cli_refused(db, &["status", "done"], needle);
        cli_refused(db, &["worker"], needle);
        t.row(
            case,
            format!("{} {}", variant(&e), described(&e)),
            format!("{list} (list, status, worker alike)"),
        );
    };

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").expect("write");
    check_refused(&mut t, "zero-length file", &empty, foreign_msg);

    let random = dir.path().join("random.db");
    std::fs::write(&random, rng.bytes(64 * 1024)).expect("write");
    check_refused(&mut t, "64 KiB of random bytes", &random, foreign_msg);

    let foreign = dir.path().join("notes.sqlite");
    {
        let conn = rusqlite::Connection::open(&foreign).expect("create");
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('milk');")
            .expect("fill");
    }
    check_refused(
        &mut t,
        "a SQLite database of another application",
        &foreign,
        foreign_msg,
    );

    let newer = copy("newer.db");
    {
        let conn = rusqlite::Connection::open(&newer).expect("open");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        conn.pragma_update(None, "user_version", v + 1)
            .expect("bump");
    }
    support::settle(&newer);
    check_refused(
        &mut t,
        "our schema at user_version + 1",
        &newer,
        "newer than this binary supports",
    );

    let directory = dir.path().join("dir.db");
    std::fs::create_dir(&directory).expect("mkdir");
    check_refused(&mut t, "--db is a directory", &directory, "a directory");

    // A -wal from another database next to ours: SQLite would fold it into our file on
    // close; the store checks what it opened before that can happen.
    let wal_victim = copy("victim.db");
    let other = dir.path().join("other.db");
    let holder = rusqlite::Connection::open(&other).expect("open other");
    holder
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE other (x BLOB); INSERT INTO other VALUES (randomblob(20000));",
        )
        .expect("fill other");
    std::fs::copy(
        support::with_suffix(&other, "-wal"),
        support::with_suffix(&wal_victim, "-wal"),
    )
    .expect("copy the foreign wal");
    drop(holder);
    check_refused(
        &mut t,
        "a -wal file from another database",
        &wal_victim,
        foreign_msg,
    );

    // A truncated database: cut at a random page boundary.
    let pages = std::fs::metadata(&good).expect("meta").len() / page_size(&good) as u64;
    let cut = 1 + rng.below(usize::try_from(pages - 1).expect("pages"));
    let truncated = copy("truncated.db");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .and_then(|f| f.set_len((cut * page_size(&good)) as u64))
        .expect("truncate");
    let before = Snapshot::take(&truncated);
    let api = api_read_all(&truncated).await;
    Snapshot::take(&truncated).assert_same(&before, "reading a truncated db");
    let outs = cli_reads(&truncated);
    let failed = outs.iter().filter(|o| o.code != Some(0)).count();
    t.row(
        &format!("database truncated after page {cut} of {pages}"),
        match &api {
            Ok(n) => format!("read {n} events"),
            Err(e) => format!("{} {}", variant(e), described(e)),
        },
        format!(
            "{failed} of 3 read commands refused with one line, the rest answered; nothing written"
        ),
    );
    assert!(
        api.is_err() || failed > 0 || cut + 1 >= usize::try_from(pages).unwrap_or(0),
        "a truncated db read cleanly"
    );

    // A flipped byte in the header of each b-tree page in turn (API), and of one seeded
    // page through the CLI.
    let mut refused = 0;
    for page in 2..=usize::try_from(pages).expect("pages") {
        let flipped = copy("flipped.db");
        let mut bytes = std::fs::read(&flipped).expect("read");
        bytes[(page - 1) * page_size(&good)] ^= 0xff;
        std::fs::write(&flipped, &bytes).expect("write");
        let before = Snapshot::take(&flipped);
        if api_read_all(&flipped).await.is_err() {
            refused += 1;
        }
        Snapshot::take(&flipped).assert_same(&before, "reading a flipped db");
        std::fs::remove_file(&flipped).expect("rm");
    }
    let page = 2 + rng.below(usize::try_from(pages).expect("pages") - 1);
    let flipped = copy("flipped-cli.db");
    let mut bytes = std::fs::read(&flipped).expect("read");
    bytes[(page - 1) * page_size(&good)] ^= 0xff;
    std::fs::write(&flipped, &bytes).expect("write");
    let outs = cli_reads(&flipped);
    let failed = outs.iter().filter(|o| o.code != Some(0)).count();
    t.row(
        &format!("a flipped byte in the header of b-tree pages 2..{pages}"),
        format!("{refused} of {} pages: StoreError::Corrupt on reading the run; the others are index or free pages the reads do not touch", pages - 1),
        format!("page {page}: {failed} of 3 read commands refused with one line; nothing written"),
    );
    assert!(refused > 0, "no flipped page was noticed");

    // Random single-byte damage anywhere, through the API: never a panic, never a write.
    let mut errors = 0;
    let flips = 200;
    for _ in 0..flips {
        let damaged = copy("damaged.db");
        let mut bytes = std::fs::read(&damaged).expect("read");
        let at = rng.below(bytes.len());
        bytes[at] ^= 1 << rng.below(8);
        std::fs::write(&damaged, &bytes).expect("write");
        let before = Snapshot::take(&damaged);
        if api_read_all(&damaged).await.is_err() {
            errors += 1;
        }
        Snapshot::take(&damaged).assert_same(&before, "reading a damaged db");
        std::fs::remove_file(&damaged).expect("rm");
        let _ = std::fs::remove_file(support::with_suffix(&damaged, "-shm"));
    }
    t.row(
        &format!("{flips} random bit flips anywhere in the file (seed {seed})"),
        format!("{errors} refused with an error, {} read (SQLite has no page checksums; a flip inside a value changes the value)", flips - errors),
        "n/a",
    );

    read_only_file(&mut t, dir.path(), &good);

    support::assert_no_engine_panics();
    t.print("files");
}

fn variant(e: &StoreError) -> &'static str {
    match e {
        StoreError::Foreign { .. } => "StoreError::Foreign",
        StoreError::TooNew { .. } => "StoreError::TooNew",
        StoreError::Corrupt(_) => "StoreError::Corrupt",
        StoreError::Io(_) => "StoreError::Io",
        StoreError::Invalid(_) => "StoreError::Invalid",
        _ => "StoreError",
    }
}

/// `--db` a file this user may only read: as root, the CLI runs as `nobody`.
fn read_only_file(t: &mut Table, dir: &Path, good: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let ro_dir = dir.join("ro");
        std::fs::create_dir(&ro_dir).expect("mkdir");
        let db = ro_dir.join("readonly.db");
        std::fs::copy(good, &db).expect("copy");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).expect("chmod");
        std::fs::set_permissions(&ro_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let root = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);
        let run = |args: &[&str]| {
            let cmd = support::order(&db, args);
            if root {
                cmd.uid(65_534).run()
            } else {
                cmd.run()
            }
        };
        let before = Snapshot::take(&db);
        let list = run(&["list", "--json"]);
        list.no_panic();
        let start = run(&["start", "order", "--input", &order_input(), "--id", "ro"]);
        let line = start.refused(2, "");
        Snapshot::take(&db).assert_same(&before, "commands on a read-only file");
        let list_said = if list.code == Some(0) {
            "list: exit 0".to_owned()
        } else {
            format!("list: {}", short(&list.refused(2, "")))
        };
        t.row(
            "--db a read-only file (CLI run as nobody)",
            "n/a (same open path)",
            format!("{list_said}; start: {}", short(&line)),
        );
    }
}

// --- accepted input the engine must handle --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_oddities_end_runs_clearly_instead_of_sticking() {
    support::watch_panics();
    let dir = support::temp_dir();
    let db = dir.path().join("odd.db");
    let store = support::open(&db);
    let options = WorkerOptions {
        max_payload_bytes: 1_000,
        lease: Duration::MAX,
        activation_deadline: Duration::MAX,
        default_start_to_close: Duration::MAX,
        ..support::quick_options()
    };
    let mut t = support::with_worker(&store, registry(), options, |client| async move {
        let mut t = Table::default();
        client.start::<big_activity_output>("big-out", &()).await.expect("start");
        client.start::<big_output>("big-run-out", &()).await.expect("start");
        client.start::<big_activity_input>("big-in", &()).await.expect("start");
        client.start_encoded("no.such.workflow", WorkflowId::from("unknown"), Payload::encode(&()).expect("encode"))
            .await
            .expect("the client does not know the registry");
        client.start_encoded("hd.seq", WorkflowId::from("wrong-input"), Payload::encode(&42_u32).expect("encode"))
            .await
            .expect("start");
        client.start::<flows::signal_v0>("wrong-signal", &()).await.expect("start");
        client.start::<extremes>("extremes", &()).await.expect("start");
        client.start::<forever_retry>("forever", &()).await.expect("start");

        let info = support::wait_settled(&client, "big-out").await;
        let e = client.result::<big_activity_output>("big-out", None).await.unwrap_err();
        assert_eq!(info.status, RunStatus::Failed);
        assert!(e.to_string().contains("PayloadTooLarge"), "{e}");
        t.row("an activity output over the limit (5,000 > 1,000 bytes)", format!("the attempt fails for good as `PayloadTooLarge`; the run gets the error (here: fails) {}", described(&e)), "-");

        let info = support::wait_settled(&client, "big-run-out").await;
        assert_eq!(info.status, RunStatus::Suspended);
        let reason = info.reason.unwrap_or_default();
        assert!(reason.contains("over the payload limit"), "{reason}");
        assert!(!reason.contains("panicked"), "an oversized output is not a panic: {reason}");
        t.row("a run output over the limit", format!("suspended: {}", described(&reason)), "-");

        let info = support::wait_settled(&client, "big-in").await;
        assert_eq!(info.status, RunStatus::Suspended);
        let reason = info.reason.unwrap_or_default();
        assert!(reason.contains("over the payload limit"), "{reason}");
        assert!(!reason.contains("panicked"), "an oversized input is not a panic: {reason}");
        t.row("an activity input over the limit", format!("suspended: {}", described(&reason)), "-");

        // Workers claim only runs of the workflows they register: this one waits, ready
        // and unowned, for a worker that has it, and counts no failed activation (the
        // runs above settled, so the worker polled past it many times).
        let info = client.status(&WorkflowId::from("unknown")).await.expect("status");
        assert_eq!(info.status, RunStatus::Running, "{info:?}");
        assert_eq!(info.owner, None, "{info:?}");
        assert_eq!(info.activation_failures, 0, "{info:?}");
        t.row("a run of a workflow no worker has", "waits, unclaimed and uncounted, for a worker that registers it", "-");

        let info = support::wait_settled(&client, "wrong-input").await;
        assert_eq!(info.status, RunStatus::Failed);
        let e = client.wait_encoded(&WorkflowId::from("wrong-input"), None).await.unwrap_err();
        assert!(e.to_string().contains("PayloadError"), "{e}");
        t.row("an input that does not decode into the input type", format!("the run fails: {}", described(&e)), "-");

        support::wait_history(&client, "wrong-signal", "waiting", |h| h.len() >= 4).await;
        client.signal(&WorkflowId::from("wrong-signal"), "approve", &"not a number").await.expect("signal");
        let info = support::wait_settled(&client, "wrong-signal").await;
        assert_eq!(info.status, RunStatus::Failed);
        let e = client.wait_encoded(&WorkflowId::from("wrong-signal"), None).await.unwrap_err();
        assert!(e.to_string().contains("PayloadError"), "{e}");
        t.row("a signal body of the wrong type", format!("the wait returns the error, the run fails: {}", described(&e)), "`signal` takes any JSON: accepted");

        let out = client.result::<extremes>("extremes", Some(Duration::from_secs(20))).await.expect("completes");
        assert_eq!(out, "short None e flaky:f");
        t.row("Duration::MAX timers, timeouts, lease, deadline; NaN backoff and jitter", "completed normally", "`worker --lease-ms 18446744073709551615`: see below");

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let next = loop {
            let info = client.status(&WorkflowId::from("forever")).await.expect("status");
            let pending = client.store().pending_activities(info.key).await.expect("pending");
            if let Some(p) = pending.iter().find(|p| p.last_error.is_some()) {
                break p.available_at_ms;
            }
            assert!(std::time::Instant::now() < deadline, "the first attempt did not fail");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(next > durable::clock::now_ms() + 1_000_000_000_000, "next attempt at {next}");
        client.cancel(&WorkflowId::from("forever"), "give up").await.expect("cancel");
        let info = support::wait_settled(&client, "forever").await;
        assert_eq!(info.status, RunStatus::Failed);
        t.row("a retry interval of u64::MAX ms, infinite backoff, negative jitter", "the retry is scheduled at the end of time (saturated), and the run is still cancellable", "-");
        t
    })
    .await;

    // The CLI worker with every interval at u64::MAX milliseconds: no overflow.
    drop(store);
    support::settle(&db);
    let out = support::order(
        &db,
        &[
            "worker",
            "--lease-ms",
            "18446744073709551615",
            "--poll-ms",
            "18446744073709551615",
        ],
    )
    .run_for(Duration::from_millis(1500));
    out.no_panic();
    assert!(out.code.is_none(), "the worker ran until killed: {out:?}");
    t.row(
        "`worker --lease-ms 18446744073709551615 --poll-ms 18446744073709551615`",
        "-",
        "runs without overflow until stopped",
    );

    support::assert_no_engine_panics();
    t.print("accepted oddities");
}

// --- history files ---------------------------------------------------------------------

#[test]
fn bad_history_files_are_clear_errors() {
    support::watch_panics();
    let dir = support::temp_dir();
    let db = dir.path().join("nothing.db");
    let mut t = Table::default();
    let replayer = Replayer::new(flows::base_registry());
    let seq_file = crate::nondeterminism::history_file("hd.seq");
    let text = std::fs::read_to_string(seq_file).expect("read");

    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let mut rng = support::Rng::new(7);
    let zero = write("zero.json", b"");
    let random = write("random.json", &rng.bytes(4096));
    let folder = dir.path().join("folder.json");
    std::fs::create_dir(&folder).expect("mkdir");
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(durable_core::history::MAX_FILE_BYTES + 1))
        .expect("sparse file");
    let odd_hex = write("odd-hex.json", replace_input(&text, "abc").as_bytes());
    let bad_hex = write("bad-hex.json", replace_input(&text, "zz").as_bytes());
    // The input of hd.seq is a string; 42 is a valid payload of another type.
    let wrong_type = write("wrong-type.json", replace_input(&text, "2a").as_bytes());
    // A history of another workflow, relabelled as hd.seq.
    let timer_text =
        std::fs::read_to_string(crate::nondeterminism::history_file("hd.timer")).expect("read");
    let relabelled = write(
        "relabelled.json",
        timer_text.replace("\"hd.timer\"", "\"hd.seq\"").as_bytes(),
    );
    // Declared lengths of 4 GiB in the input's MessagePack.
    let claims: Vec<PathBuf> = ["dd", "df", "db", "c6", "c9"]
        .iter()
        .map(|m| {
            write(
                &format!("claim-{m}.json"),
                replace_input(&text, &format!("{m}ffffffff")).as_bytes(),
            )
        })
        .collect();

    for (case, file, code, needle) in [
        (
            "zero-length history file",
            &zero,
            2,
            "not a durable history file",
        ),
        (
            "4 KiB of random bytes as a history file",
            &random,
            2,
            "cannot read",
        ),
        ("a directory as the history file", &folder, 2, "cannot read"),
        (
            "a history file of 256 MiB + 1 byte (sparse)",
            &huge,
            2,
            "over the limit",
        ),
        (
            "a payload with an odd number of hex digits",
            &odd_hex,
            2,
            "odd length",
        ),
        (
            "a payload with invalid hex digits",
            &bad_hex,
            2,
            "invalid hex",
        ),
        (
            "an input that does not decode into the workflow's input type",
            &wrong_type,
            1,
            "non-determinism",
        ),
        (
            "the history of another workflow under this one's name",
            &relabelled,
            1,
            "non-determinism",
        ),
    ] {
        let api = replayer.replay_file(file).expect_err(case);
        let cli = unchanged(&db, case, || {
            support::host_cli(
                "base",
                &db,
                &["replay", "--file", &file.display().to_string()],
            )
            .run()
        });
        let line = cli.refused(code, needle);
        t.row(
            case,
            api_replay_variant(&api),
            format!(
                "exit {code}: `{}`",
                line.chars().take(80).collect::<String>()
            ),
        );
    }
    for file in &claims {
        let began = std::time::Instant::now();
        let api = replayer.replay_file(file).expect_err("a 4 GiB claim");
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "took {:?}",
            began.elapsed()
        );
        let rss = dir.path().join("rss");
        let cli = support::host_cli(
            "base",
            &db,
            &["replay", "--file", &file.display().to_string()],
        )
        .env("HARDENING_PEAK_RSS_OUT", &rss)
        .run();
        cli.refused(1, "non-determinism");
        let peak: u64 = std::fs::read_to_string(&rss)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
        t.row(
            &format!(
                "an input whose MessagePack declares 4 GiB ({})",
                file.file_name().and_then(|n| n.to_str()).unwrap_or("")
            ),
            format!("{} in {:?}", api_replay_variant(&api), began.elapsed()),
            format!("exit 1, peak RSS {} MiB", peak / 1024),
        );
    }
    support::assert_no_engine_panics();
    t.print("history files");
}

fn api_replay_variant(e: &ReplayFileError) -> String {
    match e {
        ReplayFileError::File(f) => format!("ReplayFileError::File {}", described(f)),
        ReplayFileError::Replay { source, .. } => {
            let v = match source {
                ReplayError::Nondeterminism { .. } => "Nondeterminism",
                ReplayError::MissingCommand { .. } => "MissingCommand",
                ReplayError::UnknownWorkflow { .. } => "UnknownWorkflow",
                ReplayError::Corrupt { .. } => "Corrupt",
                ReplayError::Malformed { .. } => "Malformed",
                _ => "other",
            };
            format!("ReplayError::{v} {}", described(source))
        }
        _ => "other".into(),
    }
}

/// The history text with the first event's input replaced by these hex bytes.
fn replace_input(text: &str, hex: &str) -> String {
    let mut file = HistoryFile::parse(text, "corpus").expect("parse");
    if let EventKind::RunStarted { input, .. } = &mut file.events[0].kind {
        *input = Payload(vec![0]);
    }
    // `0` encodes as "00": put the chosen hex in its place.
    let json = file.to_json();
    let at = json.find("\"msgpack\": \"00\"").expect("the input's bytes");
    format!(
        "{}\"msgpack\": \"{hex}\"{}",
        &json[..at],
        &json[at + "\"msgpack\": \"00\"".len()..]
    )
}
