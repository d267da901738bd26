//! Activity heartbeats: recording them, starting an attempt's heartbeat clock, and the
//! sweep that ends attempts whose heartbeat timeout passed. The same rules as the SQLite
//! store's, judged by the database server's clock.

use super::{Inner, PostgresStore, limit_param, span_ms, to_i64, to_u32};
use crate::error::StoreError;
use crate::event::EventKind;
use crate::ids::{CommandSeq, RunKey, WorkerId};
use crate::payload::Payload;
use crate::retry;
use crate::store::sealing::{heartbeat_timeout_error, open_details, seal};
use deadpool_postgres::GenericClient;

impl Inner {
    /// Heartbeat details as stored, opened; see [`open_details`].
    pub(super) fn open_heartbeat(&self, sealed: Option<Vec<u8>>) -> Option<Payload> {
        open_details(self.codec.as_ref(), sealed)
    }

    /// Starts the heartbeat clocks of attempts that just began, for the calls with a
    /// heartbeat timeout: `(run_key, seq, timeout_ms)`.
    pub(super) async fn start_heartbeat_clocks(
        &self,
        c: &impl GenericClient,
        started: &[(i64, i64, i64)],
    ) -> Result<(), StoreError> {
        for (key, seq, timeout) in started {
            self.exec(
                c,
                concat!(
                    "UPDATE activity_tasks SET heartbeat_timeout_ms = $4, heartbeat_deadline_ms = ",
                    now_ms!(),
                    " + $4 WHERE namespace = $1 AND run_key = $2 AND seq = $3"
                ),
                &[&self.namespace, key, seq, timeout],
            )
            .await?;
        }
        Ok(())
    }
}

impl PostgresStore {
    /// [`Store::record_heartbeat`](crate::store::Store::record_heartbeat).
    pub(super) async fn record_heartbeat_of(
        &self,
        worker: &WorkerId,
        key: RunKey,
        seq: CommandSeq,
        attempt: u32,
        details: Payload,
    ) -> Result<(), StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let sealed = seal(db.codec.as_ref(), details.0);
        let n = db
            .exec(
                &client,
                concat!(
                    "UPDATE activity_tasks SET heartbeat_details = $6, last_heartbeat_at_ms = ",
                    now_ms!(),
                    ", heartbeat_deadline_ms = ",
                    now_ms!(),
                    " + heartbeat_timeout_ms
                     WHERE namespace = $1 AND run_key = $2 AND seq = $3 AND attempt = $4 AND owner = $5"
                ),
                &[
                    &db.namespace,
                    &key.0,
                    &i64::from(seq.0),
                    &i64::from(attempt),
                    &worker.0,
                    &sealed,
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "attempt {attempt} of command {seq} of run {key} is no longer current"
            )));
        }
        Ok(())
    }

    /// [`Store::time_out_heartbeats`](crate::store::Store::time_out_heartbeats).
    pub(super) async fn time_out_attempts(&self, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let db = &self.inner;
        let mut client = db.client().await?;
        // An idle sweep is one indexed read.
        let any = db
            .query_opt(
                &client,
                concat!(
                    "SELECT 1 FROM activity_tasks WHERE namespace = $1
                     AND heartbeat_deadline_ms IS NOT NULL AND heartbeat_deadline_ms < ",
                    now_ms!(),
                    " LIMIT 1"
                ),
                &[&db.namespace],
            )
            .await?;
        if any.is_none() {
            return Ok(0);
        }
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        // The runs' rows first (the lock order), skipping any a commit or a report holds:
        // the next sweep gets them.
        let due = db
            .query(
                &tx,
                concat!(
                    "SELECT a.run_key, a.seq, a.attempt, a.heartbeat_timeout_ms, a.scheduled_at_ms, e.body, a.event_id, ",
                    now_ms!(),
                    " FROM activity_tasks a
                     JOIN runs r ON r.namespace = a.namespace AND r.run_key = a.run_key
                     JOIN events e ON e.namespace = a.namespace AND e.run_key = a.run_key AND e.event_id = a.event_id
                     WHERE a.namespace = $1 AND a.heartbeat_deadline_ms IS NOT NULL
                     AND a.heartbeat_deadline_ms < ",
                    now_ms!(),
                    " AND a.owner IS NOT NULL
                     ORDER BY a.heartbeat_deadline_ms LIMIT $2
                     FOR UPDATE OF r, a SKIP LOCKED"
                ),
                &[&db.namespace, &limit_param(limit)],
            )
            .await?;
        let mut ended = 0;
        for row in due {
            let key: i64 = row.get(0);
            let seq: i64 = row.get(1);
            let attempt = to_u32(row.get(2));
            let timeout_ms: i64 = row.get(3);
            let scheduled_at_ms: i64 = row.get(4);
            let event_id: i64 = row.get(6);
            let now: i64 = row.get(7);
            let EventKind::ActivityScheduled { options, .. } =
                db.decode(key, event_id, row.get(5))?
            else {
                return Err(StoreError::Corrupt(format!(
                    "event {event_id} of run {key} is not the schedule of activity task {seq}"
                )));
            };
            let error = heartbeat_timeout_error(attempt, timeout_ms);
            let next = retry::next_attempt_at(
                &options,
                &error,
                attempt,
                scheduled_at_ms,
                now,
                rand::random::<f64>(),
            );
            match next {
                Some(at) => {
                    let (clear, sealed) = db.seal_error(&error);
                    db.exec(
                        &tx,
                        "UPDATE activity_tasks SET owner = NULL, lease_expires_at_ms = 0, available_at_ms = $4,
                         last_error = $5, last_error_sealed = $6, heartbeat_deadline_ms = NULL
                         WHERE namespace = $1 AND run_key = $2 AND seq = $3",
                        &[&db.namespace, &key, &seq, &at, &clear, &sealed],
                    )
                    .await?;
                }
                None => {
                    db.exec(
                        &tx,
                        "DELETE FROM activity_tasks WHERE namespace = $1 AND run_key = $2 AND seq = $3",
                        &[&db.namespace, &key, &seq],
                    )
                    .await?;
                    let seq = CommandSeq(to_u32(seq));
                    let error = error.with_attempts(attempt);
                    db.append_inbound(&tx, key, EventKind::ActivityFailed { seq, error })
                        .await?;
                }
            }
            tracing::info!(
                run = key,
                seq,
                attempt,
                "activity attempt missed its heartbeat timeout"
            );
            ended += 1;
        }
        tx.commit().await.map_err(|e| db.err(e))?;
        if ended > 0 {
            self.wake_workers();
        }
        Ok(ended)
    }
}

/// The heartbeat timeout of a call in milliseconds, as a statement parameter.
pub(super) fn timeout_param(timeout_ms: Option<u64>) -> Option<i64> {
    timeout_ms.map(|t| span_ms(to_i64(t)))
}
