//! A kitchen-sink worker and client in this process, on any store: for the store-fault
//! tests, which wrap the store, and for regression tests.

use crate::check::{ClientLog, Outcome, SignalOp, StartOp};
use crate::kitchen_sink::{self, Vote};
use crate::support::Rng;
use crate::workload::Job;
use durable::store::{RunFilter, RunStatus, SharedStore, Store};
use durable::{Client, ClientError, Payload, StoreError, Worker, WorkerOptions, WorkflowId};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Points this process's kitchen-sink activities at a ledger for as long as it lives.
pub(crate) struct LedgerGuard;

impl LedgerGuard {
    /// Records this process's activity attempts in `path`.
    pub(crate) fn set(path: &std::path::Path) -> LedgerGuard {
        crate::ledger::open(path).expect("the ledger can be created");
        crate::ledger::set_path(Some(path));
        LedgerGuard
    }
}

impl Drop for LedgerGuard {
    fn drop(&mut self) {
        crate::ledger::set_path(None);
    }
}

/// Counts panics in this process (the worker catches panics of activities and workflow
/// code, so only a hook sees them all) for as long as it lives.
pub(crate) struct PanicCounter {
    seen: Arc<Mutex<Vec<String>>>,
}

impl PanicCounter {
    /// Installs the counting hook (it still prints, through the previous hook).
    pub(crate) fn install() -> PanicCounter {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(info.to_string());
            previous(info);
        }));
        PanicCounter { seen }
    }

    /// The panics so far.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for PanicCounter {
    fn drop(&mut self) {
        // Back to the default hook (which cannot be changed while unwinding).
        if !std::thread::panicking() {
            let _ = std::panic::take_hook();
        }
    }
}

/// A running in-process worker.
pub(crate) struct RunningWorker {
    stop: durable::worker::ShutdownHandle,
    task: tokio::task::JoinHandle<Result<(), durable::WorkerError>>,
}

impl RunningWorker {
    /// Starts a kitchen-sink worker on `store`.
    pub(crate) fn start(store: SharedStore, options: WorkerOptions) -> RunningWorker {
        let worker = Worker::new(store, kitchen_sink::registry(), options);
        let stop = worker.shutdown_handle();
        RunningWorker {
            stop,
            task: tokio::spawn(worker.run()),
        }
    }

    /// True when the worker stopped on its own (a fatal error).
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops it gracefully and returns how its `run` ended.
    pub(crate) async fn stop(self) -> Result<(), String> {
        self.stop.shutdown();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(r)) => r.map_err(|e| format!("the worker failed: {e}")),
            Ok(Err(e)) => Err(format!("the worker task panicked: {e}")),
            Err(_) => Err("the worker did not stop within 30 s".to_owned()),
        }
    }
}

/// An approval still collecting votes.
struct Ballot {
    workflow_id: String,
    needed: u32,
    ok: u32,
    done: bool,
}

/// A client in this process that logs every call as ok, failed or unknown.
pub(crate) struct InProcClient {
    client: Client,
    rng: Rng,
    ballots: Vec<Ballot>,
    next_vote: u64,
    /// What it did.
    pub(crate) log: ClientLog,
    /// Calls that returned an error.
    pub(crate) errors: Arc<AtomicUsize>,
}

fn classify<T>(r: &Result<T, ClientError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        // Refusals that write nothing.
        Err(ClientError::NotFound(_))
        | Err(ClientError::Store(StoreError::Finished(_) | StoreError::Busy(_))) => Outcome::Fail,
        // An i/o error may come after the commit.
        Err(_) => Outcome::Unknown,
    }
}

impl InProcClient {
    /// A client on `store`.
    pub(crate) fn new(store: SharedStore, seed: u64) -> InProcClient {
        InProcClient {
            client: Client::new(store),
            rng: Rng::new(seed),
            ballots: Vec::new(),
            next_vote: 1,
            log: ClientLog::default(),
            errors: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Starts `job`, retrying until the start is acknowledged (a start is idempotent).
    pub(crate) async fn start(&mut self, job: &Job) {
        let input = Payload::from_json(&job.input.to_string()).expect("the input is JSON");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self
                .client
                .start_encoded(job.workflow, WorkflowId(job.id.clone()), input.clone())
                .await;
            let outcome = classify(&r);
            if outcome == Outcome::Ok {
                break;
            }
            self.errors.fetch_add(1, Ordering::Relaxed);
            assert!(
                Instant::now() < deadline,
                "the start of '{}' kept failing: {:?}",
                job.id,
                r.err()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.log.starts.push(StartOp {
            workflow_id: job.id.clone(),
            outcome: Outcome::Ok,
            epoch: 0,
        });
        if job.votes > 0 {
            self.ballots.push(Ballot {
                workflow_id: job.id.clone(),
                needed: job.votes,
                ok: 0,
                done: false,
            });
        }
    }

    /// Sends one vote to a random approval that still needs one; false when none does.
    pub(crate) async fn vote(&mut self) -> bool {
        let open: Vec<usize> = (0..self.ballots.len())
            .filter(|i| !self.ballots[*i].done && self.ballots[*i].ok < self.ballots[*i].needed)
            .collect();
        if open.is_empty() {
            return false;
        }
        let i = open[usize::try_from(self.rng.range(0, open.len() as u64)).unwrap_or(0)];
        let vote = Vote {
            id: self.next_vote,
            value: self.rng.range(1, 1000),
        };
        self.next_vote += 1;
        let id = WorkflowId(self.ballots[i].workflow_id.clone());
        let r = self
            .client
            .signal_encoded(&id, "vote", Payload::encode(&vote).expect("a vote encodes"))
            .await;
        let outcome = classify(&r);
        if r.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        match &r {
            Ok(()) => self.ballots[i].ok += 1,
            Err(ClientError::NotFound(_) | ClientError::Store(StoreError::Finished(_))) => {
                self.ballots[i].done = true;
            }
            Err(_) => {}
        }
        self.log.signals.push(SignalOp {
            vote: vote.id,
            workflow_id: id.0,
            outcome,
            epoch: 0,
        });
        true
    }

    /// Approvals still waiting for votes after every vote was acknowledged get another
    /// (an unknown vote may have been lost; a failed one certainly was).
    pub(crate) fn reopen(&mut self, running: &std::collections::BTreeSet<String>) {
        for b in &mut self.ballots {
            if !b.done && running.contains(&b.workflow_id) && b.ok >= b.needed {
                b.needed += 1;
            }
        }
    }
}

/// Workflow ids of the runs still running in `store`.
pub(crate) async fn running(store: &dyn Store) -> std::collections::BTreeSet<String> {
    store
        .list_runs(RunFilter {
            status: Some(RunStatus::Running),
            limit: 1_000_000,
            ..RunFilter::default()
        })
        .await
        .map(|runs| runs.into_iter().map(|r| r.workflow_id.0).collect())
        .unwrap_or_default()
}

/// Keeps voting until every run of `store` has finished, or `timeout` passes; returns
/// the runs still running.
pub(crate) async fn drive_to_completion(
    client: &mut InProcClient,
    store: &dyn Store,
    timeout: Duration,
) -> std::collections::BTreeSet<String> {
    let deadline = Instant::now() + timeout;
    let mut last_reopen = Instant::now();
    loop {
        while client.vote().await {}
        let running = running(store).await;
        if running.is_empty() || Instant::now() >= deadline {
            return running;
        }
        if last_reopen.elapsed() > Duration::from_millis(500) {
            client.reopen(&running);
            last_reopen = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
