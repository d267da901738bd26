//! Retry policies for activities and their backoff arithmetic.

use crate::error::ActivityError;
use crate::event::ActivityOptions;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When and how often the engine retries a failed activity attempt.
///
/// ```
/// use durable_core::RetryPolicy;
/// use std::time::Duration;
/// let p = RetryPolicy::exponential(Duration::from_secs(2))
///     .backoff(2.0)
///     .max_attempts(3)
///     .retry_only(["ServiceUnavailable"]);
/// assert_eq!(p.delay_before(2, 0.0), Some(Duration::from_secs(2)));
/// assert_eq!(p.delay_before(3, 0.0), Some(Duration::from_secs(4)));
/// assert_eq!(p.delay_before(4, 0.0), None); // three attempts in all
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// The delay before the second attempt, in milliseconds.
    pub initial_interval_ms: u64,
    /// Each further delay is the previous one times this.
    pub backoff_coefficient: f64,
    /// The longest delay, in milliseconds.
    pub maximum_interval_ms: u64,
    /// Attempts in all, including the first; 0 means no limit.
    pub maximum_attempts: u32,
    /// Random spread of each delay as a fraction (0.1 = up to 10% shorter or longer).
    pub jitter: f64,
    /// Error kinds that are never retried.
    pub non_retryable: Vec<String>,
    /// When not empty, only these error kinds are retried.
    pub retry_only: Vec<String>,
}

impl Default for RetryPolicy {
    /// 1 s initial interval, backoff 2, at most 100 s between attempts, 10 attempts,
    /// no jitter.
    fn default() -> Self {
        RetryPolicy {
            initial_interval_ms: 1000,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 100_000,
            maximum_attempts: 10,
            jitter: 0.0,
            non_retryable: Vec::new(),
            retry_only: Vec::new(),
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RetryPolicy {
    /// Exponential backoff starting at `initial`, doubling, capped at 100x `initial`.
    pub fn exponential(initial: Duration) -> Self {
        RetryPolicy {
            initial_interval_ms: ms(initial),
            maximum_interval_ms: ms(initial).saturating_mul(100),
            ..Self::default()
        }
    }

    /// One attempt, no retries.
    pub fn none() -> Self {
        RetryPolicy {
            maximum_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets the backoff coefficient (values below 1, NaN or infinite count as 1).
    #[must_use]
    pub fn backoff(mut self, coefficient: f64) -> Self {
        self.backoff_coefficient = coefficient;
        self
    }

    /// Sets the attempts in all (0 = unlimited).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.maximum_attempts = attempts;
        self
    }

    /// Sets the longest delay between attempts.
    #[must_use]
    pub fn max_interval(mut self, interval: Duration) -> Self {
        self.maximum_interval_ms = ms(interval);
        self
    }

    /// Sets the jitter fraction (clamped to 0..=1).
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Error kinds that must never be retried.
    #[must_use]
    pub fn non_retryable<I, S>(mut self, kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.non_retryable.extend(kinds.into_iter().map(Into::into));
        self
    }

    /// Retry only these error kinds; any other failure is final.
    #[must_use]
    pub fn retry_only<I, S>(mut self, kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.retry_only.extend(kinds.into_iter().map(Into::into));
        self
    }

    /// Whether a failure of `kind` (with the activity's own retryable flag) may be retried
    /// at all under this policy.
    pub fn allows_retry_of(&self, kind: &str, retryable: bool) -> bool {
        if !retryable || self.non_retryable.iter().any(|k| k == kind) {
            return false;
        }
        self.retry_only.is_empty() || self.retry_only.iter().any(|k| k == kind)
    }

    /// The delay before attempt number `next_attempt` (2 for the first retry), or `None`
    /// when the attempts are used up. `unit_random` in `[0, 1)` draws the jitter.
    pub fn delay_before(&self, next_attempt: u32, unit_random: f64) -> Option<Duration> {
        if next_attempt < 2 {
            return Some(Duration::ZERO);
        }
        if self.maximum_attempts != 0 && next_attempt > self.maximum_attempts {
            return None;
        }
        let coefficient = if self.backoff_coefficient.is_finite() && self.backoff_coefficient >= 1.0
        {
            self.backoff_coefficient
        } else {
            1.0
        };
        let max = self.maximum_interval_ms.max(self.initial_interval_ms) as f64;
        let exponent = i32::try_from(next_attempt - 2).unwrap_or(i32::MAX);
        let base = (self.initial_interval_ms as f64 * coefficient.powi(exponent)).min(max);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let spread = base * jitter * (unit_random.clamp(0.0, 1.0) * 2.0 - 1.0);
        let delay = (base + spread).clamp(0.0, max);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        // clamped to 0..=max above, and max came from a u64
        Some(Duration::from_millis(delay.round() as u64))
    }
}

/// When the attempt after the failed attempt number `attempt` of an activity called
/// with `options` may start (ms since the epoch), or `None` when the failure is final:
/// the policy (the engine's default when the call set none) does not retry `error`, the
/// attempts are used up, or the next one would start past the schedule-to-close
/// deadline. `unit_random` in `[0, 1)` draws the jitter.
///
/// The worker decides with this after a failed attempt, and the store after an attempt
/// timed out, so both follow the same policy.
pub fn next_attempt_at(
    options: &ActivityOptions,
    error: &ActivityError,
    attempt: u32,
    scheduled_at_ms: i64,
    now_ms: i64,
    unit_random: f64,
) -> Option<i64> {
    let default_policy;
    let policy = match &options.retry {
        Some(p) => p,
        None => {
            default_policy = RetryPolicy::default();
            &default_policy
        }
    };
    if !policy.allows_retry_of(error.kind(), error.is_retryable()) {
        return None;
    }
    let delay = policy.delay_before(attempt.saturating_add(1), unit_random)?;
    let at = now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    if let Some(limit) = options.schedule_to_close_ms {
        let deadline = scheduled_at_ms.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX));
        if at >= deadline {
            return None;
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_attempt_follows_the_policy_and_the_schedule_to_close_deadline() {
        let options = ActivityOptions {
            retry: Some(RetryPolicy::exponential(Duration::from_millis(100)).max_attempts(3)),
            schedule_to_close_ms: Some(1_000),
            ..ActivityOptions::default()
        };
        let busy = ActivityError::retryable("Busy", "later");
        assert_eq!(next_attempt_at(&options, &busy, 1, 0, 10, 0.0), Some(110));
        assert_eq!(next_attempt_at(&options, &busy, 2, 0, 10, 0.0), Some(210));
        assert_eq!(
            next_attempt_at(&options, &busy, 3, 0, 10, 0.0),
            None,
            "attempts used up"
        );
        assert_eq!(
            next_attempt_at(&options, &busy, 1, 0, 950, 0.0),
            None,
            "past the deadline"
        );
        let fatal = ActivityError::non_retryable("Declined", "no");
        assert_eq!(next_attempt_at(&options, &fatal, 1, 0, 10, 0.0), None);
        let default = ActivityOptions::default();
        assert_eq!(next_attempt_at(&default, &busy, 1, 0, 0, 0.0), Some(1_000));
        assert_eq!(next_attempt_at(&default, &busy, 10, 0, 0, 0.0), None);
    }

    #[test]
    fn backoff_grows_and_stops_at_its_maximum() {
        let p = RetryPolicy::exponential(Duration::from_millis(100))
            .backoff(3.0)
            .max_interval(Duration::from_millis(1000))
            .max_attempts(0);
        let delays: Vec<_> = (2..8)
            .map(|a| p.delay_before(a, 0.5).map(|d| d.as_millis()))
            .collect();
        assert_eq!(
            delays,
            vec![
                Some(100),
                Some(300),
                Some(900),
                Some(1000),
                Some(1000),
                Some(1000)
            ]
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_the_maximum() {
        let p = RetryPolicy::exponential(Duration::from_millis(1000))
            .jitter(0.2)
            .max_interval(Duration::from_millis(1500));
        for i in 0..100 {
            let r = f64::from(i) / 100.0;
            let d = p.delay_before(2, r).map(|d| d.as_millis()).unwrap_or(0);
            assert!((800..=1200).contains(&d), "{d}");
            let d = p.delay_before(5, r).map(|d| d.as_millis()).unwrap_or(0);
            assert!(d <= 1500, "{d}");
        }
    }

    #[test]
    fn nan_or_shrinking_backoff_counts_as_constant() {
        for c in [f64::NAN, 0.5, f64::INFINITY, -1.0] {
            let p = RetryPolicy::exponential(Duration::from_millis(50)).backoff(c);
            assert_eq!(p.delay_before(4, 0.0), Some(Duration::from_millis(50)));
        }
    }

    #[test]
    fn never_shrinks_without_jitter() {
        let p = RetryPolicy::exponential(Duration::from_millis(7))
            .backoff(1.7)
            .max_attempts(0);
        let mut last = Duration::ZERO;
        for a in 2..200 {
            let d = p.delay_before(a, 0.9).unwrap_or_default();
            assert!(d >= last);
            last = d;
        }
    }

    #[test]
    fn attempts_are_counted_including_the_first() {
        let p = RetryPolicy::default().max_attempts(3);
        assert!(p.delay_before(3, 0.0).is_some());
        assert!(p.delay_before(4, 0.0).is_none());
        assert!(RetryPolicy::none().delay_before(2, 0.0).is_none());
    }

    #[test]
    fn kinds_filter_retries() {
        let p = RetryPolicy::default()
            .retry_only(["ServiceUnavailable"])
            .non_retryable(["Fatal"]);
        assert!(p.allows_retry_of("ServiceUnavailable", true));
        assert!(!p.allows_retry_of("ServiceUnavailable", false));
        assert!(!p.allows_retry_of("Other", true));
        let q = RetryPolicy::default().non_retryable(["Fatal"]);
        assert!(!q.allows_retry_of("Fatal", true));
        assert!(q.allows_retry_of("Other", true));
    }
}
