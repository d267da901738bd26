//! Activity attempts in a test environment: test doubles, real bodies, panics, and the
//! retry decision in virtual time.

use crate::context::activity::ActivityContext;
use crate::error::{ActivityError, KIND_PANIC};
use crate::event::ActivityOptions;
use crate::executor::panic_message;
use crate::payload::Payload;
use crate::registry::Registry;
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// One attempt's result.
pub(crate) type AttemptFuture = LocalBoxFuture<'static, Result<Payload, ActivityError>>;

/// A test double with its types erased: context and encoded input in, encoded output out.
pub(crate) type Mock = Box<dyn Fn(ActivityContext, Payload) -> AttemptFuture>;

/// Where an activity's attempts come from.
pub(crate) struct Activities {
    pub(crate) registry: Registry,
    pub(crate) mocks: BTreeMap<String, Mock>,
}

impl Activities {
    /// Starts one attempt of `name`, through its mock when there is one, else through
    /// the registered body. `None` when neither exists.
    ///
    /// The future catches panics, in the double's call as in the future it returns, and
    /// turns them into retryable failures of kind `Panic`, as a worker does.
    pub(crate) fn attempt(
        &self,
        name: &str,
        ctx: ActivityContext,
        input: Payload,
    ) -> Option<AttemptFuture> {
        let started: Result<AttemptFuture, String> = if let Some(mock) = self.mocks.get(name) {
            std::panic::catch_unwind(AssertUnwindSafe(|| mock(ctx, input)))
                .map_err(|panic| panic_message(panic.as_ref()))
        } else {
            let body = self.registry.find_activity(name)?;
            Ok(body.call(ctx, input).boxed_local())
        };
        let name = name.to_owned();
        let panicked = move |message: String| {
            ActivityError::retryable(KIND_PANIC, format!("activity {name} panicked: {message}"))
        };
        Some(match started {
            Err(message) => std::future::ready(Err(panicked(message))).boxed_local(),
            Ok(fut) => async move {
                match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(result) => result,
                    Err(panic) => Err(panicked(panic_message(panic.as_ref()))),
                }
            }
            .boxed_local(),
        })
    }
}

/// When the next attempt of a failed activity is due, in virtual milliseconds, or `None`
/// when the failure is final: the error is not retryable under the call's policy (the
/// engine's default policy when the call set none), the attempts are used up, or the
/// retry would start after the schedule-to-close deadline. The same rules a worker
/// applies, on the virtual clock; `unit_random` draws the jitter.
pub(crate) fn next_attempt_at(
    options: &ActivityOptions,
    failed_attempt: u32,
    error: &ActivityError,
    scheduled_at_ms: i64,
    now_ms: i64,
    unit_random: f64,
) -> Option<i64> {
    let policy = options.retry.clone().unwrap_or_default();
    if !policy.allows_retry_of(error.kind(), error.is_retryable()) {
        return None;
    }
    let delay = policy.delay_before(failed_attempt.saturating_add(1), unit_random)?;
    let at = now_ms.saturating_add(crate::clock::duration_ms(delay));
    if let Some(limit) = options.schedule_to_close_ms {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if at >= scheduled_at_ms.saturating_add(limit) {
            return None;
        }
    }
    Some(at)
}

/// Milliseconds of a virtual duration, saturating.
pub(crate) fn virtual_ms(d: Duration) -> i64 {
    crate::clock::duration_ms(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryPolicy;

    fn options(policy: RetryPolicy) -> ActivityOptions {
        ActivityOptions {
            retry: Some(policy),
            ..ActivityOptions::default()
        }
    }

    #[test]
    fn retries_follow_the_policy_backoff_on_the_virtual_clock() {
        let o = options(RetryPolicy::exponential(Duration::from_secs(10)).max_attempts(3));
        let e = ActivityError::retryable("Busy", "try later");
        assert_eq!(next_attempt_at(&o, 1, &e, 0, 1_000, 0.5), Some(11_000));
        assert_eq!(next_attempt_at(&o, 2, &e, 0, 11_000, 0.5), Some(31_000));
        assert_eq!(next_attempt_at(&o, 3, &e, 0, 31_000, 0.5), None);
    }

    #[test]
    fn non_retryable_errors_and_deadlines_end_the_retries() {
        let o = options(RetryPolicy::exponential(Duration::from_secs(10)));
        let fatal = ActivityError::non_retryable("Declined", "no");
        assert_eq!(next_attempt_at(&o, 1, &fatal, 0, 0, 0.5), None);
        let o = ActivityOptions {
            schedule_to_close_ms: Some(15_000),
            ..o
        };
        let busy = ActivityError::retryable("Busy", "try later");
        assert_eq!(next_attempt_at(&o, 1, &busy, 0, 0, 0.5), Some(10_000));
        assert_eq!(next_attempt_at(&o, 2, &busy, 0, 10_000, 0.5), None);
    }
}
