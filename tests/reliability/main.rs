//! The reliability suite: worker processes killed and torn down at random moments,
//! competing workers paused past their leases, and a store that fails in every way it
//! can. See RELIABILITY.md for what it promises and the figures of the last full run.
//!
//! `cargo test --test reliability` runs the CI tier; `DURABLE_FULL=1` the full one;
//! `DURABLE_TEST_SEED=<seed>` replays a printed schedule.

mod check;
mod client;
mod competing;
mod crash_loop;
mod fault_store;
mod inproc;
mod kitchen_sink;
mod ledger;
mod real_sqlite;
mod regressions;
mod store_faults;
mod support;
mod wal;
mod workload;
