//! How both stores keep a schedule in a row: the spec and the policies as plain columns
//! (readable with any SQL client), the input sealed by the codec like event bodies.

use crate::error::StoreError;
use crate::payload::{Payload, SharedCodec};
use crate::schedule::{CatchUpPolicy, NewSchedule, OverlapPolicy, ScheduleSpec};

/// The columns of a spec: kind (`cron` or `interval`), expression, interval, offset.
pub(crate) struct SpecColumns {
    pub(crate) kind: &'static str,
    pub(crate) cron: Option<String>,
    pub(crate) every_ms: Option<i64>,
    pub(crate) offset_ms: Option<i64>,
}

pub(crate) fn spec_columns(spec: &ScheduleSpec) -> SpecColumns {
    match spec {
        ScheduleSpec::Cron { expression } => SpecColumns {
            kind: "cron",
            cron: Some(expression.clone()),
            every_ms: None,
            offset_ms: None,
        },
        ScheduleSpec::Interval {
            every_ms,
            offset_ms,
        } => SpecColumns {
            kind: "interval",
            cron: None,
            every_ms: Some(i64::try_from(*every_ms).unwrap_or(i64::MAX)),
            offset_ms: Some(i64::try_from(*offset_ms).unwrap_or(i64::MAX)),
        },
    }
}

/// Reverses [`spec_columns`].
pub(crate) fn spec_from_columns(
    id: &str,
    kind: &str,
    cron: Option<String>,
    every_ms: Option<i64>,
    offset_ms: Option<i64>,
) -> Result<ScheduleSpec, StoreError> {
    let spec = match (kind, cron, every_ms) {
        ("cron", Some(expression), _) => ScheduleSpec::Cron { expression },
        ("interval", _, Some(every)) => ScheduleSpec::Interval {
            every_ms: u64::try_from(every).unwrap_or(0),
            offset_ms: u64::try_from(offset_ms.unwrap_or(0)).unwrap_or(0),
        },
        (kind, ..) => {
            return Err(StoreError::Corrupt(format!(
                "schedule '{id}' has a spec of unknown kind {kind:?}"
            )));
        }
    };
    Ok(spec)
}

pub(crate) fn catch_up_from_columns(
    id: &str,
    name: &str,
    max: Option<i64>,
) -> Result<CatchUpPolicy, StoreError> {
    let max = max.map(|m| u32::try_from(m).unwrap_or(u32::MAX));
    CatchUpPolicy::from_parts(name, max)
        .map_err(|e| StoreError::Corrupt(format!("schedule '{id}': {e}")))
}

pub(crate) fn overlap_from_column(id: &str, name: &str) -> Result<OverlapPolicy, StoreError> {
    name.parse()
        .map_err(|e| StoreError::Corrupt(format!("schedule '{id}': {e}")))
}

/// The checks every store makes before it writes a schedule.
pub(crate) fn check_new(schedule: &NewSchedule) -> Result<(), StoreError> {
    schedule
        .validate()
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    if schedule.workflow.is_empty() || schedule.workflow.contains('\0') {
        return Err(StoreError::Invalid(
            "the workflow name of a schedule must be non-empty text without NUL".into(),
        ));
    }
    Ok(())
}

/// The input as stored: sealed by the codec.
pub(crate) fn seal_input(codec: Option<&SharedCodec>, input: &Payload) -> Vec<u8> {
    super::sealing::seal(codec, input.0.clone())
}

/// Reverses [`seal_input`].
pub(crate) fn open_input(
    codec: Option<&SharedCodec>,
    id: &str,
    bytes: Vec<u8>,
) -> Result<Payload, StoreError> {
    match codec {
        Some(c) => c
            .decode(bytes)
            .map(Payload)
            .map_err(|e| StoreError::Corrupt(format!("input of schedule '{id}': codec: {e}"))),
        None => Ok(Payload(bytes)),
    }
}

/// The columns both stores select for a schedule, in this order.
pub(crate) const SCHEDULE_COLUMNS: &str = "schedule_id, workflow, input, spec_kind, cron, every_ms, offset_ms, catch_up, catch_up_max, overlap, execution_timeout_ms, paused, next_fire_at_ms, created_at_ms, updated_at_ms, runs_started, ticks_skipped";

/// A schedule's row as read, before its columns are checked.
pub(crate) struct RawSchedule {
    pub(crate) id: String,
    pub(crate) workflow: String,
    pub(crate) input: Vec<u8>,
    pub(crate) spec_kind: String,
    pub(crate) cron: Option<String>,
    pub(crate) every_ms: Option<i64>,
    pub(crate) offset_ms: Option<i64>,
    pub(crate) catch_up: String,
    pub(crate) catch_up_max: Option<i64>,
    pub(crate) overlap: String,
    pub(crate) execution_timeout_ms: Option<i64>,
    pub(crate) paused: bool,
    pub(crate) next_fire_at_ms: Option<i64>,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
    pub(crate) runs_started: i64,
    pub(crate) ticks_skipped: i64,
}

impl RawSchedule {
    /// The schedule, its input opened with the codec.
    pub(crate) fn into_info(
        self,
        codec: Option<&SharedCodec>,
    ) -> Result<crate::schedule::ScheduleInfo, StoreError> {
        let spec = spec_from_columns(
            &self.id,
            &self.spec_kind,
            self.cron,
            self.every_ms,
            self.offset_ms,
        )?;
        Ok(crate::schedule::ScheduleInfo {
            workflow: self.workflow,
            input: open_input(codec, &self.id, self.input)?,
            spec,
            catch_up: catch_up_from_columns(&self.id, &self.catch_up, self.catch_up_max)?,
            overlap: overlap_from_column(&self.id, &self.overlap)?,
            execution_timeout_ms: self.execution_timeout_ms,
            paused: self.paused,
            next_fire_at_ms: self.next_fire_at_ms,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            runs_started: u64::try_from(self.runs_started).unwrap_or(0),
            ticks_skipped: u64::try_from(self.ticks_skipped).unwrap_or(0),
            id: self.id,
        })
    }
}

/// A recorded tick from its columns (`schedule_id, tick_ms, fired_at_ms, outcome,
/// workflow_id`).
pub(crate) fn fire_from_columns(
    schedule_id: String,
    tick_ms: i64,
    fired_at_ms: i64,
    outcome: &str,
    workflow_id: String,
) -> Result<crate::schedule::ScheduleFire, StoreError> {
    let outcome = crate::schedule::FireOutcome::parse(outcome).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "a tick of schedule '{schedule_id}' has the unknown outcome {outcome:?}"
        ))
    })?;
    Ok(crate::schedule::ScheduleFire {
        schedule_id,
        tick_ms,
        fired_at_ms,
        outcome,
        workflow_id: crate::ids::WorkflowId(workflow_id),
    })
}

/// The most ticks [`Store::schedule_fires`](super::Store::schedule_fires) returns when
/// asked for 0.
pub(crate) fn fires_limit(limit: usize) -> i64 {
    if limit == 0 {
        1000
    } else {
        i64::try_from(limit).unwrap_or(i64::MAX)
    }
}
