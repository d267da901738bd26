//! Durable execution for Rust: workflows are plain `async fn`s whose every activity
//! result, timer and signal is recorded in an event log, so a crashed worker's runs are
//! finished by the next worker, which replays the log through the same code. No server:
//! the log is an embedded SQLite file.
//!
//! ```no_run
//! use durable::prelude::*;
//! use std::time::Duration;
//!
//! #[derive(Serialize, Deserialize, Clone)]
//! struct Order { id: String, items: Vec<String> }
//!
//! #[activity]
//! async fn reserve(_ctx: ActivityContext, items: Vec<String>) -> Result<u32, ActivityError> {
//!     Ok(items.len() as u32)
//! }
//!
//! #[workflow]
//! async fn order(ctx: WorkflowContext, order: Order) -> Result<u32, WorkflowError> {
//!     let reserved = ctx
//!         .activity::<reserve>(order.items.clone())
//!         .retry(RetryPolicy::exponential(Duration::from_secs(2)).max_attempts(3))
//!         .start_to_close(Duration::from_secs(30))
//!         .await?;
//!     ctx.sleep(Duration::from_secs(60)).await;
//!     Ok(reserved)
//! }
//!
//! fn main() {
//!     let registry = Registry::new().workflow::<order>().activity::<reserve>();
//!     // Every worker binary gets the same CLI: worker, start, result, status, list,
//!     // signal, history, run, ...
//!     std::process::exit(durable::cli::main(registry));
//! }
//! ```
//!
//! # Concepts
//!
//! A *run* is one execution of a workflow, named by a caller-chosen workflow id. Its
//! *history* is an append-only list of *events*. Workflow code issues *commands*
//! (schedule an activity, start a timer, wait for a signal); each is recorded, and on
//! replay each is matched by its number against history. An *activation* applies one
//! inbound event and runs the code until it waits again.
//!
//! # Determinism
//!
//! Workflow code must issue the same commands when replayed. Take time, randomness and
//! waiting from the [`WorkflowContext`] (`ctx.now()`, `ctx.random()`, `ctx.uuid()`,
//! `ctx.sleep(..)`); iterate `BTreeMap`s rather than `HashMap`s; run branches
//! concurrently with `futures::join!` or [`join_all`](futures::future::join_all); select
//! with [`futures::select_biased!`] or [`futures::future::select`], which poll in order
//! (never `futures::select!`, which picks a random ready branch). `#[workflow]` rejects
//! `tokio::spawn`, tokio timers, `thread::sleep`, `SystemTime::now`, `Instant::now` and
//! random number generators in a workflow body at compile time, and workflow code runs
//! on a thread without a tokio runtime, so indirect uses fail with a clear error.
//! Version changes for runs in flight with [`WorkflowContext::patched`].
//!
//! # Child workflows
//!
//! [`WorkflowContext::child`] starts another workflow's run as a child and awaits its
//! outcome, typed like an activity call; awaited together, many children start in one
//! activation (fan-out). The start is a recorded command, the store creates the child in
//! the same transaction, and whatever ends the child delivers its outcome to the parent.
//! A parent's cancellation reaches its children by their [`ChildCancelPolicy`].
//!
//! # Queries
//!
//! [`WorkflowContext::set_status`] publishes what a run is doing now, outside its history
//! (so it never affects replay); [`Client::query_status`] and the CLI's `query <id>` and
//! `status <id>` read the latest value.
//!
//! # Continue-as-new
//!
//! A workflow that loops forever ends each run with
//! [`WorkflowContext::continue_as_new`]: the store starts the next run of the same
//! workflow id with the given input and an empty history, in the same transaction, and
//! hands it the signals the old run had not taken. [`Client::result`] follows the chain
//! to the last run's output; the CLI's `list --id ID` shows every run of the chain.
//!
//! # Schedules
//!
//! [`Client::create_schedule`] starts a workflow on a cron expression (UTC) or an
//! interval, durably: every worker sweeps due schedules by the store's clock and starts
//! each tick's run once (workflow id `{schedule}@{tick}`), whatever the number of
//! workers; ticks missed while no worker ran follow the schedule's
//! [`CatchUpPolicy`](schedule::CatchUpPolicy). The CLI's `schedule` subcommands manage
//! them. See [`schedule`] and [`ScheduleOptions`].
//!
//! # Task queues and limits
//!
//! `.task_queue("q")` routes an activity to a named queue that only workers started with
//! that queue serve. [`Client::set_queue_limit`] (or the CLI's `queue set-limit`) caps a
//! queue for every worker sharing the store: at most N attempts running at once, at
//! most N starts per second ([`QueueLimit`], [`RateLimit`]).
//!
//! # Feature flags
//!
//! - `sqlite` (default): the embedded SQLite store.
//! - `postgres` (default): the PostgreSQL store, for many workers on many machines, and
//!   `--database-url` in the CLI.

pub use durable_core::store::{QueueInfo, QueueLimit, RateLimit};
pub use durable_core::{
    ActivityCall, ActivityContext, ActivityError, ActivityOptions, ChildCall, ChildCancelPolicy,
    ChildOptions, Command, CommandSeq, ContinueAsNew, ContinuedAsNew, Event, EventId, EventKind,
    FailedCompensation, HistoryFile, Payload, PayloadCodec, PayloadError, Registry, ReplayError,
    ReplayFileError, ReplayOutcome, ReplayReport, Replayer, RetryPolicy, RunId, RunIdentity, Saga,
    SagaError, Secret, SignalWait, StoreError, Timer, WorkflowContext, WorkflowError, WorkflowId,
    clock, divergence_report, error, schedule, store,
};
pub use durable_macros::{activity, workflow};
pub use durable_worker::client::{RunOutcome, StartOptions};
pub use durable_worker::schedule::ScheduleOptions;
pub use durable_worker::{Client, ClientError, Worker, WorkerError, WorkerOptions, cli, worker};

#[cfg(feature = "postgres")]
pub use durable_core::store::postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "sqlite")]
pub use durable_core::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};

#[cfg(feature = "testing")]
pub use durable_core::testing;

/// Everything a typical workflow module needs.
pub mod prelude {
    pub use crate::{
        ActivityContext, ActivityError, ChildCancelPolicy, Client, Registry, RetryPolicy, Saga,
        Secret, Worker, WorkerOptions, WorkflowContext, WorkflowError, WorkflowId, activity,
        workflow,
    };
    pub use serde::{Deserialize, Serialize};
}

/// What `#[workflow]` and `#[activity]` expand to; not part of the documented API.
#[doc(hidden)]
pub mod __private {
    pub use durable_core::{
        Activity, ActivityContext, ActivityError, Workflow, WorkflowContext, WorkflowError,
    };
    pub use futures::future::{BoxFuture, LocalBoxFuture};
}
