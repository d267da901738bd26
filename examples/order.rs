//! The order process: validate, reserve inventory (retrying an unavailable service),
//! charge, then email and analytics in parallel, then ship. A [`Saga`] undoes what took
//! effect (the charge, the reservation) when a later step fails or the run is cancelled,
//! e.g. when the payment is declined.
//!
//! Run the happy path against `./durable.db`:
//!
//! ```text
//! cargo run --example order
//! ```
//!
//! Or use the full CLI of the worker binary, e.g.
//!
//! ```text
//! cargo run --example order -- worker &
//! cargo run --example order -- start order --input "$(cat examples/data/order-declined.json)" --id order-2
//! cargo run --example order -- result order-2 --wait
//! cargo run --example order -- history order-2
//! ```
//!
//! Each path has a sample input in `examples/data/`: `order-ok.json` ships,
//! `order-invalid.json` has no items and fails validation, `order-declined.json` pays
//! with the test card `4000000000000002`, which is declined, and
//! `order-inventory-flaky.json` sets `inventory_unavailable_for` so the inventory
//! service answers `ServiceUnavailable` to the first attempts.

use durable::prelude::*;
use std::time::Duration;

/// A line of an order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Item {
    /// The stock keeping unit.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// Price of one, in cents.
    pub price_cents: u64,
}

/// An order as the shop submits it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Order {
    /// The shop's order number.
    pub order_id: String,
    /// Where to send mail.
    pub customer_email: String,
    /// What was bought.
    pub items: Vec<Item>,
    /// The card to charge.
    pub card_number: String,
    /// Test knob: the inventory service answers `ServiceUnavailable` to this many
    /// attempts before it works.
    #[serde(default)]
    pub inventory_unavailable_for: u32,
}

/// Stock held for an order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Reservation {
    /// The reservation's id.
    pub reservation_id: String,
    /// Units held.
    pub units: u32,
}

/// A successful charge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Charge {
    /// The payment provider's transaction id (derived from the idempotency key, so a
    /// retried charge is the same charge).
    pub transaction_id: String,
    /// Amount in cents.
    pub amount_cents: u64,
}

/// What the workflow returns for a shipped order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OrderResult {
    /// The order.
    pub order_id: String,
    /// The charge.
    pub transaction_id: String,
    /// The carrier's tracking number.
    pub tracking_number: String,
}

/// The card number the payment simulator always declines.
pub const DECLINED_CARD: &str = "4000000000000002";

/// Simulates an activity's work. When `DURABLE_EXAMPLE_LEDGER` names a file, every
/// execution appends `idempotency_key<TAB>attempt<TAB>start_ms<TAB>end_ms` to it, so a
/// test can prove which side effects ran, and how often.
async fn simulate_work(ctx: &ActivityContext, ms: u64) {
    let start = durable::clock::now_ms();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    if let Some(path) = std::env::var_os("DURABLE_EXAMPLE_LEDGER") {
        use std::io::Write as _;
        let line = format!(
            "{}\t{}\t{}\t{}\n",
            ctx.idempotency_key(),
            ctx.attempt(),
            start,
            durable::clock::now_ms()
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Checks that the order can be processed at all.
#[activity]
async fn validate_order(ctx: ActivityContext, order: Order) -> Result<(), ActivityError> {
    simulate_work(&ctx, 20).await;
    tracing::info!(order = %order.order_id, attempt = ctx.attempt(), "validating order");
    if order.items.is_empty() {
        return Err(ActivityError::non_retryable(
            "ValidationException",
            format!("order {} has no items", order.order_id),
        ));
    }
    if let Some(bad) = order.items.iter().find(|i| i.quantity == 0) {
        return Err(ActivityError::non_retryable(
            "ValidationException",
            format!("item {} has quantity 0", bad.sku),
        ));
    }
    Ok(())
}

/// Tells the customer their order was rejected.
#[activity]
async fn notify_customer_invalid(
    ctx: ActivityContext,
    order_id: String,
    reason: String,
) -> Result<(), ActivityError> {
    simulate_work(&ctx, 10).await;
    tracing::info!(order = %order_id, reason, "notified customer: order invalid");
    Ok(())
}

/// Reserves stock; the simulated service is unavailable for the first
/// `inventory_unavailable_for` attempts.
#[activity]
async fn check_inventory(ctx: ActivityContext, order: Order) -> Result<Reservation, ActivityError> {
    simulate_work(&ctx, 30).await;
    if ctx.attempt() <= order.inventory_unavailable_for {
        tracing::info!(order = %order.order_id, attempt = ctx.attempt(), "inventory service unavailable");
        return Err(ActivityError::retryable(
            "ServiceUnavailable",
            format!("inventory service unavailable (attempt {})", ctx.attempt()),
        ));
    }
    let units = order.items.iter().map(|i| i.quantity).sum();
    tracing::info!(order = %order.order_id, units, "inventory reserved");
    Ok(Reservation {
        reservation_id: format!("res-{}", order.order_id),
        units,
    })
}

/// Charges the card; the test card `4000000000000002` is declined.
#[activity]
async fn process_payment(ctx: ActivityContext, order: Order) -> Result<Charge, ActivityError> {
    simulate_work(&ctx, 40).await;
    let amount_cents = order
        .items
        .iter()
        .map(|i| i.price_cents * u64::from(i.quantity))
        .sum();
    if order.card_number == DECLINED_CARD {
        return Err(ActivityError::non_retryable(
            "PaymentFailed",
            format!(
                "card ending {} was declined",
                &order.card_number[order.card_number.len() - 4..]
            ),
        ));
    }
    // The idempotency key is the same on every retry: a real provider would see one charge.
    let transaction_id = format!("txn-{}", ctx.idempotency_key().replace('/', "-"));
    tracing::info!(order = %order.order_id, amount_cents, transaction_id, "payment captured");
    Ok(Charge {
        transaction_id,
        amount_cents,
    })
}

/// Gives reserved stock back (compensation).
#[activity]
async fn release_inventory(
    ctx: ActivityContext,
    reservation: Reservation,
) -> Result<(), ActivityError> {
    simulate_work(&ctx, 20).await;
    tracing::info!(reservation = %reservation.reservation_id, "inventory released");
    Ok(())
}

/// Gives a charge back (compensation).
#[activity]
async fn refund_payment(ctx: ActivityContext, charge: Charge) -> Result<(), ActivityError> {
    simulate_work(&ctx, 20).await;
    tracing::info!(transaction_id = %charge.transaction_id, amount_cents = charge.amount_cents, "payment refunded");
    Ok(())
}

/// Tells the customer the order failed.
#[activity]
async fn notify_customer_failed(
    ctx: ActivityContext,
    order_id: String,
    reason: String,
) -> Result<(), ActivityError> {
    simulate_work(&ctx, 10).await;
    tracing::info!(order = %order_id, reason, "notified customer: order failed");
    Ok(())
}

/// Sends the confirmation email.
#[activity]
async fn send_email(ctx: ActivityContext, order: Order) -> Result<(), ActivityError> {
    simulate_work(&ctx, 30).await;
    tracing::info!(order = %order.order_id, to = %order.customer_email, "confirmation email sent");
    Ok(())
}

/// Records the sale for analytics.
#[activity]
async fn update_analytics(ctx: ActivityContext, order: Order) -> Result<(), ActivityError> {
    simulate_work(&ctx, 30).await;
    tracing::info!(order = %order.order_id, "analytics updated");
    Ok(())
}

/// Books the shipment and returns the tracking number.
#[activity]
async fn schedule_shipment(
    ctx: ActivityContext,
    order: Order,
    reservation: Reservation,
) -> Result<String, ActivityError> {
    simulate_work(&ctx, 30).await;
    let tracking = format!("TRACK-{}-{}", order.order_id, ctx.seq());
    tracing::info!(order = %order.order_id, reservation = %reservation.reservation_id, tracking, "shipment scheduled");
    Ok(tracking)
}

/// The order process.
#[workflow]
pub async fn order(ctx: WorkflowContext, order: Order) -> Result<OrderResult, WorkflowError> {
    if let Err(e) = ctx.activity::<validate_order>(order.clone()).await {
        if e.is("ValidationException") {
            ctx.activity::<notify_customer_invalid>((
                order.order_id.clone(),
                e.message().to_owned(),
            ))
            .await?;
        }
        return Err(e.into());
    }

    let reservation = match ctx
        .activity::<check_inventory>(order.clone())
        .retry(
            RetryPolicy::exponential(Duration::from_secs(2))
                .backoff(2.0)
                .max_attempts(3)
                .retry_only(["ServiceUnavailable"]),
        )
        .start_to_close(Duration::from_secs(30))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            ctx.activity::<notify_customer_failed>((
                order.order_id.clone(),
                e.message().to_owned(),
            ))
            .await?;
            return Err(e.into());
        }
    };

    // From here on each step that took effect has a compensation. A failed step, or a
    // cancel, runs them in reverse order: the refund first, then the release.
    let saga = Saga::new(&ctx);
    saga.add(ctx.activity::<release_inventory>(reservation.clone()));
    let shipped = saga
        .run(async {
            let charge = ctx.activity::<process_payment>(order.clone()).await?;
            saga.add(ctx.activity::<refund_payment>(charge.clone()));

            let (email, analytics) = futures::join!(
                ctx.activity::<send_email>(order.clone()),
                ctx.activity::<update_analytics>(order.clone()),
            );
            email?;
            analytics?;

            let tracking_number = ctx
                .activity::<schedule_shipment>((order.clone(), reservation.clone()))
                .await?;
            Ok(OrderResult {
                order_id: order.order_id.clone(),
                transaction_id: charge.transaction_id,
                tracking_number,
            })
        })
        .await;
    match shipped {
        Ok(result) => Ok(result),
        Err(e) => {
            ctx.activity::<notify_customer_failed>((
                order.order_id.clone(),
                e.message().to_owned(),
            ))
            .await?;
            Err(e)
        }
    }
}

/// Everything this binary runs.
pub fn registry() -> Registry {
    Registry::new()
        .workflow::<order>()
        .activity::<validate_order>()
        .activity::<notify_customer_invalid>()
        .activity::<check_inventory>()
        .activity::<process_payment>()
        .activity::<release_inventory>()
        .activity::<refund_payment>()
        .activity::<notify_customer_failed>()
        .activity::<send_email>()
        .activity::<update_analytics>()
        .activity::<schedule_shipment>()
}

fn main() {
    if std::env::args_os().len() > 1 {
        std::process::exit(durable::cli::main(registry()));
    }
    // No arguments: run the happy path once, with a worker in this process.
    let input = include_str!("data/order-ok.json");
    std::process::exit(durable::cli::main_from(
        registry(),
        ["order", "run", "order", "--input", input],
    ));
}
