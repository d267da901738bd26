//! Schedules: their rows, and the sweep that starts the runs of due ticks, judged by the
//! database server's clock.
//!
//! The sweep locks the due schedules' rows with `FOR UPDATE SKIP LOCKED` and, in the
//! same transaction, starts each tick's run and moves the schedule's next fire time on:
//! a worker racing for the same schedule skips it, and once the first commits the row is
//! no longer due. A tick's run has a workflow id derived from the tick, and run number 1
//! of a workflow id is unique, so even a retried tick cannot start a second run. Lock
//! order: the schedule's row, then the new run's.

use super::{Inner, PostgresStore, limit_param};
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
use deadpool_postgres::GenericClient;

fn raw_schedule(r: &tokio_postgres::Row) -> RawSchedule {
    RawSchedule {
        id: r.get(0),
        workflow: r.get(1),
        input: r.get(2),
        spec_kind: r.get(3),
        cron: r.get(4),
        every_ms: r.get(5),
        offset_ms: r.get(6),
        catch_up: r.get(7),
        catch_up_max: r.get(8),
        overlap: r.get(9),
        execution_timeout_ms: r.get(10),
        paused: r.get(11),
        next_fire_at_ms: r.get(12),
        created_at_ms: r.get(13),
        updated_at_ms: r.get(14),
        runs_started: r.get(15),
        ticks_skipped: r.get(16),
    }
}

impl Inner {
    /// The schedule `id` of this namespace; `lock` takes its row lock.
    async fn read_schedule(
        &self,
        c: &impl GenericClient,
        id: &str,
        lock: bool,
    ) -> Result<Option<ScheduleInfo>, StoreError> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE namespace = $1 AND schedule_id = $2{}",
            if lock { " FOR UPDATE" } else { "" }
        );
        self.query_opt(c, &sql, &[&self.namespace, &id])
            .await?
            .map(|r| raw_schedule(&r).into_info(self.codec.as_ref()))
            .transpose()
    }

    async fn must_read_schedule(
        &self,
        c: &impl GenericClient,
        id: &str,
        lock: bool,
    ) -> Result<ScheduleInfo, StoreError> {
        self.read_schedule(c, id, lock)
            .await?
            .ok_or_else(|| StoreError::ScheduleNotFound(id.to_owned()))
    }

    /// Starts the run of a tick unless a run of its workflow id exists; true when it
    /// started one.
    async fn start_scheduled_run(
        &self,
        c: &impl GenericClient,
        workflow_id: &WorkflowId,
        schedule: &ScheduleInfo,
        now: i64,
    ) -> Result<bool, StoreError> {
        let run_id = RunId::generate();
        let deadline = schedule.execution_timeout_ms.map(|t| now.saturating_add(t));
        let inserted = self
            .query_opt(
                c,
                "INSERT INTO runs (namespace, run_key, workflow_id, run_number, run_id, workflow, status,
                 created_at_ms, updated_at_ms, last_event_id, ready, execution_timeout_ms, deadline_ms)
                 VALUES ($1, nextval('run_keys'), $2, 1, $3, $4, 'running', $5, $5, 1, TRUE, $6, $7)
                 ON CONFLICT (namespace, workflow_id, run_number) DO NOTHING
                 RETURNING run_key",
                &[
                    &self.namespace,
                    &workflow_id.as_str(),
                    &run_id.as_str(),
                    &schedule.workflow,
                    &now,
                    &schedule.execution_timeout_ms,
                    &deadline,
                ],
            )
            .await?;
        let Some(row) = inserted else {
            return Ok(false);
        };
        let key: i64 = row.get(0);
        self.append(
            c,
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
        )
        .await?;
        Ok(true)
    }

    /// Records what a tick did; false when the tick was recorded before.
    async fn record_fire(
        &self,
        c: &impl GenericClient,
        id: &str,
        tick: i64,
        now: i64,
        outcome: FireOutcome,
        workflow_id: &WorkflowId,
    ) -> Result<bool, StoreError> {
        let n = self
            .exec(
                c,
                "INSERT INTO schedule_fires (namespace, schedule_id, tick_ms, fired_at_ms, outcome, workflow_id)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &self.namespace,
                    &id,
                    &tick,
                    &now,
                    &outcome.as_str(),
                    &workflow_id.as_str(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Whether the latest run the schedule started is still running or suspended.
    async fn previous_run_open(
        &self,
        c: &impl GenericClient,
        id: &str,
    ) -> Result<bool, StoreError> {
        let last = self
            .query_opt(
                c,
                "SELECT workflow_id FROM schedule_fires WHERE namespace = $1 AND schedule_id = $2
                 AND outcome IN ('started', 'triggered') ORDER BY fired_at_ms DESC, tick_ms DESC LIMIT 1",
                &[&self.namespace, &id],
            )
            .await?;
        let Some(row) = last else {
            return Ok(false);
        };
        let workflow_id: String = row.get(0);
        Ok(self
            .latest_run(c, &workflow_id, false)
            .await?
            .is_some_and(|(_, status)| status == "running" || status == "suspended"))
    }

    /// Fires one schedule (its row locked by the caller); returns how many runs it started.
    async fn fire_schedule(
        &self,
        c: &impl GenericClient,
        schedule: &ScheduleInfo,
        next: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        let id = schedule.id.as_str();
        let plan = plan_fires(&schedule.spec, schedule.catch_up, next, now);
        let mut started = 0u64;
        let mut skipped = plan.missed;
        let skip_overlap = schedule.overlap == OverlapPolicy::Skip;
        let mut open = skip_overlap && self.previous_run_open(c, id).await?;
        for tick in &plan.ticks {
            let workflow_id = tick_workflow_id(id, *tick);
            if open && skip_overlap {
                if self
                    .record_fire(c, id, *tick, now, FireOutcome::SkippedOverlap, &workflow_id)
                    .await?
                {
                    skipped += 1;
                }
                continue;
            }
            self.start_scheduled_run(c, &workflow_id, schedule, now)
                .await?;
            if self
                .record_fire(c, id, *tick, now, FireOutcome::Started, &workflow_id)
                .await?
            {
                started += 1;
            }
            open = true;
        }
        self.exec(
            c,
            "UPDATE schedules SET next_fire_at_ms = $3, updated_at_ms = $4,
             runs_started = runs_started + $5, ticks_skipped = ticks_skipped + $6
             WHERE namespace = $1 AND schedule_id = $2",
            &[
                &self.namespace,
                &id,
                &plan.next_fire_at_ms,
                &now,
                &i64::try_from(started).unwrap_or(i64::MAX),
                &i64::try_from(skipped).unwrap_or(i64::MAX),
            ],
        )
        .await?;
        tracing::info!(schedule = id, started, skipped, next = ?plan.next_fire_at_ms, "schedule fired");
        Ok(started)
    }
}

impl PostgresStore {
    /// [`Store::create_schedule`](crate::store::Store::create_schedule).
    pub(super) async fn create_schedule_row(
        &self,
        schedule: NewSchedule,
        replace: bool,
    ) -> Result<ScheduleInfo, StoreError> {
        rows::check_new(&schedule)?;
        let db = &self.inner;
        let input = rows::seal_input(db.codec.as_ref(), &schedule.input);
        let spec = spec_columns(&schedule.spec);
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let now = db.now_ms(&tx).await?;
        let next = schedule.spec.next_after(now);
        let catch_up_max = schedule.catch_up.max().map(i64::from);
        // Of two racing creates of one id, the second waits for the first's row and then
        // updates it (replace) or inserts nothing.
        let written = db
            .query_opt(
                &tx,
                "INSERT INTO schedules (namespace, schedule_id, workflow, input, spec_kind, cron, every_ms,
                 offset_ms, catch_up, catch_up_max, overlap, execution_timeout_ms, paused, next_fire_at_ms,
                 created_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
                 ON CONFLICT (namespace, schedule_id) DO UPDATE SET workflow = EXCLUDED.workflow,
                     input = EXCLUDED.input, spec_kind = EXCLUDED.spec_kind, cron = EXCLUDED.cron,
                     every_ms = EXCLUDED.every_ms, offset_ms = EXCLUDED.offset_ms,
                     catch_up = EXCLUDED.catch_up, catch_up_max = EXCLUDED.catch_up_max,
                     overlap = EXCLUDED.overlap, execution_timeout_ms = EXCLUDED.execution_timeout_ms,
                     paused = EXCLUDED.paused, next_fire_at_ms = EXCLUDED.next_fire_at_ms,
                     updated_at_ms = EXCLUDED.updated_at_ms
                     WHERE $16
                 RETURNING schedule_id",
                &[
                    &db.namespace,
                    &schedule.id,
                    &schedule.workflow,
                    &input,
                    &spec.kind,
                    &spec.cron,
                    &spec.every_ms,
                    &spec.offset_ms,
                    &schedule.catch_up.name(),
                    &catch_up_max,
                    &schedule.overlap.name(),
                    &schedule.execution_timeout_ms(),
                    &schedule.paused,
                    &next,
                    &now,
                    &replace,
                ],
            )
            .await?;
        if written.is_none() {
            return Err(StoreError::ScheduleExists(schedule.id));
        }
        let info = db.must_read_schedule(&tx, &schedule.id, false).await?;
        tx.commit().await.map_err(|e| db.err(e))?;
        Ok(info)
    }

    /// [`Store::get_schedule`](crate::store::Store::get_schedule).
    pub(super) async fn read_schedule_row(
        &self,
        id: &str,
    ) -> Result<Option<ScheduleInfo>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        db.read_schedule(&client, id, false).await
    }

    /// [`Store::list_schedules`](crate::store::Store::list_schedules).
    pub(super) async fn list_schedule_rows(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE namespace = $1 ORDER BY schedule_id"
        );
        db.query(&client, &sql, &[&db.namespace])
            .await?
            .iter()
            .map(|r| raw_schedule(r).into_info(db.codec.as_ref()))
            .collect()
    }

    /// [`Store::set_schedule_paused`](crate::store::Store::set_schedule_paused).
    pub(super) async fn pause_schedule_row(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<ScheduleInfo, StoreError> {
        let db = &self.inner;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let schedule = db.must_read_schedule(&tx, id, true).await?;
        if schedule.paused == paused {
            return Ok(schedule);
        }
        let now = db.now_ms(&tx).await?;
        // Resuming starts from the next tick: what came while paused is not caught up.
        let next = if paused {
            schedule.next_fire_at_ms
        } else {
            schedule.spec.next_after(now)
        };
        db.exec(
            &tx,
            "UPDATE schedules SET paused = $3, next_fire_at_ms = $4, updated_at_ms = $5
             WHERE namespace = $1 AND schedule_id = $2",
            &[&db.namespace, &id, &paused, &next, &now],
        )
        .await?;
        let info = db.must_read_schedule(&tx, id, false).await?;
        tx.commit().await.map_err(|e| db.err(e))?;
        Ok(info)
    }

    /// [`Store::delete_schedule`](crate::store::Store::delete_schedule).
    pub(super) async fn delete_schedule_row(&self, id: &str) -> Result<(), StoreError> {
        let db = &self.inner;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let n = db
            .exec(
                &tx,
                "DELETE FROM schedules WHERE namespace = $1 AND schedule_id = $2",
                &[&db.namespace, &id],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::ScheduleNotFound(id.to_owned()));
        }
        db.exec(
            &tx,
            "DELETE FROM schedule_fires WHERE namespace = $1 AND schedule_id = $2",
            &[&db.namespace, &id],
        )
        .await?;
        tx.commit().await.map_err(|e| db.err(e))
    }

    /// [`Store::trigger_schedule`](crate::store::Store::trigger_schedule).
    pub(super) async fn trigger_schedule_now(&self, id: &str) -> Result<ScheduleFire, StoreError> {
        let db = &self.inner;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let schedule = db.must_read_schedule(&tx, id, true).await?;
        let now = db.now_ms(&tx).await?;
        let workflow_id = tick_workflow_id(id, now);
        let created = db
            .start_scheduled_run(&tx, &workflow_id, &schedule, now)
            .await?;
        if db
            .record_fire(&tx, id, now, now, FireOutcome::Triggered, &workflow_id)
            .await?
        {
            db.exec(
                &tx,
                "UPDATE schedules SET runs_started = runs_started + 1, updated_at_ms = $3
                 WHERE namespace = $1 AND schedule_id = $2",
                &[&db.namespace, &id, &now],
            )
            .await?;
        }
        tx.commit().await.map_err(|e| db.err(e))?;
        if created {
            self.wake_workers();
        }
        Ok(ScheduleFire {
            schedule_id: id.to_owned(),
            tick_ms: now,
            fired_at_ms: now,
            outcome: FireOutcome::Triggered,
            workflow_id,
        })
    }

    /// [`Store::fire_due_schedules`](crate::store::Store::fire_due_schedules).
    pub(super) async fn fire_schedules(&self, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let db = &self.inner;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS}, {} FROM schedules WHERE namespace = $1 AND NOT paused
             AND next_fire_at_ms IS NOT NULL AND next_fire_at_ms <= {}
             ORDER BY next_fire_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
            super::NOW_MS,
            super::NOW_MS
        );
        let due = db
            .query(&tx, &sql, &[&db.namespace, &limit_param(limit)])
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut started = 0;
        for row in &due {
            let now: i64 = row.get(17);
            let schedule = raw_schedule(row).into_info(db.codec.as_ref())?;
            let Some(next) = schedule.next_fire_at_ms else {
                continue;
            };
            started += db.fire_schedule(&tx, &schedule, next, now).await?;
        }
        tx.commit().await.map_err(|e| db.err(e))?;
        if started > 0 {
            self.wake_workers();
        }
        Ok(due.len())
    }

    /// [`Store::schedule_fires`](crate::store::Store::schedule_fires).
    pub(super) async fn schedule_fire_rows(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<ScheduleFire>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        if db
            .query_opt(
                &client,
                "SELECT 1 FROM schedules WHERE namespace = $1 AND schedule_id = $2",
                &[&db.namespace, &id],
            )
            .await?
            .is_none()
        {
            return Err(StoreError::ScheduleNotFound(id.to_owned()));
        }
        db.query(
            &client,
            "SELECT schedule_id, tick_ms, fired_at_ms, outcome, workflow_id FROM schedule_fires
             WHERE namespace = $1 AND schedule_id = $2 ORDER BY tick_ms DESC LIMIT $3",
            &[&db.namespace, &id, &fires_limit(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            let outcome: String = r.get(3);
            rows::fire_from_columns(r.get(0), r.get(1), r.get(2), &outcome, r.get(4))
        })
        .collect()
    }
}
