//! The shared state between a run's workflow context and its machine.

use crate::command::Command;
use crate::error::{ActivityError, ReplayError, WorkflowError};
use crate::event::EventKind;
use crate::executor::RunIdentity;
use crate::ids::{CommandSeq, EventId};
use crate::payload::Payload;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::task::Waker;

/// What resolves a pending command.
#[derive(Debug)]
pub(crate) enum Resolution {
    ActivityOk(Payload),
    ActivityErr(ActivityError),
    TimerFired,
    Signal(Payload),
    ChildOk(Payload),
    ChildErr(WorkflowError),
}

/// What an issued command waits for, so an answer of another kind is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaits {
    ActivityResult,
    TimerFiring,
    Signal,
    ChildOutcome,
    Nothing,
}

impl Awaits {
    fn of(cmd: &Command) -> Self {
        match cmd {
            Command::ScheduleActivity { .. } => Awaits::ActivityResult,
            Command::StartTimer { .. } => Awaits::TimerFiring,
            Command::WaitSignal { .. } => Awaits::Signal,
            Command::StartChild { .. } => Awaits::ChildOutcome,
            Command::RecordMarker { .. } => Awaits::Nothing,
        }
    }

    fn answered_by(resolution: &Resolution) -> Self {
        match resolution {
            Resolution::ActivityOk(_) | Resolution::ActivityErr(_) => Awaits::ActivityResult,
            Resolution::TimerFired => Awaits::TimerFiring,
            Resolution::Signal(_) => Awaits::Signal,
            Resolution::ChildOk(_) | Resolution::ChildErr(_) => Awaits::ChildOutcome,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Awaits::ActivityResult => "an activity result",
            Awaits::TimerFiring => "a timer firing",
            Awaits::Signal => "a signal",
            Awaits::ChildOutcome => "a child run's outcome",
            Awaits::Nothing => "nothing",
        }
    }
}

/// An issued command still waiting for its answer.
struct Waiting {
    awaits: Awaits,
    waker: Option<Waker>,
}

pub(crate) struct RunState {
    pub(crate) identity: RunIdentity,
    pub(crate) workflow: String,
    pub(crate) now_ms: i64,
    /// The run's seed: each fresh random value is drawn from the stream of its command
    /// number, so it does not depend on which values earlier replays drew.
    seed: u64,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) next_seq: u32,
    /// Command events of a recorded history, by number (filled by `preload`).
    pub(crate) recorded: HashMap<u32, (EventId, EventKind)>,
    pub(crate) new_commands: Vec<(CommandSeq, Command)>,
    /// Issued commands still waiting for their answer.
    waiting: BTreeMap<u32, Waiting>,
    results: HashMap<u32, Resolution>,
    signal_buffer: BTreeMap<String, VecDeque<Payload>>,
    signal_waiters: BTreeMap<String, VecDeque<u32>>,
    pub(crate) cancel_reason: Option<String>,
    /// The code has looked at cancellation at least once, so it handles it itself.
    pub(crate) cancel_aware: bool,
    cancel_wakers: Vec<Waker>,
    pub(crate) error: Option<ReplayError>,
    pub(crate) replaying: bool,
    /// True while the event being applied is followed by more recorded history, so the
    /// commands of this activation, if the recorded run issued any, are in `recorded`.
    pub(crate) more_history: bool,
    /// The latest value published with `ctx.set_status(..)` and not yet taken by the
    /// engine. Not a command: it is kept out of history, so replay never checks it.
    pub(crate) published_status: Option<Payload>,
    /// Set when the code awaited `ctx.continue_as_new(..)`: the workflow and input of
    /// the next run. The machine ends the run after the poll that set it.
    pub(crate) continue_as_new: Option<(String, Payload)>,
}

impl RunState {
    pub(crate) fn new(identity: RunIdentity, workflow: String, seed: u64, now_ms: i64) -> Self {
        RunState {
            identity,
            workflow,
            now_ms,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_seq: 1,
            recorded: HashMap::new(),
            new_commands: Vec::new(),
            waiting: BTreeMap::new(),
            results: HashMap::new(),
            signal_buffer: BTreeMap::new(),
            signal_waiters: BTreeMap::new(),
            cancel_reason: None,
            cancel_aware: false,
            cancel_wakers: Vec::new(),
            error: None,
            replaying: false,
            more_history: false,
            published_status: None,
            continue_as_new: None,
        }
    }

    /// The seed of the run this one continues as: drawn from a stream of the run's own
    /// seed that no command number uses, so replay derives the same value.
    pub(crate) fn successor_seed(&self) -> u64 {
        use rand::RngCore;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(u64::MAX);
        rng.next_u64()
    }

    fn fail(&mut self, err: ReplayError) {
        if self.error.is_none() {
            self.error = Some(err);
        }
    }

    /// Issues a command: takes the next number and checks it against history.
    pub(crate) fn issue(&mut self, cmd: Command) -> CommandSeq {
        let seq = CommandSeq(self.next_seq);
        self.next_seq += 1;
        if let Some((_, recorded)) = self.recorded.get(&seq.0)
            && !cmd.matches(recorded)
        {
            // Summaries (with their digests) are built only for the report.
            let recorded = recorded
                .command_summary()
                .expect("only command events are indexed");
            let issued = cmd.summary();
            self.fail(ReplayError::Nondeterminism {
                seq,
                recorded,
                issued,
            });
        }
        let awaits = Awaits::of(&cmd);
        if !self.recorded.contains_key(&seq.0) {
            self.new_commands.push((seq, cmd));
        }
        self.waiting.insert(
            seq.0,
            Waiting {
                awaits,
                waker: None,
            },
        );
        seq
    }

    /// On replay, the value recorded for the marker `name` at the next command number
    /// (consuming that number); `None` when the value must be produced now.
    pub(crate) fn take_recorded_marker(&mut self, name: &str) -> Option<Payload> {
        let seq = CommandSeq(self.next_seq);
        if let Some((_, EventKind::MarkerRecorded { name: n, value, .. })) =
            self.recorded.get(&seq.0)
            && n == name
        {
            let value = value.clone();
            self.next_seq += 1;
            return Some(value);
        }
        None
    }

    /// Points the random source at the stream of the next command number, so a fresh
    /// value does not depend on how many were drawn before a restore.
    pub(crate) fn reseed_for_next(&mut self) {
        self.rng = ChaCha8Rng::seed_from_u64(self.seed);
        self.rng.set_stream(u64::from(self.next_seq));
    }

    /// Records a freshly produced marker value under the next command number.
    pub(crate) fn issue_marker(&mut self, name: String, value: Payload) {
        let seq = CommandSeq(self.next_seq);
        // `issue` reports a mismatch when history holds something else at this number.
        self.issue(Command::RecordMarker { name, value });
        self.waiting.remove(&seq.0);
    }

    /// Records a value the first time; returns the recorded value on replay.
    pub(crate) fn marker(
        &mut self,
        name: String,
        fresh: impl FnOnce(&mut Self) -> Payload,
    ) -> Payload {
        if let Some(value) = self.take_recorded_marker(&name) {
            return value;
        }
        self.reseed_for_next();
        let value = fresh(self);
        self.issue_marker(name, value.clone());
        value
    }

    /// `ctx.patched(id)`: true unless replaying history recorded before the patch.
    pub(crate) fn patched(&mut self, id: &str) -> bool {
        let name = format!("patch:{id}");
        let seq = self.next_seq;
        match self.recorded.get(&seq) {
            Some((_, EventKind::MarkerRecorded { name: n, .. })) if *n == name => {
                self.next_seq += 1;
                true
            }
            Some(_) => false,
            None => {
                // Past the last recorded command. While more recorded history follows,
                // the recorded run went on without passing here: it predates the patch.
                let beyond = !self.more_history && self.recorded.keys().all(|k| *k < seq);
                if beyond {
                    self.marker(name, |_| Payload::default());
                    true
                } else {
                    false
                }
            }
        }
    }

    /// `ctx.deprecate_patch(id)`: consumes the marker where old history has it.
    pub(crate) fn deprecate_patch(&mut self, id: &str) {
        let name = format!("patch:{id}");
        if let Some((_, EventKind::MarkerRecorded { name: n, .. })) =
            self.recorded.get(&self.next_seq)
            && *n == name
        {
            self.next_seq += 1;
        }
    }

    pub(crate) fn register_waker(&mut self, seq: CommandSeq, waker: &Waker) {
        if let Some(slot) = self.waiting.get_mut(&seq.0) {
            match &slot.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
        }
    }

    pub(crate) fn take_result(&mut self, seq: CommandSeq) -> Option<Resolution> {
        self.results.remove(&seq.0)
    }

    pub(crate) fn resolve(
        &mut self,
        event: EventId,
        seq: CommandSeq,
        resolution: Resolution,
    ) -> Result<(), ReplayError> {
        let answered = Awaits::answered_by(&resolution);
        match self.waiting.get(&seq.0).map(|w| w.awaits) {
            Some(awaits) if awaits == answered => {
                let waiting = self.waiting.remove(&seq.0);
                self.results.insert(seq.0, resolution);
                if let Some(w) = waiting.and_then(|w| w.waker) {
                    w.wake();
                }
                Ok(())
            }
            Some(awaits) => Err(ReplayError::Malformed {
                event,
                reason: format!(
                    "{} for command {seq}, which waits for {}",
                    answered.describe(),
                    awaits.describe()
                ),
            }),
            None => Err(ReplayError::Malformed {
                event,
                reason: format!(
                    "an answer for command {seq}, which the code has not issued or is not waiting for"
                ),
            }),
        }
    }

    /// Starts waiting for a signal; returns a buffered one at once if there is one.
    pub(crate) fn wait_signal(&mut self, name: &str) -> (CommandSeq, Option<Payload>) {
        let seq = self.issue(Command::WaitSignal {
            name: name.to_owned(),
        });
        if let Some(p) = self
            .signal_buffer
            .get_mut(name)
            .and_then(VecDeque::pop_front)
        {
            self.waiting.remove(&seq.0);
            return (seq, Some(p));
        }
        self.signal_waiters
            .entry(name.to_owned())
            .or_default()
            .push_back(seq.0);
        (seq, None)
    }

    /// A signal waiter was dropped before it received anything (its select lost).
    pub(crate) fn abandon_signal(&mut self, seq: CommandSeq, name: &str) {
        if let Some(q) = self.signal_waiters.get_mut(name) {
            q.retain(|s| *s != seq.0);
        }
        self.waiting.remove(&seq.0);
        // A signal already handed to this waiter but not taken goes back to the buffer,
        // first in line, so it is not lost.
        if let Some(Resolution::Signal(p)) = self.results.remove(&seq.0) {
            self.signal_buffer
                .entry(name.to_owned())
                .or_default()
                .push_front(p);
        }
    }

    pub(crate) fn deliver_signal(&mut self, name: &str, payload: Payload) {
        let waiter = self
            .signal_waiters
            .get_mut(name)
            .and_then(VecDeque::pop_front);
        match waiter {
            Some(seq) => {
                if let Some(waiting) = self.waiting.remove(&seq) {
                    self.results.insert(seq, Resolution::Signal(payload));
                    if let Some(w) = waiting.waker {
                        w.wake();
                    }
                }
            }
            None => self
                .signal_buffer
                .entry(name.to_owned())
                .or_default()
                .push_back(payload),
        }
    }

    /// Takes the signals delivered to the run that no wait has taken, by name, each
    /// name's in arrival order (a run that continues as new hands them on).
    pub(crate) fn take_unconsumed_signals(&mut self) -> Vec<(String, Payload)> {
        std::mem::take(&mut self.signal_buffer)
            .into_iter()
            .flat_map(|(name, queue)| queue.into_iter().map(move |p| (name.clone(), p)))
            .collect()
    }

    pub(crate) fn request_cancel(&mut self, reason: String) {
        if self.cancel_reason.is_none() {
            self.cancel_reason = Some(reason);
            for w in self.cancel_wakers.drain(..) {
                w.wake();
            }
        }
    }

    pub(crate) fn register_cancel_waker(&mut self, waker: &Waker) {
        self.cancel_wakers.push(waker.clone());
    }

    pub(crate) fn pending(&self) -> Vec<CommandSeq> {
        self.waiting.keys().map(|s| CommandSeq(*s)).collect()
    }
}
