//! Activity heartbeats on the worker: an attempt's latest details are kept in memory and
//! written to the store at most once per interval (the first at once), so an activity
//! may heartbeat in a tight loop. When the store refuses one, the attempt was timed out
//! or superseded: it is marked lost, which its context reports.

use super::Shared;
use durable_core::context::activity::HeartbeatSink;
use durable_core::error::{ActivityError, KIND_ATTEMPT_LOST, StoreError};
use durable_core::ids::{CommandSeq, RunKey};
use durable_core::payload::Payload;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The longest time between two writes of an attempt's heartbeats.
const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// How often an attempt's heartbeats reach the store: a third of its heartbeat timeout,
/// so two writes can be late before the timeout passes, and at most a second apart.
pub(crate) fn flush_interval(heartbeat_timeout: Option<Duration>) -> Duration {
    heartbeat_timeout
        .map_or(MAX_INTERVAL, |t| t / 3)
        .clamp(Duration::from_millis(1), MAX_INTERVAL)
}

/// One attempt's heartbeats.
pub(crate) struct Heartbeats {
    me: Weak<Heartbeats>,
    shared: Arc<Shared>,
    key: RunKey,
    seq: CommandSeq,
    attempt: u32,
    interval: Duration,
    state: Mutex<State>,
    /// A heartbeat is pending, or the attempt finished.
    wake: Notify,
    /// The attempt finished: cut the throttle wait short.
    done: Notify,
    lost: AtomicBool,
    runtime: tokio::runtime::Handle,
}

#[derive(Default)]
struct State {
    pending: Option<Payload>,
    flusher: Option<JoinHandle<()>>,
    finished: bool,
    /// When the attempt started or last heartbeated, by this process's clock.
    last_beat: Option<Instant>,
}

impl std::fmt::Debug for Heartbeats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeats")
            .field("run", &self.key)
            .field("seq", &self.seq)
            .field("attempt", &self.attempt)
            .field("lost", &self.lost.load(Ordering::Relaxed))
            .finish()
    }
}

impl Heartbeats {
    /// The heartbeats of an attempt starting now; must be called inside the runtime.
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: RunKey,
        seq: CommandSeq,
        attempt: u32,
        heartbeat_timeout: Option<Duration>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Heartbeats {
            me: me.clone(),
            shared,
            key,
            seq,
            attempt,
            interval: flush_interval(heartbeat_timeout),
            state: Mutex::new(State {
                last_beat: Some(Instant::now()),
                ..State::default()
            }),
            wake: Notify::new(),
            done: Notify::new(),
            lost: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    fn lost_error(&self) -> ActivityError {
        ActivityError::retryable(
            KIND_ATTEMPT_LOST,
            format!(
                "attempt {} of command {} is no longer current (its heartbeat timeout passed or another attempt took over)",
                self.attempt, self.seq
            ),
        )
    }

    /// Marks the attempt lost: its heartbeats are refused from now on and its result is
    /// not reported.
    fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Resolves when the attempt has sent no heartbeat (and did not start) within
    /// `timeout`, by this process's clock; never while heartbeats keep coming.
    pub(crate) async fn missed(&self, timeout: Duration) {
        loop {
            let last = self
                .state
                .lock()
                .ok()
                .and_then(|s| s.last_beat)
                .unwrap_or_else(Instant::now);
            let due = last + timeout;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }

    /// Ends the attempt's heartbeats. With `flush`, pending details are written first
    /// (the attempt failed and will be retried: the next one resumes from them); without,
    /// they are dropped (the activity finished, its row goes away).
    pub(crate) async fn finish(&self, flush: bool) {
        let flusher = match self.state.lock() {
            Ok(mut s) => {
                s.finished = true;
                if !flush {
                    s.pending = None;
                }
                s.flusher.take()
            }
            Err(_) => None,
        };
        let Some(flusher) = flusher else {
            return;
        };
        self.wake.notify_one();
        self.done.notify_one();
        let _ = flusher.await;
    }

    /// Writes pending details at most once per interval until the attempt finishes or
    /// is lost.
    async fn flush_loop(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let (details, finished) = match self.state.lock() {
                Ok(mut s) => (s.pending.take(), s.finished),
                Err(_) => return,
            };
            if let Some(details) = details {
                self.write(details).await;
            }
            if finished || self.is_lost() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = self.done.notified() => {}
            }
        }
    }

    async fn write(&self, details: Payload) {
        let shared = &self.shared;
        match shared
            .store
            .record_heartbeat(&shared.id, self.key, self.seq, self.attempt, details)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(reason)) => {
                tracing::info!(run = %self.key, seq = self.seq.0, attempt = self.attempt, reason,
                    "heartbeat refused: the attempt is lost; its activity is told through its context");
                self.mark_lost();
            }
            Err(e) => {
                // The next heartbeat tries again; the store's deadline decides.
                tracing::warn!(run = %self.key, seq = self.seq.0, error = %e, "recording a heartbeat failed");
            }
        }
    }
}

impl HeartbeatSink for Heartbeats {
    fn record(&self, details: Payload) -> Result<(), ActivityError> {
        if self.is_lost() {
            return Err(self.lost_error());
        }
        let limit = self.shared.options.max_payload_bytes;
        if details.len() > limit {
            return Err(ActivityError::non_retryable(
                "PayloadTooLarge",
                format!(
                    "heartbeat details of {} bytes are over the limit of {limit} bytes",
                    details.len()
                ),
            ));
        }
        let Ok(mut s) = self.state.lock() else {
            return Ok(());
        };
        if s.finished {
            return Ok(());
        }
        s.pending = Some(details);
        s.last_beat = Some(Instant::now());
        if s.flusher.is_none()
            && let Some(me) = self.me.upgrade()
        {
            s.flusher = Some(self.runtime.spawn(me.flush_loop()));
        }
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::flush_interval;
    use std::time::Duration;

    #[test]
    fn heartbeats_are_written_every_third_of_the_timeout_and_at_least_each_second() {
        let ms = Duration::from_millis;
        assert_eq!(flush_interval(Some(ms(300))), ms(100));
        assert_eq!(flush_interval(Some(ms(60_000))), ms(1_000));
        assert_eq!(flush_interval(None), ms(1_000));
        assert_eq!(flush_interval(Some(ms(0))), ms(1));
    }
}
