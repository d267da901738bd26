//! W1, W2 and W3 of `durable-bench` on duroxide, the closest Rust peer, with its SQLite
//! provider on a file in the directory it is given. `durable-bench` builds and runs this
//! program and reads the one JSON object it prints on stdout; progress goes to stderr.
//!
//! ```text
//! durable-bench-peer --dir /tmp/bench --w1-steps 1000 --w2-runs 1000 --w2-steps 10 --w3-orders 1000
//! ```
//!
//! The workloads mirror durable's: no-op activities in sequence (W1), many short workflows
//! started at once (W2), and the order example's happy path (W3). duroxide's payloads are
//! strings, so inputs and outputs go through its JSON codec (`*_typed`), as a user would.

use duroxide::providers::sqlite::SqliteProvider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{self, RuntimeOptions};
use duroxide::{
    ActivityContext, BackoffStrategy, Client, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    dir: PathBuf,
    w1_steps: u32,
    w2_runs: usize,
    w2_steps: u32,
    w3_orders: usize,
    poll_ms: u64,
    orchestration_concurrency: usize,
    worker_concurrency: usize,
    only: Option<String>,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        dir: std::env::temp_dir(),
        w1_steps: 1000,
        w2_runs: 1000,
        w2_steps: 10,
        w3_orders: 1000,
        poll_ms: 1,
        orchestration_concurrency: 4,
        worker_concurrency: 4,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value()?),
            "--w1-steps" => args.w1_steps = value()?.parse()?,
            "--w2-runs" => args.w2_runs = value()?.parse()?,
            "--w2-steps" => args.w2_steps = value()?.parse()?,
            "--w3-orders" => args.w3_orders = value()?.parse()?,
            "--poll-ms" => args.poll_ms = value()?.parse()?,
            "--orchestration-concurrency" => args.orchestration_concurrency = value()?.parse()?,
            "--worker-concurrency" => args.worker_concurrency = value()?.parse()?,
            "--only" => args.only = Some(value()?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(args)
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// The order example's types and activities (no simulated delays).

#[derive(Serialize, Deserialize, Clone)]
struct Item {
    sku: String,
    quantity: u32,
    price_cents: u64,
}

#[derive(Serialize, Deserialize, Clone)]
struct Order {
    order_id: String,
    customer_email: String,
    items: Vec<Item>,
    card_number: String,
}

#[derive(Serialize, Deserialize, Clone)]
struct Reservation {
    reservation_id: String,
    units: u32,
}

#[derive(Serialize, Deserialize, Clone)]
struct Charge {
    transaction_id: String,
    amount_cents: u64,
}

#[derive(Serialize, Deserialize, Clone)]
struct OrderResult {
    order_id: String,
    transaction_id: String,
    tracking_number: String,
}

fn sample_order(i: usize) -> Order {
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

fn activities() -> ActivityRegistry {
    ActivityRegistry::builder()
        .register("Noop", |_ctx: ActivityContext, input: String| async move {
            Ok(input)
        })
        .register_typed(
            "ValidateOrder",
            |_ctx: ActivityContext, order: Order| async move {
                if order.items.is_empty() || order.items.iter().any(|i| i.quantity == 0) {
                    return Err(format!("order {} is invalid", order.order_id));
                }
                Ok(())
            },
        )
        .register_typed(
            "CheckInventory",
            |_ctx: ActivityContext, order: Order| async move {
                Ok(Reservation {
                    reservation_id: format!("res-{}", order.order_id),
                    units: order.items.iter().map(|i| i.quantity).sum(),
                })
            },
        )
        .register_typed(
            "ProcessPayment",
            |ctx: ActivityContext, order: Order| async move {
                Ok(Charge {
                    transaction_id: format!("txn-{}-{}", ctx.instance_id(), order.order_id),
                    amount_cents: order
                        .items
                        .iter()
                        .map(|i| i.price_cents * u64::from(i.quantity))
                        .sum(),
                })
            },
        )
        .register_typed(
            "SendEmail",
            |_ctx: ActivityContext, _order: Order| async move { Ok(()) },
        )
        .register_typed(
            "UpdateAnalytics",
            |_ctx: ActivityContext, _order: Order| async move { Ok(()) },
        )
        .register_typed(
            "ScheduleShipment",
            |_ctx: ActivityContext, (order, reservation): (Order, Reservation)| async move {
                Ok(format!("TRACK-{}-{}", order.order_id, reservation.units))
            },
        )
        .build()
}

fn orchestrations() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "Chain",
            |ctx: OrchestrationContext, input: String| async move {
                let steps: u32 = input.parse().map_err(|e| format!("bad step count: {e}"))?;
                let mut sum = 0u64;
                for i in 0..steps {
                    let out = ctx.schedule_activity("Noop", i.to_string()).await?;
                    sum += out.parse::<u64>().map_err(|e| e.to_string())?;
                }
                Ok(sum.to_string())
            },
        )
        .register_typed(
            "Order",
            |ctx: OrchestrationContext, order: Order| async move {
                ctx.schedule_activity_typed::<_, ()>("ValidateOrder", &order)
                    .await?;
                // The example's retry policy. Its start-to-close timeout is left out: duroxide
                // implements a per-attempt timeout as a durable timer raced against the
                // activity, which would add events to every order and favour durable.
                let retry = RetryPolicy::new(3).with_backoff(BackoffStrategy::Exponential {
                    base: Duration::from_secs(2),
                    multiplier: 2.0,
                    max: Duration::from_secs(60),
                });
                let reservation: Reservation = ctx
                    .schedule_activity_with_retry_typed("CheckInventory", &order, retry)
                    .await?;
                let charge: Charge = ctx
                    .schedule_activity_typed("ProcessPayment", &order)
                    .await?;
                let (email, analytics) = ctx
                    .join2(
                        ctx.schedule_activity_typed::<_, ()>("SendEmail", &order),
                        ctx.schedule_activity_typed::<_, ()>("UpdateAnalytics", &order),
                    )
                    .await;
                email?;
                analytics?;
                let tracking_number: String = ctx
                    .schedule_activity_typed("ScheduleShipment", &(order.clone(), reservation))
                    .await?;
                Ok(OrderResult {
                    order_id: order.order_id,
                    transaction_id: charge.transaction_id,
                    tracking_number,
                })
            },
        )
        .build()
}

// ---------------------------------------------------------------------------------------

struct Env {
    rt: Arc<runtime::Runtime>,
    client: Client,
}

async fn open(dir: &Path, name: &str, args: &Args) -> Result<Env, BoxError> {
    let path = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    std::fs::File::create(&path)?;
    let store = Arc::new(SqliteProvider::new(&format!("sqlite:{}", path.display()), None).await?);
    let options = RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(args.poll_ms),
        orchestration_concurrency: args.orchestration_concurrency,
        worker_concurrency: args.worker_concurrency,
        ..Default::default()
    };
    let rt = runtime::Runtime::start_with_options(
        store.clone(),
        activities(),
        orchestrations(),
        options,
    )
    .await;
    Ok(Env {
        rt,
        client: Client::new(store),
    })
}

/// Starts `ids` at once with inputs from `input`, waits for all of them, and returns
/// the wall time from the starts to the last completion, and each run's latency (ms)
/// from the starts to its completion, as recorded in its history.
async fn run_batch(
    env: &Env,
    workflow: &str,
    ids: &[String],
    input: impl Fn(usize) -> String,
) -> Result<Batch, BoxError> {
    let t0 = now_ms();
    let starts = ids.iter().enumerate().map(|(i, id)| {
        env.client
            .start_orchestration(id.clone(), workflow, input(i))
    });
    for r in futures::future::join_all(starts).await {
        r?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    // Poll counts only, so that polling costs the engine under test little.
    loop {
        let m = env.client.get_system_metrics().await?;
        let finished = m.completed_instances + m.failed_instances;
        if finished >= ids.len() as u64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {finished} of {} runs finished in 600 s", ids.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = env.client.list_instances_by_status("Failed").await?;
    // duroxide fails a run when its store stays locked through its retries; such runs are
    // counted and left out of the figures rather than failing the whole workload.
    if let Some(first) = failed.first() {
        let status = env.client.get_orchestration_status(first).await?;
        eprintln!(
            "peer: {} of {} runs failed, e.g. {first}: {status:?}",
            failed.len(),
            ids.len()
        );
    }
    if failed.len() == ids.len() {
        return Err("every run failed".into());
    }
    let mut last = t0;
    let mut latencies = Vec::with_capacity(ids.len());
    for id in ids.iter().filter(|id| !failed.contains(id)) {
        let end = completed_at(&env.client, id).await?;
        last = last.max(end);
        latencies.push(end.saturating_sub(t0));
    }
    let wall_ms = last.saturating_sub(t0) as f64;
    Ok(Batch {
        wall_ms,
        latencies,
        failed: failed.len(),
    })
}

/// What a batch measured: wall time from the starts to the last completion, the
/// latency of each completed run (ms), and how many runs failed.
struct Batch {
    wall_ms: f64,
    latencies: Vec<u64>,
    failed: usize,
}

/// When the run's completion was recorded (ms since the epoch). The instance row's
/// `updated_at` is a SQL `CURRENT_TIMESTAMP` (whole seconds, as text), so the time comes
/// from the last event of the history.
async fn completed_at(client: &Client, id: &str) -> Result<u64, BoxError> {
    let history = client.read_execution_history(id, 1).await?;
    match history.last() {
        Some(e) if matches!(e.kind, duroxide::EventKind::OrchestrationCompleted { .. }) => {
            Ok(e.timestamp_ms)
        }
        other => Err(format!("run {id} does not end with its completion: {other:?}").into()),
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

async fn w1(args: &Args) -> Result<f64, BoxError> {
    let env = open(&args.dir, "peer-w1.db", args).await?;
    let t0 = now_ms();
    env.client
        .start_orchestration("w1", "Chain", args.w1_steps.to_string())
        .await?;
    match env
        .client
        .wait_for_orchestration("w1", Duration::from_secs(600))
        .await?
    {
        OrchestrationStatus::Completed { .. } => {}
        other => return Err(format!("W1 did not complete: {other:?}").into()),
    }
    let end = completed_at(&env.client, "w1").await?;
    env.rt.clone().shutdown(Some(2000)).await;
    let wall_ms = end.saturating_sub(t0) as f64;
    Ok(wall_ms * 1000.0 / f64::from(args.w1_steps))
}

async fn w2(args: &Args) -> Result<serde_json::Value, BoxError> {
    let env = open(&args.dir, "peer-w2.db", args).await?;
    let ids: Vec<String> = (0..args.w2_runs).map(|i| format!("w2-{i}")).collect();
    let steps = args.w2_steps;
    let mut b = run_batch(&env, "Chain", &ids, |_| steps.to_string()).await?;
    env.rt.clone().shutdown(Some(2000)).await;
    b.latencies.sort_unstable();
    let secs = b.wall_ms.max(1.0) / 1000.0;
    let completed = b.latencies.len() as f64;
    Ok(serde_json::json!({
        "w2_steps_per_s": completed * f64::from(args.w2_steps) / secs,
        "w2_workflows_per_s": completed / secs,
        "w2_p50_ms": percentile(&b.latencies, 50.0),
        "w2_p99_ms": percentile(&b.latencies, 99.0),
        "w2_failed_runs": b.failed,
    }))
}

async fn w3(args: &Args) -> Result<serde_json::Value, BoxError> {
    let env = open(&args.dir, "peer-w3.db", args).await?;
    let ids: Vec<String> = (0..args.w3_orders).map(|i| format!("order-{i}")).collect();
    let mut b = run_batch(&env, "Order", &ids, |i| {
        serde_json::to_string(&sample_order(i)).unwrap_or_default()
    })
    .await?;
    env.rt.clone().shutdown(Some(2000)).await;
    b.latencies.sort_unstable();
    let secs = b.wall_ms.max(1.0) / 1000.0;
    Ok(serde_json::json!({
        "w3_orders_per_s": b.latencies.len() as f64 / secs,
        "w3_p50_ms": percentile(&b.latencies, 50.0),
        "w3_p99_ms": percentile(&b.latencies, 99.0),
        "w3_failed_runs": b.failed,
    }))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let wants = |w: &str| {
        args.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == w))
    };
    let mut out = serde_json::Map::new();
    out.insert("duroxide_version".into(), "0.1.32".into());
    out.insert(
        "options".into(),
        serde_json::json!({
            "dispatcher_min_poll_interval_ms": args.poll_ms,
            "orchestration_concurrency": args.orchestration_concurrency,
            "worker_concurrency": args.worker_concurrency,
        }),
    );
    let mut failed = false;
    if wants("w1") {
        eprintln!("peer: W1, one run of {} steps", args.w1_steps);
        match w1(&args).await {
            Ok(v) => {
                out.insert("w1_us_per_step".into(), v.into());
            }
            Err(e) => {
                eprintln!("peer: W1 failed: {e}");
                out.insert("w1_error".into(), e.to_string().into());
                failed = true;
            }
        }
    }
    if wants("w2") {
        eprintln!("peer: W2, {} runs of {} steps", args.w2_runs, args.w2_steps);
        match w2(&args).await {
            Ok(serde_json::Value::Object(m)) => out.extend(m),
            Ok(_) => {}
            Err(e) => {
                eprintln!("peer: W2 failed: {e}");
                out.insert("w2_error".into(), e.to_string().into());
                failed = true;
            }
        }
    }
    if wants("w3") {
        eprintln!("peer: W3, {} orders", args.w3_orders);
        match w3(&args).await {
            Ok(serde_json::Value::Object(m)) => out.extend(m),
            Ok(_) => {}
            Err(e) => {
                eprintln!("peer: W3 failed: {e}");
                out.insert("w3_error".into(), e.to_string().into());
                failed = true;
            }
        }
    }
    println!("{}", serde_json::Value::Object(out));
    std::process::exit(i32::from(failed));
}
