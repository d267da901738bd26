//! Task queues with limits: a crawl fans out one `fetch_page` call per page on the `api`
//! task queue, whose limits (kept in the store, obeyed by every worker sharing it) let at
//! most 2 calls run at once and at most 5 start per second.
//!
//! ```text
//! cargo run --example queues          # sets the limits, runs a crawl of 12 pages, shows the queue
//! ```
//!
//! With several worker processes on one database (SQLite file or PostgreSQL), the limits
//! hold for all of them together:
//!
//! ```text
//! cargo run --example queues -- queue set-limit api --concurrency 2 --rate 5/s
//! cargo run --example queues -- worker --task-queue default,api &     # as many as you like
//! cargo run --example queues -- start crawl --id c-1 --input '{"pages":30}'
//! cargo run --example queues -- queue show api                        # running: 2, waiting: ...
//! cargo run --example queues -- result c-1 --wait
//! ```
//!
//! Each call can append a `start`/`end` line to a file (`"log": "/tmp/calls.log"` in the
//! input); the end-to-end tests read it to check that no more than the limit ran at once.

use durable::prelude::*;
use std::io::Write as _;
use std::time::Duration;

/// What to crawl.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Crawl {
    /// How many pages.
    pub pages: u32,
    /// How long each call works, in milliseconds.
    #[serde(default = "default_work_ms")]
    pub work_ms: u64,
    /// A file each call appends its start and end to, if any.
    #[serde(default)]
    pub log: Option<String>,
}

fn default_work_ms() -> u64 {
    200
}

/// One page to fetch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Page {
    /// The page number.
    pub number: u32,
    /// How long the call works, in milliseconds.
    pub work_ms: u64,
    /// A file to append the call's start and end to.
    pub log: Option<String>,
}

/// Appends `line` to the call log; one `write` per line on a file opened for appending,
/// so lines of several processes never interleave and their order is the order of the
/// calls' starts and ends.
fn log_line(log: Option<&str>, what: &str, page: u32) -> Result<(), ActivityError> {
    let Some(path) = log else {
        return Ok(());
    };
    let now = durable::clock::now_ms();
    let line = format!("{what} {page} {} {now}\n", std::process::id());
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| ActivityError::retryable("LogUnwritable", format!("{path}: {e}")))
}

/// Fetches one page (here: waits `work_ms`, standing in for a rate-limited API).
#[activity]
pub async fn fetch_page(_ctx: ActivityContext, page: Page) -> Result<u32, ActivityError> {
    log_line(page.log.as_deref(), "start", page.number)?;
    tokio::time::sleep(Duration::from_millis(page.work_ms)).await;
    log_line(page.log.as_deref(), "end", page.number)?;
    Ok(page.number)
}

/// Fetches every page at once on the `api` task queue; the queue's limits decide how
/// many run at a time. Returns how many pages were fetched.
#[workflow]
pub async fn crawl(ctx: WorkflowContext, crawl: Crawl) -> Result<u32, WorkflowError> {
    let calls = (1..=crawl.pages).map(|number| {
        ctx.activity::<fetch_page>(Page {
            number,
            work_ms: crawl.work_ms,
            log: crawl.log.clone(),
        })
        .task_queue("api")
    });
    let fetched = futures::future::join_all(calls).await;
    let mut count = 0;
    for page in fetched {
        page?;
        count += 1;
    }
    Ok(count)
}

/// The workflows and activities of this binary.
pub fn registry() -> Registry {
    Registry::new().workflow::<crawl>().activity::<fetch_page>()
}

fn main() {
    if std::env::args_os().len() > 1 {
        std::process::exit(durable::cli::main(registry()));
    }
    // No arguments: limit the `api` queue, crawl 12 pages with a worker in this process
    // (serving the default queue and `api`), then show the queue.
    let steps: [&[&str]; 3] = [
        &[
            "queue",
            "set-limit",
            "api",
            "--concurrency",
            "2",
            "--rate",
            "5/s",
        ],
        &[
            "run",
            "crawl",
            "--input",
            r#"{"pages":12,"work_ms":200}"#,
            "--task-queue",
            "default,api",
        ],
        &["queue", "show", "api"],
    ];
    for args in steps {
        let argv = std::iter::once("queues").chain(args.iter().copied());
        let code = durable::cli::main_from(registry(), argv);
        if code != 0 {
            std::process::exit(code);
        }
    }
}
