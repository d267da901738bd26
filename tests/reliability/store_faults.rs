//! (c) Store faults: a worker and a client run the kitchen sink through a
//! [`FaultStore`] that fails a seeded share of their calls (busy, i/o, disk full,
//! ambiguous commits, latency spikes, lost leases); then the faults stop, and every run
//! must complete with a well-formed history, effects exactly once and every
//! acknowledged signal delivered once. The engine must not panic, and the worker must
//! not give up.

use crate::check;
use crate::fault_store::{Fault, FaultStore};
use crate::inproc::{self, InProcClient, LedgerGuard, PanicCounter, RunningWorker};
use crate::support::{self, Rng, TestDir};
use crate::workload;
use durable::store::SharedStore;
use durable::{SqliteOptions, SqliteStore, WorkerOptions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Takes a run's lease away, as another worker whose claim won would: a new owner, a
/// new fencing token, an expired lease (so the run can be claimed back).
fn lease_thief(db: &std::path::Path) -> crate::fault_store::Thief {
    let conn = rusqlite::Connection::open(db).expect("the thief's connection opens");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy_timeout can be set");
    let conn = Mutex::new(conn);
    Box::new(move |key| {
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "UPDATE runs SET owner = 'fault-thief', fence = fence + 1, lease_expires_at_ms = 0
             WHERE run_key = ?1 AND status = 'running'",
            [key.0],
        )
        .expect("the thief's update runs");
    })
}

#[test]
fn store_faults_are_survived_and_every_run_completes() {
    let _serial = support::serial();
    let full = support::full_tier();
    let name = "store_faults_are_survived_and_every_run_completes";
    let (mut rng, seed) = Rng::from_env(name);
    let reproduce = support::reproduce(seed, name);
    let (runs, min_faults, min_ambiguous, cap) = if full {
        (2000, 10_000, 500, Duration::from_secs(600))
    } else {
        (300, 1000, 50, Duration::from_secs(60))
    };
    let dir = TestDir::new("store-faults");
    let db = dir.path().join("faults.db");
    let _ledger = LedgerGuard::set(&dir.path().join("ledger.db"));
    let panics = PanicCounter::install();
    let lease = Duration::from_millis(500);
    let rt = support::runtime();
    let (client_log, worker_counts, client_counts, faulty_phase) = rt.block_on(async {
        let inner =
            Arc::new(SqliteStore::open(&db, SqliteOptions::default()).expect("the store opens"));
        let worker_store = Arc::new(
            FaultStore::new(inner.clone(), rng.next_u64(), 120, lease * 2)
                .with_thief(lease_thief(&db)),
        );
        let client_store = Arc::new(FaultStore::new(inner.clone(), rng.next_u64(), 80, lease));
        let worker = RunningWorker::start(
            worker_store.clone() as SharedStore,
            WorkerOptions {
                lease,
                poll_interval: Duration::from_millis(10),
                ..WorkerOptions::default()
            },
        );
        let mut client = InProcClient::new(client_store.clone() as SharedStore, rng.next_u64());
        let started = Instant::now();
        let mut next = 0;
        // With faults: start the runs, vote, until enough faults of every kind.
        loop {
            if next < runs {
                let job = workload::random_job(format!("run-{next:05}"), &mut rng);
                client.start(&job).await;
                next += 1;
            }
            client.vote().await;
            let c = worker_store.counts();
            let enough = c.total() + client_store.counts().total() >= min_faults
                && c.get(Fault::Ambiguous) >= min_ambiguous
                && crate::fault_store::KINDS.iter().all(|k| c.get(*k) > 0);
            if (enough && next >= runs) || started.elapsed() > cap {
                break;
            }
            if next >= runs {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                !worker.is_finished(),
                "the worker gave up during the faults"
            );
        }
        let faulty_phase = started.elapsed();
        worker_store.set_enabled(false);
        client_store.set_enabled(false);
        // Faults cleared: everything must finish.
        let left = inproc::drive_to_completion(
            &mut client,
            inner.as_ref(),
            Duration::from_secs(if full { 240 } else { 90 }),
        )
        .await;
        assert!(
            left.is_empty(),
            "{} runs did not finish after the faults cleared, e.g. {:?}; {reproduce}",
            left.len(),
            left.iter().take(5).collect::<Vec<_>>()
        );
        worker
            .stop()
            .await
            .unwrap_or_else(|e| panic!("{e}; {reproduce}"));
        (
            client.log,
            worker_store.counts(),
            client_store.counts(),
            faulty_phase,
        )
    });

    let (mut report, runs) = check::check_sqlite(&db).expect("the database reads");
    check::check_leftovers(&db, &mut report);
    let ledger = check::check_ledger(&dir.path().join("ledger.db"), &runs, &mut report, false);
    let clients = check::check_client(&client_log, &runs, &mut report, 0);
    for p in panics.seen() {
        report.violations.push(format!("panic: {p}"));
    }
    for (id, reason) in &report.suspended_reasons {
        report
            .violations
            .push(format!("run '{id}' is suspended: {reason}"));
    }
    if let Err(e) = support::sqlite_check(&db, true) {
        report.violations.push(format!("integrity_check: {e}"));
    }
    let total = worker_counts.total() + client_counts.total();
    eprintln!(
        "store faults ({}): {total} faults injected in {:.1}s (worker: {}; client: {}); {} runs ({} completed, {} failed), {} events checked; ledger {} attempts, {} effects, {} duplicates absorbed; signals ok/failed/unknown {:?}, {} unknown delivered",
        if full { "full tier" } else { "CI tier" },
        faulty_phase.as_secs_f64(),
        worker_counts.describe(),
        client_counts.describe(),
        report.runs,
        report.count(durable::store::RunStatus::Completed),
        report.count(durable::store::RunStatus::Failed),
        report.events,
        ledger.attempts,
        ledger.effects,
        ledger.duplicates(),
        clients.signals,
        clients.unknown_delivered,
    );
    report.assert_clean(&format!("store faults, {reproduce}"));
    assert!(
        total >= min_faults,
        "only {total} faults injected; {reproduce}"
    );
    assert!(
        worker_counts.get(Fault::Ambiguous) >= min_ambiguous,
        "only {} ambiguous commits; {reproduce}",
        worker_counts.get(Fault::Ambiguous)
    );
}
