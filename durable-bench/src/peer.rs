//! The peer side: W1, W2 and W3 on duroxide.
//!
//! duroxide's SQLite provider pins `libsqlite3-sys` 0.30 (through sqlx 0.8) while durable
//! takes its version from rusqlite. Both declare `links = "sqlite3"` and Cargo allows one
//! such package per lock file, so in one workspace the peer would decide which rusqlite
//! durable may use (0.32 at most) and `cargo test --workspace` would build sqlx. The peer's workloads
//! therefore live in `durable-bench/peer/`, a workspace of its own, which this module
//! builds with the same cargo and runs in the same benchmark invocation, on the same
//! disk, reading the JSON object it prints.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The sizes of the peer's workloads and its runtime settings.
#[derive(Debug, Clone)]
pub(crate) struct PeerPlan {
    pub(crate) w1_steps: u32,
    pub(crate) w2_runs: usize,
    pub(crate) w2_steps: u32,
    pub(crate) w3_orders: usize,
    /// duroxide's `dispatcher_min_poll_interval` (its default is 100 ms).
    pub(crate) poll_ms: u64,
    /// duroxide's `orchestration_concurrency` and `worker_concurrency` (default 2 each).
    pub(crate) concurrency: usize,
}

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peer")
        .join("Cargo.toml")
}

/// Where the peer is built: `<target>/peer`, beside this program's own profile directory.
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot tell the target directory from this program's path")?;
    Ok(target.join("peer"))
}

/// Builds the peer program (a no-op when it is up to date) and returns its path.
pub(crate) fn build() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = target_dir()?;
    eprintln!("building the peer program (duroxide); the first build takes a few minutes");
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(manifest())
        .arg("--target-dir")
        .arg(&target)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .context("running cargo to build the peer program")?;
    if !status.success() {
        bail!("cargo could not build the peer program ({status}); see the messages above");
    }
    Ok(target.join("release").join("durable-bench-peer"))
}

/// Runs the peer's workloads in `dir` and returns the JSON object it printed.
pub(crate) fn run(
    exe: &Path,
    dir: &Path,
    plan: &PeerPlan,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let output = Command::new(exe)
        .arg("--dir")
        .arg(dir)
        .args(["--w1-steps", &plan.w1_steps.to_string()])
        .args(["--w2-runs", &plan.w2_runs.to_string()])
        .args(["--w2-steps", &plan.w2_steps.to_string()])
        .args(["--w3-orders", &plan.w3_orders.to_string()])
        .args(["--poll-ms", &plan.poll_ms.to_string()])
        .args(["--orchestration-concurrency", &plan.concurrency.to_string()])
        .args(["--worker-concurrency", &plan.concurrency.to_string()])
        // duroxide logs its warnings to stdout; keep them out of our output but count the
        // lock conflicts, which explain much of its time.
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .context("running the peer program")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr.lines().filter(|l| l.starts_with("peer:")) {
        eprintln!("  {line}");
    }
    let locked = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains("database is locked"))
        .count();
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| {
            format!(
                "the peer program printed no result ({}): {}",
                output.status,
                stderr.lines().last().unwrap_or_default()
            )
        })?;
    match serde_json::from_str(last)? {
        serde_json::Value::Object(mut map) => {
            map.insert("lock_warnings".into(), locked.into());
            Ok(map)
        }
        other => bail!("the peer program printed {other}, not an object"),
    }
}
