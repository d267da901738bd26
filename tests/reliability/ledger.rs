//! The side-effect ledger: a SQLite file of its own, apart from the store under test, in
//! which every activity attempt of the kitchen-sink workflows leaves its trace.
//!
//! - `attempts`: one row per attempt, always (the attempt's number, whether it
//!   succeeded, the process that ran it, when it started and ended);
//! - `effects`: one row per idempotency key, `INSERT OR IGNORE`, written by successful
//!   attempts only: the side effect a downstream system would deduplicate.
//!
//! A successful attempt writes both rows in one transaction, *before* the worker records
//! the result. A crash between the two is the dangerous window: the effect happened, the
//! history does not know, and the activity runs again. The checker proves the window
//! was hit (successful attempts > effects) and that every duplicate was absorbed by the
//! key (effects = completed activities, exactly once each).
//!
//! This file is compiled twice: into the `chaos-worker` binary and into the reliability
//! tests (which also run kitchen-sink workers in process).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The ledger of this process: set once by the worker binary from `CHAOS_LEDGER`, or by
/// an in-process test before it starts a worker.
static LEDGER: Mutex<Option<(PathBuf, Option<rusqlite::Connection>)>> = Mutex::new(None);

/// Where this process's activities record their attempts (`None`: nowhere).
pub(crate) fn set_path(path: Option<&Path>) {
    let mut guard = LEDGER.lock().unwrap_or_else(|p| p.into_inner());
    *guard = path.map(|p| (p.to_path_buf(), None));
}

/// Opens (and creates) a ledger file: WAL, so several worker processes can share it, and
/// `synchronous=NORMAL`, which survives the process crashes the tests cause.
pub(crate) fn open(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         CREATE TABLE IF NOT EXISTS attempts (
             id        INTEGER PRIMARY KEY,
             idem_key  TEXT    NOT NULL,
             activity  TEXT    NOT NULL,
             attempt   INTEGER NOT NULL,
             ok        INTEGER NOT NULL,
             output    INTEGER,
             pid       INTEGER NOT NULL,
             start_us  INTEGER NOT NULL,
             end_us    INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS effects (
             idem_key  TEXT    PRIMARY KEY,
             activity  TEXT    NOT NULL,
             output    INTEGER NOT NULL,
             pid       INTEGER NOT NULL,
             at_us     INTEGER NOT NULL
         );",
    )?;
    Ok(conn)
}

/// What one attempt did, as the ledger records it.
pub(crate) struct AttemptRecord<'a> {
    /// `{workflow_id}/{run_id}/{command}`.
    pub(crate) key: &'a str,
    /// The activity name.
    pub(crate) activity: &'a str,
    /// The attempt number.
    pub(crate) attempt: u32,
    /// The output, for a successful attempt (which also records the effect).
    pub(crate) output: Option<u64>,
    /// When the attempt started (µs since the epoch).
    pub(crate) start_us: i64,
}

/// Records an attempt (and, when it succeeded, its effect) in one transaction. Panics
/// when the ledger cannot be written: the test would otherwise prove nothing, and the
/// panic fails the attempt, which is retried.
pub(crate) fn record(rec: &AttemptRecord<'_>) {
    let mut guard = LEDGER.lock().unwrap_or_else(|p| p.into_inner());
    let Some((path, conn)) = guard.as_mut() else {
        return;
    };
    if conn.is_none() {
        *conn = Some(
            open(path).unwrap_or_else(|e| panic!("cannot open the ledger {}: {e}", path.display())),
        );
    }
    let conn = conn.as_mut().expect("opened just above");
    let write = |conn: &mut rusqlite::Connection| -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_us();
        let pid = i64::from(std::process::id());
        let output = rec.output.map(to_sql);
        tx.execute(
            "INSERT INTO attempts (idem_key, activity, attempt, ok, output, pid, start_us, end_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                rec.key,
                rec.activity,
                rec.attempt,
                output.is_some(),
                output,
                pid,
                rec.start_us,
                now
            ],
        )?;
        if let Some(output) = output {
            tx.execute(
                "INSERT OR IGNORE INTO effects (idem_key, activity, output, pid, at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![rec.key, rec.activity, output, pid, now],
            )?;
        }
        tx.commit()
    };
    if let Err(e) = write(conn) {
        panic!("cannot write the ledger {}: {e}", path.display());
    }
}

/// A u64 as SQLite stores it (the same bits, as i64).
pub(crate) fn to_sql(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

/// The inverse of [`to_sql`].
pub(crate) fn from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

/// Microseconds since the Unix epoch (one host clock for every process of a test).
pub(crate) fn now_us() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
