//! Small workflows whose recorded histories form the non-determinism corpus, each with
//! alternative versions under the same name: the code changes a team might deploy.
//!
//! `v0` is the recorded version. Every other version is registered under the same name
//! and replayed against the `v0` history; [`MUTANTS`] says what replay must report.

use durable::prelude::*;
use futures::future::{Either, join_all, select};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

// --- activities --------------------------------------------------------------------

/// Tags its input with `a:`.
#[activity]
pub(crate) async fn step_a(_ctx: ActivityContext, s: String) -> Result<String, ActivityError> {
    Ok(format!("a:{s}"))
}

/// Tags its input with `b:`.
#[activity]
pub(crate) async fn step_b(_ctx: ActivityContext, s: String) -> Result<String, ActivityError> {
    Ok(format!("b:{s}"))
}

/// Tags its input with `c:`.
#[activity]
pub(crate) async fn step_c(_ctx: ActivityContext, s: String) -> Result<String, ActivityError> {
    Ok(format!("c:{s}"))
}

/// Returns its input.
#[activity]
pub(crate) async fn echo(_ctx: ActivityContext, s: String) -> Result<String, ActivityError> {
    Ok(s)
}

/// `step_b` renamed in the history.
#[activity(name = "step_b_v2")]
pub(crate) async fn step_b_renamed(
    _ctx: ActivityContext,
    s: String,
) -> Result<String, ActivityError> {
    Ok(format!("b:{s}"))
}

/// Fails its first attempt (retryable), succeeds on the second.
#[activity]
pub(crate) async fn flaky(ctx: ActivityContext, s: String) -> Result<String, ActivityError> {
    if ctx.attempt() < 2 {
        return Err(ActivityError::retryable(
            "Flaky",
            format!("attempt {} of {s} failed", ctx.attempt()),
        ));
    }
    Ok(format!("flaky:{s}"))
}

/// Always refuses, for good.
#[activity]
pub(crate) async fn reject(_ctx: ActivityContext, s: String) -> Result<String, ActivityError> {
    Err(ActivityError::non_retryable(
        "Rejected",
        format!("{s} was refused"),
    ))
}

/// `reject` with another error text (the activity is not re-run on replay).
#[activity(name = "reject")]
pub(crate) async fn reject_reworded(
    _ctx: ActivityContext,
    s: String,
) -> Result<String, ActivityError> {
    Err(ActivityError::non_retryable(
        "Rejected",
        format!("we cannot accept {s}"),
    ))
}

fn activities() -> Registry {
    Registry::new()
        .activity::<step_a>()
        .activity::<step_b>()
        .activity::<step_c>()
        .activity::<echo>()
        .activity::<step_b_renamed>()
        .activity::<flaky>()
        .activity::<reject>()
}

// --- hd.seq: three activities in a row ---------------------------------------------

#[workflow(name = "hd.seq")]
pub(crate) async fn seq_v0(ctx: WorkflowContext, x: String) -> Result<Vec<String>, WorkflowError> {
    let a = ctx.activity::<step_a>(x.clone()).await?;
    let b = ctx.activity::<step_b>(x.clone()).await?;
    let c = ctx.activity::<step_c>(x).await?;
    Ok(vec![a, b, c])
}

#[workflow(name = "hd.seq")]
async fn seq_reordered(ctx: WorkflowContext, x: String) -> Result<Vec<String>, WorkflowError> {
    let b = ctx.activity::<step_b>(x.clone()).await?;
    let a = ctx.activity::<step_a>(x.clone()).await?;
    let c = ctx.activity::<step_c>(x).await?;
    Ok(vec![a, b, c])
}

#[workflow(name = "hd.seq")]
async fn seq_renamed(ctx: WorkflowContext, x: String) -> Result<Vec<String>, WorkflowError> {
    let a = ctx.activity::<step_a>(x.clone()).await?;
    let b = ctx.activity::<step_b_renamed>(x.clone()).await?;
    let c = ctx.activity::<step_c>(x).await?;
    Ok(vec![a, b, c])
}

#[workflow(name = "hd.seq")]
async fn seq_input_changed(ctx: WorkflowContext, x: String) -> Result<Vec<String>, WorkflowError> {
    let a = ctx.activity::<step_a>(x.clone()).await?;
    let b = ctx.activity::<step_b>(format!("{x}!")).await?;
    let c = ctx.activity::<step_c>(x).await?;
    Ok(vec![a, b, c])
}

#[workflow(name = "hd.seq")]
async fn seq_inserted(ctx: WorkflowContext, x: String) -> Result<Vec<String>, WorkflowError> {
    let a = ctx.activity::<step_a>(x.clone()).await?;
    ctx.activity::<echo>("audit".into()).await?;
    let b = ctx.activity::<step_b>(x.clone()).await?;
    let c = ctx.activity::<step_c>(x).await?;
    Ok(vec![a, b, c])
}

#[workflow(name = "hd.seq")]
async fn seq_last_removed(ctx: WorkflowContext, x: String) -> Result<Vec<String>, WorkflowError> {
    let a = ctx.activity::<step_a>(x.clone()).await?;
    let b = ctx.activity::<step_b>(x).await?;
    Ok(vec![a, b])
}

#[workflow(name = "hd.seq")]
async fn seq_appended(ctx: WorkflowContext, x: String) -> Result<Vec<String>, WorkflowError> {
    let a = ctx.activity::<step_a>(x.clone()).await?;
    let b = ctx.activity::<step_b>(x.clone()).await?;
    let c = ctx.activity::<step_c>(x).await?;
    ctx.activity::<echo>("receipt".into()).await?;
    Ok(vec![a, b, c])
}

#[workflow(name = "hd.seq")]
async fn seq_timer_added(ctx: WorkflowContext, x: String) -> Result<Vec<String>, WorkflowError> {
    let a = ctx.activity::<step_a>(x.clone()).await?;
    ctx.sleep(Duration::from_millis(5)).await;
    let b = ctx.activity::<step_b>(x.clone()).await?;
    let c = ctx.activity::<step_c>(x).await?;
    Ok(vec![a, b, c])
}

// --- hd.timer: timers around an activity -------------------------------------------

#[workflow(name = "hd.timer")]
pub(crate) async fn timer_v0(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    ctx.sleep(Duration::from_millis(30)).await;
    let s = ctx.activity::<echo>("after".into()).await?;
    ctx.sleep(Duration::from_millis(20)).await;
    Ok(s)
}

#[workflow(name = "hd.timer")]
async fn timer_removed(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let s = ctx.activity::<echo>("after".into()).await?;
    ctx.sleep(Duration::from_millis(20)).await;
    Ok(s)
}

#[workflow(name = "hd.timer")]
async fn timer_changed(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    ctx.sleep(Duration::from_millis(31)).await;
    let s = ctx.activity::<echo>("after".into()).await?;
    ctx.sleep(Duration::from_millis(20)).await;
    Ok(s)
}

// --- hd.signal: an activity, a signal, an activity ---------------------------------

#[workflow(name = "hd.signal")]
pub(crate) async fn signal_v0(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    ctx.activity::<echo>("before".into()).await?;
    let n: u32 = ctx.signal("approve").await?;
    Ok(ctx.activity::<echo>(format!("approved {n}")).await?)
}

#[workflow(name = "hd.signal")]
async fn signal_renamed(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    ctx.activity::<echo>("before".into()).await?;
    let n: u32 = ctx.signal("approval").await?;
    Ok(ctx.activity::<echo>(format!("approved {n}")).await?)
}

#[workflow(name = "hd.signal")]
async fn signal_removed(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    ctx.activity::<echo>("before".into()).await?;
    Ok(ctx.activity::<echo>("approved 1".into()).await?)
}

// --- hd.select: the first of two activities wins -----------------------------------

#[workflow(name = "hd.select")]
pub(crate) async fn select_v0(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let left = ctx.activity::<echo>("left".into());
    let right = ctx.activity::<step_b>("right".into());
    let winner = match select(left, right).await {
        Either::Left((v, _)) | Either::Right((v, _)) => v?,
    };
    Ok(ctx.activity::<step_c>(winner).await?)
}

#[workflow(name = "hd.select")]
async fn select_swapped(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let left = ctx.activity::<echo>("left".into());
    let right = ctx.activity::<step_b>("right".into());
    let winner = match select(right, left).await {
        Either::Left((v, _)) | Either::Right((v, _)) => v?,
    };
    Ok(ctx.activity::<step_c>(winner).await?)
}

// --- hd.random: a recorded random number -------------------------------------------

#[workflow(name = "hd.random")]
pub(crate) async fn random_v0(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let r: u32 = ctx.random();
    Ok(ctx.activity::<echo>(format!("r={}", r % 1000)).await?)
}

#[workflow(name = "hd.random")]
async fn random_extra(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let r: u32 = ctx.random();
    let s: u32 = ctx.random();
    Ok(ctx
        .activity::<echo>(format!("r={}", (r ^ s) % 1000))
        .await?)
}

#[workflow(name = "hd.random")]
async fn random_removed(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    Ok(ctx.activity::<echo>("r=4".into()).await?)
}

// --- hd.patch: recorded with a patched change ----------------------------------------

#[workflow(name = "hd.patch")]
pub(crate) async fn patch_v0(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let mut out = vec![ctx.activity::<echo>("a".into()).await?];
    if ctx.patched("add-b") {
        out.push(ctx.activity::<step_b>("b".into()).await?);
    }
    out.push(ctx.activity::<step_c>("c".into()).await?);
    Ok(out)
}

/// The guard removed while runs that recorded its marker are still in flight.
#[workflow(name = "hd.patch")]
async fn patch_guard_removed(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let mut out = vec![ctx.activity::<echo>("a".into()).await?];
    out.push(ctx.activity::<step_b>("b".into()).await?);
    out.push(ctx.activity::<step_c>("c".into()).await?);
    Ok(out)
}

// --- hd.legacy: recorded before a change -------------------------------------------

#[workflow(name = "hd.legacy")]
pub(crate) async fn legacy_v0(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let a = ctx.activity::<echo>("a".into()).await?;
    let c = ctx.activity::<step_c>("c".into()).await?;
    Ok(vec![a, c])
}

/// The change deployed without a `patched` guard.
#[workflow(name = "hd.legacy")]
async fn legacy_unguarded(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let a = ctx.activity::<echo>("a".into()).await?;
    let b = ctx.activity::<step_b>("b".into()).await?;
    let c = ctx.activity::<step_c>("c".into()).await?;
    Ok(vec![a, b, c])
}

/// The same change behind `ctx.patched`: old runs keep their path (no error).
#[workflow(name = "hd.legacy")]
async fn legacy_guarded(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let mut out = vec![ctx.activity::<echo>("a".into()).await?];
    if ctx.patched("add-b") {
        out.push(ctx.activity::<step_b>("b".into()).await?);
    }
    out.push(ctx.activity::<step_c>("c".into()).await?);
    Ok(out)
}

// --- hd.fanout: three activities at once -------------------------------------------

#[workflow(name = "hd.fanout")]
pub(crate) async fn fanout_v0(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let calls: Vec<_> = (0..3)
        .map(|i| ctx.activity::<echo>(format!("part {i}")))
        .collect();
    let mut out = Vec::new();
    for r in join_all(calls).await {
        out.push(r?);
    }
    Ok(out)
}

#[workflow(name = "hd.fanout")]
async fn fanout_narrower(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let calls: Vec<_> = (0..2)
        .map(|i| ctx.activity::<echo>(format!("part {i}")))
        .collect();
    let mut out = Vec::new();
    for r in join_all(calls).await {
        out.push(r?);
    }
    Ok(out)
}

// --- hd.failure: a refused activity, a compensation, a failed run ------------------

#[workflow(name = "hd.failure")]
pub(crate) async fn failure_v0(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    match ctx.activity::<reject>("order-7".into()).await {
        Ok(v) => Ok(v),
        Err(e) => {
            ctx.activity::<step_c>(e.kind().to_owned()).await?;
            Err(WorkflowError::new(
                "Refused",
                format!("refused: {}", e.message()),
            ))
        }
    }
}

/// Only the text of the run's error changed (no error on replay).
#[workflow(name = "hd.failure")]
async fn failure_reworded(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    match ctx.activity::<reject>("order-7".into()).await {
        Ok(v) => Ok(v),
        Err(e) => {
            ctx.activity::<step_c>(e.kind().to_owned()).await?;
            Err(WorkflowError::new(
                "Refused",
                format!("the order could not be accepted ({})", e.message()),
            ))
        }
    }
}

// --- hd.retry: a retried activity ----------------------------------------------------

#[workflow(name = "hd.retry")]
pub(crate) async fn retry_v0(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    Ok(ctx
        .activity::<flaky>("x".into())
        .retry(RetryPolicy::exponential(Duration::from_millis(5)).max_attempts(3))
        .await?)
}

/// Another retry policy and timeouts: not part of a command's identity (no error).
#[workflow(name = "hd.retry")]
async fn retry_policy_changed(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    Ok(ctx
        .activity::<flaky>("x".into())
        .retry(
            RetryPolicy::exponential(Duration::from_millis(50))
                .backoff(3.0)
                .max_attempts(7)
                .non_retryable(["Fatal"]),
        )
        .start_to_close(Duration::from_secs(30))
        .await?)
}

// --- hd.loop: timers and activities in a loop ----------------------------------------

#[workflow(name = "hd.loop")]
pub(crate) async fn loop_v0(ctx: WorkflowContext) -> Result<u32, WorkflowError> {
    let mut n = 0;
    for i in 0..3_u32 {
        ctx.sleep(Duration::from_millis(5)).await;
        ctx.activity::<echo>(i.to_string()).await?;
        n += 1;
    }
    Ok(n)
}

#[workflow(name = "hd.loop")]
async fn loop_longer(ctx: WorkflowContext) -> Result<u32, WorkflowError> {
    let mut n = 0;
    for i in 0..4_u32 {
        ctx.sleep(Duration::from_millis(5)).await;
        ctx.activity::<echo>(i.to_string()).await?;
        n += 1;
    }
    Ok(n)
}

// --- hd.side: a side effect ----------------------------------------------------------

#[workflow(name = "hd.side")]
pub(crate) async fn side_v0(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let limit: u32 = ctx.side_effect("config", || 7);
    Ok(ctx.activity::<echo>(format!("limit {limit}")).await?)
}

#[workflow(name = "hd.side")]
async fn side_renamed(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let limit: u32 = ctx.side_effect("settings", || 7);
    Ok(ctx.activity::<echo>(format!("limit {limit}")).await?)
}

/// The side effect now computes another value: replay returns the recorded one.
#[workflow(name = "hd.side")]
async fn side_value_changed(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let limit: u32 = ctx.side_effect("config", || 8);
    Ok(ctx.activity::<echo>(format!("limit {limit}")).await?)
}

// --- hd.map: one activity per map entry ---------------------------------------------

const SKUS: [&str; 8] = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"];

#[workflow(name = "hd.map")]
pub(crate) async fn map_v0(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let stock: BTreeMap<&str, u32> = SKUS.iter().map(|s| (*s, 1)).collect();
    let mut out = Vec::new();
    for (sku, qty) in &stock {
        out.push(ctx.activity::<echo>(format!("{sku}:{qty}")).await?);
    }
    Ok(out)
}

/// The map became a `HashMap`: its order differs between instances.
#[workflow(name = "hd.map")]
async fn map_hashmap(ctx: WorkflowContext) -> Result<Vec<String>, WorkflowError> {
    let stock: HashMap<&str, u32> = SKUS.iter().map(|s| (*s, 1)).collect();
    let mut out = Vec::new();
    for (sku, qty) in &stock {
        out.push(ctx.activity::<echo>(format!("{sku}:{qty}")).await?);
    }
    Ok(out)
}

// --- hd.race: a signal against a timer -----------------------------------------------

#[workflow(name = "hd.race")]
pub(crate) async fn race_v0(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let go = ctx.signal::<()>("go");
    let timer = ctx.sleep(Duration::from_millis(20));
    match select(go, timer).await {
        Either::Left((r, _)) => {
            r?;
            Ok("signal".into())
        }
        Either::Right(_) => Ok("timer".into()),
    }
}

/// `select` became `join`: the code now also waits for the signal history never had.
#[workflow(name = "hd.race")]
async fn race_joined(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let go = ctx.signal::<()>("go");
    let timer = ctx.sleep(Duration::from_millis(20));
    let (r, ()) = futures::future::join(go, timer).await;
    r?;
    Ok("both".into())
}

/// The code stops waiting at once, where history goes on to the timer firing.
#[workflow(name = "hd.race")]
async fn race_early(ctx: WorkflowContext) -> Result<String, WorkflowError> {
    let go = ctx.signal::<()>("go");
    let timer = ctx.sleep(Duration::from_millis(20));
    let _ = select(select(go, timer), futures::future::ready(())).await;
    Ok("impatient".into())
}

// --- hd.interleave: for the interleaving property ------------------------------------

/// Two activities at once, a random number, a signal raced against a timer, then up to
/// two more signals with time-outs: every kind of inbound event, in any order.
#[workflow(name = "hd.interleave")]
pub(crate) async fn interleave(ctx: WorkflowContext, tag: u32) -> Result<String, WorkflowError> {
    let (x, y) = futures::future::join(
        ctx.activity::<echo>(format!("x{tag}")),
        ctx.activity::<step_b>(format!("y{tag}")),
    )
    .await;
    let mut out = format!(
        "{}|{}",
        x.unwrap_or_else(|e| e.kind().to_owned()),
        y.unwrap_or_default()
    );
    let r: u8 = ctx.random();
    let go = ctx.signal::<u32>("go");
    let timer = ctx.sleep(Duration::from_millis(u64::from(r % 3) + 1));
    match select(go, timer).await {
        Either::Left((v, _)) => {
            let v = v.unwrap_or(0);
            out.push_str(
                &ctx.activity::<step_c>(format!("go {v}"))
                    .await
                    .unwrap_or_default(),
            );
        }
        Either::Right(_) => out.push_str("|timeout"),
    }
    for _ in 0..2 {
        if let Ok(Some(v)) = ctx
            .signal_timeout::<u32>("item", Duration::from_millis(2))
            .await
        {
            out.push_str(&format!("|item {v}"));
        }
    }
    if ctx.is_cancel_requested() {
        out.push_str("|cancelled");
    }
    Ok(out)
}

// --- tables --------------------------------------------------------------------------

/// The recorded version of every corpus workflow, with the activities.
pub(crate) fn base_registry() -> Registry {
    activities()
        .workflow::<seq_v0>()
        .workflow::<timer_v0>()
        .workflow::<signal_v0>()
        .workflow::<select_v0>()
        .workflow::<random_v0>()
        .workflow::<patch_v0>()
        .workflow::<legacy_v0>()
        .workflow::<fanout_v0>()
        .workflow::<failure_v0>()
        .workflow::<retry_v0>()
        .workflow::<loop_v0>()
        .workflow::<side_v0>()
        .workflow::<map_v0>()
        .workflow::<race_v0>()
        .workflow::<interleave>()
}

/// What replaying a `v0` history with a changed version must report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// `ReplayError::Nondeterminism` at this command.
    Nondeterminism(u32),
    /// `ReplayError::MissingCommand` at this command.
    Missing(u32),
    /// `ReplayError::ExtraCommand` at this command.
    Extra(u32),
    /// `ReplayError::UnfinishedRun`.
    Unfinished,
    /// `ReplayError::EarlyFinish`.
    EarlyFinish,
    /// `ReplayError::Nondeterminism` at whichever command the order first differs.
    NondeterminismSomewhere,
    /// No error: the change is compatible.
    Clean,
}

/// A changed version of a corpus workflow.
pub(crate) struct Mutant {
    /// Its name for the host CLI and in reports.
    pub(crate) id: &'static str,
    /// The change, as a person would describe it.
    pub(crate) change: &'static str,
    /// The workflow whose `v0` history it replays.
    pub(crate) workflow: &'static str,
    pub(crate) expect: Expect,
    registry: fn() -> Registry,
}

impl Mutant {
    /// The registry of a worker binary that deployed this change.
    pub(crate) fn registry(&self) -> Registry {
        (self.registry)()
    }
}

macro_rules! mutant {
    ($id:literal, $change:literal, $wf:literal, $expect:expr, $handle:ident) => {
        Mutant {
            id: $id,
            change: $change,
            workflow: $wf,
            expect: $expect,
            registry: || activities().workflow::<$handle>(),
        }
    };
}

/// Every changed version and what replay must say about it.
pub(crate) const MUTANTS: &[Mutant] = &[
    mutant!(
        "reorder",
        "reorder two activities",
        "hd.seq",
        Expect::Nondeterminism(1),
        seq_reordered
    ),
    mutant!(
        "rename-activity",
        "rename an activity",
        "hd.seq",
        Expect::Nondeterminism(2),
        seq_renamed
    ),
    mutant!(
        "change-input",
        "change an activity's input",
        "hd.seq",
        Expect::Nondeterminism(2),
        seq_input_changed
    ),
    mutant!(
        "insert-before",
        "insert an activity before another",
        "hd.seq",
        Expect::Nondeterminism(2),
        seq_inserted
    ),
    mutant!(
        "remove-last",
        "remove the last command",
        "hd.seq",
        Expect::Missing(3),
        seq_last_removed
    ),
    mutant!(
        "append",
        "add a command after the last one",
        "hd.seq",
        Expect::Extra(4),
        seq_appended
    ),
    mutant!(
        "add-timer",
        "add a timer",
        "hd.seq",
        Expect::Nondeterminism(2),
        seq_timer_added
    ),
    mutant!(
        "remove-timer",
        "remove a timer",
        "hd.timer",
        Expect::Nondeterminism(1),
        timer_removed
    ),
    mutant!(
        "change-timer",
        "change a timer's duration",
        "hd.timer",
        Expect::Nondeterminism(1),
        timer_changed
    ),
    mutant!(
        "other-signal",
        "wait for a signal of another name",
        "hd.signal",
        Expect::Nondeterminism(2),
        signal_renamed
    ),
    mutant!(
        "remove-signal",
        "stop waiting for a signal",
        "hd.signal",
        Expect::Nondeterminism(2),
        signal_removed
    ),
    mutant!(
        "swap-select",
        "swap the branches of a deterministic select",
        "hd.select",
        Expect::Nondeterminism(1),
        select_swapped
    ),
    mutant!(
        "extra-random",
        "call ctx.random() once more",
        "hd.random",
        Expect::Nondeterminism(2),
        random_extra
    ),
    mutant!(
        "remove-random",
        "remove a ctx.random() call",
        "hd.random",
        Expect::Nondeterminism(1),
        random_removed
    ),
    mutant!(
        "remove-patch-guard",
        "remove a ctx.patched guard, keeping the new code",
        "hd.patch",
        Expect::Nondeterminism(2),
        patch_guard_removed
    ),
    mutant!(
        "unguarded-change",
        "add a step without ctx.patched",
        "hd.legacy",
        Expect::Nondeterminism(2),
        legacy_unguarded
    ),
    mutant!(
        "narrower-fanout",
        "fan out to fewer activities",
        "hd.fanout",
        Expect::Missing(3),
        fanout_narrower
    ),
    mutant!(
        "longer-loop",
        "one more loop iteration",
        "hd.loop",
        Expect::Extra(7),
        loop_longer
    ),
    mutant!(
        "rename-side-effect",
        "rename a side effect",
        "hd.side",
        Expect::Nondeterminism(1),
        side_renamed
    ),
    mutant!(
        "hashmap-order",
        "iterate a HashMap instead of a BTreeMap",
        "hd.map",
        Expect::NondeterminismSomewhere,
        map_hashmap
    ),
    mutant!(
        "select-to-join",
        "turn a select into a join",
        "hd.race",
        Expect::Unfinished,
        race_joined
    ),
    mutant!(
        "finish-early",
        "finish before history does",
        "hd.race",
        Expect::EarlyFinish,
        race_early
    ),
    mutant!(
        "guarded-change",
        "add a step behind ctx.patched",
        "hd.legacy",
        Expect::Clean,
        legacy_guarded
    ),
    mutant!(
        "retry-policy",
        "change the retry policy and timeouts",
        "hd.retry",
        Expect::Clean,
        retry_policy_changed
    ),
    mutant!(
        "error-text",
        "change only the text of the run's error",
        "hd.failure",
        Expect::Clean,
        failure_reworded
    ),
    mutant!(
        "side-effect-value",
        "change the value a side effect computes",
        "hd.side",
        Expect::Clean,
        side_value_changed
    ),
    Mutant {
        id: "activity-error-text",
        change: "change only the text of an activity's error",
        workflow: "hd.failure",
        expect: Expect::Clean,
        registry: || {
            Registry::new()
                .activity::<step_c>()
                .activity::<reject_reworded>()
                .workflow::<failure_v0>()
        },
    },
];

/// The registry the host CLI links, by name: `base`, or a mutant's id.
pub(crate) fn registry_named(name: &str) -> Registry {
    if name.is_empty() || name == "base" {
        return base_registry();
    }
    MUTANTS
        .iter()
        .find(|m| m.id == name)
        .map(Mutant::registry)
        .or_else(|| crate::security::registry_named(name))
        .unwrap_or_else(|| panic!("no registry named {name:?}"))
}
