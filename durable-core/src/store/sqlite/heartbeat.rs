//! Activity heartbeats: recording them, starting an attempt's heartbeat clock, and the
//! sweep that ends attempts whose heartbeat timeout passed.

use super::{Shared, SqliteStore, sql_err, to_i64};
use crate::clock;
use crate::error::StoreError;
use crate::event::EventKind;
use crate::ids::{CommandSeq, RunKey, WorkerId};
use crate::payload::Payload;
use crate::retry;
use crate::store::sealing::{heartbeat_timeout_error, open_details, seal};
use rusqlite::{Connection, OptionalExtension, params};

impl Shared {
    /// Heartbeat details as stored, opened; see [`open_details`].
    pub(super) fn open_heartbeat(&self, sealed: Option<Vec<u8>>) -> Option<Payload> {
        open_details(self.codec.as_ref(), sealed)
    }

    /// Starts the heartbeat clock of an attempt that just began, when its call has a
    /// heartbeat timeout: the attempt must heartbeat before `now + timeout`.
    pub(super) fn start_heartbeat_clock(
        &self,
        conn: &Connection,
        key: i64,
        seq: i64,
        timeout_ms: Option<u64>,
        now: i64,
    ) -> Result<(), StoreError> {
        let Some(timeout) = timeout_ms.map(to_i64) else {
            return Ok(());
        };
        conn.prepare_cached(
            "UPDATE activity_tasks SET heartbeat_timeout_ms = ?3, heartbeat_deadline_ms = ?4
             WHERE run_key = ?1 AND seq = ?2",
        )
        .map_err(sql_err)?
        .execute(params![key, seq, timeout, now.saturating_add(timeout)])
        .map_err(sql_err)?;
        Ok(())
    }
}

impl SqliteStore {
    /// [`Store::record_heartbeat`](crate::store::Store::record_heartbeat).
    pub(super) async fn record_heartbeat_of(
        &self,
        worker: &WorkerId,
        key: RunKey,
        seq: CommandSeq,
        attempt: u32,
        details: Payload,
    ) -> Result<(), StoreError> {
        let me = worker.0.clone();
        let sealed = seal(self.shared.codec.as_ref(), details.0);
        self.writer
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let n = conn
                    .prepare_cached(
                        "UPDATE activity_tasks SET heartbeat_details = ?5, last_heartbeat_at_ms = ?6,
                         heartbeat_deadline_ms = CASE WHEN heartbeat_timeout_ms IS NULL THEN NULL
                             ELSE ?6 + heartbeat_timeout_ms END
                         WHERE run_key = ?1 AND seq = ?2 AND attempt = ?3 AND owner = ?4",
                    )
                    .map_err(sql_err)?
                    .execute(params![key.0, seq.0, attempt, me, sealed, now])
                    .map_err(sql_err)?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!(
                        "attempt {attempt} of command {seq} of run {key} is no longer current"
                    )));
                }
                Ok(())
            })
            .await
    }

    /// [`Store::time_out_heartbeats`](crate::store::Store::time_out_heartbeats).
    pub(super) async fn time_out_attempts(&self, limit: usize) -> Result<usize, StoreError> {
        let ns = self.shared.namespace.clone();
        let lim = i64::try_from(limit).unwrap_or(i64::MAX);
        // Look on a reader first, so an idle sweep takes no write lock.
        let due: Vec<(i64, i64, i64)> = self
            .readers
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT run_key, seq, attempt FROM activity_tasks
                         WHERE namespace = ?1 AND heartbeat_deadline_ms IS NOT NULL
                         AND heartbeat_deadline_ms < ?2 AND owner IS NOT NULL
                         ORDER BY heartbeat_deadline_ms LIMIT ?3",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(params![ns, now, lim], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .map_err(sql_err)?;
                rows.collect::<Result<_, _>>().map_err(sql_err)
            })
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let shared = self.shared.clone();
        let ended = self
            .writer
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let mut ended = 0;
                for (key, seq, attempt) in due {
                    if shared.time_out_attempt(conn, key, seq, attempt, now)? {
                        ended += 1;
                    }
                }
                Ok(ended)
            })
            .await?;
        if ended > 0 {
            self.wake_workers();
        }
        Ok(ended)
    }
}

impl Shared {
    /// Ends one attempt whose heartbeat deadline passed, if it still has not
    /// heartbeated; true when it did.
    fn time_out_attempt(
        &self,
        conn: &Connection,
        key: i64,
        seq: i64,
        attempt: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let row: Option<(i64, i64, i64)> = conn
            .prepare_cached(
                "SELECT event_id, scheduled_at_ms, heartbeat_timeout_ms FROM activity_tasks
                 WHERE run_key = ?1 AND seq = ?2 AND attempt = ?3 AND owner IS NOT NULL
                 AND heartbeat_deadline_ms < ?4",
            )
            .map_err(sql_err)?
            .query_row(params![key, seq, attempt, now], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(sql_err)?;
        let Some((event_id, scheduled_at_ms, timeout_ms)) = row else {
            // It heartbeated, finished or was taken over since the sweep looked.
            return Ok(false);
        };
        let body: Vec<u8> = conn
            .prepare_cached("SELECT body FROM events WHERE run_key = ?1 AND event_id = ?2")
            .map_err(sql_err)?
            .query_row(params![key, event_id], |r| r.get(0))
            .map_err(sql_err)?;
        let EventKind::ActivityScheduled { options, .. } = self.decode(key, event_id, body)? else {
            return Err(StoreError::Corrupt(format!(
                "event {event_id} of run {key} is not the schedule of activity task {seq}"
            )));
        };
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
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
                conn.prepare_cached(
                    "UPDATE activity_tasks SET owner = NULL, lease_expires_at_ms = 0, available_at_ms = ?3,
                     last_error = ?4, heartbeat_deadline_ms = NULL WHERE run_key = ?1 AND seq = ?2",
                )
                .map_err(sql_err)?
                .execute(params![key, seq, at, self.seal_text(error.to_string())])
                .map_err(sql_err)?;
            }
            None => {
                conn.prepare_cached("DELETE FROM activity_tasks WHERE run_key = ?1 AND seq = ?2")
                    .map_err(sql_err)?
                    .execute(params![key, seq])
                    .map_err(sql_err)?;
                let seq = CommandSeq(u32::try_from(seq).unwrap_or(0));
                let error = error.with_attempts(attempt);
                self.append_inbound(conn, key, EventKind::ActivityFailed { seq, error })?;
            }
        }
        tracing::info!(
            run = key,
            seq,
            attempt,
            "activity attempt missed its heartbeat timeout"
        );
        Ok(true)
    }
}
