//! [`ActivityContext`]: what an activity attempt knows about itself.

use crate::ids::{CommandSeq, RunId, WorkflowId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

    /// True once the worker gave up on this attempt (shutdown, timeout, cancellation).
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Marks the attempt as abandoned (used by the worker).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
    }
}
