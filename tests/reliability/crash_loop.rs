//! (a) The crash loop: a `chaos-worker` process is started, killed (SIGKILL) after a
//! seeded delay, and started again, over and over, while a client starts runs and sends
//! signals; every 5th cycle instead arms a failpoint that aborts the worker at a chosen
//! moment, and every 10th cycle tears the WAL after the kill. After the last kill a
//! worker finishes every run, and the checker reads everything.
//!
//! Oracles: `quick_check` after every crash and `integrity_check` at the end; every
//! history well formed (see `check.rs`) with the reference outcome; effects exactly
//! once per completed activity, with duplicates absorbed (successful executions >
//! effects proves the dangerous window was hit); acknowledged signals exactly once;
//! poison runs suspended with a reason and every other run finished; no panic in the
//! engine. A torn WAL loses acknowledged writes, so for the cycles before one the
//! acknowledged-durability oracles relax (an ok signal or start may be missing; an
//! effect may belong to a lost run); everything else stays strict.

use crate::check::{self, Outcome};
use crate::client::{self, ClientThread, Plan};
use crate::kitchen_sink::FAILPOINTS;
use crate::support::{self, Rng, TestDir, WorkerProc};
use crate::wal::{self, Tear};
use crate::workload::{self, Job};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The sizes of one tier.
struct Tier {
    cycles: usize,
    /// Runs the client may start; it stops starting when the loop ends.
    runs: usize,
    burst: usize,
    pace: Duration,
    min_completed: usize,
    min_in_flight: u64,
}

const LEASE_MS: &str = "400";
const ACTIVATION_DEADLINE_MS: &str = "300";
/// Above the default of 5, and not because of bystanders (probation tells those apart;
/// `regressions::a_process_aborting_run_does_not_get_its_bystanders_suspended` checks it
/// at 5): this schedule aims 40% of its kills at the first 20 ms of a worker's life,
/// while it activates the runs it recovers, so a run on probation can be cut short five
/// times in a row by kills alone (seen once in about ten CI-tier runs on a loaded
/// machine). A process-aborting run still reaches 10 and is suspended.
const MAX_ACTIVATION_FAILURES: &str = "10";
/// How long the spinning poison run spins per activation.
const SPIN_MS: u64 = 1500;

fn worker_args() -> Vec<&'static str> {
    vec![
        "--lease-ms",
        LEASE_MS,
        "--poll-ms",
        "20",
        "--activation-deadline-ms",
        ACTIVATION_DEADLINE_MS,
        "--max-activation-failures",
        MAX_ACTIVATION_FAILURES,
    ]
}

/// A delay from the plan's mix: 40% 0–20 ms (startup and recovery), 40% 20–300 ms,
/// 20% 300 ms–2 s.
fn kill_delay(rng: &mut Rng) -> Duration {
    match rng.range(0, 10) {
        0..=3 => rng.millis(0, 20),
        4..=7 => rng.millis(20, 300),
        _ => rng.millis(300, 2000),
    }
}

/// How a cycle ended.
#[derive(Default, Debug)]
struct Figures {
    kills: usize,
    failpoint_hits: BTreeMap<&'static str, usize>,
    failpoints_armed: usize,
    tears: usize,
    tears_mid_frame: usize,
    tears_skipped: usize,
    frames_torn: u64,
    quick_checks: usize,
    max_in_flight: u64,
}

/// Lines of a worker log that report a panic other than the poison runs' own.
pub(crate) fn unexpected_panics(log: &Path) -> Vec<String> {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("panicked at") {
            let next = lines.get(i + 1).copied().unwrap_or("");
            if !next.contains("poison run") && !l.contains("poison run") {
                out.push(format!("{}: {l} / {next}", log.display()));
            }
        }
    }
    out
}

#[test]
fn crash_loop_loses_nothing_and_duplicates_no_recorded_step() {
    let _serial = support::serial();
    let full = support::full_tier();
    let tier = if full {
        Tier {
            cycles: 250,
            runs: 10_000,
            burst: 200,
            pace: Duration::from_millis(15),
            min_completed: 1000,
            min_in_flight: 200,
        }
    } else {
        Tier {
            cycles: 63,
            runs: 3000,
            burst: 120,
            pace: Duration::from_millis(25),
            min_completed: 300,
            min_in_flight: 100,
        }
    };
    let name = "crash_loop_loses_nothing_and_duplicates_no_recorded_step";
    let (mut rng, seed) = Rng::from_env(name);
    let started = Instant::now();
    let dir = TestDir::new("crash-loop");
    let db = dir.path().join("chaos.db");
    let ledger_path = dir.path().join("ledger.db");
    crate::ledger::open(&ledger_path).expect("the ledger can be created");

    // Two runs that panic in every activation and one that spins, first in line, then
    // the mixed workload.
    const POISON_RUNS: usize = 3;
    let mut jobs: Vec<Job> = vec![
        workload::poison_job("poison-panic-1".into(), "panicky", 0),
        workload::poison_job("poison-panic-2".into(), "panicky", 0),
        workload::poison_job("poison-spin".into(), "spinner", SPIN_MS),
    ];
    for i in 0..tier.runs {
        jobs.push(workload::random_job(format!("run-{i:05}"), &mut rng));
    }
    let client = ClientThread::spawn(Plan {
        db: db.clone(),
        ledger: ledger_path.clone(),
        jobs: jobs.clone(),
        burst: tier.burst,
        pace: tier.pace,
        kill_percent: 6,
        seed: rng.next_u64(),
    });
    // The first burst of starts puts the runs in flight before any worker runs.
    support::wait_until(Duration::from_secs(60), || {
        let n = client.shared.started.load(Ordering::SeqCst);
        if n >= tier.burst {
            Ok(())
        } else {
            Err(format!("{n} starts acknowledged"))
        }
    })
    .unwrap_or_else(|e| panic!("the client could not start its first runs: {e}"));

    let mut figures = Figures::default();
    let mut panics = Vec::new();
    let mut failpoint_turn = 0;
    // Set every 10th cycle, cleared once a tear worked (a WAL fully checkpointed has
    // nothing to tear, so the next cycle tries again).
    let mut tear_due = false;
    figures.max_in_flight = support::status_counts(&db)
        .get("running")
        .copied()
        .unwrap_or(0);
    // The tier's cycles, and more (up to twice as many) until the client has started the
    // runs the tier must see finish: how many starts fit in a cycle depends on how fast
    // the machine spawns the client's CLI processes, and a slow one fell short of the
    // tier's minimum by a handful of runs (295 of 300) with every run accounted for.
    let enough_started = |client: &ClientThread| {
        client.shared.started.load(Ordering::SeqCst) >= tier.min_completed + POISON_RUNS
    };
    for cycle in 0.. {
        if cycle >= tier.cycles && (enough_started(&client) || cycle >= 2 * tier.cycles) {
            break;
        }
        tear_due |= cycle % 10 == 9;
        let log = dir.path().join(format!("worker-{cycle:04}.log"));
        let mut cmd = support::chaos(&db, &ledger_path);
        cmd.env("DURABLE_LOG", "info");
        // A torn-WAL cycle keeps the clients out from its start: a client process that
        // exits last checkpoints the WAL and removes it, leaving nothing to tear.
        let tearing = tear_due;
        let pause = tearing.then(|| {
            client
                .shared
                .pause
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        });
        let armed = if cycle % 5 == 2 {
            let point = FAILPOINTS[failpoint_turn % FAILPOINTS.len()];
            failpoint_turn += 1;
            let skip = rng.range(0, 6);
            cmd.env("DURABLE_FAILPOINT", point)
                .env("DURABLE_FAILPOINT_SKIP", skip.to_string());
            figures.failpoints_armed += 1;
            Some(point)
        } else {
            None
        };
        // A tearing cycle lets the worker write something to tear.
        let delay = if tearing {
            rng.millis(200, 1500)
        } else {
            kill_delay(&mut rng)
        };
        let mut worker = WorkerProc::spawn(cmd, &worker_args(), &log);
        let status = match armed {
            // Give an armed failpoint time to be hit; kill the worker if it is not.
            Some(_) => worker
                .wait_for_exit(delay.max(Duration::from_secs(3)))
                .or_else(|| worker.kill()),
            None => worker.wait_for_exit(delay).or_else(|| worker.kill()),
        };
        let by_failpoint = armed.filter(|p| {
            support::exit_signal(status) == Some(6)
                && support::count_lines(&log, &format!("FAILPOINT-HIT {p}")) > 0
        });
        match (by_failpoint, support::exit_signal(status)) {
            (Some(p), _) => *figures.failpoint_hits.entry(p).or_default() += 1,
            (None, Some(9)) => figures.kills += 1,
            (None, _) => panic!(
                "cycle {cycle}: the worker ended by itself ({}); its log ends:\n{}\n{}",
                support::describe_exit(status),
                worker.log_tail(30),
                support::reproduce(seed, name)
            ),
        }
        panics.extend(unexpected_panics(&log));

        // Every 10th cycle: with no process holding the database, tear its WAL.
        let pause = pause.unwrap_or_else(|| {
            client
                .shared
                .pause
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        });
        if tearing {
            match wal::tear(&db, &mut rng) {
                Tear::Cut {
                    from,
                    to,
                    mid_frame,
                    frames,
                } => {
                    eprintln!(
                        "cycle {cycle}: WAL torn from {from} to {to} bytes ({frames} frames)"
                    );
                    figures.tears += 1;
                    figures.frames_torn += frames;
                    if mid_frame {
                        figures.tears_mid_frame += 1;
                    }
                    client.shared.epoch.fetch_add(1, Ordering::SeqCst);
                    tear_due = false;
                }
                Tear::Skipped(why) => {
                    eprintln!("cycle {cycle}: WAL not torn: {why}");
                    figures.tears_skipped += 1;
                }
            }
        }
        if let Err(e) = support::sqlite_check(&db, false) {
            panic!(
                "cycle {cycle}: quick_check after the crash failed: {e}\n{}",
                support::reproduce(seed, name)
            );
        }
        figures.quick_checks += 1;
        let counts = support::status_counts(&db);
        figures.max_in_flight = figures
            .max_in_flight
            .max(counts.get("running").copied().unwrap_or(0));
        drop(pause);
    }
    let loop_time = started.elapsed();

    // The last worker finishes everything; the client keeps voting for approvals.
    client.shared.draining.store(true, Ordering::SeqCst);
    let log = dir.path().join("worker-final.log");
    let mut cmd = support::chaos(&db, &ledger_path);
    cmd.env("DURABLE_LOG", "info");
    let mut last = WorkerProc::spawn(cmd, &worker_args(), &log);
    let drained = support::wait_until(Duration::from_secs(if full { 300 } else { 90 }), || {
        if let Some(status) = last.try_wait() {
            return Ok(Err(format!(
                "the final worker ended by itself ({}):\n{}",
                support::describe_exit(Some(status)),
                last.log_tail(30)
            )));
        }
        let counts = support::status_counts(&db);
        match counts.get("running").copied().unwrap_or(0) {
            0 => Ok(Ok(())),
            n => Err(format!("{n} runs still running: {counts:?}")),
        }
    });
    let torn = client.shared.epoch.load(Ordering::SeqCst);
    let log_client = client.finish();
    last.kill();
    panics.extend(unexpected_panics(&log));
    let total_time = started.elapsed();
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(e)) | Err(e) => panic!(
            "the runs did not all finish after the last crash: {e}\n{}",
            support::reproduce(seed, name)
        ),
    }

    if let Err(e) = support::sqlite_check(&db, true) {
        panic!("integrity_check at the end failed: {e}");
    }
    let (mut report, runs) = check::check_sqlite(&db).expect("the database reads");
    check::check_leftovers(&db, &mut report);
    let ledger = check::check_ledger(&ledger_path, &runs, &mut report, torn > 0);
    let clients = check::check_client(&log_client, &runs, &mut report, torn);
    for p in &panics {
        report.violations.push(format!("unexpected panic: {p}"));
    }
    let poison_ok = report
        .suspended_reasons
        .iter()
        .filter(|(id, _)| id.starts_with("poison-"))
        .count();
    for (id, reason) in &report.suspended_reasons {
        if !id.starts_with("poison-") {
            report.violations.push(format!(
                "run '{id}' is suspended but is no poison run: {reason}"
            ));
        }
    }

    let completed = report.count(durable::store::RunStatus::Completed);
    let failed = report.count(durable::store::RunStatus::Failed);
    let crashes = figures.kills + figures.failpoint_hits.values().sum::<usize>();
    eprintln!(
        "crash loop ({}): {crashes} crashes ({} SIGKILL, failpoints {:?} of {} armed), {} torn WALs ({} mid-frame, {} frames cut, {} skipped), {} quick_checks; max {} runs in flight; {} runs: {completed} completed, {failed} failed (saga declines), {} suspended ({poison_ok} poison: {:?}); {} events checked, {} timers; ledger: {} attempts, {} successful, {} effects, {} executed twice ({} duplicates absorbed), {} orphaned by torn WALs; signals ok/failed/unknown {:?} ({} unknown delivered, {} ok lost to torn WALs), starts lost to torn WALs {}; handoffs {}; loop {:.1}s, total {:.1}s",
        if full { "full tier" } else { "CI tier" },
        figures.kills,
        figures.failpoint_hits,
        figures.failpoints_armed,
        figures.tears,
        figures.tears_mid_frame,
        figures.frames_torn,
        figures.tears_skipped,
        figures.quick_checks,
        figures.max_in_flight,
        report.runs,
        report.count(durable::store::RunStatus::Suspended),
        report.suspended_reasons,
        report.events,
        report.timers_fired,
        ledger.attempts,
        ledger.ok_attempts,
        ledger.effects,
        ledger.keys_executed_twice,
        ledger.duplicates(),
        ledger.orphans,
        clients.signals,
        clients.unknown_delivered,
        clients.ok_signals_lost_to_torn_wal,
        clients.starts_lost_to_torn_wal,
        report.handoffs,
        loop_time.as_secs_f64(),
        total_time.as_secs_f64(),
    );
    eprintln!(
        "started by workflow: {:?}",
        client::started_by_workflow(&log_client, &jobs)
    );
    report.assert_clean(&format!("crash loop, {}", support::reproduce(seed, name)));

    let reproduce = support::reproduce(seed, name);
    assert!(
        figures.kills >= 50 || full,
        "only {} SIGKILLs; {reproduce}",
        figures.kills
    );
    assert!(
        crashes >= if full { 200 } else { 50 },
        "only {crashes} crashes; {reproduce}"
    );
    assert_eq!(
        poison_ok, 3,
        "the 3 poison runs must end suspended; {reproduce}"
    );
    assert!(
        completed + failed >= tier.min_completed,
        "only {} runs finished; {reproduce}",
        completed + failed
    );
    assert!(
        figures.max_in_flight >= tier.min_in_flight,
        "at most {} runs were in flight; {reproduce}",
        figures.max_in_flight
    );
    assert!(
        ledger.duplicates() > 0,
        "no activity executed twice: the kills never hit the window between a side effect and its record; {reproduce}"
    );
    assert!(
        figures.failpoint_hits.len() >= 2,
        "failpoints hit: {:?}; {reproduce}",
        figures.failpoint_hits
    );
    assert!(
        figures.tears >= if full { 15 } else { 4 },
        "only {} torn WALs; {reproduce}",
        figures.tears
    );
    assert!(
        log_client.signals.iter().any(|s| s.outcome == Outcome::Ok),
        "no signal was acknowledged; {reproduce}"
    );
}
