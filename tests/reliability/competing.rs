//! (b) Competing workers: three `chaos-worker` processes on one database with a 300 ms
//! lease, while every ~2 s one of them is frozen (SIGSTOP) for two to three leases and
//! then thawed (SIGCONT). The others take its runs over; when it wakes, its late
//! commits and activity results must be refused by their fencing tokens.
//!
//! Oracles: every run completes with the reference outcome; each activity has one result
//! in history (the ledger may show the superseded attempt's effect too, absorbed by its
//! key); committed steps never go back in time (the `exec` markers: a stale owner's
//! accepted write would put an older step after a newer one); takeovers happened
//! (committed steps of one run executed by different processes) and stale writes were
//! refused (the workers log each: "run taken over" for a refused commit, "attempt was
//! superseded" for a refused activity result).

use crate::check;
use crate::client::{ClientThread, Plan};
use crate::support::{self, Rng, TestDir, WorkerProc};
use crate::workload::{self, Job};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const LEASE_MS: u64 = 300;

#[test]
fn competing_workers_refuse_stale_writes_and_complete_every_run() {
    let _serial = support::serial();
    let full = support::full_tier();
    let name = "competing_workers_refuse_stale_writes_and_complete_every_run";
    let (mut rng, seed) = Rng::from_env(name);
    let reproduce = support::reproduce(seed, name);
    // Runs the client may start: it starts them until the last thaw, then drains.
    let (runs, pace, stops) = if full {
        (5000, Duration::from_millis(15), 60)
    } else {
        (1000, Duration::from_millis(15), 12)
    };
    let dir = TestDir::new("competing");
    let db = dir.path().join("chaos.db");
    let ledger_path = dir.path().join("ledger.db");
    crate::ledger::open(&ledger_path).expect("the ledger can be created");
    // Mostly long-lived runs, so a frozen worker always holds some with work pending.
    let jobs: Vec<Job> = (0..runs)
        .map(|i| {
            let id = format!("run-{i:05}");
            if rng.chance(60) {
                workload::long_job(id, &mut rng)
            } else {
                workload::random_job(id, &mut rng)
            }
        })
        .collect();
    let client = ClientThread::spawn(Plan {
        db: db.clone(),
        ledger: ledger_path.clone(),
        jobs: jobs.clone(),
        burst: 20,
        pace,
        kill_percent: 3,
        seed: rng.next_u64(),
    });
    support::wait_until(Duration::from_secs(30), || {
        if client.shared.started.load(Ordering::SeqCst) > 0 {
            Ok(())
        } else {
            Err("no start acknowledged yet".to_owned())
        }
    })
    .unwrap_or_else(|e| panic!("the client could not start a run: {e}"));

    let lease = LEASE_MS.to_string();
    let args = ["--lease-ms", &lease, "--poll-ms", "20"];
    let mut workers: Vec<WorkerProc> = (0..3)
        .map(|i| {
            let mut cmd = support::chaos(&db, &ledger_path);
            cmd.env("DURABLE_LOG", "info");
            WorkerProc::spawn(cmd, &args, &dir.path().join(format!("worker-{i}.log")))
        })
        .collect();

    let started = Instant::now();
    let mut frozen_ms = Vec::new();
    for _ in 0..stops {
        std::thread::sleep(rng.millis(1500, 2500));
        let w = &workers[usize::try_from(rng.range(0, 3)).expect("0..3 fits")];
        let pause = rng.millis(2 * LEASE_MS, 3 * LEASE_MS + 1);
        assert!(w.signal("STOP"), "cannot SIGSTOP worker {}", w.pid);
        std::thread::sleep(pause);
        assert!(w.signal("CONT"), "cannot SIGCONT worker {}", w.pid);
        frozen_ms.push(pause.as_millis());
    }
    let stop_phase = started.elapsed();

    // Let the client finish its starts and votes, then wait for every run.
    client.shared.draining.store(true, Ordering::SeqCst);
    let drained = support::wait_until(Duration::from_secs(if full { 300 } else { 90 }), || {
        for (i, w) in workers.iter_mut().enumerate() {
            if let Some(status) = w.try_wait() {
                return Ok(Err(format!(
                    "worker {i} ended by itself ({}):\n{}",
                    support::describe_exit(Some(status)),
                    w.log_tail(30)
                )));
            }
        }
        let counts = support::status_counts(&db);
        let started_runs = client.shared.started.load(Ordering::SeqCst);
        let finished: u64 = counts
            .iter()
            .filter(|(s, _)| *s != "running")
            .map(|(_, n)| *n)
            .sum();
        if counts.get("running").copied().unwrap_or(0) == 0
            && usize::try_from(finished).unwrap_or(usize::MAX) >= started_runs
        {
            Ok(Ok(()))
        } else {
            Err(format!("{counts:?}, {started_runs} started"))
        }
    });
    let log = client.finish();
    for w in &mut workers {
        w.kill();
    }
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(e)) | Err(e) => panic!("not every run finished: {e}\n{reproduce}"),
    }

    let mut panics = Vec::new();
    let (mut refused_commits, mut refused_results) = (0, 0);
    for w in &workers {
        refused_commits += support::count_lines(&w.log, "run taken over");
        refused_results += support::count_lines(&w.log, "attempt was superseded");
        panics.extend(crate::crash_loop::unexpected_panics(&w.log));
    }
    if let Err(e) = support::sqlite_check(&db, true) {
        panic!("integrity_check failed: {e}");
    }
    let (mut report, runs) = check::check_sqlite(&db).expect("the database reads");
    check::check_leftovers(&db, &mut report);
    let ledger = check::check_ledger(&ledger_path, &runs, &mut report, false);
    let clients = check::check_client(&log, &runs, &mut report, 0);
    for p in &panics {
        report.violations.push(format!("unexpected panic: {p}"));
    }
    for (id, reason) in &report.suspended_reasons {
        report
            .violations
            .push(format!("run '{id}' is suspended: {reason}"));
    }
    eprintln!(
        "competing workers ({}): {} SIGSTOPs of {:?} ms; {} runs ({} completed, {} failed), {} events checked; takeovers (committed steps handed to another process) {}; stale commits refused {refused_commits}, stale activity results refused {refused_results}; ledger {} attempts, {} effects, {} duplicates absorbed; signals ok/failed/unknown {:?}; stop phase {:.1}s",
        if full { "full tier" } else { "CI tier" },
        frozen_ms.len(),
        frozen_ms,
        report.runs,
        report.count(durable::store::RunStatus::Completed),
        report.count(durable::store::RunStatus::Failed),
        report.events,
        report.handoffs,
        ledger.attempts,
        ledger.effects,
        ledger.duplicates(),
        clients.signals,
        stop_phase.as_secs_f64(),
    );
    report.assert_clean(&format!("competing workers, {reproduce}"));
    assert!(
        report.handoffs >= 20,
        "only {} takeovers; {reproduce}",
        report.handoffs
    );
    assert!(
        refused_commits + refused_results > 0,
        "no stale write was refused (none attempted?); {reproduce}"
    );
}
