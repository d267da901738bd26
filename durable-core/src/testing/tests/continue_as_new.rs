//! Continue-as-new in virtual time: a chain of runs, each with a short history, that
//! ends with the result the whole chain computed; signals for the workflow id reach
//! whichever run is current.

use super::*;
use crate::WorkflowId;

/// What a run of [`Tally`] hands to the next one.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Tally {
    run: u32,
    last_run: u32,
    sum: u64,
}

/// Each run reminds, then waits an hour for an `add` signal, adds it and continues as
/// new, until the last run returns the sum.
struct Tallying;
impl Workflow for Tallying {
    type Input = Tally;
    type Output = u64;
    const NAME: &'static str = "tallying";
    fn run(ctx: WorkflowContext, t: Tally) -> LocalBoxFuture<'static, Result<u64, WorkflowError>> {
        Box::pin(async move {
            ctx.set_status(&format!("run {}", t.run))?;
            ctx.activity::<Remind>(format!("run {}", t.run)).await?;
            let added: Option<u64> = ctx.signal_timeout("add", HOUR).await?;
            let sum = t.sum + added.unwrap_or(0);
            if t.run == t.last_run {
                return Ok(sum);
            }
            ctx.continue_as_new::<Tallying>(Tally {
                run: t.run + 1,
                sum,
                ..t
            })
            .await
        })
    }
}

/// Continues as a workflow nobody registered.
struct Elsewhere;
impl Workflow for Elsewhere {
    type Input = ();
    type Output = ();
    const NAME: &'static str = "elsewhere";
    fn run(ctx: WorkflowContext, (): ()) -> LocalBoxFuture<'static, Result<(), WorkflowError>> {
        Box::pin(async move { ctx.continue_as_new::<Unknown>(()).await })
    }
}

struct Unknown;
impl Workflow for Unknown {
    type Input = ();
    type Output = ();
    const NAME: &'static str = "unknown";
    fn run(_ctx: WorkflowContext, (): ()) -> LocalBoxFuture<'static, Result<(), WorkflowError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_workflow_that_continues_as_new_100_times_ends_with_the_whole_sum() -> TestResult {
    let registry = Registry::new().workflow::<Tallying>().activity::<Remind>();
    let mut env = TestEnv::new(registry.clone())
        .workflow_id("tally-1")
        .mock_activity::<Remind>(|to| Ok(format!("mock:{to}")));
    // One signal every two hours, for the workflow id: whichever run is current when it
    // arrives adds it (the runs in between wait out their hour with nothing).
    let mut expected = 0;
    for i in 0..50u64 {
        env.signal_after(
            HOUR * u32::try_from(2 * i).expect("small") + HOUR / 2,
            "add",
            &(i + 1),
        )?;
        expected += i + 1;
    }
    env.start::<Tallying>(&Tally {
        run: 1,
        last_run: 100,
        sum: 0,
    })?;
    let out = env.run_to_completion::<Tallying>().await?;
    assert_eq!(out?, expected, "every signal was counted once");
    assert_eq!(
        env.continued_histories().len(),
        99,
        "runs 1 to 99 continued"
    );
    for (i, history) in env.continued_histories().iter().enumerate() {
        assert!(
            history.len() <= 9,
            "run {} kept a short history: {} events",
            i + 1,
            history.len()
        );
        match history.last().map(|e| &e.kind) {
            Some(EventKind::RunContinuedAsNew {
                workflow,
                input,
                run_id,
                ..
            }) => {
                assert_eq!(workflow, "tallying");
                assert_eq!(input.decode::<Tally>()?.run, u32::try_from(i + 2)?);
                assert_eq!(run_id.as_str(), format!("test-run-{}", i + 2));
            }
            other => panic!("run {} ends with {other:?}", i + 1),
        }
        // Each run's history replays through the code to the same ending.
        let identity = crate::RunIdentity {
            workflow_id: WorkflowId::from("tally-1"),
            run_id: crate::RunId(format!("test-run-{}", i + 1)),
        };
        let report = Replayer::new(registry.clone()).replay(identity, history)?;
        assert!(matches!(report.outcome, ReplayOutcome::ContinuedAsNew(_)));
    }
    assert!(
        env.history().len() <= 9,
        "the last run's history is short too"
    );
    assert_eq!(
        env.identity().map(|i| i.run_id.as_str()),
        Some("test-run-100")
    );
    assert_eq!(
        env.published_status::<String>()?.as_deref(),
        Some("run 100")
    );
    assert!(env.is_finished());
    env.replay()?;
    Ok(())
}

#[test]
fn continuing_as_an_unregistered_workflow_is_an_error() {
    let mut env = TestEnv::new(Registry::new());
    let err = env
        .start::<Elsewhere>(&())
        .and_then(|_| env.run_to_completion_blocking::<Elsewhere>().map(|_| ()));
    match err {
        Err(TestEnvError::UnknownWorkflow { name }) => assert_eq!(name, "unknown"),
        other => panic!("expected UnknownWorkflow, got {other:?}"),
    }
}

/// Each run sleeps an hour and then takes at most one `add`, so signals pile up: the
/// ones a run did not take are handed on, and every one is counted once.
struct Slow;
impl Workflow for Slow {
    type Input = (u32, u64);
    type Output = u64;
    const NAME: &'static str = "slow";
    fn run(
        ctx: WorkflowContext,
        (run, sum): (u32, u64),
    ) -> LocalBoxFuture<'static, Result<u64, WorkflowError>> {
        Box::pin(async move {
            ctx.sleep(HOUR).await;
            let added: Option<u64> = ctx.signal_timeout("add", Duration::from_secs(60)).await?;
            match added {
                Some(v) => ctx.continue_as_new::<Slow>((run + 1, sum + v)).await,
                None => Ok(sum),
            }
        })
    }
}

#[tokio::test]
async fn signals_a_run_did_not_take_reach_the_next_runs() -> TestResult {
    let mut env = TestEnv::new(Registry::new().workflow::<Slow>());
    for v in 1..=5u64 {
        env.signal_after(Duration::from_secs(v), "add", &v)?;
    }
    env.start::<Slow>(&(1, 0))?;
    assert_eq!(env.run_to_completion::<Slow>().await??, 15);
    let handed_on: Vec<usize> = env
        .continued_histories()
        .iter()
        .map(|h| match h.last().map(|e| &e.kind) {
            Some(EventKind::RunContinuedAsNew { signals, .. }) => signals.len(),
            _ => usize::MAX,
        })
        .collect();
    assert_eq!(
        handed_on,
        [4, 3, 2, 1, 0],
        "each run takes one and hands on the rest"
    );
    Ok(())
}
