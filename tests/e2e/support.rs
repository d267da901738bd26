//! Helpers shared by the end-to-end tests: the order example binary, CLI commands with a
//! deadline, worker child processes that die with the test, file snapshots, and a seeded
//! random source.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Environment variables the CLI or the example read; the tests set what they mean and
/// nothing leaks in from the shell that runs `cargo test`.
const DURABLE_ENV: &[&str] = &[
    "DURABLE_DB",
    "DURABLE_NAMESPACE",
    "DURABLE_LEASE_MS",
    "DURABLE_POLL_MS",
    "DURABLE_LOG",
    "DURABLE_EXAMPLE_LEDGER",
    "DURABLE_TEST_CLOCK_SKEW_MS",
];

/// How long a CLI command that should answer at once may take (a loaded 2-core CI box
/// starting a process and opening SQLite stays far below this).
pub(crate) const QUICK: Duration = Duration::from_secs(20);

/// The directory of the workspace, where `examples/data` lives.
pub(crate) fn workspace_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A sample input from `examples/data/<name>.json`, parsed.
pub(crate) fn example_input(name: &str) -> serde_json::Value {
    let path = workspace_dir()
        .join("examples/data")
        .join(format!("{name}.json"));
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read sample input {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("sample input {} is not JSON: {e}", path.display()))
}

/// The order example binary, `target/<profile>/examples/order`.
///
/// The test binary runs from `target/<profile>/deps`. `cargo test` builds the examples
/// before it runs tests, but `cargo test --test e2e` does not, so the binary can be
/// missing or older than the code under test: then it is built once per test process
/// with `cargo build --example order`.
pub(crate) fn order_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| example_bin("order"))
}

/// The fan-out example binary, `target/<profile>/examples/fan_out`, found or built like
/// [`order_bin`].
pub(crate) fn fan_out_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| example_bin("fan_out"))
}

/// The binary of example `name` (`target/<profile>/examples/<name>`), built like
/// [`order_bin`] when missing or stale.
pub(crate) fn example_bin(name: &'static str) -> PathBuf {
    static BINS: std::sync::Mutex<Vec<(&'static str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut bins = BINS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, bin)) = bins.iter().find(|(n, _)| *n == name) {
        return bin.clone();
    }
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary sits in target/<profile>/deps")
        .to_path_buf();
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if is_stale(&bin, &exe) {
        build_example(&profile_dir, &bin);
    }
    assert!(
        bin.is_file(),
        "the {name} example is missing at {}; build it with `cargo build --example {name}`",
        bin.display()
    );
    bins.push((name, bin.clone()));
    bin
}

/// Missing, or older than the test binary (which links the same library code).
fn is_stale(bin: &Path, test_exe: &Path) -> bool {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(bin), modified(test_exe)) {
        (None, _) => true,
        (Some(b), Some(t)) => b < t,
        (Some(_), None) => false,
    }
}

fn build_example(profile_dir: &Path, bin: &Path) {
    let name = bin
        .file_stem()
        .and_then(|n| n.to_str())
        .expect("an example binary has a name");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_dir())
        .args(["build", "--example", name]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let what = format!("cargo build --example {name}");
    let out = run_with_deadline(cmd, Duration::from_secs(900), &what);
    if out.code != Some(0) {
        // A half-edited workspace may not build; an existing binary still lets the tests run.
        assert!(
            bin.is_file(),
            "`{what}` failed ({:?}):\n{}",
            out.code,
            out.stderr
        );
        eprintln!(
            "warning: `{what}` failed; testing the existing {}",
            bin.display()
        );
    }
}

/// The subscription example binary, found (and built when missing or stale) like
/// [`order_bin`].
pub(crate) fn subscription_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| example_bin("subscription"))
}

/// `subscription --db <db> <args...>`.
pub(crate) fn subscription(db: &Path, args: &[&str]) -> OrderCmd {
    let mut cmd = Command::new(subscription_bin());
    for var in DURABLE_ENV {
        cmd.env_remove(var);
    }
    cmd.arg("--db").arg(db).args(args);
    OrderCmd {
        cmd,
        what: format!("subscription --db {} {}", db.display(), args.join(" ")),
        timeout: QUICK,
    }
}

/// What a finished command printed and how it exited.
#[derive(Debug)]
pub(crate) struct CliOutput {
    /// The description used in messages, e.g. `order --db x.db list`.
    pub(crate) what: String,
    /// The exit code; `None` if a signal ended the process.
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl CliOutput {
    /// Panics unless the command exited with `code`.
    #[track_caller]
    pub(crate) fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "`{}` exited with {:?}, expected {code}\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command succeeded; returns stdout.
    #[track_caller]
    pub(crate) fn ok(&self) -> &str {
        self.expect_code(0);
        &self.stdout
    }

    /// Each non-empty stdout line parsed as JSON.
    #[track_caller]
    pub(crate) fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("`{}` printed a line that is not JSON ({e}): {l}", self.what)
                })
            })
            .collect()
    }

    /// Panics unless the command failed the way the CLI promises for errors: exit `code`,
    /// stderr is exactly one line, it starts with `error:` and contains `needle`, and no
    /// panic message anywhere. Returns the line.
    #[track_caller]
    pub(crate) fn expect_one_error_line(&self, code: i32, needle: &str) -> &str {
        self.expect_code(code);
        let all = format!("{}{}", self.stdout, self.stderr);
        assert!(
            !all.contains("panicked"),
            "`{}` panicked:\n{all}",
            self.what
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with("error: "),
            "`{}` should print exactly one `error:` line on stderr, printed:\n{}",
            self.what,
            self.stderr
        );
        assert!(
            lines[0].contains(needle),
            "`{}`: the error line should mention {needle:?}: {}",
            self.what,
            lines[0]
        );
        lines[0]
    }
}

/// A command line of the order example, built up and then run with a deadline.
pub(crate) struct OrderCmd {
    cmd: Command,
    what: String,
    timeout: Duration,
}

/// `order --db <db> <args...>`.
pub(crate) fn order(db: &Path, args: &[&str]) -> OrderCmd {
    let mut all = vec!["--db".to_owned(), db.display().to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    order_raw(&all)
}

/// The order example with exactly these arguments (none: the happy path of
/// `cargo run --example order`).
pub(crate) fn order_raw<S: AsRef<str>>(args: &[S]) -> OrderCmd {
    example_cmd(order_bin(), "order", args)
}

/// The store a command of an example works on.
pub(crate) enum Target {
    /// A SQLite file (`--db`).
    Sqlite(PathBuf),
    /// A schema of a PostgreSQL database (`--database-url`, `--database-schema`).
    Postgres {
        /// The server.
        url: String,
        /// The schema, created by the first command.
        schema: String,
    },
}

impl Target {
    fn args(&self) -> Vec<String> {
        match self {
            Target::Sqlite(path) => vec!["--db".to_owned(), path.display().to_string()],
            Target::Postgres { url, schema } => vec![
                "--database-url".to_owned(),
                url.clone(),
                "--database-schema".to_owned(),
                schema.clone(),
            ],
        }
    }
}

/// `fan_out <store options> <args...>`: the fan-out example's CLI.
pub(crate) fn fan_out(db: &Target, args: &[&str]) -> OrderCmd {
    let mut all = db.args();
    all.extend(args.iter().map(|a| (*a).to_owned()));
    example_cmd(fan_out_bin(), "fan_out", &all)
}

fn example_cmd<S: AsRef<str>>(bin: &Path, name: &str, args: &[S]) -> OrderCmd {
    let mut cmd = Command::new(bin);
    for var in DURABLE_ENV {
        cmd.env_remove(var);
    }
    cmd.args(args.iter().map(AsRef::as_ref));
    let shown: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    OrderCmd {
        cmd,
        what: format!("{name} {}", shown.join(" ")),
        timeout: QUICK,
    }
}

/// Example `name` with exactly these arguments, like [`order_raw`] for the order example.
pub(crate) fn example_raw<S: AsRef<str>>(name: &'static str, args: &[S]) -> OrderCmd {
    let mut cmd = Command::new(example_bin(name));
    for var in DURABLE_ENV {
        cmd.env_remove(var);
    }
    cmd.args(args.iter().map(AsRef::as_ref));
    let shown: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    OrderCmd {
        cmd,
        what: format!("{name} {}", shown.join(" ")),
        timeout: QUICK,
    }
}

impl OrderCmd {
    /// Runs in this directory.
    pub(crate) fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Sets an environment variable.
    pub(crate) fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Fails the test if the command runs longer than this.
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs to the end (or the deadline, which fails the test).
    pub(crate) fn run(self) -> CliOutput {
        run_with_deadline(self.cmd, self.timeout, &self.what)
    }

    /// Starts the command in the background, stdout and stderr appended to `log`; the
    /// process is killed when the guard drops.
    pub(crate) fn spawn(mut self, log: &Path) -> ChildGuard {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open log {}: {e}", log.display()));
        // A header per process, so one log can hold several workers' output.
        let _ = writeln!(file, "===== {}", self.what);
        let err = file.try_clone().expect("a log file handle can be cloned");
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err));
        let child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.what));
        ChildGuard {
            child: Some(child),
            what: self.what,
            log: log.to_path_buf(),
        }
    }
}

/// `order --db <db> worker --poll-ms 20 <extra...>`, to [`OrderCmd::spawn`].
pub(crate) fn worker(db: &Path, extra: &[&str]) -> OrderCmd {
    let mut args = vec!["worker", "--poll-ms", "20"];
    args.extend_from_slice(extra);
    order(db, &args)
}

/// A child process that is killed (SIGKILL on Unix) when dropped, so a failing test
/// leaves no worker behind.
pub(crate) struct ChildGuard {
    child: Option<Child>,
    what: String,
    log: PathBuf,
}

impl ChildGuard {
    /// Kills the process (SIGKILL on Unix) and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics if the process already exited: a worker must keep running until killed.
    #[track_caller]
    pub(crate) fn assert_running(&mut self) {
        let Some(child) = self.child.as_mut() else {
            panic!("`{}` was already killed", self.what);
        };
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "`{}` exited on its own ({status}); its log ends:\n{}",
                self.what,
                self.log_tail(40)
            );
        }
    }

    /// The last `n` lines of the process's log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a text file ("" if it can't be read).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` to completion, capturing stdout and stderr; kills it and fails the test if
/// it is still running after `timeout`.
pub(crate) fn run_with_deadline(mut cmd: Command, timeout: Duration, what: &str) -> CliOutput {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    // Drain both pipes on threads, so a chatty process can't block on a full pipe.
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
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = err.join().unwrap_or_default();
                panic!("`{what}` did not finish within {timeout:?}; stderr:\n{stderr}");
            }
            Err(e) => panic!("cannot wait for `{what}`: {e}"),
        }
    };
    CliOutput {
        what: what.to_owned(),
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or fails the test after `timeout`
/// with `what` and the last state `check` reported.
#[track_caller]
pub(crate) fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last state: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A temporary directory for one test, removed when dropped.
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("durable-e2e-")
        .tempdir()
        .expect("a temporary directory can be created")
}

/// Checkpoints a database's WAL into the main file and closes it, so that a byte
/// comparison afterwards sees only what the next command writes. (A command that exits
/// before its connections close leaves its WAL behind, and the next one to open the
/// file folds it in: different bytes, the same content.)
pub(crate) fn settle(db: &Path) {
    let conn = rusqlite::Connection::open(db)
        .unwrap_or_else(|e| panic!("cannot open {} to checkpoint it: {e}", db.display()));
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap_or_else(|e| panic!("cannot checkpoint {}: {e}", db.display()));
    assert_eq!(
        busy,
        0,
        "{} is busy; nothing else should have it open",
        db.display()
    );
}

/// The bytes of a database path and its companions, to prove a command wrote nothing.
///
/// The `-shm` file is left out: it is SQLite's shared-memory index, rebuilt by every
/// connection, not content. An empty `-wal` or `-journal` counts as missing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DbSnapshot {
    files: Vec<(String, FileState)>,
}

#[derive(Debug, PartialEq, Eq)]
enum FileState {
    Missing,
    Bytes(Vec<u8>),
    Directory(Vec<String>),
}

impl DbSnapshot {
    /// Reads `db`, `db-wal` and `db-journal` (missing, the bytes, or a directory listing).
    pub(crate) fn take(db: &Path) -> DbSnapshot {
        let files = ["", "-wal", "-journal"]
            .iter()
            .map(|suffix| {
                let mut p = db.as_os_str().to_owned();
                p.push(suffix);
                let p = PathBuf::from(p);
                let state = if p.is_dir() {
                    let mut names: Vec<String> = fs::read_dir(&p)
                        .map(|rd| {
                            rd.filter_map(|e| e.ok())
                                .map(|e| e.file_name().to_string_lossy().into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    names.sort();
                    FileState::Directory(names)
                } else {
                    match fs::read(&p) {
                        // An empty journal or WAL holds nothing: SQLite reads it as absent.
                        // A process that exits before its connections close leaves one.
                        Ok(bytes) if bytes.is_empty() && !suffix.is_empty() => FileState::Missing,
                        Ok(bytes) => FileState::Bytes(bytes),
                        Err(_) => FileState::Missing,
                    }
                };
                (p.display().to_string(), state)
            })
            .collect();
        DbSnapshot { files }
    }

    /// Panics with the first file that differs from `before`.
    #[track_caller]
    pub(crate) fn assert_unchanged_since(&self, before: &DbSnapshot, what: &str) {
        for ((path, old), (_, new)) in before.files.iter().zip(&self.files) {
            assert!(
                old == new,
                "`{what}` changed {path}: before {}, after {}",
                old.describe(),
                new.describe()
            );
        }
    }
}

impl FileState {
    fn describe(&self) -> String {
        match self {
            FileState::Missing => "missing".to_owned(),
            FileState::Bytes(b) => format!("{} bytes (fnv {:016x})", b.len(), fnv1a(b)),
            FileState::Directory(names) => format!("a directory with {names:?}"),
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A small seeded random source (SplitMix64) for test schedules: reproducible from the
/// printed seed, no dependency.
pub(crate) struct TestRng(u64);

impl TestRng {
    /// Seeded from `DURABLE_TEST_SEED` when set, otherwise from the clock; prints the seed
    /// and how to rerun with it.
    pub(crate) fn from_env(test: &str) -> TestRng {
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
                u64::try_from(nanos % u128::from(u64::MAX)).expect("the remainder fits in u64")
            }
        };
        eprintln!(
            "{test}: seed {seed}; reproduce with DURABLE_TEST_SEED={seed} cargo test --test e2e {test}"
        );
        TestRng::new(seed)
    }

    /// A fixed seed, for data that only has to look random.
    pub(crate) fn new(seed: u64) -> TestRng {
        TestRng(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`hi > lo`).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}
