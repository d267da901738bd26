//! Schedules end to end, through the order example's CLI and real worker processes on
//! one SQLite file: an interval schedule firing with two workers (one run per tick),
//! ticks missed while every worker was down handled by each catch-up policy, and the
//! CLI's errors.

use crate::support::{DbSnapshot, example_input, order, settle, temp_dir, wait_until, worker};
use durable::clock;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn order_input() -> String {
    example_input("order-ok").to_string()
}

/// `schedule show <id> --json`.
fn show(db: &Path, id: &str) -> Value {
    let out = order(db, &["schedule", "show", id, "--json", "--runs", "1000"]).run();
    serde_json::from_str(out.ok()).expect("schedule show --json prints JSON")
}

/// The tick times of a schedule's ticks with this outcome.
fn ticks(show: &Value, outcome: &str) -> BTreeSet<i64> {
    show["ticks"]
        .as_array()
        .expect("ticks")
        .iter()
        .filter(|t| t["outcome"] == outcome)
        .map(|t| t["tick_ms"].as_i64().expect("tick_ms"))
        .collect()
}

fn create(db: &Path, id: &str, extra: &[&str]) {
    let input = order_input();
    let mut args = vec!["schedule", "create", id, "order", "--input", &input];
    args.extend_from_slice(extra);
    let out = order(db, &args).run();
    assert!(
        out.ok().contains(&format!("schedule '{id}'")),
        "{}",
        out.stdout
    );
}

/// An interval schedule fires every second while two worker processes sweep the same
/// file: each tick starts exactly one run (workflow id `<schedule>@<tick>`), the runs
/// complete, pausing stops the ticks and deleting leaves the runs.
#[test]
fn an_interval_schedule_fires_once_per_tick_with_two_workers() {
    let dir = temp_dir();
    let db = dir.path().join("sched.db");
    let log = dir.path().join("workers.log");
    create(&db, "pulse", &["--every", "1s", "--overlap", "allow"]);
    let _w1 = worker(&db, &[]).spawn(&log);
    let _w2 = worker(&db, &[]).spawn(&log);
    let started = wait_until(WAIT, "four ticks to start runs", || {
        let s = show(&db, "pulse");
        let started = ticks(&s, "started");
        if started.len() >= 4 {
            Ok(started)
        } else {
            Err(format!("{s}"))
        }
    });
    for tick in &started {
        assert_eq!(tick % 1000, 0, "ticks are on the second");
        let wid = format!("pulse@{}", clock::format_ms(*tick));
        let out = order(&db, &["result", &wid, "--wait", "--timeout", "30"])
            .timeout(Duration::from_secs(40))
            .run();
        assert!(out.ok().contains("tracking_number"), "{}", out.stdout);
    }
    order(&db, &["schedule", "pause", "pulse"]).run().ok();
    // Whatever was in flight when the pause landed settles; then nothing new starts.
    std::thread::sleep(Duration::from_millis(300));
    let paused = show(&db, "pulse");
    assert_eq!(paused["paused"], true);
    let count = paused["runs_started"].as_u64().expect("runs_started");
    std::thread::sleep(Duration::from_millis(2500));
    let later = show(&db, "pulse");
    assert_eq!(
        later["runs_started"].as_u64(),
        Some(count),
        "paused: no ticks"
    );
    // One run per tick, no more, across both workers.
    let runs = order(
        &db,
        &["list", "--workflow", "order", "--json", "--limit", "1000"],
    )
    .run()
    .expect_code(0)
    .json_lines();
    let ids: BTreeSet<String> = runs
        .iter()
        .map(|r| r["workflow_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), runs.len(), "no workflow id twice");
    assert_eq!(runs.len() as u64, count, "one run per started tick");
    assert!(ids.iter().all(|id| id.starts_with("pulse@")));
    order(&db, &["schedule", "delete", "pulse"]).run().ok();
    let list = order(&db, &["schedule", "list"]).run();
    assert!(!list.ok().contains("pulse"), "{}", list.stdout);
    let runs = order(
        &db,
        &["list", "--workflow", "order", "--json", "--limit", "1000"],
    )
    .run()
    .expect_code(0)
    .json_lines();
    assert_eq!(runs.len() as u64, count, "the runs stay after the delete");
}

/// Three schedules, every second, fire on time with a worker running; the worker is
/// killed (SIGKILL), and the next one starts 600 ms after the fourth tick missed
/// meanwhile (past the half second in which a tick is on time). `skip` starts none of
/// the missed ticks, `one` starts one run for them (the latest), `all` starts each of
/// them; afterwards each fires on time again. Overlap is `allow`, so the run the killed
/// worker left behind (still leased to it) does not make the catch-up skip.
#[test]
fn ticks_missed_while_every_worker_was_down_follow_the_catch_up_policy() {
    let dir = temp_dir();
    let db = dir.path().join("catch-up.db");
    let log = dir.path().join("worker.log");
    let ids = ["cu-skip", "cu-one", "cu-all"];
    for (id, policy) in ids.iter().zip([
        &["--catch-up", "skip"][..],
        &["--catch-up", "one"][..],
        &["--catch-up", "all", "--catch-up-max", "10"][..],
    ]) {
        let mut args = vec!["--every", "1s", "--overlap", "allow"];
        args.extend_from_slice(policy);
        create(&db, id, &args);
    }
    let mut first_worker = worker(&db, &[]).spawn(&log);
    wait_until(WAIT, "each schedule to fire on time", || {
        let all: Vec<Value> = ids.iter().map(|id| show(&db, id)).collect();
        if all.iter().all(|s| !ticks(s, "started").is_empty()) {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    });
    first_worker.kill();
    // The first tick each schedule missed.
    let first: Vec<i64> = ids
        .iter()
        .map(|id| show(&db, id)["next_fire_at_ms"].as_i64().expect("next"))
        .collect();
    let t0 = *first.iter().max().expect("three");
    let restart = t0 + 3000 + 600;
    let wait = restart - clock::host_now_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0)));
    }
    let _second_worker = worker(&db, &[]).spawn(&log);
    let state = wait_until(
        WAIT,
        "each schedule to handle its missed ticks and fire again",
        || {
            let all: Vec<Value> = ids.iter().map(|id| show(&db, id)).collect();
            let done = all
                .iter()
                .all(|s| ticks(s, "started").iter().any(|t| *t > restart));
            if done {
                Ok(all)
            } else {
                Err(format!("{all:?}"))
            }
        },
    );
    let missed_of = |i: usize| -> Vec<i64> {
        (0..)
            .map(|k| first[i] + k * 1000)
            .take_while(|t| *t <= t0 + 3000)
            .collect()
    };
    let started_since = |s: &Value, i: usize| -> BTreeSet<i64> {
        ticks(s, "started")
            .into_iter()
            .filter(|t| *t >= first[i])
            .collect()
    };
    let (skip, one, all) = (&state[0], &state[1], &state[2]);
    // skip: none of the missed ticks started.
    let skip_started = started_since(skip, 0);
    for t in missed_of(0) {
        assert!(
            !skip_started.contains(&t),
            "skip started missed tick {t}: {skip}"
        );
    }
    assert!(skip["ticks_skipped"].as_u64().expect("n") >= 4, "{skip}");
    // one: one run for them all, for the latest tick due at the first sweep.
    let one_started = started_since(one, 1);
    let missed = missed_of(1);
    for t in &missed[..missed.len() - 1] {
        assert!(
            !one_started.contains(t),
            "one started an older missed tick {t}: {one}"
        );
    }
    assert!(
        one_started.iter().filter(|t| **t < restart).count() <= 1,
        "{one}"
    );
    assert!(one["ticks_skipped"].as_u64().expect("n") >= 3, "{one}");
    // all: every missed tick started (fewer than the bound of 10).
    let all_started = started_since(all, 2);
    for t in missed_of(2) {
        assert!(
            all_started.contains(&t),
            "all did not start missed tick {t}: {all}"
        );
    }
    assert_eq!(all["ticks_skipped"].as_u64(), Some(0), "{all}");
}

/// Bad input to `schedule` gets one `error:` line, exit 2, and writes nothing.
#[test]
fn schedule_cli_errors_are_one_line_and_write_nothing() {
    let dir = temp_dir();
    let db = dir.path().join("errors.db");
    create(&db, "taken", &["--cron", "0 2 * * *"]);
    settle(&db);
    let input = order_input();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "schedule",
                "create",
                "s",
                "order",
                "--input",
                &input,
                "--cron",
                "61 * * * *",
            ],
            "invalid cron expression",
        ),
        (
            vec![
                "schedule", "create", "s", "order", "--input", &input, "--cron", "* * *",
            ],
            "3 fields",
        ),
        (
            vec!["schedule", "create", "s", "nosuch", "--every", "1s"],
            "unknown workflow \"nosuch\"",
        ),
        (
            vec![
                "schedule", "create", "s", "order", "--input", "{oops", "--every", "1s",
            ],
            "--input",
        ),
        (
            vec!["schedule", "create", "s", "order", "--input", &input],
            "--cron",
        ),
        (
            vec![
                "schedule",
                "create",
                "s",
                "order",
                "--input",
                &input,
                "--every",
                "1s",
                "--cron",
                "* * * * *",
            ],
            "cannot be used with",
        ),
        (
            vec![
                "schedule", "create", "s", "order", "--input", &input, "--every", "soon",
            ],
            "--every",
        ),
        (
            vec![
                "schedule", "create", "s", "order", "--input", &input, "--every", "1ms",
            ],
            "shortest interval",
        ),
        (
            vec![
                "schedule",
                "create",
                "s",
                "order",
                "--input",
                &input,
                "--every",
                "1s",
                "--catch-up",
                "most",
            ],
            "unknown catch-up policy",
        ),
        (
            vec![
                "schedule",
                "create",
                "s",
                "order",
                "--input",
                &input,
                "--every",
                "1s",
                "--catch-up-max",
                "5",
            ],
            "--catch-up-max",
        ),
        (
            vec![
                "schedule",
                "create",
                "s",
                "order",
                "--input",
                &input,
                "--every",
                "1s",
                "--overlap",
                "sometimes",
            ],
            "unknown overlap policy",
        ),
        (
            vec![
                "schedule", "create", "taken", "order", "--input", &input, "--every", "1s",
            ],
            "already exists",
        ),
        (
            vec!["schedule", "show", "nope"],
            "no schedule with id 'nope'",
        ),
        (
            vec!["schedule", "pause", "nope"],
            "no schedule with id 'nope'",
        ),
        (
            vec!["schedule", "resume", "nope"],
            "no schedule with id 'nope'",
        ),
        (
            vec!["schedule", "delete", "nope"],
            "no schedule with id 'nope'",
        ),
        (
            vec!["schedule", "trigger", "nope"],
            "no schedule with id 'nope'",
        ),
        (vec!["schedule", "frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let before = DbSnapshot::take(&db);
        let out = order(&db, &args).run();
        out.expect_one_error_line(2, needle);
        DbSnapshot::take(&db).assert_unchanged_since(&before, &out.what);
    }
    // `--replace` is how a definition changes; a trigger starts a run at once.
    create(&db, "taken", &["--every", "1h", "--replace"]);
    assert_eq!(show(&db, "taken")["spec"]["kind"], "interval");
    let wid = order(&db, &["schedule", "trigger", "taken"]).run();
    let wid = wid.ok().trim().to_owned();
    assert!(wid.starts_with("taken@"), "{wid}");
    let status = order(&db, &["status", &wid]).run();
    assert!(status.ok().contains("running"), "{}", status.stdout);
}
