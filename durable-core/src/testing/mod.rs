//! Test support (feature `testing`): [`TestEnv`], an in-memory environment with a virtual
//! clock, where a workflow that sleeps for days or waits a week for a signal runs in
//! milliseconds of a `cargo test`, with activities replaced by test doubles per test.
//!
//! A [`TestEnv`] drives one run through the same [`RunMachine`](crate::RunMachine) a
//! worker uses and records the same history, which the [`Replayer`](crate::Replayer)
//! replays; see [`TestEnv`] for what it simulates and an example.

mod activities;
mod env;
mod error;
mod timeline;

pub use env::TestEnv;
pub use error::TestEnvError;

#[cfg(test)]
mod tests;
