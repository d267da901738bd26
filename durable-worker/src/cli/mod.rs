//! The CLI every worker binary gets: `durable::cli::main(registry)`.
//!
//! ```text
//! worker                                      run a worker until Ctrl-C
//! start <workflow> --input JSON [--id ID] [--execution-timeout 30s]
//!       [--task-queue Q]
//!                                             print the workflow id; same id twice = same run
//! result <id> [--wait] [--timeout SECS]       the output as JSON, or the failure
//! status <id> | list [--status S] [--workflow W] [--stuck DURATION]
//! query <id>                                  what the run published with ctx.set_status, as JSON
//! history <id> [--json]                       the events, payloads decoded to JSON
//! signal <id> <name> --payload JSON
//! cancel <id> | retry <id>
//! replay <id>                                 run the code against the history
//! run <workflow> --input JSON                 start a worker, start a run, wait, print
//! schedule create <id> <workflow> --input JSON (--cron EXPR | --every DURATION)
//!          [--catch-up skip|one|all] [--overlap skip|allow]
//! schedule list | show <id> | pause <id> | resume <id> | delete <id> | trigger <id>
//! queue set-limit <queue> [--concurrency N] [--rate N/s] [--burst N]
//! queue clear-limit <queue> | queue show <queue> | queue list
//!                                             task queue limits shared by all workers
//! ```
//!
//! Every subcommand works on the SQLite file named by `--db` (default `./durable.db`), or
//! on a PostgreSQL database with `--database-url postgres://...` (`DURABLE_DATABASE_URL`),
//! optionally in a schema of its own (`--database-schema`).
//!
//! Exit codes: 0 success; 1 the run failed (`result`, `run`); 2 an error (bad input,
//! unknown run, not a durable database); 3 the run did not finish in time.

mod output;

/// Prints a line on stdout; a closed pipe (`| head`) is not an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod queue;
mod schedule;

use crate::client::{Client, RunOutcome, StartOptions};
use crate::error::ClientError;
use crate::worker::{Worker, WorkerOptions};
use clap::{Parser, Subcommand};
use durable_core::ReplayError;
use durable_core::error::StoreError;
use durable_core::history::HistoryFile;
use durable_core::ids::{EventId, WorkflowId};
use durable_core::payload::Payload;
use durable_core::registry::Registry;
use durable_core::replay::{
    ReplayFileError, ReplayOutcome, ReplayReport, Replayer, divergence_report,
};
use durable_core::store::sqlite::{SqliteOptions, SqliteStore};
use durable_core::store::{RunFilter, RunStatus, SharedStore};
use durable_core::{RunIdentity, clock};
use std::sync::Arc;
use std::time::Duration;

/// Exit code: the run failed.
pub const EXIT_RUN_FAILED: i32 = 1;
/// Exit code: an error (bad input, unknown run, database problem).
pub const EXIT_ERROR: i32 = 2;
/// Exit code: the run did not finish in time.
pub const EXIT_TIMEOUT: i32 = 3;

#[derive(Parser, Debug)]
#[command(about = "A durable worker binary: run workers and inspect runs", long_about = None)]
struct Cli {
    /// The SQLite database file.
    #[arg(
        long,
        global = true,
        default_value = "./durable.db",
        env = "DURABLE_DB"
    )]
    db: String,
    /// A PostgreSQL database to use instead of the SQLite file, e.g.
    /// postgres://user:password@host:5432/db (takes precedence over --db).
    #[arg(long, global = true, env = "DURABLE_DATABASE_URL")]
    database_url: Option<String>,
    /// The PostgreSQL schema holding durable's tables (created if missing).
    #[arg(long, global = true, env = "DURABLE_DATABASE_SCHEMA")]
    database_schema: Option<String>,
    /// The namespace to work in.
    #[arg(
        long,
        global = true,
        default_value = "default",
        env = "DURABLE_NAMESPACE"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct WorkerArgs {
    /// Lease length in milliseconds (a dead worker's runs move after this long).
    #[arg(long, default_value_t = 10_000, env = "DURABLE_LEASE_MS")]
    lease_ms: u64,
    /// Poll interval in milliseconds.
    #[arg(long, default_value_t = 50, env = "DURABLE_POLL_MS")]
    poll_ms: u64,
    /// Activities running at once.
    #[arg(long, default_value_t = 1000)]
    max_activities: usize,
    /// Runs kept in memory.
    #[arg(long, default_value_t = 10_000)]
    max_cached_runs: usize,
    /// A task queue this worker serves (repeat for several; default: the default queue).
    #[arg(
        long = "task-queue",
        env = "DURABLE_TASK_QUEUES",
        value_delimiter = ','
    )]
    task_queues: Vec<String>,
    /// An activation running this long without yielding suspends its run (milliseconds).
    #[arg(long, default_value_t = 30_000)]
    activation_deadline_ms: u64,
    /// Activations of a run cut short this many times in a row suspend it.
    #[arg(long, default_value_t = 5)]
    max_activation_failures: u32,
}

impl WorkerArgs {
    fn options(&self) -> WorkerOptions {
        WorkerOptions {
            lease: Duration::from_millis(self.lease_ms.max(10)),
            poll_interval: Duration::from_millis(self.poll_ms.max(1)),
            max_concurrent_activities: self.max_activities.max(1),
            max_cached_runs: self.max_cached_runs.max(1),
            task_queues: self.task_queues.clone(),
            activation_deadline: Duration::from_millis(self.activation_deadline_ms.max(10)),
            max_activation_failures: self.max_activation_failures.max(1),
            ..WorkerOptions::default()
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a worker until Ctrl-C.
    Worker(WorkerArgs),
    /// Start a run and print its workflow id.
    Start {
        /// The workflow name.
        workflow: String,
        /// The input as JSON.
        #[arg(long, default_value = "null")]
        input: String,
        /// The workflow id (default: a new UUID). Starting an existing id returns it.
        #[arg(long)]
        id: Option<String>,
        /// End the run as failed if it is still running after this long (e.g. 30s, 2h,
        /// 7days).
        #[arg(long, value_name = "DURATION")]
        execution_timeout: Option<String>,
        /// The workflow task queue: only workers serving it (`worker --task-queue Q`)
        /// run it (default: the default queue).
        #[arg(long, value_name = "QUEUE")]
        task_queue: Option<String>,
    },
    /// Print the output of a run as JSON (exit 1 if it failed).
    Result {
        /// The workflow id.
        id: String,
        /// Wait for the run to finish.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds (exit 3).
        #[arg(long, allow_negative_numbers = true)]
        timeout: Option<f64>,
    },
    /// Show a run's state and what it is waiting for.
    Status {
        /// The workflow id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// An earlier run of the workflow id (one that continued as new or was reset)
        /// instead of the latest; `list --id ID` shows them.
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
    },
    /// Print what a run last published with `ctx.set_status(..)`, as JSON (`null` when
    /// nothing yet).
    Query {
        /// The workflow id.
        id: String,
    },
    /// List runs, newest first.
    List {
        /// Only runs with this status (running, completed, failed, suspended, continued).
        #[arg(long)]
        status: Option<String>,
        /// Only the runs of this workflow id: the chain of its runs (continue-as-new,
        /// resets), newest first.
        #[arg(long, value_name = "WORKFLOW_ID")]
        id: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only running runs with no progress for this long (e.g. 10m, 2h).
        #[arg(long)]
        stuck: Option<String>,
        /// Only runs created within this long (e.g. 1h, 7days).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print a run's history.
    History {
        /// The workflow id.
        id: String,
        /// One JSON object per line per event.
        #[arg(long)]
        json: bool,
        /// Write a portable history file (for `replay --file` and replay tests).
        #[arg(long, value_name = "FILE")]
        export: Option<std::path::PathBuf>,
        /// An earlier run of the workflow id (one that continued as new or was reset)
        /// instead of the latest; `list --id ID` shows them.
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
    },
    /// Send a signal to a run.
    Signal {
        /// The workflow id.
        id: String,
        /// The signal name.
        name: String,
        /// The body as JSON.
        #[arg(long, default_value = "null")]
        payload: String,
    },
    /// Ask a run to cancel.
    Cancel {
        /// The workflow id.
        id: String,
        /// Why.
        #[arg(long, default_value = "cancelled from the command line")]
        reason: String,
    },
    /// Resume a suspended run (after fixing the code that made its activation fail).
    Retry {
        /// The workflow id.
        id: String,
    },
    /// Replay histories through this binary's code and report divergence (exit 1).
    Replay {
        /// The workflow id of a run in the database.
        #[arg(required_unless_present_any = ["file", "all_open"])]
        id: Option<String>,
        /// A history file written by `history --export`.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["id", "all_open"])]
        file: Option<std::path::PathBuf>,
        /// Every run that is not finished: the deploy gate before rolling out new code.
        #[arg(long, conflicts_with = "id")]
        all_open: bool,
    },
    /// Start a new run of the same workflow id from the history cut at an event.
    Reset {
        /// The workflow id.
        id: String,
        /// The last event to keep.
        #[arg(long, value_name = "EVENT")]
        to: u64,
    },
    /// Manage schedules: start a workflow on a cron expression or an interval.
    Schedule {
        #[command(subcommand)]
        command: schedule::ScheduleCommand,
    },
    /// Task queue limits, kept in the store for every worker sharing it.
    Queue {
        #[command(subcommand)]
        action: queue::QueueCommand,
    },
    /// Start a worker and a run, wait for the result, print it. With `--task-queue`, the
    /// run goes on the first queue named; the worker serves the queues named and the
    /// default queue.
    Run {
        /// The workflow name.
        workflow: String,
        /// The input as JSON.
        #[arg(long, default_value = "null")]
        input: String,
        /// The workflow id (default: a new UUID).
        #[arg(long)]
        id: Option<String>,
        /// End the run as failed if it is still running after this long (e.g. 30s).
        #[arg(long, value_name = "DURATION")]
        execution_timeout: Option<String>,
        /// Give up after this many seconds (exit 3).
        #[arg(long, allow_negative_numbers = true)]
        timeout: Option<f64>,
        #[command(flatten)]
        worker: WorkerArgs,
    },
}

/// A failure of a subcommand: the message and the exit code.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn error(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_ERROR,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::error(e.to_string())
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Failed { .. } => EXIT_RUN_FAILED,
            ClientError::Timeout(_) => EXIT_TIMEOUT,
            _ => EXIT_ERROR,
        };
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Failure { code, message }
    }
}

/// Parses the process's arguments and runs the subcommand; returns the exit code.
/// Errors are printed as one `error: ...` line on stderr.
pub fn main(registry: Registry) -> i32 {
    main_from(registry, std::env::args_os())
}

/// Like [`main`] with explicit arguments (the first is the program name).
pub fn main_from<I, T>(registry: Registry, args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            eprintln!("error: {}", clap_error_line(&e));
            return EXIT_ERROR;
        }
        Err(e) => {
            // --help and --version.
            let _ = e.print();
            return 0;
        }
    };
    init_tracing(matches!(
        cli.command,
        Command::Worker(_) | Command::Run { .. }
    ));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(dispatch(cli, registry)) {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("error: {}", f.message.replace('\n', " "));
            f.code
        }
    }
}

/// A command-line mistake as one line, like every other error: clap's text without its
/// usage block (`--help` shows that), tips kept.
fn clap_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.strip_prefix("error:").map_or(line, str::trim_start));
        }
    }
    parts.join(" ")
}

fn init_tracing(worker: bool) {
    let default = if worker { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DURABLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn open_store(cli: &Cli, create: bool) -> Result<SharedStore, Failure> {
    if let Some(url) = &cli.database_url {
        return open_database_url(cli, url).await;
    }
    let store = SqliteStore::open(
        &cli.db,
        SqliteOptions {
            namespace: cli.namespace.clone(),
            create,
            ..SqliteOptions::default()
        },
    )
    .map_err(|e| match e {
        StoreError::Io(msg) if msg.starts_with("no database at") => Failure::error(format!(
            "{msg}; start a run or a worker first, or pass --db"
        )),
        e => Failure::from(e),
    })?;
    Ok(Arc::new(store))
}

#[cfg(feature = "postgres")]
async fn open_database_url(cli: &Cli, url: &str) -> Result<SharedStore, Failure> {
    use durable_core::store::postgres::{PostgresOptions, PostgresStore};
    let options = PostgresOptions {
        namespace: cli.namespace.clone(),
        schema: cli.database_schema.clone(),
        ..PostgresOptions::default()
    };
    Ok(Arc::new(PostgresStore::connect(url, options).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_database_url(_cli: &Cli, _url: &str) -> Result<SharedStore, Failure> {
    Err(Failure::error(
        "--database-url needs PostgreSQL support; this binary was built without the `postgres` feature",
    ))
}

fn parse_input(registry: &Registry, workflow: &str, json: &str) -> Result<Payload, Failure> {
    let wf = registry.find_workflow(workflow).ok_or_else(|| {
        Failure::error(format!(
            "unknown workflow {workflow:?}; this binary has: {}",
            registry.workflow_names().join(", ")
        ))
    })?;
    wf.input_from_json(json)
        .map_err(|e| Failure::error(format!("--input: {e}")))
}

fn output_json(registry: &Registry, workflow: &str, p: &Payload) -> serde_json::Value {
    registry
        .find_workflow(workflow)
        .and_then(|w| w.output_to_json(p).ok())
        .or_else(|| p.to_json().ok())
        .unwrap_or(serde_json::Value::Null)
}

fn timeout_arg(secs: Option<f64>) -> Result<Option<Duration>, Failure> {
    match secs {
        None => Ok(None),
        Some(s) if (0.0..1e9).contains(&s) => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(Failure::error(format!(
            "--timeout must be a number of seconds between 0 and 1e9, not {s}"
        ))),
    }
}

/// The start options of `--execution-timeout`.
fn start_options(execution_timeout: Option<&str>) -> Result<StartOptions, Failure> {
    let Some(text) = execution_timeout else {
        return Ok(StartOptions::new());
    };
    let timeout = humantime::parse_duration(text)
        .map_err(|e| Failure::error(format!("--execution-timeout {text:?}: {e}")))?;
    if timeout.is_zero() {
        return Err(Failure::error(format!(
            "--execution-timeout must be longer than zero, not {text:?}"
        )));
    }
    Ok(StartOptions::new().execution_timeout(timeout))
}

async fn dispatch(cli: Cli, registry: Registry) -> Result<(), Failure> {
    match &cli.command {
        Command::Worker(args) => {
            let store = open_store(&cli, true).await?;
            run_worker(store, registry, args.options()).await
        }
        Command::Start {
            workflow,
            input,
            id,
            execution_timeout,
            task_queue,
        } => {
            let mut options = start_options(execution_timeout.as_deref())?;
            if let Some(queue) = task_queue {
                if queue.trim().is_empty() {
                    return Err(Failure::error(
                        "--task-queue must name a queue (leave it out for the default queue)",
                    ));
                }
                options = options.task_queue(queue.clone());
            }
            let payload = parse_input(&registry, workflow, input)?;
            let store = open_store(&cli, true).await?;
            let client = Client::new(store);
            let id = WorkflowId(
                id.clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            );
            let out = client
                .start_encoded_with(workflow, id.clone(), payload, options)
                .await?;
            if !out.created {
                eprintln!(
                    "note: run '{id}' already exists (run id {}); not started again",
                    out.run_id
                );
            }
            say!("{id}");
            Ok(())
        }
        Command::Result { id, wait, timeout } => {
            let timeout = timeout_arg(*timeout)?;
            let client = Client::new(open_store(&cli, false).await?);
            let id = WorkflowId(id.clone());
            let info = client.status(&id).await?;
            let payload = if *wait {
                client.wait_encoded(&id, timeout).await?
            } else {
                match client.outcome(&id).await? {
                    RunOutcome::Completed(p) => p,
                    RunOutcome::Failed(error) => {
                        return Err(ClientError::Failed { id, error }.into());
                    }
                    RunOutcome::Suspended(reason) => {
                        return Err(ClientError::Suspended { id, reason }.into());
                    }
                    RunOutcome::Running => {
                        return Err(Failure {
                            code: EXIT_TIMEOUT,
                            message: format!(
                                "run '{id}' is still running; pass --wait to wait for it"
                            ),
                        });
                    }
                }
            };
            say!("{}", output_json(&registry, &info.workflow, &payload));
            Ok(())
        }
        Command::Status { id, json, run } => {
            status(&cli, &registry, id, *json, run.as_deref()).await
        }
        Command::Schedule { command } => schedule::run(&cli, &registry, command).await,
        Command::Queue { action } => queue::run(&cli, action).await,
        Command::Query { id } => {
            let client = Client::new(open_store(&cli, false).await?);
            let published = client.query_status_encoded(&WorkflowId(id.clone())).await?;
            let v = published
                .as_ref()
                .map_or(serde_json::Value::Null, output::payload_json);
            say!("{v}");
            Ok(())
        }
        Command::List {
            status,
            id,
            workflow,
            stuck,
            since,
            limit,
            json,
        } => {
            let client = Client::new(open_store(&cli, false).await?);
            let status = match status {
                None => None,
                Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
                    Failure::error(format!(
                        "unknown status {s:?}; use running, completed, failed, suspended or continued"
                    ))
                })?),
            };
            let mut filter = RunFilter {
                status,
                workflow: workflow.clone(),
                workflow_id: id.clone().map(WorkflowId),
                limit: *limit,
                ..RunFilter::default()
            };
            if let Some(stuck) = stuck {
                let d = humantime::parse_duration(stuck)
                    .map_err(|e| Failure::error(format!("--stuck {stuck:?}: {e}")))?;
                filter.status = Some(RunStatus::Running);
                filter.updated_before_ms = Some(clock::now_ms() - clock::duration_ms(d));
            }
            if let Some(since) = since {
                let d = humantime::parse_duration(since)
                    .map_err(|e| Failure::error(format!("--since {since:?}: {e}")))?;
                filter.created_after_ms = Some(clock::now_ms() - clock::duration_ms(d));
            }
            let runs = client.list(filter).await?;
            if *json {
                for r in &runs {
                    say!("{}", output::run_json(r));
                }
            } else {
                say!(
                    "{:<36} {:<16} {:<10} {:>6}  UPDATED",
                    "WORKFLOW ID",
                    "WORKFLOW",
                    "STATUS",
                    "EVENTS"
                );
                for r in &runs {
                    say!("{}", output::run_line(r));
                }
            }
            Ok(())
        }
        Command::History {
            id,
            json,
            export,
            run,
        } => {
            let client = Client::new(open_store(&cli, false).await?);
            let wid = WorkflowId(id.clone());
            let info = chosen_run(&client, &wid, run.as_deref()).await?;
            let events = client.store().read_history(info.key, EventId(0)).await?;
            if let Some(path) = export {
                let file = HistoryFile::new(info.workflow_id, info.run_id, events);
                write_new_file(path, &file.to_json())?;
                eprintln!("wrote {} events to {}", file.events.len(), path.display());
                return Ok(());
            }
            for e in &events {
                if *json {
                    say!("{}", output::event_json(e));
                } else {
                    say!("{}", output::event_line(e));
                }
            }
            Ok(())
        }
        Command::Signal { id, name, payload } => {
            let body = Payload::from_json(payload)
                .map_err(|e| Failure::error(format!("--payload: {e}")))?;
            let client = Client::new(open_store(&cli, false).await?);
            client
                .signal_encoded(&WorkflowId(id.clone()), name, body)
                .await?;
            Ok(())
        }
        Command::Cancel { id, reason } => {
            let client = Client::new(open_store(&cli, false).await?);
            client.cancel(&WorkflowId(id.clone()), reason).await?;
            Ok(())
        }
        Command::Retry { id } => {
            let store = open_store(&cli, false).await?;
            store.resume(&WorkflowId(id.clone())).await?;
            Ok(())
        }
        Command::Replay { id, file, all_open } => {
            let replayer = Replayer::new(registry.clone());
            if let Some(path) = file {
                let report = replayer.replay_file(path).map_err(|e| match e {
                    ReplayFileError::Replay { source, report, .. } => {
                        diverged(&path.display().to_string(), &source, &report)
                    }
                    e => Failure::error(e.to_string()),
                })?;
                say!("{} replays cleanly: {}", path.display(), describe(&report));
                return Ok(());
            }
            let client = Client::new(open_store(&cli, false).await?);
            let runs = if *all_open {
                let mut runs = Vec::new();
                for status in [RunStatus::Running, RunStatus::Suspended] {
                    runs.extend(
                        client
                            .list(RunFilter {
                                status: Some(status),
                                limit: usize::MAX >> 1,
                                ..RunFilter::default()
                            })
                            .await?,
                    );
                }
                runs
            } else {
                let wid = WorkflowId(id.clone().unwrap_or_default());
                vec![client.status(&wid).await?]
            };
            let mut failures = Vec::new();
            for info in &runs {
                let events = client.store().read_history(info.key, EventId(0)).await?;
                let identity = RunIdentity {
                    workflow_id: info.workflow_id.clone(),
                    run_id: info.run_id.clone(),
                };
                match replayer.replay(identity, &events) {
                    Ok(report) => say!(
                        "run '{}' replays cleanly: {}",
                        info.workflow_id,
                        describe(&report)
                    ),
                    Err(e) => {
                        let report = divergence_report(&events, &e);
                        say!("run '{}' diverges: {e}", info.workflow_id);
                        for line in report.lines() {
                            say!("    {line}");
                        }
                        failures.push(info.workflow_id.to_string());
                    }
                }
            }
            if *all_open {
                say!(
                    "{} open run(s) checked, {} diverge",
                    runs.len(),
                    failures.len()
                );
            }
            match failures.as_slice() {
                [] => Ok(()),
                [one] if !*all_open => Err(Failure {
                    code: EXIT_RUN_FAILED,
                    message: format!("run '{one}' does not replay with this binary's code"),
                }),
                many => Err(Failure {
                    code: EXIT_RUN_FAILED,
                    message: format!(
                        "{} run(s) would diverge with this binary's code: {}",
                        many.len(),
                        many.join(", ")
                    ),
                }),
            }
        }
        Command::Reset { id, to } => {
            let store = open_store(&cli, false).await?;
            let out = store
                .reset_run(&WorkflowId(id.clone()), EventId(*to))
                .await?;
            say!("{}", out.run_id);
            eprintln!("run '{id}' continues as run {} from event {to}", out.run_id);
            Ok(())
        }
        Command::Run {
            workflow,
            input,
            id,
            execution_timeout,
            timeout,
            worker,
        } => {
            let timeout = timeout_arg(*timeout)?;
            let mut options = start_options(execution_timeout.as_deref())?;
            let mut worker_options = worker.options();
            // The run goes on the first named queue, and the worker serves the default
            // queue too: the run's activities are on it unless they name theirs. (The
            // run used to go on the default queue, which a worker serving only `api`
            // never takes, and `run` waited until its timeout.)
            if let Some(queue) = worker
                .task_queues
                .iter()
                .find(|q| !q.is_empty() && q.as_str() != "default")
            {
                options = options.task_queue(queue.clone());
                worker_options.task_queues.push("default".to_owned());
            }
            let payload = parse_input(&registry, workflow, input)?;
            let store = open_store(&cli, true).await?;
            let w = Worker::new(store.clone(), registry.clone(), worker_options);
            let stop = w.shutdown_handle();
            let running = tokio::spawn(w.run());
            let client = Client::new(store);
            let id = WorkflowId(
                id.clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            );
            let result = async {
                client
                    .start_encoded_with(workflow, id.clone(), payload, options)
                    .await?;
                client.wait_encoded(&id, timeout).await
            }
            .await;
            stop.shutdown();
            let _ = running.await;
            let p = result?;
            say!("{}", output_json(&registry, workflow, &p));
            Ok(())
        }
    }
}

fn describe(report: &ReplayReport) -> String {
    let how = match &report.outcome {
        ReplayOutcome::Completed(_) => "ends completed, as recorded".to_owned(),
        ReplayOutcome::Failed(e) => format!("ends failed ({e}), as recorded"),
        ReplayOutcome::Waiting(p) => format!("waits on {} pending command(s)", p.len()),
        ReplayOutcome::WouldContinue { commands, finished } => match finished {
            Some(_) => "would now finish the run".to_owned(),
            None => format!("would now issue {} new command(s)", commands.len()),
        },
        ReplayOutcome::ContinuedAsNew(next) => {
            format!("ends continued as new ({}), as recorded", next.workflow)
        }
        ReplayOutcome::WouldContinueAsNew { next, .. } => {
            format!("would now continue as new ({})", next.workflow)
        }
    };
    format!(
        "{} events of workflow {}, {how}",
        report.events, report.workflow
    )
}

fn diverged(what: &str, err: &ReplayError, report: &str) -> Failure {
    if !report.is_empty() {
        say!("{what} diverges: {err}");
        for line in report.lines() {
            say!("    {line}");
        }
    }
    Failure {
        code: if err.is_nondeterminism() {
            EXIT_RUN_FAILED
        } else {
            EXIT_ERROR
        },
        message: format!("{what}: {err}"),
    }
}

/// Writes a new file; refuses to overwrite one.
fn write_new_file(path: &std::path::Path, text: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Failure::error(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Failure::error(format!("cannot write {}: {e}", path.display())))
}

async fn run_worker(
    store: SharedStore,
    registry: Registry,
    options: WorkerOptions,
) -> Result<(), Failure> {
    let worker = Worker::new(store, registry, options);
    let stop = worker.shutdown_handle();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        stop.shutdown();
    });
    worker.run().await.map_err(|e| {
        Failure::error(format!(
            "worker stopped: {e}: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        ))
    })
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The latest run of `wid`, or its run `run_id` (an earlier one of the chain).
async fn chosen_run(
    client: &Client,
    wid: &WorkflowId,
    run_id: Option<&str>,
) -> Result<durable_core::store::RunInfo, Failure> {
    let Some(run_id) = run_id else {
        return Ok(client.status(wid).await?);
    };
    let runs = client
        .list(RunFilter {
            workflow_id: Some(wid.clone()),
            limit: usize::MAX,
            ..RunFilter::default()
        })
        .await?;
    if runs.is_empty() {
        return Err(StoreError::NotFound(wid.clone()).into());
    }
    runs.into_iter()
        .find(|r| r.run_id.as_str() == run_id)
        .ok_or_else(|| {
            Failure::error(format!(
                "workflow id '{wid}' has no run '{run_id}'; `list --id {wid}` shows its runs"
            ))
        })
}

/// How a run is linked to the runs before and after it: the run it continued from (the
/// one before it, if that one continued as new), and the run it continued as.
async fn chain_links(
    client: &Client,
    info: &durable_core::store::RunInfo,
    history: &[durable_core::Event],
) -> Result<(Option<String>, Option<String>), Failure> {
    let continued_as = match history.last().map(|e| &e.kind) {
        Some(durable_core::EventKind::RunContinuedAsNew { run_id, .. }) => Some(run_id.0.clone()),
        _ => None,
    };
    let runs = client
        .list(RunFilter {
            workflow_id: Some(info.workflow_id.clone()),
            limit: usize::MAX,
            ..RunFilter::default()
        })
        .await?;
    // Newest first: the run listed right after this one is the one before it.
    let before = runs
        .iter()
        .skip_while(|r| r.run_id != info.run_id)
        .nth(1)
        .filter(|r| r.status == RunStatus::Continued)
        .map(|r| r.run_id.0.clone());
    Ok((before, continued_as))
}

async fn status(
    cli: &Cli,
    registry: &Registry,
    id: &str,
    json: bool,
    run: Option<&str>,
) -> Result<(), Failure> {
    let client = Client::new(open_store(cli, false).await?);
    let wid = WorkflowId(id.to_owned());
    let info = chosen_run(&client, &wid, run).await?;
    let store = client.store();
    let activities = store.pending_activities(info.key).await?;
    let timers = store.pending_timers(info.key).await?;
    let inbox = store.read_inbox(info.key).await?;
    let history = store.read_history(info.key, EventId(0)).await?;
    let published = store
        .published_status(info.key)
        .await?
        .map(|p| output::payload_json(&p));
    let (continued_from, continued_as) = chain_links(&client, &info, &history).await?;
    let now = clock::host_now_ms();
    let waiting_signal = waiting_signals(&history);
    // A due activity not started yet, on a queue with limits: it waits for room there.
    let limited = match activities
        .iter()
        .find(|a| a.owner.is_none() && a.available_at_ms <= now)
    {
        Some(a) if info.status == RunStatus::Running => {
            let queue = store.queue_info(&a.task_queue).await?;
            queue.limit.map(|limit| (a, queue, limit))
        }
        _ => None,
    };
    let family = store.run_family(info.key).await?;
    let waiting_child = waiting_children(&history)
        .into_iter()
        .find_map(|seq| family.children.iter().find(|c| c.seq == seq));
    let why = if info.status == RunStatus::Suspended {
        format!("suspended: {}", info.reason.clone().unwrap_or_default())
    } else if info.status.is_finished() {
        match history.last().map(|e| &e.kind) {
            Some(durable_core::EventKind::RunFailed { error }) => format!("failed: {error}"),
            Some(durable_core::EventKind::RunContinuedAsNew {
                workflow, run_id, ..
            }) => format!("continued as new: run {run_id} ({workflow}) carries on"),
            _ => "completed".to_owned(),
        }
    } else if let Some(a) = activities
        .iter()
        .find(|a| a.last_error.is_some() && a.owner.is_none())
    {
        format!(
            "activity {} (command {}) failed attempt {}: {}; next attempt at {}",
            a.name,
            a.seq,
            a.attempt,
            a.last_error.clone().unwrap_or_default(),
            clock::format_ms(a.available_at_ms)
        )
    } else if let Some(a) = activities
        .iter()
        .find(|a| registry.find_activity(&a.name).is_none() && a.owner.is_none())
    {
        format!(
            "activity {} (command {}) waits for a worker that has it registered{}",
            a.name,
            a.seq,
            if a.task_queue.is_empty() {
                String::new()
            } else {
                format!(" on task queue {}", a.task_queue)
            }
        )
    } else if let Some((a, queue, limit)) = &limited {
        format!(
            "activity {} (command {}) waits for room on task queue {} ({limit}; {} running, {} waiting)",
            a.name,
            a.seq,
            if queue.queue.is_empty() {
                "default"
            } else {
                &queue.queue
            },
            queue.running,
            queue.waiting
        )
    } else if let Some(a) = activities.first() {
        format!(
            "activity {} (command {}) is running, attempt {}",
            a.name, a.seq, a.attempt
        )
    } else if !inbox.is_empty() {
        format!("{} event(s) wait for a worker to apply them", inbox.len())
    } else if let Some(t) = timers.first() {
        format!(
            "timer (command {}) due at {} (in {})",
            t.seq,
            clock::format_ms(t.fire_at_ms),
            humantime::format_duration(Duration::from_millis(
                u64::try_from((t.fire_at_ms - now).max(0)).unwrap_or(0) / 1000 * 1000
            ))
        )
    } else if let Some(c) = waiting_child {
        format!(
            "waiting for child run {} of workflow {} (command {}), {}",
            c.workflow_id, c.workflow, c.seq, c.status
        )
    } else if let Some(name) = waiting_signal.first() {
        format!("waiting for signal {name:?}")
    } else {
        "waiting for a worker".to_owned()
    };
    if json {
        let v = serde_json::json!({
            "run": output::run_json(&info),
            "why": why,
            "pending_activities": activities,
            "pending_timers": timers,
            "waiting_signals": waiting_signal,
            "inbox": inbox.len(),
            "published_status": published,
            "continued_from": continued_from,
            "continued_as": continued_as,
            "parent": family.parent,
            "children": family.children,
        });
        say!("{v}");
        return Ok(());
    }
    say!("workflow id:  {}", info.workflow_id);
    say!("run id:       {}", info.run_id);
    say!("workflow:     {}", info.workflow);
    say!("status:       {}", info.status);
    if let Some(before) = &continued_from {
        say!("continued from run {before}");
    }
    if let Some(next) = &continued_as {
        say!("continued as run {next}");
    }
    say!("created:      {}", clock::format_ms(info.created_at_ms));
    say!("updated:      {}", clock::format_ms(info.updated_at_ms));
    say!("events:       {}", info.last_event_id);
    if !info.task_queue.is_empty() {
        say!("task queue:   {}", info.task_queue);
    }
    if let Some(deadline) = info.execution_deadline_ms {
        say!(
            "deadline:     {} (execution timeout)",
            clock::format_ms(deadline)
        );
    }
    if let Some(owner) = &info.owner {
        say!(
            "lease:        {owner} until {}",
            clock::format_ms(info.lease_expires_at_ms)
        );
    }
    say!("why:          {why}");
    if let Some(v) = &published {
        say!("published status: {v}");
    }
    if let Some(p) = &family.parent {
        say!(
            "parent:       {} (run {}, command {})",
            p.workflow_id,
            p.run_id,
            p.seq
        );
    }
    for c in &family.children {
        say!(
            "child:        #{} {} {} {} (cancel policy {})",
            c.seq,
            c.workflow_id,
            c.workflow,
            c.status,
            c.cancel_policy
        );
    }
    for a in &activities {
        say!(
            "activity:     #{} {} attempt {}{}{}{}",
            a.seq,
            a.name,
            a.attempt,
            a.last_heartbeat_at_ms
                .filter(|_| a.owner.is_some())
                .map(|t| format!(", last heartbeat at {}", clock::format_ms(t)))
                .unwrap_or_default(),
            a.last_error
                .as_ref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default(),
            if a.owner.is_none() {
                format!(", next attempt at {}", clock::format_ms(a.available_at_ms))
            } else {
                String::new()
            }
        );
    }
    for t in &timers {
        say!(
            "timer:        #{} due {}",
            t.seq,
            clock::format_ms(t.fire_at_ms)
        );
    }
    Ok(())
}

/// Child runs the code waits for: started with no outcome since, by command number.
fn waiting_children(history: &[durable_core::Event]) -> Vec<durable_core::CommandSeq> {
    use durable_core::EventKind;
    let mut waiting = std::collections::BTreeSet::new();
    for e in history {
        match &e.kind {
            EventKind::ChildStarted { seq, .. } => {
                waiting.insert(*seq);
            }
            EventKind::ChildCompleted { seq, .. } | EventKind::ChildFailed { seq, .. } => {
                waiting.remove(seq);
            }
            _ => {}
        }
    }
    waiting.into_iter().collect()
}

/// Signals the code waits for: awaited with no delivery since.
fn waiting_signals(history: &[durable_core::Event]) -> Vec<String> {
    use durable_core::EventKind;
    let mut waiting: Vec<String> = Vec::new();
    let mut delivered: std::collections::BTreeMap<String, usize> = Default::default();
    for e in history {
        match &e.kind {
            EventKind::SignalAwaited { name, .. } => waiting.push(name.clone()),
            EventKind::SignalReceived { name, .. } => {
                *delivered.entry(name.clone()).or_default() += 1
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for name in waiting {
        match delivered.get_mut(&name) {
            Some(n) if *n > 0 => *n -= 1,
            _ => out.push(name),
        }
    }
    out
}
