//! Schedules: their rows, and the sweep that starts the runs of due ticks.
//!
//! Every write runs on the writer thread inside the batch's `BEGIN IMMEDIATE`
//! transaction, so two processes sweeping the same file take turns; each re-reads the
//! schedule inside its transaction and fires only what is still due, so a tick starts
//! one run. The store's clock is the host clock ([`clock::host_now_ms`]).

use super::{Shared, SqliteStore, sql_err};
use crate::clock;
use crate::error::StoreError;
use crate::event::EventKind;
use crate::ids::{RunId, WorkflowId};
use crate::schedule::{
    FireOutcome, NewSchedule, OverlapPolicy, ScheduleFire, ScheduleInfo, plan_fires,
    tick_workflow_id,
};
use crate::store::schedule_rows::{
    self as rows, RawSchedule, SCHEDULE_COLUMNS, fires_limit, spec_columns,
};
use rusqlite::{Connection, OptionalExtension, params};

fn raw_schedule(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawSchedule> {
    Ok(RawSchedule {
        id: r.get(0)?,
        workflow: r.get(1)?,
        input: r.get(2)?,
        spec_kind: r.get(3)?,
        cron: r.get(4)?,
        every_ms: r.get(5)?,
        offset_ms: r.get(6)?,
        catch_up: r.get(7)?,
        catch_up_max: r.get(8)?,
        overlap: r.get(9)?,
        execution_timeout_ms: r.get(10)?,
        paused: r.get::<_, i64>(11)? != 0,
        next_fire_at_ms: r.get(12)?,
        created_at_ms: r.get(13)?,
        updated_at_ms: r.get(14)?,
        runs_started: r.get(15)?,
        ticks_skipped: r.get(16)?,
    })
}

impl Shared {
    /// The schedule `id` of this namespace, if any.
    fn read_schedule(
        &self,
        conn: &Connection,
        id: &str,
    ) -> Result<Option<ScheduleInfo>, StoreError> {
        let raw = conn
            .prepare_cached(&format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE namespace = ?1 AND schedule_id = ?2"
            ))
            .map_err(sql_err)?
            .query_row(params![self.namespace, id], raw_schedule)
            .optional()
            .map_err(sql_err)?;
        raw.map(|r| r.into_info(self.codec.as_ref())).transpose()
    }

    fn must_read_schedule(&self, conn: &Connection, id: &str) -> Result<ScheduleInfo, StoreError> {
        self.read_schedule(conn, id)?
            .ok_or_else(|| StoreError::ScheduleNotFound(id.to_owned()))
    }

    /// Starts the run of a tick unless a run of its workflow id exists; true when it
    /// started one.
    fn start_scheduled_run(
        &self,
        conn: &Connection,
        workflow_id: &WorkflowId,
        schedule: &ScheduleInfo,
        now: i64,
    ) -> Result<bool, StoreError> {
        if self.latest_run(conn, workflow_id.as_str())?.is_some() {
            return Ok(false);
        }
        let run_id = RunId::generate();
        let deadline = schedule.execution_timeout_ms.map(|t| now.saturating_add(t));
        conn.prepare_cached(
            "INSERT INTO runs (namespace, workflow_id, run_id, workflow, status, created_at_ms, updated_at_ms,
             last_event_id, ready, execution_timeout_ms, deadline_ms)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?5, 1, 1, ?6, ?7)",
        )
        .map_err(sql_err)?
        .execute(params![
            self.namespace,
            workflow_id.as_str(),
            run_id.as_str(),
            schedule.workflow,
            now,
            schedule.execution_timeout_ms,
            deadline
        ])
        .map_err(sql_err)?;
        let key = conn.last_insert_rowid();
        self.append(
            conn,
            key,
            0,
            &[(
                now,
                EventKind::RunStarted {
                    workflow: schedule.workflow.clone(),
                    input: schedule.input.clone(),
                    seed: rand::random(),
                },
            )],
        )?;
        Ok(true)
    }

    /// Records what a tick did; false when the tick was recorded before.
    fn record_fire(
        &self,
        conn: &Connection,
        id: &str,
        tick: i64,
        now: i64,
        outcome: FireOutcome,
        workflow_id: &WorkflowId,
    ) -> Result<bool, StoreError> {
        let n = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO schedule_fires (namespace, schedule_id, tick_ms, fired_at_ms, outcome, workflow_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql_err)?
            .execute(params![
                self.namespace,
                id,
                tick,
                now,
                outcome.as_str(),
                workflow_id.as_str()
            ])
            .map_err(sql_err)?;
        Ok(n == 1)
    }

    /// Whether the latest run the schedule started is still running or suspended.
    fn previous_run_open(&self, conn: &Connection, id: &str) -> Result<bool, StoreError> {
        let last: Option<String> = conn
            .prepare_cached(
                "SELECT workflow_id FROM schedule_fires WHERE namespace = ?1 AND schedule_id = ?2
                 AND outcome IN ('started', 'triggered') ORDER BY fired_at_ms DESC, tick_ms DESC LIMIT 1",
            )
            .map_err(sql_err)?
            .query_row(params![self.namespace, id], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        let Some(workflow_id) = last else {
            return Ok(false);
        };
        Ok(self
            .latest_run(conn, &workflow_id)?
            .is_some_and(|(_, status)| status == "running" || status == "suspended"))
    }

    /// Fires one schedule if it is still due and not paused; returns how many runs it
    /// started, or `None` when it was not due any more.
    fn fire_schedule(
        &self,
        conn: &Connection,
        id: &str,
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        let Some(schedule) = self.read_schedule(conn, id)? else {
            return Ok(None);
        };
        let Some(next) = schedule.next_fire_at_ms.filter(|n| *n <= now) else {
            return Ok(None);
        };
        if schedule.paused {
            return Ok(None);
        }
        let plan = plan_fires(&schedule.spec, schedule.catch_up, next, now);
        let mut started = 0u64;
        let mut skipped = plan.missed;
        let mut open =
            schedule.overlap == OverlapPolicy::Skip && self.previous_run_open(conn, id)?;
        for tick in &plan.ticks {
            let workflow_id = tick_workflow_id(id, *tick);
            if open && schedule.overlap == OverlapPolicy::Skip {
                if self.record_fire(
                    conn,
                    id,
                    *tick,
                    now,
                    FireOutcome::SkippedOverlap,
                    &workflow_id,
                )? {
                    skipped += 1;
                }
                continue;
            }
            self.start_scheduled_run(conn, &workflow_id, &schedule, now)?;
            if self.record_fire(conn, id, *tick, now, FireOutcome::Started, &workflow_id)? {
                started += 1;
            }
            open = true;
        }
        conn.prepare_cached(
            "UPDATE schedules SET next_fire_at_ms = ?3, updated_at_ms = ?4,
             runs_started = runs_started + ?5, ticks_skipped = ticks_skipped + ?6
             WHERE namespace = ?1 AND schedule_id = ?2",
        )
        .map_err(sql_err)?
        .execute(params![
            self.namespace,
            id,
            plan.next_fire_at_ms,
            now,
            i64::try_from(started).unwrap_or(i64::MAX),
            i64::try_from(skipped).unwrap_or(i64::MAX)
        ])
        .map_err(sql_err)?;
        tracing::info!(schedule = id, started, skipped, next = ?plan.next_fire_at_ms, "schedule fired");
        Ok(Some(started))
    }
}

impl SqliteStore {
    /// [`Store::create_schedule`](crate::store::Store::create_schedule).
    pub(super) async fn create_schedule_row(
        &self,
        schedule: NewSchedule,
        replace: bool,
    ) -> Result<ScheduleInfo, StoreError> {
        rows::check_new(&schedule)?;
        let shared = self.shared.clone();
        let input = rows::seal_input(shared.codec.as_ref(), &schedule.input);
        self.writer
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let next = schedule.spec.next_after(now);
                let spec = spec_columns(&schedule.spec);
                let exists = shared.read_schedule(conn, &schedule.id)?.is_some();
                if exists && !replace {
                    return Err(StoreError::ScheduleExists(schedule.id.clone()));
                }
                let sql = if exists {
                    "UPDATE schedules SET workflow = ?3, input = ?4, spec_kind = ?5, cron = ?6, every_ms = ?7,
                     offset_ms = ?8, catch_up = ?9, catch_up_max = ?10, overlap = ?11, execution_timeout_ms = ?12,
                     paused = ?13, next_fire_at_ms = ?14, updated_at_ms = ?15
                     WHERE namespace = ?1 AND schedule_id = ?2"
                } else {
                    "INSERT INTO schedules (namespace, schedule_id, workflow, input, spec_kind, cron, every_ms,
                     offset_ms, catch_up, catch_up_max, overlap, execution_timeout_ms, paused, next_fire_at_ms,
                     created_at_ms, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15)"
                };
                conn.prepare_cached(sql)
                    .map_err(sql_err)?
                    .execute(params![
                        shared.namespace,
                        schedule.id,
                        schedule.workflow,
                        input,
                        spec.kind,
                        spec.cron,
                        spec.every_ms,
                        spec.offset_ms,
                        schedule.catch_up.name(),
                        schedule.catch_up.max(),
                        schedule.overlap.name(),
                        schedule.execution_timeout_ms(),
                        i64::from(schedule.paused),
                        next,
                        now
                    ])
                    .map_err(sql_err)?;
                shared.must_read_schedule(conn, &schedule.id)
            })
            .await
    }

    /// [`Store::get_schedule`](crate::store::Store::get_schedule).
    pub(super) async fn read_schedule_row(
        &self,
        id: &str,
    ) -> Result<Option<ScheduleInfo>, StoreError> {
        let shared = self.shared.clone();
        let id = id.to_owned();
        self.readers
            .submit(move |conn| shared.read_schedule(conn, &id))
            .await
    }

    /// [`Store::list_schedules`](crate::store::Store::list_schedules).
    pub(super) async fn list_schedule_rows(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        let shared = self.shared.clone();
        self.readers
            .submit(move |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE namespace = ?1 ORDER BY schedule_id"
                    ))
                    .map_err(sql_err)?;
                let raws = stmt
                    .query_map([&shared.namespace], raw_schedule)
                    .map_err(sql_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(sql_err)?;
                raws.into_iter()
                    .map(|r| r.into_info(shared.codec.as_ref()))
                    .collect()
            })
            .await
    }

    /// [`Store::set_schedule_paused`](crate::store::Store::set_schedule_paused).
    pub(super) async fn pause_schedule_row(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<ScheduleInfo, StoreError> {
        let shared = self.shared.clone();
        let id = id.to_owned();
        self.writer
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let schedule = shared.must_read_schedule(conn, &id)?;
                if schedule.paused == paused {
                    return Ok(schedule);
                }
                // Resuming starts from the next tick: what came while paused is not caught up.
                let next = if paused {
                    schedule.next_fire_at_ms
                } else {
                    schedule.spec.next_after(now)
                };
                conn.prepare_cached(
                    "UPDATE schedules SET paused = ?3, next_fire_at_ms = ?4, updated_at_ms = ?5
                     WHERE namespace = ?1 AND schedule_id = ?2",
                )
                .map_err(sql_err)?
                .execute(params![shared.namespace, id, i64::from(paused), next, now])
                .map_err(sql_err)?;
                shared.must_read_schedule(conn, &id)
            })
            .await
    }

    /// [`Store::delete_schedule`](crate::store::Store::delete_schedule).
    pub(super) async fn delete_schedule_row(&self, id: &str) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let id = id.to_owned();
        self.writer
            .submit(move |conn| {
                let n = conn
                    .prepare_cached(
                        "DELETE FROM schedules WHERE namespace = ?1 AND schedule_id = ?2",
                    )
                    .map_err(sql_err)?
                    .execute(params![shared.namespace, id])
                    .map_err(sql_err)?;
                if n == 0 {
                    return Err(StoreError::ScheduleNotFound(id));
                }
                conn.prepare_cached(
                    "DELETE FROM schedule_fires WHERE namespace = ?1 AND schedule_id = ?2",
                )
                .map_err(sql_err)?
                .execute(params![shared.namespace, id])
                .map_err(sql_err)?;
                Ok(())
            })
            .await
    }

    /// [`Store::trigger_schedule`](crate::store::Store::trigger_schedule).
    pub(super) async fn trigger_schedule_now(&self, id: &str) -> Result<ScheduleFire, StoreError> {
        let shared = self.shared.clone();
        let id = id.to_owned();
        let (fire, created) = self
            .writer
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let schedule = shared.must_read_schedule(conn, &id)?;
                let workflow_id = tick_workflow_id(&id, now);
                let created = shared.start_scheduled_run(conn, &workflow_id, &schedule, now)?;
                if shared.record_fire(conn, &id, now, now, FireOutcome::Triggered, &workflow_id)? {
                    conn.prepare_cached(
                        "UPDATE schedules SET runs_started = runs_started + 1, updated_at_ms = ?3
                         WHERE namespace = ?1 AND schedule_id = ?2",
                    )
                    .map_err(sql_err)?
                    .execute(params![shared.namespace, id, now])
                    .map_err(sql_err)?;
                }
                let fire = ScheduleFire {
                    schedule_id: id,
                    tick_ms: now,
                    fired_at_ms: now,
                    outcome: FireOutcome::Triggered,
                    workflow_id,
                };
                Ok((fire, created))
            })
            .await?;
        if created {
            self.wake_workers();
        }
        Ok(fire)
    }

    /// [`Store::fire_due_schedules`](crate::store::Store::fire_due_schedules).
    pub(super) async fn fire_schedules(&self, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let ns = self.shared.namespace.clone();
        let lim = i64::try_from(limit).unwrap_or(i64::MAX);
        // Look on a reader first, so an idle sweep takes no write lock.
        let due: Vec<String> = self
            .readers
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT schedule_id FROM schedules WHERE namespace = ?1 AND paused = 0
                         AND next_fire_at_ms IS NOT NULL AND next_fire_at_ms <= ?2
                         ORDER BY next_fire_at_ms LIMIT ?3",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(params![ns, now, lim], |r| r.get(0))
                    .map_err(sql_err)?;
                rows.collect::<Result<_, _>>().map_err(sql_err)
            })
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let shared = self.shared.clone();
        let (handled, started) = self
            .writer
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let (mut handled, mut started) = (0, 0);
                for id in due {
                    if let Some(n) = shared.fire_schedule(conn, &id, now)? {
                        handled += 1;
                        started += n;
                    }
                }
                Ok((handled, started))
            })
            .await?;
        if started > 0 {
            self.wake_workers();
        }
        Ok(handled)
    }

    /// [`Store::schedule_fires`](crate::store::Store::schedule_fires).
    pub(super) async fn schedule_fire_rows(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<ScheduleFire>, StoreError> {
        let shared = self.shared.clone();
        let id = id.to_owned();
        self.readers
            .submit(move |conn| {
                let exists = conn
                    .prepare_cached("SELECT 1 FROM schedules WHERE namespace = ?1 AND schedule_id = ?2")
                    .map_err(sql_err)?
                    .exists(params![shared.namespace, id])
                    .map_err(sql_err)?;
                if !exists {
                    return Err(StoreError::ScheduleNotFound(id));
                }
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT schedule_id, tick_ms, fired_at_ms, outcome, workflow_id FROM schedule_fires
                         WHERE namespace = ?1 AND schedule_id = ?2 ORDER BY tick_ms DESC LIMIT ?3",
                    )
                    .map_err(sql_err)?;
                let raws = stmt
                    .query_map(params![shared.namespace, id, fires_limit(limit)], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    })
                    .map_err(sql_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(sql_err)?;
                raws.into_iter()
                    .map(|(s, t, f, o, w)| rows::fire_from_columns(s, t, f, &o, w))
                    .collect()
            })
            .await
    }
}
