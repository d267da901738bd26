//! Helpers: the example and host CLIs with a deadline, byte snapshots of database files,
//! a panic log, seeded randomness, workers in this process.

use durable::prelude::*;
use durable::store::SharedStore;
use durable::{SqliteOptions, SqliteStore};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Variables the CLIs read; none may leak in from the shell running the tests.
const DURABLE_ENV: &[&str] = &[
    "DURABLE_DB",
    "DURABLE_NAMESPACE",
    "DURABLE_LEASE_MS",
    "DURABLE_POLL_MS",
    "DURABLE_LOG",
    "DURABLE_DATABASE_URL",
    "DURABLE_DATABASE_SCHEMA",
    "DURABLE_TASK_QUEUES",
    "DURABLE_EXAMPLE_LEDGER",
    "DURABLE_TEST_CLOCK_SKEW_MS",
];

/// A temporary directory for one test.
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("durable-hardening-")
        .tempdir()
        .expect("a temporary directory")
}

/// The seed of a randomised test: `DURABLE_TEST_SEED`, or the clock. Printed with the
/// command that reruns it.
pub(crate) fn seed(test: &str) -> u64 {
    let seed = match std::env::var("DURABLE_TEST_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("DURABLE_TEST_SEED={s:?} is not a u64: {e}")),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(32)
        }
    };
    eprintln!(
        "{test}: seed {seed}; reproduce with DURABLE_TEST_SEED={seed} cargo test --test hardening {test}"
    );
    seed
}

/// SplitMix64: small, seeded, reproducible.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % u64::try_from(n).expect("fits")).expect("below n")
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64().to_le_bytes()[0]).collect()
    }
}

// --- panics ------------------------------------------------------------------------

/// A panic seen anywhere in this process: where, and what it said.
#[derive(Clone, Debug)]
pub(crate) struct PanicRecord {
    pub(crate) file: String,
    pub(crate) line: u32,
    pub(crate) message: String,
}

fn panic_log() -> &'static Mutex<Vec<PanicRecord>> {
    static LOG: OnceLock<Mutex<Vec<PanicRecord>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let (file, line) = info
                .location()
                .map(|l| (l.file().to_owned(), l.line()))
                .unwrap_or_default();
            let message = durable_core::executor::panic_message(info.payload());
            if let Ok(mut log) = panic_log().lock() {
                log.push(PanicRecord {
                    file,
                    line,
                    message,
                });
            }
            previous(info);
        }));
        Mutex::new(Vec::new())
    })
}

/// Starts recording panics (idempotent).
pub(crate) fn watch_panics() {
    let _ = panic_log();
}

/// Panics raised inside the engine (durable-core, durable-worker), as opposed to test
/// assertions or workflow code under test. The one deliberate engine panic is skipped:
/// `WorkflowContext` unwinds out of workflow code when a recorded value cannot be read,
/// after recording a `Corrupt` error that fails the activation.
pub(crate) fn engine_panics() -> Vec<PanicRecord> {
    panic_log()
        .lock()
        .map(|log| {
            log.iter()
                .filter(|p| {
                    (p.file.contains("durable-core/src") || p.file.contains("durable-worker/src"))
                        && !(p.file.ends_with("context/workflow.rs")
                            && p.message.contains("is unreadable"))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
pub(crate) fn assert_no_engine_panics() {
    let panics = engine_panics();
    let shown: Vec<String> = panics
        .iter()
        .map(|p| format!("{}:{}: {}", p.file, p.line, p.message))
        .collect();
    assert!(panics.is_empty(), "the engine panicked: {shown:#?}");
}

// --- files -------------------------------------------------------------------------

/// The bytes of a database and its `-wal` (an empty or missing `-wal` are the same: SQLite
/// reads both as no log). `-shm` is SQLite's shared-memory index, rebuilt by every reader,
/// and left out.
#[derive(PartialEq, Eq)]
pub(crate) struct Snapshot(Vec<(String, Option<Vec<u8>>)>);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for (suffix, bytes) in &self.0 {
            match bytes {
                Some(b) => list.entry(&format_args!(
                    "{suffix}: {} bytes, fnv {:016x}",
                    b.len(),
                    fnv(b)
                )),
                None => list.entry(&format_args!("{suffix}: none")),
            };
        }
        list.finish()
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

impl Snapshot {
    pub(crate) fn take(db: &Path) -> Snapshot {
        Snapshot(
            ["", "-wal", "-journal"]
                .iter()
                .map(|suffix| {
                    let p = with_suffix(db, suffix);
                    let bytes = if p.is_dir() {
                        Some(b"<directory>".to_vec())
                    } else {
                        read_external(&p).filter(|b| suffix.is_empty() || !b.is_empty())
                    };
                    ((*suffix).to_owned(), bytes)
                })
                .collect(),
        )
    }

    #[track_caller]
    pub(crate) fn assert_same(&self, after: &Snapshot, what: &str) {
        for ((suffix, a), (_, b)) in self.0.iter().zip(&after.0) {
            assert!(
                a == b,
                "{what}: the database file{suffix} changed ({} -> {} bytes)",
                a.as_ref().map_or(0, Vec::len),
                b.as_ref().map_or(0, Vec::len)
            );
        }
    }
}

/// The bytes of a file, read by a child process.
///
/// Closing any descriptor of a file drops every POSIX lock this process holds on it, so
/// reading a database with `std::fs::read` while a store of this process has it open
/// would silently release SQLite's locks: another process would then take itself for the
/// last connection and fold and delete the `-wal` under our feet.
pub(crate) fn read_external(path: &Path) -> Option<Vec<u8>> {
    if std::fs::metadata(path).is_err() {
        return None;
    }
    let out = Command::new("cat")
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// Waits until every connection to `db` is closed and its log folded into the file, so
/// a snapshot taken now stays valid while nothing writes.
pub(crate) fn settle(db: &Path) {
    let wal = with_suffix(db, "-wal");
    let deadline = Instant::now() + Duration::from_secs(5);
    while wal.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if wal.exists() {
        let conn = rusqlite::Connection::open(db).expect("open to checkpoint");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }
}

/// Every occurrence of `needle` in `hay`.
pub(crate) fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Peak resident memory of this process in KiB (`VmHWM`), 0 where unknown.
pub(crate) fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

// --- stores and workers ----------------------------------------------------------

pub(crate) fn open(db: &Path) -> SharedStore {
    open_with(db, SqliteOptions::default())
}

pub(crate) fn open_with(db: &Path, options: SqliteOptions) -> SharedStore {
    Arc::new(SqliteStore::open(db, options).expect("open the test database"))
}

/// Fast polling for tests.
pub(crate) fn quick_options() -> WorkerOptions {
    WorkerOptions {
        poll_interval: Duration::from_millis(5),
        lease: Duration::from_secs(5),
        ..WorkerOptions::default()
    }
}

/// Runs `f` with a worker on `store`, then stops the worker.
pub(crate) async fn with_worker<F, Fut, T>(
    store: &SharedStore,
    registry: Registry,
    options: WorkerOptions,
    f: F,
) -> T
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let worker = Worker::new(store.clone(), registry, options);
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    let out = f(Client::new(store.clone())).await;
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the worker stops within 30 s")
        .expect("the worker task did not panic")
        .expect("the worker stopped cleanly");
    out
}

/// Polls the history of `id` until `pred` holds (20 s at most).
pub(crate) async fn wait_history<F: Fn(&[durable::Event]) -> bool>(
    client: &Client,
    id: &str,
    what: &str,
    pred: F,
) -> Vec<durable::Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(h) = client.history(&WorkflowId::from(id)).await
            && pred(&h)
        {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "run {id}: {what} did not happen in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls until the run `id` is finished or suspended (20 s at most).
pub(crate) async fn wait_settled(client: &Client, id: &str) -> durable::store::RunInfo {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = client
            .status(&WorkflowId::from(id))
            .await
            .expect("the run exists");
        if info.status != durable::store::RunStatus::Running {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} is still running after 20 s: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// --- command lines ---------------------------------------------------------------

/// How a finished command exited and what it printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) what: String,
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// The CLI's error contract: a non-zero exit (`code`), exactly one non-empty stderr
    /// line, starting `error:` and mentioning `needle`, and no panic anywhere. Returns
    /// the line.
    #[track_caller]
    pub(crate) fn refused(&self, code: i32, needle: &str) -> String {
        self.no_panic();
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            self.code == Some(code) && lines.len() == 1 && lines[0].starts_with("error: "),
            "`{}` should exit {code} with one `error:` line; exit {:?}, stderr:\n{}\nstdout:\n{}",
            self.what,
            self.code,
            self.stderr,
            self.stdout
        );
        assert!(
            lines[0].contains(needle),
            "`{}`: the error should mention {needle:?}: {}",
            self.what,
            lines[0]
        );
        lines[0].to_owned()
    }

    /// Exit 0 and no panic; returns stdout.
    #[track_caller]
    pub(crate) fn ok(&self) -> &str {
        self.no_panic();
        assert_eq!(
            self.code,
            Some(0),
            "`{}` failed:\n{}\n{}",
            self.what,
            self.stderr,
            self.stdout
        );
        &self.stdout
    }

    #[track_caller]
    pub(crate) fn no_panic(&self) {
        let all = format!("{}{}", self.stdout, self.stderr);
        assert!(
            !all.contains("panicked at"),
            "`{}` panicked:\n{all}",
            self.what
        );
    }
}

/// A command with a deadline.
pub(crate) struct Cli {
    cmd: Command,
    what: String,
    timeout: Duration,
}

impl Cli {
    pub(crate) fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Runs the command as another user (unix), e.g. to make a file read-only for it.
    #[cfg(unix)]
    pub(crate) fn uid(mut self, uid: u32) -> Self {
        use std::os::unix::process::CommandExt as _;
        self.cmd.uid(uid).gid(uid);
        self
    }

    pub(crate) fn run(self) -> Output {
        self.run_inner(None)
    }

    /// Runs a command that would serve forever for `d`, then kills it (by its pid) and
    /// returns what it printed.
    pub(crate) fn run_for(self, d: Duration) -> Output {
        self.run_inner(Some(d))
    }

    fn run_inner(mut self, kill_after: Option<Duration>) -> Output {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.what));
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + self.timeout;
        let kill_at = kill_after.map(|d| Instant::now() + d);
        let status = loop {
            if kill_at.is_some_and(|k| Instant::now() >= k) {
                let _ = child.kill();
            }
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "`{}` did not finish within {:?}; stderr:\n{}",
                        self.what,
                        self.timeout,
                        err.join().unwrap_or_default()
                    );
                }
                Err(e) => panic!("cannot wait for `{}`: {e}", self.what),
            }
        };
        Output {
            what: self.what,
            code: status.code(),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }
    }
}

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary sits in target/<profile>/deps")
        .to_path_buf()
}

/// `target/<profile>/examples/order`, built once if missing or older than this binary
/// (`cargo test` builds examples; `cargo test --test hardening` does not).
pub(crate) fn order_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = profile_dir();
        let bin = dir
            .join("examples")
            .join(format!("order{}", std::env::consts::EXE_SUFFIX));
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let exe = std::env::current_exe().expect("own path");
        let stale = match (modified(&bin), modified(&exe)) {
            (None, _) => true,
            (Some(b), Some(t)) => b < t,
            (Some(_), None) => false,
        };
        if stale {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["build", "--example", "order"]);
            if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
                cmd.arg("--release");
            }
            let out = Cli {
                cmd,
                what: "cargo build --example order".into(),
                timeout: Duration::from_secs(1200),
            }
            .run();
            if out.code != Some(0) && !bin.is_file() {
                panic!("cannot build the order example:\n{}", out.stderr);
            }
        }
        bin
    })
}

fn cli(program: &Path, what: String, args: Vec<String>) -> Cli {
    let mut cmd = Command::new(program);
    for var in DURABLE_ENV {
        cmd.env_remove(var);
    }
    cmd.args(&args);
    Cli {
        cmd,
        what,
        timeout: Duration::from_secs(30),
    }
}

/// `order --db <db> <args...>`: the CLI of the order example.
pub(crate) fn order(db: &Path, args: &[&str]) -> Cli {
    let mut all = vec!["--db".to_owned(), db.display().to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let what = format!("order {}", all.join(" "));
    cli(order_bin(), what, all)
}

/// The CLI of a worker binary linking the workflows of `registry` (a name known to
/// `flows::registry_named`): this test binary re-run as [`crate::cli_host`].
pub(crate) fn host_cli(registry: &str, db: &Path, args: &[&str]) -> Cli {
    let mut all = vec!["--db".to_owned(), db.display().to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let what = format!("[{registry}] {}", all.join(" "));
    let exe = std::env::current_exe().expect("own path");
    let runner: Vec<String> = [
        "cli_host",
        "--exact",
        "--nocapture",
        "--test-threads",
        "1",
        "-q",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    cli(&exe, what, runner)
        .env(
            "HARDENING_CLI_ARGS",
            serde_json::to_string(&all).expect("args as JSON"),
        )
        .env("HARDENING_REGISTRY", registry)
}
