//! The security checks S1-S6 of the reliability plan: no plaintext payload bytes on disk
//! with an encrypting codec, hostile ids and names, namespace isolation, file modes,
//! `Secret<T>` kept out of logs, and untrusted history files.

use crate::support::{self, Snapshot};
use durable::prelude::*;
use durable::schedule::ScheduleSpec;
use durable::store::{RunFilter, RunStatus, SharedStore};
use durable::{EventKind, PayloadCodec, ScheduleOptions, SqliteOptions, StoreError};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// --- S1: an encrypting codec ---------------------------------------------------------

/// The marker of S1: it must never be found in the database files.
const MARKER: &str = "SECRET-7f3a9c41e2d8";

/// A keyed stream cipher for tests: a random nonce, the bytes XORed with a SplitMix64
/// keystream of (key, nonce), and a keyed FNV tag. Not cryptography, but no plaintext
/// byte pattern survives it, which is what S1 checks.
struct TestCipher {
    key: u64,
    nonces: AtomicU64,
}

impl TestCipher {
    fn new(key: u64) -> Self {
        TestCipher {
            key,
            nonces: AtomicU64::new(key.rotate_left(17) ^ 0x0123_4567),
        }
    }

    fn apply(&self, nonce: u64, bytes: &mut [u8]) {
        let mut rng = support::Rng::new(self.key ^ nonce.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for chunk in bytes.chunks_mut(8) {
            for (b, k) in chunk.iter_mut().zip(rng.next_u64().to_le_bytes()) {
                *b ^= k;
            }
        }
    }

    fn tag(&self, nonce: u64, plain: &[u8]) -> u64 {
        plain
            .iter()
            .fold(0xcbf2_9ce4_8422_2325 ^ self.key ^ nonce, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            })
    }
}

impl PayloadCodec for TestCipher {
    fn encode(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        let nonce = support::Rng::new(self.nonces.fetch_add(1, Ordering::Relaxed)).next_u64();
        let tag = self.tag(nonce, &bytes);
        self.apply(nonce, &mut bytes);
        let mut out = nonce.to_le_bytes().to_vec();
        out.extend_from_slice(&bytes);
        out.extend_from_slice(&tag.to_le_bytes());
        out
    }

    fn decode(&self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        if bytes.len() < 16 {
            return Err(format!("{} bytes is too short to be sealed", bytes.len()));
        }
        let nonce = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| "nonce")?);
        let tag = u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().map_err(|_| "tag")?);
        let mut plain = bytes[8..bytes.len() - 8].to_vec();
        self.apply(nonce, &mut plain);
        if self.tag(nonce, &plain) != tag {
            return Err("wrong key or damaged bytes".into());
        }
        Ok(plain)
    }
}

/// An order whose every part is confidential.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Confidential {
    note: String,
    card: Secret<String>,
    fail: bool,
}

/// Echoes with the marker in its output.
#[activity]
async fn seal_echo(_ctx: ActivityContext, s: String) -> Result<String, ActivityError> {
    Ok(format!("{s} / output {MARKER}"))
}

/// Fails its first attempt with the marker in the error (kept as the task's last error
/// while the retry waits), then succeeds.
#[activity]
async fn seal_retry(ctx: ActivityContext, s: String) -> Result<String, ActivityError> {
    if ctx.attempt() < 2 {
        return Err(ActivityError::retryable(
            "Unavailable",
            format!("{s}: retry error {MARKER}"),
        ));
    }
    Ok(s)
}

/// Fails for good with the marker in the error.
#[activity]
async fn seal_refuse(_ctx: ActivityContext, s: String) -> Result<String, ActivityError> {
    Err(ActivityError::non_retryable(
        "Refused",
        format!("{s}: final error {MARKER}"),
    ))
}

/// Every path a payload takes: input, activity input and output, a retry error, a final
/// activity error, a signal, the run's output or error, a published status.
#[workflow(name = "hd.confidential")]
async fn confidential(ctx: WorkflowContext, order: Confidential) -> Result<String, WorkflowError> {
    ctx.set_status(&format!("status {MARKER}"))?;
    let a = ctx
        .activity::<seal_echo>(format!("{} {}", order.note, order.card.expose()))
        .await?;
    let b = ctx
        .activity::<seal_retry>(format!("retry {MARKER}"))
        .retry(RetryPolicy::exponential(Duration::from_millis(400)).max_attempts(3))
        .await?;
    let e = ctx.activity::<seal_refuse>("refuse".into()).await.err();
    let signal: String = ctx.signal("note").await?;
    if order.fail {
        return Err(WorkflowError::new(
            "Declined",
            format!("run error {MARKER} {signal}"),
        ));
    }
    Ok(format!("{a} {b} {e:?} {signal}"))
}

fn confidential_registry() -> Registry {
    Registry::new()
        .workflow::<confidential>()
        .activity::<seal_echo>()
        .activity::<seal_retry>()
        .activity::<seal_refuse>()
}

fn confidential_input(fail: bool) -> Confidential {
    Confidential {
        note: format!("input {MARKER}"),
        card: Secret::new(format!("4111-{MARKER}")),
        fail,
    }
}

/// Occurrences of the marker in the database, its `-wal` and its `-shm`.
fn marker_on_disk(db: &Path) -> usize {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| {
            support::read_external(&support::with_suffix(db, s))
                .map(|b| support::count(&b, MARKER.as_bytes()))
                .unwrap_or(0)
        })
        .sum()
}

/// Runs three confidential runs (one completes, one fails, one is cancelled while it
/// waits) and counts the marker on disk: while a retry waits, at the end with the store
/// open, and after it is closed.
async fn confidential_runs(db: &Path, codec: Option<Arc<dyn PayloadCodec>>) -> [usize; 3] {
    let store = support::open_with(
        db,
        SqliteOptions {
            codec,
            ..SqliteOptions::default()
        },
    );
    let [waiting, end] = confidential_flow(&store, || async { marker_on_disk(db) }).await;
    drop(store);
    support::settle(db);
    [waiting, end, marker_on_disk(db)]
}

/// The three confidential runs on `store`; `scan` counts the marker where the store
/// keeps its data, while a retry waits and at the end.
async fn confidential_flow<S, SF>(store: &SharedStore, scan: S) -> [usize; 2]
where
    S: Fn() -> SF,
    SF: std::future::Future<Output = usize>,
{
    support::with_worker(
        store,
        confidential_registry(),
        support::quick_options(),
        |client| async move {
            let mut counts = [0; 2];
            for (id, fail) in [("ok", false), ("fails", true), ("cancelled", false)] {
                client
                    .start::<confidential>(id, &confidential_input(fail))
                    .await
                    .expect("start");
            }
            // A schedule's input is kept like event bodies (paused: it never fires here).
            client
                .create_schedule::<confidential>(
                    "secret-nightly",
                    &confidential_input(false),
                    ScheduleOptions::new(ScheduleSpec::cron("0 2 * * *").expect("valid")).paused(),
                )
                .await
                .expect("creating a schedule");
            // While the retry waits, the task row holds the last error.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let last_error = loop {
                let info = client
                    .status(&WorkflowId::from("ok"))
                    .await
                    .expect("status");
                let pending = client
                    .store()
                    .pending_activities(info.key)
                    .await
                    .expect("pending");
                if let Some(e) = pending.iter().find_map(|a| a.last_error.clone()) {
                    break e;
                }
                assert!(std::time::Instant::now() < deadline, "no retry seen");
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            assert!(
                last_error.contains(MARKER),
                "status shows the real last error: {last_error}"
            );
            counts[0] = scan().await;
            for id in ["ok", "fails", "cancelled"] {
                support::wait_history(&client, id, "waiting for the note", |h| {
                    h.iter()
                        .any(|e| matches!(&e.kind, EventKind::SignalAwaited { .. }))
                })
                .await;
            }
            for id in ["ok", "fails"] {
                client
                    .signal(&WorkflowId::from(id), "note", &format!("signal {MARKER}"))
                    .await
                    .expect("signal");
            }
            client
                .cancel(
                    &WorkflowId::from("cancelled"),
                    &format!("cancel reason {MARKER}"),
                )
                .await
                .expect("cancel");
            let ok = client
                .result::<confidential>("ok", Some(Duration::from_secs(20)))
                .await
                .expect("completes");
            assert!(ok.contains(MARKER), "the output carries the marker: {ok}");
            for id in ["fails", "cancelled"] {
                let info = support::wait_settled(&client, id).await;
                assert_eq!(info.status, RunStatus::Failed, "{id}");
            }
            counts[1] = scan().await;
            counts
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_no_plaintext_on_disk_with_an_encrypting_codec() {
    let dir = support::temp_dir();
    // Control: without a codec the scan finds the marker, so it can see it.
    let clear = confidential_runs(&dir.path().join("clear.db"), None).await;
    assert!(
        clear.iter().all(|n| *n > 0),
        "the scan finds plaintext: {clear:?}"
    );
    let sealed_db = dir.path().join("sealed.db");
    let codec: Arc<dyn PayloadCodec> = Arc::new(TestCipher::new(0x5ec2_e7ab_cdef_0123));
    let sealed = confidential_runs(&sealed_db, Some(codec.clone())).await;
    eprintln!(
        "S1: marker occurrences without codec {clear:?}, with codec {sealed:?} (retry waiting / end / closed)"
    );
    assert_eq!(sealed, [0, 0, 0], "plaintext reached the database files");
    // The encrypted store still reads back, and a wrong key is refused, not misread.
    let store = support::open_with(
        &sealed_db,
        SqliteOptions {
            codec: Some(codec),
            ..SqliteOptions::default()
        },
    );
    let scheduled: Confidential = Client::new(store.clone())
        .schedule("secret-nightly")
        .await
        .expect("the schedule reads back")
        .input
        .decode()
        .expect("its input decodes");
    assert!(scheduled.note.contains(MARKER));
    let h = Client::new(store)
        .history(&WorkflowId::from("ok"))
        .await
        .expect("history");
    assert!(matches!(
        h.last().map(|e| &e.kind),
        Some(EventKind::RunCompleted { .. })
    ));
    let wrong = support::open_with(
        &sealed_db,
        SqliteOptions {
            codec: Some(Arc::new(TestCipher::new(1))),
            ..SqliteOptions::default()
        },
    );
    let err = Client::new(wrong)
        .history(&WorkflowId::from("ok"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("codec"), "{err}");
}

/// S1 on PostgreSQL: the same runs with an encrypting codec leave no plaintext in any
/// table of the store's schema (text columns searched as text, binary ones as the hex
/// PostgreSQL prints them in). Skipped, with the reason printed, without a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_no_plaintext_in_postgres_with_an_encrypting_codec() {
    let Ok(url) = std::env::var("DURABLE_TEST_DATABASE_URL") else {
        eprintln!("skipped: DURABLE_TEST_DATABASE_URL is not set (postgres://... to run it)");
        return;
    };
    let (admin, connection) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: cannot connect to {url}: {e}");
            return;
        }
    };
    let driver = tokio::spawn(connection);
    let admin = Arc::new(admin);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut counts = Vec::new();
    for (label, codec) in [
        ("clear", None),
        (
            "sealed",
            Some(Arc::new(TestCipher::new(0x5ec2_e7ab_cdef_0123)) as Arc<dyn PayloadCodec>),
        ),
    ] {
        let schema = format!("s1_{label}_{nanos:x}_{}", std::process::id());
        let store: SharedStore = Arc::new(
            durable::PostgresStore::connect(
                &url,
                durable::PostgresOptions {
                    schema: Some(schema.clone()),
                    codec,
                    ..durable::PostgresOptions::default()
                },
            )
            .await
            .expect("connect the test store"),
        );
        let scan = || {
            let (admin, schema) = (admin.clone(), schema.clone());
            async move { marker_in_schema(&admin, &schema).await }
        };
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            confidential_flow(&store, scan),
        ))
        .await;
        drop(store);
        let _ = admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
        match outcome {
            Ok(c) => counts.push(c),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    eprintln!(
        "S1 on PostgreSQL: marker occurrences without codec {:?}, with codec {:?} (retry waiting / end)",
        counts[0], counts[1]
    );
    // Control: without a codec the scan finds the marker, so it can see it.
    assert!(
        counts[0].iter().all(|n| *n > 0),
        "the scan finds plaintext: {:?}",
        counts[0]
    );
    assert_eq!(counts[1], [0, 0], "plaintext reached the database");
    drop(admin);
    let _ = driver.await;
}

/// Occurrences of the marker in every row of every table of `schema`, each row printed
/// as PostgreSQL prints it (binary columns as hex).
async fn marker_in_schema(admin: &tokio_postgres::Client, schema: &str) -> usize {
    let tables = admin
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .expect("listing the tables");
    let hex: String = MARKER.bytes().map(|b| format!("{b:02x}")).collect();
    let mut n = 0;
    for t in tables {
        let table: String = t.get(0);
        let rows = admin
            .query(&format!("SELECT t::text FROM {schema}.{table} t"), &[])
            .await
            .expect("reading a table");
        for row in rows {
            let text: String = row.get(0);
            n += support::count(text.as_bytes(), MARKER.as_bytes())
                + support::count(text.as_bytes(), hex.as_bytes());
        }
    }
    n
}

// --- S2: hostile ids and names ---------------------------------------------------------

/// Waits for a signal with a hostile name, passes its body through an activity with a
/// hostile name.
#[workflow(name = "hd.hostile'; DROP TABLE runs;--")]
async fn hostile(ctx: WorkflowContext, signal: String) -> Result<String, WorkflowError> {
    let body: String = ctx.signal(&signal).await?;
    Ok(ctx.activity::<hostile_activity>(body).await?)
}

/// An activity whose name is an injection attempt with quotes and a newline.
#[activity(name = "act\"'); DELETE FROM inbox;--\n🦀")]
async fn hostile_activity(_ctx: ActivityContext, s: String) -> Result<String, ActivityError> {
    Ok(s)
}

fn hostile_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "'; DROP TABLE events;--",
        "\"; DROP TABLE runs; --",
        "' OR '1'='1",
        "a'b\"c`d\\e",
        "line1\nline2\r\nline3",
        "tab\there",
        "🦀 crab, 𝄞 clef, 😀",
        "\u{202e}desrever",
        "%_*?[]^$",
        "../../etc/passwd",
        "NULL",
        " leading and trailing ",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("🦀".repeat(250)); // 1,000 bytes of 4-byte UTF-8: the longest id allowed
    v
}

fn schema(db: &Path) -> Vec<(String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut stmt = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_hostile_ids_and_names_round_trip_and_the_schema_survives() {
    let dir = support::temp_dir();
    let db = dir.path().join("hostile.db");
    let fresh = dir.path().join("fresh.db");
    drop(support::open(&fresh));
    let store = support::open(&db);
    let ids = hostile_strings();
    let registry = Registry::new()
        .workflow::<hostile>()
        .activity::<hostile_activity>();
    support::with_worker(&store, registry, support::quick_options(), |client| {
        let ids = ids.clone();
        async move {
            for (i, id) in ids.iter().enumerate() {
                let signal = ids[(i + 1) % ids.len()].clone();
                client
                    .start::<hostile>(id.as_str(), &signal)
                    .await
                    .expect("start");
            }
            for (i, id) in ids.iter().enumerate() {
                let signal = &ids[(i + 1) % ids.len()];
                support::wait_history(&client, id, "waiting", |h| h.len() > 1).await;
                client
                    .signal(
                        &WorkflowId::from(id.as_str()),
                        signal,
                        &format!("body of {id}"),
                    )
                    .await
                    .expect("signal");
            }
            for (i, id) in ids.iter().enumerate() {
                let out = client
                    .result::<hostile>(id.as_str(), Some(Duration::from_secs(20)))
                    .await
                    .expect("completes");
                assert_eq!(out, format!("body of {id}"));
                let info = client
                    .status(&WorkflowId::from(id.as_str()))
                    .await
                    .expect("status");
                assert_eq!(&info.workflow_id.0, id);
                assert_eq!(info.workflow, "hd.hostile'; DROP TABLE runs;--");
                let h = client
                    .history(&WorkflowId::from(id.as_str()))
                    .await
                    .expect("history");
                let names: Vec<&str> = h
                    .iter()
                    .filter_map(|e| match &e.kind {
                        EventKind::SignalReceived { name, .. } => Some(name.as_str()),
                        EventKind::ActivityScheduled { name, .. } => Some(name.as_str()),
                        _ => None,
                    })
                    .collect();
                assert_eq!(
                    names,
                    [
                        ids[(i + 1) % ids.len()].as_str(),
                        "act\"'); DELETE FROM inbox;--\n🦀"
                    ]
                );
            }
            let mut listed: Vec<String> = client
                .list(RunFilter::default())
                .await
                .expect("list")
                .into_iter()
                .map(|r| r.workflow_id.0)
                .collect();
            listed.sort();
            let mut expected = ids.clone();
            expected.sort();
            assert_eq!(listed, expected);
            let filtered = client
                .list(RunFilter {
                    workflow: Some("hd.hostile'; DROP TABLE runs;--".into()),
                    ..RunFilter::default()
                })
                .await
                .expect("list");
            assert_eq!(filtered.len(), ids.len());
            // NUL and over-long ids are refused with a clear error, and write nothing.
            for bad in ["nul\0inside".to_owned(), "x".repeat(1001)] {
                let err = client
                    .start::<hostile>(bad.as_str(), &"s".to_owned())
                    .await
                    .unwrap_err();
                assert!(
                    matches!(err, durable::ClientError::Store(StoreError::Invalid(_))),
                    "{err:?}"
                );
            }
            let err = client
                .signal(&WorkflowId::from(ids[0].as_str()), "sig\0nal", &1)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("NUL"), "{err}");
        }
    })
    .await;
    drop(store);
    support::settle(&db);
    assert_eq!(schema(&db), schema(&fresh), "the schema changed");
    assert_eq!(integrity(&db), "ok");

    // The same through the CLI of the order example.
    let ok = serde_json::to_string(&serde_json::json!({
        "order_id": "A-1", "customer_email": "a@example.com",
        "items": [{"sku": "KB-01", "quantity": 1, "price_cents": 100}],
        "card_number": "4242424242424242"
    }))
    .expect("json");
    let cli_db = dir.path().join("cli.db");
    for id in &ids {
        let out = support::order(&cli_db, &["start", "order", "--input", &ok, "--id", id]).run();
        assert_eq!(out.ok().trim_end_matches('\n'), id.as_str());
        let status = support::order(&cli_db, &["status", id, "--json"]).run();
        let v: serde_json::Value = serde_json::from_str(status.ok().trim()).expect("status --json");
        assert_eq!(v["run"]["workflow_id"].as_str(), Some(id.as_str()));
        support::order(&cli_db, &["signal", id, id, "--payload", "true"])
            .run()
            .ok();
        let history = support::order(&cli_db, &["history", id, "--json"]).run();
        assert!(
            history.ok().lines().count() == 1,
            "only RunStarted: the signal waits in the inbox"
        );
        support::order(&cli_db, &["cancel", id, "--reason", id])
            .run()
            .ok();
    }
    let listed = support::order(&cli_db, &["list", "--json"]).run();
    assert_eq!(listed.ok().lines().count(), ids.len());
    // A NUL cannot even be passed on a command line; an over-long id is refused.
    let long = "x".repeat(1001);
    support::order(&cli_db, &["start", "order", "--input", &ok, "--id", &long])
        .run()
        .refused(2, "1000");
    assert_eq!(schema(&cli_db), schema(&fresh));
    assert_eq!(integrity(&cli_db), "ok");
}

// --- S3: namespaces ---------------------------------------------------------------------

fn in_namespace(db: &Path, ns: &str) -> SharedStore {
    support::open_with(
        db,
        SqliteOptions {
            namespace: ns.into(),
            ..SqliteOptions::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_runs_of_one_namespace_are_invisible_to_another() {
    let dir = support::temp_dir();
    let db = dir.path().join("tenants.db");
    let a = Client::new(in_namespace(&db, "team-a"));
    let b = Client::new(in_namespace(&db, "team-b"));
    a.start::<crate::flows::signal_v0>("only-a", &())
        .await
        .expect("start in A");
    a.start::<crate::flows::signal_v0>("shared-id", &())
        .await
        .expect("start in A");
    let id = WorkflowId::from("only-a");
    assert!(matches!(
        b.status(&id).await,
        Err(durable::ClientError::NotFound(_))
    ));
    assert!(matches!(
        b.history(&id).await,
        Err(durable::ClientError::NotFound(_))
    ));
    assert!(matches!(
        b.signal(&id, "approve", &1_u32).await,
        Err(durable::ClientError::NotFound(_))
    ));
    assert!(matches!(
        b.cancel(&id, "no").await,
        Err(durable::ClientError::NotFound(_))
    ));
    assert!(matches!(
        b.store().reset_run(&id, durable::EventId(1)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        b.store().resume(&id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(b.list(RunFilter::default()).await.expect("list").is_empty());
    // The same workflow id in B is another run.
    let theirs = b
        .start::<crate::flows::signal_v0>("shared-id", &())
        .await
        .expect("start in B");
    let ours = a
        .status(&WorkflowId::from("shared-id"))
        .await
        .expect("A's run");
    assert_ne!(theirs.run_id, ours.run_id);
    assert_eq!(a.list(RunFilter::default()).await.expect("list").len(), 2);

    // A worker of B neither claims A's runs nor runs their activities.
    support::with_worker(
        b.store(),
        crate::flows::base_registry(),
        support::quick_options(),
        |b| async move {
            support::wait_history(&b, "shared-id", "B's run waits for its signal", |h| {
                h.len() >= 4
            })
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        },
    )
    .await;
    for id in ["only-a", "shared-id"] {
        let h = a.history(&WorkflowId::from(id)).await.expect("history");
        assert_eq!(h.len(), 1, "{id} in A was touched by B's worker: {h:?}");
    }

    // Through the CLI: --namespace team-b sees nothing of team-a.
    drop((a, b));
    support::settle(&db);
    let before_settled = Snapshot::take(&db);
    for args in [
        vec!["status", "only-a"],
        vec!["history", "only-a"],
        vec!["result", "only-a"],
        vec!["signal", "only-a", "approve", "--payload", "1"],
        vec!["cancel", "only-a"],
        vec!["retry", "only-a"],
        vec!["reset", "only-a", "--to", "1"],
    ] {
        let mut full = vec!["--namespace", "team-b"];
        full.extend(args);
        support::order(&db, &full)
            .run()
            .refused(2, "no run with id 'only-a'");
        Snapshot::take(&db).assert_same(&before_settled, "a command in another namespace");
    }
    let listed = support::order(&db, &["--namespace", "team-b", "list", "--json"]).run();
    assert_eq!(
        listed.ok().lines().count(),
        1,
        "B lists only its own run:\n{}",
        listed.stdout
    );
    assert!(listed.stdout.contains("shared-id"));
    let listed = support::order(&db, &["--namespace", "team-a", "list", "--json"]).run();
    assert_eq!(listed.ok().lines().count(), 2);
    support::order(&db, &["--namespace", "team-a", "status", "only-a"])
        .run()
        .ok();
}

// --- S4: file modes ------------------------------------------------------------------------

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_new_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = support::temp_dir();
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .ok()
    };
    let db = dir.path().join("api.db");
    let store = support::open(&db);
    Client::new(store.clone())
        .start::<crate::flows::timer_v0>("t", &())
        .await
        .expect("start");
    assert_eq!(mode(&db), Some(0o600), "the database");
    for suffix in ["-wal", "-shm"] {
        let p = support::with_suffix(&db, suffix);
        if let Some(m) = mode(&p) {
            assert_eq!(m, 0o600, "{}", p.display());
        }
    }
    drop(store);
    let cli_db = dir.path().join("cli.db");
    support::order(&cli_db, &["list"])
        .run()
        .refused(2, "no database at");
    let ok = r#"{"order_id":"A","customer_email":"a@b.c","items":[],"card_number":"1"}"#;
    support::order(&cli_db, &["start", "order", "--input", ok, "--id", "x"])
        .run()
        .ok();
    assert_eq!(mode(&cli_db), Some(0o600), "a database the CLI created");
}

// --- S5: Secret<T> never reaches logs ------------------------------------------------------

const LOG_MARKER: &str = "SECRET-S5-51e77a";

/// The captured `tracing` output of this process.
fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global tracing subscriber in this test binary");
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A payment request with a card number.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Payment {
    amount: u64,
    card: Secret<String>,
}

/// Logs the whole request (the card shows as `Secret(***)`), fails once, then charges.
#[activity]
async fn charge(ctx: ActivityContext, p: Payment) -> Result<String, ActivityError> {
    tracing::info!(?p, card = %p.card, attempt = ctx.attempt(), "charging");
    if ctx.attempt() < 2 {
        return Err(ActivityError::retryable(
            "Unavailable",
            format!("cannot charge {:?}", p),
        ));
    }
    Ok(format!("charged {} to {}", p.amount, p.card))
}

/// Logs its input, charges, and fails with the request in its error.
#[workflow(name = "hd.payment")]
async fn payment(ctx: WorkflowContext, p: Payment) -> Result<String, WorkflowError> {
    tracing::info!(?p, "payment workflow");
    let receipt = ctx
        .activity::<charge>(p.clone())
        .retry(RetryPolicy::exponential(Duration::from_millis(5)))
        .await?;
    tracing::warn!(%receipt, card = ?p.card, "charged");
    Err(WorkflowError::new(
        "Audit",
        format!("{receipt}; request {p:?}"),
    ))
}

pub(crate) fn registry_named(name: &str) -> Option<Registry> {
    (name == "payment").then(|| Registry::new().workflow::<payment>().activity::<charge>())
}

fn secret_payment() -> Payment {
    Payment {
        amount: 42,
        card: Secret::new(format!("4111-1111-{LOG_MARKER}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_a_secret_never_reaches_the_logs() {
    let buf = log_buffer();
    let dir = support::temp_dir();
    let store = support::open(&dir.path().join("s5.db"));
    let registry = registry_named("payment").expect("registry");
    let err = support::with_worker(
        &store,
        registry,
        support::quick_options(),
        |client| async move {
            client
                .start::<payment>("pay-1", &secret_payment())
                .await
                .expect("start");
            client
                .result::<payment>("pay-1", Some(Duration::from_secs(20)))
                .await
                .unwrap_err()
        },
    )
    .await;
    let text = String::from_utf8_lossy(&buf.lock().expect("log").clone()).into_owned();
    let mine: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("charg") || l.contains("payment"))
        .collect();
    assert!(mine.len() >= 4, "the run logged: {mine:#?}");
    assert!(
        text.contains("Secret(***)"),
        "the log shows the redacted form"
    );
    assert_eq!(
        support::count(text.as_bytes(), LOG_MARKER.as_bytes()),
        0,
        "a secret reached the log:\n{text}"
    );
    assert!(!err.to_string().contains(LOG_MARKER), "{err}");
    // The value itself went through: the activity charged the real card.
    let h = Client::new(store)
        .history(&WorkflowId::from("pay-1"))
        .await
        .expect("history");
    let charged = h.iter().any(|e| {
        matches!(&e.kind, EventKind::ActivityCompleted { output, .. }
        if output.decode::<String>().is_ok_and(|s| s == "charged 42 to Secret(***)"))
    });
    assert!(charged, "{h:?}");
    let input_ok = h.iter().any(|e| {
        matches!(&e.kind, EventKind::RunStarted { input, .. }
        if input.decode::<Payment>().is_ok_and(|p| p.card.expose().ends_with(LOG_MARKER)))
    });
    assert!(
        input_ok,
        "the secret is in the (codec-protected) history for the code to use"
    );
    eprintln!(
        "S5: {} log lines captured at TRACE, marker found 0 times",
        text.lines().count()
    );

    // The worker CLI at the most verbose level says nothing of it either.
    let db = dir.path().join("cli.db");
    let input = serde_json::to_string(&serde_json::json!({
        "amount": 42, "card": format!("4111-{LOG_MARKER}")
    }))
    .expect("json");
    let out = support::host_cli(
        "payment",
        &db,
        &["run", "hd.payment", "--input", &input, "--timeout", "20"],
    )
    .env("DURABLE_LOG", "trace")
    .run();
    out.no_panic();
    assert_eq!(
        out.code,
        Some(1),
        "the run fails with its audit error:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.lines().count() > 3,
        "the worker logged:\n{}",
        out.stderr
    );
    assert_eq!(
        support::count(
            format!("{}{}", out.stdout, out.stderr).as_bytes(),
            LOG_MARKER.as_bytes()
        ),
        0,
        "the CLI printed the secret:\n{}",
        out.stderr
    );
}
