//! Tests of the virtual-time environment, with workflows and activities implemented by
//! hand (the macros live in another crate).

use super::{TestEnv, TestEnvError};
use crate::error::{ActivityError, WorkflowError};
use crate::event::EventKind;
use crate::registry::{Activity, Registry, Workflow};
use crate::replay::{ReplayOutcome, Replayer};
use crate::retry::RetryPolicy;
use crate::{ActivityContext, WorkflowContext};
use futures::future::{BoxFuture, LocalBoxFuture};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn ms(d: Duration) -> i64 {
    crate::clock::duration_ms(d)
}

/// Sends a reminder; the real body needs a runtime (it yields to it) and says "real".
struct Remind;
impl Activity for Remind {
    type Input = String;
    type Output = String;
    const NAME: &'static str = "remind";
    fn run(_ctx: ActivityContext, to: String) -> BoxFuture<'static, Result<String, ActivityError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            Ok(format!("real:{to}"))
        })
    }
}

/// A service that is always down, unless a test replaces it.
struct Flaky;
impl Activity for Flaky {
    type Input = u32;
    type Output = String;
    const NAME: &'static str = "flaky";
    fn run(_ctx: ActivityContext, _: u32) -> BoxFuture<'static, Result<String, ActivityError>> {
        Box::pin(async {
            Err(ActivityError::retryable(
                "Unavailable",
                "the service is down",
            ))
        })
    }
}

/// Registered nowhere.
struct Unregistered;
impl Activity for Unregistered {
    type Input = ();
    type Output = ();
    const NAME: &'static str = "unregistered";
    fn run(_ctx: ActivityContext, (): ()) -> BoxFuture<'static, Result<(), ActivityError>> {
        Box::pin(async { Ok(()) })
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Approved {
    reminder: String,
    woke_at_ms: i64,
    decision: Option<bool>,
    decided_at_ms: i64,
}

/// Reminds, sleeps three days, then waits up to a week for a decision.
struct LongApproval;
impl Workflow for LongApproval {
    type Input = String;
    type Output = Approved;
    const NAME: &'static str = "long_approval";
    fn run(
        ctx: WorkflowContext,
        approver: String,
    ) -> LocalBoxFuture<'static, Result<Approved, WorkflowError>> {
        Box::pin(async move {
            let reminder = ctx.activity::<Remind>(approver).await?;
            ctx.sleep(3 * DAY).await;
            let woke_at_ms = ctx.now_ms();
            let decision = ctx.signal_timeout::<bool>("decision", 7 * DAY).await?;
            Ok(Approved {
                reminder,
                woke_at_ms,
                decision,
                decided_at_ms: ctx.now_ms(),
            })
        })
    }
}

/// Starts timers of 3 h, 1 h and 2 h at once; returns their labels in firing order.
struct ThreeTimers;
impl Workflow for ThreeTimers {
    type Input = ();
    type Output = Vec<(String, i64)>;
    const NAME: &'static str = "three_timers";
    fn run(
        ctx: WorkflowContext,
        (): (),
    ) -> LocalBoxFuture<'static, Result<Vec<(String, i64)>, WorkflowError>> {
        Box::pin(async move {
            let fired = Rc::new(RefCell::new(Vec::new()));
            let timer = |label: &'static str, hours: u32| {
                let (ctx, fired) = (ctx.clone(), fired.clone());
                async move {
                    ctx.sleep(HOUR * hours).await;
                    fired.borrow_mut().push((label.to_owned(), ctx.now_ms()));
                }
            };
            futures::join!(timer("c", 3), timer("a", 1), timer("b", 2));
            Ok(fired.take())
        })
    }
}

/// Sleeps an hour, then takes two `n` signals; returns each with the time it was taken.
struct SignalsAfterSleep;
impl Workflow for SignalsAfterSleep {
    type Input = ();
    type Output = Vec<(u32, i64)>;
    const NAME: &'static str = "signals_after_sleep";
    fn run(
        ctx: WorkflowContext,
        (): (),
    ) -> LocalBoxFuture<'static, Result<Vec<(u32, i64)>, WorkflowError>> {
        Box::pin(async move {
            ctx.sleep(HOUR).await;
            let mut got = Vec::new();
            for _ in 0..2 {
                let n = ctx.signal::<u32>("n").await?;
                got.push((n, ctx.now_ms()));
            }
            Ok(got)
        })
    }
}

/// Calls `flaky` with a policy of 10 s doubling backoff and `max_attempts`; returns its
/// output and when it arrived.
struct RetryingCall;
impl Workflow for RetryingCall {
    type Input = u32;
    type Output = (String, i64);
    const NAME: &'static str = "retrying_call";
    fn run(
        ctx: WorkflowContext,
        max_attempts: u32,
    ) -> LocalBoxFuture<'static, Result<(String, i64), WorkflowError>> {
        Box::pin(async move {
            let out = ctx
                .activity::<Flaky>(max_attempts)
                .retry(
                    RetryPolicy::exponential(Duration::from_secs(10))
                        .backoff(2.0)
                        .max_attempts(max_attempts),
                )
                .await?;
            Ok((out, ctx.now_ms()))
        })
    }
}

/// Waits for a decision that may never come.
struct WaitForDecision;
impl Workflow for WaitForDecision {
    type Input = ();
    type Output = bool;
    const NAME: &'static str = "wait_for_decision";
    fn run(ctx: WorkflowContext, (): ()) -> LocalBoxFuture<'static, Result<bool, WorkflowError>> {
        Box::pin(async move { ctx.signal::<bool>("decision").await })
    }
}

/// Awaits something no event can resolve, as a tokio timer in workflow code would.
struct WaitsOnNothingDurable;
impl Workflow for WaitsOnNothingDurable {
    type Input = ();
    type Output = ();
    const NAME: &'static str = "waits_on_nothing_durable";
    fn run(_ctx: WorkflowContext, (): ()) -> LocalBoxFuture<'static, Result<(), WorkflowError>> {
        Box::pin(futures::future::pending())
    }
}

/// Calls an activity nobody registered.
struct CallsUnregistered;
impl Workflow for CallsUnregistered {
    type Input = ();
    type Output = ();
    const NAME: &'static str = "calls_unregistered";
    fn run(ctx: WorkflowContext, (): ()) -> LocalBoxFuture<'static, Result<(), WorkflowError>> {
        Box::pin(async move { Ok(ctx.activity::<Unregistered>(()).await?) })
    }
}

/// Sleeps forever, a day at a time.
struct SleepsForever;
impl Workflow for SleepsForever {
    type Input = ();
    type Output = ();
    const NAME: &'static str = "sleeps_forever";
    fn run(ctx: WorkflowContext, (): ()) -> LocalBoxFuture<'static, Result<(), WorkflowError>> {
        Box::pin(async move {
            loop {
                ctx.sleep(DAY).await;
            }
        })
    }
}

/// Returns the time it started at and a random number.
struct Clock;
impl Workflow for Clock {
    type Input = ();
    type Output = (i64, u64);
    const NAME: &'static str = "clock";
    fn run(
        ctx: WorkflowContext,
        (): (),
    ) -> LocalBoxFuture<'static, Result<(i64, u64), WorkflowError>> {
        Box::pin(async move { Ok((ctx.now_ms(), ctx.random::<u64>())) })
    }
}

fn registry() -> Registry {
    Registry::new()
        .workflow::<LongApproval>()
        .workflow::<ThreeTimers>()
        .workflow::<SignalsAfterSleep>()
        .workflow::<RetryingCall>()
        .workflow::<WaitForDecision>()
        .activity::<Remind>()
        .activity::<Flaky>()
}

/// Each event as (time since `start_ms`, kind name).
fn kinds(env: &TestEnv, start_ms: i64) -> Vec<(i64, &'static str)> {
    env.history()
        .iter()
        .map(|e| (e.time_ms - start_ms, e.kind.name()))
        .collect()
}

fn start_ms(env: &TestEnv) -> i64 {
    env.history().first().map_or(0, |e| e.time_ms)
}

/// Replays the history through the same code and checks it ends as recorded.
fn assert_replays(env: &TestEnv) -> TestResult {
    let identity = env.identity().ok_or("no run")?.clone();
    let report = Replayer::new(registry()).replay(identity, env.history())?;
    let recorded = env.history().last().map(|e| e.kind.clone());
    match (report.outcome, recorded) {
        (ReplayOutcome::Completed(out), Some(EventKind::RunCompleted { output })) => {
            assert_eq!(out, output);
        }
        (ReplayOutcome::Failed(err), Some(EventKind::RunFailed { error })) => {
            assert_eq!(err, error);
        }
        (other, last) => panic!("replay ended with {other:?}, history with {last:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_ten_day_workflow_finishes_in_milliseconds_of_wall_time() -> TestResult {
    #[allow(clippy::disallowed_methods)] // measuring the test's own wall time
    let wall = std::time::Instant::now();
    let mut env = TestEnv::new(registry()).mock_activity::<Remind>(|to| Ok(format!("mock:{to}")));
    env.start::<LongApproval>(&"lee".to_owned())?;
    let t0 = env.now_ms();
    env.signal_after(3 * DAY + 2 * HOUR, "decision", &true)?;

    let outcome = env.run_to_completion::<LongApproval>().await?;

    assert!(
        wall.elapsed() < Duration::from_secs(1),
        "took {:?}",
        wall.elapsed()
    );
    assert_eq!(
        outcome,
        Ok(Approved {
            reminder: "mock:lee".into(),
            woke_at_ms: t0 + ms(3 * DAY),
            decision: Some(true),
            decided_at_ms: t0 + ms(3 * DAY + 2 * HOUR),
        })
    );
    assert_eq!(env.elapsed(), 3 * DAY + 2 * HOUR);
    assert_eq!(
        kinds(&env, t0),
        vec![
            (0, "RunStarted"),
            (0, "ActivityScheduled"),
            (0, "ActivityCompleted"),
            (0, "TimerStarted"),
            (ms(3 * DAY), "TimerFired"),
            (ms(3 * DAY), "SignalAwaited"),
            (ms(3 * DAY), "TimerStarted"),
            (ms(3 * DAY + 2 * HOUR), "SignalReceived"),
            (ms(3 * DAY + 2 * HOUR), "RunCompleted"),
        ]
    );
    assert_replays(&env)
}

#[tokio::test]
async fn a_signal_that_never_comes_times_out_a_week_after_the_sleep() -> TestResult {
    let mut env = TestEnv::new(registry()).mock_activity::<Remind>(|_| Ok(String::new()));
    env.start::<LongApproval>(&"lee".to_owned())?;
    let t0 = env.now_ms();

    let outcome = env
        .run_to_completion::<LongApproval>()
        .await?
        .map_err(|e| e.to_string())?;

    assert_eq!(outcome.decision, None);
    assert_eq!(outcome.decided_at_ms, t0 + ms(10 * DAY));
    assert_eq!(env.elapsed(), 10 * DAY);
    assert_replays(&env)
}

#[tokio::test]
async fn timers_fire_in_due_order_not_in_start_order() -> TestResult {
    let mut env = TestEnv::new(registry());
    env.start::<ThreeTimers>(&())?;
    let t0 = env.now_ms();

    let fired = env
        .run_to_completion::<ThreeTimers>()
        .await?
        .map_err(|e| e.to_string())?;

    assert_eq!(
        fired,
        vec![
            ("a".to_owned(), t0 + ms(HOUR)),
            ("b".to_owned(), t0 + ms(2 * HOUR)),
            ("c".to_owned(), t0 + ms(3 * HOUR)),
        ]
    );
    let fired_seqs: Vec<(u32, i64)> = env
        .history()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::TimerFired { seq } => Some((seq.0, e.time_ms - t0)),
            _ => None,
        })
        .collect();
    assert_eq!(
        fired_seqs,
        vec![(2, ms(HOUR)), (3, ms(2 * HOUR)), (1, ms(3 * HOUR))]
    );
    assert_replays(&env)
}

#[tokio::test]
async fn signals_interleave_with_timers_by_virtual_time() -> TestResult {
    let mut env = TestEnv::new(registry());
    // Scheduled before the run starts its one-hour timer, so at the same instant the
    // signal comes first.
    env.signal_after(HOUR, "n", &1u32)?;
    env.signal_after(HOUR / 2, "n", &0u32)?;
    env.signal_after(5 * HOUR, "n", &2u32)?;
    env.start::<SignalsAfterSleep>(&())?;
    let t0 = env.now_ms();

    let got = env
        .run_to_completion::<SignalsAfterSleep>()
        .await?
        .map_err(|e| e.to_string())?;

    // Both early signals were buffered; the code takes them in arrival order after its
    // sleep, and finishes before the third arrives.
    assert_eq!(got, vec![(0, t0 + ms(HOUR)), (1, t0 + ms(HOUR))]);
    let signals: Vec<(i64, &str)> = kinds(&env, t0)
        .into_iter()
        .filter(|(_, k)| matches!(*k, "SignalReceived" | "TimerFired"))
        .collect();
    assert_eq!(
        signals,
        vec![
            (ms(HOUR / 2), "SignalReceived"),
            (ms(HOUR), "SignalReceived"),
            (ms(HOUR), "TimerFired"),
        ]
    );
    assert_eq!(env.elapsed(), HOUR);
    assert_replays(&env)
}

#[tokio::test]
async fn retries_wait_their_backoff_in_virtual_time() -> TestResult {
    let mut env = TestEnv::new(registry()).mock_activity_with_context::<Flaky>(|ctx, _| {
        if ctx.attempt() < 3 {
            Err(ActivityError::retryable("Unavailable", "down"))
        } else {
            Ok(format!("ok on attempt {}", ctx.attempt()))
        }
    });
    env.start::<RetryingCall>(&5)?;
    let t0 = env.now_ms();

    let (out, at) = env
        .run_to_completion::<RetryingCall>()
        .await?
        .map_err(|e| e.to_string())?;

    assert_eq!(out, "ok on attempt 3");
    // Attempt 2 after 10 s, attempt 3 after another 20 s.
    assert_eq!(at, t0 + 30_000);
    let completed = env.history().iter().find_map(|e| match &e.kind {
        EventKind::ActivityCompleted { attempt, .. } => Some((*attempt, e.time_ms - t0)),
        _ => None,
    });
    assert_eq!(completed, Some((3, 30_000)));
    assert_replays(&env)
}

#[tokio::test]
async fn the_final_failure_records_the_attempts_made() -> TestResult {
    let calls = Rc::new(Cell::new(0u32));
    let counted = calls.clone();
    let mut env = TestEnv::new(registry()).mock_activity::<Flaky>(move |_| {
        counted.set(counted.get() + 1);
        Err(ActivityError::retryable("Unavailable", "still down"))
    });
    env.start::<RetryingCall>(&3)?;
    let t0 = env.now_ms();

    let outcome = env.run_to_completion::<RetryingCall>().await?;

    let err = outcome.err().ok_or("the run should fail")?;
    assert!(err.is("Unavailable"), "{err}");
    assert_eq!(calls.get(), 3);
    let failed = env.history().iter().find_map(|e| match &e.kind {
        EventKind::ActivityFailed { error, .. } => Some((error.attempts(), e.time_ms - t0)),
        _ => None,
    });
    assert_eq!(failed, Some((3, 30_000)));
    assert!(matches!(
        env.history().last().map(|e| &e.kind),
        Some(EventKind::RunFailed { .. })
    ));
    assert_replays(&env)
}

#[tokio::test]
async fn a_non_retryable_failure_is_final_at_once() -> TestResult {
    let mut env = TestEnv::new(registry())
        .mock_activity::<Flaky>(|_| Err(ActivityError::non_retryable("Declined", "no")));
    env.start::<RetryingCall>(&10)?;

    let err = env
        .run_to_completion::<RetryingCall>()
        .await?
        .err()
        .ok_or("should fail")?;

    assert!(err.is("Declined"));
    assert_eq!(env.elapsed(), Duration::ZERO);
    Ok(())
}

#[tokio::test]
async fn a_panicking_double_is_a_retryable_failure() -> TestResult {
    let mut env = TestEnv::new(registry()).mock_activity_with_context::<Flaky>(|ctx, _| {
        assert!(ctx.attempt() > 1, "first attempt blows up");
        Ok("recovered".to_owned())
    });
    env.start::<RetryingCall>(&3)?;

    let (out, _) = env
        .run_to_completion::<RetryingCall>()
        .await?
        .map_err(|e| e.to_string())?;

    assert_eq!(out, "recovered");
    assert_eq!(env.elapsed(), Duration::from_secs(10));
    Ok(())
}

#[tokio::test]
async fn doubles_replace_activities_and_others_run_their_real_body() -> TestResult {
    // Unmocked: the registered async body runs on the test's runtime.
    let mut env = TestEnv::new(registry());
    env.start::<LongApproval>(&"kim".to_owned())?;
    env.signal_after(3 * DAY, "decision", &false)?;
    let real = env
        .run_to_completion::<LongApproval>()
        .await?
        .map_err(|e| e.to_string())?;
    assert_eq!(real.reminder, "real:kim");
    assert_eq!(real.decision, Some(false));

    // Mocked with an async double that sees the attempt's context.
    let mut env = TestEnv::new(registry())
        .workflow_id("approval-7")
        .mock_activity_async::<Remind>(async |ctx, to| {
            tokio::task::yield_now().await;
            Ok(format!("{to} via {}", ctx.idempotency_key()))
        });
    env.start::<LongApproval>(&"kim".to_owned())?;
    env.signal_after(4 * DAY, "decision", &true)?;
    let mocked = env
        .run_to_completion::<LongApproval>()
        .await?
        .map_err(|e| e.to_string())?;
    assert_eq!(mocked.reminder, "kim via approval-7/test-run/1");
    assert_replays(&env)
}

#[tokio::test]
async fn a_run_waiting_for_a_signal_nobody_sends_is_reported_not_hung() -> TestResult {
    let mut env = TestEnv::new(registry());
    env.start::<WaitForDecision>(&())?;

    let err = env
        .run_to_completion::<WaitForDecision>()
        .await
        .err()
        .ok_or("the run cannot finish")?;

    let message = err.to_string();
    assert!(matches!(err, TestEnvError::Stuck { .. }), "{err:?}");
    assert!(
        message.contains("signal \"decision\" (command 1)"),
        "{message}"
    );

    // Stuck is not fatal: send the signal and carry on.
    env.signal("decision", &true)?;
    assert_eq!(env.run_to_completion::<WaitForDecision>().await?, Ok(true));
    assert_replays(&env)
}

#[tokio::test]
async fn waiting_on_something_not_durable_is_reported() -> TestResult {
    let mut env = TestEnv::new(Registry::new());
    env.start::<WaitsOnNothingDurable>(&())?;

    let err = env
        .run_to_completion::<WaitsOnNothingDurable>()
        .await
        .err()
        .ok_or("stuck")?;

    assert!(
        matches!(err, TestEnvError::NotDurableWait { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not durable"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_activity_neither_registered_nor_mocked_is_a_clear_error() -> TestResult {
    let mut env = TestEnv::new(Registry::new());
    env.start::<CallsUnregistered>(&())?;

    let err = env
        .run_to_completion::<CallsUnregistered>()
        .await
        .err()
        .ok_or("fails")?;

    assert!(
        matches!(&err, TestEnvError::UnknownActivity { name, seq } if name == "unregistered" && seq.0 == 1),
        "{err:?}"
    );
    assert!(matches!(
        env.run_to_completion::<CallsUnregistered>().await,
        Err(TestEnvError::Broken)
    ));

    let mut env = TestEnv::new(Registry::new()).mock_activity::<Unregistered>(|()| Ok(()));
    env.start::<CallsUnregistered>(&())?;
    assert_eq!(env.run_to_completion::<CallsUnregistered>().await?, Ok(()));
    Ok(())
}

#[tokio::test]
async fn a_run_can_be_driven_part_of_the_way_and_signalled() -> TestResult {
    let mut env = TestEnv::new(registry()).mock_activity::<Remind>(|_| Ok(String::new()));
    env.start::<LongApproval>(&"lee".to_owned())?;
    let t0 = env.now_ms();

    env.run_for(4 * DAY).await?;
    assert!(!env.is_finished());
    assert_eq!(env.elapsed(), 4 * DAY);
    assert!(matches!(env.replay()?.outcome, ReplayOutcome::Waiting(_)));

    env.signal("decision", &false)?;
    let outcome = env
        .run_to_completion::<LongApproval>()
        .await?
        .map_err(|e| e.to_string())?;
    assert_eq!(outcome.decision, Some(false));
    assert_eq!(outcome.decided_at_ms, t0 + ms(4 * DAY));
    assert_replays(&env)
}

#[test]
fn the_blocking_form_needs_no_runtime_and_ctx_now_is_virtual() -> TestResult {
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let mut env = TestEnv::new(Registry::new()).start_time(epoch).seed(7);
    env.start::<Clock>(&())?;

    let (now_ms, random) = env
        .run_to_completion_blocking::<Clock>()?
        .map_err(|e| e.to_string())?;

    assert_eq!(now_ms, 2_000_000_000_000);
    assert_eq!(env.now(), epoch);
    assert_eq!(start_ms(&env), 2_000_000_000_000);

    // The same seed gives the same run.
    let mut again = TestEnv::new(Registry::new()).start_time(epoch).seed(7);
    again.start::<Clock>(&())?;
    assert_eq!(
        again.run_to_completion_blocking::<Clock>()?,
        Ok((now_ms, random))
    );
    assert_eq!(again.history(), env.history());
    Ok(())
}

#[test]
fn a_run_that_never_ends_is_stopped_at_the_event_limit() -> TestResult {
    let mut env = TestEnv::new(Registry::new()).max_events(50);
    env.start::<SleepsForever>(&())?;

    let err = env
        .run_to_completion_blocking::<SleepsForever>()
        .err()
        .ok_or("endless")?;

    assert!(
        matches!(err, TestEnvError::TooManyEvents { limit: 50 }),
        "{err:?}"
    );
    assert_eq!(env.history().len(), 50);
    Ok(())
}

#[test]
fn a_cancel_ends_a_run_that_does_not_handle_it() -> TestResult {
    let mut env = TestEnv::new(Registry::new());
    env.start::<SleepsForever>(&())?;
    env.cancel_after(DAY + HOUR, "no longer needed");

    let err = env
        .run_to_completion_blocking::<SleepsForever>()?
        .err()
        .ok_or("cancelled")?;

    assert!(err.is(crate::error::KIND_CANCELLED), "{err}");
    assert_eq!(env.elapsed(), DAY + HOUR);
    Ok(())
}

#[test]
fn misuse_is_reported() -> TestResult {
    let mut env = TestEnv::new(Registry::new());
    assert!(matches!(
        env.run_to_completion_blocking::<Clock>(),
        Err(TestEnvError::NotStarted)
    ));
    assert!(env.history().is_empty());
    env.start::<Clock>(&())?;
    assert!(matches!(
        env.start::<Clock>(&()),
        Err(TestEnvError::AlreadyStarted { .. })
    ));
    assert!(matches!(
        env.run_to_completion_blocking::<SleepsForever>(),
        Err(TestEnvError::WrongWorkflow { .. })
    ));
    Ok(())
}

mod continue_as_new;
mod finish_batch;
