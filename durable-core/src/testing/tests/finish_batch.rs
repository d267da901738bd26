//! The rule a worker follows when the code returns partway through an activation's
//! batch, in virtual time: what else has arrived by then is recorded before the end.

use super::*;

/// Sleeps an hour and returns; never waits for a signal.
struct Nap;
impl Workflow for Nap {
    type Input = ();
    type Output = u32;
    const NAME: &'static str = "nap";
    fn run(ctx: WorkflowContext, (): ()) -> LocalBoxFuture<'static, Result<u32, WorkflowError>> {
        Box::pin(async move {
            ctx.sleep(HOUR).await;
            Ok(7)
        })
    }
}

#[tokio::test]
async fn a_signal_due_when_the_code_returns_is_recorded_before_the_end() -> TestResult {
    let registry = Registry::new().workflow::<Nap>();
    let mut env = TestEnv::new(registry.clone());
    env.start::<Nap>(&())?;
    let t0 = start_ms(&env);
    // Due at the same instant as the timer, scheduled after it: the timer comes first
    // and the code returns; the signal has arrived all the same.
    env.signal_after(HOUR, "note", &"same instant")?;
    // Due later: the run is over by then, it is not recorded.
    env.signal_after(2 * HOUR, "note", &"too late")?;
    assert_eq!(env.run_to_completion::<Nap>().await?, Ok(7));
    assert_eq!(
        kinds(&env, t0),
        vec![
            (0, "RunStarted"),
            (0, "TimerStarted"),
            (ms(HOUR), "TimerFired"),
            (ms(HOUR), "SignalReceived"),
            (ms(HOUR), "RunCompleted"),
        ]
    );
    match &env.history()[3].kind {
        EventKind::SignalReceived { name, payload } => {
            assert_eq!(name, "note");
            assert_eq!(payload.decode::<String>()?, "same instant");
        }
        other => panic!("expected the signal, got {other:?}"),
    }
    let identity = env.identity().ok_or("no run")?.clone();
    let report = Replayer::new(registry).replay(identity, env.history())?;
    assert!(matches!(report.outcome, ReplayOutcome::Completed(_)));
    Ok(())
}
