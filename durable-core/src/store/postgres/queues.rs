//! Task queue limits on PostgreSQL: setting and showing them, and judging them when an
//! attempt starts.
//!
//! Every start on a limited queue happens in a transaction holding the queue's
//! `queue_limits` row lock (`FOR UPDATE`): the claim of a batch and the commit that
//! creates a local attempt alike. So any number of worker processes take turns at the
//! numbers and never exceed them together. Queues without limits never touch that
//! table beyond a `NOT EXISTS` probe inside the statements they ran anyway.
//!
//! Which queues have limits is read at most once a second per store handle (the
//! [`LimitedView`]), only to know which queues need the locked claim: a queue whose
//! limit was just set is left out of the unlimited claim at once (by the probe) and
//! served by the locked claim from the next refresh, so for up to a second after
//! `set-limit` its attempts wait; no attempt ever starts past a limit because of the view.

use super::{Inner, PostgresStore, limit_param, to_u32};
use crate::clock;
use crate::error::StoreError;
use crate::event::EventKind;
use crate::ids::{CommandSeq, RunId, RunKey, WorkerId, WorkflowId};
use crate::store::ActivityTask;
use crate::store::queues::{Bucket, QueueInfo, QueueLimit, admit, check_queue_name};
use deadpool_postgres::GenericClient;

/// How long the view of which queues have limits is used before it is read again.
const VIEW_REFRESH_MS: i64 = 1000;

/// The queues of the namespace that had limits when last read.
#[derive(Debug, Default)]
pub(super) struct LimitedView {
    read_at_ms: Option<i64>,
    queues: Vec<String>,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A limited queue's state at a start, read under its row lock.
pub(super) struct Room {
    limit: QueueLimit,
    running: u64,
    bucket: Bucket,
    now: i64,
}

impl Inner {
    /// Decodes the rows a claim's UPDATE returned and starts their heartbeat clocks.
    pub(super) async fn claimed_tasks(
        &self,
        c: &impl GenericClient,
        rows: Vec<tokio_postgres::Row>,
    ) -> Result<Vec<ActivityTask>, StoreError> {
        let mut claimed = Vec::with_capacity(rows.len());
        let mut heartbeat_clocks = Vec::new();
        for r in rows {
            let key: i64 = r.get(0);
            let seq: i64 = r.get(1);
            let event_id: i64 = r.get(5);
            let EventKind::ActivityScheduled { input, options, .. } =
                self.decode(key, event_id, r.get(8))?
            else {
                return Err(StoreError::Corrupt(format!(
                    "event {event_id} of run {key} is not the schedule of activity task {seq}"
                )));
            };
            if let Some(timeout) = super::heartbeat::timeout_param(options.heartbeat_timeout_ms) {
                heartbeat_clocks.push((key, seq, timeout));
            }
            claimed.push(ActivityTask {
                key: RunKey(key),
                workflow_id: WorkflowId(r.get(6)),
                run_id: RunId(r.get(7)),
                seq: CommandSeq(to_u32(seq)),
                name: r.get(4),
                input,
                options,
                attempt: to_u32(r.get(2)),
                scheduled_at_ms: r.get(3),
                last_heartbeat: self.open_heartbeat(r.get(9)),
            });
        }
        self.start_heartbeat_clocks(c, &heartbeat_clocks).await?;
        Ok(claimed)
    }

    /// Locks `queue`'s limit row and reads its room, deleting slots of attempts that
    /// ended; `None` when the queue has no limit. Call inside a transaction.
    pub(super) async fn lock_room(
        &self,
        c: &impl GenericClient,
        queue: &str,
    ) -> Result<Option<Room>, StoreError> {
        let Some(row) = self
            .query_opt(
                c,
                concat!(
                    "SELECT max_concurrency, rate_starts, rate_per_ms, rate_burst, tokens, tokens_at_ms, ",
                    now_ms!(),
                    " FROM queue_limits WHERE namespace = $1 AND task_queue = $2 FOR UPDATE"
                ),
                &[&self.namespace, &queue],
            )
            .await?
        else {
            return Ok(None);
        };
        let limit = QueueLimit::from_columns([row.get(0), row.get(1), row.get(2), row.get(3)]);
        let bucket = Bucket {
            tokens: row.get(4),
            at_ms: row.get(5),
        };
        let now: i64 = row.get(6);
        self.exec(
            c,
            "DELETE FROM queue_slots s WHERE s.namespace = $1 AND s.task_queue = $2
             AND NOT EXISTS (SELECT 1 FROM activity_tasks t WHERE t.namespace = s.namespace
                 AND t.run_key = s.run_key AND t.seq = s.seq AND t.attempt = s.attempt
                 AND t.owner IS NOT NULL AND t.lease_expires_at_ms >= $3)",
            &[&self.namespace, &queue, &now],
        )
        .await?;
        let running: i64 = self
            .query_opt(
                c,
                "SELECT count(*) FROM queue_slots WHERE namespace = $1 AND task_queue = $2",
                &[&self.namespace, &queue],
            )
            .await?
            .map_or(0, |r| r.get(0));
        Ok(Some(Room {
            limit,
            running: count(running),
            bucket,
            now,
        }))
    }

    /// Records that the attempts `started` ((run, command, attempt)) started on `queue`
    /// under `room`: their slots, and the tokens they took. Call in the transaction that
    /// locked the room.
    pub(super) async fn spend(
        &self,
        c: &impl GenericClient,
        queue: &str,
        room: &Room,
        started: &[(i64, i64, i64)],
    ) -> Result<(), StoreError> {
        if started.is_empty() {
            return Ok(());
        }
        let keys: Vec<i64> = started.iter().map(|s| s.0).collect();
        let seqs: Vec<i64> = started.iter().map(|s| s.1).collect();
        let attempts: Vec<i64> = started.iter().map(|s| s.2).collect();
        self.exec(
            c,
            "INSERT INTO queue_slots (namespace, task_queue, run_key, seq, attempt)
             SELECT $1, $2, k, s, a FROM unnest($3::BIGINT[], $4::BIGINT[], $5::BIGINT[]) AS u(k, s, a)
             ON CONFLICT (namespace, task_queue, run_key, seq) DO UPDATE SET attempt = excluded.attempt",
            &[&self.namespace, &queue, &keys, &seqs, &attempts],
        )
        .await?;
        if room.limit.rate.is_some() {
            let n = u64::try_from(started.len()).unwrap_or(u64::MAX);
            let (_, bucket) = admit(&room.limit, room.running, room.bucket, room.now, n);
            self.exec(
                c,
                "UPDATE queue_limits SET tokens = $3, tokens_at_ms = $4
                 WHERE namespace = $1 AND task_queue = $2",
                &[&self.namespace, &queue, &bucket.tokens, &bucket.at_ms],
            )
            .await?;
        }
        Ok(())
    }
}

impl Room {
    /// How many of `wanted` may start now.
    pub(super) fn allows(&self, wanted: u64) -> u64 {
        admit(&self.limit, self.running, self.bucket, self.now, wanted).0
    }
}

async fn info(db: &Inner, c: &impl GenericClient, queue: &str) -> Result<QueueInfo, StoreError> {
    let limit_row = db
        .query_opt(
            c,
            concat!(
                "SELECT max_concurrency, rate_starts, rate_per_ms, rate_burst, tokens, tokens_at_ms, ",
                now_ms!(),
                " FROM queue_limits WHERE namespace = $1 AND task_queue = $2"
            ),
            &[&db.namespace, &queue],
        )
        .await?;
    let counts = db
        .query_opt(
            c,
            concat!(
                "SELECT count(*) FILTER (WHERE owner IS NOT NULL AND lease_expires_at_ms >= ",
                now_ms!(),
                "), count(*) FILTER (WHERE owner IS NULL OR lease_expires_at_ms < ",
                now_ms!(),
                ") FROM activity_tasks WHERE namespace = $1 AND task_queue = $2"
            ),
            &[&db.namespace, &queue],
        )
        .await?;
    let (running, waiting) = counts.map_or((0, 0), |r| (r.get::<_, i64>(0), r.get::<_, i64>(1)));
    let (limit, tokens) = match limit_row {
        None => (None, None),
        Some(r) => {
            let limit = QueueLimit::from_columns([r.get(0), r.get(1), r.get(2), r.get(3)]);
            let bucket = Bucket {
                tokens: r.get(4),
                at_ms: r.get(5),
            };
            let now: i64 = r.get(6);
            let tokens = limit.rate.map(|rate| bucket.refilled(&rate, now).whole());
            (Some(limit), tokens)
        }
    };
    Ok(QueueInfo {
        queue: queue.to_owned(),
        limit,
        running: count(running),
        waiting: count(waiting),
        tokens,
    })
}

impl PostgresStore {
    /// The queues among `served` that have limits, from a view read at most once a
    /// second.
    pub(super) async fn limited_queues(
        &self,
        served: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let now = clock::now_ms();
        let fresh = self.limited.lock().ok().and_then(|v| {
            v.read_at_ms
                .filter(|at| (0..VIEW_REFRESH_MS).contains(&(now - at)))
                .map(|_| v.queues.clone())
        });
        let all = match fresh {
            Some(queues) => queues,
            None => {
                let db = &self.inner;
                let client = db.client().await?;
                let queues: Vec<String> = db
                    .query(
                        &client,
                        "SELECT task_queue FROM queue_limits WHERE namespace = $1 ORDER BY task_queue",
                        &[&db.namespace],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if let Ok(mut view) = self.limited.lock() {
                    view.read_at_ms = Some(now);
                    view.queues = queues.clone();
                }
                queues
            }
        };
        Ok(all.into_iter().filter(|q| served.contains(q)).collect())
    }

    fn forget_limited_view(&self) {
        if let Ok(mut view) = self.limited.lock() {
            view.read_at_ms = None;
        }
    }

    /// Claims up to `wanted` due attempts of limited `queue` under its row lock, as many
    /// as its limits allow now.
    pub(super) async fn claim_limited(
        &self,
        worker: &WorkerId,
        names: &[String],
        queue: &str,
        wanted: usize,
        lease_ms: i64,
    ) -> Result<Vec<ActivityTask>, StoreError> {
        let db = &self.inner;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let Some(room) = db.lock_room(&tx, queue).await? else {
            // The limit was cleared since the view was read: the unlimited claim serves
            // the queue now.
            tx.rollback().await.map_err(|e| db.err(e))?;
            self.forget_limited_view();
            return Ok(Vec::new());
        };
        let allowed = room.allows(u64::try_from(wanted).unwrap_or(u64::MAX));
        if allowed == 0 {
            tx.commit().await.map_err(|e| db.err(e))?;
            return Ok(Vec::new());
        }
        let rows = db
            .query(
                &tx,
                concat!(
                    "WITH picked AS (
                         SELECT namespace, run_key, seq FROM activity_tasks
                         WHERE namespace = $1 AND available_at_ms <= ",
                    now_ms!(),
                    " AND (owner IS NULL OR lease_expires_at_ms < ",
                    now_ms!(),
                    ")
                         AND name = ANY($2) AND task_queue = $3
                         ORDER BY available_at_ms LIMIT $4
                         FOR UPDATE SKIP LOCKED)
                     UPDATE activity_tasks a SET attempt = a.attempt + 1, owner = $5,
                         heartbeat_deadline_ms = NULL, lease_expires_at_ms = ",
                    now_ms!(),
                    " + $6
                     FROM picked p, runs r, events e
                     WHERE a.namespace = p.namespace AND a.run_key = p.run_key AND a.seq = p.seq
                     AND r.namespace = a.namespace AND r.run_key = a.run_key
                     AND e.namespace = a.namespace AND e.run_key = a.run_key AND e.event_id = a.event_id
                     RETURNING a.run_key, a.seq, a.attempt, a.scheduled_at_ms, a.name, a.event_id,
                         r.workflow_id, r.run_id, e.body, a.heartbeat_details"
                ),
                &[
                    &db.namespace,
                    &names,
                    &queue,
                    &limit_param(usize::try_from(allowed).unwrap_or(usize::MAX)),
                    &worker.0,
                    &lease_ms,
                ],
            )
            .await?;
        let started: Vec<(i64, i64, i64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        db.spend(&tx, queue, &room, &started).await?;
        let claimed = db.claimed_tasks(&tx, rows).await?;
        tx.commit().await.map_err(|e| db.err(e))?;
        Ok(claimed)
    }

    /// [`Store::set_queue_limit`](crate::store::Store::set_queue_limit).
    pub(super) async fn set_limit(&self, queue: &str, limit: QueueLimit) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        limit.validate()?;
        let db = &self.inner;
        let [concurrency, starts, per_ms, burst] = limit.to_columns();
        let tokens = Bucket::full(&limit, 0).tokens;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        db.exec(
            &tx,
            concat!(
                "INSERT INTO queue_limits (namespace, task_queue, max_concurrency, rate_starts, rate_per_ms,
                 rate_burst, tokens, tokens_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, ",
                now_ms!(),
                ", ",
                now_ms!(),
                ")
                 ON CONFLICT (namespace, task_queue) DO UPDATE SET max_concurrency = excluded.max_concurrency,
                 rate_starts = excluded.rate_starts, rate_per_ms = excluded.rate_per_ms,
                 rate_burst = excluded.rate_burst, tokens = excluded.tokens,
                 tokens_at_ms = excluded.tokens_at_ms, updated_at_ms = excluded.updated_at_ms"
            ),
            &[
                &db.namespace,
                &queue,
                &concurrency,
                &starts,
                &per_ms,
                &burst,
                &tokens,
            ],
        )
        .await?;
        // Attempts running already (started while the queue had no limit) count from now
        // on.
        db.exec(
            &tx,
            concat!(
                "INSERT INTO queue_slots (namespace, task_queue, run_key, seq, attempt)
                 SELECT namespace, task_queue, run_key, seq, attempt FROM activity_tasks
                 WHERE namespace = $1 AND task_queue = $2 AND owner IS NOT NULL
                 AND lease_expires_at_ms >= ",
                now_ms!(),
                " ON CONFLICT (namespace, task_queue, run_key, seq) DO UPDATE SET attempt = excluded.attempt"
            ),
            &[&db.namespace, &queue],
        )
        .await?;
        tx.commit().await.map_err(|e| db.err(e))?;
        self.forget_limited_view();
        self.wake_workers();
        Ok(())
    }

    /// [`Store::clear_queue_limit`](crate::store::Store::clear_queue_limit).
    pub(super) async fn clear_limit(&self, queue: &str) -> Result<bool, StoreError> {
        check_queue_name(queue)?;
        let db = &self.inner;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let n = db
            .exec(
                &tx,
                "DELETE FROM queue_limits WHERE namespace = $1 AND task_queue = $2",
                &[&db.namespace, &queue],
            )
            .await?;
        db.exec(
            &tx,
            "DELETE FROM queue_slots WHERE namespace = $1 AND task_queue = $2",
            &[&db.namespace, &queue],
        )
        .await?;
        tx.commit().await.map_err(|e| db.err(e))?;
        self.forget_limited_view();
        self.wake_workers();
        Ok(n > 0)
    }

    /// [`Store::queue_info`](crate::store::Store::queue_info).
    pub(super) async fn info_of(&self, queue: &str) -> Result<QueueInfo, StoreError> {
        check_queue_name(queue)?;
        let client = self.inner.client().await?;
        info(&self.inner, &client, queue).await
    }

    /// [`Store::list_queues`](crate::store::Store::list_queues).
    pub(super) async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let names: Vec<String> = db
            .query(
                &client,
                "SELECT task_queue FROM queue_limits WHERE namespace = $1
                 UNION SELECT DISTINCT task_queue FROM activity_tasks WHERE namespace = $1
                 ORDER BY 1",
                &[&db.namespace],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for queue in names {
            out.push(info(db, &client, &queue).await?);
        }
        Ok(out)
    }
}
