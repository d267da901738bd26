//! Task queue limits on SQLite: setting and showing them, and judging them when an
//! attempt starts. Every start on a limited queue happens on the one writer connection,
//! in the transaction that starts it, so processes sharing the file take turns at the
//! write lock and can never exceed a limit together.

use super::{Shared, SqliteStore, sql_err, to_u32};
use crate::clock;
use crate::error::StoreError;
use crate::event::EventKind;
use crate::ids::{CommandSeq, RunId, RunKey, WorkflowId};
use crate::store::ActivityTask;
use crate::store::queues::{Bucket, QueueInfo, QueueLimit, admit, check_queue_name};
use rusqlite::{Connection, OptionalExtension, params};

/// A limited queue's state at a start: its limit, attempts running, its rate bucket.
pub(super) struct Room {
    pub(super) limit: QueueLimit,
    pub(super) running: u64,
    pub(super) bucket: Bucket,
}

impl Room {
    /// How many of `wanted` may start now.
    pub(super) fn allows(&self, now: i64, wanted: u64) -> u64 {
        admit(&self.limit, self.running, self.bucket, now, wanted).0
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The limit of `queue` and its bucket, if it has one.
fn limit_row(
    conn: &Connection,
    namespace: &str,
    queue: &str,
) -> Result<Option<(QueueLimit, Bucket)>, StoreError> {
    conn.prepare_cached(
        "SELECT max_concurrency, rate_starts, rate_per_ms, rate_burst, tokens, tokens_at_ms
         FROM queue_limits WHERE namespace = ?1 AND task_queue = ?2",
    )
    .map_err(sql_err)?
    .query_row(params![namespace, queue], |r| {
        Ok((
            QueueLimit::from_columns([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]),
            Bucket {
                tokens: r.get(4)?,
                at_ms: r.get(5)?,
            },
        ))
    })
    .optional()
    .map_err(sql_err)
}

/// Slots of `queue` whose attempt still runs (current attempt, owned, lease live).
fn live_slots(
    conn: &Connection,
    namespace: &str,
    queue: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM queue_slots s WHERE s.namespace = ?1 AND s.task_queue = ?2
             AND EXISTS (SELECT 1 FROM activity_tasks t WHERE t.run_key = s.run_key AND t.seq = s.seq
                 AND t.attempt = s.attempt AND t.owner IS NOT NULL AND t.lease_expires_at_ms >= ?3)",
        )
        .map_err(sql_err)?
        .query_row(params![namespace, queue, now], |r| r.get(0))
        .map_err(sql_err)?;
    Ok(count(n))
}

/// Attempts of `queue` running now and waiting to start, from the attempts themselves.
fn attempt_counts(
    conn: &Connection,
    namespace: &str,
    queue: &str,
    now: i64,
) -> Result<(u64, u64), StoreError> {
    conn.prepare_cached(
        "SELECT coalesce(sum(owner IS NOT NULL AND lease_expires_at_ms >= ?3), 0),
                coalesce(sum(owner IS NULL OR lease_expires_at_ms < ?3), 0)
         FROM activity_tasks WHERE namespace = ?1 AND task_queue = ?2",
    )
    .map_err(sql_err)?
    .query_row(params![namespace, queue, now], |r| {
        Ok((count(r.get(0)?), count(r.get(1)?)))
    })
    .map_err(sql_err)
}

fn info(conn: &Connection, namespace: &str, queue: &str) -> Result<QueueInfo, StoreError> {
    let now = clock::host_now_ms();
    let row = limit_row(conn, namespace, queue)?;
    let (running, waiting) = attempt_counts(conn, namespace, queue, now)?;
    let tokens =
        row.and_then(|(limit, bucket)| limit.rate.map(|rate| bucket.refilled(&rate, now).whole()));
    Ok(QueueInfo {
        queue: queue.to_owned(),
        limit: row.map(|(limit, _)| limit),
        running,
        waiting,
        tokens,
    })
}

impl Shared {
    /// The room of `queue` for starts now, when it has a limit (on the writer: slots
    /// of attempts that ended are deleted on the way).
    pub(super) fn room(
        &self,
        conn: &Connection,
        queue: &str,
        now: i64,
    ) -> Result<Option<Room>, StoreError> {
        let Some((limit, bucket)) = limit_row(conn, &self.namespace, queue)? else {
            return Ok(None);
        };
        conn.prepare_cached(
            "DELETE FROM queue_slots WHERE namespace = ?1 AND task_queue = ?2
             AND NOT EXISTS (SELECT 1 FROM activity_tasks t WHERE t.run_key = queue_slots.run_key
                 AND t.seq = queue_slots.seq AND t.attempt = queue_slots.attempt
                 AND t.owner IS NOT NULL AND t.lease_expires_at_ms >= ?3)",
        )
        .map_err(sql_err)?
        .execute(params![self.namespace, queue, now])
        .map_err(sql_err)?;
        let running = live_slots(conn, &self.namespace, queue, now)?;
        Ok(Some(Room {
            limit,
            running,
            bucket,
        }))
    }

    /// Records that `started` attempts of `queue` started under `room`: the rate bucket
    /// loses their tokens. Their slots are added by [`Shared::take_slot`].
    pub(super) fn spend(
        &self,
        conn: &Connection,
        queue: &str,
        room: &Room,
        now: i64,
        started: u64,
    ) -> Result<(), StoreError> {
        if room.limit.rate.is_none() {
            return Ok(());
        }
        let (_, bucket) = admit(&room.limit, room.running, room.bucket, now, started);
        conn.prepare_cached(
            "UPDATE queue_limits SET tokens = ?3, tokens_at_ms = ?4 WHERE namespace = ?1 AND task_queue = ?2",
        )
        .map_err(sql_err)?
        .execute(params![self.namespace, queue, bucket.tokens, bucket.at_ms])
        .map_err(sql_err)?;
        Ok(())
    }

    /// Counts an attempt that started on a limited queue.
    pub(super) fn take_slot(
        &self,
        conn: &Connection,
        queue: &str,
        key: i64,
        seq: i64,
        attempt: i64,
    ) -> Result<(), StoreError> {
        conn.prepare_cached(
            "INSERT INTO queue_slots (namespace, task_queue, run_key, seq, attempt) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (namespace, task_queue, run_key, seq) DO UPDATE SET attempt = excluded.attempt",
        )
        .map_err(sql_err)?
        .execute(params![self.namespace, queue, key, seq, attempt])
        .map_err(sql_err)?;
        Ok(())
    }

    /// Starts the next attempt of activity task (`key`, `seq`) for `me` if it is due and
    /// free; with `unlimited_only`, only if its queue has no limit (the check is part
    /// of the one UPDATE, so the unlimited path costs no extra statement).
    #[allow(clippy::too_many_arguments)] // one claim's coordinates and its clock
    pub(super) fn claim_attempt(
        &self,
        conn: &Connection,
        key: i64,
        seq: i64,
        me: &str,
        lease_until: i64,
        now: i64,
        unlimited_only: bool,
    ) -> Result<Option<ActivityTask>, StoreError> {
        type Claimed = (i64, i64, i64, String, String, String, Option<Vec<u8>>);
        let row: Option<Claimed> = conn
            .prepare_cached(
                "UPDATE activity_tasks SET attempt = attempt + 1, owner = ?3, lease_expires_at_ms = ?4,
                 heartbeat_deadline_ms = NULL
                 WHERE run_key = ?1 AND seq = ?2 AND available_at_ms <= ?5
                 AND (owner IS NULL OR lease_expires_at_ms < ?5)
                 AND (?6 = 0 OR NOT EXISTS (SELECT 1 FROM queue_limits l
                      WHERE l.namespace = activity_tasks.namespace AND l.task_queue = activity_tasks.task_queue))
                 RETURNING attempt, event_id, scheduled_at_ms, name,
                   (SELECT workflow_id FROM runs WHERE runs.run_key = activity_tasks.run_key),
                   (SELECT run_id FROM runs WHERE runs.run_key = activity_tasks.run_key),
                   heartbeat_details",
            )
            .map_err(sql_err)?
            .query_row(params![key, seq, me, lease_until, now, unlimited_only], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })
            .optional()
            .map_err(sql_err)?;
        let Some((attempt, event_id, scheduled_at_ms, name, workflow_id, run_id, heartbeat)) = row
        else {
            return Ok(None);
        };
        let body: Vec<u8> = conn
            .prepare_cached("SELECT body FROM events WHERE run_key = ?1 AND event_id = ?2")
            .map_err(sql_err)?
            .query_row(params![key, event_id], |r| r.get(0))
            .map_err(sql_err)?;
        let EventKind::ActivityScheduled { input, options, .. } =
            self.decode(key, event_id, body)?
        else {
            return Err(StoreError::Corrupt(format!(
                "event {event_id} of run {key} is not the schedule of activity task {seq}"
            )));
        };
        self.start_heartbeat_clock(conn, key, seq, options.heartbeat_timeout_ms, now)?;
        Ok(Some(ActivityTask {
            key: RunKey(key),
            workflow_id: WorkflowId(workflow_id),
            run_id: RunId(run_id),
            seq: CommandSeq(u32::try_from(seq).unwrap_or(0)),
            name,
            input,
            options,
            attempt: to_u32(attempt),
            scheduled_at_ms,
            last_heartbeat: self.open_heartbeat(heartbeat),
        }))
    }
}

/// On a reader: the limited queues among `queues_json` and how many attempts each could
/// start now (0 for a full one), so a claim asks the writer only for what may start.
pub(super) fn limited_queues(
    conn: &Connection,
    namespace: &str,
    queues_json: &str,
    now: i64,
) -> Result<Vec<(String, u64)>, StoreError> {
    let names: Vec<String> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT task_queue FROM queue_limits WHERE namespace = ?1
                 AND task_queue IN (SELECT value FROM json_each(?2)) ORDER BY task_queue",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map(params![namespace, queues_json], |r| r.get(0))
            .map_err(sql_err)?;
        rows.collect::<Result<_, _>>().map_err(sql_err)?
    };
    let mut out = Vec::with_capacity(names.len());
    for queue in names {
        let Some((limit, bucket)) = limit_row(conn, namespace, &queue)? else {
            continue;
        };
        let running = live_slots(conn, namespace, &queue, now)?;
        let (room, _) = admit(&limit, running, bucket, now, u64::from(u32::MAX));
        out.push((queue, room));
    }
    Ok(out)
}

impl SqliteStore {
    /// [`Store::set_queue_limit`](crate::store::Store::set_queue_limit).
    pub(super) async fn set_limit(&self, queue: &str, limit: QueueLimit) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        limit.validate()?;
        let ns = self.shared.namespace.clone();
        let queue = queue.to_owned();
        self.writer
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let [concurrency, starts, per_ms, burst] = limit.to_columns();
                let bucket = Bucket::full(&limit, now);
                conn.prepare_cached(
                    "INSERT INTO queue_limits (namespace, task_queue, max_concurrency, rate_starts, rate_per_ms,
                     rate_burst, tokens, tokens_at_ms, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                     ON CONFLICT (namespace, task_queue) DO UPDATE SET max_concurrency = excluded.max_concurrency,
                     rate_starts = excluded.rate_starts, rate_per_ms = excluded.rate_per_ms,
                     rate_burst = excluded.rate_burst, tokens = excluded.tokens,
                     tokens_at_ms = excluded.tokens_at_ms, updated_at_ms = excluded.updated_at_ms",
                )
                .map_err(sql_err)?
                .execute(params![ns, queue, concurrency, starts, per_ms, burst, bucket.tokens, now])
                .map_err(sql_err)?;
                // Attempts running already (started while the queue had no limit) count
                // from now on.
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO queue_slots (namespace, task_queue, run_key, seq, attempt)
                     SELECT namespace, task_queue, run_key, seq, attempt FROM activity_tasks
                     WHERE namespace = ?1 AND task_queue = ?2 AND owner IS NOT NULL AND lease_expires_at_ms >= ?3",
                )
                .map_err(sql_err)?
                .execute(params![ns, queue, now])
                .map_err(sql_err)?;
                Ok(())
            })
            .await?;
        self.wake_workers();
        Ok(())
    }

    /// [`Store::clear_queue_limit`](crate::store::Store::clear_queue_limit).
    pub(super) async fn clear_limit(&self, queue: &str) -> Result<bool, StoreError> {
        check_queue_name(queue)?;
        let ns = self.shared.namespace.clone();
        let queue = queue.to_owned();
        let cleared = self
            .writer
            .submit(move |conn| {
                let n = conn
                    .prepare_cached(
                        "DELETE FROM queue_limits WHERE namespace = ?1 AND task_queue = ?2",
                    )
                    .map_err(sql_err)?
                    .execute(params![ns, queue])
                    .map_err(sql_err)?;
                conn.prepare_cached(
                    "DELETE FROM queue_slots WHERE namespace = ?1 AND task_queue = ?2",
                )
                .map_err(sql_err)?
                .execute(params![ns, queue])
                .map_err(sql_err)?;
                Ok(n > 0)
            })
            .await?;
        self.wake_workers();
        Ok(cleared)
    }

    /// [`Store::queue_info`](crate::store::Store::queue_info).
    pub(super) async fn info_of(&self, queue: &str) -> Result<QueueInfo, StoreError> {
        check_queue_name(queue)?;
        let ns = self.shared.namespace.clone();
        let queue = queue.to_owned();
        self.readers
            .submit(move |conn| info(conn, &ns, &queue))
            .await
    }

    /// [`Store::list_queues`](crate::store::Store::list_queues).
    pub(super) async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let ns = self.shared.namespace.clone();
        self.readers
            .submit(move |conn| {
                let names: Vec<String> = {
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT task_queue FROM queue_limits WHERE namespace = ?1
                             UNION SELECT DISTINCT task_queue FROM activity_tasks WHERE namespace = ?1
                             ORDER BY 1",
                        )
                        .map_err(sql_err)?;
                    let rows = stmt.query_map([&ns], |r| r.get(0)).map_err(sql_err)?;
                    rows.collect::<Result<_, _>>().map_err(sql_err)?
                };
                names.iter().map(|q| info(conn, &ns, q)).collect()
            })
            .await
    }
}
