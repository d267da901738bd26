//! The tokio worker, the [`Client`] and the CLI that every durable worker binary gets.

pub mod cli;
pub mod client;
pub mod error;
pub mod schedule;
pub mod worker;

pub use client::{Client, StartOptions};
pub use error::{ClientError, WorkerError};
pub use schedule::ScheduleOptions;
pub use worker::{ShutdownHandle, Worker, WorkerOptions, WorkerStats};
