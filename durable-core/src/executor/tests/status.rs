//! `ctx.set_status(..)`: a value published for queries, outside history, so it issues no
//! command and adding it to code never breaks replay.

use super::*;

workflow!(Quiet = "progress", |ctx, _input: ()| -> u64 {
    let a = ctx.activity::<Echo>(1).await?;
    let b: u64 = ctx.signal("go").await?;
    Ok(a + b)
});

workflow!(Chatty = "progress", |ctx, _input: ()| -> u64 {
    ctx.set_status("starting")?;
    ctx.set_status("echoing 1")?;
    let a = ctx.activity::<Echo>(1).await?;
    ctx.set_status(&format!("echoed {a}, waiting for go"))?;
    let b: u64 = ctx.signal("go").await?;
    ctx.set_status(&("done", a + b))?;
    Ok(a + b)
});

fn status<T: DeserializeOwned>(machine: &mut RunMachine) -> Option<T> {
    machine
        .take_published_status()
        .map(|p| p.decode().expect("published values decode"))
}

/// 1 RunStarted, 2 ActivityScheduled 1 echo(1), 3 ActivityCompleted 1 (2),
/// 4 SignalAwaited 2 go, 5 SignalReceived go (3), 6 RunCompleted 5: the same events and
/// commands with and without the `set_status` calls; each activation publishes its last
/// value, and one that sets none publishes nothing.
#[test]
fn set_status_issues_no_command_and_the_latest_value_of_an_activation_wins() -> TestResult {
    let (mut chatty, issued) = Live::start::<Chatty>(&(), 1)?;
    assert_eq!(issued, numbered(vec![(1, schedule("echo", 1u64))]));
    assert_eq!(
        status::<String>(&mut chatty.machine).as_deref(),
        Some("echoing 1")
    );
    assert_eq!(status::<String>(&mut chatty.machine), None, "taken once");

    let issued = chatty.deliver(completed(1, 2u64))?;
    assert_eq!(issued, numbered(vec![(2, wait_signal("go"))]));
    assert_eq!(
        status::<String>(&mut chatty.machine).as_deref(),
        Some("echoed 2, waiting for go")
    );
    chatty.deliver(signal("other", 0u64))?;
    assert_eq!(status::<String>(&mut chatty.machine), None, "nothing set");
    chatty.deliver(signal("go", 3u64))?;
    assert_eq!(
        status::<(String, u64)>(&mut chatty.machine),
        Some(("done".to_owned(), 5))
    );
    assert_eq!(output::<u64>(&chatty.machine), 5);

    let (mut quiet, _) = Live::start::<Quiet>(&(), 1)?;
    quiet.deliver(completed(1, 2u64))?;
    quiet.deliver(signal("other", 0u64))?;
    quiet.deliver(signal("go", 3u64))?;
    assert_eq!(quiet.history, chatty.history, "set_status adds no event");
    Ok(())
}

/// A history recorded by code without `set_status` (1 RunStarted, 2 ActivityScheduled 1,
/// 3 ActivityCompleted 1, 4 SignalAwaited 2 go, 5 SignalReceived go, 6 RunCompleted)
/// replays with the calls added, finished or cut while waiting for the signal, and the
/// restored machine publishes what the code says now.
#[test]
fn a_history_recorded_before_set_status_replays_with_it_added() -> TestResult {
    let (mut quiet, _) = Live::start::<Quiet>(&(), 1)?;
    quiet.deliver(completed(1, 2u64))?;
    let waiting = quiet.history.clone();
    quiet.deliver(signal("go", 3u64))?;

    let report = replayer::<Chatty>().replay(identity(), &quiet.history)?;
    assert_eq!(report.outcome, ReplayOutcome::Completed(enc(&5u64)));

    let (mut restored, issued) = Live::restore::<Chatty>(&waiting)?;
    assert_eq!(issued, vec![]);
    assert_eq!(
        status::<String>(&mut restored.machine).as_deref(),
        Some("echoed 2, waiting for go")
    );
    restored.deliver(signal("go", 3u64))?;
    assert_eq!(restored.history, quiet.history);
    Ok(())
}
