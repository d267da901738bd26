//! The virtual-time test environment on the approval example: a run that waits days for
//! a person's decision finishes in milliseconds, and its history replays cleanly.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/approval.rs"]
mod approval_example;

use approval_example::{Decision, Outcome, Request, approval};
use durable::{EventKind, ReplayOutcome, Replayer};
use durable_core::testing::TestEnv;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(24 * 3600);
/// Every drive of a run gets this much wall time, so a hang fails with a message.
const WALL_LIMIT: Duration = Duration::from_secs(30);

fn request() -> Request {
    Request {
        request_id: "exp-7".into(),
        amount_cents: 120_000,
        approver: "lee@example.com".into(),
        timeout_secs: 3 * 24 * 3600,
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).expect("test durations fit in i64 milliseconds")
}

/// The activities the run scheduled, in order.
fn scheduled(env: &TestEnv) -> Vec<String> {
    env.history()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityScheduled { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Replays the recorded history through the example's code and returns how it ended.
fn replay(env: &TestEnv) -> anyhow::Result<ReplayOutcome> {
    let run = env.identity().expect("the run was started").clone();
    let report = Replayer::new(approval_example::registry()).replay(run, env.history())?;
    Ok(report.outcome)
}

#[tokio::test]
async fn a_decision_after_two_days_approves_the_request() -> anyhow::Result<()> {
    let mut env = TestEnv::new(approval_example::registry());
    env.start::<approval>(&request())?;
    // The first activation scheduled the notification; no activity has run yet.
    let notifying = "notifying lee@example.com";
    assert_eq!(
        env.published_status::<String>()?.as_deref(),
        Some(notifying)
    );
    let t0 = env.now_ms();
    let decision = Decision {
        approved: true,
        by: "lee".into(),
    };
    env.signal_after(2 * DAY, "decision", &decision)?;

    let outcome = tokio::time::timeout(WALL_LIMIT, env.run_to_completion::<approval>()).await??;

    assert_eq!(
        outcome,
        Ok(Outcome {
            request_id: "exp-7".into(),
            status: "approved".into(),
            decided_by: Some("lee".into()),
            decided_at_ms: t0 + ms(2 * DAY),
        })
    );
    assert_eq!(env.elapsed(), 2 * DAY);
    assert_eq!(
        env.published_status::<String>()?.as_deref(),
        Some("approved")
    );
    assert_eq!(scheduled(&env), ["notify_approver", "execute_request"]);
    assert!(matches!(replay(&env)?, ReplayOutcome::Completed(_)));
    Ok(())
}

#[tokio::test]
async fn no_decision_escalates_at_exactly_three_days() -> anyhow::Result<()> {
    let mut env = TestEnv::new(approval_example::registry());
    env.start::<approval>(&request())?;
    let t0 = env.now_ms();

    let outcome = tokio::time::timeout(WALL_LIMIT, env.run_to_completion::<approval>()).await??;

    assert_eq!(
        outcome,
        Ok(Outcome {
            request_id: "exp-7".into(),
            status: "escalated".into(),
            decided_by: None,
            decided_at_ms: t0 + ms(3 * DAY),
        })
    );
    assert_eq!(env.elapsed(), 3 * DAY);
    assert_eq!(env.now_ms(), t0 + ms(3 * DAY));
    assert_eq!(scheduled(&env), ["notify_approver", "escalate"]);
    let fired = env
        .history()
        .iter()
        .find(|e| matches!(e.kind, EventKind::TimerFired { .. }))
        .map(|e| e.time_ms);
    assert_eq!(fired, Some(t0 + ms(3 * DAY)));
    assert!(matches!(replay(&env)?, ReplayOutcome::Completed(_)));
    Ok(())
}

// --- child runs -------------------------------------------------------------------------

mod children {
    use super::{DAY, WALL_LIMIT};
    use durable::prelude::*;
    use durable::{EventKind, ReplayOutcome, Replayer};
    use durable_core::testing::TestEnv;

    /// Waits `days` days, then answers ten times that; day 13 is unlucky.
    #[workflow]
    async fn slow_part(ctx: WorkflowContext, days: u32) -> Result<u32, WorkflowError> {
        ctx.sleep(DAY * days).await;
        if days == 13 {
            return Err(WorkflowError::new("Unlucky", "day 13"));
        }
        Ok(days * 10)
    }

    /// One child per entry of `days`, all at once; the sum of their answers.
    #[workflow]
    async fn assemble(ctx: WorkflowContext, days: Vec<u32>) -> Result<u32, WorkflowError> {
        let parts = days.iter().map(|d| {
            let call = ctx.child::<slow_part>(*d).workflow_id(format!("part-{d}"));
            if *d >= 100 {
                call.cancel_policy(ChildCancelPolicy::Abandon)
            } else {
                call
            }
        });
        let answers = futures::future::try_join_all(parts).await?;
        Ok(answers.into_iter().sum())
    }

    fn registry() -> Registry {
        Registry::new()
            .workflow::<assemble>()
            .workflow::<slow_part>()
    }

    fn kinds(events: &[durable::Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.name()).collect()
    }

    #[tokio::test]
    async fn children_run_in_virtual_time_and_answer_their_parent() -> anyhow::Result<()> {
        let mut env = TestEnv::new(registry());
        env.start::<assemble>(&vec![3, 1, 2])?;
        let t0 = env.now_ms();
        let outcome =
            tokio::time::timeout(WALL_LIMIT, env.run_to_completion::<assemble>()).await??;
        assert_eq!(outcome, Ok(60));
        assert_eq!(env.elapsed(), 3 * DAY, "the children waited side by side");
        // Each outcome arrived at the virtual time its child finished.
        let answered: Vec<(u32, i64)> = env
            .history()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::ChildCompleted { seq, .. } => Some((seq.0, e.time_ms - t0)),
                _ => None,
            })
            .collect();
        let day = i64::try_from(DAY.as_millis())?;
        assert_eq!(answered, [(2, day), (3, 2 * day), (1, 3 * day)]);
        let child = env.child_history("part-2").expect("the child's history");
        assert_eq!(
            kinds(child),
            ["RunStarted", "TimerStarted", "TimerFired", "RunCompleted"]
        );
        assert_eq!(
            child[0].time_ms, t0,
            "started with its parent's first activation"
        );
        // Both histories replay through the same code.
        let report = Replayer::new(registry())
            .replay(env.identity().expect("started").clone(), env.history())?;
        assert!(matches!(report.outcome, ReplayOutcome::Completed(_)));
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_child_fails_the_parent_with_its_kind() -> anyhow::Result<()> {
        let mut env = TestEnv::new(registry());
        env.start::<assemble>(&vec![1, 13])?;
        let outcome =
            tokio::time::timeout(WALL_LIMIT, env.run_to_completion::<assemble>()).await??;
        let error = outcome.expect_err("the unlucky part fails the assembly");
        assert_eq!((error.kind(), error.message()), ("Unlucky", "day 13"));
        assert_eq!(env.elapsed(), 13 * DAY);
        Ok(())
    }

    #[tokio::test]
    async fn a_cancel_of_the_parent_reaches_its_children_by_policy() -> anyhow::Result<()> {
        let mut env = TestEnv::new(registry());
        env.start::<assemble>(&vec![5, 100])?;
        env.cancel_after(DAY, "no longer needed");
        let outcome =
            tokio::time::timeout(WALL_LIMIT, env.run_to_completion::<assemble>()).await??;
        let error = outcome.expect_err("the parent was cancelled");
        assert_eq!(error.kind(), "Cancelled");
        assert_eq!(env.elapsed(), DAY);
        let cancelled = env.child_history("part-5").expect("part 5 ran");
        assert_eq!(
            kinds(cancelled),
            ["RunStarted", "TimerStarted", "CancelRequested", "RunFailed"]
        );
        match &cancelled[2].kind {
            EventKind::CancelRequested { reason } => {
                assert!(reason.contains("no longer needed"), "{reason}")
            }
            other => panic!("expected the cancel, got {other:?}"),
        }
        let abandoned = env.child_history("part-100").expect("part 100 ran");
        assert_eq!(
            kinds(abandoned),
            ["RunStarted", "TimerStarted", "TimerFired", "RunCompleted"],
            "an abandoned child runs to its end"
        );
        Ok(())
    }

    /// A child whose workflow the environment does not know fails in the parent with a
    /// clear error instead of hanging.
    #[tokio::test]
    async fn an_unregistered_child_workflow_is_a_clear_failure() -> anyhow::Result<()> {
        let mut env = TestEnv::new(Registry::new());
        env.start::<assemble>(&vec![1])?;
        let outcome =
            tokio::time::timeout(WALL_LIMIT, env.run_to_completion::<assemble>()).await??;
        let error = outcome.expect_err("no slow_part here");
        assert_eq!(error.kind(), "UnknownWorkflow");
        assert!(error.message().contains("slow_part"), "{error}");
        Ok(())
    }
}
