//! Routing runs: a worker claims only runs of the workflows it registers, on the task
//! queues it serves. Here a `render` run (and its calls) go to the `gpu` queue and its
//! `thumbnail` child is started there too, while an `index` run stays on the default queue;
//! two workers in this process, one per queue, each take only their own runs.
//!
//! ```text
//! cargo run --example routing                       # both workers, both runs, who ran what
//! cargo run --example routing -- worker &           # the default queue only
//! cargo run --example routing -- worker --task-queue gpu &
//! cargo run --example routing -- start render --id r-1 --input '"poster"' --task-queue gpu
//! cargo run --example routing -- status r-1         # task queue:   gpu
//! ```
//!
//! A run whose queue no worker serves (or whose workflow no worker registers) waits,
//! ready and unowned, until one that can take it starts.

use durable::prelude::*;
use durable::{SqliteOptions, SqliteStore, StartOptions};
use std::sync::Arc;
use std::time::Duration;

/// Describes a step of work (a real one would render or index).
#[activity]
async fn describe(_ctx: ActivityContext, what: String) -> Result<String, ActivityError> {
    Ok(format!("{what} (process {})", std::process::id()))
}

/// A thumbnail of a rendered image: a child run.
#[workflow]
pub async fn thumbnail(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
    Ok(ctx
        .activity::<describe>(format!("thumbnail of {name}"))
        .task_queue("gpu")
        .await?)
}

/// Renders an image, then its thumbnail as a child run on `gpu` too (named here; a child
/// without `.task_queue(..)` is on its parent's queue anyway).
#[workflow]
pub async fn render(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
    let rendered = ctx
        .activity::<describe>(format!("render of {name}"))
        .task_queue("gpu")
        .await?;
    let thumb = ctx.child::<thumbnail>(name).task_queue("gpu").await?;
    Ok(format!("{rendered}; {thumb}"))
}

/// Indexes a document, on the default queue.
#[workflow]
pub async fn index(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
    Ok(ctx.activity::<describe>(format!("index of {name}")).await?)
}

/// Everything this binary runs.
pub fn registry() -> Registry {
    Registry::new()
        .workflow::<render>()
        .workflow::<thumbnail>()
        .workflow::<index>()
        .activity::<describe>()
}

/// The demo without arguments: a `gpu` worker and a default-queue worker in this
/// process, one run for each, and which worker ran which.
async fn demo() -> anyhow::Result<()> {
    let store = SqliteStore::open("durable.db", SqliteOptions::default())?;
    let store: durable::store::SharedStore = Arc::new(store);
    let client = Client::new(store.clone());
    let suffix = durable::clock::now_ms();
    let render_id = format!("render-{suffix}");
    let index_id = format!("index-{suffix}");
    client
        .start_with::<render>(
            render_id.as_str(),
            &"poster".to_owned(),
            StartOptions::new().task_queue("gpu"),
        )
        .await?;
    client
        .start::<index>(index_id.as_str(), &"manual".to_owned())
        .await?;

    let mut workers = Vec::new();
    for (label, queues) in [("gpu", vec!["gpu".to_owned()]), ("default", Vec::new())] {
        let worker = Worker::new(
            store.clone(),
            registry(),
            WorkerOptions {
                task_queues: queues,
                ..WorkerOptions::default()
            },
        );
        println!("worker {} serves the {label} queue", worker.id());
        let stop = worker.shutdown_handle();
        let stats = worker.stats();
        workers.push((label, stop, stats, tokio::spawn(worker.run())));
    }
    let wait = Some(Duration::from_secs(30));
    let rendered = client.result::<render>(render_id.as_str(), wait).await?;
    let indexed = client.result::<index>(index_id.as_str(), wait).await?;
    println!("{render_id} (task queue gpu): {rendered}");
    println!("{index_id} (default queue): {indexed}");
    for (label, _, stats, _) in &workers {
        println!(
            "the {label} worker committed {} activations",
            stats.activations.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    for (_, stop, _, running) in workers {
        stop.shutdown();
        running.await??;
    }
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
