//! Newtypes for the identifiers of the log, so two ids can't be swapped silently.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The caller-chosen (or generated) identity of a workflow: starting the same id twice
/// returns the existing run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(pub String);

/// The identity of one run of a workflow (a UUID); a reset or continue-as-new makes a new
/// run under the same [`WorkflowId`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

/// The number of an event in a run's history, counted from 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct EventId(pub u64);

/// The number of a command, in the order the workflow code issued it, counted from 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct CommandSeq(pub u32);

/// A lease's fencing token: it grows every time a run changes owner, and every append
/// carries it, so a worker presumed dead cannot write after its replacement took over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

/// The store's internal key of a run: compact and stable, used on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunKey(pub i64);

/// The identity of a worker process, used as the owner of leases.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_inner!(
    WorkflowId,
    RunId,
    EventId,
    CommandSeq,
    FencingToken,
    RunKey,
    WorkerId
);

impl WorkflowId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl RunId {
    /// A fresh random run id.
    pub fn generate() -> Self {
        RunId(uuid::Uuid::new_v4().to_string())
    }
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl WorkerId {
    /// A fresh worker id: host-free, process id plus a random suffix.
    pub fn generate() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        WorkerId(format!("worker-{}-{}", std::process::id(), &id[..8]))
    }
}

impl From<&str> for WorkflowId {
    fn from(s: &str) -> Self {
        WorkflowId(s.to_owned())
    }
}
impl From<String> for WorkflowId {
    fn from(s: String) -> Self {
        WorkflowId(s)
    }
}
