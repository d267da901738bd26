//! The workflows and activities the benchmark runs, and the registry that holds them all
//! (the worker subprocesses use the same one).

use durable::prelude::*;
use std::time::Duration;

/// Does nothing but hand its input back: the cost of a step is all engine.
#[activity]
async fn noop(_ctx: ActivityContext, i: u32) -> Result<u32, ActivityError> {
    Ok(i)
}

/// Sleeps `ms`, so that runs are still in flight when a worker is killed.
#[activity]
async fn pause(_ctx: ActivityContext, ms: u64) -> Result<(), ActivityError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// W1 and W2: `steps` no-op activities, one after the other.
#[workflow]
pub(crate) async fn chain(ctx: WorkflowContext, steps: u32) -> Result<u64, WorkflowError> {
    let mut sum = 0u64;
    for i in 0..steps {
        sum += u64::from(ctx.activity::<noop>(i).await?);
    }
    Ok(sum)
}

/// Recovery: `steps` activities that each take `ms`.
#[workflow]
pub(crate) async fn slow_chain(
    ctx: WorkflowContext,
    steps: u32,
    ms: u64,
) -> Result<(), WorkflowError> {
    for _ in 0..steps {
        ctx.activity::<pause>(ms).await?;
    }
    Ok(())
}

/// Memory: a run that sleeps on a durable timer for an hour.
#[workflow]
pub(crate) async fn sleeper(ctx: WorkflowContext, seconds: u64) -> Result<(), WorkflowError> {
    ctx.sleep(Duration::from_secs(seconds)).await;
    Ok(())
}

// --- W3: the order example's happy path, without its simulated delays. ---

/// A line of an order.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Item {
    sku: String,
    quantity: u32,
    price_cents: u64,
}

/// An order as the shop submits it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Order {
    order_id: String,
    customer_email: String,
    items: Vec<Item>,
    card_number: String,
}

/// Stock held for an order.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Reservation {
    reservation_id: String,
    units: u32,
}

/// A successful charge.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Charge {
    transaction_id: String,
    amount_cents: u64,
}

/// What the order workflow returns.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct OrderResult {
    order_id: String,
    transaction_id: String,
    tracking_number: String,
}

/// The order of number `i`, the same on both sides of the comparison.
pub(crate) fn sample_order(i: usize) -> Order {
    Order {
        order_id: format!("order-{i}"),
        customer_email: format!("customer{i}@example.com"),
        items: vec![
            Item {
                sku: "SKU-1".into(),
                quantity: 2,
                price_cents: 1999,
            },
            Item {
                sku: "SKU-2".into(),
                quantity: 1,
                price_cents: 4999,
            },
        ],
        card_number: "4242424242424242".into(),
    }
}

#[activity]
async fn validate_order(_ctx: ActivityContext, order: Order) -> Result<(), ActivityError> {
    if order.items.is_empty() || order.items.iter().any(|i| i.quantity == 0) {
        return Err(ActivityError::non_retryable(
            "ValidationException",
            format!("order {} is invalid", order.order_id),
        ));
    }
    Ok(())
}

#[activity]
async fn check_inventory(
    _ctx: ActivityContext,
    order: Order,
) -> Result<Reservation, ActivityError> {
    Ok(Reservation {
        reservation_id: format!("res-{}", order.order_id),
        units: order.items.iter().map(|i| i.quantity).sum(),
    })
}

#[activity]
async fn process_payment(ctx: ActivityContext, order: Order) -> Result<Charge, ActivityError> {
    Ok(Charge {
        transaction_id: format!("txn-{}", ctx.idempotency_key().replace('/', "-")),
        amount_cents: order
            .items
            .iter()
            .map(|i| i.price_cents * u64::from(i.quantity))
            .sum(),
    })
}

#[activity]
async fn send_email(_ctx: ActivityContext, _order: Order) -> Result<(), ActivityError> {
    Ok(())
}

#[activity]
async fn update_analytics(_ctx: ActivityContext, _order: Order) -> Result<(), ActivityError> {
    Ok(())
}

#[activity]
async fn schedule_shipment(
    ctx: ActivityContext,
    order: Order,
    _reservation: Reservation,
) -> Result<String, ActivityError> {
    Ok(format!("TRACK-{}-{}", order.order_id, ctx.seq()))
}

/// W3: validate, reserve (with the example's retry policy), charge, then email and
/// analytics in parallel, then ship.
#[workflow]
pub(crate) async fn order(
    ctx: WorkflowContext,
    order: Order,
) -> Result<OrderResult, WorkflowError> {
    ctx.activity::<validate_order>(order.clone()).await?;
    let reservation = ctx
        .activity::<check_inventory>(order.clone())
        .retry(
            RetryPolicy::exponential(Duration::from_secs(2))
                .backoff(2.0)
                .max_attempts(3)
                .retry_only(["ServiceUnavailable"]),
        )
        .start_to_close(Duration::from_secs(30))
        .await?;
    let charge = ctx.activity::<process_payment>(order.clone()).await?;
    let (email, analytics) = futures::join!(
        ctx.activity::<send_email>(order.clone()),
        ctx.activity::<update_analytics>(order.clone()),
    );
    email?;
    analytics?;
    let tracking_number = ctx
        .activity::<schedule_shipment>((order.clone(), reservation))
        .await?;
    Ok(OrderResult {
        order_id: order.order_id,
        transaction_id: charge.transaction_id,
        tracking_number,
    })
}

/// Every workflow and activity of the benchmark.
pub(crate) fn registry() -> Registry {
    Registry::new()
        .workflow::<chain>()
        .workflow::<slow_chain>()
        .workflow::<sleeper>()
        .workflow::<order>()
        .activity::<noop>()
        .activity::<pause>()
        .activity::<validate_order>()
        .activity::<check_inventory>()
        .activity::<process_payment>()
        .activity::<send_email>()
        .activity::<update_analytics>()
        .activity::<schedule_shipment>()
}
