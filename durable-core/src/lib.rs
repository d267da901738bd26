//! The core of durable: events, payloads, the deterministic executor and replayer, the
//! contexts workflow and activity code receive, retry policies, and the [`Store`] trait
//! with its SQLite implementation.
//!
//! Most users depend on the `durable` facade instead, which re-exports this crate.
//!
//! # Concepts
//!
//! - A *run* is one execution of a workflow, named by a [`WorkflowId`] (chosen by the
//!   caller) and a [`RunId`]. Its *history* is an append-only list of *events*, numbered
//!   from 1 ([`EventId`]).
//! - Workflow code issues *commands* (schedule an activity, start a timer, wait for a
//!   signal, record a value), numbered in issue order ([`CommandSeq`]).
//! - An *activation* applies one inbound event and polls the code until it can make no
//!   more progress; its commands are appended in the same transaction.
//! - Each run is owned through a *lease* whose *fencing token* every append checks.
//! - A workflow id can go through several runs: `reset` starts one from a cut of the
//!   history, and [`WorkflowContext::continue_as_new`] ends a run so that a fresh one
//!   (new input, empty history) carries on. Signals, cancels, status and results always
//!   address the latest run.
//! - A *schedule* ([`schedule`]) starts runs of a workflow at the *ticks* of a cron
//!   expression or an interval; the store starts each tick's run once.
//! - An activity call goes to a *task queue* (the default one unless the call names
//!   one); a queue can have limits ([`store::QueueLimit`]) that every worker sharing the
//!   store obeys.
//! - A run may start *child runs* ([`WorkflowContext::child`]): each is a run of its own,
//!   created by the commit that records its start, whose outcome comes back to the
//!   parent as an inbound event.
//!
//! # Determinism
//!
//! Workflow code must produce the same commands when replayed. Time, randomness and
//! waiting come from the [`WorkflowContext`]; iterate `BTreeMap`s, not `HashMap`s; select
//! with `futures::select_biased!` or `futures::future::select`, which poll in order, never
//! `futures::select!`, which picks at random.
//!
//! # Feature flags
//!
//! - `sqlite` (default): the embedded SQLite store.
//! - `postgres` (default): `store::postgres`, the PostgreSQL store that many worker
//!   processes on many machines share.
//! - `testing`: `testing::TestEnv`, a virtual-time environment for fast tests of long
//!   workflows, and `store::conformance`, the suite every store passes.

pub mod clock;
pub mod command;
pub mod context;
pub mod error;
pub mod event;
pub mod executor;
pub mod history;
pub mod ids;
pub mod payload;
pub mod registry;
pub mod replay;
pub mod retry;
pub mod schedule;
pub mod secret;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use command::Command;
pub use context::activity::ActivityContext;
pub use context::child::ChildCall;
pub use context::continue_as_new::ContinueAsNew;
pub use context::saga::{FailedCompensation, Saga, SagaError};
pub use context::workflow::{ActivityCall, SignalWait, Timer, WorkflowContext};
pub use error::{ActivityError, CommandSummary, ReplayError, StoreError, WorkflowError};
pub use event::{ActivityOptions, ChildCancelPolicy, ChildOptions, Event, EventKind};
pub use executor::{ContinuedAsNew, RunIdentity, RunMachine};
pub use history::HistoryFile;
pub use ids::{CommandSeq, EventId, FencingToken, RunId, RunKey, WorkerId, WorkflowId};
pub use payload::{Payload, PayloadCodec, PayloadError};
pub use registry::{Activity, ErasedActivity, ErasedWorkflow, Registry, Workflow};
pub use replay::{ReplayFileError, ReplayOutcome, ReplayReport, Replayer, divergence_report};
pub use retry::RetryPolicy;
pub use secret::Secret;
pub use store::Store;
