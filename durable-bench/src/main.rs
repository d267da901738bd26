//! The benchmark program of durable: what a step costs, measured against the disk's own
//! limit and side by side with duroxide, the closest Rust peer.
//!
//! ```text
//! cargo run --release -p durable-bench             # full run, a few minutes
//! cargo run --release -p durable-bench -- --quick  # smaller counts, under a minute
//! ```
//!
//! Options: `--dir DIR` (where the SQLite files go; a fresh directory under the system
//! temp dir by default, removed at the end unless `--keep`), `--no-peer`, and
//! `--only LIST` with any of `fsync,w1,w2,w3,replay,recovery,memory,normal,peer,pg` (to
//! profile one workload). Prints a table, then one JSON object as the last line.
//!
//! Every workload opens a fresh SQLite file in that directory with durable's default
//! durability (`synchronous=FULL`: one fsync per commit); `normal` reruns W1 to W3 with
//! `synchronous=NORMAL`, the setting duroxide's provider ends up with, for a comparison
//! at equal durability.
//!
//! `--database-url postgres://...` (or `DURABLE_BENCH_DATABASE_URL`) runs W2 on that
//! PostgreSQL database with 1, 2 and 4 worker processes, each count in a fresh schema
//! that is dropped afterwards (the `pg` part; see `pg.rs`). With a URL, only `pg` runs
//! unless `--only` names other parts too: the SQLite workloads and the peer measure the
//! local disk, not the server, and take minutes of their own.

mod engine;
mod peer;
mod pg;
mod procs;
mod report;
mod sys;
mod workloads;

use durable::Synchronous;
use report::Figures;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The sizes of one benchmark run.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    fsync_samples: usize,
    w1_steps: u32,
    w2_runs: usize,
    w2_steps: u32,
    w3_orders: usize,
    replay_events: usize,
    replay_min_time: Duration,
    recovery_runs: usize,
    recovery_lease: Duration,
    memory_cached: usize,
    memory_backlog: usize,
    peer: peer::PeerPlan,
    /// Runs of W2 on PostgreSQL (of `w2_steps` steps each).
    pg_runs: usize,
}

/// The worker process counts W2 on PostgreSQL runs with.
const PG_PROCESSES: [usize; 3] = [1, 2, 4];

impl Plan {
    fn new(quick: bool) -> Self {
        let (w1_steps, w2_runs, w3_orders) = if quick {
            (200, 200, 200)
        } else {
            (1000, 1000, 1000)
        };
        Plan {
            quick,
            fsync_samples: if quick { 100 } else { 300 },
            w1_steps,
            w2_runs,
            w2_steps: 10,
            w3_orders,
            replay_events: 10_000,
            replay_min_time: Duration::from_millis(if quick { 500 } else { 2000 }),
            recovery_runs: 100,
            recovery_lease: Duration::from_secs(1),
            memory_cached: if quick { 2_000 } else { 10_000 },
            memory_backlog: if quick { 10_000 } else { 100_000 },
            // duroxide runs a few hundred steps a second here: in --quick it gets half
            // the runs of W2 and W3 so that the whole program stays under a minute.
            peer: peer::PeerPlan {
                w1_steps,
                w2_runs: if quick { w2_runs / 2 } else { w2_runs },
                w2_steps: 10,
                w3_orders: if quick { w3_orders / 2 } else { w3_orders },
                poll_ms: 1,
                concurrency: 4,
            },
            pg_runs: w2_runs,
        }
    }
}

struct Args {
    quick: bool,
    dir: Option<PathBuf>,
    keep: bool,
    peer: bool,
    only: Option<Vec<String>>,
    database_url: Option<String>,
}

impl Args {
    /// Whether to run `part`: the ones `--only` lists; otherwise every SQLite part and
    /// the peer, or with a database URL only `pg`.
    fn wants(&self, part: &str) -> bool {
        match &self.only {
            Some(list) => list.iter().any(|p| p == part),
            None if self.database_url.is_some() => part == "pg",
            None => part != "pg",
        }
    }
}

const PARTS: &[&str] = &[
    "fsync", "w1", "w2", "w3", "replay", "recovery", "memory", "normal", "peer", "pg",
];

/// The environment variable `--database-url` falls back to.
const DATABASE_URL_ENV: &str = "DURABLE_BENCH_DATABASE_URL";

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut parsed = Args {
        quick: false,
        dir: None,
        keep: false,
        peer: true,
        only: None,
        database_url: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => parsed.quick = true,
            "--keep" => parsed.keep = true,
            "--no-peer" => parsed.peer = false,
            "--dir" => {
                parsed.dir = Some(PathBuf::from(
                    it.next()
                        .ok_or_else(|| anyhow::anyhow!("--dir needs a directory"))?,
                ));
            }
            "--only" => {
                let list: Vec<String> = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--only needs a list, e.g. w1,w2"))?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = list.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    anyhow::bail!(
                        "--only: unknown part {bad:?}; the parts are {}",
                        PARTS.join(",")
                    );
                }
                parsed.only = Some(list);
            }
            "--database-url" => {
                parsed.database_url = Some(
                    it.next()
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "--database-url needs a URL, e.g. postgres://user@host/db"
                            )
                        })?
                        .clone(),
                );
            }
            "-h" | "--help" => {
                println!(
                    "usage: durable-bench [--quick] [--dir DIR] [--keep] [--no-peer] [--only {}] [--database-url postgres://...]",
                    PARTS.join(",")
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if parsed.database_url.is_none() {
        parsed.database_url = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty());
    }
    if parsed.database_url.is_none() && parsed.wants("pg") {
        anyhow::bail!("--only pg needs --database-url (or {DATABASE_URL_ENV})");
    }
    Ok(parsed)
}

/// Runs one measurement, printing progress to stderr; a failure is reported and recorded
/// but does not stop the others.
async fn step<T>(
    name: &str,
    errors: &mut Vec<String>,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Option<T> {
    eprintln!("running {name}");
    let started = Instant::now();
    match fut.await {
        Ok(v) => {
            eprintln!("  {name} took {:.1} s", started.elapsed().as_secs_f64());
            Some(v)
        }
        Err(e) => {
            eprintln!("  {name} failed: {e:#}");
            errors.push(format!("{name}: {e:#}"));
            None
        }
    }
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let plan = Plan::new(args.quick);
    let wants = |part: &str| args.wants(part);
    let (dir, made_dir) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.clone(), false)
        }
        None => {
            let d = std::env::temp_dir().join(format!(
                "durable-bench-{}-{}",
                std::process::id(),
                durable::clock::now_ms()
            ));
            std::fs::create_dir_all(&d)?;
            (d, true)
        }
    };
    let started = Instant::now();
    let mut f = Figures::new(plan.quick, &dir, sys::fs_type(&dir));
    f.load_average = sys::load_average();
    f.w2_steps = plan.w2_steps;
    let mut errors = Vec::new();

    if wants("fsync") {
        let samples = plan.fsync_samples;
        let d = dir.clone();
        let fsync = step("fsync floor", &mut errors, async move {
            tokio::task::spawn_blocking(move || sys::fsync_floor(&d, samples)).await?
        })
        .await;
        f.fsync = fsync;
    }
    if wants("w1") {
        f.w1_us_per_step = step(
            "W1",
            &mut errors,
            engine::w1(&dir, plan.w1_steps, Synchronous::Full),
        )
        .await;
    }
    if wants("w2") {
        f.w2 = step(
            "W2",
            &mut errors,
            engine::w2(&dir, plan.w2_runs, plan.w2_steps, Synchronous::Full),
        )
        .await;
    }
    if wants("w3") {
        f.w3 = step(
            "W3",
            &mut errors,
            engine::w3(&dir, plan.w3_orders, Synchronous::Full),
        )
        .await;
    }
    if wants("replay") {
        f.replay = step(
            "replay",
            &mut errors,
            engine::replay(&dir, plan.replay_events, plan.replay_min_time),
        )
        .await;
    }
    if wants("recovery") {
        f.recovery = step(
            "recovery",
            &mut errors,
            procs::recovery(&dir, plan.recovery_runs, plan.recovery_lease),
        )
        .await;
    }
    if wants("memory") {
        f.memory = step(
            "memory",
            &mut errors,
            procs::memory(&dir, plan.memory_cached, plan.memory_backlog),
        )
        .await;
    }
    if wants("normal") {
        f.normal_w1_us_per_step = step(
            "W1 at synchronous=NORMAL",
            &mut errors,
            engine::w1(&dir, plan.w1_steps, Synchronous::Normal),
        )
        .await;
        f.normal_w2 = step(
            "W2 at synchronous=NORMAL",
            &mut errors,
            engine::w2(&dir, plan.w2_runs, plan.w2_steps, Synchronous::Normal),
        )
        .await;
        f.normal_w3 = step(
            "W3 at synchronous=NORMAL",
            &mut errors,
            engine::w3(&dir, plan.w3_orders, Synchronous::Normal),
        )
        .await;
    }
    if args.peer && wants("peer") {
        let d = dir.clone();
        let p = plan.peer.clone();
        f.peer_plan = Some(plan.peer.clone());
        f.peer = step("peer (duroxide)", &mut errors, async move {
            tokio::task::spawn_blocking(move || {
                let exe = peer::build()?;
                peer::run(&exe, &d, &p)
            })
            .await?
        })
        .await;
        if f.peer.is_none() {
            f.peer_error = errors.last().cloned();
        }
    }
    if let Some(url) = args.database_url.as_deref().filter(|_| wants("pg")) {
        f.pg_url = Some(pg::redact(url));
        f.pg_runs = plan.pg_runs;
        for processes in PG_PROCESSES {
            let measured = step(
                &format!("W2 on PostgreSQL, {processes} worker processes"),
                &mut errors,
                pg::w2(url, plan.pg_runs, plan.w2_steps, processes),
            )
            .await;
            f.pg_w2.push((processes, measured));
        }
    }
    f.errors = errors;
    f.seconds = started.elapsed().as_secs_f64();
    if made_dir && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    report::print(&f, &plan_summary(&plan, f.pg_url.is_some()));
    // The figures are printed either way; a workload of ours that failed makes the run
    // fail (so a smoke run in CI does), the peer's own failure does not.
    let own: Vec<&String> = f
        .errors
        .iter()
        .filter(|e| Some(*e) != f.peer_error.as_ref())
        .collect();
    if !own.is_empty() {
        anyhow::bail!(
            "{} workload(s) failed: {}",
            own.len(),
            own.iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

fn plan_summary(plan: &Plan, pg: bool) -> String {
    let peer = if plan.peer.w2_runs == plan.w2_runs && plan.peer.w3_orders == plan.w3_orders {
        String::new()
    } else {
        format!(" (peer: {} and {})", plan.peer.w2_runs, plan.peer.w3_orders)
    };
    let pg = if pg {
        format!(", PostgreSQL W2 {} runs", plan.pg_runs)
    } else {
        String::new()
    };
    format!(
        "{}: W1 {} steps, W2 {} runs x {} steps, W3 {} orders{peer}, replay {} events, recovery {} runs (lease {} ms), memory {} cached / {} sleeping runs{pg}",
        if plan.quick { "quick" } else { "full" },
        plan.w1_steps,
        plan.w2_runs,
        plan.w2_steps,
        plan.w3_orders,
        plan.replay_events,
        plan.recovery_runs,
        plan.recovery_lease.as_millis(),
        plan.memory_cached,
        plan.memory_backlog,
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some(procs::WORKER_COMMAND) {
        procs::worker_main(&args[1..]).await
    } else {
        match parse_args(&args) {
            Ok(parsed) => bench(parsed).await,
            Err(e) => Err(e),
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
