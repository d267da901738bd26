//! Fan-out with child workflows: a `batch` run starts one `make_part` child run per part,
//! all in its first activation, and joins their results. Each child is a run of its own
//! (its own history, retries and worker); its outcome comes back to the batch as an
//! event. Cancelling the batch cancels the children it still waits for; a child
//! cancelled on its own is reported by the batch, which goes on without it.
//!
//! Run a batch of five parts against `./durable.db`:
//!
//! ```text
//! cargo run --example fan_out
//! ```
//!
//! Or use the full CLI of the worker binary, e.g.
//!
//! ```text
//! cargo run --example fan_out -- worker &
//! cargo run --example fan_out -- start batch --input '{"batch_id":"b-1","parts":20,"work_ms":2000}' --id b-1
//! cargo run --example fan_out -- status b-1      # the children and what the batch waits for
//! cargo run --example fan_out -- cancel b-1      # cancels the children still running
//! cargo run --example fan_out -- result b-1 --wait
//! ```
//!
//! `examples/data/batch.json` is the default input; `fail_part` makes one part's build
//! fail for good (the batch then fails with the child's `PartDefect`), `abandon` lets the
//! children run on when the batch is cancelled.

use durable::prelude::*;
use std::time::Duration;

/// What to make.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Batch {
    /// The batch's name, for people (the children's workflow ids are the batch run's
    /// workflow id followed by `/part-N`).
    pub batch_id: String,
    /// How many parts, one child run each.
    pub parts: u32,
    /// How long building one part takes, in milliseconds.
    #[serde(default)]
    pub work_ms: u64,
    /// The part whose build fails for good, if any.
    #[serde(default)]
    pub fail_part: Option<u32>,
    /// Leave the children running when the batch is cancelled.
    #[serde(default)]
    pub abandon: bool,
}

/// One part, the input of a `make_part` child run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Part {
    /// The batch it belongs to.
    pub batch_id: String,
    /// Its number, from 1.
    pub index: u32,
    /// How long building it takes, in milliseconds.
    pub work_ms: u64,
    /// True when its build fails for good.
    #[serde(default)]
    pub defective: bool,
}

/// What a batch made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BatchResult {
    /// The batch.
    pub batch_id: String,
    /// The parts made, in part order.
    pub made: Vec<String>,
    /// The parts whose child run was cancelled on its own.
    pub cancelled: Vec<u32>,
}

/// Builds one part. When `DURABLE_EXAMPLE_LEDGER` names a file, every execution appends
/// `idempotency_key<TAB>attempt` to it, so a test can count the builds.
#[activity]
async fn build_part(ctx: ActivityContext, part: Part) -> Result<String, ActivityError> {
    tokio::time::sleep(Duration::from_millis(part.work_ms)).await;
    if let Some(path) = std::env::var_os("DURABLE_EXAMPLE_LEDGER") {
        use std::io::Write as _;
        let line = format!("{}\t{}\n", ctx.idempotency_key(), ctx.attempt());
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
    if part.defective {
        return Err(ActivityError::non_retryable(
            "PartDefect",
            format!("part {} of {} failed inspection", part.index, part.batch_id),
        ));
    }
    tracing::info!(batch = %part.batch_id, part = part.index, "part built");
    Ok(format!("{}-part-{}", part.batch_id, part.index))
}

/// A child run: builds one part.
#[workflow]
pub async fn make_part(ctx: WorkflowContext, part: Part) -> Result<String, WorkflowError> {
    Ok(ctx
        .activity::<build_part>(part)
        .start_to_close(Duration::from_secs(120))
        .await?)
}

/// The parent: one child run per part, all started at once, joined in part order.
#[workflow]
pub async fn batch(ctx: WorkflowContext, batch: Batch) -> Result<BatchResult, WorkflowError> {
    let policy = if batch.abandon {
        ChildCancelPolicy::Abandon
    } else {
        ChildCancelPolicy::RequestCancel
    };
    let children = (1..=batch.parts).map(|index| {
        ctx.child::<make_part>(Part {
            batch_id: batch.batch_id.clone(),
            index,
            work_ms: batch.work_ms,
            defective: batch.fail_part == Some(index),
        })
        // Ids made from the batch's own workflow id are unique to this run.
        .workflow_id(format!("{}/part-{index}", ctx.workflow_id()))
        .cancel_policy(policy)
    });
    let outcomes = futures::future::join_all(children).await;
    let mut result = BatchResult {
        batch_id: batch.batch_id.clone(),
        made: Vec::new(),
        cancelled: Vec::new(),
    };
    for (index, outcome) in (1..).zip(outcomes) {
        match outcome {
            Ok(part) => result.made.push(part),
            // A part cancelled on its own is left out; the batch goes on.
            Err(e) if e.is("Cancelled") => result.cancelled.push(index),
            Err(e) => return Err(e),
        }
    }
    Ok(result)
}

/// Everything this binary runs.
pub fn registry() -> Registry {
    Registry::new()
        .workflow::<batch>()
        .workflow::<make_part>()
        .activity::<build_part>()
}

fn main() {
    if std::env::args_os().len() > 1 {
        std::process::exit(durable::cli::main(registry()));
    }
    // No arguments: run one batch, with a worker in this process.
    let input = include_str!("data/batch.json");
    std::process::exit(durable::cli::main_from(
        registry(),
        ["fan_out", "run", "batch", "--input", input],
    ));
}
