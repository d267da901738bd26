//! `schedule create|list|show|pause|resume|delete|trigger`: schedules from the command
//! line.

use super::{Cli, Failure, open_store, output, parse_input};
use crate::client::Client;
use crate::error::ClientError;
use crate::schedule::ScheduleOptions;
use clap::Subcommand;
use durable_core::clock;
use durable_core::error::StoreError;
use durable_core::registry::Registry;
use durable_core::schedule::{
    CatchUpPolicy, OverlapPolicy, ScheduleFire, ScheduleInfo, ScheduleSpec,
};
use serde_json::{Value, json};
use std::time::Duration;

/// The schedule subcommands.
#[derive(Subcommand, Debug)]
pub(super) enum ScheduleCommand {
    /// Create a schedule that starts a run of a workflow on a cron expression (UTC) or
    /// an interval. Exactly one of --cron and --every.
    #[command(group(clap::ArgGroup::new("spec").required(true).args(["cron", "every"])))]
    Create {
        /// The schedule id; its runs get the workflow ids `<id>@<tick time>`.
        id: String,
        /// The workflow name.
        workflow: String,
        /// The input of every run, as JSON.
        #[arg(long, default_value = "null")]
        input: String,
        /// A cron expression in UTC: 5 fields (minute hour day-of-month month
        /// day-of-week), or 6 with seconds first, e.g. "0 2 * * *".
        #[arg(long, value_name = "EXPR")]
        cron: Option<String>,
        /// A fixed interval, e.g. 30s, 5m, 1h (ticks aligned to the Unix epoch).
        #[arg(long, value_name = "DURATION")]
        every: Option<String>,
        /// Shift the interval's ticks, e.g. --every 1h --offset 15m fires at quarter past.
        #[arg(long, value_name = "DURATION", requires = "every")]
        offset: Option<String>,
        /// Ticks missed while no worker ran: skip (start nothing for them), one (one run
        /// for them all) or all (a run for each, up to --catch-up-max).
        #[arg(long, default_value = "one", value_name = "POLICY")]
        catch_up: String,
        /// The most runs --catch-up all starts at once (1 to 1000).
        #[arg(long, value_name = "N")]
        catch_up_max: Option<u32>,
        /// A tick that comes while the previous run still runs: skip or allow.
        #[arg(long, default_value = "skip", value_name = "POLICY")]
        overlap: String,
        /// End each run as failed if it is still running after this long (e.g. 30s).
        #[arg(long, value_name = "DURATION")]
        execution_timeout: Option<String>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
        /// Replace a schedule of the same id instead of failing.
        #[arg(long)]
        replace: bool,
    },
    /// List the schedules.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show a schedule and its latest ticks (the runs it started).
    Show {
        /// The schedule id.
        id: String,
        /// How many of the latest ticks to show.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pause a schedule: it starts nothing until resumed.
    Pause {
        /// The schedule id.
        id: String,
    },
    /// Resume a paused schedule from its next tick (ticks while paused are not caught up).
    Resume {
        /// The schedule id.
        id: String,
    },
    /// Delete a schedule and its record of ticks (the runs it started stay).
    Delete {
        /// The schedule id.
        id: String,
    },
    /// Start a run of the schedule now and print its workflow id.
    Trigger {
        /// The schedule id.
        id: String,
    },
}

fn duration_arg(flag: &str, text: &str) -> Result<Duration, Failure> {
    humantime::parse_duration(text).map_err(|e| Failure::error(format!("--{flag} {text:?}: {e}")))
}

/// The options of `schedule create`, checked before anything is opened or written.
#[allow(clippy::too_many_arguments)] // one per flag of `schedule create`
fn create_options(
    cron: Option<&str>,
    every: Option<&str>,
    offset: Option<&str>,
    catch_up: &str,
    catch_up_max: Option<u32>,
    overlap: &str,
    execution_timeout: Option<&str>,
    paused: bool,
    replace: bool,
) -> Result<ScheduleOptions, Failure> {
    let spec = match (cron, every) {
        (Some(expr), _) => {
            ScheduleSpec::cron(expr).map_err(|e| Failure::error(format!("--cron: {e}")))?
        }
        (None, Some(every)) => {
            let interval = duration_arg("every", every)?;
            let offset = offset
                .map(|o| duration_arg("offset", o))
                .transpose()?
                .unwrap_or(Duration::ZERO);
            ScheduleSpec::every_with_offset(interval, offset)
                .map_err(|e| Failure::error(format!("--every: {e}")))?
        }
        (None, None) => return Err(Failure::error("give --cron EXPR or --every DURATION")),
    };
    if catch_up_max.is_some() && catch_up != "all" {
        return Err(Failure::error(format!(
            "--catch-up-max applies to --catch-up all, not {catch_up:?}"
        )));
    }
    let catch_up = CatchUpPolicy::from_parts(catch_up, catch_up_max)
        .map_err(|e| Failure::error(format!("--catch-up: {e}")))?;
    let overlap: OverlapPolicy = overlap
        .parse()
        .map_err(|e| Failure::error(format!("--overlap: {e}")))?;
    let mut options = ScheduleOptions::new(spec)
        .catch_up(catch_up)
        .overlap(overlap);
    if let Some(text) = execution_timeout {
        let timeout = duration_arg("execution-timeout", text)?;
        if timeout.is_zero() {
            return Err(Failure::error(format!(
                "--execution-timeout must be longer than zero, not {text:?}"
            )));
        }
        options = options.execution_timeout(timeout);
    }
    if paused {
        options = options.paused();
    }
    if replace {
        options = options.replace();
    }
    Ok(options)
}

fn time_or_none(ms: Option<i64>) -> String {
    ms.map_or_else(|| "none".to_owned(), clock::format_ms)
}

fn catch_up_text(p: CatchUpPolicy) -> String {
    match p {
        CatchUpPolicy::All { max } => format!("all (at most {max})"),
        other => other.name().to_owned(),
    }
}

fn schedule_json(s: &ScheduleInfo) -> Value {
    json!({
        "id": s.id,
        "workflow": s.workflow,
        "input": output::payload_json(&s.input),
        "spec": s.spec,
        "catch_up": s.catch_up.name(),
        "catch_up_max": s.catch_up.max(),
        "overlap": s.overlap.name(),
        "execution_timeout_ms": s.execution_timeout_ms,
        "paused": s.paused,
        "next_fire_at": s.next_fire_at_ms.map(clock::format_ms),
        "next_fire_at_ms": s.next_fire_at_ms,
        "created_at_ms": s.created_at_ms,
        "updated_at_ms": s.updated_at_ms,
        "runs_started": s.runs_started,
        "ticks_skipped": s.ticks_skipped,
    })
}

fn fire_json(f: &ScheduleFire) -> Value {
    json!({
        "tick": clock::format_ms(f.tick_ms),
        "tick_ms": f.tick_ms,
        "fired_at_ms": f.fired_at_ms,
        "outcome": f.outcome.as_str(),
        "workflow_id": f.workflow_id.as_str(),
    })
}

pub(super) async fn run(
    cli: &Cli,
    registry: &Registry,
    command: &ScheduleCommand,
) -> Result<(), Failure> {
    match command {
        ScheduleCommand::Create {
            id,
            workflow,
            input,
            cron,
            every,
            offset,
            catch_up,
            catch_up_max,
            overlap,
            execution_timeout,
            paused,
            replace,
        } => {
            // Everything the command line says is checked before the store is opened.
            let options = create_options(
                cron.as_deref(),
                every.as_deref(),
                offset.as_deref(),
                catch_up,
                *catch_up_max,
                overlap,
                execution_timeout.as_deref(),
                *paused,
                *replace,
            )?;
            durable_core::schedule::check_id(id).map_err(|e| Failure::error(e.to_string()))?;
            let payload = parse_input(registry, workflow, input)?;
            let client = Client::new(open_store(cli, true).await?);
            let info = client
                .create_schedule_encoded(workflow, id, payload, options)
                .await
                .map_err(|e| match e {
                    ClientError::Store(StoreError::ScheduleExists(id)) => Failure::error(format!(
                        "schedule '{id}' already exists; delete it first or pass --replace"
                    )),
                    e => Failure::from(e),
                })?;
            say!(
                "schedule '{}': {} of {}; next run at {}{}",
                info.id,
                info.spec.describe(),
                info.workflow,
                time_or_none(info.next_fire_at_ms),
                if info.paused { " (paused)" } else { "" }
            );
            Ok(())
        }
        ScheduleCommand::List { json } => {
            let client = Client::new(open_store(cli, false).await?);
            let schedules = client.list_schedules().await?;
            if *json {
                for s in &schedules {
                    say!("{}", schedule_json(s));
                }
                return Ok(());
            }
            say!(
                "{:<24} {:<16} {:<28} {:<7} {:>5}  NEXT",
                "ID",
                "WORKFLOW",
                "SPEC",
                "STATE",
                "RUNS"
            );
            for s in &schedules {
                say!(
                    "{:<24} {:<16} {:<28} {:<7} {:>5}  {}",
                    output::truncate(&s.id, 24),
                    output::truncate(&s.workflow, 16),
                    output::truncate(&s.spec.describe(), 28),
                    if s.paused { "paused" } else { "active" },
                    s.runs_started,
                    time_or_none(s.next_fire_at_ms)
                );
            }
            Ok(())
        }
        ScheduleCommand::Show { id, runs, json } => {
            let client = Client::new(open_store(cli, false).await?);
            let s = client.schedule(id).await?;
            let fires = client.schedule_runs(id, (*runs).max(1)).await?;
            if *json {
                let mut v = schedule_json(&s);
                v["ticks"] = fires.iter().map(fire_json).collect();
                say!("{v}");
                return Ok(());
            }
            say!("schedule:  {}", s.id);
            say!("workflow:  {}", s.workflow);
            say!("input:     {}", output::payload_json(&s.input));
            say!("spec:      {}", s.spec.describe());
            say!("catch-up:  {}", catch_up_text(s.catch_up));
            say!("overlap:   {}", s.overlap.name());
            if let Some(t) = s.execution_timeout_ms {
                say!(
                    "execution timeout: {}",
                    humantime::format_duration(Duration::from_millis(
                        u64::try_from(t).unwrap_or(0)
                    ))
                );
            }
            say!("state:     {}", if s.paused { "paused" } else { "active" });
            match s.next_fire_at_ms {
                Some(next) if !s.paused => {
                    let mut times = vec![clock::format_ms(next)];
                    times.extend(s.spec.upcoming(next, 2).into_iter().map(clock::format_ms));
                    say!("next runs: {}", times.join(", "));
                }
                next => say!("next run:  {}", time_or_none(next)),
            }
            say!(
                "runs started: {}; ticks skipped: {}",
                s.runs_started,
                s.ticks_skipped
            );
            if !fires.is_empty() {
                say!("latest ticks:");
                for f in &fires {
                    say!(
                        "  {}  {:<15} {}",
                        clock::format_ms(f.tick_ms),
                        f.outcome.as_str(),
                        f.workflow_id
                    );
                }
            }
            Ok(())
        }
        ScheduleCommand::Pause { id } => {
            let client = Client::new(open_store(cli, false).await?);
            client.pause_schedule(id).await?;
            say!("schedule '{id}' paused");
            Ok(())
        }
        ScheduleCommand::Resume { id } => {
            let client = Client::new(open_store(cli, false).await?);
            let s = client.resume_schedule(id).await?;
            say!(
                "schedule '{id}' resumed; next run at {}",
                time_or_none(s.next_fire_at_ms)
            );
            Ok(())
        }
        ScheduleCommand::Delete { id } => {
            let client = Client::new(open_store(cli, false).await?);
            client.delete_schedule(id).await?;
            say!("schedule '{id}' deleted");
            Ok(())
        }
        ScheduleCommand::Trigger { id } => {
            let client = Client::new(open_store(cli, false).await?);
            let fire = client.trigger_schedule(id).await?;
            say!("{}", fire.workflow_id);
            Ok(())
        }
    }
}
