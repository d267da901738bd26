//! Run execution timeouts: the sweep that ends runs past their deadline.

use super::{Shared, SqliteStore, sql_err, to_u64};
use crate::clock;
use crate::error::{StoreError, WorkflowError};
use crate::event::EventKind;
use rusqlite::{Connection, OptionalExtension, params};
use std::time::Duration;

impl SqliteStore {
    /// [`Store::time_out_runs`](crate::store::Store::time_out_runs).
    pub(super) async fn time_out_runs_past_deadline(
        &self,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let ns = self.shared.namespace.clone();
        let lim = i64::try_from(limit).unwrap_or(i64::MAX);
        // Look on a reader first, so an idle sweep takes no write lock.
        let due: Vec<i64> = self
            .readers
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT run_key FROM runs WHERE namespace = ?1 AND deadline_ms IS NOT NULL
                         AND status IN ('running', 'suspended') AND deadline_ms < ?2
                         ORDER BY deadline_ms LIMIT ?3",
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
        self.writer
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let mut ended = 0;
                for key in due {
                    if shared.time_out_run(conn, key, now)? {
                        ended += 1;
                    }
                }
                Ok(ended)
            })
            .await
    }
}

impl Shared {
    /// Ends one run past its deadline, if it still is; true when it did.
    fn time_out_run(&self, conn: &Connection, key: i64, now: i64) -> Result<bool, StoreError> {
        let row: Option<(i64, i64)> = conn
            .prepare_cached(
                "SELECT last_event_id, execution_timeout_ms FROM runs WHERE run_key = ?1
                 AND deadline_ms IS NOT NULL AND status IN ('running', 'suspended') AND deadline_ms < ?2",
            )
            .map_err(sql_err)?
            .query_row(params![key, now], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(sql_err)?;
        let Some((last, timeout_ms)) = row else {
            return Ok(false);
        };
        let timeout = Duration::from_millis(to_u64(timeout_ms));
        let error = WorkflowError::execution_timeout(timeout);
        let reason = error.message().to_owned();
        let (_, last_id) = self.append(
            conn,
            key,
            last,
            &[
                (
                    now,
                    EventKind::RunTimedOut {
                        timeout_ms: to_u64(timeout_ms),
                    },
                ),
                (
                    now,
                    EventKind::RunFailed {
                        error: error.clone(),
                    },
                ),
            ],
        )?;
        // The owner, if any, is fenced out: its next commit is refused.
        conn.prepare_cached(
            "UPDATE runs SET status = 'failed', reason = ?2, ready = 0, owner = NULL, fence = fence + 1,
             lease_expires_at_ms = 0, last_event_id = ?3, updated_at_ms = ?4, activation_failures = 0
             WHERE run_key = ?1",
        )
        .map_err(sql_err)?
        .execute(params![key, reason, last_id, now])
        .map_err(sql_err)?;
        for sql in [
            "DELETE FROM activity_tasks WHERE run_key = ?1",
            "DELETE FROM timers WHERE run_key = ?1",
            "DELETE FROM inbox WHERE run_key = ?1",
        ] {
            conn.prepare_cached(sql)
                .map_err(sql_err)?
                .execute([key])
                .map_err(sql_err)?;
        }
        self.run_ended(conn, key, &EventKind::RunFailed { error })?;
        tracing::info!(run = key, reason, "run ended: execution timeout");
        Ok(true)
    }
}
