//! [`Saga`]: compensations run in reverse order when a step fails or the run is
//! cancelled; a failing compensation stops the rest, or not, and is reported.

use super::*;
use crate::context::saga::{Saga, SagaError};

/// Books each leg with `charge(leg)` and records `refund(<its output>)` after each, then
/// pays with `charge("pay")`.
async fn book(
    ctx: WorkflowContext,
    legs: Vec<String>,
    continue_on_error: bool,
) -> Result<String, WorkflowError> {
    let saga = Saga::new(&ctx).continue_on_error(continue_on_error);
    saga.run(async {
        for leg in &legs {
            let booked = ctx.activity::<Charge>(leg.clone()).await?;
            saga.add(ctx.activity::<Refund>(booked));
        }
        Ok(ctx.activity::<Charge>("pay".to_owned()).await?)
    })
    .await
}

workflow!(Book = "book", |ctx, legs: Vec<String>| -> String {
    book(ctx, legs, false).await
});
workflow!(BookAll = "book_all", |ctx, legs: Vec<String>| -> String {
    book(ctx, legs, true).await
});

// Compensates with arbitrary code: waits a minute, then refunds.
workflow!(SlowRefund = "slow_refund", |ctx, leg: String| -> String {
    let saga = Saga::new(&ctx);
    saga.run(async {
        let booked = ctx.activity::<Charge>(leg.clone()).await?;
        let later = ctx.clone();
        saga.add_with("refund after a minute", move || async move {
            later.sleep(Duration::from_secs(60)).await;
            later.activity::<Refund>(booked).await?;
            Ok(())
        });
        Ok(ctx.activity::<Charge>("pay".to_owned()).await?)
    })
    .await
});

fn legs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn declined() -> ActivityError {
    ActivityError::non_retryable("PaymentFailed", "declined")
}

/// The run's error, if the code failed.
fn error(machine: &RunMachine) -> WorkflowError {
    match machine.outcome() {
        Some(Err(e)) => e.clone(),
        other => panic!("expected a failed run, got {other:?}"),
    }
}

/// 1 RunStarted, 2 charge "a" (#1), 3 done, 4 charge "b" (#2), 5 done, 6 charge "pay"
/// (#3), 7 failed, 8 refund "B" (#4), 9 done, 10 refund "A" (#5), 11 done, 12 RunFailed.
#[test]
fn a_failed_step_runs_the_compensations_last_first_and_keeps_its_error() -> TestResult {
    let (mut live, first) = Live::start::<Book>(&legs(&["a", "b"]), 1)?;
    assert_eq!(first, numbered(vec![(1, schedule("charge", "a"))]));
    assert_eq!(
        live.deliver(completed(1, "A"))?,
        numbered(vec![(2, schedule("charge", "b"))])
    );
    assert_eq!(
        live.deliver(completed(2, "B"))?,
        numbered(vec![(3, schedule("charge", "pay"))])
    );
    assert_eq!(
        live.deliver(failed(3, declined()))?,
        numbered(vec![(4, schedule("refund", "B"))])
    );
    assert_eq!(
        live.deliver(completed(4, "refunded B"))?,
        numbered(vec![(5, schedule("refund", "A"))])
    );
    assert_eq!(live.deliver(completed(5, "refunded A"))?, vec![]);
    let expected = WorkflowError::new("PaymentFailed", "declined");
    assert_eq!(error(&live.machine), expected, "the cause, unchanged");
    assert_eq!(
        replayer::<Book>()
            .replay(identity(), &live.history)?
            .outcome,
        ReplayOutcome::Failed(expected),
        "the recorded saga replays"
    );
    Ok(())
}

#[test]
fn steps_that_succeed_compensate_nothing() -> TestResult {
    let (mut live, _) = Live::start::<Book>(&legs(&["a"]), 1)?;
    live.deliver(completed(1, "A"))?;
    assert_eq!(live.deliver(completed(2, "PAID"))?, vec![]);
    assert_eq!(output::<String>(&live.machine), "PAID");
    assert!(
        !live.history.iter().any(
            |e| matches!(&e.kind, EventKind::ActivityScheduled { name, .. } if name == "refund")
        ),
        "no refund in {:?}",
        kinds(&live.history)
    );
    Ok(())
}

/// 1 RunStarted, 2 charge "a" (#1), 3 done, 4 charge "pay" (#2), 5 CancelRequested,
/// 6 refund "A" (#3), 7 the late result of #2 (ignored), 8 refund done, 9 RunFailed.
#[test]
fn a_cancel_stops_the_steps_and_still_runs_the_compensations() -> TestResult {
    let (mut live, _) = Live::start::<Book>(&legs(&["a"]), 1)?;
    live.deliver(completed(1, "A"))?;
    assert_eq!(
        live.deliver(EventKind::CancelRequested {
            reason: "customer asked".into()
        })?,
        numbered(vec![(3, schedule("refund", "A"))]),
        "the cancel does not end the run: the refund is scheduled"
    );
    assert_eq!(
        live.deliver(completed(2, "PAID"))?,
        vec![],
        "the abandoned step's late result changes nothing"
    );
    assert!(!live.machine.is_finished());
    live.deliver(completed(3, "refunded A"))?;
    let expected = WorkflowError::cancelled("the run was cancelled: customer asked");
    assert_eq!(error(&live.machine), expected);
    assert_eq!(
        replayer::<Book>()
            .replay(identity(), &live.history)?
            .outcome,
        ReplayOutcome::Failed(expected)
    );
    Ok(())
}

#[test]
fn a_failed_compensation_stops_the_rest_and_is_attached_to_the_error() -> TestResult {
    let (mut live, _) = Live::start::<Book>(&legs(&["a", "b"]), 1)?;
    live.deliver(completed(1, "A"))?;
    live.deliver(completed(2, "B"))?;
    live.deliver(failed(3, declined()))?;
    let refund_failed = ActivityError::non_retryable("RefundFailed", "gateway down");
    assert_eq!(
        live.deliver(failed(4, refund_failed))?,
        vec![],
        "refund A is not attempted after refund B failed"
    );
    let err = error(&live.machine);
    assert_eq!(err.kind(), "PaymentFailed", "the cause's kind is kept");
    assert_eq!(
        err.message(),
        "declined; compensation failed: refund (RefundFailed: gateway down); not run: refund"
    );
    let saga = SagaError::from_error(&err).ok_or("the failures are in the details")?;
    assert_eq!(saga.failures().len(), 1);
    assert_eq!(saga.failures()[0].compensation, "refund");
    assert_eq!(saga.failures()[0].error.kind(), "RefundFailed");
    assert_eq!(saga.not_run(), ["refund"]);
    assert!(SagaError::from_error(&WorkflowError::new("PaymentFailed", "declined")).is_none());
    Ok(())
}

#[test]
fn continue_on_error_runs_every_compensation_and_reports_each_failure() -> TestResult {
    let (mut live, _) = Live::start::<BookAll>(&legs(&["a", "b", "c"]), 1)?;
    live.deliver(completed(1, "A"))?;
    live.deliver(completed(2, "B"))?;
    live.deliver(completed(3, "C"))?;
    live.deliver(failed(4, declined()))?;
    assert_eq!(
        live.deliver(failed(5, ActivityError::non_retryable("RefundFailed", "C")))?,
        numbered(vec![(6, schedule("refund", "B"))]),
        "the next compensation runs after a failed one"
    );
    assert_eq!(
        live.deliver(completed(6, "refunded B"))?,
        numbered(vec![(7, schedule("refund", "A"))])
    );
    live.deliver(failed(7, ActivityError::non_retryable("RefundFailed", "A")))?;
    let err = error(&live.machine);
    let saga = SagaError::from_error(&err).ok_or("the failures are in the details")?;
    let failed: Vec<&str> = saga.failures().iter().map(|f| f.error.message()).collect();
    assert_eq!(failed, ["C", "A"]);
    assert!(saga.not_run().is_empty());
    replayer::<BookAll>().replay(identity(), &live.history)?;
    Ok(())
}

#[test]
fn a_compensation_may_be_any_workflow_code() -> TestResult {
    let (mut live, _) = Live::start::<SlowRefund>(&"a".to_owned(), 1)?;
    live.deliver(completed(1, "A"))?;
    assert_eq!(
        live.deliver(failed(2, declined()))?,
        numbered(vec![(3, start_timer(60_000))])
    );
    assert_eq!(
        live.deliver(fired(3))?,
        numbered(vec![(4, schedule("refund", "A"))])
    );
    live.deliver(completed(4, "refunded A"))?;
    assert_eq!(
        error(&live.machine),
        WorkflowError::new("PaymentFailed", "declined")
    );
    Ok(())
}
