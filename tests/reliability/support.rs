//! What every reliability test shares: the seed, the tier, temporary directories, the
//! `chaos-worker` processes, and SQLite's own checks of a database file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The `chaos-worker` binary Cargo built for these tests.
pub(crate) const CHAOS_WORKER: &str = env!("CARGO_BIN_EXE_chaos-worker");

/// The heavy tests take this lock so they do not run at once: on two cores their
/// timings (and their kill schedules) would mean nothing.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// True when `DURABLE_FULL=1` asks for the full tier (the figures in RELIABILITY.md).
pub(crate) fn full_tier() -> bool {
    std::env::var("DURABLE_FULL").is_ok_and(|v| v == "1")
}

/// A small seeded random source (SplitMix64): reproducible from the printed seed, no
/// dependency.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from `DURABLE_TEST_SEED` when set, otherwise from the clock; prints the seed
    /// and how to rerun with it.
    pub(crate) fn from_env(test: &str) -> (Rng, u64) {
        let seed = match std::env::var("DURABLE_TEST_SEED") {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("DURABLE_TEST_SEED={s:?} is not a u64: {e}")),
            Err(_) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                u64::try_from(nanos % u128::from(u64::MAX)).expect("the remainder fits")
            }
        };
        eprintln!("{test}: seed {seed}; {}", reproduce(seed, test));
        (Rng(seed), seed)
    }

    /// A source with this seed.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    /// A duration in `lo..hi` milliseconds.
    pub(crate) fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// The line that tells how to rerun a test with its seed.
pub(crate) fn reproduce(seed: u64, test: &str) -> String {
    format!("reproduce with DURABLE_TEST_SEED={seed} cargo test --test reliability {test}")
}

/// A temporary directory for one test. Kept (and its path printed) when the test fails,
/// so the database, the ledger and the worker logs can be read.
pub(crate) struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    /// A new directory named after the test.
    pub(crate) fn new(test: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("durable-reliability-{test}-"))
            .tempdir()
            .expect("a temporary directory can be created");
        TestDir { dir: Some(dir) }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "test failed: its database, ledger and logs are kept in {}",
                dir.keep().display()
            );
        }
    }
}

/// A `chaos-worker` command on database `db`, with the ledger `ledger`.
pub(crate) fn chaos(db: &Path, ledger: &Path) -> Command {
    let mut cmd = Command::new(CHAOS_WORKER);
    cmd.arg("--db")
        .arg(db)
        .env("CHAOS_LEDGER", ledger)
        .env_remove("DURABLE_FAILPOINT")
        .env_remove("DURABLE_FAILPOINT_SKIP")
        .env_remove("DURABLE_DATABASE_URL")
        .env_remove("DURABLE_DB")
        .env_remove("DURABLE_NAMESPACE")
        .env_remove("DURABLE_LEASE_MS")
        .env_remove("DURABLE_POLL_MS")
        .env_remove("DURABLE_TASK_QUEUES")
        // A panic in a poison run must not spend its activation symbolizing a backtrace.
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    cmd
}

/// A worker process, killed (SIGKILL) when dropped so a failing test leaves none behind.
pub(crate) struct WorkerProc {
    child: Option<Child>,
    /// Its stderr (the worker's log).
    pub(crate) log: PathBuf,
    /// Its process id.
    pub(crate) pid: u32,
}

impl WorkerProc {
    /// Starts `chaos-worker worker <args>`, logging to `log`.
    pub(crate) fn spawn(mut cmd: Command, args: &[&str], log: &Path) -> WorkerProc {
        let file = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = file.try_clone().expect("a log file handle can be cloned");
        cmd.arg("worker")
            .args(args)
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHAOS_WORKER}: {e}"));
        WorkerProc {
            pid: child.id(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// SIGKILLs the process and reaps it; returns how it ended.
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// The exit status if the process already ended (and reaps it).
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub(crate) fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`) with `kill(1)`.
    pub(crate) fn signal(&self, name: &str) -> bool {
        if self.child.is_none() {
            return false;
        }
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The last `n` lines of the log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly on some kernels' ptrace
        // setups; SIGKILL works on stopped processes on Linux, but be explicit.
        self.signal("CONT");
        self.kill();
    }
}

/// The last `n` lines of a text file ("" if it cannot be read).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Counts the lines of `path` that contain `needle`.
pub(crate) fn count_lines(path: &Path, needle: &str) -> usize {
    std::fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        })
        .unwrap_or(0)
}

/// How a worker process ended, in words.
pub(crate) fn describe_exit(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "still running".to_owned(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "unknown".to_owned(),
        },
    }
}

/// The signal that ended a process, if one did.
pub(crate) fn exit_signal(status: Option<ExitStatus>) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.and_then(|s| s.signal())
}

/// A read-only connection to a database for a check; closed when dropped.
pub(crate) fn read_only(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()));
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy_timeout can be set");
    conn
}

/// `PRAGMA quick_check` (or `integrity_check` when `full`): "ok", or what SQLite found.
pub(crate) fn sqlite_check(db: &Path, full: bool) -> Result<(), String> {
    let conn = read_only(db);
    let pragma = if full {
        "PRAGMA integrity_check"
    } else {
        "PRAGMA quick_check"
    };
    let mut stmt = conn.prepare(pragma).map_err(|e| e.to_string())?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if rows == ["ok"] {
        Ok(())
    } else {
        Err(rows.join("; "))
    }
}

/// Counts runs by status in `db`.
pub(crate) fn status_counts(db: &Path) -> std::collections::BTreeMap<String, u64> {
    let conn = read_only(db);
    let mut stmt = conn
        .prepare("SELECT status, count(*) FROM runs GROUP BY status")
        .expect("the runs table exists");
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .expect("the query runs")
        .filter_map(Result::ok)
        .map(|(s, n)| (s, u64::try_from(n).unwrap_or(0)))
        .collect()
}

/// Polls `check` every 50 ms until it returns `Ok`, or gives up after `timeout` with the
/// last state it reported.
pub(crate) fn wait_until<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(state) if Instant::now() >= deadline => return Err(state),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A runtime for the tests' own calls into the store (the checker, in-process clients).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
}
