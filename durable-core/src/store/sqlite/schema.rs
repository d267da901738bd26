//! Opening a database file: telling ours from anything else, creating and migrating the
//! schema. Nothing is written to a file that is not ours.

use crate::error::StoreError;
use rusqlite::Connection;

/// `PRAGMA application_id` of a durable database: "DRB1".
pub(crate) const APPLICATION_ID: i32 = 0x4452_4231;

/// Schema migrations in order; version N is the N-th entry.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_activity_heartbeats.sql"),
    include_str!("migrations/003_execution_timeouts.sql"),
    include_str!("migrations/004_drop_attempts_by_owner.sql"),
    include_str!("migrations/005_published_status.sql"),
    include_str!("migrations/006_schedules.sql"),
    include_str!("migrations/007_queue_limits.sql"),
    include_str!("migrations/008_child_runs.sql"),
    include_str!("migrations/009_run_task_queues.sql"),
    include_str!("migrations/010_claimable_attempts.sql"),
];

/// The newest schema version this binary knows.
pub(crate) fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).expect("a handful of migrations")
}

pub(crate) fn map_err(path: &str, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(f, ref msg) = e {
        let text = msg.clone().unwrap_or_else(|| f.to_string());
        return match f.code {
            ErrorCode::NotADatabase => StoreError::Foreign {
                path: path.to_owned(),
                reason: "not a SQLite database".into(),
            },
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy(text),
            ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => {
                StoreError::Io(text)
            }
            ErrorCode::DatabaseCorrupt => StoreError::Corrupt(text),
            ErrorCode::ReadOnly => StoreError::Io(format!("{path} is read-only: {text}")),
            _ => StoreError::Other(text),
        };
    }
    StoreError::Other(e.to_string())
}

/// Checks that the open file is a durable database (or empty and ours to create), and
/// brings its schema to the current version.
pub(crate) fn prepare(
    conn: &mut Connection,
    path: &str,
    may_create: bool,
) -> Result<(), StoreError> {
    let err = |e| map_err(path, e);
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(err)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let tables: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .map_err(err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)?
    };
    if app_id != APPLICATION_ID {
        if app_id == 0 && tables.is_empty() && version == 0 {
            if !may_create {
                return Err(StoreError::Foreign {
                    path: path.to_owned(),
                    reason: "an empty SQLite database, no durable schema".into(),
                });
            }
        } else {
            let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                reason: if shown.is_empty() {
                    format!("application id {app_id:#x}, no durable schema")
                } else {
                    format!(
                        "a SQLite database of another application, tables: {}",
                        shown.join(", ")
                    )
                },
            });
        }
    }
    if version > current_version() {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: current_version(),
        });
    }
    if version == current_version() {
        return Ok(());
    }
    // Migrate under the write lock; a second process migrating at the same moment waits
    // and then finds the work done.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let start = usize::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("{path}: negative schema version {version}")))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )
        .map_err(err)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(err)?;
    tx.commit().map_err(err)
}
