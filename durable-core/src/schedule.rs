//! Schedules: start a workflow on a cron expression or an interval, durably.
//!
//! A schedule is a row of the store: an id, the workflow and its input, a
//! [`ScheduleSpec`] (a cron expression in UTC, or an interval with an offset), a
//! [`CatchUpPolicy`] for ticks missed while no worker ran, an [`OverlapPolicy`], a paused
//! flag and an optional execution timeout for the runs it starts. Every worker sweeps
//! the schedules that are due by the store's clock
//! ([`Store::fire_due_schedules`](crate::store::Store::fire_due_schedules)); in one
//! transaction the sweep starts the tick's run and moves the schedule's next fire time
//! on, so a tick starts at most one run however many workers race for it.
//!
//! The run of a tick has the workflow id [`tick_workflow_id`]: the schedule id, `@`,
//! and the tick time in RFC 3339 (`nightly@2026-11-25T02:00:00.000Z`), so a tick that
//! is retried finds the run it started instead of starting another.
//!
//! This module is pure: spec parsing, next-time arithmetic and the catch-up plan take
//! times as arguments, so they can be tested (and reasoned about) without a clock.

use crate::clock;
use crate::ids::WorkflowId;
use crate::payload::Payload;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::Duration;

/// The shortest interval a schedule may have.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The most ticks [`CatchUpPolicy::All`] may start at once.
pub const MAX_CATCH_UP: u32 = 1000;

/// How late a tick may be started and still count as on time, at most: half the time to
/// the next tick, and never more than this.
pub const ON_TIME_WINDOW: Duration = Duration::from_secs(10);

/// Ticks of a cron expression counted one by one after a long gap before the count
/// jumps ahead (the count of missed ticks is then a lower bound).
const SCAN_LIMIT: u64 = 10_000;

/// A schedule definition or spec the caller got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression {expression:?}: {reason}")]
    Cron {
        /// The expression given.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The interval is too short (or the offset is not shorter than the interval).
    #[error("invalid interval: {0}")]
    Interval(String),
    /// A catch-up or overlap policy name that is not known.
    #[error("unknown {what} policy {given:?}; use {known}")]
    Policy {
        /// Which policy.
        what: &'static str,
        /// The name given.
        given: String,
        /// The known names.
        known: &'static str,
    },
    /// The schedule id is empty, too long or holds a NUL byte.
    #[error("invalid schedule id {0:?}: it must be 1 to 200 bytes without NUL")]
    Id(String),
}

/// When a schedule fires: a cron expression in UTC, or a fixed interval.
///
/// ```
/// # use durable_core::schedule::ScheduleSpec;
/// # use std::time::Duration;
/// let nightly = ScheduleSpec::cron("0 2 * * *")?;              // 02:00 UTC every day
/// let every_5s = ScheduleSpec::every(Duration::from_secs(5))?;
/// assert_eq!(every_5s.next_after(1_000), Some(5_000));
/// # Ok::<(), durable_core::schedule::ScheduleError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ScheduleSpec {
    /// A cron expression, evaluated in UTC: five fields (minute, hour, day of month,
    /// month, day of week: POSIX/Vixie meaning, Sunday is 0 or 7), or six with seconds
    /// first, or a nickname such as `@daily`. Parsed and evaluated by the `croner` crate.
    Cron {
        /// The expression as given.
        expression: String,
    },
    /// Every `every_ms` milliseconds, at the times `offset_ms + k * every_ms` since the
    /// Unix epoch: `every 1h offset 15m` fires at quarter past each hour (UTC).
    Interval {
        /// The interval in milliseconds.
        every_ms: u64,
        /// The offset from the epoch-aligned ticks, shorter than the interval.
        #[serde(default)]
        offset_ms: u64,
    },
}

impl ScheduleSpec {
    /// A cron spec, checked.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Cron`] naming the expression and what is wrong with it.
    pub fn cron(expression: &str) -> Result<Self, ScheduleError> {
        let spec = ScheduleSpec::Cron {
            expression: expression.trim().to_owned(),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// An interval spec aligned to the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Interval`] for an interval shorter than [`MIN_INTERVAL`].
    pub fn every(interval: Duration) -> Result<Self, ScheduleError> {
        Self::every_with_offset(interval, Duration::ZERO)
    }

    /// An interval spec shifted by `offset` from the epoch-aligned ticks.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Interval`] for an interval shorter than [`MIN_INTERVAL`] or an
    /// offset not shorter than the interval.
    pub fn every_with_offset(interval: Duration, offset: Duration) -> Result<Self, ScheduleError> {
        let spec = ScheduleSpec::Interval {
            every_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            offset_ms: u64::try_from(offset.as_millis()).unwrap_or(u64::MAX),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the spec (a stored or deserialized one included).
    ///
    /// # Errors
    ///
    /// As [`ScheduleSpec::cron`] and [`ScheduleSpec::every_with_offset`].
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match self {
            ScheduleSpec::Cron { expression } => parse_cron(expression).map(drop),
            ScheduleSpec::Interval {
                every_ms,
                offset_ms,
            } => {
                let min = u64::try_from(MIN_INTERVAL.as_millis()).unwrap_or(100);
                if *every_ms < min {
                    return Err(ScheduleError::Interval(format!(
                        "every {} is shorter than the shortest interval, {}",
                        show_ms(*every_ms),
                        show_ms(min)
                    )));
                }
                if *every_ms > i64::MAX as u64 / 4 {
                    return Err(ScheduleError::Interval(format!(
                        "every {} is too long",
                        show_ms(*every_ms)
                    )));
                }
                if offset_ms >= every_ms {
                    return Err(ScheduleError::Interval(format!(
                        "the offset {} must be shorter than the interval {}",
                        show_ms(*offset_ms),
                        show_ms(*every_ms)
                    )));
                }
                Ok(())
            }
        }
    }

    /// The first tick strictly after `after_ms` (milliseconds since the epoch, UTC);
    /// `None` when there is none (a cron expression that matches no future time, or an
    /// invalid stored spec).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            ScheduleSpec::Interval {
                every_ms,
                offset_ms,
            } => {
                let every = i64::try_from(*every_ms).ok().filter(|e| *e > 0)?;
                let offset = i64::try_from(*offset_ms).ok()?;
                // The largest k with offset + k * every <= after_ms, plus one.
                let k = (after_ms - offset).div_euclid(every) + 1;
                k.checked_mul(every)?.checked_add(offset)
            }
            ScheduleSpec::Cron { expression } => cron_next(&parse_cron(expression).ok()?, after_ms),
        }
    }

    /// The first `n` ticks after `after_ms`, e.g. to show when a schedule will fire.
    ///
    /// ```
    /// # use durable_core::schedule::ScheduleSpec;
    /// let hourly = ScheduleSpec::cron("30 * * * *")?;
    /// assert_eq!(hourly.upcoming(0, 2), vec![1_800_000, 5_400_000]);
    /// # Ok::<(), durable_core::schedule::ScheduleError>(())
    /// ```
    pub fn upcoming(&self, after_ms: i64, n: usize) -> Vec<i64> {
        let mut ticks = Vec::with_capacity(n);
        let mut at = after_ms;
        while ticks.len() < n {
            match self.next_after(at) {
                Some(t) => {
                    ticks.push(t);
                    at = t;
                }
                None => break,
            }
        }
        ticks
    }

    /// The spec as the CLI shows it: `cron "0 2 * * *"` or `every 5s` (`offset 1s`).
    pub fn describe(&self) -> String {
        match self {
            ScheduleSpec::Cron { expression } => format!("cron {expression:?} (UTC)"),
            ScheduleSpec::Interval {
                every_ms,
                offset_ms: 0,
            } => format!("every {}", show_ms(*every_ms)),
            ScheduleSpec::Interval {
                every_ms,
                offset_ms,
            } => format!(
                "every {} offset {}",
                show_ms(*every_ms),
                show_ms(*offset_ms)
            ),
        }
    }
}

fn show_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// The first tick of `cron` strictly after `after_ms`.
fn cron_next(cron: &croner::Cron, after_ms: i64) -> Option<i64> {
    let mut from = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(after_ms)?;
    // croner works in whole seconds: step until strictly after.
    for _ in 0..4 {
        let next = cron.find_next_occurrence(&from, false).ok()?;
        let ms = next.timestamp_millis();
        if ms > after_ms {
            return Some(ms);
        }
        from = next;
    }
    None
}

/// The latest tick of `cron` at or before `ms`.
fn cron_at_or_before(cron: &croner::Cron, ms: i64) -> Option<i64> {
    let mut from = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)?;
    for _ in 0..4 {
        let prev = cron.find_previous_occurrence(&from, true).ok()?;
        let at = prev.timestamp_millis();
        if at <= ms {
            return Some(at);
        }
        from = prev - chrono::TimeDelta::seconds(1);
    }
    None
}

fn parse_cron(expression: &str) -> Result<croner::Cron, ScheduleError> {
    use croner::parser::{CronParser, Seconds, Year};
    let err = |reason: String| ScheduleError::Cron {
        expression: expression.to_owned(),
        reason,
    };
    let fields = expression.split_whitespace().count();
    // `@daily` and the like are one field; anything else has five or six.
    if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(err(format!(
            "it has {fields} fields; use 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| err(e.to_string().replace('\n', " ")))
}

/// What to do with ticks that came due while no worker ran (or while every worker was
/// too busy to start them on time).
///
/// A tick is *on time* while the store's clock is within half the time to the next
/// tick of it, and never more than [`ON_TIME_WINDOW`] past it; later it is *missed*.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "lowercase")]
pub enum CatchUpPolicy {
    /// Start nothing for missed ticks: wait for the next one.
    Skip,
    /// Start one run, for the latest tick that came due, however many were missed (the
    /// default).
    #[default]
    One,
    /// Start a run for each tick that came due, oldest first, but at most `max` (the
    /// latest ones) at once. With [`OverlapPolicy::Skip`] only the first of them starts,
    /// since it still runs when the next would: pair `All` with [`OverlapPolicy::Allow`].
    All {
        /// The most runs one catch-up starts (1 to [`MAX_CATCH_UP`]).
        max: u32,
    },
}

impl CatchUpPolicy {
    /// The stored and shown name: `skip`, `one` or `all`.
    pub fn name(self) -> &'static str {
        match self {
            CatchUpPolicy::Skip => "skip",
            CatchUpPolicy::One => "one",
            CatchUpPolicy::All { .. } => "all",
        }
    }

    /// The bound of `All`, `None` for the others.
    pub fn max(self) -> Option<u32> {
        match self {
            CatchUpPolicy::All { max } => Some(max),
            _ => None,
        }
    }

    /// The policy of a name and, for `all`, its bound (default 100).
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Policy`] for another name, or a bound outside 1 to
    /// [`MAX_CATCH_UP`].
    pub fn from_parts(name: &str, max: Option<u32>) -> Result<Self, ScheduleError> {
        match name {
            "skip" => Ok(CatchUpPolicy::Skip),
            "one" => Ok(CatchUpPolicy::One),
            "all" => {
                let max = max.unwrap_or(100);
                if max == 0 || max > MAX_CATCH_UP {
                    return Err(ScheduleError::Policy {
                        what: "catch-up",
                        given: format!("all (at most {max})"),
                        known: "a bound from 1 to 1000",
                    });
                }
                Ok(CatchUpPolicy::All { max })
            }
            _ => Err(ScheduleError::Policy {
                what: "catch-up",
                given: name.to_owned(),
                known: "skip, one or all",
            }),
        }
    }
}

/// What to do when a tick comes while the run of the previous one is still running (or
/// suspended).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverlapPolicy {
    /// Start nothing for the tick; it is recorded as skipped (the default).
    #[default]
    Skip,
    /// Start the tick's run anyway.
    Allow,
}

impl OverlapPolicy {
    /// The stored and shown name: `skip` or `allow`.
    pub fn name(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::Allow => "allow",
        }
    }
}

impl FromStr for OverlapPolicy {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(OverlapPolicy::Skip),
            "allow" => Ok(OverlapPolicy::Allow),
            _ => Err(ScheduleError::Policy {
                what: "overlap",
                given: s.to_owned(),
                known: "skip or allow",
            }),
        }
    }
}

/// A schedule to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSchedule {
    /// The schedule id (unique in its namespace).
    pub id: String,
    /// The registered workflow name of the runs it starts.
    pub workflow: String,
    /// The encoded input of every run.
    pub input: Payload,
    /// When it fires.
    pub spec: ScheduleSpec,
    /// What to do with missed ticks.
    pub catch_up: CatchUpPolicy,
    /// What to do when the previous run still runs.
    pub overlap: OverlapPolicy,
    /// The execution timeout of each run it starts.
    pub execution_timeout: Option<Duration>,
    /// Create it paused.
    pub paused: bool,
}

impl NewSchedule {
    /// Checks the id, the spec, the policy bounds and the timeout.
    ///
    /// # Errors
    ///
    /// The [`ScheduleError`] of the first problem found.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        check_id(&self.id)?;
        self.spec.validate()?;
        if let CatchUpPolicy::All { max } = self.catch_up {
            CatchUpPolicy::from_parts("all", Some(max))?;
        }
        if self.execution_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ScheduleError::Interval(
                "the execution timeout must be longer than zero".into(),
            ));
        }
        Ok(())
    }

    /// The execution timeout in milliseconds (at least 1).
    pub fn execution_timeout_ms(&self) -> Option<i64> {
        self.execution_timeout.map(|t| clock::duration_ms(t).max(1))
    }
}

/// Checks a schedule id.
///
/// # Errors
///
/// [`ScheduleError::Id`] for an empty id, one over 200 bytes or one holding a NUL.
pub fn check_id(id: &str) -> Result<(), ScheduleError> {
    if id.is_empty() || id.len() > 200 || id.contains('\0') {
        return Err(ScheduleError::Id(id.chars().take(60).collect()));
    }
    Ok(())
}

/// A stored schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleInfo {
    /// The schedule id.
    pub id: String,
    /// The workflow of the runs it starts.
    pub workflow: String,
    /// Their input.
    pub input: Payload,
    /// When it fires.
    pub spec: ScheduleSpec,
    /// What to do with missed ticks.
    pub catch_up: CatchUpPolicy,
    /// What to do when the previous run still runs.
    pub overlap: OverlapPolicy,
    /// The execution timeout of each run, in milliseconds.
    pub execution_timeout_ms: Option<i64>,
    /// Paused schedules start nothing (except [`Store::trigger_schedule`](crate::store::Store::trigger_schedule)).
    pub paused: bool,
    /// The next tick (ms since the epoch); `None` when the spec has no future tick.
    pub next_fire_at_ms: Option<i64>,
    /// When it was created (ms since the epoch, store clock).
    pub created_at_ms: i64,
    /// When it was last changed or fired.
    pub updated_at_ms: i64,
    /// Runs it started (ticks and triggers).
    pub runs_started: u64,
    /// Ticks that started nothing: missed ones dropped by the catch-up policy and ones
    /// skipped by the overlap policy.
    pub ticks_skipped: u64,
}

/// What happened to one tick of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FireOutcome {
    /// The tick started its run.
    Started,
    /// A trigger ("run now") started the run.
    Triggered,
    /// The tick started nothing: the previous run was still running ([`OverlapPolicy::Skip`]).
    SkippedOverlap,
}

impl FireOutcome {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            FireOutcome::Started => "started",
            FireOutcome::Triggered => "triggered",
            FireOutcome::SkippedOverlap => "skipped_overlap",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "started" => FireOutcome::Started,
            "triggered" => FireOutcome::Triggered,
            "skipped_overlap" => FireOutcome::SkippedOverlap,
            _ => return None,
        })
    }
}

/// A tick of a schedule as recorded by the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFire {
    /// The schedule.
    pub schedule_id: String,
    /// The tick time (ms since the epoch); for a trigger, the store's clock then.
    pub tick_ms: i64,
    /// When the store handled it.
    pub fired_at_ms: i64,
    /// What happened.
    pub outcome: FireOutcome,
    /// The run's workflow id ([`tick_workflow_id`]); for a skipped tick, the run it
    /// would have had.
    pub workflow_id: WorkflowId,
}

/// The workflow id of the run a schedule starts for a tick: `{schedule}@{tick in RFC
/// 3339, UTC, milliseconds}`.
///
/// ```
/// # use durable_core::schedule::tick_workflow_id;
/// assert_eq!(tick_workflow_id("nightly", 1_795_572_000_000).as_str(), "nightly@2026-11-25T02:00:00.000Z");
/// ```
pub fn tick_workflow_id(schedule_id: &str, tick_ms: i64) -> WorkflowId {
    WorkflowId(format!("{schedule_id}@{}", clock::format_ms(tick_ms)))
}

/// What one sweep does with a due schedule: the ticks to start, how many missed ones
/// it drops, and the schedule's next fire time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirePlan {
    /// The ticks to start runs for, oldest first.
    pub ticks: Vec<i64>,
    /// Due ticks that start nothing under the catch-up policy.
    pub missed: u64,
    /// The first tick after now; `None` when the spec has no future tick.
    pub next_fire_at_ms: Option<i64>,
}

/// Plans the firing of a schedule whose next tick was `next_fire_at_ms`, with the store's
/// clock at `now_ms`. Every tick from `next_fire_at_ms` up to `now_ms` is due; the
/// latest of them is on time if `now_ms` is within its window (see [`CatchUpPolicy`]),
/// the others are missed.
pub fn plan_fires(
    spec: &ScheduleSpec,
    catch_up: CatchUpPolicy,
    next_fire_at_ms: i64,
    now_ms: i64,
) -> FirePlan {
    if next_fire_at_ms > now_ms {
        return FirePlan {
            ticks: Vec::new(),
            missed: 0,
            next_fire_at_ms: Some(next_fire_at_ms),
        };
    }
    let keep = usize::try_from(catch_up.max().unwrap_or(1).max(1)).unwrap_or(1);
    let (count, latest) = due_ticks(spec, next_fire_at_ms, now_ms, keep);
    let next = spec.next_after(now_ms);
    let Some(&last) = latest.last() else {
        return FirePlan {
            ticks: Vec::new(),
            missed: 0,
            next_fire_at_ms: next,
        };
    };
    let ticks: Vec<i64> = match catch_up {
        CatchUpPolicy::Skip => {
            if is_on_time(last, next, now_ms) {
                vec![last]
            } else {
                Vec::new()
            }
        }
        CatchUpPolicy::One => vec![last],
        CatchUpPolicy::All { .. } => latest,
    };
    FirePlan {
        missed: count.saturating_sub(ticks.len() as u64),
        ticks,
        next_fire_at_ms: next,
    }
}

/// Whether `tick`, the latest due one, is still on time at `now_ms` (`next` is the tick
/// after it).
fn is_on_time(tick: i64, next: Option<i64>, now_ms: i64) -> bool {
    let cap = clock::duration_ms(ON_TIME_WINDOW);
    let window = next.map_or(cap, |n| ((n - tick) / 2).clamp(1, cap));
    now_ms - tick <= window
}

/// The number of ticks in `[from, to]` and the latest `keep` of them, oldest first.
fn due_ticks(spec: &ScheduleSpec, from: i64, to: i64, keep: usize) -> (u64, Vec<i64>) {
    match spec {
        ScheduleSpec::Interval { every_ms, .. } => {
            let every = i64::try_from(*every_ms).unwrap_or(i64::MAX).max(1);
            // `from` is a tick of the spec (the stored next fire time).
            let count = (to - from) / every + 1;
            let last = from + (count - 1) * every;
            let kept = i64::try_from(keep).unwrap_or(i64::MAX).min(count);
            let ticks = (0..kept).rev().map(|i| last - i * every).collect();
            (u64::try_from(count).unwrap_or(0), ticks)
        }
        ScheduleSpec::Cron { expression } => {
            let Ok(cron) = parse_cron(expression) else {
                return (0, Vec::new());
            };
            let mut ring = std::collections::VecDeque::with_capacity(keep);
            let mut count: u64 = 0;
            let mut t = Some(from);
            while let Some(tick) = t.filter(|t| *t <= to) {
                if count == SCAN_LIMIT {
                    // A dense expression after a long gap: take the latest ticks walking
                    // back from `to`; the count becomes a lower bound.
                    let mut latest = Vec::with_capacity(keep);
                    let mut back = cron_at_or_before(&cron, to);
                    while let Some(b) = back.filter(|b| *b >= tick) {
                        latest.push(b);
                        if latest.len() == keep {
                            break;
                        }
                        back = cron_at_or_before(&cron, b - 1);
                    }
                    latest.reverse();
                    return (count + latest.len() as u64, latest);
                }
                count += 1;
                if ring.len() == keep {
                    ring.pop_front();
                }
                ring.push_back(tick);
                t = cron_next(&cron, tick);
            }
            (count, ring.into_iter().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    /// 2026-11-25T00:00:00Z.
    const DAY0: i64 = 1_795_564_800_000;

    fn every(ms: u64) -> ScheduleSpec {
        ScheduleSpec::every(Duration::from_millis(ms)).expect("a valid interval")
    }

    #[test]
    fn interval_ticks_are_aligned_to_the_epoch_plus_offset() {
        let s = every(1000);
        assert_eq!(s.next_after(0), Some(1000));
        assert_eq!(s.next_after(999), Some(1000));
        assert_eq!(s.next_after(1000), Some(2000));
        assert_eq!(s.next_after(-1), Some(0));
        let o =
            ScheduleSpec::every_with_offset(Duration::from_secs(3600), Duration::from_secs(900))
                .expect("valid");
        assert_eq!(o.next_after(DAY0), Some(DAY0 + 15 * MIN));
        assert_eq!(o.next_after(DAY0 + 15 * MIN), Some(DAY0 + 75 * MIN));
        assert_eq!(o.describe(), "every 1h offset 15m");
    }

    #[test]
    fn bad_intervals_are_refused() {
        assert!(matches!(
            ScheduleSpec::every(Duration::from_millis(10)),
            Err(ScheduleError::Interval(_))
        ));
        let e = ScheduleSpec::every_with_offset(Duration::from_secs(1), Duration::from_secs(1))
            .expect_err("offset == interval");
        assert_eq!(
            e.to_string(),
            "invalid interval: the offset 1s must be shorter than the interval 1s"
        );
    }

    #[test]
    fn cron_expressions_are_evaluated_in_utc() {
        let nightly = ScheduleSpec::cron("0 2 * * *").expect("valid");
        assert_eq!(nightly.next_after(DAY0), Some(DAY0 + 120 * MIN));
        assert_eq!(
            nightly.next_after(DAY0 + 120 * MIN),
            Some(DAY0 + 1440 * MIN + 120 * MIN)
        );
        // Six fields: seconds first.
        let s = ScheduleSpec::cron("*/10 * * * * *").expect("valid");
        assert_eq!(s.next_after(DAY0), Some(DAY0 + 10_000));
        assert_eq!(s.next_after(DAY0 + 10_500), Some(DAY0 + 20_000));
        // 2026-11-25 is a Wednesday: the next Sunday (0) at 00:00 is the 29th.
        let sunday = ScheduleSpec::cron("0 0 * * 0").expect("valid");
        assert_eq!(sunday.next_after(DAY0), Some(DAY0 + 4 * 1440 * MIN));
    }

    #[test]
    fn bad_cron_expressions_are_one_clear_error() {
        for bad in ["", "* * *", "61 * * * *", "* * * * * * * *", "every day"] {
            let e = ScheduleSpec::cron(bad).expect_err(bad);
            let text = e.to_string();
            assert!(text.starts_with("invalid cron expression"), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn nothing_is_planned_before_the_next_tick() {
        let p = plan_fires(&every(1000), CatchUpPolicy::One, 5000, 4999);
        assert_eq!(p.ticks, Vec::<i64>::new());
        assert_eq!(p.next_fire_at_ms, Some(5000));
    }

    #[test]
    fn an_on_time_tick_fires_under_every_policy() {
        for policy in [
            CatchUpPolicy::Skip,
            CatchUpPolicy::One,
            CatchUpPolicy::All { max: 10 },
        ] {
            let p = plan_fires(&every(1000), policy, 5000, 5040);
            assert_eq!(p.ticks, vec![5000], "{policy:?}");
            assert_eq!(p.missed, 0);
            assert_eq!(p.next_fire_at_ms, Some(6000));
        }
    }

    /// Ticks at 5, 6, 7, 8, 9 s are due at 9.7 s: the latest is 700 ms late, past half
    /// the interval, so every one of them is missed.
    #[test]
    fn missed_ticks_follow_the_catch_up_policy() {
        let s = every(1000);
        let skip = plan_fires(&s, CatchUpPolicy::Skip, 5000, 9700);
        assert_eq!((skip.ticks, skip.missed), (vec![], 5));
        let one = plan_fires(&s, CatchUpPolicy::One, 5000, 9700);
        assert_eq!((one.ticks, one.missed), (vec![9000], 4));
        let all = plan_fires(&s, CatchUpPolicy::All { max: 100 }, 5000, 9700);
        assert_eq!(
            (all.ticks, all.missed),
            (vec![5000, 6000, 7000, 8000, 9000], 0)
        );
        let bounded = plan_fires(&s, CatchUpPolicy::All { max: 2 }, 5000, 9700);
        assert_eq!((bounded.ticks, bounded.missed), (vec![8000, 9000], 3));
        for p in [skip.next_fire_at_ms, one.next_fire_at_ms] {
            assert_eq!(p, Some(10_000));
        }
        // At 9.3 s the 9 s tick is on time: skip starts it and drops the others.
        let skip = plan_fires(&s, CatchUpPolicy::Skip, 5000, 9300);
        assert_eq!((skip.ticks, skip.missed), (vec![9000], 4));
    }

    #[test]
    fn the_on_time_window_is_capped() {
        let hourly = every(3_600_000);
        // 11 s late: past the 10 s cap although far from half an hour.
        let p = plan_fires(&hourly, CatchUpPolicy::Skip, 3_600_000, 3_611_000);
        assert_eq!((p.ticks, p.missed), (vec![], 1));
        let p = plan_fires(&hourly, CatchUpPolicy::Skip, 3_600_000, 3_609_000);
        assert_eq!(p.ticks, vec![3_600_000]);
    }

    #[test]
    fn cron_catch_up_counts_the_ticks_of_the_gap() {
        // Every minute; workers down from 00:00 to 02:30.
        let s = ScheduleSpec::cron("* * * * *").expect("valid");
        let now = DAY0 + 150 * MIN + 30_000;
        let p = plan_fires(&s, CatchUpPolicy::All { max: 3 }, DAY0, now);
        assert_eq!(
            p.ticks,
            vec![DAY0 + 148 * MIN, DAY0 + 149 * MIN, DAY0 + 150 * MIN]
        );
        assert_eq!(p.missed, 151 - 3);
        assert_eq!(p.next_fire_at_ms, Some(DAY0 + 151 * MIN));
    }

    #[test]
    fn a_long_gap_of_a_dense_cron_expression_stays_bounded() {
        // Every second for 30 days: 2.6 million ticks, counted up to the scan limit.
        let s = ScheduleSpec::cron("* * * * * *").expect("valid");
        let now = DAY0 + 30 * 1440 * MIN;
        let p = plan_fires(&s, CatchUpPolicy::One, DAY0, now);
        assert_eq!(p.ticks, vec![now]);
        assert!(p.missed >= SCAN_LIMIT, "{}", p.missed);
        let p = plan_fires(&s, CatchUpPolicy::All { max: 3 }, DAY0, now);
        assert_eq!(p.ticks, vec![now - 2000, now - 1000, now]);
    }

    #[test]
    fn tick_workflow_ids_are_deterministic_and_sortable() {
        let a = tick_workflow_id("report", DAY0);
        assert_eq!(a.as_str(), "report@2026-11-25T00:00:00.000Z");
        assert_eq!(a, tick_workflow_id("report", DAY0));
        assert!(tick_workflow_id("report", DAY0 + 1000).as_str() > a.as_str());
    }

    #[test]
    fn policies_parse_from_their_names() {
        assert_eq!(
            CatchUpPolicy::from_parts("skip", None),
            Ok(CatchUpPolicy::Skip)
        );
        assert_eq!(
            CatchUpPolicy::from_parts("all", None),
            Ok(CatchUpPolicy::All { max: 100 })
        );
        assert!(CatchUpPolicy::from_parts("all", Some(0)).is_err());
        assert!(CatchUpPolicy::from_parts("some", None).is_err());
        assert_eq!("allow".parse(), Ok(OverlapPolicy::Allow));
        assert!("maybe".parse::<OverlapPolicy>().is_err());
    }

    #[test]
    fn schedule_ids_are_checked() {
        assert!(check_id("nightly-report").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a\0b").is_err());
        assert!(check_id(&"x".repeat(201)).is_err());
    }
}
