//! The rest of an activation's batch when the code finishes partway through it: the
//! inbound events left are recorded (the code is not polled for them) before the run's
//! end, and replay accepts that shape, and only that shape.

use super::*;

// Awaits one activity and returns its output: a signal is never waited for.
workflow!(OneCall = "one-call", |ctx, n: u64| -> u64 {
    Ok(ctx.activity::<Echo>(n).await?)
});

// Awaits one activity, then continues as new.
workflow!(OneCallThenOn = "one-call-on", |ctx, n: u64| -> u64 {
    ctx.activity::<Echo>(n).await?;
    ctx.continue_as_new::<OneCallThenOn>(n + 1).await
});

/// Applies one activation's inbound events the way the worker's engine does: each is
/// applied and its commands recorded; once the code has returned, the rest are recorded
/// without polling it (a run that continued as new leaves them, as the store hands them
/// on); the run's end comes last, with the time of the event the code finished in.
/// Event `i` of the batch arrived at `time_ms + i`.
fn deliver_batch(
    live: &mut Live,
    time_ms: i64,
    batch: Vec<EventKind>,
) -> Result<usize, ReplayError> {
    let mut applied = 0;
    for (i, kind) in batch.into_iter().enumerate() {
        if live.machine.continued_as_new().is_some() {
            break;
        }
        applied += 1;
        let time = time_ms + i64::try_from(i).expect("small batches");
        let event = Event {
            id: live.next_id(),
            time_ms: time,
            kind,
        };
        live.machine.apply(&event)?;
        live.history.push(event);
        for (seq, command) in live.machine.take_commands() {
            let event = Event {
                id: live.next_id(),
                time_ms: time,
                kind: command.into_event(seq),
            };
            live.machine.apply(&event)?;
            live.history.push(event);
        }
    }
    let end = live.machine.finish_time().unwrap_or(time_ms);
    live.record(end)?;
    Ok(applied)
}

/// Batch [echo(1)'s result, signal "x", timer 7 fired] for a run waiting on echo(1):
///   1 RunStarted, 2 ActivityScheduled 1, 3 ActivityCompleted 1 (the code returns),
///   4 SignalReceived "x", 5 TimerFired 7 (recorded only), 6 RunCompleted.
#[test]
fn inbound_events_left_when_the_code_returns_are_recorded_before_the_end() -> TestResult {
    let (mut live, _) = Live::start::<OneCall>(&1, 1)?;
    let at = T0 + STEP_MS;
    let applied = deliver_batch(
        &mut live,
        at,
        vec![completed(1, 5u64), signal("x", "late"), fired(7)],
    )?;
    assert_eq!(applied, 3, "the whole batch is recorded");
    assert_eq!(
        kinds(&live.history),
        [
            "RunStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "SignalReceived",
            "TimerFired",
            "RunCompleted"
        ]
    );
    assert!(ids_are_contiguous(&live.history));
    assert_eq!(
        live.history[5].time_ms, at,
        "the end has the time of the event the code finished in"
    );
    assert_eq!(live.machine.finish_time(), Some(at));
    assert_eq!(output::<u64>(&live.machine), 5);
    // Nothing may follow the end.
    assert!(matches!(
        live.deliver(signal("x", "later")),
        Err(ReplayError::Malformed { .. })
    ));
    Ok(())
}

#[test]
fn a_history_with_events_recorded_after_the_code_returned_replays() -> TestResult {
    let (mut live, _) = Live::start::<OneCall>(&1, 1)?;
    deliver_batch(
        &mut live,
        T0 + STEP_MS,
        vec![
            completed(1, 5u64),
            signal("x", "late"),
            EventKind::CancelRequested {
                reason: "too late".into(),
            },
        ],
    )?;
    let report = replayer::<OneCall>().replay(identity(), &live.history)?;
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc(&5u64)));
    assert_eq!(report.events, 6);
    // A worker restoring it finds the run over, with nothing to add.
    let (restored, issued) = Live::restore::<OneCall>(&live.history)?;
    assert_eq!(issued, vec![]);
    assert_eq!(restored.history.len(), live.history.len());
    Ok(())
}

#[test]
fn an_event_after_the_recorded_end_is_still_malformed() {
    let mut history = HistoryBuilder::start("one-call", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 5u64)
        .build();
    let at = history[2].time_ms;
    for (i, kind) in [
        EventKind::RunCompleted { output: enc(&5u64) },
        signal("x", 1u32),
    ]
    .into_iter()
    .enumerate()
    {
        history.push(Event {
            id: EventId(4 + i as u64),
            time_ms: at,
            kind,
        });
    }
    match restore::<OneCall>(&history) {
        Err(ReplayError::Malformed { event, reason }) => {
            assert_eq!(event, EventId(5));
            assert!(reason.contains("after the run finished"), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

/// 1 RunStarted, 2 ActivityScheduled 1, 3 ActivityCompleted 1 (the code returns here),
/// 4 SignalReceived, 5 ActivityScheduled 2: the recorded run went on running.
#[test]
fn a_command_after_the_events_left_is_an_early_finish() {
    let history = HistoryBuilder::start("one-call", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 5u64)
        .push(signal("x", 1u32))
        .scheduled(2, "echo", 6u64)
        .build();
    match replayer::<OneCall>().replay(identity(), &history) {
        Err(ReplayError::EarlyFinish { event, recorded }) => {
            assert_eq!(event, EventId(4));
            assert_eq!(recorded, "SignalReceived");
        }
        other => panic!("expected EarlyFinish, got {other:?}"),
    }
}

/// A command recorded right after the code returned (no events left between): the
/// recorded run issued a command the code did not.
#[test]
fn a_command_right_after_the_code_returned_is_still_caught() {
    let history = HistoryBuilder::start("one-call", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 5u64)
        .scheduled(2, "echo", 6u64)
        .build();
    match replayer::<OneCall>().replay(identity(), &history) {
        Err(ReplayError::MissingCommand { seq, event, .. }) => {
            assert_eq!(seq, CommandSeq(2));
            assert_eq!(event, EventId(4));
        }
        other => panic!("expected MissingCommand, got {other:?}"),
    }
}

/// The events left are followed by the end of history, not by the run's end.
#[test]
fn a_history_that_stops_after_the_events_left_is_an_early_finish() {
    let history = HistoryBuilder::start("one-call", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 5u64)
        .push(signal("x", 1u32))
        .push(signal("y", 2u32))
        .build();
    for result in [
        replayer::<OneCall>()
            .replay(identity(), &history)
            .map(|_| ()),
        restore::<OneCall>(&history).map(|_| ()),
    ] {
        match result {
            Err(ReplayError::EarlyFinish { event, recorded }) => {
                assert_eq!(event, EventId(4));
                assert_eq!(recorded, "SignalReceived");
            }
            other => panic!("expected EarlyFinish, got {other:?}"),
        }
    }
}

/// The recorded end has another time than the event the code finished in: it closes a
/// later activation, in which the recorded run was still running.
#[test]
fn an_end_recorded_in_a_later_activation_is_an_early_finish() {
    let history = HistoryBuilder::start("one-call", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 5u64)
        .push(signal("x", 1u32))
        .run_completed(5u64)
        .build();
    match replayer::<OneCall>().replay(identity(), &history) {
        Err(ReplayError::EarlyFinish { event, recorded }) => {
            assert_eq!(event, EventId(4));
            assert_eq!(recorded, "SignalReceived");
        }
        other => panic!("expected EarlyFinish, got {other:?}"),
    }
}

/// Continue-as-new records nothing after the code's end: the store moves what is left of
/// the batch (signals and cancel requests) to the next run.
#[test]
fn a_run_that_continues_as_new_leaves_the_rest_of_its_batch() -> TestResult {
    let (mut live, _) = Live::start::<OneCallThenOn>(&1, 1)?;
    let applied = deliver_batch(
        &mut live,
        T0 + STEP_MS,
        vec![completed(1, 5u64), signal("x", "late")],
    )?;
    assert_eq!(applied, 1);
    assert_eq!(
        kinds(&live.history),
        [
            "RunStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "RunContinuedAsNew"
        ]
    );
    // A history with an event between the code's end and RunContinuedAsNew diverged.
    let mut forged = live.history[..3].to_vec();
    let at = forged[2].time_ms;
    forged.push(Event {
        id: EventId(4),
        time_ms: at,
        kind: signal("x", "late"),
    });
    let mut end = live.history[3].clone();
    end.id = EventId(5);
    end.time_ms = at;
    forged.push(end);
    match replayer::<OneCallThenOn>().replay(identity(), &forged) {
        Err(ReplayError::EarlyFinish { event, recorded }) => {
            assert_eq!(event, EventId(4));
            assert_eq!(recorded, "SignalReceived");
        }
        other => panic!("expected EarlyFinish, got {other:?}"),
    }
    Ok(())
}
