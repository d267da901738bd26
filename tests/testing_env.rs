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
