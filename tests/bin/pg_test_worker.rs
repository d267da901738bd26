//! The worker binary of the multi-process PostgreSQL tests (`tests/postgres_workers.rs`):
//! a fan-out workflow over no-op `step` activities, then one `charge` on the `payments`
//! task queue, with the full CLI of `durable::cli::main`.
//!
//! Each attempt appends a line to the file named by `PG_TEST_LEDGER` (activity, its
//! idempotency key, the attempt, `PG_TEST_ROLE` and the process id), so the test can tell
//! which process ran what. Run it by hand with, for example:
//!
//! ```text
//! cargo run --bin pg-test-worker -- --database-url postgres://postgres@127.0.0.1:5432/test worker
//! cargo run --bin pg-test-worker -- --database-url postgres://postgres@127.0.0.1:5432/test \
//!     worker --task-queue payments
//! ```

use durable::prelude::*;
use std::time::Duration;

/// What one run fans out.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct FanOut {
    /// How many `step` activities to run at once.
    pub steps: u32,
    /// How long each step pretends to work, in milliseconds.
    pub step_ms: u64,
}

/// Appends one line per attempt to the ledger, if there is one.
fn record(ctx: &ActivityContext) {
    let Some(path) = std::env::var_os("PG_TEST_LEDGER") else {
        return;
    };
    use std::io::Write as _;
    let role = std::env::var("PG_TEST_ROLE").unwrap_or_default();
    let line = format!(
        "{}\t{}\t{}\t{}\t{}\n",
        ctx.activity_name(),
        ctx.idempotency_key(),
        ctx.attempt(),
        role,
        std::process::id()
    );
    // One write of a short line to a file opened for appending lands whole.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// A no-op step: waits `ms` and returns twice its index.
#[activity]
async fn step(ctx: ActivityContext, index: u32, ms: u64) -> Result<u64, ActivityError> {
    record(&ctx);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(u64::from(index) * 2)
}

/// Charges the sum: runs only on workers serving the `payments` queue.
#[activity]
async fn charge(ctx: ActivityContext, amount: u64) -> Result<String, ActivityError> {
    record(&ctx);
    Ok(format!("receipt-{amount}"))
}

/// Runs `steps` steps at once, sums their results and charges the sum on the `payments`
/// queue.
#[workflow]
pub async fn fan_out(ctx: WorkflowContext, input: FanOut) -> Result<u64, WorkflowError> {
    let calls: Vec<_> = (0..input.steps)
        .map(|i| ctx.activity::<step>((i, input.step_ms)))
        .collect();
    let mut sum = 0;
    for result in futures::future::join_all(calls).await {
        sum += result?;
    }
    ctx.activity::<charge>(sum).task_queue("payments").await?;
    Ok(sum)
}

fn main() {
    let registry = Registry::new()
        .workflow::<fan_out>()
        .activity::<step>()
        .activity::<charge>();
    std::process::exit(durable::cli::main(registry));
}
