//! A subscription that bills every period, forever, on a durable timer: each run bills a
//! few periods and then continues as new, so no run's history grows past a few dozen
//! events however long the subscription lives. A `credit` signal (cents) is taken off
//! the next bills; a `cancel` signal ends the subscription.
//!
//! Run a short subscription (eight periods of half a second, three per run) against
//! `./durable.db`:
//!
//! ```text
//! cargo run --example subscription
//! ```
//!
//! Or use the full CLI of the worker binary, e.g.
//!
//! ```text
//! cargo run --example subscription -- worker &
//! cargo run --example subscription -- start subscription --id sub-ada \
//!     --input '{"customer":"ada","plan_cents":900,"period_ms":60000,"periods_per_run":12}'
//! cargo run --example subscription -- signal sub-ada credit --payload 250
//! cargo run --example subscription -- list --id sub-ada      # one run per 12 periods
//! cargo run --example subscription -- status sub-ada         # continued from run ...
//! cargo run --example subscription -- signal sub-ada cancel --payload '"moving away"'
//! cargo run --example subscription -- result sub-ada --wait
//! ```
//!
//! Signals go to the workflow id, so they reach whichever run is current; one that
//! arrives while a run is switching moves to the next run and is not lost.

use durable::prelude::*;
use futures::future::{Either, select};
use std::time::Duration;

/// The subscription, and where the chain of runs has got to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Subscription {
    /// Who pays.
    pub customer: String,
    /// The price of one period, in cents.
    pub plan_cents: u64,
    /// The length of a period, in milliseconds.
    pub period_ms: u64,
    /// Periods billed by one run before it continues as new.
    pub periods_per_run: u32,
    /// End after this many periods (none: until cancelled).
    #[serde(default)]
    pub max_periods: Option<u32>,
    /// Carried from run to run: what has happened so far.
    #[serde(default)]
    pub so_far: Summary,
}

/// What the subscription has billed; the workflow's output when it ends.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Periods billed.
    pub periods_billed: u32,
    /// Cents charged in all.
    pub cents_billed: u64,
    /// Credits received with the `credit` signal, in cents.
    pub credits_received: u64,
    /// Credit not used yet, in cents.
    pub credit_left: u64,
    /// The runs the subscription went through (this one included).
    pub runs: u32,
    /// Why it ended early, when cancelled.
    pub cancelled: Option<String>,
}

/// One period's bill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Bill {
    /// Who pays.
    pub customer: String,
    /// The period, from 1.
    pub period: u32,
    /// What is charged, after credit.
    pub cents: u64,
}

/// Charges a period. The idempotency key (`ctx.idempotency_key()`) is what a payment
/// provider would be given, so a retried attempt never charges twice.
#[activity]
async fn charge_period(ctx: ActivityContext, bill: Bill) -> Result<u64, ActivityError> {
    tracing::info!(customer = %bill.customer, period = bill.period, cents = bill.cents,
        key = %ctx.idempotency_key(), "period billed");
    Ok(bill.cents)
}

/// What woke the wait for the end of a period.
enum Woken {
    Credit(u64),
    Cancel(String),
    PeriodOver,
}

/// Bills `periods_per_run` periods, then continues as new with the totals so far.
#[workflow]
pub async fn subscription(
    ctx: WorkflowContext,
    sub: Subscription,
) -> Result<Summary, WorkflowError> {
    let mut so_far = sub.so_far.clone();
    so_far.runs += 1;
    for _ in 0..sub.periods_per_run {
        if sub
            .max_periods
            .is_some_and(|max| so_far.periods_billed >= max)
        {
            return Ok(so_far);
        }
        ctx.set_status(&format!(
            "run {}: {} period(s) billed, {} cents of credit",
            so_far.runs, so_far.periods_billed, so_far.credit_left
        ))?;
        // Wait out the period; credits and a cancel may arrive meanwhile.
        let mut period_over = ctx.sleep(Duration::from_millis(sub.period_ms));
        loop {
            let signals = select(ctx.signal::<u64>("credit"), ctx.signal::<String>("cancel"));
            let woken = match select(signals, &mut period_over).await {
                Either::Left((Either::Left((credit, _)), _)) => Woken::Credit(credit?),
                Either::Left((Either::Right((reason, _)), _)) => Woken::Cancel(reason?),
                Either::Right(((), _)) => Woken::PeriodOver,
            };
            match woken {
                Woken::Credit(cents) => {
                    so_far.credits_received += cents;
                    so_far.credit_left += cents;
                }
                Woken::Cancel(reason) => {
                    so_far.cancelled = Some(reason);
                    ctx.set_status("cancelled")?;
                    return Ok(so_far);
                }
                Woken::PeriodOver => break,
            }
        }
        let credit = so_far.credit_left.min(sub.plan_cents);
        so_far.credit_left -= credit;
        so_far.periods_billed += 1;
        let bill = Bill {
            customer: sub.customer.clone(),
            period: so_far.periods_billed,
            cents: sub.plan_cents - credit,
        };
        so_far.cents_billed += ctx.activity::<charge_period>(bill).await?;
    }
    if sub
        .max_periods
        .is_some_and(|max| so_far.periods_billed >= max)
    {
        return Ok(so_far);
    }
    // A fresh run with an empty history carries on; signals not seen yet go with it.
    ctx.continue_as_new::<subscription>(Subscription { so_far, ..sub })
        .await
}

/// Everything this binary runs.
pub fn registry() -> Registry {
    Registry::new()
        .workflow::<subscription>()
        .activity::<charge_period>()
}

fn main() {
    if std::env::args_os().len() > 1 {
        std::process::exit(durable::cli::main(registry()));
    }
    // No arguments: a short subscription, with a worker in this process.
    let input = r#"{"customer":"ada","plan_cents":900,"period_ms":500,"periods_per_run":3,"max_periods":8}"#;
    std::process::exit(durable::cli::main_from(
        registry(),
        ["subscription", "run", "subscription", "--input", input],
    ));
}
