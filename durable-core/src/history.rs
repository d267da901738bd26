//! Portable history files: a run's events as reviewable JSON, for replay tests, debugging
//! and bug reports (`history <id> --export FILE`, `replay --file FILE`).

use crate::event::{Event, EventKind};
use crate::ids::{EventId, RunId, WorkflowId};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `format` field of a history file.
pub const FORMAT: &str = "durable-history";
/// The version of the format this binary writes and reads.
pub const VERSION: u32 = 1;
/// The largest history file read (a guard against untrusted input).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// A run's history with its identity, as written to a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version.
    pub version: u32,
    /// The workflow id of the run.
    pub workflow_id: WorkflowId,
    /// The run id.
    pub run_id: RunId,
    /// The workflow name.
    pub workflow: String,
    /// The events, numbered from 1.
    pub events: Vec<Event>,
}

/// A history file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        message: String,
    },
    /// The text is not a history file.
    #[error("{path} is not a durable history file: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The events are not a well-formed history.
    #[error("{path}: history is malformed at event {event}: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// The event.
        event: EventId,
        /// What is wrong.
        reason: String,
    },
}

impl HistoryFile {
    /// A history file for a run.
    pub fn new(workflow_id: WorkflowId, run_id: RunId, events: Vec<Event>) -> Self {
        let workflow = match events.first().map(|e| &e.kind) {
            Some(EventKind::RunStarted { workflow, .. }) => workflow.clone(),
            _ => String::new(),
        };
        HistoryFile {
            format: FORMAT.to_owned(),
            version: VERSION,
            workflow_id,
            run_id,
            workflow,
            events,
        }
    }

    /// The file as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a history serializes to JSON")
    }

    /// Parses and checks a history file's text; `path` names it in errors.
    ///
    /// # Errors
    ///
    /// [`HistoryFileError::Parse`] for text that is not a history file of this version,
    /// [`HistoryFileError::Malformed`] for events that are not numbered 1..n, do not
    /// start with `RunStarted`, or name another workflow.
    pub fn parse(text: &str, path: &str) -> Result<Self, HistoryFileError> {
        let parse = |message: String| HistoryFileError::Parse {
            path: path.to_owned(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| parse(e.to_string()))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => return Err(parse(format!("format is {other:?}, not {FORMAT:?}"))),
            None => return Err(parse("no \"format\" field".into())),
        }
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => {
                return Err(parse(format!(
                    "version {v}; this binary reads version {VERSION}"
                )));
            }
            None => return Err(parse("no \"version\" field".into())),
        }
        let file: HistoryFile = serde_json::from_value(value).map_err(|e| parse(e.to_string()))?;
        file.check(path)?;
        Ok(file)
    }

    /// Reads and checks a history file.
    ///
    /// # Errors
    ///
    /// As [`HistoryFile::parse`], and [`HistoryFileError::Io`] when the file cannot be
    /// read or is larger than [`MAX_FILE_BYTES`].
    pub fn read(path: &Path) -> Result<Self, HistoryFileError> {
        let shown = path.display().to_string();
        let io = |message: String| HistoryFileError::Io {
            path: shown.clone(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| io(e.to_string()))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(io(format!(
                "{} bytes is over the limit of {MAX_FILE_BYTES} bytes",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| io(e.to_string()))?;
        Self::parse(&text, &shown)
    }

    fn check(&self, path: &str) -> Result<(), HistoryFileError> {
        let malformed = |event: EventId, reason: String| HistoryFileError::Malformed {
            path: path.to_owned(),
            event,
            reason,
        };
        match self.events.first() {
            None => return Err(malformed(EventId(1), "the history has no events".into())),
            Some(e) => match &e.kind {
                EventKind::RunStarted { workflow, .. } if *workflow == self.workflow => {}
                EventKind::RunStarted { workflow, .. } => {
                    return Err(malformed(
                        e.id,
                        format!(
                            "RunStarted names workflow {workflow:?}, the file says {:?}",
                            self.workflow
                        ),
                    ));
                }
                other => {
                    return Err(malformed(
                        e.id,
                        format!("the first event is {}, not RunStarted", other.name()),
                    ));
                }
            },
        }
        for (i, e) in self.events.iter().enumerate() {
            let expected = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1);
            if e.id.0 != expected {
                return Err(malformed(
                    e.id,
                    format!("expected event {expected}: the events skip or repeat numbers"),
                ));
            }
            if i > 0 && matches!(e.kind, EventKind::RunStarted { .. }) {
                return Err(malformed(e.id, "a second RunStarted event".into()));
            }
            if e.kind.is_terminal() && i + 1 != self.events.len() {
                return Err(malformed(e.id, "events after the run finished".into()));
            }
        }
        Ok(())
    }
}
