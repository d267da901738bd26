//! The figures of one benchmark run, printed as a table for people and as one JSON object
//! (the last line) for scripts.

use crate::engine::{Batch, ReplayFigures};
use crate::peer::PeerPlan;
use crate::pg::PgW2;
use crate::procs::{MemoryFigures, RecoveryFigures};
use crate::sys::FsyncFigures;
use serde_json::{Map, Value, json};
use std::path::Path;

/// Everything measured; `None` for what was not run or failed.
#[derive(Debug, Default)]
pub(crate) struct Figures {
    pub(crate) quick: bool,
    pub(crate) dir: String,
    pub(crate) fs_type: Option<String>,
    pub(crate) load_average: Option<f64>,
    pub(crate) fsync: Option<FsyncFigures>,
    pub(crate) w1_us_per_step: Option<f64>,
    pub(crate) w2: Option<Batch>,
    pub(crate) w3: Option<Batch>,
    pub(crate) replay: Option<ReplayFigures>,
    pub(crate) recovery: Option<RecoveryFigures>,
    pub(crate) memory: Option<MemoryFigures>,
    pub(crate) normal_w1_us_per_step: Option<f64>,
    pub(crate) normal_w2: Option<Batch>,
    pub(crate) normal_w3: Option<Batch>,
    pub(crate) peer_plan: Option<PeerPlan>,
    pub(crate) peer: Option<Map<String, Value>>,
    pub(crate) peer_error: Option<String>,
    pub(crate) errors: Vec<String>,
    pub(crate) seconds: f64,
    /// Steps per run in W2.
    pub(crate) w2_steps: u32,
    /// The PostgreSQL database W2 ran on (without its password), if it did.
    pub(crate) pg_url: Option<String>,
    /// Runs of W2 on PostgreSQL.
    pub(crate) pg_runs: usize,
    /// W2 on PostgreSQL by number of worker processes.
    pub(crate) pg_w2: Vec<(usize, Option<PgW2>)>,
}

impl Figures {
    pub(crate) fn new(quick: bool, dir: &Path, fs_type: Option<String>) -> Self {
        Figures {
            quick,
            dir: dir.display().to_string(),
            fs_type,
            w2_steps: 10,
            ..Figures::default()
        }
    }

    fn peer(&self, key: &str) -> Option<f64> {
        self.peer.as_ref()?.get(key)?.as_f64()
    }

    fn w2_steps_per_s(batch: Option<Batch>, steps: u32) -> Option<f64> {
        batch.map(|b| b.runs_per_s * f64::from(steps))
    }

    /// W2 on PostgreSQL with `processes` worker processes, if it was measured.
    fn pg(&self, processes: usize) -> Option<&PgW2> {
        self.pg_w2
            .iter()
            .find(|(n, _)| *n == processes)
            .and_then(|(_, m)| m.as_ref())
    }
}

/// Whether a bigger figure is better.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

/// A table row: name, durable at FULL, durable at NORMAL, the peer, which way is better.
type Row<'a> = (&'a str, Option<f64>, Option<f64>, Option<f64>, Better);

/// How many times better `ours` is than `theirs` (above 1: ours is better).
fn advantage(ours: Option<f64>, theirs: Option<f64>, better: Better) -> Option<f64> {
    let (ours, theirs) = (ours?, theirs?);
    if ours <= 0.0 || theirs <= 0.0 {
        return None;
    }
    Some(match better {
        Better::Higher => ours / theirs,
        Better::Lower => theirs / ours,
    })
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 100_000.0 => format!("{:.3e}", v),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn times(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}x"))
        .unwrap_or_else(|| "-".to_owned())
}

fn json_num(v: Option<f64>) -> Value {
    v.map(|v| json!((v * 100.0).round() / 100.0))
        .unwrap_or(Value::Null)
}

pub(crate) fn print(f: &Figures, plan: &str) {
    let steps = f.w2_steps;
    let w2_sps = Figures::w2_steps_per_s(f.w2, steps);
    let normal_w2_sps = Figures::w2_steps_per_s(f.normal_w2, steps);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    println!();
    println!("durable-bench ({plan})");
    println!(
        "directory {} ({}), {} CPUs, load average {} at the start; durable at synchronous=FULL unless said",
        f.dir,
        f.fs_type.as_deref().unwrap_or("unknown file system"),
        cpus,
        f.load_average
            .map(|l| format!("{l:.2}"))
            .unwrap_or_else(|| "unknown".to_owned())
    );
    if let Some(plan) = &f.peer_plan {
        println!(
            "peer: duroxide 0.1.32, SQLite provider (its PRAGMA synchronous = WAL is not a valid value, so SQLite keeps NORMAL: no fsync per commit), dispatcher_min_poll_interval {} ms, orchestration/worker concurrency {}",
            plan.poll_ms, plan.concurrency
        );
    }
    println!();
    if let Some(fs) = &f.fsync {
        println!(
            "fsync floor: {} us per 4 KiB write + fdatasync (median of {} overwriting a preallocated file; p10 {}, p90 {}); {} us when appending",
            num(Some(fs.median_us)),
            fs.samples,
            num(Some(fs.p10_us)),
            num(Some(fs.p90_us)),
            num(Some(fs.append_median_us))
        );
    }
    println!();

    let rows: Vec<Row<'_>> = vec![
        (
            "W1 us per step",
            f.w1_us_per_step,
            f.normal_w1_us_per_step,
            f.peer("w1_us_per_step"),
            Better::Lower,
        ),
        (
            "W2 steps/s",
            w2_sps,
            normal_w2_sps,
            f.peer("w2_steps_per_s"),
            Better::Higher,
        ),
        (
            "W2 workflows/s",
            f.w2.map(|b| b.runs_per_s),
            f.normal_w2.map(|b| b.runs_per_s),
            f.peer("w2_workflows_per_s"),
            Better::Higher,
        ),
        (
            "W2 p50 latency ms",
            f.w2.map(|b| b.p50_ms),
            f.normal_w2.map(|b| b.p50_ms),
            f.peer("w2_p50_ms"),
            Better::Lower,
        ),
        (
            "W2 p99 latency ms",
            f.w2.map(|b| b.p99_ms),
            f.normal_w2.map(|b| b.p99_ms),
            f.peer("w2_p99_ms"),
            Better::Lower,
        ),
        (
            "W3 orders/s",
            f.w3.map(|b| b.runs_per_s),
            f.normal_w3.map(|b| b.runs_per_s),
            f.peer("w3_orders_per_s"),
            Better::Higher,
        ),
        (
            "W3 p50 latency ms",
            f.w3.map(|b| b.p50_ms),
            f.normal_w3.map(|b| b.p50_ms),
            f.peer("w3_p50_ms"),
            Better::Lower,
        ),
        (
            "W3 p99 latency ms",
            f.w3.map(|b| b.p99_ms),
            f.normal_w3.map(|b| b.p99_ms),
            f.peer("w3_p99_ms"),
            Better::Lower,
        ),
    ];
    // With only the PostgreSQL part run, this table would be all dashes.
    if rows
        .iter()
        .any(|(_, ours, normal, theirs, _)| ours.or(*normal).or(*theirs).is_some())
    {
        println!(
            "{:<20} {:>12} {:>12} {:>12} {:>12} {:>12}",
            "", "durable", "duroxide", "ratio", "durable", "ratio"
        );
        println!(
            "{:<20} {:>12} {:>12} {:>12} {:>12} {:>12}",
            "", "FULL", "(NORMAL)", "FULL/peer", "NORMAL", "NORMAL/peer"
        );
        for (name, ours, normal, theirs, better) in &rows {
            println!(
                "{:<20} {:>12} {:>12} {:>12} {:>12} {:>12}",
                name,
                num(*ours),
                num(*theirs),
                times(advantage(*ours, *theirs, *better)),
                num(*normal),
                times(advantage(*normal, *theirs, *better)),
            );
        }
        println!("(ratio: how many times better durable is; above 1 durable leads)");
        println!();
    }
    print_pg(f, cpus);
    let fsync_us = f.fsync.map(|fs| fs.median_us);
    if let (Some(w1), Some(fsync)) = (f.w1_us_per_step, fsync_us) {
        println!(
            "W1 per step = {:.2} x the fsync floor (target: at most 1.5)",
            w1 / fsync
        );
    }
    if let Some(r) = &f.replay {
        println!(
            "replay: {} events/s in memory, {} per CPU-second of the replaying thread ({}-event history, {} replays; target: at least 1,000,000)",
            num(Some(r.events_per_s)),
            num(r.events_per_cpu_s),
            r.events,
            r.replays
        );
    }
    if let Some(r) = &f.recovery {
        println!(
            "recovery: SIGKILL of a worker holding {} runs ({} steps done at the kill), replacement started at once (up after {:.0} ms), lease {} ms:",
            r.runs, r.steps_done_at_kill, r.replacement_up_ms, r.lease_ms
        );
        println!(
            "  first step completed by the replacement after {} ms, all {} runs finished after {} ms",
            r.first_step_ms, r.runs, r.all_done_ms
        );
    }
    if let Some(m) = &f.memory {
        println!(
            "memory: idle worker {:.1} MiB; {} cached live runs {:.1} MiB = {:.2} KiB per run;",
            m.idle_kib as f64 / 1024.0,
            m.cached_runs,
            m.cached_kib as f64 / 1024.0,
            m.kib_per_cached_run()
        );
        println!(
            "  {} runs sleeping on timers: {:.1} MiB (min {:.1}, max {:.1} over the last 3 s; target: well under 2 GiB)",
            m.backlog_runs,
            m.backlog_kib as f64 / 1024.0,
            m.backlog_min_kib as f64 / 1024.0,
            m.backlog_max_kib as f64 / 1024.0
        );
    }
    if let Some(p) = &f.peer {
        let failed = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
        println!(
            "peer: {} of the W2 runs and {} of the W3 runs failed (duroxide gives up on a run whose store stays locked; they are left out of its figures); {} 'database is locked' warnings",
            failed("w2_failed_runs"),
            failed("w3_failed_runs"),
            failed("lock_warnings")
        );
    }
    if let Some(e) = &f.peer_error {
        println!("peer not measured: {e}");
    }
    for e in &f.errors {
        println!("error: {e}");
    }
    println!("took {:.1} s", f.seconds);

    let mut out = Map::new();
    out.insert("quick".into(), f.quick.into());
    out.insert("load_average".into(), json_num(f.load_average));
    out.insert("fsync_us".into(), json_num(fsync_us));
    out.insert("fsync_p10_us".into(), json_num(f.fsync.map(|fs| fs.p10_us)));
    out.insert("fsync_p90_us".into(), json_num(f.fsync.map(|fs| fs.p90_us)));
    out.insert(
        "fsync_append_us".into(),
        json_num(f.fsync.map(|fs| fs.append_median_us)),
    );
    out.insert("w1_us_per_step".into(), json_num(f.w1_us_per_step));
    out.insert(
        "w1_fsync_multiple".into(),
        json_num(f.w1_us_per_step.zip(fsync_us).map(|(a, b)| a / b)),
    );
    out.insert("w2_steps_per_s".into(), json_num(w2_sps));
    out.insert(
        "w2_workflows_per_s".into(),
        json_num(f.w2.map(|b| b.runs_per_s)),
    );
    out.insert("w2_p50_ms".into(), json_num(f.w2.map(|b| b.p50_ms)));
    out.insert("w2_p99_ms".into(), json_num(f.w2.map(|b| b.p99_ms)));
    out.insert(
        "w3_orders_per_s".into(),
        json_num(f.w3.map(|b| b.runs_per_s)),
    );
    out.insert("w3_p50_ms".into(), json_num(f.w3.map(|b| b.p50_ms)));
    out.insert("w3_p99_ms".into(), json_num(f.w3.map(|b| b.p99_ms)));
    out.insert(
        "replay_events_per_s".into(),
        json_num(f.replay.map(|r| r.events_per_s)),
    );
    out.insert(
        "replay_events_per_cpu_s".into(),
        json_num(f.replay.and_then(|r| r.events_per_cpu_s)),
    );
    out.insert(
        "replay_history_events".into(),
        f.replay.map(|r| r.events).into(),
    );
    out.insert("recovery_runs".into(), f.recovery.map(|r| r.runs).into());
    out.insert(
        "recovery_lease_ms".into(),
        f.recovery.map(|r| r.lease_ms).into(),
    );
    out.insert(
        "recovery_first_step_ms".into(),
        f.recovery.map(|r| r.first_step_ms).into(),
    );
    out.insert(
        "recovery_all_done_ms".into(),
        f.recovery.map(|r| r.all_done_ms).into(),
    );
    out.insert(
        "mem_kib_per_cached_run".into(),
        json_num(f.memory.map(|m| m.kib_per_cached_run())),
    );
    out.insert(
        "mem_cached_runs".into(),
        f.memory.map(|m| m.cached_runs).into(),
    );
    out.insert(
        "mem_idle_rss_kib".into(),
        f.memory.map(|m| m.idle_kib).into(),
    );
    out.insert(
        "mem_backlog_runs".into(),
        f.memory.map(|m| m.backlog_runs).into(),
    );
    out.insert(
        "mem_backlog_rss_kib".into(),
        f.memory.map(|m| m.backlog_kib).into(),
    );
    out.insert(
        "mem_backlog_rss_max_kib".into(),
        f.memory.map(|m| m.backlog_max_kib).into(),
    );
    out.insert(
        "normal_w1_us_per_step".into(),
        json_num(f.normal_w1_us_per_step),
    );
    out.insert("normal_w2_steps_per_s".into(), json_num(normal_w2_sps));
    out.insert(
        "normal_w3_orders_per_s".into(),
        json_num(f.normal_w3.map(|b| b.runs_per_s)),
    );
    for key in ["w2_failed_runs", "w3_failed_runs", "lock_warnings"] {
        out.insert(
            format!("peer_{key}"),
            f.peer
                .as_ref()
                .and_then(|p| p.get(key).cloned())
                .unwrap_or(Value::Null),
        );
    }
    for key in [
        "w1_us_per_step",
        "w2_steps_per_s",
        "w2_workflows_per_s",
        "w2_p50_ms",
        "w2_p99_ms",
        "w3_orders_per_s",
        "w3_p50_ms",
        "w3_p99_ms",
    ] {
        out.insert(format!("peer_{key}"), json_num(f.peer(key)));
    }
    out.insert(
        "w1_vs_peer".into(),
        json_num(advantage(
            f.w1_us_per_step,
            f.peer("w1_us_per_step"),
            Better::Lower,
        )),
    );
    out.insert(
        "w2_vs_peer".into(),
        json_num(advantage(w2_sps, f.peer("w2_steps_per_s"), Better::Higher)),
    );
    out.insert(
        "w3_vs_peer".into(),
        json_num(advantage(
            f.w3.map(|b| b.runs_per_s),
            f.peer("w3_orders_per_s"),
            Better::Higher,
        )),
    );
    out.insert(
        "peer_options".into(),
        f.peer
            .as_ref()
            .and_then(|p| p.get("options").cloned())
            .unwrap_or(Value::Null),
    );
    out.insert(
        "peer_error".into(),
        f.peer_error.clone().map(Value::from).unwrap_or(Value::Null),
    );
    out.insert(
        "pg_w2_runs".into(),
        f.pg_url.as_ref().map(|_| f.pg_runs).into(),
    );
    for n in crate::PG_PROCESSES {
        let m = f.pg(n);
        out.insert(
            format!("pg_w2_steps_per_s_{n}"),
            json_num(Figures::w2_steps_per_s(m.map(|m| m.batch), steps)),
        );
        out.insert(
            format!("pg_w2_workflows_per_s_{n}"),
            json_num(m.map(|m| m.batch.runs_per_s)),
        );
        out.insert(
            format!("pg_w2_p50_ms_{n}"),
            json_num(m.map(|m| m.batch.p50_ms)),
        );
        out.insert(
            format!("pg_w2_p99_ms_{n}"),
            json_num(m.map(|m| m.batch.p99_ms)),
        );
        out.insert(
            format!("pg_w2_machine_cores_{n}"),
            json_num(m.and_then(|m| m.cpu.machine)),
        );
        out.insert(
            format!("pg_w2_worker_cores_{n}"),
            json_num(m.map(|m| m.cpu.workers)),
        );
        out.insert(
            format!("pg_w2_postgres_cores_{n}"),
            json_num(m.and_then(|m| m.cpu.postgres)),
        );
        out.insert(
            format!("pg_w2_server_transactions_{n}"),
            m.and_then(|m| m.server).map(|c| c.transactions).into(),
        );
        out.insert(
            format!("pg_w2_wal_bytes_{n}"),
            m.and_then(|m| m.server).map(|c| c.wal_bytes).into(),
        );
        out.insert(
            format!("pg_w2_restores_{n}"),
            m.map(|m| counter_sum(m, |c| c.restores)).into(),
        );
        out.insert(
            format!("pg_w2_fenced_{n}"),
            m.map(|m| counter_sum(m, |c| c.fenced)).into(),
        );
    }
    out.insert("errors".into(), f.errors.clone().into());
    out.insert("seconds".into(), json_num(Some(f.seconds)));
    println!("{}", Value::Object(out));
}

/// A counter summed over a measurement's worker processes.
fn counter_sum(m: &PgW2, field: impl Fn(&crate::procs::WorkerCounters) -> u64) -> u64 {
    m.counters.iter().flatten().map(field).sum()
}

/// The table of W2 on PostgreSQL, one row per number of worker processes.
fn print_pg(f: &Figures, cpus: usize) {
    let Some(url) = &f.pg_url else {
        return;
    };
    println!(
        "W2 on PostgreSQL ({url}): {} runs x {} no-op activities started at once, a fresh schema per row",
        f.pg_runs, f.w2_steps
    );
    println!(
        "{:<10} {:>9} {:>11} {:>8} {:>8}   {:<40} {:>5}",
        "worker",
        "",
        "",
        "",
        "",
        format!("CPU in cores (of {cpus}) during the run:"),
        ""
    );
    println!(
        "{:<10} {:>9} {:>11} {:>8} {:>8}   {:>7} {:>7} {:>7} {:>8} {:>7} {:>5}",
        "processes",
        "steps/s",
        "workflows/s",
        "p50 ms",
        "p99 ms",
        "machine",
        "workers",
        "client",
        "postgres",
        "other",
        "load"
    );
    for (n, m) in &f.pg_w2 {
        let Some(m) = m else {
            println!("{n:<10} (failed, see the errors below)");
            continue;
        };
        let cores = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        println!(
            "{:<10} {:>9} {:>11} {:>8} {:>8}   {:>7} {:>7} {:>7} {:>8} {:>7} {:>5}",
            n,
            num(Figures::w2_steps_per_s(Some(m.batch), f.w2_steps)),
            num(Some(m.batch.runs_per_s)),
            num(Some(m.batch.p50_ms)),
            num(Some(m.batch.p99_ms)),
            cores(m.cpu.machine),
            cores(Some(m.cpu.workers)),
            cores(Some(m.cpu.client)),
            cores(m.cpu.postgres),
            cores(m.cpu.other()),
            m.load_average
                .map_or_else(|| "-".to_owned(), |l| format!("{l:.1}")),
        );
    }
    for (n, m) in &f.pg_w2 {
        let Some(m) = m else { continue };
        let each: Vec<String> = m
            .counters
            .iter()
            .map(|c| match c {
                Some(c) => format!("{}/{}", c.activations, c.activity_attempts),
                None => "?".to_owned(),
            })
            .collect();
        let steps = (f.pg_runs as f64 * f64::from(f.w2_steps)).max(1.0);
        let server = m.server.map_or_else(
            || "server counters unknown".to_owned(),
            |c| {
                format!(
                    "{:.2} server transactions and {:.0} bytes of WAL per step",
                    c.transactions as f64 / steps,
                    c.wal_bytes as f64 / steps
                )
            },
        );
        println!(
            "  {n} processes: activations/attempts per process {}; runs loaded from history {}, fenced commits {}; {server}",
            each.join(", "),
            counter_sum(m, |c| c.restores),
            counter_sum(m, |c| c.fenced)
        );
    }
    println!(
        "(the clock starts on the server just before the starts and stops at the last completion it stamped; CPU from /proc over that window; postgres = every process named postgres on this machine; other = the rest of the machine's busy time; the first load of each run counts as loaded from history; server transactions count the whole database)"
    );
    println!();
}
