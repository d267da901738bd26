//! Connecting to PostgreSQL: the connection settings, telling our schema from anything
//! else, creating and migrating it (safely when several workers start at once), and
//! turning driver errors into [`StoreError`]s.

use crate::error::StoreError;
use tokio_postgres::error::SqlState;

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
    include_str!("migrations/010_sealed_last_error.sql"),
];

/// The table that records which migrations ran; its presence marks a schema as ours.
const VERSION_TABLE: &str = "durable_migrations";

/// The schema used when the options name none.
pub(crate) const DEFAULT_SCHEMA: &str = "durable";

/// The newest schema version this binary knows.
pub(crate) fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).expect("a handful of migrations")
}

/// Checks a schema name: plain lower-case identifiers only, so it needs no quoting in
/// `search_path`, `CREATE SCHEMA` or a connection's startup options.
pub(crate) fn check_schema_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || name.len() > 63 || name.starts_with("pg_") {
        return Err(StoreError::Invalid(format!(
            "PostgreSQL schema name {name:?} is not usable: use 1 to 63 lower-case letters, digits and underscores, starting with a letter (and not pg_)"
        )));
    }
    Ok(())
}

/// The connection URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // The key=value form: drop the password setting.
        return url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Parses `url` and points every connection at `schema` through its startup options.
pub(crate) fn config(url: &str, schema: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        StoreError::Invalid(format!(
            "{} is not a PostgreSQL connection URL: {e}",
            redact(url)
        ))
    })?;
    let options = match config.get_options() {
        Some(existing) if !existing.is_empty() => {
            format!("{existing} -c search_path={schema}")
        }
        _ => format!("-c search_path={schema}"),
    };
    config.options(&options);
    if config.get_application_name().is_none() {
        config.application_name("durable");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    Ok(config)
}

/// A stable 64-bit FNV-1a hash, for advisory lock keys and channel names that every
/// process must compute alike.
pub(crate) fn fnv64(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// Makes sure `schema` exists and holds the current durable schema, creating or
/// migrating it under an advisory lock: a second process doing the same at the same
/// moment waits, then finds the work done.
pub(crate) async fn prepare(
    client: &mut tokio_postgres::Client,
    schema: &str,
    shown: &str,
) -> Result<(), StoreError> {
    let err = |e| map_err(shown, e);
    let tx = client.transaction().await.map_err(err)?;
    let lock_key = i64::from_ne_bytes(fnv64(&["durable-migrate", schema]).to_ne_bytes());
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key])
        .await
        .map_err(err)?;
    let exists = tx
        .query_opt(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1",
            &[&schema],
        )
        .await
        .map_err(err)?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .map_err(err)?;
    }
    // The connection's search_path named the schema before it existed; say it again so
    // the tables below land in it.
    tx.batch_execute(&format!("SET LOCAL search_path TO {schema}"))
        .await
        .map_err(err)?;
    let tables: Vec<String> = tx
        .query(
            "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
            &[&schema],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !tables.iter().any(|t| t == VERSION_TABLE) {
        if !tables.is_empty() {
            let shown_tables: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
            return Err(StoreError::Foreign {
                path: format!("schema {schema} of {shown}"),
                reason: format!(
                    "it holds other tables ({}); pass another schema",
                    shown_tables.join(", ")
                ),
            });
        }
        tx.batch_execute(&format!(
            "CREATE TABLE {VERSION_TABLE} (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)"
        ))
        .await
        .map_err(err)?;
    }
    let version: i64 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0)::BIGINT FROM {VERSION_TABLE}"),
            &[],
        )
        .await
        .map_err(err)?
        .get(0);
    if version > current_version() {
        return Err(StoreError::TooNew {
            path: format!("schema {schema} of {shown}"),
            found: version,
            supported: current_version(),
        });
    }
    let start = usize::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("negative schema version {version}")))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.batch_execute(sql).await.map_err(err)?;
        let v = i64::try_from(i + 1).expect("a handful of migrations");
        tx.execute(
            &format!(
                "INSERT INTO {VERSION_TABLE} (version, applied_at_ms) VALUES ($1, {})",
                super::NOW_MS
            ),
            &[&v],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

/// Classifies a driver error: lock conflicts and overload are [`StoreError::Busy`], a
/// lost or refused connection is [`StoreError::Io`] (both retryable); the rest is
/// [`StoreError::Other`].
pub(crate) fn map_err(shown: &str, e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let text = db.message().to_owned();
        let class = &code.code()[..2];
        return if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
            || class == "53"
        {
            StoreError::Busy(text)
        } else if class == "08"
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
        {
            StoreError::Io(format!("{shown}: {text}"))
        } else {
            StoreError::Other(format!("{text} (SQLSTATE {})", code.code()))
        };
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    let mut io = e.is_closed();
    while let Some(s) = source {
        io |= s.is::<std::io::Error>();
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if io || text.contains("timed out") {
        StoreError::Io(format!("{shown}: {text}"))
    } else {
        StoreError::Other(text)
    }
}

/// Classifies a pool error.
pub(crate) fn map_pool_err(shown: &str, e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => map_err(shown, e),
        PoolError::Timeout(kind) => StoreError::Busy(format!(
            "{shown}: timed out waiting for a connection ({kind:?}); the pool may be too small"
        )),
        PoolError::Closed => StoreError::Closed,
        e => StoreError::Other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://app:secret@db.local:5432/prod?sslmode=disable"),
            "postgres://app@db.local:5432/prod?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact("host=/tmp user=x password=y dbname=z"),
            "host=/tmp user=x dbname=z"
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("durable").is_ok());
        assert!(check_schema_name("t_1a2b").is_ok());
        for bad in [
            "",
            "Durable",
            "1abc",
            "a-b",
            "a;drop",
            "pg_x",
            &"a".repeat(64),
        ] {
            assert!(check_schema_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn fnv64_is_stable_and_separates_parts() {
        assert_eq!(fnv64(&["durable"]), fnv64(&["durable"]));
        assert_ne!(fnv64(&["ab", "c"]), fnv64(&["a", "bc"]));
    }
}
