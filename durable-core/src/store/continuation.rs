//! Continue-as-new in a commit: what both stores check before they end a run and start
//! its successor in the same transaction.

use super::{Commit, RunStatus};
use crate::error::StoreError;
use crate::event::EventKind;
use crate::ids::RunId;
use crate::payload::Payload;

/// The run a continuing commit starts, read from its `RunContinuedAsNew` event.
#[derive(Debug)]
pub(crate) struct Continuation<'a> {
    /// When the old run ended (the event's time); the new run's `RunStarted` time.
    pub(crate) time_ms: i64,
    pub(crate) workflow: &'a str,
    pub(crate) input: &'a Payload,
    pub(crate) seed: u64,
    pub(crate) run_id: &'a RunId,
    /// Signals the old run received and did not take: the new run's first inbox entries.
    pub(crate) signals: &'a [(String, Payload)],
}

impl Continuation<'_> {
    /// The inbox entries (kind name, event) of the signals handed on.
    pub(crate) fn carried(&self) -> impl Iterator<Item = EventKind> + '_ {
        self.signals
            .iter()
            .map(|(name, payload)| EventKind::SignalReceived {
                name: name.clone(),
                payload: payload.clone(),
            })
    }

    /// The new run's first event.
    pub(crate) fn started(&self) -> EventKind {
        EventKind::RunStarted {
            workflow: self.workflow.to_owned(),
            input: self.input.clone(),
            seed: self.seed,
        }
    }
}

/// The inbox entries that follow a run into its successor: what somebody sent to the
/// workflow id (activity results and timer firings belong to the old run's commands).
pub(crate) const CARRIED_INBOX_KINDS: [&str; 2] = ["SignalReceived", "CancelRequested"];

/// Checks that a commit finishing with [`RunStatus::Continued`] ends with a
/// `RunContinuedAsNew` event and that no other commit carries one; returns what the
/// new run is to be.
///
/// # Errors
///
/// [`StoreError::Invalid`] for a commit that breaks the rule, or names an empty or
/// oversized workflow or run id.
pub(crate) fn continuation(c: &Commit) -> Result<Option<Continuation<'_>>, StoreError> {
    let last_continues = matches!(
        c.events.last(),
        Some((_, EventKind::RunContinuedAsNew { .. }))
    );
    let stray = c.events[..c.events.len().saturating_sub(1)]
        .iter()
        .any(|(_, k)| matches!(k, EventKind::RunContinuedAsNew { .. }));
    let continues = c.finish == Some(RunStatus::Continued);
    if stray || last_continues != continues {
        return Err(StoreError::Invalid(
            "a commit that continues a run as new ends with its RunContinuedAsNew event \
             and finishes the run as continued; no other commit may carry that event"
                .into(),
        ));
    }
    let Some((
        time_ms,
        EventKind::RunContinuedAsNew {
            workflow,
            input,
            seed,
            run_id,
            signals,
        },
    )) = c.events.last().filter(|_| continues)
    else {
        return Ok(None);
    };
    for (what, value) in [
        ("workflow name", workflow.as_str()),
        ("run id", run_id.as_str()),
    ] {
        if value.is_empty() || value.len() > 1000 || value.contains('\0') {
            return Err(StoreError::Invalid(format!(
                "the {what} of a continued run must be 1 to 1000 bytes without NUL"
            )));
        }
    }
    Ok(Some(Continuation {
        time_ms: *time_ms,
        workflow,
        input,
        seed: *seed,
        run_id,
        signals,
    }))
}
