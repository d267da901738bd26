//! Sealing what a store keeps outside the event bodies (heartbeat details, a published
//! status) with its codec, the same way in both stores; and the heartbeat timeout error.

use crate::error::{ActivityError, KIND_HEARTBEAT_TIMEOUT, StoreError};
use crate::payload::{Payload, SharedCodec};

/// The error of an attempt that sent no heartbeat within its timeout.
pub(crate) fn heartbeat_timeout_error(attempt: u32, timeout_ms: i64) -> ActivityError {
    ActivityError::retryable(
        KIND_HEARTBEAT_TIMEOUT,
        format!("attempt {attempt} sent no heartbeat for {timeout_ms} ms, its heartbeat timeout"),
    )
}

/// Bytes as stored: sealed by the codec, like event bodies.
pub(crate) fn seal(codec: Option<&SharedCodec>, bytes: Vec<u8>) -> Vec<u8> {
    match codec {
        Some(c) => c.encode(bytes),
        None => bytes,
    }
}

/// A free-text column that may quote a payload (an activity's last error), as a store
/// keeps it: in clear without a codec; with one, as the codec's bytes, like the event
/// bodies, so nothing a payload said reaches the database in clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoredText {
    /// Kept as written (no codec).
    Clear(String),
    /// Sealed by the codec.
    Sealed(Vec<u8>),
}

/// Seals `text` for a free-text column (see [`StoredText`]).
pub(crate) fn seal_text(codec: Option<&SharedCodec>, text: String) -> StoredText {
    match codec {
        Some(c) => StoredText::Sealed(c.encode(text.into_bytes())),
        None => StoredText::Clear(text),
    }
}

/// Reverses [`seal_text`] for display: text the codec cannot open (or sealed text read
/// without a codec) is shown as such rather than failing the read.
pub(crate) fn open_text(codec: Option<&SharedCodec>, stored: StoredText) -> String {
    match (stored, codec) {
        (StoredText::Clear(t), _) => t,
        (StoredText::Sealed(b), Some(c)) => match c.decode(b) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("(unreadable: codec: {e})"),
        },
        (StoredText::Sealed(b), None) => {
            format!("({} encoded bytes; open the store with its codec)", b.len())
        }
    }
}

/// Reverses [`seal`] for a payload the run depends on: bytes the codec cannot open are
/// a corrupt store (`what` names the payload, e.g. "published status").
pub(crate) fn open_payload(
    codec: Option<&SharedCodec>,
    key: i64,
    what: &str,
    bytes: Vec<u8>,
) -> Result<Payload, StoreError> {
    match codec {
        Some(c) => c
            .decode(bytes)
            .map(Payload)
            .map_err(|e| StoreError::Corrupt(format!("{what} of run {key}: codec: {e}"))),
        None => Ok(Payload(bytes)),
    }
}

/// Reverses [`seal`] for heartbeat details. Details the codec cannot open are dropped (the next attempt
/// starts over) rather than failing the claim.
pub(crate) fn open_details(
    codec: Option<&SharedCodec>,
    sealed: Option<Vec<u8>>,
) -> Option<Payload> {
    let sealed = sealed?;
    match codec {
        None => Some(Payload(sealed)),
        Some(c) => match c.decode(sealed) {
            Ok(bytes) => Some(Payload(bytes)),
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat details do not open with the codec; the attempt starts without them");
                None
            }
        },
    }
}
