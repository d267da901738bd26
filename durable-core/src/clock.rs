//! The one place that reads the system clock.
//!
//! Workflow code never reads it: `ctx.now()` returns the recorded time of the event being
//! applied. The stores and the worker use [`now_ms`] for event times, due times and lease
//! expiry. `DURABLE_TEST_CLOCK_SKEW_MS` shifts this process's clock, so tests can show
//! that lease and timer decisions don't depend on one worker's clock.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn skew_ms() -> i64 {
    static SKEW: OnceLock<i64> = OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var("DURABLE_TEST_CLOCK_SKEW_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// Milliseconds since the Unix epoch by the host clock, never skewed: the store's clock
/// for SQLite, shared by every process on the host.
pub fn host_now_ms() -> i64 {
    now_ms() - skew_ms()
}

/// Milliseconds since the Unix epoch, by this process's clock.
pub fn now_ms() -> i64 {
    #[allow(clippy::disallowed_methods)] // the one sanctioned read of the wall clock
    let now = SystemTime::now();
    let ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX) + skew_ms()
}

/// A millisecond timestamp as a [`SystemTime`].
pub fn to_system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A millisecond timestamp formatted as RFC 3339 (UTC), for people.
pub fn format_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(to_system_time(ms)).to_string()
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
