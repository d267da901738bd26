//! A schedule: a report workflow started every 2 seconds, durably.
//!
//! ```text
//! cargo run --example schedule                 # create the schedule, run a worker for a
//!                                              # few ticks, show the runs, delete it
//! cargo run --example schedule -- schedule create nightly report --cron "0 2 * * *" \
//!     --input '{"region":"eu"}' --catch-up all --catch-up-max 3
//! cargo run --example schedule -- schedule create pulse report --every 10s --input '{"region":"us"}'
//! cargo run --example schedule -- worker &      # any number of workers: each tick runs once
//! cargo run --example schedule -- schedule show pulse   # the runs it started: pulse@<tick time>
//! cargo run --example schedule -- schedule trigger nightly
//! cargo run --example schedule -- schedule pause pulse
//! ```
//!
//! Stop every worker for a while and start one again: the ticks missed meanwhile follow
//! the schedule's catch-up policy (`skip`, `one` or `all`).

use durable::prelude::*;
use durable::schedule::{CatchUpPolicy, ScheduleSpec};
use durable::{ScheduleOptions, SqliteOptions, SqliteStore};
use std::sync::Arc;
use std::time::Duration;

/// What a report covers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReportRequest {
    /// The region to report on.
    pub region: String,
}

/// The figures of one report (the activity's input).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Period {
    /// The region.
    pub region: String,
    /// When the run started (its tick, give or take the sweep), ms since the epoch.
    pub at_ms: i64,
}

/// Compiles the report; a real one would query a warehouse.
#[activity]
async fn compile_report(_ctx: ActivityContext, period: Period) -> Result<String, ActivityError> {
    Ok(format!(
        "report for {} at {}",
        period.region,
        durable::clock::format_ms(period.at_ms)
    ))
}

/// One scheduled report.
#[workflow]
pub async fn report(ctx: WorkflowContext, request: ReportRequest) -> Result<String, WorkflowError> {
    // The time of the run's start event: recorded, so replay sees the same value.
    let at_ms = ctx.now_ms();
    Ok(ctx
        .activity::<compile_report>(Period {
            region: request.region,
            at_ms,
        })
        .await?)
}

/// Everything this binary runs.
pub fn registry() -> Registry {
    Registry::new()
        .workflow::<report>()
        .activity::<compile_report>()
}

/// The demo without arguments: a schedule every 2 seconds, a worker in this process,
/// three runs shown, the schedule deleted.
async fn demo() -> anyhow::Result<()> {
    let store = SqliteStore::open("durable.db", SqliteOptions::default())?;
    let store: durable::store::SharedStore = Arc::new(store);
    let client = Client::new(store.clone());
    let options = ScheduleOptions::new(ScheduleSpec::every(Duration::from_secs(2))?)
        .catch_up(CatchUpPolicy::One)
        .replace();
    let id = "example-every-2s";
    let info = client
        .create_schedule::<report>(
            id,
            &ReportRequest {
                region: "eu".into(),
            },
            options,
        )
        .await?;
    println!(
        "schedule '{id}': {}; first run at {}",
        info.spec.describe(),
        durable::clock::format_ms(info.next_fire_at_ms.unwrap_or_default())
    );
    let worker = Worker::new(store.clone(), registry(), WorkerOptions::default());
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    let mut shown = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while shown.len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut ticks = client.schedule_runs(id, 10).await?;
        ticks.reverse();
        for tick in ticks {
            if shown.contains(&tick.workflow_id) {
                continue;
            }
            if let Ok(output) = client
                .result::<report>(tick.workflow_id.clone(), Some(Duration::from_secs(5)))
                .await
            {
                println!("{}: {output}", tick.workflow_id);
                shown.push(tick.workflow_id);
            }
        }
    }
    client.delete_schedule(id).await?;
    stop.shutdown();
    running.await??;
    anyhow::ensure!(shown.len() >= 3, "only {} runs in 30 s", shown.len());
    println!("schedule '{id}' deleted; its runs stay (try `list --workflow report`)");
    Ok(())
}

fn main() {
    if std::env::args_os().len() > 1 {
        std::process::exit(durable::cli::main(registry()));
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if let Err(e) = runtime.block_on(demo()) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
