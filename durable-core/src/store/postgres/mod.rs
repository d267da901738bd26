//! The PostgreSQL store: many worker processes on many machines share one database.
//!
//! It keeps the same tables and rules as the SQLite store (see the [`Store`] invariants):
//! only a run's fenced owner appends to its history, everything else (signals, fired
//! timers, results of activities run elsewhere) waits in the run's inbox. Each call is
//! one transaction on a pooled connection with cached prepared statements; concurrent
//! commits of many runs are PostgreSQL's group commit. Claims use
//! `FOR UPDATE SKIP LOCKED`, so workers never wait for each other's rows. Due times and
//! lease expiry are judged by the database server's clock, never a worker's.
//!
//! Lock order, which keeps transactions free of deadlocks: a run's row first, then its
//! inbox, activity and timer rows. Statements that lock rows of two tables at once skip
//! locked rows instead of waiting. A task queue's limit row (`queues.rs`) is locked last:
//! after the run's row by a commit, alone by a claim.
//!
//! The SQL is portable beyond `FOR UPDATE SKIP LOCKED`, one advisory lock around
//! migrations and LISTEN/NOTIFY (see `notify.rs`), so a PostgreSQL-compatible distributed
//! SQL engine can take this schema; every key starts with the namespace and the run.

/// The database server's clock in milliseconds since the epoch, as SQL: the one time
/// source for due times, leases and the times the store records. `statement_timestamp`
/// is stable within a statement, so it can bound an index scan.
macro_rules! now_ms {
    () => {
        "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT"
    };
}

mod children;
mod commit;
mod deadline;
mod heartbeat;
mod notify;
mod queues;
mod reset;
mod schedule;
mod schema;

use super::sealing::{self, StoredText};
use super::{
    ActivityTask, AttemptResult, ClaimedRun, Commit, CommitOutcome, InboxItem, PendingActivity,
    PendingTimer, QueueInfo, QueueLimit, RunFamily, RunFilter, RunInfo, RunStatus, StartOutcome,
    StartRequest, Store,
};
use crate::clock;
use crate::error::{ActivityError, StoreError};
use crate::event::{Event, EventKind};
use crate::ids::{CommandSeq, EventId, FencingToken, RunId, RunKey, WorkerId, WorkflowId};
use crate::payload::{Payload, SharedCodec};
use crate::schedule::{NewSchedule, ScheduleFire, ScheduleInfo};
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures::future::try_join_all;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

/// A statement parameter.
type Param<'a> = &'a (dyn ToSql + Sync);

/// [`now_ms!`] as a constant, for SQL built at run time.
const NOW_MS: &str = now_ms!();

/// Options of [`PostgresStore::connect`].
#[derive(Clone)]
pub struct PostgresOptions {
    /// The namespace every query is scoped to.
    pub namespace: String,
    /// The PostgreSQL schema holding durable's tables, created if missing (`durable`
    /// when `None`). Lower-case letters, digits and underscores. A schema of its own per
    /// test keeps tests apart.
    pub schema: Option<String>,
    /// The most connections this handle opens for its calls (one more listens for
    /// wake-ups).
    pub pool_size: usize,
    /// A codec applied to every event body (compression, encryption).
    pub codec: Option<SharedCodec>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            namespace: super::DEFAULT_NAMESPACE.to_owned(),
            schema: None,
            pool_size: 16,
            codec: None,
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("namespace", &self.namespace)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("codec", &self.codec.is_some())
            .finish()
    }
}

struct Inner {
    pool: Pool,
    namespace: String,
    schema: String,
    /// The URL without its password, for messages.
    shown: String,
    codec: Option<SharedCodec>,
}

/// The PostgreSQL store.
///
/// Connect every worker and client to the same database (and schema) to share work; see
/// the module docs for how it behaves.
pub struct PostgresStore {
    inner: Arc<Inner>,
    /// Wakes this process's workers.
    notify: Arc<Notify>,
    /// Asks the announcer to tell other processes.
    announce: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Which queues of the namespace have limits, as last read (see `queues.rs`).
    limited: std::sync::Mutex<queues::LimitedView>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.inner.shown)
            .field("schema", &self.inner.schema)
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.inner.pool.close();
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// creating or migrating durable's schema when needed. Must be called inside a tokio
    /// runtime, which then drives the store's connections.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for a malformed URL or schema name, [`StoreError::Io`]
    /// when the server cannot be reached, [`StoreError::Foreign`] when the schema holds
    /// tables that are not durable's, [`StoreError::TooNew`] for a newer schema.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let schema = options
            .schema
            .clone()
            .unwrap_or_else(|| schema::DEFAULT_SCHEMA.to_owned());
        schema::check_schema_name(&schema)?;
        if options.namespace.is_empty() {
            return Err(StoreError::Invalid(
                "the namespace must not be empty".into(),
            ));
        }
        let shown = schema::redact(url);
        let config = schema::config(url, &schema)?;
        {
            let (mut client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|e| schema::map_err(&shown, e))?;
            let driver = tokio::spawn(connection);
            let prepared = schema::prepare(&mut client, &schema, &shown).await;
            drop(client);
            let _ = driver.await;
            prepared?;
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Other(format!("cannot build the connection pool: {e}")))?;
        let local_wake = Arc::new(Notify::new());
        let announce = Arc::new(Notify::new());
        let channel = notify::channel(&schema, &options.namespace);
        let tasks = vec![
            notify::spawn_listener(config, channel.clone(), local_wake.clone()),
            notify::spawn_sender(pool.clone(), channel, announce.clone()),
        ];
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                namespace: options.namespace,
                schema,
                shown,
                codec: options.codec,
            }),
            notify: local_wake,
            announce,
            tasks,
            limited: std::sync::Mutex::new(queues::LimitedView::default()),
        })
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Wakes this process's workers now and the other processes' by NOTIFY.
    fn wake_workers(&self) {
        self.notify.notify_waiters();
        self.announce.notify_one();
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn limit_param(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A timer or lease length in milliseconds, small enough that adding it to the clock
/// cannot overflow a BIGINT.
fn span_ms(ms: i64) -> i64 {
    ms.clamp(0, i64::MAX / 4)
}

fn check_text(what: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::Invalid(format!("{what} must not be empty")));
    }
    if value.contains('\0') {
        return Err(StoreError::Invalid(format!(
            "{what} must not contain NUL bytes"
        )));
    }
    if value.len() > 1000 {
        return Err(StoreError::Invalid(format!(
            "{what} is {} bytes long; the limit is 1000",
            value.len()
        )));
    }
    Ok(())
}

const RUN_COLUMNS: &str = "run_key, workflow_id, run_id, workflow, status, created_at_ms, updated_at_ms, last_event_id, owner, lease_expires_at_ms, reason, activation_failures, deadline_ms, task_queue";

fn run_info(r: &tokio_postgres::Row) -> RunInfo {
    let status: String = r.get(4);
    RunInfo {
        key: RunKey(r.get(0)),
        workflow_id: WorkflowId(r.get(1)),
        run_id: RunId(r.get(2)),
        workflow: r.get(3),
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Suspended),
        created_at_ms: r.get(5),
        updated_at_ms: r.get(6),
        last_event_id: EventId(to_u64(r.get(7))),
        owner: r.get(8),
        lease_expires_at_ms: r.get(9),
        reason: r.get(10),
        activation_failures: to_u32(r.get(11)),
        execution_deadline_ms: r.get(12),
        task_queue: r.get(13),
    }
}

impl Inner {
    async fn client(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| schema::map_pool_err(&self.shown, e))
    }

    fn err(&self, e: tokio_postgres::Error) -> StoreError {
        schema::map_err(&self.shown, e)
    }

    async fn prepare(
        &self,
        c: &impl GenericClient,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, StoreError> {
        c.prepare_cached(sql).await.map_err(|e| self.err(e))
    }

    /// Prepares (cached) and runs a statement, returning the affected row count.
    async fn exec(
        &self,
        c: &impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let stmt = self.prepare(c, sql).await?;
        c.execute(&stmt, params).await.map_err(|e| self.err(e))
    }

    /// Prepares (cached) and runs a query.
    async fn query(
        &self,
        c: &impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let stmt = self.prepare(c, sql).await?;
        c.query(&stmt, params).await.map_err(|e| self.err(e))
    }

    /// Prepares (cached) and runs a query of at most one row.
    async fn query_opt(
        &self,
        c: &impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, StoreError> {
        let stmt = self.prepare(c, sql).await?;
        c.query_opt(&stmt, params).await.map_err(|e| self.err(e))
    }

    fn encode(&self, kind: &EventKind) -> Result<Vec<u8>, StoreError> {
        let bytes = rmp_serde::to_vec_named(kind)
            .map_err(|e| StoreError::Invalid(format!("cannot encode event: {e}")))?;
        Ok(match &self.codec {
            Some(c) => c.encode(bytes),
            None => bytes,
        })
    }

    fn decode(&self, key: i64, id: i64, body: Vec<u8>) -> Result<EventKind, StoreError> {
        let bytes = match &self.codec {
            Some(c) => c
                .decode(body)
                .map_err(|e| StoreError::Corrupt(format!("event {id} of run {key}: codec: {e}")))?,
            None => body,
        };
        rmp_serde::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("event {id} of run {key}: {e}")))
    }

    /// An activity's last error as the two columns keep it: in clear in `last_error`
    /// without a codec, sealed in `last_error_sealed` with one (see
    /// [`sealing::StoredText`]).
    fn seal_error(&self, error: &ActivityError) -> (Option<String>, Option<Vec<u8>>) {
        match sealing::seal_text(self.codec.as_ref(), error.to_string()) {
            StoredText::Clear(t) => (Some(t), None),
            StoredText::Sealed(b) => (None, Some(b)),
        }
    }

    /// Reverses [`Inner::seal_error`] for display.
    fn open_error(&self, clear: Option<String>, sealed: Option<Vec<u8>>) -> Option<String> {
        let stored = match (sealed, clear) {
            (Some(b), _) => StoredText::Sealed(b),
            (None, Some(t)) => StoredText::Clear(t),
            (None, None) => return None,
        };
        Some(sealing::open_text(self.codec.as_ref(), stored))
    }

    /// The store's clock now.
    async fn now_ms(&self, c: &impl GenericClient) -> Result<i64, StoreError> {
        let row = self
            .query_opt(c, concat!("SELECT ", now_ms!()), &[])
            .await?
            .ok_or_else(|| StoreError::Other("the clock query returned no row".into()))?;
        Ok(row.get(0))
    }

    /// Appends events at the end of a run's history (the caller holds the run's row
    /// lock); returns the first and last ids. The inserts are pipelined.
    async fn append(
        &self,
        c: &impl GenericClient,
        key: i64,
        after: i64,
        events: &[(i64, EventKind)],
    ) -> Result<(i64, i64), StoreError> {
        let stmt = self
            .prepare(
                c,
                "INSERT INTO events (namespace, run_key, event_id, time_ms, kind, seq, body) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        let mut rows = Vec::with_capacity(events.len());
        let mut id = after;
        for (time, kind) in events {
            id += 1;
            let seq = kind.seq().map(|s| i64::from(s.0));
            rows.push((id, *time, kind.name(), seq, self.encode(kind)?));
        }
        let params: Vec<[Param<'_>; 7]> = rows
            .iter()
            .map(|(id, time, kind, seq, body)| -> [Param<'_>; 7] {
                [&self.namespace, &key, id, time, kind, seq, body]
            })
            .collect();
        try_join_all(params.iter().map(|p| c.execute(&stmt, p)))
            .await
            .map_err(|e| self.err(e))?;
        Ok((after + 1, id))
    }

    /// Queues an event from outside the run's owner (a signal, a fired timer, a remote
    /// activity result) in the run's inbox and marks the run ready. `None` when the run
    /// is finished. Takes the run's row lock first.
    async fn append_inbound(
        &self,
        c: &impl GenericClient,
        key: i64,
        kind: EventKind,
    ) -> Result<Option<i64>, StoreError> {
        let body = self.encode(&kind)?;
        let kind_name = kind.name();
        let update = self
            .prepare(
                c,
                "UPDATE runs SET ready = CASE WHEN status = 'running' THEN TRUE ELSE ready END,
                 inbox_seq = inbox_seq + 1
                 WHERE namespace = $1 AND run_key = $2 AND status IN ('running', 'suspended')
                 RETURNING inbox_seq",
            )
            .await?;
        let insert = self
            .prepare(
                c,
                concat!(
                    "INSERT INTO inbox (namespace, run_key, inbox_id, time_ms, kind, body)
                     SELECT namespace, run_key, inbox_seq, ",
                    now_ms!(),
                    ", $3, $4 FROM runs
                     WHERE namespace = $1 AND run_key = $2 AND status IN ('running', 'suspended')"
                ),
            )
            .await?;
        // One round trip: the insert reads the inbox id the update just handed out (and
        // inserts nothing when the run is finished).
        let update_params: [Param<'_>; 2] = [&self.namespace, &key];
        let insert_params: [Param<'_>; 4] = [&self.namespace, &key, &kind_name, &body];
        let (updated, inserted) = futures::join!(
            c.query_opt(&update, &update_params),
            c.execute(&insert, &insert_params),
        );
        let updated = updated.map_err(|e| self.err(e))?;
        inserted.map_err(|e| self.err(e))?;
        Ok(updated.map(|r| r.get(0)))
    }

    /// The latest run of a workflow id and its status; `lock` takes its row lock.
    async fn latest_run(
        &self,
        c: &impl GenericClient,
        workflow_id: &str,
        lock: bool,
    ) -> Result<Option<(i64, String)>, StoreError> {
        let sql = if lock {
            "SELECT run_key, status FROM runs WHERE namespace = $1 AND workflow_id = $2
             ORDER BY run_number DESC LIMIT 1 FOR UPDATE"
        } else {
            "SELECT run_key, status FROM runs WHERE namespace = $1 AND workflow_id = $2
             ORDER BY run_number DESC LIMIT 1"
        };
        Ok(self
            .query_opt(c, sql, &[&self.namespace, &workflow_id])
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    /// Appends an inbound event to the latest run of `workflow_id`, in its own
    /// transaction. A reset racing with it may finish the run it found; then it tries
    /// the new latest run.
    async fn send_inbound(
        &self,
        workflow_id: &WorkflowId,
        kind: EventKind,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let mut tried = None;
        loop {
            let tx = client.transaction().await.map_err(|e| self.err(e))?;
            let Some((key, _)) = self.latest_run(&tx, workflow_id.as_str(), false).await? else {
                return Err(StoreError::NotFound(workflow_id.clone()));
            };
            if self.append_inbound(&tx, key, kind.clone()).await?.is_some() {
                return tx.commit().await.map_err(|e| self.err(e));
            }
            drop(tx);
            if tried == Some(key) {
                return Err(StoreError::Finished(workflow_id.clone()));
            }
            tried = Some(key);
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    async fn start_run(&self, req: StartRequest) -> Result<StartOutcome, StoreError> {
        check_text("workflow id", req.workflow_id.as_str())?;
        check_text("workflow name", &req.workflow)?;
        if !req.task_queue.is_empty() {
            check_text("task queue", &req.task_queue)?;
        }
        let timeout_ms = req.execution_timeout_ms()?;
        let db = &self.inner;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let run_id = RunId::generate();
        // Run number 1 is unique per workflow id: of two racing starts, the second waits
        // for the first and inserts nothing.
        let inserted = db
            .query_opt(
                &tx,
                concat!(
                    "INSERT INTO runs (namespace, run_key, workflow_id, run_number, run_id, workflow, status,
                     created_at_ms, updated_at_ms, last_event_id, ready, execution_timeout_ms, deadline_ms,
                     task_queue)
                     VALUES ($1, nextval('run_keys'), $2, 1, $3, $4, 'running', ",
                    now_ms!(),
                    ", ",
                    now_ms!(),
                    ", 1, TRUE, $5::BIGINT, ",
                    now_ms!(),
                    " + $5::BIGINT, $6)
                     ON CONFLICT (namespace, workflow_id, run_number) DO NOTHING
                     RETURNING run_key, created_at_ms"
                ),
                &[
                    &db.namespace,
                    &req.workflow_id.as_str(),
                    &run_id.as_str(),
                    &req.workflow,
                    &timeout_ms,
                    &req.task_queue,
                ],
            )
            .await?;
        let out = match inserted {
            Some(row) => {
                let key: i64 = row.get(0);
                let now: i64 = row.get(1);
                db.append(
                    &tx,
                    key,
                    0,
                    &[(
                        now,
                        EventKind::RunStarted {
                            workflow: req.workflow.clone(),
                            input: req.input,
                            seed: req.seed,
                        },
                    )],
                )
                .await?;
                StartOutcome {
                    key: RunKey(key),
                    run_id,
                    workflow: req.workflow,
                    created: true,
                }
            }
            None => {
                let row = db
                    .query_opt(
                        &tx,
                        "SELECT run_key, run_id, workflow FROM runs WHERE namespace = $1 AND workflow_id = $2
                         ORDER BY run_number DESC LIMIT 1",
                        &[&db.namespace, &req.workflow_id.as_str()],
                    )
                    .await?
                    .ok_or_else(|| {
                        StoreError::Conflict(format!(
                            "run '{}' was being started and reset at once; try again",
                            req.workflow_id
                        ))
                    })?;
                StartOutcome {
                    key: RunKey(row.get(0)),
                    run_id: RunId(row.get(1)),
                    workflow: row.get(2),
                    created: false,
                }
            }
        };
        tx.commit().await.map_err(|e| db.err(e))?;
        if out.created {
            self.wake_workers();
        }
        Ok(out)
    }

    async fn claim_runs(
        &self,
        worker: &WorkerId,
        workflows: &[String],
        queues: &[String],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        if workflows.is_empty() || queues.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let db = &self.inner;
        let client = db.client().await?;
        let lease_ms = span_ms(clock::duration_ms(lease));
        // The fence grows only when the run changes hands: a worker re-claiming its own
        // run keeps committing with the token it has.
        let rows = db
            .query(
                &client,
                concat!(
                    "WITH picked AS (
                         SELECT namespace, run_key FROM runs
                         WHERE namespace = $1 AND ready AND status = 'running'
                         AND (owner IS NULL OR owner = $2 OR lease_expires_at_ms < ",
                    now_ms!(),
                    ")
                         AND workflow = ANY($5) AND task_queue = ANY($6)
                         ORDER BY run_key LIMIT $3
                         FOR UPDATE SKIP LOCKED)
                     UPDATE runs r SET fence = CASE WHEN r.owner = $2 THEN r.fence ELSE r.fence + 1 END,
                         owner = $2, lease_expires_at_ms = ",
                    now_ms!(),
                    " + $4
                     FROM picked p WHERE r.namespace = p.namespace AND r.run_key = p.run_key
                     RETURNING r.run_key, r.workflow_id, r.run_id, r.workflow, r.fence, r.last_event_id,
                         r.activation_failures"
                ),
                &[
                    &db.namespace,
                    &worker.0,
                    &limit_param(limit),
                    &lease_ms,
                    &workflows,
                    &queues,
                ],
            )
            .await?;
        let mut claimed: Vec<ClaimedRun> = rows
            .iter()
            .map(|r| ClaimedRun {
                key: RunKey(r.get(0)),
                workflow_id: WorkflowId(r.get(1)),
                run_id: RunId(r.get(2)),
                workflow: r.get(3),
                fence: FencingToken(to_u64(r.get(4))),
                last_event_id: EventId(to_u64(r.get(5))),
                activation_failures: to_u32(r.get(6)),
            })
            .collect();
        claimed.sort_by_key(|c| c.key);
        Ok(claimed)
    }

    async fn read_history(&self, key: RunKey, after: EventId) -> Result<Vec<Event>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let rows = db
            .query(
                &client,
                "SELECT event_id, time_ms, body FROM events
                 WHERE namespace = $1 AND run_key = $2 AND event_id > $3 ORDER BY event_id",
                &[&db.namespace, &key.0, &to_i64(after.0)],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let id: i64 = r.get(0);
                Ok(Event {
                    id: EventId(to_u64(id)),
                    time_ms: r.get(1),
                    kind: db.decode(key.0, id, r.get(2))?,
                })
            })
            .collect()
    }

    async fn read_inbox(&self, key: RunKey) -> Result<Vec<InboxItem>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let rows = db
            .query(
                &client,
                "SELECT inbox_id, time_ms, body FROM inbox WHERE namespace = $1 AND run_key = $2 ORDER BY inbox_id",
                &[&db.namespace, &key.0],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let id: i64 = r.get(0);
                Ok(InboxItem {
                    id,
                    time_ms: r.get(1),
                    kind: db.decode(key.0, -id, r.get(2))?,
                })
            })
            .collect()
    }

    async fn commit(&self, c: Commit) -> Result<CommitOutcome, StoreError> {
        self.commit_activation(c).await
    }

    async fn activation_failed(
        &self,
        key: RunKey,
        worker: &WorkerId,
        fence: FencingToken,
        reason: &str,
        suspend: bool,
    ) -> Result<(), StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let n = db
            .exec(
                &client,
                "UPDATE runs SET activation_failures = activation_failures + 1, reason = $5,
                 status = CASE WHEN $6 THEN 'suspended' ELSE status END,
                 ready = CASE WHEN $6 THEN FALSE ELSE ready END,
                 owner = NULL, lease_expires_at_ms = 0
                 WHERE namespace = $1 AND run_key = $2 AND owner = $3 AND fence = $4 AND status = 'running'",
                &[&db.namespace, &key.0, &worker.0, &to_i64(fence.0), &reason, &suspend],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Fenced {
                run: key.to_string(),
                fence,
            });
        }
        Ok(())
    }

    async fn release_runs(&self, worker: &WorkerId, keys: &[RunKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let db = &self.inner;
        let client = db.client().await?;
        let keys: Vec<i64> = keys.iter().map(|k| k.0).collect();
        db.exec(
            &client,
            "UPDATE runs SET owner = NULL, lease_expires_at_ms = 0
             WHERE namespace = $1 AND owner = $2 AND run_key = ANY($3)",
            &[&db.namespace, &worker.0, &keys],
        )
        .await?;
        self.wake_workers();
        Ok(())
    }

    async fn renew_leases(
        &self,
        worker: &WorkerId,
        lease: Duration,
        attempts: &[(RunKey, CommandSeq)],
    ) -> Result<(), StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let lease_ms = span_ms(clock::duration_ms(lease));
        db.exec(
            &client,
            concat!(
                "UPDATE runs SET lease_expires_at_ms = ",
                now_ms!(),
                " + $3 WHERE namespace = $1 AND owner = $2"
            ),
            &[&db.namespace, &worker.0, &lease_ms],
        )
        .await?;
        if !attempts.is_empty() {
            let keys: Vec<i64> = attempts.iter().map(|(k, _)| k.0).collect();
            let seqs: Vec<i64> = attempts.iter().map(|(_, s)| i64::from(s.0)).collect();
            db.exec(
                &client,
                concat!(
                    "UPDATE activity_tasks t SET lease_expires_at_ms = ",
                    now_ms!(),
                    " + $3 FROM unnest($4::BIGINT[], $5::BIGINT[]) AS a(run_key, seq)
                     WHERE t.namespace = $1 AND t.owner = $2 AND t.run_key = a.run_key AND t.seq = a.seq"
                ),
                &[&db.namespace, &worker.0, &lease_ms, &keys, &seqs],
            )
            .await?;
        }
        Ok(())
    }

    async fn claim_activities(
        &self,
        worker: &WorkerId,
        names: &[String],
        queues: &[String],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ActivityTask>, StoreError> {
        if names.is_empty() || queues.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let db = &self.inner;
        let lease_ms = span_ms(clock::duration_ms(lease));
        let client = db.client().await?;
        let rows = {
            // Queues with limits are left out here (the check is part of the statement);
            // they are claimed one queue at a time under their limit row's lock below.
            db.query(
                &client,
                concat!(
                    "WITH picked AS (
                         SELECT namespace, run_key, seq FROM activity_tasks
                         WHERE namespace = $1 AND available_at_ms <= ",
                    now_ms!(),
                    " AND (owner IS NULL OR lease_expires_at_ms < ",
                    now_ms!(),
                    ")
                         AND name = ANY($2) AND task_queue = ANY($3)
                         AND NOT EXISTS (SELECT 1 FROM queue_limits l
                             WHERE l.namespace = $1 AND l.task_queue = activity_tasks.task_queue)
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
                    &queues,
                    &limit_param(limit),
                    &worker.0,
                    &lease_ms,
                ],
            )
            .await?
        };
        let mut claimed = db.claimed_tasks(&client, rows).await?;
        drop(client);
        for queue in self.limited_queues(queues).await? {
            let room = limit.saturating_sub(claimed.len());
            if room == 0 {
                break;
            }
            claimed.extend(
                self.claim_limited(worker, names, &queue, room, lease_ms)
                    .await?,
            );
        }
        Ok(claimed)
    }

    async fn report_attempt(
        &self,
        worker: &WorkerId,
        key: RunKey,
        seq: CommandSeq,
        attempt: u32,
        result: AttemptResult,
    ) -> Result<(), StoreError> {
        let db = &self.inner;
        let superseded = || {
            StoreError::Conflict(format!(
                "attempt {attempt} of command {seq} of run {key} was superseded"
            ))
        };
        let seq_param = i64::from(seq.0);
        let attempt_param = i64::from(attempt);
        let mut client = db.client().await?;
        let kind = match result {
            AttemptResult::Retry {
                error,
                next_attempt_at_ms,
            } => {
                let (clear, sealed) = db.seal_error(&error);
                let n = db
                    .exec(
                        &client,
                        "UPDATE activity_tasks SET owner = NULL, lease_expires_at_ms = 0, available_at_ms = $6,
                         last_error = $7, last_error_sealed = $8, heartbeat_deadline_ms = NULL
                         WHERE namespace = $1 AND run_key = $2 AND seq = $3 AND attempt = $4 AND owner = $5",
                        &[
                            &db.namespace,
                            &key.0,
                            &seq_param,
                            &attempt_param,
                            &worker.0,
                            &next_attempt_at_ms,
                            &clear,
                            &sealed,
                        ],
                    )
                    .await?;
                return if n == 0 { Err(superseded()) } else { Ok(()) };
            }
            AttemptResult::Completed(output) => EventKind::ActivityCompleted {
                seq,
                output,
                attempt,
            },
            AttemptResult::Failed(mut error) => {
                error.set_attempts(attempt);
                EventKind::ActivityFailed { seq, error }
            }
        };
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let lock = db
            .prepare(
                &tx,
                "SELECT 1 FROM runs WHERE namespace = $1 AND run_key = $2 FOR UPDATE",
            )
            .await?;
        let delete = db
            .prepare(
                &tx,
                "DELETE FROM activity_tasks
                 WHERE namespace = $1 AND run_key = $2 AND seq = $3 AND attempt = $4 AND owner = $5
                 RETURNING seq",
            )
            .await?;
        // One pipeline: the run's row first (the lock order), then the task's, then the
        // inbox; a superseded attempt rolls all of it back.
        let lock_params: [Param<'_>; 2] = [&db.namespace, &key.0];
        let delete_params: [Param<'_>; 5] =
            [&db.namespace, &key.0, &seq_param, &attempt_param, &worker.0];
        let (locked, deleted, appended) = futures::join!(
            tx.query(&lock, &lock_params),
            tx.query(&delete, &delete_params),
            db.append_inbound(&tx, key.0, kind),
        );
        locked.map_err(|e| db.err(e))?;
        if deleted.map_err(|e| db.err(e))?.is_empty() {
            return Err(superseded());
        }
        appended?;
        tx.commit().await.map_err(|e| db.err(e))?;
        self.wake_workers();
        Ok(())
    }

    async fn record_heartbeat(
        &self,
        worker: &WorkerId,
        key: RunKey,
        seq: CommandSeq,
        attempt: u32,
        details: Payload,
    ) -> Result<(), StoreError> {
        self.record_heartbeat_of(worker, key, seq, attempt, details)
            .await
    }

    async fn time_out_heartbeats(&self, limit: usize) -> Result<usize, StoreError> {
        self.time_out_attempts(limit).await
    }

    async fn time_out_runs(&self, limit: usize) -> Result<usize, StoreError> {
        self.time_out_runs_past_deadline(limit).await
    }

    async fn fire_due_timers(&self, limit: usize, grace: Duration) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let db = &self.inner;
        let grace_ms = span_ms(clock::duration_ms(grace));
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        // Lock the timers and their runs together, skipping any a commit holds: the
        // owner may be firing the same timer itself.
        let due = db
            .query(
                &tx,
                concat!(
                    "SELECT t.run_key, t.seq FROM timers t
                     JOIN runs r ON r.namespace = t.namespace AND r.run_key = t.run_key
                     WHERE t.namespace = $1 AND t.fire_at_ms <= ",
                    now_ms!(),
                    " AND (r.owner IS NULL OR r.lease_expires_at_ms < ",
                    now_ms!(),
                    " OR t.fire_at_ms <= ",
                    now_ms!(),
                    " - $2)
                     ORDER BY t.fire_at_ms LIMIT $3
                     FOR UPDATE OF t, r SKIP LOCKED"
                ),
                &[&db.namespace, &grace_ms, &limit_param(limit)],
            )
            .await?;
        let mut fired = 0;
        for row in due {
            let key: i64 = row.get(0);
            let seq: i64 = row.get(1);
            let n = db
                .exec(
                    &tx,
                    "DELETE FROM timers WHERE namespace = $1 AND run_key = $2 AND seq = $3",
                    &[&db.namespace, &key, &seq],
                )
                .await?;
            if n == 1 {
                let seq = CommandSeq(to_u32(seq));
                db.append_inbound(&tx, key, EventKind::TimerFired { seq })
                    .await?;
                fired += 1;
            }
        }
        tx.commit().await.map_err(|e| db.err(e))?;
        if fired > 0 {
            self.wake_workers();
        }
        Ok(fired)
    }

    async fn signal(
        &self,
        workflow_id: &WorkflowId,
        name: &str,
        payload: Payload,
    ) -> Result<(), StoreError> {
        check_text("signal name", name)?;
        self.inner
            .send_inbound(
                workflow_id,
                EventKind::SignalReceived {
                    name: name.to_owned(),
                    payload,
                },
            )
            .await?;
        self.wake_workers();
        Ok(())
    }

    async fn request_cancel(
        &self,
        workflow_id: &WorkflowId,
        reason: &str,
    ) -> Result<(), StoreError> {
        let db = &self.inner;
        let mut client = db.client().await?;
        let mut tried = None;
        // As `send_inbound`: a reset racing with the request may finish the run found
        // first; then the new latest run is asked. The run's row is locked first, then
        // its children's (the lock order).
        let (tx, key) = loop {
            let tx = client.transaction().await.map_err(|e| db.err(e))?;
            let Some((key, _)) = db.latest_run(&tx, workflow_id.as_str(), false).await? else {
                return Err(StoreError::NotFound(workflow_id.clone()));
            };
            let cancel = EventKind::CancelRequested {
                reason: reason.to_owned(),
            };
            if db.append_inbound(&tx, key, cancel).await?.is_some() {
                break (tx, key);
            }
            drop(tx);
            if tried == Some(key) {
                return Err(StoreError::Finished(workflow_id.clone()));
            }
            tried = Some(key);
        };
        db.cancel_requested(&tx, key, workflow_id.as_str(), reason)
            .await?;
        tx.commit().await.map_err(|e| db.err(e))?;
        self.wake_workers();
        Ok(())
    }

    async fn reset_run(
        &self,
        workflow_id: &WorkflowId,
        to: EventId,
    ) -> Result<StartOutcome, StoreError> {
        self.reset_to(workflow_id, to).await
    }

    async fn resume(&self, workflow_id: &WorkflowId) -> Result<(), StoreError> {
        let db = &self.inner;
        let mut client = db.client().await?;
        let tx = client.transaction().await.map_err(|e| db.err(e))?;
        let Some((key, status)) = db.latest_run(&tx, workflow_id.as_str(), true).await? else {
            return Err(StoreError::NotFound(workflow_id.clone()));
        };
        if status != "suspended" {
            return Err(StoreError::Invalid(format!(
                "run '{workflow_id}' is {status}, not suspended; only a suspended run can be retried"
            )));
        }
        db.exec(
            &tx,
            "UPDATE runs SET status = 'running', ready = TRUE, reason = NULL, activation_failures = 0,
             owner = NULL, lease_expires_at_ms = 0 WHERE namespace = $1 AND run_key = $2",
            &[&db.namespace, &key],
        )
        .await?;
        tx.commit().await.map_err(|e| db.err(e))?;
        self.wake_workers();
        Ok(())
    }

    async fn find_run(&self, workflow_id: &WorkflowId) -> Result<Option<RunInfo>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE namespace = $1 AND workflow_id = $2
             ORDER BY run_number DESC LIMIT 1"
        );
        Ok(db
            .query_opt(&client, &sql, &[&db.namespace, &workflow_id.as_str()])
            .await?
            .map(|r| run_info(&r)))
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunInfo>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let limit = if filter.limit == 0 {
            1000
        } else {
            filter.limit
        };
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE namespace = $1
             AND ($2::TEXT IS NULL OR status = $2) AND ($3::TEXT IS NULL OR workflow = $3)
             AND ($4::BIGINT IS NULL OR updated_at_ms < $4) AND ($5::BIGINT IS NULL OR created_at_ms >= $5)
             AND ($7::TEXT IS NULL OR workflow_id = $7)
             ORDER BY run_key DESC LIMIT $6"
        );
        let rows = db
            .query(
                &client,
                &sql,
                &[
                    &db.namespace,
                    &filter.status.map(RunStatus::as_str),
                    &filter.workflow,
                    &filter.updated_before_ms,
                    &filter.created_after_ms,
                    &limit_param(limit),
                    &filter.workflow_id.as_ref().map(WorkflowId::as_str),
                ],
            )
            .await?;
        Ok(rows.iter().map(run_info).collect())
    }

    async fn pending_activities(&self, key: RunKey) -> Result<Vec<PendingActivity>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let rows = db
            .query(
                &client,
                "SELECT seq, name, task_queue, attempt, owner, available_at_ms, last_error,
                 last_heartbeat_at_ms, last_error_sealed
                 FROM activity_tasks WHERE namespace = $1 AND run_key = $2 ORDER BY seq",
                &[&db.namespace, &key.0],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PendingActivity {
                seq: CommandSeq(to_u32(r.get(0))),
                name: r.get(1),
                task_queue: r.get(2),
                attempt: to_u32(r.get(3)),
                owner: r.get(4),
                available_at_ms: r.get(5),
                last_error: db.open_error(r.get(6), r.get(8)),
                last_heartbeat_at_ms: r.get(7),
            })
            .collect())
    }

    async fn pending_timers(&self, key: RunKey) -> Result<Vec<PendingTimer>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let rows = db
            .query(
                &client,
                "SELECT seq, fire_at_ms FROM timers WHERE namespace = $1 AND run_key = $2 ORDER BY fire_at_ms, seq",
                &[&db.namespace, &key.0],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PendingTimer {
                seq: CommandSeq(to_u32(r.get(0))),
                fire_at_ms: r.get(1),
            })
            .collect())
    }

    async fn published_status(&self, key: RunKey) -> Result<Option<Payload>, StoreError> {
        let db = &self.inner;
        let client = db.client().await?;
        let row = db
            .query_opt(
                &client,
                "SELECT published_status FROM runs WHERE namespace = $1 AND run_key = $2",
                &[&db.namespace, &key.0],
            )
            .await?;
        let Some(sealed) = row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)) else {
            return Ok(None);
        };
        crate::store::sealing::open_payload(db.codec.as_ref(), key.0, "published status", sealed)
            .map(Some)
    }

    async fn set_queue_limit(&self, queue: &str, limit: QueueLimit) -> Result<(), StoreError> {
        self.set_limit(queue, limit).await
    }

    async fn clear_queue_limit(&self, queue: &str) -> Result<bool, StoreError> {
        self.clear_limit(queue).await
    }

    async fn queue_info(&self, queue: &str) -> Result<QueueInfo, StoreError> {
        self.info_of(queue).await
    }

    async fn list_queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.queues().await
    }

    async fn run_family(&self, key: RunKey) -> Result<RunFamily, StoreError> {
        self.family_of(key).await
    }

    fn work_notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    async fn create_schedule(
        &self,
        schedule: NewSchedule,
        replace: bool,
    ) -> Result<ScheduleInfo, StoreError> {
        self.create_schedule_row(schedule, replace).await
    }

    async fn get_schedule(&self, id: &str) -> Result<Option<ScheduleInfo>, StoreError> {
        self.read_schedule_row(id).await
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        self.list_schedule_rows().await
    }

    async fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<ScheduleInfo, StoreError> {
        self.pause_schedule_row(id, paused).await
    }

    async fn delete_schedule(&self, id: &str) -> Result<(), StoreError> {
        self.delete_schedule_row(id).await
    }

    async fn trigger_schedule(&self, id: &str) -> Result<ScheduleFire, StoreError> {
        self.trigger_schedule_now(id).await
    }

    async fn fire_due_schedules(&self, limit: usize) -> Result<usize, StoreError> {
        self.fire_schedules(limit).await
    }

    async fn schedule_fires(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<ScheduleFire>, StoreError> {
        self.schedule_fire_rows(id, limit).await
    }
}
