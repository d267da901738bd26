//! W2 on PostgreSQL with several worker processes: the `--database-url` mode.
//!
//! For each process count (1, 2 and 4), the benchmark
//!
//! 1. creates a fresh schema, `durable_bench_w2_<n>p_<pid>_<ms>`, by connecting its client
//!    store to it (which also migrates it, so the workers do not race to);
//! 2. starts `n` worker processes, the benchmark binary itself (`__worker --database-url
//!    URL --database-schema S`, see `procs.rs`), each with the default `WorkerOptions`
//!    and the default pool of 16 connections, and waits until every one says it runs and
//!    is polling an empty schema;
//! 3. reads the database server's clock (t0), then starts the W2 runs from this process
//!    all at once (`runs` runs of `steps` no-op activities), through a client store with a
//!    pool of [`CLIENT_POOL`] connections;
//! 4. waits until none is running, and reads every run's `updated_at_ms`, which the server
//!    stamps (with its own clock, the one t0 came from) in the transaction that completes
//!    the run. Throughput is runs (and steps) over t0 to the last completion; latency is
//!    t0 to each completion. As with W2 on SQLite, the clock starts before the runs are
//!    started, so the starts are part of what is measured, and the workers are already up;
//! 5. stops the workers gracefully (each prints its counters) and drops the schema. The
//!    schema is dropped whatever happened in between; only a benchmark killed from outside
//!    leaves one behind (`DROP SCHEMA durable_bench_w2_... CASCADE` removes it).
//!
//! Over the same window it reads CPU time from `/proc`: of the worker processes, of this
//! process (the client, which mostly waits), of every process named `postgres` on this
//! machine (the server's backends, when the server is local), and of the whole machine,
//! so a table can show where the cores went; and from the server, the transactions of
//! the database and the WAL written from just before the starts until every session of
//! the measurement has ended (what a step costs the server).

use crate::engine::{Batch, WORKLOAD_TIMEOUT, wait_finished};
use crate::procs::{WorkerCounters, WorkerProcess};
use crate::sys;
use crate::workloads::chain;
use anyhow::Context as _;
use durable::store::SharedStore;
use durable::{Client, PostgresOptions, PostgresStore};
use durable_core::Workflow;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;

/// Connections of the client store that starts the runs and polls for their end. Kept
/// small so that four workers (17 connections each, one of them listening) and the
/// client stay well under PostgreSQL's default `max_connections` of 100.
pub(crate) const CLIENT_POOL: usize = 8;

/// How often the client asks whether any run is still running. The figures come from
/// the runs' own completion times, so this only bounds how long the benchmark lingers;
/// each poll is one small query.
const POLL: Duration = Duration::from_millis(50);

/// How long the server gets to count the transactions of sessions that just ended.
const STATS_SETTLE: Duration = Duration::from_millis(1500);

/// How long a worker process may take to stop gracefully before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// CPU used during one measurement, in cores: CPU-seconds per second of the window from
/// just before the starts to just after the last run was seen finished.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuShare {
    /// Every CPU of the machine that was not idle.
    pub(crate) machine: Option<f64>,
    /// The worker processes together.
    pub(crate) workers: f64,
    /// This process: the client starting runs and polling.
    pub(crate) client: f64,
    /// The processes named `postgres` on this machine (`None` when there are none).
    pub(crate) postgres: Option<f64>,
}

impl CpuShare {
    /// What the machine spent besides the workers, the client and PostgreSQL: other
    /// programs (builds, tests) sharing the cores.
    pub(crate) fn other(&self) -> Option<f64> {
        let machine = self.machine?;
        Some((machine - self.workers - self.client - self.postgres.unwrap_or(0.0)).max(0.0))
    }
}

/// What W2 on PostgreSQL measured with one number of worker processes.
#[derive(Debug, Clone)]
pub(crate) struct PgW2 {
    /// Runs per second and latencies.
    pub(crate) batch: Batch,
    /// CPU during the measurement.
    pub(crate) cpu: CpuShare,
    /// Each worker's counters, in process order (`None` for one that printed none).
    pub(crate) counters: Vec<Option<WorkerCounters>>,
    /// The 1-minute load average just before the measurement.
    pub(crate) load_average: Option<f64>,
    /// How much the server's counters grew from before the starts until every worker
    /// and the client had disconnected.
    pub(crate) server: Option<ServerCounters>,
}

/// One connection of the benchmark's own, outside any durable schema: the server's
/// clock and dropping the schemas.
struct Admin {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Admin {
    async fn connect(url: &str) -> anyhow::Result<Admin> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .with_context(|| format!("connecting to {}", redact(url)))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Admin { client, driver })
    }

    /// The server's clock in ms since the epoch, the clock of `updated_at_ms`.
    async fn now_ms(&self) -> anyhow::Result<i64> {
        let row = self
            .client
            .query_one(
                "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Transactions of this database so far (committed or rolled back, by every session)
    /// and WAL bytes the server has written: `None` when the server does not tell.
    async fn server_counters(&self) -> Option<ServerCounters> {
        let row = self
            .client
            .query_one(
                "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database
                         WHERE datname = current_database()),
                        pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::BIGINT",
                &[],
            )
            .await
            .ok()?;
        Some(ServerCounters {
            transactions: row.try_get(0).ok()?,
            wal_bytes: row.try_get(1).ok()?,
        })
    }

    async fn drop_schema(&self, schema: &str) -> anyhow::Result<()> {
        self.client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .with_context(|| format!("dropping schema {schema}; drop it by hand"))
    }

    async fn close(self) {
        drop(self.client);
        let _ = self.driver.await;
    }
}

/// Counters the server keeps, read before and after a measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerCounters {
    /// Transactions of the database (`pg_stat_database`, which the server updates up to
    /// a second late; every session of the database counts, the benchmark's and others').
    pub(crate) transactions: i64,
    /// WAL written by the whole server (bytes).
    pub(crate) wal_bytes: i64,
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// W2 on PostgreSQL: `runs` runs of `steps` no-op activities, all started at once, run by
/// `processes` worker processes in a schema of their own, dropped afterwards.
pub(crate) async fn w2(
    url: &str,
    runs: usize,
    steps: u32,
    processes: usize,
) -> anyhow::Result<PgW2> {
    let schema = format!(
        "durable_bench_w2_{processes}p_{}_{}",
        std::process::id(),
        durable::clock::now_ms()
    );
    let admin = Admin::connect(url).await?;
    let measured = measure(url, &admin, &schema, runs, steps, processes).await;
    let dropped = admin.drop_schema(&schema).await;
    admin.close().await;
    match (measured, dropped) {
        (Ok(figures), Ok(())) => Ok(figures),
        (Err(e), Ok(())) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Err(d)) => Err(e.context(format!("and then {d:#}"))),
    }
}

/// The CPU readings at one instant.
struct CpuReading {
    machine: Option<(Duration, Duration)>,
    workers: Duration,
    client: Duration,
    postgres: Option<Duration>,
}

impl CpuReading {
    fn take(workers: &[WorkerProcess]) -> CpuReading {
        CpuReading {
            machine: sys::machine_cpu_time(),
            workers: workers
                .iter()
                .filter_map(|w| sys::process_cpu_time(w.pid()))
                .sum(),
            client: sys::process_cpu_time(std::process::id()).unwrap_or_default(),
            postgres: sys::postgres_cpu_time().map(|(cpu, _)| cpu),
        }
    }

    /// Cores used from `before` to `self`, `window` apart.
    fn since(&self, before: &CpuReading, window: Duration) -> CpuShare {
        let secs = window.as_secs_f64().max(1e-3);
        let cores =
            |after: Duration, before: Duration| after.saturating_sub(before).as_secs_f64() / secs;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        CpuShare {
            // Busy share of all CPUs, in cores.
            machine: self
                .machine
                .zip(before.machine)
                .map(|((b1, a1), (b0, a0))| {
                    let all = a1.saturating_sub(a0).as_secs_f64();
                    if all > 0.0 {
                        b1.saturating_sub(b0).as_secs_f64() / all * cpus
                    } else {
                        0.0
                    }
                }),
            workers: cores(self.workers, before.workers),
            client: cores(self.client, before.client),
            postgres: self.postgres.zip(before.postgres).map(|(a, b)| cores(a, b)),
        }
    }
}

async fn measure(
    url: &str,
    admin: &Admin,
    schema: &str,
    runs: usize,
    steps: u32,
    processes: usize,
) -> anyhow::Result<PgW2> {
    let store: SharedStore = Arc::new(
        PostgresStore::connect(
            url,
            PostgresOptions {
                schema: Some(schema.to_owned()),
                pool_size: CLIENT_POOL,
                ..PostgresOptions::default()
            },
        )
        .await
        .with_context(|| format!("creating schema {schema}"))?,
    );
    let client = Client::new(store);
    let mut workers = Vec::with_capacity(processes);
    for _ in 0..processes {
        // On an error the ones already started are killed when `workers` drops.
        workers.push(WorkerProcess::spawn_postgres(url, schema)?);
    }
    let load_average = sys::load_average();
    let counters_before = admin.server_counters().await;
    let before = CpuReading::take(&workers);
    let clock = std::time::Instant::now();
    let outcome = async {
        let t0 = admin.now_ms().await?;
        let starts =
            (0..runs).map(|i| client.start::<chain>(format!("{}-{i}", chain::NAME), &steps));
        for started in futures::future::join_all(starts).await {
            started?;
        }
        let finished = tokio::select! {
            finished = wait_finished(&client, chain::NAME, runs, POLL, WORKLOAD_TIMEOUT) => finished?,
            (pid, status) = first_exit(&mut workers) => {
                anyhow::bail!("worker process {pid} ended ({status}) before the runs finished")
            }
        };
        anyhow::Ok(Batch::of(t0, &finished))
    }
    .await;
    let window = clock.elapsed();
    let after = CpuReading::take(&workers);
    let mut counters = Vec::with_capacity(workers.len());
    for worker in workers {
        counters.push(worker.stop(STOP_GRACE).await?);
    }
    // Sessions report their transactions when they end at the latest: close them all.
    drop(client);
    tokio::time::sleep(STATS_SETTLE).await;
    let counters_after = admin.server_counters().await;
    Ok(PgW2 {
        batch: outcome?,
        cpu: after.since(&before, window),
        counters,
        load_average,
        server: counters_before
            .zip(counters_after)
            .map(|(b, a)| ServerCounters {
                transactions: a.transactions - b.transactions,
                wal_bytes: a.wal_bytes - b.wal_bytes,
            }),
    })
}

/// Waits until one of `workers` ends, rather than for the workload's time-out.
async fn first_exit(workers: &mut [WorkerProcess]) -> (u32, std::process::ExitStatus) {
    loop {
        for worker in workers.iter_mut() {
            if let Some(status) = worker.exited() {
                return (worker.pid(), status);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_the_password_only() {
        assert_eq!(
            redact("postgres://bench:secret@db.example:5432/test"),
            "postgres://bench@db.example:5432/test"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(
            redact("host=db user=bench password=secret"),
            "host=db user=bench"
        );
    }
}
