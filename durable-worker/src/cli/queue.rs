//! `queue set-limit | clear-limit | show | list`: the limits of task queues, kept in the
//! store for every worker that shares it.

use super::{Cli, Failure, open_store};
use crate::client::Client;
use clap::Subcommand;
use durable_core::store::{QueueInfo, QueueLimit, RateLimit};
use serde_json::{Value, json};

#[derive(Subcommand, Debug)]
pub(super) enum QueueCommand {
    /// Set the limits of a task queue for every worker sharing the store, replacing the
    /// ones it had (a limit left out is lifted).
    #[command(group(
        clap::ArgGroup::new("limits").required(true).multiple(true).args(["concurrency", "rate"])
    ))]
    SetLimit {
        /// The task queue (`default` for the default queue).
        queue: String,
        /// The most attempts of the queue running at once, across all workers (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: Option<u32>,
        /// The most attempt starts per second, minute or hour: 5/s, 100/m, 1000/h.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<RateLimit>,
        /// How many attempts an idle queue may start at once (default: the rate's count).
        #[arg(long, requires = "rate", value_parser = clap::value_parser!(u32).range(1..))]
        burst: Option<u32>,
    },
    /// Remove the limits of a task queue.
    ClearLimit {
        /// The task queue (`default` for the default queue).
        queue: String,
    },
    /// Show a task queue's limits and its attempts running and waiting now.
    Show {
        /// The task queue (`default` for the default queue).
        queue: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the task queues that have limits or attempts.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

fn parse_rate(text: &str) -> Result<RateLimit, String> {
    RateLimit::parse(text).map_err(|e| match e {
        durable_core::StoreError::Invalid(msg) => msg,
        other => other.to_string(),
    })
}

fn check_name(queue: &str) -> Result<&str, Failure> {
    if queue.is_empty() {
        return Err(Failure::error(
            "the task queue name is empty; use 'default' for the default queue",
        ));
    }
    Ok(queue)
}

/// The queue's name as people read it.
fn shown(queue: &str) -> &str {
    if queue.is_empty() { "default" } else { queue }
}

fn info_json(q: &QueueInfo) -> Value {
    let limit = q.limit.map(|l| {
        json!({
            "concurrency": l.max_concurrency,
            "rate": l.rate.map(|r| json!({
                "starts": r.starts,
                "per_ms": u64::try_from(r.per.as_millis()).unwrap_or(u64::MAX),
                "burst": r.burst,
                "shown": r.to_string(),
            })),
        })
    });
    json!({
        "queue": shown(&q.queue),
        "limit": limit,
        "running": q.running,
        "waiting": q.waiting,
        "tokens": q.tokens,
    })
}

pub(super) async fn run(cli: &Cli, command: &QueueCommand) -> Result<(), Failure> {
    match command {
        QueueCommand::SetLimit {
            queue,
            concurrency,
            rate,
            burst,
        } => {
            let queue = check_name(queue)?;
            let mut limit = QueueLimit::new();
            if let Some(n) = concurrency {
                limit = limit.concurrency(*n);
            }
            if let Some(rate) = rate {
                limit = limit.rate(burst.map_or(*rate, |b| rate.burst(b)));
            }
            limit.validate()?;
            let client = Client::new(open_store(cli, true).await?);
            client.set_queue_limit(queue, limit).await?;
            say!("queue {}: {limit}", shown(crate::client::queue_name(queue)));
            Ok(())
        }
        QueueCommand::ClearLimit { queue } => {
            let queue = check_name(queue)?;
            let client = Client::new(open_store(cli, false).await?);
            let name = shown(crate::client::queue_name(queue));
            if client.clear_queue_limit(queue).await? {
                say!("queue {name}: limits removed");
            } else {
                say!("queue {name} had no limits");
            }
            Ok(())
        }
        QueueCommand::Show { queue, json } => {
            let queue = check_name(queue)?;
            let client = Client::new(open_store(cli, false).await?);
            let q = client.queue(queue).await?;
            if *json {
                say!("{}", info_json(&q));
                return Ok(());
            }
            say!("queue:    {}", shown(&q.queue));
            match &q.limit {
                Some(limit) => say!("limits:   {limit}"),
                None => say!("limits:   none"),
            }
            say!("running:  {}", q.running);
            say!("waiting:  {}", q.waiting);
            if let Some(tokens) = q.tokens {
                say!("can start now (rate): {tokens}");
            }
            Ok(())
        }
        QueueCommand::List { json } => {
            let client = Client::new(open_store(cli, false).await?);
            let queues = client.queues().await?;
            if *json {
                for q in &queues {
                    say!("{}", info_json(q));
                }
                return Ok(());
            }
            if queues.is_empty() {
                say!("no task queues with limits or attempts");
                return Ok(());
            }
            say!(
                "{:<24} {:>11} {:<16} {:>8} {:>8}",
                "QUEUE",
                "CONCURRENCY",
                "RATE",
                "RUNNING",
                "WAITING"
            );
            for q in &queues {
                let concurrency = q
                    .limit
                    .and_then(|l| l.max_concurrency)
                    .map_or_else(|| "-".to_owned(), |n| n.to_string());
                let rate = q
                    .limit
                    .and_then(|l| l.rate)
                    .map_or_else(|| "-".to_owned(), |r| r.to_string());
                say!(
                    "{:<24} {:>11} {:<16} {:>8} {:>8}",
                    shown(&q.queue),
                    concurrency,
                    rate,
                    q.running,
                    q.waiting
                );
            }
            Ok(())
        }
    }
}
