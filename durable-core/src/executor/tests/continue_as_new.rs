//! `ctx.continue_as_new(..)`: the code ends the run with a `RunContinuedAsNew` event, and
//! replay compares the recorded ending (workflow and input) with what the code asks for.

use super::*;
use crate::executor::ContinuedAsNew;

// Bills one period per run (an activity, then a timer) and continues as new with the
// next period until `last`.
workflow!(Billing = "billing", |ctx, period: (u64, u64)| -> u64 {
    let (n, last) = period;
    ctx.activity::<Echo>(n).await?;
    ctx.sleep(Duration::from_secs(30)).await;
    if n >= last {
        return Ok(n);
    }
    ctx.continue_as_new::<Billing>((n + 1, last)).await
});

// The same workflow, changed: it skips a period.
workflow!(BillingSkips = "billing", |ctx, period: (u64, u64)| -> u64 {
    let (n, last) = period;
    ctx.activity::<Echo>(n).await?;
    ctx.sleep(Duration::from_secs(30)).await;
    ctx.continue_as_new::<BillingSkips>((n + 2, last)).await
});

// The same workflow, changed: it completes where the old code continued.
workflow!(BillingCompletes = "billing", |ctx,
                                         period: (u64, u64)|
 -> u64 {
    let (n, _last) = period;
    ctx.activity::<Echo>(n).await?;
    ctx.sleep(Duration::from_secs(30)).await;
    Ok(n)
});

// Continues at once, with a timer and an activity still pending.
workflow!(Hasty = "hasty", |ctx, n: u64| -> u64 {
    let pending = ctx.activity::<Echo>(n);
    let timer = ctx.sleep(Duration::from_secs(60));
    // Poll both once so their commands are issued, then leave them.
    let _ = futures::poll!(Box::pin(pending));
    let _ = futures::poll!(Box::pin(timer));
    ctx.continue_as_new::<Hasty>(n + 1).await
});

fn continued_event(history: &[Event]) -> (String, u64, u64, RunId) {
    match history.last().map(|e| &e.kind) {
        Some(EventKind::RunContinuedAsNew {
            workflow,
            input,
            seed,
            run_id,
            ..
        }) => (
            workflow.clone(),
            input.decode::<(u64, u64)>().expect("the input decodes").0,
            *seed,
            run_id.clone(),
        ),
        other => panic!("expected RunContinuedAsNew last, got {other:?}"),
    }
}

/// 1 RunStarted (1, 3), 2 echo(1) #1, 3 completed, 4 timer #2, 5 fired, 6 RunContinuedAsNew (2, 3).
#[test]
fn continue_as_new_ends_the_run_with_the_next_input() -> TestResult {
    let (mut live, first) = Live::start::<Billing>(&(1, 3), 7)?;
    assert_eq!(first, numbered(vec![(1, schedule("echo", 1u64))]));
    live.deliver(completed(1, 1u64))?;
    let issued = live.deliver(EventKind::TimerFired { seq: CommandSeq(2) })?;
    assert_eq!(issued, vec![], "continuing is not a command");
    assert!(live.machine.is_finished());
    assert_eq!(live.machine.outcome(), None, "no completion or failure");
    assert_eq!(
        kinds(&live.history),
        [
            "RunStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "TimerStarted",
            "TimerFired",
            "RunContinuedAsNew"
        ]
    );
    let (workflow, next, seed, run_id) = continued_event(&live.history);
    assert_eq!((workflow.as_str(), next), ("billing", 2));
    assert_eq!(run_id, RunId("run-2".into()));
    assert_ne!(seed, 7, "the next run gets a seed of its own");
    // The successor's seed is a function of the run's seed: replay derives it again.
    let (mut again, _) = Live::start::<Billing>(&(1, 3), 7)?;
    again.deliver(completed(1, 1u64))?;
    again.deliver(EventKind::TimerFired { seq: CommandSeq(2) })?;
    assert_eq!(continued_event(&again.history).2, seed);
    // Nothing may follow the end of the run.
    assert!(live.deliver(signal("late", 1u64)).is_err());
    Ok(())
}

#[test]
fn the_last_run_of_the_chain_completes() -> TestResult {
    let (mut live, _) = Live::start::<Billing>(&(3, 3), 1)?;
    live.deliver(completed(1, 3u64))?;
    live.deliver(EventKind::TimerFired { seq: CommandSeq(2) })?;
    assert_eq!(output::<u64>(&live.machine), 3);
    assert_eq!(kinds(&live.history).last(), Some(&"RunCompleted"));
    Ok(())
}

#[test]
fn a_continued_history_replays_to_its_recorded_ending() -> TestResult {
    let (mut live, _) = Live::start::<Billing>(&(1, 3), 7)?;
    live.deliver(completed(1, 1u64))?;
    live.deliver(EventKind::TimerFired { seq: CommandSeq(2) })?;
    let report = replayer::<Billing>().replay(identity(), &live.history)?;
    match report.outcome {
        ReplayOutcome::ContinuedAsNew(ContinuedAsNew {
            workflow, input, ..
        }) => {
            assert_eq!(workflow, "billing");
            assert_eq!(input.decode::<(u64, u64)>()?, (2, 3));
        }
        other => panic!("expected ContinuedAsNew, got {other:?}"),
    }
    // Cut before the ending, the replay says the code would continue now.
    let cut = &live.history[..live.history.len() - 1];
    match replayer::<Billing>().replay(identity(), cut)?.outcome {
        ReplayOutcome::WouldContinueAsNew { commands, next } => {
            assert!(commands.is_empty());
            assert_eq!(next.input.decode::<(u64, u64)>()?, (2, 3));
        }
        other => panic!("expected WouldContinueAsNew, got {other:?}"),
    }
    Ok(())
}

/// Old code continued with (2, 3); the new code continues with (3, 3).
#[test]
fn a_changed_input_to_continue_with_is_a_different_outcome() -> TestResult {
    let (mut live, _) = Live::start::<Billing>(&(1, 3), 7)?;
    live.deliver(completed(1, 1u64))?;
    live.deliver(EventKind::TimerFired { seq: CommandSeq(2) })?;
    match replayer::<BillingSkips>().replay(identity(), &live.history) {
        Err(ReplayError::DifferentOutcome {
            event,
            recorded,
            code,
        }) => {
            assert_eq!(event, EventId(6));
            assert!(recorded.starts_with("continued as new (workflow \"billing\", input "));
            assert!(code.starts_with("continued as new (workflow \"billing\", input "));
            assert_ne!(recorded, code, "the input digests differ");
        }
        other => panic!("expected DifferentOutcome, got {other:?}"),
    }
    Ok(())
}

#[test]
fn completing_where_history_continued_is_a_different_outcome() -> TestResult {
    let (mut live, _) = Live::start::<Billing>(&(1, 3), 7)?;
    live.deliver(completed(1, 1u64))?;
    live.deliver(EventKind::TimerFired { seq: CommandSeq(2) })?;
    let err = replayer::<BillingCompletes>()
        .replay(identity(), &live.history)
        .expect_err("the code completes where history continued");
    match &err {
        ReplayError::DifferentOutcome { recorded, code, .. } => {
            assert!(recorded.starts_with("continued as new"), "{recorded}");
            assert_eq!(code, "completed");
        }
        other => panic!("expected DifferentOutcome, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("history says the run continued as new")
    );
    Ok(())
}

#[test]
fn continuing_where_history_completed_is_a_different_outcome() -> TestResult {
    let (mut live, _) = Live::start::<BillingCompletes>(&(1, 3), 7)?;
    live.deliver(completed(1, 1u64))?;
    live.deliver(EventKind::TimerFired { seq: CommandSeq(2) })?;
    assert_eq!(kinds(&live.history).last(), Some(&"RunCompleted"));
    match replayer::<Billing>().replay(identity(), &live.history) {
        Err(ReplayError::DifferentOutcome { recorded, code, .. }) => {
            assert_eq!(recorded, "completed");
            assert!(code.starts_with("continued as new"), "{code}");
        }
        other => panic!("expected DifferentOutcome, got {other:?}"),
    }
    Ok(())
}

/// History continues the run where the code is still waiting on its timer.
#[test]
fn a_recorded_continue_the_code_has_not_reached_is_an_unfinished_run() -> TestResult {
    let history = HistoryBuilder::start("billing", (1u64, 3u64), 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 1u64)
        .timer_started(2, 30_000)
        .push(EventKind::RunContinuedAsNew {
            workflow: "billing".into(),
            input: enc(&(2u64, 3u64)),
            seed: 1,
            run_id: RunId("run-2".into()),
            signals: Vec::new(),
        })
        .build();
    match replayer::<Billing>().replay(identity(), &history) {
        Err(ReplayError::UnfinishedRun { recorded, .. }) => {
            assert!(recorded.starts_with("continued as new"), "{recorded}");
        }
        other => panic!("expected UnfinishedRun, got {other:?}"),
    }
    Ok(())
}

#[test]
fn pending_commands_are_dropped_when_the_run_continues() -> TestResult {
    let (live, issued) = Live::start::<Hasty>(&1, 1)?;
    assert_eq!(
        issued,
        numbered(vec![(1, schedule("echo", 1u64)), (2, start_timer(60_000))])
    );
    assert_eq!(
        kinds(&live.history),
        [
            "RunStarted",
            "ActivityScheduled",
            "TimerStarted",
            "RunContinuedAsNew"
        ]
    );
    assert!(live.machine.is_finished());
    // And the history replays to the same ending.
    let report = replayer::<Hasty>().replay(identity(), &live.history)?;
    assert!(matches!(report.outcome, ReplayOutcome::ContinuedAsNew(_)));
    Ok(())
}

// Waits for `go`, then continues as new; `extra` signals are never waited for, and a
// `maybe` wait loses a select to a timer after it was handed a signal.
workflow!(Busy = "busy", |ctx, n: u64| -> u64 {
    let _: u64 = ctx.signal("go").await?;
    let maybe = ctx.signal::<u64>("maybe");
    let timer = ctx.sleep(Duration::from_secs(1));
    let _ = futures::future::select(timer, maybe).await;
    ctx.continue_as_new::<Busy>(n + 1).await
});

/// 1 RunStarted, 2 SignalAwaited go #1, 3 extra=1, 4 extra=2, 5 maybe=7 (buffered),
/// 6 go, 7 SignalAwaited maybe #2 (takes the 7), 8 TimerStarted #3, 9 RunContinuedAsNew
/// handing on the two `extra` signals.
#[test]
fn signals_the_code_did_not_take_are_handed_to_the_next_run() -> TestResult {
    let (mut live, _) = Live::start::<Busy>(&1, 1)?;
    live.deliver(signal("extra", 1u64))?;
    live.deliver(signal("extra", 2u64))?;
    live.deliver(signal("maybe", 7u64))?;
    live.deliver(signal("go", 0u64))?;
    // The `maybe` wait took the buffered 7 at once, so the select resolved with it.
    assert!(live.machine.is_finished());
    match live.history.last().map(|e| &e.kind) {
        Some(EventKind::RunContinuedAsNew { signals, .. }) => {
            let names: Vec<(&str, u64)> = signals
                .iter()
                .map(|(n, p)| (n.as_str(), p.decode::<u64>().expect("decodes")))
                .collect();
            assert_eq!(names, [("extra", 1), ("extra", 2)]);
        }
        other => panic!("expected RunContinuedAsNew, got {other:?}"),
    }
    // Replay derives the same list and accepts the recorded ending.
    let report = replayer::<Busy>().replay(identity(), &live.history)?;
    match report.outcome {
        ReplayOutcome::ContinuedAsNew(next) => assert_eq!(next.signals.len(), 2),
        other => panic!("expected ContinuedAsNew, got {other:?}"),
    }
    Ok(())
}

// Waits for `go` while a `maybe` wait races a timer that fires first.
workflow!(Racing = "racing", |ctx, n: u64| -> u64 {
    let maybe = ctx.signal::<u64>("maybe");
    let timer = ctx.sleep(Duration::from_secs(1));
    let _ = futures::future::select(timer, maybe).await;
    let _: u64 = ctx.signal("go").await?;
    ctx.continue_as_new::<Racing>(n + 1).await
});

/// A signal whose wait lost its select (and was dropped) is buffered, and handed on.
#[test]
fn a_signal_after_its_wait_was_dropped_is_handed_on() -> TestResult {
    let (mut live, _) = Live::start::<Racing>(&1, 1)?;
    live.deliver(EventKind::TimerFired { seq: CommandSeq(1) })?;
    live.deliver(signal("maybe", 5u64))?;
    live.deliver(signal("go", 0u64))?;
    match live.history.last().map(|e| &e.kind) {
        Some(EventKind::RunContinuedAsNew { signals, .. }) => {
            assert_eq!(signals.len(), 1, "{signals:?}");
            assert_eq!(signals[0].0, "maybe");
            assert_eq!(signals[0].1.decode::<u64>()?, 5);
        }
        other => panic!("expected RunContinuedAsNew, got {other:?}"),
    }
    Ok(())
}
