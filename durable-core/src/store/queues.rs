//! Per-queue limits: how many attempts of a task queue may run at once across every
//! worker sharing the store, and how many may start per second.
//!
//! The limits live in the store, so every worker obeys the same numbers, and both stores
//! enforce them inside the transaction that starts an attempt (a claim, or the commit
//! that creates a local attempt). The arithmetic is here, once for both stores.
//!
//! # What counts as running
//!
//! An attempt of a limited queue counts from the moment it is started (claimed, or
//! created local by a commit) until its result is recorded, it is retried, or its lease
//! expires: a worker that dies frees its slots when its leases run out.
//!
//! # The rate limit
//!
//! A token bucket by the store's clock: it holds at most `burst` tokens, refills at
//! `starts` per `per`, and each attempt start takes one. A queue that was idle can start
//! `burst` attempts at once; after that, starts follow the rate. Over any span of `T`,
//! at most `burst + starts * T / per` attempts start.

use crate::error::StoreError;
use std::time::Duration;

/// A rate of attempt starts: at most `starts` per `per`, with bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Attempt starts allowed per `per`.
    pub starts: u32,
    /// The period of `starts`.
    pub per: Duration,
    /// How many attempts an idle queue may start at once (the bucket's size).
    pub burst: u32,
}

impl RateLimit {
    /// `starts` per second, with a burst of the same size.
    pub fn per_second(starts: u32) -> Self {
        RateLimit {
            starts,
            per: Duration::from_secs(1),
            burst: starts,
        }
    }

    /// Sets the burst (the bucket's size; by default `starts`).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Parses `N/s`, `N/m` (or `N/min`) and `N/h`, as the CLI's `--rate` takes them; the
    /// burst is `N`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming what is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| {
            StoreError::Invalid(format!(
                "rate {text:?} is not valid: {why} (write it as N/s, N/m or N/h, e.g. 5/s)"
            ))
        };
        let (count, unit) = text.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
        let starts: u32 = count
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad("the unit is not s, m or h")),
        };
        let rate = RateLimit {
            starts,
            per,
            burst: starts,
        };
        rate.validate()?;
        Ok(rate)
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.starts == 0 {
            return Err(StoreError::Invalid(
                "a rate limit must allow at least 1 start; clear the limit to lift it".into(),
            ));
        }
        if self.burst == 0 {
            return Err(StoreError::Invalid(
                "the burst of a rate limit must be at least 1".into(),
            ));
        }
        if self.per < Duration::from_millis(1) || self.per > Duration::from_secs(86_400) {
            return Err(StoreError::Invalid(format!(
                "the period of a rate limit must be between 1 ms and 1 day, not {:?}",
                self.per
            )));
        }
        Ok(())
    }

    /// Tokens gained per millisecond.
    fn per_ms(&self) -> f64 {
        f64::from(self.starts) / self.per.as_secs_f64() / 1000.0
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_millis() {
            1000 => "s".to_owned(),
            60_000 => "m".to_owned(),
            3_600_000 => "h".to_owned(),
            _ => format!("{}ms", self.per.as_millis()),
        };
        write!(f, "{}/{unit}", self.starts)?;
        if self.burst != self.starts {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

/// The limits of one task queue, kept in the store and obeyed by every worker sharing it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLimit {
    /// The most attempts of the queue running at once, across all workers.
    pub max_concurrency: Option<u32>,
    /// The most attempt starts per period.
    pub rate: Option<RateLimit>,
}

impl QueueLimit {
    /// No limit yet; add one with [`concurrency`](Self::concurrency) or
    /// [`rate`](Self::rate).
    pub fn new() -> Self {
        QueueLimit::default()
    }

    /// At most `n` attempts running at once.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = Some(n);
        self
    }

    /// At most this many starts per period.
    pub fn rate(mut self, rate: RateLimit) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Checks the numbers: at least one limit, a concurrency of at least 1, a rate of at
    /// least 1 start.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming the number that is wrong.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.max_concurrency.is_none() && self.rate.is_none() {
            return Err(StoreError::Invalid(
                "a queue limit needs a concurrency or a rate (or both)".into(),
            ));
        }
        if self.max_concurrency == Some(0) {
            return Err(StoreError::Invalid(
                "the concurrency limit must be at least 1".into(),
            ));
        }
        if let Some(rate) = &self.rate {
            rate.validate()?;
        }
        Ok(())
    }

    /// The limit as stored: concurrency, rate starts, rate period (ms), burst.
    pub(crate) fn to_columns(self) -> [Option<i64>; 4] {
        let rate = self.rate;
        [
            self.max_concurrency.map(i64::from),
            rate.map(|r| i64::from(r.starts)),
            rate.map(|r| i64::try_from(r.per.as_millis()).unwrap_or(i64::MAX)),
            rate.map(|r| i64::from(r.burst)),
        ]
    }

    /// The limit from its stored columns (see [`to_columns`](Self::to_columns)).
    pub(crate) fn from_columns(columns: [Option<i64>; 4]) -> Self {
        let [concurrency, starts, per_ms, burst] = columns;
        let to_u32 = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        QueueLimit {
            max_concurrency: concurrency.map(to_u32),
            rate: match (starts, per_ms, burst) {
                (Some(starts), Some(per_ms), Some(burst)) => Some(RateLimit {
                    starts: to_u32(starts),
                    per: Duration::from_millis(u64::try_from(per_ms).unwrap_or(1)),
                    burst: to_u32(burst),
                }),
                _ => None,
            },
        }
    }
}

impl std::fmt::Display for QueueLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.max_concurrency, &self.rate) {
            (Some(c), Some(r)) => write!(f, "concurrency {c}, rate {r}"),
            (Some(c), None) => write!(f, "concurrency {c}"),
            (None, Some(r)) => write!(f, "rate {r}"),
            (None, None) => f.write_str("unlimited"),
        }
    }
}

/// A task queue as `queue show` and `queue list` present it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueInfo {
    /// The queue's name; the empty string is the default queue.
    pub queue: String,
    /// Its limits, if any are set.
    pub limit: Option<QueueLimit>,
    /// Attempts running now (started, lease live, no result recorded yet).
    pub running: u64,
    /// Attempts waiting to start (due now or later, after a retry's backoff).
    pub waiting: u64,
    /// Starts the rate limit allows right now (the bucket's tokens, whole).
    pub tokens: Option<u64>,
}

/// Checks a task queue name given to a limit call: the empty string (the default queue)
/// or up to 1,000 bytes without NUL.
pub(crate) fn check_queue_name(queue: &str) -> Result<(), StoreError> {
    if queue.contains('\0') {
        return Err(StoreError::Invalid(
            "a task queue name must not contain NUL bytes".into(),
        ));
    }
    if queue.len() > 1000 {
        return Err(StoreError::Invalid(format!(
            "a task queue name is {} bytes long; the limit is 1000",
            queue.len()
        )));
    }
    Ok(())
}

/// The rate limit's bucket as stored: its tokens when it was last refilled, and when.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) tokens: f64,
    pub(crate) at_ms: i64,
}

impl Bucket {
    /// A full bucket for `limit` at `now_ms`.
    pub(crate) fn full(limit: &QueueLimit, now_ms: i64) -> Self {
        Bucket {
            tokens: limit.rate.map_or(0.0, |r| f64::from(r.burst)),
            at_ms: now_ms,
        }
    }

    /// The bucket refilled up to `now_ms` (a clock that went back refills nothing).
    pub(crate) fn refilled(self, rate: &RateLimit, now_ms: i64) -> Self {
        if now_ms <= self.at_ms {
            return self;
        }
        #[allow(clippy::cast_precision_loss)] // elapsed milliseconds, far below 2^52
        let gained = (now_ms - self.at_ms) as f64 * rate.per_ms();
        Bucket {
            tokens: (self.tokens + gained).min(f64::from(rate.burst)),
            at_ms: now_ms,
        }
    }

    /// Whole tokens available.
    pub(crate) fn whole(&self) -> u64 {
        if self.tokens >= 1.0 {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            // floor of a positive value no larger than a u32 burst
            let whole = self.tokens.floor() as u64;
            whole
        } else {
            0
        }
    }
}

/// How many of `wanted` attempts may start now on a queue with `limit`, `running`
/// attempts running and the rate bucket `bucket`; and the bucket after they start.
pub(crate) fn admit(
    limit: &QueueLimit,
    running: u64,
    bucket: Bucket,
    now_ms: i64,
    wanted: u64,
) -> (u64, Bucket) {
    let mut allowed = wanted;
    if let Some(max) = limit.max_concurrency {
        allowed = allowed.min(u64::from(max).saturating_sub(running));
    }
    let mut bucket = bucket;
    if let Some(rate) = &limit.rate {
        bucket = bucket.refilled(rate, now_ms);
        allowed = allowed.min(bucket.whole());
        #[allow(clippy::cast_precision_loss)] // at most a u32 burst
        let taken = allowed as f64;
        bucket.tokens -= taken;
    }
    (allowed, bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(starts: u32, burst: u32) -> QueueLimit {
        QueueLimit::new().rate(RateLimit::per_second(starts).burst(burst))
    }

    #[test]
    fn parse_accepts_the_cli_forms_and_names_what_is_wrong() {
        assert_eq!(
            RateLimit::parse("5/s").expect("5/s"),
            RateLimit::per_second(5)
        );
        let per_minute = RateLimit::parse(" 30/min ").expect("30/min");
        assert_eq!(per_minute.per, Duration::from_secs(60));
        assert_eq!(per_minute.to_string(), "30/m");
        assert_eq!(
            RateLimit::parse("2/h").expect("2/h").per,
            Duration::from_secs(3600)
        );
        for (bad, why) in [
            ("5", "no '/'"),
            ("x/s", "not a whole number"),
            ("-1/s", "not a whole number"),
            ("5/d", "unit"),
            ("0/s", "at least 1 start"),
        ] {
            let err = RateLimit::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn validate_refuses_empty_and_zero_limits() {
        assert!(QueueLimit::new().validate().is_err());
        assert!(QueueLimit::new().concurrency(0).validate().is_err());
        assert!(rate(5, 0).validate().is_err());
        assert!(QueueLimit::new().concurrency(1).validate().is_ok());
        assert!(rate(5, 10).validate().is_ok());
    }

    #[test]
    fn columns_round_trip() {
        for limit in [
            QueueLimit::new().concurrency(3),
            rate(5, 9),
            QueueLimit::new()
                .concurrency(2)
                .rate(RateLimit::per_second(7)),
        ] {
            assert_eq!(QueueLimit::from_columns(limit.to_columns()), limit);
        }
    }

    #[test]
    fn concurrency_admits_up_to_the_free_slots() {
        let limit = QueueLimit::new().concurrency(3);
        let bucket = Bucket::full(&limit, 0);
        assert_eq!(admit(&limit, 0, bucket, 0, 10).0, 3);
        assert_eq!(admit(&limit, 2, bucket, 0, 10).0, 1);
        assert_eq!(admit(&limit, 3, bucket, 0, 10).0, 0);
        assert_eq!(
            admit(&limit, 7, bucket, 0, 10).0,
            0,
            "over the limit after a change"
        );
        assert_eq!(admit(&limit, 0, bucket, 0, 2).0, 2);
    }

    #[test]
    fn rate_admits_the_burst_then_the_rate() {
        let limit = rate(5, 5);
        let (n, bucket) = admit(&limit, 0, Bucket::full(&limit, 1_000), 1_000, 100);
        assert_eq!(n, 5, "an idle queue starts its burst");
        let (n, bucket) = admit(&limit, 0, bucket, 1_000, 100);
        assert_eq!(n, 0, "then nothing at the same instant");
        let (n, bucket) = admit(&limit, 0, bucket, 1_199, 100);
        assert_eq!(n, 0, "199 ms give 0.995 tokens");
        let (n, bucket) = admit(&limit, 0, bucket, 1_200, 100);
        assert_eq!(n, 1, "one start per 200 ms");
        let (n, _) = admit(&limit, 0, bucket, 60_000, 100);
        assert_eq!(
            n, 5,
            "a long idle spell refills the bucket only to its burst"
        );
    }

    #[test]
    fn starts_over_any_span_stay_within_burst_plus_rate() {
        // Claim every 7 ms for 3 s: never more than burst + rate * elapsed.
        let limit = rate(10, 4);
        let mut bucket = Bucket::full(&limit, 0);
        let mut starts = Vec::new();
        for t in (0..3_000).step_by(7) {
            let (n, b) = admit(&limit, 0, bucket, t, 3);
            bucket = b;
            starts.extend(std::iter::repeat_n(t, usize::try_from(n).expect("small")));
        }
        for (i, &from) in starts.iter().enumerate() {
            for span in [100_i64, 500, 1_000] {
                let within = starts[i..].iter().take_while(|&&t| t < from + span).count();
                let bound = 4 + usize::try_from(span / 100).expect("small");
                assert!(within <= bound, "{within} starts in {span} ms from {from}");
            }
        }
        assert!(starts.len() >= 30, "the rate is reached: {}", starts.len());
    }

    #[test]
    fn both_limits_apply_together() {
        let limit = QueueLimit::new()
            .concurrency(2)
            .rate(RateLimit::per_second(10));
        let (n, bucket) = admit(&limit, 0, Bucket::full(&limit, 0), 0, 5);
        assert_eq!(n, 2, "the concurrency bounds the burst");
        assert!(
            (bucket.tokens - 8.0).abs() < 1e-9,
            "only started ones take tokens"
        );
    }

    #[test]
    fn a_clock_that_goes_back_refills_nothing() {
        let limit = rate(5, 5);
        let (_, bucket) = admit(&limit, 0, Bucket::full(&limit, 10_000), 10_000, 5);
        let (n, after) = admit(&limit, 0, bucket, 5_000, 5);
        assert_eq!(n, 0);
        assert_eq!(after.at_ms, 10_000);
    }
}
