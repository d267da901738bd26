//! The store conformance suite against each store: SQLite in a temporary directory, and
//! PostgreSQL when `DURABLE_TEST_DATABASE_URL` names a reachable server (each test in a
//! schema of its own, dropped at the end). Without it the PostgreSQL tests print why
//! they skipped and pass.
//!
//! `cargo test -p durable-core --features testing --test store_conformance`

use durable_core::store::SharedStore;
use durable_core::store::conformance::{self, CHECKS};
use futures::future::BoxFuture;
use std::time::Duration;

/// How long one check may take before it counts as hung.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

async fn run_check(name: &str, open: conformance::Opener<'_>) {
    if tokio::time::timeout(CHECK_TIMEOUT, conformance::run(name, open))
        .await
        .is_err()
    {
        panic!("conformance check {name} did not finish within {CHECK_TIMEOUT:?}");
    }
}

#[cfg(feature = "sqlite")]
async fn on_sqlite(name: &str) {
    use durable_core::store::sqlite::{SqliteOptions, SqliteStore};
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let path = dir.path().join("conformance.db");
    let open = move |namespace: &str| -> BoxFuture<'static, SharedStore> {
        let options = SqliteOptions {
            namespace: namespace.to_owned(),
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&path, options).expect("opening the test database");
        Box::pin(async move { Arc::new(store) as SharedStore })
    };
    run_check(name, &open).await;
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use durable_core::store::Store;
    use durable_core::store::postgres::{PostgresOptions, PostgresStore};
    use futures::FutureExt;
    use std::sync::Arc;

    /// The server to test against, or why there is none.
    async fn server() -> Result<String, String> {
        let url = std::env::var("DURABLE_TEST_DATABASE_URL")
            .map_err(|_| "DURABLE_TEST_DATABASE_URL is not set".to_owned())?;
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&url, tokio_postgres::NoTls),
        )
        .await
        .map_err(|_| format!("no answer from {url} within 5 s"))?
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        drop(connected);
        Ok(url)
    }

    async fn execute(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = client.batch_execute(sql).await;
        drop(client);
        let _ = driver.await;
        result
    }

    pub(super) async fn on_postgres(name: &str) {
        let url = match server().await {
            Ok(url) => url,
            Err(reason) => {
                println!("skipping PostgreSQL conformance: {reason}");
                return;
            }
        };
        let schema = format!("conformance_{}", uuid::Uuid::new_v4().simple());
        let open = {
            let (url, schema) = (url.clone(), schema.clone());
            move |namespace: &str| -> BoxFuture<'static, SharedStore> {
                let options = PostgresOptions {
                    namespace: namespace.to_owned(),
                    schema: Some(schema.clone()),
                    pool_size: 8,
                    ..PostgresOptions::default()
                };
                let url = url.clone();
                Box::pin(async move {
                    let store = PostgresStore::connect(&url, options)
                        .await
                        .expect("connecting to the test database");
                    Arc::new(store) as SharedStore
                })
            }
        };
        let outcome = std::panic::AssertUnwindSafe(run_check(name, &open))
            .catch_unwind()
            .await;
        if let Err(e) = execute(&url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await {
            eprintln!("could not drop test schema {schema}: {e}");
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Runs `body` against a fresh schema of the test server (dropped afterwards), or
    /// prints why it skipped.
    async fn with_schema<F, Fut>(what: &str, body: F)
    where
        F: FnOnce(String, String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let url = match server().await {
            Ok(url) => url,
            Err(reason) => {
                println!("skipping PostgreSQL {what}: {reason}");
                return;
            }
        };
        let schema = format!("store_{}", uuid::Uuid::new_v4().simple());
        let outcome = std::panic::AssertUnwindSafe(tokio::time::timeout(
            CHECK_TIMEOUT,
            body(url.clone(), schema.clone()),
        ))
        .catch_unwind()
        .await;
        if let Err(e) = execute(&url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await {
            eprintln!("could not drop test schema {schema}: {e}");
        }
        match outcome {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(Err(_)) => panic!("{what} did not finish within {CHECK_TIMEOUT:?}"),
            Ok(Ok(())) => {}
        }
    }

    fn options(schema: &str, namespace: &str) -> PostgresOptions {
        PostgresOptions {
            namespace: namespace.to_owned(),
            schema: Some(schema.to_owned()),
            pool_size: 4,
            ..PostgresOptions::default()
        }
    }

    /// Workers starting at once on an empty schema migrate it once, without errors.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_schema_is_created_once_when_many_connect_at_once() {
        with_schema("migration test", |url, schema| async move {
            let connects =
                (0..6).map(|_| PostgresStore::connect(&url, options(&schema, "default")));
            for store in futures::future::join_all(connects).await {
                store.expect("every concurrent connect succeeds");
            }
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connecting");
            let driver = tokio::spawn(connection);
            let rows = client
                .query(
                    &format!("SELECT version FROM {schema}.durable_migrations"),
                    &[],
                )
                .await
                .expect("reading the migrations table");
            let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(
                versions,
                [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                "each migration ran once"
            );
            drop(client);
            let _ = driver.await;
        })
        .await;
    }

    /// A schema holding someone else's tables is refused, and nothing is written to it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_refuses_a_schema_of_another_application() {
        with_schema("foreign schema test", |url, schema| async move {
            execute(
                &url,
                &format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.customers (id INT)"),
            )
            .await
            .expect("creating a foreign schema");
            match PostgresStore::connect(&url, options(&schema, "default")).await {
                Err(durable_core::StoreError::Foreign { reason, .. }) => {
                    assert!(
                        reason.contains("customers"),
                        "the reason names what is there: {reason}"
                    );
                }
                other => panic!("expected StoreError::Foreign, got {other:?}"),
            }
        })
        .await;
    }

    /// New work made through one handle wakes the workers of another handle (another
    /// process) through LISTEN/NOTIFY, without waiting for a poll.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_wakes_other_processes_with_notify() {
        with_schema("wake-up test", |url, schema| async move {
            let worker_side = PostgresStore::connect(&url, options(&schema, "default"))
                .await
                .expect("connecting");
            let client_side = PostgresStore::connect(&url, options(&schema, "default"))
                .await
                .expect("connecting");
            let other_namespace = PostgresStore::connect(&url, options(&schema, "elsewhere"))
                .await
                .expect("connecting");
            let notifier = worker_side.work_notifier();
            // The listener connects in the background; give it a moment, then try a few
            // times in case it was not listening yet.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut woken = false;
            for attempt in 0..10 {
                let notified = notifier.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let request = durable_core::store::StartRequest {
                    workflow_id: format!("wake-{attempt}").into(),
                    workflow: "w".to_owned(),
                    input: durable_core::Payload::encode(&attempt).expect("encoding"),
                    seed: 1,
                    execution_timeout: None,
                    task_queue: String::new(),
                };
                client_side.start_run(request).await.expect("start_run");
                if tokio::time::timeout(Duration::from_secs(1), notified)
                    .await
                    .is_ok()
                {
                    woken = true;
                    break;
                }
            }
            assert!(
                woken,
                "a start in another handle never woke this handle's workers"
            );
            // Another namespace has a channel of its own.
            let notified = notifier.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let request = durable_core::store::StartRequest {
                workflow_id: "elsewhere-1".into(),
                workflow: "w".to_owned(),
                input: durable_core::Payload::encode(&0).expect("encoding"),
                seed: 1,
                execution_timeout: None,
                task_queue: String::new(),
            };
            other_namespace.start_run(request).await.expect("start_run");
            assert!(
                tokio::time::timeout(Duration::from_millis(500), notified)
                    .await
                    .is_err(),
                "work in another namespace woke this namespace's workers"
            );
        })
        .await;
    }
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {
        #[test]
        fn every_check_runs_here() {
            assert_eq!(CHECKS, [$(stringify!($check)),*], "add new checks to conformance_tests!");
        }

        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::on_sqlite(stringify!($check)).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::pg::on_postgres(stringify!($check)).await;
                }
            )*
        }
    };
}

conformance_tests!(
    append_numbers_events_contiguously,
    stale_fence_or_position_is_refused_and_writes_nothing,
    expired_lease_is_taken_over_with_a_new_fence,
    timers_fire_when_due_and_once,
    signals_wait_in_the_inbox_and_make_the_run_ready,
    finished_run_refuses_signals,
    a_run_does_not_finish_over_a_waiting_signal,
    start_is_idempotent,
    concurrent_commits_all_land,
    activities_are_claimed_reported_and_retried,
    activities_are_routed_by_task_queue,
    renewal_extends_only_the_listed_attempts,
    reset_run_and_resume,
    namespaces_isolate_runs,
    heartbeats_are_kept_for_the_next_attempt,
    attempts_past_their_heartbeat_timeout_are_retried,
    runs_past_their_execution_timeout_are_ended,
    published_status_is_written_by_commits,
    continue_as_new_starts_the_next_run_atomically,
    continue_as_new_commits_are_checked,
    schedules_are_created_paused_resumed_and_deleted,
    due_schedules_start_one_run_per_tick,
    missed_ticks_follow_the_catch_up_policy,
    overlapping_ticks_are_skipped_or_allowed,
    queue_concurrency_limit_holds_across_claimers,
    queue_rate_limit_spaces_starts_by_the_store_clock,
    queue_limits_are_validated_listed_and_scoped_by_namespace,
    child_runs_start_with_the_parent_commit,
    child_outcomes_reach_the_parent,
    cancellation_reaches_children_by_policy,
    a_reset_parent_keeps_its_pending_children,
    runs_are_claimed_only_by_workers_of_their_workflow,
    runs_are_claimed_only_on_their_task_queue,
    runs_are_listed_by_every_filter,
);
