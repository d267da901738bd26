//! [`ActivityContext`]: what an activity attempt knows about itself.

use crate::error::{ActivityError, KIND_ATTEMPT_LOST, KIND_PAYLOAD};
use crate::ids::{CommandSeq, RunId, WorkflowId};
use crate::payload::Payload;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where an attempt's heartbeats go. The worker implements it: it keeps the latest
/// details and writes them to the store at most once per throttle interval, and learns
/// from the store when the attempt is no longer current.
pub trait HeartbeatSink: Send + Sync + std::fmt::Debug {
    /// Takes the latest progress details of the attempt. Must not block.
    ///
    /// # Errors
    ///
    /// An [`ActivityError`] of kind [`KIND_ATTEMPT_LOST`] once the attempt is known to be
    /// lost, or one saying why the details are refused (too large).
    fn record(&self, details: Payload) -> Result<(), ActivityError>;

    /// True once the attempt is known to be lost: its heartbeat timeout passed, or
    /// another attempt superseded it.
    fn is_lost(&self) -> bool;
}

/// Facts about one activity attempt, and its link to the worker.
#[derive(Clone, Debug)]
pub struct ActivityContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    workflow_id: WorkflowId,
    run_id: RunId,
    activity: String,
    seq: CommandSeq,
    attempt: u32,
    cancelled: AtomicBool,
    last_heartbeat: Option<Payload>,
    sink: Option<Arc<dyn HeartbeatSink>>,
}

impl Clone for Inner {
    fn clone(&self) -> Self {
        Inner {
            workflow_id: self.workflow_id.clone(),
            run_id: self.run_id.clone(),
            activity: self.activity.clone(),
            seq: self.seq,
            attempt: self.attempt,
            cancelled: AtomicBool::new(self.cancelled.load(Ordering::Acquire)),
            last_heartbeat: self.last_heartbeat.clone(),
            sink: self.sink.clone(),
        }
    }
}

impl ActivityContext {
    /// Builds the context of one attempt (the worker does this; tests may too).
    pub fn new(
        workflow_id: WorkflowId,
        run_id: RunId,
        activity: impl Into<String>,
        seq: CommandSeq,
        attempt: u32,
    ) -> Self {
        ActivityContext {
            inner: Arc::new(Inner {
                workflow_id,
                run_id,
                activity: activity.into(),
                seq,
                attempt,
                cancelled: AtomicBool::new(false),
                last_heartbeat: None,
                sink: None,
            }),
        }
    }

    /// A context for calling an activity directly in a unit test.
    pub fn for_test(activity: &str) -> Self {
        Self::new(
            WorkflowId("test".into()),
            RunId("test-run".into()),
            activity,
            CommandSeq(1),
            1,
        )
    }

    /// The same context with the details of the previous attempt's last heartbeat, as
    /// [`ActivityContext::last_heartbeat`] returns them (the worker sets this; a test
    /// can, to exercise resuming).
    #[must_use]
    pub fn with_last_heartbeat(mut self, details: Option<Payload>) -> Self {
        Arc::make_mut(&mut self.inner).last_heartbeat = details;
        self
    }

    /// The same context with its heartbeats going to `sink` (the worker sets this).
    #[must_use]
    pub fn with_heartbeat_sink(mut self, sink: Arc<dyn HeartbeatSink>) -> Self {
        Arc::make_mut(&mut self.inner).sink = Some(sink);
        self
    }

    /// The workflow id of the run that scheduled the activity.
    pub fn workflow_id(&self) -> &WorkflowId {
        &self.inner.workflow_id
    }
    /// The run id.
    pub fn run_id(&self) -> &RunId {
        &self.inner.run_id
    }
    /// The activity name.
    pub fn activity_name(&self) -> &str {
        &self.inner.activity
    }
    /// The number of the command that scheduled it.
    pub fn seq(&self) -> CommandSeq {
        self.inner.seq
    }
    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// A key that is the same on every attempt, retry and replay of this call, and
    /// different for every other call: `{workflow_id}/{run_id}/{command number}`. Pass
    /// it to downstream services so a retried side effect happens once.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.inner.workflow_id, self.inner.run_id, self.inner.seq
        )
    }

    /// Reports that the attempt is alive, with its progress so far.
    ///
    /// Call it regularly from a long activity. The worker keeps the latest `details` and
    /// writes them to the store at most once per third of the heartbeat timeout (and at
    /// most once a second), so calling it in a tight loop is cheap. When the call set a
    /// heartbeat timeout (`ctx.activity::<A>(..).heartbeat_timeout(d)`), an attempt that
    /// sends no heartbeat for that long is considered lost and retried by its retry
    /// policy with an error of kind `HeartbeatTimeout`; the next attempt reads the last
    /// details with [`ActivityContext::last_heartbeat`], to resume where this one
    /// stopped.
    ///
    /// # Errors
    ///
    /// Once this attempt is no longer current (its heartbeat timeout passed and another
    /// attempt took over, or the worker gave up on it), an error of kind `AttemptLost`:
    /// stop working and return it, its result would be discarded anyway. Also an error
    /// when `details` cannot be encoded or is over the worker's payload limit.
    pub fn heartbeat<T: Serialize + ?Sized>(&self, details: &T) -> Result<(), ActivityError> {
        if self.is_cancelled() {
            return Err(self.lost());
        }
        let payload = Payload::encode(details).map_err(|e| {
            ActivityError::non_retryable(
                KIND_PAYLOAD,
                format!(
                    "cannot encode the heartbeat details of activity {}: {e}",
                    self.inner.activity
                ),
            )
        })?;
        match &self.inner.sink {
            Some(sink) => sink.record(payload),
            None => Ok(()),
        }
    }

    /// The details of the last heartbeat an earlier attempt of this call recorded, or
    /// `None` (the first attempt, no heartbeat, or details that do not decode as `T`).
    ///
    /// ```
    /// # use durable_core::{ActivityContext, Payload};
    /// let ctx = ActivityContext::for_test("upload")
    ///     .with_last_heartbeat(Some(Payload::encode(&4096u64).unwrap()));
    /// let offset = ctx.last_heartbeat::<u64>().unwrap_or(0);   // resume from byte 4096
    /// assert_eq!(offset, 4096);
    /// ```
    pub fn last_heartbeat<T: DeserializeOwned>(&self) -> Option<T> {
        self.inner.last_heartbeat.as_ref()?.decode().ok()
    }

    /// True once the worker gave up on this attempt (shutdown, timeout, cancellation) or
    /// the attempt is known to be lost (a heartbeat was refused because its heartbeat
    /// timeout passed or another attempt superseded it). Stop working when it is.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
            || self.inner.sink.as_ref().is_some_and(|s| s.is_lost())
    }

    /// Marks the attempt as abandoned (used by the worker).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
    }

    fn lost(&self) -> ActivityError {
        ActivityError::retryable(
            KIND_ATTEMPT_LOST,
            format!(
                "attempt {} of activity {} (command {}) is no longer current; stop and return",
                self.inner.attempt, self.inner.activity, self.inner.seq
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Recorder {
        seen: Mutex<Vec<Payload>>,
        lost: AtomicBool,
    }

    impl HeartbeatSink for Recorder {
        fn record(&self, details: Payload) -> Result<(), ActivityError> {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(details);
            }
            Ok(())
        }
        fn is_lost(&self) -> bool {
            self.lost.load(Ordering::Acquire)
        }
    }

    #[test]
    fn heartbeats_go_to_the_sink_until_the_attempt_is_lost() -> Result<(), ActivityError> {
        let sink = Arc::new(Recorder::default());
        let ctx = ActivityContext::for_test("upload").with_heartbeat_sink(sink.clone());
        ctx.heartbeat(&1u32)?;
        ctx.heartbeat(&2u32)?;
        let seen: Vec<u32> = sink
            .seen
            .lock()
            .map(|s| s.iter().filter_map(|p| p.decode().ok()).collect())
            .unwrap_or_default();
        assert_eq!(seen, [1, 2]);
        assert!(!ctx.is_cancelled());
        sink.lost.store(true, Ordering::Release);
        assert!(ctx.is_cancelled(), "a lost attempt reads as cancelled");
        let err = ctx
            .heartbeat(&3u32)
            .expect_err("a lost attempt's heartbeat is refused");
        assert_eq!(err.kind(), KIND_ATTEMPT_LOST);
        Ok(())
    }

    #[test]
    fn a_cancelled_attempt_refuses_heartbeats_and_a_plain_context_accepts_them() {
        let ctx = ActivityContext::for_test("upload");
        assert!(
            ctx.heartbeat("progress").is_ok(),
            "no sink: nothing to refuse"
        );
        let clone = ctx.clone();
        ctx.cancel();
        assert!(clone.is_cancelled(), "clones share the flag");
        assert!(clone.heartbeat("progress").is_err());
    }

    #[test]
    fn last_heartbeat_decodes_the_previous_attempts_details() -> Result<(), ActivityError> {
        let ctx = ActivityContext::for_test("upload");
        assert_eq!(ctx.last_heartbeat::<u64>(), None);
        let ctx = ctx.with_last_heartbeat(Some(Payload::encode(&(3u32, "part-3"))?));
        assert_eq!(
            ctx.last_heartbeat::<(u32, String)>(),
            Some((3, "part-3".to_owned()))
        );
        assert_eq!(ctx.last_heartbeat::<Vec<bool>>(), None, "another type");
        Ok(())
    }
}
