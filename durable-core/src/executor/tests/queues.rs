//! `.task_queue("q")` routes a call to the workers of a queue (whose limits the store
//! enforces): the queue is recorded with the schedule, and it is routing, not part of
//! what replay compares, so moving a call to another queue never breaks runs in flight.

use super::*;

workflow!(OnApi = "crawl", |ctx, _input: ()| -> u64 {
    let a = ctx.activity::<Echo>(1).task_queue("api").await?;
    let b = ctx.activity::<Echo>(2).await?;
    Ok(a + b)
});

workflow!(OnBulk = "crawl", |ctx, _input: ()| -> u64 {
    let a = ctx.activity::<Echo>(1).task_queue("bulk").await?;
    let b = ctx.activity::<Echo>(2).task_queue("bulk").await?;
    Ok(a + b)
});

fn queue_of(command: &Command) -> Option<&str> {
    match command {
        Command::ScheduleActivity { options, .. } => options.task_queue.as_deref(),
        other => panic!("expected a schedule, got {other:?}"),
    }
}

/// 1 RunStarted, 2 ActivityScheduled 1 echo(1) on `api`, 3 ActivityCompleted 1,
/// 4 ActivityScheduled 2 echo(2) on the default queue: the command and its event carry
/// the queue; a call without one has none.
#[test]
fn the_task_queue_is_recorded_with_the_schedule() -> TestResult {
    let (mut live, issued) = Live::start::<OnApi>(&(), 1)?;
    assert_eq!(issued.len(), 1);
    assert_eq!(queue_of(&issued[0].1), Some("api"));
    let issued = live.deliver(completed(1, 1u64))?;
    assert_eq!(queue_of(&issued[0].1), None);
    let recorded: Vec<Option<&str>> = live
        .history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityScheduled { options, .. } => Some(options.task_queue.as_deref()),
            _ => None,
        })
        .collect();
    assert_eq!(recorded, [Some("api"), None]);
    Ok(())
}

/// The history of `OnApi` (calls on `api` and the default queue) replays through
/// `OnBulk`, which moved both calls to `bulk`: same commands, other routing.
#[test]
fn moving_a_call_to_another_task_queue_keeps_replay_clean() -> TestResult {
    let (mut live, _) = Live::start::<OnApi>(&(), 1)?;
    live.deliver(completed(1, 1u64))?;
    live.deliver(completed(2, 2u64))?;
    let report = replayer::<OnBulk>().replay(identity(), &live.history)?;
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc(&3u64)));
    Ok(())
}
