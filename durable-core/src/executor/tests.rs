//! Unit tests of the deterministic executor and the replayer, driven directly.
//!
//! The workflows and activities here implement [`Workflow`] and [`Activity`] by hand (the
//! proc macros need the facade crate). Histories are either recorded by [`Live`], which
//! drives a [`RunMachine`] the way the worker does, or written out event by event with
//! [`HistoryBuilder`]. Activity bodies never run: the tests feed their results as events.

// The helpers return the engine's own `ReplayError`, so the tests can match its variants;
// its size is the engine's choice, not something to box here.
#![allow(clippy::result_large_err)]

use crate::command::Command;
use crate::context::activity::ActivityContext;
use crate::context::workflow::WorkflowContext;
use crate::error::{ActivityError, CommandSummary, ReplayError, WorkflowError};
use crate::event::{ActivityOptions, Event, EventKind};
use crate::executor::{RunIdentity, RunMachine};
use crate::ids::{CommandSeq, EventId, RunId, WorkflowId};
use crate::payload::Payload;
use crate::registry::{Activity, ErasedWorkflow, Registry, Workflow};
use crate::replay::{self, ReplayOutcome, Replayer};
use futures::future::{BoxFuture, Either, LocalBoxFuture};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The time of every history's `RunStarted` event.
const T0: i64 = 1_700_000_000_000;
/// The distance between the times of consecutive inbound events.
const STEP_MS: i64 = 1_000;

/// Defines a workflow as an empty enum, the way `#[workflow]` would.
macro_rules! workflow {
    ($ty:ident = $name:literal, |$ctx:ident, $input:ident : $in:ty| -> $out:ty $body:block) => {
        enum $ty {}
        impl Workflow for $ty {
            type Input = $in;
            type Output = $out;
            const NAME: &'static str = $name;
            fn run(
                ctx: WorkflowContext,
                input: $in,
            ) -> LocalBoxFuture<'static, Result<$out, WorkflowError>> {
                async fn body($ctx: WorkflowContext, $input: $in) -> Result<$out, WorkflowError> $body
                Box::pin(body(ctx, input))
            }
        }
    };
}

/// Defines an activity whose body is never run here: results come from history.
macro_rules! activity {
    ($ty:ident = $name:literal, $in:ty => $out:ty) => {
        enum $ty {}
        impl Activity for $ty {
            type Input = $in;
            type Output = $out;
            const NAME: &'static str = $name;
            fn run(
                _ctx: ActivityContext,
                _input: $in,
            ) -> BoxFuture<'static, Result<$out, ActivityError>> {
                Box::pin(async {
                    Err(ActivityError::non_retryable(
                        "NotRun",
                        "executor tests feed activity results as events",
                    ))
                })
            }
        }
    };
}

activity!(Echo = "echo", u64 => u64);
activity!(Charge = "charge", String => String);
activity!(Refund = "refund", String => String);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn enc<T: Serialize + ?Sized>(value: &T) -> Payload {
    Payload::encode(value).expect("test values encode")
}

fn identity() -> RunIdentity {
    RunIdentity {
        workflow_id: WorkflowId("wf-1".into()),
        run_id: RunId("run-1".into()),
    }
}

fn erased<W: Workflow>() -> Arc<dyn ErasedWorkflow> {
    Registry::new()
        .workflow::<W>()
        .find_workflow(W::NAME)
        .expect("registered on the line above")
        .clone()
}

fn replayer<W: Workflow>() -> Replayer {
    Replayer::new(Registry::new().workflow::<W>())
}

fn restore<W: Workflow>(history: &[Event]) -> Result<RunMachine, ReplayError> {
    replay::restore(erased::<W>().as_ref(), identity(), history)
}

/// The decoded output of a machine whose code completed.
fn output<T: DeserializeOwned>(machine: &RunMachine) -> T {
    match machine.outcome() {
        Some(Ok(p)) => p.decode().expect("the output decodes"),
        other => panic!("expected a completed run, got {other:?}"),
    }
}

fn schedule(name: &str, input: impl Serialize) -> Command {
    Command::ScheduleActivity {
        name: name.into(),
        input: enc(&input),
        options: ActivityOptions::default(),
    }
}

fn start_timer(duration_ms: u64) -> Command {
    Command::StartTimer { duration_ms }
}

fn wait_signal(name: &str) -> Command {
    Command::WaitSignal { name: name.into() }
}

fn numbered(commands: Vec<(u32, Command)>) -> Vec<(CommandSeq, Command)> {
    commands
        .into_iter()
        .map(|(seq, c)| (CommandSeq(seq), c))
        .collect()
}

fn activity_summary(name: &str, input: impl Serialize) -> CommandSummary {
    CommandSummary {
        kind: "ScheduleActivity".into(),
        name: name.into(),
        input_digest: Some(enc(&input).digest()),
    }
}

fn timer_summary(duration_ms: u64) -> CommandSummary {
    CommandSummary {
        kind: "StartTimer".into(),
        name: format!("{duration_ms}ms"),
        input_digest: None,
    }
}

fn completed(seq: u32, output: impl Serialize) -> EventKind {
    EventKind::ActivityCompleted {
        seq: CommandSeq(seq),
        output: enc(&output),
        attempt: 1,
    }
}

fn failed(seq: u32, error: ActivityError) -> EventKind {
    EventKind::ActivityFailed {
        seq: CommandSeq(seq),
        error,
    }
}

fn fired(seq: u32) -> EventKind {
    EventKind::TimerFired {
        seq: CommandSeq(seq),
    }
}

fn signal(name: &str, value: impl Serialize) -> EventKind {
    EventKind::SignalReceived {
        name: name.into(),
        payload: enc(&value),
    }
}

fn kinds(history: &[Event]) -> Vec<&'static str> {
    history.iter().map(|e| e.kind.name()).collect()
}

fn ids_are_contiguous(history: &[Event]) -> bool {
    history
        .iter()
        .enumerate()
        .all(|(i, e)| u64::try_from(i + 1).is_ok_and(|n| e.id == EventId(n)))
}

/// Builds a history event by event: ids contiguous from 1, times a second apart.
struct HistoryBuilder {
    events: Vec<Event>,
}

impl HistoryBuilder {
    fn start(workflow: &str, input: impl Serialize, seed: u64) -> Self {
        HistoryBuilder { events: Vec::new() }.push(EventKind::RunStarted {
            workflow: workflow.into(),
            input: enc(&input),
            seed,
        })
    }

    fn push(mut self, kind: EventKind) -> Self {
        let n = self.events.len();
        self.events.push(Event {
            id: EventId(u64::try_from(n + 1).expect("small histories")),
            time_ms: T0 + STEP_MS * i64::try_from(n).expect("small histories"),
            kind,
        });
        self
    }

    fn scheduled(self, seq: u32, name: &str, input: impl Serialize) -> Self {
        self.push(EventKind::ActivityScheduled {
            seq: CommandSeq(seq),
            name: name.into(),
            input: enc(&input),
            options: ActivityOptions::default(),
        })
    }

    fn completed(self, seq: u32, output: impl Serialize) -> Self {
        self.push(completed(seq, output))
    }

    fn timer_started(self, seq: u32, duration_ms: u64) -> Self {
        self.push(EventKind::TimerStarted {
            seq: CommandSeq(seq),
            duration_ms,
        })
    }

    fn timer_fired(self, seq: u32) -> Self {
        self.push(fired(seq))
    }

    fn marker(self, seq: u32, name: &str, value: impl Serialize) -> Self {
        self.push(EventKind::MarkerRecorded {
            seq: CommandSeq(seq),
            name: name.into(),
            value: enc(&value),
        })
    }

    fn run_completed(self, output: impl Serialize) -> Self {
        self.push(EventKind::RunCompleted {
            output: enc(&output),
        })
    }

    fn build(self) -> Vec<Event> {
        self.events
    }
}

/// Drives a run the way the worker does: each inbound event is applied, then the
/// commands the code issued are recorded as events, then its outcome if it finished.
struct Live {
    machine: RunMachine,
    history: Vec<Event>,
}

type Issued = Vec<(CommandSeq, Command)>;

impl Live {
    /// Starts a run: applies `RunStarted` and records the first activation.
    fn start<W: Workflow>(input: &W::Input, seed: u64) -> Result<(Self, Issued), ReplayError> {
        let started = Event {
            id: EventId(1),
            time_ms: T0,
            kind: EventKind::RunStarted {
                workflow: W::NAME.into(),
                input: enc(input),
                seed,
            },
        };
        let mut machine = RunMachine::new(erased::<W>().as_ref(), identity(), &started)?;
        machine.apply(&started)?;
        let mut live = Live {
            machine,
            history: vec![started],
        };
        let issued = live.record(T0)?;
        Ok((live, issued))
    }

    /// Rebuilds the run from recorded history, as a worker does after a crash.
    fn restore<W: Workflow>(history: &[Event]) -> Result<(Self, Issued), ReplayError> {
        let machine = restore::<W>(history)?;
        let time = history.last().map_or(T0, |e| e.time_ms);
        let mut live = Live {
            machine,
            history: history.to_vec(),
        };
        let issued = live.record(time)?;
        Ok((live, issued))
    }

    fn next_id(&self) -> EventId {
        EventId(u64::try_from(self.history.len() + 1).expect("small histories"))
    }

    /// Applies one inbound event a second after the last one.
    fn deliver(&mut self, kind: EventKind) -> Result<Issued, ReplayError> {
        let time = self.history.last().map_or(T0, |e| e.time_ms) + STEP_MS;
        self.deliver_at(time, kind)
    }

    fn deliver_at(&mut self, time_ms: i64, kind: EventKind) -> Result<Issued, ReplayError> {
        let event = Event {
            id: self.next_id(),
            time_ms,
            kind,
        };
        self.machine.apply(&event)?;
        self.history.push(event);
        self.record(time_ms)
    }

    fn record(&mut self, time_ms: i64) -> Result<Issued, ReplayError> {
        let issued = self.machine.take_commands();
        for (seq, command) in &issued {
            let event = Event {
                id: self.next_id(),
                time_ms,
                kind: command.clone().into_event(*seq),
            };
            self.machine.apply(&event)?;
            self.history.push(event);
        }
        if let Some(outcome) = self.machine.take_outcome() {
            let kind = match outcome {
                Ok(output) => EventKind::RunCompleted { output },
                Err(error) => EventKind::RunFailed { error },
            };
            let event = Event {
                id: self.next_id(),
                time_ms,
                kind,
            };
            self.machine.apply(&event)?;
            self.history.push(event);
        }
        if let Some(next) = self.machine.take_continue_as_new() {
            let event = Event {
                id: self.next_id(),
                time_ms,
                kind: next.into_event(RunId("run-2".into())),
            };
            self.machine.apply(&event)?;
            self.history.push(event);
        }
        Ok(issued)
    }
}

/// Calls `echo(n)` and returns its output with the workflow time at which it resolved.
async fn echo_at(ctx: WorkflowContext, n: u64) -> Result<(u64, i64), WorkflowError> {
    let v = ctx.activity::<Echo>(n).await?;
    Ok((v, ctx.now_ms()))
}

/// A future that wakes itself `n` times before it is ready, like `yield_now`.
struct YieldTimes(u32);

impl Future for YieldTimes {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

// ---------------------------------------------------------------------------------------
// Commands and activations
// ---------------------------------------------------------------------------------------

workflow!(Sequential = "sequential", |ctx, start: u64| -> u64 {
    let a = ctx.activity::<Echo>(start).await?;
    let b = ctx.activity::<Echo>(a + 1).await?;
    let c = ctx.activity::<Echo>(b + 1).await?;
    Ok(c)
});

#[test]
fn sequential_activities_schedule_commands_numbered_one_two_three() -> TestResult {
    let (mut live, first) = Live::start::<Sequential>(&10, 1)?;
    assert_eq!(first, numbered(vec![(1, schedule("echo", 10u64))]));
    assert_eq!(
        live.deliver(completed(1, 11u64))?,
        numbered(vec![(2, schedule("echo", 12u64))])
    );
    assert_eq!(
        live.deliver(completed(2, 20u64))?,
        numbered(vec![(3, schedule("echo", 21u64))])
    );
    assert_eq!(live.deliver(completed(3, 30u64))?, vec![]);
    assert_eq!(output::<u64>(&live.machine), 30);
    assert_eq!(
        kinds(&live.history),
        [
            "RunStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "RunCompleted",
        ]
    );
    let scheduled: Vec<Option<CommandSeq>> = live
        .history
        .iter()
        .filter(|e| e.kind.is_command())
        .map(|e| e.kind.seq())
        .collect();
    assert_eq!(
        scheduled,
        [
            Some(CommandSeq(1)),
            Some(CommandSeq(2)),
            Some(CommandSeq(3))
        ]
    );
    assert!(ids_are_contiguous(&live.history));

    let report = replayer::<Sequential>().replay(identity(), &live.history)?;
    assert_eq!(report.workflow, "sequential");
    assert_eq!(report.events, 8);
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc(&30u64)));
    Ok(())
}

workflow!(Quiescent = "quiescent", |ctx, _input: ()| -> u64 {
    YieldTimes(3).await;
    let salt: u64 = ctx.random();
    let (a, b) = futures::join!(ctx.activity::<Echo>(1), ctx.activity::<Echo>(2));
    YieldTimes(2).await;
    let c = ctx.activity::<Echo>(a? + b?).await?;
    Ok(c + salt % 2)
});

/// 1 RunStarted; the code yields, records a marker and schedules two activities, all in
/// the one activation of event 1. Each later event resolves exactly its own command.
#[test]
fn an_activation_applies_one_event_and_polls_until_the_code_waits() -> TestResult {
    let (mut live, first) = Live::start::<Quiescent>(&(), 5)?;
    let seqs: Vec<u32> = first.iter().map(|(s, _)| s.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert!(matches!(&first[0].1, Command::RecordMarker { name, .. } if name == "random"));
    assert_eq!(first[1].1, schedule("echo", 1u64));
    assert_eq!(first[2].1, schedule("echo", 2u64));
    assert_eq!(live.machine.last_applied(), EventId(4));
    assert_eq!(live.machine.pending(), [CommandSeq(2), CommandSeq(3)]);

    // One event, one answer: command 3 is still waited for.
    assert_eq!(live.deliver(completed(2, 10u64))?, vec![]);
    assert_eq!(live.machine.last_applied(), EventId(5));
    assert_eq!(live.machine.pending(), [CommandSeq(3)]);
    assert!(!live.machine.is_finished());

    assert_eq!(
        live.deliver(completed(3, 20u64))?,
        numbered(vec![(4, schedule("echo", 30u64))])
    );
    assert_eq!(live.machine.pending(), [CommandSeq(4)]);
    live.deliver(completed(4, 30u64))?;
    assert!(live.machine.is_finished());
    assert!(ids_are_contiguous(&live.history));
    Ok(())
}

workflow!(JoinThree = "join_three", |ctx,
                                     _input: ()|
 -> Vec<(u64, i64)> {
    let (a, b, c) = futures::join!(
        echo_at(ctx.clone(), 10),
        echo_at(ctx.clone(), 20),
        echo_at(ctx.clone(), 30)
    );
    Ok(vec![a?, b?, c?])
});

/// 1 RunStarted, 2-4 ActivityScheduled 1-3 (in the order of the `join!` arguments),
/// 5 ActivityCompleted 3, 6 ActivityCompleted 1, 7 ActivityCompleted 2.
#[test]
fn join_issues_commands_in_argument_order_and_resolves_in_history_order() -> TestResult {
    let (mut live, first) = Live::start::<JoinThree>(&(), 1)?;
    assert_eq!(
        first,
        numbered(vec![
            (1, schedule("echo", 10u64)),
            (2, schedule("echo", 20u64)),
            (3, schedule("echo", 30u64)),
        ])
    );
    live.deliver(completed(3, 31u64))?;
    live.deliver(completed(1, 11u64))?;
    live.deliver(completed(2, 21u64))?;
    // Each branch resumed while the event that answered it was applied.
    let out: Vec<(u64, i64)> = output(&live.machine);
    assert_eq!(
        out,
        [
            (11, T0 + 2 * STEP_MS),
            (21, T0 + 3 * STEP_MS),
            (31, T0 + STEP_MS)
        ]
    );
    let replayed = restore::<JoinThree>(&live.history)?;
    assert_eq!(output::<Vec<(u64, i64)>>(&replayed), out);
    Ok(())
}

workflow!(JoinMany = "join_many", |ctx,
                                   width: u64|
 -> Vec<(u64, i64)> {
    let branches = (0..width).map(|i| echo_at(ctx.clone(), i * 10));
    futures::future::join_all(branches)
        .await
        .into_iter()
        .collect()
});

/// 1 RunStarted, 2..=w+1 ActivityScheduled 1..=w, then the completions in a shuffled
/// order. Run with 5 and 40 branches: `join_all` switches to `FuturesOrdered` past 30.
#[test]
fn join_all_issues_commands_in_input_order_and_resolves_in_history_order() -> TestResult {
    for width in [5u64, 40] {
        let (mut live, first) = Live::start::<JoinMany>(&width, 1)?;
        let expected: Vec<(CommandSeq, Command)> = (0..width)
            .map(|i| {
                (
                    CommandSeq(u32::try_from(i + 1).expect("small")),
                    schedule("echo", i * 10),
                )
            })
            .collect();
        assert_eq!(first, expected, "width {width}");
        // A fixed permutation: 17 and 7 are coprime with both widths.
        let stride = if width == 5 { 3 } else { 17 };
        let mut resolved_at = vec![0i64; usize::try_from(width)?];
        for k in 0..width {
            let i = (k * stride) % width;
            let seq = u32::try_from(i + 1)?;
            live.deliver(completed(seq, i * 10 + 1))?;
            resolved_at[usize::try_from(i)?] = live.history.last().map_or(0, |e| e.time_ms);
        }
        let out: Vec<(u64, i64)> = output(&live.machine);
        let want: Vec<(u64, i64)> = (0..width)
            .map(|i| (i * 10 + 1, resolved_at[usize::try_from(i).expect("small")]))
            .collect();
        assert_eq!(out, want, "width {width}");
        let replayed = restore::<JoinMany>(&live.history)?;
        assert_eq!(output::<Vec<(u64, i64)>>(&replayed), want, "width {width}");
    }
    Ok(())
}

workflow!(Race = "race", |ctx, _input: ()| -> String {
    let charge = ctx.activity::<Echo>(5);
    let timeout = ctx.sleep(Duration::from_secs(60));
    let out = match futures::future::select(charge, timeout).await {
        Either::Left((r, _timer)) => format!("charged {}", r?),
        Either::Right(((), _charge)) => "timed out".to_owned(),
    };
    ctx.sleep(Duration::from_secs(1)).await;
    Ok(out)
});

/// 1 RunStarted, 2 ActivityScheduled 1, 3 TimerStarted 2 (60s), 4 TimerFired 2,
/// 5 TimerStarted 3 (1s), 6 ActivityCompleted 1 (late, ignored), 7 TimerFired 3,
/// 8 RunCompleted "timed out".
#[test]
fn select_picks_the_timer_when_it_fires_first_in_history() -> TestResult {
    let (mut live, first) = Live::start::<Race>(&(), 1)?;
    assert_eq!(
        first,
        numbered(vec![(1, schedule("echo", 5u64)), (2, start_timer(60_000))])
    );
    assert_eq!(
        live.deliver(fired(2))?,
        numbered(vec![(3, start_timer(1_000))])
    );
    // The losing activity still completes; its answer is accepted and changes nothing.
    assert_eq!(live.deliver(completed(1, 5u64))?, vec![]);
    live.deliver(fired(3))?;
    assert_eq!(output::<String>(&live.machine), "timed out");
    assert_eq!(live.history.len(), 8);

    let report = replayer::<Race>().replay(identity(), &live.history)?;
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc("timed out")));
    Ok(())
}

/// 1 RunStarted, 2 ActivityScheduled 1, 3 TimerStarted 2 (60s), 4 ActivityCompleted 1,
/// 5 TimerStarted 3 (1s), 6 TimerFired 2 (late, ignored), 7 TimerFired 3,
/// 8 RunCompleted "charged 5".
#[test]
fn select_picks_the_activity_when_it_completes_first_in_history() -> TestResult {
    let (mut live, _) = Live::start::<Race>(&(), 1)?;
    assert_eq!(
        live.deliver(completed(1, 5u64))?,
        numbered(vec![(3, start_timer(1_000))])
    );
    assert_eq!(live.deliver(fired(2))?, vec![]);
    live.deliver(fired(3))?;
    assert_eq!(output::<String>(&live.machine), "charged 5");

    let report = replayer::<Race>().replay(identity(), &live.history)?;
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc("charged 5")));
    Ok(())
}

workflow!(Nap = "nap", |ctx, _input: ()| -> (i64, i64) {
    let before = ctx.now_ms();
    ctx.sleep(Duration::from_secs(90)).await;
    Ok((before, ctx.now_ms()))
});

/// 1 RunStarted, 2 TimerStarted 1 (90s), 3 TimerFired 1, 4 RunCompleted.
#[test]
fn sleep_records_timer_started_and_resumes_on_timer_fired() -> TestResult {
    let (mut live, first) = Live::start::<Nap>(&(), 1)?;
    assert_eq!(first, numbered(vec![(1, start_timer(90_000))]));
    assert_eq!(
        live.history[1].kind,
        EventKind::TimerStarted {
            seq: CommandSeq(1),
            duration_ms: 90_000
        }
    );
    assert_eq!(live.machine.pending(), [CommandSeq(1)]);
    live.deliver_at(T0 + 90_000, fired(1))?;
    assert_eq!(output::<(i64, i64)>(&live.machine), (T0, T0 + 90_000));
    assert_eq!(
        kinds(&live.history),
        ["RunStarted", "TimerStarted", "TimerFired", "RunCompleted"]
    );
    let replayed = restore::<Nap>(&live.history)?;
    assert_eq!(output::<(i64, i64)>(&replayed), (T0, T0 + 90_000));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Signals and cancellation
// ---------------------------------------------------------------------------------------

workflow!(Collect = "collect", |ctx, _input: ()| -> Vec<u32> {
    ctx.activity::<Echo>(0).await?;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(ctx.signal::<u32>("item").await?);
    }
    Ok(got)
});

/// 1 RunStarted, 2 ActivityScheduled 1, 3-5 SignalReceived item 1, 2, 3,
/// 6 SignalReceived other, 7 ActivityCompleted 1, 8-11 SignalAwaited 2-5 (2-4 answered
/// from the buffer), 12 SignalReceived item 4, 13 RunCompleted [1, 2, 3, 4].
#[test]
fn signals_buffered_before_a_wait_are_delivered_in_arrival_order_exactly_once() -> TestResult {
    let (mut live, _) = Live::start::<Collect>(&(), 1)?;
    for v in 1..=3u32 {
        assert_eq!(live.deliver(signal("item", v))?, vec![]);
    }
    assert_eq!(live.deliver(signal("other", 99u32))?, vec![]);
    assert_eq!(
        live.deliver(completed(1, 0u64))?,
        numbered(vec![
            (2, wait_signal("item")),
            (3, wait_signal("item")),
            (4, wait_signal("item")),
            (5, wait_signal("item")),
        ])
    );
    // Three waits took the buffered signals; the fourth waits for a new one.
    assert_eq!(live.machine.pending(), [CommandSeq(5)]);
    assert!(!live.machine.is_finished());
    live.deliver(signal("item", 4u32))?;
    assert_eq!(output::<Vec<u32>>(&live.machine), [1, 2, 3, 4]);

    let replayed = restore::<Collect>(&live.history)?;
    assert_eq!(output::<Vec<u32>>(&replayed), [1, 2, 3, 4]);
    Ok(())
}

workflow!(Approval = "approval", |ctx,
                                  _input: ()|
 -> (Option<u32>, u32) {
    let first = ctx
        .signal_timeout::<u32>("approve", Duration::from_secs(3600))
        .await?;
    ctx.activity::<Echo>(1).await?;
    let second = ctx.signal::<u32>("approve").await?;
    Ok((first, second))
});

/// 1 RunStarted, 2 SignalAwaited 1 approve, 3 TimerStarted 2 (1h), 4 TimerFired 2,
/// 5 ActivityScheduled 3, 6 SignalReceived approve 7 (nobody waits: buffered, not given
/// to the abandoned wait 1), 7 ActivityCompleted 3, 8 SignalAwaited 4 (answered from the
/// buffer), 9 RunCompleted (None, 7).
#[test]
fn signal_timeout_returns_none_when_the_timer_fires_first_and_keeps_a_later_signal() -> TestResult {
    let (mut live, first) = Live::start::<Approval>(&(), 1)?;
    assert_eq!(
        first,
        numbered(vec![
            (1, wait_signal("approve")),
            (2, start_timer(3_600_000))
        ])
    );
    assert_eq!(
        live.deliver(fired(2))?,
        numbered(vec![(3, schedule("echo", 1u64))])
    );
    assert_eq!(live.deliver(signal("approve", 7u32))?, vec![]);
    assert_eq!(
        live.deliver(completed(3, 1u64))?,
        numbered(vec![(4, wait_signal("approve"))])
    );
    assert_eq!(output::<(Option<u32>, u32)>(&live.machine), (None, 7));

    let replayed = restore::<Approval>(&live.history)?;
    assert_eq!(output::<(Option<u32>, u32)>(&replayed), (None, 7));
    Ok(())
}

/// 1 RunStarted, 2 SignalAwaited 1, 3 TimerStarted 2, 4 SignalReceived approve 5,
/// 5 ActivityScheduled 3, 6 TimerFired 2 (late, ignored), 7 SignalReceived approve 6,
/// 8 ActivityCompleted 3, 9 SignalAwaited 4, 10 RunCompleted (Some(5), 6).
#[test]
fn signal_timeout_returns_the_signal_when_it_arrives_first() -> TestResult {
    let (mut live, _) = Live::start::<Approval>(&(), 1)?;
    assert_eq!(
        live.deliver(signal("approve", 5u32))?,
        numbered(vec![(3, schedule("echo", 1u64))])
    );
    assert_eq!(live.deliver(fired(2))?, vec![]);
    live.deliver(signal("approve", 6u32))?;
    live.deliver(completed(3, 1u64))?;
    assert_eq!(output::<(Option<u32>, u32)>(&live.machine), (Some(5), 6));
    let replayed = restore::<Approval>(&live.history)?;
    assert_eq!(output::<(Option<u32>, u32)>(&replayed), (Some(5), 6));
    Ok(())
}

workflow!(Cancellable = "cancellable", |ctx, _input: ()| -> String {
    let work = ctx.activity::<Echo>(1);
    match futures::future::select(work, ctx.cancelled()).await {
        Either::Left((r, _)) => Ok(format!("done {}", r?)),
        Either::Right((reason, _)) => {
            assert!(ctx.is_cancel_requested());
            Err(WorkflowError::cancelled(reason))
        }
    }
});

/// 1 RunStarted, 2 ActivityScheduled 1, 3 CancelRequested "operator", 4 RunFailed.
#[test]
fn a_cancel_request_wakes_the_code_waiting_on_cancelled() -> TestResult {
    let (mut live, _) = Live::start::<Cancellable>(&(), 1)?;
    live.deliver(EventKind::CancelRequested {
        reason: "operator".into(),
    })?;
    assert_eq!(
        live.machine.outcome(),
        Some(&Err(WorkflowError::cancelled("operator")))
    );
    let report = replayer::<Cancellable>().replay(identity(), &live.history)?;
    assert_eq!(
        report.outcome,
        ReplayOutcome::Failed(WorkflowError::cancelled("operator"))
    );
    Ok(())
}

workflow!(Fallible = "fallible", |ctx, _input: ()| -> String {
    match ctx.activity::<Charge>("card-1".into()).await {
        Ok(receipt) => Ok(receipt),
        Err(e) if e.is("Declined") => Ok(format!("declined after {} attempts", e.attempts())),
        Err(e) => Err(e.into()),
    }
});

/// 1 RunStarted, 2 ActivityScheduled 1, 3 ActivityFailed 1 (Declined, 3 attempts),
/// 4 RunCompleted.
#[test]
fn an_activity_failure_reaches_the_code_with_its_kind_and_attempts() -> TestResult {
    let (mut live, _) = Live::start::<Fallible>(&(), 1)?;
    live.deliver(failed(
        1,
        ActivityError::non_retryable("Declined", "card ending 4242 declined").with_attempts(3),
    ))?;
    assert_eq!(output::<String>(&live.machine), "declined after 3 attempts");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Recorded values
// ---------------------------------------------------------------------------------------

thread_local! {
    static SIDE_EFFECT_CALLS: Cell<u32> = const { Cell::new(0) };
}

workflow!(Values = "values", |ctx,
                              _input: ()|
 -> (u64, String, String) {
    let r: u64 = ctx.random();
    let u = ctx.uuid();
    let s: String = ctx.side_effect("region", || {
        SIDE_EFFECT_CALLS.with(|c| c.set(c.get() + 1));
        "eu-west".to_owned()
    });
    ctx.activity::<Echo>(r % 100).await?;
    Ok((r, u.to_string(), s))
});

/// 1 RunStarted, 2 MarkerRecorded 1 random, 3 MarkerRecorded 2 uuid,
/// 4 MarkerRecorded 3 side_effect:region, 5 ActivityScheduled 4, 6 ActivityCompleted 4,
/// 7 RunCompleted.
#[test]
fn random_uuid_and_side_effect_return_the_recorded_values_on_replay() -> TestResult {
    SIDE_EFFECT_CALLS.with(|c| c.set(0));
    let (mut live, first) = Live::start::<Values>(&(), 42)?;
    let names: Vec<String> = first
        .iter()
        .filter_map(|(_, c)| match c {
            Command::RecordMarker { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["random", "uuid", "side_effect:region"]);
    live.deliver(completed(4, 0u64))?;
    let (r, u, s): (u64, String, String) = output(&live.machine);
    assert_eq!(s, "eu-west");
    assert_eq!(SIDE_EFFECT_CALLS.with(Cell::get), 1);

    // Replaying the recorded history gives the same values without running the closure.
    let replayed = restore::<Values>(&live.history)?;
    assert_eq!(
        output::<(u64, String, String)>(&replayed),
        (r, u.clone(), s.clone())
    );
    assert_eq!(SIDE_EFFECT_CALLS.with(Cell::get), 1);

    // Values come from history, not from the seed: a history with other values (as
    // recorded by another process, another rand version) replays to those values.
    let history = HistoryBuilder::start("values", (), 42)
        .marker(1, "random", 4_217u64)
        .marker(2, "uuid", [0xABu8; 16])
        .marker(3, "side_effect:region", "from-history")
        .scheduled(4, "echo", 17u64)
        .completed(4, 0u64)
        .run_completed(())
        .build();
    let replayed = restore::<Values>(&history)?;
    assert_eq!(
        output::<(u64, String, String)>(&replayed),
        (
            4_217,
            "abababab-abab-4bab-abab-abababababab".to_owned(),
            "from-history".to_owned()
        )
    );
    assert_eq!(SIDE_EFFECT_CALLS.with(Cell::get), 1);
    Ok(())
}

workflow!(TwoIds = "two_ids", |ctx, _input: ()| -> (String, String) {
    let a = ctx.uuid();
    ctx.activity::<Echo>(1).await?;
    let b = ctx.uuid();
    Ok((a.to_string(), b.to_string()))
});

/// 1 RunStarted, 2 MarkerRecorded 1 uuid, 3 ActivityScheduled 2; the worker crashes
/// here and its replacement restores events 1-3; 4 ActivityCompleted 2,
/// 5 MarkerRecorded 3 uuid, 6 RunCompleted.
#[test]
fn values_drawn_after_a_restore_match_an_uninterrupted_run_and_do_not_repeat() -> TestResult {
    let (mut straight, _) = Live::start::<TwoIds>(&(), 9)?;
    straight.deliver(completed(2, 1u64))?;
    let (a, b): (String, String) = output(&straight.machine);
    assert_ne!(a, b, "two uuids of one run must differ");

    let (mut recovered, issued) = Live::restore::<TwoIds>(&straight.history[..3])?;
    assert_eq!(issued, vec![]);
    recovered.deliver(completed(2, 1u64))?;
    assert_eq!(output::<(String, String)>(&recovered.machine), (a, b));
    assert_eq!(recovered.history, straight.history);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Versioning
// ---------------------------------------------------------------------------------------

workflow!(ShipV1 = "ship", |ctx, _input: ()| -> u64 {
    let a = ctx.activity::<Echo>(1).await?;
    let b = ctx.activity::<Echo>(a).await?;
    Ok(b)
});

workflow!(ShipV2 = "ship", |ctx, _input: ()| -> u64 {
    let a = ctx.activity::<Echo>(1).await?;
    let b = if ctx.patched("double") {
        ctx.activity::<Echo>(a * 2).await?
    } else {
        ctx.activity::<Echo>(a).await?
    };
    Ok(b)
});

workflow!(ShipV3 = "ship", |ctx, _input: ()| -> u64 {
    let a = ctx.activity::<Echo>(1).await?;
    ctx.deprecate_patch("double");
    let b = ctx.activity::<Echo>(a * 2).await?;
    Ok(b)
});

fn patch_marker() -> Command {
    Command::RecordMarker {
        name: "patch:double".into(),
        value: Payload::default(),
    }
}

/// New run of v2: 1 RunStarted, 2 ActivityScheduled 1, 3 ActivityCompleted 1 (3),
/// 4 MarkerRecorded 2 patch:double, 5 ActivityScheduled 3 echo(6).
#[test]
fn patched_is_true_for_a_new_run_and_records_its_marker() -> TestResult {
    let (mut live, _) = Live::start::<ShipV2>(&(), 1)?;
    assert_eq!(
        live.deliver(completed(1, 3u64))?,
        numbered(vec![(2, patch_marker()), (3, schedule("echo", 6u64))])
    );
    live.deliver(completed(3, 6u64))?;
    assert_eq!(output::<u64>(&live.machine), 6);

    // The recorded marker makes replay take the new branch again.
    let report = replayer::<ShipV2>().replay(identity(), &live.history)?;
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc(&6u64)));
    Ok(())
}

/// History of v1: 1 RunStarted, 2 ActivityScheduled 1 echo(1), 3 ActivityCompleted 1 (3),
/// 4 ActivityScheduled 2 echo(3), 5 ActivityCompleted 2 (3), 6 RunCompleted 3.
/// Replayed by v2 (`if ctx.patched("double") { echo(a * 2) } else { echo(a) }`).
#[test]
fn patched_is_false_when_replaying_a_history_recorded_before_the_patch() -> TestResult {
    let history = HistoryBuilder::start("ship", (), 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 3u64)
        .scheduled(2, "echo", 3u64)
        .completed(2, 3u64)
        .run_completed(3u64)
        .build();
    let (mut v1, _) = Live::start::<ShipV1>(&(), 1)?;
    v1.deliver(completed(1, 3u64))?;
    v1.deliver(completed(2, 3u64))?;
    assert_eq!(kinds(&v1.history), kinds(&history));
    let report = replayer::<ShipV2>().replay(identity(), &v1.history)?;
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc(&3u64)));
    let report = replayer::<ShipV2>().replay(identity(), &history)?;
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc(&3u64)));
    // v3 dropped the old branch: that history no longer replays, by design.
    let err = restore::<ShipV3>(&history).expect_err("v3 has no old branch");
    assert!(
        matches!(
            err,
            ReplayError::Nondeterminism {
                seq: CommandSeq(2),
                ..
            }
        ),
        "{err:?}"
    );
    Ok(())
}

/// History of v1 that is still in flight: 1 RunStarted, 2 ActivityScheduled 1. v2 is
/// deployed; the run reaches the patch point live, so it takes the new branch:
/// 3 ActivityCompleted 1 (3), 4 MarkerRecorded 2 patch:double, 5 ActivityScheduled 3.
#[test]
fn patched_is_true_when_an_old_run_reaches_the_patch_after_its_history_ends() -> TestResult {
    let history = HistoryBuilder::start("ship", (), 1)
        .scheduled(1, "echo", 1u64)
        .build();
    let (mut live, issued) = Live::restore::<ShipV2>(&history)?;
    assert_eq!(issued, vec![]);
    assert_eq!(
        live.deliver(completed(1, 3u64))?,
        numbered(vec![(2, patch_marker()), (3, schedule("echo", 6u64))])
    );
    Ok(())
}

workflow!(TotalV1 = "total", |ctx, _input: ()| -> u64 {
    let a = ctx.activity::<Echo>(1).await?;
    Ok(a)
});

workflow!(TotalV2 = "total", |ctx, _input: ()| -> u64 {
    let a = ctx.activity::<Echo>(1).await?;
    if ctx.patched("plus-one") {
        Ok(a + 1)
    } else {
        Ok(a)
    }
});

/// History of v1 (`Ok(echo(1))`): 1 RunStarted, 2 ActivityScheduled 1,
/// 3 ActivityCompleted 1 (5), 4 RunCompleted 5. v2 adds `if ctx.patched("plus-one")
/// { a + 1 }` after the last command: replay must take the old branch, since history
/// shows the run completed without reaching the patch.
#[test]
fn patched_is_false_when_the_old_history_finished_right_after_the_patch_point() -> TestResult {
    let history = HistoryBuilder::start("total", (), 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 5u64)
        .run_completed(5u64)
        .build();
    let v1 = replayer::<TotalV1>().replay(identity(), &history)?;
    assert_eq!(v1.outcome, ReplayOutcome::Completed(enc(&5u64)));
    let v2 = replayer::<TotalV2>().replay(identity(), &history)?;
    assert_eq!(v2.outcome, ReplayOutcome::Completed(enc(&5u64)));
    Ok(())
}

/// v3 replaces the patch with `ctx.deprecate_patch("double")`. A history of v2 (with
/// the marker at command 2) still replays; a new run records no marker, so its second
/// activity is command 2.
#[test]
fn deprecate_patch_replays_marked_histories_and_records_nothing_new() -> TestResult {
    let marked = HistoryBuilder::start("ship", (), 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 3u64)
        .marker(2, "patch:double", ())
        .scheduled(3, "echo", 6u64)
        .completed(3, 6u64)
        .run_completed(6u64)
        .build();
    // The marker is encoded as a unit here; its value is never read.
    let report = replayer::<ShipV3>().replay(identity(), &marked)?;
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc(&6u64)));

    let (mut live, _) = Live::start::<ShipV3>(&(), 1)?;
    assert_eq!(
        live.deliver(completed(1, 3u64))?,
        numbered(vec![(2, schedule("echo", 6u64))])
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Non-determinism
// ---------------------------------------------------------------------------------------

/// History (old code: `ctx.activity::<Charge>("card-1")`):
///   1 RunStarted
///   2 ActivityScheduled 1 charge("card-1")
///   3 ActivityCompleted 1
///   4 RunCompleted
/// New code: `ctx.activity::<Refund>("card-1")`.
/// Expected: Nondeterminism at command 1, history has charge, the code issued refund.
#[test]
fn a_different_activity_name_is_nondeterminism_at_its_command() {
    workflow!(PayV2 = "pay", |ctx, _input: ()| -> String {
        Ok(ctx.activity::<Refund>("card-1".into()).await?)
    });
    let history = HistoryBuilder::start("pay", (), 1)
        .scheduled(1, "charge", "card-1")
        .completed(1, "receipt")
        .run_completed("receipt")
        .build();
    match restore::<PayV2>(&history) {
        Err(ReplayError::Nondeterminism {
            seq,
            recorded,
            issued,
        }) => {
            assert_eq!(seq, CommandSeq(1));
            assert_eq!(recorded, activity_summary("charge", "card-1"));
            assert_eq!(issued, activity_summary("refund", "card-1"));
        }
        other => panic!("expected Nondeterminism, got {other:?}"),
    }
}

/// History (old code: `ctx.activity::<Charge>("card-1")`):
///   1 RunStarted
///   2 ActivityScheduled 1 charge("card-1")
/// New code: `ctx.activity::<Charge>("card-2")`.
/// Expected: Nondeterminism at command 1 naming both input digests.
#[test]
fn a_different_activity_input_is_nondeterminism_at_its_command() {
    workflow!(PayV2 = "pay", |ctx, _input: ()| -> String {
        Ok(ctx.activity::<Charge>("card-2".into()).await?)
    });
    let history = HistoryBuilder::start("pay", (), 1)
        .scheduled(1, "charge", "card-1")
        .build();
    match restore::<PayV2>(&history) {
        Err(ReplayError::Nondeterminism {
            seq,
            recorded,
            issued,
        }) => {
            assert_eq!(seq, CommandSeq(1));
            assert_eq!(recorded, activity_summary("charge", "card-1"));
            assert_eq!(issued, activity_summary("charge", "card-2"));
            assert_ne!(recorded.input_digest, issued.input_digest);
        }
        other => panic!("expected Nondeterminism, got {other:?}"),
    }
}

/// History (old code: `echo(1); ctx.sleep(60s)`):
///   1 RunStarted
///   2 ActivityScheduled 1 echo(1)
///   3 ActivityCompleted 1
///   4 TimerStarted 2 (60000ms)
/// New code: `echo(1); ctx.sleep(120s)`.
/// Expected: Nondeterminism at command 2: StartTimer "60000ms" vs "120000ms".
#[test]
fn a_different_timer_duration_is_nondeterminism_at_its_command() {
    workflow!(WaitV2 = "wait", |ctx, _input: ()| -> () {
        ctx.activity::<Echo>(1).await?;
        ctx.sleep(Duration::from_secs(120)).await;
        Ok(())
    });
    let history = HistoryBuilder::start("wait", (), 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 1u64)
        .timer_started(2, 60_000)
        .build();
    match restore::<WaitV2>(&history) {
        Err(ReplayError::Nondeterminism {
            seq,
            recorded,
            issued,
        }) => {
            assert_eq!(seq, CommandSeq(2));
            assert_eq!(recorded, timer_summary(60_000));
            assert_eq!(issued, timer_summary(120_000));
        }
        other => panic!("expected Nondeterminism, got {other:?}"),
    }
}

/// History (old code: `echo(1); echo(2)`):
///   1 RunStarted
///   2 ActivityScheduled 1 echo(1)
///   3 ActivityCompleted 1
///   4 ActivityScheduled 2 echo(2)
///   5 ActivityCompleted 2
///   6 RunCompleted
/// New code: `echo(1)` and return.
/// Expected: MissingCommand at command 2, event 4.
#[test]
fn a_missing_command_is_reported_with_its_number_and_event() {
    workflow!(TwoV2 = "two", |ctx, _input: ()| -> u64 {
        Ok(ctx.activity::<Echo>(1).await?)
    });
    let history = HistoryBuilder::start("two", (), 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 1u64)
        .scheduled(2, "echo", 2u64)
        .completed(2, 2u64)
        .run_completed(2u64)
        .build();
    match restore::<TwoV2>(&history) {
        Err(ReplayError::MissingCommand {
            seq,
            event,
            recorded,
        }) => {
            assert_eq!(seq, CommandSeq(2));
            assert_eq!(event, EventId(4));
            assert_eq!(recorded, activity_summary("echo", 2u64));
        }
        other => panic!("expected MissingCommand, got {other:?}"),
    }
}

/// History (old code: `join!(echo(1), echo(2))`):
///   1 RunStarted
///   2 ActivityScheduled 1 echo(1)
///   3 ActivityScheduled 2 echo(2)
/// New code: `echo(1).await; echo(2).await` (the second is issued only later).
/// Expected: MissingCommand at command 2, event 3.
#[test]
fn a_command_issued_later_than_history_recorded_it_is_missing() {
    workflow!(BothV2 = "both", |ctx, _input: ()| -> u64 {
        let a = ctx.activity::<Echo>(1).await?;
        let b = ctx.activity::<Echo>(2).await?;
        Ok(a + b)
    });
    let history = HistoryBuilder::start("both", (), 1)
        .scheduled(1, "echo", 1u64)
        .scheduled(2, "echo", 2u64)
        .build();
    match restore::<BothV2>(&history) {
        Err(ReplayError::MissingCommand { seq, event, .. }) => {
            assert_eq!(seq, CommandSeq(2));
            assert_eq!(event, EventId(3));
        }
        other => panic!("expected MissingCommand, got {other:?}"),
    }
}

/// History (old code: `echo(1); sleep(60s)`):
///   1 RunStarted
///   2 ActivityScheduled 1 echo(1)
///   3 ActivityCompleted 1
///   4 TimerStarted 2 (60000ms)
///   5 TimerFired 2
///   6 RunCompleted
/// New code: `echo(1); echo(99); sleep(60s)` (an extra command in the middle).
/// Expected: Nondeterminism at command 2: history has the timer, the code issued echo.
#[test]
fn an_extra_command_in_the_middle_is_nondeterminism_at_its_number() {
    workflow!(StepsV2 = "steps", |ctx, _input: ()| -> () {
        ctx.activity::<Echo>(1).await?;
        ctx.activity::<Echo>(99).await?;
        ctx.sleep(Duration::from_secs(60)).await;
        Ok(())
    });
    let history = HistoryBuilder::start("steps", (), 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 1u64)
        .timer_started(2, 60_000)
        .timer_fired(2)
        .run_completed(())
        .build();
    match restore::<StepsV2>(&history) {
        Err(ReplayError::Nondeterminism {
            seq,
            recorded,
            issued,
        }) => {
            assert_eq!(seq, CommandSeq(2));
            assert_eq!(recorded, timer_summary(60_000));
            assert_eq!(issued, activity_summary("echo", 99u64));
        }
        other => panic!("expected Nondeterminism, got {other:?}"),
    }
}

/// History (old code: `echo(1)` and return):
///   1 RunStarted
///   2 ActivityScheduled 1 echo(1)
///   3 ActivityCompleted 1
///   4 RunCompleted
/// New code: `echo(1); echo(2)` (an extra command where history has none).
/// Expected: ExtraCommand at command 2, noticed at event 4.
#[test]
fn an_extra_command_after_the_last_recorded_one_is_reported_with_its_number() {
    workflow!(OneV2 = "one", |ctx, _input: ()| -> u64 {
        let a = ctx.activity::<Echo>(1).await?;
        Ok(a + ctx.activity::<Echo>(2).await?)
    });
    let history = HistoryBuilder::start("one", (), 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 1u64)
        .run_completed(1u64)
        .build();
    match restore::<OneV2>(&history) {
        Err(ReplayError::ExtraCommand {
            seq,
            event,
            issued,
            recorded,
        }) => {
            assert_eq!(seq, CommandSeq(2));
            assert_eq!(event, EventId(4));
            assert_eq!(issued, activity_summary("echo", 2u64));
            assert_eq!(recorded, "RunCompleted");
        }
        other => panic!("expected ExtraCommand, got {other:?}"),
    }
}

/// History (old code: `echo(1)` and return): as above.
/// New code: `echo(1); ctx.random::<u64>()` and return: the extra command does not wait,
/// so the code still finishes; replay must not call that a clean replay.
/// Expected: ExtraCommand at command 2 (RecordMarker "random"), noticed at event 4.
#[test]
fn an_extra_marker_before_completion_is_not_a_clean_replay() {
    workflow!(OneV2 = "one", |ctx, _input: ()| -> u64 {
        let a = ctx.activity::<Echo>(1).await?;
        let _salt: u64 = ctx.random();
        Ok(a)
    });
    let history = HistoryBuilder::start("one", (), 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 1u64)
        .run_completed(1u64)
        .build();
    match replayer::<OneV2>().replay(identity(), &history) {
        Err(ReplayError::ExtraCommand {
            seq, event, issued, ..
        }) => {
            assert_eq!(seq, CommandSeq(2));
            assert_eq!(event, EventId(4));
            assert_eq!(issued.kind, "RecordMarker");
            assert_eq!(issued.name, "random");
        }
        other => panic!("expected ExtraCommand, got {other:?}"),
    }
}

/// History (old code: `join!(echo(1), sleep(60s))`, then return):
///   1 RunStarted
///   2 ActivityScheduled 1 echo(1)
///   3 TimerStarted 2 (60000ms)
///   4 ActivityCompleted 1
///   5 TimerFired 2
///   6 RunCompleted
/// New code: `select(echo(1), sleep(60s))`, then return: it finishes at event 4.
/// Expected: EarlyFinish at event 5 (TimerFired).
#[test]
fn code_that_finishes_before_history_does_is_an_early_finish() {
    workflow!(RaceV2 = "race2", |ctx, _input: ()| -> u64 {
        let call = ctx.activity::<Echo>(1);
        let timer = ctx.sleep(Duration::from_secs(60));
        match futures::future::select(call, timer).await {
            Either::Left((r, _)) => Ok(r?),
            Either::Right(_) => Ok(0),
        }
    });
    let history = HistoryBuilder::start("race2", (), 1)
        .scheduled(1, "echo", 1u64)
        .timer_started(2, 60_000)
        .completed(1, 1u64)
        .timer_fired(2)
        .run_completed(1u64)
        .build();
    match restore::<RaceV2>(&history) {
        Err(ReplayError::EarlyFinish { event, recorded }) => {
            assert_eq!(event, EventId(5));
            assert_eq!(recorded, "TimerFired");
        }
        other => panic!("expected EarlyFinish, got {other:?}"),
    }
}

/// History (old code: `select(echo(1), echo(2))`, then return):
///   1 RunStarted
///   2 ActivityScheduled 1 echo(1)
///   3 ActivityScheduled 2 echo(2)
///   4 ActivityCompleted 1
///   5 RunCompleted
/// New code: `join!(echo(1), echo(2))`: still waiting for command 2 at event 5.
/// Expected: UnfinishedRun at event 5, "completed".
#[test]
fn history_that_records_completion_while_the_code_waits_is_an_unfinished_run() {
    workflow!(EitherV2 = "either", |ctx, _input: ()| -> u64 {
        let (a, b) = futures::join!(ctx.activity::<Echo>(1), ctx.activity::<Echo>(2));
        Ok(a? + b?)
    });
    let history = HistoryBuilder::start("either", (), 1)
        .scheduled(1, "echo", 1u64)
        .scheduled(2, "echo", 2u64)
        .completed(1, 1u64)
        .run_completed(1u64)
        .build();
    match restore::<EitherV2>(&history) {
        Err(ReplayError::UnfinishedRun { event, recorded }) => {
            assert_eq!(event, EventId(5));
            assert_eq!(recorded, "completed");
        }
        other => panic!("expected UnfinishedRun, got {other:?}"),
    }
}

/// History: the run failed at its only activity (`echo` failed for good).
/// New code: catches the failure and completes with a default.
/// Expected: DifferentOutcome at the terminal event.
#[test]
fn code_that_completes_where_history_failed_is_a_different_outcome() {
    workflow!(Tolerant = "tolerant", |ctx, _input: ()| -> u64 {
        Ok(ctx.activity::<Echo>(1).await.unwrap_or(0))
    });
    let error = WorkflowError::new("Declined", "card expired");
    let history = HistoryBuilder::start("tolerant", (), 1)
        .scheduled(1, "echo", 1u64)
        .push(EventKind::ActivityFailed {
            seq: CommandSeq(1),
            error: ActivityError::non_retryable("Declined", "card expired").with_attempts(1),
        })
        .push(EventKind::RunFailed { error })
        .build();
    match restore::<Tolerant>(&history) {
        Err(ReplayError::DifferentOutcome {
            event,
            recorded,
            code,
        }) => {
            assert_eq!(event, EventId(4));
            assert_eq!(recorded, "failed (Declined: card expired)");
            assert_eq!(code, "completed");
        }
        other => panic!("expected DifferentOutcome, got {other:?}"),
    }
    let same = HistoryBuilder::start("tolerant", (), 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 5u64)
        .run_completed(5u64)
        .build();
    assert!(
        restore::<Tolerant>(&same).is_ok(),
        "the same outcome replays"
    );
}

#[test]
fn divergence_errors_say_where_and_what() {
    let err = ReplayError::Nondeterminism {
        seq: CommandSeq(2),
        recorded: timer_summary(60_000),
        issued: timer_summary(120_000),
    };
    assert_eq!(
        err.to_string(),
        "non-determinism at command 2: history has StartTimer \"60000ms\", the code issued \
         StartTimer \"120000ms\""
    );
    assert!(err.is_nondeterminism());
    let extra = ReplayError::ExtraCommand {
        seq: CommandSeq(2),
        event: EventId(4),
        issued: timer_summary(1_000),
        recorded: "RunCompleted".into(),
    };
    assert!(extra.is_nondeterminism());
    assert_eq!(
        extra.to_string(),
        "non-determinism at command 2: the code issued StartTimer \"1000ms\", history has no \
         command there (event 4 is RunCompleted)"
    );
}

// ---------------------------------------------------------------------------------------
// Panics and tokio
// ---------------------------------------------------------------------------------------

const TOKIO_HINT: &str = " (workflow code runs on durable's deterministic executor, not on \
                          tokio: use ctx.sleep(..) instead of tokio timers and futures::join! \
                          instead of spawning)";

workflow!(Boom = "boom", |ctx, n: u64| -> u64 {
    let a = ctx.activity::<Echo>(n).await?;
    if a == 42 {
        panic!("boom at {a}");
    }
    Ok(a)
});

/// 1 RunStarted, 2 ActivityScheduled 1, 3 ActivityCompleted 1 (42): the code panics.
#[test]
fn a_panic_in_workflow_code_is_reported_with_its_message() -> TestResult {
    let (mut live, _) = Live::start::<Boom>(&1, 1)?;
    match live.deliver(completed(1, 42u64)) {
        Err(ReplayError::Panicked { message }) => assert_eq!(message, "boom at 42"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    // Replay of the same history fails the same way, and nothing is appended.
    let history = HistoryBuilder::start("boom", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 42u64)
        .build();
    match restore::<Boom>(&history) {
        Err(ReplayError::Panicked { message }) => assert_eq!(message, "boom at 42"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    Ok(())
}

workflow!(TokioSleep = "tokio_sleep", |_ctx, _input: ()| -> () {
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
});

workflow!(TokioSpawn = "tokio_spawn", |_ctx, _input: ()| -> () {
    let _task = tokio::spawn(async {});
    Ok(())
});

#[test]
fn tokio_timers_in_workflow_code_fail_with_a_hint_about_ctx_sleep() {
    match Live::start::<TokioSleep>(&(), 1) {
        Err(ReplayError::Panicked { message }) => {
            assert!(message.contains("Tokio 1.x runtime"), "{message}");
            assert!(message.ends_with(TOKIO_HINT), "{message}");
        }
        Err(other) => panic!("expected Panicked, got {other:?}"),
        Ok(_) => panic!("expected Panicked, the code ran"),
    }
}

#[test]
fn tokio_spawn_in_workflow_code_fails_with_the_same_hint() {
    match Live::start::<TokioSpawn>(&(), 1) {
        Err(ReplayError::Panicked { message }) => {
            assert!(message.ends_with(TOKIO_HINT), "{message}");
        }
        Err(other) => panic!("expected Panicked, got {other:?}"),
        Ok(_) => panic!("expected Panicked, the code ran"),
    }
}

workflow!(Spin = "spin", |_ctx, _input: ()| -> () {
    loop {
        YieldTimes(1).await;
    }
});

#[test]
fn code_that_wakes_itself_forever_fails_the_activation_instead_of_hanging() {
    match Live::start::<Spin>(&(), 1) {
        Err(ReplayError::Panicked { message }) => {
            assert!(
                message.contains("without waiting on anything durable"),
                "{message}"
            );
        }
        Err(other) => panic!("expected Panicked, got {other:?}"),
        Ok(_) => panic!("expected Panicked, the code returned"),
    }
}

// ---------------------------------------------------------------------------------------
// Malformed histories
// ---------------------------------------------------------------------------------------

fn expect_malformed(result: Result<RunMachine, ReplayError>, at: u64, reason_has: &str) {
    match result {
        Err(ReplayError::Malformed { event, reason }) => {
            assert_eq!(event, EventId(at), "{reason}");
            assert!(
                reason.contains(reason_has),
                "{reason:?} lacks {reason_has:?}"
            );
        }
        Err(other) => panic!("expected Malformed at event {at}, got {other:?}"),
        Ok(_) => panic!("expected Malformed at event {at}, the history replayed"),
    }
}

/// 1 RunStarted, 2 ActivityScheduled 1, 4 ActivityCompleted 1 (event 3 is missing).
#[test]
fn a_gap_in_event_ids_is_malformed() {
    let mut history = HistoryBuilder::start("sequential", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 1u64)
        .build();
    history[2].id = EventId(4);
    expect_malformed(restore::<Sequential>(&history), 4, "expected event 3");
}

/// 1 RunStarted, 2 ActivityScheduled 1, 2 ActivityCompleted 1 (a repeated number).
#[test]
fn a_repeated_event_id_is_malformed() {
    let mut history = HistoryBuilder::start("sequential", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 1u64)
        .build();
    history[2].id = EventId(2);
    expect_malformed(restore::<Sequential>(&history), 2, "expected event 3");
}

/// 1 TimerFired 1: no RunStarted.
#[test]
fn a_history_that_does_not_start_with_run_started_is_malformed() {
    let history = vec![Event {
        id: EventId(1),
        time_ms: T0,
        kind: fired(1),
    }];
    expect_malformed(
        restore::<Sequential>(&history),
        1,
        "history starts with TimerFired, not RunStarted",
    );
    match replayer::<Sequential>().replay(identity(), &history) {
        Err(ReplayError::Malformed { event, .. }) => assert_eq!(event, EventId(1)),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn an_empty_history_is_malformed() {
    expect_malformed(restore::<Sequential>(&[]), 1, "empty");
    match replayer::<Sequential>().replay(identity(), &[]) {
        Err(ReplayError::Malformed { event, .. }) => assert_eq!(event, EventId(1)),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

/// 2 RunStarted: the start event is not number 1.
#[test]
fn a_run_started_event_not_numbered_one_is_malformed() {
    let mut history = HistoryBuilder::start("sequential", 1u64, 1).build();
    history[0].id = EventId(2);
    expect_malformed(restore::<Sequential>(&history), 2, "must be number 1");
}

/// 1 RunStarted, 2 ActivityScheduled 1, 3 RunStarted.
#[test]
fn a_second_run_started_is_malformed() {
    let history = HistoryBuilder::start("sequential", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .push(EventKind::RunStarted {
            workflow: "sequential".into(),
            input: enc(&1u64),
            seed: 1,
        })
        .build();
    expect_malformed(restore::<Sequential>(&history), 3, "second RunStarted");
}

/// 1 RunStarted, 2 ActivityScheduled 1, 3 ActivityCompleted 7 (never issued).
#[test]
fn a_completion_for_a_command_never_issued_is_malformed() {
    let history = HistoryBuilder::start("sequential", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(7, 1u64)
        .build();
    expect_malformed(restore::<Sequential>(&history), 3, "command 7");
}

/// 1 RunStarted, 2-4 ActivityScheduled 1-3, 5 ActivityCompleted 1, 6 ActivityCompleted 1.
#[test]
fn a_duplicate_completion_is_malformed() {
    let history = HistoryBuilder::start("join_three", (), 1)
        .scheduled(1, "echo", 10u64)
        .scheduled(2, "echo", 20u64)
        .scheduled(3, "echo", 30u64)
        .completed(1, 11u64)
        .completed(1, 11u64)
        .build();
    expect_malformed(restore::<JoinThree>(&history), 6, "command 1");
}

/// 1 RunStarted, 2 TimerStarted 1 (90s), 3 ActivityCompleted 1: an activity result for
/// a timer.
#[test]
fn an_answer_of_the_wrong_kind_is_malformed() {
    let history = HistoryBuilder::start("nap", (), 1)
        .timer_started(1, 90_000)
        .completed(1, 5u64)
        .build();
    expect_malformed(restore::<Nap>(&history), 3, "command 1");

    // 1 RunStarted, 2 ActivityScheduled 1, 3 TimerFired 1: a timer firing for an activity.
    let history = HistoryBuilder::start("sequential", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .timer_fired(1)
        .build();
    expect_malformed(restore::<Sequential>(&history), 3, "command 1");
}

/// 1 RunStarted, 2-4 ActivityScheduled 1-3, then command 1 recorded a second time at 5.
#[test]
fn a_command_number_recorded_twice_is_malformed() {
    let history = HistoryBuilder::start("join_three", (), 1)
        .scheduled(1, "echo", 10u64)
        .scheduled(2, "echo", 20u64)
        .scheduled(3, "echo", 30u64)
        .scheduled(1, "echo", 10u64)
        .build();
    expect_malformed(restore::<JoinThree>(&history), 5, "command 1");
}

/// 1 RunStarted, 2 TimerStarted 1, 3 TimerFired 1, 4 RunCompleted, 5 SignalReceived.
#[test]
fn an_event_after_the_run_finished_is_malformed() {
    let live_history = {
        let (mut live, _) = Live::start::<Nap>(&(), 1).expect("starts");
        live.deliver(fired(1)).expect("fires");
        live.history
    };
    let mut history = live_history.clone();
    history.push(Event {
        id: EventId(5),
        time_ms: T0 + 10 * STEP_MS,
        kind: signal("late", 1u32),
    });
    expect_malformed(restore::<Nap>(&history), 5, "finished");

    let mut history = live_history;
    history.push(Event {
        id: EventId(5),
        time_ms: T0 + 10 * STEP_MS,
        kind: EventKind::RunCompleted {
            output: enc(&(T0, T0)),
        },
    });
    expect_malformed(restore::<Nap>(&history), 5, "finished");
}

#[test]
fn a_history_of_another_workflow_is_refused() {
    let history = HistoryBuilder::start("nap", (), 1).build();
    expect_malformed(restore::<Sequential>(&history), 1, "\"nap\"");
    match replayer::<Sequential>().replay(identity(), &history) {
        Err(ReplayError::UnknownWorkflow { name }) => assert_eq!(name, "nap"),
        other => panic!("expected UnknownWorkflow, got {other:?}"),
    }
}

/// 1 RunStarted, 2 MarkerRecorded 1 random (a string, not a u64).
#[test]
fn an_unreadable_recorded_value_is_corrupt_history() {
    let history = HistoryBuilder::start("values", (), 1)
        .marker(1, "random", "not a number")
        .build();
    match restore::<Values>(&history) {
        Err(ReplayError::Corrupt { run, event, .. }) => {
            assert_eq!(run, RunId("run-1".into()));
            assert_eq!(event, EventId(2));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// In-flight history: 1 RunStarted, 2 ActivityScheduled 1, 3 ActivityCompleted 1,
/// 4 ActivityScheduled 2. The replayer reports what the code waits for.
#[test]
fn the_replayer_reports_an_in_flight_run_as_waiting() -> TestResult {
    let history = HistoryBuilder::start("sequential", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 1u64)
        .scheduled(2, "echo", 2u64)
        .build();
    let report = replayer::<Sequential>().replay(identity(), &history)?;
    assert_eq!(report.outcome, ReplayOutcome::Waiting(vec![CommandSeq(2)]));

    // A history holding only the start: the first activation's commands are new.
    let history = HistoryBuilder::start("sequential", 1u64, 1).build();
    let report = replayer::<Sequential>().replay(identity(), &history)?;
    assert_eq!(
        report.outcome,
        ReplayOutcome::WouldContinue {
            commands: numbered(vec![(1, schedule("echo", 1u64))]),
            finished: None,
        }
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Property: recorded runs replay to the same commands and outcome
// ---------------------------------------------------------------------------------------

workflow!(FanOut = "fan_out", |ctx, width: u64| -> u64 {
    let salt: u64 = ctx.random::<u64>() % 7;
    let calls = (0..width).map(|i| ctx.activity::<Echo>(i + salt));
    let mut total = 0;
    for result in futures::future::join_all(calls).await {
        match result {
            Ok(v) => total += v,
            Err(e) if e.is("Declined") => total += 100,
            Err(e) => return Err(e.into()),
        }
    }
    let bonus = ctx
        .signal_timeout::<u64>("bonus", Duration::from_secs(30))
        .await?;
    total += bonus.unwrap_or(0);
    if total % 2 == 0 {
        ctx.sleep(Duration::from_secs(5)).await;
    }
    let id = ctx.uuid();
    let last = match futures::future::select(ctx.activity::<Echo>(total), ctx.signal::<u64>("skip"))
        .await
    {
        Either::Left((r, _)) => r?,
        Either::Right((s, _)) => s?,
    };
    Ok(total + last + u64::from(id.as_bytes()[0]))
});

/// A xorshift64 source, enough to pick interleavings reproducibly.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Mix the seed so that nearby seeds give unrelated sequences, and never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        XorShift((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick(&mut self, len: usize) -> usize {
        let n = u64::try_from(len).expect("small");
        usize::try_from(self.below(n)).expect("below len")
    }
}

/// What the outside world can still do to a run: answer an activity, fire a timer.
#[derive(Default)]
struct World {
    activities: Vec<u32>,
    timers: Vec<u32>,
}

impl World {
    fn learn(&mut self, issued: &Issued) {
        for (seq, command) in issued {
            match command {
                Command::ScheduleActivity { .. } => self.activities.push(seq.0),
                Command::StartTimer { .. } => self.timers.push(seq.0),
                _ => {}
            }
        }
    }

    fn next_event(&mut self, rng: &mut XorShift) -> EventKind {
        loop {
            match rng.below(3) {
                0 if !self.activities.is_empty() => {
                    let seq = self.activities.swap_remove(rng.pick(self.activities.len()));
                    return match rng.below(20) {
                        0 => failed(seq, ActivityError::non_retryable("Boom", "gave up")),
                        1..=4 => failed(seq, ActivityError::non_retryable("Declined", "no")),
                        _ => completed(seq, rng.below(10)),
                    };
                }
                1 if !self.timers.is_empty() => {
                    return fired(self.timers.swap_remove(rng.pick(self.timers.len())));
                }
                2 => {
                    let name = ["bonus", "skip", "noise"][rng.pick(3)];
                    return signal(name, rng.below(5));
                }
                _ => {}
            }
        }
    }
}

/// One random interleaving: run live, then check the recorded history.
fn interleaving_case(seed: u64) -> Result<(), String> {
    let mut rng = XorShift::new(seed);
    let width = 1 + rng.below(4);
    let run_seed = rng.next();
    let (mut live, first) =
        Live::start::<FanOut>(&width, run_seed).map_err(|e| format!("start: {e}"))?;
    let mut world = World::default();
    world.learn(&first);
    // Activation boundaries: where a worker could have committed and crashed.
    let mut boundaries = vec![live.history.len()];
    for _ in 0..200 {
        if live.machine.is_finished() {
            break;
        }
        let event = world.next_event(&mut rng);
        let issued = live
            .deliver(event)
            .map_err(|e| format!("live activation: {e}"))?;
        world.learn(&issued);
        boundaries.push(live.history.len());
    }
    let history = &live.history;
    if !ids_are_contiguous(history) {
        return Err(format!("event ids are not contiguous: {history:?}"));
    }

    // The full history replays to the same outcome, with nothing new to append.
    let mut replayed = restore::<FanOut>(history).map_err(|e| format!("replay: {e}"))?;
    let extra = replayed.take_commands();
    if !extra.is_empty() {
        return Err(format!("replay issued commands history lacks: {extra:?}"));
    }
    if replayed.outcome() != live.machine.outcome() {
        return Err(format!(
            "replay outcome {:?} differs from the live outcome {:?}",
            replayed.outcome(),
            live.machine.outcome()
        ));
    }
    if replayed.pending() != live.machine.pending() {
        return Err(format!(
            "replay waits for {:?}, the live run for {:?}",
            replayed.pending(),
            live.machine.pending()
        ));
    }

    // A worker that crashed after any activation and was replaced by one that restores
    // and applies the same inbound events records exactly the same history.
    let cut = boundaries[rng.pick(boundaries.len())];
    let (mut recovered, issued) =
        Live::restore::<FanOut>(&history[..cut]).map_err(|e| format!("restore at {cut}: {e}"))?;
    if !issued.is_empty() {
        return Err(format!("restore at {cut} issued {issued:?}"));
    }
    for event in &history[cut..] {
        if event.kind.is_inbound() {
            recovered
                .deliver_at(event.time_ms, event.kind.clone())
                .map_err(|e| format!("after restore at {cut}: {e}"))?;
        }
    }
    if recovered.history != *history {
        return Err(format!(
            "restored at event {cut}, the run recorded\n{:?}\ninstead of\n{:?}",
            recovered.history, history
        ));
    }
    Ok(())
}

#[test]
fn recorded_runs_replay_to_the_same_commands_and_outcome() {
    let (base, cases) = match std::env::var("DURABLE_TEST_SEED") {
        Ok(s) => (
            s.trim()
                .parse::<u64>()
                .expect("DURABLE_TEST_SEED must be a u64"),
            1,
        ),
        Err(_) => (rand::random::<u64>(), 2_000u64),
    };
    for i in 0..cases {
        let seed = base.wrapping_add(i);
        let result = std::panic::catch_unwind(|| interleaving_case(seed))
            .unwrap_or_else(|p| Err(crate::executor::panic_message(p.as_ref())));
        if let Err(msg) = result {
            panic!(
                "interleaving with seed {seed} failed: {msg}\nrerun with DURABLE_TEST_SEED={seed}"
            );
        }
    }
}

mod child;
mod continue_as_new;
mod finish_batch;
mod queues;
mod saga;
mod status;
mod timeout;
