//! Run execution timeouts: the sweep that ends runs past their deadline, judged by the
//! database server's clock.

use super::{PostgresStore, limit_param, to_u64};
use crate::error::{StoreError, WorkflowError};
use crate::event::EventKind;
use std::time::Duration;

impl PostgresStore {
    /// [`Store::time_out_runs`](crate::store::Store::time_out_runs).
    pub(super) async fn time_out_runs_past_deadline(
        &self,
        limit: usize,
    ) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let db = &self.inner;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        // The runs' rows first (the lock order), skipping any a commit holds: the next
        // sweep gets them.
        let due = db
            .query(
                &tx,
                concat!(
                    "SELECT run_key, last_event_id, execution_timeout_ms, ",
                    now_ms!(),
                    " FROM runs WHERE namespace = $1 AND deadline_ms IS NOT NULL
                     AND status IN ('running', 'suspended') AND deadline_ms < ",
                    now_ms!(),
                    " ORDER BY deadline_ms LIMIT $2 FOR UPDATE SKIP LOCKED"
                ),
                &[&db.namespace, &limit_param(limit)],
            )
            .await?;
        let mut ended = 0;
        for row in due {
            let key: i64 = row.get(0);
            let last: i64 = row.get(1);
            let timeout_ms: i64 = row.get(2);
            let now: i64 = row.get(3);
            let error = WorkflowError::execution_timeout(Duration::from_millis(to_u64(timeout_ms)));
            let reason = error.message().to_owned();
            let (_, last_id) = db
                .append(
                    &tx,
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
                )
                .await?;
            // The owner, if any, is fenced out: its next commit is refused.
            db.exec(
                &tx,
                concat!(
                    "UPDATE runs SET status = 'failed', reason = $3, ready = FALSE, owner = NULL,
                     fence = fence + 1, lease_expires_at_ms = 0, last_event_id = $4,
                     activation_failures = 0, updated_at_ms = ",
                    now_ms!(),
                    " WHERE namespace = $1 AND run_key = $2"
                ),
                &[&db.namespace, &key, &reason, &last_id],
            )
            .await?;
            for sql in [
                "DELETE FROM activity_tasks WHERE namespace = $1 AND run_key = $2",
                "DELETE FROM timers WHERE namespace = $1 AND run_key = $2",
                "DELETE FROM inbox WHERE namespace = $1 AND run_key = $2",
            ] {
                db.exec(&tx, sql, &[&db.namespace, &key]).await?;
            }
            db.run_ended(&tx, key, &EventKind::RunFailed { error })
                .await?;
            tracing::info!(run = key, reason, "run ended: execution timeout");
            ended += 1;
        }
        tx.commit().await.map_err(|e| db.err(e))?;
        Ok(ended)
    }
}
