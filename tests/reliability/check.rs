//! The history checker: reads every run of a store and checks what durable promises
//! about histories, then the side-effect ledger and the client log against them.
//!
//! Per run:
//! - events are numbered 1..n with no gap or repeat, and event 1 is the only `RunStarted`;
//! - each command number is recorded once; each scheduled activity has at most one
//!   result, and every result answers an earlier `ActivityScheduled`;
//! - every `TimerFired` answers an earlier `TimerStarted`, once, and no earlier than its
//!   due time by the store's clock;
//! - a run ends with at most one terminal event, which is the last, and its status in
//!   the `runs` table agrees with its history;
//! - in a finished run every scheduled activity has its result;
//! - the `exec` markers (which process executed each step, and when) never go back in
//!   time: a stale owner's write that slipped past fencing would;
//! - the outcome equals what the reference interpreter computes from the input and the
//!   signals the run received.
//!
//! Across the store, with the ledger: every completed activity has exactly one effect,
//! whose output is the recorded result, and a successful attempt with the recorded
//! attempt number; no effect belongs to anything else. With the client log: a signal
//! acknowledged as sent is in history exactly once, a refused one never, an unknown one
//! at most once.
//!
//! The checker reads through the [`Store`] trait, so the same checks would run on any
//! store; it is the core of the `durable check` subcommand proposed in RELIABILITY.md.

use crate::kitchen_sink::{self, Expected, Vote};
use crate::ledger;
use durable::store::{RunFilter, RunInfo, RunStatus, Store};
use durable::{Event, EventId, EventKind, Payload};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One run as read from the store.
#[derive(Clone, Debug)]
pub(crate) struct RunRecord {
    /// The `runs` row.
    pub(crate) info: RunInfo,
    /// Its history.
    pub(crate) events: Vec<Event>,
}

/// What the checker found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Runs read.
    pub(crate) runs: usize,
    /// Events checked.
    pub(crate) events: usize,
    /// Runs by status.
    pub(crate) by_status: BTreeMap<&'static str, usize>,
    /// Activities completed, as idempotency key -> (attempt, output).
    pub(crate) completed: BTreeMap<String, (u32, u64)>,
    /// Activities failed for good (their keys).
    pub(crate) failed_activities: BTreeSet<String>,
    /// Signals recorded in histories: vote id -> times seen (over all runs).
    pub(crate) votes_seen: BTreeMap<u64, usize>,
    /// Timers checked against their due time.
    pub(crate) timers_fired: usize,
    /// Consecutive committed steps executed by different processes (handoffs after a
    /// crash or a takeover).
    pub(crate) handoffs: usize,
    /// Poison runs found suspended, with their reasons.
    pub(crate) suspended_reasons: Vec<(String, String)>,
    /// Everything wrong, one line each.
    pub(crate) violations: Vec<String>,
}

impl Report {
    /// Runs with this status.
    pub(crate) fn count(&self, status: RunStatus) -> usize {
        self.by_status.get(status.as_str()).copied().unwrap_or(0)
    }

    fn violation(&mut self, run: &RunInfo, what: String) {
        self.violations.push(format!(
            "run '{}' ({}): {what}",
            run.workflow_id, run.workflow
        ));
    }

    /// Panics listing the first violations, if there are any.
    #[track_caller]
    pub(crate) fn assert_clean(&self, context: &str) {
        if self.violations.is_empty() {
            return;
        }
        let shown: Vec<&str> = self
            .violations
            .iter()
            .take(25)
            .map(String::as_str)
            .collect();
        panic!(
            "{context}: {} violation(s):\n  {}",
            self.violations.len(),
            shown.join("\n  ")
        );
    }
}

/// Reads every run of the namespace (all of them, newest first) with its history.
pub(crate) async fn load(store: &dyn Store) -> Result<Vec<RunRecord>, String> {
    let runs = store
        .list_runs(RunFilter {
            limit: 10_000_000,
            ..RunFilter::default()
        })
        .await
        .map_err(|e| format!("listing runs: {e}"))?;
    let mut out = Vec::with_capacity(runs.len());
    for info in runs {
        let events = store
            .read_history(info.key, EventId(0))
            .await
            .map_err(|e| format!("reading the history of '{}': {e}", info.workflow_id))?;
        out.push(RunRecord { info, events });
    }
    Ok(out)
}

/// Loads a SQLite database through the store and checks it (see [`check_runs`]).
pub(crate) fn check_sqlite(db: &Path) -> Result<(Report, Vec<RunRecord>), String> {
    let rt = crate::support::runtime();
    let store = durable::SqliteStore::open(
        db,
        durable::SqliteOptions {
            create: false,
            ..durable::SqliteOptions::default()
        },
    )
    .map_err(|e| format!("opening {}: {e}", db.display()))?;
    let runs = rt.block_on(load(&store))?;
    drop(store);
    Ok((check_runs(&runs), runs))
}

/// Checks every run's history (the per-run oracles of the module docs).
pub(crate) fn check_runs(runs: &[RunRecord]) -> Report {
    let mut report = Report::default();
    for run in runs {
        check_run(&mut report, run);
    }
    report
}

fn check_run(report: &mut Report, run: &RunRecord) {
    let info = &run.info;
    let events = &run.events;
    report.runs += 1;
    report.events += events.len();
    *report.by_status.entry(info.status.as_str()).or_default() += 1;

    // Numbering.
    for (i, e) in events.iter().enumerate() {
        let want = u64::try_from(i + 1).expect("a history fits in u64");
        if e.id.0 != want {
            report.violation(
                info,
                format!("event #{} has id {} (gap or repeat)", want, e.id),
            );
            return;
        }
    }
    if u64::try_from(events.len()).ok() != Some(info.last_event_id.0) {
        report.violation(
            info,
            format!(
                "the runs table says {} events, history has {}",
                info.last_event_id,
                events.len()
            ),
        );
    }
    let Some(first) = events.first() else {
        report.violation(info, "empty history".to_owned());
        return;
    };
    let EventKind::RunStarted {
        workflow, input, ..
    } = &first.kind
    else {
        report.violation(info, format!("event 1 is {}", first.kind.name()));
        return;
    };
    if *workflow != info.workflow {
        report.violation(info, format!("RunStarted names workflow {workflow:?}"));
    }
    let key = |seq: u32| format!("{}/{}/{}", info.workflow_id, info.run_id, seq);

    let mut commands: BTreeMap<u32, &'static str> = BTreeMap::new();
    let mut scheduled: BTreeMap<u32, String> = BTreeMap::new();
    let mut results: BTreeMap<u32, usize> = BTreeMap::new();
    let mut timers: BTreeMap<u32, i64> = BTreeMap::new();
    let mut fired: BTreeSet<u32> = BTreeSet::new();
    let mut signals: Vec<(String, Payload)> = Vec::new();
    let mut terminal: Option<(usize, &EventKind)> = None;
    let mut last_exec: Option<(u32, i64)> = None;

    for (i, e) in events.iter().enumerate() {
        if terminal.is_some() {
            report.violation(info, format!("event {} comes after the run ended", e.id));
            break;
        }
        if e.kind.is_command() {
            let seq = e.kind.seq().expect("commands have numbers").0;
            if let Some(prev) = commands.insert(seq, e.kind.name()) {
                report.violation(
                    info,
                    format!(
                        "command {seq} recorded twice ({prev}, then {} at event {})",
                        e.kind.name(),
                        e.id
                    ),
                );
            }
        }
        match &e.kind {
            EventKind::RunStarted { .. } if i > 0 => {
                report.violation(info, format!("a second RunStarted at event {}", e.id));
            }
            EventKind::ActivityScheduled { seq, name, .. } => {
                scheduled.insert(seq.0, name.clone());
            }
            EventKind::ActivityCompleted {
                seq,
                output,
                attempt,
            } => {
                if !scheduled.contains_key(&seq.0) {
                    report.violation(
                        info,
                        format!(
                            "event {}: a result for command {seq}, which is no scheduled activity",
                            e.id
                        ),
                    );
                }
                *results.entry(seq.0).or_default() += 1;
                match output.decode::<u64>() {
                    Ok(v) => {
                        report.completed.insert(key(seq.0), (*attempt, v));
                    }
                    Err(err) => report.violation(info, format!("event {}: output: {err}", e.id)),
                }
            }
            EventKind::ActivityFailed { seq, .. } => {
                if !scheduled.contains_key(&seq.0) {
                    report.violation(
                        info,
                        format!(
                            "event {}: a failure for command {seq}, which is no scheduled activity",
                            e.id
                        ),
                    );
                }
                *results.entry(seq.0).or_default() += 1;
                report.failed_activities.insert(key(seq.0));
            }
            EventKind::TimerStarted { seq, duration_ms } => {
                let due = e
                    .time_ms
                    .saturating_add(i64::try_from(*duration_ms).unwrap_or(i64::MAX));
                timers.insert(seq.0, due);
            }
            EventKind::TimerFired { seq } => {
                match timers.get(&seq.0) {
                    None => report.violation(
                        info,
                        format!("event {}: timer {seq} fired but was never started", e.id),
                    ),
                    Some(due) if e.time_ms < *due => report.violation(
                        info,
                        format!(
                            "event {}: timer {seq} fired {} ms early",
                            e.id,
                            due - e.time_ms
                        ),
                    ),
                    Some(_) => report.timers_fired += 1,
                }
                if !fired.insert(seq.0) {
                    report.violation(info, format!("event {}: timer {seq} fired twice", e.id));
                }
            }
            EventKind::SignalReceived { name, payload } => {
                if name == "vote" {
                    match payload.decode::<Vote>() {
                        Ok(v) => *report.votes_seen.entry(v.id).or_default() += 1,
                        Err(err) => report.violation(info, format!("event {}: vote: {err}", e.id)),
                    }
                }
                signals.push((name.clone(), payload.clone()));
            }
            EventKind::MarkerRecorded { name, value, .. } if name == "side_effect:exec" => {
                match value.decode::<(u32, i64)>() {
                    Ok((pid, at)) => {
                        if let Some((prev_pid, prev_at)) = last_exec {
                            if at < prev_at {
                                report.violation(
                                    info,
                                    format!(
                                        "event {}: a step executed by process {pid} at {at} µs is committed after one executed by {prev_pid} at {prev_at} µs (a stale write?)",
                                        e.id
                                    ),
                                );
                            }
                            if pid != prev_pid {
                                report.handoffs += 1;
                            }
                        }
                        last_exec = Some((pid, at));
                    }
                    Err(err) => {
                        report.violation(info, format!("event {}: exec marker: {err}", e.id))
                    }
                }
            }
            EventKind::RunCompleted { .. } | EventKind::RunFailed { .. } => {
                terminal = Some((i, &e.kind));
            }
            _ => {}
        }
    }
    for (seq, n) in &results {
        if *n > 1 {
            report.violation(info, format!("activity {seq} has {n} results"));
        }
    }

    // Status against history.
    let ended = terminal.map(|(_, k)| k);
    match (info.status, ended) {
        (RunStatus::Completed, Some(EventKind::RunCompleted { .. }))
        | (RunStatus::Failed, Some(EventKind::RunFailed { .. }))
        | (RunStatus::Running | RunStatus::Suspended, None) => {}
        (status, kind) => report.violation(
            info,
            format!(
                "status {status} but history ends with {}",
                kind.map_or("no terminal event", |k| k.name())
            ),
        ),
    }
    if ended.is_some() {
        for (seq, name) in &scheduled {
            if !results.contains_key(seq) {
                report.violation(
                    info,
                    format!("finished with activity {seq} ({name}) still unanswered"),
                );
            }
        }
    }
    if info.status == RunStatus::Suspended {
        report.suspended_reasons.push((
            info.workflow_id.to_string(),
            info.reason.clone().unwrap_or_default(),
        ));
    }

    // The outcome against the reference.
    let expected = match kitchen_sink::expected(workflow, input, &signals) {
        Ok(e) => e,
        Err(err) if info.status.is_finished() => {
            report.violation(info, format!("reference: {err}"));
            return;
        }
        // A run still waiting for votes has no outcome to compare yet.
        Err(_) => return,
    };
    match (&expected, info.status, ended) {
        (
            Expected::Completed(want),
            RunStatus::Completed,
            Some(EventKind::RunCompleted { output }),
        ) => {
            if want != output {
                report.violation(
                    info,
                    format!(
                        "output {} differs from the reference {}",
                        output.to_json().map(|v| v.to_string()).unwrap_or_default(),
                        want.to_json().map(|v| v.to_string()).unwrap_or_default()
                    ),
                );
            }
        }
        (Expected::Failed(kind), RunStatus::Failed, Some(EventKind::RunFailed { error })) => {
            if error.kind() != kind {
                report.violation(
                    info,
                    format!("failed with {error}, the reference says kind {kind}"),
                );
            }
        }
        (Expected::Suspended, RunStatus::Suspended, None) => {
            if info.reason.as_deref().unwrap_or("").is_empty() {
                report.violation(info, "suspended without a reason".to_owned());
            }
        }
        (_, RunStatus::Running, None) => {}
        (want, status, _) => {
            let reason = info
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            report.violation(
                info,
                format!("ended {status}{reason}, the reference says {want:?}"),
            );
        }
    }
}

/// What the ledger holds.
#[derive(Debug, Default)]
pub(crate) struct LedgerFigures {
    /// Attempts recorded (successful or not).
    pub(crate) attempts: u64,
    /// Successful attempts (each tried to record an effect).
    pub(crate) ok_attempts: u64,
    /// Effects (distinct idempotency keys).
    pub(crate) effects: u64,
    /// Keys whose successful attempts ran more than once (the dangerous window was hit).
    pub(crate) keys_executed_twice: u64,
    /// Effects of runs that no longer exist (lost with a torn WAL; allowed only then).
    pub(crate) orphans: u64,
}

impl LedgerFigures {
    /// Successful executions absorbed by the idempotency key.
    pub(crate) fn duplicates(&self) -> u64 {
        self.ok_attempts - self.effects
    }
}

/// Checks the ledger against the histories: effects are exactly the completed
/// activities, each with the recorded output and a successful attempt of the recorded
/// number. With `orphans_allowed` (a torn WAL lost runs), effects of runs that no longer
/// exist are counted instead of reported.
pub(crate) fn check_ledger(
    ledger_path: &Path,
    runs: &[RunRecord],
    report: &mut Report,
    orphans_allowed: bool,
) -> LedgerFigures {
    let conn = ledger::open(ledger_path).expect("the ledger opens");
    let mut figures = LedgerFigures::default();
    let count = |sql: &str| -> u64 {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .expect("the ledger query runs")
    };
    figures.attempts = count("SELECT count(*) FROM attempts");
    figures.ok_attempts = count("SELECT count(*) FROM attempts WHERE ok = 1");
    figures.effects = count("SELECT count(*) FROM effects");
    figures.keys_executed_twice = count(
        "SELECT count(*) FROM (SELECT idem_key FROM attempts WHERE ok = 1 GROUP BY idem_key HAVING count(*) > 1)",
    );
    let effects: BTreeMap<String, u64> = {
        let mut stmt = conn
            .prepare("SELECT idem_key, output FROM effects")
            .expect("the ledger query prepares");
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .expect("the ledger query runs")
            .map(|r| r.map(|(k, v)| (k, ledger::from_sql(v))))
            .collect::<Result<_, _>>()
            .expect("the ledger rows read")
    };
    let ok_attempts: BTreeSet<(String, u32)> = {
        let mut stmt = conn
            .prepare("SELECT DISTINCT idem_key, attempt FROM attempts WHERE ok = 1")
            .expect("the ledger query prepares");
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
            .expect("the ledger query runs")
            .collect::<Result<_, _>>()
            .expect("the ledger rows read")
    };
    let run_ids: BTreeSet<String> = runs
        .iter()
        .map(|r| format!("{}/{}/", r.info.workflow_id, r.info.run_id))
        .collect();
    for (key, (attempt, output)) in &report.completed.clone() {
        match effects.get(key) {
            None => report.violations.push(format!(
                "activity {key} completed in history but has no effect in the ledger"
            )),
            Some(v) if v != output => report.violations.push(format!(
                "activity {key}: history recorded output {output}, the effect was {v}"
            )),
            Some(_) => {}
        }
        if !ok_attempts.contains(&(key.clone(), *attempt)) {
            report.violations.push(format!(
                "activity {key}: history says attempt {attempt} succeeded, the ledger has no such attempt"
            ));
        }
    }
    for key in effects.keys() {
        if report.completed.contains_key(key) {
            continue;
        }
        let prefix = key
            .rsplit_once('/')
            .map(|(p, _)| format!("{p}/"))
            .unwrap_or_default();
        let run_exists = run_ids.contains(&prefix);
        if !run_exists && orphans_allowed {
            figures.orphans += 1;
        } else if report.failed_activities.contains(key) {
            report.violations.push(format!(
                "activity {key} failed in history but has an effect"
            ));
        } else {
            report.violations.push(format!(
                "effect {key} belongs to no completed activity (run exists: {run_exists})"
            ));
        }
    }
    figures
}

/// How a client call ended, Jepsen style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The call returned success.
    Ok,
    /// The call returned an error that means nothing was written.
    Fail,
    /// Unknown: the call timed out, was killed, or its error leaves the outcome open.
    Unknown,
}

/// One signal a client sent.
#[derive(Clone, Debug)]
pub(crate) struct SignalOp {
    /// The vote id (unique per signal).
    pub(crate) vote: u64,
    /// The workflow it was sent to.
    pub(crate) workflow_id: String,
    /// How the call ended.
    pub(crate) outcome: Outcome,
    /// Torn-WAL cycles done when the call ended: a signal acknowledged before a later
    /// torn WAL may have been lost with it.
    pub(crate) epoch: u64,
}

/// One start a client made.
#[derive(Clone, Debug)]
pub(crate) struct StartOp {
    /// The workflow id.
    pub(crate) workflow_id: String,
    /// How the call ended (the last of its tries).
    pub(crate) outcome: Outcome,
    /// As for [`SignalOp::epoch`].
    pub(crate) epoch: u64,
}

/// Everything a client did.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientLog {
    /// Starts, one per workflow id (retries of an unknown start are folded in).
    pub(crate) starts: Vec<StartOp>,
    /// Signals, one per call.
    pub(crate) signals: Vec<SignalOp>,
}

/// Figures of the client-log check.
#[derive(Debug, Default)]
pub(crate) struct ClientFigures {
    /// Signals by outcome: ok, failed, unknown.
    pub(crate) signals: [usize; 3],
    /// Unknown signals found in history.
    pub(crate) unknown_delivered: usize,
    /// Acknowledged signals lost with a torn WAL (allowed then).
    pub(crate) ok_signals_lost_to_torn_wal: usize,
    /// Acknowledged starts lost with a torn WAL (allowed then).
    pub(crate) starts_lost_to_torn_wal: usize,
}

/// Checks the client log against the histories: ok signals exactly once (at most once if
/// a torn WAL came after their acknowledgement), failed ones never, unknown ones at most
/// once; every acknowledged start exists (same relaxation); no run or signal comes from
/// nowhere. `torn_epochs` is the number of torn-WAL cycles of the test.
pub(crate) fn check_client(
    log: &ClientLog,
    runs: &[RunRecord],
    report: &mut Report,
    torn_epochs: u64,
) -> ClientFigures {
    let mut figures = ClientFigures::default();
    let existing: BTreeSet<&str> = runs.iter().map(|r| r.info.workflow_id.as_str()).collect();
    let started: BTreeSet<&str> = log.starts.iter().map(|s| s.workflow_id.as_str()).collect();
    for id in &existing {
        if !started.contains(id) {
            report
                .violations
                .push(format!("run '{id}' exists but no client started it"));
        }
    }
    for s in &log.starts {
        if s.outcome == Outcome::Ok && !existing.contains(s.workflow_id.as_str()) {
            if s.epoch < torn_epochs {
                figures.starts_lost_to_torn_wal += 1;
            } else {
                report.violations.push(format!(
                    "the start of '{}' was acknowledged, but the run does not exist",
                    s.workflow_id
                ));
            }
        }
    }
    let mut sent: BTreeSet<u64> = BTreeSet::new();
    for s in &log.signals {
        sent.insert(s.vote);
        let seen = report.votes_seen.get(&s.vote).copied().unwrap_or(0);
        let idx = match s.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Unknown => 2,
        };
        figures.signals[idx] += 1;
        let bad = match s.outcome {
            Outcome::Ok if seen == 0 && s.epoch < torn_epochs => {
                figures.ok_signals_lost_to_torn_wal += 1;
                None
            }
            Outcome::Ok if seen != 1 => Some(format!("acknowledged, seen {seen} times")),
            Outcome::Fail if seen != 0 => Some(format!("refused, yet seen {seen} times")),
            Outcome::Unknown if seen > 1 => Some(format!("outcome unknown, seen {seen} times")),
            Outcome::Unknown => {
                figures.unknown_delivered += seen;
                None
            }
            _ => None,
        };
        if let Some(what) = bad {
            report.violations.push(format!(
                "signal vote {} to '{}': {what}",
                s.vote, s.workflow_id
            ));
        }
    }
    for (vote, n) in &report.votes_seen {
        if !sent.contains(vote) {
            report.violations.push(format!(
                "vote {vote} is in history {n} times but no client sent it"
            ));
        }
    }
    figures
}

/// The raw tables that must be empty for finished runs: no activity task, timer or inbox
/// entry outlives its run (a half-applied commit would leave one).
pub(crate) fn check_leftovers(db: &Path, report: &mut Report) {
    let conn = crate::support::read_only(db);
    for table in ["activity_tasks", "timers", "inbox"] {
        let n: i64 = conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM {table} t JOIN runs r ON r.run_key = t.run_key
                     WHERE r.status IN ('completed', 'failed')"
                ),
                [],
                |r| r.get(0),
            )
            .expect("the leftovers query runs");
        if n > 0 {
            report
                .violations
                .push(format!("{n} row(s) of {table} belong to finished runs"));
        }
    }
}
