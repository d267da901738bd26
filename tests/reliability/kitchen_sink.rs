//! The kitchen-sink workflows of the reliability suite, their activities, their failpoints
//! and the reference interpreter that says what each run must return.
//!
//! Every workflow is a pure function of its input and the signals it received, so the
//! checker computes the expected outcome itself ([`expected`]) and compares it with what
//! the history recorded. Each live step also records, with `ctx.side_effect`, which
//! process executed it and when (the `exec` marker); committed markers must never go
//! back in time, which a stale owner's accepted write would make them do.
//!
//! This file is compiled twice: into the `chaos-worker` binary and into the reliability
//! tests (which also run kitchen-sink workers in process).

use crate::ledger;
use durable::prelude::*;
use durable::{Payload, WorkflowContext};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Failpoints
// ---------------------------------------------------------------------------------------

/// The failpoints compiled into the kitchen sink. Each aborts the process
/// (`std::process::abort()`, no cleanup, like a SIGKILL) at a chosen moment.
pub(crate) const FAILPOINTS: &[&str] = &[
    // In an activity, right after its ledger write (the side effect) and before the
    // worker records the result: the dangerous window, hit on purpose.
    "after_side_effect_before_complete",
    // In workflow code, live, right after a timer fired: the TimerFired is applied but not
    // yet committed.
    "after_timer_fired_before_commit",
    // In workflow code, live, right after a signal was delivered: the SignalReceived is
    // applied but not yet committed.
    "after_signal_before_commit",
    // In workflow code, live, right after an activity result was applied: the local
    // result is applied but not yet committed (local results commit with the next
    // activation).
    "after_activity_result_before_commit",
];

struct Armed {
    name: String,
    skip: AtomicU64,
}

/// The failpoint armed in this process by `DURABLE_FAILPOINT=<name>`; it fires on hit
/// number `DURABLE_FAILPOINT_SKIP + 1` (default: the first).
fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let name = std::env::var("DURABLE_FAILPOINT").ok()?;
            let skip = std::env::var("DURABLE_FAILPOINT_SKIP")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Some(Armed {
                name,
                skip: AtomicU64::new(skip),
            })
        })
        .as_ref()
}

/// Aborts the process if `name` is the armed failpoint and its skip count is used up.
/// The line it prints first lets the harness count hits per point.
pub(crate) fn failpoint(name: &str) {
    let Some(a) = armed() else { return };
    if a.name != name {
        return;
    }
    let before = a
        .skip
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| s.checked_sub(1));
    if before.is_err() {
        eprintln!("FAILPOINT-HIT {name} pid {}", std::process::id());
        std::process::abort();
    }
}

// ---------------------------------------------------------------------------------------
// Activities
// ---------------------------------------------------------------------------------------

/// The arithmetic every activity does: a 64-bit mix, so a wrong input, a lost step or a
/// step applied twice changes the output.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Records an attempt in the ledger; a successful one also aborts at
/// `after_side_effect_before_complete` when armed.
fn ledger_write(ctx: &ActivityContext, start_us: i64, output: Option<u64>) {
    let key = ctx.idempotency_key();
    ledger::record(&ledger::AttemptRecord {
        key: &key,
        activity: ctx.activity_name(),
        attempt: ctx.attempt(),
        output,
        start_us,
    });
    if output.is_some() {
        failpoint("after_side_effect_before_complete");
    }
}

/// One step of work: returns `mix(x, salt)` after a millisecond or two.
#[activity]
pub(crate) async fn step(ctx: ActivityContext, x: u64, salt: u64) -> Result<u64, ActivityError> {
    let start = ledger::now_us();
    tokio::time::sleep(Duration::from_millis(1 + x % 2)).await;
    let out = mix(x, salt);
    ledger_write(&ctx, start, Some(out));
    Ok(out)
}

/// Fails (retryably) its first `fail_first` attempts, then returns `mix(x, 7777)`.
#[activity]
pub(crate) async fn flaky(
    ctx: ActivityContext,
    x: u64,
    fail_first: u32,
) -> Result<u64, ActivityError> {
    let start = ledger::now_us();
    if ctx.attempt() <= fail_first {
        ledger_write(&ctx, start, None);
        return Err(ActivityError::retryable(
            "Flaky",
            format!("attempt {} fails by design", ctx.attempt()),
        ));
    }
    let out = mix(x, 7777);
    ledger_write(&ctx, start, Some(out));
    Ok(out)
}

/// Charges `amount`; a declined charge fails for good (kind `Declined`).
#[activity]
pub(crate) async fn charge(
    ctx: ActivityContext,
    amount: u64,
    decline: bool,
) -> Result<u64, ActivityError> {
    let start = ledger::now_us();
    if decline {
        ledger_write(&ctx, start, None);
        return Err(ActivityError::non_retryable(
            "Declined",
            format!("charge of {amount} declined"),
        ));
    }
    let out = mix(amount, 4242);
    ledger_write(&ctx, start, Some(out));
    Ok(out)
}

/// Undoes a reservation (the saga's compensation): returns `mix(x, 9999)`.
#[activity]
pub(crate) async fn refund(ctx: ActivityContext, x: u64) -> Result<u64, ActivityError> {
    let start = ledger::now_us();
    let out = mix(x, 9999);
    ledger_write(&ctx, start, Some(out));
    Ok(out)
}

/// Sleeps `first_ms` in its first attempt only, then returns `mix(x, 31)`: a first
/// attempt that outlives its lease while a later one finishes at once.
#[activity]
pub(crate) async fn nap(ctx: ActivityContext, x: u64, first_ms: u64) -> Result<u64, ActivityError> {
    let start = ledger::now_us();
    if ctx.attempt() == 1 {
        tokio::time::sleep(Duration::from_millis(first_ms)).await;
    }
    let out = mix(x, 31);
    ledger_write(&ctx, start, Some(out));
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------------------

/// The input of `sequential`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct SeqIn {
    /// The seed value.
    pub(crate) x: u64,
    /// How many steps, one after the other.
    pub(crate) n: u32,
}

/// The input of `fan_out`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct FanIn {
    /// The seed value.
    pub(crate) x: u64,
    /// How many steps at once.
    pub(crate) width: u32,
}

/// The input of `timers`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct TimersIn {
    /// The seed value.
    pub(crate) x: u64,
    /// A timer of each duration, each followed by a step.
    pub(crate) delays_ms: Vec<u64>,
}

/// The input of `approval`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct ApprovalIn {
    /// The seed value.
    pub(crate) x: u64,
    /// How many `vote` signals to wait for.
    pub(crate) votes: u32,
}

/// The body of a `vote` signal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct Vote {
    /// Unique per signal sent by a test, so the checker can find each one in history.
    pub(crate) id: u64,
    /// The vote's weight.
    pub(crate) value: u64,
}

/// The output of `approval`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct ApprovalOut {
    /// The ids of the votes counted, in the order the run received them.
    pub(crate) ballots: Vec<u64>,
    /// The final step over the votes' total.
    pub(crate) total: u64,
}

/// The input of `retrying`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct RetryIn {
    /// The seed value.
    pub(crate) x: u64,
    /// Attempts of `flaky` that fail by design.
    pub(crate) fail_first: u32,
}

/// The input of `saga`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct SagaIn {
    /// The seed value.
    pub(crate) x: u64,
    /// Reservations made before the charge (and refunded if it is declined).
    pub(crate) legs: u32,
    /// Whether the charge is declined.
    pub(crate) decline: bool,
}

/// The input of the poison workflows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct PoisonIn {
    /// The seed value.
    pub(crate) x: u64,
    /// How long `spinner` spins without yielding in each activation.
    pub(crate) spin_ms: u64,
}

/// Records which process executed this step of the run, and when (µs), as an `exec`
/// marker. Replay returns the recorded value; only live execution reads the clock.
fn mark(ctx: &WorkflowContext) {
    let _: (u32, i64) = ctx.side_effect("exec", || (std::process::id(), ledger::now_us()));
}

/// The retry policy of every kitchen-sink activity: quick, and effectively unlimited, so
/// attempts lost to crashes never turn into a failed run.
fn quick_retries() -> RetryPolicy {
    RetryPolicy::exponential(Duration::from_millis(10))
        .backoff(2.0)
        .max_interval(Duration::from_millis(80))
        .max_attempts(10_000)
}

/// `n` steps, one after the other.
#[workflow]
pub(crate) async fn sequential(ctx: WorkflowContext, input: SeqIn) -> Result<u64, WorkflowError> {
    mark(&ctx);
    let mut acc = input.x;
    for i in 0..input.n {
        acc = ctx
            .activity::<step>((acc, u64::from(i)))
            .retry(quick_retries())
            .await?;
        failpoint_live(&ctx, "after_activity_result_before_commit");
        mark(&ctx);
    }
    Ok(acc)
}

/// `width` steps at once, then one more over their combined results.
#[workflow]
pub(crate) async fn fan_out(ctx: WorkflowContext, input: FanIn) -> Result<u64, WorkflowError> {
    mark(&ctx);
    let calls: Vec<_> = (0..input.width)
        .map(|i| {
            ctx.activity::<step>((input.x, 100 + u64::from(i)))
                .retry(quick_retries())
        })
        .collect();
    let mut acc = input.x;
    for r in futures::future::join_all(calls).await {
        acc = mix(acc, r?);
    }
    failpoint_live(&ctx, "after_activity_result_before_commit");
    mark(&ctx);
    let out = ctx
        .activity::<step>((acc, 1))
        .retry(quick_retries())
        .await?;
    mark(&ctx);
    Ok(out)
}

/// A timer of each duration, each followed by a step.
#[workflow]
pub(crate) async fn timers(ctx: WorkflowContext, input: TimersIn) -> Result<u64, WorkflowError> {
    mark(&ctx);
    let mut acc = input.x;
    for (i, d) in input.delays_ms.iter().enumerate() {
        ctx.sleep(Duration::from_millis(*d)).await;
        failpoint_live(&ctx, "after_timer_fired_before_commit");
        mark(&ctx);
        acc = ctx
            .activity::<step>((acc, 1000 + i as u64))
            .retry(quick_retries())
            .await?;
        mark(&ctx);
    }
    Ok(acc)
}

/// One step, then `votes` `vote` signals, then a step over their total.
#[workflow]
pub(crate) async fn approval(
    ctx: WorkflowContext,
    input: ApprovalIn,
) -> Result<ApprovalOut, WorkflowError> {
    mark(&ctx);
    let mut total = ctx
        .activity::<step>((input.x, 0))
        .retry(quick_retries())
        .await?;
    mark(&ctx);
    let mut ballots = Vec::new();
    for _ in 0..input.votes {
        let vote: Vote = ctx.signal("vote").await?;
        failpoint_live(&ctx, "after_signal_before_commit");
        mark(&ctx);
        ballots.push(vote.id);
        total = mix(total, vote.value);
    }
    let total = ctx
        .activity::<step>((total, 1))
        .retry(quick_retries())
        .await?;
    mark(&ctx);
    Ok(ApprovalOut { ballots, total })
}

/// A `flaky` activity that fails its first attempts, then a step.
#[workflow]
pub(crate) async fn retrying(ctx: WorkflowContext, input: RetryIn) -> Result<u64, WorkflowError> {
    mark(&ctx);
    let a = ctx
        .activity::<flaky>((input.x, input.fail_first))
        .retry(quick_retries())
        .await?;
    mark(&ctx);
    let out = ctx.activity::<step>((a, 1)).retry(quick_retries()).await?;
    mark(&ctx);
    Ok(out)
}

/// Reserves `legs` times, then charges; a declined charge is compensated by refunding
/// the reservations in reverse order, and the run fails with kind `Declined`.
#[workflow]
pub(crate) async fn saga(ctx: WorkflowContext, input: SagaIn) -> Result<u64, WorkflowError> {
    mark(&ctx);
    let mut reserved = Vec::new();
    for i in 0..input.legs {
        let r = ctx
            .activity::<step>((input.x, 500 + u64::from(i)))
            .retry(quick_retries())
            .await?;
        mark(&ctx);
        reserved.push(r);
    }
    let amount = reserved.iter().fold(input.x, |a, r| mix(a, *r));
    match ctx
        .activity::<charge>((amount, input.decline))
        .retry(quick_retries())
        .await
    {
        Ok(receipt) => {
            mark(&ctx);
            Ok(receipt)
        }
        Err(e) if e.is("Declined") => {
            mark(&ctx);
            for r in reserved.iter().rev() {
                ctx.activity::<refund>(*r).retry(quick_retries()).await?;
                mark(&ctx);
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The input of `napper`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct NapIn {
    /// The seed value.
    pub(crate) x: u64,
    /// How long the first attempt of each nap sleeps.
    pub(crate) first_ms: u64,
}

/// A nap, a timer that outlasts the nap's first attempt, and a short nap.
#[workflow]
pub(crate) async fn napper(ctx: WorkflowContext, input: NapIn) -> Result<u64, WorkflowError> {
    let a = ctx
        .activity::<nap>((input.x, input.first_ms))
        .retry(quick_retries())
        .await?;
    ctx.sleep(Duration::from_millis(input.first_ms + 400)).await;
    let b = ctx.activity::<nap>((a, 0)).retry(quick_retries()).await?;
    Ok(b)
}

/// Poison: panics in every activation.
#[workflow]
pub(crate) async fn panicky(_ctx: WorkflowContext, input: PoisonIn) -> Result<u64, WorkflowError> {
    panic!(
        "poison run {}: workflow code panics in every activation",
        input.x
    );
}

/// Poison: aborts the worker process in every activation (a crash no `catch_unwind`
/// contains: a stack overflow, an abort in native code).
#[workflow]
pub(crate) async fn aborter(_ctx: WorkflowContext, input: PoisonIn) -> Result<u64, WorkflowError> {
    eprintln!("poison run {}: aborting the worker process", input.x);
    std::process::abort();
}

/// Poison: spins without yielding for `spin_ms` in every activation (bounded, so an
/// abandoned engine thread comes back eventually), then does a step.
#[workflow]
pub(crate) async fn spinner(ctx: WorkflowContext, input: PoisonIn) -> Result<u64, WorkflowError> {
    spin_for(Duration::from_millis(input.spin_ms));
    let out = ctx
        .activity::<step>((input.x, 1))
        .retry(quick_retries())
        .await?;
    Ok(out)
}

/// Busy-waits for `d` without yielding: what an endless loop looks like to the
/// watchdog, bounded so the test's process does not burn a core forever.
fn spin_for(d: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A failpoint that only fires while the code runs live (not while replaying history).
fn failpoint_live(ctx: &WorkflowContext, name: &str) {
    if !ctx.is_replaying() {
        failpoint(name);
    }
}

/// Every workflow and activity of the kitchen sink.
pub(crate) fn registry() -> Registry {
    Registry::new()
        .workflow::<sequential>()
        .workflow::<fan_out>()
        .workflow::<timers>()
        .workflow::<approval>()
        .workflow::<retrying>()
        .workflow::<saga>()
        .workflow::<panicky>()
        .workflow::<spinner>()
        .workflow::<aborter>()
        .workflow::<napper>()
        .activity::<step>()
        .activity::<flaky>()
        .activity::<charge>()
        .activity::<refund>()
        .activity::<nap>()
}

// ---------------------------------------------------------------------------------------
// The reference interpreter
// ---------------------------------------------------------------------------------------

/// How a run must end.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expected {
    /// Completed with exactly this output (compared byte for byte).
    Completed(Payload),
    /// Failed with this error kind.
    Failed(String),
    /// Suspended (poison runs), with a reason.
    Suspended,
}

/// What `workflow` must produce for `input` and the `signals` it received, in order.
///
/// # Errors
///
/// A message when the workflow is unknown or the input or a signal does not decode.
pub(crate) fn expected(
    workflow: &str,
    input: &Payload,
    signals: &[(String, Payload)],
) -> Result<Expected, String> {
    fn dec<T: serde::de::DeserializeOwned>(p: &Payload) -> Result<T, String> {
        p.decode().map_err(|e| e.to_string())
    }
    fn done<T: Serialize>(v: &T) -> Result<Expected, String> {
        Payload::encode(v)
            .map(Expected::Completed)
            .map_err(|e| e.to_string())
    }
    match workflow {
        "sequential" => {
            let i: SeqIn = dec(input)?;
            let acc = (0..i.n).fold(i.x, |acc, k| mix(acc, u64::from(k)));
            done(&acc)
        }
        "fan_out" => {
            let i: FanIn = dec(input)?;
            let acc = (0..i.width).fold(i.x, |acc, k| mix(acc, mix(i.x, 100 + u64::from(k))));
            done(&mix(acc, 1))
        }
        "timers" => {
            let i: TimersIn = dec(input)?;
            let acc = (0..i.delays_ms.len()).fold(i.x, |acc, k| mix(acc, 1000 + k as u64));
            done(&acc)
        }
        "approval" => {
            let i: ApprovalIn = dec(input)?;
            let mut total = mix(i.x, 0);
            let mut ballots = Vec::new();
            let votes = signals.iter().filter(|(name, _)| name == "vote");
            for (_, p) in votes.take(usize::try_from(i.votes).unwrap_or(usize::MAX)) {
                let v: Vote = dec(p)?;
                ballots.push(v.id);
                total = mix(total, v.value);
            }
            if ballots.len() < usize::try_from(i.votes).unwrap_or(usize::MAX) {
                return Err(format!(
                    "approval needs {} votes, history has {}",
                    i.votes,
                    ballots.len()
                ));
            }
            done(&ApprovalOut {
                ballots,
                total: mix(total, 1),
            })
        }
        "retrying" => {
            let i: RetryIn = dec(input)?;
            done(&mix(mix(i.x, 7777), 1))
        }
        "saga" => {
            let i: SagaIn = dec(input)?;
            if i.decline {
                return Ok(Expected::Failed("Declined".to_owned()));
            }
            let amount = (0..i.legs).fold(i.x, |a, k| mix(a, mix(i.x, 500 + u64::from(k))));
            done(&mix(amount, 4242))
        }
        "napper" => {
            let i: NapIn = dec(input)?;
            done(&mix(mix(i.x, 31), 31))
        }
        "panicky" | "spinner" | "aborter" => Ok(Expected::Suspended),
        other => Err(format!("unknown kitchen-sink workflow {other:?}")),
    }
}
