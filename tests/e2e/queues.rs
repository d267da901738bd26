//! Task queue limits end to end, with the queues example's binary: three worker
//! processes sharing one database never run more calls of a limited queue at once than
//! its concurrency limit (the calls themselves log their starts and ends to a file), a
//! rate limit spaces the starts, and the `queue` subcommands show, list, clear and
//! refuse bad input with one error line and nothing written. The worker tests run on a
//! SQLite file, and on PostgreSQL too when `DURABLE_TEST_DATABASE_URL` is set.

use crate::support::{
    ChildGuard, CliOutput, DbSnapshot, OrderCmd, example_raw, settle, temp_dir, wait_until,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the processes of one test keep their state: a SQLite file, or a schema of its
/// own on the PostgreSQL test server (dropped at the end).
enum Db {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl Db {
    fn args(&self) -> Vec<String> {
        match self {
            Db::Sqlite(path) => vec!["--db".into(), path.display().to_string()],
            Db::Postgres { url, schema } => vec![
                "--database-url".into(),
                url.clone(),
                "--database-schema".into(),
                schema.clone(),
            ],
        }
    }

    fn cmd(&self, args: &[&str]) -> OrderCmd {
        let mut all = self.args();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        example_raw("queues", &all)
    }

    fn run(&self, args: &[&str]) -> CliOutput {
        self.cmd(args).run()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Postgres { url, schema } = self {
            drop_schema(url, schema);
        }
    }
}

fn drop_schema(url: &str, schema: &str) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await
        else {
            return;
        };
        let driver = tokio::spawn(connection);
        if let Err(e) = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
        {
            eprintln!("could not drop test schema {schema}: {e}");
        }
        drop(client);
        let _ = driver.await;
    });
}

/// The PostgreSQL test database, or `None` (with the reason printed) without one.
fn postgres(test: &str) -> Option<Db> {
    let Ok(url) = std::env::var("DURABLE_TEST_DATABASE_URL") else {
        println!("skipping {test} on PostgreSQL: DURABLE_TEST_DATABASE_URL is not set");
        return None;
    };
    let schema = format!("e2e_queues_{}", std::process::id())
        + &format!("_{}", durable::clock::now_ms() % 1_000_000);
    Some(Db::Postgres { url, schema })
}

/// Three worker processes serving the default queue and `api`.
fn three_workers(db: &Db, log: &Path) -> Vec<ChildGuard> {
    (0..3)
        .map(|_| {
            db.cmd(&["worker", "--poll-ms", "20", "--task-queue", "default,api"])
                .spawn(log)
        })
        .collect()
}

/// One line of the calls' log: `start|end page pid ms`.
struct Call {
    start: bool,
    page: u32,
    pid: u32,
    ms: i64,
}

fn malformed(line: &str) -> ! {
    panic!("malformed call log line {line:?}")
}

fn read_calls(path: &Path) -> Vec<Call> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() != 4 {
                malformed(line);
            }
            Call {
                start: match parts[0] {
                    "start" => true,
                    "end" => false,
                    _ => malformed(line),
                },
                page: parts[1].parse().unwrap_or_else(|_| malformed(line)),
                pid: parts[2].parse().unwrap_or_else(|_| malformed(line)),
                ms: parts[3].parse().unwrap_or_else(|_| malformed(line)),
            }
        })
        .collect()
}

/// The most calls running at once, by the order of the log's lines (each line is one
/// append, so the order is the order of the events).
fn max_running(calls: &[Call]) -> usize {
    let mut running = 0_usize;
    let mut max = 0;
    for c in calls {
        if c.start {
            running += 1;
            max = max.max(running);
        } else {
            running = running.saturating_sub(1);
        }
    }
    max
}

fn wait_for_results(db: &Db, ids: &[&str], pages: u32, workers: &mut [ChildGuard]) {
    for id in ids {
        let out = db
            .cmd(&["result", id, "--wait", "--timeout", "150"])
            .timeout(Duration::from_secs(180))
            .run();
        if out.code != Some(0) {
            let tail = workers.first().map(|w| w.log_tail(40)).unwrap_or_default();
            panic!(
                "crawl {id} did not finish: {}{}\nworker log:\n{tail}",
                out.stdout, out.stderr
            );
        }
        assert_eq!(out.stdout.trim(), pages.to_string(), "crawl {id}");
    }
    for w in workers.iter_mut() {
        w.assert_running();
    }
}

fn concurrency_limit_holds_across_processes(db: &Db) {
    let dir = temp_dir();
    let calls_log = dir.path().join("calls.log");
    let log = dir.path().join("workers.log");
    db.run(&["queue", "set-limit", "api", "--concurrency", "2"])
        .ok();
    let mut workers = three_workers(db, &log);
    let input = serde_json::json!({
        "pages": 8,
        "work_ms": 120,
        "log": calls_log.display().to_string(),
    })
    .to_string();
    for id in ["c-1", "c-2"] {
        db.run(&["start", "crawl", "--id", id, "--input", &input])
            .ok();
    }
    // While the crawls run, the queue shows at most 2 running.
    let mut seen_running = 0;
    wait_until(Duration::from_secs(150), "the crawls to finish", || {
        let shown = db.run(&["queue", "show", "api", "--json"]);
        let v: serde_json::Value = serde_json::from_str(shown.ok().trim())
            .unwrap_or_else(|e| panic!("queue show --json: {e}"));
        let running = v["running"].as_u64().expect("running is a number");
        assert!(running <= 2, "queue show reports {running} running: {v}");
        seen_running = seen_running.max(running);
        let done = read_calls(&calls_log).iter().filter(|c| !c.start).count();
        if done >= 16 {
            Ok(())
        } else {
            Err(format!("{done} of 16 calls done"))
        }
    });
    wait_for_results(db, &["c-1", "c-2"], 8, &mut workers);
    let calls = read_calls(&calls_log);
    let starts = calls.iter().filter(|c| c.start).count();
    assert!(starts >= 16, "every page was fetched: {starts} starts");
    let mut pages: Vec<u32> = calls.iter().filter(|c| c.start).map(|c| c.page).collect();
    pages.sort_unstable();
    pages.dedup();
    assert_eq!(pages.len(), 8, "pages 1 to 8 of both crawls");
    let max = max_running(&calls);
    assert!(max <= 2, "{max} calls ran at once on a queue limited to 2");
    assert_eq!(max, 2, "the limit is used, not just respected");
    let mut pids: Vec<u32> = calls.iter().map(|c| c.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    println!(
        "{starts} calls in {} worker processes, at most {max} at once; queue show saw {seen_running}",
        pids.len()
    );
    let shown = db.run(&["queue", "show", "api"]);
    let text = shown.ok();
    assert!(text.contains("limits:   concurrency 2"), "{text}");
    assert!(text.contains("running:  0"), "{text}");
}

fn rate_limit_spaces_starts_across_processes(db: &Db) {
    let dir = temp_dir();
    let calls_log = dir.path().join("calls.log");
    let log = dir.path().join("workers.log");
    db.run(&["queue", "set-limit", "api", "--rate", "5/s"]).ok();
    let mut workers = three_workers(db, &log);
    // Workers up first, so the clock below measures the limit, not process starts.
    std::thread::sleep(Duration::from_millis(500));
    let input = serde_json::json!({
        "pages": 30,
        "work_ms": 5,
        "log": calls_log.display().to_string(),
    })
    .to_string();
    let began = Instant::now();
    db.run(&["start", "crawl", "--id", "r-1", "--input", &input])
        .ok();
    wait_for_results(db, &["r-1"], 30, &mut workers);
    let took = began.elapsed();
    // A burst of 5 at once, then 25 more at 5 per second: 5 s at least.
    assert!(
        took >= Duration::from_millis(4_800),
        "30 calls at 5/s finished in {took:?}"
    );
    let starts: Vec<i64> = read_calls(&calls_log)
        .iter()
        .filter(|c| c.start)
        .map(|c| c.ms)
        .collect();
    assert_eq!(starts.len(), 30);
    for (i, from) in starts.iter().enumerate() {
        let within = starts[i..].iter().filter(|&&t| t < from + 1_000).count();
        // The bucket's 5 plus 5 refilled within the second; the log's times trail the
        // store's starts by a process's scheduling delay, so allow two more.
        assert!(
            within <= 12,
            "{within} calls started within 1 s of {from}; 5/s allows at most 10"
        );
    }
    println!("30 calls at 5/s took {took:?}");
}

#[test]
fn three_worker_processes_never_exceed_the_concurrency_limit() {
    let dir = temp_dir();
    concurrency_limit_holds_across_processes(&Db::Sqlite(dir.path().join("q.db")));
}

#[test]
fn three_worker_processes_never_exceed_the_concurrency_limit_on_postgres() {
    if let Some(db) = postgres("three_worker_processes_never_exceed_the_concurrency_limit") {
        concurrency_limit_holds_across_processes(&db);
    }
}

#[test]
fn a_rate_limit_spaces_the_starts_of_three_worker_processes() {
    let dir = temp_dir();
    rate_limit_spaces_starts_across_processes(&Db::Sqlite(dir.path().join("q.db")));
}

#[test]
fn a_rate_limit_spaces_the_starts_of_three_worker_processes_on_postgres() {
    if let Some(db) = postgres("a_rate_limit_spaces_the_starts_of_three_worker_processes") {
        rate_limit_spaces_starts_across_processes(&db);
    }
}

/// Runs a bad `queue` command: exit 2, one `error:` line naming `needle`, the database
/// byte for byte as before.
#[track_caller]
fn assert_refused(db: &Db, path: &Path, args: &[&str], needle: &str) {
    settle(path);
    let before = DbSnapshot::take(path);
    let out = db.run(args);
    out.expect_one_error_line(2, needle);
    DbSnapshot::take(path).assert_unchanged_since(&before, &out.what);
}

#[test]
fn queue_subcommands_show_list_clear_and_refuse_bad_input() {
    let dir = temp_dir();
    let path = dir.path().join("q.db");
    let db = Db::Sqlite(path.clone());

    // No database yet: showing creates nothing.
    db.run(&["queue", "show", "api"])
        .expect_one_error_line(2, "no database");
    assert!(!path.exists(), "queue show created a database");

    let set = db.run(&[
        "queue",
        "set-limit",
        "api",
        "--concurrency",
        "3",
        "--rate",
        "10/s",
        "--burst",
        "4",
    ]);
    assert_eq!(
        set.ok().trim(),
        "queue api: concurrency 3, rate 10/s (burst 4)"
    );
    db.run(&["queue", "set-limit", "default", "--rate", "100/m"])
        .ok();
    let listed = db.run(&["queue", "list", "--json"]).json_lines();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["queue"], "default");
    assert_eq!(listed[0]["limit"]["rate"]["shown"], "100/m");
    assert_eq!(listed[1]["queue"], "api");
    assert_eq!(listed[1]["limit"]["concurrency"], 3);
    assert_eq!(listed[1]["limit"]["rate"]["burst"], 4);
    assert_eq!(listed[1]["tokens"], 4);
    let table = db.run(&["queue", "list"]);
    let table = table.ok();
    assert!(
        table.lines().next().is_some_and(|l| l.starts_with("QUEUE")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("api") && l.contains("10/s (burst 4)")),
        "{table}"
    );

    for (args, needle) in [
        (&["queue", "set-limit", "api"][..], "--concurrency"),
        (&["queue", "set-limit", "api", "--concurrency", "0"], "0"),
        (&["queue", "set-limit", "api", "--concurrency", "-2"], "-2"),
        (
            &["queue", "set-limit", "api", "--concurrency", "many"],
            "many",
        ),
        (&["queue", "set-limit", "api", "--rate", "5"], "N/s"),
        (&["queue", "set-limit", "api", "--rate", "5/day"], "unit"),
        (
            &["queue", "set-limit", "api", "--rate", "0/s"],
            "at least 1",
        ),
        (
            &[
                "queue",
                "set-limit",
                "api",
                "--concurrency",
                "1",
                "--burst",
                "3",
            ],
            "--rate",
        ),
        (
            &["queue", "set-limit", "", "--concurrency", "1"],
            "'default'",
        ),
        (&["queue", "set-limit", "--concurrency", "1"], "QUEUE"),
        (&["queue", "show"], "QUEUE"),
        (&["queue", "unknown"], "unknown"),
    ] {
        assert_refused(&db, &path, args, needle);
    }

    let shown = db.run(&["queue", "show", "api", "--json"]);
    let v: serde_json::Value = serde_json::from_str(shown.ok().trim()).expect("JSON");
    assert_eq!(
        v["limit"]["concurrency"], 3,
        "refused commands changed nothing"
    );

    assert_eq!(
        db.run(&["queue", "clear-limit", "api"]).ok().trim(),
        "queue api: limits removed"
    );
    assert_eq!(
        db.run(&["queue", "clear-limit", "api"]).ok().trim(),
        "queue api had no limits"
    );
    let shown = db.run(&["queue", "show", "api"]);
    assert!(shown.ok().contains("limits:   none"));
    let listed = db.run(&["queue", "list", "--json"]).json_lines();
    assert_eq!(listed.len(), 1, "only the default queue keeps a limit");
}

#[test]
fn status_says_an_activity_waits_for_room_on_its_limited_queue() {
    let dir = temp_dir();
    let db = Db::Sqlite(dir.path().join("q.db"));
    db.run(&["queue", "set-limit", "api", "--concurrency", "1"])
        .ok();
    let _worker = db
        .cmd(&["worker", "--poll-ms", "20", "--task-queue", "default,api"])
        .spawn(&dir.path().join("worker.log"));
    let input = r#"{"pages":2,"work_ms":5000}"#;
    db.run(&["start", "crawl", "--id", "s-1", "--input", input])
        .ok();
    let why = wait_until(
        Duration::from_secs(30),
        "status to name the full queue",
        || {
            let out = db.run(&["status", "s-1"]);
            let text = out.ok().to_owned();
            match text.lines().find(|l| l.starts_with("why:")) {
                Some(line) if line.contains("waits for room") => Ok(line.to_owned()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    assert!(
        why.contains("on task queue api (concurrency 1; 1 running, 1 waiting)"),
        "{why}"
    );
}

/// Calls of `slow_step` running now in this process, and the most seen at once.
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static MOST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[durable::activity]
async fn slow_step(_ctx: durable::ActivityContext, n: u32) -> Result<u32, durable::ActivityError> {
    use std::sync::atomic::Ordering;
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(60)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    Ok(n)
}

/// Four calls at once, on the queue spelled `default`.
#[durable::workflow]
async fn fan_out_on_default(
    ctx: durable::WorkflowContext,
    _input: (),
) -> Result<u32, durable::WorkflowError> {
    let calls = (1..=4).map(|n| ctx.activity::<slow_step>(n).task_queue("default"));
    let mut sum = 0;
    for r in futures::future::join_all(calls).await {
        sum += r?;
    }
    Ok(sum)
}

/// A limit set on `default` applies to calls that name the default queue, run at once by
/// the worker that scheduled them (the commit's local attempts) or claimed later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_on_the_default_queue_holds_for_local_attempts_in_process() {
    use crate::workflows::{Running, WAIT, open};
    let dir = temp_dir();
    let store = open(&dir.path().join("d.db"));
    let client = durable::Client::new(store.clone());
    client
        .set_queue_limit("default", durable::QueueLimit::new().concurrency(1))
        .await
        .expect("set_queue_limit");
    let registry = durable::Registry::new()
        .workflow::<fan_out_on_default>()
        .activity::<slow_step>();
    let worker = Running::start(store, registry);
    client
        .start::<fan_out_on_default>("fan-1", &())
        .await
        .expect("start");
    let sum = client
        .result::<fan_out_on_default>("fan-1", WAIT)
        .await
        .expect("the fan-out finishes");
    assert_eq!(sum, 10);
    let most = MOST.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(most, 1, "{most} calls ran at once on a queue limited to 1");
    worker.stop().await;
}
