//! What both stores do the same way with heartbeats: the timeout error, and sealing the
//! details with the store's codec.

use crate::error::{ActivityError, KIND_HEARTBEAT_TIMEOUT};
use crate::payload::{Payload, SharedCodec};

/// The error of an attempt that sent no heartbeat within its timeout.
pub(crate) fn heartbeat_timeout_error(attempt: u32, timeout_ms: i64) -> ActivityError {
    ActivityError::retryable(
        KIND_HEARTBEAT_TIMEOUT,
        format!("attempt {attempt} sent no heartbeat for {timeout_ms} ms, its heartbeat timeout"),
    )
}

/// Heartbeat details as stored: sealed by the codec, like event bodies.
pub(crate) fn seal_details(codec: Option<&SharedCodec>, bytes: Vec<u8>) -> Vec<u8> {
    match codec {
        Some(c) => c.encode(bytes),
        None => bytes,
    }
}

/// Reverses [`seal_details`]. Details the codec cannot open are dropped (the next attempt
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
