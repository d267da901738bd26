//! (d) Non-determinism: histories recorded by real workers on a SQLite file, replayed
//! against changed code. Every incompatible change is reported at the first divergent
//! command with the exact error, a diff-style report, and through `replay --file` an
//! exit code of 1 with the database untouched; compatible changes and unchanged code
//! replay cleanly, and a run replayed after every step (cache of one run) writes the
//! same history as a cached one.

use crate::flows::{self, Expect, MUTANTS};
use crate::support::{self, Snapshot};
use durable::prelude::*;
use durable::store::{SharedStore, StartRequest};
use durable::{
    Event, EventKind, HistoryFile, Payload, ReplayError, ReplayOutcome, Replayer, RunIdentity,
    divergence_report,
};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// One recorded run of a corpus workflow.
pub(crate) struct Recorded {
    pub(crate) workflow: String,
    pub(crate) identity: RunIdentity,
    pub(crate) events: Vec<Event>,
    /// Its history file (`history --export` format).
    pub(crate) file: PathBuf,
}

/// The recorded corpus and the database it was recorded in.
pub(crate) struct Corpus {
    _dir: tempfile::TempDir,
    pub(crate) db: PathBuf,
    pub(crate) runs: Vec<Recorded>,
}

impl Corpus {
    pub(crate) fn get(&self, workflow: &str) -> &Recorded {
        self.runs
            .iter()
            .find(|r| r.workflow == workflow)
            .unwrap_or_else(|| panic!("no recorded run of {workflow}"))
    }
}

/// The workflows of the corpus, each with its input as JSON.
const CORPUS: &[(&str, &str)] = &[
    ("hd.seq", "\"x\""),
    ("hd.timer", "null"),
    ("hd.signal", "null"),
    ("hd.select", "null"),
    ("hd.random", "null"),
    ("hd.patch", "null"),
    ("hd.legacy", "null"),
    ("hd.fanout", "null"),
    ("hd.failure", "null"),
    ("hd.retry", "null"),
    ("hd.loop", "null"),
    ("hd.side", "null"),
    ("hd.map", "null"),
    ("hd.race", "null"),
];

/// Records every corpus workflow once on a real worker and SQLite file (shared by the
/// tests of this binary; built on first use).
pub(crate) fn corpus() -> &'static Corpus {
    static CELL: OnceLock<Corpus> = OnceLock::new();
    CELL.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(record_corpus())
        })
        .join()
        .expect("recording the corpus")
    })
}

async fn record_corpus() -> Corpus {
    let dir = support::temp_dir();
    let db = dir.path().join("corpus.db");
    let store = support::open(&db);
    let registry = flows::base_registry();
    let runs = support::with_worker(
        &store,
        registry.clone(),
        support::quick_options(),
        |client| {
            let registry = registry.clone();
            async move {
                for (workflow, input) in CORPUS {
                    let wf = registry.find_workflow(workflow).expect("registered");
                    let input = wf.input_from_json(input).expect("input");
                    client
                        .start_encoded(workflow, WorkflowId::from(format!("rec-{workflow}")), input)
                        .await
                        .expect("start");
                }
                support::wait_history(
                    &client,
                    "rec-hd.signal",
                    "waiting for approve",
                    awaits("approve"),
                )
                .await;
                client
                    .signal(&WorkflowId::from("rec-hd.signal"), "approve", &7_u32)
                    .await
                    .expect("signal");
                let mut runs = Vec::new();
                for (workflow, _) in CORPUS {
                    let id = format!("rec-{workflow}");
                    let info = support::wait_settled(&client, &id).await;
                    assert!(info.status.is_finished(), "{id} ended {info:?}");
                    let events = client
                        .history(&WorkflowId::from(id.as_str()))
                        .await
                        .expect("history");
                    runs.push((workflow.to_string(), info, events));
                }
                runs
            }
        },
    )
    .await;
    drop(store);
    support::settle(&db);
    let runs = runs
        .into_iter()
        .map(|(workflow, info, events)| {
            let file = dir.path().join(format!("{workflow}.json"));
            let history = HistoryFile::new(
                info.workflow_id.clone(),
                info.run_id.clone(),
                events.clone(),
            );
            std::fs::write(&file, history.to_json()).expect("write the history file");
            Recorded {
                workflow,
                identity: RunIdentity {
                    workflow_id: info.workflow_id,
                    run_id: info.run_id,
                },
                events,
                file,
            }
        })
        .collect();
    Corpus {
        _dir: dir,
        db,
        runs,
    }
}

fn awaits(name: &'static str) -> impl Fn(&[Event]) -> bool {
    move |h: &[Event]| {
        h.iter()
            .any(|e| matches!(&e.kind, EventKind::SignalAwaited { name: n, .. } if n == name))
    }
}

/// Checks one replay result against what the mutation must produce; returns the
/// command number or event the error names ("-" for a clean replay).
fn check(
    m: &flows::Mutant,
    rec: &Recorded,
    result: Result<durable::ReplayReport, ReplayError>,
) -> String {
    let err = match (m.expect, result) {
        (Expect::Clean, Ok(report)) => {
            let recorded_end = rec.events.last().map(|e| e.kind.name());
            match (&report.outcome, recorded_end) {
                (ReplayOutcome::Completed(_), Some("RunCompleted"))
                | (ReplayOutcome::Failed(_), Some("RunFailed")) => {}
                (other, end) => panic!(
                    "{}: replays, but ends {other:?} where history has {end:?}",
                    m.id
                ),
            }
            return "-".into();
        }
        (Expect::Clean, Err(e)) => panic!("{}: a compatible change was reported: {e}", m.id),
        (_, Ok(report)) => panic!("{}: {} was not detected: {report:?}", m.id, m.change),
        (_, Err(e)) => e,
    };
    let at = match (m.expect, &err) {
        (
            Expect::Nondeterminism(n),
            ReplayError::Nondeterminism {
                seq,
                recorded,
                issued,
            },
        ) if seq.0 == n => {
            assert_ne!(recorded, issued, "{}", m.id);
            format!("command {n}")
        }
        (
            Expect::NondeterminismSomewhere,
            ReplayError::Nondeterminism {
                seq,
                recorded,
                issued,
            },
        ) => {
            assert_eq!(
                (recorded.name.as_str(), issued.name.as_str()),
                ("echo", "echo")
            );
            assert_ne!(recorded.input_digest, issued.input_digest, "{}", m.id);
            format!("command {seq}")
        }
        (Expect::Missing(n), ReplayError::MissingCommand { seq, .. }) if seq.0 == n => {
            format!("command {n}")
        }
        (Expect::Extra(n), ReplayError::ExtraCommand { seq, event, .. }) if seq.0 == n => {
            let last = rec.events.last().expect("history");
            assert_eq!(
                *event, last.id,
                "{}: the extra command is reported where history ends the run",
                m.id
            );
            format!("command {n}")
        }
        (Expect::Unfinished, ReplayError::UnfinishedRun { event, .. }) => {
            assert_eq!(*event, rec.events.last().expect("history").id, "{}", m.id);
            format!("event {event}")
        }
        (Expect::EarlyFinish, ReplayError::EarlyFinish { event, recorded }) => {
            assert_eq!(recorded, "TimerFired", "{}", m.id);
            format!("event {event}")
        }
        (expect, e) => panic!("{}: expected {expect:?}, replay said {e:?}", m.id),
    };
    assert!(err.is_nondeterminism(), "{}: {err}", m.id);
    let report = divergence_report(&rec.events, &err);
    let minus: Vec<&str> = report.lines().filter(|l| l.starts_with("- ")).collect();
    let plus: Vec<&str> = report.lines().filter(|l| l.starts_with("+ ")).collect();
    assert!(
        minus.len() == 1 && plus.len() == 1,
        "{}: the report has one `-` and one `+` line:\n{report}",
        m.id
    );
    if let ReplayError::Nondeterminism {
        issued, recorded, ..
    } = &err
    {
        assert!(plus[0].contains(&issued.name), "{}: {report}", m.id);
        assert!(
            minus[0].contains(&recorded.name) || minus[0].contains("Timer"),
            "{}: {report}",
            m.id
        );
    }
    at
}

#[test]
fn every_incompatible_change_is_reported_at_the_first_divergent_command() {
    support::watch_panics();
    let corpus = corpus();
    let mut detected = 0;
    let mut clean = 0;
    for m in MUTANTS {
        let rec = corpus.get(m.workflow);
        let replayer = Replayer::new(m.registry());
        if m.expect == Expect::NondeterminismSomewhere {
            // Each HashMap iterates in its own order: replay diverges whenever that order
            // differs from the recorded one, and only then.
            let tries = 50;
            let mut caught = 0;
            for _ in 0..tries {
                match replayer.replay(rec.identity.clone(), &rec.events) {
                    Ok(_) => {}
                    Err(e) => {
                        check(m, rec, Err(e));
                        caught += 1;
                    }
                }
            }
            eprintln!(
                "{:<22} {:<50} -> detected in {caught} of {tries} replays (the rest drew the recorded order)",
                m.id, m.change
            );
            assert!(caught * 2 > tries, "{caught} of {tries}");
            detected += 1;
            continue;
        }
        let at = check(m, rec, replayer.replay(rec.identity.clone(), &rec.events));
        eprintln!("{:<22} {:<50} -> {at}", m.id, m.change);
        if m.expect == Expect::Clean {
            clean += 1;
        } else {
            detected += 1;
        }
    }
    eprintln!(
        "{detected} incompatible changes detected, {clean} compatible changes replay cleanly"
    );
    assert!(detected >= 20 && clean >= 4, "{detected} / {clean}");
    support::assert_no_engine_panics();
}

/// `replay --file` with each changed version linked in: exit 1 and a diff for an
/// incompatible change, exit 0 for a compatible one; the database is never written.
#[test]
fn replay_file_through_the_cli_exits_1_and_writes_nothing() {
    let corpus = corpus();
    let before = Snapshot::take(&corpus.db);
    for m in MUTANTS {
        let file = corpus.get(m.workflow).file.display().to_string();
        let out = support::host_cli(m.id, &corpus.db, &["replay", "--file", &file]).run();
        let lucky = m.expect == Expect::NondeterminismSomewhere && out.code == Some(0);
        if m.expect == Expect::Clean || lucky {
            assert!(
                out.ok().contains("replays cleanly"),
                "{}: {}",
                m.id,
                out.stdout
            );
        } else {
            let line = out.refused(1, "non-determinism");
            assert!(line.contains(&file), "{line}");
            assert!(
                out.stdout.lines().any(|l| l.trim_start().starts_with("- "))
                    && out.stdout.lines().any(|l| l.trim_start().starts_with("+ ")),
                "{}: the diff is printed:\n{}",
                m.id,
                out.stdout
            );
        }
        Snapshot::take(&corpus.db).assert_same(&before, &out.what);
    }
    // The unchanged binary replays every recorded file.
    for rec in &corpus.runs {
        let file = rec.file.display().to_string();
        let out = support::host_cli("base", &corpus.db, &["replay", "--file", &file]).run();
        assert!(out.ok().contains("replays cleanly"), "{}", out.stdout);
    }
    Snapshot::take(&corpus.db).assert_same(&before, "replaying the corpus");
}

/// Starts `copies` runs of each timing-independent corpus workflow with fixed seeds,
/// signals the ones that wait, and returns each run's history without times.
async fn run_all(
    store: &SharedStore,
    options: WorkerOptions,
    copies: usize,
) -> Vec<(String, Vec<Vec<u8>>)> {
    let registry = flows::base_registry();
    support::with_worker(store, registry.clone(), options, |client| async move {
        let mut ids = Vec::new();
        for (workflow, input) in CORPUS {
            // Fan-out and select record completions in the order they happen to arrive.
            if matches!(*workflow, "hd.fanout" | "hd.select") {
                continue;
            }
            let wf = registry.find_workflow(workflow).expect("registered");
            for i in 0..copies {
                let id = format!("{workflow}-{i}");
                client
                    .store()
                    .start_run(StartRequest {
                        workflow_id: WorkflowId::from(id.as_str()),
                        workflow: (*workflow).to_owned(),
                        input: wf.input_from_json(input).expect("input"),
                        seed: 0x5eed,
                        execution_timeout: None,
                        task_queue: String::new(),
                    })
                    .await
                    .expect("start");
                ids.push((workflow.to_string(), id));
            }
        }
        let signals: Vec<_> = ids
            .iter()
            .filter(|(w, _)| w == "hd.signal")
            .map(|(_, id)| {
                let client = client.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    support::wait_history(&client, &id, "waiting for approve", awaits("approve"))
                        .await;
                    client
                        .signal(&WorkflowId::from(id.as_str()), "approve", &7_u32)
                        .await
                        .expect("signal");
                })
            })
            .collect();
        for s in signals {
            s.await.expect("signal task");
        }
        let mut out = Vec::new();
        for (workflow, id) in ids {
            let info = support::wait_settled(&client, &id).await;
            assert!(info.status.is_finished(), "{id}: {info:?}");
            let events = client
                .history(&WorkflowId::from(id.as_str()))
                .await
                .expect("history");
            let bytes = events
                .iter()
                .map(|e| Payload::encode(&e.kind).expect("encode").0)
                .collect();
            out.push((workflow, bytes));
        }
        out
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_of_one_run_writes_the_same_histories_as_a_full_cache() {
    let dir = support::temp_dir();
    let copies = 4;
    let cached = run_all(
        &support::open(&dir.path().join("cached.db")),
        support::quick_options(),
        copies,
    )
    .await;
    let uncached_store = support::open(&dir.path().join("uncached.db"));
    let options = WorkerOptions {
        max_cached_runs: 1,
        ..support::quick_options()
    };
    let uncached = run_all(&uncached_store, options, copies).await;
    assert_eq!(cached.len(), uncached.len());
    let mut events = 0;
    for ((wf, a), (wf2, b)) in cached.iter().zip(&uncached) {
        assert_eq!(wf, wf2);
        assert_eq!(
            a,
            &cached.iter().find(|(w, _)| w == wf).expect("first").1,
            "{wf}: cached copies differ"
        );
        assert!(a == b, "{wf}: the uncached run wrote another history");
        events += a.len();
    }
    eprintln!(
        "{} runs x 2 ({} events each side) byte-identical with and without the run cache",
        cached.len(),
        events
    );
}

/// Restores are counted by a worker; one with a cache of one run restores runs from
/// their history many times, which the comparison above relies on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_of_one_run_really_replays() {
    let dir = support::temp_dir();
    let store = support::open(&dir.path().join("d.db"));
    let worker = Worker::new(
        store.clone(),
        flows::base_registry(),
        WorkerOptions {
            max_cached_runs: 1,
            ..support::quick_options()
        },
    );
    let stats = worker.stats();
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run());
    let client = Client::new(store.clone());
    for i in 0..8 {
        client
            .start::<flows::loop_v0>(format!("loop-{i}"), &())
            .await
            .expect("start");
    }
    for i in 0..8 {
        let out = client
            .result::<flows::loop_v0>(format!("loop-{i}"), Some(Duration::from_secs(20)))
            .await
            .expect("completes");
        assert_eq!(out, 3);
    }
    stop.shutdown();
    task.await.expect("join").expect("worker");
    let restores = stats.restores.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("8 runs of hd.loop with a cache of one run: {restores} restores from history");
    assert!(restores > 8, "only {restores} restores");
}

#[test]
fn unchanged_code_replays_a_thousand_histories_without_a_false_positive() {
    let corpus = corpus();
    let replayer = Replayer::new(flows::base_registry());
    let mut replays = 0;
    let mut events = 0;
    while replays < 1_000 {
        for rec in &corpus.runs {
            let report = replayer
                .replay(rec.identity.clone(), &rec.events)
                .unwrap_or_else(|e| panic!("{} does not replay: {e}", rec.workflow));
            assert!(
                matches!(
                    report.outcome,
                    ReplayOutcome::Completed(_) | ReplayOutcome::Failed(_)
                ),
                "{}: {:?}",
                rec.workflow,
                report.outcome
            );
            replays += 1;
            events += rec.events.len();
        }
    }
    // The files replay the same as the events they were written from.
    for rec in &corpus.runs {
        replayer
            .replay_file(&rec.file)
            .expect("the history file replays");
        let file = HistoryFile::read(&rec.file).expect("read");
        assert_eq!(file.events, rec.events);
    }
    eprintln!("{replays} replays of unchanged code over {events} events: 0 errors");
}

/// The history file of the corpus run of `workflow`.
pub(crate) fn history_file(workflow: &str) -> &'static Path {
    &corpus().get(workflow).file
}

/// `reset --to` may cut a history inside an activation (here after the first of three
/// schedules): the restored run must issue the rest, not report them as extra commands.
/// Regression: the replay refused every command after the cut with `ExtraCommand`, so the
/// reset run was suspended at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_inside_an_activation_continues_the_run() {
    let dir = support::temp_dir();
    let store = support::open(&dir.path().join("reset.db"));
    let store2 = store.clone();
    support::with_worker(
        &store,
        flows::base_registry(),
        support::quick_options(),
        |client| async move {
            let id = WorkflowId::from("fan");
            client
                .start::<flows::fanout_v0>("fan", &())
                .await
                .expect("start");
            let first = client
                .result::<flows::fanout_v0>("fan", Some(Duration::from_secs(20)))
                .await
                .expect("completes");
            let history = client.history(&id).await.expect("history");
            assert!(matches!(
                history[1].kind,
                EventKind::ActivityScheduled { .. }
            ));
            assert!(matches!(
                history[2].kind,
                EventKind::ActivityScheduled { .. }
            ));
            let info = client.status(&id).await.expect("status");
            let cut = &history[..2];
            match Replayer::new(flows::base_registry())
                .replay(
                    RunIdentity {
                        workflow_id: info.workflow_id,
                        run_id: info.run_id,
                    },
                    cut,
                )
                .expect("a history cut inside an activation replays")
                .outcome
            {
                ReplayOutcome::WouldContinue {
                    commands,
                    finished: None,
                } => {
                    let seqs: Vec<u32> = commands.iter().map(|(s, _)| s.0).collect();
                    assert_eq!(seqs, [2, 3]);
                }
                other => panic!("{other:?}"),
            }
            store2
                .reset_run(&id, durable::EventId(2))
                .await
                .expect("reset");
            let again = client
                .result::<flows::fanout_v0>("fan", Some(Duration::from_secs(20)))
                .await
                .expect("the reset run completes");
            assert_eq!(first, again);
            let history = client.history(&id).await.expect("history");
            let scheduled: Vec<u32> = history
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::ActivityScheduled { seq, .. } => Some(seq.0),
                    _ => None,
                })
                .collect();
            assert_eq!(scheduled, [1, 2, 3]);
        },
    )
    .await;
}
