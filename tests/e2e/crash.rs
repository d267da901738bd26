//! The crash test: order workers SIGKILLed in the middle of runs, then a new worker on
//! the same database file finishes every run, with the right outcome, without running
//! again any activity whose result was recorded.
//!
//! The example appends one line per activity execution to `DURABLE_EXAMPLE_LEDGER`
//! (`idempotency_key<TAB>attempt<TAB>start_ms<TAB>end_ms`), written after the simulated
//! work and before the worker reports the result. A kill between the two is the
//! dangerous window: the side effect happened, the history doesn't know. Such an
//! execution may run again (a re-run, counted and printed); an execution recorded in
//! history must never run again.
//!
//! The kill schedule is seeded: the seed is printed, and `DURABLE_TEST_SEED=<seed>`
//! replays it (timing still varies with the machine).

use crate::support::{
    ChildGuard, TestRng, example_input, order, tail, temp_dir, wait_until, worker,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// Runs started, over all batches.
const RUNS: usize = 30;
/// Workers killed with SIGKILL before the last one finishes the runs.
const KILLS: usize = 5;
const _: () = assert!(KILLS >= 3, "the test promises at least 3 kills");
/// The workers' lease: a killed worker's runs move to the next after this long.
const LEASE_MS: &str = "1000";
/// How long the last worker may take to finish every run.
const FINISH_DEADLINE: Duration = Duration::from_secs(60);
/// Clock slack between the ledger's times and the history's (the same host clock,
/// read a few instructions apart).
const SLACK_MS: i64 = 5;

/// Which path through the order workflow an input takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Ok,
    Declined,
    Invalid,
    /// The inventory service answers `ServiceUnavailable` to the first attempt.
    Flaky,
}

impl Scenario {
    fn sample(self) -> &'static str {
        match self {
            Scenario::Ok => "order-ok",
            Scenario::Declined => "order-declined",
            Scenario::Invalid => "order-invalid",
            Scenario::Flaky => "order-inventory-flaky",
        }
    }

    /// The activities the run schedules, in command order.
    fn activities(self) -> &'static [&'static str] {
        match self {
            Scenario::Ok | Scenario::Flaky => &[
                "validate_order",
                "check_inventory",
                "process_payment",
                "send_email",
                "update_analytics",
                "schedule_shipment",
            ],
            Scenario::Declined => &[
                "validate_order",
                "check_inventory",
                "process_payment",
                "release_inventory",
                "notify_customer_failed",
            ],
            Scenario::Invalid => &["validate_order", "notify_customer_invalid"],
        }
    }

    /// Attempts of `check_inventory` that fail by design.
    fn inventory_failures(self) -> u32 {
        if self == Scenario::Flaky { 1 } else { 0 }
    }
}

/// One run of the test.
struct Planned {
    workflow_id: String,
    order_id: String,
    scenario: Scenario,
}

impl Planned {
    fn input(&self) -> String {
        let mut v = example_input(self.scenario.sample());
        v["order_id"] = json!(self.order_id);
        if self.scenario == Scenario::Flaky {
            v["inventory_unavailable_for"] = json!(self.scenario.inventory_failures());
        }
        v.to_string()
    }

    /// The run's final event must say this.
    fn check_outcome(&self, run_id: &str, last: &Value) -> Result<(), String> {
        match self.scenario {
            Scenario::Ok | Scenario::Flaky => {
                let expected = json!({
                    "order_id": self.order_id,
                    "transaction_id": format!("txn-{}-{run_id}-3", self.workflow_id),
                    "tracking_number": format!("TRACK-{}-6", self.order_id),
                });
                if last["kind"] == "RunCompleted" && last["payload"] == expected {
                    Ok(())
                } else {
                    Err(format!(
                        "expected RunCompleted with {expected}, history ends {last}"
                    ))
                }
            }
            Scenario::Declined | Scenario::Invalid => {
                let kind = if self.scenario == Scenario::Declined {
                    "PaymentFailed"
                } else {
                    "ValidationException"
                };
                if last["kind"] == "RunFailed" && last["error"]["kind"] == kind {
                    Ok(())
                } else {
                    Err(format!(
                        "expected RunFailed with {kind}, history ends {last}"
                    ))
                }
            }
        }
    }
}

/// One line of the example's side-effect ledger.
#[derive(Debug)]
struct Execution {
    key: String,
    attempt: u32,
    start_ms: i64,
    end_ms: i64,
}

fn read_ledger(path: &Path) -> Vec<Execution> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let parsed = (f.len() == 4).then(|| {
                Some(Execution {
                    key: f[0].to_owned(),
                    attempt: f[1].parse().ok()?,
                    start_ms: f[2].parse().ok()?,
                    end_ms: f[3].parse().ok()?,
                })
            });
            parsed
                .flatten()
                .unwrap_or_else(|| panic!("ledger line is not key/attempt/start/end: {line:?}"))
        })
        .collect()
}

fn ledger_len(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// `list --json`, keyed by workflow id.
fn runs_by_id(db: &Path) -> BTreeMap<String, Value> {
    order(db, &["list", "--json", "--limit", "1000"])
        .run()
        .expect_code(0)
        .json_lines()
        .into_iter()
        .map(|r| (r["workflow_id"].as_str().unwrap_or_default().to_owned(), r))
        .collect()
}

/// The recorded end of one scheduled activity.
struct Recorded {
    run: String,
    name: String,
    attempt: u32,
    time_ms: i64,
    inventory_failures: u32,
}

/// Checks one run's history: contiguous event ids, one result per scheduled activity,
/// the activities its path schedules, the outcome its input leads to. Returns the
/// recorded activity ends by idempotency key.
fn check_history(
    plan: &Planned,
    run_id: &str,
    events: &[Value],
    problems: &mut Vec<String>,
) -> BTreeMap<String, Recorded> {
    let id = &plan.workflow_id;
    let mut bad = |msg: String| problems.push(format!("run {id} ({:?}): {msg}", plan.scenario));
    for (i, e) in events.iter().enumerate() {
        if e["event_id"] != json!(i + 1) {
            bad(format!(
                "event at position {} has event_id {}, ids must run 1..n",
                i + 1,
                e["event_id"]
            ));
        }
    }
    let mut scheduled: BTreeMap<u64, (String, u64)> = BTreeMap::new();
    let mut ended: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for e in events {
        let seq = e["seq"].as_u64();
        match (e["kind"].as_str().unwrap_or_default(), seq) {
            ("ActivityScheduled", Some(seq)) => {
                let name = e["name"].as_str().unwrap_or_default().to_owned();
                let at = e["event_id"].as_u64().unwrap_or(0);
                if scheduled.insert(seq, (name, at)).is_some() {
                    bad(format!("command {seq} was scheduled twice"));
                }
            }
            ("ActivityCompleted" | "ActivityFailed", Some(seq)) => {
                ended.entry(seq).or_default().push(e)
            }
            _ => {}
        }
    }
    let names: Vec<&str> = scheduled.values().map(|(n, _)| n.as_str()).collect();
    if names != plan.scenario.activities() {
        bad(format!(
            "scheduled {names:?}, expected {:?}",
            plan.scenario.activities()
        ));
    }
    let mut recorded = BTreeMap::new();
    for (seq, (name, at)) in &scheduled {
        let ends = ended.remove(seq).unwrap_or_default();
        let [end] = ends.as_slice() else {
            bad(format!(
                "activity {name} (command {seq}) has {} results, expected exactly one",
                ends.len()
            ));
            continue;
        };
        if end["event_id"].as_u64().unwrap_or(0) <= *at {
            bad(format!(
                "the result of command {seq} comes before its schedule"
            ));
        }
        let attempt = end["attempt"]
            .as_u64()
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(0);
        if name == "check_inventory"
            && end["kind"] == "ActivityCompleted"
            && attempt <= plan.scenario.inventory_failures()
        {
            bad(format!(
                "check_inventory completed at attempt {attempt}, which the service refuses"
            ));
        }
        recorded.insert(
            format!("{id}/{run_id}/{seq}"),
            Recorded {
                run: id.clone(),
                name: name.clone(),
                attempt,
                time_ms: end["time_ms"].as_i64().unwrap_or(i64::MAX),
                inventory_failures: if name == "check_inventory" {
                    plan.scenario.inventory_failures()
                } else {
                    0
                },
            },
        );
    }
    for seq in ended.keys() {
        bad(format!(
            "command {seq} has a result but was never scheduled"
        ));
    }
    let terminal = events
        .iter()
        .filter(|e| e["kind"] == "RunCompleted" || e["kind"] == "RunFailed")
        .count();
    match events.last() {
        Some(last) if terminal == 1 => {
            if let Err(msg) = plan.check_outcome(run_id, last) {
                bad(msg);
            }
        }
        _ => bad(format!(
            "{terminal} RunCompleted/RunFailed events, expected one, the last"
        )),
    }
    recorded
}

/// Checks the ledger against what histories recorded; returns the number of re-runs
/// (executions whose result was lost to a kill and which therefore ran again).
fn check_ledger(
    ledger: &[Execution],
    recorded: &BTreeMap<String, Recorded>,
    problems: &mut Vec<String>,
) -> usize {
    let mut by_key: BTreeMap<&str, Vec<&Execution>> = BTreeMap::new();
    for x in ledger {
        by_key.entry(x.key.as_str()).or_default().push(x);
    }
    let mut reruns = 0;
    for (key, r) in recorded {
        let runs = by_key.remove(key.as_str()).unwrap_or_default();
        let mut attempts = BTreeSet::new();
        for x in &runs {
            if !attempts.insert(x.attempt) {
                problems.push(format!(
                    "{} of run {}: attempt {} of {key} executed twice",
                    r.name, r.run, x.attempt
                ));
            }
            if x.start_ms > r.time_ms + SLACK_MS {
                problems.push(format!(
                    "{} of run {} ran again after its result was recorded: attempt {} of {key} started at {} ms, \
                     {} ms after the recorded result (attempt {}, at {} ms)",
                    r.name,
                    r.run,
                    x.attempt,
                    x.start_ms,
                    x.start_ms - r.time_ms,
                    r.attempt,
                    r.time_ms
                ));
            }
        }
        match runs.iter().find(|x| x.attempt == r.attempt) {
            None => problems.push(format!(
                "{} of run {}: history records attempt {} of {key}, the ledger has no such execution (it has attempts {attempts:?})",
                r.name, r.run, r.attempt
            )),
            Some(x) if x.end_ms > r.time_ms + SLACK_MS => problems.push(format!(
                "{} of run {}: the result of {key} was recorded at {} ms, before its execution ended at {} ms",
                r.name, r.run, r.time_ms, x.end_ms
            )),
            Some(_) => {}
        }
        reruns += runs
            .iter()
            .filter(|x| x.attempt != r.attempt && x.attempt > r.inventory_failures)
            .count();
    }
    for (key, runs) in by_key {
        problems.push(format!(
            "the ledger has {} execution(s) of {key}, which no history scheduled",
            runs.len()
        ));
    }
    reruns
}

/// Waits until the ledger holds `target` executions (the worker is getting on with its
/// runs), failing the test if the worker dies or stalls.
fn wait_for_executions(ledger: &Path, target: usize, worker: &mut ChildGuard) {
    wait_until(
        Duration::from_secs(15),
        &format!("the worker to reach {target} activity executions"),
        || {
            worker.assert_running();
            let now = ledger_len(ledger);
            if now >= target {
                Ok(())
            } else {
                Err(format!("{now} ledger lines"))
            }
        },
    );
}

#[test]
fn sigkilled_workers_lose_no_run_and_rerun_no_recorded_activity() {
    let mut rng =
        TestRng::from_env("crash::sigkilled_workers_lose_no_run_and_rerun_no_recorded_activity");
    let dir = temp_dir();
    let db = dir.path().join("orders.db");
    let ledger = dir.path().join("ledger.tsv");
    let log = dir.path().join("workers.log");
    let began = std::time::Instant::now();

    let mix = [
        Scenario::Ok,
        Scenario::Declined,
        Scenario::Invalid,
        Scenario::Flaky,
    ];
    let mut plans: Vec<Planned> = (0..RUNS)
        .map(|i| Planned {
            workflow_id: format!("crash-{i:02}"),
            order_id: format!("C-{i:02}"),
            scenario: mix[i % mix.len()],
        })
        .collect();
    // A seeded shuffle, so each batch holds a different mix of paths.
    for i in (1..plans.len()).rev() {
        let j = usize::try_from(rng.range(0, i as u64 + 1)).expect("an index fits in usize");
        plans.swap(i, j);
    }

    // Each killed worker gets a fresh batch of runs, so every kill lands while runs are
    // in flight, on top of the runs the previous workers left behind.
    let worker_args = ["--lease-ms", LEASE_MS];
    let mut in_flight_at_kills = Vec::new();
    let mut startup_kills = 0;
    let mut killed_in_flight = BTreeSet::new();
    let mut started = 0;
    for kill in 0..KILLS {
        let batch_end = RUNS * (kill + 1) / KILLS;
        for plan in &plans[started..batch_end] {
            let out = order(
                &db,
                &[
                    "start",
                    "order",
                    "--input",
                    &plan.input(),
                    "--id",
                    &plan.workflow_id,
                ],
            )
            .run();
            assert_eq!(out.ok().trim(), plan.workflow_id);
        }
        let batch_len = batch_end - started;
        started = batch_end;

        let before = ledger_len(&ledger);
        let mut w = worker(&db, &worker_args)
            .env("DURABLE_EXAMPLE_LEDGER", &ledger)
            .spawn(&log);
        // Mostly kill while activities run, at a seeded point in the batch's progress
        // (a count of executions, so a slow machine moves the point less than a delay
        // would); sometimes during startup and recovery, before any work.
        let (how, delay_ms) = if kill > 0 && startup_kills < KILLS - 3 && rng.range(0, 4) == 0 {
            startup_kills += 1;
            ("during startup".to_owned(), rng.range(0, 60))
        } else {
            // Every run executes at least 2 activities (an invalid order), so stopping
            // short of 2 per run of the batch kills with work left in it.
            let most = u64::try_from(2 * batch_len - 2)
                .expect("a small count")
                .min(10);
            let executions = usize::try_from(rng.range(1, most + 1)).expect("a small count");
            wait_for_executions(&ledger, before + executions, &mut w);
            (format!("after {executions} execution(s)"), rng.range(0, 40))
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        w.assert_running();
        w.kill();

        let runs = runs_by_id(&db);
        let in_flight: Vec<&String> = runs
            .iter()
            .filter(|(_, r)| r["status"] == "running" && r["events"].as_u64().unwrap_or(0) > 1)
            .map(|(id, _)| id)
            .collect();
        eprintln!(
            "{:>6.1?} kill {}: SIGKILL {how} + {delay_ms} ms; {} ledger executions so far; {} runs in flight: {in_flight:?}",
            began.elapsed(),
            kill + 1,
            ledger_len(&ledger),
            in_flight.len()
        );
        in_flight_at_kills.push(in_flight.len());
        killed_in_flight.extend(in_flight.into_iter().cloned());
    }
    let kills_in_flight = in_flight_at_kills.iter().filter(|n| **n > 0).count();
    assert!(
        kills_in_flight >= 3,
        "only {kills_in_flight} kill(s) caught runs in flight ({in_flight_at_kills:?}); the test needs 3 to prove recovery"
    );

    // The last worker finishes everything the killed ones left.
    let mut last = worker(&db, &worker_args)
        .env("DURABLE_EXAMPLE_LEDGER", &ledger)
        .spawn(&log);
    let runs = wait_until(
        FINISH_DEADLINE,
        "every run to finish after the kills",
        || {
            last.assert_running();
            let runs = runs_by_id(&db);
            let unfinished: Vec<String> = runs
                .iter()
                .filter(|(_, r)| r["status"] != "completed" && r["status"] != "failed")
                .map(|(id, r)| {
                    format!(
                        "{id}: {} ({} events) {}",
                        r["status"], r["events"], r["reason"]
                    )
                })
                .collect();
            if let Some((id, r)) = runs.iter().find(|(_, r)| r["status"] == "suspended") {
                panic!(
                    "run {id} is suspended: {}; worker log:\n{}",
                    r["reason"],
                    tail(&log, 60)
                );
            }
            if runs.len() == RUNS && unfinished.is_empty() {
                Ok(runs)
            } else {
                Err(format!("{} runs, unfinished: {unfinished:?}", runs.len()))
            }
        },
    );
    last.kill();
    eprintln!(
        "{:>6.1?} every run finished, among them {} that a kill caught in flight",
        began.elapsed(),
        killed_in_flight.len()
    );

    let mut problems = Vec::new();
    let mut recorded = BTreeMap::new();
    for plan in &plans {
        let run = &runs[&plan.workflow_id];
        let run_id = run["run_id"].as_str().unwrap_or_default();
        let expected_status = match plan.scenario {
            Scenario::Ok | Scenario::Flaky => "completed",
            Scenario::Declined | Scenario::Invalid => "failed",
        };
        if run["status"] != expected_status {
            problems.push(format!(
                "run {} ({:?}) is {}, expected {expected_status}",
                plan.workflow_id, plan.scenario, run["status"]
            ));
        }
        let events = order(&db, &["history", &plan.workflow_id, "--json"])
            .run()
            .expect_code(0)
            .json_lines();
        recorded.extend(check_history(plan, run_id, &events, &mut problems));
    }
    let executions = read_ledger(&ledger);
    let reruns = check_ledger(&executions, &recorded, &mut problems);

    let conn = rusqlite::Connection::open(&db).expect("open the database after the last worker");
    let quick_check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .expect("PRAGMA quick_check runs");
    if quick_check != "ok" {
        problems.push(format!("PRAGMA quick_check: {quick_check}"));
    }

    eprintln!(
        "{:>6.1?} {RUNS} runs, {KILLS} kills, {} recorded activities, {} ledger executions, {reruns} re-runs \
         (side effects whose result a kill lost, executed again)",
        began.elapsed(),
        recorded.len(),
        executions.len()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s) after {KILLS} kills (seed printed above):\n{}\n\nlast worker log lines:\n{}",
        problems.len(),
        problems.join("\n"),
        tail(&log, 60)
    );
}
