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
