//! The client of the process tests: a thread that starts runs and sends `vote` signals
//! through `chaos-worker start` / `chaos-worker signal` processes while workers come and
//! go, and logs each call as ok, failed or unknown.
//!
//! A call is unknown when its process was killed before it answered (the client kills a
//! few on purpose, right after they start, to make such calls) or when its error does
//! not prove that nothing was written. An unknown start is retried with the same
//! workflow id (a start is idempotent); an unknown signal is not: it stays unknown, and
//! the run gets another vote instead.

use crate::check::{ClientLog, Outcome, SignalOp, StartOp};
use crate::support::{self, Rng};
use crate::workload::Job;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the client thread shares with the test.
pub(crate) struct Shared {
    /// Held while a client process runs; the test takes it to be sure no client has the
    /// database open (before it truncates the WAL).
    pub(crate) pause: Mutex<()>,
    /// Torn-WAL cycles done so far.
    pub(crate) epoch: AtomicU64,
    /// No more starts: only votes for approvals still waiting.
    pub(crate) draining: AtomicBool,
    /// Stop now.
    pub(crate) stop: AtomicBool,
    /// Runs whose start was acknowledged.
    pub(crate) started: AtomicUsize,
    /// The log.
    pub(crate) log: Mutex<ClientLog>,
}

/// How the client behaves.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The database.
    pub(crate) db: PathBuf,
    /// The ledger (client processes do not write it, but the binary opens it lazily).
    pub(crate) ledger: PathBuf,
    /// The runs to start, in order.
    pub(crate) jobs: Vec<Job>,
    /// Start this many at once before pacing the rest.
    pub(crate) burst: usize,
    /// Pause between calls after the burst.
    pub(crate) pace: Duration,
    /// Percentage of calls killed right after they start.
    pub(crate) kill_percent: u64,
    /// Seed of the client's own choices.
    pub(crate) seed: u64,
}

/// The client thread's handle.
pub(crate) struct ClientThread {
    /// Shared state.
    pub(crate) shared: Arc<Shared>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ClientThread {
    /// Starts the client thread.
    pub(crate) fn spawn(plan: Plan) -> ClientThread {
        let shared = Arc::new(Shared {
            pause: Mutex::new(()),
            epoch: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            log: Mutex::new(ClientLog::default()),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("reliability-client".into())
            .spawn(move || client_loop(&plan, &s))
            .expect("the client thread starts");
        ClientThread {
            shared,
            handle: Some(handle),
        }
    }

    /// Stops the thread and returns its log.
    pub(crate) fn finish(mut self) -> ClientLog {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(Err(panic)) = self.handle.take().map(std::thread::JoinHandle::join) {
            std::panic::resume_unwind(panic);
        }
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for ClientThread {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// An approval the client sends votes to.
struct Ballot {
    workflow_id: String,
    needed: u32,
    ok: u32,
    finished: bool,
}

fn client_loop(plan: &Plan, shared: &Shared) {
    let mut rng = Rng::new(plan.seed);
    let mut next_job = 0;
    let mut ballots: Vec<Ballot> = Vec::new();
    let mut next_vote: u64 = 1;
    let mut last_sweep = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let draining = shared.draining.load(Ordering::SeqCst);
        let want_start = !draining && next_job < plan.jobs.len();
        let open: Vec<usize> = ballots
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.finished && b.ok < b.needed)
            .map(|(i, _)| i)
            .collect();
        if want_start && (open.is_empty() || next_job < plan.burst || rng.chance(50)) {
            let job = &plan.jobs[next_job];
            next_job += 1;
            if start(plan, shared, &mut rng, job) && job.votes > 0 {
                ballots.push(Ballot {
                    workflow_id: job.id.clone(),
                    needed: job.votes,
                    ok: 0,
                    finished: false,
                });
            }
        } else if !open.is_empty() {
            let i = open[usize::try_from(rng.range(0, open.len() as u64)).unwrap_or(0)];
            let vote = next_vote;
            next_vote += 1;
            send_vote(plan, shared, &mut rng, &mut ballots[i], vote);
        } else if draining && last_sweep.elapsed() > Duration::from_millis(700) {
            // Every vote was acknowledged, yet some approvals may still wait: a torn WAL
            // can lose acknowledged votes. Give the ones still running another.
            last_sweep = Instant::now();
            let running = running_approvals(&plan.db);
            for b in ballots.iter_mut().filter(|b| !b.finished) {
                if running.contains(&b.workflow_id) {
                    let vote = next_vote;
                    next_vote += 1;
                    send_vote(plan, shared, &mut rng, b, vote);
                } else {
                    b.finished = true;
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if next_job >= plan.burst {
            std::thread::sleep(plan.pace);
        }
    }
}

/// Approvals still running, read from the database.
fn running_approvals(db: &Path) -> std::collections::BTreeSet<String> {
    let conn = support::read_only(db);
    let mut stmt = conn
        .prepare("SELECT workflow_id FROM runs WHERE workflow = 'approval' AND status = 'running'")
        .expect("the runs table exists");
    stmt.query_map([], |r| r.get(0))
        .expect("the query runs")
        .filter_map(Result::ok)
        .collect()
}

/// Starts a job, retrying an unknown outcome with the same id; true once acknowledged.
fn start(plan: &Plan, shared: &Shared, rng: &mut Rng, job: &Job) -> bool {
    let input = job.input.to_string();
    let mut outcome = Outcome::Unknown;
    for _ in 0..20 {
        let kill = rng.chance(plan.kill_percent);
        outcome = call(
            plan,
            shared,
            rng,
            &["start", job.workflow, "--id", &job.id, "--input", &input],
            kill,
        )
        .0;
        if outcome != Outcome::Unknown || shared.stop.load(Ordering::SeqCst) {
            break;
        }
    }
    let epoch = shared.epoch.load(Ordering::SeqCst);
    if outcome == Outcome::Ok {
        shared.started.fetch_add(1, Ordering::SeqCst);
    }
    shared
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .starts
        .push(StartOp {
            workflow_id: job.id.clone(),
            outcome,
            epoch,
        });
    outcome == Outcome::Ok
}

fn send_vote(plan: &Plan, shared: &Shared, rng: &mut Rng, ballot: &mut Ballot, vote: u64) {
    let payload = serde_json::json!({ "id": vote, "value": rng.range(1, 1000) }).to_string();
    let kill = rng.chance(plan.kill_percent);
    let (outcome, finished) = call(
        plan,
        shared,
        rng,
        &["signal", &ballot.workflow_id, "vote", "--payload", &payload],
        kill,
    );
    if outcome == Outcome::Ok {
        ballot.ok += 1;
    }
    if finished {
        ballot.finished = true;
    }
    let epoch = shared.epoch.load(Ordering::SeqCst);
    shared
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .signals
        .push(SignalOp {
            vote,
            workflow_id: ballot.workflow_id.clone(),
            outcome,
            epoch,
        });
}

/// Runs one client process; returns its outcome and whether it said the run is finished
/// (or missing).
fn call(plan: &Plan, shared: &Shared, rng: &mut Rng, args: &[&str], kill: bool) -> (Outcome, bool) {
    let _running = shared.pause.lock().unwrap_or_else(|p| p.into_inner());
    let mut cmd: Command = support::chaos(&plan.db, &plan.ledger);
    cmd.args(args)
        .env("DURABLE_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(_) => return (Outcome::Fail, false),
    };
    let deadline = if kill {
        Instant::now() + rng.millis(0, 40)
    } else {
        Instant::now() + Duration::from_secs(20)
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut stderr);
    }
    match status {
        None => (Outcome::Unknown, false),
        Some(s) if s.success() => (Outcome::Ok, false),
        Some(_) => classify(&stderr),
    }
}

/// A failed call's outcome from its error line: refusals that write nothing are
/// failures, anything else (busy, i/o, a database error) leaves the outcome open.
fn classify(stderr: &str) -> (Outcome, bool) {
    if stderr.contains("is already finished") || stderr.contains("no run with id") {
        (Outcome::Fail, true)
    } else {
        (Outcome::Unknown, false)
    }
}

/// Per-workflow counts of acknowledged starts, for the figures.
pub(crate) fn started_by_workflow(log: &ClientLog, jobs: &[Job]) -> BTreeMap<&'static str, usize> {
    let by_id: BTreeMap<&str, &'static str> =
        jobs.iter().map(|j| (j.id.as_str(), j.workflow)).collect();
    let mut out = BTreeMap::new();
    for s in log.starts.iter().filter(|s| s.outcome == Outcome::Ok) {
        if let Some(w) = by_id.get(s.workflow_id.as_str()) {
            *out.entry(*w).or_default() += 1;
        }
    }
    out
}
