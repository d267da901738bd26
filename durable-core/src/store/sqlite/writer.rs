//! The one writer thread (group commit) and the reader threads of a SQLite store.
//!
//! Every write is a job sent to the writer. The writer takes all jobs waiting, runs
//! each inside its own savepoint of one `BEGIN IMMEDIATE` transaction, commits once
//! (one fsync for the whole batch under `synchronous=FULL`) and only then answers each
//! job. A job that fails is rolled back to its savepoint alone (a job alone in its batch
//! needs no savepoint: its failure rolls back the transaction); a commit that fails
//! answers every job of the batch with the error, and nothing of it is on disk.

use crate::error::StoreError;
use rusqlite::Connection;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How a job's answer is delivered once the batch's fate is known.
pub(crate) type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write job's body: runs (or is told why it cannot run) and returns whether it
/// failed, and its reply.
type JobFn = Box<dyn FnOnce(Result<&Connection, StoreError>) -> (bool, Reply) + Send>;

/// A write job.
pub(crate) struct WriteJob {
    run: JobFn,
    /// The job makes every check that can refuse it before its first write, so a
    /// refusal leaves nothing to undo and it runs without a savepoint of its own. Should
    /// it fail after writing all the same, the whole batch is rolled back and answered
    /// with an error.
    checks_first: bool,
}
/// A read job.
pub(crate) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The largest number of jobs committed together.
const MAX_BATCH: usize = 512;

pub(crate) struct Writer {
    tx: Mutex<Option<mpsc::Sender<WriteJob>>>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    pub(crate) fn spawn(conn: Connection, path: String) -> Self {
        let (tx, rx) = mpsc::channel::<WriteJob>();
        let handle = std::thread::Builder::new()
            .name("durable-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, path))
            .expect("spawning the writer thread");
        Writer {
            tx: Mutex::new(Some(tx)),
            handle: Mutex::new(Some(handle)),
        }
    }

    /// Queues `f` and resolves with its result once its batch committed. `f` runs in a
    /// savepoint: if it fails, what it wrote is undone and the rest of the batch stands.
    pub(crate) fn submit<T, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue(f, false)
    }

    /// Like [`submit`](Self::submit) for a job that makes all the checks that can refuse
    /// it before it writes anything: it runs without a savepoint (which costs a copy of
    /// every page it touches that the batch touched before). The hot path, `commit`, is
    /// one.
    pub(crate) fn submit_checked<T, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue(f, true)
    }

    fn queue<T, F>(
        &self,
        f: F,
        checks_first: bool,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, StoreError>>();
        let run: JobFn = Box::new(move |conn: Result<&Connection, StoreError>| {
            let result = conn.and_then(f);
            let failed = result.is_err();
            let reply: Reply = Box::new(move |commit: Result<(), StoreError>| {
                let answer = match (result, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(e),
                    (Ok(v), Ok(())) => Ok(v),
                };
                let _ = reply_tx.send(answer);
            });
            (failed, reply)
        });
        let job = WriteJob { run, checks_first };
        let sent = match self.tx.lock() {
            Ok(guard) => guard
                .as_ref()
                .map(|tx| tx.send(job).is_ok())
                .unwrap_or(false),
            Err(_) => false,
        };
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            reply_rx.await.unwrap_or(Err(StoreError::Closed))
        }
    }

    pub(crate) fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut h) = self.handle.lock()
            && let Some(h) = h.take()
        {
            let _ = h.join();
        }
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<WriteJob>, path: String) {
    let mut wrote = false;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        wrote |= run_batch(&conn, batch, &path);
    }
    // Leave a clean WAL behind when the process ends normally. A store that wrote
    // nothing (`status`, `list`, a refused command) leaves the files as they were.
    if wrote {
        let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
    }
}

/// Runs a batch in one transaction; true when a job succeeded and the batch committed.
fn run_batch(conn: &Connection, batch: Vec<WriteJob>, path: &str) -> bool {
    if let Err(e) = begin_immediate(conn) {
        let err = super::schema::map_err(path, e);
        for job in batch {
            // Answer without running: nothing was written.
            let (_, reply) = (job.run)(Err(err.clone()));
            reply(Err(err.clone()));
        }
        return false;
    }
    let mut replies = Vec::with_capacity(batch.len());
    let mut succeeded = false;
    // Statements are prepared once and cached: parsing them again for every job was a
    // measurable share of a step.
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]).map(|_| ()))
    };
    if batch.len() == 1 {
        // Alone in its transaction, a job needs no savepoint: if it fails, the whole
        // transaction is rolled back (a savepoint costs a statement journal and three
        // more statements, a visible share of a sequential step).
        let Some(job) = batch.into_iter().next() else {
            return false;
        };
        let (failed, reply) = (job.run)(Ok(conn));
        if failed {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            reply(Ok(()));
            return false;
        }
        let committed = run("COMMIT").map_err(|e| super::schema::map_err(path, e));
        if committed.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let wrote = committed.is_ok();
        reply(committed);
        return wrote;
    }
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        let savepoint = !job.checks_first;
        if savepoint && let Err(e) = run("SAVEPOINT job") {
            replies.push((job.run)(Err(super::schema::map_err(path, e))).1);
            continue;
        }
        let changes = conn.total_changes();
        let (failed, reply) = (job.run)(Ok(conn));
        let undo_all = failed && !savepoint && conn.total_changes() != changes;
        if undo_all && !conn.is_autocommit() {
            // A job without a savepoint failed after writing: only the whole
            // transaction can undo it.
            let _ = conn.execute_batch("ROLLBACK");
        }
        if failed && conn.is_autocommit() {
            // SQLite rolled the whole transaction back (it may, on SQLITE_FULL, an i/o
            // error or out of memory): the jobs before this one are undone, and the
            // ones after it would each commit on their own, outside any transaction,
            // while being told the batch failed. Answer the undone ones, and run the
            // rest as a batch of their own.
            let undone = StoreError::Io(format!(
                "{path}: the transaction was rolled back after another write in it failed; nothing of this write was recorded"
            ));
            for earlier in replies {
                earlier(Err(undone.clone()));
            }
            reply(Err(undone));
            let rest: Vec<WriteJob> = jobs.collect();
            return !rest.is_empty() && run_batch(conn, rest, path);
        }
        if !failed {
            succeeded = true;
        }
        if savepoint {
            if failed {
                let _ = run("ROLLBACK TO job");
            }
            let _ = run("RELEASE job");
        }
        replies.push(reply);
    }
    let committed = run("COMMIT").map_err(|e| super::schema::map_err(path, e));
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let wrote = succeeded && committed.is_ok();
    for reply in replies {
        reply(committed.clone());
    }
    wrote
}

fn begin_immediate(conn: &Connection) -> Result<(), rusqlite::Error> {
    // busy_timeout makes SQLite wait for another process's write lock; a few more tries
    // cover the rare busy answer that skips the handler.
    let mut tries = 0;
    loop {
        match conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]).map(|_| ()))
        {
            Ok(()) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DatabaseBusy && tries < 50 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reader threads, each with its own connection, sharing one queue.
pub(crate) struct Readers {
    tx: Mutex<Option<mpsc::Sender<ReadJob>>>,
}

impl Readers {
    pub(crate) fn spawn(conns: Vec<Connection>) -> Self {
        let (tx, rx) = mpsc::channel::<ReadJob>();
        let rx = Arc::new(Mutex::new(rx));
        for (i, conn) in conns.into_iter().enumerate() {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("durable-sqlite-reader-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&conn),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawning a reader thread");
        }
        Readers {
            tx: Mutex::new(Some(tx)),
        }
    }

    pub(crate) fn submit<T, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn: &Connection| {
            let _ = reply_tx.send(f(conn));
        });
        let sent = match self.tx.lock() {
            Ok(guard) => guard
                .as_ref()
                .map(|tx| tx.send(job).is_ok())
                .unwrap_or(false),
            Err(_) => false,
        };
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            reply_rx.await.unwrap_or(Err(StoreError::Closed))
        }
    }

    pub(crate) fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn insert(sql: &'static str) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send {
        move |c| {
            c.execute(sql, [])
                .map(|_| ())
                .map_err(|e| super::super::schema::map_err("test.db", e))
        }
    }

    /// A write that fills the disk makes SQLite roll back the whole transaction. The
    /// jobs batched after it then ran outside any transaction, each committing on its
    /// own, while the batch told every job it had failed: writes on disk that their
    /// callers believed lost. Every job answered Ok must be on disk, and no other.
    #[test]
    fn a_write_that_fills_the_disk_leaves_no_write_unacknowledged()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("test.db");
        let conn = Connection::open(&path)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch("CREATE TABLE t (x BLOB); PRAGMA max_page_count = 30;")?;
        let writer = Writer::spawn(conn, "test.db".into());
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        // Keep the writer busy so that the next jobs queue up and form one batch.
        let hold = writer.submit(|_| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        });
        std::thread::sleep(Duration::from_millis(100));
        let before = writer.submit(insert("INSERT INTO t VALUES (zeroblob(100))"));
        let full = writer.submit(insert("INSERT INTO t VALUES (randomblob(400000))"));
        let after = writer.submit(insert("INSERT INTO t VALUES (zeroblob(100))"));
        rt.block_on(hold)?;
        let answers = [rt.block_on(before), rt.block_on(full), rt.block_on(after)];
        writer.shutdown();
        assert!(
            answers[1].is_err(),
            "the write over max_page_count must fail"
        );
        let acknowledged = answers.iter().filter(|a| a.is_ok()).count();
        let check = Connection::open(&path)?;
        let rows: i64 = check.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
        assert_eq!(
            usize::try_from(rows)?,
            acknowledged,
            "rows on disk vs writes answered Ok: {answers:?}"
        );
        Ok(())
    }

    fn count(path: &std::path::Path) -> Result<i64, Box<dyn std::error::Error>> {
        let check = Connection::open(path)?;
        Ok(check.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
    }

    /// Jobs that check before they write run without savepoints. One refused before
    /// writing leaves the batch alone; one that fails after writing takes the jobs
    /// batched before it down with it (answered with an error, nothing on disk), and the
    /// jobs after it run as a batch of their own. Every job answered Ok is on disk, and
    /// no other.
    #[test]
    fn a_checked_job_that_fails_after_writing_undoes_its_batch_and_only_that()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("test.db");
        let conn = Connection::open(&path)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch("CREATE TABLE t (x INTEGER)")?;
        let writer = Writer::spawn(conn, "test.db".into());
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let hold = writer.submit(|_| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        });
        std::thread::sleep(Duration::from_millis(100));
        let first = writer.submit_checked(insert("INSERT INTO t VALUES (1)"));
        let refused = writer.submit_checked(|_: &Connection| -> Result<(), StoreError> {
            Err(StoreError::Conflict("refused before writing".into()))
        });
        let second = writer.submit_checked(insert("INSERT INTO t VALUES (2)"));
        let late = writer.submit_checked(|c: &Connection| -> Result<(), StoreError> {
            c.execute("INSERT INTO t VALUES (3)", [])
                .map_err(|e| StoreError::Other(e.to_string()))?;
            Err(StoreError::Conflict("refused after writing".into()))
        });
        let after = writer.submit_checked(insert("INSERT INTO t VALUES (4)"));
        rt.block_on(hold)?;
        let first = rt.block_on(first);
        let refused = rt.block_on(refused);
        let second = rt.block_on(second);
        let late = rt.block_on(late);
        let after = rt.block_on(after);
        writer.shutdown();
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
        assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
        assert!(first.is_err() && second.is_err(), "{first:?} {second:?}");
        assert!(after.is_ok(), "{after:?}");
        let rows: Vec<i64> = {
            let check = Connection::open(&path)?;
            let mut stmt = check.prepare("SELECT x FROM t ORDER BY x")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        assert_eq!(rows, vec![4], "only the write answered Ok is on disk");
        assert_eq!(count(&path)?, 1);
        Ok(())
    }
}
