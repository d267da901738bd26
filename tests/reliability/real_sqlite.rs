//! (c) Real SQLite conditions, no mocks: another connection holding the write lock past
//! the store's busy timeout, and a real full disk (a 4 MiB tmpfs) under a worker
//! process. After each condition clears, every run must complete with a well-formed
//! history; the worker must never panic, and may only stop with a one-line error.

use crate::check;
use crate::client::{ClientThread, Plan};
use crate::inproc::{self, InProcClient, LedgerGuard, PanicCounter, RunningWorker};
use crate::support::{self, Rng, TestDir, WorkerProc};
use crate::workload::{self, Job};
use durable::store::SharedStore;
use durable::{SqliteOptions, SqliteStore, WorkerOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Every write transaction of the SQLite store takes the write lock up front
/// (`BEGIN IMMEDIATE`): a deferred one that upgrades later can fail with
/// `SQLITE_BUSY_SNAPSHOT`, which no busy timeout waits out.
#[test]
fn every_sqlite_write_transaction_begins_immediate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("durable-core/src/store/sqlite");
    let mut checked = 0;
    let mut bad = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the SQLite store's sources are there") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file reads");
        for (n, line) in text.lines().enumerate() {
            let upper = line.to_uppercase();
            if upper.contains("\"BEGIN") || upper.contains(" BEGIN ") && upper.contains('"') {
                checked += 1;
                if !upper.contains("BEGIN IMMEDIATE") && !upper.contains("BEGIN EXCLUSIVE") {
                    bad.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
            if line.contains(".transaction()") || line.contains("TransactionBehavior::Deferred") {
                bad.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
            if line.contains("transaction_with_behavior") {
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no transaction found in {}", dir.display());
    assert!(
        bad.is_empty(),
        "deferred write transactions:\n{}",
        bad.join("\n")
    );
}

#[test]
fn write_lock_contention_is_waited_out() {
    let _serial = support::serial();
    let name = "write_lock_contention_is_waited_out";
    let (mut rng, seed) = Rng::from_env(name);
    let reproduce = support::reproduce(seed, name);
    let episodes = if support::full_tier() { 100 } else { 20 };
    let busy_timeout = Duration::from_millis(100);
    let dir = TestDir::new("contention");
    let db = dir.path().join("contention.db");
    let _ledger = LedgerGuard::set(&dir.path().join("ledger.db"));
    let panics = PanicCounter::install();
    let rt = support::runtime();
    let store = Arc::new(
        SqliteStore::open(
            &db,
            SqliteOptions {
                busy_timeout,
                ..SqliteOptions::default()
            },
        )
        .expect("the store opens"),
    );
    // Another process's transaction, as SQLite sees it: a connection of its own that
    // takes the write lock at random moments and holds it 0-2x the busy timeout.
    let done = Arc::new(AtomicBool::new(false));
    let past_timeout = Arc::new(AtomicUsize::new(0));
    let holder = {
        let db = db.clone();
        let done = done.clone();
        let past = past_timeout.clone();
        let mut hrng = Rng::new(rng.next_u64());
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).expect("the holder's connection opens");
            conn.busy_timeout(Duration::from_secs(30))
                .expect("busy_timeout can be set");
            for _ in 0..episodes {
                std::thread::sleep(hrng.millis(100, 400));
                conn.execute_batch("BEGIN IMMEDIATE")
                    .expect("the holder takes the write lock");
                let hold = hrng.millis(0, 2 * 100 + 1);
                if hold > busy_timeout {
                    past.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(hold);
                conn.execute_batch("COMMIT").expect("the holder commits");
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let (log, client_errors) = rt.block_on(async {
        let worker = RunningWorker::start(
            store.clone() as SharedStore,
            WorkerOptions {
                lease: Duration::from_secs(2),
                poll_interval: Duration::from_millis(20),
                ..WorkerOptions::default()
            },
        );
        let mut client = InProcClient::new(store.clone() as SharedStore, rng.next_u64());
        let mut n = 0;
        while !done.load(Ordering::SeqCst) {
            if n < 400 {
                let job = workload::random_job(format!("run-{n:05}"), &mut rng);
                client.start(&job).await;
                n += 1;
            }
            client.vote().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left =
            inproc::drive_to_completion(&mut client, store.as_ref(), Duration::from_secs(60)).await;
        assert!(left.is_empty(), "runs still running: {left:?}; {reproduce}");
        worker
            .stop()
            .await
            .unwrap_or_else(|e| panic!("{e}; {reproduce}"));
        let errors = client.errors.load(Ordering::Relaxed);
        (client.log, errors)
    });
    holder.join().expect("the holder thread ends");
    drop(store);
    let (mut report, runs) = check::check_sqlite(&db).expect("the database reads");
    check::check_leftovers(&db, &mut report);
    let ledger = check::check_ledger(&dir.path().join("ledger.db"), &runs, &mut report, false);
    let clients = check::check_client(&log, &runs, &mut report, 0);
    for p in panics.seen() {
        report.violations.push(format!("panic: {p}"));
    }
    for (id, reason) in &report.suspended_reasons {
        report
            .violations
            .push(format!("run '{id}' is suspended: {reason}"));
    }
    eprintln!(
        "contention: {episodes} write-lock holds ({} past the {} ms busy timeout), {client_errors} client calls refused busy; {} runs, {} events checked; ledger {} effects; signals ok/failed/unknown {:?}",
        past_timeout.load(Ordering::Relaxed),
        busy_timeout.as_millis(),
        report.runs,
        report.events,
        ledger.effects,
        clients.signals
    );
    report.assert_clean(&format!("contention, {reproduce}"));
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs {
                dir: dir.to_path_buf(),
            })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Bytes free, from `df`.
    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.dir)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the file system of `path` but for `leave` bytes.
fn fill(path: &Path, free: u64, leave: u64) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).expect("the filler file can be created");
    let mut left = free.saturating_sub(leave);
    let block = vec![0xA5u8; 64 * 1024];
    while left > 0 {
        let n = usize::try_from(left.min(block.len() as u64)).expect("a block fits");
        if f.write_all(&block[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_is_survived_and_every_run_completes() {
    let _serial = support::serial();
    let name = "a_full_disk_is_survived_and_every_run_completes";
    let (mut rng, seed) = Rng::from_env(name);
    let reproduce = support::reproduce(seed, name);
    let dir = TestDir::new("disk-full");
    let fs = match Tmpfs::mount(&dir.path().join("small"), "4m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "{name}: skipped: cannot mount a 4 MiB tmpfs ({why}); run as root to include the real disk-full case"
            );
            return;
        }
    };
    let db = fs.dir.join("chaos.db");
    let ledger_path = dir.path().join("ledger.db");
    crate::ledger::open(&ledger_path).expect("the ledger can be created");
    let episodes = if support::full_tier() { 10 } else { 3 };
    let jobs: Vec<Job> = (0..150)
        .map(|i| workload::random_job(format!("run-{i:05}"), &mut rng))
        .collect();
    let client = ClientThread::spawn(Plan {
        db: db.clone(),
        ledger: ledger_path.clone(),
        jobs,
        burst: 30,
        pace: Duration::from_millis(30),
        kill_percent: 0,
        seed: rng.next_u64(),
    });
    support::wait_until(Duration::from_secs(30), || {
        if client.shared.started.load(Ordering::SeqCst) >= 30 {
            Ok(())
        } else {
            Err("starts not acknowledged yet".to_owned())
        }
    })
    .unwrap_or_else(|e| panic!("the client could not start runs: {e}"));

    let spawn = |i: usize| {
        let mut cmd = support::chaos(&db, &ledger_path);
        cmd.env("DURABLE_LOG", "info").env("SQLITE_TMPDIR", &fs.dir);
        WorkerProc::spawn(
            cmd,
            &["--lease-ms", "1000", "--poll-ms", "20"],
            &dir.path().join(format!("worker-{i}.log")),
        )
    };
    let mut logs = Vec::new();
    let mut worker = spawn(0);
    let mut exits = Vec::new();
    let filler = fs.dir.join("filler");
    let mut full_errors_seen = 0;
    for episode in 0..episodes {
        std::thread::sleep(Duration::from_millis(800));
        fill(&filler, fs.free(), 48 * 1024);
        // Wait until the worker (or a client) runs into the full disk.
        let before = count_full(dir.path());
        let hit = support::wait_until(Duration::from_secs(8), || {
            if count_full(dir.path()) > before {
                Ok(())
            } else {
                Err("no full-disk error yet".to_owned())
            }
        });
        if hit.is_err() {
            eprintln!("episode {episode}: no full-disk error was logged within 8 s");
        }
        std::thread::sleep(Duration::from_millis(700));
        std::fs::remove_file(&filler).expect("the filler can be removed");
        full_errors_seen = count_full(dir.path());
        if let Some(status) = worker.try_wait() {
            // Stopping is allowed, with a one-line error; panicking is not.
            let last = worker.log_tail(1);
            exits.push(format!("{} ({last})", support::describe_exit(Some(status))));
            assert!(
                last.starts_with("error: "),
                "the worker stopped ({}) without a one-line error; its log ends:\n{}",
                support::describe_exit(Some(status)),
                worker.log_tail(20)
            );
            logs.push(worker.log.clone());
            worker = spawn(logs.len());
        }
    }
    // The disk has room again: everything must finish.
    client.shared.draining.store(true, Ordering::SeqCst);
    let drained = support::wait_until(Duration::from_secs(90), || {
        let counts = support::status_counts(&db);
        match counts.get("running").copied().unwrap_or(0) {
            0 => Ok(()),
            n => Err(format!("{n} runs still running: {counts:?}")),
        }
    });
    let log = client.finish();
    worker.kill();
    logs.push(worker.log.clone());
    if let Err(e) = drained {
        panic!("after the disk had room again: {e}; {reproduce}");
    }
    let mut panics = Vec::new();
    for l in &logs {
        panics.extend(crate::crash_loop::unexpected_panics(l));
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
        "disk full: {episodes} episodes on a 4 MiB tmpfs, {full_errors_seen} full-disk errors logged, worker exits {exits:?}; {} runs, {} events checked; ledger {} effects; signals ok/failed/unknown {:?}",
        report.runs, report.events, ledger.effects, clients.signals
    );
    report.assert_clean(&format!("disk full, {reproduce}"));
    assert!(
        full_errors_seen > 0,
        "the disk never filled up; {reproduce}"
    );
    drop(fs);
}

/// Lines in the test's worker logs that report a full disk.
fn count_full(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .map(|e| support::count_lines(&e.path(), "is full"))
                .sum()
        })
        .unwrap_or(0)
}
