//! Child runs: the `StartChild` command and its `ChildStarted` event, the outcomes that
//! answer it, and how replay checks them.

use super::*;
use crate::error::{KIND_CANCELLED, KIND_INVALID_WORKFLOW_ID, KIND_PAYLOAD};
use crate::event::{ChildCancelPolicy, ChildOptions};

workflow!(Double = "double", |_ctx, n: u64| -> u64 { Ok(n * 2) });
workflow!(Triple = "triple", |_ctx, n: u64| -> u64 { Ok(n * 3) });

workflow!(OneChild = "one_child", |ctx, n: u64| -> u64 {
    let doubled = ctx.child::<Double>(n).await?;
    Ok(doubled + 1)
});

workflow!(OneChildTripled = "one_child", |ctx, n: u64| -> u64 {
    let tripled = ctx.child::<Triple>(n).await?;
    Ok(tripled + 1)
});

workflow!(FanOut = "fan_out", |ctx, n: u64| -> Vec<u64> {
    let calls = (1..=n).map(|i| {
        ctx.child::<Double>(i)
            .workflow_id(format!("part-{i}"))
            .cancel_policy(if i % 2 == 0 {
                ChildCancelPolicy::Abandon
            } else {
                ChildCancelPolicy::RequestCancel
            })
    });
    let results = futures::future::join_all(calls).await;
    results.into_iter().collect()
});

workflow!(Compensating = "compensating", |ctx, n: u64| -> String {
    match ctx
        .child::<Double>(n)
        .execution_timeout(Duration::from_secs(5))
        .await
    {
        Ok(v) => Ok(format!("doubled {v}")),
        Err(e) if e.is(KIND_CANCELLED) => {
            ctx.activity::<Echo>(n).await?;
            Ok(format!("compensated after: {}", e.message()))
        }
        Err(e) => Err(e),
    }
});

workflow!(Routed = "routed", |ctx, n: u64| -> u64 {
    let on_gpu = ctx.child::<Double>(n).task_queue("gpu").await?;
    let on_default = ctx.child::<Triple>(n).task_queue("default").await?;
    let inherited = ctx.child::<Double>(n + 1).await?;
    Ok(on_gpu + on_default + inherited)
});

workflow!(BadId = "bad_id", |ctx, _n: u64| -> u64 {
    ctx.child::<Double>(1).workflow_id("").await
});

fn child_completed(seq: u32, output: impl Serialize) -> EventKind {
    EventKind::ChildCompleted {
        seq: CommandSeq(seq),
        output: enc(&output),
    }
}

fn child_failed(seq: u32, kind: &str, message: &str) -> EventKind {
    EventKind::ChildFailed {
        seq: CommandSeq(seq),
        error: WorkflowError::new(kind, message),
    }
}

/// The first activation issues the start with the derived id, a seed and the default
/// policy; the child's output reaches the code typed.
#[test]
fn a_child_start_is_a_command_and_its_output_comes_back() -> TestResult {
    let (mut live, issued) = Live::start::<OneChild>(&20, 1)?;
    assert_eq!(issued.len(), 1);
    let Command::StartChild {
        workflow,
        workflow_id,
        input,
        options,
        ..
    } = &issued[0].1
    else {
        panic!("expected StartChild, got {:?}", issued[0].1);
    };
    assert_eq!(workflow, "double");
    assert_eq!(
        workflow_id.as_str(),
        "wf-1/run-1/1",
        "{{parent id}}/{{run id}}/{{seq}}"
    );
    assert_eq!(input, &enc(&20u64));
    assert_eq!(options, &ChildOptions::default());
    assert_eq!(options.cancel_policy, ChildCancelPolicy::RequestCancel);
    assert_eq!(kinds(&live.history), ["RunStarted", "ChildStarted"]);
    live.deliver(child_completed(1, 40u64))?;
    assert_eq!(output::<u64>(&live.machine), 41);
    assert_eq!(
        kinds(&live.history),
        [
            "RunStarted",
            "ChildStarted",
            "ChildCompleted",
            "RunCompleted"
        ]
    );
    // The recorded history replays to the same output without starting anything.
    let report = replayer::<OneChild>().replay(identity(), &live.history)?;
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc(&41u64)));
    Ok(())
}

/// The seed a child gets is the same on every run of the same history.
#[test]
fn a_child_seed_is_deterministic() -> TestResult {
    let (_, first) = Live::start::<OneChild>(&20, 9)?;
    let (_, second) = Live::start::<OneChild>(&20, 9)?;
    let (_, other) = Live::start::<OneChild>(&20, 10)?;
    let seed = |issued: &Issued| match &issued[0].1 {
        Command::StartChild { seed, .. } => *seed,
        other => panic!("expected StartChild, got {other:?}"),
    };
    assert_eq!(seed(&first), seed(&second));
    assert_ne!(
        seed(&first),
        seed(&other),
        "another parent seed, another child seed"
    );
    Ok(())
}

/// A child's failure reaches the parent as a typed error with the child's kind and
/// message; the parent's `?` fails the run with it.
#[test]
fn a_child_failure_keeps_its_kind_and_message() -> TestResult {
    let (mut live, _) = Live::start::<OneChild>(&20, 1)?;
    live.deliver(child_failed(1, "OutOfStock", "sku 7 is gone"))?;
    match live.machine.outcome() {
        Some(Err(e)) => {
            assert_eq!(e.kind(), "OutOfStock");
            assert_eq!(e.message(), "sku 7 is gone");
        }
        other => panic!("expected a failed run, got {other:?}"),
    }
    Ok(())
}

/// A cancelled child is a failure of kind `Cancelled` the parent can catch and
/// compensate for.
#[test]
fn a_cancelled_child_can_be_caught() -> TestResult {
    let (mut live, issued) = Live::start::<Compensating>(&4, 1)?;
    match &issued[0].1 {
        Command::StartChild { options, .. } => {
            assert_eq!(options.execution_timeout_ms, Some(5_000));
        }
        other => panic!("expected StartChild, got {other:?}"),
    }
    let issued = live.deliver(child_failed(
        1,
        KIND_CANCELLED,
        "the run was cancelled: stop",
    ))?;
    assert_eq!(issued, numbered(vec![(2, schedule("echo", 4u64))]));
    live.deliver(completed(2, 4u64))?;
    assert_eq!(
        output::<String>(&live.machine),
        "compensated after: the run was cancelled: stop"
    );
    Ok(())
}

/// Fan-out: every child starts in the first activation, results come back in any order
/// and are joined in issue order.
#[test]
fn fan_out_starts_every_child_at_once_and_joins_in_order() -> TestResult {
    let (mut live, issued) = Live::start::<FanOut>(&4, 1)?;
    let starts: Vec<(String, ChildCancelPolicy)> = issued
        .iter()
        .map(|(_, c)| match c {
            Command::StartChild {
                workflow_id,
                options,
                ..
            } => (workflow_id.0.clone(), options.cancel_policy),
            other => panic!("expected StartChild, got {other:?}"),
        })
        .collect();
    assert_eq!(
        starts,
        [
            ("part-1".to_owned(), ChildCancelPolicy::RequestCancel),
            ("part-2".to_owned(), ChildCancelPolicy::Abandon),
            ("part-3".to_owned(), ChildCancelPolicy::RequestCancel),
            ("part-4".to_owned(), ChildCancelPolicy::Abandon),
        ]
    );
    for seq in [3, 1, 4, 2] {
        assert!(live.machine.outcome().is_none());
        live.deliver(child_completed(seq, u64::from(seq) * 2))?;
    }
    assert_eq!(output::<Vec<u64>>(&live.machine), [2, 4, 6, 8]);
    let report = replayer::<FanOut>().replay(identity(), &live.history)?;
    assert_eq!(
        report.outcome,
        ReplayOutcome::Completed(enc(&vec![2u64, 4, 6, 8]))
    );
    Ok(())
}

/// History (old code: `ctx.child::<Double>(n)`):
///   1 RunStarted, 2 ChildStarted 1 double(20)
/// New code: `ctx.child::<Triple>(n)`: non-determinism at command 1, naming both.
#[test]
fn replay_reports_a_changed_child_workflow() -> TestResult {
    let (live, _) = Live::start::<OneChild>(&20, 1)?;
    match restore::<OneChildTripled>(&live.history) {
        Err(ReplayError::Nondeterminism {
            seq,
            recorded,
            issued,
        }) => {
            assert_eq!(seq, CommandSeq(1));
            assert_eq!(recorded.kind, "StartChild");
            assert_eq!(recorded.name, "double");
            assert_eq!(issued.name, "triple");
        }
        other => panic!("expected Nondeterminism, got {other:?}"),
    }
    Ok(())
}

/// History: 1 RunStarted (input 20), 2 ChildStarted 1 double(20). The same code with
/// input 21 recorded at the same number: a changed input is non-determinism too.
#[test]
fn replay_reports_a_changed_child_input() -> TestResult {
    let (live, _) = Live::start::<OneChild>(&20, 1)?;
    let mut history = live.history.clone();
    if let EventKind::ChildStarted { input, .. } = &mut history[1].kind {
        *input = enc(&21u64);
    }
    match restore::<OneChild>(&history) {
        Err(ReplayError::Nondeterminism {
            recorded, issued, ..
        }) => {
            assert_eq!(recorded.kind, "StartChild");
            assert_ne!(recorded.input_digest, issued.input_digest);
        }
        other => panic!("expected Nondeterminism, got {other:?}"),
    }
    Ok(())
}

/// A recorded child start is matched by workflow and input only: the recorded id, seed
/// and options stand (a run in flight keeps its child when the code changes a default).
#[test]
fn replay_keeps_the_recorded_child_id_and_options() -> TestResult {
    let (live, _) = Live::start::<OneChild>(&20, 1)?;
    let mut history = live.history.clone();
    if let EventKind::ChildStarted {
        workflow_id,
        options,
        seed,
        ..
    } = &mut history[1].kind
    {
        *workflow_id = WorkflowId("chosen-by-old-code".into());
        options.cancel_policy = ChildCancelPolicy::Abandon;
        *seed = 12345;
    }
    let (mut restored, issued) = Live::restore::<OneChild>(&history)?;
    assert_eq!(issued, vec![], "nothing new to record");
    restored.deliver(child_completed(1, 40u64))?;
    assert_eq!(output::<u64>(&restored.machine), 41);
    Ok(())
}

/// The code awaits a child where history recorded a timer: non-determinism, and an
/// outcome for a command that is not a child start is a malformed history.
#[test]
fn a_child_outcome_for_another_command_is_malformed() -> TestResult {
    let history = HistoryBuilder::start("sequential", 1u64, 1)
        .scheduled(1, "echo", 1u64)
        .push(child_completed(1, 2u64))
        .build();
    match replayer::<Sequential>().replay(identity(), &history) {
        Err(ReplayError::Malformed { event, reason }) => {
            assert_eq!(event, EventId(3));
            assert!(reason.contains("child run's outcome"), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    Ok(())
}

/// An id no store would accept fails the call at once, without a command.
#[test]
fn an_invalid_child_id_fails_without_a_command() -> TestResult {
    let (live, issued) = Live::start::<BadId>(&0, 1)?;
    assert_eq!(issued, vec![]);
    match live.machine.outcome() {
        Some(Err(e)) => assert_eq!(e.kind(), KIND_INVALID_WORKFLOW_ID),
        other => panic!("expected a failed run, got {other:?}"),
    }
    Ok(())
}

/// A child output of the wrong type is a `PayloadError` in the parent, not a panic.
#[test]
fn a_child_output_of_the_wrong_type_is_a_payload_error() -> TestResult {
    let (mut live, _) = Live::start::<OneChild>(&20, 1)?;
    live.deliver(child_completed(1, "not a number"))?;
    match live.machine.outcome() {
        Some(Err(e)) => assert_eq!(e.kind(), KIND_PAYLOAD),
        other => panic!("expected a failed run, got {other:?}"),
    }
    Ok(())
}

/// `.task_queue(..)` is recorded in the child's start options (`"default"` as the empty
/// name, none when the child takes its parent's queue); a queue changed in the code is
/// routing, not divergence: the recorded start stands.
#[test]
fn a_child_task_queue_is_recorded_and_not_compared_on_replay() -> TestResult {
    let (mut live, issued) = Live::start::<Routed>(&1, 1)?;
    let queue_of = |cmd: &Command| match cmd {
        Command::StartChild { options, .. } => options.task_queue.clone(),
        other => panic!("expected StartChild, got {other:?}"),
    };
    assert_eq!(issued.len(), 1);
    assert_eq!(queue_of(&issued[0].1), Some("gpu".to_owned()));
    let issued = live.deliver(child_completed(1, 2u64))?;
    assert_eq!(
        queue_of(&issued[0].1),
        Some(String::new()),
        "\"default\" is the default queue"
    );
    let issued = live.deliver(child_completed(2, 3u64))?;
    assert_eq!(
        queue_of(&issued[0].1),
        None,
        "no option: the parent's queue"
    );
    let mut history = live.history.clone();
    if let EventKind::ChildStarted { options, .. } = &mut history[1].kind {
        options.task_queue = Some("cpu".to_owned());
    }
    let (mut restored, issued) = Live::restore::<Routed>(&history)?;
    assert_eq!(issued, vec![], "nothing new to record");
    restored.deliver(child_completed(3, 4u64))?;
    assert_eq!(output::<u64>(&restored.machine), 9);
    Ok(())
}
