//! A human approval: notify an approver, wait (durably, for days if need be) for their
//! decision signal, and act on it; if no decision arrives in time, escalate.
//!
//! ```text
//! cargo run --example approval -- worker &
//! cargo run --example approval -- start approval --id exp-7 \
//!     --input '{"request_id":"exp-7","amount_cents":120000,"approver":"lee@example.com","timeout_secs":259200}'
//! cargo run --example approval -- status exp-7        # why: waiting for signal "decision"
//! cargo run --example approval -- query exp-7         # "waiting for approval from lee@example.com"
//! cargo run --example approval -- signal exp-7 decision --payload '{"approved":true,"by":"lee"}'
//! cargo run --example approval -- result exp-7 --wait
//! ```
//!
//! The wait is a durable timer plus a signal wait: kill the worker while it waits and
//! start another, and the run still wakes when the timeout is due. The workflow publishes
//! where it is with `ctx.set_status(..)`, which `query` and `status` read.

use durable::prelude::*;
use std::time::Duration;

/// A request that needs a person's approval.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Request {
    /// The request's id.
    pub request_id: String,
    /// The amount, in cents.
    pub amount_cents: u64,
    /// Who decides.
    pub approver: String,
    /// How long to wait for the decision (default: three days).
    #[serde(default = "three_days")]
    pub timeout_secs: u64,
}

fn three_days() -> u64 {
    3 * 24 * 3600
}

/// The approver's answer, sent as the `decision` signal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Decision {
    /// Approved or not.
    pub approved: bool,
    /// Who decided.
    pub by: String,
}

/// How the request ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The request.
    pub request_id: String,
    /// `approved`, `rejected` or `escalated`.
    pub status: String,
    /// Who decided, when somebody did.
    pub decided_by: Option<String>,
    /// When the workflow saw the decision or gave up (ms since the epoch, recorded).
    pub decided_at_ms: i64,
}

/// Sends the approver a link.
#[activity]
async fn notify_approver(_ctx: ActivityContext, request: Request) -> Result<(), ActivityError> {
    tracing::info!(request = %request.request_id, approver = %request.approver, "approval requested");
    Ok(())
}

/// Carries out an approved request.
#[activity]
async fn execute_request(_ctx: ActivityContext, request: Request) -> Result<(), ActivityError> {
    tracing::info!(request = %request.request_id, amount = request.amount_cents, "request executed");
    Ok(())
}

/// Hands an unanswered request to the approver's manager.
#[activity]
async fn escalate(_ctx: ActivityContext, request: Request) -> Result<(), ActivityError> {
    tracing::info!(request = %request.request_id, "request escalated");
    Ok(())
}

/// The approval process.
#[workflow]
pub async fn approval(ctx: WorkflowContext, request: Request) -> Result<Outcome, WorkflowError> {
    // What `query <id>` and `status <id>` show while the run goes on (not recorded in
    // the history, so these lines can change without breaking runs in flight).
    ctx.set_status(&format!("notifying {}", request.approver))?;
    ctx.activity::<notify_approver>(request.clone()).await?;
    ctx.set_status(&format!("waiting for approval from {}", request.approver))?;
    let decision = ctx
        .signal_timeout::<Decision>("decision", Duration::from_secs(request.timeout_secs))
        .await?;
    let (status, decided_by) = match decision {
        Some(d) if d.approved => {
            ctx.set_status(&format!("approved by {}, executing", d.by))?;
            ctx.activity::<execute_request>(request.clone()).await?;
            ("approved", Some(d.by))
        }
        Some(d) => ("rejected", Some(d.by)),
        None => {
            ctx.set_status("no decision in time, escalating")?;
            ctx.activity::<escalate>(request.clone()).await?;
            ("escalated", None)
        }
    };
    ctx.set_status(status)?;
    Ok(Outcome {
        request_id: request.request_id,
        status: status.to_owned(),
        decided_by,
        decided_at_ms: ctx.now_ms(),
    })
}

/// Everything this binary runs.
pub fn registry() -> Registry {
    Registry::new()
        .workflow::<approval>()
        .activity::<notify_approver>()
        .activity::<execute_request>()
        .activity::<escalate>()
}

fn main() {
    std::process::exit(durable::cli::main(registry()));
}
