//! `RunTimedOut`: the event the store records when a run passes its execution timeout
//! stops the code where it waits, and replay agrees with the recorded failure.

use super::*;
use crate::error::KIND_EXECUTION_TIMEOUT;

/// 1 RunStarted, 2 echo(1) (#1), 3 RunTimedOut, 4 RunFailed.
#[test]
fn a_timed_out_run_replays_to_its_recorded_failure() -> TestResult {
    let error = WorkflowError::execution_timeout(Duration::from_secs(30));
    assert_eq!(error.kind(), KIND_EXECUTION_TIMEOUT);
    assert_eq!(error.message(), "execution timeout of 30s exceeded");
    let history = HistoryBuilder::start("sequential", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .push(EventKind::RunTimedOut { timeout_ms: 30_000 })
        .push(EventKind::RunFailed {
            error: error.clone(),
        })
        .build();
    let report = replayer::<Sequential>().replay(identity(), &history)?;
    assert_eq!(report.outcome, ReplayOutcome::Failed(error));
    Ok(())
}

#[test]
fn a_live_run_stops_at_run_timed_out_and_issues_nothing_more() -> TestResult {
    let (mut live, _) = Live::start::<Sequential>(&1, 1)?;
    let issued = live.deliver(EventKind::RunTimedOut { timeout_ms: 1_500 })?;
    assert_eq!(issued, vec![], "the code is not polled again");
    assert_eq!(
        kinds(&live.history)[2..],
        ["RunTimedOut", "RunFailed"],
        "the failure is recorded right after"
    );
    assert_eq!(
        live.machine.outcome(),
        Some(&Err(WorkflowError::execution_timeout(
            Duration::from_millis(1_500)
        )))
    );
    // The pending activity's late result is refused: the run is over.
    assert!(live.deliver(completed(1, 2u64)).is_err());
    Ok(())
}

/// A history in which the code finished before the recorded timeout diverges.
#[test]
fn a_timeout_after_the_code_finished_is_reported() -> TestResult {
    let history = HistoryBuilder::start("sequential", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .completed(1, 2u64)
        .scheduled(2, "echo", 3u64)
        .completed(2, 4u64)
        .scheduled(3, "echo", 5u64)
        .completed(3, 6u64)
        .push(EventKind::RunTimedOut { timeout_ms: 10 })
        .build();
    match replayer::<Sequential>().replay(identity(), &history) {
        Err(ReplayError::EarlyFinish { event, .. }) => assert_eq!(event, EventId(8)),
        other => panic!("expected EarlyFinish, got {other:?}"),
    }
    Ok(())
}
