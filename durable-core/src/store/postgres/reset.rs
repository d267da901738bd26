//! Resetting a run: a new run of the same workflow id whose history is a cut of the
//! latest run's, with what was pending at the cut scheduled again.

use super::{PostgresStore, span_ms, to_i64};
use crate::error::StoreError;
use crate::event::EventKind;
use crate::ids::{EventId, RunId, RunKey, WorkflowId};
use crate::store::StartOutcome;
use std::collections::BTreeMap;

impl PostgresStore {
    /// [`Store::reset_run`](crate::store::Store::reset_run): a new run from a cut of the
    /// latest run's history, in one transaction.
    pub(super) async fn reset_to(
        &self,
        workflow_id: &WorkflowId,
        to: EventId,
    ) -> Result<StartOutcome, StoreError> {
        let db = &self.inner;
        let wid = workflow_id;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let Some((old, status)) = db.latest_run(&tx, wid.as_str(), true).await? else {
            return Err(StoreError::NotFound(wid.clone()));
        };
        let row = db
            .query_opt(
                &tx,
                "SELECT workflow, last_event_id, run_number, inbox_seq, execution_timeout_ms FROM runs
                 WHERE namespace = $1 AND run_key = $2",
                &[&db.namespace, &old],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(wid.clone()))?;
        let workflow: String = row.get(0);
        let last: i64 = row.get(1);
        let run_number: i64 = row.get(2);
        let inbox_seq: i64 = row.get(3);
        let timeout_ms: Option<i64> = row.get(4);
        let to = to_i64(to.0);
        if to < 1 || to > last {
            return Err(StoreError::Invalid(format!(
                "run '{wid}' has no event {to}; its events are 1..{last}"
            )));
        }
        let rows = db
            .query(
                &tx,
                "SELECT event_id, time_ms, kind, body FROM events
                 WHERE namespace = $1 AND run_key = $2 AND event_id <= $3 ORDER BY event_id",
                &[&db.namespace, &old, &to],
            )
            .await?;
        if let Some(r) = rows.last() {
            let kind: &str = r.get(2);
            if kind == "RunCompleted"
                || kind == "RunFailed"
                || kind == "RunTimedOut"
                || kind == "RunContinuedAsNew"
            {
                return Err(StoreError::Invalid(format!(
                    "event {to} of run '{wid}' ends the run; reset to an earlier event"
                )));
            }
        }
        let now = db.now_ms(&tx).await?;
        let run_id = RunId::generate();
        let key: i64 = db
            .query_opt(
                &tx,
                // The new run gets a fresh deadline with the old run's execution timeout.
                "INSERT INTO runs (namespace, run_key, workflow_id, run_number, run_id, workflow, status,
                 created_at_ms, updated_at_ms, last_event_id, ready, inbox_seq, execution_timeout_ms, deadline_ms,
                 task_queue)
                 VALUES ($1, nextval('run_keys'), $2, $3, $4, $5, 'running', $6, $6, $7, TRUE, $8, $9::BIGINT,
                 $6 + $9::BIGINT, (SELECT task_queue FROM runs WHERE namespace = $1 AND run_key = $10))
                 RETURNING run_key",
                &[
                    &db.namespace,
                    &wid.as_str(),
                    &(run_number + 1),
                    &run_id.as_str(),
                    &workflow,
                    &now,
                    &to,
                    &inbox_seq,
                    &timeout_ms,
                    &old,
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Other("inserting the new run returned no key".into()))?
            .get(0);
        db.exec(
            &tx,
            "INSERT INTO events (namespace, run_key, event_id, time_ms, kind, seq, body)
             SELECT namespace, $3, event_id, time_ms, kind, seq, body FROM events
             WHERE namespace = $1 AND run_key = $2 AND event_id <= $4",
            &[&db.namespace, &old, &key, &to],
        )
        .await?;
        // What was pending at event `to` is scheduled again on the new run.
        let mut scheduled = BTreeMap::new();
        let mut timers = BTreeMap::new();
        let mut children = std::collections::BTreeSet::new();
        for r in rows {
            let id: i64 = r.get(0);
            let time: i64 = r.get(1);
            match db.decode(old, id, r.get(3))? {
                EventKind::ActivityScheduled {
                    seq, name, options, ..
                } => {
                    scheduled.insert(
                        i64::from(seq.0),
                        (id, name, options.task_queue.unwrap_or_default()),
                    );
                }
                EventKind::ActivityCompleted { seq, .. }
                | EventKind::ActivityFailed { seq, .. } => {
                    scheduled.remove(&i64::from(seq.0));
                }
                EventKind::TimerStarted { seq, duration_ms } => {
                    timers.insert(
                        i64::from(seq.0),
                        time.saturating_add(span_ms(to_i64(duration_ms))),
                    );
                }
                EventKind::TimerFired { seq } => {
                    timers.remove(&i64::from(seq.0));
                }
                EventKind::ChildStarted { seq, .. } => {
                    children.insert(seq.0);
                }
                EventKind::ChildCompleted { seq, .. } | EventKind::ChildFailed { seq, .. } => {
                    children.remove(&seq.0);
                }
                _ => {}
            }
        }
        for (seq, (event_id, name, queue)) in scheduled {
            db.exec(
                &tx,
                "INSERT INTO activity_tasks (namespace, run_key, seq, name, task_queue, event_id, attempt, owner,
                 lease_expires_at_ms, available_at_ms, scheduled_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, 0, NULL, 0, $7, $7)",
                &[&db.namespace, &key, &seq, &name, &queue, &event_id, &now],
            )
            .await?;
        }
        for (seq, fire_at) in timers {
            db.exec(
                &tx,
                "INSERT INTO timers (namespace, run_key, seq, fire_at_ms) VALUES ($1, $2, $3, $4)",
                &[&db.namespace, &key, &seq, &fire_at],
            )
            .await?;
        }
        db.move_children(&tx, old, key, &children).await?;
        // Signals the old run had not applied yet belong to the new one.
        db.exec(
            &tx,
            "UPDATE inbox SET run_key = $3 WHERE namespace = $1 AND run_key = $2",
            &[&db.namespace, &old, &key],
        )
        .await?;
        if status == "running" || status == "suspended" {
            let reason = format!("reset to run {run_id} at event {to}");
            let error = crate::error::WorkflowError::new(crate::error::KIND_RESET, reason.clone());
            let failed = EventKind::RunFailed { error };
            db.append(&tx, old, last, &[(now, failed.clone())]).await?;
            db.exec(
                &tx,
                "UPDATE runs SET status = 'failed', reason = $3, ready = FALSE, owner = NULL, fence = fence + 1,
                 lease_expires_at_ms = 0, last_event_id = last_event_id + 1, updated_at_ms = $4
                 WHERE namespace = $1 AND run_key = $2",
                &[&db.namespace, &old, &reason, &now],
            )
            .await?;
            for sql in [
                "DELETE FROM activity_tasks WHERE namespace = $1 AND run_key = $2",
                "DELETE FROM timers WHERE namespace = $1 AND run_key = $2",
            ] {
                db.exec(&tx, sql, &[&db.namespace, &old]).await?;
            }
            db.run_ended(&tx, old, &failed).await?;
        }
        tx.commit().await.map_err(|e| db.err(e))?;
        self.wake_workers();
        Ok(StartOutcome {
            key: RunKey(key),
            run_id,
            workflow,
            created: true,
        })
    }
}
