//! The embedded SQLite store: WAL, `synchronous=FULL` by default, one writer thread that
//! commits many runs' appends in one transaction (group commit), reader threads on
//! their own connections.

mod children;
mod deadline;
mod heartbeat;
mod queues;
mod schedule;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use super::sealing::{self, StoredText};
use super::{
    ActivityTask, AttemptResult, ClaimedRun, Commit, CommitOutcome, InboxItem, PendingActivity,
    PendingTimer, QueueInfo, QueueLimit, RunFamily, RunFilter, RunInfo, RunStatus, StartOutcome,
    StartRequest, Store,
};
use crate::clock;
use crate::error::StoreError;
use crate::event::{Event, EventKind};
use crate::ids::{CommandSeq, EventId, FencingToken, RunId, RunKey, WorkerId, WorkflowId};
use crate::payload::{Payload, SharedCodec};
use crate::schedule::{NewSchedule, ScheduleFire, ScheduleInfo};
use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use writer::{Readers, Writer};

/// How durable a commit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged step survives power loss (the default).
    #[default]
    Full,
    /// fsync at checkpoints only: survives a process crash, not a power loss.
    Normal,
    /// No fsync (tests and benchmarks of the engine itself only).
    Off,
}

/// Options of [`SqliteStore::open`].
#[derive(Clone)]
pub struct SqliteOptions {
    /// The namespace every query is scoped to.
    pub namespace: String,
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// How long to wait for another process's write lock.
    pub busy_timeout: Duration,
    /// Create the file (mode 0600) when it does not exist.
    pub create: bool,
    /// Reader threads.
    pub readers: usize,
    /// A codec applied to every event body (compression, encryption).
    pub codec: Option<SharedCodec>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            namespace: super::DEFAULT_NAMESPACE.to_owned(),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(10),
            create: true,
            readers: 2,
            codec: None,
        }
    }
}

impl std::fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("namespace", &self.namespace)
            .field("synchronous", &self.synchronous)
            .field("create", &self.create)
            .field("codec", &self.codec.is_some())
            .finish()
    }
}

struct Shared {
    path: String,
    namespace: String,
    codec: Option<SharedCodec>,
}

/// The SQLite store.
pub struct SqliteStore {
    shared: Arc<Shared>,
    writer: Writer,
    readers: Readers,
    notify: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .field("namespace", &self.shared.namespace)
            .finish()
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.readers.shutdown();
        self.writer.shutdown();
    }
}

/// Creates an empty file only the owner may read (mode 0600 on unix).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    open.open(path).map(drop)
}

/// Creates the database with its schema under a temporary name and hard-links it into
/// place, so a process opening the same new path at the same moment finds either no file
/// or a whole durable database, never an empty file it must refuse as foreign.
///
/// `Some(true)` when this call created the file, `Some(false)` when another process
/// did first, `None` when the file system has no hard links.
fn create_linked(path: &Path, shown: &str, busy: Duration) -> Result<Option<bool>, StoreError> {
    let cannot = |e: &dyn std::fmt::Display| StoreError::Io(format!("cannot create {shown}: {e}"));
    let name = path
        .file_name()
        .ok_or_else(|| cannot(&"the path has no file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.creating",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    create_private(&tmp).map_err(|e| cannot(&e))?;
    let linked = (|| {
        let mut conn = open_conn(&tmp, shown, busy)?;
        schema::prepare(&mut conn, shown, true)?;
        // WAL is recorded in the file, so openers racing on the new file need not switch
        // to it, which SQLite may refuse as busy without waiting.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| schema::map_err(shown, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Io(format!(
                "{shown}: cannot switch to WAL (journal mode is {mode})"
            )));
        }
        conn.close().map_err(|(_, e)| schema::map_err(shown, e))?;
        Ok(match std::fs::hard_link(&tmp, path) {
            Ok(()) => Some(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Some(false),
            Err(_) => None,
        })
    })();
    for side in ["", "-wal", "-shm", "-journal"] {
        let mut file = tmp.clone().into_os_string();
        file.push(side);
        let _ = std::fs::remove_file(file);
    }
    linked
}

/// The query for claimable attempts matching `$queue` (a condition on `task_queue`):
/// waiting ones and ones whose lease ran out, each read from its own partial index
/// (migration 10), so a poll never reads the attempts running now. Parameters: ?1
/// namespace, ?2 now, ?3 the activity names (JSON), ?4 the limit, and what `$queue` uses.
macro_rules! claimable_attempts {
    ($queue:literal) => {
        concat!(
            "SELECT run_key, seq FROM (
               SELECT * FROM (SELECT run_key, seq, available_at_ms FROM activity_tasks
                 WHERE namespace = ?1 AND owner IS NULL AND available_at_ms <= ?2
                 AND name IN (SELECT value FROM json_each(?3)) AND ",
            $queue,
            " ORDER BY available_at_ms LIMIT ?4)
               UNION ALL
               SELECT * FROM (SELECT run_key, seq, available_at_ms FROM activity_tasks
                 WHERE namespace = ?1 AND owner IS NOT NULL AND lease_expires_at_ms < ?2
                 AND available_at_ms <= ?2
                 AND name IN (SELECT value FROM json_each(?3)) AND ",
            $queue,
            " ORDER BY available_at_ms LIMIT ?4))
             ORDER BY available_at_ms LIMIT ?4"
        )
    };
}

/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 128;

fn open_conn(path: &Path, shown: &str, busy: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| schema::map_err(shown, e))?;
    conn.busy_timeout(busy)
        .map_err(|e| schema::map_err(shown, e))?;
    // The writer cycles through more distinct statements than rusqlite's default of 16
    // (a commit alone uses about ten): an evicted statement is parsed again.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Foreign`] for a file that is not a durable database (nothing is
    /// written to it), [`StoreError::TooNew`] for a newer schema, [`StoreError::Io`]
    /// when the file cannot be opened or created.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        if path.is_dir() {
            return Err(StoreError::Foreign {
                path: shown,
                reason: "a directory".into(),
            });
        }
        let mut created = false;
        match std::fs::metadata(&path) {
            Ok(meta) => {
                if meta.len() == 0 {
                    return Err(StoreError::Foreign {
                        path: shown,
                        reason: "an empty file".into(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !options.create {
                    return Err(StoreError::Io(format!("no database at {shown}")));
                }
                created = match create_linked(&path, &shown, options.busy_timeout)? {
                    Some(created) => created,
                    None => {
                        // No hard links on this file system: create in place.
                        create_private(&path)
                            .map_err(|e| StoreError::Io(format!("cannot create {shown}: {e}")))?;
                        true
                    }
                };
            }
            Err(e) => return Err(StoreError::Io(format!("cannot read {shown}: {e}"))),
        }
        let result = Self::open_existing(&path, &shown, created, options);
        if result.is_err() && created {
            // Leave nothing behind from a failed creation.
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    fn open_existing(
        path: &Path,
        shown: &str,
        created: bool,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let mut conn = open_conn(path, shown, options.busy_timeout)?;
        let err = |e| schema::map_err(shown, e);
        // Check identity before anything that writes (journal mode changes the header).
        // A `-wal` beside the file is read as part of it, and SQLite folds it into the
        // file when the last connection closes: not before we know the result is ours.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(err)?;
        schema::prepare(&mut conn, shown, created)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)
            .map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Io(format!(
                "{shown}: cannot switch to WAL (journal mode is {mode})"
            )));
        }
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA cache_size = -16000; PRAGMA temp_store = MEMORY;"
        ))
        .map_err(err)?;
        let mut readers = Vec::new();
        for _ in 0..options.readers.max(1) {
            let r = open_conn(path, shown, options.busy_timeout)?;
            r.execute_batch("PRAGMA cache_size = -8000; PRAGMA query_only = 1;")
                .map_err(err)?;
            readers.push(r);
        }
        let shared = Arc::new(Shared {
            path: shown.to_owned(),
            namespace: options.namespace,
            codec: options.codec,
        });
        Ok(SqliteStore {
            writer: Writer::spawn(conn, shown.to_owned()),
            readers: Readers::spawn(readers),
            shared,
            notify: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// The file path.
    pub fn path(&self) -> &str {
        &self.shared.path
    }

    fn wake_workers(&self) {
        self.notify.notify_waiters();
    }
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    schema::map_err("database", e)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
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

impl Shared {
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

    /// A free-text column that may quote a payload (an activity's last error): sealed
    /// by the codec, as a BLOB, when the store has one (see [`sealing::StoredText`]).
    fn seal_text(&self, text: String) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        match sealing::seal_text(self.codec.as_ref(), text) {
            StoredText::Clear(t) => Value::Text(t),
            StoredText::Sealed(b) => Value::Blob(b),
        }
    }

    /// Reverses [`Shared::seal_text`]; a value the codec cannot open is shown as such.
    fn open_text(&self, value: rusqlite::types::Value) -> Option<String> {
        use rusqlite::types::Value;
        let stored = match value {
            Value::Null => return None,
            Value::Text(t) => StoredText::Clear(t),
            Value::Blob(b) => StoredText::Sealed(b),
            Value::Integer(i) => StoredText::Clear(i.to_string()),
            Value::Real(r) => StoredText::Clear(r.to_string()),
        };
        Some(sealing::open_text(self.codec.as_ref(), stored))
    }

    /// Appends events at the end of a run's history; returns the first and last ids.
    fn append(
        &self,
        conn: &Connection,
        key: i64,
        after: i64,
        events: &[(i64, EventKind)],
    ) -> Result<(i64, i64), StoreError> {
        let bodies = self.encode_all(events)?;
        append_encoded(conn, key, after, events, bodies)
    }

    /// The stored bodies of `events`, in order.
    fn encode_all(&self, events: &[(i64, EventKind)]) -> Result<Vec<Vec<u8>>, StoreError> {
        events.iter().map(|(_, kind)| self.encode(kind)).collect()
    }
}

/// Appends events whose bodies are already encoded (`bodies[i]` is `events[i]`'s).
fn append_encoded(
    conn: &Connection,
    key: i64,
    after: i64,
    events: &[(i64, EventKind)],
    bodies: Vec<Vec<u8>>,
) -> Result<(i64, i64), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO events (run_key, event_id, time_ms, kind, seq, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql_err)?;
    let mut id = after;
    for ((time, kind), body) in events.iter().zip(bodies) {
        id += 1;
        stmt.execute(params![
            key,
            id,
            time,
            kind.name(),
            kind.seq().map(|s| i64::from(s.0)),
            body
        ])
        .map_err(sql_err)?;
    }
    Ok((after + 1, id))
}

impl Shared {
    /// Queues an event from outside the run's owner (a signal, a fired timer, a remote
    /// activity result) in the run's inbox and marks the run ready. `None` when the run
    /// is finished.
    fn append_inbound(
        &self,
        conn: &Connection,
        key: i64,
        kind: EventKind,
    ) -> Result<Option<i64>, StoreError> {
        let now = clock::now_ms();
        let running: Option<i64> = conn
            .prepare_cached(
                "UPDATE runs SET ready = CASE WHEN status = 'running' THEN 1 ELSE ready END
                 WHERE run_key = ?1 AND status IN ('running', 'suspended') RETURNING run_key",
            )
            .map_err(sql_err)?
            .query_row(params![key], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        if running.is_none() {
            return Ok(None);
        }
        let body = self.encode(&kind)?;
        conn.prepare_cached(
            "INSERT INTO inbox (run_key, time_ms, kind, body) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(sql_err)?
        .execute(params![key, now, kind.name(), body])
        .map_err(sql_err)?;
        Ok(Some(conn.last_insert_rowid()))
    }

    fn latest_run(
        &self,
        conn: &Connection,
        workflow_id: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        conn.prepare_cached(
            "SELECT run_key, status FROM runs WHERE namespace = ?1 AND workflow_id = ?2 ORDER BY run_key DESC LIMIT 1",
        )
        .map_err(sql_err)?
        .query_row(params![self.namespace, workflow_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(sql_err)
    }
}

/// Starts the run a committing run continues as, inside the commit's transaction: the
/// next run of the same workflow id (the latest from now on), with the old run's
/// execution deadline and published status, its parent (a child that continues as new
/// still answers its parent, from its last run), the signals the old run's code had not
/// taken, and the signals and cancel requests waiting in the old run's inbox.
fn continue_as_new(
    shared: &Shared,
    conn: &Connection,
    old: i64,
    next: &super::continuation::Continuation<'_>,
) -> Result<(), StoreError> {
    // Like a started run's (`start_run`, `reset_run`).
    let now = clock::now_ms();
    conn.prepare_cached(
        "INSERT INTO runs (namespace, workflow_id, run_id, workflow, status, created_at_ms, updated_at_ms,
         last_event_id, ready, execution_timeout_ms, deadline_ms, published_status,
         parent_key, parent_seq, cancel_policy, cancel_requested, task_queue)
         SELECT namespace, workflow_id, ?2, ?3, 'running', ?4, ?4, 1, 1, execution_timeout_ms, deadline_ms,
         published_status, parent_key, parent_seq, cancel_policy, cancel_requested, task_queue
         FROM runs WHERE run_key = ?1",
    )
    .map_err(sql_err)?
    .execute(params![old, next.run_id.as_str(), next.workflow, now])
    .map_err(sql_err)?;
    let key = conn.last_insert_rowid();
    shared.append(conn, key, 0, &[(next.time_ms, next.started())])?;
    // The signals the code had not taken come first, then what waited in the inbox,
    // re-inserted so the new run's inbox ids keep that order.
    for kind in next.carried() {
        conn.prepare_cached(
            "INSERT INTO inbox (run_key, time_ms, kind, body) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(sql_err)?
        .execute(params![
            key,
            next.time_ms,
            kind.name(),
            shared.encode(&kind)?
        ])
        .map_err(sql_err)?;
    }
    let [signal, cancel] = super::continuation::CARRIED_INBOX_KINDS;
    conn.prepare_cached(
        "INSERT INTO inbox (run_key, time_ms, kind, body)
         SELECT ?2, time_ms, kind, body FROM inbox WHERE run_key = ?1 AND kind IN (?3, ?4)
         ORDER BY inbox_id",
    )
    .map_err(sql_err)?
    .execute(params![old, key, signal, cancel])
    .map_err(sql_err)?;
    // The old run's entries go with the rest of its inbox, when the commit finishes it.
    Ok(())
}

const RUN_COLUMNS: &str = "run_key, workflow_id, run_id, workflow, status, created_at_ms, updated_at_ms, last_event_id, owner, lease_expires_at_ms, reason, activation_failures, deadline_ms, task_queue";

fn run_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunInfo> {
    let status: String = r.get(4)?;
    Ok(RunInfo {
        key: RunKey(r.get(0)?),
        workflow_id: WorkflowId(r.get(1)?),
        run_id: RunId(r.get(2)?),
        workflow: r.get(3)?,
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Suspended),
        created_at_ms: r.get(5)?,
        updated_at_ms: r.get(6)?,
        last_event_id: EventId(to_u64(r.get(7)?)),
        owner: r.get(8)?,
        lease_expires_at_ms: r.get(9)?,
        reason: r.get(10)?,
        activation_failures: to_u32(r.get(11)?),
        execution_deadline_ms: r.get(12)?,
        task_queue: r.get(13)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    async fn start_run(&self, req: StartRequest) -> Result<StartOutcome, StoreError> {
        check_text("workflow id", req.workflow_id.as_str())?;
        check_text("workflow name", &req.workflow)?;
        if !req.task_queue.is_empty() {
            check_text("task queue", &req.task_queue)?;
        }
        let timeout_ms = req.execution_timeout_ms()?;
        let shared = self.shared.clone();
        let out = self
            .writer
            .submit(move |conn| {
                if let Some((key, _)) = shared.latest_run(conn, req.workflow_id.as_str())? {
                    let (run_id, workflow): (String, String) = conn
                        .query_row(
                            "SELECT run_id, workflow FROM runs WHERE run_key = ?1",
                            [key],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .map_err(sql_err)?;
                    return Ok(StartOutcome {
                        key: RunKey(key),
                        run_id: RunId(run_id),
                        workflow,
                        created: false,
                    });
                }
                let now = clock::now_ms();
                let run_id = RunId::generate();
                let deadline = timeout_ms.map(|t| clock::host_now_ms().saturating_add(t));
                conn.prepare_cached(
                    "INSERT INTO runs (namespace, workflow_id, run_id, workflow, status, created_at_ms, updated_at_ms,
                     last_event_id, ready, execution_timeout_ms, deadline_ms, task_queue)
                     VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?5, 1, 1, ?6, ?7, ?8)",
                )
                .map_err(sql_err)?
                .execute(params![shared.namespace, req.workflow_id.as_str(), run_id.as_str(), req.workflow, now,
                    timeout_ms, deadline, req.task_queue])
                .map_err(sql_err)?;
                let key = conn.last_insert_rowid();
                shared.append(
                    conn,
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
                )?;
                Ok(StartOutcome {
                    key: RunKey(key),
                    run_id,
                    workflow: req.workflow,
                    created: true,
                })
            })
            .await?;
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
        let ns = self.shared.namespace.clone();
        let me = worker.0.clone();
        let lim = i64::try_from(limit).unwrap_or(i64::MAX);
        let workflows_json =
            serde_json::to_string(workflows).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let queues_json =
            serde_json::to_string(queues).map_err(|e| StoreError::Invalid(e.to_string()))?;
        // Look first on a reader, so an idle poll takes no write lock. The scan goes by the
        // index of ready runs: left to itself, SQLite picks the one by status and reads
        // every running run (all the waiting ones too) on each poll. The workflow and
        // queue filters ride on the index scan (each list comes as one JSON parameter,
        // however long); a run's workflow and queue never change, so the claiming update
        // below needs no second look at them.
        let candidates: Vec<i64> = self
            .readers
            .submit({
                let me = me.clone();
                move |conn| {
                    let now = clock::host_now_ms();
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT run_key FROM runs INDEXED BY runs_ready WHERE namespace = ?1 AND ready = 1 AND status = 'running'
                             AND (owner IS NULL OR owner = ?2 OR lease_expires_at_ms < ?3)
                             AND workflow IN (SELECT value FROM json_each(?5))
                             AND task_queue IN (SELECT value FROM json_each(?6)) ORDER BY run_key LIMIT ?4",
                        )
                        .map_err(sql_err)?;
                    let rows = stmt
                        .query_map(params![ns, me, now, lim, workflows_json, queues_json], |r| {
                            r.get(0)
                        })
                        .map_err(sql_err)?;
                    rows.collect::<Result<_, _>>().map_err(sql_err)
                }
            })
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let lease_ms = clock::duration_ms(lease);
        self.writer
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let mut stmt = conn
                    .prepare_cached(
                        "UPDATE runs SET fence = CASE WHEN owner = ?2 THEN fence ELSE fence + 1 END,
                         activation_failures = activation_failures
                             + CASE WHEN owner IS NOT NULL AND owner != ?2 THEN 1 ELSE 0 END,
                         owner = ?2, lease_expires_at_ms = ?3
                         WHERE run_key = ?1 AND ready = 1 AND status = 'running'
                         AND (owner IS NULL OR owner = ?2 OR lease_expires_at_ms < ?4)
                         RETURNING workflow_id, run_id, workflow, fence, last_event_id, activation_failures",
                    )
                    .map_err(sql_err)?;
                let mut claimed = Vec::new();
                for key in candidates {
                    let row = stmt
                        .query_row(params![key, me, now.saturating_add(lease_ms), now], |r| {
                            Ok(ClaimedRun {
                                key: RunKey(key),
                                workflow_id: WorkflowId(r.get(0)?),
                                run_id: RunId(r.get(1)?),
                                workflow: r.get(2)?,
                                fence: FencingToken(to_u64(r.get(3)?)),
                                last_event_id: EventId(to_u64(r.get(4)?)),
                                activation_failures: to_u32(r.get(5)?),
                            })
                        })
                        .optional()
                        .map_err(sql_err)?;
                    claimed.extend(row);
                }
                Ok(claimed)
            })
            .await
    }

    async fn read_history(&self, key: RunKey, after: EventId) -> Result<Vec<Event>, StoreError> {
        let shared = self.shared.clone();
        self.readers
            .submit(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT event_id, time_ms, body FROM events WHERE run_key = ?1 AND event_id > ?2 ORDER BY event_id",
                    )
                    .map_err(sql_err)?;
                let mut rows = stmt
                    .query(params![key.0, to_i64(after.0)])
                    .map_err(sql_err)?;
                let mut events = Vec::new();
                while let Some(row) = rows.next().map_err(sql_err)? {
                    let id: i64 = row.get(0).map_err(sql_err)?;
                    let time_ms: i64 = row.get(1).map_err(sql_err)?;
                    let body: Vec<u8> = row.get(2).map_err(sql_err)?;
                    events.push(Event {
                        id: EventId(to_u64(id)),
                        time_ms,
                        kind: shared.decode(key.0, id, body)?,
                    });
                }
                Ok(events)
            })
            .await
    }

    async fn read_inbox(&self, key: RunKey) -> Result<Vec<InboxItem>, StoreError> {
        let shared = self.shared.clone();
        self.readers
            .submit(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT inbox_id, time_ms, body FROM inbox WHERE run_key = ?1 ORDER BY inbox_id",
                    )
                    .map_err(sql_err)?;
                let mut rows = stmt.query([key.0]).map_err(sql_err)?;
                let mut items = Vec::new();
                while let Some(row) = rows.next().map_err(sql_err)? {
                    let id: i64 = row.get(0).map_err(sql_err)?;
                    let time_ms: i64 = row.get(1).map_err(sql_err)?;
                    let body: Vec<u8> = row.get(2).map_err(sql_err)?;
                    items.push(InboxItem {
                        id,
                        time_ms,
                        kind: shared.decode(key.0, -id, body)?,
                    });
                }
                Ok(items)
            })
            .await
    }

    async fn commit(&self, c: Commit) -> Result<CommitOutcome, StoreError> {
        let shared = self.shared.clone();
        // Child runs started, or a parent's inbox written by a finishing child.
        let touches_other_runs = c.finish.is_some()
            || c.events
                .iter()
                .any(|(_, k)| matches!(k, EventKind::ChildStarted { .. }));
        let creates_remote_work = touches_other_runs || c.activities.iter().any(|a| !a.local);
        // Encoded here, on the caller's thread: the writer thread is the one that limits
        // how many steps a second the store takes.
        let bodies = shared.encode_all(&c.events)?;
        let out = self
            .writer
            .submit_checked(move |conn| {
                let key = c.key.0;
                let continuation = super::continuation::continuation(&c)?;
                let row: Option<(Option<String>, i64, String, i64)> = conn
                    .prepare_cached(
                        "SELECT owner, fence, status, last_event_id FROM runs WHERE run_key = ?1",
                    )
                    .map_err(sql_err)?
                    .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()
                    .map_err(sql_err)?;
                let Some((owner, fence, status, last)) = row else {
                    return Err(StoreError::Conflict(format!("run {key} does not exist")));
                };
                if owner.as_deref() != Some(c.worker.0.as_str())
                    || to_u64(fence) != c.fence.0
                    || status != "running"
                    || to_u64(last) != c.after.0
                {
                    return Err(StoreError::Fenced {
                        run: key.to_string(),
                        fence: c.fence,
                    });
                }
                // Every refusal is decided before the first write (the writer runs this
                // job without a savepoint of its own).
                for inbox_id in &c.consumed_inbox {
                    let there = conn
                        .prepare_cached("SELECT 1 FROM inbox WHERE inbox_id = ?1 AND run_key = ?2")
                        .map_err(sql_err)?
                        .exists(params![inbox_id, key])
                        .map_err(sql_err)?;
                    if !there {
                        return Err(StoreError::Conflict(format!(
                            "inbox entry {inbox_id} of run {key} was already applied"
                        )));
                    }
                }
                // The first finished attempt's DELETE is the commit's first write when no
                // inbox entry is consumed: it refuses by itself, with nothing written.
                let self_checked = usize::from(c.consumed_inbox.is_empty());
                for (seq, attempt) in c.finished_activities.iter().skip(self_checked) {
                    let there = conn
                        .prepare_cached(
                            "SELECT 1 FROM activity_tasks WHERE run_key = ?1 AND seq = ?2 AND attempt = ?3 AND owner = ?4",
                        )
                        .map_err(sql_err)?
                        .exists(params![key, seq.0, attempt, c.worker.0])
                        .map_err(sql_err)?;
                    if !there {
                        return Err(StoreError::Conflict(format!(
                            "attempt {attempt} of command {seq} of run {key} was superseded"
                        )));
                    }
                }
                for seq in &c.fired_timers {
                    let there = conn
                        .prepare_cached("SELECT 1 FROM timers WHERE run_key = ?1 AND seq = ?2")
                        .map_err(sql_err)?
                        .exists(params![key, seq.0])
                        .map_err(sql_err)?;
                    if !there {
                        return Err(StoreError::Conflict(format!(
                            "timer {seq} of run {key} already fired"
                        )));
                    }
                }
                if c.finish.is_some() && continuation.is_none() {
                    // A signal acknowledged while the run was finishing must not be dropped
                    // with the inbox: refuse, and the run goes on with it (its next
                    // activation records it, then finishes again).
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT inbox_id FROM inbox WHERE run_key = ?1 AND kind = 'SignalReceived'",
                        )
                        .map_err(sql_err)?;
                    let signals = stmt
                        .query_map([key], |r| r.get::<_, i64>(0))
                        .map_err(sql_err)?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(sql_err)?;
                    if let Some(id) = signals.iter().find(|id| !c.consumed_inbox.contains(id)) {
                        return Err(StoreError::Conflict(format!(
                            "signal {id} reached run {key} while it was finishing; it goes on to record it"
                        )));
                    }
                }
                let now = clock::host_now_ms();
                let lease_ms = clock::duration_ms(c.lease);
                for inbox_id in &c.consumed_inbox {
                    let n = conn
                        .prepare_cached("DELETE FROM inbox WHERE inbox_id = ?1 AND run_key = ?2")
                        .map_err(sql_err)?
                        .execute(params![inbox_id, key])
                        .map_err(sql_err)?;
                    if n == 0 {
                        return Err(StoreError::Conflict(format!(
                            "inbox entry {inbox_id} of run {key} was already applied"
                        )));
                    }
                }
                for (seq, attempt) in &c.finished_activities {
                    let n = conn
                        .prepare_cached(
                            "DELETE FROM activity_tasks WHERE run_key = ?1 AND seq = ?2 AND attempt = ?3 AND owner = ?4",
                        )
                        .map_err(sql_err)?
                        .execute(params![key, seq.0, attempt, c.worker.0])
                        .map_err(sql_err)?;
                    if n == 0 {
                        return Err(StoreError::Conflict(format!(
                            "attempt {attempt} of command {seq} of run {key} was superseded"
                        )));
                    }
                }
                for seq in &c.fired_timers {
                    let n = conn
                        .prepare_cached("DELETE FROM timers WHERE run_key = ?1 AND seq = ?2")
                        .map_err(sql_err)?
                        .execute(params![key, seq.0])
                        .map_err(sql_err)?;
                    if n == 0 {
                        return Err(StoreError::Conflict(format!(
                            "timer {seq} of run {key} already fired"
                        )));
                    }
                }
                let (first, last_id) = append_encoded(conn, key, last, &c.events, bodies)?;
                let mut queued = Vec::new();
                let mut event_ids = std::collections::HashMap::new();
                let mut timers = Vec::new();
                for (i, (_, kind)) in c.events.iter().enumerate() {
                    let id = first + i64::try_from(i).unwrap_or(0);
                    match kind {
                        EventKind::ActivityScheduled { seq, options, .. } => {
                            event_ids.insert(seq.0, (id, options.heartbeat_timeout_ms.map(to_i64)));
                        }
                        EventKind::TimerStarted { seq, duration_ms } => {
                            timers.push((seq.0, *duration_ms));
                        }
                        _ => {}
                    }
                }
                if c.finish.is_none() {
                    for a in &c.activities {
                        let (event_id, heartbeat_timeout) = event_ids.get(&a.seq.0).copied().ok_or_else(|| {
                            StoreError::Invalid(format!(
                                "activity task {} without its ActivityScheduled event",
                                a.seq
                            ))
                        })?;
                        let insert = |local: bool, only_unlimited: bool| -> Result<usize, StoreError> {
                            let (attempt, owner, lease) = if local {
                                (1, Some(c.worker.0.as_str()), now.saturating_add(lease_ms))
                            } else {
                                (0, None, 0)
                            };
                            // A local attempt starts now: so does its heartbeat clock.
                            let heartbeat_deadline =
                                heartbeat_timeout.filter(|_| local).map(|t| now.saturating_add(t));
                            // With `only_unlimited`, nothing is inserted when the task's
                            // queue has a limit: the check rides in the one INSERT, so
                            // queues without limits pay no extra statement.
                            conn.prepare_cached(
                                "INSERT INTO activity_tasks (run_key, seq, namespace, name, task_queue, event_id, attempt, owner,
                                 lease_expires_at_ms, available_at_ms, scheduled_at_ms, heartbeat_timeout_ms, heartbeat_deadline_ms)
                                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12
                                 WHERE ?13 = 0 OR NOT EXISTS
                                     (SELECT 1 FROM queue_limits WHERE namespace = ?3 AND task_queue = ?5)",
                            )
                            .map_err(sql_err)?
                            .execute(params![key, a.seq.0, shared.namespace, a.name, a.task_queue, event_id, attempt, owner, lease, now,
                                heartbeat_timeout, heartbeat_deadline, only_unlimited])
                            .map_err(sql_err)
                        };
                        if insert(a.local, a.local)? == 0 {
                            // A local attempt on a limited queue: it starts here only if
                            // the queue has room, and takes it; otherwise a claim starts
                            // it later.
                            let room = shared.room(conn, &a.task_queue, now)?;
                            let starts = room.as_ref().is_none_or(|r| r.allows(now, 1) == 1);
                            insert(starts, false)?;
                            if let Some(room) = &room
                                && starts
                            {
                                shared.take_slot(conn, &a.task_queue, key, i64::from(a.seq.0), 1)?;
                                shared.spend(conn, &a.task_queue, room, now, 1)?;
                            }
                            if !starts {
                                queued.push(a.seq);
                            }
                        }
                    }
                    for (seq, duration) in timers {
                        conn.prepare_cached(
                            "INSERT INTO timers (run_key, seq, namespace, fire_at_ms) VALUES (?1, ?2, ?3, ?4)",
                        )
                        .map_err(sql_err)?
                        .execute(params![key, seq, shared.namespace, now.saturating_add(to_i64(duration))])
                        .map_err(sql_err)?;
                    }
                }
                if touches_other_runs {
                    shared.start_children(conn, key, &c.events, c.finish.is_some())?;
                }
                // Its own statement, only when there is something to write: the row's page
                // is dirty already, and the UPDATEs below stay as they were.
                if let Some(published) = &c.published_status {
                    conn.prepare_cached("UPDATE runs SET published_status = ?2 WHERE run_key = ?1")
                        .map_err(sql_err)?
                        .execute(params![key, super::sealing::seal(shared.codec.as_ref(), published.0.clone())])
                        .map_err(sql_err)?;
                }
                if let Some(next) = &continuation {
                    // Before the old run's inbox is cleared: its signals move over.
                    continue_as_new(&shared, conn, key, next)?;
                }
                match c.finish {
                    Some(status) => {
                        conn.prepare_cached("DELETE FROM activity_tasks WHERE run_key = ?1")
                            .map_err(sql_err)?
                            .execute([key])
                            .map_err(sql_err)?;
                        conn.prepare_cached("DELETE FROM timers WHERE run_key = ?1")
                            .map_err(sql_err)?
                            .execute([key])
                            .map_err(sql_err)?;
                        conn.prepare_cached("DELETE FROM inbox WHERE run_key = ?1")
                            .map_err(sql_err)?
                            .execute([key])
                            .map_err(sql_err)?;
                        conn.prepare_cached(
                            "UPDATE runs SET last_event_id = ?2, status = ?3, ready = 0, owner = NULL,
                             lease_expires_at_ms = 0, updated_at_ms = ?4, activation_failures = 0 WHERE run_key = ?1",
                        )
                        .map_err(sql_err)?
                        .execute(params![key, last_id, status.as_str(), now])
                        .map_err(sql_err)?;
                        if let Some((_, terminal)) = c.events.iter().rev().find(|(_, k)| k.is_terminal()) {
                            shared.run_ended(conn, key, terminal)?;
                        }
                    }
                    // Two statements rather than one with CASE: an UPDATE that names
                    // `owner` rewrites its index entry even when the value stays, one
                    // more page written for every step.
                    None if c.keep_lease => {
                        conn.prepare_cached(
                            "UPDATE runs SET last_event_id = ?2,
                             ready = EXISTS (SELECT 1 FROM inbox WHERE inbox.run_key = ?1),
                             updated_at_ms = ?3, activation_failures = 0
                             WHERE run_key = ?1",
                        )
                        .map_err(sql_err)?
                        .execute(params![key, last_id, now])
                        .map_err(sql_err)?;
                    }
                    None => {
                        conn.prepare_cached(
                            "UPDATE runs SET last_event_id = ?2,
                             ready = EXISTS (SELECT 1 FROM inbox WHERE inbox.run_key = ?1),
                             updated_at_ms = ?3, activation_failures = 0,
                             owner = NULL, lease_expires_at_ms = 0
                             WHERE run_key = ?1",
                        )
                        .map_err(sql_err)?
                        .execute(params![key, last_id, now])
                        .map_err(sql_err)?;
                    }
                }
                Ok(CommitOutcome {
                    first: EventId(to_u64(first)),
                    last: EventId(to_u64(last_id)),
                    queued,
                })
            })
            .await?;
        if creates_remote_work || !out.queued.is_empty() {
            self.wake_workers();
        }
        Ok(out)
    }

    async fn activation_failed(
        &self,
        key: RunKey,
        worker: &WorkerId,
        fence: FencingToken,
        reason: &str,
        suspend: bool,
    ) -> Result<(), StoreError> {
        let me = worker.0.clone();
        let reason = reason.to_owned();
        self.writer
            .submit(move |conn| {
                let n = conn
                    .prepare_cached(
                        "UPDATE runs SET activation_failures = activation_failures + 1, reason = ?4,
                         status = CASE WHEN ?5 THEN 'suspended' ELSE status END,
                         ready = CASE WHEN ?5 THEN 0 ELSE ready END,
                         owner = NULL, lease_expires_at_ms = 0
                         WHERE run_key = ?1 AND owner = ?2 AND fence = ?3 AND status = 'running'",
                    )
                    .map_err(sql_err)?
                    .execute(params![key.0, me, to_i64(fence.0), reason, suspend])
                    .map_err(sql_err)?;
                if n == 0 {
                    return Err(StoreError::Fenced {
                        run: key.to_string(),
                        fence,
                    });
                }
                Ok(())
            })
            .await
    }

    async fn release_runs(&self, worker: &WorkerId, keys: &[RunKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let me = worker.0.clone();
        let keys: Vec<i64> = keys.iter().map(|k| k.0).collect();
        self.writer
            .submit(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "UPDATE runs SET owner = NULL, lease_expires_at_ms = 0 WHERE run_key = ?1 AND owner = ?2",
                    )
                    .map_err(sql_err)?;
                for k in keys {
                    stmt.execute(params![k, me]).map_err(sql_err)?;
                }
                Ok(())
            })
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
        let me = worker.0.clone();
        let lease_ms = clock::duration_ms(lease);
        let attempts = attempts.to_vec();
        self.writer
            .submit(move |conn| {
                let until = clock::host_now_ms().saturating_add(lease_ms);
                conn.prepare_cached("UPDATE runs SET lease_expires_at_ms = ?2 WHERE owner = ?1")
                    .map_err(sql_err)?
                    .execute(params![me, until])
                    .map_err(sql_err)?;
                let mut stmt = conn
                    .prepare_cached(
                        "UPDATE activity_tasks SET lease_expires_at_ms = ?4
                         WHERE run_key = ?1 AND seq = ?2 AND owner = ?3",
                    )
                    .map_err(sql_err)?;
                for (key, seq) in attempts {
                    stmt.execute(params![key.0, seq.0, me, until])
                        .map_err(sql_err)?;
                }
                Ok(())
            })
            .await
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
        let ns = self.shared.namespace.clone();
        let names_json =
            serde_json::to_string(names).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let queues_json =
            serde_json::to_string(queues).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let lim = i64::try_from(limit).unwrap_or(i64::MAX);
        // Candidates of queues without limits (the query leaves limited queues out, so a
        // full one cannot crowd the others out of the batch), then of each limited queue
        // with room, tagged with it: (run_key, seq, limited queue).
        type Candidate = (i64, i64, Option<String>);
        let candidates: Vec<Candidate> = self
            .readers
            .submit({
                let names_json = names_json.clone();
                move |conn| {
                    let now = clock::host_now_ms();
                    let mut candidates: Vec<Candidate> = {
                        let mut stmt = conn
                            .prepare_cached(
                                claimable_attempts!(
                                    "task_queue IN (SELECT value FROM json_each(?5))
                                     AND task_queue NOT IN (SELECT task_queue FROM queue_limits WHERE namespace = ?1)"
                                ),
                            )
                            .map_err(sql_err)?;
                        let rows = stmt
                            .query_map(params![ns, now, names_json, lim, queues_json], |r| {
                                Ok((r.get(0)?, r.get(1)?, None))
                            })
                            .map_err(sql_err)?;
                        rows.collect::<Result<_, _>>().map_err(sql_err)?
                    };
                    for (queue, room) in queues::limited_queues(conn, &ns, &queues_json, now)? {
                        if room == 0 {
                            continue;
                        }
                        let mut stmt = conn
                            .prepare_cached(
                                claimable_attempts!("task_queue = ?5"),
                            )
                            .map_err(sql_err)?;
                        let room = i64::try_from(room).unwrap_or(i64::MAX).min(lim);
                        let rows = stmt
                            .query_map(params![ns, now, names_json, room, queue], |r| {
                                Ok((r.get(0)?, r.get(1)?, Some(queue.clone())))
                            })
                            .map_err(sql_err)?;
                        for row in rows {
                            candidates.push(row.map_err(sql_err)?);
                        }
                    }
                    Ok(candidates)
                }
            })
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let me = worker.0.clone();
        let lease_ms = clock::duration_ms(lease);
        let shared = self.shared.clone();
        self.writer
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let until = now.saturating_add(lease_ms);
                let mut claimed = Vec::new();
                let mut limited: Vec<(String, Vec<(i64, i64)>)> = Vec::new();
                for (key, seq, queue) in candidates {
                    match queue {
                        // A limit set since the read keeps the task for the limited path.
                        None => claimed
                            .extend(shared.claim_attempt(conn, key, seq, &me, until, now, true)?),
                        Some(q) => match limited.iter_mut().find(|(name, _)| *name == q) {
                            Some((_, tasks)) => tasks.push((key, seq)),
                            None => limited.push((q, vec![(key, seq)])),
                        },
                    }
                }
                for (queue, tasks) in limited {
                    // The limits judged again here, where the starts are written.
                    let room = shared.room(conn, &queue, now)?;
                    let allowed = room.as_ref().map_or(u64::MAX, |r| r.allows(now, u64::MAX));
                    let mut started = 0;
                    for (key, seq) in tasks {
                        if started >= allowed {
                            break;
                        }
                        let Some(task) =
                            shared.claim_attempt(conn, key, seq, &me, until, now, false)?
                        else {
                            continue;
                        };
                        if room.is_some() {
                            shared.take_slot(conn, &queue, key, seq, i64::from(task.attempt))?;
                        }
                        started += 1;
                        claimed.push(task);
                    }
                    if let Some(room) = &room {
                        shared.spend(conn, &queue, room, now, started)?;
                    }
                }
                Ok(claimed)
            })
            .await
    }

    async fn report_attempt(
        &self,
        worker: &WorkerId,
        key: RunKey,
        seq: CommandSeq,
        attempt: u32,
        result: AttemptResult,
    ) -> Result<(), StoreError> {
        let me = worker.0.clone();
        let shared = self.shared.clone();
        let appends = !matches!(result, AttemptResult::Retry { .. });
        self.writer
            .submit(move |conn| {
                let owned: Option<i64> = conn
                    .prepare_cached(
                        "SELECT 1 FROM activity_tasks WHERE run_key = ?1 AND seq = ?2 AND attempt = ?3 AND owner = ?4",
                    )
                    .map_err(sql_err)?
                    .query_row(params![key.0, seq.0, attempt, me], |r| r.get(0))
                    .optional()
                    .map_err(sql_err)?;
                if owned.is_none() {
                    return Err(StoreError::Conflict(format!(
                        "attempt {attempt} of command {seq} of run {key} was superseded"
                    )));
                }
                match result {
                    AttemptResult::Retry {
                        error,
                        next_attempt_at_ms,
                    } => {
                        conn.prepare_cached(
                            "UPDATE activity_tasks SET owner = NULL, lease_expires_at_ms = 0, available_at_ms = ?3,
                             last_error = ?4, heartbeat_deadline_ms = NULL WHERE run_key = ?1 AND seq = ?2",
                        )
                        .map_err(sql_err)?
                        .execute(params![key.0, seq.0, next_attempt_at_ms, shared.seal_text(error.to_string())])
                        .map_err(sql_err)?;
                    }
                    AttemptResult::Completed(output) => {
                        conn.prepare_cached("DELETE FROM activity_tasks WHERE run_key = ?1 AND seq = ?2")
                            .map_err(sql_err)?
                            .execute(params![key.0, seq.0])
                            .map_err(sql_err)?;
                        shared.append_inbound(
                            conn,
                            key.0,
                            EventKind::ActivityCompleted {
                                seq,
                                output,
                                attempt,
                            },
                        )?;
                    }
                    AttemptResult::Failed(mut error) => {
                        error.set_attempts(attempt);
                        conn.prepare_cached("DELETE FROM activity_tasks WHERE run_key = ?1 AND seq = ?2")
                            .map_err(sql_err)?
                            .execute(params![key.0, seq.0])
                            .map_err(sql_err)?;
                        shared.append_inbound(conn, key.0, EventKind::ActivityFailed { seq, error })?;
                    }
                }
                Ok(())
            })
            .await?;
        if appends {
            self.wake_workers();
        }
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
        let ns = self.shared.namespace.clone();
        let lim = i64::try_from(limit).unwrap_or(i64::MAX);
        let grace_ms = clock::duration_ms(grace);
        let due: Vec<(i64, i64)> = self
            .readers
            .submit(move |conn| {
                let now = clock::host_now_ms();
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT t.run_key, t.seq FROM timers t JOIN runs r ON r.run_key = t.run_key
                         WHERE t.namespace = ?1 AND t.fire_at_ms <= ?2
                         AND (r.owner IS NULL OR r.lease_expires_at_ms < ?2 OR t.fire_at_ms <= ?2 - ?3)
                         ORDER BY t.fire_at_ms LIMIT ?4",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(params![ns, now, grace_ms, lim], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql_err)?;
                rows.collect::<Result<_, _>>().map_err(sql_err)
            })
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let shared = self.shared.clone();
        let fired = self
            .writer
            .submit(move |conn| {
                let mut fired = 0;
                for (key, seq) in due {
                    let n = conn
                        .prepare_cached("DELETE FROM timers WHERE run_key = ?1 AND seq = ?2")
                        .map_err(sql_err)?
                        .execute(params![key, seq])
                        .map_err(sql_err)?;
                    if n == 1 {
                        let seq = CommandSeq(u32::try_from(seq).unwrap_or(0));
                        shared.append_inbound(conn, key, EventKind::TimerFired { seq })?;
                        fired += 1;
                    }
                }
                Ok(fired)
            })
            .await?;
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
        let shared = self.shared.clone();
        let wid = workflow_id.clone();
        let name = name.to_owned();
        self.writer
            .submit(move |conn| {
                let Some((key, _)) = shared.latest_run(conn, wid.as_str())? else {
                    return Err(StoreError::NotFound(wid));
                };
                match shared.append_inbound(
                    conn,
                    key,
                    EventKind::SignalReceived { name, payload },
                )? {
                    Some(_) => Ok(()),
                    None => Err(StoreError::Finished(wid)),
                }
            })
            .await?;
        self.wake_workers();
        Ok(())
    }

    async fn request_cancel(
        &self,
        workflow_id: &WorkflowId,
        reason: &str,
    ) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let wid = workflow_id.clone();
        let reason = reason.to_owned();
        self.writer
            .submit(move |conn| {
                let Some((key, _)) = shared.latest_run(conn, wid.as_str())? else {
                    return Err(StoreError::NotFound(wid));
                };
                let cancel = EventKind::CancelRequested {
                    reason: reason.clone(),
                };
                match shared.append_inbound(conn, key, cancel)? {
                    Some(_) => shared.cancel_requested(conn, key, wid.as_str(), &reason),
                    None => Err(StoreError::Finished(wid)),
                }
            })
            .await?;
        self.wake_workers();
        Ok(())
    }

    async fn reset_run(
        &self,
        workflow_id: &WorkflowId,
        to: EventId,
    ) -> Result<StartOutcome, StoreError> {
        let shared = self.shared.clone();
        let wid = workflow_id.clone();
        let out = self
            .writer
            .submit(move |conn| {
                let Some((old, status)) = shared.latest_run(conn, wid.as_str())? else {
                    return Err(StoreError::NotFound(wid));
                };
                let (workflow, last, timeout_ms, queue): (String, i64, Option<i64>, String) = conn
                    .query_row(
                        "SELECT workflow, last_event_id, execution_timeout_ms, task_queue FROM runs WHERE run_key = ?1",
                        [old],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .map_err(sql_err)?;
                let to = to_i64(to.0);
                if to < 1 || to > last {
                    return Err(StoreError::Invalid(format!(
                        "run '{wid}' has no event {to}; its events are 1..{last}"
                    )));
                }
                let mut rows: Vec<(i64, i64, String, Option<i64>, Vec<u8>)> = Vec::new();
                {
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT event_id, time_ms, kind, seq, body FROM events WHERE run_key = ?1 AND event_id <= ?2 ORDER BY event_id",
                        )
                        .map_err(sql_err)?;
                    let mut q = stmt.query(params![old, to]).map_err(sql_err)?;
                    while let Some(r) = q.next().map_err(sql_err)? {
                        rows.push((
                            r.get(0).map_err(sql_err)?,
                            r.get(1).map_err(sql_err)?,
                            r.get(2).map_err(sql_err)?,
                            r.get(3).map_err(sql_err)?,
                            r.get(4).map_err(sql_err)?,
                        ));
                    }
                }
                if let Some((_, _, kind, _, _)) = rows.last()
                    && (kind == "RunCompleted"
                        || kind == "RunFailed"
                        || kind == "RunTimedOut"
                        || kind == "RunContinuedAsNew")
                {
                    return Err(StoreError::Invalid(format!(
                        "event {to} of run '{wid}' ends the run; reset to an earlier event"
                    )));
                }
                let now = clock::now_ms();
                let run_id = RunId::generate();
                // The new run gets a fresh deadline with the old run's execution timeout.
                let deadline = timeout_ms.map(|t| clock::host_now_ms().saturating_add(t));
                conn.prepare_cached(
                    "INSERT INTO runs (namespace, workflow_id, run_id, workflow, status, created_at_ms, updated_at_ms,
                     last_event_id, ready, execution_timeout_ms, deadline_ms, task_queue)
                     VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?5, ?6, 1, ?7, ?8, ?9)",
                )
                .map_err(sql_err)?
                .execute(params![shared.namespace, wid.as_str(), run_id.as_str(), workflow, now, to, timeout_ms, deadline,
                    queue])
                .map_err(sql_err)?;
                let key = conn.last_insert_rowid();
                let mut scheduled = std::collections::BTreeMap::new();
                let mut timers = std::collections::BTreeMap::new();
                let mut children = std::collections::BTreeSet::new();
                for (id, time, kind, seq, body) in rows {
                    conn.prepare_cached(
                        "INSERT INTO events (run_key, event_id, time_ms, kind, seq, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(sql_err)?
                    .execute(params![key, id, time, kind, seq, body])
                    .map_err(sql_err)?;
                    match shared.decode(old, id, body)? {
                        EventKind::ActivityScheduled { seq, name, options, .. } => {
                            scheduled.insert(seq.0, (id, name, options.task_queue.unwrap_or_default()));
                        }
                        EventKind::ActivityCompleted { seq, .. } | EventKind::ActivityFailed { seq, .. } => {
                            scheduled.remove(&seq.0);
                        }
                        EventKind::TimerStarted { seq, duration_ms } => {
                            timers.insert(seq.0, time.saturating_add(to_i64(duration_ms)));
                        }
                        EventKind::TimerFired { seq } => {
                            timers.remove(&seq.0);
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
                shared.move_children(conn, old, key, &children)?;
                for (seq, (event_id, name, queue)) in scheduled {
                    conn.prepare_cached(
                        "INSERT INTO activity_tasks (run_key, seq, namespace, name, task_queue, event_id, attempt, owner,
                         lease_expires_at_ms, available_at_ms, scheduled_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, NULL, 0, ?7, ?7)",
                    )
                    .map_err(sql_err)?
                    .execute(params![key, seq, shared.namespace, name, queue, event_id, now])
                    .map_err(sql_err)?;
                }
                for (seq, fire_at) in timers {
                    conn.prepare_cached(
                        "INSERT INTO timers (run_key, seq, namespace, fire_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(sql_err)?
                    .execute(params![key, seq, shared.namespace, fire_at])
                    .map_err(sql_err)?;
                }
                // Signals the old run had not applied yet belong to the new one.
                conn.execute("UPDATE inbox SET run_key = ?2 WHERE run_key = ?1", params![old, key])
                    .map_err(sql_err)?;
                if status == "running" || status == "suspended" {
                    let reason = format!("reset to run {run_id} at event {to}");
                    let error = crate::error::WorkflowError::new(crate::error::KIND_RESET, reason.clone());
                    let failed = EventKind::RunFailed { error };
                    shared.append(conn, old, last, &[(now, failed.clone())])?;
                    conn.execute(
                        "UPDATE runs SET status = 'failed', reason = ?2, ready = 0, owner = NULL, fence = fence + 1,
                         lease_expires_at_ms = 0, last_event_id = last_event_id + 1, updated_at_ms = ?3 WHERE run_key = ?1",
                        params![old, reason, now],
                    )
                    .map_err(sql_err)?;
                    conn.execute("DELETE FROM activity_tasks WHERE run_key = ?1", [old])
                        .map_err(sql_err)?;
                    conn.execute("DELETE FROM timers WHERE run_key = ?1", [old])
                        .map_err(sql_err)?;
                    shared.run_ended(conn, old, &failed)?;
                }
                Ok(StartOutcome {
                    key: RunKey(key),
                    run_id,
                    workflow,
                    created: true,
                })
            })
            .await?;
        self.wake_workers();
        Ok(out)
    }

    async fn resume(&self, workflow_id: &WorkflowId) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let wid = workflow_id.clone();
        self.writer
            .submit(move |conn| {
                let Some((key, status)) = shared.latest_run(conn, wid.as_str())? else {
                    return Err(StoreError::NotFound(wid));
                };
                if status != "suspended" {
                    return Err(StoreError::Invalid(format!(
                        "run '{wid}' is {status}, not suspended; only a suspended run can be retried"
                    )));
                }
                conn.execute(
                    "UPDATE runs SET status = 'running', ready = 1, reason = NULL, activation_failures = 0,
                     owner = NULL, lease_expires_at_ms = 0 WHERE run_key = ?1",
                    [key],
                )
                .map_err(sql_err)?;
                Ok(())
            })
            .await?;
        self.wake_workers();
        Ok(())
    }

    async fn find_run(&self, workflow_id: &WorkflowId) -> Result<Option<RunInfo>, StoreError> {
        let ns = self.shared.namespace.clone();
        let wid = workflow_id.0.clone();
        self.readers
            .submit(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE namespace = ?1 AND workflow_id = ?2 ORDER BY run_key DESC LIMIT 1"
                ))
                .map_err(sql_err)?
                .query_row(params![ns, wid], run_info)
                .optional()
                .map_err(sql_err)
            })
            .await
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunInfo>, StoreError> {
        let ns = self.shared.namespace.clone();
        self.readers
            .submit(move |conn| {
                let limit = if filter.limit == 0 {
                    1000
                } else {
                    filter.limit
                };
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                // Only the filters given go into the query, so SQLite can use an index for
                // them (with `?n IS NULL OR ...` for every filter it reads every run).
                let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE namespace = ?1");
                let mut args: Vec<&dyn rusqlite::ToSql> = vec![&ns];
                let status = filter.status.map(RunStatus::as_str);
                let workflow_id = filter.workflow_id.as_ref().map(WorkflowId::as_str);
                let filters: [(&str, Option<&dyn rusqlite::ToSql>); 5] = [
                    (
                        "status =",
                        status.as_ref().map(|v| v as &dyn rusqlite::ToSql),
                    ),
                    (
                        "workflow =",
                        filter.workflow.as_ref().map(|v| v as &dyn rusqlite::ToSql),
                    ),
                    (
                        "updated_at_ms <",
                        filter
                            .updated_before_ms
                            .as_ref()
                            .map(|v| v as &dyn rusqlite::ToSql),
                    ),
                    (
                        "created_at_ms >=",
                        filter
                            .created_after_ms
                            .as_ref()
                            .map(|v| v as &dyn rusqlite::ToSql),
                    ),
                    (
                        "workflow_id =",
                        workflow_id.as_ref().map(|v| v as &dyn rusqlite::ToSql),
                    ),
                ];
                for (test, value) in filters {
                    if let Some(value) = value {
                        args.push(value);
                        sql.push_str(&format!(" AND {test} ?{}", args.len()));
                    }
                }
                args.push(&limit);
                sql.push_str(&format!(" ORDER BY run_key DESC LIMIT ?{}", args.len()));
                let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
                let rows = stmt.query_map(args.as_slice(), run_info).map_err(sql_err)?;
                rows.collect::<Result<_, _>>().map_err(sql_err)
            })
            .await
    }

    async fn pending_activities(&self, key: RunKey) -> Result<Vec<PendingActivity>, StoreError> {
        let shared = self.shared.clone();
        self.readers
            .submit(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT seq, name, task_queue, attempt, owner, available_at_ms, last_error,
                         last_heartbeat_at_ms FROM activity_tasks WHERE run_key = ?1 ORDER BY seq",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map([key.0], |r| {
                        Ok(PendingActivity {
                            seq: CommandSeq(u32::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
                            name: r.get(1)?,
                            task_queue: r.get(2)?,
                            attempt: to_u32(r.get(3)?),
                            owner: r.get(4)?,
                            available_at_ms: r.get(5)?,
                            last_error: shared.open_text(r.get(6)?),
                            last_heartbeat_at_ms: r.get(7)?,
                        })
                    })
                    .map_err(sql_err)?;
                rows.collect::<Result<_, _>>().map_err(sql_err)
            })
            .await
    }

    async fn pending_timers(&self, key: RunKey) -> Result<Vec<PendingTimer>, StoreError> {
        self.readers
            .submit(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT seq, fire_at_ms FROM timers WHERE run_key = ?1 ORDER BY fire_at_ms",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map([key.0], |r| {
                        Ok(PendingTimer {
                            seq: CommandSeq(u32::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
                            fire_at_ms: r.get(1)?,
                        })
                    })
                    .map_err(sql_err)?;
                rows.collect::<Result<_, _>>().map_err(sql_err)
            })
            .await
    }

    async fn published_status(&self, key: RunKey) -> Result<Option<Payload>, StoreError> {
        let shared = self.shared.clone();
        self.readers
            .submit(move |conn| {
                let sealed: Option<Option<Vec<u8>>> = conn
                    .prepare_cached("SELECT published_status FROM runs WHERE run_key = ?1")
                    .map_err(sql_err)?
                    .query_row([key.0], |r| r.get(0))
                    .optional()
                    .map_err(sql_err)?;
                sealed
                    .flatten()
                    .map(|b| {
                        super::sealing::open_payload(
                            shared.codec.as_ref(),
                            key.0,
                            "published status",
                            b,
                        )
                    })
                    .transpose()
            })
            .await
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

    fn work_notifier(&self) -> Arc<tokio::sync::Notify> {
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
