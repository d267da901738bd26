//! Committing an activation: the hot path of the store, three round trips whatever its
//! size.

use super::{Param, PostgresStore, span_ms, to_i64, to_u64};
use crate::clock;
use crate::error::StoreError;
use crate::event::EventKind;
use crate::ids::EventId;
use crate::store::{Commit, CommitOutcome, RunStatus};
use std::collections::HashMap;

impl PostgresStore {
    /// [`Store::commit`](crate::store::Store::commit): the whole activation in one
    /// pipeline behind the run's row lock.
    pub(super) async fn commit_activation(&self, c: Commit) -> Result<CommitOutcome, StoreError> {
        let db = &self.inner;
        let continuation = crate::store::continuation::continuation(&c)?;
        // Child runs started, a parent's inbox written by a finishing child, or the run a
        // continuing one starts.
        let touches_other_runs = c.finish.is_some()
            || c.events
                .iter()
                .any(|(_, k)| matches!(k, EventKind::ChildStarted { .. }));
        let creates_remote_work = touches_other_runs || c.activities.iter().any(|a| !a.local);
        let key = c.key.0;
        let after = to_i64(c.after.0);
        let lease_ms = span_ms(clock::duration_ms(c.lease));

        // Everything the commit writes, numbered from `after`. The whole commit goes to
        // the server in one pipeline behind the run's row lock; when the lock's row says
        // the commit is stale, it is refused and the transaction rolls back, so nothing
        // of it is written.
        let mut events = Vec::with_capacity(c.events.len());
        let mut event_ids = HashMap::new();
        let mut timers = Vec::new();
        let mut id = after;
        for (time, kind) in &c.events {
            id += 1;
            match kind {
                EventKind::ActivityScheduled { seq, options, .. } => {
                    let heartbeat_timeout =
                        super::heartbeat::timeout_param(options.heartbeat_timeout_ms);
                    event_ids.insert(seq.0, (id, heartbeat_timeout));
                }
                EventKind::TimerStarted { seq, duration_ms } => {
                    timers.push((i64::from(seq.0), span_ms(to_i64(*duration_ms))));
                }
                _ => {}
            }
            let seq = kind.seq().map(|s| i64::from(s.0));
            events.push((id, *time, kind.name(), seq, db.encode(kind)?));
        }
        let (first, last_id) = (after + 1, id);
        let mut tasks = Vec::with_capacity(c.activities.len());
        if c.finish.is_none() {
            for a in &c.activities {
                let (event_id, heartbeat_timeout) =
                    event_ids.get(&a.seq.0).copied().ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "activity task {} without its ActivityScheduled event",
                            a.seq
                        ))
                    })?;
                // Local attempts start at once, leased to the committer: attempt 1.
                let owner = a.local.then_some(c.worker.0.as_str());
                tasks.push((
                    i64::from(a.seq.0),
                    a,
                    event_id,
                    i64::from(a.local),
                    owner,
                    heartbeat_timeout,
                ));
            }
        } else {
            timers.clear();
        }
        let finished: Vec<(i64, i64)> = c
            .finished_activities
            .iter()
            .map(|(seq, attempt)| (i64::from(seq.0), i64::from(*attempt)))
            .collect();
        let fired: Vec<i64> = c.fired_timers.iter().map(|s| i64::from(s.0)).collect();
        let status = c.finish.map(RunStatus::as_str);

        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let lock = db
            .prepare(
                &tx,
                "SELECT owner, fence, status, last_event_id FROM runs
                 WHERE namespace = $1 AND run_key = $2 FOR UPDATE",
            )
            .await?;
        // A finishing run writes its parent's inbox: the parent's row is locked first,
        // the lock order of a parent cancelling its children.
        let lock_parent = match c.finish {
            Some(_) => Some(
                db.prepare(
                    &tx,
                    "SELECT 1 FROM runs WHERE namespace = $1
                     AND run_key = (SELECT parent_key FROM runs WHERE namespace = $1 AND run_key = $2)
                     FOR UPDATE",
                )
                .await?,
            ),
            None => None,
        };
        let delete_inbox = db
            .prepare(
                &tx,
                "DELETE FROM inbox WHERE namespace = $1 AND run_key = $2 AND inbox_id = ANY($3)
                 RETURNING inbox_id",
            )
            .await?;
        let delete_attempt = db
            .prepare(
                &tx,
                "DELETE FROM activity_tasks WHERE namespace = $1 AND run_key = $2 AND seq = $3
                 AND attempt = $4 AND owner = $5 RETURNING seq",
            )
            .await?;
        let delete_timers = db
            .prepare(
                &tx,
                "DELETE FROM timers WHERE namespace = $1 AND run_key = $2 AND seq = ANY($3) RETURNING seq",
            )
            .await?;
        let insert_event = db
            .prepare(
                &tx,
                "INSERT INTO events (namespace, run_key, event_id, time_ms, kind, seq, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        // With $11, nothing is inserted when the task's queue has a limit (a local
        // attempt there must take room first, below): the check rides in the one INSERT,
        // so queues without limits pay no extra statement.
        let insert_task = db
            .prepare(
                &tx,
                concat!(
                    "INSERT INTO activity_tasks (namespace, run_key, seq, name, task_queue, event_id,
                     attempt, owner, lease_expires_at_ms, available_at_ms, scheduled_at_ms,
                     heartbeat_timeout_ms, heartbeat_deadline_ms)
                     SELECT $1::TEXT, $2::BIGINT, $3::BIGINT, $4::TEXT, $5::TEXT, $6::BIGINT,
                     $7::BIGINT, $8::TEXT,
                     CASE WHEN $8::TEXT IS NULL THEN 0 ELSE ",
                    now_ms!(),
                    " + $9::BIGINT END, ",
                    now_ms!(),
                    ", ",
                    now_ms!(),
                    ", $10::BIGINT, CASE WHEN $8::TEXT IS NULL THEN NULL ELSE ",
                    now_ms!(),
                    " + $10::BIGINT END
                     WHERE NOT $11::BOOLEAN OR NOT EXISTS (SELECT 1 FROM queue_limits l
                         WHERE l.namespace = $1::TEXT AND l.task_queue = $5::TEXT)
                     RETURNING seq"
                ),
            )
            .await?;
        let insert_timer = db
            .prepare(
                &tx,
                concat!(
                    "INSERT INTO timers (namespace, run_key, seq, fire_at_ms) VALUES ($1, $2, $3, ",
                    now_ms!(),
                    " + $4)"
                ),
            )
            .await?;
        let update_run = db
            .prepare(
                &tx,
                concat!(
                    "UPDATE runs SET last_event_id = $3,
                     ready = EXISTS (SELECT 1 FROM inbox WHERE inbox.namespace = $1 AND inbox.run_key = $2),
                     updated_at_ms = ",
                    now_ms!(),
                    ", activation_failures = 0,
                     owner = CASE WHEN $4 THEN owner ELSE NULL END,
                     lease_expires_at_ms = CASE WHEN $4 THEN lease_expires_at_ms ELSE 0 END
                     WHERE namespace = $1 AND run_key = $2"
                ),
            )
            .await?;
        let finish_run = db
            .prepare(
                &tx,
                concat!(
                    "UPDATE runs SET last_event_id = $3, status = $4, ready = FALSE, owner = NULL,
                     lease_expires_at_ms = 0, updated_at_ms = ",
                    now_ms!(),
                    ", activation_failures = 0
                     WHERE namespace = $1 AND run_key = $2"
                ),
            )
            .await?;
        let stray_signals = db
            .prepare(
                &tx,
                "SELECT inbox_id FROM inbox WHERE namespace = $1 AND run_key = $2 AND kind = 'SignalReceived'",
            )
            .await?;
        // Prepared and sent only when the activation published a status, so the run's
        // UPDATE stays as it is otherwise; it rides in the same pipeline.
        let published = c
            .published_status
            .as_ref()
            .map(|p| crate::store::sealing::seal(db.codec.as_ref(), p.0.clone()));
        let publish = match &published {
            Some(_) => Some(
                db.prepare(
                    &tx,
                    "UPDATE runs SET published_status = $3 WHERE namespace = $1 AND run_key = $2",
                )
                .await?,
            ),
            None => None,
        };
        // Continue-as-new: the next run of the workflow id, its first event and the
        // signals that follow it, all after the old run's row lock.
        let next_started = match &continuation {
            Some(next) => Some(db.encode(&next.started())?),
            None => None,
        };
        // The signals the code had not taken: the new run's first inbox entries, numbered
        // after the old run's last inbox id; what waits in the old inbox follows them.
        let mut handed_on = Vec::new();
        if let Some(next) = &continuation {
            for (i, kind) in (1_i64..).zip(next.carried()) {
                handed_on.push((i, db.encode(&kind)?));
            }
        }
        let handed_on_count = i64::try_from(handed_on.len()).unwrap_or(i64::MAX);
        let carried: Vec<&str> = crate::store::continuation::CARRIED_INBOX_KINDS.to_vec();
        let mut continue_stmts = Vec::new();
        if continuation.is_some() {
            for sql in [
                concat!(
                    "INSERT INTO runs (namespace, run_key, workflow_id, run_number, run_id, workflow, status,
                     created_at_ms, updated_at_ms, last_event_id, ready, inbox_seq, execution_timeout_ms,
                     deadline_ms, published_status, parent_key, parent_seq, cancel_policy, cancel_requested,
                     task_queue)
                     SELECT namespace, nextval('run_keys'), workflow_id, run_number + 1, $3, $4, 'running', ",
                    now_ms!(),
                    ", ",
                    now_ms!(),
                    ", 1, TRUE, inbox_seq, execution_timeout_ms, deadline_ms, COALESCE($5, published_status),
                     parent_key, parent_seq, cancel_policy, cancel_requested, task_queue
                     FROM runs WHERE namespace = $1 AND run_key = $2"
                ),
                "INSERT INTO events (namespace, run_key, event_id, time_ms, kind, seq, body)
                 VALUES ($1, currval('run_keys'), 1, $2, 'RunStarted', NULL, $3)",
                concat!(
                    "INSERT INTO inbox (namespace, run_key, inbox_id, time_ms, kind, body)
                     SELECT namespace, currval('run_keys'), inbox_seq + $3, ",
                    now_ms!(),
                    ", 'SignalReceived', $4 FROM runs WHERE namespace = $1 AND run_key = $2"
                ),
                "INSERT INTO inbox (namespace, run_key, inbox_id, time_ms, kind, body)
                 SELECT i.namespace, currval('run_keys'),
                 r.inbox_seq + $3 + row_number() OVER (ORDER BY i.inbox_id), i.time_ms, i.kind, i.body
                 FROM inbox i JOIN runs r ON r.namespace = i.namespace AND r.run_key = i.run_key
                 WHERE i.namespace = $1 AND i.run_key = $2 AND i.kind = ANY($4)",
                "UPDATE runs SET inbox_seq = inbox_seq + $3
                 + (SELECT count(*) FROM inbox WHERE namespace = $1 AND run_key = $2 AND kind = ANY($4))
                 WHERE namespace = $1 AND run_key = currval('run_keys')",
            ] {
                continue_stmts.push(db.prepare(&tx, sql).await?);
            }
        }
        // What the run's end passes on (its parent, children to cancel), read in the
        // pipeline so a run with neither costs no round trip more.
        let run_end = match c.finish {
            Some(_) => Some(db.prepare(&tx, super::children::RUN_END_SQL).await?),
            None => None,
        };
        let mut finish_deletes = Vec::new();
        if status.is_some() {
            for sql in [
                "DELETE FROM activity_tasks WHERE namespace = $1 AND run_key = $2",
                "DELETE FROM timers WHERE namespace = $1 AND run_key = $2",
                "DELETE FROM inbox WHERE namespace = $1 AND run_key = $2",
            ] {
                finish_deletes.push(db.prepare(&tx, sql).await?);
            }
        }

        // The statements in execution order; the lock comes first.
        let ns = &db.namespace;
        let mut calls: Vec<(&tokio_postgres::Statement, Vec<Param<'_>>)> = Vec::new();
        if let Some(stmt) = &lock_parent {
            calls.push((stmt, vec![ns, &key]));
        }
        let lock_at = calls.len();
        calls.push((&lock, vec![ns, &key]));
        let inbox_at = (!c.consumed_inbox.is_empty()).then(|| {
            calls.push((&delete_inbox, vec![ns, &key, &c.consumed_inbox]));
            calls.len() - 1
        });
        let attempts_at = calls.len();
        for (seq, attempt) in &finished {
            calls.push((&delete_attempt, vec![ns, &key, seq, attempt, &c.worker.0]));
        }
        let timers_at = (!fired.is_empty()).then(|| {
            calls.push((&delete_timers, vec![ns, &key, &fired]));
            calls.len() - 1
        });
        for (id, time, kind, seq, body) in &events {
            calls.push((&insert_event, vec![ns, &key, id, time, kind, seq, body]));
        }
        let tasks_at = calls.len();
        for (seq, a, event_id, attempt, owner, heartbeat_timeout) in &tasks {
            calls.push((
                &insert_task,
                vec![
                    ns,
                    &key,
                    seq,
                    &a.name,
                    &a.task_queue,
                    event_id,
                    attempt,
                    owner,
                    &lease_ms,
                    heartbeat_timeout,
                    &a.local,
                ],
            ));
        }
        for (seq, duration) in &timers {
            calls.push((&insert_timer, vec![ns, &key, seq, duration]));
        }
        let mut stray_at = None;
        match &status {
            None => calls.push((&update_run, vec![ns, &key, &last_id, &c.keep_lease])),
            Some(status) => {
                if let (
                    Some(next),
                    Some(body),
                    [insert_run, insert_started, hand_on, move_inbox, count_inbox],
                ) = (&continuation, &next_started, continue_stmts.as_slice())
                {
                    // The signals left move to the new run before the inbox is cleared.
                    calls.push((
                        insert_run,
                        vec![ns, &key, &next.run_id.0, &next.workflow, &published],
                    ));
                    calls.push((insert_started, vec![ns, &next.time_ms, body]));
                    for (i, signal) in &handed_on {
                        calls.push((hand_on, vec![ns, &key, i, signal]));
                    }
                    calls.push((move_inbox, vec![ns, &key, &handed_on_count, &carried]));
                    calls.push((count_inbox, vec![ns, &key, &handed_on_count, &carried]));
                } else {
                    // After the consumed entries are deleted: the signals left are ones
                    // the run has not seen (the run's row lock keeps new ones out until
                    // we end).
                    calls.push((&stray_signals, vec![ns, &key]));
                    stray_at = Some(calls.len() - 1);
                }
                for stmt in &finish_deletes {
                    calls.push((stmt, vec![ns, &key]));
                }
                calls.push((&finish_run, vec![ns, &key, &last_id, status]));
            }
        }
        let run_end_at = run_end.as_ref().map(|stmt| {
            calls.push((stmt, vec![ns, &key]));
            calls.len() - 1
        });
        if let (Some(stmt), Some(bytes)) = (&publish, &published) {
            calls.push((stmt, vec![ns, &key, bytes]));
        }
        let results: Vec<Result<Vec<tokio_postgres::Row>, StoreError>> =
            futures::future::join_all(calls.iter().map(|(stmt, params)| tx.query(*stmt, params)))
                .await
                .into_iter()
                .map(|r| r.map_err(|e| db.err(e)))
                .collect();

        // Judge in order: the fence first, then what must have been there to consume; the
        // first failed statement explains any that failed after it.
        let rows = |i: usize| -> Result<&Vec<tokio_postgres::Row>, StoreError> {
            results[i].as_ref().map_err(Clone::clone)
        };
        for i in 0..lock_at {
            rows(i)?;
        }
        let lock_rows = rows(lock_at)?;
        let Some(row) = lock_rows.first() else {
            return Err(StoreError::Conflict(format!("run {key} does not exist")));
        };
        let owner: Option<String> = row.get(0);
        let fence: i64 = row.get(1);
        let run_status: String = row.get(2);
        let last: i64 = row.get(3);
        if owner.as_deref() != Some(c.worker.0.as_str())
            || to_u64(fence) != c.fence.0
            || run_status != "running"
            || last != after
        {
            return Err(StoreError::Fenced {
                run: key.to_string(),
                fence: c.fence,
            });
        }
        if let Some(i) = inbox_at {
            let deleted: Vec<i64> = rows(i)?.iter().map(|r| r.get(0)).collect();
            if let Some(missing) = c.consumed_inbox.iter().find(|id| !deleted.contains(id)) {
                return Err(StoreError::Conflict(format!(
                    "inbox entry {missing} of run {key} was already applied"
                )));
            }
        }
        for (i, (seq, attempt)) in c.finished_activities.iter().enumerate() {
            if rows(attempts_at + i)?.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "attempt {attempt} of command {seq} of run {key} was superseded"
                )));
            }
        }
        if let Some(i) = timers_at {
            let deleted: Vec<i64> = rows(i)?.iter().map(|r| r.get(0)).collect();
            if let Some(missing) = fired.iter().find(|s| !deleted.contains(s)) {
                return Err(StoreError::Conflict(format!(
                    "timer {missing} of run {key} already fired"
                )));
            }
        }
        if let Some(i) = stray_at
            && let Some(row) = rows(i)?.first()
        {
            let id: i64 = row.get(0);
            return Err(StoreError::Conflict(format!(
                "signal {id} reached run {key} while it was finishing; it goes on to record it"
            )));
        }
        for i in 0..results.len() {
            rows(i)?;
        }
        // Local attempts on limited queues, which the pipeline left out: each starts now
        // if its queue has room (under the queue's row lock, taken after the run's), or
        // waits for a claim.
        let limited: Vec<usize> = (0..tasks.len())
            .filter(|i| rows(tasks_at + i).is_ok_and(Vec::is_empty))
            .collect();
        let starts_children = c
            .events
            .iter()
            .any(|(_, k)| matches!(k, EventKind::ChildStarted { .. }));
        let end = match run_end_at {
            Some(i) => rows(i)?.first().map(|row| {
                let mut end = super::children::RunEnd::from_row(row);
                end.children_to_cancel |= starts_children;
                end
            }),
            None => None,
        };
        drop(results);
        let mut queued = Vec::new();
        for i in limited {
            let (seq, a, event_id, _, _, heartbeat_timeout) = &tasks[i];
            let room = db.lock_room(&tx, &a.task_queue).await?;
            let starts = room.as_ref().is_none_or(|r| r.allows(1) == 1);
            let (attempt, owner) = if starts {
                (1_i64, Some(c.worker.0.as_str()))
            } else {
                (0, None)
            };
            tx.query(
                &insert_task,
                &[
                    ns,
                    &key,
                    seq,
                    &a.name,
                    &a.task_queue,
                    event_id,
                    &attempt,
                    &owner,
                    &lease_ms,
                    heartbeat_timeout,
                    &false,
                ],
            )
            .await
            .map_err(|e| db.err(e))?;
            match (&room, starts) {
                (Some(room), true) => {
                    db.spend(&tx, &a.task_queue, room, &[(key, *seq, 1)])
                        .await?;
                }
                (Some(_), false) => queued.push(a.seq),
                (None, _) => {}
            }
        }
        if touches_other_runs {
            db.start_children(&tx, key, &c.events, c.finish.is_some())
                .await?;
            if let Some(end) = &end
                && let Some((_, terminal)) = c.events.iter().rev().find(|(_, k)| k.is_terminal())
            {
                db.deliver_end(&tx, key, end, terminal).await?;
            }
        }
        tx.commit().await.map_err(|e| db.err(e))?;
        if creates_remote_work || !queued.is_empty() {
            self.wake_workers();
        }
        Ok(CommitOutcome {
            first: EventId(to_u64(first)),
            last: EventId(to_u64(last_id)),
            queued,
        })
    }
}
